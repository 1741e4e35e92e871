//! Request log lines (JSON: route template, status, caller; never a token or the raw
//! path) and graceful shutdown (new runs refused while draining, runs in flight finish or
//! end `interrupted`, the exit code says which).

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use warden_tests::http::Server;
use warden_tests::random_secret;

use super::{Serve, probe_process, start_serve, wait_for};
use warden_tests::http::init_data_dir;

/// Every line of `log` that is a JSON request line.
fn request_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["target"] == "warden::request")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_request_lines_carry_route_status_and_caller_but_never_a_token_or_raw_path() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let data_arg = data.to_string_lossy().into_owned();
    let serve = start_serve(
        tmp.path(),
        &["--data", &data_arg, "--log-format", "json"],
        &[],
    )
    .await;
    let server = Server::remote(serve.base.clone(), admin.clone());

    // Secrets an attacker hopes to see forwarded by a log shipper: in the path, in the
    // query string, and as (wrong) bearer tokens.
    let in_path = random_secret(24);
    let in_query = random_secret(24);
    let forged = format!("wdn_{}", random_secret(40));
    let r = server
        .get(&format!("/v1/runs/{in_path}?secret={in_query}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = server.get("/v1/processes", &forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = server.get(&format!("/no/such/{in_path}"), &admin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    serve.signal("TERM");

    let log = wait_for(&serve, "\"stopped\"").await;
    let lines = request_lines(&log);
    let find = |route: &str| {
        lines
            .iter()
            .find(|l| l["route"] == route)
            .unwrap_or_else(|| panic!("no line for {route}:\n{log}"))
    };
    let run = find("/v1/runs/{id}");
    assert_eq!(run["method"], "GET");
    assert_eq!(run["status"], 404);
    assert_eq!(run["caller"], "admin");
    assert!(run["duration_ms"].as_f64().is_some(), "{run}");
    let token_id = run["token_id"].as_str().expect("token id");
    assert!(!token_id.is_empty() && token_id != "-", "{run}");
    let refused = find("/v1/processes");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["caller"], "-");
    assert_eq!(find("<unmatched>")["status"], 404);
    for secret in [&admin, &forged, &in_path, &in_query] {
        assert!(
            !log.contains(secret.as_str()),
            "{secret} in the log:\n{log}"
        );
    }
    // Not one line that a JSON log collector would choke on.
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
}

/// A new data directory under `tmp` served with `--shutdown-grace SECS`, with the probe
/// published and a process of it: (data argument, admin token, child, harness, process id).
async fn serve_with_grace(tmp: &TempDir, secs: &str) -> (String, String, Serve, Server, String) {
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let data_arg = data.to_string_lossy().into_owned();
    let args = ["--data", &data_arg, "--shutdown-grace", secs];
    let serve = start_serve(tmp.path(), &args, &[]).await;
    let (server, process) = probe_process(&serve, &admin).await;
    (data_arg, admin, serve, server, process)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_runs_lets_the_run_in_flight_finish_and_exits_zero() {
    let tmp = TempDir::new().expect("temp dir");
    let (data_arg, admin, mut serve, server, process) = serve_with_grace(&tmp, "30").await;
    let run = server
        .start_run(&process, &admin, json!({ "mode": "sleep", "n": 8000 }))
        .await;
    server.wait_for_state(&run, "running").await;

    serve.signal("TERM");
    wait_for(&serve, "shutting down").await;
    // A run start while draining: refused, with a hint when to come back; twice, and
    // through the approval route too (it can start a run).
    for _ in 0..2 {
        let r = server
            .post(
                &format!("/v1/processes/{process}/runs"),
                &admin,
                json!({ "inputs": { "mode": "sleep", "n": 1 } }),
            )
            .await;
        r.expect_error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
    }
    let r = server
        .post(&format!("/v1/runs/{run}/approve"), &admin, json!({}))
        .await;
    r.expect_error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
    let retry = server
        .client
        .post(format!("{}/v1/processes/{process}/runs", server.base))
        .bearer_auth(&admin)
        .json(&json!({ "inputs": { "mode": "sleep", "n": 1 } }))
        .send()
        .await
        .expect("request");
    assert_eq!(retry.headers()["retry-after"], "30");
    let health = server.get("/healthz", &admin).await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.text
    );
    // Following the run in flight still works while it drains.
    let r = server.get(&format!("/v1/runs/{run}"), &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The server exits once the run has ended on its own.
    assert_eq!(serve.exit_code().await, 0, "{}", serve.stderr());

    // It succeeded, and nothing started after the signal: the one run is all there is.
    let restarted = start_serve(tmp.path(), &["--data", &data_arg], &[]).await;
    let server = Server::remote(restarted.base.clone(), admin.clone());
    let r = server.get(&format!("/v1/runs/{run}"), &admin).await;
    assert_eq!(r.body["state"], "succeeded", "{}", r.text);
    let runs = server.get("/v1/runs", &admin).await;
    let list = runs.body.as_array().expect("runs");
    assert_eq!(list.len(), 1, "{}", runs.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_past_the_grace_period_end_interrupted_audited_and_the_exit_code_says_so() {
    let tmp = TempDir::new().expect("temp dir");
    let (data_arg, admin, mut serve, server, process) = serve_with_grace(&tmp, "1").await;
    // One run that never ends by itself, and one that would need far longer than the grace.
    let spinning = server
        .start_run(&process, &admin, json!({ "mode": "loop" }))
        .await;
    let sleeping = server
        .start_run(&process, &admin, json!({ "mode": "sleep", "n": 60000 }))
        .await;
    server.wait_for_state(&spinning, "running").await;
    server.wait_for_state(&sleeping, "running").await;

    serve.signal("TERM");
    assert_eq!(serve.exit_code().await, 3, "{}", serve.stderr());

    let restarted = start_serve(tmp.path(), &["--data", &data_arg], &[]).await;
    let server = Server::remote(restarted.base.clone(), admin.clone());
    for run in [&spinning, &sleeping] {
        let r = server.get(&format!("/v1/runs/{run}"), &admin).await;
        assert_eq!(r.body["state"], "interrupted", "{}", r.text);
        let records = server.audit(&format!("run={run}")).await;
        assert!(
            records
                .iter()
                .any(|r| r["action"] == "run.interrupted" && r["actor"] == "system:shutdown"),
            "{records:?}"
        );
    }
    let verdict = server.get("/v1/audit/verify", &admin).await;
    assert_eq!(verdict.body["ok"], true, "{}", verdict.text);
}
