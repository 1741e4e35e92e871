//! `provision-user`: onboarding one account on each target, idempotently.
//!
//! Per target: look the account up (`getent passwd`); create it with its home and shell if
//! missing (`useradd -m -s`), or fix its shell; add it to the groups it is missing
//! (`usermod -a -G`); make sure `~/.ssh` (0700) holds an `authorized_keys` (0600) with the
//! given key. A second run finds everything in place, changes nothing and says so.
//!
//! Every privileged command runs under sudo as the credential's (admin) user. Names are
//! checked against a strict pattern before any command is built, and shell-quoted as well.
//! Work inside the account's home runs *as the account* (`runuser -u USER --`): the home is
//! the user's to control, so root never follows a symlink they planted there (a root `cat`
//! or `install` through `~/.ssh -> /root/.ssh` would read or replace root's keys). Files
//! created that way are owned by the account without a `chown`.

use serde_json::{Value, json};
use warden_sdk::authorized_keys::{key_id, parse_public_key};
use warden_sdk::credentials::Credential;
use warden_sdk::shell::quote;
use warden_sdk::ssh::{ExecOptions, ExecOutput};
use warden_sdk::{Task, credentials, export_task, log, params, ssh};

/// Accounts below this uid are system accounts; this task refuses to touch them.
const MIN_UID: u32 = 1000;

/// Most groups one run may add: a list longer than this is a mistake, not an account.
const MAX_GROUPS: usize = 64;

/// Longest accepted shell path.
const MAX_SHELL_LEN: usize = 256;

struct ProvisionUser;

impl Task for ProvisionUser {
    fn run() -> Result<String, String> {
        let targets = params::text_list("targets").unwrap_or_default();
        if targets.is_empty() || targets.iter().any(|t| t.trim().is_empty()) {
            return Err("input `targets` must list at least one non-empty target".to_string());
        }
        let user = params::text("user").unwrap_or_default();
        validate_name("user", &user)?;
        let groups = params::text_list("groups").unwrap_or_default();
        if groups.len() > MAX_GROUPS {
            return Err(format!(
                "input `groups` lists more than {MAX_GROUPS} groups"
            ));
        }
        for group in &groups {
            validate_name("groups", group)?;
        }
        let shell = params::text("shell").unwrap_or_else(|| "/bin/sh".to_string());
        validate_shell(&shell)?;
        let key_line = params::text("public_key").unwrap_or_default();
        let key_line = key_line.trim();
        if !key_line.is_empty() {
            parse_public_key(key_line)?;
        }
        let credential_name = params::text("credential").unwrap_or_default();
        if credential_name.trim().is_empty() {
            return Err("input `credential` is required".to_string());
        }
        let credential = credentials::acquire(&credential_name).map_err(|e| format!("{e}"))?;
        if credential.username() == user {
            return Err(format!(
                "refusing to provision `{user}`: it is the credential's own account"
            ));
        }
        let wanted = Wanted {
            user: &user,
            groups: &groups,
            shell: &shell,
            key_line: (!key_line.is_empty()).then_some(key_line),
        };
        log::info(&format!(
            "provisioning `{user}` on {} target(s)",
            targets.len()
        ));

        let mut entries = Vec::with_capacity(targets.len());
        let (mut changed, mut unchanged, mut failed) = (0usize, 0usize, 0usize);
        for target in &targets {
            let host = Host {
                target,
                credential: &credential,
            };
            match host.provision(&wanted) {
                Ok(report) if report.changed() => {
                    changed += 1;
                    log::info(&format!("{target}: {}", report.summary()));
                    entries.push(report.to_json(target));
                }
                Ok(report) => {
                    unchanged += 1;
                    log::info(&format!("{target}: already provisioned, nothing changed"));
                    entries.push(report.to_json(target));
                }
                Err(error) => {
                    failed += 1;
                    log::warn(&format!("{target}: {error}"));
                    entries.push(json!({ "target": target, "error": error }));
                }
            }
        }
        log::info(&format!(
            "`{user}`: {changed} changed, {unchanged} unchanged, {failed} failed"
        ));
        Ok(
            json!({ "user": user, "targets": entries, "changed": changed,
            "unchanged": unchanged, "failed": failed })
            .to_string(),
        )
    }
}

export_task!(ProvisionUser);

/// What the account should look like.
struct Wanted<'a> {
    user: &'a str,
    groups: &'a [String],
    shell: &'a str,
    key_line: Option<&'a str>,
}

/// What one target needed.
#[derive(Debug, Default)]
struct Report {
    created: bool,
    shell_changed: bool,
    groups_added: Vec<String>,
    /// `added`, `present`, or `skipped` when no key was given.
    key: &'static str,
    /// Paths whose mode was wrong and was set (0700 / 0600).
    modes_fixed: Vec<String>,
}

impl Report {
    fn changed(&self) -> bool {
        self.created
            || self.shell_changed
            || !self.groups_added.is_empty()
            || self.key == "added"
            || !self.modes_fixed.is_empty()
    }

    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.created {
            parts.push("account created".to_string());
        }
        if self.shell_changed {
            parts.push("shell changed".to_string());
        }
        if !self.groups_added.is_empty() {
            parts.push(format!("added to {}", self.groups_added.join(",")));
        }
        if self.key == "added" {
            parts.push("key added".to_string());
        }
        if !self.modes_fixed.is_empty() {
            parts.push(format!("modes fixed on {}", self.modes_fixed.join(", ")));
        }
        parts.join("; ")
    }

    fn to_json(&self, target: &str) -> Value {
        json!({
            "target": target,
            "changed": self.changed(),
            "created": self.created,
            "shell_changed": self.shell_changed,
            "groups_added": self.groups_added,
            "key": self.key,
            "modes_fixed": self.modes_fixed,
        })
    }
}

/// An account as `getent passwd` shows it.
#[derive(Debug, PartialEq, Eq)]
struct Account {
    uid: u32,
    home: String,
    shell: String,
}

/// One target and the admin credential used on it.
struct Host<'a> {
    target: &'a str,
    credential: &'a Credential,
}

impl Host<'_> {
    fn provision(&self, wanted: &Wanted<'_>) -> Result<Report, String> {
        let user = wanted.user;
        let mut report = Report {
            key: "skipped",
            ..Report::default()
        };
        let account = match self.lookup(user)? {
            Some(account) => account,
            None => {
                let line = format!("useradd -m -s {} {}", quote(wanted.shell), quote(user));
                self.checked(&line, true, None)?;
                report.created = true;
                self.lookup(user)?
                    .ok_or_else(|| format!("`{user}` still missing after useradd"))?
            }
        };
        if account.uid < MIN_UID {
            return Err(format!(
                "refusing to change `{user}`: uid {} is a system account",
                account.uid
            ));
        }
        if account.shell != wanted.shell {
            let line = format!("usermod -s {} {}", quote(wanted.shell), quote(user));
            self.checked(&line, true, None)?;
            report.shell_changed = true;
        }
        let missing = self.missing_groups(user, wanted.groups)?;
        if !missing.is_empty() {
            let line = format!(
                "usermod -a -G {} {}",
                quote(&missing.join(",")),
                quote(user)
            );
            self.checked(&line, true, None)?;
            report.groups_added = missing;
        }
        if let Some(key_line) = wanted.key_line {
            self.install_key(user, &account.home, key_line, &mut report)?;
        }
        Ok(report)
    }

    /// The account, or `None` when `getent` says it does not exist (exit status 2).
    fn lookup(&self, user: &str) -> Result<Option<Account>, String> {
        let line = format!("getent passwd {}", quote(user));
        let out = self.exec(&line, false, None)?;
        match out.exit_status {
            Some(0) => parse_passwd(&out.stdout_text(), user).map(Some),
            Some(2) => Ok(None),
            _ => Err(out.failure(&line)),
        }
    }

    fn missing_groups(&self, user: &str, groups: &[String]) -> Result<Vec<String>, String> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.checked(&format!("id -nG {}", quote(user)), false, None)?;
        let have: Vec<String> = out
            .stdout_text()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut missing: Vec<String> = Vec::new();
        for group in groups {
            if !have.contains(group) && !missing.contains(group) {
                missing.push(group.clone());
            }
        }
        Ok(missing)
    }

    /// Makes sure `~/.ssh` is a 0700 directory and `~/.ssh/authorized_keys` a 0600 file
    /// holding the key; all as the account itself.
    fn install_key(
        &self,
        user: &str,
        home: &str,
        key_line: &str,
        report: &mut Report,
    ) -> Result<(), String> {
        let dir = format!("{}/.ssh", home.trim_end_matches('/'));
        let file = format!("{dir}/authorized_keys");
        let as_user = format!("runuser -u {} --", quote(user));
        let (dir_state, file_state) = self.stat_pair(&as_user, &dir, &file)?;
        match dir_state {
            None => {
                self.checked(
                    &format!("{as_user} mkdir -m 700 -- {}", quote(&dir)),
                    true,
                    None,
                )?;
            }
            Some((mode, kind)) if kind == "directory" => {
                if mode != "700" {
                    self.checked(
                        &format!("{as_user} chmod 700 -- {}", quote(&dir)),
                        true,
                        None,
                    )?;
                    report.modes_fixed.push(dir.clone());
                }
            }
            Some((_, kind)) => return Err(format!("{dir} is a {kind}, not a directory")),
        }
        let existing = match &file_state {
            None => Vec::new(),
            Some((_, kind)) if kind == "regular file" || kind == "regular empty file" => {
                let line = format!("{as_user} cat -- {}", quote(&file));
                self.checked(&line, true, None)?.stdout
            }
            Some((_, kind)) => return Err(format!("{file} is a {kind}, not a regular file")),
        };
        match with_key(&existing, key_line) {
            Some(updated) => {
                // `tee` reads the stdin it inherits; a program that reopens `/dev/stdin` as the
                // account is refused (the channel's pipe belongs to the admin session). Its
                // copy on stdout (public keys) is ignored: the command is plain argv words,
                // with no redirection, so an argv grant can allow it.
                let line = format!("{as_user} tee -- {}", quote(&file));
                self.checked(&line, true, Some(updated))?;
                self.checked(
                    &format!("{as_user} chmod 600 -- {}", quote(&file)),
                    true,
                    None,
                )?;
                report.key = "added";
            }
            None => {
                report.key = "present";
                if file_state.is_some_and(|(mode, _)| mode != "600") {
                    self.checked(
                        &format!("{as_user} chmod 600 -- {}", quote(&file)),
                        true,
                        None,
                    )?;
                    report.modes_fixed.push(file);
                }
            }
        }
        Ok(())
    }

    /// The mode and type of `dir` and `file` (each `None` when missing), as the account.
    fn stat_pair(
        &self,
        as_user: &str,
        dir: &str,
        file: &str,
    ) -> Result<(Option<(String, String)>, Option<(String, String)>), String> {
        let stat = |path: &str| -> Result<Option<(String, String)>, String> {
            let line = format!("{as_user} stat -c '%a %F' -- {}", quote(path));
            let out = self.exec(&line, true, None)?;
            match out.exit_status {
                Some(0) => parse_stat(&out.stdout_text())
                    .map(Some)
                    .ok_or_else(|| format!("{line}: unexpected output")),
                // stat exits 1 for a missing path (or one the account cannot see).
                Some(1) => Ok(None),
                _ => Err(out.failure(&line)),
            }
        };
        let dir_state = stat(dir)?;
        let file_state = if dir_state.is_some() {
            stat(file)?
        } else {
            None
        };
        Ok((dir_state, file_state))
    }

    /// Runs `line`; a non-zero exit is an error naming the step.
    fn checked(
        &self,
        line: &str,
        sudo: bool,
        stdin: Option<Vec<u8>>,
    ) -> Result<ExecOutput, String> {
        let out = self.exec(line, sudo, stdin)?;
        if out.success() {
            Ok(out)
        } else {
            Err(out.failure(line))
        }
    }

    /// Runs `line` (under sudo if asked). A host-level error (unreachable, denied, auth
    /// failed) is an `Err`.
    fn exec(&self, line: &str, sudo: bool, stdin: Option<Vec<u8>>) -> Result<ExecOutput, String> {
        let mut options = if sudo {
            ExecOptions::sudo()
        } else {
            ExecOptions::default()
        };
        if let Some(bytes) = stdin {
            options = options.with_stdin(bytes);
        }
        ssh::exec(self.target, self.credential, line, options).map_err(|e| format!("{line}: {e}"))
    }
}

/// Parses `name:x:uid:gid:gecos:home:shell` for `user`.
fn parse_passwd(text: &str, user: &str) -> Result<Account, String> {
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
    let home = fields[5].to_string();
    if !is_safe_path(&home) {
        return Err(format!("`{user}` has an unusable home directory {home:?}"));
    }
    Ok(Account {
        uid,
        home,
        shell: fields[6].to_string(),
    })
}

/// Parses `stat -c '%a %F'`: the octal mode and the file type (`directory`, `regular file`).
fn parse_stat(text: &str) -> Option<(String, String)> {
    let (mode, kind) = text.trim().split_once(' ')?;
    mode.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| (mode.to_string(), kind.to_string()))
}

/// Accepts `^[a-z_][a-z0-9_-]{0,31}$` (the portable useradd pattern), except `root`.
fn validate_name(input: &str, name: &str) -> Result<(), String> {
    if !warden_sdk::shell::is_user_name(name) {
        return Err(format!(
            "input `{input}`: {name:?} must match ^[a-z_][a-z0-9_-]{{0,31}}$"
        ));
    }
    if name == "root" {
        return Err(format!("input `{input}`: refusing `root`"));
    }
    Ok(())
}

fn validate_shell(shell: &str) -> Result<(), String> {
    if shell.len() > MAX_SHELL_LEN || !shell.starts_with('/') || !is_safe_path(shell) {
        return Err("input `shell` must be an absolute path of A-Z a-z 0-9 / . _ -".to_string());
    }
    Ok(())
}

/// An absolute path of plain characters, without `.` or `..` components.
fn is_safe_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
        && !path.split('/').any(|part| part == "." || part == "..")
}

/// The file with the key appended, or `None` when a (non-comment) line already holds it.
fn with_key(existing: &[u8], key_line: &str) -> Option<Vec<u8>> {
    let key = key_id(key_line)?;
    let present = existing
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter(|line| !line.trim_start().starts_with('#'))
        .any(|line| key_id(line) == Some(key));
    if present {
        return None;
    }
    let mut updated = existing.to_vec();
    if !updated.is_empty() && !updated.ends_with(b"\n") {
        updated.push(b'\n');
    }
    updated.extend_from_slice(key_line.as_bytes());
    updated.push(b'\n');
    Some(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGs2bWlrZXlrZXlrZXlrZXlrZXlrZXlrZXk alice@laptop";

    #[test]
    fn accepts_ordinary_names_and_rejects_injection_and_root() {
        for ok in ["alice", "_svc", "web-deploy_2", &"a".repeat(32)] {
            assert!(validate_name("user", ok).is_ok(), "{ok} rejected");
        }
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
            "a\nb",
            &"a".repeat(33),
        ] {
            assert!(validate_name("user", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shell_must_be_a_plain_absolute_path() {
        assert!(validate_shell("/bin/bash").is_ok());
        for bad in [
            "bash",
            "/bin/sh; id",
            "/bin/'sh'",
            "/bin/../sh",
            "/bin/s h",
            "",
        ] {
            assert!(validate_shell(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_passwd_entries_and_refuses_odd_homes() {
        let account = parse_passwd("alice:x:1001:1001:Alice:/home/alice:/bin/bash\n", "alice");
        assert_eq!(
            account.unwrap(),
            Account {
                uid: 1001,
                home: "/home/alice".into(),
                shell: "/bin/bash".into()
            }
        );
        assert!(parse_passwd("alice:x:1001:1001::/home/a'b:/bin/sh\n", "alice").is_err());
        assert!(parse_passwd("bob:x:1:1::/home/bob:/bin/sh\n", "alice").is_err());
        assert!(parse_passwd("alice:x:zz:1::/home/alice:/bin/sh\n", "alice").is_err());
    }

    #[test]
    fn parses_stat_output() {
        assert_eq!(
            parse_stat("700 directory\n"),
            Some(("700".into(), "directory".into()))
        );
        assert_eq!(
            parse_stat("600 regular file\n"),
            Some(("600".into(), "regular file".into()))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn key_is_added_once() {
        let once = with_key(b"", KEY).unwrap();
        assert_eq!(once, format!("{KEY}\n").into_bytes());
        assert!(with_key(&once, KEY).is_none());
        let other = b"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB bob";
        let both = with_key(other, KEY).unwrap();
        assert!(both.starts_with(b"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB bob\n"));
        assert!(with_key(format!("# {KEY}\n").as_bytes(), KEY).is_some());
    }

    #[test]
    fn report_counts_as_changed_only_when_something_was_done() {
        let mut report = Report {
            key: "present",
            ..Report::default()
        };
        assert!(!report.changed());
        report.groups_added.push("adm".into());
        assert!(report.changed());
    }
}
