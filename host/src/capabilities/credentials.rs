//! `credentials`: opaque handles to vault credentials.
//!
//! Threat: a task that tries to read a secret. The guest gets a [`CredentialHandle`] that
//! holds the credential's name and username only; the secret is fetched from the vault by
//! [`HostContext::ssh_credential`] at the moment the host authenticates, registered with
//! the run's redactor, and never written to guest memory. Each handle is bound to a lease
//! ([`super::leases`]) that every use checks first.

use std::sync::Arc;

use secrecy::SecretString;
use wasmtime::component::Resource;

use crate::capabilities::bindings::credentials::{
    CredentialKind, Host, HostCredential, PasswordPolicy, Rotation,
};
use crate::capabilities::bindings::types::Error;
use crate::redact::Redactor;
use crate::runtime::limits::LimitExceeded;
use crate::ssh::{SshAuth, SshCredential};
use crate::vault;

use super::call::{Effect, HostCall, Redact};
use super::grant::Request;
use super::leases::Refusal;
use super::server::LinkError;
use super::types::internal;
use super::{HostContext, Services, Subject};

/// The WIT interface this file implements, as the manifest and policies name it.
const CAPABILITY: &str = "credentials";

impl Redact for Resource<CredentialHandle> {
    fn redact(self, _: &Redactor) -> Self {
        self
    }
}

/// What the guest's `credential` resource stands for on the host. No secret inside.
#[derive(Clone, Debug)]
pub struct CredentialHandle {
    name: String,
    username: String,
    kind: vault::CredentialKind,
    /// An admin credential ([`super::admin`]): typed only for privileged operations.
    admin: bool,
    /// The lease every use of this handle is checked against.
    lease_id: String,
}

impl CredentialHandle {
    /// The credential's vault name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account the credential logs in as.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Password or SSH key.
    pub fn kind(&self) -> vault::CredentialKind {
        self.kind
    }

    /// Whether this is an admin credential ([`super::admin`]).
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// The id of the lease this handle is bound to.
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }
}

impl HostContext {
    /// The handle behind a guest resource. The component model only lets a guest pass
    /// handles it owns, so a missing entry is a host bug: trap.
    pub(crate) fn handle(
        &self,
        r: &Resource<CredentialHandle>,
    ) -> wasmtime::Result<CredentialHandle> {
        Ok(self.handles.get(r)?.clone())
    }

    /// The handle for credential `name`, bound to its lease; the lease's id goes into the
    /// acquire call's audit record (`detail`).
    async fn acquire_checked(
        &mut self,
        name: &str,
        detail: &mut Option<String>,
    ) -> Result<CredentialHandle, Refusal> {
        let info = match self.services.server.credential(name) {
            Ok(Some(info)) => info,
            Ok(None) => {
                let e = Error::NotFound(format!("no credential named '{name}'"));
                return Err(Refusal::Failed(e));
            }
            Err(e) => return Err(Refusal::Failed(internal("looking up the credential", e))),
        };
        let lease = self.lease_for_acquire(&info.name).await?;
        *detail = Some(lease.detail());
        let handle = CredentialHandle {
            name: info.name,
            username: info.username,
            kind: info.kind,
            admin: info.admin,
            lease_id: lease.id,
        };
        // Registered with the run's redactor now, not only at first use: every later record,
        // result or output of the run (a refused command that quotes it, too) is redacted
        // for this credential.
        fetch_secret(&self.services, &self.redactor, &handle, None)
            .await
            .map_err(Refusal::Failed)?;
        Ok(handle)
    }

    /// Audits a call on a handle (its name, username or kind) and returns `value`.
    async fn handle_query<T>(
        &mut self,
        action: &'static str,
        r: &Resource<CredentialHandle>,
        value: impl FnOnce(&CredentialHandle) -> T,
    ) -> wasmtime::Result<T> {
        let handle = self.handle(r)?;
        let call = HostCall {
            subject: Subject {
                credential: Some(handle.name.clone()),
                ..Subject::default()
            },
            ..HostCall::local(action, CAPABILITY, 0)
        };
        // A handle exists only if `acquire` passed the same checks, so the answer is given
        // either way; the decision is still audited.
        self.local_call(call).await?;
        Ok(value(&handle))
    }
}

/// Fetches `handle`'s secret from the vault for the SSH layer, registering it (and its
/// encodings) with the run's redactor first. This is the one place a secret leaves the
/// vault on behalf of a run; only an admitted call's act ([`super::call::Acting::secret`])
/// reaches it, after the spine checked the handle's lease.
pub(crate) async fn fetch_secret(
    services: &Services,
    redactor: &Redactor,
    handle: &CredentialHandle,
    target: Option<&str>,
) -> Result<Arc<SshCredential>, Error> {
    let secret = services
        .server
        .secret(handle.lease_id(), &handle.name, target)
        .await
        .map_err(|e| match e {
            LinkError::Denied(why) => Error::Denied(why),
            LinkError::NotFound(name) => Error::NotFound(format!("credential '{name}'")),
            LinkError::Failed(why) => internal("reading the credential", why),
        })?;
    // Registered before use, so no output of this call can carry it unredacted.
    redactor
        .add_secret(secret.expose())
        .map_err(|e| internal("registering the secret for redaction", e))?;
    let text = String::from_utf8(secret.expose().to_vec())
        .map_err(|_| Error::InvalidArgument("the credential's secret is not UTF-8 text".into()))?;
    let text = SecretString::from(text);
    let auth = match handle.kind {
        vault::CredentialKind::Password => SshAuth::Password(text),
        vault::CredentialKind::SshKey => SshAuth::PrivateKey(text),
    };
    Ok(Arc::new(SshCredential {
        id: handle.name.clone(),
        username: handle.username.clone(),
        auth,
    }))
}

impl Host for HostContext {
    async fn acquire(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<CredentialHandle>, Error>> {
        let limit = (self.live_handles >= self.limits.handles).then_some(LimitExceeded::Handles {
            limit: self.limits.handles,
        });
        let call = HostCall {
            action: "credentials.acquire",
            capability: CAPABILITY,
            arg_bytes: name.len(),
            request: Request::Acquire { credential: &name },
            subject: Subject {
                credential: Some(name.clone()),
                ..Subject::default()
            },
            leases: Vec::new(),
            limit,
            credential_use: None,
            refusal: None,
            // Issuing a lease is a durable act: it gets an intent record first.
            effect: Effect::World,
        };
        let mut admitted = match self.admit(call).await? {
            Ok(admitted) => admitted,
            Err(refused) => return Ok(Err(refused)),
        };
        let result = match self
            .acquire_checked(&name, &mut admitted.subject.detail)
            .await
        {
            Ok(handle) => {
                self.live_handles += 1;
                Ok(self.handles.push(handle)?)
            }
            Err(Refusal::Denied(denial)) => return self.conclude_denied(admitted, denial).await,
            Err(Refusal::Failed(e)) => Err(e),
        };
        self.conclude(admitted, result).await
    }

    async fn rotate(
        &mut self,
        account: Resource<CredentialHandle>,
        target: String,
        admin: Resource<CredentialHandle>,
        policy: PasswordPolicy,
    ) -> wasmtime::Result<Result<Rotation, Error>> {
        self.rotate_call(account, target, admin, policy).await
    }
}

impl HostCredential for HostContext {
    async fn name(&mut self, r: Resource<CredentialHandle>) -> wasmtime::Result<String> {
        self.handle_query("credentials.credential.name", &r, |h| h.name.clone())
            .await
    }

    async fn username(&mut self, r: Resource<CredentialHandle>) -> wasmtime::Result<String> {
        self.handle_query("credentials.credential.username", &r, |h| {
            h.username.clone()
        })
        .await
    }

    async fn kind(&mut self, r: Resource<CredentialHandle>) -> wasmtime::Result<CredentialKind> {
        self.handle_query("credentials.credential.kind", &r, |h| match h.kind {
            vault::CredentialKind::Password => CredentialKind::Password,
            vault::CredentialKind::SshKey => CredentialKind::SshKey,
        })
        .await
    }

    async fn drop(&mut self, r: Resource<CredentialHandle>) -> wasmtime::Result<()> {
        self.handles.delete(r)?;
        self.live_handles = self.live_handles.saturating_sub(1);
        Ok(())
    }
}
