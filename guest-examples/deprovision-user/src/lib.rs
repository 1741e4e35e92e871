//! `deprovision-user`: offboarding one account on each target. Each step is chosen by an
//! input and runs in this order: lock (`usermod -L -e 1`: no password, no key login), remove
//! the authorized keys, kill every process of the account (its sessions included), remove
//! the account (`userdel`, with `-r` its home too).
//!
//! An account that does not exist is reported `absent` and left alone, so a second run is
//! harmless. Root, system accounts (uid below 1000) and the credential's own account are
//! refused. Every privileged command runs under sudo; the name is checked against a strict
//! pattern and shell-quoted. Keys are removed *as the account* (`runuser -u USER -- rm`), so
//! a symlink the user planted in their home cannot make root delete another file. A failed
//! step is reported and later steps still run (except removing an account whose processes
//! could not be killed, which `userdel` would refuse anyway).

use serde_json::{Value, json};
use warden_sdk::credentials::Credential;
use warden_sdk::shell::quote;
use warden_sdk::ssh::{ExecOptions, ExecOutput};
use warden_sdk::{Task, credentials, export_task, log, params, ssh};

/// Accounts below this uid are system accounts; this task refuses to touch them.
const MIN_UID: u32 = 1000;

/// `pkill` rounds before giving up on processes that keep appearing (a fork loop).
const MAX_KILL_ROUNDS: usize = 5;

struct DeprovisionUser;

/// Which steps to run.
#[derive(Clone, Copy, Debug)]
struct Steps {
    lock: bool,
    remove_keys: bool,
    kill_sessions: bool,
    remove_account: bool,
    remove_home: bool,
}

impl Task for DeprovisionUser {
    fn run() -> Result<String, String> {
        let targets = params::text_list("targets").unwrap_or_default();
        if targets.is_empty() || targets.iter().any(|t| t.trim().is_empty()) {
            return Err("input `targets` must list at least one non-empty target".to_string());
        }
        let user = params::text("user").unwrap_or_default();
        validate_user(&user)?;
        let steps = Steps {
            lock: params::flag("lock").unwrap_or(true),
            remove_keys: params::flag("remove_keys").unwrap_or(true),
            kill_sessions: params::flag("kill_sessions").unwrap_or(true),
            remove_account: params::flag("remove_account").unwrap_or(false),
            remove_home: params::flag("remove_home").unwrap_or(false),
        };
        if steps.remove_home && !steps.remove_account {
            return Err("input `remove_home` needs `remove_account`".to_string());
        }
        let credential_name = params::text("credential").unwrap_or_default();
        if credential_name.trim().is_empty() {
            return Err("input `credential` is required".to_string());
        }
        let credential = credentials::acquire(&credential_name).map_err(|e| format!("{e}"))?;
        if credential.username() == user {
            return Err(format!(
                "refusing to deprovision `{user}`: it is the credential's own account"
            ));
        }
        log::info(&format!(
            "deprovisioning `{user}` on {} target(s): {steps:?}",
            targets.len()
        ));
        let mut entries = Vec::with_capacity(targets.len());
        let (mut done, mut absent, mut failed) = (0usize, 0usize, 0usize);
        for target in &targets {
            let host = Host {
                target,
                credential: &credential,
                user: &user,
            };
            let report = host.deprovision(steps);
            if report.absent {
                absent += 1;
                log::info(&format!("{target}: `{user}` does not exist; nothing to do"));
            } else if report.errors.is_empty() {
                done += 1;
                log::info(&format!("{target}: `{user}` deprovisioned"));
            } else {
                failed += 1;
                log::warn(&format!(
                    "{target}: incomplete: {}",
                    report.errors.join("; ")
                ));
            }
            entries.push(report.to_json(target));
        }
        log::info(&format!(
            "`{user}`: deprovisioned on {done}, absent on {absent}, incomplete on {failed}"
        ));
        Ok(
            json!({ "user": user, "targets": entries, "deprovisioned": done,
            "absent": absent, "failed": failed })
            .to_string(),
        )
    }
}

export_task!(DeprovisionUser);

/// What happened on one target.
#[derive(Debug, Default)]
struct Report {
    absent: bool,
    locked: bool,
    /// Key files removed.
    keys_removed: Vec<String>,
    /// Processes found running as the account before the first kill.
    processes_found: Option<u64>,
    sessions_killed: bool,
    account_removed: bool,
    errors: Vec<String>,
}

impl Report {
    fn to_json(&self, target: &str) -> Value {
        json!({
            "target": target,
            "absent": self.absent,
            "locked": self.locked,
            "keys_removed": self.keys_removed,
            "processes_found": self.processes_found,
            "sessions_killed": self.sessions_killed,
            "account_removed": self.account_removed,
            "errors": self.errors,
        })
    }
}

/// One target, its admin credential and the account to remove.
struct Host<'a> {
    target: &'a str,
    credential: &'a Credential,
    user: &'a str,
}

impl Host<'_> {
    fn deprovision(&self, steps: Steps) -> Report {
        let mut report = Report::default();
        if let Err(fatal) = self.steps(steps, &mut report) {
            report.errors.push(fatal);
        }
        report
    }

    /// Runs the chosen steps; `Err` only when the target cannot be worked on at all.
    fn steps(&self, steps: Steps, report: &mut Report) -> Result<(), String> {
        let Some((uid, home)) = self.lookup()? else {
            report.absent = true;
            return Ok(());
        };
        if uid < MIN_UID {
            return Err(format!(
                "refusing to deprovision `{}`: uid {uid} is a system account",
                self.user
            ));
        }
        let user = quote(self.user);
        if steps.lock {
            match self.sudo(&format!("usermod -L -e 1 {user}")) {
                Ok(_) => report.locked = true,
                Err(e) => report.errors.push(e),
            }
        }
        if steps.remove_keys {
            let dir = format!("{}/.ssh", home.trim_end_matches('/'));
            let line = format!(
                "runuser -u {user} -- rm -f -v -- {} {}",
                quote(&format!("{dir}/authorized_keys")),
                quote(&format!("{dir}/authorized_keys2"))
            );
            match self.sudo(&line) {
                Ok(out) => report.keys_removed = removed_paths(&out.stdout_text()),
                Err(e) => report.errors.push(e),
            }
        }
        if steps.kill_sessions {
            match self.kill_all() {
                Ok(found) => {
                    report.processes_found = Some(found);
                    report.sessions_killed = true;
                }
                Err(e) => report.errors.push(e),
            }
        }
        if steps.remove_account {
            if steps.kill_sessions && !report.sessions_killed {
                report
                    .errors
                    .push("account not removed: its processes are still running".to_string());
                return Ok(());
            }
            let flags = if steps.remove_home { "-r " } else { "" };
            match self.sudo(&format!("userdel {flags}{user}")) {
                Ok(_) if self.lookup()?.is_none() => report.account_removed = true,
                Ok(_) => report
                    .errors
                    .push("userdel succeeded but the account still exists".to_string()),
                Err(e) => report.errors.push(e),
            }
        }
        Ok(())
    }

    /// Kills the account's processes until none is left (bounded); returns how many ran
    /// before the first kill.
    fn kill_all(&self) -> Result<u64, String> {
        let user = quote(self.user);
        let found = self.count_processes()?;
        let mut remaining = found;
        for _ in 0..MAX_KILL_ROUNDS {
            if remaining == 0 {
                return Ok(found);
            }
            let line = format!("pkill -KILL -u {user}");
            let out = self.exec(&line, true)?;
            // pkill exits 1 when nothing matched: the processes ended meanwhile.
            if !matches!(out.exit_status, Some(0 | 1)) {
                return Err(out.failure(&line));
            }
            remaining = self.count_processes()?;
        }
        if remaining == 0 {
            Ok(found)
        } else {
            Err(format!(
                "{remaining} process(es) still running after {MAX_KILL_ROUNDS} kills"
            ))
        }
    }

    /// The account's live processes. Zombies are not counted: they are already dead, hold
    /// no session, and vanish when their parent (or init) reaps them.
    fn count_processes(&self) -> Result<u64, String> {
        let line = format!("ps -o stat= -u {}", quote(self.user));
        let out = self.exec(&line, true)?;
        // ps exits 1 (printing nothing) when the account runs no process.
        match out.exit_status {
            Some(0 | 1) => Ok(count_live(&out.stdout_text())),
            _ => Err(out.failure(&line)),
        }
    }

    /// The account's uid and home, or `None` when it does not exist.
    fn lookup(&self) -> Result<Option<(u32, String)>, String> {
        let line = format!("getent passwd {}", quote(self.user));
        let out = self.exec(&line, false)?;
        match out.exit_status {
            Some(0) => parse_passwd(&out.stdout_text(), self.user).map(Some),
            Some(2) => Ok(None),
            _ => Err(out.failure(&line)),
        }
    }

    /// Runs `line` under sudo; a non-zero exit is an error naming the step.
    fn sudo(&self, line: &str) -> Result<ExecOutput, String> {
        let out = self.exec(line, true)?;
        if out.success() {
            Ok(out)
        } else {
            Err(out.failure(line))
        }
    }

    fn exec(&self, line: &str, sudo: bool) -> Result<ExecOutput, String> {
        let options = if sudo {
            ExecOptions::sudo()
        } else {
            ExecOptions::default()
        };
        ssh::exec(self.target, self.credential, line, options).map_err(|e| format!("{line}: {e}"))
    }
}

/// Parses `name:x:uid:gid:gecos:home:shell` for `user` into its uid and home.
fn parse_passwd(text: &str, user: &str) -> Result<(u32, String), String> {
    let line = text
        .lines()
        .find(|l| l.split(':').next() == Some(user))
        .ok_or_else(|| format!("getent printed no entry for `{user}`"))?;
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() != 7 {
        return Err(format!("malformed passwd entry for `{user}`"));
    }
    let uid = fields[2]
        .parse()
        .map_err(|_| format!("malformed uid for `{user}`"))?;
    let home = fields[5];
    let plain = home.starts_with('/')
        && home
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
        && !home.split('/').any(|part| part == "." || part == "..");
    if !plain {
        return Err(format!("`{user}` has an unusable home directory {home:?}"));
    }
    Ok((uid, home.to_string()))
}

/// Counts the `ps -o stat=` lines of processes that are not zombies (state `Z`).
fn count_live(stat_lines: &str) -> u64 {
    let live = stat_lines
        .lines()
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.starts_with('Z'))
        .count();
    u64::try_from(live).unwrap_or(u64::MAX)
}

/// The paths `rm -v` reports removing (`removed '/home/a/.ssh/authorized_keys'`).
fn removed_paths(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("removed "))
        .map(|p| p.trim_matches(|c| c == '\'' || c == '"').to_string())
        .collect()
}

/// Accepts `^[a-z_][a-z0-9_-]{0,31}$` (the portable useradd pattern), except `root`.
fn validate_user(user: &str) -> Result<(), String> {
    if !warden_sdk::shell::is_user_name(user) {
        return Err("input `user` must match ^[a-z_][a-z0-9_-]{0,31}$".to_string());
    }
    if user == "root" {
        return Err("refusing to deprovision `root`".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(validate_user("alice").is_ok());
    }

    #[test]
    fn parses_passwd_and_refuses_odd_homes() {
        assert_eq!(
            parse_passwd("al:x:1001:1001::/home/al:/bin/sh\n", "al").unwrap(),
            (1001, "/home/al".to_string())
        );
        assert!(parse_passwd("al:x:1001:1001::/home/a;b:/bin/sh\n", "al").is_err());
        assert!(parse_passwd("al:x:1001:1001::/home/../etc:/bin/sh\n", "al").is_err());
    }

    #[test]
    fn counts_live_processes_but_not_zombies() {
        assert_eq!(count_live("Ss\nS+\nZ\n R\n"), 3);
        assert_eq!(count_live(""), 0);
    }

    #[test]
    fn reads_removed_paths_from_rm_verbose() {
        let out = "removed '/home/al/.ssh/authorized_keys'\n";
        assert_eq!(removed_paths(out), vec!["/home/al/.ssh/authorized_keys"]);
        assert!(removed_paths("").is_empty());
    }
}
