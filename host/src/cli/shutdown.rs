//! Graceful shutdown of `warden serve`: on SIGTERM or SIGINT the server stops accepting new
//! runs, lets the runs in flight finish within the grace period, then interrupts the rest,
//! and says in its exit code which of the two happened.
//!
//! Threat: a stop (a package upgrade, `systemctl stop`, a reboot) that loses track of what
//! privileged work was under way: a run left `running` forever, a remote command cut off
//! with no audit record of how it ended, or a new run slipping in after the drain began.
//! While draining, every route that can start a run answers 503 `shutting_down` with
//! `Retry-After`, and the scheduler is stopped first. A run still executing when the grace
//! period ends is recorded `interrupted` (audited, as [`SHUTDOWN_ACTOR`]) *before* it is
//! cancelled, so its end is durable even if the process is then killed; its host call in
//! progress is stopped and audited as any cancellation is. A run still waiting in the
//! queue never started and is recorded `cancelled`. A second signal ends the grace period
//! at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::runs::RunState;

/// Who records the runs a shutdown ends, in the run records and the audit log.
pub const SHUTDOWN_ACTOR: &str = "system:shutdown";

/// Exit code of `warden serve` when the grace period ended with runs still executing (they
/// were interrupted). 0 means every run in flight finished; 2 is any error.
pub const EXIT_RUNS_INTERRUPTED: i32 = 3;

/// Routes (method, template) that start a run, refused while draining.
const RUN_STARTS: [(Method, &str); 2] = [
    (Method::POST, "/v1/processes/{id}/runs"),
    (Method::POST, "/v1/runs/{id}/approve"),
];

/// How long interrupted runs get to stop (their host call signalled and audited) after
/// the grace period, before the server exits anyway.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// How often the drain looks at the run queue.
const POLL: Duration = Duration::from_millis(100);

/// Set once the server begins to shut down. Cheap to clone.
#[derive(Clone, Default)]
pub struct Drain {
    draining: Arc<AtomicBool>,
    /// Seconds a refused caller is told to wait (the grace period).
    retry_after: u64,
}

impl Drain {
    pub fn new(grace: Duration) -> Self {
        Drain {
            draining: Arc::default(),
            retry_after: grace.as_secs().max(1),
        }
    }

    fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Middleware: while draining, a run start is refused with 503 and `Retry-After`, and
/// `/healthz` answers 503 so a load balancer stops sending traffic; everything else (run
/// status, event streams, cancel) keeps working so clients can follow their runs to the end.
pub async fn gate(State(drain): State<Drain>, request: Request, next: Next) -> Response {
    if drain.is_draining() {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str());
        if route == Some("/healthz") {
            let body = axum::Json(serde_json::json!({ "status": "shutting-down" }));
            return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        }
        let starts_run = RUN_STARTS
            .iter()
            .any(|(method, path)| request.method() == method && route == Some(path));
        if starts_run {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down and starts no new runs; retry once it is back",
            )
            .retry_after(drain.retry_after)
            .into_response();
        }
    }
    next.run(request).await
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn stop_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Drains `state`: new runs refused from now on, runs in flight given `grace` to finish,
/// the rest ended. Returns the exit code: 0, or [`EXIT_RUNS_INTERRUPTED`].
pub async fn drain(state: &AppState, drain: &Drain, grace: Duration) -> anyhow::Result<i32> {
    drain.start();
    let queue = state.dispatcher.queue();
    let stats = queue.stats();
    tracing::info!(
        target: super::serve::SERVER_LOG,
        running = stats.running,
        queued = stats.queued,
        grace_secs = grace.as_secs(),
        "shutting down: no new runs; waiting for the runs in flight"
    );
    let deadline = tokio::time::Instant::now() + grace;
    // A second signal cuts the grace period short.
    let again = stop_signal();
    tokio::pin!(again);
    loop {
        let stats = queue.stats();
        if stats.running == 0 && stats.queued == 0 {
            tracing::info!(target: super::serve::SERVER_LOG, "every run in flight finished");
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = &mut again => {
                tracing::warn!(target: super::serve::SERVER_LOG, "second signal: ending the grace period now");
                break;
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    let ended = end_the_rest(state).await?;
    tracing::warn!(
        target: super::serve::SERVER_LOG,
        interrupted = ended.interrupted,
        cancelled = ended.cancelled,
        "grace period over: runs still in flight were ended"
    );
    // Let the interrupted runs stop, so their host calls are signalled and audited.
    let stop_by = tokio::time::Instant::now() + STOP_WAIT;
    while queue.stats().running > 0 && tokio::time::Instant::now() < stop_by {
        tokio::time::sleep(POLL).await;
    }
    Ok(if ended.interrupted + ended.cancelled > 0 {
        EXIT_RUNS_INTERRUPTED
    } else {
        0
    })
}

struct Ended {
    interrupted: usize,
    cancelled: usize,
}

/// Records every running run of this server `interrupted` and then cancels it; cancels
/// every queued one. Runs other servers on the same database hold are left alone: this
/// server's are the ones with a live control in its dispatcher.
async fn end_the_rest(state: &AppState) -> anyhow::Result<Ended> {
    let mut ended = Ended {
        interrupted: 0,
        cancelled: 0,
    };
    let ours = |state_now: RunState| -> anyhow::Result<Vec<String>> {
        let ids = state.runs.ids_in_state(state_now)?;
        Ok(ids
            .into_iter()
            .filter(|id| state.dispatcher.control(id).is_some())
            .collect())
    };
    for id in ours(RunState::Running)? {
        let recorded = state
            .runs
            .transition(&id, RunState::Interrupted, SHUTDOWN_ACTOR, |r| {
                r.error = Some("the server shut down before the run finished".into());
            })
            .await;
        match recorded {
            Ok(_) => ended.interrupted += 1,
            // It finished (or was cancelled) since the list was read.
            Err(crate::runs::RunsError::BadTransition { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(control) = state.dispatcher.control(&id) {
            control.cancel();
        }
    }
    for id in ours(RunState::Queued)? {
        match state.dispatcher.cancel(&id, SHUTDOWN_ACTOR).await {
            Ok(_) => ended.cancelled += 1,
            Err(crate::runs::RunsError::BadTransition { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ended)
}
