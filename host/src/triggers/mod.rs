//! Triggers: a process started the moment an outside system (a SIEM, an EDR, a ticketing
//! system) reports an event, over `POST /v1/triggers/{id}/events`, signed the Standard
//! Webhooks way.
//!
//! Layout: `store` (the trigger records and the state several servers share), `signature`
//! (Standard Webhooks verification: `v1,` HMAC-SHA256 under the trigger's `whsec_` secret or
//! `v1a,` ed25519 under the public key given at creation), `mapping` (RFC 6901 JSON pointers
//! from the event body to the process's typed inputs, allow-lists per input), `guard` (rate,
//! concurrency and de-duplication limits as one compare-and-swap; the bounded tally of
//! refusals), `event` (one event from arrival to the run it starts).
//!
//! Threat: a caller who is not the detection system starting privileged runs. The endpoint
//! carries no API token: the signature alone authenticates the event. It is checked, in
//! constant time, before the body is parsed; the signed timestamp must be within the
//! trigger's tolerance; an event id seen before is a replay; the body is capped before
//! anything reads it. So a leaked URL alone starts nothing, nor does a captured event sent
//! again. A sender holding the secret is bounded too: it can only fill the inputs the trigger
//! maps, with values its allow-lists accept, validated against the signed manifest like any
//! run's, at most `rate` runs per window and `max_concurrent` at once, each audited with the
//! event id and the body's SHA-256 under the actor `trigger:<id>`. A flood of refused events
//! writes one audit record per kind per window plus one count per window, not one each.

mod event;
pub mod guard;
pub mod mapping;
mod service;
pub mod signature;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use event::{EventOutcome, Incoming, Refusal};
pub use service::Triggers;
pub use store::{TRIGGER_BODIES, TRIGGER_REPLAY, TRIGGER_STATE, TRIGGERS, TriggerStore};

/// Largest event body accepted. Checked before anything parses it: blocks memory and CPU
/// exhaustion by an unauthenticated caller.
pub const MAX_EVENT_BODY: usize = 64 << 10;

/// Most triggers one process may have.
pub const MAX_TRIGGERS_PER_PROCESS: usize = 32;

/// Most mapped inputs of one trigger (the manifest's own input cap is larger).
pub const MAX_MAPPED_INPUTS: usize = 64;

/// Longest JSON pointer. Bounds the record and the per-event lookup work.
pub const MAX_POINTER_BYTES: usize = 512;

/// Most allowed values per input, and the longest one.
pub const MAX_ALLOWED_VALUES: usize = 256;
pub const MAX_ALLOWED_VALUE_BYTES: usize = 256;

/// Bounds of the rate limit: runs per window and the window itself.
pub const MAX_RATE_RUNS: u32 = 10_000;
pub const MAX_WINDOW_SECS: u64 = 86_400;

/// Most runs of one trigger in flight (queued, running or awaiting approval) at once.
pub const MAX_CONCURRENT_LIMIT: u32 = 256;

/// Widest timestamp tolerance a trigger may set; the default is the spec's 5 minutes.
pub const MAX_TOLERANCE_SECS: u64 = 3600;
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Audit action of an event that started a run (or was absorbed as a duplicate).
pub const EVENT_ACTION: &str = "trigger.event";
/// Audit action of the first refused event of each kind, per trigger and window.
pub const REFUSED_ACTION: &str = "trigger.refused";
/// Audit action counting the refusals of a window not audited one by one.
pub const REFUSED_COUNT_ACTION: &str = "trigger.refused.count";
/// Audit action, once per window, counting the events the rate or concurrency limit
/// refused. Alert rules match on it.
pub const OVERFLOW_ACTION: &str = "trigger.overflow";

/// Why a trigger operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("{0}")]
    Invalid(String),
    #[error("trigger {0} not found")]
    NotFound(String),
    #[error("trigger storage error: {0}")]
    Storage(#[from] crate::store::StoreError),
    #[error("stored trigger {0} is corrupt")]
    Corrupt(String),
    #[error("cannot encode trigger: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("vault: {0}")]
    Vault(#[from] crate::vault::VaultError),
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Runs(#[from] crate::runs::RunsError),
    #[error("the shared trigger state stayed contended; retry")]
    Contended,
}

fn invalid(why: impl Into<String>) -> TriggerError {
    TriggerError::Invalid(why.into())
}

/// How an event's signature is checked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KeySpec {
    /// `v1,` HMAC-SHA256; the key lives in the vault under `credential`, never returned.
    Hmac { credential: String },
    /// `v1a,` ed25519 under this public key (standard base64 of its 32 bytes).
    Ed25519 { public_key: String },
}

/// At most `runs` runs started per `window_secs`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub runs: u32,
    pub window_secs: u64,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            runs: 10,
            window_secs: 60,
        }
    }
}

/// Events whose `pointer` value equals one seen within `window_secs` start no run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dedupe {
    pub pointer: String,
    pub window_secs: u64,
}

/// An inbound trigger of one process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Trigger {
    /// UUID v4; the URL is `/v1/triggers/{id}/events`.
    pub id: String,
    pub process_id: String,
    pub created_by: String,
    pub created_ms: u64,
    pub key: KeySpec,
    /// Process input name → JSON pointer into the event body.
    pub map: BTreeMap<String, String>,
    /// Process input name → the only values (or list elements) it may take.
    pub allow: BTreeMap<String, BTreeSet<String>>,
    pub rate: Rate,
    pub max_concurrent: u32,
    pub dedupe: Option<Dedupe>,
    /// Keep each accepted event's body (redacted) for later review.
    pub store_body: bool,
    /// Runs it starts wait for approval, whatever the process requires.
    pub require_approval: bool,
    pub tolerance_secs: u64,
    /// When the secret or key was last replaced.
    pub rotated_ms: Option<u64>,
}

impl Trigger {
    /// The actor of the runs it starts.
    pub fn actor(&self) -> String {
        format!("trigger:{}", self.id)
    }
}

/// What a caller supplies to create a trigger.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTrigger {
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    #[serde(default)]
    pub allow: BTreeMap<String, BTreeSet<String>>,
    #[serde(default)]
    pub rate: Option<Rate>,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub dedupe: Option<Dedupe>,
    #[serde(default)]
    pub store_body: bool,
    #[serde(default)]
    pub require_approval: bool,
    #[serde(default)]
    pub tolerance_secs: Option<u64>,
    /// Verify `v1a,` ed25519 signatures under this key (base64) instead of an HMAC secret.
    #[serde(default)]
    pub ed25519_public_key: Option<String>,
}

impl NewTrigger {
    /// Checks every field against its rule and cap (the manifest check is the caller's).
    pub fn validate(&self) -> Result<(), TriggerError> {
        if self.map.len() > MAX_MAPPED_INPUTS {
            return Err(invalid(format!("map: at most {MAX_MAPPED_INPUTS} inputs")));
        }
        for (input, pointer) in &self.map {
            mapping::check_pointer(pointer)
                .map_err(|why| invalid(format!("map {input}: {why}")))?;
        }
        for (input, values) in &self.allow {
            if !self.map.contains_key(input) {
                return Err(invalid(format!(
                    "allow {input}: the input is not mapped from the event"
                )));
            }
            if values.is_empty() || values.len() > MAX_ALLOWED_VALUES {
                return Err(invalid(format!(
                    "allow {input}: 1 to {MAX_ALLOWED_VALUES} values"
                )));
            }
            if values
                .iter()
                .any(|v| v.is_empty() || v.len() > MAX_ALLOWED_VALUE_BYTES)
            {
                return Err(invalid(format!(
                    "allow {input}: each value 1 to {MAX_ALLOWED_VALUE_BYTES} bytes"
                )));
            }
        }
        let rate = self.rate.unwrap_or_default();
        if rate.runs == 0 || rate.runs > MAX_RATE_RUNS {
            return Err(invalid(format!("rate: 1 to {MAX_RATE_RUNS} runs")));
        }
        if rate.window_secs == 0 || rate.window_secs > MAX_WINDOW_SECS {
            return Err(invalid(format!(
                "rate: a window of 1 to {MAX_WINDOW_SECS} s"
            )));
        }
        let concurrent = self.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT);
        if concurrent == 0 || concurrent > MAX_CONCURRENT_LIMIT {
            return Err(invalid(format!(
                "max_concurrent: 1 to {MAX_CONCURRENT_LIMIT}"
            )));
        }
        if let Some(d) = &self.dedupe {
            mapping::check_pointer(&d.pointer).map_err(|why| invalid(format!("dedupe: {why}")))?;
            if d.window_secs == 0 || d.window_secs > MAX_WINDOW_SECS {
                return Err(invalid(format!(
                    "dedupe: a window of 1 to {MAX_WINDOW_SECS} s"
                )));
            }
        }
        let tolerance = self.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS);
        if tolerance == 0 || tolerance > MAX_TOLERANCE_SECS {
            return Err(invalid(format!(
                "tolerance_secs: 1 to {MAX_TOLERANCE_SECS}"
            )));
        }
        if let Some(key) = &self.ed25519_public_key {
            signature::parse_public_key(key)
                .ok_or_else(|| invalid("ed25519_public_key: not a base64 ed25519 public key"))?;
        }
        Ok(())
    }
}

/// Runs of one trigger in flight at once unless it says otherwise.
pub const DEFAULT_MAX_CONCURRENT: u32 = 4;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
