//! Where a credential's secret may be typed: admin credentials and the sudo rule.
//!
//! Threat: the task captures a password by shaping the session it is typed into. A task
//! that runs commands as account A can edit A's `~/.bashrc` (Debian's bash reads it for
//! `ssh host cmd`), `~/.ssh/rc`, or leave a process of A's that reads the next shell's stdin;
//! the next `sudo: true` call then types A's password into a `sudo` the task defined. So:
//! - an **admin** credential ([`crate::vault::CredentialInfo::admin`]) never runs a task's
//!   unprivileged command or file transfer: its account's start-up stays the administrator's;
//! - **sudo with a password** needs an admin credential, and no other credential of the same
//!   grant may log in as the same username (a task running commands as that one could shape
//!   the admin account's start-up);
//! - sudo with a **key** credential is `sudo -n` (nothing is typed) and is allowed for any
//!   key credential.
//!
//! The same rules are checked when a process is created or updated
//! ([`check_grant_credentials`]), so a grant that cannot work safely is refused with the
//! reason, and again on every call (credentials can be added after the process).
//!
//! Limits: usernames are compared as text, per grant. Two names for one account (a second
//! uid-0 user), another process or a person logging in as the admin account, or a task that
//! gains root on the target by other means, are outside what this check can see.

use crate::vault::{CredentialInfo, CredentialKind};

use super::HostContext;
use super::credentials::CredentialHandle;
use super::grant::{Denial, Grant};

/// The rule named when an admin credential is used for a task's own work.
pub const ADMIN_RULE: &str = "grant.admin-credential";
/// The rule named when sudo would type a non-admin password.
pub const SUDO_PASSWORD_RULE: &str = "grant.sudo-password";

/// What a host call wants to do with a credential.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CredentialUse {
    /// A command, under sudo or not.
    Exec { sudo: bool },
    /// An SFTP upload or download.
    Transfer,
    /// The admin handle of a rotation: the new password is typed into its session.
    RotationAdmin,
}

fn denial(rule: &'static str, detail: String) -> Denial {
    Denial {
        rule,
        detail,
        policy: None,
    }
}

/// The rules that need only the credential itself.
fn check_kind(
    name: &str,
    kind: CredentialKind,
    admin: bool,
    using: CredentialUse,
) -> Result<(), Denial> {
    match using {
        CredentialUse::Exec { sudo: false } | CredentialUse::Transfer if admin => Err(denial(
            ADMIN_RULE,
            format!(
                "credential '{name}' is an admin credential: its secret is typed only for \
                 privileged operations, so it may not run a task's unprivileged command or \
                 file transfer"
            ),
        )),
        CredentialUse::Exec { sudo: true } if kind == CredentialKind::Password && !admin => {
            Err(denial(
                SUDO_PASSWORD_RULE,
                format!(
                    "sudo with password credential '{name}' needs an admin credential: a task \
                     may run commands as its account, so that account's shell start-up may be \
                     the task's and would receive the password (use an admin credential, or a \
                     key credential with NOPASSWD sudo)"
                ),
            ))
        }
        CredentialUse::RotationAdmin if !admin => Err(denial(
            super::rotation::ADMIN_RULE,
            format!(
                "credential '{name}' is not an admin credential: a rotation types the new \
                 password only into a session of an admin credential, which no task command \
                 runs under"
            ),
        )),
        _ => Ok(()),
    }
}

impl HostContext {
    /// Checks that `handle` may be used this way (after the grant, before the secret is
    /// fetched). A vault error refuses (fail closed).
    pub(crate) fn check_credential_use(
        &self,
        handle: &CredentialHandle,
        using: CredentialUse,
    ) -> Result<(), Denial> {
        let (name, kind, admin) = (handle.name(), handle.kind(), handle.is_admin());
        check_kind(name, kind, admin, using)?;
        // A secret is typed into the session: sudo's password, or a rotation's new password.
        let typed = match using {
            CredentialUse::Exec { sudo } => sudo && kind == CredentialKind::Password,
            CredentialUse::RotationAdmin => true,
            CredentialUse::Transfer => false,
        };
        if !typed {
            return Ok(());
        }
        for other in self.grant.credentials.iter().filter(|c| *c != name) {
            let info = self.services.server.credential(other).map_err(|_| {
                denial(
                    ADMIN_RULE,
                    "could not read the grant's credentials to check the sudo rule".into(),
                )
            })?;
            if let Some(info) = info.filter(|i| i.username == handle.username() && !i.admin) {
                return Err(denial(
                    ADMIN_RULE,
                    same_user(name, &info.name, &info.username),
                ));
            }
        }
        Ok(())
    }
}

fn same_user(admin: &str, other: &str, username: &str) -> String {
    format!(
        "admin credential '{admin}' and credential '{other}' log in as the same user \
         '{username}': a task running commands as '{other}' could change that account's shell \
         start-up and capture '{admin}''s password when it is typed into sudo (grant them to \
         different processes, or use a separate admin account)"
    )
}

/// The process-time form of the rules, over the granted credentials that exist (`infos`):
/// refuses an admin credential granted together with a non-admin credential of the same
/// username, and sudo patterns that none of the credentials could use. The error says why.
pub fn check_grant_credentials(grant: &Grant, infos: &[CredentialInfo]) -> Result<(), String> {
    let granted: Vec<&CredentialInfo> = infos
        .iter()
        .filter(|i| grant.credentials.contains(&i.name))
        .collect();
    for admin in granted.iter().filter(|i| i.admin) {
        if let Some(other) = granted
            .iter()
            .find(|o| !o.admin && o.username == admin.username)
        {
            return Err(same_user(&admin.name, &other.name, &admin.username));
        }
    }
    let can_sudo = |i: &&CredentialInfo| i.admin || i.kind == CredentialKind::SshKey;
    if grant.has_sudo_patterns() && !granted.iter().any(can_sudo) {
        return Err(
            "the grant's sudo patterns can be used by none of its credentials: sudo \
                    types a password only for an admin credential, and a key credential uses \
                    NOPASSWD sudo (grant an admin or a key credential, or drop the sudo patterns)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, username: &str, kind: CredentialKind, admin: bool) -> CredentialInfo {
        CredentialInfo {
            name: name.into(),
            username: username.into(),
            kind,
            created_ms: 0,
            admin,
        }
    }

    fn grant(credentials: &[&str], commands: &[&str]) -> Grant {
        Grant {
            credentials: credentials.iter().map(|s| s.to_string()).collect(),
            commands: commands.iter().map(|s| s.to_string()).collect(),
            ..Grant::default()
        }
    }

    #[test]
    fn admin_credential_only_types_for_sudo() {
        let pw = CredentialKind::Password;
        let rule = |kind, admin, using| check_kind("c", kind, admin, using).map_err(|d| d.rule);
        let (plain, sudo) = (
            CredentialUse::Exec { sudo: false },
            CredentialUse::Exec { sudo: true },
        );
        assert_eq!(rule(pw, true, plain), Err(ADMIN_RULE));
        assert_eq!(rule(pw, true, CredentialUse::Transfer), Err(ADMIN_RULE));
        assert_eq!(rule(CredentialKind::SshKey, true, plain), Err(ADMIN_RULE));
        assert_eq!(rule(pw, true, sudo), Ok(()));
        assert_eq!(rule(pw, false, sudo), Err(SUDO_PASSWORD_RULE));
        assert_eq!(rule(pw, false, plain), Ok(()));
        assert_eq!(rule(CredentialKind::SshKey, false, sudo), Ok(()));
    }

    #[test]
    fn grant_pairing_an_admin_with_a_same_user_credential_is_refused() {
        let infos = [
            info("root-pw", "ops", CredentialKind::Password, true),
            info("ops-key", "ops", CredentialKind::SshKey, false),
            info("app", "app", CredentialKind::Password, false),
        ];
        let refused = check_grant_credentials(&grant(&["root-pw", "ops-key"], &[]), &infos);
        assert!(refused.is_err_and(|e| e.contains("same user 'ops'")));
        assert!(check_grant_credentials(&grant(&["root-pw", "app"], &["sudo **"]), &infos).is_ok());
    }

    #[test]
    fn sudo_patterns_need_an_admin_or_key_credential() {
        let infos = [
            info("app", "app", CredentialKind::Password, false),
            info("key", "deploy", CredentialKind::SshKey, false),
        ];
        let only_pw = grant(&["app"], &["sudo id"]);
        assert!(check_grant_credentials(&only_pw, &infos).is_err());
        assert!(check_grant_credentials(&grant(&["app"], &["id"]), &infos).is_ok());
        assert!(check_grant_credentials(&grant(&["app", "key"], &["sudo id"]), &infos).is_ok());
    }
}
