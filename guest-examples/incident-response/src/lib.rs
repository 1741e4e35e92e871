//! `incident-response`: what a detection system's event starts through a trigger. On each
//! target the event names it locks the user's password, expires the account (stopping key
//! logins too), kills every process the user runs, then collects the last lines of the
//! authentication log that mention the user (with the whole tail's SHA-256, so the run's
//! audit trail pins what was read).
//!
//! Every command runs under sudo as the credential's (admin) user. The user name is checked
//! against a strict pattern (and `root` refused) before any command is built, and quoted as
//! well; the log path must be absolute. A failed step is reported and the next still runs:
//! a half-contained incident is better than a silently untouched one.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warden_sdk::credentials::Credential;
use warden_sdk::shell::quote;
use warden_sdk::ssh::{ExecOptions, ExecOutput};
use warden_sdk::{Task, credentials, export_task, log, params, ssh};

/// Most log lines about the user kept per target in the result.
const MAX_LINES: usize = 50;

struct IncidentResponse;

impl Task for IncidentResponse {
    fn run() -> Result<String, String> {
        let targets = params::text_list("targets").unwrap_or_default();
        if targets.is_empty() || targets.iter().any(|t| t.trim().is_empty()) {
            return Err("input `targets` must list at least one non-empty target".to_string());
        }
        let user = params::text("user").unwrap_or_default();
        if !warden_sdk::shell::is_user_name(&user) || user == "root" {
            return Err("input `user` must match ^[a-z_][a-z0-9_-]{0,31}$ and not be root".into());
        }
        let auth_log = params::text("auth_log").unwrap_or_else(|| "/var/log/auth.log".into());
        if !auth_log.starts_with('/') || auth_log.contains('\0') {
            return Err("input `auth_log` must be an absolute path".to_string());
        }
        let credential = params::text("credential").unwrap_or_default();
        let credential = credentials::acquire(&credential).map_err(|e| format!("{e}"))?;
        if credential.username() == user {
            return Err(format!("refusing to lock `{user}`: it is the credential's own account"));
        }
        log::info(&format!("incident: containing `{user}` on {} target(s)", targets.len()));
        let mut reports = Vec::new();
        let mut contained = 0;
        for target in &targets {
            let step = Step { target, credential: &credential, user: &user };
            let report = step.respond(&auth_log);
            if report["errors"].as_array().is_some_and(|e| e.is_empty()) {
                contained += 1;
            }
            reports.push(report);
        }
        log::info(&format!("`{user}` contained on {contained} of {} target(s)", targets.len()));
        Ok(json!({ "user": user, "contained": contained, "targets": reports }).to_string())
    }
}

export_task!(IncidentResponse);

struct Step<'a> {
    target: &'a str,
    credential: &'a Credential,
    user: &'a str,
}

impl Step<'_> {
    fn respond(&self, auth_log: &str) -> Value {
        let mut errors = Vec::new();
        let mut ok = |command: &str, out: Result<ExecOutput, String>, allowed: &[i32]| match out {
            Ok(o) if o.exit_status.is_some_and(|s| allowed.contains(&s)) => true,
            Ok(o) => {
                errors.push(o.failure(command));
                false
            }
            Err(e) => {
                errors.push(e);
                false
            }
        };
        let locked = ok("usermod -L", self.sudo("usermod -L", self.user), &[0]);
        let expired = ok("usermod -e 1", self.sudo("usermod -e 1", self.user), &[0]);
        // pkill exits 1 when the user has no process left: the goal either way.
        let killed = ok("pkill -KILL -u", self.sudo("pkill -KILL -u", self.user), &[0, 1]);
        let (lines, sha256) = match self.sudo("tail -n 2000", auth_log) {
            Ok(out) if out.success() => {
                let text = out.stdout_text();
                let about: Vec<String> = text
                    .lines()
                    .filter(|l| l.contains(self.user))
                    .rev()
                    .take(MAX_LINES)
                    .map(str::to_string)
                    .collect();
                (about, Some(hex(&Sha256::digest(text.as_bytes()))))
            }
            Ok(out) => {
                errors.push(out.failure("tail -n 2000"));
                (Vec::new(), None)
            }
            Err(e) => {
                errors.push(e);
                (Vec::new(), None)
            }
        };
        json!({
            "target": self.target,
            "locked": locked,
            "expired": expired,
            "sessions_killed": killed,
            "auth_log_sha256": sha256,
            "auth_lines": lines,
            "errors": errors,
        })
    }

    /// `sudo <command> '<arg>'` on the target.
    fn sudo(&self, command: &str, arg: &str) -> Result<ExecOutput, String> {
        let line = format!("{command} {}", quote(arg));
        ssh::exec(self.target, self.credential, &line, ExecOptions::sudo())
            .map_err(|e| format!("{}: {line}: {e}", self.target))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
