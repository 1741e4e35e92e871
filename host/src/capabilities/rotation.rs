//! `credentials.rotate`: the capability glue over the rotation engine ([`crate::rotation`]).
//!
//! Threat: a task rotating more than its grant allows, or steering how. The call goes through
//! the spine ([`super::call`]): grant, policies and both handles' leases; then this file maps
//! the guest's `password-policy` to the engine's request (which the grant's
//! [`crate::rotation::RotationPolicy`] then raises), calls the engine, and maps its error to
//! the guest's `error`. A non-admin admin handle is refused before anything happens and
//! audited as a denial (rule `rotation.admin-credential`), like any other refusal. The spine
//! writes the call's intent and outcome records; the engine writes the vault-step records.

use wasmtime::component::Resource;

use crate::capabilities::bindings::credentials::{PasswordPolicy as WitPolicy, Rotation};
use crate::capabilities::bindings::types::Error;
use crate::redact::Redactor;
use crate::rotation::{Actor, Backends, RotationError, Rotator, TargetFailure};
use crate::vault::password::PasswordPolicy;

use super::admin::CredentialUse;
use super::call::{Effect, HostCall, Redact};
use super::credentials::CredentialHandle;
use super::grant::{Denial, Request};
use super::{HostContext, Services, Subject};

/// The WIT interface `rotate` belongs to, as manifests and policies name it.
const CAPABILITY: &str = "credentials";

/// The rule a non-admin admin handle is refused under, in the guest error and the audit.
pub const ADMIN_RULE: &str = "rotation.admin-credential";

impl HostContext {
    /// `credentials.rotate`: one host call through the spine (intent, then outcome; plus
    /// the vault-step records the engine writes), a denial audited like any other.
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
            // Both handles act on the target: the admin logs in there and the account's
            // secret changes there, so both leases must allow this target. The admin handle
            // (first) must be an admin credential: refused before anything is generated,
            // stored or sent (the engine checks again).
            leases: vec![&admin, &account],
            limit: None,
            credential_use: Some(CredentialUse::RotationAdmin),
            refusal: None,
            effect: Effect::World,
        };
        let mut admitted = match self.admit(call).await? {
            Ok(admitted) => admitted,
            Err(refused) => return Ok(Err(refused)),
        };
        let requested = PasswordPolicy {
            length: policy.length,
            lowercase: policy.lowercase,
            uppercase: policy.uppercase,
            digits: policy.digits,
            symbols: policy.symbols,
            exclude: policy.exclude,
        };
        let actor = Actor {
            name: self.identity.actor.clone(),
            run_id: Some(self.identity.run_id.clone()),
        };
        let granted = self.grant.rotation_policy.clone();
        let result = self
            .act(async |acting| {
                let Some(backends) = backends(&acting.services) else {
                    return Err(Error::Unavailable(REMOTE_ROTATION.into()));
                };
                let rotator = Rotator::new(backends, acting.redactor, actor);
                let done = rotator
                    .rotate(account.name(), &target, admin.name(), &requested, &granted)
                    .await;
                Ok(done)
            })
            .await;
        match result {
            Ok(Ok(done)) => {
                admitted.subject.detail = Some(format!(
                    "admin credential {}; version {} is current",
                    admin.name(),
                    done.version
                ));
                let rotation = Rotation {
                    credential: done.credential,
                    target: done.target,
                    version: done.version,
                };
                self.conclude(admitted, Ok(rotation)).await
            }
            Ok(Err(e @ RotationError::NotAdmin(_))) => {
                let denial = Denial {
                    rule: ADMIN_RULE,
                    detail: e.to_string(),
                    policy: None,
                };
                self.conclude_denied(admitted, denial).await
            }
            Ok(Err(e)) => self.conclude(admitted, Err(to_guest(e))).await,
            Err(stopped) => self.conclude(admitted, Err(stopped)).await,
        }
    }
}

impl Redact for Rotation {
    fn redact(self, _: &Redactor) -> Self {
        self
    }
}

/// Why a rotation on a remote bridge is refused: the rotation engine commits new secret
/// versions to the vault in the same process as it sets them on the target, and a remote
/// bridge has no vault.
pub const REMOTE_ROTATION: &str = "password rotation runs only on the embedded bridge \
     (the server's zone); this run executes on a remote bridge";

/// The engine's view of the host's services; none on a remote bridge.
pub(crate) fn backends(services: &Services) -> Option<Backends> {
    let local = services.server.local()?;
    Some(Backends {
        audit: local.audit.clone(),
        vault: local.vault.clone(),
        targets: services.targets.clone(),
        ssh: services.ssh.clone(),
    })
}

/// The engine's error as the guest's, case for case (a given-up rotation keeps the case
/// of its cause).
fn to_guest(error: RotationError) -> Error {
    case(&error)(error.to_string())
}

fn case(error: &RotationError) -> fn(String) -> Error {
    match error {
        RotationError::NotAdmin(_) => Error::Denied,
        RotationError::NotFound(_) => Error::NotFound,
        RotationError::InvalidArgument(_) | RotationError::Policy(_) => Error::InvalidArgument,
        RotationError::Busy(_) => Error::Unavailable,
        RotationError::Target { kind, .. } => match kind {
            TargetFailure::Unreachable => Error::Unreachable,
            TargetFailure::ConnectionRefused => Error::ConnectionRefused,
            TargetFailure::HostKeyMismatch => Error::HostKeyMismatch,
            TargetFailure::AuthFailed => Error::AuthFailed,
            TargetFailure::Timeout => Error::Timeout,
            TargetFailure::Remote => Error::Remote,
        },
        RotationError::Failed { source, .. } => case(source),
        RotationError::Internal(_) => Error::Internal,
    }
}
