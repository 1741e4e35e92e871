//! The rotation itself, top to bottom (see the module docs of [`super`] for the order of
//! the steps and why), plus the vault, target and audit lookups every step shares.

use crate::audit::{AuditEntry, Decision};
use crate::redact::Redactor;
use crate::targets::Target;
use crate::vault::password::PasswordPolicy;
use crate::vault::{CredentialInfo, CredentialKind, Secret};

use super::policy::RotationPolicy;
use super::secret::{check_username, generate, public_line_of, vault_credential};
use super::{Actor, Backends, Rotated, RotationError, internal, vault_error};

/// Rotation and reconcile over the host's backends, on behalf of one actor.
pub struct Rotator {
    pub(super) backends: Backends,
    pub(super) redactor: Redactor,
    pub(super) actor: Actor,
}

impl Rotator {
    /// `redactor` receives every secret the rotation touches before it is used.
    pub fn new(backends: Backends, redactor: Redactor, actor: Actor) -> Self {
        Self {
            backends,
            redactor,
            actor,
        }
    }

    /// Rotates `account` on `target`, acting there as the admin credential `admin`, with a
    /// password generated from `requested` raised to the grant's `policy`. Refuses a
    /// non-admin `admin` before anything else. See the module docs.
    pub async fn rotate(
        &self,
        account: &str,
        target: &str,
        admin: &str,
        requested: &PasswordPolicy,
        policy: &RotationPolicy,
    ) -> Result<Rotated, RotationError> {
        self.require_admin(admin)?;
        let info = self.credential_info(account)?;
        check_username(&info.username)?;
        let effective = match info.kind {
            CredentialKind::Password => policy.effective(requested)?,
            // Ignored for a key; never used.
            CredentialKind::SshKey => PasswordPolicy::default(),
        };
        let target = self.target(target)?;
        let admin = vault_credential(&self.backends.vault, &self.redactor, admin)?;
        let old = self.vault_secret(account, None)?;
        let old_public = match info.kind {
            CredentialKind::SshKey => Some(public_line_of(&old)?),
            CredentialKind::Password => None,
        };
        let new = generate(info.kind, &effective, account)?;
        self.redact(new.stored.as_bytes())?;
        let reason = format!("rotation on target {}", target.name);
        let pending = self
            .backends
            .vault
            .add_pending(
                account,
                Secret::from_bytes(new.stored.as_bytes().to_vec()),
                &self.actor.name,
                &reason,
            )
            .map_err(|e| vault_error("storing the pending version", e))?;
        let version = pending.version;
        self.step(
            "credential.rotation.pending",
            account,
            &target.name,
            format!("version {version} stored as pending"),
        )
        .await?;
        let applied = self
            .apply(&target, &admin, &info, &new, old_public.as_deref(), version)
            .await;
        if let Err(failure) = applied {
            if failure.target_changed {
                self.roll_back(&target, &admin, &info, &old, &new).await;
            }
            return Err(self
                .give_up(account, &target.name, version, failure.error)
                .await);
        }
        // The target has the new secret from here on: a failure to promote must not mark the
        // pending version failed, since it is the one that opens the account now.
        self.backends.vault.promote(account, version).map_err(|e| {
            vault_error(
                "promoting the new version (it is live on the target; run `warden credential reconcile`)",
                e,
            )
        })?;
        self.step(
            "credential.rotation.promoted",
            account,
            &target.name,
            format!("version {version} is current"),
        )
        .await?;
        self.backends.ssh.evict_credential(account).await;
        Ok(Rotated {
            credential: account.to_string(),
            target: target.name,
            version,
        })
    }

    /// Refuses an admin handle that is not an admin credential: its account may run a
    /// task's commands, so its session start-up may be the task's.
    pub(super) fn require_admin(&self, admin: &str) -> Result<(), RotationError> {
        match self.credential_info(admin)? {
            info if info.admin => Ok(()),
            _ => Err(RotationError::NotAdmin(admin.to_string())),
        }
    }

    /// Marks the pending version failed, audits it, and returns the error to report.
    async fn give_up(
        &self,
        account: &str,
        target: &str,
        version: u32,
        error: RotationError,
    ) -> RotationError {
        if let Err(e) = self.backends.vault.mark_failed(account, version) {
            tracing::warn!(credential = %account, version, error = %e, "marking a version failed");
        }
        let detail = format!("version {version} marked failed: {}", error.describe());
        if let Err(audit) = self
            .step("credential.rotation.failed", account, target, detail)
            .await
        {
            return audit;
        }
        RotationError::Failed {
            version,
            source: Box::new(error),
        }
    }

    /// Writes one vault-step record (never a secret). If it cannot be written the rotation
    /// stops (fail closed).
    pub(super) async fn step(
        &self,
        action: &str,
        credential: &str,
        target: &str,
        detail: String,
    ) -> Result<(), RotationError> {
        let entry = AuditEntry {
            run_id: self.actor.run_id.clone(),
            actor: self.actor.name.clone(),
            action: action.to_string(),
            target: Some(target.to_string()),
            credential: Some(credential.to_string()),
            decision: Decision::Allowed,
            outcome: "ok".to_string(),
            duration_us: 0,
            detail: Some(self.redactor.redact_str(&detail)),
        };
        self.backends
            .audit
            .append(entry)
            .await
            .map(drop)
            .map_err(|e| internal("writing the rotation's audit record", e))
    }

    pub(super) fn credential_info(&self, name: &str) -> Result<CredentialInfo, RotationError> {
        match self.backends.vault.info(name) {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(RotationError::NotFound(format!(
                "no credential named '{name}'"
            ))),
            Err(e) => Err(vault_error("looking up the credential", e)),
        }
    }

    pub(super) fn target(&self, name: &str) -> Result<Target, RotationError> {
        match self.backends.targets.get(name) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(RotationError::NotFound(format!("no target named '{name}'"))),
            Err(e) => Err(internal("looking up the target", e)),
        }
    }

    /// A version's secret (the current one for `None`), registered for redaction first.
    pub(super) fn vault_secret(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Secret, RotationError> {
        let vault = &self.backends.vault;
        let secret = match version {
            None => vault.secret(name),
            Some(v) => vault.secret_version(name, v),
        }
        .map_err(|e| vault_error("reading the credential", e))?;
        self.redact(secret.expose())?;
        Ok(secret)
    }

    fn redact(&self, secret: &[u8]) -> Result<(), RotationError> {
        self.redactor
            .add_secret(secret)
            .map_err(|e| internal("registering the secret for redaction", e))
    }
}
