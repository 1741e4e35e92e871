//! Webhook sinks: signatures checked by `standardwebhooks`, retries, 410, the allow-list,
//! dead letters.

use super::*;

#[tokio::test]
async fn webhook_stream_is_signed_retried_after_500_and_verified_independently() {
    let server = Server::start().await;
    let st = state(&server);
    let (whsec, pubkey) = secrets(st);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.jsonl");
    // The first two requests get 500: the first record is retried, then everything lands.
    let (_rx, port) = receiver(&whsec, &pubkey, &log, &["--fail-first", "2"]);
    set_allow(&server, &[format!("127.0.0.1:{port}")]).await;
    let sink = json!({
        "name": "siem", "kind": "webhook", "url": format!("http://127.0.0.1:{port}/hook"),
        "secret_credential": "hook-hmac", "signing_credential": "hook-ed",
        "timeout_ms": 2000, "retry_ms": [50, 50, 50]
    });
    let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(
        !r.text.contains("whsec_"),
        "the answer names the credential, not the secret"
    );
    denial(st, "run-1", 5).await;
    let want = head(st);
    let debug_log = log.clone();
    let _dump = Dump(debug_log);
    wait_until("every record at the receiver", || {
        let got: std::collections::HashSet<String> = lines(&log)
            .iter()
            .filter(|l| l["status"] == 200)
            .filter_map(|l| l["id"].as_str().map(str::to_string))
            .collect();
        (0..want).all(|seq| got.contains(&format!("audit-{seq}")))
    })
    .await;
    let all = lines(&log);
    assert_eq!(all[0]["status"], 500);
    assert_eq!(
        all[0]["id"], all[2]["id"],
        "the failed line was retried with the same id"
    );
    for line in &all {
        assert_eq!(line["v1"], true, "standardwebhooks rejected {line}");
        assert_ne!(line["v1a"], false, "ed25519 signature rejected {line}");
        assert!(!line["body"].as_str().unwrap().contains("whsec_"));
    }
    let body: Value = serde_json::from_str(all.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert!(
        body["hash"].is_string() && body["prev_hash"].is_string() || body["signature"].is_string()
    );
    let r = server
        .get("/v1/notify/sinks/siem/dead-letters", &server.admin)
        .await;
    assert_eq!(r.body, json!([]), "nothing was given up");
}

#[tokio::test]
async fn webhook_destination_outside_the_allow_list_is_refused_and_audited() {
    let server = Server::start().await;
    let st = state(&server);
    secrets(st);
    set_allow(
        &server,
        &["127.0.0.1:9".to_string(), "10.9.0.0/16".to_string()],
    )
    .await;
    // Another port, another loopback address, a name for the allowed address, a block
    // not on the list, the link-local metadata address, https to a port not on the list.
    for url in [
        "http://127.0.0.1:10/hook",
        "http://127.0.0.2:9/hook",
        "http://localhost:9/hook",
        "http://10.8.0.1:9/",
        "http://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1:10/",
    ] {
        let sink =
            json!({"name": "x", "kind": "webhook", "url": url, "secret_credential": "hook-hmac"});
        let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
        r.expect_error(StatusCode::BAD_REQUEST, "invalid");
    }
    let refused = audit_actions(st, "notify.sink.refused");
    assert_eq!(refused.len(), 6);
    assert!(
        refused
            .iter()
            .all(|r| matches!(r.entry.decision, Decision::Denied { .. }))
    );
    assert_eq!(
        server.get("/v1/notify/sinks", &server.admin).await.body,
        json!([])
    );
    // Someone who is not a Privileged Administrator cannot add one (nor widen the list).
    let auditor = server.user("eve", &["super-administrator"]).await;
    let sink = json!({"name": "y", "kind": "webhook", "url": "http://127.0.0.1:9/", "secret_credential": "hook-hmac"});
    let r = server.post("/v1/notify/sinks", &auditor, sink).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = server
        .request(
            reqwest::Method::PUT,
            "/v1/notify/allow",
            Some(&auditor),
            Some(&json!({"entries": ["0.0.0.0/0"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

#[tokio::test]
async fn webhook_answering_410_is_disabled_and_audited() {
    let server = Server::start().await;
    let st = state(&server);
    let (whsec, pubkey) = secrets(st);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.jsonl");
    let (_rx, port) = receiver(&whsec, &pubkey, &log, &["--gone"]);
    set_allow(&server, &["127.0.0.0/8".to_string()]).await;
    let sink = json!({"name": "gone", "kind": "webhook", "url": format!("http://127.0.0.1:{port}/"),
        "secret_credential": "hook-hmac", "retry_ms": [10, 10]});
    let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    wait_until("the sink disabled", || {
        !audit_actions(st, "notify.sink.disabled").is_empty()
    })
    .await;
    let r = server.get("/v1/notify/sinks", &server.admin).await;
    assert_eq!(r.body[0]["enabled"], false, "{}", r.text);
    let requests = lines(&log).len();
    assert_eq!(requests, 1, "410 is not retried");
    denial(st, "run-2", 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        lines(&log).len(),
        1,
        "a disabled endpoint gets nothing more"
    );
}

#[tokio::test]
async fn webhook_failing_its_whole_schedule_dead_letters_then_replays() {
    let server = Server::start().await;
    let st = state(&server);
    let (whsec, pubkey) = secrets(st);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.jsonl");
    // 6 failures: the first two lines each exhaust 1 + 2 attempts.
    let (_rx, port) = receiver(
        &whsec,
        &pubkey,
        &log,
        &["--fail-first", "6", "--fail-status", "503"],
    );
    set_allow(&server, &[format!("127.0.0.1:{port}")]).await;
    let sink = json!({"name": "flaky", "kind": "webhook", "url": format!("http://127.0.0.1:{port}/"),
        "secret_credential": "hook-hmac", "retry_ms": [20, 20]});
    let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    denial(st, "run-d", 2).await;
    let last_denial = head(st) - 1;
    let _dump = Dump(log.clone());
    wait_until("two dead letters", || {
        audit_actions(st, "notify.delivery.dead_letter").len() == 2
    })
    .await;
    let r = server
        .get("/v1/notify/sinks/flaky/dead-letters", &server.admin)
        .await;
    let ids: Vec<String> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    // The first two lines of the stream: record 0, then record 1 or the checkpoint after it.
    assert_eq!(ids.len(), 2, "{}", r.text);
    assert!(ids.contains(&"audit-0".to_string()), "{}", r.text);
    assert!(r.body[0]["last_error"].as_str().unwrap().contains("503"));
    assert!(!r.text.contains("whsec_"));
    // The stream moved on past them.
    wait_until("the later records", || {
        lines(&log)
            .iter()
            .any(|l| l["status"] == 200 && l["id"] == format!("audit-{last_denial}"))
    })
    .await;
    let r = server
        .post(
            "/v1/notify/sinks/flaky/dead-letters/replay",
            &server.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.body, json!({"delivered": 2, "failed": 0}), "{}", r.text);
    let delivered: Vec<Value> = lines(&log)
        .into_iter()
        .filter(|l| l["status"] == 200)
        .collect();
    for id in &ids {
        assert!(
            delivered
                .iter()
                .any(|l| l["id"] == id.as_str() && l["v1"] == true),
            "{id} not replayed"
        );
    }
    let r = server
        .get("/v1/notify/sinks/flaky/dead-letters", &server.admin)
        .await;
    assert_eq!(r.body, json!([]));
    assert_eq!(audit_actions(st, "notify.dead_letter.replay").len(), 1);
}
