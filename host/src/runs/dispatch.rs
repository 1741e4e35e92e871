//! Starting runs on the embedded bridge: resolve the process's module and inputs, persist
//! the run as `queued`, execute it asynchronously, and record how it ended.
//!
//! Threat: a run that starts with inputs its module did not declare, a retired or unknown
//! module, or a lost outcome. Inputs are validated against the signed manifest before the
//! run is created; every transition goes through the audited run store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Process, RunRecord, RunState, RunStore, RunsError};
use crate::bridge::{Bridge, RunSpec};
use crate::capabilities::{HostCallPolicy, RunIdentity};
use crate::policy::PolicyEngine;
use crate::registry::manifest::ManifestError;
use crate::registry::store::ModuleStore;
use crate::runtime::limits::{LimitExceeded, RunLimits};
use crate::runtime::{RunControl, RunOutcome, RunReport, RunStop};

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The process's module is unknown or retired.
    #[error("module {0} is not available (unknown or retired)")]
    ModuleUnavailable(String),
    /// The inputs do not match the manifest.
    #[error("{0}")]
    Inputs(#[from] ManifestError),
    /// The module failed to load.
    #[error("module cannot run: {0}")]
    Prepare(String),
    /// Storage or audit failure.
    #[error(transparent)]
    Runs(#[from] RunsError),
    /// Registry failure.
    #[error("registry: {0}")]
    Registry(String),
    /// The process requires approvals, which this server cannot collect yet: refuse
    /// rather than run without them.
    #[error("process requires {0} approval(s); approvals are not available on this server yet")]
    ApprovalRequired(u32),
}

/// Starts and tracks runs.
#[derive(Clone)]
pub struct Dispatcher {
    bridge: Bridge,
    modules: ModuleStore,
    runs: RunStore,
    policy: PolicyEngine,
    limits: RunLimits,
    live: Arc<Mutex<HashMap<String, Arc<RunControl>>>>,
}

impl Dispatcher {
    /// A dispatcher running on `bridge`.
    pub fn new(
        bridge: Bridge,
        modules: ModuleStore,
        runs: RunStore,
        policy: PolicyEngine,
        limits: RunLimits,
    ) -> Self {
        Dispatcher {
            bridge,
            modules,
            runs,
            policy,
            limits,
            live: Arc::default(),
        }
    }

    /// The control of a run in progress (to cancel it or watch its events).
    pub fn control(&self, run_id: &str) -> Option<Arc<RunControl>> {
        self.lock().get(run_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunControl>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates and queues a run of `process` for `actor`, then executes it in the
    /// background. Returns the queued run.
    pub async fn start(
        &self,
        process: &Process,
        inputs: BTreeMap<String, serde_json::Value>,
        actor: &str,
    ) -> Result<RunRecord, StartError> {
        if process.required_approvals > 0 {
            return Err(StartError::ApprovalRequired(process.required_approvals));
        }
        let module = self
            .modules
            .get(&process.module_digest)
            .map_err(|e| StartError::Registry(e.to_string()))?
            .filter(|m| !m.retired)
            .ok_or_else(|| StartError::ModuleUnavailable(process.module_digest.clone()))?;
        let mut merged = process.default_inputs.clone();
        merged.extend(inputs);
        let given: BTreeMap<String, toml::Value> = merged
            .iter()
            .map(|(k, v)| Ok((k.clone(), json_to_toml(k, v)?)))
            .collect::<Result<_, ManifestError>>()?;
        let params = module.manifest.resolve_inputs(&given)?;
        let bytes = self
            .modules
            .bytes(&module.digest)
            .map_err(|e| StartError::Registry(e.to_string()))?
            .ok_or_else(|| StartError::ModuleUnavailable(module.digest.clone()))?;
        let task = self
            .bridge
            .runtime()
            .prepare(&bytes)
            .map_err(|e| StartError::Prepare(e.to_string()))?;
        let run_id = uuid::Uuid::new_v4().to_string();
        let record = RunRecord::new_queued(
            run_id.clone(),
            process.id.clone(),
            module.digest.clone(),
            actor.to_string(),
            merged,
        );
        let record = self.runs.create(record).await?;
        let control = RunControl::new();
        self.lock().insert(run_id.clone(), control.clone());
        let spec = RunSpec {
            identity: RunIdentity {
                run_id: run_id.clone(),
                actor: actor.to_string(),
                module: format!("{}@{}", module.name, module.version),
            },
            task,
            params,
            grant: process.grant.clone(),
            limits: self.limits.for_module(
                module.manifest.limits.memory_bytes(),
                self.bridge.runtime().max_memory_bytes(),
            ),
            control,
        };
        let policy = HostCallPolicy {
            engine: self.policy.clone(),
            requested: module.manifest.capabilities.iter().cloned().collect(),
        };
        let this = self.clone();
        tokio::spawn(async move { this.execute(spec, policy).await });
        Ok(record)
    }

    async fn execute(&self, spec: RunSpec, policy: HostCallPolicy) {
        let run_id = spec.identity.run_id.clone();
        let actor = spec.identity.actor.clone();
        if let Err(e) = self
            .runs
            .transition(&run_id, RunState::Running, &actor, |_| {})
            .await
        {
            // Cancelled while queued, or storage failure: nothing to run.
            tracing::warn!(run = %run_id, error = %e, "run not started");
            self.lock().remove(&run_id);
            return;
        }
        let report = self.bridge.execute_with_policy(spec, policy).await;
        let (state, apply): (RunState, RecordUpdate) = match report {
            Ok(report) => (
                final_state(&report.outcome),
                Box::new(move |r| fill(r, report)),
            ),
            Err(e) => {
                let message = e.to_string();
                (
                    RunState::Failed,
                    Box::new(move |r: &mut RunRecord| r.error = Some(message)),
                )
            }
        };
        if let Err(e) = self.runs.transition(&run_id, state, &actor, apply).await {
            tracing::error!(run = %run_id, error = %e, "could not record the run's end");
        }
        self.lock().remove(&run_id);
    }

    /// Cancels a queued or running run.
    pub async fn cancel(&self, run_id: &str, actor: &str) -> Result<RunRecord, RunsError> {
        if let Some(control) = self.control(run_id) {
            control.cancel();
        }
        match self
            .runs
            .transition(run_id, RunState::Cancelled, actor, |r| {
                r.error = Some("cancelled".into());
            })
            .await
        {
            // A running run records its own end (as cancelled) when it stops.
            Err(RunsError::BadTransition {
                from: RunState::Running,
                ..
            }) => self
                .runs
                .get(run_id)?
                .ok_or_else(|| RunsError::NotFound(run_id.into())),
            other => other,
        }
    }
}

/// A change to a run record, applied with its final transition.
type RecordUpdate = Box<dyn FnOnce(&mut RunRecord) + Send>;

/// Caps on what a run record keeps of a run's output, so one run cannot exceed the
/// record size limit.
const MAX_RECORDED_OUTPUT: usize = 1 << 20;

fn fill(record: &mut RunRecord, report: RunReport) {
    match report.outcome {
        RunOutcome::Succeeded { result } => record.result = Some(result),
        RunOutcome::Failed { error } => record.error = Some(error),
        RunOutcome::Stopped { reason } => record.error = Some(reason.to_string()),
        RunOutcome::Trapped { error } => record.error = Some(format!("trapped: {error}")),
    }
    record.events = report
        .events
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok())
        .collect();
    record.stdout = truncate(report.stdout);
    record.stderr = truncate(report.stderr);
    record.host_calls = report.host_calls;
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_RECORDED_OUTPUT {
        let mut cut = MAX_RECORDED_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

fn final_state(outcome: &RunOutcome) -> RunState {
    match outcome {
        RunOutcome::Succeeded { .. } => RunState::Succeeded,
        RunOutcome::Stopped {
            reason: RunStop::Cancelled,
        } => RunState::Cancelled,
        RunOutcome::Stopped {
            reason: RunStop::Limit(LimitExceeded::WallTime { .. }),
        } => RunState::TimedOut,
        _ => RunState::Failed,
    }
}

/// Converts a JSON input to the TOML-shaped value the manifest checks; `null` is refused.
fn json_to_toml(name: &str, value: &serde_json::Value) -> Result<toml::Value, ManifestError> {
    use serde_json::Value as J;
    Ok(match value {
        J::String(s) => toml::Value::String(s.clone()),
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::Array(items) => toml::Value::Array(
            items
                .iter()
                .map(|i| json_to_toml(name, i))
                .collect::<Result<_, _>>()?,
        ),
        J::Null | J::Object(_) => {
            return Err(ManifestError::BadInput {
                name: name.into(),
                expected: "a string, number, boolean or list".into(),
                why: "got null or an object".into(),
            });
        }
    })
}
