//! Runs: one execution of a process, its persisted state machine, output and recovery.
//!
//! Threats: a run lost or stuck "running" after a crash, a transition with no audit record,
//! two controllers both deciding a run's outcome, and a record that grows without bound.
//!
//! A transition happens in this order (invariant 7, with invariant 2's fail-closed audit):
//! 1. under the run's lock, load the stored bytes and check [`RunState::can_become`];
//! 2. build the new record (the caller's edit, then the store's own fields) and check its size;
//! 3. hand the audit record `run.<state>` to the audit writer together with step 4
//!    ([`AuditLog::append_then`]); if the record cannot be written, nothing changes and the
//!    caller gets [`RunsError::Audit`];
//! 4. on the writer thread, right after the record is written: compare-and-swap the stored
//!    value from exactly the bytes loaded in 1 to the new ones. One flush then makes the
//!    record and the new state durable together (one fsync per transition, not two). Only
//!    now is the transition acknowledged.
//!
//! Steps 3 and 4 run on their own task, so a caller that stops waiting (a dropped request
//! future) cannot leave an audited transition half done. Because the state is written in the
//! audit commit, after its record (PostgreSQL: in the same transaction; sled: later in the one
//! log), a crash can never keep a new state without its record.
//!
//! The window that remains: a crash can keep the record and lose the state written after it
//! (a torn tail of the log), leaving an audit record of a transition the stored state does
//! not show. The stored state is authoritative (nothing was
//! acknowledged), and [`RunStore::recover`] makes the log say so at the next start:
//! - a run still `running` becomes `interrupted`, audited `run.interrupted`; so a log reading
//!   `run.succeeded` then `run.interrupted` for one run means the server died while recording
//!   the result, and the run's effects on its targets must be checked by hand;
//! - a run still `queued` or `awaiting-approval` gets a [`RECOVERED_ACTION`] record naming that
//!   state, superseding any earlier record that claimed it moved on (`run.running`,
//!   `run.cancelled`, …). Queued runs stay queued for the caller to dispatch again
//!   ([`RunStore::ids_in_state`]).
//!
//! After recovery the last `run.*` record of every stored run names its stored state. A
//! `run.queued` record for a run that is not stored at all means the server died before
//! acknowledging the creation; the requester never received that run id.
//!
//! The compare-and-swap in step 4 cannot lose to a transition made through the same store
//! (they hold the run's lock, so the loser fails the check in step 1 without auditing). It
//! guards against a second store on the same database; if it does lose, the audited
//! transition did not take effect, a [`LOST_TRANSITION_ACTION`] record says so, and the caller
//! gets [`RunsError::BadTransition`].
//!
//! Listing (filters, pages) is in `run_list.rs`.
//!
//! Storage: table [`RUNS`] maps run id to the record's JSON (with typed columns state, process,
//! actor and creation time for SQL); table [`RUNS_BY_TIME`] maps `created_ms` (big-endian)
//! followed by the id to the id, for newest-first listing. Both are written together once, at
//! creation; `created_ms` never changes afterwards.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{RunState, RunsError, check_size, is_sha256_hex, is_valid_name, is_valid_principal};
use crate::audit::{AuditEntry, AuditLog, Decision};
use crate::store::{Batch, ColumnValue, Database, Expect, StoreError, Table, TableDef};

#[path = "run_list.rs"]
mod list;
pub use list::{RunCursor, RunFilter};
#[path = "run_workflow.rs"]
mod workflow_runs;

/// Run records by id.
pub const RUNS: TableDef = TableDef {
    name: "runs",
    columns: &["state", "process_id", "actor", "created_ms"],
    columns_of: Some(columns),
};
/// Runs a server holds (queued in its run queue, or running on its bridge): run id -> the
/// holding server's id. Written with every transition, so it is exact; what the sweeper of
/// [`super::cluster`] reads to find the runs of a server that died.
pub const RUNS_ACTIVE: TableDef = TableDef {
    name: "runs_active",
    columns: &[],
    columns_of: None,
};
/// Index: `created_ms` big-endian ++ id -> id.
pub const RUNS_BY_TIME: TableDef = TableDef {
    name: "runs_by_time",
    columns: &[],
    columns_of: None,
};

/// Largest encoded run record. Inputs, events and output are capped by the caller; this is
/// the backstop that stops one run from writing an unbounded value into the store (and into
/// every listing that returns it). A transition that would exceed it fails with
/// [`RunsError::RecordTooLarge`] and changes nothing: the caller must trim and retry.
pub const MAX_RUN_RECORD_BYTES: usize = 8 << 20;

/// Most runs one [`RunStore::list`] returns. The limit comes from API requests and each
/// record can be large (up to [`MAX_RUN_RECORD_BYTES`]); without a cap one request could load
/// the whole run history into memory.
pub const MAX_LIST_RUNS: usize = 100;

/// Actor named in the audit records [`RunStore::recover`] writes.
pub const RECOVERY_ACTOR: &str = "system:recovery";

/// Audit action for a pending run found at start (see the module doc).
pub const RECOVERED_ACTION: &str = "run.recovered";

/// Audit action written when an audited transition lost its compare-and-swap and so did not
/// take effect.
pub const LOST_TRANSITION_ACTION: &str = "run.transition-lost";

/// Error text stored on a run that [`RunStore::recover`] marks interrupted.
pub const INTERRUPTED_ERROR: &str =
    "the server stopped while this run was running; its effects on targets are unknown";

/// What [`RunStore::recover_all`] found, oldest first.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Runs left `running`, now `interrupted`.
    pub interrupted: Vec<String>,
    /// Workflow runs left `running`, for the workflow engine to resume.
    pub workflows: Vec<String>,
}

/// Transitions of different runs proceed in parallel; runs that hash to the same stripe
/// wait for each other, which only costs latency.
const LOCK_STRIPES: usize = 256;

/// One execution of a process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: String,
    pub process_id: String,
    /// The module the run executes, fixed when the run is created.
    pub module_digest: String,
    /// Who started it (a user, or a schedule).
    pub actor: String,
    pub inputs: BTreeMap<String, serde_json::Value>,
    pub state: RunState,
    pub created_ms: u64,
    /// Set by the store on the move to `running`.
    pub started_ms: Option<u64>,
    /// Set by the store on the move to a terminal state.
    pub finished_ms: Option<u64>,
    pub result: Option<String>,
    /// Why the run failed, was denied or interrupted. Also written to the audit record, so
    /// it must already be redacted.
    pub error: Option<String>,
    /// The runtime's events, serialized; the caller fills these.
    pub events: Vec<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
    pub host_calls: u64,
    /// The remote bridge that runs (or ran) it; none on the embedded bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Why a queued run has not started yet (waiting for a bridge of its zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// A workflow run's steps (see `crate::workflow`); none for a single-task run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub workflow: Option<crate::workflow::WorkflowProgress>,
    /// For the run of one step of a workflow: which run and which step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub step: Option<crate::workflow::StepRef>,
}

impl RunRecord {
    /// A new queued run with no output yet; `created_ms` is now.
    pub fn new_queued(
        id: String,
        process_id: String,
        module_digest: String,
        actor: String,
        inputs: BTreeMap<String, serde_json::Value>,
    ) -> Self {
        Self {
            id,
            process_id,
            module_digest,
            actor,
            inputs,
            state: RunState::Queued,
            created_ms: super::now_ms(),
            started_ms: None,
            finished_ms: None,
            result: None,
            error: None,
            events: Vec::new(),
            stdout: String::new(),
            stderr: String::new(),
            host_calls: 0,
            bridge: None,
            waiting: None,
            workflow: None,
            step: None,
        }
    }
}

/// The fields a filter looks at; decoding only these skips building events and output for
/// runs that do not match.
#[derive(Deserialize)]
struct RunHead {
    process_id: String,
    actor: String,
    state: RunState,
    #[serde(default)]
    workflow: Option<serde::de::IgnoredAny>,
}

/// Persistent runs. Cheap to clone; clones share the per-run locks.
///
/// Open one per database (see the module doc for what a second one can and cannot break).
#[derive(Clone)]
pub struct RunStore {
    runs: Table,
    by_time: Table,
    active: Table,
    /// The id of the server this store belongs to: the holder of the runs it queues or starts.
    owner: Arc<str>,
    audit: AuditLog,
    locks: Arc<Locks>,
    /// Woken when a run ends, by run id (see [`RunStore::wait_finished`]).
    finished: workflow_runs::Waiters,
}

struct Locks {
    stripes: Vec<Arc<Mutex<()>>>,
    hasher: RandomState,
}

impl std::fmt::Debug for RunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStore").finish_non_exhaustive()
    }
}

impl RunStore {
    /// Opens the run tables in `db`; transitions are audited to `audit`.
    pub fn open(db: &Database, audit: AuditLog) -> Result<Self, RunsError> {
        let locks = Locks {
            stripes: (0..LOCK_STRIPES)
                .map(|_| Arc::new(Mutex::new(())))
                .collect(),
            hasher: RandomState::new(),
        };
        Ok(Self {
            runs: db.table(&RUNS),
            by_time: db.table(&RUNS_BY_TIME),
            active: db.table(&RUNS_ACTIVE),
            owner: Arc::from(uuid::Uuid::new_v4().to_string()),
            audit,
            locks: Arc::new(locks),
            finished: workflow_runs::Waiters::default(),
        })
    }

    /// This store as held by server `owner` (see [`RUNS_ACTIVE`]).
    pub fn owned_by(mut self, owner: &str) -> Self {
        self.owner = Arc::from(owner);
        self
    }

    /// The id of the server whose runs this store queues and starts.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The audit log transitions are recorded in.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Whether run `id` is held by a remote bridge or waits for one (such runs outlive a
    /// restart of the server: see `crate::bridge::hub`).
    pub fn is_remote(&self, id: &str) -> Result<bool, RunsError> {
        Ok(self.held_by(id)?.is_some_and(|holder| {
            holder.starts_with(super::cluster::BRIDGE_HOLDER)
                || holder.starts_with(super::cluster::ZONE_HOLDER)
        }))
    }

    /// Runs some server holds, with the holder's id (a page at a time, all of them).
    pub fn held(&self) -> Result<Vec<(String, String)>, RunsError> {
        Ok(self
            .active
            .all()?
            .into_iter()
            .map(|(id, owner)| {
                (
                    String::from_utf8_lossy(&id).into_owned(),
                    String::from_utf8_lossy(&owner).into_owned(),
                )
            })
            .collect())
    }

    /// The server holding run `id`, if one does.
    pub fn held_by(&self, id: &str) -> Result<Option<String>, RunsError> {
        Ok(self
            .active
            .get(id.as_bytes())?
            .map(|owner| String::from_utf8_lossy(&owner).into_owned()))
    }

    /// Stores a new run (state `queued` or `awaiting-approval`, not started), audited as
    /// `run.<state>` by its actor. Returns once both the audit record and the run are durable.
    pub async fn create(&self, run: RunRecord) -> Result<RunRecord, RunsError> {
        check_new(&run)?;
        self.insert_audited(&run, vec![created_entry(&run)]).await?;
        Ok(run)
    }

    /// Stores a new run that starts at once: audited `run.queued` and then `run.running`
    /// (with `note`, see [`Self::transition_noted`]) by its actor, stored as `running`, all
    /// in one commit. Returns the running run once the records and the run are durable.
    ///
    /// The same records and end state as [`Self::create`] followed by a transition to
    /// `running`, with one fsync instead of two: how the dispatcher starts a run that waits
    /// for nothing.
    pub async fn create_running(&self, run: RunRecord, note: &str) -> Result<RunRecord, RunsError> {
        check_new(&run)?;
        if run.state != RunState::Queued {
            return Err(invalid("state", "only a queued run can start at once"));
        }
        let running = next_record(&run, RunState::Running, |_| {})?;
        let entries = vec![
            created_entry(&run),
            transition_entry(&run, &running, &run.actor, note),
        ];
        self.insert_audited(&running, entries).await?;
        Ok(running)
    }

    /// Stores `run` under a new id after `entries` are audited, in one commit (see the
    /// module doc); refuses an id already taken, auditing nothing.
    async fn insert_audited(
        &self,
        run: &RunRecord,
        entries: Vec<AuditEntry>,
    ) -> Result<(), RunsError> {
        let bytes = encode(run)?;
        let guard = self.lock(&run.id).await;
        if self.runs.get(run.id.as_bytes())?.is_some() {
            return Err(RunsError::RunExists(run.id.clone()));
        }
        let mut insert = Batch::new();
        insert
            .put(&RUNS, run.id.as_bytes(), bytes, Expect::Absent)
            .put(
                &RUNS_BY_TIME,
                time_key(run.created_ms, &run.id),
                run.id.as_bytes(),
                Expect::Any,
            );
        self.hold(&mut insert, &run.id, run.state);
        let (store, id) = (self.clone(), run.id.clone());
        finish_detached(guard, async move {
            let (_, inserted) = store.audit.append_all_then(entries, insert).await?;
            match inserted {
                Ok(()) => Ok(()),
                Err(e) if e.is_conflict() => Err(RunsError::RunExists(id)),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Moves a run to `next`, after `edit` has filled its result, error or output.
    ///
    /// `edit` may change the output fields (`result`, `error`, `events`, `stdout`, `stderr`,
    /// `host_calls`); the store sets `state`, `started_ms` and `finished_ms` itself, and a
    /// change to the run's identity (`id`, `process_id`, `module_digest`, `actor`, `inputs`,
    /// `created_ms`) is refused. Audited as `run.<next>` by `actor`; durable before it returns.
    pub async fn transition(
        &self,
        id: &str,
        next: RunState,
        actor: &str,
        edit: impl FnOnce(&mut RunRecord),
    ) -> Result<RunRecord, RunsError> {
        self.transition_noted(id, next, actor, "", edit).await
    }

    /// [`Self::transition`] with `note` added to the audit record's detail (what the run
    /// was started with, how many host calls it made). `note` must not hold secrets.
    pub async fn transition_noted(
        &self,
        id: &str,
        next: RunState,
        actor: &str,
        note: &str,
        edit: impl FnOnce(&mut RunRecord),
    ) -> Result<RunRecord, RunsError> {
        if !is_valid_principal(actor) {
            return Err(invalid("actor", "not a valid user name"));
        }
        let guard = self.lock(id).await;
        let (old_bytes, old) = self
            .load(id)?
            .ok_or_else(|| RunsError::NotFound(id.into()))?;
        let new = next_record(&old, next, edit)?;
        let new_bytes = encode(&new)?;
        let entry = transition_entry(&old, &new, actor, note);
        let change = Change {
            id,
            old_bytes,
            new_bytes,
            next,
            actor,
        };
        self.write_audited(guard, entry, change).await?;
        Ok(new)
    }

    /// Replaces the inputs of a run that is still `awaiting-approval` (the only state in which
    /// a run's inputs may change: nothing has executed, and approvals bind to the inputs, so
    /// the change invalidates them). Audited as `run.inputs.changed` by `actor`, durable
    /// before it returns; any other state is [`RunsError::BadTransition`].
    pub async fn replace_inputs(
        &self,
        id: &str,
        actor: &str,
        inputs: BTreeMap<String, serde_json::Value>,
    ) -> Result<RunRecord, RunsError> {
        if !is_valid_principal(actor) {
            return Err(invalid("actor", "not a valid user name"));
        }
        let (guard, old_bytes, old) = self.lock_in(id, RunState::AwaitingApproval).await?;
        let new = RunRecord {
            inputs,
            ..old.clone()
        };
        let new_bytes = encode(&new)?;
        let entry = AuditEntry {
            run_id: Some(id.to_string()),
            actor: actor.to_string(),
            action: "run.inputs.changed".into(),
            target: None,
            credential: None,
            decision: Decision::Allowed,
            outcome: RunState::AwaitingApproval.as_str().to_string(),
            duration_us: 0,
            detail: Some(format!(
                "inputs now: {}",
                new.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        };
        let change = Change {
            id,
            old_bytes,
            new_bytes,
            next: RunState::AwaitingApproval,
            actor,
        };
        self.write_audited(guard, entry, change).await?;
        Ok(new)
    }

    /// The run with this id.
    pub fn get(&self, id: &str) -> Result<Option<RunRecord>, RunsError> {
        Ok(self.load(id)?.map(|(_, run)| run))
    }

    /// Ids of every run in `state`, oldest first, uncapped: what a dispatcher re-queues at
    /// start (`queued`). Scans the whole run history.
    pub fn ids_in_state(&self, state: RunState) -> Result<Vec<String>, RunsError> {
        Ok(self
            .scan_states()?
            .into_iter()
            .filter(|(_, s, _)| *s == state)
            .map(|(id, _, _)| id)
            .collect())
    }

    /// At server start, before any run is dispatched: every run left `running` becomes
    /// `interrupted` (audited `run.interrupted` by [`RECOVERY_ACTOR`]); every run left
    /// `queued` or `awaiting-approval` stays so and gets a [`RECOVERED_ACTION`] record. The
    /// caller re-dispatches queued runs ([`Self::ids_in_state`]). Terminal runs are left
    /// alone. Returns the ids of the interrupted runs, oldest first.
    ///
    /// Any audit failure stops recovery with an error: the server must not start serving
    /// with runs whose state it could not record.
    pub async fn recover(&self) -> Result<Vec<String>, RunsError> {
        Ok(self.recover_all().await?.interrupted)
    }

    /// [`Self::recover`], also returning the workflow runs left `running` (for the workflow
    /// engine to resume): one scan of the run history for both.
    pub async fn recover_all(&self) -> Result<Recovery, RunsError> {
        let mut interrupted = Vec::new();
        let mut workflows = Vec::new();
        for (id, state, workflow) in self.scan_states()? {
            if !state.is_terminal() && self.is_remote(&id)? {
                // A remote bridge holds it (or it waits for one): it lives on; the cluster
                // sweep ends it if its bridge is gone.
                continue;
            }
            if workflow && state == RunState::Running {
                // A workflow lives on: its engine resumes it (a step that was running ends
                // interrupted here, and the workflow follows its catch or stops).
                self.audit.append(recovered_entry(&id, state)).await?;
                workflows.push(id);
                continue;
            }
            if state == RunState::Running {
                if self.interrupt(&id).await? {
                    interrupted.push(id);
                }
            } else if !state.is_terminal() {
                self.audit.append(recovered_entry(&id, state)).await?;
            }
        }
        Ok(Recovery {
            interrupted,
            workflows,
        })
    }

    /// Marks one running run interrupted; false if it moved on since the scan.
    async fn interrupt(&self, id: &str) -> Result<bool, RunsError> {
        let edit = |run: &mut RunRecord| run.error = Some(INTERRUPTED_ERROR.to_string());
        match self
            .transition(id, RunState::Interrupted, RECOVERY_ACTOR, edit)
            .await
        {
            Ok(_) => Ok(true),
            Err(RunsError::BadTransition { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// (id, state, is a workflow run) of every run, oldest first.
    fn scan_states(&self) -> Result<Vec<(String, RunState, bool)>, RunsError> {
        let mut states = Vec::new();
        for (_, id) in self.by_time.all()? {
            let Some(bytes) = self.runs.get(&id)? else {
                continue;
            };
            let id = String::from_utf8_lossy(&id).into_owned();
            let head: RunHead = serde_json::from_slice(&bytes).map_err(|_| corrupt(&id))?;
            states.push((id, head.state, head.workflow.is_some()));
        }
        Ok(states)
    }

    /// Steps 3 and 4 of the module doc: `entry`, then the compare-and-swap of `change`, in
    /// one commit, on their own task while `guard` holds the run's lock.
    async fn write_audited(
        &self,
        guard: OwnedMutexGuard<()>,
        entry: AuditEntry,
        change: Change<'_>,
    ) -> Result<(), RunsError> {
        self.write_audited_all(guard, vec![entry], change).await
    }

    /// [`Self::write_audited`] with several audit records before the one swap.
    async fn write_audited_all(
        &self,
        guard: OwnedMutexGuard<()>,
        entries: Vec<AuditEntry>,
        change: Change<'_>,
    ) -> Result<(), RunsError> {
        let Change {
            id,
            old_bytes,
            new_bytes,
            next,
            actor,
        } = change;
        let change_id = id;
        let mut swap = Batch::new();
        swap.put(&RUNS, id.as_bytes(), new_bytes, Expect::Equals(old_bytes));
        self.hold(&mut swap, id, next);
        let (store, id, actor) = (self.clone(), id.to_string(), actor.to_string());
        let finished = self.finished.clone();
        let done = finish_detached(guard, async move {
            let (_, swapped) = store.audit.append_all_then(entries, swap).await?;
            store.lost_if_conflict(&id, swapped, next, &actor).await
        })
        .await;
        if done.is_ok() && next.is_terminal() {
            finished.wake(change_id);
        }
        done
    }

    /// Step 4's outcome: nothing to do if the swap took effect; otherwise the audited
    /// transition did not happen, which is audited too and reported to the caller.
    async fn lost_if_conflict(
        &self,
        id: &str,
        swapped: Result<(), StoreError>,
        next: RunState,
        actor: &str,
    ) -> Result<(), RunsError> {
        match swapped {
            Ok(()) => return Ok(()),
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        let current = self
            .runs
            .get(id.as_bytes())?
            .map(|bytes| serde_json::from_slice::<RunHead>(&bytes).map(|head| head.state));
        let found = match &current {
            Some(Ok(state)) => state.as_str(),
            Some(Err(_)) => "unreadable",
            None => "missing",
        };
        if let Err(error) = self.audit.append(lost_entry(id, actor, next, found)).await {
            // The audit log is now closed for everyone; the caller still learns the truth.
            tracing::error!(run_id = id, %error, "cannot audit a lost run transition");
        }
        Err(match current {
            Some(Ok(from)) => RunsError::BadTransition { from, to: next },
            Some(Err(_)) => corrupt(id),
            None => RunsError::NotFound(id.to_string()),
        })
    }

    /// Adds to `batch` who holds run `id` once it is in `state`: this server while it is
    /// queued or running, nobody otherwise.
    fn hold(&self, batch: &mut Batch, id: &str, state: RunState) {
        if matches!(state, RunState::Queued | RunState::Running) {
            batch.put(
                &RUNS_ACTIVE,
                id.as_bytes(),
                self.owner.as_bytes(),
                Expect::Any,
            );
        } else {
            batch.delete(&RUNS_ACTIVE, id.as_bytes(), Expect::Any);
        }
    }

    /// Run `id` under its lock, with its stored bytes, if it is in `state` (else
    /// [`RunsError::BadTransition`] to `state`: the write that wanted it cannot happen).
    async fn lock_in(
        &self,
        id: &str,
        state: RunState,
    ) -> Result<(OwnedMutexGuard<()>, Vec<u8>, RunRecord), RunsError> {
        let guard = self.lock(id).await;
        let (bytes, run) = self
            .load(id)?
            .ok_or_else(|| RunsError::NotFound(id.into()))?;
        if run.state != state {
            return Err(RunsError::BadTransition {
                from: run.state,
                to: state,
            });
        }
        Ok((guard, bytes, run))
    }

    fn load(&self, id: &str) -> Result<Option<(Vec<u8>, RunRecord)>, RunsError> {
        let Some(bytes) = self.runs.get(id.as_bytes())? else {
            return Ok(None);
        };
        let run = decode(id, &bytes)?;
        Ok(Some((bytes, run)))
    }

    /// The run's lock, owned so that it can move into [`finish_detached`].
    async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let stripe = self.locks.hasher.hash_one(id) as usize % LOCK_STRIPES;
        // `stripes` has exactly LOCK_STRIPES entries, so the index is in range.
        self.locks.stripes[stripe].clone().lock_owned().await
    }
}

/// A stored run's bytes replaced by new ones (state `next`), by `actor`.
struct Change<'a> {
    id: &'a str,
    old_bytes: Vec<u8>,
    new_bytes: Vec<u8>,
    next: RunState,
    actor: &'a str,
}

/// The typed columns of a stored run (see [`RUNS`]); all null for bytes that do not decode.
fn columns(bytes: &[u8]) -> Vec<ColumnValue> {
    #[derive(Deserialize)]
    struct Columns {
        state: RunState,
        process_id: String,
        actor: String,
        created_ms: u64,
    }
    match serde_json::from_slice::<Columns>(bytes) {
        Ok(c) => vec![
            ColumnValue::Text(c.state.as_str().to_string()),
            ColumnValue::Text(c.process_id),
            ColumnValue::Text(c.actor),
            ColumnValue::Int(i64::try_from(c.created_ms).unwrap_or(i64::MAX)),
        ],
        Err(_) => vec![ColumnValue::Null; 4],
    }
}

/// Runs the audited half of a write (audit record, then state) on its own task while holding
/// the run's lock, and waits for it.
///
/// Why a task: if the caller's future is dropped (an HTTP client disconnects mid-request),
/// stopping between the audit record and the state write would leave the log claiming a
/// transition that never happens, and unlike a crash nothing would run recovery afterwards.
/// Once the audit record is requested the write always runs to completion.
async fn finish_detached(
    guard: OwnedMutexGuard<()>,
    work: impl Future<Output = Result<(), RunsError>> + Send + 'static,
) -> Result<(), RunsError> {
    let task = tokio::spawn(async move {
        let result = work.await;
        drop(guard);
        result
    });
    task.await.map_err(|_| RunsError::TaskFailed)?
}

fn invalid(field: &'static str, why: impl Into<String>) -> RunsError {
    RunsError::Invalid {
        field,
        why: why.into(),
    }
}

/// What `create` accepts: a well-formed run that has not started.
fn check_new(run: &RunRecord) -> Result<(), RunsError> {
    if !matches!(run.state, RunState::Queued | RunState::AwaitingApproval) {
        return Err(invalid(
            "state",
            "a new run must be queued or awaiting-approval",
        ));
    }
    if run.started_ms.is_some() || run.finished_ms.is_some() {
        return Err(invalid("started_ms", "a new run has not started"));
    }
    if !is_valid_name(&run.id) {
        return Err(invalid("id", "use 1-64 of A-Z a-z 0-9 . _ -"));
    }
    if !is_valid_name(&run.process_id) {
        return Err(invalid("process_id", "use 1-64 of A-Z a-z 0-9 . _ -"));
    }
    if !is_valid_principal(&run.actor) {
        return Err(invalid("actor", "not a valid user name"));
    }
    if !is_sha256_hex(&run.module_digest) {
        return Err(invalid(
            "module_digest",
            "expected 64 lowercase hex characters",
        ));
    }
    Ok(())
}

/// The record after moving `old` to `next` with the caller's `edit` applied.
fn next_record(
    old: &RunRecord,
    next: RunState,
    edit: impl FnOnce(&mut RunRecord),
) -> Result<RunRecord, RunsError> {
    if !old.state.can_become(next) {
        return Err(RunsError::BadTransition {
            from: old.state,
            to: next,
        });
    }
    let mut new = old.clone();
    edit(&mut new);
    check_identity(old, &new)?;
    let now = super::now_ms();
    new.state = next;
    new.started_ms = old.started_ms;
    new.finished_ms = old.finished_ms;
    if next == RunState::Running {
        new.started_ms = Some(now.max(old.created_ms));
    }
    if next.is_terminal() {
        new.finished_ms = Some(now.max(old.started_ms.unwrap_or(old.created_ms)));
    }
    Ok(new)
}

fn check_identity(old: &RunRecord, new: &RunRecord) -> Result<(), RunsError> {
    let changed = [
        ("id", old.id != new.id),
        ("process_id", old.process_id != new.process_id),
        ("module_digest", old.module_digest != new.module_digest),
        ("actor", old.actor != new.actor),
        ("inputs", old.inputs != new.inputs),
        ("created_ms", old.created_ms != new.created_ms),
    ];
    match changed.into_iter().find(|(_, changed)| *changed) {
        Some((field, _)) => Err(invalid(field, "cannot be changed after the run is created")),
        None => Ok(()),
    }
}

fn created_entry(run: &RunRecord) -> AuditEntry {
    AuditEntry {
        run_id: Some(run.id.clone()),
        actor: run.actor.clone(),
        action: format!("run.{}", run.state),
        target: None,
        credential: None,
        decision: Decision::Allowed,
        outcome: run.state.as_str().to_string(),
        duration_us: 0,
        detail: Some(format!(
            "process {} module sha256:{}",
            run.process_id, run.module_digest
        )),
    }
}

fn transition_entry(old: &RunRecord, new: &RunRecord, actor: &str, note: &str) -> AuditEntry {
    let mut detail = format!("{} -> {}", old.state, new.state);
    if let Some(error) = &new.error {
        detail.push_str(": ");
        detail.push_str(error);
    }
    if !note.is_empty() {
        detail.push_str("; ");
        detail.push_str(note);
    }
    let decision = match new.state {
        // The policy that denied is audited by the caller that asked it.
        RunState::Denied => Decision::Denied {
            reason: new.error.clone().unwrap_or_else(|| "run denied".into()),
            policy: None,
        },
        _ => Decision::Allowed,
    };
    let duration_ms = match (new.started_ms, new.finished_ms) {
        (Some(start), Some(end)) => end.saturating_sub(start),
        _ => 0,
    };
    AuditEntry {
        run_id: Some(new.id.clone()),
        actor: actor.to_string(),
        action: format!("run.{}", new.state),
        target: None,
        credential: None,
        decision,
        outcome: new.state.as_str().to_string(),
        duration_us: duration_ms.saturating_mul(1000),
        detail: Some(detail),
    }
}

fn recovered_entry(id: &str, state: RunState) -> AuditEntry {
    AuditEntry {
        run_id: Some(id.to_string()),
        actor: RECOVERY_ACTOR.to_string(),
        action: RECOVERED_ACTION.to_string(),
        target: None,
        credential: None,
        decision: Decision::Allowed,
        outcome: state.as_str().to_string(),
        duration_us: 0,
        detail: Some(format!("server restarted; the run is still {state}")),
    }
}

/// `found` names the state the run was in instead (or `missing` / `unreadable`).
fn lost_entry(id: &str, actor: &str, next: RunState, found: &str) -> AuditEntry {
    AuditEntry {
        run_id: Some(id.to_string()),
        actor: actor.to_string(),
        action: LOST_TRANSITION_ACTION.to_string(),
        target: None,
        credential: None,
        decision: Decision::Denied {
            reason: format!("run.{next} did not take effect: the run changed concurrently"),
            policy: None,
        },
        outcome: found.to_string(),
        duration_us: 0,
        detail: None,
    }
}

/// Index key: `created_ms` big-endian, so byte order is time order, then the id.
fn time_key(created_ms: u64, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + id.len());
    key.extend_from_slice(&created_ms.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

fn encode(run: &RunRecord) -> Result<Vec<u8>, RunsError> {
    let bytes = serde_json::to_vec(run)?;
    check_size(&bytes, MAX_RUN_RECORD_BYTES)?;
    Ok(bytes)
}

fn decode(id: &str, bytes: &[u8]) -> Result<RunRecord, RunsError> {
    serde_json::from_slice(bytes).map_err(|_| corrupt(id))
}

fn corrupt(id: &str) -> RunsError {
    RunsError::Corrupt(format!("run {id}"))
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
