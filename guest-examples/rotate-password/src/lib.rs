//! `rotate-password`: rotates one account on several targets. Each target has its own vault
//! credential for the account (`credential` with `{target}` replaced, e.g. `root-{target}`),
//! so every host ends up with its own fresh secret.
//!
//! The task never sees a password or key: [`rotation::rotate`] asks the host to generate the
//! new secret, set it on the target as the admin credential, verify it with a fresh login
//! and only then make it current in the vault. One target failing (unreachable, sudo
//! refused, verification failed) is reported and the others still run; the task itself
//! fails only for bad inputs.

use serde_json::{Value, json};
use warden_sdk::rotation::{self, PasswordPolicy};
use warden_sdk::{Error, Task, credentials, export_task, log, params};

/// Most targets one run rotates: bounds the run's length and its report.
const MAX_TARGETS: usize = 500;

/// The placeholder replaced by each target's name in credential names.
const PLACEHOLDER: &str = "{target}";

struct RotatePassword;

impl Task for RotatePassword {
    fn run() -> Result<String, String> {
        let targets = params::text_list("targets").unwrap_or_default();
        if targets.is_empty() || targets.iter().any(|t| t.trim().is_empty()) {
            return Err("input `targets` must list at least one non-empty target".to_string());
        }
        if targets.len() > MAX_TARGETS {
            return Err(format!("at most {MAX_TARGETS} targets per run"));
        }
        let credential = params::text("credential").unwrap_or_default();
        if credential.trim().is_empty() {
            return Err("input `credential` is required".to_string());
        }
        let admin = params::text("admin").unwrap_or_default();
        let policy = policy_from_inputs()?;
        log::info(&format!(
            "rotating `{credential}` on {} target(s)",
            targets.len()
        ));

        let mut entries = Vec::with_capacity(targets.len());
        let mut rotated = 0usize;
        for target in &targets {
            let account = credential.replace(PLACEHOLDER, target);
            let admin = match admin.as_str() {
                "" => account.clone(),
                pattern => pattern.replace(PLACEHOLDER, target),
            };
            let entry = match rotate_one(target, &account, &admin, &policy) {
                Ok(version) => {
                    rotated += 1;
                    log::info(&format!(
                        "{target}: `{account}` rotated, version {version} current"
                    ));
                    json!({ "target": target, "credential": account, "status": "ok", "version": version })
                }
                Err(e) => {
                    let (kind, message) = error_parts(&e);
                    log::warn(&format!(
                        "{target}: `{account}` not rotated: {kind}: {message}"
                    ));
                    json!({
                        "target": target,
                        "credential": account,
                        "status": "error",
                        "error": kind,
                        "message": message,
                    })
                }
            };
            entries.push(entry);
        }
        let failed = targets.len() - rotated;
        log::info(&format!(
            "rotated on {rotated} target(s), failed on {failed}"
        ));
        let report: Value = json!({ "rotated": rotated, "failed": failed, "targets": entries });
        Ok(report.to_string())
    }
}

export_task!(RotatePassword);

/// Acquires the two handles and rotates; the new current version on success.
fn rotate_one(
    target: &str,
    account: &str,
    admin: &str,
    policy: &PasswordPolicy,
) -> Result<u32, Error> {
    let account_handle = credentials::acquire(account)?;
    let rotation = if admin == account {
        rotation::rotate(&account_handle, target, &account_handle, policy)?
    } else {
        let admin_handle = credentials::acquire(admin)?;
        rotation::rotate(&account_handle, target, &admin_handle, policy)?
    };
    Ok(rotation.version)
}

fn policy_from_inputs() -> Result<PasswordPolicy, String> {
    let length = params::integer("length").unwrap_or(24);
    let length = u32::try_from(length)
        .map_err(|_| "input `length` must be a positive number".to_string())?;
    let mut policy = PasswordPolicy::default()
        .with_length(length)
        .excluding(&params::text("exclude").unwrap_or_default());
    if !params::flag("symbols").unwrap_or(true) {
        policy = policy.without_symbols();
    }
    Ok(policy)
}

/// The error's case name and message.
fn error_parts(e: &Error) -> (&'static str, &str) {
    match e {
        Error::Denied(m) => ("denied", m),
        Error::NotFound(m) => ("not-found", m),
        Error::InvalidArgument(m) => ("invalid-argument", m),
        Error::Unavailable(m) => ("unavailable", m),
        Error::Unreachable(m) => ("unreachable", m),
        Error::ConnectionRefused(m) => ("connection-refused", m),
        Error::HostKeyMismatch(m) => ("host-key-mismatch", m),
        Error::AuthFailed(m) => ("auth-failed", m),
        Error::Timeout(m) => ("timeout", m),
        Error::Remote(m) => ("remote", m),
        Error::Internal(m) => ("internal", m),
    }
}
