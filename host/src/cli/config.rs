//! The configuration file of `warden serve` (`--config FILE`, default
//! `/etc/warden/warden.toml` when it exists) and `warden config check`.
//!
//! Every `serve` setting may be written in the file under its flag's name with `_` for `-`
//! (`listen`, `max_concurrent_runs`, `master_key_file`, ...). Precedence, highest first:
//! the command-line flag, its `WARDEN_*` environment variable, the file, the built-in
//! default. The master key options are one setting: if any of them is given as a flag, the
//! file's are ignored. Relative paths in the file are relative to the file's directory.
//!
//! Threat: a configuration that silently means something else than its author thinks (a
//! misspelt key ignored, a value of the wrong type), or a file anyone may rewrite to point
//! the server at other policies or another master key. Unknown keys, bad values, more than
//! one master key source, a `database` URL carrying a password, a file larger than
//! [`MAX_CONFIG_BYTES`] and a file writable by group or others are all refused with the
//! file named. The file names where secrets are,
//! never holds one: `config check` prints every effective setting, and the master key only
//! as where it is read from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use super::serve::{LogFormat, ServeArgs};

/// The configuration file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/warden/warden.toml";

/// Cap on the configuration file, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// The settings a file may hold: each is a `serve` flag's argument id.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    database: Option<String>,
    policies: Option<PathBuf>,
    master_key_env: Option<String>,
    master_key_command: Option<String>,
    master_key_file: Option<PathBuf>,
    approval_ttl_secs: Option<u64>,
    shutdown_grace: Option<u64>,
    log_format: Option<LogFormat>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure_http: Option<bool>,
    max_concurrent_runs: Option<u32>,
    max_queued_runs: Option<usize>,
    max_running_per_user: Option<usize>,
    max_queued_per_user: Option<usize>,
    max_running_per_process: Option<usize>,
    max_queued_per_process: Option<usize>,
    server_dead_after_secs: Option<u64>,
    bridge_lost_after_secs: Option<u64>,
    bridge_wait_secs: Option<u64>,
    embedded_zone: Option<String>,
}

/// Where an effective setting came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    File,
    Default,
}

impl Origin {
    fn of(matches: &ArgMatches, id: &str) -> Origin {
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Origin::Flag,
            Some(ValueSource::EnvVariable) => Origin::Env,
            _ => Origin::Default,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Origin::Flag => "flag",
            Origin::Env => "environment",
            Origin::File => "config file",
            Origin::Default => "default",
        }
    }
}

/// What [`apply`] did: the file read (if any) and where each setting came from.
#[derive(Debug, Default)]
pub struct Applied {
    pub file: Option<PathBuf>,
    pub origins: Vec<(&'static str, Origin)>,
}

impl Applied {
    fn origin(&self, id: &str) -> Origin {
        self.origins
            .iter()
            .find(|(name, _)| *name == id)
            .map_or(Origin::Default, |(_, o)| *o)
    }
}

/// The file `args` names, or the default one if it exists.
fn config_path(args: &ServeArgs) -> Option<PathBuf> {
    args.config.clone().or_else(|| {
        let default = Path::new(DEFAULT_CONFIG);
        default.exists().then(|| default.to_path_buf())
    })
}

/// Reads the configuration file (if any) and fills every setting of `args` that neither a
/// flag nor an environment variable gave. `matches` are the subcommand's matches.
pub fn apply(args: &mut ServeArgs, matches: &ArgMatches) -> anyhow::Result<Applied> {
    let mut applied = Applied {
        file: config_path(args),
        origins: Vec::new(),
    };
    let file = match &applied.file {
        Some(path) => read(path)?,
        None => FileSettings::default(),
    };
    let base = applied
        .file
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let relative = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    macro_rules! fill {
        ($id:literal, $field:expr, $value:expr) => {{
            let mut origin = Origin::of(matches, $id);
            if origin == Origin::Default {
                if let Some(value) = $value {
                    $field = value;
                    origin = Origin::File;
                }
            }
            applied.origins.push(($id, origin));
        }};
    }
    fill!("listen", args.listen, file.listen);
    fill!("data", args.data.data, file.data.clone().map(relative));
    if let Some(url) = &file.database {
        refuse_password(applied.file.as_deref(), url)?;
    }
    fill!(
        "database",
        args.data.database,
        file.database.clone().map(Some)
    );
    fill!(
        "policies",
        args.policies,
        file.policies.clone().map(relative).map(Some)
    );
    fill!(
        "approval_ttl_secs",
        args.approval_ttl_secs,
        file.approval_ttl_secs
    );
    fill!("shutdown_grace", args.shutdown_grace, file.shutdown_grace);
    fill!("log_format", args.log_format, file.log_format);
    fill!(
        "tls_cert",
        args.tls_cert,
        file.tls_cert.clone().map(relative).map(Some)
    );
    fill!(
        "tls_key",
        args.tls_key,
        file.tls_key.clone().map(relative).map(Some)
    );
    fill!("insecure_http", args.insecure_http, file.insecure_http);
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        anyhow::bail!("give both tls_cert and tls_key, or neither");
    }
    if args.insecure_http && args.tls_cert.is_some() {
        anyhow::bail!("insecure_http and tls_cert contradict each other; give one of them");
    }
    let runs = &mut args.runs;
    fill!(
        "max_concurrent_runs",
        runs.max_concurrent_runs,
        file.max_concurrent_runs
    );
    fill!(
        "max_queued_runs",
        runs.max_queued_runs,
        file.max_queued_runs
    );
    fill!(
        "max_running_per_user",
        runs.max_running_per_user,
        file.max_running_per_user
    );
    fill!(
        "max_queued_per_user",
        runs.max_queued_per_user,
        file.max_queued_per_user
    );
    let per_process = file.max_running_per_process;
    fill!(
        "max_running_per_process",
        runs.max_running_per_process,
        per_process
    );
    let per_process = file.max_queued_per_process;
    fill!(
        "max_queued_per_process",
        runs.max_queued_per_process,
        per_process
    );
    let dead_after = file.server_dead_after_secs;
    fill!(
        "server_dead_after_secs",
        runs.server_dead_after_secs,
        dead_after
    );
    let lost_after = file.bridge_lost_after_secs;
    fill!(
        "bridge_lost_after_secs",
        runs.bridge_lost_after_secs,
        lost_after
    );
    let wait = file.bridge_wait_secs;
    fill!("bridge_wait_secs", runs.bridge_wait_secs, wait);
    let zone = file.embedded_zone.clone();
    fill!("embedded_zone", runs.embedded_zone, zone);
    apply_master_key(args, matches, &file, &relative, &mut applied)?;
    Ok(applied)
}

/// The master key options as one setting: a flag for any of them wins over the file's.
fn apply_master_key(
    args: &mut ServeArgs,
    matches: &ArgMatches,
    file: &FileSettings,
    relative: &dyn Fn(PathBuf) -> PathBuf,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    const IDS: [&str; 3] = ["master_key_env", "master_key_command", "master_key_file"];
    let given = IDS
        .iter()
        .find(|id| Origin::of(matches, id) != Origin::Default);
    if let Some(id) = given {
        applied.origins.push((id, Origin::of(matches, id)));
        return Ok(());
    }
    let sources = [
        file.master_key_env.is_some(),
        file.master_key_command.is_some(),
        file.master_key_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        let path = applied.file.clone().unwrap_or_default();
        anyhow::bail!(
            "{}: give at most one of master_key_env, master_key_command and master_key_file",
            path.display()
        );
    }
    let keys = &mut args.data.master_key;
    for (id, set) in IDS.iter().zip(sources) {
        if set {
            applied.origins.push((id, Origin::File));
        }
    }
    keys.master_key_env = file.master_key_env.clone();
    keys.master_key_command = file.master_key_command.clone();
    keys.master_key_file = file.master_key_file.clone().map(relative);
    Ok(())
}

/// A database URL in the file must not carry a password: the file is readable by everyone
/// who may read the configuration (`warden config check` prints it), a password belongs in
/// `~/.pgpass` or the service's `WARDEN_DATABASE_URL`.
fn refuse_password(file: Option<&Path>, url: &str) -> anyhow::Result<()> {
    let has_password = url
        .parse::<tokio_postgres::Config>()
        .map_or(true, |c| c.get_password().is_some());
    if has_password {
        let file = file.map(|f| f.display().to_string()).unwrap_or_default();
        anyhow::bail!(
            "{file}: `database` must be a postgres:// URL without a password; keep the \
             password in ~/.pgpass or set WARDEN_DATABASE_URL in the service's environment"
        );
    }
    Ok(())
}

/// Reads and parses one configuration file.
fn read(path: &Path) -> anyhow::Result<FileSettings> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the configuration file {shown}"))?;
    let mode = file
        .metadata()
        .with_context(|| format!("cannot read the configuration file {shown}"))?
        .permissions()
        .mode();
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "the configuration file {shown} is writable by group or others (mode {:o}); \
             run `chmod go-w {shown}`",
            mode & 0o7777
        );
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the configuration file {shown}"))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        anyhow::bail!("the configuration file {shown} is larger than {MAX_CONFIG_BYTES} bytes");
    }
    toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|span| {
            let before = text.get(..span.start).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        anyhow::anyhow!(
            "the configuration file {shown} is invalid{}: {}",
            at.unwrap_or_default(),
            e.message()
        )
    })
}

/// `warden config check`: the arguments are `serve`'s, so the same flags and environment
/// apply.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration (file, environment, flags) and the policies it names, and
    /// print the effective settings with where each came from. Never prints a secret.
    Check(ServeArgs),
}

/// Runs `warden config check`.
pub fn run(cmd: ConfigCommand, matches: &ArgMatches) -> anyhow::Result<i32> {
    let ConfigCommand::Check(mut args) = cmd;
    let applied = apply(&mut args, matches)?;
    args.runs.limits()?;
    let policy = crate::policy::PolicyEngine::load_from(args.policy_source())
        .map_err(|e| anyhow::anyhow!("loading policies from {}: {e}", args.policy_source()))?;
    match &applied.file {
        Some(path) => println!("# configuration file: {}", path.display()),
        None => println!("# no configuration file ({DEFAULT_CONFIG} does not exist)"),
    }
    let line = |id: &str, value: String| {
        println!("{id} = {value}  # {}", applied.origin(id).as_str());
    };
    let quoted = |p: &Path| toml_string(&p.display().to_string());
    line("listen", toml_string(&args.listen.to_string()));
    line("data", quoted(&args.data.data));
    match &args.data.database {
        // Only a file's URL is known to be password-free; any other is not shown.
        Some(url) if applied.origin("database") == Origin::File => {
            line("database", toml_string(url))
        }
        Some(_) => println!(
            "# database: a PostgreSQL URL from the {} (not shown)",
            applied.origin("database").as_str()
        ),
        None => println!("# database: sled in the data directory"),
    }
    match &args.policies {
        Some(dir) => line("policies", quoted(dir)),
        None => println!("# policies: the built-in set"),
    }
    println!("# policies in force: sha256 {}", policy.digest());
    let keys = &args.data.master_key;
    if let Some(var) = &keys.master_key_env {
        line("master_key_env", toml_string(var));
    } else if let Some(command) = &keys.master_key_command {
        line("master_key_command", toml_string(command));
    } else if let Some(file) = &keys.master_key_file {
        line("master_key_file", quoted(file));
    } else {
        println!(
            "# master key: {}",
            args.data.data.join("master.key").display()
        );
    }
    line("approval_ttl_secs", args.approval_ttl_secs.to_string());
    line("shutdown_grace", args.shutdown_grace.to_string());
    line("log_format", toml_string(args.log_format.as_str()));
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            line("tls_cert", quoted(cert));
            line("tls_key", quoted(key));
        }
        _ if args.insecure_http => line("insecure_http", "true".to_string()),
        _ => println!(
            "# TLS: {} when it exists, else plain HTTP on loopback only",
            crate::tls::ServerTls::data_dir_files(&args.data.data)
                .0
                .display()
        ),
    }
    let runs = &args.runs;
    line("max_concurrent_runs", runs.max_concurrent_runs.to_string());
    line("max_queued_runs", runs.max_queued_runs.to_string());
    line(
        "max_running_per_user",
        runs.max_running_per_user.to_string(),
    );
    line("max_queued_per_user", runs.max_queued_per_user.to_string());
    line(
        "max_running_per_process",
        runs.max_running_per_process.to_string(),
    );
    line(
        "max_queued_per_process",
        runs.max_queued_per_process.to_string(),
    );
    line(
        "server_dead_after_secs",
        runs.server_dead_after_secs.to_string(),
    );
    line(
        "bridge_lost_after_secs",
        runs.bridge_lost_after_secs.to_string(),
    );
    line("bridge_wait_secs", runs.bridge_wait_secs.to_string());
    line("embedded_zone", toml_string(&runs.embedded_zone));
    println!("# ok");
    Ok(0)
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
