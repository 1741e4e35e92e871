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

use std::time::Duration;

use futures::StreamExt;
use wasmtime::component::Resource;

use crate::capabilities::bindings::ssh::{ExecOptions, ExecOutput, Host, TargetResult};
use crate::capabilities::bindings::types::Error;
use crate::redact::Redactor;
use crate::ssh::{ExecRequest, ExecResult, SshCredential};

use super::HostContext;
use super::Subject;
use super::admin::CredentialUse;
use super::call::{Acting, Effect, HostCall, Redact};
use super::credentials::CredentialHandle;
use super::grant::{CommandLine, Denial, Request};
use super::leases::with_lease;
use super::types::from_ssh;

/// The longest a command may run, whatever the guest asks. Blocks a guest that parks an
/// SSH channel (and a pooled connection slot) forever.
pub const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);
/// The timeout when the guest gives none.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The request the SSH layer gets: the guest's timeout, capped, and never past the run's
/// deadline.
fn exec_request(acting: &Acting, command: &str, options: &ExecOptions, cap: usize) -> ExecRequest {
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
        timeout: acting.bounded(timeout),
        output_cap: cap,
    }
}

/// Runs one admitted command on one target: the act of `ssh.exec` and of each target of
/// `ssh.exec-many`. The output is redacted by the spine.
async fn exec_on(
    acting: &Acting,
    target_name: &str,
    credential: &SshCredential,
    command: &str,
    options: &ExecOptions,
    cap: usize,
) -> Result<ExecOutput, Error> {
    let target = acting.target(target_name)?;
    let request = exec_request(acting, command, options, cap);
    acting
        .services
        .ssh
        .exec_cancellable(&target, credential, &request, &acting.stop)
        .await
        .map(exec_output)
        .map_err(from_ssh)
}

fn exec_output(r: ExecResult) -> ExecOutput {
    ExecOutput {
        exit_status: r.exit_status,
        exit_signal: r.exit_signal,
        stdout: r.stdout,
        stderr: r.stderr,
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
    }
}

impl Redact for ExecOutput {
    fn redact(self, redactor: &Redactor) -> Self {
        ExecOutput {
            stdout: redact_stream(redactor, &self.stdout, self.stdout_truncated),
            stderr: redact_stream(redactor, &self.stderr, self.stderr_truncated),
            ..self
        }
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

/// The host call for one command on one target. `line` is the command as the host will
/// send it (argv words, or shell text under a raw-shell grant), or why it may not be sent.
fn exec_call<'a>(
    action: &'static str,
    target: &'a str,
    handle: &'a CredentialHandle,
    command: &'a str,
    line: &'a Result<CommandLine, Denial>,
    options: &ExecOptions,
    arg_bytes: usize,
) -> HostCall<'a> {
    let sudo = if options.sudo { " (sudo)" } else { "" };
    // A command that is not plain words is refused before the grant is asked; the request
    // then carries an empty line that nothing could match.
    const NOTHING: &CommandLine = &CommandLine::Argv(Vec::new());
    let (line, refusal) = match line {
        Ok(line) => (line, None),
        Err(denial) => (NOTHING, Some(denial.clone())),
    };
    HostCall {
        action,
        capability: CAPABILITY,
        arg_bytes,
        request: Request::Exec {
            target,
            credential: handle.name(),
            command,
            line,
            sudo: options.sudo,
        },
        subject: Subject {
            target: Some(target.to_string()),
            credential: Some(handle.name().to_string()),
            detail: Some(with_lease(format!("command{sudo}: {command}"), handle)),
        },
        leases: vec![handle],
        limit: None,
        credential_use: Some(CredentialUse::Exec { sudo: options.sudo }),
        refusal,
        effect: Effect::World,
    }
}

/// The outcome record's detail: the command and how it ended.
fn exec_detail(
    command: &str,
    options: &ExecOptions,
    handle: &CredentialHandle,
    result: &Result<ExecOutput, Error>,
) -> String {
    let sudo = if options.sudo { " (sudo)" } else { "" };
    let ended = match result {
        Ok(out) => match (&out.exit_status, &out.exit_signal) {
            (Some(code), _) => format!("; exit status {code}"),
            (None, Some(signal)) => format!("; killed by {signal}"),
            (None, None) => "; no exit status".to_string(),
        },
        Err(_) => String::new(),
    };
    with_lease(format!("command{sudo}: {command}{ended}"), handle)
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
        let handle = self.handle(&credential)?;
        let arg_bytes = target.len() + command.len() + stdin_len;
        // Argv words (or raw shell text); what the target runs is what the grant matched.
        let line = self.grant.command_line(&command);
        let call = exec_call(
            "ssh.exec", &target, &handle, &command, &line, &options, arg_bytes,
        );
        let mut admitted = match self.admit(call).await? {
            Ok(admitted) => admitted,
            Err(refused) => return Ok(Err(refused)),
        };
        let cap = self.limits.output_bytes;
        let credential = admitted.credential(0);
        let wire = line
            .as_ref()
            .map(CommandLine::shell_text)
            .unwrap_or_default();
        let result = self
            .act(async |acting| {
                let credential = credential?;
                exec_on(&acting, &target, &credential, &wire, &options, cap).await
            })
            .await;
        admitted.subject.detail = Some(exec_detail(&command, &options, &handle, &result));
        self.conclude(admitted, result).await
    }

    /// One host call per target, each through the same spine as `exec`: every target is
    /// admitted (and its intent written) before any acts, in one durable batch; the admitted
    /// ones act concurrently (bounded by the pool's fan-out limit); all outcomes are written
    /// in one batch before the guest sees any result.
    async fn exec_many(
        &mut self,
        targets: Vec<String>,
        credential: Resource<CredentialHandle>,
        command: String,
        options: ExecOptions,
    ) -> wasmtime::Result<Vec<TargetResult>> {
        let handle = self.handle(&credential)?;
        // The fan-out's bytes are checked once, on its first target.
        let names_len: usize = targets.iter().map(String::len).sum();
        let mut arg_bytes = names_len + command.len() + options.stdin.as_ref().map_or(0, Vec::len);
        let line = self.grant.command_line(&command);
        let calls = targets
            .iter()
            .map(|target| {
                let bytes = std::mem::take(&mut arg_bytes);
                exec_call(
                    "ssh.exec-many",
                    target,
                    &handle,
                    &command,
                    &line,
                    &options,
                    bytes,
                )
            })
            .collect();
        let admitted = self.admit_all(calls).await?;
        let cap = self.limits.output_bytes;
        let bound = self.services.ssh.config().max_concurrency.max(1);
        let admitted_targets: Vec<usize> = (0..admitted.len())
            .filter(|&i| admitted[i].is_ok())
            .collect();
        // Every admitted target uses the same handle, so the same (once fetched) secret.
        let credential = admitted.iter().flatten().next().map(|a| a.credential(0));
        let fanned = match credential {
            None => Ok(Vec::new()),
            Some(credential) => {
                self.act(async |acting| {
                    let credential = credential?;
                    let (acting, credential) = (&acting, &credential);
                    let wire = line
                        .as_ref()
                        .map(CommandLine::shell_text)
                        .unwrap_or_default();
                    let (targets, command, options) = (&targets, &wire, &options);
                    Ok(futures::stream::iter(admitted_targets)
                        .map(|i| async move {
                            let target = &targets[i];
                            let result =
                                exec_on(acting, target, credential, command, options, cap).await;
                            (i, result)
                        })
                        .buffer_unordered(bound)
                        .collect::<Vec<_>>()
                        .await)
                })
                .await
            }
        };
        // A failure before any target acted (the secret could not be read, the run was
        // stopped) is every admitted target's outcome.
        let (fanned, shared_error) = match fanned {
            Ok(fanned) => (fanned, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut acted: Vec<Option<Result<ExecOutput, Error>>> = vec![None; targets.len()];
        for (i, result) in fanned {
            acted[i] = Some(result);
        }
        let mut outcomes: Vec<Option<Result<ExecOutput, Error>>> = vec![None; targets.len()];
        let mut done = Vec::new();
        let mut order = Vec::new();
        for (i, entry) in admitted.into_iter().enumerate() {
            match entry {
                Err(refused) => outcomes[i] = Some(Err(refused)),
                Ok(mut admitted) => {
                    let result = acted[i].take().unwrap_or_else(|| {
                        Err(shared_error.clone().unwrap_or_else(|| {
                            Error::Internal("the host lost a target's result".into())
                        }))
                    });
                    admitted.subject.detail =
                        Some(exec_detail(&command, &options, &handle, &result));
                    done.push((admitted, result));
                    order.push(i);
                }
            }
        }
        for (i, result) in order.into_iter().zip(self.conclude_all(done).await?) {
            outcomes[i] = Some(result);
        }
        Ok(targets
            .into_iter()
            .zip(outcomes)
            .map(|(target, outcome)| TargetResult {
                target,
                outcome: outcome.unwrap_or_else(|| {
                    Err(Error::Internal("the host lost a target's result".into()))
                }),
            })
            .collect())
    }
}
