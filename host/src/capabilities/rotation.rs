//! `credentials.rotate`: replacing a credential's secret on a target and in the vault, and
//! `reconcile`, which resolves a rotation that crashed half-way.
//!
//! Threats: a rotation that locks an account out (the target has a secret the vault does not
//! consider current, or none that the vault holds), and a secret leaking on the way. The steps
//! are ordered so that at every instant the vault holds a secret that opens the account:
//!
//! 1. generate the new secret (a password from the guest's policy, or an ed25519 key) in
//!    zeroizing memory, and register it and the old one with the run's redactor;
//! 2. store it as a *pending* vault version ([`Vault::add_pending`]), audited;
//! 3. set it on the target as the admin credential under sudo: `chpasswd` with
//!    `user:password` on stdin, or the public key added to `authorized_keys` by a fixed
//!    script reading its data on stdin. Never argv, never environment;
//! 4. verify it with a fresh SSH login that is never pooled (a pooled connection made with the
//!    old secret would prove nothing); for a key, then remove the old public key;
//! 5. only then promote the pending version to current, audited, and evict pooled connections
//!    made with the old secret.
//!
//! On a failure at 3 or 4 the change is rolled back on the target where possible (best effort:
//! the old password is set again, or the new public key removed), the pending version is
//! marked failed and the guest gets an error saying that the old version stays current. A
//! crash between 3 and 5 leaves the pending version recorded; [`reconcile`]
//! (`warden credential reconcile`) logs in with the pending and the current secrets and
//! promotes the one that works.
//!
//! Test-only fault injection: in debug builds, setting the environment variable
//! [`CRASH_ENV`] to a fault point's name (`rotation.after-set`) makes the process abort there,
//! so the tests can kill a server between "set on target" and "promote". Release builds
//! compile the check out.

use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey, PublicKey, decode_secret_key};
use secrecy::SecretString;
use wasmtime::component::Resource;
use zeroize::Zeroizing;

use crate::audit::{AuditEntry, Decision};
use crate::redact::Redactor;
use crate::runtime::bindings::credentials::{PasswordPolicy as WitPolicy, Rotation};
use crate::runtime::bindings::types::Error;
use crate::ssh::{ExecRequest, SshAuth, SshCredential};
use crate::targets::Target;
use crate::vault::password::{self, PasswordPolicy};
use crate::vault::{CredentialInfo, CredentialKind, Secret, VaultError, VersionState};

use super::call::{Effect, HostCall, Redact};
use super::credentials::CredentialHandle;
use super::grant::Request;
use super::types::{from_ssh, internal};
use super::{HostContext, Services, Subject};

/// The WIT interface `rotate` belongs to, as manifests and policies name it.
const CAPABILITY: &str = "credentials";

/// Environment variable naming a fault point at which a debug build aborts (tests only).
pub const CRASH_ENV: &str = "WARDEN_TEST_CRASH_AT";

/// The fault point between "new secret set on the target" and "promoted in the vault".
pub const CRASH_AFTER_SET: &str = "rotation.after-set";

/// How long one command on the target (chpasswd, the authorized_keys edit) may take.
const TARGET_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Output kept of those commands; only an error excerpt is ever shown.
const TARGET_OUTPUT_CAP: usize = 16 * 1024;

/// Longest stderr excerpt quoted in an error.
const MAX_EXCERPT: usize = 300;

/// Edits the account's `authorized_keys` as the account itself (never as root, so links
/// the account planted cannot redirect a root write or read). Reads from stdin: `add` or
/// `remove`, the account name, then the public key line; lines holding the key's base64
/// blob are removed, and for `add` the key is appended once. The file is replaced
/// atomically by a rename from a private temporary file.
const AUTHORIZED_KEYS_SCRIPT: &str = r#"set -eu
IFS= read -r action
IFS= read -r user
home=$(getent passwd "$user" | cut -d: -f6)
if [ -z "$home" ]; then echo "no account named $user" >&2; exit 3; fi
exec runuser -u "$user" -- sh -c '
set -eu
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

/// A finished rotation or reconcile: which version is now current. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotated {
    pub credential: String,
    pub target: String,
    pub version: u32,
}

/// What a reconcile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconciled {
    /// No pending version: nothing to do.
    NothingPending { current: Option<u32> },
    /// The pending `version` opens the account and is now current; `failed` were given up.
    PromotedPending { version: u32, failed: Vec<u32> },
    /// The current `version` opens the account and stays current; `failed` were given up.
    KeptCurrent { version: u32, failed: Vec<u32> },
}

/// Who asks for a rotation, for vault attribution and audit records.
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    pub run_id: Option<String>,
}

/// The freshly generated secret and what the target needs of it.
struct NewSecret {
    /// The secret as the vault stores it: the password, or the OpenSSH private key text.
    stored: Zeroizing<String>,
    /// For a key: the `ssh-ed25519 AAAA… comment` line for `authorized_keys`.
    public_line: Option<String>,
}

/// A step that failed, and whether the target was already changed (so a rollback is due).
struct StepFailure {
    error: Error,
    target_changed: bool,
}

/// Rotation and reconcile over the host's services, on behalf of one actor.
pub struct Rotator {
    services: Services,
    redactor: Redactor,
    actor: Actor,
}

impl Rotator {
    /// `redactor` receives every secret the rotation touches before it is used.
    pub fn new(services: Services, redactor: Redactor, actor: Actor) -> Self {
        Self {
            services,
            redactor,
            actor,
        }
    }

    /// Rotates `account` on `target`, acting there as `admin`. See the module docs.
    pub async fn rotate(
        &self,
        account: &str,
        target: &str,
        admin: &SshCredential,
        policy: &PasswordPolicy,
    ) -> Result<Rotated, Error> {
        let info = self.credential_info(account)?;
        check_username(&info.username)?;
        let target = self.target(target)?;
        let old = self.vault_secret(account, None)?;
        let old_public = match info.kind {
            CredentialKind::SshKey => Some(public_line_of(&old)?),
            CredentialKind::Password => None,
        };
        let new = generate(info.kind, policy, account)?;
        self.redact(new.stored.as_bytes())?;
        let reason = format!("rotation on target {}", target.name);
        let pending = self
            .services
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
            .apply(&target, admin, &info, &new, old_public.as_deref(), version)
            .await;
        if let Err(failure) = applied {
            if failure.target_changed {
                self.roll_back(&target, admin, &info, &old, &new).await;
            }
            return Err(self
                .give_up(account, &target.name, version, failure.error)
                .await);
        }
        // The target has the new secret from here on: a failure to promote must not mark the
        // pending version failed, since it is the one that opens the account now.
        self.services.vault.promote(account, version).map_err(|e| {
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
        self.services.ssh.evict_credential(account).await;
        Ok(Rotated {
            credential: account.to_string(),
            target: target.name,
            version,
        })
    }

    /// Resolves the pending versions of `account` left by a crashed rotation on `target`:
    /// the newest pending secret that logs in is promoted (for a key, the old public key is
    /// then removed as `admin`); if none does but the current one does, the pending versions
    /// are marked failed (for a key, their public keys are removed). If nothing logs in, the
    /// vault is left as it is and an error returned.
    pub async fn reconcile(
        &self,
        account: &str,
        target: &str,
        admin: &SshCredential,
    ) -> Result<Reconciled, Error> {
        let info = self.credential_info(account)?;
        let target = self.target(target)?;
        let versions = self
            .services
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
                    return Err(Error::AuthFailed(format!(
                        "neither the pending versions {pending:?} nor the current version of \
                         '{account}' log in to {}; the vault is left unchanged",
                        target.name
                    )));
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
            self.remove_keys(&target, admin, &info, &stale).await?;
        }
        if promote {
            self.services
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
            self.services
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
        self.services.ssh.evict_credential(account).await;
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

    /// Sets the new secret on the target and verifies it (for a key, then removes the old
    /// public key).
    async fn apply(
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
        if let Err(e) = self.services.ssh.verify_login(target, &verifier).await {
            let what = match info.kind {
                CredentialKind::Password => "password",
                CredentialKind::SshKey => "key",
            };
            let e = from_ssh(e).redact(&self.redactor);
            return Err(after_change(Error::AuthFailed(format!(
                "verification failed: logging in with the new {what} did not work ({})",
                super::types::describe(&e)
            ))));
        }
        if let Some(old) = old_public {
            self.edit_authorized_keys(target, admin, KeyEdit::Remove, &info.username, old)
                .await
                .map_err(after_change)?;
        }
        Ok(())
    }

    /// Undoes the change on the target after a failed verification, best effort.
    async fn roll_back(
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
                error = %super::types::describe(&e),
                "rolling back a failed rotation on the target failed"
            );
        }
    }

    /// Marks the pending version failed, audits it, and returns the guest's error.
    async fn give_up(&self, account: &str, target: &str, version: u32, error: Error) -> Error {
        if let Err(e) = self.services.vault.mark_failed(account, version) {
            tracing::warn!(credential = %account, version, error = %e, "marking a version failed");
        }
        let reason = super::types::describe(&error);
        let detail = format!("version {version} marked failed: {reason}");
        if let Err(audit) = self
            .step("credential.rotation.failed", account, target, detail)
            .await
        {
            return audit;
        }
        with_suffix(
            error,
            &format!("; version {version} marked failed, the old version stays current"),
        )
    }

    /// True when the vault's `version` of the credential logs in to `target`.
    async fn logs_in(
        &self,
        target: &Target,
        info: &CredentialInfo,
        version: u32,
    ) -> Result<bool, Error> {
        let secret = self.vault_secret(&info.name, Some(version))?;
        let text = secret_text(&secret)?;
        let cred = SshCredential {
            id: format!("{}#v{version}", info.name),
            username: info.username.clone(),
            auth: auth_of(info.kind, text.as_str()),
        };
        match self.services.ssh.verify_login(target, &cred).await {
            Ok(()) => Ok(true),
            Err(crate::ssh::SshError::AuthFailed(_)) => Ok(false),
            Err(e) => Err(from_ssh(e).redact(&self.redactor)),
        }
    }

    /// Removes the public keys of the given versions from the account's `authorized_keys`.
    async fn remove_keys(
        &self,
        target: &Target,
        admin: &SshCredential,
        info: &CredentialInfo,
        versions: &[u32],
    ) -> Result<(), Error> {
        for &version in versions {
            let secret = self.vault_secret(&info.name, Some(version))?;
            let line = public_line_of(&secret)?;
            self.edit_authorized_keys(target, admin, KeyEdit::Remove, &info.username, &line)
                .await?;
        }
        Ok(())
    }

    /// `chpasswd` under sudo as `admin`, fed `user:password` on stdin.
    async fn set_password(
        &self,
        target: &Target,
        admin: &SshCredential,
        username: &str,
        password: &[u8],
    ) -> Result<(), Error> {
        let mut line = Zeroizing::new(Vec::with_capacity(username.len() + password.len() + 2));
        line.extend_from_slice(username.as_bytes());
        line.push(b':');
        line.extend_from_slice(password);
        line.push(b'\n');
        self.sudo(target, admin, "chpasswd", line).await
    }

    /// Runs [`AUTHORIZED_KEYS_SCRIPT`] under sudo as `admin`.
    async fn edit_authorized_keys(
        &self,
        target: &Target,
        admin: &SshCredential,
        edit: KeyEdit,
        username: &str,
        public_line: &str,
    ) -> Result<(), Error> {
        let action = match edit {
            KeyEdit::Add => "add",
            KeyEdit::Remove => "remove",
        };
        let input = Zeroizing::new(format!("{action}\n{username}\n{public_line}\n").into_bytes());
        self.sudo(target, admin, AUTHORIZED_KEYS_SCRIPT, input)
            .await
    }

    /// Runs `command` under sudo as `admin` with `stdin` (wiped afterwards); a non-zero exit
    /// is an error quoting the (redacted) start of stderr.
    async fn sudo(
        &self,
        target: &Target,
        admin: &SshCredential,
        command: &str,
        stdin: Zeroizing<Vec<u8>>,
    ) -> Result<(), Error> {
        let request = WipedRequest(ExecRequest {
            command: command.to_string(),
            sudo: true,
            stdin: Some(stdin.to_vec()),
            timeout: TARGET_COMMAND_TIMEOUT,
            output_cap: TARGET_OUTPUT_CAP,
        });
        drop(stdin);
        let out = self
            .services
            .ssh
            .exec(target, admin, &request.0)
            .await
            .map_err(|e| from_ssh(e).redact(&self.redactor))?;
        if out.exit_status == Some(0) {
            return Ok(());
        }
        let name = command.split_whitespace().next().unwrap_or("command");
        let name = if command == AUTHORIZED_KEYS_SCRIPT {
            "editing authorized_keys"
        } else {
            name
        };
        let stderr = self.redactor.redact(&out.stderr);
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
        Err(Error::Remote(format!(
            "{name} on {} failed with {status}: {excerpt}",
            target.name
        )))
    }

    /// Writes one vault-step record (never a secret). If it cannot be written the rotation
    /// stops (fail closed).
    async fn step(
        &self,
        action: &str,
        credential: &str,
        target: &str,
        detail: String,
    ) -> Result<(), Error> {
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
        self.services
            .audit
            .append(entry)
            .await
            .map(drop)
            .map_err(|e| internal("writing the rotation's audit record", e))
    }

    fn credential_info(&self, name: &str) -> Result<CredentialInfo, Error> {
        match self.services.vault.info(name) {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(Error::NotFound(format!("no credential named '{name}'"))),
            Err(e) => Err(vault_error("looking up the credential", e)),
        }
    }

    fn target(&self, name: &str) -> Result<Target, Error> {
        match self.services.targets.get(name) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(Error::NotFound(format!("no target named '{name}'"))),
            Err(e) => Err(internal("looking up the target", e)),
        }
    }

    /// A version's secret (the current one for `None`), registered for redaction first.
    fn vault_secret(&self, name: &str, version: Option<u32>) -> Result<Secret, Error> {
        let vault = &self.services.vault;
        let secret = match version {
            None => vault.secret(name),
            Some(v) => vault.secret_version(name, v),
        }
        .map_err(|e| vault_error("reading the credential", e))?;
        self.redact(secret.expose())?;
        Ok(secret)
    }

    fn redact(&self, secret: &[u8]) -> Result<(), Error> {
        self.redactor
            .add_secret(secret)
            .map_err(|e| internal("registering the secret for redaction", e))
    }
}

impl HostContext {
    /// `credentials.rotate`: one host call through the spine (intent, then outcome), plus
    /// the vault-step records the [`Rotator`] writes; a denial audited like any other.
    pub(crate) async fn rotate_call(
        &mut self,
        account: Resource<CredentialHandle>,
        target: String,
        admin: Resource<CredentialHandle>,
        policy: WitPolicy,
    ) -> wasmtime::Result<Result<Rotation, Error>> {
        let (account, admin) = (self.handle(&account)?, self.handle(&admin)?);
        let call = HostCall {
            action: "credentials.rotate",
            capability: CAPABILITY,
            arg_bytes: target.len() + policy.exclude.len(),
            request: Request::Rotate {
                target: &target,
                credential: account.name(),
                admin: admin.name(),
            },
            subject: Subject {
                target: Some(target.clone()),
                credential: Some(account.name().to_string()),
                detail: Some(format!("admin credential {}", admin.name())),
            },
            // Both handles act on the target: the account's secret changes there and the
            // admin logs in there, so both leases must allow this target.
            leases: vec![&account, &admin],
            limit: None,
            credential_use: None,
            refusal: None,
            effect: Effect::World,
        };
        let mut admitted = match self.admit(call).await? {
            Ok(admitted) => admitted,
            Err(refused) => return Ok(Err(refused)),
        };
        let actor = Actor {
            name: self.identity.actor.clone(),
            run_id: Some(self.identity.run_id.clone()),
        };
        let admin_secret = admitted.credential(1);
        let result = self
            .act(async |acting| {
                rotate_granted(acting, actor, &account, &target, admin_secret?, policy).await
            })
            .await;
        if let Ok(done) = &result {
            admitted.subject.detail = Some(format!(
                "admin credential {}; version {} is current",
                admin.name(),
                done.version
            ));
        }
        self.conclude(admitted, result).await
    }
}

impl Redact for Rotation {
    fn redact(self, _: &Redactor) -> Self {
        self
    }
}

async fn rotate_granted(
    acting: super::call::Acting,
    actor: Actor,
    account: &CredentialHandle,
    target: &str,
    admin: Arc<SshCredential>,
    policy: WitPolicy,
) -> Result<Rotation, Error> {
    let policy = PasswordPolicy {
        length: policy.length,
        lowercase: policy.lowercase,
        uppercase: policy.uppercase,
        digits: policy.digits,
        symbols: policy.symbols,
        exclude: policy.exclude,
    };
    let is_password = acting
        .services
        .vault
        .info(account.name())
        .ok()
        .flatten()
        .is_none_or(|i| i.kind == CredentialKind::Password);
    if is_password {
        policy
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("password policy: {e}")))?;
    }
    let rotator = Rotator::new(acting.services.clone(), acting.redactor.clone(), actor);
    let done = rotator
        .rotate(account.name(), target, &admin, &policy)
        .await?;
    Ok(Rotation {
        credential: done.credential,
        target: done.target,
        version: done.version,
    })
}

/// Builds the SSH credential for the current version of a vault credential, registering
/// the secret with `redactor` first. For callers outside a run
/// (`warden credential reconcile`), which have no [`HostContext`].
pub fn vault_credential(
    services: &Services,
    redactor: &Redactor,
    name: &str,
) -> Result<Arc<SshCredential>, Error> {
    let info = match services.vault.info(name) {
        Ok(Some(info)) => info,
        Ok(None) => return Err(Error::NotFound(format!("no credential named '{name}'"))),
        Err(e) => return Err(vault_error("looking up the credential", e)),
    };
    let secret = services
        .vault
        .secret(name)
        .map_err(|e| vault_error("reading the credential", e))?;
    redactor
        .add_secret(secret.expose())
        .map_err(|e| internal("registering the secret for redaction", e))?;
    let text = secret_text(&secret)?;
    Ok(Arc::new(SshCredential {
        id: info.name,
        username: info.username,
        auth: auth_of(info.kind, text.as_str()),
    }))
}

/// `kind: message` of a guest-visible error, for callers outside a run.
pub fn describe(error: &Error) -> String {
    super::types::describe(error)
}

#[derive(Clone, Copy)]
enum KeyEdit {
    Add,
    Remove,
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

/// Generates the new secret for a credential of `kind`.
fn generate(
    kind: CredentialKind,
    policy: &PasswordPolicy,
    account: &str,
) -> Result<NewSecret, Error> {
    match kind {
        CredentialKind::Password => {
            let bytes = password::generate(policy)
                .map_err(|e| Error::InvalidArgument(format!("password policy: {e}")))?;
            // Printable ASCII by construction.
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| Error::Internal("generated password is not text".into()))?;
            Ok(NewSecret {
                stored: Zeroizing::new(text),
                public_line: None,
            })
        }
        CredentialKind::SshKey => {
            let mut key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
                .map_err(|e| internal("generating an ed25519 key", e))?;
            key.set_comment(format!("warden:{account}"));
            let stored = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| internal("encoding the new key", e))?;
            let public_line = key
                .public_key()
                .to_openssh()
                .map_err(|e| internal("encoding the new public key", e))?;
            Ok(NewSecret {
                stored: Zeroizing::new(stored.to_string()),
                public_line: Some(public_line),
            })
        }
    }
}

/// `ssh-ed25519 AAAA…` of a stored private key (without comment).
fn public_line_of(secret: &Secret) -> Result<String, Error> {
    let text = secret_text(secret)?;
    let key = decode_secret_key(text.as_str(), None).map_err(|_| {
        Error::InvalidArgument("the credential's secret is not an unencrypted OpenSSH key".into())
    })?;
    PublicKey::new(key.public_key().key_data().clone(), "")
        .to_openssh()
        .map_err(|e| internal("encoding the old public key", e))
}

fn secret_text(secret: &Secret) -> Result<Zeroizing<String>, Error> {
    String::from_utf8(secret.expose().to_vec())
        .map(Zeroizing::new)
        .map_err(|_| Error::InvalidArgument("the credential's secret is not UTF-8 text".into()))
}

fn auth_of(kind: CredentialKind, secret: &str) -> SshAuth {
    let secret = SecretString::from(secret.to_string());
    match kind {
        CredentialKind::Password => SshAuth::Password(secret),
        CredentialKind::SshKey => SshAuth::PrivateKey(secret),
    }
}

/// `chpasswd` reads `user:password` lines: a colon or whitespace in the name would change
/// which account it sets.
fn check_username(username: &str) -> Result<(), Error> {
    if username.is_empty()
        || username
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::InvalidArgument(
            "the credential's username cannot be rotated (empty, or has ':' or whitespace)".into(),
        ));
    }
    Ok(())
}

fn vault_error(context: &str, error: VaultError) -> Error {
    match error {
        VaultError::NotFound(name) => Error::NotFound(format!("no credential named '{name}'")),
        VaultError::TooManyPending(name) => Error::Unavailable(format!(
            "credential '{name}' has too many unfinished rotations; run `warden credential reconcile`"
        )),
        other => internal(context, other),
    }
}

fn with_suffix(error: Error, suffix: &str) -> Error {
    match error {
        Error::Denied(m) => Error::Denied(m + suffix),
        Error::NotFound(m) => Error::NotFound(m + suffix),
        Error::InvalidArgument(m) => Error::InvalidArgument(m + suffix),
        Error::Unavailable(m) => Error::Unavailable(m + suffix),
        Error::Unreachable(m) => Error::Unreachable(m + suffix),
        Error::ConnectionRefused(m) => Error::ConnectionRefused(m + suffix),
        Error::HostKeyMismatch(m) => Error::HostKeyMismatch(m + suffix),
        Error::AuthFailed(m) => Error::AuthFailed(m + suffix),
        Error::Timeout(m) => Error::Timeout(m + suffix),
        Error::Remote(m) => Error::Remote(m + suffix),
        Error::Internal(m) => Error::Internal(m + suffix),
    }
}

/// Aborts the process at fault point `name` when [`CRASH_ENV`] names it. Debug builds only:
/// this exists for the crash-safety tests and is compiled out of release builds.
fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == name) {
        eprintln!("warden: test fault point {name} reached; aborting");
        std::process::abort();
    }
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_usernames_chpasswd_would_misread() {
        assert!(check_username("alice").is_ok());
        for bad in ["", "a:b", "a b", "a\nb", "a\tb"] {
            assert!(
                matches!(check_username(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_key_round_trips_to_its_public_line() {
        let new = generate(CredentialKind::SshKey, &PasswordPolicy::default(), "acct").unwrap();
        let line = new.public_line.clone().unwrap();
        assert!(line.starts_with("ssh-ed25519 ") && line.ends_with(" warden:acct"));
        let stored = Secret::from_bytes(new.stored.as_bytes().to_vec());
        let bare = public_line_of(&stored).unwrap();
        assert!(line.starts_with(&bare), "{line} vs {bare}");
    }

    #[test]
    fn password_secret_follows_the_policy() {
        let policy = PasswordPolicy {
            length: 40,
            symbols: false,
            ..PasswordPolicy::default()
        };
        let new = generate(CredentialKind::Password, &policy, "acct").unwrap();
        assert_eq!(new.stored.len(), 40);
        assert!(new.stored.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(new.public_line.is_none());
        let bad = PasswordPolicy {
            length: 4,
            ..policy
        };
        assert!(matches!(
            generate(CredentialKind::Password, &bad, "acct").err(),
            Some(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn key_script_keeps_its_data_off_the_command_line() {
        assert!(!AUTHORIZED_KEYS_SCRIPT.contains("ssh-ed25519"));
        assert!(AUTHORIZED_KEYS_SCRIPT.contains("IFS= read -r key"));
    }
}
