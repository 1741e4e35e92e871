//! Two `warden serve` processes over one real PostgreSQL database (the throwaway cluster
//! `.ci/postgres` starts): one API through either server, each run executed once, runs of a
//! server killed with SIGKILL ended `interrupted` by the other, nothing acknowledged lost, and
//! one audit chain that verifies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::store::{DataDir, DatabaseLocation};
use warden_host::users::UserStore;
use warden_tests::http::{ServeChild, Server, Transport, bootstrap_admin, new_key};

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// The built-in role that may do everything this test needs.
const ADMIN_ROLE: &str = "privileged-administrator";

/// How long a killed server's heartbeat may be missing before the other ends its runs.
const DEAD_AFTER_SECS: &str = "1";

/// Two data directories (the same keys) over one fresh database, and the admin's token.
struct Pair {
    tmp: TempDir,
    url: String,
    admin: String,
}

impl Pair {
    fn new() -> Pair {
        let tmp = TempDir::new().expect("temp dir");
        let url = warden_tests::postgres::fresh_database();
        let first = tmp.path().join("a");
        let location = DatabaseLocation::Postgres(url.clone());
        let dir = DataDir::init_at(&first, &DataDir::default_key_source(&first), &location)
            .expect("init over postgres");
        let admin = bootstrap_admin(&UserStore::open(&dir.db).expect("users"));
        drop(dir);
        copy_keys(&first, &tmp.path().join("b"));
        Pair { tmp, url, admin }
    }

    fn data(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    async fn serve(&self, name: &str, attempt: usize) -> (ServeChild, Server) {
        let log = self.tmp.path().join(format!("serve-{name}-{attempt}.log"));
        let args = [
            "--database",
            &self.url,
            "--server-dead-after-secs",
            DEAD_AFTER_SECS,
        ];
        let process = ServeChild::start(BIN, &self.data(name), Transport::Plain, &args, log).await;
        let server = process.server(&self.admin);
        (process, server)
    }
}

/// The second server's data directory: the same keys (as an operator copies them), no state.
fn copy_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for name in ["master.key", "server.key", "database"] {
        std::fs::copy(from.join(name), to.join(name)).expect("copy key");
    }
}

/// A process of the probe on `server`; its id.
async fn probe_process(server: &Server) -> String {
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("probe", &key).await;
    let r = server.create_process(&server.admin, "probe", &digest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().expect("process id").to_string()
}

async fn state_of(server: &Server, run: &str) -> String {
    let r = server.get(&format!("/v1/runs/{run}"), &server.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["state"].as_str().unwrap_or_default().to_string()
}

/// Polls `run` through `server` until it is in `want`, for at most 20 s.
async fn wait_for(server: &Server, run: &str, want: &str) {
    for _ in 0..400 {
        if state_of(server, run).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "run {run} never became {want}: {}",
        state_of(server, run).await
    );
}

async fn verify_chain(server: &Server) -> u64 {
    let r = server.get("/v1/audit/verify", &server.admin).await;
    assert_eq!(r.body["ok"], true, "audit chain broken: {}", r.text);
    r.body["count"].as_u64().expect("count")
}

fn actions(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r["action"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_through_one_server_is_read_streamed_and_cancelled_through_the_other() {
    let pair = Pair::new();
    let (_a, a) = pair.serve("a", 0).await;
    let (_b, b) = pair.serve("b", 0).await;
    let process = probe_process(&a).await;

    // Read and streamed through B while A executes it.
    let run = a
        .start_run(&process, &a.admin, json!({ "mode": "sleep", "n": 600 }))
        .await;
    assert!(["queued", "running"].contains(&state_of(&b, &run).await.as_str()));
    let events = b
        .events_until_state(&format!("/v1/runs/{run}/events"), &b.admin)
        .await;
    let (kind, data) = events.last().expect("a state event");
    assert_eq!(kind, "state");
    let end: Value = serde_json::from_str(data).expect("state json");
    assert_eq!(end["state"], "succeeded", "{data}");
    assert_eq!(end["result"], "slept 600 ms");

    // Cancelled through B while it runs on A: A stops it.
    let run = a
        .start_run(&process, &a.admin, json!({ "mode": "loop" }))
        .await;
    wait_for(&a, &run, "running").await;
    let r = b
        .post(&format!("/v1/runs/{run}/cancel"), &b.admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    wait_for(&b, &run, "cancelled").await;
    let records = a.audit(&format!("run={run}")).await;
    let seen = actions(&records);
    assert_eq!(
        seen.iter().filter(|a| *a == "run.running").count(),
        1,
        "executed once: {seen:?}"
    );

    // Users, tokens and revocations are one: a user made through B signs in at A at once,
    // and a token revoked through A is refused by B at once.
    let token = b.user("carol", &[ADMIN_ROLE]).await;
    assert_eq!(a.get("/v1/processes", &token).await.status, StatusCode::OK);
    let r = a.get("/v1/users/carol/tokens", &a.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.body[0]["id"].as_str().expect("token id").to_string();
    let r = a
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/tokens/{id}"),
            Some(&a.admin),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(
        b.get("/v1/processes", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    verify_chain(&a).await;
}

/// SIGKILL of the server holding runs, 20 times, with run starts arriving at both servers
/// meanwhile: every acknowledged run is stored and ends (interrupted if it was running on the
/// killed server), none runs twice, every acknowledged run's records are in the one chain,
/// and the chain verifies after each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_server_mid_run_twenty_times_loses_nothing_acknowledged() {
    let pair = Pair::new();
    let (_b, b) = pair.serve("b", 0).await;
    let process = probe_process(&b).await;
    let mut acknowledged: Vec<(String, &'static str)> = Vec::new();
    for round in 0..20 {
        let (mut a_process, a) = pair.serve("a", round).await;
        // A burst of starts at both servers; A's hold long sleeps so the kill lands mid-run.
        let starts = (0..6).map(|i| {
            let (server, name, n) = if i % 2 == 0 {
                (&a, "a", 5_000)
            } else {
                (&b, "b", 50)
            };
            let process = process.clone();
            async move {
                let r = server
                    .post(
                        &format!("/v1/processes/{process}/runs"),
                        &server.admin,
                        json!({ "inputs": { "mode": "sleep", "n": n } }),
                    )
                    .await;
                (r, name)
            }
        });
        let mut from_a = Vec::new();
        for (r, name) in futures::future::join_all(starts).await {
            // Only an acknowledged start counts; a refusal must have left no run.
            if r.status == StatusCode::ACCEPTED {
                let id = r.body["id"].as_str().expect("run id").to_string();
                if name == "a" {
                    from_a.push(id.clone());
                }
                acknowledged.push((id, name));
            }
        }
        assert!(!from_a.is_empty(), "round {round}: A acknowledged no run");
        wait_for(&a, &from_a[0], "running").await;
        a_process.kill_9();
        for id in &from_a {
            wait_for(&b, id, "interrupted").await;
        }
        let count = verify_chain(&b).await;
        assert!(count > 0);
    }
    for (id, by) in &acknowledged {
        let r = b.get(&format!("/v1/runs/{id}"), &b.admin).await;
        assert_eq!(r.status, StatusCode::OK, "acknowledged run {id} lost");
        let state = r.body["state"].as_str().unwrap_or_default().to_string();
        if *by == "a" {
            assert_eq!(state, "interrupted", "run {id}");
        } else {
            // B's short runs end on their own (B is never killed).
            if !["succeeded"].contains(&state.as_str()) {
                wait_for(&b, id, "succeeded").await;
            }
        }
        let seen = actions(&b.audit(&format!("run={id}")).await);
        assert!(
            seen.iter().any(|a| a == "run.queued"),
            "creation record of {id} lost: {seen:?}"
        );
        assert!(
            seen.iter().filter(|a| *a == "run.running").count() <= 1,
            "run {id} executed twice: {seen:?}"
        );
    }
    verify_chain(&b).await;
}

/// A server started against a database whose schema is newer than it knows refuses to start
/// with a clear error; an unreachable database is a clear error too, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_or_a_newer_schema_stops_the_server_with_a_clear_error() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("postgres://warden@127.0.0.1:{closed}/warden");
    let out = std::process::Command::new(BIN)
        .args(["init", "--data"])
        .arg(&data)
        .args(["--database", &url])
        .env_remove("WARDEN_DATA")
        .output()
        .expect("warden init runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unavailable"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let pair = Pair::new();
    warden_tests::postgres::set_schema_version(&pair.url, 999);
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(pair.data("a"))
        .args(["--database", &pair.url])
        .env_remove("WARDEN_DATA")
        .output()
        .expect("warden serve runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("newer"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// An outage of the database while a server runs: the requests it hits answer 503
/// `database-unavailable` with `Retry-After`, nothing of them is written, the audit log is not
/// closed for good, and once the database is back the same request succeeds and the chain
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_writes_nothing_and_service_resumes() {
    let url = warden_tests::postgres::fresh_database();
    let server = Server::start_at(
        &warden_host::api::ServerLimits::default(),
        &DatabaseLocation::Postgres(url.clone()),
    )
    .await;
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("probe", &key).await;
    let before = verify_chain(&server).await;

    warden_tests::postgres::cut_off_database(&url);
    let create = || server.create_process(&server.admin, "during-outage", &digest);
    let r = create().await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.code(), "database-unavailable", "{}", r.text);
    assert!(r.headers.get("retry-after").is_some(), "{:?}", r.headers);
    assert!(
        !r.text.contains(&url),
        "the database URL leaked: {}",
        r.text
    );
    warden_tests::postgres::restore_database(&url);

    // Nothing half-written: the process does not exist, the name is free.
    let r = server.get("/v1/processes", &server.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains("during-outage"), "{}", r.text);
    let r = create().await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let process = r.body["id"].as_str().expect("id").to_string();
    // The audit log kept working: a run is recorded and the chain verifies.
    let run = server
        .start_run(&process, &server.admin, json!({ "mode": "sleep", "n": 1 }))
        .await;
    let end = server.wait_for_state_or_end(&run).await;
    assert_eq!(end["state"], "succeeded", "{end}");
    assert!(verify_chain(&server).await > before);
}

/// Two servers' schedulers over one database tick at the same instant, ten slots in a row:
/// each slot starts exactly one run (the firing is a compare-and-swap on the schedule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_slot_due_on_two_servers_fires_once() {
    use warden_host::api::AppState;
    use warden_host::runs::NewProcess;
    use warden_host::runs::schedule::NewSchedule;

    let pair = Pair::new();
    let open = |name: &str| {
        let root = pair.data(name);
        let location = DatabaseLocation::Postgres(pair.url.clone());
        DataDir::open_at(&root, &DataDir::default_key_source(&root), &location).expect("open")
    };
    let policies = warden_tests::repo_root().join("policies");
    let a = AppState::open(open("a"), &policies)
        .await
        .expect("server a");
    let b = AppState::open(open("b"), &policies)
        .await
        .expect("server b");

    let key = new_key();
    a.modules
        .trust_publisher("acme", &key.verifying_key())
        .expect("trust");
    let manifest = warden_tests::http::manifest_text("probe");
    let signed = warden_tests::http::signed("probe", &manifest, &key);
    let verified = a.modules.verify(&signed).expect("verify");
    let module = a.modules.store(&verified, &signed, "admin").expect("store");
    let process = a
        .processes
        .create(NewProcess {
            name: "tick".into(),
            description: String::new(),
            owner: "admin".into(),
            module_digest: module.digest.clone(),
            module: format!("{}@{}", module.name, module.version),
            grant: Default::default(),
            default_inputs: Default::default(),
            shared_users: Default::default(),
            shared_roles: Default::default(),
            required_approvals: 0,
            retry_on_lost: false,
            limits: Default::default(),
            workflow: None,
        })
        .expect("process");
    let schedule = a
        .schedules
        .create(
            &process.id,
            NewSchedule {
                cron: "* * * * * *".into(),
                inputs: [("mode".to_string(), json!("echo"))].into(),
                catch_up: true,
            },
            "admin",
        )
        .await
        .expect("schedule");
    let (scheduler_a, scheduler_b) = (a.scheduler(), b.scheduler());
    let mut now = schedule.created_ms + 1_000;
    for slot in 0..10 {
        let (from_a, from_b) = tokio::join!(scheduler_a.tick(now), scheduler_b.tick(now));
        assert_eq!(
            from_a.len() + from_b.len(),
            1,
            "slot {slot}: {from_a:?} {from_b:?}"
        );
        now += 1_000;
    }
    let fired = a.audit.query(&warden_host::audit::AuditFilter {
        action: Some("schedule.fired".into()),
        ..Default::default()
    });
    assert_eq!(fired.expect("audit").len(), 10);
    a.audit.verify().expect("one chain");
}
