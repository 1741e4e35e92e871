//! Recording step transitions: every update of a workflow run's progress goes through
//! [`Exec::record`], which writes it audited (`workflow.step.<status>`, naming the step) in the
//! same commit as the new record. Updates that arrive while a write is in flight (the branches
//! of a `parallel`, the iterations of a `map`) are written together in the next commit — one
//! record swap and one fsync for all of them, each with its own audit record — so a wide
//! fan-out does not queue one fsync per step behind the run's lock.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use super::definition::kinds;
use super::engine::{Exec, Failure, failure};
use super::progress::*;
use crate::audit::{AuditEntry, Decision};
use crate::runs::{RunsError, now_ms};

/// One step update waiting to be written.
struct Pending {
    path: String,
    state: String,
    kind: String,
    detail: String,
    edit: Box<dyn FnOnce(&mut StepRecord) + Send>,
    done: oneshot::Sender<Result<StepRecord, Failure>>,
}

/// The queue of step updates of one workflow run, and the turn to write them.
#[derive(Default)]
pub(super) struct StepWriter {
    pending: Mutex<Vec<Pending>>,
    turn: tokio::sync::Mutex<()>,
    /// Step runs that ended, by step path: written with the step's next update.
    finished: Mutex<HashMap<String, StepAttempt>>,
}

impl StepWriter {
    /// Notes that the step run of the step at `path` ended as `attempt`; the step's next
    /// update records it.
    pub(super) fn finished(&self, path: &str, attempt: StepAttempt) {
        self.finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_string(), attempt);
    }
}

impl Exec {
    /// Records the step at `path` (creating it if new) after `edit` changed the stored
    /// record, audited `workflow.step.<status>` with `detail`. Returns the step as recorded.
    pub(super) async fn record(
        &self,
        path: &str,
        state: &str,
        kind: &str,
        detail: String,
        edit: impl FnOnce(&mut StepRecord) + Send + 'static,
    ) -> Result<StepRecord, Failure> {
        let (done, result) = oneshot::channel();
        self.writer
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Pending {
                path: path.to_string(),
                state: state.to_string(),
                kind: kind.to_string(),
                detail,
                edit: Box::new(edit),
                done,
            });
        {
            // Whoever gets the turn writes everything queued by then (possibly this update
            // already went out with an earlier batch).
            let _turn = self.writer.turn.lock().await;
            let batch = std::mem::take(
                &mut *self
                    .writer
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            if !batch.is_empty() {
                self.flush(batch).await;
            }
        }
        result
            .await
            .unwrap_or_else(|_| Err(failure(kinds::FAILED, format!("step {path} not recorded"))))
    }

    async fn flush(&self, batch: Vec<Pending>) {
        let attempt = self.attempt;
        let mut finished = std::mem::take(
            &mut *self
                .writer
                .finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut senders = Vec::with_capacity(batch.len());
        let mut paths = Vec::with_capacity(batch.len());
        let mut outcomes: Vec<Option<Result<StepRecord, Failure>>> = Vec::new();
        let mut work = Vec::with_capacity(batch.len());
        for p in batch {
            senders.push(p.done);
            paths.push(p.path.clone());
            outcomes.push(None);
            work.push((p.path, p.state, p.kind, p.detail, p.edit));
        }
        let actor = self.actor.clone();
        let written = self
            .dispatcher
            .runs()
            .update_workflow_all(&self.run_id, |progress| {
                let mut entries = Vec::new();
                for (i, (path, state, kind, detail, edit)) in work.into_iter().enumerate() {
                    if !progress.steps.contains_key(&path)
                        && progress.steps.len() >= MAX_STEP_RECORDS
                    {
                        let why = format!("a run records at most {MAX_STEP_RECORDS} steps");
                        outcomes[i] = Some(Err(failure(kinds::FAILED, why)));
                        continue;
                    }
                    let step = progress
                        .steps
                        .entry(path.clone())
                        .or_insert_with(|| fresh(&state, &kind, attempt));
                    if let Some(ended) = finished.remove(&path) {
                        let known = step.attempts.iter().position(|a| a.run_id == ended.run_id);
                        match known {
                            Some(i) => step.attempts[i] = ended,
                            None if step.attempts.len() < MAX_RECORDED_ATTEMPTS => {
                                step.attempts.push(ended)
                            }
                            None => {}
                        }
                    }
                    edit(step);
                    step.run_attempt = attempt;
                    outcomes[i] = Some(Ok(step.clone()));
                    entries.push(step_entry(&actor, &path, step, &detail));
                }
                Ok(entries)
            })
            .await;
        // Step runs that ended but whose step was not in this batch wait for the next one.
        if !finished.is_empty() {
            let mut left = self
                .writer
                .finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (path, ended) in finished {
                left.entry(path).or_insert(ended);
            }
        }
        let error = written.err().map(|e: RunsError| e.to_string());
        let mut prior = self.prior.lock().unwrap_or_else(PoisonError::into_inner);
        for ((sender, outcome), path) in senders.into_iter().zip(outcomes).zip(paths) {
            let outcome = match (&error, outcome) {
                (Some(e), _) => Err(failure(
                    kinds::FAILED,
                    format!("cannot record the step: {e}"),
                )),
                (None, Some(Ok(step))) => Ok(step),
                (None, Some(Err(e))) => Err(e),
                (None, None) => Err(failure(kinds::FAILED, "step not recorded")),
            };
            if let Ok(step) = &outcome {
                prior.insert(path, step.clone());
            }
            let _ = sender.send(outcome);
        }
    }
}

/// The audit record of a step transition.
fn step_entry(actor: &str, path: &str, step: &StepRecord, detail: &str) -> AuditEntry {
    let status = status_name(step.status);
    let decision = match (&step.status, &step.error) {
        (StepStatus::Failed, Some(e)) => Decision::Denied {
            reason: format!("{}: {}", e.kind, e.message),
            policy: None,
        },
        _ => Decision::Allowed,
    };
    AuditEntry {
        run_id: None,
        actor: actor.to_string(),
        action: format!("workflow.step.{status}"),
        target: None,
        credential: None,
        decision,
        outcome: status.into(),
        duration_us: 0,
        detail: Some(format!("step {path} ({}): {detail}", step.kind)),
    }
}

fn fresh(state: &str, kind: &str, attempt: u32) -> StepRecord {
    StepRecord {
        state: state.to_string(),
        kind: kind.to_string(),
        status: StepStatus::Running,
        run_attempt: attempt,
        started_ms: now_ms(),
        finished_ms: None,
        attempts: Vec::new(),
        output: None,
        error: None,
        next: None,
        wake_ms: None,
        gate: None,
    }
}

fn status_name(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Running => "running",
        StepStatus::Waiting => "waiting",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Caught => "caught",
        StepStatus::Failed => "failed",
        StepStatus::Cancelled => "cancelled",
    }
}
