//! Inbound triggers (logic in [`crate::triggers`]): `/v1/processes/{id}/triggers` to list
//! and create them, `/v1/triggers/{id}` to show and delete one, its secret's rotation, its
//! stored events, and `POST /v1/triggers/{id}/events`, the one route without an API token:
//! the event's Standard Webhooks signature is its only credential.
//!
//! Who may do what follows the process: creating, rotating and deleting need ManageProcess
//! on it, showing and listing ViewProcess, and a caller who may not see the process gets 404
//! for its triggers too. Every change is audited. The secret appears in the answers to
//! create and rotate only.

use axum::Json;
use axum::body::Body as RawBody;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::{Body, Params};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::policy::Action;
use crate::runs::Process;
use crate::triggers::store::StoredEvent;
use crate::triggers::{
    EventOutcome, Incoming, MAX_EVENT_BODY, NewTrigger, Refusal, Trigger, TriggerError,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_triggers, create_trigger))
        .routes(routes!(get_trigger, delete_trigger))
        .routes(routes!(rotate_secret))
        .routes(routes!(stored_events))
        .routes(routes!(receive_event))
}

impl From<TriggerError> for ApiError {
    fn from(e: TriggerError) -> Self {
        match e {
            e @ TriggerError::Invalid(_) => ApiError::bad_request("invalid", e.to_string()),
            e @ TriggerError::NotFound(_) => ApiError::not_found(e.to_string()),
            TriggerError::Runs(e) => e.into(),
            other => ApiError::failure(other),
        }
    }
}

/// A trigger as shown: the record and its URL, plus the secret in the answers to create and
/// rotate (never stored in the clear, never shown again).
#[derive(Serialize, ToSchema)]
struct Shown {
    #[serde(flatten)]
    trigger: Trigger,
    /// Where events are delivered (`POST`).
    url: String,
    /// The HMAC secret (`whsec_…`): in the answers to create and rotate only.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose")]
    #[schema(value_type = Option<String>)]
    secret: Option<Zeroizing<String>>,
}

fn expose<S: Serializer>(secret: &Option<Zeroizing<String>>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(text) => s.serialize_str(text),
        None => s.serialize_none(),
    }
}

fn shown(trigger: Trigger, secret: Option<Zeroizing<String>>) -> Shown {
    Shown {
        url: format!("/v1/triggers/{}/events", trigger.id),
        trigger,
        secret,
    }
}

impl AppState {
    /// Trigger `id` and its process, if the caller may do `action` on the process (404 for
    /// a caller who may not even see it).
    async fn visible_trigger(
        &self,
        caller: &Caller,
        id: &str,
        action: Action,
    ) -> Result<(Trigger, Process), ApiError> {
        let trigger = self
            .triggers
            .store()
            .get(id)?
            .ok_or_else(|| ApiError::not_found(format!("trigger {id}")))?;
        let process = self
            .processes
            .get(&trigger.process_id)?
            .ok_or_else(|| ApiError::not_found(format!("trigger {id}")))?;
        self.authorize_process(caller, action, &process).await?;
        Ok((trigger, process))
    }
}

/// A process's triggers.
#[utoipa::path(get, path = "/v1/processes/{id}/triggers", params(("id" = String, Path, description = "process id")), responses((status = 200, description = "its triggers (no secrets)", body = Vec<Shown>), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn list_triggers(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Shown>>, ApiError> {
    let process = state.load_process(&id)?;
    state
        .authorize_process(&caller, Action::ViewProcess, &process)
        .await?;
    let listed = state.triggers.store().list(&process.id)?;
    Ok(Json(listed.into_iter().map(|t| shown(t, None)).collect()))
}

/// Create a trigger: `map` (input → JSON pointer into the event), `allow` (input → allowed
/// values), `rate` ({runs, window_secs}), `max_concurrent`, `dedupe` ({pointer,
/// window_secs}), `store_body`, `require_approval`, `tolerance_secs`, and
/// `ed25519_public_key` for `v1a` signatures (else an HMAC `whsec_` secret is generated and
/// shown in this answer only).
#[utoipa::path(post, path = "/v1/processes/{id}/triggers", params(("id" = String, Path, description = "process id")), request_body = NewTrigger, responses((status = 201, description = "created; `secret` is shown this once", body = Shown), (status = 400, description = "`invalid`: a mapping, limit or key out of range, or inputs the process does not take"), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn create_trigger(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<NewTrigger>,
) -> Result<(StatusCode, Json<Shown>), ApiError> {
    let process = state.load_process(&id)?;
    state
        .authorize_process(&caller, Action::ManageProcess, &process)
        .await?;
    let (trigger, secret) = state
        .triggers
        .create(&process, req, &caller.user.name)
        .await?;
    let detail = format!(
        "trigger {} of process {}: inputs [{}], rate {}/{} s, max_concurrent {}, approval {}",
        trigger.id,
        process.id,
        trigger.map.keys().cloned().collect::<Vec<_>>().join(", "),
        trigger.rate.runs,
        trigger.rate.window_secs,
        trigger.max_concurrent,
        trigger.require_approval
    );
    state
        .audit_ok(&caller.user.name, "trigger.create", detail)
        .await?;
    Ok((StatusCode::CREATED, Json(shown(trigger, secret))))
}

/// One trigger (no secret).
#[utoipa::path(get, path = "/v1/triggers/{id}", params(("id" = String, Path, description = "trigger id")), responses((status = 200, description = "the trigger", body = Shown), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn get_trigger(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Shown>, ApiError> {
    let (trigger, _) = state
        .visible_trigger(&caller, &id, Action::ViewProcess)
        .await?;
    Ok(Json(shown(trigger, None)))
}

/// Delete a trigger: its URL answers 404 from then on.
#[utoipa::path(delete, path = "/v1/triggers/{id}", params(("id" = String, Path, description = "trigger id")), responses((status = 204, description = "deleted"), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn delete_trigger(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (trigger, process) = state
        .visible_trigger(&caller, &id, Action::ManageProcess)
        .await?;
    if !state.triggers.delete(&trigger).await? {
        return Err(ApiError::not_found(format!("trigger {id}")));
    }
    state
        .audit_ok(
            &caller.user.name,
            "trigger.delete",
            format!("trigger {id} of process {}", process.id),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// For a `v1a` trigger: the new ed25519 public key (standard base64 of its 32 bytes).
    #[serde(default)]
    ed25519_public_key: Option<String>,
}

/// Replace the trigger's secret (HMAC: a new one, in this answer only) or its ed25519
/// public key; the old one stops verifying at once.
#[utoipa::path(post, path = "/v1/triggers/{id}/rotate-secret", params(("id" = String, Path, description = "trigger id")), request_body = RotateRequest, responses((status = 200, description = "rotated; `secret` is shown this once", body = Shown), (status = 400, description = "`invalid`: a key of the wrong kind or form"), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<RotateRequest>,
) -> Result<Json<Shown>, ApiError> {
    let (trigger, process) = state
        .visible_trigger(&caller, &id, Action::ManageProcess)
        .await?;
    let (trigger, secret) = state
        .triggers
        .rotate(&trigger, req.ed25519_public_key)
        .await?;
    state
        .audit_ok(
            &caller.user.name,
            "trigger.rotate",
            format!("trigger {id} of process {}", process.id),
        )
        .await?;
    Ok(Json(shown(trigger, secret)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// At most this many (capped at 100).
    limit: Option<u32>,
}

/// Most stored events one request lists.
const MAX_LISTED_EVENTS: usize = 100;

/// The trigger's stored (redacted) events, newest first, if it keeps them.
#[utoipa::path(get, path = "/v1/triggers/{id}/bodies", params(("id" = String, Path, description = "trigger id"), EventsQuery), responses((status = 200, description = "stored events, newest first", body = Vec<StoredEvent>), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn stored_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Params(q): Params<EventsQuery>,
) -> Result<Json<Vec<StoredEvent>>, ApiError> {
    // The bodies are the detector's data about the process's subjects: managers only.
    let (trigger, _) = state
        .visible_trigger(&caller, &id, Action::ManageProcess)
        .await?;
    let limit = q
        .limit
        .map_or(MAX_LISTED_EVENTS, |n| n as usize)
        .min(MAX_LISTED_EVENTS);
    Ok(Json(state.triggers.store().bodies(&trigger.id, limit)?))
}

/// Deliver an event (no API token: the `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` headers authenticate it). The body is at most 64 KiB of JSON. A valid
/// event starts a run of the trigger's process (202) or is absorbed as a duplicate (200).
#[utoipa::path(post, path = "/v1/triggers/{id}/events", params(("id" = String, Path, description = "trigger id"),
    ("webhook-id" = String, Header, description = "the event's unique id"),
    ("webhook-timestamp" = String, Header, description = "Unix seconds the event was signed at"),
    ("webhook-signature" = String, Header, description = "`v1,<base64 HMAC-SHA256>` or `v1a,<base64 ed25519>` over `id.timestamp.body`")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "the event: any JSON, at most 64 KiB"),
    responses(
    (status = 202, description = "a run was started (or awaits approval)", body = EventStarted),
    (status = 200, description = "a duplicate of a recent event about the same subject; no run", body = EventDeduplicated),
    (status = 400, description = "`invalid_json`, `unmapped`, `not_allowed` or `invalid_inputs`: nothing ran"),
    (status = 401, description = "`bad_signature` or `stale_timestamp`"),
    (status = 403, description = "`creator_inactive`: the trigger's creator is disabled or deleted"),
    (status = 404, description = "no such trigger (or it was deleted)"),
    (status = 409, description = "`replayed`: the event id was seen before"),
    (status = 413, description = "`too_large`: the body is over 64 KiB"),
    (status = 429, description = "`rate_limited` or `concurrency_limited`", headers(("Retry-After" = u64, description = "seconds to wait"))),
    (status = 503, description = "nothing was started; retry", headers(("Retry-After" = u64, description = "seconds to wait"))),
))]
async fn receive_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    // Read at most the cap: a larger body is refused without being read further.
    let (bytes, too_large) = match axum::body::to_bytes(body, MAX_EVENT_BODY).await {
        Ok(bytes) => (bytes, false),
        Err(_) => (axum::body::Bytes::new(), true),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let incoming = Incoming {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: &bytes,
        too_large,
    };
    match state.triggers.receive(&id, incoming).await {
        Ok(EventOutcome::Started(run)) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "run": { "id": run.id, "state": run.state } })),
        )),
        Ok(EventOutcome::Duplicate { run_id }) => Ok((
            StatusCode::OK,
            Json(json!({ "deduplicated": true, "run": run_id })),
        )),
        Err(refusal) => Err(refused(refusal)),
    }
}

/// The answer to an event that started a run.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct EventStarted {
    run: StartedRun,
}

/// The run an event started.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct StartedRun {
    id: String,
    state: crate::runs::RunState,
}

/// The answer to a duplicate event.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct EventDeduplicated {
    /// `true`.
    deduplicated: bool,
    /// The run the first event started, if any.
    run: Option<String>,
}

fn refused(r: Refusal) -> ApiError {
    let status = match r.code {
        "not_found" => StatusCode::NOT_FOUND,
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "bad_signature" | "stale_timestamp" => StatusCode::UNAUTHORIZED,
        "creator_inactive" => StatusCode::FORBIDDEN,
        "replayed" => StatusCode::CONFLICT,
        "rate_limited" | "concurrency_limited" => StatusCode::TOO_MANY_REQUESTS,
        "invalid_json" | "unmapped" | "not_allowed" | "invalid_inputs" | "module_unavailable" => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let error = ApiError::new(status, r.code, r.message);
    match r.retry_after {
        Some(secs) => error.retry_after(secs),
        None => error,
    }
}
