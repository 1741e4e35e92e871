//! Processes and runs: the definitions users execute, and the persisted state machine of each
//! execution.
//!
//! Threats this module stops:
//! - a run silently lost or left "running" forever after a crash: every transition is durable
//!   before it is acknowledged, and [`RunStore::recover`] marks runs that were running when the
//!   server stopped as `interrupted` (invariant 7);
//! - a transition with no audit record, or two controllers both finishing the same run: the
//!   audit record is written durably first (fail closed), then the state is swapped in only if
//!   the stored record is still exactly the one the transition was checked against;
//! - a state going backwards (a finished run restarted, a cancelled run reported successful):
//!   [`RunState::can_become`] is the one transition table, and terminal states never change;
//! - an ambiguous or spoofed process name, and records a request can grow without bound: names
//!   are unique and restricted, and every field a request controls has a cap.
//!
//! Layout:
//! - `process`: [`Process`], [`NewProcess`] and [`ProcessStore`] (unique names, revisions).
//! - `state`: [`RunState`] and its transition table.
//! - `run`: [`RunRecord`], [`RunFilter`] and [`RunStore`] (audited, durable transitions;
//!   recovery at start).
//! - `dispatch`: starting runs on the embedded bridge.
//! - `queue`: admission (bounded, per-user and per-process caps) and fair scheduling of runs
//!   onto the instance pool's execution slots.
//! - `approval`: four-eyes approvals bound to exactly what a run will execute.
//! - `schedule`: cron schedules and the scheduler task that starts their runs.
//!
//! Approvals and schedules: a run of a process that requires approvals is created
//! `awaiting-approval` and moves to `queued` (enough valid approvals), `denied` (rejected) or
//! `cancelled`. An approval binds to a digest of what the run would execute (process id,
//! module digest, signed manifest, inputs, grant), recomputed from the stored run and process
//! whenever approvals are counted; a process edit that changes none of these (sharing, the
//! description) leaves approvals valid. A scheduled run is an ordinary run whose `actor`
//! names the schedule (`schedule:<id>`). New fields added later to [`Process`] or
//! [`RunRecord`] must carry `#[serde(default)]` so records written before them still decode.

pub mod approval;
pub mod cluster;
pub mod dispatch;
mod process;
pub mod queue;
mod run;
pub mod schedule;
mod state;

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) use process::check_grant;
pub use process::{
    MAX_DEFAULT_INPUTS, MAX_DEFAULT_INPUTS_BYTES, MAX_DESCRIPTION_BYTES, MAX_GRANT_ENTRIES,
    MAX_GRANT_NAME_LEN, MAX_PATTERN_BYTES, MAX_PROCESS_BYTES, MAX_REQUIRED_APPROVALS, MAX_SHARES,
    MAX_VERSION_LEN, NewProcess, PROCESS_NAMES, PROCESSES, Process, ProcessStore,
};
pub use run::{
    INTERRUPTED_ERROR, LOST_TRANSITION_ACTION, MAX_LIST_RUNS, MAX_RUN_RECORD_BYTES,
    RECOVERED_ACTION, RECOVERY_ACTOR, RUNS, RUNS_ACTIVE, RUNS_BY_TIME, Recovery, RunCursor,
    RunFilter, RunRecord, RunStore,
};
pub use state::RunState;

use crate::audit::AuditError;

/// Longest process name or run/process id. Names reach sled keys, URLs and audit records.
pub const MAX_NAME_LEN: usize = 64;

/// Longest user or role name stored here (owner, actor, share lists). They reach audit
/// records and policy entities; the cap stops one request from bloating either.
pub const MAX_PRINCIPAL_BYTES: usize = 128;

/// Errors from the process and run stores.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    /// No process or run with this id (or name).
    #[error("{0} not found")]
    NotFound(String),
    /// A process name outside `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid process name {0:?}: use 1-64 of A-Z a-z 0-9 . _ -")]
    InvalidName(String),
    /// Another process already has this name.
    #[error("a process named {0:?} already exists")]
    NameTaken(String),
    /// A field fails validation (bad digest, over a cap, an immutable field changed, …).
    #[error("invalid {field}: {why}")]
    Invalid { field: &'static str, why: String },
    /// A run with this id already exists.
    #[error("run {0} already exists")]
    RunExists(String),
    /// The state machine forbids this transition, or a concurrent one won.
    #[error("run cannot go from {from} to {to}")]
    BadTransition { from: RunState, to: RunState },
    /// The encoded record is larger than its cap; the caller must trim output or events.
    #[error("record is {size} bytes, over the {max}-byte limit")]
    RecordTooLarge { size: usize, max: usize },
    /// The stored record changed under an update made through another store handle.
    #[error("{0} was modified concurrently; retry")]
    Conflict(String),
    /// The task finishing an audited write panicked; the write may not have completed.
    #[error("run store task failed")]
    TaskFailed,
    /// The bridge register could not be read.
    #[error("bridge register: {0}")]
    Bridge(String),
    /// A stored record does not decode.
    #[error("stored record {0} is corrupt")]
    Corrupt(String),
    /// The audit record could not be written, so nothing was changed.
    #[error("audit: {0}")]
    Audit(#[from] AuditError),
    #[error("run storage error: {0}")]
    Storage(#[from] crate::store::StoreError),
    #[error("cannot encode record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// True for 1..=64 characters of `[A-Za-z0-9._-]`: process names and ids.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// True for a user or role name: 1..=[`MAX_PRINCIPAL_BYTES`] bytes, no control characters
/// (which could forge lines in logs) and no surrounding whitespace.
pub fn is_valid_principal(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PRINCIPAL_BYTES
        && s.trim() == s
        && !s.chars().any(char::is_control)
}

/// True for a lowercase hex SHA-256 digest (64 characters).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Fails with [`RunsError::RecordTooLarge`] when `bytes` exceeds `max`.
fn check_size(bytes: &[u8], max: usize) -> Result<(), RunsError> {
    if bytes.len() > max {
        return Err(RunsError::RecordTooLarge {
            size: bytes.len(),
            max,
        });
    }
    Ok(())
}

/// Unix time in ms; a clock before 1970 reads as 0.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_restricted_to_a_small_charset() {
        assert!(is_valid_name("rotate-root.v2_a"));
        assert!(is_valid_name(&"a".repeat(MAX_NAME_LEN)));
        assert!(!is_valid_name(&"a".repeat(MAX_NAME_LEN + 1)));
        for bad in ["", "a b", "a/b", "ä", "a\n", "../x"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn principals_refuse_control_characters_and_padding() {
        assert!(is_valid_principal("alice@example.com"));
        assert!(is_valid_principal("schedule:rotate monthly"));
        for bad in ["", " alice", "alice\n", "a\u{1b}[31m", &"a".repeat(129)] {
            assert!(!is_valid_principal(bad), "{bad:?}");
        }
    }

    #[test]
    fn digests_must_be_lowercase_sha256_hex() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex(&"ab".repeat(31)));
        assert!(!is_sha256_hex(&"zz".repeat(32)));
    }
}
