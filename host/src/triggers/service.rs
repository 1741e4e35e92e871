//! The trigger service: creating, rotating and deleting triggers (the HMAC secret goes to
//! the vault and is shown once), and the background task that writes the per-window counts
//! of refused events to the audit log.
//!
//! Threat: a trigger's secret leaking after its creation, and a trigger reaching inputs its
//! process does not declare. The secret is generated here, stored only encrypted (a vault
//! credential `trigger.<id>`), returned once by create and rotate and never again; a
//! trigger's mapped inputs must be inputs of the process's signed manifest.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use zeroize::Zeroizing;

use super::guard::{Tally, WindowCount, is_overflow};
use super::signature::{self, Verifier};
use super::{
    DEFAULT_MAX_CONCURRENT, DEFAULT_TOLERANCE_SECS, KeySpec, NewTrigger, OVERFLOW_ACTION,
    REFUSED_COUNT_ACTION, Trigger, TriggerError, TriggerStore, now_ms,
};
use crate::audit::{AuditEntry, AuditLog, Decision};
use crate::runs::dispatch::Dispatcher;
use crate::runs::{Process, ProcessStore, RunStore};
use crate::store::Database;
use crate::users::UserStore;
use crate::vault::{CredentialKind, Secret, Vault};

/// How often the tally is looked at for ended windows.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The vault username of trigger secrets (they are HMAC keys, not logins).
const SECRET_USERNAME: &str = "trigger";

/// Triggers and everything an event needs. Cheap to clone.
#[derive(Clone)]
pub struct Triggers {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub store: TriggerStore,
    pub vault: Vault,
    pub audit: AuditLog,
    pub runs: RunStore,
    pub processes: ProcessStore,
    pub dispatcher: Dispatcher,
    pub users: UserStore,
    pub tally: Tally,
    /// What events of unknown triggers are checked against.
    pub decoy: Verifier,
    /// Per trigger: when its replay ids were last pruned, and how many remained.
    pub replay: Mutex<HashMap<String, (u64, usize)>>,
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers").finish_non_exhaustive()
    }
}

impl Triggers {
    /// The service over `db`; starts the tally flusher on the current runtime (it ends when
    /// the last clone is dropped).
    pub fn new(
        db: &Database,
        vault: Vault,
        audit: AuditLog,
        runs: RunStore,
        processes: ProcessStore,
        dispatcher: Dispatcher,
        users: UserStore,
    ) -> Self {
        let inner = Arc::new(Inner {
            store: TriggerStore::open(db),
            vault,
            audit,
            runs,
            processes,
            dispatcher,
            users,
            tally: Tally::default(),
            decoy: signature::decoy(),
            replay: Mutex::default(),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(flush_loop(Arc::downgrade(&inner)));
        }
        Triggers { inner }
    }

    pub fn store(&self) -> &TriggerStore {
        &self.inner.store
    }

    /// Sets the window of refusal counts (default one minute; tests shorten it).
    pub fn set_tally_window(&self, window: Duration) {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.inner.tally.set_window(ms);
    }

    /// Creates a trigger of `process` for `created_by`. Returns it and, for an HMAC
    /// trigger, its `whsec_` secret: the only time it is shown.
    pub async fn create(
        &self,
        process: &Process,
        new: NewTrigger,
        created_by: &str,
    ) -> Result<(Trigger, Option<Zeroizing<String>>), TriggerError> {
        new.validate()?;
        self.check_inputs(process, &new)?;
        let id = uuid::Uuid::new_v4().to_string();
        let (key, secret) = match &new.ed25519_public_key {
            Some(public_key) => (
                KeySpec::Ed25519 {
                    public_key: public_key.trim().to_string(),
                },
                None,
            ),
            None => {
                let credential = format!("trigger.{id}");
                let (raw, text) = signature::generate_secret();
                self.inner.vault.add_attributed(
                    &credential,
                    SECRET_USERNAME,
                    CredentialKind::Password,
                    Secret::from_bytes(raw.to_vec()),
                    created_by,
                    "trigger secret",
                )?;
                (KeySpec::Hmac { credential }, Some(text))
            }
        };
        let trigger = Trigger {
            id,
            process_id: process.id.clone(),
            created_by: created_by.to_string(),
            created_ms: now_ms(),
            key,
            map: new.map,
            allow: new.allow,
            rate: new.rate.unwrap_or_default(),
            max_concurrent: new.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT),
            dedupe: new.dedupe,
            store_body: new.store_body,
            require_approval: new.require_approval,
            tolerance_secs: new.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS),
            rotated_ms: None,
        };
        if let Err(e) = self.inner.store.create(&trigger).await {
            self.forget_secret(&trigger);
            return Err(e);
        }
        Ok((trigger, secret))
    }

    /// Every mapped input must be declared by the process's manifest.
    fn check_inputs(&self, process: &Process, new: &NewTrigger) -> Result<(), TriggerError> {
        let declared = self
            .inner
            .dispatcher
            .declared_inputs(process)
            .map_err(|e| TriggerError::Invalid(format!("module: {e}")))?;
        let unknown: Vec<&String> = new
            .map
            .keys()
            .filter(|k| !declared.contains_key(*k))
            .collect();
        if !unknown.is_empty() {
            let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
            return Err(TriggerError::Invalid(format!(
                "map: the process's module declares no input {}",
                names.join(", ")
            )));
        }
        Ok(())
    }

    /// Replaces the trigger's secret (HMAC: a new one, returned once) or public key; the old
    /// one stops verifying at once.
    pub async fn rotate(
        &self,
        trigger: &Trigger,
        public_key: Option<String>,
    ) -> Result<(Trigger, Option<Zeroizing<String>>), TriggerError> {
        let mut updated = trigger.clone();
        let secret = match (&trigger.key, public_key) {
            (KeySpec::Hmac { credential }, None) => {
                let (raw, text) = signature::generate_secret();
                self.inner
                    .vault
                    .replace_secret(credential, Secret::from_bytes(raw.to_vec()))?;
                Some(text)
            }
            (KeySpec::Ed25519 { .. }, Some(key)) => {
                signature::parse_public_key(&key).ok_or_else(|| {
                    TriggerError::Invalid("ed25519_public_key: not a base64 ed25519 key".into())
                })?;
                updated.key = KeySpec::Ed25519 {
                    public_key: key.trim().to_string(),
                };
                None
            }
            (KeySpec::Hmac { .. }, Some(_)) => {
                return Err(TriggerError::Invalid(
                    "an HMAC trigger gets a new secret; it takes no public key".into(),
                ));
            }
            (KeySpec::Ed25519 { .. }, None) => {
                return Err(TriggerError::Invalid(
                    "an ed25519 trigger needs the new ed25519_public_key".into(),
                ));
            }
        };
        updated.rotated_ms = Some(now_ms());
        self.inner.store.update(&updated).await?;
        Ok((updated, secret))
    }

    /// Deletes a trigger: its URL answers 404 from the moment this returns.
    pub async fn delete(&self, trigger: &Trigger) -> Result<bool, TriggerError> {
        let removed = self.inner.store.delete(&trigger.id).await?;
        self.forget_secret(trigger);
        self.lock_replay().remove(&trigger.id);
        Ok(removed)
    }

    /// Deletes every trigger of a process (when the process is deleted); how many.
    pub async fn delete_all(&self, process_id: &str) -> Result<usize, TriggerError> {
        let all = self.inner.store.list(process_id)?;
        for t in &all {
            self.delete(t).await?;
        }
        Ok(all.len())
    }

    fn forget_secret(&self, trigger: &Trigger) {
        if let KeySpec::Hmac { credential } = &trigger.key
            && let Err(e) = self.inner.vault.remove(credential)
        {
            tracing::warn!(trigger = %trigger.id, error = %e, "trigger secret not removed");
        }
    }

    pub(super) fn lock_replay(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, usize)>> {
        self.inner.replay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the counts of every ended tally window (all of them if `all`).
    pub async fn flush_tally(&self, all: bool) {
        flush(&self.inner, all).await;
    }
}

async fn flush_loop(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        flush(&inner, false).await;
    }
}

/// One `trigger.overflow` record per trigger whose window saw overflow, one
/// `trigger.refused.count` per trigger whose window saw refusals beyond the first of each
/// kind (the first was audited on its own).
async fn flush(inner: &Inner, all: bool) {
    let mut by_trigger: BTreeMap<String, Vec<WindowCount>> = BTreeMap::new();
    for count in inner.tally.due(now_ms(), all) {
        by_trigger
            .entry(count.trigger.clone())
            .or_default()
            .push(count);
    }
    for (trigger, counts) in by_trigger {
        let (overflow, other): (Vec<_>, Vec<_>) =
            counts.into_iter().partition(|c| is_overflow(c.reason));
        let overflowed: u64 = overflow.iter().map(|c| c.total).sum();
        if overflowed > 0 {
            let detail = describe(&overflow, |c| c.total);
            let entry = summary(&trigger, OVERFLOW_ACTION, overflowed, detail);
            if let Err(e) = inner.audit.append(entry).await {
                tracing::error!(error = %e, "trigger overflow count not audited");
            }
        }
        let unaudited: u64 = other.iter().map(|c| c.total - 1).sum();
        if unaudited > 0 {
            let detail = describe(&other, |c| c.total - 1);
            let entry = summary(&trigger, REFUSED_COUNT_ACTION, unaudited, detail);
            if let Err(e) = inner.audit.append(entry).await {
                tracing::error!(error = %e, "trigger refusal count not audited");
            }
        }
    }
}

fn describe(counts: &[WindowCount], n: impl Fn(&WindowCount) -> u64) -> String {
    let since = counts.iter().map(|c| c.since_ms).min().unwrap_or(0);
    let parts: Vec<String> = counts
        .iter()
        .filter(|c| n(c) > 0)
        .map(|c| format!("{} {}", c.reason, n(c)))
        .collect();
    format!("since {since} ms: {}", parts.join(", "))
}

fn summary(trigger: &str, action: &str, count: u64, detail: String) -> AuditEntry {
    AuditEntry {
        run_id: None,
        actor: format!("trigger:{trigger}"),
        action: action.to_string(),
        target: None,
        credential: None,
        decision: Decision::Denied {
            reason: format!("{count} events refused"),
            policy: None,
        },
        outcome: "refused".into(),
        duration_us: 0,
        detail: Some(format!("count {count}; {detail}")),
    }
}
