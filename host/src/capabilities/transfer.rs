//! `transfer`: files to and from targets over SFTP.
//!
//! Threat: a task reading or writing files outside what its process was granted. Paths
//! must be absolute; they are normalised lexically (so `..` cannot climb out) and must lie
//! under a granted prefix. Then the target resolves the path (`ssh::SshPool::resolve`:
//! the parent's `realpath`, no link as the final component), and the resolved path — the
//! only one acted on — must be permitted too (grant, policy, manifest), so a symlink inside
//! the prefix cannot lead outside it. Sizes are capped both ways by the per-call byte limit;
//! downloads stream and stop at the cap. Downloaded bytes are redacted like command output.

/// The WIT interface this file implements, as the manifest and policies name it.
const CAPABILITY: &str = "transfer";

use wasmtime::component::Resource;

use crate::capabilities::bindings::transfer::Host;
use crate::capabilities::bindings::types::Error;
use crate::ssh::Access;

use super::admin::CredentialUse;
use super::call::{Effect, HostCall};
use super::credentials::CredentialHandle;
use super::grant::{Denial, Request, normalize_path};
use super::leases::with_lease;
use super::types::from_ssh;
use super::{HostContext, Subject};

/// The highest permission bits an upload may set (no setuid/setgid/sticky). Blocks a task
/// that plants a setuid binary.
pub const MAX_MODE: u32 = 0o777;

enum Direction<'a> {
    Upload { contents: &'a [u8], mode: u32 },
    Download,
}

impl HostContext {
    /// Checks path and grant, audits, and moves the bytes. Returns bytes written (upload)
    /// or the file's contents (download, redacted by the spine).
    async fn transfer(
        &mut self,
        action: &'static str,
        target: String,
        credential: Resource<CredentialHandle>,
        path: String,
        direction: Direction<'_>,
    ) -> wasmtime::Result<Result<(u64, Vec<u8>), Error>> {
        let arg_bytes = target.len()
            + path.len()
            + match &direction {
                Direction::Upload { contents, .. } => contents.len(),
                Direction::Download => 0,
            };
        let handle = self.handle(&credential)?;
        let subject = Subject {
            target: Some(target.clone()),
            credential: Some(handle.name().to_string()),
            detail: Some(format!("path: {path}")),
        };
        let invalid = match (normalize_path(&path), &direction) {
            (None, _) => Some("the path must be absolute and contain no NUL".to_string()),
            (Some(_), Direction::Upload { mode, .. }) if *mode > MAX_MODE => {
                Some(format!("mode {mode:o} is above {MAX_MODE:o}"))
            }
            _ => None,
        };
        if let Some(message) = invalid {
            // Refused before anything is checked or touched: one record, nothing acts.
            let call = HostCall {
                subject,
                ..HostCall::local(action, CAPABILITY, arg_bytes)
            };
            return self
                .host_call(call, async |_| Err(Error::InvalidArgument(message)))
                .await;
        }
        let normal = normalize_path(&path).unwrap_or_default();
        let call = HostCall {
            action,
            capability: CAPABILITY,
            arg_bytes,
            request: Request::Transfer {
                target: &target,
                credential: handle.name(),
                path: &normal,
            },
            subject: Subject {
                detail: Some(with_lease(format!("path: {normal}"), &handle)),
                ..subject
            },
            leases: vec![&handle],
            limit: None,
            credential_use: Some(CredentialUse::Transfer),
            refusal: None,
            effect: Effect::World,
        };
        let mut admitted = match self.admit(call).await? {
            Ok(admitted) => admitted,
            Err(refused) => return Ok(Err(refused)),
        };
        // Resolve on the target (nothing is read or written yet), authorise the resolved
        // path, then act on exactly that path.
        let credential = admitted.credential(0);
        let access = match direction {
            Direction::Upload { .. } => Access::Write,
            Direction::Download => Access::Read,
        };
        let resolving = self
            .act(async |acting| {
                let target = acting.target(&target)?;
                let credential = credential?;
                let ssh = &acting.services.ssh;
                let resolved = ssh.resolve(&target, &credential, &normal, access).await;
                resolved.map_err(from_ssh)
            })
            .await;
        let pending = match resolving {
            Ok(pending) => pending,
            Err(e) => return self.conclude(admitted, Err(e)).await,
        };
        let resolved = pending.path().to_string();
        let shown = if resolved == normal {
            format!("path: {normal}")
        } else {
            format!("path: {normal} (resolves to {resolved})")
        };
        admitted.subject.detail = Some(with_lease(shown.clone(), &handle));
        let request = Request::Transfer {
            target: &target,
            credential: handle.name(),
            path: &resolved,
        };
        if let Err(denial) = self.recheck(CAPABILITY, &request).await {
            let denial = Denial {
                detail: format!(
                    "{normal} resolves to {resolved} on the target; {}",
                    denial.detail
                ),
                ..denial
            };
            return self.conclude_denied(admitted, denial).await;
        }
        let cap = u64::try_from(self.limits.call_bytes).unwrap_or(u64::MAX);
        let result = self
            .act(async |_| {
                let moved = match direction {
                    Direction::Upload { contents, mode } => pending
                        .upload(contents, mode)
                        .await
                        .map(|n| (n, Vec::new())),
                    Direction::Download => pending
                        .download(cap)
                        .await
                        .map(|data| (data.len() as u64, data)),
                };
                moved.map_err(from_ssh)
            })
            .await;
        if let Ok((bytes, _)) = &result {
            admitted.subject.detail = Some(with_lease(format!("{shown}; {bytes} bytes"), &handle));
        }
        self.conclude(admitted, result).await
    }
}

impl Host for HostContext {
    async fn upload(
        &mut self,
        target: String,
        credential: Resource<CredentialHandle>,
        path: String,
        contents: Vec<u8>,
        mode: u32,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let direction = Direction::Upload {
            contents: &contents,
            mode,
        };
        let r = self
            .transfer("transfer.upload", target, credential, path, direction)
            .await?;
        Ok(r.map(|(n, _)| n))
    }

    async fn download(
        &mut self,
        target: String,
        credential: Resource<CredentialHandle>,
        path: String,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let r = self
            .transfer(
                "transfer.download",
                target,
                credential,
                path,
                Direction::Download,
            )
            .await?;
        Ok(r.map(|(_, data)| data))
    }
}
