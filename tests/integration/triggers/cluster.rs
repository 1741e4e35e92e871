//! Two servers over one PostgreSQL database share a trigger's limits and its replay ids: a
//! burst split between them starts at most the rate limit in total, and one event delivered
//! to both at once starts one run. (Fails if the guard state lived in each server's memory,
//! or were written without the compare-and-swap.) Needs the test cluster
//! (`WARDEN_TEST_DATABASE_URL`), like the other PostgreSQL suites.

use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;
use warden_host::store::{DataDir, DatabaseLocation};
use warden_host::users::UserStore;
use warden_tests::http::bootstrap_admin;

use super::*;

/// Two in-process servers over one fresh database (the second with copies of the keys).
async fn two_servers() -> (TempDir, Server, Server) {
    let tmp = TempDir::new().expect("temp dir");
    let location = DatabaseLocation::Postgres(warden_tests::postgres::fresh_database());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let first = DataDir::init_at(&a, &DataDir::default_key_source(&a), &location).expect("init");
    let admin = bootstrap_admin(&UserStore::open(&first.db).expect("users"));
    std::fs::create_dir_all(&b).expect("mkdir");
    for name in ["master.key", "server.key", "database"] {
        std::fs::copy(a.join(name), b.join(name)).expect("copy key");
    }
    let second = DataDir::open_at(&b, &DataDir::default_key_source(&b), &location).expect("b");
    let mut servers = Vec::new();
    for data in [first, second] {
        let state = AppState::open_with(data, &repo_root().join("policies"), &Default::default())
            .await
            .expect("state");
        servers.push(Server::serve_state(state, admin.clone()).await);
    }
    let b = servers.pop().expect("b");
    let a = servers.pop().expect("a");
    (tmp, a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_share_the_rate_limit_and_the_replay_ids() {
    let (_tmp, a, b) = two_servers().await;
    let key = new_key();
    a.trust("acme", &key).await;
    let digest = a.publish("hello", &key).await;
    let body = json!({ "name": "greeter", "module_digest": digest, "grant": {} });
    let r = a.post("/v1/processes", &a.admin, body).await;
    let pid = r.body["id"].as_str().expect("id").to_string();
    let limited = json!({
        "map": { "name": "/user" },
        "rate": { "runs": 5, "window_secs": 600 },
        "max_concurrent": 100,
    });
    let (tid, signer) = trigger(&a, &pid, limited).await;
    let ts = now();
    let events: Vec<(String, i64, String)> = (0..40)
        .map(|i| {
            (
                event_id(),
                ts,
                json!({ "user": format!("u{i}") }).to_string(),
            )
        })
        .collect();
    let sigs = signer.sign_all(&events);
    let sends = events
        .iter()
        .zip(&sigs)
        .enumerate()
        .map(|(i, ((id, ts, body), sig))| {
            let (server, tid) = (if i % 2 == 0 { &a } else { &b }, &tid);
            async move { deliver(server, tid, Some((id, *ts, sig)), body).await }
        });
    let replies = futures::future::join_all(sends).await;
    let started = replies
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .count();
    assert_eq!(
        started,
        5,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    // Each event sent to both servers at once: one run each, the other copy a replay.
    let (tid, signer) = trigger(&a, &pid, json!({ "map": { "name": "/user" }, "rate": { "runs": 100, "window_secs": 60 }, "max_concurrent": 100 })).await;
    let events: Vec<(String, i64, String)> = (0..10)
        .map(|i| {
            (
                event_id(),
                ts,
                json!({ "user": format!("v{i}") }).to_string(),
            )
        })
        .collect();
    let sigs = signer.sign_all(&events);
    let sends = events.iter().zip(&sigs).flat_map(|((id, ts, body), sig)| {
        let tid = &tid;
        [&a, &b].map(|server| async move { deliver(server, tid, Some((id, *ts, sig)), body).await })
    });
    let replies = futures::future::join_all(sends).await;
    let started = replies
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .count();
    let replayed = replies.iter().filter(|r| r.code() == "replayed").count();
    assert_eq!(
        (started, replayed),
        (10, 10),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(runs_of(&b, &pid).await.len(), 15);
}
