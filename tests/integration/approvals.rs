//! Four-eyes approvals and cron schedules against a real bound port: self-approval and
//! approvers without the privilege refused (and audited), approvals bound to exactly the
//! request (an input or process change invalidates them), two distinct approvers needed,
//! expiry, the approved run actually executing; schedules firing as `schedule:<id>`, bad
//! cron expressions refused, and missed schedules caught up (or not) after a real
//! `warden serve` was killed and restarted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::runs::approval::ApprovalError;
use warden_host::store::DatabaseLocation;
use warden_tests::http::{PATIENCE, ServeChild, Server, init_data_dir};
use warden_tests::wait::until;

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

// ---------------------------------------------------------------------------------------
// Harness (the server, client and waits are `warden_tests::http`'s)
// ---------------------------------------------------------------------------------------

/// The API in-process on 127.0.0.1:0 over a new (sled) data directory; approvals last `ttl`.
async fn start(ttl: Duration) -> Server {
    Server::start_configured(
        &Default::default(),
        &DatabaseLocation::Embedded,
        |mut state| {
            state.approvals = state.approvals.with_ttl(ttl);
            state
        },
    )
    .await
}

/// A `hello` process requiring `required` approvals, shared with `requester` (who may
/// execute it), the `approvers` role (ApproveRun) and the `executors` role
/// (ExecutePrivilegedProcess, so they see it but may not approve).
struct Guarded {
    server: Server,
    process: String,
    requester: String,
    approver1: String,
    approver2: String,
    executor: String,
}

async fn guarded(required: u32, ttl: Duration) -> Guarded {
    let server = start(ttl).await;
    let digest = server.publish_as("acme", "hello").await;
    for (role, privilege) in [
        ("approvers", "ApproveRun"),
        ("executors", "ExecutePrivilegedProcess"),
    ] {
        let body = json!({ "name": role, "privileges": [privilege] });
        server.role(body).await;
    }
    let requester = server.user("rita", &[]).await;
    let approver1 = server.user("alan", &["approvers"]).await;
    let approver2 = server.user("bea", &["approvers"]).await;
    let executor = server.user("ed", &["executors"]).await;
    let body = json!({
        "name": "guarded-hello",
        "module_digest": digest,
        "grant": { "targets": ["db1"], "credentials": ["db-root"] },
        "required_approvals": required,
    });
    let process = server.post("/v1/processes", &server.admin, body).await;
    let process = process.expect(StatusCode::CREATED)["id"]
        .as_str()
        .expect("id")
        .to_string();
    let share = json!({ "users": ["rita"], "roles": ["approvers", "executors"] });
    server
        .post(
            &format!("/v1/processes/{process}/share"),
            &server.admin,
            share,
        )
        .await
        .expect(StatusCode::OK);
    Guarded {
        server,
        process,
        requester,
        approver1,
        approver2,
        executor,
    }
}

impl Guarded {
    /// A run requested by `rita`, awaiting approval.
    async fn request(&self, inputs: Value) -> String {
        let r = self
            .server
            .post(
                &format!("/v1/processes/{}/runs", self.process),
                &self.requester,
                json!({ "inputs": inputs }),
            )
            .await;
        let run = r.expect(StatusCode::ACCEPTED);
        assert_eq!(run["state"], "awaiting-approval", "{run}");
        run["id"].as_str().expect("run id").to_string()
    }

    /// Asserts the run is still waiting (after giving a wrongly queued run time to start).
    async fn assert_still_waiting(&self, run: &str) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let record = self.server.run(run).await;
        assert_eq!(record["state"], "awaiting-approval", "{record}");
        assert_eq!(record["started_ms"], Value::Null, "{record}");
    }
}

/// The run-lifecycle and approval actions among `records` (host calls and the runtime's
/// `run.start`/`run.end` left out).
fn actions(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .filter_map(|r| r["action"].as_str())
        .filter(|a| a.starts_with("run.") && !matches!(*a, "run.start" | "run.end"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Approvals
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_shows_module_capabilities_inputs_targets_and_credentials() {
    let g = guarded(1, Duration::from_secs(3600)).await;
    let run = g.request(json!({ "name": "Ada" })).await;
    let request = g.server.approval(&run, &g.approver1).await;
    assert_eq!(request["requester"], "rita");
    assert_eq!(request["module"], "hello@0.1.0");
    assert_eq!(request["module_digest"].as_str().map(str::len), Some(64));
    assert_eq!(request["capabilities"], json!(["params", "log"]));
    assert_eq!(request["inputs"]["name"], "Ada");
    assert_eq!(request["grant"]["targets"], json!(["db1"]));
    assert_eq!(request["grant"]["credentials"], json!(["db-root"]));
    assert_eq!(request["required_approvals"], 1);
    assert_eq!(request["valid_approvals"], 0);
    assert_eq!(request["binding"].as_str().map(str::len), Some(64));
    // A user with no relation to the process does not learn the run exists.
    let stranger = g.server.user("stan", &[]).await;
    g.server
        .get(&format!("/v1/runs/{run}/approval"), &stranger)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_approval_and_approvers_without_the_privilege_are_refused_and_audited() {
    let g = guarded(1, Duration::from_secs(3600)).await;
    let run = g.request(json!({})).await;

    // The requester: Cedar's no-self-approval forbids it.
    g.server
        .approve(&run, &g.requester)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // An administrator approving the run they requested themselves.
    let own = g
        .server
        .post(
            &format!("/v1/processes/{}/runs", g.process),
            &g.server.admin,
            json!({ "inputs": {} }),
        )
        .await;
    let own = own.expect(StatusCode::ACCEPTED)["id"]
        .as_str()
        .expect("id")
        .to_string();
    let r = g.server.approve(&own, &g.server.admin).await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(r.text.contains("no-self-approval"), "{}", r.text);
    // Sees the process, but holds no ApproveRun.
    let r = g.server.approve(&run, &g.executor).await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(r.text.contains("default-deny"), "{}", r.text);

    let refused = g
        .server
        .audit(&format!("run={run}&action=run.approval.refused"))
        .await;
    let by: Vec<_> = refused
        .iter()
        .map(|r| r["actor"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(by, ["rita", "ed"], "{refused:?}");
    assert!(
        refused[0]["decision"]["policy"]
            .as_str()
            .is_some_and(|p| p.contains("no-self-approval"))
    );
    let refused_own = g
        .server
        .audit(&format!("run={own}&action=run.approval.refused"))
        .await;
    assert_eq!(refused_own.len(), 1, "{refused_own:?}");

    // The code refuses self-approval on its own too, should a policy ever allow it.
    let state = g.server.state();
    let err = state.approvals.approve(&run, "rita", None).await.err();
    assert!(matches!(err, Some(ApprovalError::SelfApproval)), "{err:?}");
    let refused = g
        .server
        .audit(&format!("run={run}&action=run.approval.refused"))
        .await;
    assert_eq!(refused.len(), 3, "the code's refusal is audited too");

    g.assert_still_waiting(&run).await;
    assert_eq!(
        g.server.approval(&run, &g.requester).await["approvals"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_needing_two_approvals_waits_for_two_distinct_approvers_then_executes() {
    let g = guarded(2, Duration::from_secs(3600)).await;
    let run = g.request(json!({ "name": "Grace" })).await;

    let first = g.server.approve(&run, &g.approver1).await;
    let first = first.expect(StatusCode::OK);
    assert_eq!(first["started"], false, "{first}");
    assert_eq!(first["request"]["valid_approvals"], 1);
    // The same approver again does not make two.
    g.server
        .approve(&run, &g.approver1)
        .await
        .expect_error(StatusCode::CONFLICT, "already_approved");
    g.assert_still_waiting(&run).await;

    let second = g.server.approve(&run, &g.approver2).await;
    assert_eq!(
        second.expect(StatusCode::OK)["started"],
        true,
        "{}",
        second.text
    );
    let done = g.server.wait_for_state(&run, "succeeded").await;
    assert_eq!(done["result"], "hello, Grace", "{done}");
    assert_eq!(done["actor"], "rita");

    let trail = g.server.audit(&format!("run={run}")).await;
    assert_eq!(
        actions(&trail),
        [
            "run.awaiting-approval",
            "run.approval.granted",
            "run.approval.granted",
            "run.queued",
            "run.running",
            "run.succeeded"
        ],
        "{trail:?}"
    );
    // Once started, nothing more to approve.
    g.server
        .post(
            &format!("/v1/runs/{run}/approve"),
            &g.server.admin,
            json!({}),
        )
        .await
        .expect_error(StatusCode::CONFLICT, "not_awaiting_approval");
    // Nor can its inputs change any more.
    g.server
        .put(
            &format!("/v1/runs/{run}/inputs"),
            &g.requester,
            json!({ "inputs": { "name": "Mallory" } }),
        )
        .await
        .expect_error(StatusCode::CONFLICT, "not_awaiting_approval");
    assert_eq!(g.server.run(&run).await["inputs"]["name"], "Grace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_inputs_invalidates_approvals_and_only_fresh_ones_count() {
    let g = guarded(2, Duration::from_secs(3600)).await;
    let run = g.request(json!({ "name": "Ada" })).await;
    g.server
        .approve(&run, &g.approver1)
        .await
        .expect(StatusCode::OK);
    let before = g.server.approval(&run, &g.requester).await["binding"].clone();

    // Only the requester may change the inputs, and only to inputs the manifest accepts.
    g.server
        .put(
            &format!("/v1/runs/{run}/inputs"),
            &g.approver2,
            json!({ "inputs": { "name": "Eve" } }),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "not_requester");
    g.server
        .put(
            &format!("/v1/runs/{run}/inputs"),
            &g.requester,
            json!({ "inputs": { "times": "many" } }),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_inputs");
    let changed = g
        .server
        .put(
            &format!("/v1/runs/{run}/inputs"),
            &g.requester,
            json!({ "inputs": { "name": "Eve" } }),
        )
        .await;
    let changed = changed.expect(StatusCode::OK);
    assert_eq!(changed["inputs"]["name"], "Eve");
    assert_ne!(changed["binding"], before, "the binding follows the inputs");
    assert_eq!(changed["valid_approvals"], 0, "{changed}");
    assert_eq!(changed["approvals"][0]["valid"], false);
    assert_eq!(changed["approvals"][0]["why_not"], "invalidated");
    let invalidated = g
        .server
        .audit(&format!("run={run}&action=run.approval.invalidated"))
        .await;
    assert_eq!(invalidated.len(), 1, "{invalidated:?}");
    assert!(
        invalidated[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("alan"))
    );

    // An approver who reviewed the request before the change cannot approve the changed
    // one by accident: approving the binding they saw is refused as stale, and audited.
    g.server
        .post(
            &format!("/v1/runs/{run}/approve"),
            &g.approver2,
            json!({ "binding": before }),
        )
        .await
        .expect_error(StatusCode::CONFLICT, "stale_request");
    let stale = g
        .server
        .audit(&format!("run={run}&action=run.approval.refused"))
        .await;
    assert!(
        stale.iter().any(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("stale:"))),
        "{stale:?}"
    );

    // A second approver now makes only one valid approval (given with the binding they
    // reviewed): the run does not start.
    let r = g
        .server
        .post(
            &format!("/v1/runs/{run}/approve"),
            &g.approver2,
            json!({ "binding": changed["binding"] }),
        )
        .await;
    assert_eq!(r.expect(StatusCode::OK)["started"], false, "{}", r.text);
    assert_eq!(r.body["request"]["valid_approvals"], 1);
    g.assert_still_waiting(&run).await;

    // The first approver's fresh approval of the changed request counts.
    let r = g.server.approve(&run, &g.approver1).await;
    assert_eq!(r.expect(StatusCode::OK)["started"], true, "{}", r.text);
    let done = g.server.wait_for_state(&run, "succeeded").await;
    assert_eq!(
        done["result"], "hello, Eve",
        "the approved inputs ran: {done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_process_invalidates_approvals_of_waiting_runs() {
    let g = guarded(2, Duration::from_secs(3600)).await;
    let run = g.request(json!({})).await;
    g.server
        .approve(&run, &g.approver1)
        .await
        .expect(StatusCode::OK);
    let process = g
        .server
        .get(&format!("/v1/processes/{}", g.process), &g.server.admin)
        .await
        .expect(StatusCode::OK)
        .clone();
    // Widen the grant: one more credential.
    let body = json!({
        "name": process["name"],
        "module_digest": process["module_digest"],
        "grant": { "targets": ["db1"], "credentials": ["db-root", "domain-admin"] },
        "required_approvals": 2,
    });
    g.server
        .put(
            &format!("/v1/processes/{}", g.process),
            &g.server.admin,
            body,
        )
        .await
        .expect(StatusCode::OK);
    let request = g.server.approval(&run, &g.approver2).await;
    assert_eq!(request["valid_approvals"], 0, "{request}");
    assert_eq!(
        request["grant"]["credentials"],
        json!(["db-root", "domain-admin"])
    );
    let invalidated = g
        .server
        .audit(&format!("run={run}&action=run.approval.invalidated"))
        .await;
    assert_eq!(invalidated.len(), 1, "{invalidated:?}");
    let r = g.server.approve(&run, &g.approver2).await;
    assert_eq!(r.expect(StatusCode::OK)["started"], false, "{}", r.text);
    g.assert_still_waiting(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_approval_does_not_count() {
    let g = guarded(2, Duration::from_secs(1)).await;
    let run = g.request(json!({})).await;
    g.server
        .approve(&run, &g.approver1)
        .await
        .expect(StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = g.server.approve(&run, &g.approver2).await;
    assert_eq!(r.expect(StatusCode::OK)["started"], false, "{}", r.text);
    let request = g.server.approval(&run, &g.requester).await;
    assert_eq!(request["valid_approvals"], 1, "{request}");
    let alan = request["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["approver"] == "alan");
    assert!(alan.is_none_or(|a| a["why_not"] == "expired"), "{request}");
    g.assert_still_waiting(&run).await;
    // A fresh approval within the TTL completes it.
    let r = g.server.approve(&run, &g.approver1).await;
    assert_eq!(r.expect(StatusCode::OK)["started"], true, "{}", r.text);
    g.server.wait_for_state(&run, "succeeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_run_is_denied_and_never_executes() {
    let g = guarded(1, Duration::from_secs(3600)).await;
    let run = g.request(json!({})).await;
    let r = g
        .server
        .post(
            &format!("/v1/runs/{run}/reject"),
            &g.approver1,
            json!({ "reason": "not today" }),
        )
        .await;
    let denied = r.expect(StatusCode::OK);
    assert_eq!(denied["state"], "denied", "{denied}");
    assert!(
        denied["error"]
            .as_str()
            .is_some_and(|e| e.contains("not today"))
    );
    g.server
        .approve(&run, &g.approver2)
        .await
        .expect_error(StatusCode::CONFLICT, "not_awaiting_approval");
    let record = g.server.run(&run).await;
    assert_eq!(record["started_ms"], Value::Null, "{record}");
    let trail = g.server.audit(&format!("run={run}")).await;
    assert_eq!(
        actions(&trail),
        [
            "run.awaiting-approval",
            "run.approval.rejected",
            "run.denied"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------

/// Creates a `hello` process (no approvals) as the admin; its id.
async fn hello_process(server: &Server, name: &str) -> String {
    let digest = server.publish_as("acme", "hello").await;
    let body = json!({ "name": name, "module_digest": digest });
    let r = server.post("/v1/processes", &server.admin, body).await;
    r.expect(StatusCode::CREATED)["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn runs_by(server: &Server, process: &str, actor: &str) -> Vec<Value> {
    let r = server
        .get(&format!("/v1/runs?process={process}"), &server.admin)
        .await;
    r.expect(StatusCode::OK)
        .as_array()
        .expect("runs")
        .iter()
        .filter(|run| run["actor"] == actor)
        .cloned()
        .collect()
}

/// Polls (every 100 ms, up to [`PATIENCE`]) until `actor` has a run of `process`; the last.
async fn first_run_by(server: &Server, process: &str, actor: &str, never: &str) -> Value {
    let every = Duration::from_millis(100);
    until(PATIENCE, every, never, || async move {
        runs_by(server, process, actor)
            .await
            .pop()
            .ok_or_else(|| format!("no run by {actor} yet"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_an_ordinary_run_whose_actor_is_the_schedule() {
    let server = start(Duration::from_secs(3600)).await;
    let process = hello_process(&server, "every-second").await;
    let body = json!({ "cron": "* * * * * *", "inputs": { "name": "cron" } });
    let r = server
        .post(
            &format!("/v1/processes/{process}/schedules"),
            &server.admin,
            body,
        )
        .await;
    let schedule = r.expect(StatusCode::CREATED).clone();
    assert_eq!(schedule["catch_up"], true, "catch_up defaults to true");
    let id = schedule["id"].as_str().expect("id");
    let actor = format!("schedule:{id}");

    let run = first_run_by(&server, &process, &actor, "the schedule never fired").await;
    let run_id = run["id"].as_str().expect("run id");
    let done = server.wait_for_state(run_id, "succeeded").await;
    assert_eq!(done["result"], "hello, cron");
    let trail = server.audit(&format!("run={run_id}")).await;
    assert!(
        trail.iter().all(|r| r["actor"] == actor.as_str()),
        "{trail:?}"
    );
    assert_eq!(
        actions(&trail),
        ["run.queued", "run.running", "run.succeeded"]
    );
    let fired = server.audit("action=schedule.fired").await;
    assert!(
        fired.iter().any(|r| r["actor"] == actor.as_str()),
        "{fired:?}"
    );

    let listed = server
        .get(&format!("/v1/processes/{process}/schedules"), &server.admin)
        .await;
    assert_eq!(listed.expect(StatusCode::OK)[0]["id"], id);

    let r = server
        .delete(
            &format!("/v1/processes/{process}/schedules/{id}"),
            &server.admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    // Deleted: it fires no more (allow one firing already under way).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let count = runs_by(&server, &process, &actor).await.len();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(runs_by(&server, &process, &actor).await.len(), count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cron_expressions_and_inputs_are_refused_with_clear_codes() {
    let server = start(Duration::from_secs(3600)).await;
    let process = hello_process(&server, "scheduled").await;
    let path = format!("/v1/processes/{process}/schedules");
    for cron in ["every day", "61 * * * *", "* * *", ""] {
        let r = server
            .post(&path, &server.admin, json!({ "cron": cron }))
            .await;
        r.expect_error(StatusCode::BAD_REQUEST, "invalid_cron");
        assert!(r.text.contains("cron"), "{}", r.text);
    }
    let body = json!({ "cron": "0 3 * * *", "inputs": { "times": "many" } });
    server
        .post(&path, &server.admin, body)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_inputs");
    let listed = server.get(&path, &server.admin).await;
    assert_eq!(listed.expect(StatusCode::OK), &json!([]));
    // Only who may manage the process may schedule it.
    let plain = server.user("plain", &[]).await;
    let r = server
        .post(&path, &plain, json!({ "cron": "0 3 * * *" }))
        .await;
    assert!(
        matches!(r.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{}",
        r.text
    );
    // Nor delete one: the schedule stays.
    let made = server
        .post(&path, &server.admin, json!({ "cron": "0 3 * * *" }))
        .await;
    let id = made.expect(StatusCode::CREATED)["id"]
        .as_str()
        .expect("schedule id")
        .to_string();
    let r = server.delete(&format!("{path}/{id}"), &plain).await;
    assert!(
        matches!(r.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{}",
        r.text
    );
    let listed = server.get(&path, &server.admin).await;
    assert_eq!(
        listed.expect(StatusCode::OK).as_array().map(Vec::len),
        Some(1)
    );
}

/// A daily cron expression (6 fields, UTC) whose one occurrence is `secs` from now.
fn daily_at_in(secs: u64) -> String {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + secs;
    let day = at % 86_400;
    format!("{} {} {} * * *", day % 60, (day / 60) % 60, day / 3600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_missed_while_down_runs_once_at_start_only_with_catch_up() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let mut first = ServeChild::plain(BIN, &data, tmp.path().join("serve-1.log")).await;
    let server = first.server(&admin);
    let process = hello_process(&server, "nightly").await;
    let path = format!("/v1/processes/{process}/schedules");
    // Both fall due in 5 s, while the server is down.
    let cron = daily_at_in(5);
    let mut ids = Vec::new();
    for catch_up in [true, false] {
        let body = json!({ "cron": cron, "catch_up": catch_up, "inputs": { "name": "late" } });
        let r = server.post(&path, &admin, body).await;
        ids.push(
            r.expect(StatusCode::CREATED)["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    first.kill_9();
    tokio::time::sleep(Duration::from_secs(7)).await;

    let second = ServeChild::plain(BIN, &data, tmp.path().join("serve-2.log")).await;
    let server = second.server(&admin);
    let catching_up = format!("schedule:{}", ids[0]);
    let run = first_run_by(
        &server,
        &process,
        &catching_up,
        "the missed schedule never ran",
    )
    .await;
    let done = server
        .wait_for_state(run["id"].as_str().expect("id"), "succeeded")
        .await;
    assert_eq!(done["result"], "hello, late");
    // Give the scheduler a few more ticks: still once, and never for catch_up=false.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs_by(&server, &process, &catching_up).await.len(), 1);
    let skipping = format!("schedule:{}", ids[1]);
    assert_eq!(runs_by(&server, &process, &skipping).await.len(), 0);

    let fired = server.audit("action=schedule.fired").await;
    let fired: Vec<_> = fired
        .iter()
        .filter(|r| r["actor"] == catching_up.as_str())
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(
        fired[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("missed"))
    );
    let skipped = server.audit("action=schedule.skipped").await;
    assert!(
        skipped.iter().any(|r| r["actor"] == skipping.as_str()),
        "{skipped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_the_request_and_approves_a_run() {
    let g = guarded(1, Duration::from_secs(3600)).await;
    let run = g.request(json!({ "name": "Lin" })).await;
    let cli = |token: &str, args: &[&str]| {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &g.server.base, "--token", token]);
        let out = warden_tests::warden(BIN, &all, None).expect("warden runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, shown, err) = cli(&g.approver1, &["approvals", &run]);
    assert_eq!(code, Some(0), "{err}");
    let shown: Value = serde_json::from_str(&shown).expect("JSON request");
    assert_eq!(shown["inputs"]["name"], "Lin");
    assert_eq!(shown["capabilities"], json!(["params", "log"]));

    let (code, _, err) = cli(&g.requester, &["approve", &run]);
    assert_ne!(code, Some(0), "the requester's own approval must fail");
    assert!(err.contains("403"), "{err}");
    let (code, out, err) = cli(&g.approver1, &["approve", &run]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("queued"), "{out}");
    let done = g.server.wait_for_state(&run, "succeeded").await;
    assert_eq!(done["result"], "hello, Lin");
}
