//! Several servers over one database: who is alive, whose runs are whose, and what happens
//! to the runs of a server that dies.
//!
//! Each server has an id (fresh per process) and writes a heartbeat into [`SERVERS`] every
//! [`ClusterConfig::heartbeat`]. Every run a server queues or starts is recorded as held by
//! it ([`super::run::RUNS_ACTIVE`], in the same commit as the transition). Every server
//! sweeps, every [`ClusterConfig::sweep`]: a held run whose holder's heartbeat is older than
//! [`ClusterConfig::dead_after`] (or absent) is ended — a running one `interrupted` (its
//! effects on targets are unknown; re-running a privileged task behind a dead server's back
//! is not safe), a queued one `cancelled` (it never started) — with its leases revoked.
//! Each end is a compare-and-swap transition, so when several servers sweep at once exactly
//! one records it.
//!
//! A cancel that reaches a server which does not hold the run leaves a request in
//! [`RUN_CANCELS`]; the holder polls for requests about its runs every
//! [`ClusterConfig::poll`] and stops them like a local cancel.
//!
//! On sled the database belongs to one process, so every other holder is dead at once.
//!
//! Threats: a run stuck "running" forever after its server was killed, a run executed twice,
//! and a dead server's leases outliving it. Limits: liveness is judged by wall clocks, so the
//! servers' clocks must agree to well within `dead_after` (NTP); a server that stalls longer
//! than `dead_after` without dying has its runs ended under it (its own final transition then
//! loses the compare-and-swap and is recorded as `run.transition-lost`).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::dispatch::Dispatcher;
use super::run::{INTERRUPTED_ERROR, RECOVERY_ACTOR};
use super::{RunState, RunStore, RunsError, now_ms};
use crate::bridge::registry::BridgeRegistry;
use crate::store::{Database, Scan, Table, TableDef};
use crate::vault::lease::LeaseStore;

/// Servers' heartbeats: server id -> [`Heartbeat`] JSON.
pub const SERVERS: TableDef = TableDef {
    name: "servers",
    columns: &[],
    columns_of: None,
};

/// Cancel requests for runs another server holds: run id -> the requesting actor.
pub const RUN_CANCELS: TableDef = TableDef {
    name: "run_cancels",
    columns: &[],
    columns_of: None,
};

/// Error stored on a run whose remote bridge stopped renewing its claim.
pub const LOST_ERROR: &str = "the remote bridge running this run stopped renewing its claim \
     (killed, cut off from the server, or revoked); its effects on targets are unknown";

/// Who starts a lost run again (`retry_on_lost`), in the audit record linking both runs.
pub const RETRY_ACTOR: &str = "system:retry-lost";

/// Holder-name prefix of runs a remote bridge holds.
pub const BRIDGE_HOLDER: &str = "bridge:";

/// Holder-name prefix of runs waiting for a bridge of a zone.
pub const ZONE_HOLDER: &str = "zone:";

/// Error stored on a queued run whose server died before it started.
pub const ORPHANED_QUEUED_ERROR: &str = "the server holding this run stopped before it started";

/// Timings of the cluster loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// How often the heartbeat is written.
    pub heartbeat: Duration,
    /// How old a heartbeat may be before its server counts as dead.
    pub dead_after: Duration,
    /// How often held runs are checked for dead holders.
    pub sweep: Duration,
    /// How often cancel requests for this server's runs are looked for.
    pub poll: Duration,
    /// How long a remote bridge may go unheard before the runs it holds are `lost`.
    pub bridge_lost_after: Duration,
    /// How long a run may wait for a bridge of its zone before it is cancelled.
    pub bridge_wait: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(10),
            sweep: Duration::from_secs(2),
            poll: Duration::from_millis(200),
            bridge_lost_after: Duration::from_secs(30),
            bridge_wait: Duration::from_secs(3600),
        }
    }
}

/// One server's liveness record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Heartbeat {
    pub started_ms: u64,
    pub beat_ms: u64,
}

/// This server's view of the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    started_ms: u64,
    shared: bool,
    config: ClusterConfig,
    servers: Table,
    cancels: Table,
    runs: RunStore,
    leases: LeaseStore,
    bridges: BridgeRegistry,
    processes: super::ProcessStore,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The cluster as seen by the server whose runs `runs` holds (its owner id is this
    /// server's id).
    pub fn new(db: &Database, runs: RunStore, leases: LeaseStore, config: ClusterConfig) -> Self {
        let bridges = BridgeRegistry::open(db, runs.audit().clone());
        let processes = super::ProcessStore::over(db);
        Self {
            inner: Arc::new(Inner {
                id: runs.owner().to_string(),
                started_ms: now_ms(),
                shared: db.kind() != "sled",
                config,
                servers: db.table(&SERVERS),
                cancels: db.table(&RUN_CANCELS),
                runs,
                leases,
                bridges,
                processes,
            }),
        }
    }

    /// This server's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// How long a remote bridge may go unheard before its runs are `lost`.
    pub fn bridge_lost_after(&self) -> Duration {
        self.inner.config.bridge_lost_after
    }

    /// The cancel requests (run id -> actor) for runs held elsewhere: a remote bridge learns
    /// of a cancel from them when it renews its claim.
    pub fn cancel_requests(&self) -> Table {
        self.inner.cancels.clone()
    }

    /// Writes this server's heartbeat.
    pub async fn beat(&self) -> Result<(), RunsError> {
        let beat = Heartbeat {
            started_ms: self.inner.started_ms,
            beat_ms: now_ms(),
        };
        let (table, id) = (self.inner.servers.clone(), self.inner.id.clone());
        let bytes = serde_json::to_vec(&beat)?;
        tokio::task::spawn_blocking(move || table.put(id, bytes))
            .await
            .map_err(|_| RunsError::TaskFailed)??;
        Ok(())
    }

    /// Removes this server's heartbeat (a clean stop): its runs may be taken over at once.
    pub fn leave(&self) -> Result<(), RunsError> {
        self.inner.servers.remove(self.inner.id.as_bytes())?;
        Ok(())
    }

    /// True if `server` wrote a heartbeat within `dead_after` (on sled: only this server).
    ///
    /// A remote bridge (`bridge:<id>`) is alive while enrolled, unrevoked and heard from
    /// within [`ClusterConfig::bridge_lost_after`]; a zone (`zone:<name>`, the holder of runs
    /// waiting for a bridge) always is: its runs wait for one (see `crate::bridge::hub`).
    pub fn is_alive(&self, server: &str) -> Result<bool, RunsError> {
        if server == self.inner.id || server.starts_with(ZONE_HOLDER) {
            return Ok(true);
        }
        if server.starts_with(BRIDGE_HOLDER) {
            return self
                .inner
                .bridges
                .is_alive(server, self.inner.config.bridge_lost_after)
                .map_err(|e| RunsError::Bridge(e.to_string()));
        }
        if !self.inner.shared {
            return Ok(false);
        }
        let Some(bytes) = self.inner.servers.get(server.as_bytes())? else {
            return Ok(false);
        };
        let Ok(beat) = serde_json::from_slice::<Heartbeat>(&bytes) else {
            return Ok(false);
        };
        let dead_after =
            u64::try_from(self.inner.config.dead_after.as_millis()).unwrap_or(u64::MAX);
        Ok(now_ms().saturating_sub(beat.beat_ms) <= dead_after)
    }

    /// Ends every run held by a dead server (see the module doc); returns their ids.
    pub async fn sweep(&self) -> Result<Vec<String>, RunsError> {
        let mut ended = Vec::new();
        let mut verdicts = std::collections::HashMap::new();
        for (run_id, holder) in self.inner.runs.held()? {
            if holder.starts_with(ZONE_HOLDER) {
                if self.expire_waiting(&run_id, &holder).await? {
                    ended.push(run_id);
                }
                continue;
            }
            let alive = match verdicts.get(&holder) {
                Some(alive) => *alive,
                None => {
                    let alive = self.is_alive(&holder)?;
                    verdicts.insert(holder.clone(), alive);
                    alive
                }
            };
            if !alive && self.end_orphan(&run_id, &holder).await? {
                ended.push(run_id);
            }
        }
        self.forget_old_requests()?;
        Ok(ended)
    }

    /// Cancels a run that waited for a bridge of its zone longer than
    /// [`ClusterConfig::bridge_wait`]; false if it is younger or moved on.
    async fn expire_waiting(&self, run_id: &str, holder: &str) -> Result<bool, RunsError> {
        let Some(run) = self.inner.runs.get(run_id)? else {
            return Ok(false);
        };
        let wait = self.inner.config.bridge_wait;
        let waited = now_ms().saturating_sub(run.created_ms);
        if run.state != RunState::Queued || u128::from(waited) <= wait.as_millis() {
            return Ok(false);
        }
        let zone = holder.trim_start_matches(ZONE_HOLDER);
        let error = format!(
            "no bridge of zone {zone} took the run within {} s",
            wait.as_secs()
        );
        let ended = self
            .inner
            .runs
            .transition_noted(run_id, RunState::Cancelled, RECOVERY_ACTOR, &error, |r| {
                r.error = Some(error.clone());
                r.waiting = None;
            })
            .await;
        match ended {
            Ok(_) => Ok(true),
            Err(RunsError::BadTransition { .. } | RunsError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ends one run of dead server `holder`; false if it had moved on meanwhile.
    async fn end_orphan(&self, run_id: &str, holder: &str) -> Result<bool, RunsError> {
        let Some(run) = self.inner.runs.get(run_id)? else {
            return Ok(false);
        };
        let bridge = holder.starts_with(BRIDGE_HOLDER);
        let (next, error) = match run.state {
            RunState::Running if bridge => (RunState::Lost, LOST_ERROR),
            RunState::Running => (RunState::Interrupted, INTERRUPTED_ERROR),
            RunState::Queued => (RunState::Cancelled, ORPHANED_QUEUED_ERROR),
            _ => return Ok(false),
        };
        let note = if bridge {
            format!("{holder} stopped renewing its claim (killed, cut off or revoked)")
        } else {
            format!("server {holder} stopped")
        };
        let ended = self
            .inner
            .runs
            .transition_noted(run_id, next, RECOVERY_ACTOR, &note, |r| {
                r.error = Some(error.to_string());
            })
            .await;
        match ended {
            Ok(_) => {}
            // Another server (or the holder, just in time) recorded its end first.
            Err(RunsError::BadTransition { .. } | RunsError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        tracing::warn!(run = %run_id, server = %holder, state = %next.as_str(), "run of a stopped server ended");
        if let Err(e) = self
            .inner
            .leases
            .revoke_run(run_id, RECOVERY_ACTOR, "the server holding the run stopped")
            .await
        {
            tracing::error!(run = %run_id, error = %e, "leases of an orphaned run not revoked");
        }
        Ok(true)
    }

    /// Starts again, as new runs with the same inputs and requester, the runs among `ended`
    /// that a remote bridge lost and whose process says that is safe (`retry_on_lost`).
    /// Exactly one server ends a run (a compare-and-swap), so exactly one retries it.
    async fn retry_lost(&self, dispatcher: &Dispatcher, ended: &[String]) {
        for id in ended {
            let Ok(Some(run)) = self.inner.runs.get(id) else {
                continue;
            };
            // A workflow's step run is retried by the workflow's own `retry` rules.
            if run.state != RunState::Lost || run.step.is_some() {
                continue;
            }
            let Ok(Some(process)) = self.inner.processes.get(&run.process_id) else {
                continue;
            };
            if !process.retry_on_lost {
                continue;
            }
            let retried = dispatcher
                .start(&process, run.inputs.clone(), &run.actor)
                .await;
            let (outcome, detail) = match &retried {
                Ok(new) => (
                    "ok",
                    format!("lost run {id} started again as run {}", new.id),
                ),
                Err(e) => (
                    "failed",
                    format!("lost run {id} could not be started again: {e}"),
                ),
            };
            tracing::warn!(run = %id, %detail, "retry of a lost run");
            let entry = crate::audit::AuditEntry {
                run_id: Some(id.clone()),
                actor: RETRY_ACTOR.to_string(),
                action: "run.retried".to_string(),
                target: None,
                credential: None,
                decision: crate::audit::Decision::Allowed,
                outcome: outcome.to_string(),
                duration_us: 0,
                detail: Some(detail),
            };
            if let Err(e) = self.inner.runs.audit().append(entry).await {
                tracing::error!(run = %id, error = %e, "retry of a lost run not audited");
            }
        }
    }

    /// Asks the server holding `run_id` to cancel it (it looks for requests every
    /// [`ClusterConfig::poll`]).
    pub async fn request_cancel(&self, run_id: &str, actor: &str) -> Result<(), RunsError> {
        let (table, id, actor) = (
            self.inner.cancels.clone(),
            run_id.to_string(),
            actor.to_string(),
        );
        tokio::task::spawn_blocking(move || table.put(id, actor))
            .await
            .map_err(|_| RunsError::TaskFailed)??;
        Ok(())
    }

    /// Cancels this server's runs that a request names; returns their ids.
    pub fn serve_cancel_requests(&self, dispatcher: &Dispatcher) -> Result<Vec<String>, RunsError> {
        let mut cancelled = Vec::new();
        for (run_id, _) in self.inner.cancels.scan(&Scan::all().limit(MAX_REQUESTS))? {
            let run_id = String::from_utf8_lossy(&run_id).into_owned();
            if let Some(control) = dispatcher.control(&run_id) {
                control.cancel();
                self.inner.cancels.remove(run_id.as_bytes())?;
                cancelled.push(run_id);
            }
        }
        Ok(cancelled)
    }

    /// Drops cancel requests for runs nobody holds any more (they ended).
    fn forget_old_requests(&self) -> Result<(), RunsError> {
        for (run_id, _) in self.inner.cancels.scan(&Scan::all().limit(MAX_REQUESTS))? {
            let held = self.inner.runs.held_by(&String::from_utf8_lossy(&run_id))?;
            if held.is_none() {
                self.inner.cancels.remove(run_id)?;
            }
        }
        Ok(())
    }

    /// Runs the heartbeat, the sweep and the cancel polling until the handle is stopped or
    /// dropped. The first sweep runs at once (at start, on sled, it ends the previous
    /// process's runs).
    pub fn spawn(self, dispatcher: Dispatcher) -> ClusterHandle {
        let (stop, mut stopped) = tokio::sync::watch::channel(());
        let task = tokio::spawn(async move {
            let config = self.inner.config.clone();
            let mut poll = tokio::time::interval(config.poll);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut last_beat, mut last_sweep) = (None, None);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = poll.tick() => {}
                }
                let now = tokio::time::Instant::now();
                if last_beat.is_none_or(|t| now - t >= config.heartbeat) {
                    last_beat = Some(now);
                    if let Err(e) = self.beat().await {
                        tracing::warn!(error = %e, "heartbeat not written");
                    }
                }
                if let Err(e) = self.serve_cancel_requests(&dispatcher) {
                    tracing::warn!(error = %e, "cancel requests not read");
                }
                if last_sweep.is_none_or(|t| now - t >= config.sweep) {
                    last_sweep = Some(now);
                    match self.sweep().await {
                        Ok(ended) => self.retry_lost(&dispatcher, &ended).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "sweep for runs of stopped servers failed")
                        }
                    }
                }
            }
            if let Err(e) = self.leave() {
                tracing::warn!(error = %e, "heartbeat not removed");
            }
        });
        ClusterHandle { stop, task }
    }
}

/// Most cancel requests read per poll (each names a run that exists; the table stays small).
const MAX_REQUESTS: usize = 1024;

/// Stops the cluster loop.
pub struct ClusterHandle {
    stop: tokio::sync::watch::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ClusterHandle {
    /// Stops the loop (removing this server's heartbeat) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
