//! The steps a rotation takes on the target: set the new secret, verify it, roll back.
//!
//! Threat: the new secret (or the admin's sudo password) reaching a program the task put
//! in the admin session's way. The admin credential is one a task's commands never run
//! under (checked by the engine); on top of that, every program here is named by an
//! absolute path or found on a fixed root `PATH` set by the script itself: the SSH layer
//! runs `/usr/bin/sudo … -- /bin/sh -c …`, sudo resets the environment, and the password
//! goes to `/usr/sbin/chpasswd` as `user:password` on stdin — never argv, never environment.
//! So a `chpasswd` or `sudo` earlier on the account's `PATH`, or a shell function of either
//! name, is never what runs.

use std::time::Duration;

use zeroize::Zeroizing;

use crate::ssh::{ExecRequest, SshCredential};
use crate::targets::Target;
use crate::vault::{CredentialInfo, CredentialKind, Secret};

use super::engine::Rotator;
use super::secret::{NewSecret, auth_of};
use super::{CRASH_AFTER_SET, RotationError, TargetFailure, crash_point, from_ssh};

/// The password setter, by absolute path: never looked up on a `PATH` the task could set.
pub(super) const CHPASSWD: &str = "/usr/sbin/chpasswd";

/// How long one command on the target (chpasswd, the authorized_keys edit) may take.
const TARGET_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Output kept of those commands; only an error excerpt is ever shown.
const TARGET_OUTPUT_CAP: usize = 16 * 1024;

/// Longest stderr excerpt quoted in an error.
const MAX_EXCERPT: usize = 300;

/// Edits the account's `authorized_keys` as the account itself (never as root, so links
/// the account planted cannot redirect a root write or read). Runs as root under sudo's
/// reset environment, and first fixes `PATH` to the system directories, so no program is
/// found anywhere the account could write. Reads from stdin: `add` or `remove`, the
/// account name, then the public key line; lines holding the key's base64 blob are
/// removed, and for `add` the key is appended once. The file is replaced atomically by a
/// rename from a private temporary file.
pub(super) const AUTHORIZED_KEYS_SCRIPT: &str = r#"set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
IFS= read -r action
IFS= read -r user
home=$(/usr/bin/getent passwd "$user" | cut -d: -f6)
if [ -z "$home" ]; then echo "no account named $user" >&2; exit 3; fi
exec runuser -u "$user" -- /bin/sh -c '
set -eu
PATH=/usr/bin:/bin
export PATH
IFS= read -r key
blob=$(printf "%s\n" "$key" | cut -d " " -f 2)
if [ -z "$blob" ]; then echo "empty public key" >&2; exit 4; fi
umask 077
mkdir -p "$1/.ssh"
file="$1/.ssh/authorized_keys"
[ -e "$file" ] || : > "$file"
tmp=$(mktemp "$1/.ssh/.authorized_keys.XXXXXX")
rc=0
grep -vF -- "$blob" "$file" > "$tmp" || rc=$?
if [ "$rc" -gt 1 ]; then rm -f "$tmp"; exit "$rc"; fi
if [ "$2" = add ]; then printf "%s\n" "$key" >> "$tmp"; fi
mv -f "$tmp" "$file"
' sh "$home" "$action""#;

#[derive(Clone, Copy)]
pub(super) enum KeyEdit {
    Add,
    Remove,
}

/// A step that failed, and whether the target was already changed (so a rollback is due).
pub(super) struct StepFailure {
    pub error: RotationError,
    pub target_changed: bool,
}

/// An exec request whose stdin (a secret) is wiped when it is dropped.
struct WipedRequest(ExecRequest);

impl Drop for WipedRequest {
    fn drop(&mut self) {
        if let Some(stdin) = self.0.stdin.as_mut() {
            zeroize::Zeroize::zeroize(stdin);
        }
    }
}

impl Rotator {
    /// Sets the new secret on the target and verifies it (for a key, then removes the old
    /// public key).
    pub(super) async fn apply(
        &self,
        target: &Target,
        admin: &SshCredential,
        info: &CredentialInfo,
        new: &NewSecret,
        old_public: Option<&str>,
        version: u32,
    ) -> Result<(), StepFailure> {
        let before_change = |error| StepFailure {
            error,
            target_changed: false,
        };
        match &new.public_line {
            None => self
                .set_password(target, admin, &info.username, new.stored.as_bytes())
                .await
                .map_err(before_change)?,
            Some(line) => self
                .edit_authorized_keys(target, admin, KeyEdit::Add, &info.username, line)
                .await
                .map_err(before_change)?,
        }
        crash_point(CRASH_AFTER_SET);
        let after_change = |error| StepFailure {
            error,
            target_changed: true,
        };
        let verifier = SshCredential {
            id: format!("{}#v{version}", info.name),
            username: info.username.clone(),
            auth: auth_of(info.kind, new.stored.as_str()),
        };
        if let Err(e) = self.backends.ssh.verify_login(target, &verifier).await {
            let what = match info.kind {
                CredentialKind::Password => "password",
                CredentialKind::SshKey => "key",
            };
            let e = from_ssh(e, &self.redactor);
            return Err(after_change(RotationError::Target {
                kind: TargetFailure::AuthFailed,
                message: format!(
                    "verification failed: logging in with the new {what} did not work ({})",
                    e.describe()
                ),
            }));
        }
        if let Some(old) = old_public {
            self.edit_authorized_keys(target, admin, KeyEdit::Remove, &info.username, old)
                .await
                .map_err(after_change)?;
        }
        Ok(())
    }

    /// Undoes the change on the target after a failed verification, best effort.
    pub(super) async fn roll_back(
        &self,
        target: &Target,
        admin: &SshCredential,
        info: &CredentialInfo,
        old: &Secret,
        new: &NewSecret,
    ) {
        let undone = match &new.public_line {
            Some(line) => {
                self.edit_authorized_keys(target, admin, KeyEdit::Remove, &info.username, line)
                    .await
            }
            // A password with a line break cannot be fed to chpasswd; leave it.
            None if old.expose().contains(&b'\n') => Ok(()),
            None => {
                self.set_password(target, admin, &info.username, old.expose())
                    .await
            }
        };
        if let Err(e) = undone {
            tracing::warn!(
                credential = %info.name,
                target = %target.name,
                error = %e.describe(),
                "rolling back a failed rotation on the target failed"
            );
        }
    }

    /// `/usr/sbin/chpasswd` under sudo as `admin`, fed `user:password` on stdin.
    pub(super) async fn set_password(
        &self,
        target: &Target,
        admin: &SshCredential,
        username: &str,
        password: &[u8],
    ) -> Result<(), RotationError> {
        let mut line = Zeroizing::new(Vec::with_capacity(username.len() + password.len() + 2));
        line.extend_from_slice(username.as_bytes());
        line.push(b':');
        line.extend_from_slice(password);
        line.push(b'\n');
        self.sudo(target, admin, "chpasswd", CHPASSWD, line).await
    }

    /// Runs [`AUTHORIZED_KEYS_SCRIPT`] under sudo as `admin`.
    pub(super) async fn edit_authorized_keys(
        &self,
        target: &Target,
        admin: &SshCredential,
        edit: KeyEdit,
        username: &str,
        public_line: &str,
    ) -> Result<(), RotationError> {
        let action = match edit {
            KeyEdit::Add => "add",
            KeyEdit::Remove => "remove",
        };
        let input = Zeroizing::new(format!("{action}\n{username}\n{public_line}\n").into_bytes());
        let label = "editing authorized_keys";
        self.sudo(target, admin, label, AUTHORIZED_KEYS_SCRIPT, input)
            .await
    }

    /// Runs `command` under sudo as `admin` with `stdin` (wiped afterwards); a non-zero exit
    /// is an error naming `label` and quoting the (redacted) start of stderr.
    async fn sudo(
        &self,
        target: &Target,
        admin: &SshCredential,
        label: &str,
        command: &str,
        stdin: Zeroizing<Vec<u8>>,
    ) -> Result<(), RotationError> {
        let request = WipedRequest(ExecRequest {
            command: command.to_string(),
            sudo: true,
            stdin: Some(stdin.to_vec()),
            timeout: TARGET_COMMAND_TIMEOUT,
            output_cap: TARGET_OUTPUT_CAP,
        });
        drop(stdin);
        let out = self
            .backends
            .ssh
            .exec(target, admin, &request.0)
            .await
            .map_err(|e| from_ssh(e, &self.redactor))?;
        if out.exit_status == Some(0) {
            return Ok(());
        }
        // Cut output loses a fixed tail, never one that depends on a partial match.
        let stderr = if out.stderr_truncated {
            self.redactor.redact_truncated(&out.stderr)
        } else {
            self.redactor.redact(&out.stderr)
        };
        let excerpt: String = String::from_utf8_lossy(&stderr)
            .trim()
            .chars()
            .take(MAX_EXCERPT)
            .collect();
        let status = match (out.exit_status, out.exit_signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "no exit status".to_string(),
        };
        Err(RotationError::Target {
            kind: TargetFailure::Remote,
            message: format!("{label} on {} failed with {status}: {excerpt}", target.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_script_keeps_its_data_off_the_command_line() {
        assert!(!AUTHORIZED_KEYS_SCRIPT.contains("ssh-ed25519"));
        assert!(AUTHORIZED_KEYS_SCRIPT.contains("IFS= read -r key"));
    }

    #[test]
    fn programs_on_the_target_are_never_found_on_a_path_the_account_sets() {
        assert!(CHPASSWD.starts_with('/'));
        // The script fixes PATH before running anything, in both shells it starts.
        let (outer, inner) = AUTHORIZED_KEYS_SCRIPT
            .split_once("/bin/sh -c '")
            .unwrap_or_default();
        fn first_command(s: &str) -> Option<&str> {
            s.lines().find(|l| !l.trim().is_empty() && *l != "set -eu")
        }
        assert_eq!(
            first_command(outer),
            Some("PATH=/usr/sbin:/usr/bin:/sbin:/bin")
        );
        assert_eq!(first_command(inner), Some("PATH=/usr/bin:/bin"));
        assert!(outer.contains("exec runuser") && outer.contains("/usr/bin/getent"));
    }
}
