//! Resolving a rotation that crashed between "set on the target" and "promoted in the
//! vault": the secret that logs in wins.
//!
//! Threat: promoting a secret that does not open the account (a lock-out), or leaving a
//! stale key in `authorized_keys`. Every candidate is tried with a fresh, never pooled
//! login; nothing changes in the vault unless one of them logs in. Key removals run as the
//! admin credential, which must be an admin credential like a rotation's.

use crate::ssh::{SshCredential, SshError};
use crate::targets::Target;
use crate::vault::{CredentialInfo, CredentialKind, VersionState};

use super::engine::Rotator;
use super::secret::{auth_of, public_line_of, secret_text, vault_credential};
use super::steps::KeyEdit;
use super::{Reconciled, RotationError, TargetFailure, from_ssh, vault_error};

impl Rotator {
    /// Resolves the pending versions of `account` left by a crashed rotation on `target`:
    /// the newest pending secret that logs in is promoted (for a key, the old public key is
    /// then removed as `admin`); if none does but the current one does, the pending versions
    /// are marked failed (for a key, their public keys are removed). If nothing logs in, the
    /// vault is left as it is and an error returned.
    pub async fn reconcile(
        &self,
        account: &str,
        target: &str,
        admin: &str,
    ) -> Result<Reconciled, RotationError> {
        self.require_admin(admin)?;
        let info = self.credential_info(account)?;
        let target = self.target(target)?;
        let versions = self
            .backends
            .vault
            .versions(account)
            .map_err(|e| vault_error("reading the versions", e))?;
        let current = versions
            .iter()
            .find(|v| v.state == VersionState::Current)
            .map(|v| v.version);
        let mut pending: Vec<u32> = versions
            .iter()
            .filter(|v| v.state == VersionState::Pending)
            .map(|v| v.version)
            .collect();
        pending.sort_unstable_by(|a, b| b.cmp(a));
        if pending.is_empty() {
            return Ok(Reconciled::NothingPending { current });
        }
        let admin = vault_credential(&self.backends.vault, &self.redactor, admin)?;
        let mut working = None;
        for &version in &pending {
            if self.logs_in(&target, &info, version).await? {
                working = Some(version);
                break;
            }
        }
        let (keep, promote) = match working {
            Some(version) => (version, true),
            None => match current {
                Some(c) if self.logs_in(&target, &info, c).await? => (c, false),
                _ => {
                    return Err(RotationError::Target {
                        kind: TargetFailure::AuthFailed,
                        message: format!(
                            "neither the pending versions {pending:?} nor the current version \
                             of '{account}' log in to {}; the vault is left unchanged",
                            target.name
                        ),
                    });
                }
            },
        };
        let failed: Vec<u32> = pending.iter().copied().filter(|&v| v != keep).collect();
        if info.kind == CredentialKind::SshKey {
            // Every key but the one kept must stop opening the account.
            let mut stale = failed.clone();
            if promote {
                stale.extend(current);
            }
            self.remove_keys(&target, &admin, &info, &stale).await?;
        }
        if promote {
            self.backends
                .vault
                .promote(account, keep)
                .map_err(|e| vault_error("promoting the pending version", e))?;
            self.step(
                "credential.rotation.promoted",
                account,
                &target.name,
                format!("version {keep} is current (reconciled)"),
            )
            .await?;
        }
        for &version in &failed {
            self.backends
                .vault
                .mark_failed(account, version)
                .map_err(|e| vault_error("marking a pending version failed", e))?;
            self.step(
                "credential.rotation.failed",
                account,
                &target.name,
                format!("version {version} marked failed (reconciled: version {keep} is current)"),
            )
            .await?;
        }
        self.backends.ssh.evict_credential(account).await;
        Ok(match promote {
            true => Reconciled::PromotedPending {
                version: keep,
                failed,
            },
            false => Reconciled::KeptCurrent {
                version: keep,
                failed,
            },
        })
    }

    /// True when the vault's `version` of the credential logs in to `target`.
    async fn logs_in(
        &self,
        target: &Target,
        info: &CredentialInfo,
        version: u32,
    ) -> Result<bool, RotationError> {
        let secret = self.vault_secret(&info.name, Some(version))?;
        let text = secret_text(&secret)?;
        let cred = SshCredential {
            id: format!("{}#v{version}", info.name),
            username: info.username.clone(),
            auth: auth_of(info.kind, text.as_str()),
        };
        match self.backends.ssh.verify_login(target, &cred).await {
            Ok(()) => Ok(true),
            Err(SshError::AuthFailed(_)) => Ok(false),
            Err(e) => Err(from_ssh(e, &self.redactor)),
        }
    }

    /// Removes the public keys of the given versions from the account's `authorized_keys`.
    async fn remove_keys(
        &self,
        target: &Target,
        admin: &SshCredential,
        info: &CredentialInfo,
        versions: &[u32],
    ) -> Result<(), RotationError> {
        for &version in versions {
            let secret = self.vault_secret(&info.name, Some(version))?;
            let line = public_line_of(&secret)?;
            self.edit_authorized_keys(target, admin, KeyEdit::Remove, &info.username, &line)
                .await?;
        }
        Ok(())
    }
}
