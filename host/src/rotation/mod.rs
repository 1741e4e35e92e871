//! Credential rotation: replacing a credential's secret on a target and in the vault, and
//! `reconcile`, which resolves a rotation that crashed half-way. The capability glue
//! (`capabilities::rotation`) and `warden credential reconcile` call this engine; it knows
//! nothing of WIT or of the guest.
//!
//! Threats, and how each is met:
//!
//! - **A rotation that locks an account out** (the target has a secret the vault does not
//!   consider current, or none that the vault holds). The steps are ordered so that at every
//!   instant the vault holds a secret that opens the account:
//!   1. generate the new secret (a password from the effective [`RotationPolicy`], or an
//!      ed25519 key) in zeroizing memory, and register it and the old one with the redactor;
//!   2. store it as a *pending* vault version, audited;
//!   3. set it on the target as the admin credential under sudo (`steps`);
//!   4. verify it with a fresh SSH login that is never pooled; for a key, then remove the
//!      old public key;
//!   5. only then promote the pending version to current, audited, and evict pooled
//!      connections made with the old secret.
//!
//!   On a failure at 3 or 4 the change is rolled back on the target where possible, the
//!   pending version is marked failed ([`RotationError::Failed`]) and the old version stays
//!   current. A crash between 3 and 5 leaves the pending version recorded; [`Rotator::reconcile`]
//!   logs in with the pending and the current secrets and promotes the one that works.
//! - **A task that chooses a weak password.** The administrator's [`RotationPolicy`] in the
//!   grant is the floor; the task can only ask for more (see [`policy`]).
//! - **A task that captures the new secret on its way to the target.** The set step feeds
//!   `user:password` to `chpasswd` on stdin of a session logged in as the *admin* credential.
//!   A task that runs commands as that account could have shaped its shell start-up (a
//!   `chpasswd` or `sudo` earlier on `PATH`, a shell function of that name) and would read
//!   the secret. So the admin handle must be an **admin credential** (vault flag `admin`),
//!   one a task's own commands never run under; anything else is [`RotationError::NotAdmin`]
//!   before anything is generated or stored. Defence in depth: every command on the target
//!   uses absolute paths (`/usr/bin/sudo`, `/bin/sh`, `/usr/sbin/chpasswd`, `/usr/sbin/runuser`,
//!   a fixed root `PATH` in the key script), which beats `PATH` tricks and functions named
//!   `sudo`/`chpasswd`; nothing can beat an account whose start-up files are hostile (bash
//!   even allows a function named `/usr/bin/sudo`), which is why the admin flag is the rule.
//! - **A secret leaking on the way.** Secrets go only into SSH authentication and the stdin
//!   of the command under sudo, never argv or environment; every message is redacted.
//!
//! Test-only fault injection: in debug builds, setting the environment variable
//! [`CRASH_ENV`] to a fault point's name (`rotation.after-set`) makes the process abort there,
//! so the tests can kill a server between "set on target" and "promote". Release builds
//! compile the check out.

mod engine;
pub mod policy;
mod reconcile;
mod secret;
mod steps;

pub use engine::Rotator;
pub use policy::{CharClass, RotationPolicy};
pub use secret::vault_credential;

use crate::audit::AuditLog;
use crate::redact::Redactor;
use crate::ssh::{SshError, SshPool};
use crate::targets::TargetStore;
use crate::vault::password::PolicyError;
use crate::vault::{Vault, VaultError};

/// Environment variable naming a fault point at which a debug build aborts (tests only).
pub const CRASH_ENV: &str = "WARDEN_TEST_CRASH_AT";

/// The fault point between "new secret set on the target" and "promoted in the vault".
pub const CRASH_AFTER_SET: &str = "rotation.after-set";

/// What the engine acts through. Cheap to clone.
#[derive(Clone)]
pub struct Backends {
    pub audit: AuditLog,
    pub vault: Vault,
    pub targets: TargetStore,
    pub ssh: SshPool,
}

/// A finished rotation: which version is now current. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotated {
    pub credential: String,
    pub target: String,
    pub version: u32,
}

/// What a reconcile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconciled {
    /// No pending version: nothing to do.
    NothingPending { current: Option<u32> },
    /// The pending `version` opens the account and is now current; `failed` were given up.
    PromotedPending { version: u32, failed: Vec<u32> },
    /// The current `version` opens the account and stays current; `failed` were given up.
    KeptCurrent { version: u32, failed: Vec<u32> },
}

/// Who asks for a rotation, for vault attribution and audit records.
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    pub run_id: Option<String>,
}

/// How a step on the target failed, as the guest must be able to tell it apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetFailure {
    Unreachable,
    ConnectionRefused,
    HostKeyMismatch,
    AuthFailed,
    Timeout,
    Remote,
}

/// Why a rotation or reconcile did not complete. Messages never hold a secret (they are
/// redacted where they quote the target).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    /// The admin handle is not an admin credential (see the module docs): refused before
    /// anything was generated or stored.
    #[error(
        "credential '{0}' is not an admin credential; a rotation's admin handle must be one \
         (a task may run commands as any other account, and so shape the session the new \
         secret would be typed into)"
    )]
    NotAdmin(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The effective password policy cannot be satisfied or is too weak.
    #[error("password policy: {0}")]
    Policy(#[from] PolicyError),
    /// Too many unfinished rotations of one credential.
    #[error("{0}")]
    Busy(String),
    /// A step on the target failed.
    #[error("{message}")]
    Target {
        kind: TargetFailure,
        message: String,
    },
    /// The rotation was given up after storing `version` as pending: it is marked failed
    /// and the old version stays current.
    #[error("{source}; version {version} marked failed, the old version stays current")]
    Failed {
        version: u32,
        source: Box<RotationError>,
    },
    /// The host failed (vault, audit); the detail went to the log.
    #[error("{0}")]
    Internal(String),
}

impl RotationError {
    /// The stable kind name, as the guest's `error` case names it.
    pub fn kind(&self) -> &'static str {
        match self {
            RotationError::NotAdmin(_) => "denied",
            RotationError::NotFound(_) => "not-found",
            RotationError::InvalidArgument(_) | RotationError::Policy(_) => "invalid-argument",
            RotationError::Busy(_) => "unavailable",
            RotationError::Target { kind, .. } => match kind {
                TargetFailure::Unreachable => "unreachable",
                TargetFailure::ConnectionRefused => "connection-refused",
                TargetFailure::HostKeyMismatch => "host-key-mismatch",
                TargetFailure::AuthFailed => "auth-failed",
                TargetFailure::Timeout => "timeout",
                TargetFailure::Remote => "remote",
            },
            RotationError::Failed { source, .. } => source.kind(),
            RotationError::Internal(_) => "internal",
        }
    }

    /// `kind: message`, for audit outcomes and the command line.
    pub fn describe(&self) -> String {
        format!("{}: {self}", self.kind())
    }

    fn target(kind: TargetFailure, message: String) -> Self {
        RotationError::Target { kind, message }
    }
}

/// A host-side failure whose detail goes to the log only.
fn internal(context: &str, error: impl std::fmt::Display) -> RotationError {
    tracing::warn!(%error, "{context}");
    RotationError::Internal(format!("{context} failed on the host"))
}

fn vault_error(context: &str, error: VaultError) -> RotationError {
    match error {
        VaultError::NotFound(name) => {
            RotationError::NotFound(format!("no credential named '{name}'"))
        }
        VaultError::TooManyPending(name) => RotationError::Busy(format!(
            "credential '{name}' has too many unfinished rotations; run `warden credential reconcile`"
        )),
        other => internal(context, other),
    }
}

/// An SSH-layer failure as a rotation error, its message redacted.
fn from_ssh(error: SshError, redactor: &Redactor) -> RotationError {
    let message = redactor.redact_str(&error.to_string());
    let kind = match error {
        SshError::Unreachable(_) => TargetFailure::Unreachable,
        SshError::ConnectionRefused(_) => TargetFailure::ConnectionRefused,
        SshError::HostKeyMismatch { .. } => TargetFailure::HostKeyMismatch,
        SshError::AuthFailed(_) => TargetFailure::AuthFailed,
        SshError::Timeout(_) | SshError::Cancelled => TargetFailure::Timeout,
        SshError::Remote(_) => TargetFailure::Remote,
        SshError::NotFound(_) => return RotationError::NotFound(message),
        SshError::InvalidArgument(_) => return RotationError::InvalidArgument(message),
        SshError::Internal(detail) => {
            tracing::warn!(detail = %redactor.redact_str(&detail), "ssh internal error");
            return RotationError::Internal("the host failed to complete the call".into());
        }
    };
    RotationError::target(kind, message)
}

/// Aborts the process at fault point `name` when [`CRASH_ENV`] names it. Debug builds only:
/// this exists for the crash-safety tests and is compiled out of release builds.
fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == name) {
        eprintln!("warden: test fault point {name} reached; aborting");
        std::process::abort();
    }
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_up_rotation_keeps_the_cause_kind_and_says_what_stays_current() {
        let cause = RotationError::target(TargetFailure::AuthFailed, "verification failed".into());
        let failed = RotationError::Failed {
            version: 3,
            source: Box::new(cause),
        };
        assert_eq!(failed.kind(), "auth-failed");
        assert_eq!(
            failed.describe(),
            "auth-failed: verification failed; version 3 marked failed, the old version stays current"
        );
        let denied = RotationError::NotAdmin("ops".into());
        assert_eq!(denied.kind(), "denied");
        assert!(
            denied
                .to_string()
                .contains("'ops' is not an admin credential")
        );
        let weak = RotationError::from(PolicyError::TooWeak(39));
        assert_eq!(weak.kind(), "invalid-argument");
        assert!(weak.to_string().starts_with("password policy: "));
    }
}
