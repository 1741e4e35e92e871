//! The `warden` command line: argument parsing (clap) and one handler per subcommand.
//! Handlers return `anyhow::Result`; `main` prints one clear line on error.

mod audit;
mod credential;
mod exec;
pub mod sign;
mod target;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::store::DataDir;

/// Warden: privileged automation without handing credentials to scripts.
#[derive(Parser, Debug)]
#[command(name = "warden", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the data directory is.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArg {
    /// The data directory.
    #[arg(long, env = "WARDEN_DATA", default_value = "warden-data")]
    pub data: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a data directory with a new vault master key and server key.
    Init(DataArg),
    /// Manage vault credentials.
    #[command(subcommand)]
    Credential(credential::CredentialCommand),
    /// Manage targets (SSH endpoints with pinned host keys).
    #[command(subcommand)]
    Target(target::TargetCommand),
    /// Run a task locally in the sandbox and print its events and result.
    Exec(exec::ExecArgs),
    /// Make a publisher key pair.
    Keygen(sign::KeygenArgs),
    /// Sign a task module with its manifest.
    Sign(sign::SignArgs),
    /// Inspect and verify the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Init(data) => {
            DataDir::init(&data.data)?;
            println!(
                "initialised {} (master key: master.key, mode 0600)",
                data.data.display()
            );
            Ok(0)
        }
        Command::Credential(cmd) => credential::run(cmd),
        Command::Target(cmd) => target::run(cmd).await,
        Command::Exec(args) => exec::run(args).await,
        Command::Audit(cmd) => audit::run(cmd),
        Command::Keygen(args) => sign::keygen(args),
        Command::Sign(args) => sign::sign(args),
    }
}

/// The whole program: logging to stderr, parse, run, one line on error, exit code.
pub fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let code = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(run(cli)).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            2
        }),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            2
        }
    };
    std::process::exit(code);
}
