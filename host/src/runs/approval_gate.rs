//! Approvals of a workflow's `approval` state (a *gate*) through the same API, checks and audit
//! records as approvals of a run awaiting approval: the requester is refused and audited, a
//! binding other than the gate's is refused as stale and audited, one approver counts once.
//! The approval is recorded in the gate (the workflow run's record, compare-and-swapped with
//! its audit record) and the engine driving the run is woken.

use super::*;
use crate::workflow::gate::counted;
use crate::workflow::progress::Gate;

impl Approvals {
    /// The open gate of workflow run `run`: its run path and gate, or why there is none.
    fn open_gate(run: &RunRecord) -> Result<(String, Gate), ApprovalError> {
        let gate = run
            .workflow
            .as_ref()
            .and_then(|p| p.open_gate())
            .filter(|_| run.state == RunState::Running);
        match gate {
            Some((path, gate)) => Ok((path.to_string(), gate.clone())),
            None => Err(not_awaiting(run)),
        }
    }

    /// [`Approvals::approve_via`] for a workflow run waiting at an `approval` state.
    pub(super) async fn approve_gate(
        &self,
        run: &RunRecord,
        approver: &str,
        seen: Option<&str>,
        via: &str,
    ) -> Result<ApproveOutcome, ApprovalError> {
        let (path, gate) = Self::open_gate(run)?;
        if let Some(seen) = seen.filter(|seen| *seen != gate.binding) {
            let reason = format!(
                "stale: the approver reviewed binding sha256:{seen}, gate {path} binds sha256:{}",
                gate.binding
            );
            self.audit_refusal(run, approver, &reason).await?;
            return Err(ApprovalError::Stale(reason));
        }
        let requester = self.requester(run)?;
        let now = now_ms();
        if counted(&gate, &requester, now).contains(approver) {
            return Err(ApprovalError::AlreadyApproved(approver.to_string()));
        }
        let (binding, step) = (gate.binding.clone(), path.clone());
        let approver_s = approver.to_string();
        let via = via.to_string();
        let recorded = self
            .runs
            .update_workflow(&run.id, |progress| {
                let open = progress.steps.get_mut(&step).and_then(|s| {
                    let waiting = s.status == crate::workflow::StepStatus::Waiting;
                    s.gate.as_mut().filter(|g| waiting && g.binding == binding)
                });
                let Some(gate) = open else {
                    return Err(RunsError::Invalid {
                        field: "gate",
                        why: format!("gate {step} is no longer waiting"),
                    });
                };
                if gate.approvals.len() >= MAX_APPROVALS_PER_RUN {
                    return Err(RunsError::Invalid {
                        field: "gate",
                        why: format!("gate {step} already holds {MAX_APPROVALS_PER_RUN} approvals"),
                    });
                }
                gate.approvals.push(Approval {
                    approver: approver_s.clone(),
                    binding: binding.clone(),
                    granted_ms: now,
                    expires_ms: gate.deadline_ms,
                    invalidated_ms: None,
                });
                let count = counted(gate, &requester, now).len();
                Ok(entry(
                    run,
                    &approver_s,
                    "run.approval.granted",
                    Decision::Allowed,
                    format!(
                        "gate {step}: approval {count} of {}, binding sha256:{binding}{via}",
                        gate.required
                    ),
                ))
            })
            .await?;
        self.dispatcher.workflows().wake(&run.id);
        let (_, gate_now) = Self::open_gate(&recorded)?;
        let started = counted(&gate_now, &self.requester(&recorded)?, now).len()
            >= usize::try_from(gate_now.required).unwrap_or(usize::MAX);
        Ok(ApproveOutcome {
            request: self.gate_view(&recorded, now)?,
            started,
        })
    }

    /// [`Approvals::reject`] for a workflow run waiting at an `approval` state: the gate takes
    /// its `on_reject` path, or the run fails.
    pub(super) async fn reject_gate(
        &self,
        run: &RunRecord,
        approver: &str,
        why: String,
    ) -> Result<RunRecord, ApprovalError> {
        let (path, gate) = Self::open_gate(run)?;
        let approver_s = approver.to_string();
        let recorded = self
            .runs
            .update_workflow(&run.id, |progress| {
                let open = progress.steps.get_mut(&path).and_then(|s| s.gate.as_mut());
                match open {
                    Some(g) if g.binding == gate.binding && g.rejected_by.is_none() => {
                        g.rejected_by = Some(approver_s.clone());
                    }
                    _ => {
                        return Err(RunsError::Invalid {
                            field: "gate",
                            why: format!("gate {path} is no longer waiting"),
                        });
                    }
                }
                Ok(entry(
                    run,
                    &approver_s,
                    "run.approval.rejected",
                    Decision::Denied {
                        reason: why.clone(),
                        policy: None,
                    },
                    format!("gate {path}: {why}"),
                ))
            })
            .await?;
        self.dispatcher.workflows().wake(&run.id);
        Ok(recorded)
    }

    /// What approvers see of a workflow run's gate: the definition's digest, the inputs, the
    /// outputs the gate binds to, the binding, and the approvals so far.
    pub(super) fn gate_view(
        &self,
        run: &RunRecord,
        now: u64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let process = self.processes.get(&run.process_id)?;
        let requester = self.requester(run).unwrap_or_default();
        let gate = Self::open_gate(run).ok();
        let progress = run.workflow.clone().unwrap_or_default();
        let (step, binding, required, approvals, outputs, blocked) = match &gate {
            Some((path, gate)) => {
                let outputs: BTreeMap<String, serde_json::Value> = gate
                    .bound_steps
                    .iter()
                    .filter_map(|p| {
                        let out = progress.steps.get(p)?.output.clone()?;
                        Some((p.clone(), out))
                    })
                    .collect();
                (
                    Some(path.clone()),
                    Some(gate.binding.clone()),
                    gate.required,
                    gate.approvals.clone(),
                    Some(outputs),
                    None,
                )
            }
            None => (
                None,
                None,
                0,
                Vec::new(),
                None,
                Some(not_awaiting(run).to_string()),
            ),
        };
        let valid = gate
            .as_ref()
            .map_or(0, |(_, g)| counted(g, &requester, now).len());
        let statuses = approvals
            .iter()
            .map(|a| {
                let ok = binding.as_deref() == Some(a.binding.as_str()) && now < a.expires_ms;
                ApprovalStatus {
                    approver: a.approver.clone(),
                    granted_ms: a.granted_ms,
                    expires_ms: a.expires_ms,
                    valid: ok,
                    why_not: (!ok).then(|| "expired".to_string()),
                }
            })
            .collect();
        Ok(ApprovalRequest {
            run_id: run.id.clone(),
            state: run.state,
            requester,
            process_id: run.process_id.clone(),
            process_name: process.as_ref().map(|p| p.name.clone()),
            module: process.as_ref().map(|p| p.module.clone()),
            module_digest: run.module_digest.clone(),
            capabilities: Vec::new(),
            manifest: None,
            inputs: run.inputs.clone(),
            grant: None,
            required_approvals: required,
            binding,
            blocked,
            approvals: statuses,
            valid_approvals: valid,
            step,
            outputs,
        })
    }
}
