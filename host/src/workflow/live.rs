//! The workflow runs this server drives, and how to reach one: cancel it (the engine cancels
//! its step runs in flight and records the end) or wake it (a gate's approvals changed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::runs::{RunRecord, RunStore, RunsError};

/// Control of one workflow run driven here.
#[derive(Default)]
pub struct WorkflowControl {
    pub(super) cancelled: AtomicBool,
    /// Woken on cancel and when a gate's approvals change.
    pub(super) wake: Notify,
}

/// The workflow runs this server drives, by run id.
#[derive(Clone, Default)]
pub struct LiveWorkflows(Arc<Mutex<HashMap<String, Arc<WorkflowControl>>>>);

impl LiveWorkflows {
    pub(super) fn get(&self, id: &str) -> Option<Arc<WorkflowControl>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    pub(super) fn insert(&self, id: &str) -> Option<Arc<WorkflowControl>> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(id) {
            return None;
        }
        let control = Arc::new(WorkflowControl::default());
        map.insert(id.to_string(), control.clone());
        Some(control)
    }

    pub(super) fn remove(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Wakes the engine of run `id` (its gate's approvals changed).
    pub fn wake(&self, id: &str) {
        if let Some(control) = self.get(id) {
            control.wake.notify_waiters();
        }
    }

    /// Whether this server drives workflow run `id`.
    pub fn is_live(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Cancels workflow run `id` if this server drives it, and waits (bounded) for the engine to
    /// record its end; `None` when it is not driven here.
    pub(crate) async fn cancel(
        &self,
        runs: &RunStore,
        id: &str,
        actor: &str,
    ) -> Result<Option<RunRecord>, RunsError> {
        let Some(control) = self.get(id) else {
            return Ok(None);
        };
        tracing::info!(run = id, by = actor, "workflow run cancelled");
        control.cancelled.store(true, Ordering::SeqCst);
        control.wake.notify_waiters();
        let ended = tokio::time::timeout(Duration::from_secs(30), runs.wait_finished(id)).await;
        match ended {
            Ok(record) => record.map(Some),
            Err(_) => runs.get(id),
        }
    }
}
