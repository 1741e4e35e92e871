//! Credential leases end to end, with real parts: OpenSSH `sshd` on loopback, the `probe`
//! guest, sled files on disk, the HTTP API on a bound port and the `warden` binary.
//!
//! A run's lease dies with the run; a lease revoked through the API or expired refuses the
//! next use (`denied`, audited with rule `lease`) and cannot be dodged by re-acquiring; a use
//! on a target outside the run's grant and lease is refused and audited.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::api::AppState;
use warden_host::audit::{AuditFilter, AuditRecord, Decision};
use warden_host::bridge::{Bridge, RUN_END_ACTOR};
use warden_host::capabilities::Services;
use warden_host::registry::inputs::{Param, Value as ParamValue};
use warden_host::runtime::RunOutcome;
use warden_host::runtime::limits::RunLimits;
use warden_host::store::DataDir;
use warden_host::vault::lease::{LeaseDenial, LeaseStatus, LeaseStore, REVOKED_ACTION};
use warden_tests::guests;
use warden_tests::sshd::{Sshd, TestUser};

use crate::support::{Env, grant, run_spec, text_params};

/// How long a test waits for a run or a lease before failing.
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Harness: an in-process server with one sshd target `t0` and credential `pw` on it
// (also used by `redact.rs`)
// ---------------------------------------------------------------------------------------

pub(crate) struct Server {
    http: warden_tests::http::Server,
    _sshd: Sshd,
    pub(crate) user: TestUser,
}

/// The shared harness's requests, waits and state (`warden_tests::http::Server`).
impl std::ops::Deref for Server {
    type Target = warden_tests::http::Server;

    fn deref(&self) -> &Self::Target {
        &self.http
    }
}

impl Server {
    /// A server over a fresh (sled) data directory, with target `t0` (a real sshd),
    /// credential `pw` (a real user's password) and the `probe` module published.
    pub(crate) async fn start() -> (Server, String) {
        let http = warden_tests::http::Server::start_embedded()
            .await
            .with_patience(PATIENCE);
        let sshd = Sshd::start("127.0.0.1").expect("sshd");
        let user = TestUser::create("wls").expect("user");
        let server = Server {
            http,
            _sshd: sshd,
            user,
        };
        let address = format!("{}:{}", server._sshd.ip, server._sshd.port);
        let host_key = server._sshd.host_key_line.clone();
        let body = json!({ "name": "t0", "address": address, "host_key": host_key });
        server
            .admin_post("/v1/targets", body, StatusCode::CREATED)
            .await;
        let body =
            json!({ "name": "pw", "username": server.user.name, "secret": server.user.password });
        server
            .admin_post("/v1/credentials", body, StatusCode::CREATED)
            .await;
        let digest = server.publish_as("acme", "probe").await;
        (server, digest)
    }

    /// Creates a process of the probe granted `pw` on `t0`, starts it with `inputs`, and
    /// returns the run id.
    pub(crate) async fn start_probe(&self, digest: &str, name: &str, inputs: Value) -> String {
        let body = json!({
            "name": name,
            "module_digest": digest,
            "grant": { "credentials": ["pw"], "targets": ["t0"], "commands": ["**"] },
        });
        let id = self.process(body).await;
        self.start_run(&id, &self.admin, inputs).await
    }

    /// Polls until run `id` has ended (is neither queued nor running); returns its record.
    pub(crate) async fn wait_ended(&self, id: &str) -> Value {
        self.wait_while(id, &["queued", "running"]).await
    }

    /// The run's leases as the API lists them.
    async fn leases(&self, run: &str) -> Vec<Value> {
        let r = self.admin_get(&format!("/v1/runs/{run}/leases")).await;
        r.body.as_array().expect("lease list").clone()
    }

    /// The audit records of one run, in order.
    fn records(&self, run: &str) -> Vec<AuditRecord> {
        let filter = AuditFilter {
            run_id: Some(run.into()),
            ..AuditFilter::default()
        };
        let records = self.state().audit.query(&filter).expect("audit query");
        // One record per call: how it ended (the intent written before it acted is left out).
        records
            .into_iter()
            .filter(|r| !crate::support::is_intent(r))
            .collect()
    }
}

fn of_action<'a>(records: &'a [AuditRecord], action: &str) -> Vec<&'a AuditRecord> {
    records
        .iter()
        .filter(|r| r.entry.action == action)
        .collect()
}

fn detail(record: &AuditRecord) -> &str {
    crate::support::detail_of(record)
}

/// The policy (rule) a denied record names; `None` for an allowed one.
fn denied_by(record: &AuditRecord) -> Option<&str> {
    match &record.entry.decision {
        Decision::Allowed => None,
        Decision::Denied { policy, .. } => Some(policy.as_deref().unwrap_or("")),
    }
}

fn result_json(run: &Value) -> Value {
    let text = run["result"]
        .as_str()
        .unwrap_or_else(|| panic!("no result: {run}"));
    serde_json::from_str(text).expect("result is JSON")
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_runs_lease_is_revoked_audited_and_refused_afterwards() {
    let (server, digest) = Server::start().await;
    let inputs = json!({ "mode": "exec", "credential": "pw", "target": "t0", "command": "id -un" });
    let run_id = server.start_probe(&digest, "whoami", inputs).await;
    let run = server.wait_ended(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        result_json(&run)["stdout"],
        format!("{}\n", server.user.name)
    );

    let leases = server.leases(&run_id).await;
    assert_eq!(leases.len(), 1, "{leases:?}");
    let lease = &leases[0];
    let lease_id = lease["id"].as_str().expect("lease id");
    assert_eq!(lease["status"], "revoked", "{lease}");
    assert_eq!(lease["credential"], "pw");
    assert_eq!(lease["targets"], json!(["t0"]));
    assert_eq!(lease["revoked"]["by"], RUN_END_ACTOR);
    assert_eq!(lease["revoked"]["reason"], "run ended: succeeded");
    let expiry = lease["expires_ms"].as_u64().expect("expiry")
        - lease["issued_ms"].as_u64().expect("issued");
    let wall = RunLimits::default().wall_time.as_millis() as u64;
    assert!(expiry <= wall, "lease outlives the run's deadline: {lease}");
    let one = server
        .get(&format!("/v1/leases/{lease_id}"), &server.admin)
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    assert_eq!(one.body, *lease);
    assert!(
        !one.text.contains(&server.user.password),
        "a secret in the API"
    );

    // Issued, used and revoked, each audited: the lease id is in the acquire's and the
    // exec's own (single) records, and the revocation has a record of its own.
    let records = server.records(&run_id);
    let acquires = of_action(&records, "credentials.acquire");
    assert_eq!(acquires.len(), 1);
    assert_eq!(detail(acquires[0]), format!("lease {lease_id} issued"));
    let execs = of_action(&records, "ssh.exec");
    assert_eq!(execs.len(), 1);
    assert!(
        detail(execs[0]).ends_with(&format!("; lease {lease_id}")),
        "{}",
        detail(execs[0])
    );
    let revoked = of_action(&records, REVOKED_ACTION);
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].entry.actor, RUN_END_ACTOR);
    assert!(detail(revoked[0]).contains(lease_id));
    let end = records
        .iter()
        .position(|r| r.entry.action == "run.succeeded")
        .expect("run.succeeded");
    let revoked_at = records
        .iter()
        .position(|r| r.entry.action == REVOKED_ACTION)
        .expect("revoked");
    assert!(revoked_at < end, "the lease outlived the run's end record");

    // A use after the run ended is refused.
    let leases = &server.state().leases;
    assert!(matches!(
        leases.check(lease_id, &run_id, "pw", "t0"),
        Err(LeaseDenial::Revoked { .. })
    ));
    // Revoking again is a conflict, and changes nothing.
    let again = server
        .request(
            reqwest::Method::POST,
            &format!("/v1/leases/{lease_id}/revoke"),
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(of_action(&server.records(&run_id), REVOKED_ACTION).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_revoked_through_the_api_refuses_the_next_use_and_a_reacquire() {
    let (server, digest) = Server::start().await;
    // At most 300 commands of 0.2 s: the run ends within a minute even if revocation fails.
    let inputs = json!({
        "mode": "exec-until-denied", "credential": "pw", "target": "t0",
        "command": "sleep 0.2", "n": 300,
    });
    let run_id = server.start_probe(&digest, "slow", inputs).await;

    // Wait until the run holds its lease and has used it once.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let lease_id = loop {
        let used = of_action(&server.records(&run_id), "ssh.exec")
            .iter()
            .any(|r| denied_by(r).is_none());
        let leases = server.leases(&run_id).await;
        if used && let Some(lease) = leases.first() {
            assert_eq!(lease["status"], "active", "{lease}");
            break lease["id"].as_str().expect("lease id").to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never used its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Someone who may not see the run learns nothing and revokes nothing.
    server
        .admin_post(
            "/v1/users",
            json!({ "name": "mallory", "roles": [] }),
            StatusCode::CREATED,
        )
        .await;
    let enrollment = server
        .admin_post("/v1/users/mallory/tokens", json!({}), StatusCode::CREATED)
        .await["token"]
        .as_str()
        .expect("token")
        .to_string();
    let mallory = server.redeem("mallory", &enrollment).await;
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/leases/{lease_id}")),
        (reqwest::Method::GET, format!("/v1/runs/{run_id}/leases")),
        (
            reqwest::Method::POST,
            format!("/v1/leases/{lease_id}/revoke"),
        ),
    ] {
        let r = server.request(method, &path, Some(&mallory), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
    }
    assert_eq!(server.leases(&run_id).await[0]["status"], "active");

    let revoked = server
        .admin_post(
            &format!("/v1/leases/{lease_id}/revoke"),
            json!({ "reason": "incident 7" }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    assert_eq!(revoked["revoked"]["by"], "admin");

    let run = server.wait_ended(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let result = result_json(&run);
    assert_eq!(result["failed"]["error"], "denied", "{result}");
    let message = result["failed"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("lease: ") && message.contains("incident 7"),
        "{message}"
    );
    assert_eq!(result["reacquire"]["error"], "denied", "{result}");
    let ok = result["ok"].as_u64().expect("ok count");
    assert!((1..300).contains(&ok), "{result}");

    // Every exec before the revocation was allowed, the one after it denied by rule `lease`,
    // each with exactly one record; the re-acquire is denied by `lease` too.
    let records = server.records(&run_id);
    let execs = of_action(&records, "ssh.exec");
    assert_eq!(execs.len() as u64, ok + 1, "one record per call");
    assert!(
        execs[..execs.len() - 1]
            .iter()
            .all(|r| denied_by(r).is_none())
    );
    let last = execs.last().expect("denied exec");
    assert_eq!(denied_by(last), Some("lease"));
    assert!(detail(last).contains(&lease_id));
    let acquires = of_action(&records, "credentials.acquire");
    assert_eq!(acquires.len(), 2);
    assert_eq!(denied_by(acquires[1]), Some("lease"));
    // The admin's revocation is the only one: the run's end found nothing left to revoke.
    let revocations = of_action(&records, REVOKED_ACTION);
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0].entry.actor, "admin");
    assert!(detail(revocations[0]).contains("incident 7"));
    assert_eq!(server.leases(&run_id).await.len(), 1);
}

/// An [`Env`] whose leases last at most `ttl`, with target `t0` (a real sshd) and
/// credential `pw` on it.
struct ShortLeases {
    env: Env,
    bridge: Bridge,
    _sshds: Vec<Sshd>,
    _user: TestUser,
}

impl ShortLeases {
    fn new(targets: usize, ttl: Duration) -> ShortLeases {
        let env = Env::new();
        let sshds = Sshd::fleet(targets).expect("sshd");
        for (i, sshd) in sshds.iter().enumerate() {
            let target = crate::support::target_of(&format!("t{i}"), sshd);
            env.targets.add(target).expect("add target");
        }
        let user = TestUser::create("wle").expect("user");
        env.add_password("pw", &user.name, &user.password);
        let services = env.bridge.services().clone();
        let leases = match &services.server {
            warden_host::capabilities::ServerSide::Local(local) => {
                local.leases.clone().with_max_ttl(ttl)
            }
            warden_host::capabilities::ServerSide::Remote(_) => unreachable!("a local env"),
        };
        let services = Services::local(
            env.audit.clone(),
            env.vault.clone(),
            services.targets.clone(),
            services.ssh.clone(),
            leases.clone(),
        );
        let bridge = Bridge::new(env.bridge.runtime().clone(), services);
        ShortLeases {
            env,
            bridge,
            _sshds: sshds,
            _user: user,
        }
    }

    fn leases(&self) -> &LeaseStore {
        match &self.bridge.services().server {
            warden_host::capabilities::ServerSide::Local(local) => &local.leases,
            warden_host::capabilities::ServerSide::Remote(_) => unreachable!("a local env"),
        }
    }
}

/// The probe's `exec-until-denied` of `sleep 0.2` as `pw` on `t0`, at most `n` times.
fn exec_until_denied(n: i64) -> Vec<Param> {
    let mut params = text_params(&[
        ("mode", "exec-until-denied"),
        ("credential", "pw"),
        ("target", "t0"),
        ("command", "sleep 0.2"),
    ]);
    params.push(Param {
        name: "n".into(),
        value: ParamValue::Integer(n),
    });
    params
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_refused_and_renewed_only_by_a_new_acquire() {
    let short = ShortLeases::new(1, Duration::from_millis(1500));
    let probe = short.env.prepare("probe");
    let params = exec_until_denied(100);
    let spec = run_spec(
        "probe",
        probe,
        params,
        grant(&["pw"], &["t0"]),
        RunLimits::default(),
    );
    let run_id = spec.identity.run_id.clone();
    let report = short.bridge.execute(spec).await.expect("run executes");
    let RunOutcome::Succeeded { result } = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    let result: Value = serde_json::from_str(result).expect("json");
    assert_eq!(result["failed"]["error"], "denied", "{result}");
    let message = result["failed"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("lease: ") && message.ends_with("has expired"),
        "{message}"
    );
    let ok = result["ok"].as_u64().expect("ok");
    // 1.5 s of 0.2 s commands: a few succeed, nowhere near all 100.
    assert!((1..20).contains(&ok), "{result}");
    assert_eq!(
        result["reacquire"], "ok",
        "an expired lease is renewed by acquiring again"
    );

    let records = short.env.host_call_records(&run_id);
    let execs = of_action(&records, "ssh.exec");
    assert_eq!(execs.len() as u64, ok + 1);
    assert_eq!(denied_by(execs.last().expect("last")), Some("lease"));
    let leases = short.leases().list_for_run(&run_id).expect("list");
    assert_eq!(leases.len(), 2, "the re-acquire issued a second lease");
    let acquires = of_action(&records, "credentials.acquire");
    assert_eq!(
        detail(acquires[1]),
        format!("lease {} issued", leases[1].id)
    );
    for lease in &leases {
        assert!(lease.expires_ms <= lease.issued_ms + 1500, "{lease:?}");
        assert_eq!(lease.status(), LeaseStatus::Revoked, "the run ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_use_on_a_target_outside_the_grant_and_lease_is_refused_and_audited() {
    let short = ShortLeases::new(2, Duration::from_secs(600));
    let probe = short.env.prepare("probe");
    let mut params = text_params(&[
        ("mode", "exec-many"),
        ("credential", "pw"),
        ("command", "true"),
    ]);
    params.push(Param {
        name: "targets".into(),
        value: ParamValue::TextList(vec!["t0".into(), "t1".into()]),
    });
    let limits = RunLimits {
        wall_time: Duration::from_secs(30),
        ..RunLimits::default()
    };
    let (run_id, report) = short
        .env
        .run(&probe, params, grant(&["pw"], &["t0"]), limits)
        .await;
    let RunOutcome::Succeeded { result } = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    let result: Value = serde_json::from_str(result).expect("json");
    assert_eq!(result[0]["exit"], 0, "{result}");
    assert_eq!(result[1]["error"], "denied", "{result}");

    let leases = short.leases().list_for_run(&run_id).expect("list");
    assert_eq!(leases.len(), 1);
    let lease = &leases[0];
    assert_eq!(lease.targets, BTreeSet::from(["t0".to_string()]));
    assert!(
        lease.expires_ms <= lease.issued_ms + 30_000,
        "bounded by the 30 s run: {lease:?}"
    );

    let records = short.env.host_call_records(&run_id);
    let fanned = of_action(&records, "ssh.exec-many");
    assert_eq!(fanned.len(), 2, "one record per target");
    let on = |t: &str| {
        *fanned
            .iter()
            .find(|r| r.entry.target.as_deref() == Some(t))
            .expect("record for target")
    };
    assert_eq!(denied_by(on("t0")), None);
    assert!(detail(on("t0")).ends_with(&format!("; lease {}", lease.id)));
    // The grant refuses first: it is checked before the lease, whose targets are the
    // grant's (the lease's own target check is covered by the store's unit tests).
    assert_eq!(denied_by(on("t1")), Some("grant.targets"));
    assert_eq!(on("t1").entry.credential.as_deref(), Some("pw"));
}

#[test]
fn warden_exec_runs_get_leases_revoked_when_they_end() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let user = TestUser::create("wlc").expect("user");
    {
        let dir = DataDir::init(&data).expect("init");
        let vault = warden_host::vault::Vault::open(&dir.db, dir.master_key).expect("vault");
        let secret = warden_host::vault::Secret::from_bytes(user.password.as_bytes().to_vec());
        let kind = warden_host::vault::CredentialKind::Password;
        vault
            .add("pw", &user.name, kind, secret)
            .expect("credential");
        let targets = warden_host::targets::TargetStore::open(&dir.db).expect("targets");
        let target = crate::support::target_of("t0", &sshd);
        targets.add(target).expect("target");
    }
    let probe = guests::component("probe").to_string_lossy().into_owned();
    let manifest = guests::manifest("probe").to_string_lossy().into_owned();
    let data_arg = data.to_string_lossy().into_owned();
    let args = [
        "exec",
        &probe,
        "--manifest",
        &manifest,
        "--data",
        &data_arg,
        "--param",
        "mode=exec",
        "--param",
        "credential=pw",
        "--param",
        "target=t0",
        "--param",
        "command=true",
        "--allow-credential",
        "pw",
        "--allow-target",
        "t0",
        "--allow-command",
        "true",
    ];
    let out = warden_tests::warden(env!("CARGO_BIN_EXE_warden-e2e"), &args, None).expect("exec");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = DataDir::open(&data).expect("reopen");
    let audit = warden_host::audit::AuditLog::open(&dir.db, dir.server_key).expect("audit");
    let all = audit.query(&AuditFilter::default()).expect("query");
    let acquire = all
        .iter()
        .find(|r| r.entry.action == "credentials.acquire" && !crate::support::is_intent(r))
        .expect("acquire audited");
    let lease_id = detail(acquire)
        .strip_prefix("lease ")
        .and_then(|d| d.strip_suffix(" issued"))
        .expect("lease id in the acquire's record")
        .to_string();
    let leases = LeaseStore::open(&dir.db, audit.clone()).expect("leases");
    let lease = leases.get(&lease_id).expect("read").expect("lease stored");
    assert_eq!(lease.status(), LeaseStatus::Revoked);
    assert_eq!(lease.revoked.expect("revocation").by, RUN_END_ACTOR);
    assert!(
        all.iter()
            .any(|r| r.entry.action == REVOKED_ACTION && detail(r).contains(&lease_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_start_revokes_every_lease_a_dead_process_left_active() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let lease_id = {
        let dir = DataDir::init(&data).expect("init");
        let audit =
            warden_host::audit::AuditLog::open(&dir.db, dir.server_key.clone()).expect("audit");
        let leases = LeaseStore::open(&dir.db, audit).expect("leases");
        let targets = BTreeSet::from(["t0".to_string()]);
        let lease = leases
            .issue(warden_host::vault::lease::NewLease {
                run_id: "run-of-a-crashed-server",
                actor: "alice",
                credential: "pw",
                targets: &targets,
                deadline_ms: warden_host::vault::lease::now_ms() + 3_600_000,
            })
            .await
            .expect("issue");
        assert_eq!(lease.status(), LeaseStatus::Active);
        lease.id
    };
    // The audit writer thread lets go of sled's lock shortly after its last handle.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let state = loop {
        match DataDir::open(&data) {
            Ok(dir) => {
                break AppState::open(dir, &warden_tests::repo_root().join("policies"))
                    .await
                    .expect("app state");
            }
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "cannot reopen: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lease = state.leases.get(&lease_id).expect("read").expect("kept");
    let revocation = lease.revoked.expect("revoked at start");
    assert_eq!(revocation.by, warden_host::runs::RECOVERY_ACTOR);
    assert_eq!(revocation.reason, "server restarted");
    let filter = AuditFilter {
        action: Some(REVOKED_ACTION.into()),
        ..AuditFilter::default()
    };
    let records = state.audit.query(&filter).expect("query");
    assert_eq!(records.len(), 1);
    assert!(detail(&records[0]).contains(&lease_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_its_wall_time_has_its_lease_bounded_by_it_and_revoked() {
    let short = ShortLeases::new(1, Duration::from_secs(600));
    let probe = short.env.prepare("probe");
    let params = exec_until_denied(200);
    let limits = RunLimits {
        wall_time: Duration::from_secs(2),
        ..RunLimits::default()
    };
    let (run_id, report) = short
        .env
        .run(&probe, params, grant(&["pw"], &["t0"]), limits)
        .await;
    assert!(
        matches!(report.outcome, RunOutcome::Stopped { .. }),
        "{:?}",
        report.outcome
    );
    let leases = short.leases().list_for_run(&run_id).expect("list");
    assert_eq!(leases.len(), 1);
    let lease = &leases[0];
    assert!(
        lease.expires_ms <= lease.issued_ms + 2000,
        "outlives the deadline: {lease:?}"
    );
    let revocation = lease
        .revoked
        .as_ref()
        .expect("revoked when the run was killed");
    assert_eq!(revocation.reason, "run ended: stopped");
    let all = short
        .env
        .audit
        .query(&AuditFilter {
            run_id: Some(run_id.clone()),
            ..AuditFilter::default()
        })
        .expect("query");
    assert_eq!(of_action(&all, REVOKED_ACTION).len(), 1);
}
