//! `credentials.rotate`: the capability glue over the rotation engine ([`crate::rotation`]).
//!
//! Threat: a task rotating more than its grant allows, or steering how. This file checks the
//! grant and both handles' leases, maps the guest's `password-policy` to the engine's
//! request (which the grant's [`crate::rotation::RotationPolicy`] then raises), calls the
//! engine, and maps its error to the guest's `error`. A non-admin admin handle is audited as
//! a denial (rule `rotation.admin-credential`), like any other refusal. The audit record of
//! the call is written here; the engine writes the vault-step records.

use wasmtime::component::Resource;

use crate::audit::Decision;
use crate::rotation::{Actor, Backends, RotationError, Rotator, TargetFailure};
use crate::runtime::bindings::credentials::{PasswordPolicy as WitPolicy, Rotation};
use crate::runtime::bindings::types::Error;
use crate::vault::password::PasswordPolicy;

use super::credentials::CredentialHandle;
use super::grant::{Denial, Request};
use super::{HostContext, Services, Subject};

/// The WIT interface `rotate` belongs to, as manifests and policies name it.
const CAPABILITY: &str = "credentials";

/// The rule a non-admin admin handle is refused under, in the guest error and the audit.
pub const ADMIN_RULE: &str = "rotation.admin-credential";

impl HostContext {
    /// `credentials.rotate`: one audit record for the call (plus the vault-step records the
    /// engine writes), a denial audited like any other.
    pub(crate) async fn rotate_call(
        &mut self,
        account: Resource<CredentialHandle>,
        target: String,
        admin: Resource<CredentialHandle>,
        policy: WitPolicy,
    ) -> wasmtime::Result<Result<Rotation, Error>> {
        let call = self
            .begin("credentials.rotate", target.len() + policy.exclude.len())
            .await?;
        let (account, admin) = (self.handle(&account)?, self.handle(&admin)?);
        let mut subject = Subject {
            target: Some(target.clone()),
            credential: Some(account.name().to_string()),
            detail: Some(format!("admin credential {}", admin.name())),
        };
        let request = Request::Rotate {
            target: &target,
            credential: account.name(),
            admin: admin.name(),
        };
        if let Err(denial) = self.authorize(CAPABILITY, &request).await {
            return self.deny(call, subject, denial).await;
        }
        // Both handles act on the target: the account's secret changes there and the admin
        // logs in there, so both leases must allow this target.
        for handle in [&account, &admin] {
            if let Err(denial) = self.use_lease(handle, &target) {
                return self.deny(call, subject, denial).await;
            }
        }
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
        let rotator = Rotator::new(backends(&self.services), self.redactor.clone(), actor);
        let granted = &self.grant.rotation_policy;
        let result = rotator
            .rotate(account.name(), &target, admin.name(), &requested, granted)
            .await;
        match result {
            Ok(done) => {
                subject.detail = Some(format!(
                    "admin credential {}; version {} is current",
                    admin.name(),
                    done.version
                ));
                let rotation = Rotation {
                    credential: done.credential,
                    target: done.target,
                    version: done.version,
                };
                self.finish(call, subject, Decision::Allowed, Ok(rotation))
                    .await
            }
            Err(e @ RotationError::NotAdmin(_)) => {
                let denial = Denial {
                    rule: ADMIN_RULE,
                    detail: e.to_string(),
                    policy: None,
                };
                self.deny(call, subject, denial).await
            }
            Err(e) => {
                let error = to_guest(e);
                self.finish(call, subject, Decision::Allowed, Err(error))
                    .await
            }
        }
    }
}

/// The engine's view of the host's services.
pub(crate) fn backends(services: &Services) -> Backends {
    Backends {
        audit: services.audit.clone(),
        vault: services.vault.clone(),
        targets: services.targets.clone(),
        ssh: services.ssh.clone(),
    }
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
