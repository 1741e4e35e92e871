//! The HTTP API against a real bound port: signed module uploads and their rejections, the
//! seed's role matrix, a run with its SSE event stream, the OpenAPI document against the
//! router, error bodies, and a SIGKILL in the middle of a run.
//!
//! Every test binds 127.0.0.1:0 and talks HTTP with reqwest. Most run the server in-process
//! (`warden_host::api::serve`); the restart test runs the real `warden serve` binary so it
//! can kill it with SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use warden_host::runtime::cache::MAX_COMPONENT_BYTES;
use warden_tests::http::{
    Reply, ServeChild, Server, component_bytes, init_data_dir, manifest_text, new_key, reply,
    signed,
};
use warden_tests::random_secret;

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

// ---------------------------------------------------------------------------------------
// Harness (the shared HTTP harness is `warden_tests::http`)
// ---------------------------------------------------------------------------------------

fn read_leb_u32(bytes: &[u8], at: &mut usize) -> usize {
    let (mut value, mut shift) = (0usize, 0);
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// The payload range of the largest non-custom top-level section (the core code).
fn largest_code_section(bytes: &[u8]) -> std::ops::Range<usize> {
    let mut at = 8;
    let mut best = 0..0;
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let len = read_leb_u32(bytes, &mut at);
        if id != 0 && len > best.len() {
            best = at..at + len;
        }
        at += len;
    }
    assert!(!best.is_empty(), "component has no code section");
    best
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

// ---------------------------------------------------------------------------------------
// 1. Uploads
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_accepts_signed_module_and_rejects_each_bad_one_with_its_code_and_audits_it() {
    let server = Server::start().await;
    let key = new_key();
    server.trust("acme", &key).await;
    let hello = component_bytes("hello");
    let good = signed("hello", &manifest_text("hello"), &key);

    // Accepted: the digest is the SHA-256 of the component as built.
    let r = server.upload(good.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["digest"], hex::encode(Sha256::digest(&hello)));
    assert_eq!(r.body["name"], "hello");
    assert_eq!(r.body["publisher"], "acme");
    let listed = server.get("/v1/modules", &server.admin).await;
    assert_eq!(
        listed.body[0]["digest"], r.body["digest"],
        "{}",
        listed.text
    );

    // Unsigned.
    server
        .upload(hello.clone())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "unsigned");

    // Signed by a key this server never trusted.
    let stranger = signed("hello", &manifest_text("hello"), &new_key());
    server
        .upload(stranger)
        .await
        .expect_error(StatusCode::FORBIDDEN, "untrusted_publisher");

    // One flipped byte inside the code.
    let mut code_flip = good.clone();
    let code = largest_code_section(&hello);
    code_flip[code.start + code.len() / 2] ^= 0x01;
    server
        .upload(code_flip)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_signature");

    // One changed byte inside the embedded manifest JSON (still valid JSON: 0.1.0 -> 0.2.0).
    let mut manifest_flip = good.clone();
    let at =
        find(&good, br#""version":"0.1.0""#, hello.len()).expect("manifest JSON in the module");
    let digit = at + br#""version":"0."#.len();
    assert_eq!(manifest_flip[digit], b'1');
    manifest_flip[digit] = b'2';
    server
        .upload(manifest_flip)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_signature");

    // Over the upload limit.
    let r = server.upload(vec![0u8; MAX_COMPONENT_BYTES + 1]).await;
    r.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");

    // `probe` imports ssh, credentials and transfer; a manifest that only declares
    // params and log is contradicted by its imports.
    let full = manifest_text("probe");
    let narrow = full.replace(
        r#"capabilities = ["params", "log", "credentials", "ssh", "transfer"]"#,
        r#"capabilities = ["params", "log"]"#,
    );
    assert_ne!(
        narrow, full,
        "probe's manifest changed shape; update this test"
    );
    let r = server.upload(signed("probe", &narrow, &key)).await;
    r.expect_error(StatusCode::BAD_REQUEST, "undeclared_capability");

    // Each upload is audited: one allowed, and each rejection as denied naming its code.
    let records = server.audit("action=module.upload").await;
    let allowed = records
        .iter()
        .filter(|r| r["decision"]["verdict"] == "allowed")
        .count();
    assert_eq!(allowed, 1, "{records:#?}");
    let mut denied: Vec<&str> = records
        .iter()
        .filter(|r| r["decision"]["verdict"] == "denied")
        .map(|r| {
            assert_eq!(r["outcome"], r["decision"]["reason"], "{r}");
            assert_eq!(r["actor"], "admin");
            r["decision"]["reason"].as_str().expect("reason")
        })
        .collect();
    denied.sort_unstable();
    assert_eq!(
        denied,
        [
            "bad_signature",
            "bad_signature",
            "too_large",
            "undeclared_capability",
            "unsigned",
            "untrusted_publisher"
        ]
    );
    // None of the rejected modules was stored.
    let listed = server.get("/v1/modules", &server.admin).await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text
    );
}

// ---------------------------------------------------------------------------------------
// 2. The role matrix
// ---------------------------------------------------------------------------------------

/// What a role should get from an operation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// 2xx.
    Allow,
    /// 403 `forbidden`.
    Deny,
    /// 404 `not_found`: the process is not even visible.
    Hidden,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    CreateProcess,
    ViewProcess,
    Execute,
    ViewAudit,
    ViewResourceAudit,
    ManageCredentials,
}

const OPS: [Op; 6] = [
    Op::CreateProcess,
    Op::ViewProcess,
    Op::Execute,
    Op::ViewAudit,
    Op::ViewResourceAudit,
    Op::ManageCredentials,
];

async fn perform(
    server: &Server,
    op: Op,
    user: &str,
    token: &str,
    process: &str,
    digest: &str,
) -> Reply {
    match op {
        Op::CreateProcess => {
            server
                .create_process(token, &format!("made-by-{user}"), digest)
                .await
        }
        Op::ViewProcess => server.get(&format!("/v1/processes/{process}"), token).await,
        Op::Execute => {
            let path = format!("/v1/processes/{process}/runs");
            server.post(&path, token, json!({ "inputs": {} })).await
        }
        Op::ViewAudit => server.get("/v1/audit", token).await,
        Op::ViewResourceAudit => server.get("/v1/audit/resources", token).await,
        Op::ManageCredentials => {
            let body = json!({
                "name": format!("cred-{user}"),
                "username": "root",
                "secret": random_secret(24),
            });
            server.post("/v1/credentials", token, body).await
        }
    }
}

fn check(want: Want, reply: &Reply, who: &str, op: Op) {
    let ok = match want {
        Want::Allow => reply.status.is_success(),
        Want::Deny => reply.status == StatusCode::FORBIDDEN && reply.code() == "forbidden",
        Want::Hidden => reply.status == StatusCode::NOT_FOUND && reply.code() == "not_found",
    };
    assert!(
        ok,
        "{who} {op:?}: wanted {want:?}, got {} {}",
        reply.status, reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_allows_and_denies_each_operation_as_the_seed_model_says() {
    use Want::{Allow as A, Deny as D, Hidden as H};
    let server = Server::start().await;
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("hello", &key).await;

    for (name, privilege) in [
        ("process-managers", "ManagePrivilegedProcess"),
        ("process-executors", "ExecutePrivilegedProcess"),
        ("approvers", "ApproveRun"),
    ] {
        let body = json!({ "name": name, "privileges": [privilege] });
        server.role(body).await;
    }
    let r = server
        .post(
            "/v1/roles",
            &server.admin,
            json!({ "name": "x", "privileges": ["root"] }),
        )
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid");

    let mut tokens = BTreeMap::new();
    for (user, roles) in [
        ("padmin", &["privileged-administrator"][..]),
        ("super", &["super-administrator"][..]),
        ("auditor", &["password-auditor"][..]),
        ("manager", &["process-managers"][..]),
        ("executor", &["process-executors"][..]),
        ("plain", &[][..]),
    ] {
        tokens.insert(user, server.user(user, roles).await);
    }

    // The first administrator's process, shared with nobody.
    let r = server
        .create_process(&server.admin, "admins-process", &digest)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let process = r.body["id"].as_str().expect("process id").to_string();

    // Columns: create process, view process, execute, full audit, resource audit, credentials.
    let matrix: [(&str, [Want; 6]); 6] = [
        ("padmin", [A, A, A, A, A, A]),
        ("super", [A, H, H, A, A, A]),
        ("auditor", [D, H, H, D, A, D]),
        ("manager", [A, H, H, D, D, D]),
        ("executor", [D, H, H, D, D, D]),
        ("plain", [D, H, H, D, D, D]),
    ];
    for (user, wants) in &matrix {
        for (op, want) in OPS.iter().zip(wants) {
            let reply = perform(&server, *op, user, &tokens[user], &process, &digest).await;
            check(*want, &reply, user, *op);
        }
    }

    // The Super Administrator does not even see the unshared process in the list.
    let ids = |r: &Reply| -> Vec<String> {
        r.body
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|p| p["id"].as_str().map(String::from))
            .collect()
    };
    let listed = server.get("/v1/processes", &tokens["super"]).await;
    assert!(!ids(&listed).contains(&process), "{}", listed.text);

    // Share with the Super Administrator, the executor and the plain user.
    let share = json!({ "users": ["super", "executor", "plain"] });
    let r = server
        .post(
            &format!("/v1/processes/{process}/share"),
            &server.admin,
            share,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let shared: [(&str, Want, Want); 5] = [
        // (user, view, execute)
        ("super", A, A),
        ("executor", A, A),
        // A share lets a plain user run the process, not read its definition.
        ("plain", D, A),
        ("manager", H, H),
        ("auditor", H, H),
    ];
    for (user, view, execute) in shared {
        let r = perform(
            &server,
            Op::ViewProcess,
            user,
            &tokens[user],
            &process,
            &digest,
        )
        .await;
        check(view, &r, user, Op::ViewProcess);
        let r = perform(&server, Op::Execute, user, &tokens[user], &process, &digest).await;
        check(execute, &r, user, Op::Execute);
        if execute == A {
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        }
    }
    let listed = server.get("/v1/processes", &tokens["super"]).await;
    assert!(ids(&listed).contains(&process), "{}", listed.text);

    // The Password Auditor's view: credential records, projected to the documented fields.
    let r = server.get("/v1/audit/resources", &tokens["auditor"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let view = r.body.as_array().expect("view");
    assert!(
        view.iter()
            .any(|rec| rec["action"] == "credential.create" && rec["credential"] == "cred-padmin"),
        "{}",
        r.text
    );
    let allowed_fields: BTreeSet<&str> = [
        "seq",
        "time_ms",
        "actor",
        "action",
        "target",
        "credential",
        "decision",
        "policy",
        "outcome",
    ]
    .into();
    for rec in view {
        let fields = rec.as_object().expect("record");
        assert!(
            fields.keys().all(|k| allowed_fields.contains(k.as_str())),
            "{rec}"
        );
        assert!(
            !rec["target"].is_null() || !rec["credential"].is_null(),
            "{rec}"
        );
    }
    server
        .get("/v1/audit", &tokens["auditor"])
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    // Denials are audited with the policy that refused.
    let denials = server.audit("actor=auditor&action=api.ViewAudit").await;
    assert!(
        !denials.is_empty(),
        "the auditor's denied audit reads were not audited"
    );
    for d in &denials {
        assert_eq!(d["decision"]["verdict"], "denied", "{d}");
        assert_eq!(d["decision"]["policy"], "default-deny", "{d}");
    }
}

// ---------------------------------------------------------------------------------------
// 3. A run over HTTP
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_started_over_http_streams_events_and_its_result_and_audit_are_queryable() {
    let server = Server::start().await;
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("hello", &key).await;
    let r = server
        .create_process(&server.admin, "greeter", &digest)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let process = r.body["id"].as_str().expect("process id").to_string();

    // Inputs that do not match the manifest are refused before a run exists.
    let runs = format!("/v1/processes/{process}/runs");
    for bad in [
        json!({ "times": "x" }),
        json!({ "nobody-declared-this": 1 }),
    ] {
        let r = server
            .post(&runs, &server.admin, json!({ "inputs": bad }))
            .await;
        r.expect_error(StatusCode::BAD_REQUEST, "invalid_inputs");
    }
    let listed = server.get("/v1/runs", &server.admin).await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(0),
        "{}",
        listed.text
    );

    let run = server
        .start_run(
            &process,
            &server.admin,
            json!({ "name": "Ada", "times": 2 }),
        )
        .await;
    let events = server
        .events_until_state(&format!("/v1/runs/{run}/events"), &server.admin)
        .await;
    let logs: Vec<&str> = events
        .iter()
        .filter(|(e, _)| e == "log")
        .map(|(_, d)| d.as_str())
        .collect();
    assert!(
        logs.iter().any(|d| d.contains("greeting 1 of 2 for Ada")),
        "{events:#?}"
    );
    assert!(
        logs.iter().any(|d| d.contains("greeting 2 of 2 for Ada")),
        "{events:#?}"
    );
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "state");
    let final_record: Value = serde_json::from_str(data).expect("state event is JSON");
    assert_eq!(final_record["state"], "succeeded", "{data}");
    assert_eq!(final_record["result"], "hello, Ada", "{data}");

    let r = server.get(&format!("/v1/runs/{run}"), &server.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["state"], "succeeded");
    assert_eq!(r.body["result"], "hello, Ada");
    assert_eq!(r.body["actor"], "admin");

    // A stream opened after the run ended replays the stored events.
    let replay = server
        .events_until_state(&format!("/v1/runs/{run}/events"), &server.admin)
        .await;
    assert!(
        replay
            .iter()
            .any(|(e, d)| e == "log" && d.contains("greeting 2 of 2 for Ada")),
        "{replay:#?}"
    );

    let records = server.audit(&format!("run={run}")).await;
    let actions: Vec<&str> = records
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    // The run store's transitions bracket the run (the bridge writes no run.start/run.end
    // of its own for server runs): queued, running, the host calls, then the outcome.
    let position = |want: &str| {
        actions
            .iter()
            .position(|a| *a == want)
            .unwrap_or_else(|| panic!("{want} missing from {actions:?}"))
    };
    let (queued, running, succeeded) = (
        position("run.queued"),
        position("run.running"),
        position("run.succeeded"),
    );
    let first_call = position("log.write");
    assert!(
        queued < running && running < first_call && first_call < succeeded,
        "{actions:?}"
    );
    assert!(
        !actions.contains(&"run.start") && !actions.contains(&"run.end"),
        "{actions:?}"
    );
    let detail = |i: usize| {
        records[i]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        detail(running).contains("module hello@"),
        "{}",
        detail(running)
    );
    assert!(
        detail(succeeded).contains("host calls: "),
        "{}",
        detail(succeeded)
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "log.write").count(),
        2,
        "{actions:?}"
    );
    assert!(
        records.iter().all(|r| r["run_id"] == run.as_str()),
        "{records:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. The OpenAPI document against the router
// ---------------------------------------------------------------------------------------

/// Every route the server is supposed to have, from `host/src/api/routes/*.rs`.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/whoami"),
    ("get", "/v1/modules"),
    ("post", "/v1/modules"),
    ("get", "/v1/modules/{digest}"),
    ("post", "/v1/modules/{digest}/retire"),
    ("get", "/v1/publishers"),
    ("post", "/v1/publishers"),
    ("delete", "/v1/publishers/{name}"),
    ("get", "/v1/targets"),
    ("post", "/v1/targets"),
    ("get", "/v1/targets/{name}"),
    ("delete", "/v1/targets/{name}"),
    ("get", "/v1/credentials"),
    ("post", "/v1/credentials"),
    ("get", "/v1/credentials/{name}"),
    ("put", "/v1/credentials/{name}/secret"),
    ("get", "/v1/credentials/{name}/versions"),
    ("get", "/v1/processes"),
    ("post", "/v1/processes"),
    ("get", "/v1/processes/{id}"),
    ("put", "/v1/processes/{id}"),
    ("delete", "/v1/processes/{id}"),
    ("post", "/v1/processes/{id}/share"),
    ("post", "/v1/processes/{id}/runs"),
    ("get", "/v1/runs"),
    ("get", "/v1/runs/{id}"),
    ("get", "/v1/runs/{id}/events"),
    ("post", "/v1/runs/{id}/cancel"),
    ("post", "/v1/runs/{id}/resume"),
    ("get", "/v1/runs/{id}/leases"),
    ("get", "/v1/leases/{id}"),
    ("post", "/v1/leases/{id}/revoke"),
    ("get", "/v1/approvals"),
    ("get", "/v1/runs/{id}/approval"),
    ("post", "/v1/runs/{id}/approve"),
    ("post", "/v1/runs/{id}/reject"),
    ("put", "/v1/runs/{id}/inputs"),
    ("get", "/v1/processes/{id}/schedules"),
    ("post", "/v1/processes/{id}/schedules"),
    ("delete", "/v1/processes/{id}/schedules/{schedule}"),
    ("get", "/v1/audit"),
    ("get", "/v1/audit/verify"),
    ("get", "/v1/audit/resources"),
    ("get", "/v1/users"),
    ("post", "/v1/users"),
    ("post", "/v1/users/{name}/tokens"),
    ("get", "/v1/users/{name}/tokens"),
    ("delete", "/v1/users/{name}"),
    ("post", "/v1/users/{name}/disable"),
    ("post", "/v1/users/{name}/enable"),
    ("delete", "/v1/tokens/{id}"),
    ("get", "/v1/roles"),
    ("post", "/v1/roles"),
    ("put", "/v1/roles/{name}/grants"),
    ("get", "/v1/notify/sinks"),
    ("post", "/v1/notify/sinks"),
    ("delete", "/v1/notify/sinks/{name}"),
    ("post", "/v1/notify/sinks/{name}/enable"),
    ("post", "/v1/notify/sinks/{name}/disable"),
    ("get", "/v1/notify/sinks/{name}/dead-letters"),
    ("post", "/v1/notify/sinks/{name}/dead-letters/replay"),
    ("get", "/v1/notify/allow"),
    ("put", "/v1/notify/allow"),
    ("get", "/v1/notify/rules"),
    ("post", "/v1/notify/rules"),
    ("delete", "/v1/notify/rules/{name}"),
    ("get", "/v1/bridges"),
    ("post", "/v1/bridges/tokens"),
    ("post", "/v1/bridges/{id}/revoke"),
    ("get", "/v1/processes/{id}/triggers"),
    ("post", "/v1/processes/{id}/triggers"),
    ("get", "/v1/triggers/{id}"),
    ("delete", "/v1/triggers/{id}"),
    ("post", "/v1/triggers/{id}/rotate-secret"),
    ("get", "/v1/triggers/{id}/bodies"),
    ("post", "/v1/triggers/{id}/events"),
];

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Whether the router has a route for this request: axum answers an unknown path with a bare
/// 404 (empty body) and a known path with the wrong method with 405. Our own 404 is JSON.
fn routed(reply: &Reply) -> bool {
    match reply.status {
        StatusCode::METHOD_NOT_ALLOWED => false,
        StatusCode::NOT_FOUND => reply.code() == "not_found",
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_and_router_list_the_same_routes() {
    let server = Server::start().await;
    let r = server
        .request(Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let paths = r.body["paths"].as_object().expect("paths in the document");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("path item");
            HTTP_METHODS
                .iter()
                .filter(|m| methods.contains_key(**m))
                .map(|m| (m.to_string(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "/openapi.json documents routes the server should not have: {extra:?}"
    );

    // The discriminator works: an unknown path and a wrong method are not routed.
    let nowhere = server.get("/v1/no-such-route", &server.admin).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert!(!routed(&nowhere), "{}", nowhere.text);
    let wrong = server
        .request(Method::PATCH, "/v1/audit", Some(&server.admin), None)
        .await;
    assert!(!routed(&wrong), "{} {}", wrong.status, wrong.text);

    // Every documented operation reaches a handler.
    for (method, path) in &documented {
        let concrete = dummy_params(path);
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let body = matches!(method, Method::POST | Method::PUT).then(|| json!({}));
        let reply = server
            .request(
                method.clone(),
                &concrete,
                Some(&server.admin),
                body.as_ref(),
            )
            .await;
        assert!(
            routed(&reply),
            "{method} {concrete} is documented but not routed: {} {}",
            reply.status,
            reply.text
        );
        assert!(
            !reply.status.is_server_error(),
            "{method} {concrete}: {} {}",
            reply.status,
            reply.text
        );
    }
}

/// `path` with each `{param}` replaced by a dummy value.
fn dummy_params(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closing brace") + open;
        out.push_str("dummy-0");
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// 5. Error bodies
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_secrets_go_in_and_never_come_out() {
    let server = Server::start().await;
    let old = warden_tests::random_secret(32);
    let new = warden_tests::random_secret(32);
    let body = json!({ "name": "db-admin", "username": "dba", "secret": old });
    let created = server.post("/v1/credentials", &server.admin, body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let put = server
        .request(
            Method::PUT,
            "/v1/credentials/db-admin/secret",
            Some(&server.admin),
            Some(&json!({ "secret": new })),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let missing = server
        .request(
            Method::PUT,
            "/v1/credentials/nope/secret",
            Some(&server.admin),
            Some(&json!({ "secret": "x" })),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let listed = server.get("/v1/credentials", &server.admin).await;
    let one = server.get("/v1/credentials/db-admin", &server.admin).await;
    let audit = server.get("/v1/audit", &server.admin).await;
    for reply in [&created, &put, &listed, &one, &audit] {
        assert!(
            !reply.text.contains(&old) && !reply.text.contains(&new),
            "a secret came back: {}",
            reply.text
        );
    }
    assert!(audit.text.contains("credential.update-secret"));
    let state = server._state.as_ref().expect("in-process");
    assert_eq!(
        state.vault.secret("db-admin").expect("secret").expose(),
        new.as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_stable_codes() {
    let server = Server::start().await;

    // No token, a wrong token, a non-bearer scheme.
    let r = server
        .request(Method::GET, "/v1/processes", None, None)
        .await;
    r.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let r = server.get("/v1/processes", "not-a-real-token").await;
    r.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let basic = server
        .client
        .get(format!("{}/v1/processes", server.base))
        .basic_auth("admin", Some(&server.admin))
        .send()
        .await
        .expect("request");
    reply(basic)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // An unauthenticated request never reaches the handler's validation.
    let r = server
        .request(Method::POST, "/v1/processes", None, Some(&json!({})))
        .await;
    r.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Malformed JSON.
    let r = server
        .post_raw(
            "/v1/processes",
            &server.admin,
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    // A JSON body over the request body limit.
    let huge = json!({ "name": "c", "username": "u", "secret": "x".repeat(warden_host::api::MAX_JSON_BODY) });
    let r = server.post("/v1/credentials", &server.admin, huge).await;
    r.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");

    // Unknown ids are JSON 404s.
    server
        .get("/v1/runs/nope", &server.admin)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

// ---------------------------------------------------------------------------------------
// 6. SIGKILL during a run
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_run_leaves_it_interrupted_and_every_acknowledged_record_intact() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);

    let mut first = ServeChild::plain(BIN, &data, tmp.path().join("serve-1.log")).await;
    let server = first.server(&admin);
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("probe", &key).await;
    let r = server.create_process(&admin, "spinner", &digest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let process = r.body["id"].as_str().expect("process id").to_string();
    let run = server
        .start_run(&process, &admin, json!({ "mode": "loop" }))
        .await;
    server.wait_for_state(&run, "running").await;

    let acknowledged = server.audit("").await;
    assert!(
        acknowledged.iter().any(|r| r["run_id"] == run.as_str()),
        "the run's start was not audited before the kill"
    );
    first.kill_9();

    let second = ServeChild::plain(BIN, &data, tmp.path().join("serve-2.log")).await;
    let server = second.server(&admin);
    let r = server.get(&format!("/v1/runs/{run}"), &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["state"], "interrupted", "{}", r.text);

    let verdict = server.get("/v1/audit/verify", &admin).await;
    assert_eq!(verdict.status, StatusCode::OK, "{}", verdict.text);
    assert_eq!(verdict.body["ok"], true, "{}", verdict.text);

    let after = server.audit("").await;
    let by_seq: BTreeMap<u64, &Value> = after
        .iter()
        .map(|r| (r["seq"].as_u64().expect("seq"), r))
        .collect();
    for before in &acknowledged {
        let seq = before["seq"].as_u64().expect("seq");
        let now = by_seq
            .get(&seq)
            .unwrap_or_else(|| panic!("acknowledged record {seq} is gone"));
        assert_eq!(now["hash"], before["hash"], "record {seq} changed");
        assert_eq!(**now, *before, "record {seq} changed");
    }
    assert!(
        after.len() > acknowledged.len(),
        "the interruption was not audited"
    );
    let interrupted = after
        .iter()
        .any(|r| r["run_id"] == run.as_str() && r["action"] == "run.interrupted");
    assert!(interrupted, "no run.interrupted record for {run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_requires_approvals_never_runs_without_them() {
    let server = Server::start().await;
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("hello", &key).await;
    let body = json!({ "name": "guarded", "module_digest": digest, "required_approvals": 2 });
    let created = server.post("/v1/processes", &server.admin, body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().expect("id").to_string();
    let run = server.start_run(&id, &server.admin, json!({})).await;
    // Give a wrongly queued run time to start before looking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = server.get(&format!("/v1/runs/{run}"), &server.admin).await;
    assert_eq!(r.body["state"], "awaiting-approval", "{}", r.text);
    assert_eq!(r.body["started_ms"], Value::Null, "{}", r.text);
    assert_eq!(r.body["events"], json!([]), "{}", r.text);
}
