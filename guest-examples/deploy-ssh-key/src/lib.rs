//! `deploy-ssh-key`: makes sure one public key is in an `authorized_keys` file on each
//! target, idempotently.
//!
//! Per target: create the file's directory (`mkdir -p -m 700`), download the file (a missing
//! file counts as empty), and if no line already holds the same key (same type and base64
//! blob; comments and options are ignored) append the key line and upload the file back with
//! mode 0600. A second run changes nothing and reports `unchanged`.

use serde_json::json;
use warden_sdk::authorized_keys::{KeyId, key_id, parse_public_key};
use warden_sdk::credentials::Credential;
use warden_sdk::shell::quote;
use warden_sdk::ssh::ExecOptions;
use warden_sdk::{Error, Task, credentials, export_task, log, params, ssh, transfer};

/// Permission bits of the uploaded file: sshd's StrictModes rejects group/world-writable.
const FILE_MODE: u32 = 0o600;

struct DeploySshKey;

impl Task for DeploySshKey {
    fn run() -> Result<String, String> {
        let targets = params::text_list("targets").unwrap_or_default();
        if targets.is_empty() || targets.iter().any(|t| t.trim().is_empty()) {
            return Err("input `targets` must list at least one non-empty target".to_string());
        }
        let public_key = params::text("public_key").unwrap_or_default();
        let key_line = public_key.trim();
        let key = parse_public_key(key_line)?;
        let path = params::text("path").unwrap_or_default();
        let dir = parent_dir(&path)?;
        let credential_name = params::text("credential").unwrap_or_default();
        if credential_name.trim().is_empty() {
            return Err("input `credential` is required".to_string());
        }
        let credential = credentials::acquire(&credential_name).map_err(|e| format!("{e}"))?;
        log::info(&format!(
            "deploying a {} key to {path} on {} target(s)",
            key.0,
            targets.len()
        ));

        let mut entries = Vec::with_capacity(targets.len());
        let (mut added, mut unchanged, mut failed) = (0usize, 0usize, 0usize);
        for target in &targets {
            let step = Step {
                target,
                credential: &credential,
                path: &path,
                dir,
            };
            match step.deploy(key_line, &key) {
                Ok(status) => {
                    if status == "added" {
                        added += 1
                    } else {
                        unchanged += 1
                    }
                    log::info(&format!("{target}: {status}"));
                    entries.push(json!({ "target": target, "status": status }));
                }
                Err(error) => {
                    failed += 1;
                    log::warn(&format!("{target}: {error}"));
                    entries.push(json!({ "target": target, "error": error }));
                }
            }
        }
        log::info(&format!(
            "{added} added, {unchanged} unchanged, {failed} failed"
        ));
        let summary = json!({ "targets": entries, "added": added, "unchanged": unchanged,
            "failed": failed });
        Ok(summary.to_string())
    }
}

export_task!(DeploySshKey);

/// One target's deployment.
struct Step<'a> {
    target: &'a str,
    credential: &'a Credential,
    path: &'a str,
    dir: &'a str,
}

impl Step<'_> {
    /// Returns `"added"` or `"unchanged"`, or why the target failed.
    fn deploy(&self, key_line: &str, key: &KeyId<'_>) -> Result<&'static str, String> {
        let mkdir = format!("mkdir -p -m 700 {}", quote(self.dir));
        let out = ssh::exec(self.target, self.credential, &mkdir, ExecOptions::default())
            .map_err(|e| format!("creating {}: {e}", self.dir))?;
        if !out.success() {
            return Err(format!(
                "creating {}: {}",
                self.dir,
                out.stderr_text().trim()
            ));
        }
        let existing = match transfer::download(self.target, self.credential, self.path) {
            Ok(bytes) => bytes,
            Err(Error::NotFound(_)) => Vec::new(),
            Err(e) => return Err(format!("reading {}: {e}", self.path)),
        };
        let Some(updated) = with_key(&existing, key_line, key) else {
            return Ok("unchanged");
        };
        transfer::upload(self.target, self.credential, self.path, &updated, FILE_MODE)
            .map_err(|e| format!("writing {}: {e}", self.path))?;
        Ok("added")
    }
}

/// The file with the key appended, or `None` when a line already holds the key. Existing
/// bytes are kept exactly; a missing final newline is added before the new line.
fn with_key(existing: &[u8], key_line: &str, key: &KeyId<'_>) -> Option<Vec<u8>> {
    let present = existing
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter(|line| !line.trim_start().starts_with('#'))
        .any(|line| key_id(line) == Some(*key));
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

/// The directory holding `path`, which must be absolute, normalised and safe to quote.
fn parent_dir(path: &str) -> Result<&str, String> {
    let bad = !path.starts_with('/')
        || path.ends_with('/')
        || path.contains(['\0', '\n', '\r'])
        || path.split('/').any(|part| part == "." || part == "..");
    if bad {
        return Err("input `path` must be an absolute file path without `.` or `..`".to_string());
    }
    match path.rsplit_once('/') {
        Some(("", _)) => Err("input `path` must not be a file directly under `/`".to_string()),
        Some((dir, _)) => Ok(dir),
        None => Err("input `path` must be absolute".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGs2bWlrZXlrZXlrZXlrZXlrZXlrZXlrZXk alice@laptop";

    #[test]
    fn appends_key_to_empty_file() {
        let key = key_id(KEY).unwrap();
        assert_eq!(
            with_key(b"", KEY, &key).unwrap(),
            format!("{KEY}\n").into_bytes()
        );
    }

    #[test]
    fn appends_after_existing_lines_adding_missing_newline() {
        let key = key_id(KEY).unwrap();
        let existing = b"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB bob";
        let updated = with_key(existing, KEY, &key).unwrap();
        assert_eq!(
            updated,
            format!("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB bob\n{KEY}\n").into_bytes()
        );
    }

    #[test]
    fn same_key_with_other_comment_and_options_is_unchanged() {
        let key = key_id(KEY).unwrap();
        let existing = "restrict,command=\"echo hi there\" ssh-ed25519 \
            AAAAC3NzaC1lZDI1NTE5AAAAIGs2bWlrZXlrZXlrZXlrZXlrZXlrZXlrZXk old-comment\n";
        assert!(with_key(existing.as_bytes(), KEY, &key).is_none());
    }

    #[test]
    fn commented_out_key_does_not_count_as_present() {
        let key = key_id(KEY).unwrap();
        let existing = format!("# {KEY}\n");
        let updated = with_key(existing.as_bytes(), KEY, &key).unwrap();
        assert_eq!(updated, format!("# {KEY}\n{KEY}\n").into_bytes());
    }

    #[test]
    fn second_application_is_idempotent() {
        let key = key_id(KEY).unwrap();
        let once = with_key(b"", KEY, &key).unwrap();
        assert!(with_key(&once, KEY, &key).is_none());
    }

    #[test]
    fn rejects_malformed_key_inputs() {
        assert!(parse_public_key("not a key").is_err());
        assert!(parse_public_key("ssh-ed25519").is_err());
        assert!(parse_public_key("ssh-ed25519 AAAA$$$$notbase64$$$$").is_err());
        assert!(parse_public_key(&format!("{KEY}\n{KEY}")).is_err());
        assert_eq!(parse_public_key(KEY).unwrap().0, "ssh-ed25519");
    }

    #[test]
    fn parent_dir_accepts_absolute_paths_only() {
        assert_eq!(
            parent_dir("/home/alice/.ssh/authorized_keys"),
            Ok("/home/alice/.ssh")
        );
        for bad in [
            "",
            "relative/keys",
            "/home/../etc/keys",
            "/home/./x",
            "/keys",
            "/dir/",
            "/a\n/b",
        ] {
            assert!(parent_dir(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shell_quote_neutralises_metacharacters() {
        assert_eq!(quote("/home/al ice/.ssh"), "'/home/al ice/.ssh'");
        assert_eq!(quote("/tmp/it's;rm -rf /"), r"'/tmp/it'\''s;rm -rf /'");
    }
}
