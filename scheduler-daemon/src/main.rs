use clap::Parser;

/// batond: the Baton scheduler daemon. Owns the GPU and runs the work of every client.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    opts: baton_daemon::Options,
}

fn main() {
    let cli = Cli::parse();
    baton_daemon::init_logging(cli.opts.log_format);
    if let Err(e) = baton_daemon::run(&cli.opts) {
        baton_daemon::logging::last_words(&format!("batond: {e}"));
        std::process::exit(1);
    }
}
