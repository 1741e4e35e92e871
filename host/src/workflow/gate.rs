//! `approval` states, the engine's side: open a gate bound to exactly what approvers see, wait
//! (surviving restarts: the gate is in the run's record) for N distinct approvals, a rejection,
//! or the timeout, and route accordingly. Approvers act through the same approval API as for
//! runs awaiting approval (`crate::runs::approval`, which records into the gate).
//!
//! Threat: an approval reused for something else, or self-approval. The binding is a digest of
//! the definition, the run's inputs and the outputs of every step recorded so far (by path); an
//! approval counts only with that binding and only until the gate's deadline; the requester's
//! approvals never count (the approval API refuses them first).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::definition::{ApprovalState, kinds};
use super::engine::{Exec, Failure, Flow, failure};
use super::expr::Scope;
use super::progress::{Gate, StepRecord, StepStatus, WorkflowProgress};
use crate::runs::{RunRecord, now_ms};

/// How often a gate looks at the store for approvals recorded by another server.
const GATE_POLL: Duration = Duration::from_secs(1);

/// The digest a gate's approvals bind to: the definition, the run's inputs and the outputs of
/// the steps in `bound` (their run paths) as `progress` records them.
pub fn binding(
    run: &RunRecord,
    progress: &WorkflowProgress,
    step: &str,
    bound: &[String],
) -> String {
    let outputs: BTreeMap<&str, Option<&Value>> = bound
        .iter()
        .map(|p| {
            (
                p.as_str(),
                progress.steps.get(p).and_then(|s| s.output.as_ref()),
            )
        })
        .collect();
    let canonical = json!({
        "definition": progress.definition,
        "run": run.id,
        "step": step,
        "inputs": run.inputs,
        "outputs": outputs,
    });
    let mut hasher = Sha256::new();
    hasher.update(b"warden workflow gate v1\n");
    hasher.update(serde_json::to_vec(&canonical).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// Distinct approvers (other than `requester`) whose approval of `gate` still counts.
pub fn counted(gate: &Gate, requester: &str, now: u64) -> BTreeSet<String> {
    gate.approvals
        .iter()
        .filter(|a| a.approver != requester && a.is_valid(&gate.binding, now))
        .map(|a| a.approver.clone())
        .collect()
}

impl Exec {
    /// Runs an `approval` state: opens its gate (or finds it open after a restart) and waits.
    pub(super) async fn gate(
        &self,
        state: &ApprovalState,
        name: &str,
        path: &str,
        prior: Option<&StepRecord>,
        _scope: &Scope,
    ) -> Result<Flow, Failure> {
        let open = prior.is_some_and(|p| p.status == StepStatus::Waiting && p.gate.is_some());
        if !open {
            self.open_gate(state, name, path).await?;
        }
        loop {
            let run = self
                .run_record()
                .ok_or_else(|| failure(kinds::FAILED, "the workflow run is gone"))?;
            let step = run
                .workflow
                .as_ref()
                .and_then(|p| p.steps.get(path))
                .cloned()
                .ok_or_else(|| failure(kinds::FAILED, format!("gate {path} is not recorded")))?;
            let gate = step
                .gate
                .clone()
                .ok_or_else(|| failure(kinds::FAILED, format!("gate {path} is not recorded")))?;
            let now = now_ms();
            if let Some(by) = &gate.rejected_by {
                let why = format!("rejected by {by}");
                return self
                    .gate_failed(
                        name,
                        path,
                        kinds::APPROVAL_REJECTED,
                        why,
                        state.on_reject.clone(),
                    )
                    .await;
            }
            let approvers = counted(&gate, &self.requester(&run), now);
            if approvers.len() >= usize::try_from(gate.required).unwrap_or(usize::MAX) {
                let list: Vec<String> = approvers.into_iter().collect();
                let detail = format!("approved by {}", list.join(", "));
                let output = json!({ "approved_by": list });
                let out = output.clone();
                self.record(path, name, "approval", detail, move |r| {
                    r.status = StepStatus::Succeeded;
                    r.output = Some(out);
                    r.finished_ms = Some(now_ms());
                })
                .await?;
                return Ok(Flow::Next {
                    output: Some(output),
                    next: state.next.clone(),
                });
            }
            if now >= gate.deadline_ms {
                let why = format!(
                    "{} of {} approvals before the timeout",
                    approvers.len(),
                    gate.required
                );
                return self
                    .gate_failed(
                        name,
                        path,
                        kinds::APPROVAL_TIMEOUT,
                        why,
                        state.on_timeout.clone(),
                    )
                    .await;
            }
            let left = Duration::from_millis(gate.deadline_ms - now).min(GATE_POLL);
            if !self.sleep(left).await {
                return Err(failure(super::engine::CANCELLED, "the run was cancelled"));
            }
        }
    }

    async fn open_gate(
        &self,
        state: &ApprovalState,
        name: &str,
        path: &str,
    ) -> Result<(), Failure> {
        let run = self
            .run_record()
            .ok_or_else(|| failure(kinds::FAILED, "the workflow run is gone"))?;
        let progress = run.workflow.clone().unwrap_or_default();
        let bound: Vec<String> = progress
            .steps
            .iter()
            .filter(|(p, s)| {
                p.as_str() != path && s.output.is_some() && s.status == StepStatus::Succeeded
            })
            .map(|(p, _)| p.clone())
            .collect();
        let gate = Gate {
            required: state.approvals,
            deadline_ms: now_ms().saturating_add(state.timeout_seconds.saturating_mul(1000)),
            binding: binding(&run, &progress, path, &bound),
            approvals: Vec::new(),
            rejected_by: None,
            comment: state.comment.clone(),
            bound_steps: bound,
        };
        let detail = format!(
            "waiting for {} approval(s), binding sha256:{}",
            gate.required, gate.binding
        );
        self.record(path, name, "approval", detail, move |r| {
            r.status = StepStatus::Waiting;
            r.gate = Some(gate);
            r.error = None;
        })
        .await
        .map(|_| ())
    }

    /// A gate rejected or timed out: to `route` if the state names one (recorded `caught`),
    /// else the run fails.
    async fn gate_failed(
        &self,
        name: &str,
        path: &str,
        kind: &str,
        why: String,
        route: Option<String>,
    ) -> Result<Flow, Failure> {
        let error = failure(kind, why);
        match route {
            Some(next) => {
                let (e, n) = (error.clone(), next.clone());
                self.record(
                    path,
                    name,
                    "approval",
                    format!("{kind} -> {next}"),
                    move |r| {
                        r.status = StepStatus::Caught;
                        r.error = Some(e);
                        r.next = Some(n);
                        r.finished_ms = Some(now_ms());
                    },
                )
                .await?;
                Ok(Flow::Next {
                    output: Some(json!({"error": error.kind, "cause": error.message})),
                    next: Some(next),
                })
            }
            None => {
                self.fail_step(path, name, "approval", &error).await?;
                Err(error)
            }
        }
    }
}
