//! `lockdown-user`: the incident-response lock. On each target it locks the user's password,
//! expires the account (which also stops key-based logins), kills every process the user
//! runs, then checks with `passwd -S` that the password really is locked.
//!
//! Every command runs under sudo as the credential's (admin) user. The user name is checked
//! against a strict pattern before any command is built, and is shell-quoted as well. Each
//! step is a single simple command so it behaves the same however the host wraps sudo.
//! The task is honest: a failed step is reported, and the remaining steps still run, because
//! a half-locked account is better than a silently untouched one.

use serde_json::{Value, json};
use warden_sdk::credentials::Credential;
use warden_sdk::shell::quote;
use warden_sdk::ssh::{ExecOptions, ExecOutput};
use warden_sdk::{Task, credentials, export_task, log, params, ssh};

/// `usermod`'s exit status for "the user does not exist".
const USERMOD_NO_SUCH_USER: i32 = 6;

struct LockdownUser;

impl Task for LockdownUser {
    fn run() -> Result<String, String> {
        let targets = params::text_list("targets").unwrap_or_default();
        if targets.is_empty() || targets.iter().any(|t| t.trim().is_empty()) {
            return Err("input `targets` must list at least one non-empty target".to_string());
        }
        let user = params::text("user").unwrap_or_default();
        validate_user(&user)?;
        let credential_name = params::text("credential").unwrap_or_default();
        if credential_name.trim().is_empty() {
            return Err("input `credential` is required".to_string());
        }
        let credential = credentials::acquire(&credential_name).map_err(|e| format!("{e}"))?;
        if credential.username() == user {
            return Err(format!(
                "refusing to lock `{user}`: it is the credential's own account"
            ));
        }
        log::info(&format!(
            "locking down `{user}` on {} target(s)",
            targets.len()
        ));

        let mut entries = Vec::with_capacity(targets.len());
        let mut done = 0usize;
        for target in &targets {
            let session = Session {
                target,
                credential: &credential,
                user: &user,
            };
            let report = session.lock_down();
            if report.complete() {
                done += 1;
                log::info(&format!(
                    "{target}: `{user}` locked, expired, sessions killed"
                ));
            } else {
                log::warn(&format!(
                    "{target}: incomplete: {}",
                    report.errors.join("; ")
                ));
            }
            entries.push(report.to_json(target));
        }
        let failed = targets.len() - done;
        log::info(&format!(
            "`{user}` fully locked on {done} target(s), incomplete on {failed}"
        ));
        Ok(
            json!({ "user": user, "targets": entries, "locked": done, "failed": failed })
                .to_string(),
        )
    }
}

export_task!(LockdownUser);

/// Accepts `^[a-z_][a-z0-9_-]{0,31}$` (the portable useradd pattern), except `root`.
fn validate_user(user: &str) -> Result<(), String> {
    if !warden_sdk::shell::is_user_name(user) {
        return Err("input `user` must match ^[a-z_][a-z0-9_-]{0,31}$".to_string());
    }
    if user == "root" {
        return Err("refusing to lock `root`".to_string());
    }
    Ok(())
}

/// What happened on one target.
#[derive(Debug, Default)]
struct Report {
    /// `passwd -S` shows the password locked (`L`, or `LK` on Red Hat systems).
    locked: bool,
    /// `usermod -e 1` succeeded.
    expired: bool,
    /// How many processes the user ran just before the kill, when `pgrep` could tell.
    processes_found: Option<u64>,
    /// `pkill` signalled the user's processes, or found none left to signal.
    sessions_killed: bool,
    errors: Vec<String>,
}

impl Report {
    fn complete(&self) -> bool {
        self.locked && self.expired && self.sessions_killed && self.errors.is_empty()
    }

    fn to_json(&self, target: &str) -> Value {
        json!({
            "target": target,
            "locked": self.locked,
            "expired": self.expired,
            "processes_found": self.processes_found,
            "sessions_killed": self.sessions_killed,
            "errors": self.errors,
        })
    }
}

/// One target's lockdown.
struct Session<'a> {
    target: &'a str,
    credential: &'a Credential,
    user: &'a str,
}

impl Session<'_> {
    fn lock_down(&self) -> Report {
        let mut report = Report::default();
        if let Err(fatal) = self.steps(&mut report) {
            report.errors.push(fatal);
        }
        report
    }

    /// Runs every step; returns `Err` only when the target cannot be worked on at all.
    fn steps(&self, report: &mut Report) -> Result<(), String> {
        let out = self.sudo("usermod -L")?;
        match out.exit_status {
            Some(0) => {}
            Some(USERMOD_NO_SUCH_USER) => {
                return Err(format!("user `{}` does not exist here", self.user));
            }
            _ => report.errors.push(out.failure("usermod -L")),
        }
        let out = self.sudo("usermod -e 1")?;
        report.expired = out.success();
        if !report.expired {
            report.errors.push(out.failure("usermod -e 1"));
        }
        let out = self.sudo("pgrep -c -u")?;
        report.processes_found = parse_pgrep_count(&out);
        if report.processes_found.is_none() {
            report.errors.push(out.failure("pgrep -c -u"));
        }
        let out = self.sudo("pkill -KILL -u")?;
        // pkill exits 1 when nothing matched: the user has no processes, which is the goal.
        report.sessions_killed = matches!(out.exit_status, Some(0 | 1));
        if !report.sessions_killed {
            report.errors.push(out.failure("pkill -KILL -u"));
        }
        let out = self.sudo("passwd -S")?;
        match password_status(&out) {
            Some(status) if status == "L" || status == "LK" => report.locked = true,
            Some(status) => report
                .errors
                .push(format!("passwd -S reports status `{status}`")),
            None => report.errors.push(out.failure("passwd -S")),
        }
        Ok(())
    }

    /// Runs `<command> '<user>'` under sudo. A host-level error (unreachable, denied, auth
    /// failed) is an `Err`: no later step could succeed either.
    fn sudo(&self, command: &str) -> Result<ExecOutput, String> {
        let line = format!("{command} {}", quote(self.user));
        ssh::exec(self.target, self.credential, &line, ExecOptions::sudo())
            .map_err(|e| format!("{line}: {e}"))
    }
}

/// `pgrep -c` prints the count; it exits 1 (still printing `0`) when nothing matched.
fn parse_pgrep_count(out: &ExecOutput) -> Option<u64> {
    match out.exit_status {
        Some(0 | 1) => out.stdout_text().trim().parse().ok(),
        _ => None,
    }
}

/// The second field of `passwd -S` (`alice L 2024-01-01 0 99999 7 -1`).
fn password_status(out: &ExecOutput) -> Option<String> {
    if !out.success() {
        return None;
    }
    out.stdout_text()
        .split_whitespace()
        .nth(1)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(status: Option<i32>, stdout: &str) -> ExecOutput {
        ExecOutput {
            exit_status: status,
            exit_signal: None,
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"some error\n".to_vec(),
            stdout_truncated: false,
            stderr_truncated: false,
        }
    }

    #[test]
    fn accepts_ordinary_user_names() {
        for ok in ["alice", "_svc", "web-deploy_2", &"a".repeat(32)] {
            assert!(validate_user(ok).is_ok(), "{ok} rejected");
        }
    }

    #[test]
    fn rejects_names_that_could_inject_or_are_root() {
        for bad in [
            "",
            "root",
            "Alice",
            "1abc",
            "-rf",
            "a b",
            "a;id",
            "a'b",
            "$(id)",
            &"a".repeat(33),
        ] {
            assert!(validate_user(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reads_locked_status_on_debian_and_red_hat() {
        let debian = output(Some(0), "alice L 01/01/2024 0 99999 7 -1\n");
        let redhat = output(
            Some(0),
            "alice LK 2024-01-01 0 99999 7 -1 (Password locked.)\n",
        );
        assert_eq!(password_status(&debian).as_deref(), Some("L"));
        assert_eq!(password_status(&redhat).as_deref(), Some("LK"));
        assert_eq!(
            password_status(&output(Some(0), "alice P 2024\n")).as_deref(),
            Some("P")
        );
        assert_eq!(password_status(&output(Some(1), "")), None);
    }

    #[test]
    fn pgrep_count_accepts_no_match_and_rejects_errors() {
        assert_eq!(parse_pgrep_count(&output(Some(0), "3\n")), Some(3));
        assert_eq!(parse_pgrep_count(&output(Some(1), "0\n")), Some(0));
        assert_eq!(parse_pgrep_count(&output(Some(2), "")), None);
        assert_eq!(parse_pgrep_count(&output(Some(0), "")), None);
    }

    #[test]
    fn failure_names_step_status_and_stderr() {
        let text = output(Some(1), "").failure("usermod -L");
        assert_eq!(text, "usermod -L exited with status 1: some error");
    }

    #[test]
    fn report_is_complete_only_when_every_step_worked() {
        let mut report = Report {
            locked: true,
            expired: true,
            sessions_killed: true,
            ..Report::default()
        };
        assert!(report.complete());
        report.errors.push("x".into());
        assert!(!report.complete());
    }
}
