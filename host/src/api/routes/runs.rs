//! `/v1/runs`: run state, output, live events (SSE) and cancellation.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Params;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::policy::Action;
use crate::runs::{MAX_LIST_RUNS, RunCursor, RunFilter, RunRecord, RunState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(run_events))
        .routes(routes!(cancel_run))
        .routes(routes!(resume_run))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RunQuery {
    /// Only this process's runs (its id).
    process: Option<String>,
    /// Only runs in this state.
    state: Option<RunState>,
    /// Only runs started by this user (a user name).
    #[param(pattern = r"^[a-z0-9._-]{1,64}$")]
    user: Option<String>,
    /// Only runs created at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Only runs created before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Only runs older than this cursor (`created_ms:id`, the `x-warden-next-before` of the
    /// previous page).
    #[param(pattern = r"^[0-9]{1,19}:[A-Za-z0-9._-]{1,64}$")]
    before: Option<String>,
    /// At most this many (capped at 100).
    #[param(minimum = 0)]
    limit: Option<usize>,
}

/// Response header naming the cursor of the next page of runs (absent on the last page).
pub const NEXT_BEFORE_HEADER: &str = "x-warden-next-before";

/// The response header `name: cursor` when there is a next page, else no header.
pub(crate) fn next_page_header(name: &'static str, cursor: Option<String>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = cursor.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(name, value);
    }
    headers
}

impl AppState {
    /// A run the caller may see: its own, or one of a process it may view.
    pub(crate) async fn visible_run(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<RunRecord, ApiError> {
        let run = self
            .runs
            .get(id)?
            .ok_or_else(|| ApiError::not_found(format!("run {id}")))?;
        if run.actor != caller.user.name {
            let process = self.load_process(&run.process_id)?;
            self.authorize_process(caller, Action::ViewProcess, &process)
                .await?;
        }
        Ok(run)
    }
}

/// Runs the caller may see, newest first.
#[utoipa::path(get, path = "/v1/runs", params(RunQuery),
    responses(
        (status = 200, description = "runs the caller may see, newest first, at most `limit` (capped at 100)", body = Vec<RunRecord>,
            headers(("x-warden-next-before" = String, description = "cursor of the next page (`created_ms:id`); absent on the last page"))),
        (status = 400, description = "`invalid`: `before` is not `created_ms:id`, `since` or `until` is not an RFC 3339 time, or `user` is not a user name; `invalid_query`: a query parameter does not parse"),
        (status = 401, description = "missing or invalid token"),
        (status = 503, description = "`database-unavailable`: nothing was read; retry", headers(("Retry-After" = u64, description = "seconds to wait"))),
    ))]
async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<RunQuery>,
) -> Result<(HeaderMap, Json<Vec<RunRecord>>), ApiError> {
    let limit = q.limit.unwrap_or(MAX_LIST_RUNS).min(MAX_LIST_RUNS);
    let mut filter = list_filter(q)?;
    // Walk pages of the matching runs until `limit` visible ones (or the scan budget): the
    // cursor is then the last visible run, so a filter naming another user's runs yields no
    // position of a run the caller may not see unless the budget ran out on them.
    let (mut visible, mut scanned, mut next) = (Vec::new(), 0, None);
    while visible.len() < limit {
        // The first read asks for `limit` (all visible is the common case), later ones more.
        let want = match scanned {
            0 => limit,
            _ => MAX_LIST_RUNS,
        }
        .min(LIST_SCAN_BUDGET - scanned);
        filter.limit = Some(want);
        let page = state.runs.list(&filter)?;
        let full = page.len() >= want;
        scanned += page.len();
        for run in page {
            if visible.len() >= limit {
                break;
            }
            next = Some(RunCursor::after(&run));
            if state.may_see_run(&caller, &run)? {
                visible.push(run);
            }
        }
        if visible.len() >= limit || scanned >= LIST_SCAN_BUDGET {
            break;
        }
        if !full {
            // The history is exhausted.
            next = None;
            break;
        }
        filter.before = next.clone();
    }
    let next = next.map(|c| c.to_string());
    Ok((next_page_header(NEXT_BEFORE_HEADER, next), Json(visible)))
}

/// Runs read from the store for one page of `GET /v1/runs`, visible or not. Bounds the work
/// of a page whose filter matches mostly runs the caller may not see.
const LIST_SCAN_BUDGET: usize = 10 * MAX_LIST_RUNS;

/// The store filter of a run-list query, its values validated (400 `invalid` otherwise).
fn list_filter(q: RunQuery) -> Result<RunFilter, ApiError> {
    if let Some(user) = &q.user
        && !crate::users::is_valid_name(user)
    {
        return Err(ApiError::bad_request(
            "invalid",
            "user must be 1 to 64 characters of a-z 0-9 . _ -",
        ));
    }
    let since_ms = q
        .since
        .as_deref()
        .map(|t| rfc3339_ms("since", t))
        .transpose()?;
    let until_ms = q
        .until
        .as_deref()
        .map(|t| rfc3339_ms("until", t))
        .transpose()?;
    let mut before = q
        .before
        .as_deref()
        .map(str::parse::<RunCursor>)
        .transpose()?;
    // `until` is a cursor before every run of that millisecond.
    if let Some(until_ms) = until_ms
        && before.as_ref().is_none_or(|b| b.created_ms >= until_ms)
    {
        before = Some(RunCursor {
            created_ms: until_ms,
            id: String::new(),
        });
    }
    Ok(RunFilter {
        process_id: q.process,
        actor: q.user,
        state: q.state,
        since_ms,
        before,
        limit: None,
    })
}

/// `text` (RFC 3339) in Unix milliseconds; 400 `invalid` naming `field` otherwise, and for
/// a time before 1970.
fn rfc3339_ms(field: &str, text: &str) -> Result<u64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid",
                format!("{field} must be an RFC 3339 time such as 2026-12-01T19:45:00Z"),
            )
        })
}

impl AppState {
    /// Whether `caller` may see `run` in a list: its own, or one of a process it may view
    /// (a run whose process is gone is not listed).
    fn may_see_run(&self, caller: &Caller, run: &RunRecord) -> Result<bool, ApiError> {
        if run.actor == caller.user.name {
            return Ok(true);
        }
        match self.load_process(&run.process_id) {
            Ok(process) => self.may_view(caller, &process),
            Err(_) => Ok(false),
        }
    }
}

/// A run: state, result, events and output.
#[utoipa::path(get, path = "/v1/runs/{id}", params(("id" = String, Path, description = "run id")), responses((status = 200, description = "the run", body = RunRecord), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    Ok(Json(state.visible_run(&caller, &id).await?))
}

/// Server-sent events: `log` events as the task logs them, then one `state` event with the
/// final run record when it ends.
#[utoipa::path(get, path = "/v1/runs/{id}/events", params(("id" = String, Path, description = "run id")), responses((status = 200, description = "`log` events (data: a runtime event as JSON), `step` events for a workflow run (data: `{\"path\", \"step\"}`), `lagged` (data: events missed), then one `state` event whose data is the final run record", content_type = "text/event-stream", body = String), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn run_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let run = state.visible_run(&caller, &id).await?;
    // Subscribe before reading the stored state, so no event falls between the two.
    let live = state.dispatcher.control(&id).map(|c| c.subscribe());
    // A run not executing here may be on a remote bridge that renews through this server.
    // (An ended run has no live events: no channel is opened for it.)
    let remote = match live {
        Some(_) => None,
        None if run.state.is_terminal() => None,
        None => state.hub.live.subscribe(&id),
    };
    let stream = async_stream(state, run, live, remote);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// How often a stream of a run held by another server looks for its end.
const REMOTE_POLL: Duration = Duration::from_millis(100);

/// How long an SSE stream may stay open. Blocks clients that hold streams forever.
const MAX_STREAM: Duration = Duration::from_secs(3600);

fn async_stream(
    state: AppState,
    run: RunRecord,
    live: Option<tokio::sync::broadcast::Receiver<crate::runtime::RunEvent>>,
    mut remote: Option<tokio::sync::broadcast::Receiver<crate::bridge::wire::LiveEvent>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + MAX_STREAM;
        let mut shown = RemoteShown::default();
        let replay_stored = match live {
            Some(mut live) if !run.state.is_terminal() => {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let event = match tokio::time::timeout_at(deadline, live.recv()).await {
                        Ok(Ok(event)) => {
                            log_event(&serde_json::to_string(&event).unwrap_or_default())
                        }
                        Ok(Err(RecvError::Lagged(n))) => {
                            Event::default().event("lagged").data(n.to_string())
                        }
                        // The run is over (its sender is gone) or the stream is too old.
                        Ok(Err(RecvError::Closed)) | Err(_) => break,
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                false
            }
            // Not executing here: it may be running on another server over the same database.
            // Wait (bounded, polling the store) for its end, then replay what it stored.
            // Events of a remote bridge's run arrive with its renewals, if they reach this
            // server; the stored record has every event at the end.
            None if !run.state.is_terminal() => {
                let mut steps = StepsSeen::default();
                loop {
                    for event in remote.as_mut().map(|r| shown.take(r)).unwrap_or_default() {
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    match state.runs.get(&run.id) {
                        Ok(Some(record)) if !record.state.is_terminal() => {
                            for event in steps.changed(&record) {
                                if tx.send(event).await.is_err() {
                                    return;
                                }
                            }
                        }
                        _ => break,
                    }
                    if tokio::time::Instant::now() >= deadline || tx.is_closed() {
                        break;
                    }
                    tokio::time::sleep(REMOTE_POLL).await;
                }
                true
            }
            _ => true,
        };
        let Ok(Some(record)) = state.runs.get(&run.id) else {
            return;
        };
        if replay_stored {
            let after = usize::try_from(shown.next).unwrap_or(usize::MAX);
            for event in record.events.iter().skip(after) {
                if tx.send(log_event(&event.to_string())).await.is_err() {
                    return;
                }
            }
        }
        let data = serde_json::to_string(&record).unwrap_or_default();
        let _ = tx.send(Event::default().event("state").data(data)).await;
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

/// The events of a remote run a stream has shown: they come in index order, so the stream
/// shows each once, says when it missed some, and replays from the stored record at the end
/// only those after the last one shown.
#[derive(Default)]
struct RemoteShown {
    /// The index after the last event shown.
    next: u64,
}

impl RemoteShown {
    /// The `log` events (and a `lagged` notice for a gap) that have arrived on `live`.
    fn take(
        &mut self,
        live: &mut tokio::sync::broadcast::Receiver<crate::bridge::wire::LiveEvent>,
    ) -> Vec<Event> {
        use tokio::sync::broadcast::error::TryRecvError;
        let mut events = Vec::new();
        loop {
            let live_event = match live.try_recv() {
                Ok(e) => e,
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return events,
            };
            if live_event.index < self.next {
                continue;
            }
            if live_event.index > self.next {
                let missed = live_event.index - self.next;
                events.push(Event::default().event("lagged").data(missed.to_string()));
            }
            let json = serde_json::to_string(&live_event.event).unwrap_or_default();
            events.push(log_event(&json));
            self.next = live_event.index + 1;
        }
    }
}

/// The steps of a workflow run a stream has shown, to send a `step` event for each change.
#[derive(Default)]
struct StepsSeen(std::collections::HashMap<String, String>);

impl StepsSeen {
    /// A `step` event (`{"path": …, "step": …}`) for every step that changed since last time.
    fn changed(&mut self, record: &RunRecord) -> Vec<Event> {
        let Some(progress) = &record.workflow else {
            return Vec::new();
        };
        let mut events = Vec::new();
        for (path, step) in &progress.steps {
            let json = serde_json::json!({ "path": path, "step": step }).to_string();
            if self.0.get(path) != Some(&json) {
                events.push(Event::default().event("step").data(json.clone()));
                self.0.insert(path.clone(), json);
            }
        }
        events
    }
}

fn log_event(json: &str) -> Event {
    Event::default().event("log").data(json)
}

/// Cancel a queued or running run.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", params(("id" = String, Path, description = "run id")), responses((status = 200, description = "cancelled (or ending)", body = RunRecord), (status = 404, description = "`not_found`: unknown or not visible"), (status = 409, description = "`conflict`: the run has ended already")))]
async fn cancel_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    let run = state.visible_run(&caller, &id).await?;
    if run.actor != caller.user.name {
        let process = state.load_process(&run.process_id)?;
        state
            .authorize_process(&caller, Action::ManageProcess, &process)
            .await?;
    }
    let record = state.dispatcher.cancel(&id, &caller.user.name).await?;
    // Running on another server over the same database: ask it to stop the run.
    if record.state == RunState::Running && state.dispatcher.control(&id).is_none() {
        state.cluster.request_cancel(&id, &caller.user.name).await?;
    }
    Ok(Json(record))
}

/// Resume a failed or interrupted workflow run from the step that failed, as a new attempt of
/// the same run: steps that succeeded are not run again. Needs the right to execute its
/// process.
#[utoipa::path(post, path = "/v1/runs/{id}/resume", params(("id" = String, Path, description = "run id")), responses((status = 200, description = "the run, running again", body = RunRecord), (status = 403, description = "may not execute the process"), (status = 404, description = "unknown or not visible"), (status = 401, description = "missing or invalid token"), (status = 409, description = "`conflict`: not a workflow run, or not failed or interrupted; `process_changed`: its process changed its definition since"), (status = 503, description = "`database-unavailable`: nothing was changed; retry", headers(("Retry-After" = u64, description = "seconds to wait")))))]
async fn resume_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    let run = state.visible_run(&caller, &id).await?;
    let process = state.load_process(&run.process_id)?;
    state
        .authorize_process(&caller, Action::ExecuteProcess, &process)
        .await?;
    if run.workflow.is_none() {
        // The request is well formed; the run is of the wrong kind: a conflict, not a 400.
        return Err(ApiError::conflict(
            "only a workflow run can be resumed; start a new run instead",
        ));
    }
    if process.module_digest != run.module_digest {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "process_changed",
            format!(
                "process {} changed its definition since run {id} started; start a new run",
                process.id
            ),
        ));
    }
    let record = state.runs.resume(&id, &caller.user.name).await?;
    crate::workflow::engine::drive(&state.dispatcher, &process, &id);
    Ok(Json(record))
}
