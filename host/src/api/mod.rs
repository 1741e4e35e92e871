//! The HTTP API (axum), versioned under `/v1`, plus `/healthz`, `/metrics` and
//! `/openapi.json`.
//!
//! Layout: [`error`] (one `IntoResponse` error type with a stable `code`), [`auth`] (the
//! bearer-token [`auth::Caller`] extractor and policy checks), `routes/` (one file per
//! resource). Every route is registered through utoipa's router, so the OpenAPI document
//! and the router are built from the same list and cannot drift apart.
//!
//! Threat: unauthenticated or oversized requests, and internals leaking in errors. Bodies
//! are capped ([`MAX_JSON_BODY`], module uploads at [`crate::runtime::cache::MAX_COMPONENT_BYTES`]);
//! 5xx bodies carry no detail.

mod audit_scope;
pub mod auth;
pub mod error;
pub mod openapi;
pub mod request_log;
mod routes;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::OpenApiRouter;

use crate::audit::AuditLog;
use crate::bridge::Bridge;
use crate::policy::PolicyEngine;
use crate::registry::store::ModuleStore;
use crate::runs::approval::Approvals;
use crate::runs::dispatch::Dispatcher;
use crate::runs::schedule::{SCHEDULE_TICK, ScheduleStore, Scheduler};
use crate::runs::{ProcessStore, RunStore};
use crate::targets::TargetStore;
use crate::users::UserStore;
use crate::vault::Vault;

/// Largest JSON request body. Blocks memory exhaustion through request bodies.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// Sizes fixed when the server starts: the instance pool (whose run capacity is the number
/// of execution slots) and the run queue's bounds and fairness caps.
#[derive(Clone, Debug, Default)]
pub struct ServerLimits {
    pub engine: crate::runtime::engine::EngineConfig,
    pub queue: crate::runs::queue::QueueLimits,
    /// Heartbeat and takeover timings when several servers share a database.
    pub cluster: crate::runs::cluster::ClusterConfig,
    /// The zone the embedded bridge serves (`default` when none).
    pub embedded_zone: Option<String>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Runs started over the API.
    pub runs_started: AtomicU64,
    /// Modules accepted.
    pub modules_uploaded: AtomicU64,
    /// Module uploads rejected.
    pub modules_rejected: AtomicU64,
    /// Requests refused by policy.
    pub denials: AtomicU64,
}

impl Metrics {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The embedded bridge.
    pub bridge: Bridge,
    /// Starts and tracks runs.
    pub dispatcher: Dispatcher,
    /// Task modules and trusted publishers.
    pub modules: ModuleStore,
    /// Processes.
    pub processes: ProcessStore,
    /// Runs.
    pub runs: RunStore,
    /// Users, roles, tokens.
    pub users: UserStore,
    /// Cedar policies.
    pub policy: PolicyEngine,
    /// The audit log.
    pub audit: AuditLog,
    /// The vault.
    pub vault: Vault,
    /// Run-scoped leases on credentials.
    pub leases: crate::vault::lease::LeaseStore,
    /// Targets.
    pub targets: TargetStore,
    /// Four-eyes approvals of runs.
    pub approvals: Approvals,
    /// Cron schedules of processes (fired by the scheduler [`serve`] runs).
    pub schedules: ScheduleStore,
    /// This server among the others on the same database (heartbeat, runs of stopped
    /// servers, cancels of runs held elsewhere); its loop runs in [`serve`].
    pub cluster: crate::runs::cluster::Cluster,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Sinks and alert rules over the audit stream; its tasks run in [`serve`].
    pub notify: crate::notify::Notifier,
    /// The server's end of the remote bridges.
    pub hub: crate::bridge::hub::BridgeHub,
    /// Inbound triggers: signed events that start runs.
    pub triggers: crate::triggers::Triggers,
}

/// The router and its OpenAPI document, built from one route list.
pub fn router_and_openapi(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(routes::system::routes())
        .merge(routes::modules::routes())
        .merge(routes::targets::routes())
        .merge(routes::credentials::routes())
        .merge(routes::processes::routes())
        .merge(routes::runs::routes())
        .merge(routes::audit::routes())
        .merge(routes::users::routes())
        .merge(routes::tokens::routes())
        .merge(routes::leases::routes())
        .merge(routes::approvals::routes())
        .merge(routes::schedules::routes())
        .merge(routes::notify::routes())
        .merge(routes::bridges::routes())
        .merge(routes::triggers::routes())
        .split_for_parts();
    openapi::finish(&mut api);
    let doc = api.clone();
    let router = router
        .merge(routes::bridges::protocol())
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { axum::Json(doc) }),
        )
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(state.clone());
    let router = crate::ui::mount(router, state);
    (router, api)
}

impl AppState {
    /// Opens every store in the data directory, loads the policies, recovers runs a
    /// previous process left unfinished, and builds the embedded bridge, with the default
    /// engine and run-queue limits.
    pub async fn open(
        dir: crate::store::DataDir,
        policies: impl Into<crate::policy::PolicySource>,
    ) -> anyhow::Result<Self> {
        Self::open_with(dir, policies, &ServerLimits::default()).await
    }

    /// [`AppState::open`] with `limits`: the pool's size and the run queue's bounds.
    pub async fn open_with(
        dir: crate::store::DataDir,
        policies: impl Into<crate::policy::PolicySource>,
        limits: &ServerLimits,
    ) -> anyhow::Result<Self> {
        use crate::runs::RunState;
        let runtime = crate::bridge::Runtime::new(&limits.engine, &dir.artifacts())?;
        let crate::store::DataDir {
            db,
            master_key,
            server_key,
            ..
        } = dir;
        let policies = policies.into();
        let policy = PolicyEngine::load_from(policies.clone())
            .map_err(|e| anyhow::anyhow!("loading policies from {policies}: {e}"))?;
        let audit = AuditLog::open(&db, server_key)?;
        let vault = Vault::open(&db, master_key)?;
        let targets = TargetStore::open(&db)?;
        let leases = crate::vault::lease::LeaseStore::open(&db, audit.clone())?;
        // The database belongs to this process alone (sled): no run of the previous one
        // survives a restart, so neither may any of their leases. Over a shared database the
        // other servers' runs and leases live on; the cluster sweep ends those of servers
        // that stopped.
        let shared = db.kind() != "sled";
        if !shared {
            let stale = leases
                .revoke_all_active(crate::runs::RECOVERY_ACTOR, "server restarted")
                .await?;
            if !stale.is_empty() {
                tracing::warn!(count = stale.len(), "leases revoked at start");
            }
        }
        let services = crate::capabilities::Services::local(
            audit.clone(),
            vault.clone(),
            targets.clone(),
            crate::ssh::SshPool::new(crate::ssh::SshConfig::default()),
            leases.clone(),
        );
        let bridge = Bridge::new(runtime, services);
        let modules = ModuleStore::open(&db)?;
        let server_id = uuid::Uuid::new_v4().to_string();
        let runs = RunStore::open(&db, audit.clone())?.owned_by(&server_id);
        let cluster = crate::runs::cluster::Cluster::new(
            &db,
            runs.clone(),
            leases.clone(),
            limits.cluster.clone(),
        );
        cluster.beat().await?;
        let mut left_running = Vec::new();
        if !shared {
            let recovered = runs.recover_all().await?;
            let interrupted = recovered.interrupted;
            left_running = recovered.workflows;
            if !interrupted.is_empty() {
                tracing::warn!(count = interrupted.len(), "runs interrupted by a restart");
            }
            // Queued runs lived in the previous process's run queue only: they never started,
            // and the queue is not rebuilt (their callers request them again).
            for id in runs.ids_in_state(RunState::Queued)? {
                if runs.is_remote(&id)? {
                    continue;
                }
                runs.transition(&id, RunState::Cancelled, crate::runs::RECOVERY_ACTOR, |r| {
                    r.error = Some("the server restarted before the run started".into());
                })
                .await?;
            }
        }
        let dispatcher = Dispatcher::new(
            bridge.clone(),
            modules.clone(),
            runs.clone(),
            policy.clone(),
            crate::runtime::limits::RunLimits::default(),
        )
        .with_queue(crate::runs::queue::RunQueue::new(
            limits.engine.run_slots(),
            limits.queue.clone(),
        ))
        .with_embedded_zone(
            limits
                .embedded_zone
                .as_deref()
                .unwrap_or(crate::targets::DEFAULT_ZONE),
        );
        let processes = ProcessStore::open(&db)?;
        let schedules = ScheduleStore::open(&db)?;
        let approvals = Approvals::open(
            &db,
            runs.clone(),
            processes.clone(),
            schedules.clone(),
            dispatcher.clone(),
            audit.clone(),
        )?;
        if !shared {
            // Workflow runs live on across a restart (over a shared database, a stopped
            // server's workflow runs are ended interrupted by the cluster sweep instead).
            let resumed =
                crate::workflow::engine::resume_all(&dispatcher, &processes, left_running).await?;
            if resumed > 0 {
                tracing::info!(count = resumed, "workflow runs resumed after a restart");
            }
        }
        let hub = crate::bridge::hub::BridgeHub::new(crate::bridge::hub::HubParts {
            registry: crate::bridge::registry::BridgeRegistry::open(&db, audit.clone()),
            runs: runs.clone(),
            processes: processes.clone(),
            dispatcher: dispatcher.clone(),
            targets: targets.clone(),
            vault: vault.clone(),
            leases: leases.clone(),
            audit: audit.clone(),
            policy: policy.clone(),
            limits: crate::runtime::limits::RunLimits::default(),
        });
        let notify = crate::notify::Notifier::new(crate::notify::NotifyStore::new(
            &db,
            vault.clone(),
            audit.clone(),
        ));
        let triggers = crate::triggers::Triggers::new(
            &db,
            vault.clone(),
            audit.clone(),
            runs.clone(),
            processes.clone(),
            dispatcher.clone(),
            UserStore::open(&db)?,
        );
        Ok(AppState {
            triggers,
            bridge,
            dispatcher,
            modules,
            processes,
            approvals,
            schedules,
            runs,
            users: UserStore::open(&db)?,
            policy,
            audit,
            vault,
            leases,
            targets,
            cluster,
            metrics: Arc::default(),
            notify,
            hub,
        })
    }
}

/// The application router.
pub fn app(state: AppState) -> Router {
    router_and_openapi(state).0
}

impl AppState {
    /// The scheduler over this state's stores (see [`crate::runs::schedule`]).
    pub fn scheduler(&self) -> Scheduler {
        Scheduler {
            schedules: self.schedules.clone(),
            processes: self.processes.clone(),
            dispatcher: self.dispatcher.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// What a server runs beside its router: the scheduler and the cluster loop (heartbeat, the
/// sweep for runs of stopped servers, cancel requests). [`serve`] and `warden serve` both
/// start it here.
pub struct Background {
    scheduler: Option<crate::runs::schedule::SchedulerHandle>,
    cluster: Option<crate::runs::cluster::ClusterHandle>,
    /// The audit stream's sinks and alert rules (their tasks).
    notify: crate::notify::Notifier,
}

impl Background {
    /// Starts both loops (the scheduler catches up on missed schedules first).
    pub fn start(state: &AppState) -> Self {
        if let Err(e) = state.notify.reload() {
            tracing::error!(error = %e, "cannot start the notification sinks");
        }
        Self {
            scheduler: Some(state.scheduler().spawn(SCHEDULE_TICK)),
            cluster: Some(state.cluster.clone().spawn(state.dispatcher.clone())),
            notify: state.notify.clone(),
        }
    }

    /// Stops the scheduler (no new scheduled run) and leaves the cluster loop running, so
    /// other servers do not take this one's runs while they finish.
    pub async fn stop_scheduler(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.stop().await;
        }
    }

    /// Stops both loops (this server's heartbeat is removed).
    pub async fn stop(mut self) {
        self.notify.stop();
        self.stop_scheduler().await;
        if let Some(cluster) = self.cluster.take() {
            cluster.stop().await;
        }
    }
}

/// `listener` with Nagle's algorithm off on every connection: small responses and
/// event-stream chunks must not wait out delayed ACKs (~40 ms on loopback).
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn no_delay(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
    }
    listener.tap_io(no_delay as fn(&mut tokio::net::TcpStream))
}

/// Serves `app` on an already-bound listener until `shutdown` completes, with the
/// [`Background`] loops running alongside.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = Background::start(&state);
    let served = axum::serve(without_nagle(listener), app(state).into_make_service())
        .with_graceful_shutdown(shutdown)
        .await;
    background.stop().await;
    served
}
