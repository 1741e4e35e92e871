//! Starting runs on the embedded bridge: resolve the process's module and inputs, admit the
//! run to the run queue (see `queue`), persist it as `queued` (or `awaiting-approval` when
//! its process requires approvals; see `approval`), execute it asynchronously once it holds
//! an execution slot, and record how it ended.
//!
//! Threat: a run that starts with inputs its module did not declare, a retired or unknown
//! module, a lost outcome, or one caller's runs exhausting the instance pool for everyone.
//! Inputs are validated against the signed manifest before the run is created; admission
//! is decided before the run is created too (a refused run leaves no record, only a
//! `run.refused` audit record); every transition goes through the audited run store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use super::queue::{Admission, Place, Refusal, RunQueue, Slot};
use super::{Process, RunRecord, RunState, RunStore, RunsError};
use crate::audit::{AuditEntry, Decision};
use crate::bridge::PreparedTask;
use crate::bridge::{Bridge, RunSpec};
use crate::capabilities::{HostCallPolicy, RunIdentity};
use crate::policy::PolicyEngine;
use crate::registry::inputs::Param;
use crate::registry::manifest::ManifestError;
use crate::registry::store::{ModuleInfo, ModuleStore};
use crate::runtime::limits::{LimitExceeded, RunLimits};
use crate::runtime::{RunControl, RunOutcome, RunReport, RunStop};

#[path = "dispatch_zones.rs"]
mod zones;

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
    /// The module's signature no longer verifies against the publishers trusted now (its
    /// publisher was distrusted or its key rotated).
    #[error("module {0} is refused: {1}")]
    Untrusted(String, String),
    /// The process now runs another module than the run was requested with; the run must
    /// be requested again.
    #[error("process {0} changed its module since the run was requested")]
    ProcessChanged(String),
    /// The run queue refused the run (full, or the caller or process is at its limit).
    /// Nothing was created for it.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// The process's targets span zones (or cannot be read): no one bridge can run it.
    #[error("{0}")]
    Zones(String),
}

/// Audit action of a run refused admission to the queue.
pub const REFUSED_ACTION: &str = "run.refused";

/// Who refuses a queued run whose module is no longer trusted when it leaves the queue.
pub const TRUST_ACTOR: &str = "system:trust";

/// What a run of a process would execute: [`Dispatcher::resolve`]'s answer.
pub struct ResolvedRun {
    /// The (active) module.
    pub module: ModuleInfo,
    /// The inputs: process defaults overridden by the run's own.
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// The inputs as checked against the manifest, for the guest.
    pub params: Vec<Param>,
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
    /// Prepared tasks by module digest, so a run of a known module neither reads its
    /// stored bytes nor hashes them again (tens of ms for a 17 MB Python component).
    prepared: Arc<Mutex<HashMap<String, Arc<PreparedTask>>>>,
    /// Execution slots and the runs waiting for one.
    queue: RunQueue,
    /// The zone the embedded bridge serves; runs of other zones wait for a remote bridge.
    embedded_zone: Arc<str>,
    /// Woken when a run is queued for a remote bridge (the bridges' claims wait on it).
    zone_queued: Arc<tokio::sync::Notify>,
    /// Workflow runs this server drives (see `crate::workflow::engine`).
    workflows: crate::workflow::live::LiveWorkflows,
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
            prepared: Arc::default(),
            queue: RunQueue::new(
                crate::runtime::engine::EngineConfig::default().run_slots(),
                super::queue::QueueLimits::default(),
            ),
            embedded_zone: Arc::from(crate::targets::DEFAULT_ZONE),
            zone_queued: Arc::default(),
            workflows: Default::default(),
        }
    }

    /// The workflow runs this dispatcher drives.
    pub fn workflows(&self) -> &crate::workflow::live::LiveWorkflows {
        &self.workflows
    }

    /// The run store.
    pub fn runs(&self) -> &RunStore {
        &self.runs
    }

    /// This dispatcher with `queue` (sized for the bridge's runtime) in place of the default.
    pub fn with_queue(mut self, queue: RunQueue) -> Self {
        self.queue = queue;
        self
    }

    /// The run queue (for its counts).
    pub fn queue(&self) -> &RunQueue {
        &self.queue
    }

    /// The module store runs are resolved against.
    pub fn modules(&self) -> &ModuleStore {
        &self.modules
    }

    /// The control of a run in progress (to cancel it or watch its events).
    pub fn control(&self, run_id: &str) -> Option<Arc<RunControl>> {
        self.lock().get(run_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunControl>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates a run of `process` for `actor` and either queues and executes it in the
    /// background, or, when the process requires approvals, stores it `awaiting-approval`
    /// (it starts once [`Dispatcher::start_approved`] is called). Returns the stored run.
    /// The run counts against `actor`'s share of the queue.
    pub async fn start(
        &self,
        process: &Process,
        inputs: BTreeMap<String, serde_json::Value>,
        actor: &str,
    ) -> Result<RunRecord, StartError> {
        self.start_charged(process, inputs, actor, actor).await
    }

    /// [`Dispatcher::start`] with the run counted against `charged_to`'s share of the
    /// queue (a schedule's owner for the runs it fires) rather than `actor`'s.
    pub async fn start_charged(
        &self,
        process: &Process,
        inputs: BTreeMap<String, serde_json::Value>,
        actor: &str,
        charged_to: &str,
    ) -> Result<RunRecord, StartError> {
        if let Some(workflow) = &process.workflow {
            return crate::workflow::engine::start(self, process, workflow, inputs, actor).await;
        }
        self.start_as(process, inputs, actor, charged_to, None)
            .await
    }

    /// [`Dispatcher::start_charged`] of a single-task `process`; `step` gives the run's id and
    /// names the workflow step it executes, if it is one.
    pub(crate) async fn start_as(
        &self,
        process: &Process,
        inputs: BTreeMap<String, serde_json::Value>,
        actor: &str,
        charged_to: &str,
        step: Option<(String, crate::workflow::StepRef)>,
    ) -> Result<RunRecord, StartError> {
        let ResolvedRun {
            module,
            inputs: merged,
            params,
        } = self.resolve(process, inputs)?;
        let (run_id, step) = match step {
            Some((id, step)) => (id, Some(step)),
            None => (uuid::Uuid::new_v4().to_string(), None),
        };
        let mut record = RunRecord::new_queued(
            run_id,
            process.id.clone(),
            module.digest.clone(),
            actor.to_string(),
            merged,
        );
        record.step = step;
        let zone = self.zone_of(process)?;
        if process.required_approvals > 0 {
            record.state = RunState::AwaitingApproval;
            return Ok(self.runs.create(record).await?);
        }
        if zone != *self.embedded_zone {
            return self.queue_for_zone(record, &zone, None).await;
        }
        let task = self.prepare(&module)?;
        let admission = self.admit(charged_to, &process.id, actor).await?;
        let (spec, policy) = self.spec(process, &module, task, params, &record);
        match admission {
            Admission::Start(slot) => {
                // Nothing to wait for: queued and running are recorded in one commit, and
                // the run is durable as running before the guest can act on anything. If
                // recording fails, the slot is dropped and given back.
                let record = self
                    .runs
                    .create_running(record, &Bridge::describe(&spec))
                    .await?;
                self.lock().insert(record.id.clone(), spec.control.clone());
                let this = self.clone();
                tokio::spawn(async move { this.run_to_end(spec, policy, slot).await });
                Ok(record)
            }
            Admission::Wait(place) => {
                let record = self.runs.create(record).await?;
                self.enqueue(place, spec, policy);
                Ok(record)
            }
        }
    }

    /// Admits a run of process `process_id` charged to `charged_to` to the queue, or
    /// refuses it: the refusal is audited (`run.refused`, as `actor`) before it is returned.
    /// Call this before anything about the run is recorded.
    pub async fn admit(
        &self,
        charged_to: &str,
        process_id: &str,
        actor: &str,
    ) -> Result<Admission, StartError> {
        let refusal = match self.queue.admit(charged_to, process_id) {
            Ok(admission) => return Ok(admission),
            Err(refusal) => refusal,
        };
        let entry = AuditEntry {
            run_id: None,
            actor: actor.to_string(),
            action: REFUSED_ACTION.to_string(),
            target: None,
            credential: None,
            decision: Decision::Denied {
                reason: refusal.code().to_string(),
                policy: None,
            },
            outcome: "refused".to_string(),
            duration_us: 0,
            detail: Some(format!("process {process_id}: {refusal}")),
        };
        self.bridge
            .services()
            .server
            .append_audit(vec![entry])
            .await
            .map_err(RunsError::from)?;
        Err(StartError::Refused(refusal))
    }

    /// The module a run of `process` executes, the inputs it gets (process defaults
    /// overridden by `inputs`) and their manifest-checked form. Fails if the module is
    /// unknown or retired, or the inputs do not match its manifest.
    pub fn resolve(
        &self,
        process: &Process,
        inputs: BTreeMap<String, serde_json::Value>,
    ) -> Result<ResolvedRun, StartError> {
        let module = self
            .modules
            .get(&process.module_digest)
            .map_err(|e| StartError::Registry(e.to_string()))?
            .filter(|m| !m.retired)
            .ok_or_else(|| StartError::ModuleUnavailable(process.module_digest.clone()))?;
        // Invariant 3 at run time: only what verifies against the publishers trusted now.
        self.modules
            .check_trusted(&module)
            .map_err(|e| StartError::Untrusted(module.digest.clone(), e.to_string()))?;
        let mut merged = process.default_inputs.clone();
        merged.extend(inputs);
        let given: BTreeMap<String, toml::Value> = merged
            .iter()
            .map(|(k, v)| Ok((k.clone(), json_to_toml(k, v)?)))
            .collect::<Result<_, ManifestError>>()?;
        let params = module.manifest.resolve_inputs(&given)?;
        Ok(ResolvedRun {
            module,
            inputs: merged,
            params,
        })
    }

    /// Checks `inputs` for a run of `process` without starting one: against its module's
    /// manifest, or a workflow's declared inputs (process defaults merged in both cases).
    pub fn check_run_inputs(
        &self,
        process: &Process,
        inputs: BTreeMap<String, serde_json::Value>,
    ) -> Result<(), StartError> {
        let Some(workflow) = &process.workflow else {
            return self.resolve(process, inputs).map(|_| ());
        };
        let mut merged = process.default_inputs.clone();
        merged.extend(inputs);
        crate::workflow::engine::check_inputs(workflow, &merged)
    }

    /// The inputs a run of `process` takes: its module's, or its workflow's.
    pub fn declared_inputs(
        &self,
        process: &Process,
    ) -> Result<BTreeMap<String, crate::registry::manifest::InputSpec>, StartError> {
        if let Some(workflow) = &process.workflow {
            return Ok(workflow.inputs.clone());
        }
        let module = self
            .modules
            .get(&process.module_digest)
            .map_err(|e| StartError::Registry(e.to_string()))?
            .ok_or_else(|| StartError::ModuleUnavailable(process.module_digest.clone()))?;
        Ok(module.manifest.inputs)
    }

    /// Queues and executes a run whose approvals are complete, as `actor` (the approver
    /// whose approval completed them), with the `admission` the caller obtained from
    /// [`Dispatcher::admit`] (charged to the run's requester) before recording the
    /// approval. The caller has checked the approvals against the process as it is now; the
    /// run executes exactly that process's module and grant.
    pub async fn start_approved(
        &self,
        run: &RunRecord,
        process: &Process,
        actor: &str,
        admission: Admission,
    ) -> Result<RunRecord, StartError> {
        if run.module_digest != process.module_digest || run.process_id != process.id {
            return Err(StartError::ProcessChanged(process.id.clone()));
        }
        let ResolvedRun { module, params, .. } = self.resolve(process, run.inputs.clone())?;
        let zone = self.zone_of(process)?;
        if zone != *self.embedded_zone {
            // The admission (a local slot) is not needed: a remote bridge runs it.
            drop(admission);
            return self.queue_for_zone(run.clone(), &zone, Some(actor)).await;
        }
        let task = self.prepare(&module)?;
        let record = self
            .runs
            .transition(&run.id, RunState::Queued, actor, |_| {})
            .await?;
        let (spec, policy) = self.spec(process, &module, task, params, &record);
        match admission {
            Admission::Start(slot) => {
                self.lock().insert(record.id.clone(), spec.control.clone());
                let this = self.clone();
                tokio::spawn(async move { this.begin(spec, policy, slot).await });
            }
            Admission::Wait(place) => self.enqueue(place, spec, policy),
        }
        Ok(record)
    }

    fn prepare(&self, module: &ModuleInfo) -> Result<Arc<PreparedTask>, StartError> {
        let cached = self
            .prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&module.digest)
            .cloned();
        if let Some(task) = cached {
            return Ok(task);
        }
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
        self.prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(module.digest.clone(), task.clone());
        Ok(task)
    }

    /// Puts the recorded, queued run of `spec` in line; it begins when it gets a slot.
    fn enqueue(&self, place: Place, spec: RunSpec, policy: HostCallPolicy) {
        let run_id = spec.identity.run_id.clone();
        self.lock().insert(run_id.clone(), spec.control.clone());
        // The job may be called from wherever a slot is freed; it only spawns.
        let handle = tokio::runtime::Handle::try_current().ok();
        let this = self.clone();
        let job = Box::new(move |slot: Slot| match handle {
            Some(handle) => {
                handle.spawn(async move { this.begin(spec, policy, slot).await });
            }
            None => {
                tracing::error!(run = %spec.identity.run_id, "no async runtime to start the run")
            }
        });
        self.queue.enqueue(place, run_id, job);
    }

    /// Executes a queued run that holds its slot: records it running, then runs it to its
    /// end.
    async fn begin(&self, spec: RunSpec, policy: HostCallPolicy, slot: Slot) {
        let (run_id, actor) = (spec.identity.run_id.clone(), spec.identity.actor.clone());
        // A run may wait in the queue while its publisher is distrusted: the signature is
        // checked against the publishers trusted now, again, as it leaves the queue.
        if let Err(why) = self.still_trusted(&run_id) {
            tracing::warn!(run = %run_id, reason = %why, "queued run refused");
            let note = format!("refused as it left the queue: {why}");
            let refused = self
                .runs
                .transition_noted(&run_id, RunState::Denied, TRUST_ACTOR, &note, |r| {
                    r.error = Some(note.clone())
                })
                .await;
            if let Err(e) = refused {
                tracing::warn!(run = %run_id, error = %e, "queued run not refused");
            }
            self.lock().remove(&run_id);
            return;
        }
        let started_with = Bridge::describe(&spec);
        if let Err(e) = self
            .runs
            .transition_noted(&run_id, RunState::Running, &actor, &started_with, |_| {})
            .await
        {
            // Cancelled while queued, or storage failure: nothing to run (the slot is
            // given back as it drops).
            tracing::warn!(run = %run_id, error = %e, "run not started");
            self.lock().remove(&run_id);
            return;
        }
        self.run_to_end(spec, policy, slot).await;
    }

    /// Whether run `run_id`'s module still verifies against the publishers trusted now (and
    /// is not retired); the reason if not.
    fn still_trusted(&self, run_id: &str) -> Result<(), String> {
        let digest = self
            .runs
            .get(run_id)
            .map_err(|e| e.to_string())?
            .map(|r| r.module_digest)
            .ok_or_else(|| format!("run {run_id} is not recorded"))?;
        let digest = digest.as_str();
        let module = self
            .modules
            .get(digest)
            .map_err(|e| e.to_string())?
            .filter(|m| !m.retired)
            .ok_or_else(|| format!("module {digest} is unknown or retired"))?;
        self.modules
            .check_trusted(&module)
            .map_err(|e| format!("module {digest} is no longer trusted: {e}"))
    }

    /// What the bridge needs to execute `record`, and the checks on its host calls.
    fn spec(
        &self,
        process: &Process,
        module: &ModuleInfo,
        task: Arc<PreparedTask>,
        params: Vec<Param>,
        record: &RunRecord,
    ) -> (RunSpec, HostCallPolicy) {
        let spec = RunSpec {
            identity: RunIdentity {
                run_id: record.id.clone(),
                actor: record.actor.clone(),
                module: format!("{}@{}", module.name, module.version),
            },
            task,
            params,
            grant: process.grant.clone(),
            limits: process.limits.lower(self.limits.for_module(
                module.manifest.limits.memory_bytes(),
                self.bridge.runtime().max_memory_bytes(),
            )),
            control: RunControl::new(),
        };
        let policy = HostCallPolicy {
            engine: self.policy.clone(),
            requested: module.manifest.capabilities.iter().cloned().collect(),
            scope: module.manifest.requests.clone(),
        };
        (spec, policy)
    }

    /// Executes a run already recorded as running, and records how it ended. `slot` is
    /// given back as soon as the run's store (its pool instances) is gone.
    async fn run_to_end(&self, spec: RunSpec, policy: HostCallPolicy, slot: Slot) {
        let run_id = spec.identity.run_id.clone();
        let actor = spec.identity.actor.clone();
        let report = self.bridge.execute_recorded(spec, policy).await;
        drop(slot);
        let (state, note, apply): (RunState, String, RecordUpdate) = match report {
            Ok(report) => (
                final_state(&report.outcome),
                format!("host calls: {}", report.host_calls),
                Box::new(move |r| fill(r, report)),
            ),
            Err(e) => {
                let message = e.to_string();
                (
                    RunState::Failed,
                    String::new(),
                    Box::new(move |r: &mut RunRecord| r.error = Some(message)),
                )
            }
        };
        match self
            .runs
            .transition_noted(&run_id, state, &actor, &note, apply)
            .await
        {
            Ok(_) => {}
            // Its end was recorded already: a shutdown (or another server's sweep) recorded it
            // interrupted before stopping it.
            Err(RunsError::BadTransition {
                from: RunState::Interrupted,
                ..
            }) => tracing::debug!(run = %run_id, "run already recorded as interrupted"),
            Err(e) => tracing::error!(run = %run_id, error = %e, "could not record the run's end"),
        }
        self.lock().remove(&run_id);
    }

    /// Cancels a queued or running run. A queued run leaves the queue (its place is given
    /// back) and never starts.
    pub async fn cancel(&self, run_id: &str, actor: &str) -> Result<RunRecord, RunsError> {
        if let Some(record) = self.workflows.cancel(&self.runs, run_id, actor).await? {
            return Ok(record);
        }
        if let Some(control) = self.control(run_id) {
            control.cancel();
        }
        let cancelled = self
            .runs
            .transition(run_id, RunState::Cancelled, actor, |r| {
                r.error = Some("cancelled".into());
            })
            .await;
        if cancelled.is_ok() && self.queue.withdraw(run_id) {
            self.lock().remove(run_id);
        }
        match cancelled {
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

pub(crate) fn fill(record: &mut RunRecord, report: RunReport) {
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

pub(crate) fn final_state(outcome: &RunOutcome) -> RunState {
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
pub(crate) fn json_to_toml(
    name: &str,
    value: &serde_json::Value,
) -> Result<toml::Value, ManifestError> {
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
