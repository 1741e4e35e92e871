//! Storage of triggers and of the state every server consulting them shares: table
//! [`TRIGGERS`] (id → the trigger's JSON), [`TRIGGER_STATE`] (id → its guard state: rate
//! window, runs in flight, recent subjects), [`TRIGGER_REPLAY`] (`{id}/{event id}` → when the
//! id may be forgotten) and [`TRIGGER_BODIES`] (`{id}/{ms:016x}/{event id}` → a stored,
//! redacted event).
//!
//! Threat: two servers each admitting "the last" run of a window, or both accepting one
//! event id. The guard state and the replay entry are written in one conditional batch: the
//! state as a compare-and-swap against what was read, the event id insert-if-absent; a
//! conflict re-reads and decides again. Every table is bounded: the replay ids of a trigger
//! expire after the tolerance window and are capped in count, stored bodies are capped per
//! trigger (oldest dropped), and a trigger's rows all go with it.

use serde::{Deserialize, Serialize};

use super::guard::GuardState;
use super::{MAX_TRIGGERS_PER_PROCESS, Trigger, TriggerError};
use crate::store::{Batch, Database, Expect, Scan, StoreError, Table, TableDef};

/// Triggers by id.
pub const TRIGGERS: TableDef = TableDef {
    name: "triggers",
    columns: &[],
    columns_of: None,
};
/// Each trigger's guard state (shared by the servers over one database).
pub const TRIGGER_STATE: TableDef = TableDef {
    name: "trigger_state",
    columns: &[],
    columns_of: None,
};
/// Event ids seen, per trigger, until their timestamp leaves the tolerance window.
pub const TRIGGER_REPLAY: TableDef = TableDef {
    name: "trigger_replay",
    columns: &[],
    columns_of: None,
};
/// Bodies of accepted events of triggers that keep them (redacted).
pub const TRIGGER_BODIES: TableDef = TableDef {
    name: "trigger_bodies",
    columns: &[],
    columns_of: None,
};

/// Most event ids remembered per trigger. Past it (after expired ids are pruned) events are
/// refused: forgetting an id early would let its event be replayed.
pub const MAX_REPLAY_IDS: usize = 65_536;

/// Most stored bodies per trigger; the oldest go first.
pub const MAX_STORED_BODIES: usize = 256;

/// One remembered event id.
#[derive(Serialize, Deserialize)]
struct ReplayEntry {
    /// When the event's timestamp leaves the tolerance window; after that the id is refused
    /// as stale anyway and may be forgotten.
    expires_ms: u64,
}

/// A stored event: what arrived, redacted, and the run it started.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StoredEvent {
    pub event_id: String,
    pub received_ms: u64,
    pub body_sha256: String,
    pub run_id: Option<String>,
    /// The body with known secrets and secret-looking fields replaced by `[REDACTED]`.
    pub body: String,
}

/// Persistent triggers. Cheap to clone.
#[derive(Clone)]
pub struct TriggerStore {
    table: Table,
}

impl std::fmt::Debug for TriggerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerStore").finish_non_exhaustive()
    }
}

fn decode<T: serde::de::DeserializeOwned>(id: &str, bytes: &[u8]) -> Result<T, TriggerError> {
    serde_json::from_slice(bytes).map_err(|_| TriggerError::Corrupt(id.to_string()))
}

fn replay_key(trigger: &str, event: &str) -> Vec<u8> {
    format!("{trigger}/{event}").into_bytes()
}

impl TriggerStore {
    pub fn open(db: &Database) -> Self {
        TriggerStore {
            table: db.table(&TRIGGERS),
        }
    }

    fn db(&self) -> &Database {
        self.table.database()
    }

    /// Stores a new trigger (refused past [`MAX_TRIGGERS_PER_PROCESS`]).
    pub async fn create(&self, trigger: &Trigger) -> Result<(), TriggerError> {
        if self.list(&trigger.process_id)?.len() >= MAX_TRIGGERS_PER_PROCESS {
            return Err(TriggerError::Invalid(format!(
                "a process has at most {MAX_TRIGGERS_PER_PROCESS} triggers"
            )));
        }
        let mut batch = Batch::new();
        let bytes = serde_json::to_vec(trigger)?;
        batch.put(&TRIGGERS, trigger.id.as_bytes(), bytes, Expect::Absent);
        self.db().apply_async(batch).await?;
        Ok(())
    }

    /// Replaces a stored trigger (its key after a rotation).
    pub async fn update(&self, trigger: &Trigger) -> Result<(), TriggerError> {
        let mut batch = Batch::new();
        let bytes = serde_json::to_vec(trigger)?;
        batch.put(&TRIGGERS, trigger.id.as_bytes(), bytes, Expect::Present);
        match self.db().apply_async(batch).await {
            Err(e) if e.is_conflict() => Err(TriggerError::NotFound(trigger.id.clone())),
            other => Ok(other?),
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<Trigger>, TriggerError> {
        match self.table.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode(id, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The triggers of one process, oldest first.
    pub fn list(&self, process_id: &str) -> Result<Vec<Trigger>, TriggerError> {
        let mut found = Vec::new();
        for (key, bytes) in self.table.all()? {
            let t: Trigger = decode(&String::from_utf8_lossy(&key), &bytes)?;
            if t.process_id == process_id {
                found.push(t);
            }
        }
        found.sort_by_key(|t| t.created_ms);
        Ok(found)
    }

    /// Deletes a trigger with its state, remembered ids and stored bodies; false if absent.
    /// The trigger row goes first, so its URL answers 404 from then on.
    pub async fn delete(&self, id: &str) -> Result<bool, TriggerError> {
        let mut batch = Batch::new();
        batch.delete(&TRIGGERS, id.as_bytes(), Expect::Present);
        batch.delete(&TRIGGER_STATE, id.as_bytes(), Expect::Any);
        match self.db().apply_async(batch).await {
            Err(e) if e.is_conflict() => return Ok(false),
            other => other?,
        }
        let prefix = format!("{id}/").into_bytes();
        for def in [&TRIGGER_REPLAY, &TRIGGER_BODIES] {
            self.delete_prefix(def, &prefix).await?;
        }
        Ok(true)
    }

    async fn delete_prefix(&self, def: &'static TableDef, prefix: &[u8]) -> Result<(), StoreError> {
        loop {
            let rows = self
                .db()
                .table(def)
                .scan(&Scan::prefix(prefix.to_vec()).limit(1024))?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut batch = Batch::new();
            for (key, _) in rows {
                batch.delete(def, key, Expect::Any);
            }
            self.db().apply_async(batch).await?;
        }
    }

    /// The guard state of a trigger, with the bytes it is stored as (for the swap).
    pub fn state(&self, id: &str) -> Result<(Option<Vec<u8>>, GuardState), TriggerError> {
        match self.db().table(&TRIGGER_STATE).get(id.as_bytes())? {
            Some(bytes) => {
                let state = decode(id, &bytes)?;
                Ok((Some(bytes), state))
            }
            None => Ok((None, GuardState::default())),
        }
    }

    /// Whether `event` was seen for trigger `id` (and is still remembered).
    pub fn seen(&self, id: &str, event: &str) -> Result<bool, TriggerError> {
        let table = self.db().table(&TRIGGER_REPLAY);
        Ok(table.get(replay_key(id, event))?.is_some())
    }

    /// Writes `state` in place of exactly `old` and, if given, remembers `event` until
    /// `expires_ms` (insert-if-absent), in one batch: false if either expectation failed
    /// (the caller re-reads: another server moved first, or the event is a replay).
    pub async fn commit(
        &self,
        id: &str,
        old: Option<Vec<u8>>,
        state: &GuardState,
        event: Option<(&str, u64)>,
    ) -> Result<bool, TriggerError> {
        let mut batch = Batch::new();
        let expect = match old {
            Some(bytes) => Expect::Equals(bytes),
            None => Expect::Absent,
        };
        batch.put(
            &TRIGGER_STATE,
            id.as_bytes(),
            serde_json::to_vec(state)?,
            expect,
        );
        if let Some((event, expires_ms)) = event {
            let entry = serde_json::to_vec(&ReplayEntry { expires_ms })?;
            batch.put(
                &TRIGGER_REPLAY,
                replay_key(id, event),
                entry,
                Expect::Absent,
            );
        }
        match self.db().apply_async(batch).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets one event id of trigger `id` (its run could not be started: the sender's
    /// retry with the same id must not count as a replay).
    pub async fn forget(&self, id: &str, event: &str) -> Result<(), TriggerError> {
        let mut batch = Batch::new();
        batch.delete(&TRIGGER_REPLAY, replay_key(id, event), Expect::Any);
        self.db().apply_async(batch).await?;
        Ok(())
    }

    /// Forgets the ids of trigger `id` whose window has passed; returns how many remain.
    pub async fn prune_replay(&self, id: &str, now_ms: u64) -> Result<usize, TriggerError> {
        let table = self.db().table(&TRIGGER_REPLAY);
        let rows = table.scan(&Scan::prefix(format!("{id}/").into_bytes()))?;
        let mut batch = Batch::new();
        let mut kept = 0;
        for (key, bytes) in rows {
            let expired = serde_json::from_slice::<ReplayEntry>(&bytes)
                .map_or(true, |e| e.expires_ms < now_ms);
            if expired {
                // Only if unchanged: a concurrent re-insert is not lost.
                batch.delete(&TRIGGER_REPLAY, key, Expect::Equals(bytes));
            } else {
                kept += 1;
            }
        }
        match self.db().apply_async(batch).await {
            Err(e) if !e.is_conflict() => return Err(e.into()),
            _ => {}
        }
        Ok(kept)
    }

    /// Keeps one accepted event of trigger `id`, dropping the oldest past the cap.
    pub async fn keep_body(&self, id: &str, event: &StoredEvent) -> Result<(), TriggerError> {
        let table = self.db().table(&TRIGGER_BODIES);
        let prefix = format!("{id}/").into_bytes();
        let mut batch = Batch::new();
        let key = format!("{id}/{:016x}/{}", event.received_ms, event.event_id);
        batch.put(
            &TRIGGER_BODIES,
            key,
            serde_json::to_vec(event)?,
            Expect::Any,
        );
        let held = table.scan(&Scan::prefix(prefix).limit(MAX_STORED_BODIES + 16))?;
        let excess = (held.len() + 1).saturating_sub(MAX_STORED_BODIES);
        for (key, _) in held.into_iter().take(excess) {
            batch.delete(&TRIGGER_BODIES, key, Expect::Any);
        }
        self.db().apply_async(batch).await?;
        Ok(())
    }

    /// The stored events of trigger `id`, newest first, at most `limit`.
    pub fn bodies(&self, id: &str, limit: usize) -> Result<Vec<StoredEvent>, TriggerError> {
        let table = self.db().table(&TRIGGER_BODIES);
        let scan = Scan::prefix(format!("{id}/").into_bytes())
            .reversed()
            .limit(limit);
        table
            .scan(&scan)?
            .into_iter()
            .map(|(key, bytes)| decode(&String::from_utf8_lossy(&key), &bytes))
            .collect()
    }
}
