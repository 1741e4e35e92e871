//! `/v1/bridges`: enrolment tokens, the list of remote bridges and their revocation (for
//! administrators, bearer tokens); and `/v1/bridge/…`, the protocol remote bridges speak
//! (each request signed with the bridge's key, see `crate::bridge::wire`).
//!
//! Threat: someone who is not an enrolled, unrevoked bridge claiming runs or reading
//! secrets. Every protocol request but enrolment is authenticated by its signature before
//! anything is read; a bad one is 401 with no detail of which check failed beyond the
//! header's name, a revoked bridge 403. The hub (`crate::bridge::hub`) then checks that the
//! bridge holds the run the request names.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::bridge::hub::HubError;
use crate::bridge::registry::{BridgeRecord, RegistryError};
use crate::bridge::wire::{self, SignedHeaders};
use crate::policy::Action;

/// Largest report a bridge may send when a run ends (output is capped at 1 MiB per stream).
const MAX_FINISH_BODY: usize = 4 << 20;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token))
        .routes(routes!(list_bridges))
        .routes(routes!(revoke_bridge))
}

/// The protocol routes of remote bridges (not in the OpenAPI document: only Warden's own
/// bridge speaks them).
pub fn protocol() -> Router<AppState> {
    use axum::routing::{get, post};
    Router::new()
        .route("/v1/bridges/enroll", post(enroll))
        .route("/v1/bridge/claim", post(claim))
        .route("/v1/bridge/publishers", get(publishers))
        .route("/v1/bridge/modules/{digest}", get(module))
        .route("/v1/bridge/runs/{id}/audit", post(audit))
        .route("/v1/bridge/runs/{id}/lease", post(lease))
        .route("/v1/bridge/runs/{id}/lease-check", post(lease_check))
        .route("/v1/bridge/runs/{id}/secret", post(secret))
        .route("/v1/bridge/runs/{id}/renew", post(renew))
        .route(
            "/v1/bridge/runs/{id}/finish",
            post(finish).layer(DefaultBodyLimit::max(MAX_FINISH_BODY)),
        )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// The zone the bridge will serve.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    zone: String,
    /// Seconds; default one hour.
    #[serde(default)]
    ttl_secs: Option<u64>,
}

#[derive(Serialize, ToSchema)]
struct TokenView {
    token: String,
    zone: String,
    expires_ms: u64,
}

/// Create a one-time enrolment token for a bridge of a zone (shown once).
#[utoipa::path(post, path = "/v1/bridges/tokens", request_body = NewToken, responses((status = 201, description = "the token, shown once", body = TokenView), (status = 400, description = "`invalid`: a zone or ttl out of range"), (status = 403, description = "`forbidden`: not permitted")))]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<NewToken>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    state
        .authorize_system(&caller, Action::ManageTargets, "bridges")
        .await?;
    let ttl = Duration::from_secs(req.ttl_secs.unwrap_or(3600));
    let (token, record) = state
        .hub
        .registry
        .create_token(&req.zone, ttl, &caller.user.name)
        .await
        .map_err(registry_error)?;
    Ok((
        StatusCode::CREATED,
        Json(TokenView {
            token,
            zone: record.zone,
            expires_ms: record.expires_ms,
        }),
    ))
}

#[derive(Serialize, ToSchema)]
struct BridgeView {
    id: String,
    name: String,
    zone: String,
    version: String,
    enrolled_ms: u64,
    last_seen_ms: Option<u64>,
    online: bool,
    revoked: bool,
    runs_in_flight: usize,
}

/// List the remote bridges: zone, version, last seen, online, runs in flight.
#[utoipa::path(get, path = "/v1/bridges", responses((status = 200, description = "bridges", body = Vec<BridgeView>), (status = 403, description = "`forbidden`: not permitted")))]
async fn list_bridges(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<BridgeView>>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageTargets, "bridges")
        .await?;
    let held = state.runs.held()?;
    let lost_after = state.cluster.bridge_lost_after();
    let mut out = Vec::new();
    for (bridge, seen) in state.hub.registry.list().map_err(registry_error)? {
        let name = crate::bridge::registry::holder(&bridge.id);
        let online = state
            .hub
            .registry
            .is_alive(&name, lost_after)
            .map_err(registry_error)?;
        out.push(BridgeView {
            runs_in_flight: held.iter().filter(|(_, h)| *h == name).count(),
            last_seen_ms: seen.as_ref().map(|s| s.seen_ms),
            version: seen.map_or(bridge.version.clone(), |s| s.version),
            online,
            revoked: bridge.revoked.is_some(),
            id: bridge.id,
            name: bridge.name,
            zone: bridge.zone,
            enrolled_ms: bridge.enrolled_ms,
        });
    }
    Ok(Json(out))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Revoke {
    #[serde(default)]
    reason: Option<String>,
}

/// Revoke a bridge: its next request is refused and the runs it holds end `lost`.
#[utoipa::path(post, path = "/v1/bridges/{id}/revoke", params(("id" = String, Path, description = "bridge id")), request_body = Revoke, responses((status = 200, description = "revoked", body = Revoked), (status = 400, description = "`invalid`: a reason too long"), (status = 404, description = "`not_found`: unknown"), (status = 409, description = "`already_revoked`")))]
async fn revoke_bridge(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<Revoke>,
) -> Result<Json<Revoked>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageTargets, "bridges")
        .await?;
    let reason = req
        .reason
        .unwrap_or_else(|| "revoked by an administrator".into());
    let bridge = state
        .hub
        .registry
        .revoke(&id, &caller.user.name, &reason)
        .await
        .map_err(registry_error)?;
    Ok(Json(Revoked {
        id: bridge.id,
        zone: bridge.zone,
        revoked: true,
    }))
}

/// A revoked bridge.
#[derive(Serialize, ToSchema)]
struct Revoked {
    id: String,
    zone: String,
    /// `true`.
    revoked: bool,
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::UnknownToken | RegistryError::TokenExpired | RegistryError::TokenUsed => {
            ApiError::new(StatusCode::FORBIDDEN, "enrolment_refused", e.to_string())
        }
        RegistryError::Invalid(_) => ApiError::bad_request("invalid", e.to_string()),
        RegistryError::NotFound(_) => ApiError::not_found(e.to_string()),
        RegistryError::AlreadyRevoked(_) => {
            ApiError::new(StatusCode::CONFLICT, "already_revoked", e.to_string())
        }
        RegistryError::Audit(e) => e.into(),
        other => ApiError::failure(other),
    }
}

fn hub_error(e: HubError) -> ApiError {
    match e {
        HubError::NotHeld(_) => ApiError::new(StatusCode::CONFLICT, "run_not_held", e.to_string()),
        HubError::Denied(_) => ApiError::new(StatusCode::FORBIDDEN, "denied", e.to_string()),
        HubError::Invalid(_) => ApiError::bad_request("invalid", e.to_string()),
        HubError::Runs(e) => e.into(),
        other => ApiError::failure(other),
    }
}

/// A request signed by an enrolled, unrevoked bridge (401/403 otherwise, before anything
/// of it is read), with its JSON body (an empty body reads as `null`). The one way into
/// every protocol route but enrolment.
struct Signed<T> {
    bridge: BridgeRecord,
    body: T,
}

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for Signed<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
        let bridge = state.bridge_caller(&parts, &bytes).await?;
        let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        let body = serde_json::from_slice(text)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
        Ok(Signed { bridge, body })
    }
}

impl AppState {
    /// The enrolled, unrevoked bridge that signed this request, noted as seen.
    async fn bridge_caller(&self, parts: &Parts, body: &[u8]) -> Result<BridgeRecord, ApiError> {
        let header = |name: &'static str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| unauthorized(wire::WireError::Header(name)))
        };
        let signed = SignedHeaders {
            bridge: header(wire::BRIDGE_HEADER)?,
            time: header(wire::TIME_HEADER)?,
            nonce: header(wire::NONCE_HEADER)?,
            signature: header(wire::SIGNATURE_HEADER)?,
        };
        let bridge = match self.hub.registry.get(signed.bridge) {
            Ok(Some(bridge)) => bridge,
            Ok(None) => return Err(unauthorized(wire::WireError::Signature)),
            Err(e) => return Err(registry_error(e)),
        };
        let key = bridge
            .verifying_key()
            .ok_or_else(|| unauthorized(wire::WireError::Signature))?;
        let uri = &parts.uri;
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        let method = parts.method.as_str();
        wire::verify(&key, &signed, method, path, body, &self.hub.nonces).map_err(unauthorized)?;
        if let Some(revoked) = &bridge.revoked {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "bridge_revoked",
                format!("this bridge was revoked: {}", revoked.reason),
            ));
        }
        let version = header("user-agent").unwrap_or(&bridge.version).to_string();
        if let Err(e) = self.hub.registry.seen(&bridge.id, &version) {
            tracing::warn!(bridge = %bridge.id, error = %e, "bridge last-seen not written");
        }
        Ok(bridge)
    }
}

fn unauthorized(e: wire::WireError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "bridge_unauthenticated",
        e.to_string(),
    )
}

async fn enroll(
    State(state): State<AppState>,
    Body(req): Body<wire::EnrollRequest>,
) -> Result<Json<wire::EnrollReply>, ApiError> {
    let key: [u8; 32] = hex::decode(&req.public_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("invalid", "public_key: 32 bytes, hex"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| ApiError::bad_request("invalid", "public_key is not an ed25519 key"))?;
    let bridge = state
        .hub
        .registry
        .enroll(&req.token, &key, &req.name, &req.version)
        .await
        .map_err(registry_error)?;
    Ok(Json(wire::EnrollReply {
        bridge_id: bridge.id,
        zone: bridge.zone,
    }))
}

async fn claim(
    State(state): State<AppState>,
    Signed { bridge, body }: Signed<wire::ClaimRequest>,
) -> Result<Response, ApiError> {
    let wait = Duration::from_millis(body.wait_ms);
    let run = state
        .hub
        .claim(&bridge, wait, body.policy_digest.as_deref())
        .await
        .map_err(hub_error)?;
    Ok(match run {
        Some(run) => Json(run).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn publishers(
    State(state): State<AppState>,
    _: Signed<IgnoredAny>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let keys = state
        .modules
        .publisher_keys()
        .map_err(ApiError::failure)?
        .into_iter()
        .map(|(name, key)| json!({ "name": name, "public_key": hex::encode(key.as_bytes()) }))
        .collect();
    Ok(Json(keys))
}

async fn module(
    State(state): State<AppState>,
    Path(digest): Path<String>,
    Signed { bridge, .. }: Signed<IgnoredAny>,
) -> Result<Response, ApiError> {
    // Only the module of a run this bridge holds.
    let holder = crate::bridge::registry::holder(&bridge.id);
    let mut allowed = false;
    for (id, held_by) in state.runs.held()? {
        if held_by == holder
            && state
                .runs
                .get(&id)?
                .is_some_and(|r| r.module_digest == digest)
        {
            allowed = true;
            break;
        }
    }
    if !allowed {
        return Err(ApiError::not_found(format!("module {digest}")));
    }
    let bytes = state
        .modules
        .bytes(&digest)
        .map_err(ApiError::failure)?
        .ok_or_else(|| ApiError::not_found(format!("module {digest}")))?;
    Ok(([("content-type", "application/wasm")], bytes).into_response())
}

async fn audit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Signed { bridge, body }: Signed<wire::AuditRequest>,
) -> Result<Json<wire::AuditReply>, ApiError> {
    let seqs = state
        .hub
        .append_audit(&bridge, &id, body.entries)
        .await
        .map_err(hub_error)?;
    Ok(Json(wire::AuditReply { seqs }))
}

async fn lease(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Signed { bridge, body }: Signed<wire::LeaseRequest>,
) -> Result<Json<crate::capabilities::server::HeldLease>, ApiError> {
    let lease = state
        .hub
        .lease(&bridge, &id, &body.credential, body.known.as_deref())
        .await
        .map_err(hub_error)?;
    Ok(Json(lease))
}

async fn lease_check(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Signed { bridge, body }: Signed<wire::LeaseChecks>,
) -> Result<Json<wire::LeaseVerdicts>, ApiError> {
    let denied = state
        .hub
        .check_leases(&bridge, &id, &body.uses)
        .map_err(hub_error)?;
    Ok(Json(wire::LeaseVerdicts { denied }))
}

async fn secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Signed { bridge, body }: Signed<wire::LeaseUse>,
) -> Result<Response, ApiError> {
    let secret = state.hub.secret(&bridge, &id, &body).map_err(hub_error)?;
    // The body is the base64 text alone: no JSON encoder copies it on the way.
    let mut response = secret.as_str().to_string().into_response();
    response.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

async fn renew(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Signed { bridge, body }: Signed<wire::RenewRequest>,
) -> Result<Json<wire::RenewReply>, ApiError> {
    if !crate::bridge::live::within_caps(&body.events) {
        return Err(ApiError::bad_request(
            "too_many_events",
            "a renewal carries at most 256 events and 256 KiB of messages",
        ));
    }
    let cancel = state
        .hub
        .renew(&bridge, &id, &state.cluster.cancel_requests())
        .map_err(hub_error)?;
    // Only for a run this bridge holds (renew checked it).
    state.hub.live.publish(&id, body.events);
    Ok(Json(wire::RenewReply { cancel }))
}

async fn finish(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Signed { bridge, body }: Signed<crate::runtime::RunReport>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ended = state
        .hub
        .finish(&bridge, &id, body)
        .await
        .map_err(hub_error)?;
    Ok(Json(json!({ "id": ended.id, "state": ended.state })))
}
