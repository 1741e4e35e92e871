//! The served OpenAPI document as a contract (issue 16): every operation says what it
//! returns, every error response is the one `Error` component, every POST and PUT says what it
//! takes, the error codes are listed, and no route the server registers outside utoipa is left
//! out of the document unless it is on the short, explained list of exclusions.
//!
//! A client generated from a document that says less than the server does would break on the
//! first undocumented answer; these tests fail as soon as a route or a status drifts.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use warden_tests::http::Server;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// Routes registered without utoipa, deliberately not in the document.
const EXCLUDED: &[&str] = &[
    // The document itself.
    "/openapi.json",
    // The bridge protocol: requests signed by an enrolled bridge's key (see `api::openapi`).
    "/v1/bridges/enroll",
    "/v1/bridge/claim",
    "/v1/bridge/publishers",
    "/v1/bridge/modules/{digest}",
    "/v1/bridge/runs/{id}/audit",
    "/v1/bridge/runs/{id}/lease",
    "/v1/bridge/runs/{id}/lease-check",
    "/v1/bridge/runs/{id}/secret",
    "/v1/bridge/runs/{id}/renew",
    "/v1/bridge/runs/{id}/finish",
];

async fn document() -> Value {
    let server = Server::start().await;
    let r = server
        .request(Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

/// Every `(method, path, operation)` of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// Follows a local `$ref` (`#/components/...`) once.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.trim_start_matches('#');
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {r}"))
        }
        None => v,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_its_bodies_errors_and_security() {
    let doc = document().await;
    assert_eq!(
        doc["openapi"].as_str().map(|v| &v[..4]),
        Some("3.1."),
        "{}",
        doc["openapi"]
    );
    assert!(
        doc.pointer("/components/securitySchemes/bearer/scheme")
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer")),
        "no bearer security scheme: {}",
        doc["components"]["securitySchemes"]
    );
    let error = doc
        .pointer("/components/schemas/Error")
        .expect("an Error component");
    assert!(
        error.pointer("/properties/error").is_some(),
        "Error has no `error`: {error}"
    );
    let mut faults = Vec::new();
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        match op["operationId"].as_str() {
            Some(id) if ids.insert(id.to_string()) => {}
            other => faults.push(format!("{at}: operationId {other:?} missing or repeated")),
        }
        let responses = op["responses"].as_object().cloned().unwrap_or_default();
        if !responses.keys().any(|s| s.starts_with('2')) {
            faults.push(format!("{at}: no 2xx response"));
        }
        for (status, response) in &responses {
            let response = resolve(&doc, response);
            let content = response["content"].as_object();
            if status.starts_with('2') {
                // 204 and 202-without-body are the only answers that may say nothing.
                if status != "204"
                    && content.is_none_or(|c| c.values().all(|m| m.get("schema").is_none()))
                {
                    faults.push(format!("{at} {status}: no response schema"));
                }
                continue;
            }
            let schema = response.pointer("/content/application~1json/schema/$ref");
            if schema.and_then(Value::as_str) != Some("#/components/schemas/Error") {
                faults.push(format!(
                    "{at} {status}: not the Error component ({response})"
                ));
            }
            if (status == "429" || status == "503")
                && response.pointer("/headers/Retry-After").is_none()
            {
                faults.push(format!("{at} {status}: no Retry-After header"));
            }
        }
        if matches!(method.as_str(), "post" | "put") {
            let body = op.pointer("/requestBody/content");
            let has_schema = body
                .and_then(Value::as_object)
                .is_some_and(|c| c.values().all(|m| m.get("schema").is_some()));
            // A POST that takes nothing (an action on a path) documents no body at all.
            let takes_body = !path.ends_with("/retire")
                && !path.ends_with("/enable")
                && !path.ends_with("/disable")
                && !path.ends_with("/cancel")
                && !path.ends_with("/resume")
                && !path.ends_with("/replay");
            if takes_body && !has_schema {
                faults.push(format!("{at}: no request body schema"));
            }
        }
        let public = op["security"].as_array().is_some_and(Vec::is_empty);
        if !public && !responses.contains_key("401") {
            faults.push(format!("{at}: secured but no 401"));
        }
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param.get("schema").is_none() {
                faults.push(format!("{at}: parameter {} has no schema", param["name"]));
            }
        }
    }
    assert!(
        faults.is_empty(),
        "the document is incomplete:\n{}",
        faults.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_are_listed_and_the_document_is_public_only_where_meant() {
    let doc = document().await;
    let codes = doc
        .pointer("/components/schemas/ErrorCode/enum")
        .and_then(Value::as_array)
        .expect("ErrorCode enum");
    let codes: BTreeSet<&str> = codes.iter().filter_map(Value::as_str).collect();
    let listed: BTreeSet<&str> = warden_host::api::error::CODES
        .iter()
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(
        codes, listed,
        "the document's codes are not the server's list"
    );
    for code in [
        "unauthorized",
        "not_found",
        "invalid_json",
        "invalid_query",
        "database-unavailable",
    ] {
        assert!(codes.contains(code), "{code} missing");
    }
    // Exactly the routes meant to be public say so; every other one needs the bearer token.
    let public: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .filter(|(_, _, op)| op["security"].as_array().is_some_and(Vec::is_empty))
        .map(|(m, p, _)| (m, p))
        .collect();
    let meant: BTreeSet<(String, String)> = warden_host::api::openapi::PUBLIC
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(public, meant);
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
}

/// `.route("PATH"` registrations in the server's sources: routes that bypass utoipa.
fn plain_routes() -> BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src/api");
    let mut found = BTreeSet::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read host/src/api") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            for (i, _) in text.match_indices(".route(") {
                let rest = text[i + ".route(".len()..].trim_start();
                if let Some(quoted) = rest.strip_prefix('"') {
                    if let Some(end) = quoted.find('"') {
                        found.insert(quoted[..end].to_string());
                    }
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_left_out_of_the_document_but_the_explained_ones() {
    let doc = document().await;
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let plain = plain_routes();
    assert!(
        plain.contains("/v1/bridge/claim"),
        "the source scan found no protocol route: {plain:?}"
    );
    let missing: Vec<&String> = plain
        .iter()
        .filter(|p| !documented.contains(*p) && !EXCLUDED.contains(&p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "routes registered outside utoipa and missing from the document: {missing:?}"
    );
    // The exclusions are real routes, not stale entries, and none is documented by accident.
    for excluded in EXCLUDED {
        assert!(
            plain.contains(*excluded),
            "{excluded} is no longer registered"
        );
        assert!(!documented.contains(*excluded), "{excluded} is documented");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undocumented_query_or_a_bad_one_is_a_json_error() {
    let server = Server::start().await;
    // Before: axum's plain-text 400 ("Failed to deserialize query string"), which the
    // document's Error component did not describe.
    for path in [
        "/v1/runs?limit=many",
        "/v1/runs?state=exploded",
        "/v1/runs?no_such_parameter=1",
        "/v1/audit?after=-1",
        "/v1/approvals?window=x",
    ] {
        let r = server.get(path, &server.admin).await;
        r.expect_error(StatusCode::BAD_REQUEST, "invalid_query");
    }
}
