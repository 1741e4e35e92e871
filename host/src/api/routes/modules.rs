//! `/v1/modules` and `/v1/publishers`: upload (signed), list, get and retire task modules;
//! trust and distrust publishers (`TrustPublishers`: Privileged Administrators only, since a
//! publisher key decides what code may run at all; `ManageModules` does not include it).
//! Distrust takes effect at the next run start: the dispatcher re-verifies a module's
//! signature against the publishers trusted then.
//!
//! An upload is accepted only if its signature verifies against a trusted publisher, the
//! component compiles, and it imports no Warden interface its signed manifest did not
//! declare. Every rejection has its own error code and is audited.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use crate::api::AppState;
use crate::api::Metrics;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::audit::{AuditEntry, Decision};
use crate::policy::{Action, Resource};
use crate::registry::signing::SignError;
use crate::registry::store::{ModuleInfo, RegistryError, check_imports};
use crate::runtime::cache::MAX_COMPONENT_BYTES;

pub fn routes() -> OpenApiRouter<AppState> {
    let upload = OpenApiRouter::new()
        .routes(routes!(upload_module, list_modules))
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES));
    OpenApiRouter::new()
        .merge(upload)
        .routes(routes!(get_module))
        .routes(routes!(retire_module))
        .routes(routes!(list_publishers, trust_publisher))
        .routes(routes!(distrust_publisher))
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Sign(SignError::Unsigned) => {
            ApiError::bad_request("unsigned", "module is not signed")
        }
        RegistryError::Sign(SignError::UnknownPublisher(id)) => ApiError::new(
            StatusCode::FORBIDDEN,
            "untrusted_publisher",
            format!("module is signed by a publisher this server does not trust (key id {id})"),
        ),
        RegistryError::Sign(SignError::BadSignature) => ApiError::bad_request(
            "bad_signature",
            "signature does not verify: the module or its manifest was changed after signing",
        ),
        RegistryError::Sign(e @ (SignError::Malformed(_) | SignError::AlreadySigned)) => {
            ApiError::bad_request("malformed_module", e.to_string())
        }
        RegistryError::Sign(SignError::Manifest(m)) => ApiError::bad_request("bad_manifest", m),
        RegistryError::TooLarge(n) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("module is {n} bytes, over the limit of {MAX_COMPONENT_BYTES}"),
        ),
        RegistryError::UndeclaredCapability(iface) => ApiError::bad_request(
            "undeclared_capability",
            format!(
                "the component imports warden:task/{iface}, which its manifest does not declare"
            ),
        ),
        RegistryError::Conflict(d) => ApiError::conflict(format!(
            "module {d} is already registered with a different manifest"
        )),
        RegistryError::NotFound(d) => ApiError::not_found(format!("module {d}")),
        other => ApiError::failure(other),
    }
}

/// Upload a signed task module (the raw `.wasm` bytes as the body).
#[utoipa::path(post, path = "/v1/modules", request_body(content((crate::api::openapi::Binary = "application/wasm"), (crate::api::openapi::Binary = "application/octet-stream")), description = "the signed module (at most 64 MiB), whatever the content type"), responses(
    (status = 201, description = "accepted", body = ModuleInfo),
    (status = 400, description = "`unsigned`, `bad_signature`, `malformed_module`, `bad_manifest`, `invalid_component`, `undeclared_capability` or `bad_body`"),
    (status = 403, description = "`untrusted_publisher`, or `forbidden`: the caller may not manage modules"),
    (status = 409, description = "`conflict`: the digest is registered with a different manifest"),
    (status = 413, description = "`too_large`: over the upload limit")))]
async fn upload_module(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ModuleInfo>), ApiError> {
    state
        .authorize_system(&caller, Action::ManageModules, "modules")
        .await?;
    let result = accept(&state, &caller, body).await;
    let (decision, outcome, detail) = match &result {
        Ok(info) => (
            Decision::Allowed,
            "ok".to_string(),
            format!("{}@{} ({})", info.name, info.version, info.digest),
        ),
        Err(e) => (
            Decision::Denied {
                reason: e.code().to_string(),
                policy: Some("registry".into()),
            },
            e.code().to_string(),
            String::new(),
        ),
    };
    state
        .audit
        .append(AuditEntry {
            run_id: None,
            actor: caller.user.name.clone(),
            action: "module.upload".into(),
            target: None,
            credential: None,
            decision,
            outcome,
            duration_us: 0,
            detail: Some(detail),
        })
        .await?;
    match result {
        Ok(info) => {
            Metrics::bump(&state.metrics.modules_uploaded);
            Ok((StatusCode::CREATED, Json(info)))
        }
        Err(e) => {
            Metrics::bump(&state.metrics.modules_rejected);
            Err(e)
        }
    }
}

async fn accept(
    state: &AppState,
    caller: &Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<ModuleInfo, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("over the upload limit of {MAX_COMPONENT_BYTES} bytes"),
            )
        } else {
            ApiError::bad_request("bad_body", r.body_text())
        }
    })?;
    let verified = state.modules.verify(&bytes).map_err(registry_error)?;
    let task = state
        .bridge
        .runtime()
        .prepare(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_component", e.to_string()))?;
    check_imports(&verified.manifest, &task.imports).map_err(registry_error)?;
    state
        .modules
        .store(&verified, &bytes, &caller.user.name)
        .map_err(registry_error)
}

impl AppState {
    /// Module metadata (manifests, publishers) is for those who manage modules or build
    /// processes from them; anyone else (a Password Auditor, a plain user) gets 403.
    async fn authorize_module_read(&self, caller: &Caller) -> Result<(), ApiError> {
        let principal = &caller.principal;
        if self
            .policy
            .authorize(principal, Action::ManageProcess, Resource::System)
            .allowed
        {
            return Ok(());
        }
        self.authorize(caller, Action::ManageModules, Resource::System, "modules")
            .await
    }
}

/// List task modules.
#[utoipa::path(get, path = "/v1/modules", responses((status = 200, description = "modules", body = Vec<ModuleInfo>)))]
async fn list_modules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ModuleInfo>>, ApiError> {
    state.authorize_module_read(&caller).await?;
    Ok(Json(state.modules.list().map_err(registry_error)?))
}

/// One task module by digest.
#[utoipa::path(get, path = "/v1/modules/{digest}", params(("digest" = String, Path, description = "SHA-256 of the component (lowercase hex)")), responses((status = 200, description = "the module", body = ModuleInfo), (status = 404, description = "`not_found`: unknown")))]
async fn get_module(
    State(state): State<AppState>,
    caller: Caller,
    Path(digest): Path<String>,
) -> Result<Json<ModuleInfo>, ApiError> {
    state.authorize_module_read(&caller).await?;
    let info = state.modules.get(&digest).map_err(registry_error)?;
    Ok(Json(info.ok_or_else(|| {
        ApiError::not_found(format!("module {digest}"))
    })?))
}

/// Retire a module: no new runs of it start.
#[utoipa::path(post, path = "/v1/modules/{digest}/retire", params(("digest" = String, Path, description = "SHA-256 of the component (lowercase hex)")), responses((status = 200, description = "retired", body = ModuleInfo), (status = 404, description = "`not_found`: unknown")))]
async fn retire_module(
    State(state): State<AppState>,
    caller: Caller,
    Path(digest): Path<String>,
) -> Result<Json<ModuleInfo>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageModules, "modules")
        .await?;
    let info = state.modules.retire(&digest).map_err(registry_error)?;
    state
        .audit_ok(&caller.user.name, "module.retire", digest)
        .await?;
    Ok(Json(info))
}

/// Trusted publishers: name and key id.
#[utoipa::path(get, path = "/v1/publishers", responses((status = 200, description = "publishers", body = Vec<Publisher>)))]
async fn list_publishers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Publisher>>, ApiError> {
    state.authorize_module_read(&caller).await?;
    let list = state.modules.list_publishers().map_err(registry_error)?;
    Ok(Json(
        list.into_iter()
            .map(|(name, key_id)| Publisher { name, key_id })
            .collect(),
    ))
}

/// A trusted publisher.
#[derive(Serialize, ToSchema)]
struct Publisher {
    name: String,
    /// The key's id (as signatures name it).
    key_id: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TrustRequest {
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    name: String,
    /// Hex of the 32-byte ed25519 public key.
    #[schema(pattern = r"^[0-9a-fA-F]{64}$")]
    public_key: String,
}

/// Trust a publisher's key.
#[utoipa::path(post, path = "/v1/publishers", request_body = TrustRequest, responses((status = 201, description = "trusted", body = Publisher), (status = 400, description = "`invalid`: not an ed25519 key, or a name the registry refuses")))]
async fn trust_publisher(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<TrustRequest>,
) -> Result<(StatusCode, Json<Publisher>), ApiError> {
    state
        .authorize_system(&caller, Action::TrustPublishers, "publishers")
        .await?;
    // Only the hex key itself: never a path, which would let a request read server files.
    let bytes: [u8; 32] = hex::decode(req.public_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("invalid", "public_key must be 64 hex digits"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| ApiError::bad_request("invalid", "public_key is not an ed25519 key"))?;
    state
        .modules
        .trust_publisher(&req.name, &key)
        .map_err(|e| match e {
            RegistryError::Storage(_) | RegistryError::Encode(_) => ApiError::failure(e),
            other => ApiError::bad_request("invalid", other.to_string()),
        })?;
    let key_id = crate::registry::signing::key_id(&key);
    state
        .audit_ok(
            &caller.user.name,
            "publisher.trust",
            format!("{} key id {key_id}", req.name),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Publisher {
            name: req.name,
            key_id,
        }),
    ))
}

/// Stop trusting a publisher: its modules are refused at their next run start (scheduled
/// and approved runs included) and can no longer be uploaded.
#[utoipa::path(delete, path = "/v1/publishers/{name}", params(("name" = String, Path, description = "publisher name")), responses((status = 204, description = "distrusted"), (status = 403, description = "`forbidden`: not a Privileged Administrator"), (status = 404, description = "`not_found`: not trusted")))]
async fn distrust_publisher(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .authorize_system(&caller, Action::TrustPublishers, "publishers")
        .await?;
    if !state
        .modules
        .distrust_publisher(&name)
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::not_found(format!("publisher '{name}'")));
    }
    state
        .audit_ok(&caller.user.name, "publisher.distrust", name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
