//! `ssh`: commands on targets, one target or many at once.
//!
//! The guest names a target and passes a credential handle; the host checks the grant
//! (credential, target, command pattern) and the handle's lease, looks up the target's
//! pinned host key, fetches
//! the secret, runs the command through the pooled SSH layer (which feeds any sudo
//! password on stdin, never argv), redacts every secret the run has touched from the
//! output, and audits one record per target.

/// The WIT interface this file implements, as the manifest and policies name it.
const CAPABILITY: &str = "ssh";

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use wasmtime::component::Resource;

use crate::audit::{AuditEntry, Decision};
use crate::redact::Redactor;
use crate::runtime::RunStop;
use crate::runtime::bindings::ssh::{ExecOptions, ExecOutput, Host, TargetResult};
use crate::runtime::bindings::types::Error;
use crate::ssh::{ExecRequest, ExecResult, SshCredential};

use super::credentials::CredentialHandle;
use super::grant::Request;
use super::leases::{Refusal, with_lease};
use super::types::{describe, from_ssh, internal};
use super::{HostContext, Services, Subject};

/// The longest a command may run, whatever the guest asks. Blocks a guest that parks an
/// SSH channel (and a pooled connection slot) forever.
pub const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);
/// The timeout when the guest gives none.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl HostContext {
    fn exec_request(&self, command: &str, options: &ExecOptions) -> ExecRequest {
        let timeout = options
            .timeout_ms
            .map_or(DEFAULT_COMMAND_TIMEOUT, |ms| {
                Duration::from_millis(u64::from(ms))
            })
            .min(MAX_COMMAND_TIMEOUT);
        ExecRequest {
            command: command.to_string(),
            sudo: options.sudo,
            stdin: options.stdin.clone(),
            timeout,
            output_cap: self.limits.output_bytes,
        }
    }
}

/// Runs one already-authorised command on one target; the result is redacted.
async fn exec_on(
    services: &Services,
    redactor: &Redactor,
    target_name: &str,
    credential: &SshCredential,
    request: &ExecRequest,
) -> Result<ExecOutput, Error> {
    let target = match services.targets.get(target_name) {
        Ok(Some(t)) => t,
        Ok(None) => return Err(Error::NotFound(format!("no target named '{target_name}'"))),
        Err(e) => return Err(internal("looking up the target", e)),
    };
    let result = services.ssh.exec(&target, credential, request).await;
    result
        .map(|r| redact_output(redactor, r))
        .map_err(|e| redact_error(redactor, from_ssh(e)))
}

fn redact_output(redactor: &Redactor, r: ExecResult) -> ExecOutput {
    ExecOutput {
        exit_status: r.exit_status,
        exit_signal: r.exit_signal,
        stdout: redact_stream(redactor, &r.stdout, r.stdout_truncated),
        stderr: redact_stream(redactor, &r.stderr, r.stderr_truncated),
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
    }
}

/// A cut stream may end in the first half of a secret: it loses a fixed tail instead (never
/// one that depends on what the bytes are, which would be an oracle; see `crate::redact`).
fn redact_stream(redactor: &Redactor, data: &[u8], truncated: bool) -> Vec<u8> {
    if truncated {
        redactor.redact_truncated(data)
    } else {
        redactor.redact(data)
    }
}

/// Error messages can quote remote output; they get the same redaction as output.
pub(crate) fn redact_error(redactor: &Redactor, error: Error) -> Error {
    let r = |m: String| redactor.redact_str(&m);
    match error {
        Error::Denied(m) => Error::Denied(r(m)),
        Error::NotFound(m) => Error::NotFound(r(m)),
        Error::InvalidArgument(m) => Error::InvalidArgument(r(m)),
        Error::Unavailable(m) => Error::Unavailable(r(m)),
        Error::Unreachable(m) => Error::Unreachable(r(m)),
        Error::ConnectionRefused(m) => Error::ConnectionRefused(r(m)),
        Error::HostKeyMismatch(m) => Error::HostKeyMismatch(r(m)),
        Error::AuthFailed(m) => Error::AuthFailed(r(m)),
        Error::Timeout(m) => Error::Timeout(r(m)),
        Error::Remote(m) => Error::Remote(r(m)),
        Error::Internal(m) => Error::Internal(r(m)),
    }
}

/// What an exec call acts on, before its outcome is known.
fn exec_subject(target: &str, credential: &str, command: &str, options: &ExecOptions) -> Subject {
    let sudo = if options.sudo { " (sudo)" } else { "" };
    Subject {
        target: Some(target.to_string()),
        credential: Some(credential.to_string()),
        detail: Some(format!("command{sudo}: {command}")),
    }
}

fn exec_detail(command: &str, options: &ExecOptions, result: &Result<ExecOutput, Error>) -> String {
    let sudo = if options.sudo { " (sudo)" } else { "" };
    match result {
        Ok(out) => match (&out.exit_status, &out.exit_signal) {
            (Some(code), _) => format!("command{sudo}: {command}; exit status {code}"),
            (None, Some(signal)) => format!("command{sudo}: {command}; killed by {signal}"),
            (None, None) => format!("command{sudo}: {command}; no exit status"),
        },
        Err(_) => format!("command{sudo}: {command}"),
    }
}

impl Host for HostContext {
    async fn exec(
        &mut self,
        target: String,
        credential: Resource<CredentialHandle>,
        command: String,
        options: ExecOptions,
    ) -> wasmtime::Result<Result<ExecOutput, Error>> {
        let stdin_len = options.stdin.as_ref().map_or(0, Vec::len);
        let call = self
            .begin("ssh.exec", target.len() + command.len() + stdin_len)
            .await?;
        let handle = self.handle(&credential)?;
        let mut subject = exec_subject(&target, handle.name(), &command, &options);
        let request = Request::Exec {
            target: &target,
            credential: handle.name(),
            command: &command,
        };
        if let Err(denial) = self.authorize(CAPABILITY, &request).await {
            return self.deny(call, subject, denial).await;
        }
        subject.detail = subject.detail.map(|d| with_lease(d, &handle));
        let result = match self.ssh_credential(&handle, &target) {
            Ok(cred) => {
                let req = self.exec_request(&command, &options);
                exec_on(&self.services, &self.redactor, &target, &cred, &req).await
            }
            Err(Refusal::Denied(denial)) => return self.deny(call, subject, denial).await,
            Err(Refusal::Failed(e)) => Err(e),
        };
        let detail = exec_detail(&command, &options, &result);
        subject.detail = Some(with_lease(detail, &handle));
        self.finish(call, subject, Decision::Allowed, result).await
    }

    async fn exec_many(
        &mut self,
        targets: Vec<String>,
        credential: Resource<CredentialHandle>,
        command: String,
        options: ExecOptions,
    ) -> wasmtime::Result<Vec<TargetResult>> {
        // The fan-out's bytes are checked once, on its first target; each target then
        // counts as one host call with one audit record of its own.
        let names_len: usize = targets.iter().map(String::len).sum();
        let mut call_bytes = names_len + command.len() + options.stdin.as_ref().map_or(0, Vec::len);
        if targets.is_empty() {
            let call = self.begin("ssh.exec-many", call_bytes).await?;
            let subject = Subject {
                detail: Some("no targets".into()),
                ..Subject::default()
            };
            self.finish(call, subject, Decision::Allowed, Ok(()))
                .await?
                .ok();
            return Ok(Vec::new());
        }
        let handle = self.handle(&credential)?;
        // The secret is fetched once, and only after the first target passes the grant.
        let mut fetched: Option<Result<Arc<SshCredential>, Error>> = None;
        let req = Arc::new(self.exec_request(&command, &options));
        let mut pending = Vec::with_capacity(targets.len());
        let mut results: Vec<Option<TargetResult>> = vec![None; targets.len()];
        for (i, target) in targets.iter().enumerate() {
            let call = self
                .begin("ssh.exec-many", std::mem::take(&mut call_bytes))
                .await?;
            let mut subject = exec_subject(target, handle.name(), &command, &options);
            subject.detail = subject.detail.map(|d| with_lease(d, &handle));
            let request = Request::Exec {
                target,
                credential: handle.name(),
                command: &command,
            };
            // The lease is checked for every target; the secret is fetched only once.
            let checked = match self.authorize(CAPABILITY, &request).await {
                Ok(()) => self.use_lease(&handle, target),
                Err(denial) => Err(denial),
            };
            if let Err(denial) = checked {
                let outcome = self.deny(call, subject, denial).await?;
                results[i] = Some(TargetResult {
                    target: target.clone(),
                    outcome,
                });
                continue;
            }
            let cred = match &fetched {
                Some(c) => c.clone(),
                None => fetched.insert(self.fetch_secret(&handle)).clone(),
            };
            let cred = match cred {
                Ok(c) => c,
                Err(e) => {
                    let outcome = self
                        .finish(call, subject, Decision::Allowed, Err(e))
                        .await?;
                    results[i] = Some(TargetResult {
                        target: target.clone(),
                        outcome,
                    });
                    continue;
                }
            };
            pending.push((i, target.clone(), cred, call.started));
        }
        let bound = self.services.ssh.config().max_concurrency.max(1);
        let services = self.services.clone();
        let redactor = self.redactor.clone();
        let identity = self.identity.clone();
        let lease_id = handle.lease_id().to_string();
        let fanned =
            futures::stream::iter(pending.into_iter().map(|(i, target, cred, started)| {
                let (services, redactor, identity, req) = (
                    services.clone(),
                    redactor.clone(),
                    identity.clone(),
                    req.clone(),
                );
                let (command, options) = (command.clone(), options.clone());
                let lease_id = lease_id.clone();
                async move {
                    let outcome = exec_on(&services, &redactor, &target, &cred, &req).await;
                    let detail = exec_detail(&command, &options, &outcome);
                    let entry = fanout_entry(
                        &identity,
                        &redactor,
                        &target,
                        cred.id.as_str(),
                        started,
                        format!("{detail}; lease {lease_id}"),
                        &outcome,
                    );
                    let audited = services
                        .audit
                        .append(entry)
                        .await
                        .map_err(|e| e.to_string());
                    (i, TargetResult { target, outcome }, audited)
                }
            }))
            .buffer_unordered(bound)
            .collect::<Vec<_>>()
            .await;
        for (i, result, audited) in fanned {
            if let Err(e) = audited {
                return Err(self.end_run(RunStop::AuditFailed(e)));
            }
            results[i] = Some(result);
        }
        Ok(results.into_iter().flatten().collect())
    }
}

fn fanout_entry(
    identity: &super::RunIdentity,
    redactor: &Redactor,
    target: &str,
    credential: &str,
    started: Instant,
    detail: String,
    outcome: &Result<ExecOutput, Error>,
) -> AuditEntry {
    AuditEntry {
        run_id: Some(identity.run_id.clone()),
        actor: identity.actor.clone(),
        action: "ssh.exec-many".to_string(),
        target: Some(target.to_string()),
        credential: Some(credential.to_string()),
        decision: Decision::Allowed,
        outcome: match outcome {
            Ok(_) => "ok".to_string(),
            Err(e) => redactor.redact_str(&describe(e)),
        },
        duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        detail: Some(redactor.redact_str(&detail)),
    }
}
