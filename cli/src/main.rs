//! `baton`: the command users type.
//!
//! - `baton run -- CMD ARGS`: runs CMD under the shim, against the running daemon or one it
//!   starts for the user.
//! - `baton daemon`: runs the daemon in the foreground.
//! - `baton status`: lists the daemon's clients.
//! - `baton cdi`: writes a CDI spec that gives containers Baton's GPU.

mod cdi;
mod launcher;
mod status;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Share one GPU among many unmodified CUDA programs")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a CUDA program under Baton (starts a daemon for you if none is running).
    Run {
        /// Name this client's tenant (sets BATON_TENANT for the program).
        #[arg(long)]
        tenant: Option<String>,
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Run the daemon in the foreground.
    Daemon {
        #[command(flatten)]
        opts: baton_daemon::Options,
    },
    /// Show the daemon's clients.
    Status {
        /// Control socket [default: $BATON_SOCKET, else the system or per-user socket]
        #[arg(long)]
        socket: Option<std::path::PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a CDI spec that gives containers Baton's GPU (podman, containerd, CRI-O).
    Cdi(cdi::Args),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run { tenant, command } => launcher::run(tenant, command),
        Cmd::Daemon { opts } => {
            baton_daemon::init_logging(opts.log_format);
            baton_daemon::run(&opts)
        }
        Cmd::Status { socket, json } => status::show(socket, json),
        Cmd::Cdi(args) => cdi::run(args),
    };
    if let Err(e) = r {
        eprintln!("baton: {e}");
        std::process::exit(1);
    }
}
