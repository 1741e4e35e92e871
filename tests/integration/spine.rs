//! The host-call spine against a real sshd: every acting call has a durable intent record
//! before it acts and an outcome record after — also when the run is cancelled or reaches its
//! wall time mid-command, in which case the remote command is signalled, not left running —
//! `exec-many` goes the same way, and the module's manifest narrows what its grant allows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_host::audit::{AuditRecord, Decision};
use warden_host::capabilities::grant::Grant;
use warden_host::registry::manifest::Requests;
use warden_host::runtime::limits::{LimitExceeded, RunLimits};
use warden_host::runtime::{RunControl, RunOutcome, RunStop};

use crate::support::{Env, grant, run_spec, target_of, text_params};

/// A command that runs long and that `pgrep -f` finds by a marker no other test uses.
fn long_sleep() -> String {
    format!("sleep 30.{}", rand_digits())
}

fn rand_digits() -> u32 {
    100_000 + (uuid::Uuid::new_v4().as_u128() % 800_000) as u32
}

/// The probe's `exec` of `command` on `t0` with credential `pw`.
fn exec_params(command: &str) -> Vec<warden_host::registry::inputs::Param> {
    text_params(&[
        ("mode", "exec"),
        ("credential", "pw"),
        ("target", "t0"),
        ("command", command),
    ])
}

/// The probe's `exec-many` of `command` on `targets` with credential `pw`.
fn exec_many_params(command: &str, targets: &[&str]) -> Vec<warden_host::registry::inputs::Param> {
    let mut params = text_params(&[
        ("mode", "exec-many"),
        ("credential", "pw"),
        ("command", command),
    ]);
    params.push(warden_host::registry::inputs::Param {
        name: "targets".into(),
        value: warden_host::registry::inputs::Value::TextList(
            targets.iter().map(|t| t.to_string()).collect(),
        ),
    });
    params
}

/// True while a process whose command line is exactly `command` runs on this machine (the
/// target's sshd is on loopback). Anchored, so a host process that merely names the command
/// in its own arguments does not count.
fn running(command: &str) -> bool {
    let pattern = format!("^{}$", command.replace('.', "\\."));
    std::process::Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Waits (bounded) until `marker` is no longer running; true if it stopped.
async fn stops(marker: &str) -> bool {
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        if !running(marker) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The run's records of `action`, intents included, in order.
fn records(env: &Env, run_id: &str, action: &str) -> Vec<AuditRecord> {
    let filter = warden_host::audit::AuditFilter {
        run_id: Some(run_id.into()),
        action: Some(action.into()),
        ..Default::default()
    };
    env.audit.query(&filter).expect("query")
}

/// Asserts `records` is exactly one intent followed by one outcome that names it; returns
/// the outcome.
fn intent_then_outcome(records: &[AuditRecord]) -> AuditRecord {
    assert_eq!(records.len(), 2, "intent and outcome: {records:#?}");
    let (intent, outcome) = (&records[0], &records[1]);
    assert_eq!(intent.entry.outcome, "intent", "{intent:#?}");
    assert_eq!(intent.entry.decision, Decision::Allowed);
    assert!(intent.seq < outcome.seq);
    assert_ne!(outcome.entry.outcome, "intent");
    let named = format!("intent #{}", intent.seq);
    assert!(
        outcome
            .entry
            .detail
            .as_deref()
            .unwrap_or("")
            .contains(&named),
        "outcome names its intent: {outcome:#?}"
    );
    outcome.clone()
}

/// Waits (bounded) until the run's `ssh.exec` intent is durable and its `command` runs on
/// the target, i.e. the call is acting.
async fn until_acting(env: &Env, run_id: &str, command: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let intent = records(env, run_id, "ssh.exec")
            .iter()
            .any(|r| r.entry.outcome == "intent");
        if intent && running(command) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the run never started its command");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_cancelled_mid_command_records_the_outcome_and_signals_the_command() {
    let (env, _sshd, _user) = Env::with_target();
    let probe = env.prepare("probe");
    let command = long_sleep();
    let params = exec_params(&command);
    let control = RunControl::new();
    let run_id = uuid::Uuid::new_v4().to_string();
    let run = env.run_controlled(
        &probe,
        params,
        grant(&["pw"], &["t0"]),
        RunLimits::default(),
        Arc::clone(&control),
        &run_id,
    );
    let watcher = async {
        until_acting(&env, &run_id, &command).await;
        control.cancel();
    };
    let (report, ()) = tokio::join!(run, watcher);
    assert_eq!(
        report.outcome,
        RunOutcome::Stopped {
            reason: RunStop::Cancelled
        }
    );
    let outcome = intent_then_outcome(&records(&env, &run_id, "ssh.exec"));
    assert!(
        outcome.entry.outcome.starts_with("unavailable"),
        "the outcome says the call was stopped: {outcome:#?}"
    );
    assert!(stops(&command).await, "the remote command was signalled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_at_its_wall_time_mid_command_records_the_outcome_and_signals_the_command() {
    let (env, _sshd, _user) = Env::with_target();
    let probe = env.prepare("probe");
    let command = long_sleep();
    let params = exec_params(&command);
    let limits = RunLimits {
        wall_time: Duration::from_secs(3),
        ..RunLimits::default()
    };
    let started = Instant::now();
    let (run_id, report) = env
        .run(&probe, params, grant(&["pw"], &["t0"]), limits)
        .await;
    assert!(
        matches!(
            report.outcome,
            RunOutcome::Stopped {
                reason: RunStop::Limit(LimitExceeded::WallTime { .. })
            }
        ),
        "{:?}",
        report.outcome
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let outcome = intent_then_outcome(&records(&env, &run_id, "ssh.exec"));
    assert_ne!(outcome.entry.outcome, "ok");
    assert!(stops(&command).await, "the remote command was signalled");
}

#[tokio::test(flavor = "multi_thread")]
async fn acquire_exec_and_transfer_each_write_their_intent_before_acting() {
    let (env, _sshd, user) = Env::with_target();
    let probe = env.prepare("probe");
    let path = format!("/tmp/wdn-spine-{}", rand_digits());
    let params = text_params(&[
        ("mode", "transfer"),
        ("credential", "pw"),
        ("target", "t0"),
        ("path", &path),
        ("content", "spine"),
    ]);
    let (run_id, report) = env
        .run(
            &probe,
            params,
            grant(&["pw"], &["t0"]),
            RunLimits::default(),
        )
        .await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    intent_then_outcome(&records(&env, &run_id, "credentials.acquire"));
    intent_then_outcome(&records(&env, &run_id, "transfer.upload"));
    intent_then_outcome(&records(&env, &run_id, "transfer.download"));
    let _ = std::fs::remove_file(&path);

    let params = exec_params("whoami");
    let (run_id, report) = env
        .run(
            &probe,
            params,
            grant(&["pw"], &["t0"]),
            RunLimits::default(),
        )
        .await;
    let RunOutcome::Succeeded { result } = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    assert!(result.contains(&user.name), "{result}");
    let outcome = intent_then_outcome(&records(&env, &run_id, "ssh.exec"));
    assert_eq!(outcome.entry.outcome, "ok");
    // Calls that only read the run's own state have one record, after the call.
    let params_records = records(&env, &run_id, "params.get");
    assert!(!params_records.is_empty());
    assert!(params_records.iter().all(|r| r.entry.outcome == "ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_many_admits_each_target_through_the_same_path() {
    let (env, _sshds, _user) = Env::with_targets(2);
    let probe = env.prepare("probe");
    let params = exec_many_params("whoami", &["t0", "t1", "not-granted"]);
    let (run_id, report) = env
        .run(
            &probe,
            params,
            grant(&["pw"], &["t0", "t1"]),
            RunLimits::default(),
        )
        .await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    let all = records(&env, &run_id, "ssh.exec-many");
    for target in ["t0", "t1"] {
        let of_target: Vec<_> = all
            .iter()
            .filter(|r| r.entry.target.as_deref() == Some(target))
            .cloned()
            .collect();
        assert_eq!(intent_then_outcome(&of_target).entry.outcome, "ok");
    }
    let refused: Vec<_> = all
        .iter()
        .filter(|r| r.entry.target.as_deref() == Some("not-granted"))
        .collect();
    assert_eq!(refused.len(), 1, "a refusal is one record: {refused:#?}");
    assert!(matches!(refused[0].entry.decision, Decision::Denied { .. }));
    // Every intent of the fan-out is durable before any target acts.
    let last_intent = all
        .iter()
        .filter(|r| r.entry.outcome == "intent")
        .map(|r| r.seq)
        .max();
    let first_outcome = all
        .iter()
        .filter(|r| r.entry.outcome == "ok")
        .map(|r| r.seq)
        .min();
    assert!(last_intent < first_outcome, "{all:#?}");
}

/// Runs the probe's `exec` under a broad grant and a manifest scope; the guest-visible JSON.
async fn exec_in_scope(env: &Env, scope: &Requests, command: &str) -> (String, serde_json::Value) {
    let probe = env.prepare("probe");
    let params = exec_params(command);
    let spec = run_spec(
        "probe",
        probe,
        params,
        grant(&["pw"], &["t0"]),
        RunLimits::default(),
    );
    let run_id = spec.identity.run_id.clone();
    let report = env
        .bridge
        .execute_in_scope(spec, scope)
        .await
        .expect("run executes");
    let RunOutcome::Succeeded { result } = report.outcome else {
        panic!("{:?}", report.outcome);
    };
    (run_id, serde_json::from_str(&result).expect("json"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_narrows_commands_paths_and_target_tags_its_grant_allows() {
    let (env, _sshd, _user) = Env::with_target();
    let commands = Requests {
        commands: vec!["whoami".into()],
        ..Requests::default()
    };
    let (_, allowed) = exec_in_scope(&env, &commands, "whoami").await;
    assert_eq!(allowed["exit"], 0, "{allowed}");
    // The grant allows any command; the manifest asked for `whoami` only.
    for beyond in ["id", "whoami --help", "cat /etc/passwd"] {
        let (run_id, refused) = exec_in_scope(&env, &commands, beyond).await;
        assert_eq!(refused["error"], "denied", "{beyond}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap_or("")
                .contains("manifest"),
            "{refused}"
        );
        let records = records(&env, &run_id, "ssh.exec");
        assert_eq!(records.len(), 1, "a refusal is one record, no intent");
        let Decision::Denied { policy, .. } = &records[0].entry.decision else {
            panic!("{records:#?}");
        };
        assert_eq!(policy.as_deref(), Some("manifest.requests"));
    }

    // Target tags: `t0` has none, so a manifest that asks for `web` targets may not use it.
    let tags = Requests {
        target_tags: vec!["web".into()],
        ..Requests::default()
    };
    let (_, refused) = exec_in_scope(&env, &tags, "whoami").await;
    assert_eq!(refused["error"], "denied", "{refused}");

    // Paths: transfer outside the manifest's prefix is refused although the grant has /tmp.
    let probe = env.prepare("probe");
    let paths = Requests {
        paths: vec!["/tmp/wdn-scope-allowed".into()],
        ..Requests::default()
    };
    let spec = |path: &str| {
        let params = text_params(&[
            ("mode", "transfer"),
            ("credential", "pw"),
            ("target", "t0"),
            ("path", path),
            ("content", "x"),
        ]);
        let grant = Grant {
            paths: vec!["/tmp".into()],
            ..grant(&["pw"], &["t0"])
        };
        run_spec("probe", probe.clone(), params, grant, RunLimits::default())
    };
    let outside = format!("/tmp/wdn-scope-outside-{}", rand_digits());
    let report = env
        .bridge
        .execute_in_scope(spec(&outside), &paths)
        .await
        .expect("run");
    let RunOutcome::Succeeded { result } = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    assert!(result.contains("denied"), "{result}");
    assert!(
        !std::path::Path::new(&outside).exists(),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tagged_target_fits_a_manifest_that_asks_for_its_tag() {
    let (env, _sshd, _user) = Env::with_target();
    let mut tagged = env.targets.get("t0").expect("get").expect("t0");
    tagged.tags = vec!["web".into()];
    env.targets.remove("t0").expect("remove");
    env.targets.add(tagged).expect("add tagged target");
    let tags = Requests {
        target_tags: vec!["web".into(), "db".into()],
        ..Requests::default()
    };
    let (_, allowed) = exec_in_scope(&env, &tags, "whoami").await;
    assert_eq!(allowed["exit"], 0, "{allowed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warden_exec_killed_mid_command_leaves_its_durable_intent() {
    use warden_host::audit::AuditLog;
    use warden_host::store::DataDir;
    use warden_host::targets::TargetStore;
    use warden_host::vault::{CredentialKind, Secret, Vault};
    use warden_tests::guests;

    let dir = tempfile::TempDir::new().expect("temp dir");
    let data_path = dir.path().join("data");
    let sshd = warden_tests::sshd::Sshd::start("127.0.0.1").expect("sshd");
    let user = warden_tests::sshd::TestUser::create("wdn").expect("test user");
    {
        let data = DataDir::init(&data_path).expect("init");
        let vault = Vault::open(&data.db, data.master_key).expect("vault");
        let secret = Secret::from_bytes(user.password.as_bytes().to_vec());
        vault
            .add("pw", &user.name, CredentialKind::Password, secret)
            .expect("add credential");
        let targets = TargetStore::open(&data.db).expect("targets");
        targets.add(target_of("t0", &sshd)).expect("add target");
    }
    let command = long_sleep();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warden-e2e"))
        .arg("exec")
        .arg(guests::component("probe"))
        .arg("--manifest")
        .arg(guests::manifest("probe"))
        .arg("--data")
        .arg(&data_path)
        .args(["--param", "mode=exec", "--param", "credential=pw"])
        .args([
            "--param",
            "target=t0",
            "--param",
            &format!("command={command}"),
        ])
        .args(["--allow-credential", "pw", "--allow-target", "t0"])
        .args(["--allow-command", "sleep *"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("warden exec starts");
    let until = Instant::now() + Duration::from_secs(30);
    while !running(&command) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running(&command), "the command started on the target");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // The host is gone; end the command it left behind ourselves.
    let _ = std::process::Command::new("pkill")
        .args(["-f", &format!("^{command}$")])
        .status();

    let data = DataDir::open(&data_path).expect("reopen");
    let audit = AuditLog::open(&data.db, data.server_key.clone()).expect("audit opens");
    audit.verify().expect("the chain verifies");
    let filter = warden_host::audit::AuditFilter {
        action: Some("ssh.exec".into()),
        ..Default::default()
    };
    let execs = audit.query(&filter).expect("query");
    assert_eq!(execs.len(), 1, "{execs:#?}");
    assert_eq!(
        execs[0].entry.outcome, "intent",
        "the call that acted is on disk"
    );
    assert!(
        execs[0]
            .entry
            .detail
            .as_deref()
            .unwrap_or("")
            .contains(&command)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_that_breaks_the_host_call_limit_acts_on_no_target_and_records_each() {
    let (env, _sshds, _user) = Env::with_targets(3);
    let probe = env.prepare("probe");
    let marker = format!("/tmp/wdn-fanout-{}", rand_digits());
    let params = || exec_many_params(&format!("touch {marker}"), &["t0", "t1", "t2"]);
    let all = grant(&["pw"], &["t0", "t1", "t2"]);
    // How many calls the probe makes before its fan-out: a run with room for everything.
    let (_, report) = env
        .run(&probe, params(), all.clone(), RunLimits::default())
        .await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    let _ = std::fs::remove_file(&marker);
    let before_fan_out = report.host_calls - 3;

    // Room for one more call: the fan-out's second target breaks the limit.
    let limits = RunLimits {
        host_calls: before_fan_out + 1,
        ..RunLimits::default()
    };
    let (run_id, report) = env.run(&probe, params(), all, limits).await;
    assert!(
        matches!(
            report.outcome,
            RunOutcome::Stopped {
                reason: RunStop::Limit(LimitExceeded::HostCalls { .. })
            }
        ),
        "{:?}",
        report.outcome
    );
    let fanned = records(&env, &run_id, "ssh.exec-many");
    assert_eq!(
        fanned.len(),
        2,
        "t0 and t1 are recorded, t2 was never reached: {fanned:#?}"
    );
    for record in &fanned {
        let Decision::Denied { policy, .. } = &record.entry.decision else {
            panic!("refused, never admitted: {record:#?}");
        };
        assert_eq!(policy.as_deref(), Some("limits"));
    }
    assert!(!std::path::Path::new(&marker).exists(), "no target acted");
}
