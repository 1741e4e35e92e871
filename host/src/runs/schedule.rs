//! Schedules: cron expressions that start runs of a process, and the scheduler task that
//! fires them.
//!
//! A schedule is `{id, cron, inputs, catch_up}` attached to one process. Each firing is an
//! ordinary run through the [`Dispatcher`] (so it waits for approvals like any other run of
//! that process) whose actor is `schedule:<id>` and which counts against the run-queue
//! share of the schedule's creator (a refusal is audited `schedule.failed`); the firing
//! itself is audited `schedule.fired` before the run is started, a run that could not be
//! started `schedule.failed`, and a missed firing skipped at start `schedule.skipped`.
//!
//! Expressions are 5-field (minute granularity) or 6-field (leading seconds) cron, in UTC,
//! parsed with `croner`; an expression that does not parse, or never fires, is refused when
//! the schedule is created.
//!
//! Missed firings: the store keeps each schedule's last firing time. A schedule is due when
//! its next occurrence after that time (or after its creation, if it never fired) has
//! passed. At start ([`Scheduler::catch_up`]) a due schedule was missed while the server was
//! down: it fires once if `catch_up` is set (however many occurrences were missed), and is
//! skipped otherwise. The firing time is stored (durably, as a compare-and-swap against the
//! schedule as the sweep read it) before the firing is audited and the run started: with
//! several servers over one database only the one whose swap wins fires a slot, and a crash
//! in between loses that one firing rather than repeating it.
//!
//! Threats: a request that creates unbounded schedules or oversized records (counts, the
//! expression and inputs are capped), and a scheduler loop that cannot be stopped (it ends
//! when its [`SchedulerHandle`] is stopped or dropped).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};

use super::dispatch::Dispatcher;
use super::{ProcessStore, RunsError, now_ms};
use crate::audit::{AuditEntry, AuditError, AuditLog, Decision};
use crate::store::{Database, StoreError, Table, TableDef};

/// Schedules by id.
pub const SCHEDULES: TableDef = TableDef {
    name: "schedules",
    columns: &[],
    columns_of: None,
};

/// Most schedules one process may have. Every tick scans every schedule.
pub const MAX_SCHEDULES_PER_PROCESS: usize = 32;

/// Longest cron expression. Bounds parsing work and the record.
pub const MAX_CRON_BYTES: usize = 256;

/// Largest encoded inputs of one schedule; they are copied into every run it starts.
pub const MAX_SCHEDULE_INPUTS_BYTES: usize = 64 << 10;

/// How often the scheduler looks for due schedules. Second-granularity expressions fire
/// within this much of their time.
pub const SCHEDULE_TICK: Duration = Duration::from_millis(500);

/// Why a schedule operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The expression does not parse or never fires.
    #[error("invalid cron expression {expr:?}: {why}")]
    BadCron { expr: String, why: String },
    #[error("{0}")]
    Invalid(String),
    #[error("schedule {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Runs(#[from] RunsError),
    #[error("audit: {0}")]
    Audit(#[from] AuditError),
    #[error("schedule storage error: {0}")]
    Storage(#[from] StoreError),
    #[error("stored schedule {0} is corrupt")]
    Corrupt(String),
    #[error("cannot encode schedule: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A cron schedule of one process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Schedule {
    /// UUID v4.
    pub id: String,
    pub process_id: String,
    /// 5- or 6-field cron expression, UTC.
    pub cron: String,
    /// Inputs of every run it starts (process defaults fill the rest).
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// Fire once at start when an occurrence was missed while the server was down.
    pub catch_up: bool,
    pub created_by: String,
    pub created_ms: u64,
    /// When it last fired (or a missed firing was skipped).
    pub last_fired_ms: Option<u64>,
    /// The run its last firing started.
    pub last_run_id: Option<String>,
}

impl Schedule {
    /// The actor of the runs it starts.
    pub fn actor(&self) -> String {
        format!("schedule:{}", self.id)
    }

    /// Whether an occurrence falls after its last firing (or creation) and at or before
    /// `now_ms`.
    pub fn is_due(&self, now_ms: u64) -> bool {
        let Ok(cron) = parse_cron(&self.cron) else {
            return false;
        };
        let since = self.last_fired_ms.unwrap_or(self.created_ms);
        next_after(&cron, since).is_some_and(|next| next <= now_ms)
    }
}

/// What a caller supplies to create a schedule.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    pub cron: String,
    #[serde(default)]
    pub inputs: BTreeMap<String, serde_json::Value>,
    #[serde(default = "default_catch_up")]
    pub catch_up: bool,
}

fn default_catch_up() -> bool {
    true
}

/// Parses a 5-field or 6-field (seconds first) cron expression and checks it ever fires.
pub fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let bad = |why: String| ScheduleError::BadCron {
        expr: expr.chars().take(MAX_CRON_BYTES).collect(),
        why,
    };
    if expr.len() > MAX_CRON_BYTES {
        return Err(bad(format!("longer than {MAX_CRON_BYTES} bytes")));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| bad(e.to_string()))?;
    Ok(cron)
}

/// The first occurrence strictly after `after_ms`, in ms; `None` if there is none.
fn next_after(cron: &Cron, after_ms: u64) -> Option<u64> {
    let after = DateTime::<Utc>::from_timestamp_millis(i64::try_from(after_ms).ok()?)?;
    let next = cron.find_next_occurrence(&after, false).ok()?;
    u64::try_from(next.timestamp_millis()).ok()
}

/// Persistent schedules. Cheap to clone.
#[derive(Clone)]
pub struct ScheduleStore {
    table: Table,
}

impl std::fmt::Debug for ScheduleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleStore").finish_non_exhaustive()
    }
}

impl ScheduleStore {
    /// Opens the schedules table in `db`.
    pub fn open(db: &Database) -> Result<Self, ScheduleError> {
        Ok(ScheduleStore {
            table: db.table(&SCHEDULES),
        })
    }

    /// Validates and stores a new schedule of `process_id`. The caller has checked the
    /// inputs against the process's manifest.
    pub async fn create(
        &self,
        process_id: &str,
        new: NewSchedule,
        created_by: &str,
    ) -> Result<Schedule, ScheduleError> {
        let cron = parse_cron(&new.cron)?;
        let now = now_ms();
        if next_after(&cron, now).is_none() {
            return Err(ScheduleError::BadCron {
                expr: new.cron,
                why: "it never fires".into(),
            });
        }
        if serde_json::to_vec(&new.inputs)?.len() > MAX_SCHEDULE_INPUTS_BYTES {
            return Err(ScheduleError::Invalid(format!(
                "inputs: over {MAX_SCHEDULE_INPUTS_BYTES} bytes"
            )));
        }
        if self.list(process_id)?.len() >= MAX_SCHEDULES_PER_PROCESS {
            return Err(ScheduleError::Invalid(format!(
                "a process has at most {MAX_SCHEDULES_PER_PROCESS} schedules"
            )));
        }
        let schedule = Schedule {
            id: uuid::Uuid::new_v4().to_string(),
            process_id: process_id.to_string(),
            cron: new.cron,
            inputs: new.inputs,
            catch_up: new.catch_up,
            created_by: created_by.to_string(),
            created_ms: now,
            last_fired_ms: None,
            last_run_id: None,
        };
        self.put(&schedule).await?;
        Ok(schedule)
    }

    /// The schedule with this id.
    pub fn get(&self, id: &str) -> Result<Option<Schedule>, ScheduleError> {
        match self.table.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode(id, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The schedules of one process, oldest first.
    pub fn list(&self, process_id: &str) -> Result<Vec<Schedule>, ScheduleError> {
        let mut found: Vec<_> = self
            .all()?
            .into_iter()
            .filter(|s| s.process_id == process_id)
            .collect();
        found.sort_by_key(|s| s.created_ms);
        Ok(found)
    }

    /// Every schedule.
    pub fn all(&self) -> Result<Vec<Schedule>, ScheduleError> {
        Ok(self.all_stored()?.into_iter().map(|(_, s)| s).collect())
    }

    /// Every schedule with the bytes it is stored as (for [`Self::claim_firing`]).
    fn all_stored(&self) -> Result<Vec<(Vec<u8>, Schedule)>, ScheduleError> {
        self.table
            .all()?
            .into_iter()
            .map(|(key, bytes)| {
                let schedule = decode(&String::from_utf8_lossy(&key), &bytes)?;
                Ok((bytes, schedule))
            })
            .collect()
    }

    /// Stores `fired` in place of exactly `stored` (the schedule as read before firing):
    /// false if it changed meanwhile (another server fired this slot, or it was deleted).
    async fn claim_firing(&self, stored: Vec<u8>, fired: &Schedule) -> Result<bool, ScheduleError> {
        let table = self.table.clone();
        let (id, bytes) = (fired.id.clone(), serde_json::to_vec(fired)?);
        let swapped = tokio::task::spawn_blocking(move || table.swap(id, &stored, bytes))
            .await
            .map_err(|_| RunsError::TaskFailed)??;
        Ok(swapped)
    }

    /// Deletes schedule `id` of `process_id`; false if there is none.
    pub async fn delete(&self, process_id: &str, id: &str) -> Result<bool, ScheduleError> {
        match self.get(id)? {
            Some(s) if s.process_id == process_id => {
                let table = self.table.clone();
                let id = id.to_string();
                let removed = tokio::task::spawn_blocking(move || table.remove(id))
                    .await
                    .map_err(|_| RunsError::TaskFailed)??;
                Ok(removed)
            }
            _ => Ok(false),
        }
    }

    /// Deletes every schedule of a process (when the process is deleted); how many.
    pub async fn delete_all(&self, process_id: &str) -> Result<usize, ScheduleError> {
        let schedules = self.list(process_id)?;
        let mut batch = crate::store::Batch::new();
        for s in &schedules {
            batch.delete(&SCHEDULES, s.id.as_bytes(), crate::store::Expect::Any);
        }
        self.table.database().apply_async(batch).await?;
        Ok(schedules.len())
    }

    /// Stores `schedule`, durable before it returns (on the blocking pool).
    async fn put(&self, schedule: &Schedule) -> Result<(), ScheduleError> {
        let mut batch = crate::store::Batch::new();
        batch.put(
            &SCHEDULES,
            schedule.id.as_bytes(),
            serde_json::to_vec(schedule)?,
            crate::store::Expect::Any,
        );
        self.table.database().apply_async(batch).await?;
        Ok(())
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<Schedule, ScheduleError> {
    serde_json::from_slice(bytes).map_err(|_| ScheduleError::Corrupt(id.to_string()))
}

/// Fires due schedules.
#[derive(Clone)]
pub struct Scheduler {
    pub schedules: ScheduleStore,
    pub processes: ProcessStore,
    pub dispatcher: Dispatcher,
    pub audit: AuditLog,
}

/// Why a schedule is being fired.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Firing {
    OnTime,
    CatchUp,
}

impl Scheduler {
    /// At start: every schedule that came due while the server was down fires once (if
    /// its `catch_up` is set) or is skipped (audited). Returns the runs started.
    pub async fn catch_up(&self, now_ms: u64) -> Vec<String> {
        self.sweep(now_ms, Firing::CatchUp).await
    }

    /// Fires every due schedule once. Returns the runs started.
    pub async fn tick(&self, now_ms: u64) -> Vec<String> {
        self.sweep(now_ms, Firing::OnTime).await
    }

    /// Starts the loop: catch up, then [`Self::tick`] every `every` until the handle is
    /// stopped or dropped.
    pub fn spawn(self, every: Duration) -> SchedulerHandle {
        let (stop, mut stopped) = tokio::sync::watch::channel(());
        let task = tokio::spawn(async move {
            self.catch_up(now_ms()).await;
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // A send or the sender's drop both end the loop.
                    _ = stopped.changed() => break,
                    _ = interval.tick() => {
                        self.tick(now_ms()).await;
                    }
                }
            }
        });
        SchedulerHandle { stop, task }
    }

    async fn sweep(&self, now_ms: u64, why: Firing) -> Vec<String> {
        let schedules = match self.schedules.all_stored() {
            Ok(all) => all,
            Err(e) => {
                tracing::error!(error = %e, "cannot read schedules");
                return Vec::new();
            }
        };
        let mut started = Vec::new();
        for (stored, schedule) in schedules.into_iter().filter(|(_, s)| s.is_due(now_ms)) {
            match self.fire(stored, schedule, now_ms, why).await {
                Ok(Some(run)) => started.push(run),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "schedule not fired"),
            }
        }
        started
    }

    /// Records the firing time, audits, and starts the run (or skips a missed firing of a
    /// schedule without catch-up).
    async fn fire(
        &self,
        stored: Vec<u8>,
        mut schedule: Schedule,
        now_ms: u64,
        why: Firing,
    ) -> Result<Option<String>, ScheduleError> {
        let actor = schedule.actor();
        schedule.last_fired_ms = Some(now_ms);
        if !self.schedules.claim_firing(stored, &schedule).await? {
            // Another server fired (or skipped) this slot, or the schedule changed.
            return Ok(None);
        }
        if why == Firing::CatchUp && !schedule.catch_up {
            self.audit_schedule(
                &schedule,
                "schedule.skipped",
                None,
                "missed while the server was down; catch_up is off".into(),
            )
            .await?;
            return Ok(None);
        }
        let detail = match why {
            Firing::OnTime => format!("cron {:?}", schedule.cron),
            Firing::CatchUp => {
                format!("cron {:?}, missed while the server was down", schedule.cron)
            }
        };
        self.audit_schedule(&schedule, "schedule.fired", None, detail)
            .await?;
        let Some(process) = self.processes.get(&schedule.process_id)? else {
            let why = format!("process {} is gone", schedule.process_id);
            self.audit_schedule(&schedule, "schedule.failed", None, why)
                .await?;
            return Ok(None);
        };
        match self
            .dispatcher
            .start_charged(
                &process,
                schedule.inputs.clone(),
                &actor,
                &schedule.created_by,
            )
            .await
        {
            Ok(run) => {
                schedule.last_run_id = Some(run.id.clone());
                self.schedules.put(&schedule).await?;
                Ok(Some(run.id))
            }
            Err(e) => {
                self.audit_schedule(&schedule, "schedule.failed", None, e.to_string())
                    .await?;
                Ok(None)
            }
        }
    }

    async fn audit_schedule(
        &self,
        schedule: &Schedule,
        action: &str,
        run_id: Option<String>,
        detail: String,
    ) -> Result<(), ScheduleError> {
        let decision = if action == "schedule.failed" {
            Decision::Denied {
                reason: detail.clone(),
                policy: None,
            }
        } else {
            Decision::Allowed
        };
        self.audit
            .append(AuditEntry {
                run_id,
                actor: schedule.actor(),
                action: action.to_string(),
                target: None,
                credential: None,
                outcome: if action == "schedule.failed" {
                    "failed"
                } else {
                    "ok"
                }
                .into(),
                decision,
                duration_us: 0,
                detail: Some(format!("process {}: {detail}", schedule.process_id)),
            })
            .await?;
        Ok(())
    }
}

/// The running scheduler loop; stop it with [`SchedulerHandle::stop`] (dropping it stops the
/// loop too, without waiting).
pub struct SchedulerHandle {
    stop: tokio::sync::watch::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl SchedulerHandle {
    /// Stops the loop and waits for a firing in progress to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, created_ms: u64, last_fired_ms: Option<u64>) -> Schedule {
        Schedule {
            id: "s".into(),
            process_id: "p".into(),
            cron: cron.into(),
            inputs: BTreeMap::new(),
            catch_up: true,
            created_by: "admin".into(),
            created_ms,
            last_fired_ms,
            last_run_id: None,
        }
    }

    #[test]
    fn accepts_five_and_six_field_expressions_and_refuses_garbage() {
        for good in ["* * * * *", "*/5 * * * * *", "0 0 3 1 * *", "@daily"] {
            assert!(parse_cron(good).is_ok(), "{good}");
        }
        for bad in ["", "nonsense", "61 * * * *", "* * *", &"* ".repeat(200)] {
            let err = parse_cron(bad).err();
            assert!(
                matches!(err, Some(ScheduleError::BadCron { .. })),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn due_only_after_an_occurrence_since_the_last_firing() {
        // 2026-01-01T00:00:00Z
        let midnight = 1_767_225_600_000;
        let daily = schedule("0 0 0 * * *", midnight + 1000, None);
        assert!(!daily.is_due(midnight + 3_600_000));
        assert!(daily.is_due(midnight + 86_400_000));
        let fired = schedule("0 0 0 * * *", midnight - 1000, Some(midnight + 5));
        assert!(!fired.is_due(midnight + 86_399_999));
        assert!(
            fired.is_due(midnight + 3 * 86_400_000),
            "missed days: due once"
        );
    }
}
