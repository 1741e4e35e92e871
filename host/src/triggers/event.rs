//! One inbound event, from arrival to the run it starts: size cap, trigger lookup,
//! signature and timestamp (before the body is parsed), input mapping and the manifest
//! check, then the guard rails and the replay check as one compare-and-swap, then the run
//! (actor `trigger:<id>`, charged to the trigger's creator) and its audit record linking the
//! event id and the body's SHA-256.
//!
//! Threat: see the module root. Every refusal is counted in the tally; the first of each
//! kind per trigger and window is audited in full (`trigger.refused`), and nothing about a
//! refused event is written anywhere else: no run, no replay id, no stored body.

use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::guard::Verdict;
use super::mapping::{self, MapError};
use super::service::Triggers;
use super::signature::{self, Headers, SignatureError, Verifier};
use super::store::{MAX_REPLAY_IDS, StoredEvent};
use super::{EVENT_ACTION, KeySpec, MAX_EVENT_BODY, REFUSED_ACTION, Trigger, TriggerError, now_ms};
use crate::audit::{AuditEntry, Decision};
use crate::runs::dispatch::StartError;
use crate::runs::{Process, RunRecord};

/// How often a trigger's expired replay ids are pruned (and counted).
const PRUNE_EVERY_MS: u64 = 10_000;

/// Most attempts at the guard state's compare-and-swap before giving up (503).
const MAX_SWAP_ATTEMPTS: usize = 32;

/// Field names whose values a stored body never keeps.
const SECRET_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "credential",
    "cookie",
];

/// An event as the HTTP layer received it.
pub struct Incoming<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
    /// The body was longer than [`MAX_EVENT_BODY`] (and was not read further).
    pub too_large: bool,
}

/// An accepted event.
#[derive(Clone, Debug)]
pub enum EventOutcome {
    /// It started this run (possibly awaiting approval).
    Started(Box<RunRecord>),
    /// Its subject was seen within the de-duplication window; no run.
    Duplicate { run_id: Option<String> },
}

/// A refused event: its stable code, what to tell the sender, a `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

fn refusal(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        retry_after: None,
    }
}

/// An internal failure: logged, answered as a bare 503 (nothing about it to the sender).
fn unavailable(e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "trigger event not handled");
    Refusal {
        code: "unavailable",
        message: "the event could not be handled; nothing was started, retry later".into(),
        retry_after: Some(1),
    }
}

impl Triggers {
    /// Handles one event sent to trigger `id`.
    pub async fn receive(&self, id: &str, ev: Incoming<'_>) -> Result<EventOutcome, Refusal> {
        let digest = hex::encode(Sha256::digest(ev.body));
        let found = self.lookup(id).map_err(unavailable)?;
        let Some((trigger, process)) = found else {
            // Same work as a bad signature, so the answer's timing says nothing more.
            let _ = self.check(&self.inner.decoy, &ev, DEFAULT_CHECK_TOLERANCE);
            let why = refusal("not_found", format!("trigger {id}"));
            return Err(self.refuse("unknown", None, why, &ev, &digest).await);
        };
        let t = Some(&trigger);
        if ev.too_large {
            let why = refusal(
                "too_large",
                format!("the body is over {MAX_EVENT_BODY} bytes"),
            );
            return Err(self.refuse(&trigger.id, t, why, &ev, &digest).await);
        }
        let verifier = self.verifier(&trigger).map_err(unavailable)?;
        if let Err(e) = self.check(&verifier, &ev, trigger.tolerance_secs) {
            let why = match e {
                SignatureError::BadSignature => refusal(
                    "bad_signature",
                    "no signature verifies under the trigger's key",
                ),
                SignatureError::Stale => refusal(
                    "stale_timestamp",
                    format!(
                        "the timestamp is over {} s from now",
                        trigger.tolerance_secs
                    ),
                ),
            };
            return Err(self.refuse(&trigger.id, t, why, &ev, &digest).await);
        }
        let event_id = ev.id.unwrap_or_default();
        // Authenticated from here on. A trigger outlives no one: its creator's runs stop
        // when the creator is disabled or deleted.
        if !self.creator_active(&trigger).map_err(unavailable)? {
            let why = refusal(
                "creator_inactive",
                "the trigger's creator is disabled or deleted",
            );
            return Err(self.refuse(&trigger.id, t, why, &ev, &digest).await);
        }
        // The body is parsed only now.
        let body: Value = match serde_json::from_slice(ev.body) {
            Ok(body) => body,
            Err(_) => {
                let why = refusal(MapError::NotJson.code(), MapError::NotJson.to_string());
                return Err(self.refuse(&trigger.id, t, why, &ev, &digest).await);
            }
        };
        let inputs = match mapping::map_inputs(&trigger, &body) {
            Ok(inputs) => inputs,
            Err(e) => {
                let why = refusal(e.code(), e.to_string());
                return Err(self.refuse(&trigger.id, t, why, &ev, &digest).await);
            }
        };
        if let Err(e) = self
            .inner
            .dispatcher
            .check_run_inputs(&process, inputs.clone())
        {
            let why = start_refusal(&e);
            return Err(self.refuse(&trigger.id, t, why, &ev, &digest).await);
        }
        let subject = trigger
            .dedupe
            .as_ref()
            .and_then(|d| mapping::subject(&body, &d.pointer));
        let verdict = match self.admit(&trigger, event_id, subject.as_deref()).await {
            Ok(verdict) => verdict,
            Err(why) => return Err(self.refuse(&trigger.id, t, why, &ev, &digest).await),
        };
        let Verdict::Start = verdict else {
            let Verdict::Duplicate { run_id } = verdict else {
                return Err(unavailable("unexpected verdict"));
            };
            let why = refusal("duplicate", "the subject was seen within the window");
            let _ = self.refuse(&trigger.id, t, why, &ev, &digest).await;
            return Ok(EventOutcome::Duplicate { run_id });
        };
        let run = self
            .start(&trigger, &process, inputs, event_id, &ev, &digest)
            .await?;
        if trigger.store_body {
            self.keep_body(&trigger, event_id, &body, &digest, &run.id)
                .await;
        }
        Ok(EventOutcome::Started(Box::new(run)))
    }

    /// The trigger and its process; `None` if either is gone.
    fn lookup(&self, id: &str) -> Result<Option<(Trigger, Process)>, TriggerError> {
        let Some(trigger) = self.inner.store.get(id)? else {
            return Ok(None);
        };
        Ok(self
            .inner
            .processes
            .get(&trigger.process_id)?
            .map(|p| (trigger, p)))
    }

    fn creator_active(&self, trigger: &Trigger) -> Result<bool, crate::users::UserError> {
        let user = self.inner.users.get_user(&trigger.created_by)?;
        Ok(user.is_some_and(|u| u.is_active()))
    }

    fn verifier(&self, trigger: &Trigger) -> Result<Verifier, TriggerError> {
        match &trigger.key {
            KeySpec::Hmac { credential } => {
                let secret = self.inner.vault.secret(credential)?;
                Ok(Verifier::Hmac(Zeroizing::new(secret.expose().to_vec())))
            }
            KeySpec::Ed25519 { public_key } => signature::parse_public_key(public_key)
                .map(Verifier::Ed25519)
                .ok_or_else(|| TriggerError::Corrupt(trigger.id.clone())),
        }
    }

    fn check(&self, v: &Verifier, ev: &Incoming<'_>, tolerance: u64) -> Result<(), SignatureError> {
        let headers = Headers {
            id: ev.id.unwrap_or_default(),
            timestamp: ev.timestamp.unwrap_or_default(),
            signature: ev.signature.unwrap_or_default(),
        };
        let now = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
        signature::verify(v, &headers, ev.body, now, tolerance)
    }

    /// The guard rails and the replay check, decided and recorded as one swap.
    async fn admit(
        &self,
        trigger: &Trigger,
        event_id: &str,
        subject: Option<&str>,
    ) -> Result<Verdict, Refusal> {
        self.replay_room(trigger).await?;
        let store = &self.inner.store;
        let expires_ms = now_ms().saturating_add(trigger.tolerance_secs.saturating_mul(2000));
        for _ in 0..MAX_SWAP_ATTEMPTS {
            if store.seen(&trigger.id, event_id).map_err(unavailable)? {
                return Err(refusal(
                    "replayed",
                    format!("event {event_id} was seen before"),
                ));
            }
            let (old, mut state) = store.state(&trigger.id).map_err(unavailable)?;
            let runs = &self.inner.runs;
            // A run that cannot be read counts as still in flight (fail closed).
            let ended = |run: &str| match runs.get(run) {
                Ok(None) => true,
                Ok(Some(r)) => r.state.is_terminal(),
                Err(_) => false,
            };
            let verdict = state.decide(trigger, now_ms(), event_id, subject, ended);
            match verdict {
                Verdict::RateLimited { retry_after_secs } => {
                    return Err(Refusal {
                        retry_after: Some(retry_after_secs),
                        ..refusal(
                            "rate_limited",
                            format!(
                                "at most {} runs per {} s",
                                trigger.rate.runs, trigger.rate.window_secs
                            ),
                        )
                    });
                }
                Verdict::ConcurrencyLimited => {
                    return Err(Refusal {
                        retry_after: Some(1),
                        ..refusal(
                            "concurrency_limited",
                            format!(
                                "{} runs of this trigger are in flight",
                                trigger.max_concurrent
                            ),
                        )
                    });
                }
                Verdict::Start | Verdict::Duplicate { .. } => {}
            }
            let event = Some((event_id, expires_ms));
            if store
                .commit(&trigger.id, old, &state, event)
                .await
                .map_err(unavailable)?
            {
                self.count_replay(&trigger.id);
                return Ok(verdict);
            }
        }
        Err(unavailable(TriggerError::Contended))
    }

    /// Refuses the event if the trigger's remembered ids are at their cap (after pruning the
    /// expired ones, at most every [`PRUNE_EVERY_MS`]).
    async fn replay_room(&self, trigger: &Trigger) -> Result<(), Refusal> {
        let now = now_ms();
        let (pruned_ms, count) = self
            .lock_replay()
            .get(&trigger.id)
            .copied()
            .unwrap_or((0, 0));
        if now.saturating_sub(pruned_ms) >= PRUNE_EVERY_MS || count >= MAX_REPLAY_IDS {
            let kept = self
                .inner
                .store
                .prune_replay(&trigger.id, now)
                .await
                .map_err(unavailable)?;
            self.lock_replay().insert(trigger.id.clone(), (now, kept));
            if kept >= MAX_REPLAY_IDS {
                return Err(Refusal {
                    retry_after: Some(trigger.tolerance_secs),
                    ..refusal(
                        "replay_store_full",
                        "too many recent event ids; retry later",
                    )
                });
            }
        }
        Ok(())
    }

    fn count_replay(&self, id: &str) {
        if let Some(entry) = self.lock_replay().get_mut(id) {
            entry.1 += 1;
        }
    }

    /// Starts the run, settles its reservation, audits the event with the run.
    async fn start(
        &self,
        trigger: &Trigger,
        process: &Process,
        inputs: std::collections::BTreeMap<String, Value>,
        event_id: &str,
        ev: &Incoming<'_>,
        digest: &str,
    ) -> Result<RunRecord, Refusal> {
        let mut process = process.clone();
        if trigger.require_approval {
            process.required_approvals = process.required_approvals.max(1);
        }
        let names: Vec<String> = inputs.keys().cloned().collect();
        let started = self
            .inner
            .dispatcher
            .start_charged(&process, inputs, &trigger.actor(), &trigger.created_by)
            .await;
        let run_id = started.as_ref().ok().map(|r| r.id.clone());
        self.settle(trigger, event_id, run_id.as_deref()).await;
        let run = match started {
            Ok(run) => run,
            Err(e) => {
                if let Err(e) = self.inner.store.forget(&trigger.id, event_id).await {
                    tracing::warn!(trigger = %trigger.id, error = %e, "event id not forgotten");
                }
                let why = start_refusal(&e);
                return Err(self
                    .refuse(&trigger.id, Some(trigger), why, ev, digest)
                    .await);
            }
        };
        let entry = AuditEntry {
            run_id: Some(run.id.clone()),
            actor: trigger.actor(),
            action: EVENT_ACTION.into(),
            target: None,
            credential: None,
            decision: Decision::Allowed,
            outcome: "ok".into(),
            duration_us: 0,
            detail: Some(format!(
                "process {}: event {event_id}, body sha256:{digest}, run {} ({}), inputs [{}]",
                trigger.process_id,
                run.id,
                run.state.as_str(),
                names.join(", ")
            )),
        };
        if let Err(e) = self.inner.audit.append(entry).await {
            // Fail closed: a run whose event is not on record does not go on.
            let _ = self
                .inner
                .dispatcher
                .cancel(&run.id, &trigger.actor())
                .await;
            return Err(unavailable(e));
        }
        Ok(run)
    }

    /// Records the run a reservation started (or drops the reservation), retrying the swap.
    async fn settle(&self, trigger: &Trigger, event_id: &str, run_id: Option<&str>) {
        for _ in 0..MAX_SWAP_ATTEMPTS {
            let Ok((old, mut state)) = self.inner.store.state(&trigger.id) else {
                break;
            };
            if !state.settle(event_id, run_id) {
                return;
            }
            match self
                .inner
                .store
                .commit(&trigger.id, old, &state, None)
                .await
            {
                Ok(true) => return,
                Ok(false) => continue,
                Err(_) => break,
            }
        }
        // The reservation then expires on its own (RESERVATION_TTL_MS).
        tracing::warn!(trigger = %trigger.id, "trigger reservation not settled");
    }

    /// Counts a refusal; audits it in full if it is the first of its kind in the window.
    async fn refuse(
        &self,
        key: &str,
        trigger: Option<&Trigger>,
        why: Refusal,
        ev: &Incoming<'_>,
        digest: &str,
    ) -> Refusal {
        if !self.inner.tally.note(key, why.code, now_ms()) {
            return why;
        }
        let event: String = ev
            .id
            .unwrap_or("(none)")
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(signature::MAX_ID_BYTES)
            .collect();
        let (actor, process) = match trigger {
            Some(t) => (t.actor(), format!("process {}", t.process_id)),
            None => ("trigger:unknown".to_string(), "no such trigger".to_string()),
        };
        let entry = AuditEntry {
            run_id: None,
            actor,
            action: REFUSED_ACTION.into(),
            target: None,
            credential: None,
            decision: Decision::Denied {
                reason: why.code.to_string(),
                policy: None,
            },
            outcome: "refused".into(),
            duration_us: 0,
            detail: Some(format!(
                "{process}: event {event}, body sha256:{digest} ({} bytes{}): {}; further \
                 refusals of this kind in this window are counted",
                ev.body.len(),
                if ev.too_large { "+" } else { "" },
                why.message
            )),
        };
        match self.inner.audit.append(entry).await {
            Ok(_) => why,
            Err(e) => unavailable(e),
        }
    }

    /// Keeps the body, redacted: the trigger's own secret and its encodings, and the values
    /// of secret-looking fields. A failure is logged; the run has started.
    async fn keep_body(
        &self,
        trigger: &Trigger,
        event_id: &str,
        body: &Value,
        digest: &str,
        run: &str,
    ) {
        let redactor = crate::redact::Redactor::new();
        if let Ok(Verifier::Hmac(key)) = self.verifier(trigger) {
            let _ = redactor.add_secret(&key);
            use base64::Engine;
            let text =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.as_slice()));
            let _ = redactor.add_secret(text.as_bytes());
        }
        let mut body = body.clone();
        redact_fields(&mut body, 0);
        let stored = StoredEvent {
            event_id: event_id.to_string(),
            received_ms: now_ms(),
            body_sha256: digest.to_string(),
            run_id: Some(run.to_string()),
            body: redactor.redact_str(&body.to_string()),
        };
        if let Err(e) = self.inner.store.keep_body(&trigger.id, &stored).await {
            tracing::warn!(trigger = %trigger.id, error = %e, "event body not stored");
        }
    }
}

/// The tolerance an unknown trigger's decoy check uses.
const DEFAULT_CHECK_TOLERANCE: u64 = super::DEFAULT_TOLERANCE_SECS;

/// Replaces the values of secret-looking fields, recursively (depth-bounded: the body is at
/// most 64 KiB, but nesting is the sender's).
fn redact_fields(value: &mut Value, depth: usize) {
    if depth > 64 {
        *value = Value::String("[REDACTED]".into());
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                if SECRET_FIELDS.iter().any(|s| k.contains(s)) {
                    *v = Value::String("[REDACTED]".into());
                } else {
                    redact_fields(v, depth + 1);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_fields(v, depth + 1)),
        _ => {}
    }
}

/// The refusal for a run that could not be started.
fn start_refusal(e: &StartError) -> Refusal {
    match e {
        StartError::Inputs(e) => refusal("invalid_inputs", e.to_string()),
        StartError::Refused(r) => Refusal {
            retry_after: Some(1),
            ..refusal("queue_refused", r.to_string())
        },
        StartError::ModuleUnavailable(_) | StartError::Untrusted(..) => {
            refusal("module_unavailable", e.to_string())
        }
        other => unavailable(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_looking_fields_are_redacted_at_any_depth() {
        let mut body = json!({
            "user": "alice",
            "Password": "p1",
            "evidence": [{ "api_key": "k1", "note": "fine" }, { "X-Auth-Token": { "v": "t1" } }],
        });
        redact_fields(&mut body, 0);
        let text = body.to_string();
        for secret in ["p1", "k1", "t1"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("alice") && text.contains("fine"), "{text}");
    }
}
