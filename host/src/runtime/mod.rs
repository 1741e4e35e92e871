//! The sandbox: runs one task component per run in wasmtime, with nothing granted but the
//! host functions of its [`TaskHost`] (Warden's capabilities, linked in
//! `capabilities/link.rs`) and the limits of [`limits::RunLimits`]. The runtime knows
//! nothing of the capabilities' state.
//!
//! Threat: a guest reaching the host's files, environment, network or stdio, or starving
//! the host of CPU, memory or output space. WASI p2 is linked because Rust `std` guests
//! import it, but with an empty context: no preopened directories, no environment, no
//! arguments, no sockets, no name lookup, stdin closed; stdout and stderr go to capped
//! in-memory buffers that become the run's output. Clocks and randomness are allowed.
//!
//! One [`Runtime`] owns the shared engine, the linker and the compiled-module cache; every
//! run gets a fresh `Store` (a trapped instance cannot be re-entered).

pub mod cache;
pub mod engine;
pub mod limits;
pub mod output;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::redact::Redactor;
use cache::{ModuleCache, PrepareError, PreparedTask};
use engine::{EngineConfig, EpochTicker};
use limits::{LimitExceeded, RunLimiter, RunLimits};
use output::CappedOutput;

/// Why a run was stopped by the host rather than finishing on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RunStop {
    /// The run broke one of its limits.
    #[error("{0}")]
    Limit(LimitExceeded),
    /// An audit record could not be written durably, so the run was ended (fail closed).
    #[error("audit log unavailable, run ended (fail closed): {0}")]
    AuditFailed(String),
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// One entry of a run's event log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunEvent {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The message, already redacted.
    pub message: String,
}

/// Lets the outside world watch and cancel a run while it executes.
pub struct RunControl {
    cancelled: CancellationToken,
    live: tokio::sync::broadcast::Sender<RunEvent>,
}

/// Events a slow live subscriber may fall behind by before it misses some (it can still
/// read the full log from the finished run).
const LIVE_EVENT_BUFFER: usize = 256;

impl RunControl {
    /// A control for a new run.
    pub fn new() -> Arc<Self> {
        let (live, _) = tokio::sync::broadcast::channel(LIVE_EVENT_BUFFER);
        Arc::new(RunControl {
            cancelled: CancellationToken::new(),
            live,
        })
    }

    /// Asks the run to stop; it ends as `cancelled` at its next instruction, or — when it is
    /// inside a host call — once that call has stopped (its remote command signalled) and its
    /// outcome is recorded.
    pub fn cancel(&self) {
        self.cancelled.cancel();
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }

    /// A token that fires when the run is cancelled: what host calls in progress listen to.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancelled.clone()
    }

    /// Receives the run's events as they are logged.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RunEvent> {
        self.live.subscribe()
    }

    async fn cancelled(&self) {
        self.cancelled.cancelled().await;
    }
}

/// A run's event log, capped in bytes.
pub struct EventLog {
    live: tokio::sync::broadcast::Sender<RunEvent>,
    started: Instant,
    events: Vec<RunEvent>,
    bytes: usize,
    cap: usize,
}

impl EventLog {
    /// An empty log holding at most `cap` message bytes; events are also sent to `control`'s
    /// live subscribers.
    pub fn new(cap: usize, control: &RunControl) -> Self {
        EventLog {
            live: control.live.clone(),
            started: Instant::now(),
            events: Vec::new(),
            bytes: 0,
            cap,
        }
    }

    /// The events logged, in order.
    pub fn into_events(self) -> Vec<RunEvent> {
        self.events
    }

    /// Appends an event; false (and nothing stored) when the cap would be passed.
    pub fn push(&mut self, level: &str, message: String) -> bool {
        if self.bytes + message.len() > self.cap {
            return false;
        }
        self.bytes += message.len();
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let event = RunEvent {
            at_ms,
            level: level.to_string(),
            message,
        };
        // Having no live subscriber is not an error.
        let _ = self.live.send(event.clone());
        self.events.push(event);
        true
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RunOutcome {
    /// `run` returned `ok`.
    Succeeded { result: String },
    /// `run` returned `err`.
    Failed { error: String },
    /// The host stopped the run.
    Stopped { reason: RunStop },
    /// The guest trapped (a panic, an unreachable, a bad memory access).
    Trapped { error: String },
}

impl RunOutcome {
    /// True for a run whose task returned `ok`.
    pub fn is_success(&self) -> bool {
        matches!(self, RunOutcome::Succeeded { .. })
    }
}

/// Everything a finished run produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// How it ended.
    pub outcome: RunOutcome,
    /// The event log.
    pub events: Vec<RunEvent>,
    /// Captured stdout (lossy UTF-8, redacted).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8, redacted).
    pub stderr: String,
    /// Host calls made.
    pub host_calls: u64,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

/// What the sandbox needs of the per-run host state it runs a task with: how to link the
/// host functions, how to call the task's `run` export, and what the run leaves behind.
/// The capabilities implement it ([`crate::capabilities::HostContext`]); the runtime knows
/// nothing else of them.
pub trait TaskHost: Send + Sized + 'static {
    /// A component linked against this host's imports, ready to instantiate.
    type Pre: Send + Sync + 'static;

    /// Adds the host functions to `linker` (WASI is already there).
    fn add_to_linker(linker: &mut Linker<RunState<Self>>) -> anyhow::Result<()>;

    /// Checks that `pre` has the task's exports and keeps it for instantiation.
    fn pre(pre: InstancePre<RunState<Self>>) -> wasmtime::Result<Self::Pre>;

    /// Instantiates `pre` in `store` and calls the task's `run`.
    fn call_run<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<RunState<Self>>,
    ) -> impl Future<Output = wasmtime::Result<Result<String, String>>> + Send + 'a;

    /// Why the host stopped the run, once it has: set by the runtime on a cancel or at the
    /// deadline, and by the host on a limit or an audit failure.
    fn stop(&mut self) -> &mut Option<RunStop>;

    /// What the finished run leaves behind: its events, host-call count and redactor.
    fn finish(self) -> Finished;
}

/// What a finished run's host state leaves behind for its report.
pub struct Finished {
    /// The event log (redacted again as the report is made).
    pub events: Vec<RunEvent>,
    /// Host calls the guest made.
    pub host_calls: u64,
    /// Every secret the run touched.
    pub redactor: crate::redact::Redactor,
}

/// A store's data: WASI's empty context plus the per-run host state.
pub struct RunState<H> {
    wasi: WasiCtx,
    wasi_table: ResourceTable,
    limiter: RunLimiter,
    /// The host functions' state.
    pub host: H,
}

impl<H: Send> WasiView for RunState<H> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.wasi_table,
        }
    }
}

/// The shared engine, linker and module cache, for host state `H`.
pub struct Runtime<H: TaskHost> {
    engine: Engine,
    linker: Linker<RunState<H>>,
    cache: ModuleCache<H>,
    max_memory_bytes: usize,
    _ticker: EpochTicker,
}

impl<H: TaskHost> Runtime<H> {
    /// Builds the engine and linker; artifacts are cached under `artifact_dir`.
    pub fn new(config: &EngineConfig, artifact_dir: &Path) -> anyhow::Result<Arc<Self>> {
        let engine = engine::build_engine(config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        H::add_to_linker(&mut linker)?;
        let cache = ModuleCache::open(&engine, artifact_dir)?;
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache,
            max_memory_bytes: config.max_memory_bytes,
            _ticker: ticker,
        }))
    }

    /// Compiles (or loads from cache) a component, refusing anything that is not a
    /// component this host can run.
    pub fn prepare(&self, component: &[u8]) -> Result<Arc<PreparedTask<H>>, PrepareError> {
        self.cache.prepare(&self.engine, &self.linker, component)
    }

    /// The most linear memory any run may be given (the engine's per-instance memory
    /// reservation): the cap on a module's own memory ask.
    pub fn max_memory_bytes(&self) -> usize {
        self.max_memory_bytes
    }

    /// Components compiled by this process (cache misses).
    pub fn compiles(&self) -> u64 {
        self.cache.compiles()
    }

    /// Runs `task` to completion in a fresh store and reports how it went. Never panics
    /// or returns early on guest misbehaviour: every ending is a [`RunOutcome`].
    pub async fn run(
        &self,
        task: &PreparedTask<H>,
        host: H,
        limits: &RunLimits,
        control: &Arc<RunControl>,
    ) -> RunReport {
        let started = Instant::now();
        let stdout = CappedOutput::new(limits.output_bytes);
        let stderr = CappedOutput::new(limits.output_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let state = RunState {
            wasi,
            wasi_table: ResourceTable::new(),
            limiter: RunLimiter::new(limits.clone()),
            host,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline = started + limits.wall_time;
        let wall_ms = u64::try_from(limits.wall_time.as_millis()).unwrap_or(u64::MAX);
        store.set_epoch_deadline(1);
        let watched = Arc::clone(control);
        store.epoch_deadline_callback(move |mut ctx| {
            if watched.is_cancelled() {
                ctx.data_mut().host.stop().get_or_insert(RunStop::Cancelled);
                return Ok(UpdateDeadline::Interrupt);
            }
            if Instant::now() < deadline {
                // Yield so one busy guest cannot monopolise an executor thread.
                return Ok(UpdateDeadline::Yield(1));
            }
            let stop = RunStop::Limit(LimitExceeded::WallTime { limit_ms: wall_ms });
            ctx.data_mut().host.stop().get_or_insert(stop);
            Ok(UpdateDeadline::Interrupt)
        });

        let mut call = Box::pin(H::call_run(&task.pre, &mut store));
        // Epochs cannot interrupt host code, so the whole call is also bounded by a timer.
        // Host calls stop by themselves at a cancel or at the deadline (and record their
        // outcome first); the timers here are the backstop for one that does not, and are
        // never what ends a well-behaved call.
        let result = tokio::select! {
            r = tokio::time::timeout(limits.wall_time + EPOCH_GRACE + STOP_GRACE, &mut call) => Some(r),
            () = control.cancelled() => None,
        };
        let result = match result {
            Some(r) => Some(r),
            None => tokio::time::timeout(STOP_GRACE, &mut call)
                .await
                .ok()
                .map(Ok),
        };
        drop(call);
        let state = store.into_data();
        let mut host = state.host;
        let result = match result {
            Some(r) => r,
            None => {
                host.stop().get_or_insert(RunStop::Cancelled);
                Ok(Err(wasmtime::Error::msg("cancelled")))
            }
        };
        let stop = host
            .stop()
            .clone()
            .or(state.limiter.exceeded.clone().map(RunStop::Limit));
        let outcome = match (result, stop) {
            (Err(_), _) => RunOutcome::Stopped {
                reason: RunStop::Limit(LimitExceeded::WallTime { limit_ms: wall_ms }),
            },
            (Ok(_), Some(reason)) => RunOutcome::Stopped { reason },
            (Ok(Ok(Ok(result))), None) => RunOutcome::Succeeded { result },
            (Ok(Ok(Err(error))), None) => RunOutcome::Failed { error },
            (Ok(Err(trap)), None) => classify_trap(&trap, &stdout, &stderr, limits),
        };
        // Redacted again as a whole, with every secret the run touched by now: a task can
        // join pieces it received separately (each too short to match) into its result.
        let finished = host.finish();
        let redactor = &finished.redactor;
        RunReport {
            outcome: redact_outcome(redactor, outcome),
            events: redact_events(redactor, &finished.events),
            stdout: redact_captured(redactor, &stdout),
            stderr: redact_captured(redactor, &stderr),
            host_calls: finished.host_calls,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The task's own strings (result, error, trap message), before anything stores, streams or
/// returns them.
fn redact_outcome(redactor: &Redactor, outcome: RunOutcome) -> RunOutcome {
    match outcome {
        RunOutcome::Succeeded { result } => RunOutcome::Succeeded {
            result: redactor.redact_str(&result),
        },
        RunOutcome::Failed { error } => RunOutcome::Failed {
            error: redactor.redact_str(&error),
        },
        RunOutcome::Trapped { error } => RunOutcome::Trapped {
            error: redactor.redact_str(&error),
        },
        stopped @ RunOutcome::Stopped { .. } => stopped,
    }
}

/// The stored event log. Each line was redacted when logged; a secret registered later in
/// the run is removed from the stored copy too (the live stream already carried the line).
fn redact_events(redactor: &Redactor, events: &[RunEvent]) -> Vec<RunEvent> {
    events
        .iter()
        .map(|e| RunEvent {
            message: redactor.redact_str(&e.message),
            ..e.clone()
        })
        .collect()
}

/// The guest's stdout or stderr: redacted as bytes (before a lossy UTF-8 conversion could
/// break a match), and, when the stream hit its cap, with the cut's fixed tail withheld.
fn redact_captured(redactor: &Redactor, output: &CappedOutput) -> String {
    let bytes = output.contents();
    let clean = if output.overflowed() {
        redactor.redact_truncated(&bytes)
    } else {
        redactor.redact(&bytes)
    };
    String::from_utf8_lossy(&clean).into_owned()
}

/// Extra time the outer timer allows past the epoch deadline, so a guest stuck in wasm is
/// stopped (and named) by the epoch, and the timer only catches hung host code.
const EPOCH_GRACE: Duration = Duration::from_millis(250);

/// How long a host call in progress may take to stop and record its outcome after a cancel
/// or the deadline, before the run is dropped regardless: the spine's own grace for an act
/// that does not stop, plus time for the outcome record.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Names a trap: an overflowed output stream is the output limit, anything else is the
/// guest's own fault (a panic, an unreachable, a failed allocation).
fn classify_trap(
    trap: &wasmtime::Error,
    stdout: &CappedOutput,
    stderr: &CappedOutput,
    limits: &RunLimits,
) -> RunOutcome {
    let limit = limits.output_bytes;
    for (stream, output) in [("stdout", stdout), ("stderr", stderr)] {
        if output.overflowed() {
            return RunOutcome::Stopped {
                reason: RunStop::Limit(LimitExceeded::Output {
                    stream: stream.into(),
                    limit,
                }),
            };
        }
    }
    RunOutcome::Trapped {
        error: format!("{trap:#}"),
    }
}
