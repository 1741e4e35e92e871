//! The host-call spine: the one path every host call takes, whatever its capability.
//!
//! ```text
//! admit:    count (limits) → authorize (manifest ∩ grant ∩ policy) → leases → intent record
//! act:      the capability's own closure, bounded by the run's cancellation and deadline
//! conclude: redact the result → outcome record → result to the guest
//! ```
//!
//! Threats, and the property of this structure that answers each:
//! - *A call that acts without a record* (invariant 2). A call that acts on the world
//!   ([`Effect::World`]) is admitted only once its *intent* record is durable; its outcome
//!   record follows, also when the call failed, was cancelled or ran into the run's deadline
//!   (the act is told to stop, the remote command is signalled, and the outcome says so). A
//!   crash between the two leaves the intent: the log then shows a call that may have acted.
//! - *An unaudited denial, or a denial that traps.* Every refusal — grant, manifest, policy,
//!   lease — is written as a denied record and returned as the guest-visible `error::denied`.
//!   Only a broken limit or an audit failure ends the run, and the limit is audited first.
//! - *A secret in a result.* [`conclude`](HostContext::conclude) redacts every result and error
//!   through [`Redact`] before the outcome record and before the guest sees it; no capability
//!   returns to the guest any other way.
//! - *A call past its grant.* One check, [`HostContext::check`], decides every call: the
//!   grant and the Cedar policies, the module's manifest scope, the admin-credential rules
//!   and the handles' leases. There is no capability-specific shortcut around it.
//! - *Fail open on audit.* If a record cannot be written durably the run ends (fail closed),
//!   and once the audit log has failed no call is admitted.
//!
//! Capabilities describe a call as a [`HostCall`] and call [`HostContext::host_call`] with their
//! act closure, or — when acting needs the run's own state (acquire) or fans out (exec-many) —
//! [`HostContext::admit_all`] and [`HostContext::conclude`] directly. There is no other way to
//! write a host call's audit record.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEntry, Decision};
use crate::capabilities::bindings::types::Error;
use crate::redact::Redactor;
use crate::runtime::RunStop;
use crate::runtime::limits::LimitExceeded;
use crate::ssh::SshCredential;
use crate::targets::Target;

use super::admin::CredentialUse;
use super::credentials::CredentialHandle;
use super::grant::{Denial, Request};
use super::types::{describe, internal};
use super::{HostContext, Services, Subject};

/// How long an act may take to stop after the run was cancelled or reached its deadline,
/// before the spine abandons it (its outcome is then recorded as abandoned). The SSH layer
/// stops well within this: it signals the command and closes the channel at once.
pub const ACT_STOP_GRACE: Duration = Duration::from_secs(3);

/// The `outcome` of an intent record: the call was admitted and is about to act.
pub const INTENT_OUTCOME: &str = "intent";

/// Whether a call acts on the world (a target, the vault, leases) or only reads the run's
/// own state (inputs, logging, a handle's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Reads or writes only the run's own state: one record, after the call.
    Local,
    /// Acts outside the run: a durable intent record before, an outcome record after.
    World,
}

/// A host call as the spine sees it before acting.
pub(crate) struct HostCall<'a> {
    /// The audit action, e.g. `ssh.exec`.
    pub action: &'static str,
    /// The WIT interface, as manifests and policies name it.
    pub capability: &'static str,
    /// Guest-supplied argument bytes, checked against the per-call cap.
    pub arg_bytes: usize,
    /// What the grant, the manifest and the policies are asked to permit.
    pub request: Request<'a>,
    /// What the audit record names.
    pub subject: Subject,
    /// Handles whose leases must allow the request's target.
    pub leases: Vec<&'a CredentialHandle>,
    /// A limit this call would break (beyond the call count and bytes the spine checks).
    pub limit: Option<LimitExceeded>,
    /// What the call does with its first handle, for the admin-credential rules
    /// ([`super::admin`]).
    pub credential_use: Option<CredentialUse>,
    /// A refusal the capability found before the grant was asked (a command that is not
    /// plain words): audited as a denial like any other.
    pub refusal: Option<Denial>,
    pub effect: Effect,
}

impl<'a> HostCall<'a> {
    /// A call that reads only the run's own state and needs no grant beyond the interface.
    pub fn local(action: &'static str, capability: &'static str, arg_bytes: usize) -> Self {
        HostCall {
            action,
            capability,
            arg_bytes,
            request: Request::Interface,
            subject: Subject::default(),
            leases: Vec::new(),
            limit: None,
            credential_use: None,
            refusal: None,
            effect: Effect::Local,
        }
    }
}

/// A call that passed every check (and whose intent, if it acts, is durable): the licence to
/// act. Consumed by [`HostContext::conclude`].
pub(crate) struct Admitted {
    action: &'static str,
    started: Instant,
    /// What the outcome record names; a capability may add to `detail` after acting.
    pub subject: Subject,
    /// Sequence number of the intent record.
    intent: Option<u64>,
    /// The secrets of the call's handles, in [`HostCall::leases`] order, for the SSH layer.
    credentials: Vec<Arc<SshCredential>>,
}

impl Admitted {
    /// The secret of the call's `i`-th handle (in [`HostCall::leases`] order).
    pub fn credential(&self, i: usize) -> Result<Arc<SshCredential>, Error> {
        self.credentials
            .get(i)
            .cloned()
            .ok_or_else(|| Error::Internal("the host lost a credential it fetched".into()))
    }
}

/// How the checks of one call came out.
enum Verdict {
    /// Permitted; the secrets of its handles are fetched and registered for redaction.
    Admitted(Vec<Arc<SshCredential>>),
    /// Refused by a rule: audited as denied.
    Denied(Denial),
    /// Permitted, but it could not start (a secret could not be read): audited as allowed
    /// with the error as its outcome; nothing acted.
    Failed(Error),
}

/// What the act closure gets: the services and the run's redactor, never the run's state, so
/// an act cannot skip the spine's bookkeeping.
#[derive(Clone)]
pub(crate) struct Acting {
    pub services: Services,
    pub redactor: Redactor,
    /// Fires when the run is cancelled or reaches its deadline.
    pub stop: CancellationToken,
    /// The run's deadline: no act may outlive it.
    pub deadline: tokio::time::Instant,
}

impl Acting {
    /// The target's record (address, pinned host key).
    pub fn target(&self, name: &str) -> Result<Target, Error> {
        match self.services.targets.get(name) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(Error::NotFound(format!("no target named '{name}'"))),
            Err(e) => Err(internal("looking up the target", e)),
        }
    }

    /// `wanted`, shortened so that it ends by the run's deadline.
    pub fn bounded(&self, wanted: Duration) -> Duration {
        wanted.min(
            self.deadline
                .saturating_duration_since(tokio::time::Instant::now()),
        )
    }
}

/// A result on its way to the guest: every secret the run touched is removed from it.
pub(crate) trait Redact {
    fn redact(self, redactor: &Redactor) -> Self;
}

impl Redact for () {
    fn redact(self, _: &Redactor) -> Self {}
}

impl Redact for u64 {
    fn redact(self, _: &Redactor) -> Self {
        self
    }
}

impl Redact for Vec<u8> {
    fn redact(self, redactor: &Redactor) -> Self {
        redactor.redact(&self)
    }
}

impl<A: Redact, B: Redact> Redact for (A, B) {
    fn redact(self, redactor: &Redactor) -> Self {
        (self.0.redact(redactor), self.1.redact(redactor))
    }
}

impl Redact for String {
    fn redact(self, redactor: &Redactor) -> Self {
        redactor.redact_str(&self)
    }
}

impl Redact for Error {
    fn redact(self, redactor: &Redactor) -> Self {
        let r = |m: String| redactor.redact_str(&m);
        match self {
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
}

impl<T: Redact> Redact for Result<T, Error> {
    fn redact(self, redactor: &Redactor) -> Self {
        match self {
            Ok(v) => Ok(v.redact(redactor)),
            Err(e) => Err(e.redact(redactor)),
        }
    }
}

impl HostContext {
    /// The whole path of one host call: admit, act, conclude.
    pub(crate) async fn host_call<T, F, Fut>(
        &mut self,
        call: HostCall<'_>,
        act: F,
    ) -> wasmtime::Result<Result<T, Error>>
    where
        T: Redact,
        F: FnOnce(Acting) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let admitted = match self.admit(call).await? {
            Ok(admitted) => admitted,
            Err(refused) => return Ok(Err(refused)),
        };
        let result = self.act(act).await;
        self.conclude(admitted, result).await
    }

    /// [`HostContext::admit_all`] for one call.
    pub(crate) async fn admit(
        &mut self,
        call: HostCall<'_>,
    ) -> wasmtime::Result<Result<Admitted, Error>> {
        let mut admitted = self.admit_all(vec![call]).await?;
        Ok(admitted
            .pop()
            .unwrap_or_else(|| Err(Error::Internal("the host lost a call it admitted".into()))))
    }

    /// Admits calls: counts each against the run's limits (a broken limit is audited, then
    /// ends the run), checks each against the manifest, the grant, the policies and the
    /// handles' leases, and writes every denial and every intent in one durable batch. Each
    /// entry of the answer is the licence to act, or the guest-visible refusal.
    pub(crate) async fn admit_all(
        &mut self,
        calls: Vec<HostCall<'_>>,
    ) -> wasmtime::Result<Vec<Result<Admitted, Error>>> {
        if self.services.server.audit_failed() {
            return Err(self.end_run(RunStop::AuditFailed("audit log is failed".into())));
        }
        self.precheck_leases(&calls).await;
        let mut decided = Vec::with_capacity(calls.len());
        // A fan-out uses one handle on many targets: its secret is fetched once.
        let mut fetched: HashMap<String, Result<Arc<SshCredential>, Error>> = HashMap::new();
        for call in calls {
            let started = Instant::now();
            if let Some(exceeded) = self.count(&call) {
                // The call that broke the limit, and the calls of the same fan-out checked
                // before it (none of which acts now), are each recorded as refused.
                let denial = limit_denial(&exceeded);
                let mut entries: Vec<AuditEntry> = decided
                    .into_iter()
                    .map(|(action, _, subject, started, _)| {
                        self.entry(action, subject, started, denied(&denial))
                    })
                    .collect();
                entries.push(self.entry(call.action, call.subject, started, denied(&denial)));
                self.write(entries).await?;
                return Err(self.end_run(RunStop::Limit(exceeded)));
            }
            let verdict = match self.check(&call).await {
                Err(denial) => Verdict::Denied(denial),
                // Fetched (and so registered with the redactor) before any record of the
                // call is written: the intent names the command, and a command may quote a
                // secret.
                Ok(()) => match self
                    .fetch(&call.leases, target_of(&call), &mut fetched)
                    .await
                {
                    Ok(credentials) => Verdict::Admitted(credentials),
                    Err(e) => Verdict::Failed(e),
                },
            };
            decided.push((call.action, call.effect, call.subject, started, verdict));
        }
        // Verdicts are for this batch only: a later call asks again (a lease may be revoked).
        self.lease_verdicts.clear();
        let mut entries = Vec::new();
        for (action, effect, subject, started, verdict) in &decided {
            let written = match verdict {
                Verdict::Denied(denial) => denied(denial),
                Verdict::Failed(e) => Written::failed(describe(e), None),
                Verdict::Admitted(_) if *effect == Effect::World => Written::intent(),
                Verdict::Admitted(_) => continue,
            };
            entries.push(self.entry(action, subject.clone(), *started, written));
        }
        let mut seqs = self.write(entries).await?.into_iter();
        let mut answers = Vec::with_capacity(decided.len());
        for (action, effect, subject, started, verdict) in decided {
            answers.push(match verdict {
                Verdict::Denied(denial) => {
                    seqs.next();
                    Err(Error::Denied(self.redactor.redact_str(&denial.to_string())))
                }
                Verdict::Failed(e) => {
                    seqs.next();
                    Err(e.redact(&self.redactor))
                }
                Verdict::Admitted(credentials) => Ok(Admitted {
                    action,
                    started,
                    subject,
                    intent: (effect == Effect::World).then(|| seqs.next()).flatten(),
                    credentials,
                }),
            });
        }
        Ok(answers)
    }

    /// The secrets of `handles`, fetched from the vault (or, on a remote bridge, from the
    /// server for a call on `target`) and registered with the run's redactor; only for a
    /// call that passed every check.
    async fn fetch(
        &mut self,
        handles: &[&CredentialHandle],
        target: Option<String>,
        fetched: &mut HashMap<String, Result<Arc<SshCredential>, Error>>,
    ) -> Result<Vec<Arc<SshCredential>>, Error> {
        let mut credentials = Vec::with_capacity(handles.len());
        for handle in handles {
            let name = handle.name().to_string();
            let credential = match fetched.get(&name) {
                Some(known) => known.clone(),
                None => {
                    let got = super::credentials::fetch_secret(
                        &self.services,
                        &self.redactor,
                        handle,
                        target.as_deref(),
                    )
                    .await;
                    fetched.insert(name, got.clone());
                    got
                }
            };
            credentials.push(credential?);
        }
        Ok(credentials)
    }

    /// Runs an admitted call's act, bounded by the run's cancellation and deadline. The act
    /// is expected to stop by itself when [`Acting::stop`] fires (the SSH layer signals the
    /// remote command); one that does not is abandoned after [`ACT_STOP_GRACE`].
    pub(crate) async fn act<T, F, Fut>(&mut self, act: F) -> Result<T, Error>
    where
        F: FnOnce(Acting) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let acting = self.acting();
        let stop = acting.stop.clone();
        let deadline = acting.deadline;
        let work = act(acting);
        tokio::pin!(work);
        let stopping = async {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep_until(deadline) => stop.cancel(),
            }
            tokio::time::sleep(ACT_STOP_GRACE).await;
        };
        tokio::select! {
            result = &mut work => result,
            () = stopping => Err(Error::Timeout(
                "the run was cancelled or reached its wall time; the call was abandoned".into(),
            )),
        }
    }

    /// The per-call view an act works with.
    pub(crate) fn acting(&self) -> Acting {
        Acting {
            services: self.services.clone(),
            redactor: self.redactor.clone(),
            stop: self.stop_token.clone(),
            deadline: self.deadline,
        }
    }

    /// Redacts an admitted call's result, writes its outcome record and only then hands the
    /// result to the guest. A call that ended because the run was cancelled or ran out of
    /// time is recorded, then ends the run.
    pub(crate) async fn conclude<T: Redact>(
        &mut self,
        admitted: Admitted,
        result: Result<T, Error>,
    ) -> wasmtime::Result<Result<T, Error>> {
        let mut concluded = self.conclude_all(vec![(admitted, result)]).await?;
        Ok(concluded
            .pop()
            .unwrap_or_else(|| Err(Error::Internal("the host lost a call it concluded".into()))))
    }

    /// [`HostContext::conclude`] for several calls, recorded in one durable batch.
    pub(crate) async fn conclude_all<T: Redact>(
        &mut self,
        done: Vec<(Admitted, Result<T, Error>)>,
    ) -> wasmtime::Result<Vec<Result<T, Error>>> {
        let mut entries = Vec::with_capacity(done.len());
        let mut results = Vec::with_capacity(done.len());
        for (admitted, result) in done {
            let result = result.redact(&self.redactor);
            let outcome = match &result {
                Ok(_) => Written::ok(admitted.intent),
                Err(e) => Written::failed(describe(e), admitted.intent),
            };
            entries.push(self.entry(admitted.action, admitted.subject, admitted.started, outcome));
            results.push(result);
        }
        self.write(entries).await?;
        if let Some(stop) = self.stopped() {
            return Err(self.end_run(stop));
        }
        Ok(results)
    }

    /// Records a refusal that only the act could discover (a lease that could not be issued)
    /// for an admitted call, and returns it as `error::denied`.
    pub(crate) async fn conclude_denied<T>(
        &mut self,
        admitted: Admitted,
        denial: Denial,
    ) -> wasmtime::Result<Result<T, Error>> {
        let mut written = denied(&denial);
        written.intent = admitted.intent;
        let entry = self.entry(admitted.action, admitted.subject, admitted.started, written);
        self.write(vec![entry]).await?;
        Ok(Err(Error::Denied(
            self.redactor.redact_str(&denial.to_string()),
        )))
    }

    /// Counts the call and checks the limits the spine owns; the limit it breaks, if any.
    fn count(&mut self, call: &HostCall<'_>) -> Option<LimitExceeded> {
        self.host_calls += 1;
        if self.host_calls > self.limits.host_calls {
            return Some(LimitExceeded::HostCalls {
                limit: self.limits.host_calls,
            });
        }
        if call.arg_bytes > self.limits.call_bytes {
            return Some(LimitExceeded::CallBytes {
                call: call.action.into(),
                bytes: call.arg_bytes,
                limit: self.limits.call_bytes,
            });
        }
        call.limit.clone()
    }

    /// The effective permission of a call: manifest ∩ grant ∩ policy, then the leases of the
    /// handles it uses on its target.
    async fn check(&mut self, call: &HostCall<'_>) -> Result<(), Denial> {
        if let Some(refusal) = &call.refusal {
            return Err(refusal.clone());
        }
        self.authorize(call.capability, &call.request).await?;
        self.scope.permits(&call.request, &self.services.targets)?;
        if let (Some(using), Some(handle)) = (call.credential_use, call.leases.first()) {
            self.check_credential_use(handle, using)?;
        }
        if let (target, ..) = call.request.parts()
            && let Some(target) = target
        {
            for handle in &call.leases {
                self.use_lease(handle, target).await?;
            }
        }
        Ok(())
    }

    /// Checks a request that an admitted call learned only by acting (the path a target
    /// resolved a transfer's path to) against the grant, the policies and the manifest,
    /// exactly as [`HostContext::check`] did for the request it was admitted with.
    pub(crate) async fn recheck(
        &mut self,
        capability: &str,
        request: &Request<'_>,
    ) -> Result<(), Denial> {
        self.authorize(capability, request).await?;
        self.scope.permits(request, &self.services.targets)
    }

    /// Why the run must stop now, if it must: cancelled, or past its deadline.
    fn stopped(&self) -> Option<RunStop> {
        if self.control_cancelled() {
            return Some(RunStop::Cancelled);
        }
        if tokio::time::Instant::now() >= self.deadline {
            let limit_ms = u64::try_from(self.limits.wall_time.as_millis()).unwrap_or(u64::MAX);
            return Some(RunStop::Limit(LimitExceeded::WallTime { limit_ms }));
        }
        None
    }

    fn entry(
        &self,
        action: &str,
        subject: Subject,
        started: Instant,
        written: Written,
    ) -> AuditEntry {
        let detail = match (subject.detail, written.intent) {
            (Some(d), Some(seq)) => Some(format!("{d}; intent #{seq}")),
            (None, Some(seq)) => Some(format!("intent #{seq}")),
            (d, None) => d,
        };
        // A denial's reason quotes what the guest asked for; it is redacted like the rest.
        let decision = match written.decision {
            Decision::Denied { reason, policy } => Decision::Denied {
                reason: self.redactor.redact_str(&reason),
                policy,
            },
            allowed => allowed,
        };
        AuditEntry {
            run_id: Some(self.identity.run_id.clone()),
            actor: self.identity.actor.clone(),
            action: action.to_string(),
            target: subject.target,
            credential: subject.credential,
            decision,
            outcome: self.redactor.redact_str(&written.outcome),
            duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            detail: detail.map(|d| self.redactor.redact_str(&d)),
        }
    }

    /// Writes records durably and returns their sequence numbers; a failure ends the run.
    async fn write(&mut self, entries: Vec<AuditEntry>) -> wasmtime::Result<Vec<u64>> {
        match self.services.server.append_audit(entries).await {
            Ok(seqs) => Ok(seqs),
            Err(e) => {
                tracing::error!(run = %self.identity.run_id, error = %e, "audit write failed");
                Err(self.end_run(RunStop::AuditFailed(e.to_string())))
            }
        }
    }

    /// Notes why the run must end and returns the trap that ends it.
    pub(crate) fn end_run(&mut self, stop: RunStop) -> wasmtime::Error {
        let error = wasmtime::Error::msg(stop.to_string());
        self.stop_token.cancel();
        self.stop.get_or_insert(stop);
        error
    }
}

/// What one record says: its decision, its outcome and the intent it concludes.
struct Written {
    decision: Decision,
    outcome: String,
    intent: Option<u64>,
}

impl Written {
    fn intent() -> Self {
        Written {
            decision: Decision::Allowed,
            outcome: INTENT_OUTCOME.into(),
            intent: None,
        }
    }

    fn ok(intent: Option<u64>) -> Self {
        Written {
            decision: Decision::Allowed,
            outcome: "ok".into(),
            intent,
        }
    }

    fn failed(outcome: String, intent: Option<u64>) -> Self {
        Written {
            decision: Decision::Allowed,
            outcome,
            intent,
        }
    }
}

/// The record of a refusal; it names the Cedar policies that refused, or the rule.
fn denied(denial: &Denial) -> Written {
    let policy = denial
        .policy
        .clone()
        .unwrap_or_else(|| denial.rule.to_string());
    Written {
        decision: Decision::Denied {
            reason: denial.detail.clone(),
            policy: Some(policy),
        },
        outcome: describe(&Error::Denied(denial.to_string())),
        intent: None,
    }
}

/// The target a call acts on, if it names one.
fn target_of(call: &HostCall<'_>) -> Option<String> {
    call.request.parts().0.map(str::to_string)
}

fn limit_denial(exceeded: &LimitExceeded) -> Denial {
    Denial {
        rule: "limits",
        detail: exceeded.to_string(),
        policy: None,
    }
}
