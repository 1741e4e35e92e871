//! The OpenAPI 3.1 document as a contract: what the route annotations leave to one place.
//!
//! The routes declare their own bodies, parameters and the statuses their handlers return;
//! [`finish`] then adds what every route shares because an extractor, not the handler, answers
//! it: 401/403 from the bearer-token [`crate::api::auth::Caller`], 400/413/415 from the JSON
//! body extractor, 400 from the query extractor, 500 and 503 (`database-unavailable`) from
//! [`crate::api::error::ApiError::failure`]. Every 4xx and 5xx response then refers to the one
//! `Error` component; 429 and 503 carry `Retry-After`.
//!
//! Threat: an integrator (or a generated client) trusting a document that says less than the
//! server does. `tests/integration/openapi.rs` and `.ci/contract` (schemathesis) hold the
//! document to the server. The bridge protocol (`/v1/bridge/…`, `/v1/bridges/enroll`) is not
//! in it: those requests are signed with an enrolled bridge's key over method, path, time and
//! body, which OpenAPI cannot express and no client but Warden's own bridge produces.

use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::Response;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, HeaderBuilder, ObjectBuilder, Ref, RefOr, Type};

use super::error::{ErrorBody, ErrorCode, ErrorDetail};

/// A name of 1 to 64 of `A-Z a-z 0-9 . _ -` (targets, zones, tags, processes, sinks): the
/// items of lists the derive cannot put a pattern on.
pub struct Label;

impl utoipa::PartialSchema for Label {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[A-Za-z0-9._-]{1,64}$"))
            .into()
    }
}

impl utoipa::ToSchema for Label {}

/// Raw bytes (a module upload).
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// The security scheme every `/v1` route but trigger events requires.
pub const BEARER: &str = "bearer";

/// Operations that take no API token: `(method, path)`.
pub const PUBLIC: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    // The Standard Webhooks signature in its headers is the event's credential.
    ("post", "/v1/triggers/{id}/events"),
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Warden API",
        description = "Privileged automation without handing credentials to scripts. Every \
            error response is an `Error` whose `code` is one of `ErrorCode`; list routes page \
            with a cursor header (`x-warden-next-before`, `x-warden-next-after`) that is \
            absent on the last page. The bridge protocol (`/v1/bridge/…`) is not part of this \
            document: its requests are signed by an enrolled bridge's key."
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode, Label))
)]
pub struct ApiDoc;

/// The document's start: info and the shared components.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Adds the shared statuses, the error component and the security scheme to `api`.
pub fn finish(api: &mut utoipa::openapi::OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token (`warden token create`), as `Authorization: Bearer <token>`",
                ))
                .build(),
        ),
    );
    api.security = Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])]);
    for (path, item) in api.paths.paths.iter_mut() {
        for (method, op) in operations(item) {
            // Grouped by resource (`/v1/processes/...`: `processes`), as generated clients do.
            let tag = match path.split('/').nth(2) {
                Some(resource) if path.starts_with("/v1/") && resource != "whoami" => resource,
                _ => "system",
            };
            op.tags = Some(vec![tag.to_string()]);
            optional_body(op);
            let public = PUBLIC.contains(&(method, path.as_str()));
            shared_statuses(op, public, path);
            if public {
                op.security = Some(Vec::new());
            }
            for (status, response) in op.responses.responses.iter_mut() {
                if let RefOr::T(response) = response {
                    error_body(status, response);
                }
            }
        }
    }
}

/// An optional body (`Option<T>`) is `T`, not required: the derive says `oneOf [null, T]`,
/// but the handlers take an absent body, not a JSON `null`.
fn optional_body(op: &mut Operation) {
    use utoipa::openapi::schema::{Schema, SchemaType};
    let Some(body) = op.request_body.as_mut() else {
        return;
    };
    let is_null = |item: &RefOr<Schema>| matches!(item, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    let mut optional = false;
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = content.schema.as_ref() else {
            continue;
        };
        let rest: Vec<RefOr<Schema>> = one_of
            .items
            .iter()
            .filter(|item| !is_null(item))
            .cloned()
            .collect();
        if rest.len() == 1 && one_of.items.len() == 2 {
            content.schema = rest.into_iter().next();
            optional = true;
        }
    }
    if optional {
        body.required = Some(utoipa::openapi::Required::False);
    }
}

/// Each operation of `item` with its lowercase method.
pub fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(Response::new(description)));
}

/// The statuses the extractors and the error type answer, for every operation they apply to.
fn shared_statuses(op: &mut Operation, public: bool, path: &str) {
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key("application/json"));
    let has_query = op.parameters.as_ref().is_some_and(|ps| {
        ps.iter()
            .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
    });
    if json_body {
        add(
            op,
            "400",
            "`invalid_json`: the body is not JSON of the expected shape (or `invalid`: a field \
             is out of range)",
        );
        add(op, "413", "`too_large`: the body is over the limit");
        add(
            op,
            "415",
            "`unsupported_media_type`: the body is not `application/json`",
        );
    }
    if has_query {
        add(
            op,
            "400",
            "`invalid_query`: a query parameter does not parse",
        );
    }
    if !public {
        add(
            op,
            "401",
            "`unauthorized`: missing or invalid API token; `token_expired`",
        );
        add(
            op,
            "403",
            "`forbidden`: denied by a policy; `enrollment_token`: an enrollment token is good \
             only for minting its user's own token",
        );
    }
    if path != "/healthz" && path != "/metrics" {
        add(
            op,
            "503",
            "`database-unavailable`: nothing was changed; retry after `Retry-After` seconds",
        );
    }
    add(op, "500", "`internal`: an internal error (no detail)");
}

/// Makes a 4xx/5xx response's body the `Error` component, with `Retry-After` on 429 and 503.
fn error_body(status: &str, response: &mut Response) {
    if !(status.starts_with('4') || status.starts_with('5')) {
        return;
    }
    response.content.clear();
    response.content.insert(
        "application/json".into(),
        Content::new(Some(Ref::from_schema_name("Error"))),
    );
    if status == "429" || status == "503" {
        response
            .headers
            .entry("Retry-After".into())
            .or_insert_with(|| {
                HeaderBuilder::new()
                    .schema(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(0)),
                    )
                    .description(Some("seconds to wait before retrying"))
                    .build()
            });
    }
}
