//! `baton`: the command users type.
//!
//! - `baton run -- CMD ARGS`: runs CMD under the shim, against the running daemon or one it
//!   starts for the user.
//! - `baton daemon`: runs the daemon in the foreground.
//! - `baton status`: lists the daemon's clients.
//! - `baton cdi`: writes a CDI spec that gives containers Baton's GPU.
//! - `baton demo`: shows Baton at work on a simulated GPU (no GPU needed).

mod cdi;
mod demo;
mod launcher;
mod socket;
mod status;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Share one GPU among many unmodified CUDA programs")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a CUDA program under Baton (starts a daemon for you if none is running).
    ///
    /// Options for baton come first; the program starts at the first argument that is not one
    /// of them, or after `--`. An unknown option before the program is an error: write
    /// `baton run -- PROGRAM ARGS` for a program whose name starts with `-`.
    #[command(override_usage = "baton run [OPTIONS] [--] PROGRAM [ARGS]...")]
    Run {
        /// Name this client's tenant (sets BATON_TENANT for the program).
        #[arg(long)]
        tenant: Option<String>,
        /// Control socket [default: $BATON_SOCKET, else the system daemon's if it is there,
        /// else a per-user daemon's]
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Policy file for the daemon baton starts when none is serving (ignored, with a note,
        /// when one is).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, required = true, value_name = "PROGRAM")]
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
        socket: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Try Baton without a GPU: a private daemon on a simulated GPU, two client programs, and
    /// `baton status`; everything is stopped and removed afterwards.
    Demo,
    /// One of `baton demo`'s client programs.
    #[command(hide = true)]
    DemoClient,
    /// Write a CDI spec that gives containers Baton's GPU (podman, containerd, CRI-O).
    Cdi(cdi::Args),
}

fn main() {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Status { .. }) {
        // `baton status | head` should end quietly, as other commands do, not panic on EPIPE.
        // SAFETY: signal(2) with the default action, before any other thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let r = match cli.cmd {
        Cmd::Run {
            tenant,
            socket,
            config,
            command,
        } => launcher::run(launcher::RunOptions {
            tenant,
            socket,
            config,
            command,
        }),
        Cmd::Daemon { opts } => {
            baton_daemon::init_logging(opts.log_format);
            baton_daemon::run(&opts)
        }
        Cmd::Status { socket, json } => status::show(socket, json),
        Cmd::Demo => demo::run(),
        Cmd::DemoClient => demo::client(),
        Cmd::Cdi(args) => cdi::run(args),
    };
    if let Err(e) = r {
        baton_daemon::logging::last_words(&format!("baton: {e}"));
        std::process::exit(1);
    }
}
