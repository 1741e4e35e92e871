//! Runs for remote bridges: the zone a process's runs execute in, and how a run for a zone
//! other than the embedded bridge's is stored to wait for one of that zone's bridges (held
//! by `zone:<name>`, capped like the run queue) instead of entering the local queue.

use std::sync::Arc;

use super::super::cluster::ZONE_HOLDER;
use super::super::queue::Refusal;
use super::super::{Process, RunRecord, RunState};
use super::{Dispatcher, StartError};

impl Dispatcher {
    /// This dispatcher with the embedded bridge serving `zone` instead of `default`.
    pub fn with_embedded_zone(mut self, zone: &str) -> Self {
        self.embedded_zone = Arc::from(zone);
        self
    }

    /// The zone the embedded bridge serves.
    pub fn embedded_zone(&self) -> &str {
        &self.embedded_zone
    }

    /// Woken whenever a run is queued for a remote bridge.
    pub fn zone_queued(&self) -> Arc<tokio::sync::Notify> {
        self.zone_queued.clone()
    }

    /// Refuses a new run for a remote bridge when the runs already waiting for bridges reach
    /// the queue's bounds (all callers, or `actor`): what waits for a bridge is stored, so it
    /// is capped like the in-memory queue.
    pub(super) fn admit_remote(&self, actor: &str) -> Result<(), StartError> {
        let limits = self.queue.limits();
        let (mut all, mut mine) = (0usize, 0usize);
        for (id, holder) in self.runs.held()? {
            if !holder.starts_with(ZONE_HOLDER) {
                continue;
            }
            all += 1;
            if self.runs.get(&id)?.is_some_and(|r| r.actor == actor) {
                mine += 1;
            }
        }
        if all >= limits.max_queued {
            return Err(Refusal::QueueFull {
                limit: limits.max_queued,
            }
            .into());
        }
        if mine >= limits.per_user_queued {
            return Err(Refusal::UserLimit {
                user: actor.to_string(),
                limit: limits.per_user_queued,
            }
            .into());
        }
        Ok(())
    }

    /// The zone a run of `process` executes in: its targets' one zone.
    pub fn zone_of(&self, process: &Process) -> Result<String, StartError> {
        self.bridge
            .services()
            .targets
            .zone_of(&process.grant.targets)
            .map_err(StartError::Zones)
    }

    /// Stores `record` (queued, or moves the stored run to queued) as waiting for a remote
    /// bridge of `zone`, and wakes the bridges' claims. It takes no execution slot here.
    pub(super) async fn queue_for_zone(
        &self,
        mut record: RunRecord,
        zone: &str,
        moved_by: Option<&str>,
    ) -> Result<RunRecord, StartError> {
        let waiting = format!("waiting for a bridge of zone {zone}");
        let store = self
            .runs
            .clone()
            .owned_by(&format!("{}{zone}", ZONE_HOLDER));
        let record = match moved_by {
            None => {
                self.admit_remote(&record.actor)?;
                record.waiting = Some(waiting);
                store.create(record).await?
            }
            Some(actor) => {
                store
                    .transition_noted(&record.id, RunState::Queued, actor, &waiting, |r| {
                        r.waiting = Some(waiting.clone())
                    })
                    .await?
            }
        };
        self.zone_queued.notify_waiters();
        Ok(record)
    }
}
