//! `warden serve` (the server with its embedded bridge) and `warden demo` (set up a demo
//! publisher, a signed demo module and a demo process, then serve): the settings (see
//! [`super::config`] for the file), the listening socket, the log format, and the life of
//! the server until its graceful shutdown ([`super::shutdown`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use secrecy::ExposeSecret;

use super::DataArg;
use super::shutdown::{self, Drain};
use crate::api::{AppState, ServerLimits};
use crate::policy::PolicySource;
use crate::registry::manifest::Manifest;
use crate::registry::signing;
use crate::runs::NewProcess;
use crate::runs::queue::QueueLimits;
use crate::runtime::engine::EngineConfig;
use crate::store::DataDir;
use crate::tls::{ServerTls, TlsListener};

/// The tracing target of the server's own lines (start, policies, shutdown), enabled at
/// `info` by default.
pub const SERVER_LOG: &str = "warden::server";

/// How long open connections (an event stream, say) may hold up the exit once the runs are
/// settled.
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// How the server's log lines look.
#[derive(clap::ValueEnum, serde::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Every `warden serve` setting. Each may also come from the configuration file (same name,
/// with `_` for `-`); a flag wins over its `WARDEN_*` variable, which wins over the file,
/// which wins over the default.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML) [default: /etc/warden/warden.toml when it exists].
    #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "WARDEN_LISTEN", default_value = "127.0.0.1:7070")]
    pub(super) listen: SocketAddr,
    /// Directory with the Cedar schema and policies, instead of the built-in set (`warden
    /// policies export DIR` writes the built-in set out as a starting point).
    #[arg(long, env = "WARDEN_POLICIES", value_name = "DIR")]
    pub(super) policies: Option<PathBuf>,
    /// How long an approval of a run counts, in seconds (default 24 hours).
    #[arg(long, env = "WARDEN_APPROVAL_TTL_SECS", default_value_t = 24 * 3600)]
    pub(super) approval_ttl_secs: u64,
    /// Seconds that runs in flight get to finish after SIGTERM or SIGINT; the rest are then
    /// recorded `interrupted` and the exit code is 3 (0 when every run finished).
    #[arg(
        long,
        env = "WARDEN_SHUTDOWN_GRACE",
        value_name = "SECS",
        default_value_t = 30
    )]
    pub(super) shutdown_grace: u64,
    /// Log line format: `text` for people, `json` for log collectors. `WARDEN_LOG` sets the
    /// filter (default: warnings, plus one line per request and the server's own lines).
    #[arg(long, env = "WARDEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(super) log_format: LogFormat,
    /// The server's TLS certificate chain (PEM, end-entity first) [default: DATA/tls/cert.pem
    /// when `warden init` made one].
    #[arg(
        long,
        env = "WARDEN_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub(super) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM; not readable by others).
    #[arg(
        long,
        env = "WARDEN_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub(super) tls_key: Option<PathBuf>,
    /// Serve plain HTTP, even on a non-loopback address: tokens and credentials then cross
    /// the network in clear. Without TLS (no certificate given or in the data directory) only
    /// a loopback address is served.
    #[arg(long, env = "WARDEN_INSECURE_HTTP", conflicts_with = "tls_cert")]
    pub(super) insecure_http: bool,
    #[command(flatten)]
    pub(super) runs: RunQueueArgs,
    #[command(flatten)]
    pub(super) data: DataArg,
}

impl ServeArgs {
    /// The policy set to load: the directory given, else the built-in set.
    pub(super) fn policy_source(&self) -> PolicySource {
        self.policies.clone().into()
    }
}

/// Execution capacity and the run queue's bounds. Runs beyond the capacity wait `queued`;
/// beyond the bounds they are refused (429 for a caller's share, 503 for the server's).
#[derive(Args, Debug)]
pub struct RunQueueArgs {
    /// Runs executing at once; sizes the instance pool (1 to 1024).
    #[arg(long, env = "WARDEN_MAX_CONCURRENT_RUNS", default_value_t = 64)]
    pub(super) max_concurrent_runs: u32,
    /// Runs that may wait for an execution slot, all callers together.
    #[arg(long, env = "WARDEN_MAX_QUEUED_RUNS", default_value_t = 1024)]
    pub(super) max_queued_runs: usize,
    /// Runs one user (or a schedule's owner) may have executing at once.
    #[arg(long, env = "WARDEN_MAX_RUNNING_PER_USER", default_value_t = 16)]
    pub(super) max_running_per_user: usize,
    /// Runs one user may have waiting.
    #[arg(long, env = "WARDEN_MAX_QUEUED_PER_USER", default_value_t = 64)]
    pub(super) max_queued_per_user: usize,
    /// Runs of one process that may execute at once.
    #[arg(long, env = "WARDEN_MAX_RUNNING_PER_PROCESS", default_value_t = 32)]
    pub(super) max_running_per_process: usize,
    /// Runs of one process that may wait.
    #[arg(long, env = "WARDEN_MAX_QUEUED_PER_PROCESS", default_value_t = 256)]
    pub(super) max_queued_per_process: usize,
    /// With several servers on one database: after how many seconds without a heartbeat
    /// another server ends a stopped server's runs (running ones as interrupted).
    #[arg(long, env = "WARDEN_SERVER_DEAD_AFTER_SECS", default_value_t = 10)]
    pub(super) server_dead_after_secs: u64,
    /// After how many seconds without a word from a remote bridge the runs it holds end
    /// `lost` (5 to 3600).
    #[arg(long, env = "WARDEN_BRIDGE_LOST_AFTER_SECS", default_value_t = 30)]
    pub(super) bridge_lost_after_secs: u64,
    /// How many seconds a run may wait for a bridge of its zone before it is cancelled.
    #[arg(long, env = "WARDEN_BRIDGE_WAIT_SECS", default_value_t = 3600)]
    pub(super) bridge_wait_secs: u64,
    /// The zone the embedded bridge serves; runs of every other zone wait for a remote
    /// bridge of theirs.
    #[arg(long, env = "WARDEN_EMBEDDED_ZONE", default_value = "default")]
    pub(super) embedded_zone: String,
}

impl RunQueueArgs {
    /// The validated limits (see [`crate::runs::queue::QueueLimits::normalized`]).
    pub(super) fn limits(&self) -> anyhow::Result<ServerLimits> {
        let max = crate::runtime::engine::MAX_CONCURRENT_RUNS;
        if !(1..=max).contains(&self.max_concurrent_runs) {
            anyhow::bail!("--max-concurrent-runs must be between 1 and {max}");
        }
        let queue = QueueLimits {
            max_queued: self.max_queued_runs,
            per_user_running: self.max_running_per_user,
            per_user_queued: self.max_queued_per_user,
            per_process_running: self.max_running_per_process,
            per_process_queued: self.max_queued_per_process,
        };
        let engine = EngineConfig {
            max_concurrent_runs: self.max_concurrent_runs,
            ..EngineConfig::default()
        };
        if !(1..=3600).contains(&self.server_dead_after_secs) {
            anyhow::bail!("--server-dead-after-secs must be between 1 and 3600");
        }
        if !(5..=3600).contains(&self.bridge_lost_after_secs) {
            anyhow::bail!("--bridge-lost-after-secs must be between 5 and 3600");
        }
        if !crate::targets::is_valid_label(&self.embedded_zone) {
            anyhow::bail!("--embedded-zone: use 1-64 of A-Z a-z 0-9 . _ -");
        }
        let dead_after = std::time::Duration::from_secs(self.server_dead_after_secs);
        let cluster = crate::runs::cluster::ClusterConfig {
            dead_after,
            // A heartbeat several times within the window, and a sweep soon after it ends.
            heartbeat: (dead_after / 4).min(std::time::Duration::from_secs(1)),
            sweep: (dead_after / 2).min(std::time::Duration::from_secs(2)),
            bridge_lost_after: std::time::Duration::from_secs(self.bridge_lost_after_secs),
            bridge_wait: std::time::Duration::from_secs(self.bridge_wait_secs.max(1)),
            ..Default::default()
        };
        Ok(ServerLimits {
            engine,
            queue: queue.normalized(),
            cluster,
            embedded_zone: Some(self.embedded_zone.clone()),
        })
    }
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The demo task component (e.g. the built `hello.wasm`).
    #[arg(long)]
    module: PathBuf,
    /// Its manifest.
    #[arg(long)]
    manifest: PathBuf,
    #[command(flatten)]
    pub(super) serve: ServeArgs,
}

pub async fn run_serve(args: ServeArgs) -> anyhow::Result<i32> {
    let limits = args.runs.limits()?;
    let tls = choose_tls(&args)?;
    crate::ui::set_served_over_tls(tls.is_some());
    let listener = bind(args.listen).await?;
    let dir = args.data.open()?;
    // `warden backup` asks here while this server holds the database (removed at the end).
    let _control = super::control::ControlSocket::start(super::backup::Source::of(&dir))?;
    let mut state = AppState::open_with(dir, args.policy_source(), &limits).await?;
    let ttl = Duration::from_secs(args.approval_ttl_secs);
    state.approvals = state.approvals.with_ttl(ttl);
    listen(
        listener,
        tls,
        state,
        Duration::from_secs(args.shutdown_grace),
    )
    .await
}

/// TLS or plain HTTP: `--tls-cert/--tls-key`, else the data directory's certificate, else
/// plain HTTP on a loopback address only; `--insecure-http` forces plain HTTP anywhere.
fn choose_tls(args: &ServeArgs) -> anyhow::Result<Option<ServerTls>> {
    let addr = args.listen;
    if args.insecure_http {
        if !addr.ip().is_loopback() {
            tracing::warn!(
                target: SERVER_LOG,
                "--insecure-http on {addr}: tokens and credentials cross the network in clear"
            );
        }
        return Ok(None);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls::load(cert, key)?),
        _ => ServerTls::in_data_dir(&args.data.data)?,
    };
    if tls.is_none() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve plain HTTP on {addr}, which is not a loopback address: give \
             --tls-cert and --tls-key (or use the certificate `warden init` makes), or pass \
             --insecure-http to accept that tokens and credentials cross the network in clear"
        );
    }
    Ok(tls)
}

/// Binds the listening socket; the usual failures in one sentence with the next step.
async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use std::io::ErrorKind;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::AddrInUse => anyhow::anyhow!(
                "{addr} is already in use by another process; stop it or choose another \
                 --listen address"
            ),
            ErrorKind::AddrNotAvailable => anyhow::anyhow!(
                "{addr} is not an address of this machine; choose another --listen address"
            ),
            ErrorKind::PermissionDenied => anyhow::anyhow!(
                "not permitted to listen on {addr} (ports below 1024 need privileges); \
                 choose another --listen port"
            ),
            _ => anyhow::anyhow!("cannot listen on {addr}: {e}"),
        })
}

/// Serves until SIGTERM or SIGINT, then drains (see [`shutdown`]); returns the exit code.
async fn listen(
    listener: tokio::net::TcpListener,
    tls: Option<ServerTls>,
    state: AppState,
    grace: Duration,
) -> anyhow::Result<i32> {
    let policy = &state.policy;
    tracing::info!(
        target: SERVER_LOG,
        source = %policy.source(),
        sha256 = %policy.digest(),
        "policies loaded"
    );
    let addr = listener.local_addr()?;
    reload_policies_on_sighup(&state)?;
    let stop = stop_signals()?;
    let drain = Drain::new(grace);
    // The router of `crate::api::app`, with the drain gate and one log line per request
    // (outermost, so refusals are logged too). Both are `Router::layer`s, so they see the
    // matched route.
    // Served as a make-service: each connection then shares the router (an `Arc`) instead of
    // axum deep-copying the whole router per connection (as serving a `Router` directly does
    // through `with_state`), which cost ~0.9 MiB per open connection, e.g. a bridge's claim.
    let app = crate::api::app(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            drain.clone(),
            shutdown::gate,
        ))
        .layer(axum::middleware::from_fn(
            crate::api::request_log::log_request,
        ));
    // The scheduler stops as the drain begins (no new scheduled run); the cluster loop runs
    // until the very end (see `Background::stop_scheduler`).
    let mut background = crate::api::Background::start(&state);
    let (stop_serving, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    // Before the first request can be answered (the socket is bound already). Either way
    // every accepted socket has TCP_NODELAY (see `crate::api::without_nagle`).
    let mut server = match tls {
        Some(tls) => {
            let config = Arc::new(tls.server_config()?);
            let listener = TlsListener::new(listener, config)?;
            tracing::info!(
                target: SERVER_LOG,
                fingerprint = %tls.fingerprint(),
                "listening on https://{addr}"
            );
            let served =
                axum::serve(listener, app.into_make_service()).with_graceful_shutdown(stopped);
            tokio::spawn(served.into_future())
        }
        None => {
            let listener = crate::api::without_nagle(listener);
            tracing::info!(target: SERVER_LOG, "listening on http://{addr}");
            let served =
                axum::serve(listener, app.into_make_service()).with_graceful_shutdown(stopped);
            tokio::spawn(served.into_future())
        }
    };
    let signal = tokio::select! {
        signal = stop => signal,
        served = &mut server => {
            background.stop().await;
            served??;
            anyhow::bail!("the server stopped without a signal");
        }
    };
    tracing::info!(target: SERVER_LOG, signal, "stop requested");
    background.stop_scheduler().await;
    let code = shutdown::drain(&state, &drain, grace).await?;
    let _ = stop_serving.send(());
    if tokio::time::timeout(CONNECTION_WAIT, &mut server)
        .await
        .is_err()
    {
        tracing::warn!(target: SERVER_LOG, "connections still open; closing them");
        server.abort();
    }
    background.stop().await;
    tracing::info!(target: SERVER_LOG, exit_code = code, "stopped");
    Ok(code)
}

/// Resolves at the first SIGTERM or SIGINT. The handlers are installed by this call, before
/// the server answers its first request: a signal that comes early is a graceful stop, not
/// the default action (the process killed outright), however soon a client sends it.
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// `kill -HUP` reloads the Cedar policies; a broken policy set keeps the old one.
fn reload_policies_on_sighup(state: &AppState) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    let policy = state.policy.clone();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match policy.reload() {
                Ok(()) => tracing::info!(
                    target: SERVER_LOG,
                    source = %policy.source(),
                    sha256 = %policy.digest(),
                    "policies reloaded"
                ),
                Err(e) => tracing::error!(
                    target: SERVER_LOG,
                    "policies NOT reloaded, keeping the old set: {e}"
                ),
            }
        }
    });
    Ok(())
}

/// Installs the log subscriber on stderr: `WARDEN_LOG` as the filter when set, else
/// `default_filter`.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already installed (a second call in one process): the first one stays.
    drop(installed);
}

/// The filter of `warden serve` when `WARDEN_LOG` is unset: warnings, the request lines and
/// the server's own lines.
pub const SERVE_LOG_FILTER: &str = "warn,warden::request=info,warden::server=info";

/// Sets up (once) a demo publisher, signs and registers the demo module, creates the
/// `hello-demo` process, prints how to run it, and serves.
pub async fn run_demo(args: DemoArgs) -> anyhow::Result<i32> {
    let root = &args.serve.data.data;
    let fresh = !root.join("server.key").exists();
    let admin_token = if fresh {
        Some(super::init::init_data_dir(&args.serve.data, &[])?.admin_token)
    } else {
        None
    };
    let limits = args.serve.runs.limits()?;
    let tls = choose_tls(&args.serve)?;
    let listener = bind(args.serve.listen).await?;
    let dir = args.serve.data.open()?;
    let _control = super::control::ControlSocket::start(super::backup::Source::of(&dir))?;
    let state = AppState::open_with(dir, args.serve.policy_source(), &limits).await?;
    let publisher = root.join("demo-publisher.key");
    let key = if publisher.exists() {
        super::sign::load_signing_key(&publisher)?
    } else {
        super::sign::keygen(super::sign::KeygenArgs {
            out: root.join("demo-publisher"),
        })?;
        super::sign::load_signing_key(&publisher)?
    };
    state
        .modules
        .trust_publisher("demo", &key.verifying_key())?;
    let manifest = Manifest::parse(
        &std::fs::read_to_string(&args.manifest)
            .with_context(|| args.manifest.display().to_string())?,
    )?;
    let component =
        std::fs::read(&args.module).with_context(|| args.module.display().to_string())?;
    let signed = signing::sign(&component, &manifest, &key)?;
    let verified = state.modules.verify(&signed)?;
    let task = state.bridge.runtime().prepare(&signed)?;
    crate::registry::store::check_imports(&verified.manifest, &task.imports)?;
    let module = state.modules.store(&verified, &signed, "admin")?;
    if state.processes.get_by_name("hello-demo")?.is_none() {
        state.processes.create(NewProcess {
            name: "hello-demo".into(),
            description: "The demo: greets someone in the run's event log.".into(),
            owner: "admin".into(),
            module_digest: module.digest.clone(),
            module: format!("{}@{}", module.name, module.version),
            grant: Default::default(),
            default_inputs: Default::default(),
            shared_users: Default::default(),
            shared_roles: Default::default(),
            required_approvals: 0,
            retry_on_lost: false,
            limits: Default::default(),
            workflow: None,
        })?;
    }
    let token = admin_token
        .as_deref()
        .unwrap_or("<the admin token printed when this data directory was created>");
    // With TLS (the certificate `warden init` made), the CLI pins it by its fingerprint.
    let (server, pin) = match &tls {
        Some(tls) => (
            format!("https://{}", args.serve.listen),
            format!(" --server-fingerprint {}", tls.fingerprint()),
        ),
        None => (format!("http://{}", args.serve.listen), String::new()),
    };
    println!(
        "demo ready: module {}@{} ({}), process hello-demo",
        module.name, module.version, module.digest
    );
    if admin_token.is_some() {
        println!("admin token (shown once, keep it): {token}");
    }
    if let Some(tls) = &tls {
        println!("server certificate fingerprint: {}", tls.fingerprint());
    }
    println!("run the demo from another shell:");
    println!(
        "  ./target/release/warden run start hello-demo --input name=Ada --wait --server {server}{pin} --token {token}"
    );
    listen(
        listener,
        tls,
        state,
        Duration::from_secs(args.serve.shutdown_grace),
    )
    .await
}

/// Creates the data directory and the first Privileged Administrator; returns its token.
pub(super) fn bootstrap_admin(dir: &DataDir) -> anyhow::Result<String> {
    let users = crate::users::UserStore::open(&dir.db)?;
    let roles = [crate::policy::BuiltinRole::PrivilegedAdministrator
        .as_str()
        .to_string()]
    .into();
    users.create_user("admin", roles)?;
    let issued = users.issue_token("admin", "created by warden init")?;
    Ok(issued.token.expose_secret().to_string())
}
