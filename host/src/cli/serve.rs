//! `warden serve` (the server with its embedded bridge) and `warden demo` (set up a demo
//! publisher, a signed demo module and a demo process, then serve).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use secrecy::ExposeSecret;

use super::DataArg;
use crate::api::{AppState, ServerLimits, serve};
use crate::registry::manifest::Manifest;
use crate::registry::signing;
use crate::runs::NewProcess;
use crate::runs::queue::QueueLimits;
use crate::runtime::engine::EngineConfig;
use crate::store::DataDir;

/// Where the policies are by default (the repository's `policies/`).
const DEFAULT_POLICIES: &str = "policies";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Directory with the Cedar schema and policies.
    #[arg(long, env = "WARDEN_POLICIES", default_value = DEFAULT_POLICIES)]
    policies: PathBuf,
    /// How long an approval of a run counts, in seconds (default 24 hours).
    #[arg(long, env = "WARDEN_APPROVAL_TTL_SECS", default_value_t = 24 * 3600)]
    approval_ttl_secs: u64,
    #[command(flatten)]
    runs: RunQueueArgs,
    #[command(flatten)]
    data: DataArg,
}

/// Execution capacity and the run queue's bounds. Runs beyond the capacity wait `queued`;
/// beyond the bounds they are refused (429 for a caller's share, 503 for the server's).
#[derive(Args, Debug)]
pub struct RunQueueArgs {
    /// Runs executing at once; sizes the instance pool (1 to 1024).
    #[arg(long, env = "WARDEN_MAX_CONCURRENT_RUNS", default_value_t = 64)]
    max_concurrent_runs: u32,
    /// Runs that may wait for an execution slot, all callers together.
    #[arg(long, env = "WARDEN_MAX_QUEUED_RUNS", default_value_t = 1024)]
    max_queued_runs: usize,
    /// Runs one user (or a schedule's owner) may have executing at once.
    #[arg(long, env = "WARDEN_MAX_RUNNING_PER_USER", default_value_t = 16)]
    max_running_per_user: usize,
    /// Runs one user may have waiting.
    #[arg(long, env = "WARDEN_MAX_QUEUED_PER_USER", default_value_t = 64)]
    max_queued_per_user: usize,
    /// Runs of one process that may execute at once.
    #[arg(long, env = "WARDEN_MAX_RUNNING_PER_PROCESS", default_value_t = 32)]
    max_running_per_process: usize,
    /// Runs of one process that may wait.
    #[arg(long, env = "WARDEN_MAX_QUEUED_PER_PROCESS", default_value_t = 256)]
    max_queued_per_process: usize,
    /// With several servers on one database: after how many seconds without a heartbeat
    /// another server ends a stopped server's runs (running ones as interrupted).
    #[arg(long, env = "WARDEN_SERVER_DEAD_AFTER_SECS", default_value_t = 10)]
    server_dead_after_secs: u64,
}

impl RunQueueArgs {
    /// The validated limits (see [`crate::runs::queue::QueueLimits::normalized`]).
    fn limits(&self) -> anyhow::Result<ServerLimits> {
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
        let dead_after = std::time::Duration::from_secs(self.server_dead_after_secs);
        let cluster = crate::runs::cluster::ClusterConfig {
            dead_after,
            // A heartbeat several times within the window, and a sweep soon after it ends.
            heartbeat: (dead_after / 4).min(std::time::Duration::from_secs(1)),
            sweep: (dead_after / 2).min(std::time::Duration::from_secs(2)),
            ..Default::default()
        };
        Ok(ServerLimits {
            engine,
            queue: queue.normalized(),
            cluster,
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
    serve: ServeArgs,
}

pub async fn run_serve(args: ServeArgs) -> anyhow::Result<i32> {
    let limits = args.runs.limits()?;
    let dir = args.data.open()?;
    let mut state = AppState::open_with(dir, &args.policies, &limits).await?;
    let ttl = std::time::Duration::from_secs(args.approval_ttl_secs);
    state.approvals = state.approvals.with_ttl(ttl);
    listen(args.listen, state).await
}

async fn listen(addr: SocketAddr, state: AppState) -> anyhow::Result<i32> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    eprintln!("warden: listening on http://{}", listener.local_addr()?);
    reload_policies_on_sighup(&state)?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, state, shutdown).await?;
    Ok(0)
}

/// `kill -HUP` reloads the Cedar policies; a broken policy set keeps the old one.
fn reload_policies_on_sighup(state: &AppState) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    let policy = state.policy.clone();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match policy.reload() {
                Ok(()) => eprintln!("warden: policies reloaded"),
                Err(e) => eprintln!("warden: policies NOT reloaded, keeping the old set: {e}"),
            }
        }
    });
    Ok(())
}

/// Sets up (once) a demo publisher, signs and registers the demo module, creates the
/// `hello-demo` process, prints how to run it, and serves.
pub async fn run_demo(args: DemoArgs) -> anyhow::Result<i32> {
    let root = &args.serve.data.data;
    let fresh = !root.join("server.key").exists();
    let admin_token = if fresh {
        Some(super::init_data_dir(&args.serve.data)?)
    } else {
        None
    };
    let limits = args.serve.runs.limits()?;
    let dir = args.serve.data.open()?;
    let state = AppState::open_with(dir, &args.serve.policies, &limits).await?;
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
        })?;
    }
    let token = admin_token
        .as_deref()
        .unwrap_or("<the admin token printed when this data directory was created>");
    let server = format!("http://{}", args.serve.listen);
    println!(
        "demo ready: module {}@{} ({}), process hello-demo",
        module.name, module.version, module.digest
    );
    if admin_token.is_some() {
        println!("admin token (shown once, keep it): {token}");
    }
    println!("run the demo from another shell:");
    println!(
        "  ./target/release/warden run start hello-demo --input name=Ada --wait --server {server} --token {token}"
    );
    listen(args.serve.listen, state).await
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
