//! The run store's part in workflows: recording a workflow run's step progress (audited, with
//! the same compare-and-swap as every transition), resuming a failed or interrupted workflow
//! run as a new attempt, and waiting for a run (a step's child run) to end.
//!
//! Threat: a step transition without its audit record, or progress written over a concurrent
//! change. A progress update is a transition that keeps the state: under the run's lock, the
//! audit record (`workflow.step.<status>`, naming the step) and the new record go in one commit,
//! the record swapped in only over exactly the bytes loaded. Resume is the only way out of a
//! terminal state, only for workflow runs, only from `failed` or `interrupted`, and audited
//! `run.resumed`: the record keeps every earlier step and attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Change, RunRecord, RunStore, check_identity, encode, invalid};
use crate::audit::{AuditEntry, Decision};
use crate::runs::{RunState, RunsError, is_valid_principal};
use crate::workflow::WorkflowProgress;

/// How often a wait for a run's end looks at the store anyway (its end may be recorded by
/// another server over the same database, which wakes no one here).
const FINISH_POLL: Duration = Duration::from_secs(1);

/// Who waits for which run to end.
#[derive(Clone, Default)]
pub(super) struct Waiters(Arc<Mutex<HashMap<String, Arc<Notify>>>>);

impl Waiters {
    fn notify(&self, id: &str) -> Arc<Notify> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(id.to_string()).or_default().clone()
    }

    /// Drops `id`'s entry once `mine` (the caller's handle on it) is the last one outside the
    /// map: another waiter for the same run keeps it.
    fn forget(&self, id: &str, mine: &Arc<Notify>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let last = map
            .get(id)
            .is_some_and(|n| Arc::ptr_eq(n, mine) && Arc::strong_count(n) <= 2);
        if last {
            map.remove(id);
        }
    }

    /// Wakes everyone waiting for run `id`.
    pub(super) fn wake(&self, id: &str) {
        let waiting = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned();
        if let Some(notify) = waiting {
            notify.notify_waiters();
        }
    }
}

impl RunStore {
    /// Waits until run `id` is in a terminal state and returns it.
    pub async fn wait_finished(&self, id: &str) -> Result<RunRecord, RunsError> {
        let notify = self.finished.notify(id);
        let result = loop {
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.get(id) {
                Ok(Some(run)) if run.state.is_terminal() => break Ok(run),
                Ok(Some(_)) => {}
                Ok(None) => break Err(RunsError::NotFound(id.to_string())),
                Err(e) => break Err(e),
            }
            let _ = tokio::time::timeout(FINISH_POLL, woken).await;
        };
        self.finished.forget(id, &notify);
        result
    }

    /// Applies `edit` to the progress of workflow run `id` (which must be running) and records
    /// it, audited by the entry `edit` returns (its `run_id` is set here), in one commit.
    /// `edit` sees the stored progress and may refuse (nothing is written).
    pub async fn update_workflow(
        &self,
        id: &str,
        edit: impl FnOnce(&mut WorkflowProgress) -> Result<AuditEntry, RunsError>,
    ) -> Result<RunRecord, RunsError> {
        self.update_workflow_all(id, |progress| edit(progress).map(|e| vec![e]))
            .await
    }

    /// [`Self::update_workflow`] with any number of audit records (several step transitions
    /// recorded at once, in one commit); none is a refusal.
    pub async fn update_workflow_all(
        &self,
        id: &str,
        edit: impl FnOnce(&mut WorkflowProgress) -> Result<Vec<AuditEntry>, RunsError>,
    ) -> Result<RunRecord, RunsError> {
        let (guard, old_bytes, old) = self.lock_in(id, RunState::Running).await?;
        let mut new = old.clone();
        let progress = new
            .workflow
            .as_mut()
            .ok_or_else(|| invalid("workflow", "not a workflow run"))?;
        let entries = edit(progress)?;
        if entries.is_empty() {
            return Err(invalid("workflow", "nothing to record"));
        }
        check_identity(&old, &new)?;
        let new_bytes = encode(&new)?;
        let entries: Vec<AuditEntry> = entries
            .into_iter()
            .map(|entry| AuditEntry {
                run_id: Some(id.to_string()),
                ..entry
            })
            .collect();
        let actor = entries[0].actor.clone();
        let change = Change {
            id,
            old_bytes,
            new_bytes,
            next: RunState::Running,
            actor: &actor,
        };
        self.write_audited_all(guard, entries, change).await?;
        Ok(new)
    }

    /// Starts a new attempt of workflow run `id`, which ended `failed` or `interrupted`: it is
    /// `running` again (held by this server), its error cleared, `workflow.attempt` one more.
    /// Audited `run.resumed` by `actor`.
    pub async fn resume(&self, id: &str, actor: &str) -> Result<RunRecord, RunsError> {
        if !is_valid_principal(actor) {
            return Err(invalid("actor", "not a valid user name"));
        }
        let guard = self.lock(id).await;
        let (old_bytes, old) = self
            .load(id)?
            .ok_or_else(|| RunsError::NotFound(id.into()))?;
        let Some(progress) = &old.workflow else {
            return Err(invalid(
                "run",
                "only a workflow run can be resumed; start a new run instead",
            ));
        };
        if !matches!(old.state, RunState::Failed | RunState::Interrupted) {
            return Err(RunsError::BadTransition {
                from: old.state,
                to: RunState::Running,
            });
        }
        let attempt = progress.attempt.saturating_add(1);
        let mut new = old.clone();
        new.state = RunState::Running;
        new.finished_ms = None;
        new.error = None;
        if let Some(p) = new.workflow.as_mut() {
            p.attempt = attempt;
            p.output = None;
        }
        let new_bytes = encode(&new)?;
        let entry = AuditEntry {
            run_id: Some(id.to_string()),
            actor: actor.to_string(),
            action: "run.resumed".into(),
            target: None,
            credential: None,
            decision: Decision::Allowed,
            outcome: RunState::Running.as_str().into(),
            duration_us: 0,
            detail: Some(format!(
                "{} -> running: attempt {attempt}; steps that succeeded are not run again",
                old.state
            )),
        };
        let change = Change {
            id,
            old_bytes,
            new_bytes,
            next: RunState::Running,
            actor,
        };
        self.write_audited(guard, entry, change).await?;
        Ok(new)
    }
}
