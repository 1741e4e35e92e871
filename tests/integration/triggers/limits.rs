//! Guard rails under load: a burst of 100 valid events starts at most the rate limit and the
//! rest are counted in one overflow record; the concurrency limit counts runs in flight (here
//! runs awaiting the approval the trigger requires); duplicates about one subject within the
//! window start one run.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_100_events_starts_at_most_the_rate_limit_and_counts_the_rest() {
    let (server, pid) = hello_process(0).await;
    let body = json!({
        "map": { "name": "/user" },
        "rate": { "runs": 5, "window_secs": 600 },
        "max_concurrent": 100,
    });
    let (tid, signer) = trigger(&server, &pid, body).await;
    // An alert rule on the overflow, routed to a file sink.
    let alerts = tempfile::tempdir().expect("dir");
    let path = alerts.path().join("alerts.jsonl");
    let sink = json!({"name": "pager", "kind": "file", "path": path.to_str().expect("utf8"), "events": "alerts", "from": "now"});
    let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let rule = json!({"name": "storm", "match": {"kind": "action", "action": "trigger.overflow"}, "sinks": ["pager"]});
    let r = server.post("/v1/notify/rules", &server.admin, rule).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let ts = now();
    let events: Vec<(String, i64, String)> = (0..100)
        .map(|i| {
            (
                event_id(),
                ts,
                json!({ "user": format!("u{i}") }).to_string(),
            )
        })
        .collect();
    let signatures = signer.sign_all(&events);
    let sends = events.iter().zip(&signatures).map(|((id, ts, body), sig)| {
        let (server, tid) = (&server, &tid);
        async move { deliver(server, tid, Some((id, *ts, sig)), body).await }
    });
    let replies = futures::future::join_all(sends).await;
    let started = replies
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .count();
    let limited: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(
        started,
        5,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(limited.len(), 95);
    assert!(limited.iter().all(|r| r.code() == "rate_limited"));
    assert!(
        limited
            .iter()
            .all(|r| r.headers.contains_key("retry-after"))
    );
    assert_eq!(runs_of(&server, &pid).await.len(), 5);
    // One full record for the first refusal, then one count for the window.
    assert_eq!(refusal_reasons(&server, &tid).await, ["rate_limited"]);
    let overflow = wait_for_audit(&server, &tid, "trigger.overflow").await;
    assert_eq!(overflow.len(), 1, "{overflow:?}");
    let detail = overflow[0]["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("count 95;"), "{detail}");
    // One alert for the storm, at its sink.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("alert.fired") {
            assert!(text.contains("storm"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no alert reached the sink"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(server.audit("action=alert.fired").await.len(), 1);
    // A limited event was not remembered: the sender's retry of the same id is not a replay.
    let (id, ts, body) = &events[99];
    let r = deliver(&server, &tid, Some((id, *ts, &signatures[99])), body).await;
    r.expect_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

#[tokio::test(flavor = "multi_thread")]
async fn required_approval_holds_runs_and_the_concurrency_limit_counts_them() {
    let (server, pid) = hello_process(0).await;
    let body = json!({
        "map": { "name": "/user" },
        "max_concurrent": 2,
        "require_approval": true,
    });
    let (tid, signer) = trigger(&server, &pid, body).await;
    let mut held = Vec::new();
    for user in ["a", "b"] {
        let r = send(&server, &tid, &signer, &json!({ "user": user })).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_eq!(r.body["run"]["state"], "awaiting-approval", "{}", r.text);
        held.push(r.body["run"]["id"].as_str().expect("id").to_string());
    }
    let r = send(&server, &tid, &signer, &json!({ "user": "c" })).await;
    r.expect_error(StatusCode::TOO_MANY_REQUESTS, "concurrency_limited");
    assert_eq!(runs_of(&server, &pid).await.len(), 2);
    // The trigger's creator (the admin) requested these runs: four eyes refuse their approval.
    let path = format!("/v1/runs/{}/approve", held[1]);
    let r = server.post(&path, &server.admin, json!({})).await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(r.text.contains("no-self-approval"), "{}", r.text);
    // An approver lets one run go; once it has ended a new event is admitted.
    let approver = server.user("approver", &["privileged-administrator"]).await;
    let path = format!("/v1/runs/{}/approve", held[0]);
    let r = server.post(&path, &approver, json!({})).await;
    assert!(r.status.is_success(), "{}", r.text);
    let run = server.wait_for_state(&held[0], "succeeded").await;
    assert_eq!(run["result"], "hello, a");
    let r = send(&server, &tid, &signer, &json!({ "user": "d" })).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["run"]["state"], "awaiting-approval");
    assert!(
        refusal_reasons(&server, &tid)
            .await
            .contains(&"concurrency_limited".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn events_about_the_same_subject_within_the_window_start_one_run() {
    let (server, pid) = hello_process(0).await;
    let body = json!({
        "map": { "name": "/user" },
        "dedupe": { "pointer": "/user", "window_secs": 2 },
    });
    let (tid, signer) = trigger(&server, &pid, body).await;
    let first = send(&server, &tid, &signer, &json!({ "user": "eve", "n": 1 })).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let again = send(&server, &tid, &signer, &json!({ "user": "eve", "n": 2 })).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["deduplicated"], true);
    assert_eq!(again.body["run"], first.body["run"]["id"]);
    let other = send(&server, &tid, &signer, &json!({ "user": "mallory" })).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{}", other.text);
    assert_eq!(runs_of(&server, &pid).await.len(), 2);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = send(&server, &tid, &signer, &json!({ "user": "eve" })).await;
    assert_eq!(
        later.status,
        StatusCode::ACCEPTED,
        "after the window: {}",
        later.text
    );
    assert_eq!(runs_of(&server, &pid).await.len(), 3);
    assert!(
        refusal_reasons(&server, &tid)
            .await
            .contains(&"duplicate".into())
    );
}
