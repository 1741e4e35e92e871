//! The run queue over real HTTP (issue 10, item 10): one caller must not be able to make
//! everyone's runs fail or wait forever.
//!
//! Every test runs a real server on 127.0.0.1:0 (the harness of `api.rs`) and the `probe`
//! guest's `sleep` mode, which holds its execution slot for `n` ms. The attacks: start more
//! runs than the instance pool holds (before the queue, run 65 failed with the allocator's
//! "maximum concurrent limit"), fill the server's queue, flood it as one user so another
//! user's run cannot start, and fire runs through a schedule or an approval once the queue
//! is full.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use warden_host::api::ServerLimits;
use warden_host::runs::queue::QueueLimits;
use warden_host::runtime::engine::EngineConfig;

use warden_tests::http::{Reply, ServeChild, Server, Transport, init_data_dir, new_key};

/// The allocator's error when the pool is exhausted; no run may ever end with it.
const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

const POOL_EXHAUSTED: &str = "maximum concurrent limit";

/// A server over a pool of `slots` runs, with these queue bounds.
async fn server_with(slots: u32, queue: QueueLimits) -> Server {
    let limits = ServerLimits {
        engine: EngineConfig {
            max_concurrent_runs: slots,
            ..EngineConfig::default()
        },
        queue,
        ..ServerLimits::default()
    };
    Server::start_with(&limits).await
}

/// Publishes the probe and creates process `name` of it, shared with `users`; its id.
async fn sleeper_process(server: &Server, digest: &str, name: &str, users: &[&str]) -> String {
    let r = server.create_process(&server.admin, name, digest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().expect("process id").to_string();
    if !users.is_empty() {
        let r = server
            .post(
                &format!("/v1/processes/{id}/share"),
                &server.admin,
                json!({ "users": users }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    id
}

async fn probe(server: &Server) -> String {
    let key = new_key();
    server.trust("acme", &key).await;
    server.publish("probe", &key).await
}

/// Asks for a run of `process` sleeping `ms`, as `token`'s user; the raw reply.
async fn request_sleep(server: &Server, process: &str, token: &str, ms: u64) -> Reply {
    server
        .post(
            &format!("/v1/processes/{process}/runs"),
            token,
            json!({ "inputs": { "mode": "sleep", "n": ms } }),
        )
        .await
}

/// [`request_sleep`] that must be accepted; the run.
async fn sleep_run(server: &Server, process: &str, token: &str, ms: u64) -> Value {
    let r = request_sleep(server, process, token, ms).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    r.body
}

fn id(run: &Value) -> String {
    run["id"].as_str().expect("run id").to_string()
}

/// Asserts a refusal: status, code, a numeric `Retry-After`, and a message.
fn assert_refused(r: &Reply, status: StatusCode, code: &str) {
    r.expect_error(status, code);
    let retry = r
        .headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry.is_some_and(|s| s >= 1),
        "Retry-After: {:?}",
        r.headers
    );
    assert!(!r.body["error"]["message"].as_str().unwrap_or("").is_empty());
}

/// Every run the admin can see (all of them).
async fn all_runs(server: &Server) -> Vec<Value> {
    let r = server.get("/v1/runs?limit=1000", &server.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body.as_array().expect("runs").clone()
}

/// Waits until every run in `ids` has ended; asserts each succeeded.
async fn all_succeed(server: &Server, ids: &[String]) {
    for run in ids {
        let body = server.wait_for_state_or_end(run).await;
        let error = body["error"].as_str().unwrap_or("");
        assert!(!error.contains(POOL_EXHAUSTED), "pool exhausted: {body}");
        assert_eq!(body["state"], "succeeded", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seventy_runs_on_a_pool_of_sixty_four_all_succeed_and_none_hits_the_pool_limit() {
    // Default configuration: 64 slots. Five users start 14 runs each of three processes at
    // once, 70 in all: six must wait for a slot instead of failing.
    let server = Server::start().await;
    let digest = probe(&server).await;
    let users = ["u0", "u1", "u2", "u3", "u4"];
    let mut tokens = Vec::new();
    for user in users {
        tokens.push(server.user(user, &[]).await);
    }
    let mut processes = Vec::new();
    for p in 0..3 {
        processes.push(sleeper_process(&server, &digest, &format!("sleep-{p}"), &users).await);
    }
    // One run first, so the 70 below find the module prepared.
    let warm = id(&sleep_run(&server, &processes[0], &tokens[0], 10).await);
    all_succeed(&server, &[warm]).await;
    let requests = (0..70).map(|i| {
        let (server, token, process) = (&server, &tokens[i % 5], &processes[i % 3]);
        async move { sleep_run(server, process, token, 5000).await }
    });
    let runs = futures::future::join_all(requests).await;
    assert_eq!(server.metric("warden_run_slots").await, 64);
    let waiting = runs.iter().filter(|r| r["state"] == "queued").count();
    assert!(waiting >= 6, "{waiting} runs were queued at once");
    assert!(server.metric("warden_runs_queued").await >= 1);
    let ids: Vec<String> = runs.iter().map(id).collect();
    all_succeed(&server, &ids).await;
    assert_eq!(server.metric("warden_runs_running").await, 0);
    assert_eq!(server.metric("warden_runs_queued").await, 0);
}

fn small_queue() -> QueueLimits {
    QueueLimits {
        max_queued: 2,
        per_user_running: 16,
        per_user_queued: 64,
        per_process_running: 32,
        per_process_queued: 256,
    }
}

/// A roomy queue (100 places) in which each user may have `slots` runs running and `slots`
/// more queued.
fn per_user(slots: usize) -> QueueLimits {
    QueueLimits {
        max_queued: 100,
        per_user_running: slots,
        per_user_queued: slots,
        ..small_queue()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_503_and_retry_after_and_leaves_nothing_behind() {
    let server = server_with(4, small_queue()).await;
    let digest = probe(&server).await;
    let stranger = server.user("stranger", &[]).await;
    let process = sleeper_process(&server, &digest, "sleeper", &["stranger"]).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(id(&sleep_run(&server, &process, &server.admin, 6000).await));
    }
    let queued = server
        .get(&format!("/v1/runs/{}", ids[5]), &server.admin)
        .await;
    assert_eq!(queued.body["state"], "queued", "{}", queued.text);

    // The server's queue is full: for the flooder and for anyone else, 503 with Retry-After.
    for token in [&server.admin, &stranger] {
        let r = request_sleep(&server, &process, token, 10).await;
        assert_refused(&r, StatusCode::SERVICE_UNAVAILABLE, "queue_full");
    }
    assert_eq!(
        all_runs(&server).await.len(),
        6,
        "no record of a refused run"
    );
    let refused = server.audit("action=run.refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["decision"]["verdict"], "denied");
    let metric = "warden_runs_refused_total{reason=\"queue_full\"}";
    assert_eq!(server.metric(metric).await, 2);

    // A schedule firing into the full queue is refused too, audited, and creates nothing.
    let r = server
        .post(
            &format!("/v1/processes/{process}/schedules"),
            &server.admin,
            json!({ "cron": "* * * * * *", "inputs": { "mode": "sleep", "n": 10 } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let schedule = r.body["id"].as_str().expect("schedule id").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let failed = server.audit("action=schedule.failed").await;
        if !failed.is_empty() {
            break failed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "schedule never refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delete = format!("/v1/processes/{process}/schedules/{schedule}");
    let r = server
        .request(Method::DELETE, &delete, Some(&server.admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(
        failed[0].to_string().contains("queue is full"),
        "{failed:?}"
    );
    // The six admitted runs are still in flight (they sleep 6 s), so no firing got in.
    assert_eq!(
        all_runs(&server).await.len(),
        6,
        "a refused firing left a run"
    );

    // The route documents both refusals and their header.
    let doc = server
        .request(Method::GET, "/openapi.json", None, None)
        .await;
    let responses = &doc.body["paths"]["/v1/processes/{id}/runs"]["post"]["responses"];
    for status in ["429", "503"] {
        let header = &responses[status]["headers"]["Retry-After"];
        assert!(header.is_object(), "{status} undocumented: {responses}");
    }

    // The six admitted runs all succeed; afterwards the queue accepts again.
    all_succeed(&server, &ids).await;
    let after = id(&sleep_run(&server, &process, &stranger, 10).await);
    all_succeed(&server, &[after]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_over_their_share_gets_429_while_another_users_run_starts_and_succeeds() {
    let server = server_with(4, per_user(2)).await;
    let digest = probe(&server).await;
    let mallory = server.user("mallory", &[]).await;
    let bob = server.user("bob", &[]).await;
    let process = sleeper_process(&server, &digest, "shared", &["mallory", "bob"]).await;

    // Mallory floods: two runs take her two slots, two wait, the rest are refused.
    let mut hers = Vec::new();
    for _ in 0..4 {
        hers.push(sleep_run(&server, &process, &mallory, 4000).await);
    }
    let states: Vec<&str> = hers
        .iter()
        .map(|r| r["state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states, ["running", "running", "queued", "queued"]);
    for _ in 0..3 {
        let r = request_sleep(&server, &process, &mallory, 4000).await;
        assert_refused(&r, StatusCode::TOO_MANY_REQUESTS, "user_run_limit");
    }
    let metric = "warden_runs_refused_total{reason=\"caller_limit\"}";
    assert_eq!(server.metric(metric).await, 3);

    // Bob's run starts at once, although Mallory's runs wait and two slots are free only
    // because she may not hold them, and it ends long before hers.
    let his = sleep_run(&server, &process, &bob, 10).await;
    assert_eq!(his["state"], "running", "{his}");
    let his = server.wait_for_state_or_end(&id(&his)).await;
    assert_eq!(his["state"], "succeeded", "{his}");
    let third = server
        .get(&format!("/v1/runs/{}", id(&hers[2])), &server.admin)
        .await;
    assert_eq!(third.body["state"], "queued", "{}", third.text);
    assert_eq!(
        all_runs(&server).await.len(),
        5,
        "refused runs left no record"
    );

    let ids: Vec<String> = hers.iter().map(id).collect();
    all_succeed(&server, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_over_its_share_gets_429_and_other_processes_still_run() {
    let limits = QueueLimits {
        max_queued: 100,
        per_user_running: 16,
        per_user_queued: 64,
        per_process_running: 1,
        per_process_queued: 1,
    };
    let server = server_with(4, limits).await;
    let digest = probe(&server).await;
    let popular = sleeper_process(&server, &digest, "popular", &[]).await;
    let other = sleeper_process(&server, &digest, "other", &[]).await;
    let first = sleep_run(&server, &popular, &server.admin, 3000).await;
    let second = sleep_run(&server, &popular, &server.admin, 10).await;
    assert_eq!(
        (first["state"].as_str(), second["state"].as_str()),
        (Some("running"), Some("queued"))
    );
    let r = request_sleep(&server, &popular, &server.admin, 10).await;
    assert_refused(&r, StatusCode::TOO_MANY_REQUESTS, "process_run_limit");
    let elsewhere = sleep_run(&server, &other, &server.admin, 10).await;
    assert_eq!(elsewhere["state"], "running", "{elsewhere}");
    all_succeed(&server, &[id(&elsewhere), id(&first), id(&second)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_queued_run_never_starts_and_gives_its_place_back() {
    let queue = QueueLimits {
        max_queued: 2,
        ..small_queue()
    };
    let server = server_with(1, queue).await;
    let digest = probe(&server).await;
    let process = sleeper_process(&server, &digest, "one-at-a-time", &[]).await;
    let running = id(&sleep_run(&server, &process, &server.admin, 2000).await);
    let doomed = id(&sleep_run(&server, &process, &server.admin, 10).await);
    let next = id(&sleep_run(&server, &process, &server.admin, 10).await);
    let r = request_sleep(&server, &process, &server.admin, 10).await;
    assert_refused(&r, StatusCode::SERVICE_UNAVAILABLE, "queue_full");

    let r = server
        .post(
            &format!("/v1/runs/{doomed}/cancel"),
            &server.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["state"], "cancelled", "{}", r.text);
    // Its place is free again at once.
    let last = id(&sleep_run(&server, &process, &server.admin, 10).await);

    all_succeed(&server, &[running, next, last]).await;
    let doomed = server.wait_for_state_or_end(&doomed).await;
    assert_eq!(doomed["state"], "cancelled", "{doomed}");
    assert_eq!(doomed["started_ms"], Value::Null, "{doomed}");
    assert_eq!(doomed["host_calls"], 0, "{doomed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_would_overfill_the_queue_is_refused_and_not_recorded() {
    let queue = QueueLimits {
        max_queued: 1,
        ..small_queue()
    };
    let server = server_with(1, queue).await;
    let digest = probe(&server).await;
    let body = json!({ "name": "approvers", "privileges": ["ApproveRun"] });
    server.role(body).await;
    let rita = server.user("rita", &[]).await;
    let alan = server.user("alan", &["approvers"]).await;
    let body = json!({
        "name": "guarded-sleep", "module_digest": digest, "grant": {}, "required_approvals": 1,
    });
    let r = server.post("/v1/processes", &server.admin, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let guarded = r.body["id"].as_str().expect("id").to_string();
    let share = json!({ "users": ["rita"], "roles": ["approvers"] });
    let r = server
        .post(
            &format!("/v1/processes/{guarded}/share"),
            &server.admin,
            share,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let waiting = sleep_run(&server, &guarded, &rita, 10).await;
    assert_eq!(waiting["state"], "awaiting-approval", "{waiting}");
    let waiting = id(&waiting);

    // Fill the slot and the one-run queue with another process's runs.
    let filler = sleeper_process(&server, &digest, "filler", &[]).await;
    let fill = [
        id(&sleep_run(&server, &filler, &server.admin, 2000).await),
        id(&sleep_run(&server, &filler, &server.admin, 10).await),
    ];
    let approve = format!("/v1/runs/{waiting}/approve");
    let r = server.post(&approve, &alan, json!({})).await;
    assert_refused(&r, StatusCode::SERVICE_UNAVAILABLE, "queue_full");
    let request = server
        .get(&format!("/v1/runs/{waiting}/approval"), &alan)
        .await;
    assert_eq!(request.status, StatusCode::OK, "{}", request.text);
    assert_eq!(request.body["valid_approvals"], 0, "{}", request.text);
    assert_eq!(request.body["approvals"], json!([]), "{}", request.text);
    assert!(server.audit("action=run.approval.granted").await.is_empty());

    // Once there is room, the same approval goes through and the run executes.
    all_succeed(&server, &fill).await;
    let r = server.post(&approve, &alan, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["started"], true, "{}", r.text);
    all_succeed(&server, &[waiting]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_serve_flags_size_the_queue_and_a_restart_cancels_runs_that_never_started() {
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let flags = ["--max-concurrent-runs", "1", "--max-queued-runs", "2"];
    let log = tmp.path().join("serve-1.log");
    let mut first = ServeChild::start(BIN, &data, Transport::Plain, &flags, log).await;
    let server = first.server(&admin);
    let digest = probe(&server).await;
    let process = sleeper_process(&server, &digest, "sleeper", &[]).await;
    assert_eq!(server.metric("warden_run_slots").await, 1);
    let running = sleep_run(&server, &process, &admin, 30_000).await;
    let waiting = [
        sleep_run(&server, &process, &admin, 10).await,
        sleep_run(&server, &process, &admin, 10).await,
    ];
    assert_eq!(running["state"], "running", "{running}");
    for run in &waiting {
        assert_eq!(run["state"], "queued", "{run}");
    }
    let r = request_sleep(&server, &process, &admin, 10).await;
    assert_refused(&r, StatusCode::SERVICE_UNAVAILABLE, "queue_full");
    first.kill_9();

    // The queue lived in the killed process: its runs are cancelled, never started, and the
    // run that was executing is interrupted. The new server's queue starts empty.
    let log = tmp.path().join("serve-2.log");
    let second = ServeChild::start(BIN, &data, Transport::Plain, &flags, log).await;
    let server = second.server(&admin);
    let running = server.wait_for_state_or_end(&id(&running)).await;
    assert_eq!(running["state"], "interrupted", "{running}");
    for run in &waiting {
        let run = server.wait_for_state_or_end(&id(run)).await;
        assert_eq!(run["state"], "cancelled", "{run}");
        assert_eq!(run["started_ms"], Value::Null, "{run}");
        let error = run["error"].as_str().unwrap_or("");
        assert!(error.contains("restarted before the run started"), "{run}");
    }
    assert_eq!(server.metric("warden_runs_queued").await, 0);
    let fresh = id(&sleep_run(&server, &process, &admin, 10).await);
    all_succeed(&server, &[fresh]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_schedules_count_against_her_own_share_and_cannot_multiply_it() {
    // If each schedule had its own share, a user could create schedules to get more slots
    // and places than her own limits allow.
    let server = server_with(4, per_user(1)).await;
    let digest = probe(&server).await;
    let body = json!({ "name": "process-managers", "privileges": ["ManagePrivilegedProcess"] });
    server.role(body).await;
    let mallory = server.user("mallory", &["process-managers"]).await;
    let r = server.create_process(&mallory, "mine", &digest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let mine = r.body["id"].as_str().expect("process id").to_string();
    // Executing needs a share, even of one's own process.
    let share = json!({ "users": ["mallory"] });
    let r = server
        .post(&format!("/v1/processes/{mine}/share"), &mallory, share)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let hers = [
        sleep_run(&server, &mine, &mallory, 6000).await,
        sleep_run(&server, &mine, &mallory, 10).await,
    ];
    assert_eq!(hers[1]["state"], "queued", "{}", hers[1]);

    let mut schedules = Vec::new();
    for _ in 0..2 {
        let r = server
            .post(
                &format!("/v1/processes/{mine}/schedules"),
                &mallory,
                json!({ "cron": "* * * * * *", "inputs": { "mode": "sleep", "n": 10 } }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        schedules.push(r.body["id"].as_str().expect("schedule id").to_string());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let failed = server.audit("action=schedule.failed").await;
        if failed.len() >= 2 {
            break failed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "schedules never refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for schedule in &schedules {
        let delete = format!("/v1/processes/{mine}/schedules/{schedule}");
        let r = server
            .request(Method::DELETE, &delete, Some(&mallory), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }
    for record in &failed {
        assert!(
            record
                .to_string()
                .contains("mallory already has 1 runs waiting"),
            "{record}"
        );
    }
    assert_eq!(
        all_runs(&server).await.len(),
        2,
        "a refused firing left a run"
    );
    let ids: Vec<String> = hers.iter().map(id).collect();
    all_succeed(&server, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_whose_publisher_is_distrusted_while_it_waits_never_starts() {
    let server = server_with(1, small_queue()).await;
    let digest = probe(&server).await;
    let process = sleeper_process(&server, &digest, "distrusted-while-queued", &[]).await;
    // Long enough that the distrust below lands while the second run still waits.
    let running = id(&sleep_run(&server, &process, &server.admin, 5000).await);
    let waiting = sleep_run(&server, &process, &server.admin, 10).await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    let waiting = id(&waiting);

    let r = server
        .request(
            Method::DELETE,
            "/v1/publishers/acme",
            Some(&server.admin),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);

    // The run that had started finishes; the one that waited is refused as it leaves the
    // queue, without ever running.
    all_succeed(&server, &[running]).await;
    let refused = server.wait_for_state_or_end(&waiting).await;
    assert_eq!(refused["state"], "denied", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("no longer trusted"),
        "{refused}"
    );
    assert_eq!(refused["started_ms"], Value::Null, "{refused}");
    assert_eq!(refused["host_calls"], 0, "{refused}");
}
