//! The `warden` command line: argument parsing (clap) and one handler per subcommand.
//! Handlers return `anyhow::Result`; `main` prints one clear line on error.

mod access;
mod audit;
mod backup;
mod bridge;
mod client;
mod config;
mod control;
mod credential;
mod db;
mod docs;
mod exec;
mod init;
mod inputs;
mod notify;
mod policies;
mod reconcile;
mod restore;
mod scaffold;
mod serve;
mod shutdown;
pub mod sign;
mod target;
mod tls;
mod trigger;
mod vault;
mod workflow;

use std::path::PathBuf;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

/// The administrator's password policy for rotations, as `warden exec` and
/// `warden process create` take it.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RotationPolicyArgs {
    /// Shortest password a rotation may generate (default 24); the task may ask for more.
    #[arg(long = "rotation-min-length", value_name = "N")]
    rotation_min_length: Option<u32>,
    /// Character classes every rotated password uses, comma-separated: lowercase,
    /// uppercase, digits, symbols (default all). Below 128 bits of entropy is refused.
    #[arg(
        long = "rotation-classes",
        value_name = "CLASSES",
        value_delimiter = ','
    )]
    rotation_classes: Vec<crate::rotation::CharClass>,
}

impl RotationPolicyArgs {
    /// The policy the flags describe (the default where none is given).
    pub(crate) fn policy(&self) -> crate::rotation::RotationPolicy {
        crate::rotation::RotationPolicy::from_flags(
            self.rotation_min_length,
            &self.rotation_classes,
        )
    }
}

/// The version `--version` prints: the crate's version and the commit it was built from
/// (`WARDEN_COMMIT`, set by `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WARDEN_COMMIT"),
    ")"
);

/// Warden: privileged automation without handing credentials to scripts.
#[derive(Parser, Debug)]
#[command(name = "warden", version = VERSION, about)]
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
    /// Keep the state in this PostgreSQL database (`postgres://user@host/db`) instead of
    /// sled under DATA/db; the keys stay in DATA.
    #[arg(
        long,
        value_name = "URL",
        env = "WARDEN_DATABASE_URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
    #[command(flatten)]
    pub master_key: vault::MasterKeyArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a data directory with a new vault master key and server key, and a
    /// self-signed TLS certificate for the server (its fingerprint is printed).
    Init(init::InitArgs),
    /// Manage vault credentials.
    #[command(subcommand)]
    Credential(credential::CredentialCommand),
    /// Manage targets (SSH endpoints with pinned host keys).
    #[command(subcommand)]
    Target(target::TargetCommand),
    /// Run a task locally in the sandbox and print its events and result.
    Exec(exec::ExecArgs),
    /// Run the server (HTTP API) with its embedded bridge.
    Serve(serve::ServeArgs),
    /// Set up a demo module and process (once), print how to run it, and serve.
    Demo(serve::DemoArgs),
    /// Task modules on a server.
    #[command(subcommand)]
    Module(client::ModuleCommand),
    /// Processes on a server.
    #[command(subcommand)]
    Process(client::ProcessCommand),
    /// Runs on a server.
    #[command(subcommand)]
    Run(client::RunCommand),
    /// API tokens on a server: mint, list, revoke.
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// Users on a server: list, create, disable, enable, delete.
    #[command(subcommand)]
    User(access::UserCommand),
    /// Trusted publishers on a server: list, trust, distrust.
    #[command(subcommand)]
    Publisher(access::PublisherCommand),
    /// Remote bridges: enrolment tokens, list, revoke; and the bridge itself (enroll, run).
    #[command(subcommand)]
    Bridge(bridge::BridgeCommand),
    /// Make a publisher key pair.
    Keygen(sign::KeygenArgs),
    /// Sign a task module with its manifest.
    Sign(sign::SignArgs),
    /// The server's TLS certificate: its fingerprint, for clients to pin.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Inspect and verify the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Sinks of the audit stream on a server: webhooks, syslog, files; the allow-list.
    #[command(subcommand)]
    Sink(notify::SinkCommand),
    /// Alert rules on a server.
    #[command(subcommand)]
    Alert(notify::AlertCommand),
    /// Inbound triggers on a server: signed events that start a process.
    #[command(subcommand)]
    Trigger(trigger::TriggerCommand),
    /// Write a consistent, checksummed backup of a data directory's state (from the server
    /// running on it, or from the stopped directory); the master key is never in it.
    Backup(backup::BackupArgs),
    /// Restore a backup into a new, empty data directory (the master key it was taken under
    /// is needed).
    Restore(restore::RestoreArgs),
    /// The state's database: status, migrations, copying sled into PostgreSQL.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Vault maintenance (master key rekey).
    #[command(subcommand)]
    Vault(vault::VaultCommand),
    /// Create a task project (Rust, Python or JavaScript) ready for `warden build`.
    New(scaffold::NewArgs),
    /// Build the task project in a directory into `NAME.wasm`.
    Build(scaffold::BuildArgs),
    /// The server's configuration: check it and print the effective settings.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// The built-in Cedar policies: export them as a starting point for --policies.
    #[command(subcommand)]
    Policies(policies::PoliciesCommand),
    /// Print a shell completion script (for packaging).
    #[command(hide = true)]
    Completions(docs::CompletionsArgs),
    /// Write man pages into a directory (for packaging).
    #[command(hide = true)]
    Man(docs::ManArgs),
}

/// Runs the parsed command; `matches` are the ones `cli` was parsed from (they tell a flag
/// from a default, for the configuration file). Returns the process exit code.
pub async fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<i32> {
    let sub = |name: &str| {
        matches
            .subcommand_matches(name)
            .cloned()
            .unwrap_or_default()
    };
    // `serve` and `demo` choose their log format from their settings (flags, environment,
    // configuration file); every other command logs warnings as text.
    if !matches!(cli.command, Command::Serve(_) | Command::Demo(_)) {
        serve::init_logging(serve::LogFormat::Text, "warn");
    }
    match cli.command {
        Command::Init(args) => init::run(args),
        Command::Serve(mut args) => {
            let applied = config::apply(&mut args, &sub("serve"))?;
            serve::init_logging(args.log_format, serve::SERVE_LOG_FILTER);
            log_config(&applied);
            serve::run_serve(args).await
        }
        Command::Demo(mut args) => {
            let applied = config::apply(&mut args.serve, &sub("demo"))?;
            serve::init_logging(args.serve.log_format, serve::SERVE_LOG_FILTER);
            log_config(&applied);
            serve::run_demo(args).await
        }
        Command::Module(cmd) => client::module(cmd).await,
        Command::Process(cmd) => client::process(cmd).await,
        Command::Run(cmd) => client::run(cmd).await,
        Command::Token(cmd) => access::token(cmd).await,
        Command::Bridge(cmd) => bridge::run(cmd).await,
        Command::User(cmd) => access::user(cmd).await,
        Command::Publisher(cmd) => access::publisher(cmd).await,
        Command::Credential(cmd) => credential::run(cmd).await,
        Command::Target(cmd) => target::run(cmd).await,
        Command::Exec(args) => exec::run(args).await,
        Command::Tls(cmd) => tls::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Sink(cmd) => notify::sink(cmd).await,
        Command::Alert(cmd) => notify::alert(cmd).await,
        Command::Trigger(cmd) => trigger::run(cmd).await,
        Command::Vault(cmd) => vault::run(cmd),
        Command::Db(cmd) => db::run(cmd),
        Command::Backup(args) => tokio::task::block_in_place(|| backup::run(args)),
        Command::Restore(args) => tokio::task::block_in_place(|| restore::run(args)),
        Command::Keygen(args) => sign::keygen(args),
        Command::Sign(args) => sign::sign(args),
        Command::New(args) => scaffold::new(args),
        Command::Build(args) => scaffold::build(args),
        Command::Config(cmd) => {
            let check = sub("config").subcommand_matches("check").cloned();
            config::run(cmd, &check.unwrap_or_default())
        }
        Command::Policies(cmd) => policies::run(cmd),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    }
}

/// Logs which configuration file `warden serve` read.
fn log_config(applied: &config::Applied) {
    match &applied.file {
        Some(file) => {
            tracing::info!(target: serve::SERVER_LOG, file = %file.display(), "configuration file read")
        }
        None => tracing::info!(target: serve::SERVER_LOG, "no configuration file"),
    }
}

/// The whole program: parse, logging to stderr, run, one line on error, exit code.
pub fn main() {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let code = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(run(cli, &matches)).unwrap_or_else(|e| {
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
