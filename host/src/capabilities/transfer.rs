//! `transfer`: files to and from targets over SFTP.
//!
//! Threat: a task reading or writing files outside what its process was granted. Paths
//! must be absolute; they are normalised lexically (so `..` cannot climb out) and must lie
//! under a granted prefix. Then the target resolves the path (`ssh::SshPool::resolve`:
//! the parent's `realpath`, no link as the final component), and the resolved path — the
//! only one acted on — must lie under a granted prefix too, so a symlink inside the prefix
//! cannot lead outside it. Sizes are capped both ways by the per-call byte limit; downloads
//! stream and stop at the cap. Downloaded bytes are redacted like command output.

/// The WIT interface this file implements, as the manifest and policies name it.
const CAPABILITY: &str = "transfer";

use wasmtime::component::Resource;

use crate::audit::Decision;
use crate::runtime::bindings::transfer::Host;
use crate::runtime::bindings::types::Error;
use crate::ssh::{Access, PendingTransfer, SshCredential};

use super::credentials::CredentialHandle;
use super::grant::{Denial, Request, normalize_path};
use super::leases::{Refusal, with_lease};
use super::ssh::redact_error;
use super::types::{from_ssh, internal};
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
    /// or the file's contents (download).
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
        let call = self.begin(action, arg_bytes).await?;
        let handle = self.handle(&credential)?;
        let mut subject = Subject {
            target: Some(target.clone()),
            credential: Some(handle.name().to_string()),
            detail: Some(format!("path: {path}")),
        };
        let Some(normal) = normalize_path(&path) else {
            let e = Error::InvalidArgument("the path must be absolute and contain no NUL".into());
            return self.finish(call, subject, Decision::Allowed, Err(e)).await;
        };
        subject.detail = Some(format!("path: {normal}"));
        let request = Request::Transfer {
            target: &target,
            credential: handle.name(),
            path: &normal,
        };
        if let Err(denial) = self.authorize(CAPABILITY, &request).await {
            return self.deny(call, subject, denial).await;
        }
        if let Direction::Upload { mode, .. } = direction
            && mode > MAX_MODE
        {
            let e = Error::InvalidArgument(format!("mode {mode:o} is above {MAX_MODE:o}"));
            return self.finish(call, subject, Decision::Allowed, Err(e)).await;
        }
        subject.detail = Some(with_lease(format!("path: {normal}"), &handle));
        let cred = match self.ssh_credential(&handle, &target) {
            Ok(cred) => cred,
            Err(Refusal::Denied(denial)) => return self.deny(call, subject, denial).await,
            Err(Refusal::Failed(e)) => {
                return self.finish(call, subject, Decision::Allowed, Err(e)).await;
            }
        };
        // Resolve on the target, authorise the resolved path, then act on exactly that path.
        let pending = match self.resolve(&target, &cred, &normal, &direction).await {
            Ok(pending) => pending,
            Err(e) => return self.finish(call, subject, Decision::Allowed, Err(e)).await,
        };
        let resolved = pending.path().to_string();
        let shown = if resolved == normal {
            format!("path: {normal}")
        } else {
            format!("path: {normal} (resolves to {resolved})")
        };
        subject.detail = Some(with_lease(shown.clone(), &handle));
        let request = Request::Transfer {
            target: &target,
            credential: handle.name(),
            path: &resolved,
        };
        if let Err(denial) = self.authorize(CAPABILITY, &request).await {
            let denial = Denial {
                detail: format!(
                    "{normal} resolves to {resolved} on the target; {}",
                    denial.detail
                ),
                ..denial
            };
            return self.deny(call, subject, denial).await;
        }
        let result = self.move_bytes(pending, direction).await;
        if let Ok((bytes, _)) = &result {
            subject.detail = Some(with_lease(format!("{shown}; {bytes} bytes"), &handle));
        }
        self.finish(call, subject, Decision::Allowed, result).await
    }

    /// Asks the target where `path` really leads (nothing is read or written yet).
    async fn resolve(
        &mut self,
        target_name: &str,
        cred: &SshCredential,
        path: &str,
        direction: &Direction<'_>,
    ) -> Result<PendingTransfer, Error> {
        let target = match self.services.targets.get(target_name) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(Error::NotFound(format!("no target named '{target_name}'"))),
            Err(e) => return Err(internal("looking up the target", e)),
        };
        let access = match direction {
            Direction::Upload { .. } => Access::Write,
            Direction::Download => Access::Read,
        };
        let resolved = self.services.ssh.resolve(&target, cred, path, access).await;
        resolved.map_err(|e| redact_error(&self.redactor, from_ssh(e)))
    }

    async fn move_bytes(
        &mut self,
        pending: PendingTransfer,
        direction: Direction<'_>,
    ) -> Result<(u64, Vec<u8>), Error> {
        let result = match direction {
            Direction::Upload { contents, mode } => pending
                .upload(contents, mode)
                .await
                .map(|n| (n, Vec::new())),
            Direction::Download => {
                let cap = u64::try_from(self.limits.call_bytes).unwrap_or(u64::MAX);
                pending
                    .download(cap)
                    .await
                    .map(|data| (data.len() as u64, self.redactor.redact(&data)))
            }
        };
        result.map_err(|e| redact_error(&self.redactor, from_ssh(e)))
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
