//! The sandbox: secrets never reach guest memory, hostile guests are stopped with the
//! limit they broke, WASI grants nothing, and every host call is audited exactly once.

use std::time::Duration;

use warden_host::audit::Decision;
use warden_host::runtime::limits::{LimitExceeded, RunLimits};
use warden_host::runtime::{RunOutcome, RunReport, RunStop};

use crate::support::{Env, grant, text_params};
use warden_tests::random_secret;

fn result_json(report: &RunReport) -> serde_json::Value {
    match &report.outcome {
        RunOutcome::Succeeded { result } => serde_json::from_str(result).expect("result is JSON"),
        other => panic!("run did not succeed: {other:?}"),
    }
}

fn stopped_by(report: &RunReport) -> LimitExceeded {
    match &report.outcome {
        RunOutcome::Stopped {
            reason: RunStop::Limit(limit),
        } => limit.clone(),
        other => panic!("expected a limit stop, got {other:?}"),
    }
}

/// Runs `hello` and checks it succeeds: the host keeps serving after a hostile run.
async fn hello_still_runs(env: &Env) {
    let hello = env.prepare("hello");
    let (_, report) = env
        .run(
            &hello,
            text_params(&[("name", "after")]),
            grant(&[], &[]),
            RunLimits::default(),
        )
        .await;
    assert_eq!(
        report.outcome,
        RunOutcome::Succeeded {
            result: "hello, after".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_memory_holds_no_secret_byte_after_acquire_and_every_capability() {
    let env = Env::new();
    let secret = random_secret(32);
    env.add_password("db-admin", "admin", &secret);
    let probe = env.prepare("probe");
    let needle = hex::encode(secret.as_bytes());
    let params = text_params(&[
        ("mode", "memscan"),
        ("credential", "db-admin"),
        ("needle", &needle),
    ]);
    let (run_id, report) = env
        .run(
            &probe,
            params,
            grant(&["db-admin"], &[]),
            RunLimits::default(),
        )
        .await;
    let scan = result_json(&report);
    assert_eq!(
        scan["found"], 0,
        "secret bytes found in guest memory: {scan}"
    );
    assert!(
        scan["scanned"].as_u64().unwrap_or(0) > 1 << 16,
        "scan covered memory: {scan}"
    );
    // The guest really did acquire the credential and call the other capabilities.
    let actions: Vec<String> = env
        .host_call_records(&run_id)
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    for action in [
        "credentials.acquire",
        "credentials.credential.name",
        "ssh.exec",
        "ssh.exec-many",
        "transfer.upload",
        "transfer.download",
        "log.write",
        "params.all",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} not called: {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_scan_finds_the_secret_when_it_is_planted() {
    let env = Env::new();
    let secret = random_secret(32);
    env.add_password("db-admin", "admin", &secret);
    let probe = env.prepare("probe");
    let needle = hex::encode(secret.as_bytes());
    let params = text_params(&[
        ("mode", "memscan"),
        ("credential", "db-admin"),
        ("needle", &needle),
        ("plant", &needle),
    ]);
    let (_, report) = env
        .run(
            &probe,
            params,
            grant(&["db-admin"], &[]),
            RunLimits::default(),
        )
        .await;
    let scan = result_json(&report);
    assert!(
        scan["found"].as_u64().unwrap_or(0) >= 1,
        "planted secret not found: {scan}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_stopped_by_wall_time() {
    let env = Env::new();
    let probe = env.prepare("probe");
    let limits = RunLimits {
        wall_time: Duration::from_millis(500),
        ..RunLimits::default()
    };
    let (_, report) = env
        .run(
            &probe,
            text_params(&[("mode", "loop")]),
            grant(&[], &[]),
            limits,
        )
        .await;
    assert_eq!(
        stopped_by(&report),
        LimitExceeded::WallTime { limit_ms: 500 }
    );
    assert!(
        report.duration_ms < 5_000,
        "stopped promptly: {} ms",
        report.duration_ms
    );
    hello_still_runs(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_is_stopped_by_the_memory_limit() {
    let env = Env::new();
    let probe = env.prepare("probe");
    let limits = RunLimits {
        memory_bytes: 32 << 20,
        ..RunLimits::default()
    };
    let (_, report) = env
        .run(
            &probe,
            text_params(&[("mode", "membomb")]),
            grant(&[], &[]),
            limits,
        )
        .await;
    assert!(
        matches!(stopped_by(&report), LimitExceeded::Memory { limit, .. } if limit == 32 << 20),
        "{report:?}"
    );
    hello_still_runs(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_flood_is_stopped_by_the_output_limit() {
    let env = Env::new();
    let probe = env.prepare("probe");
    let limits = RunLimits {
        output_bytes: 64 << 10,
        ..RunLimits::default()
    };
    let (_, report) = env
        .run(
            &probe,
            text_params(&[("mode", "flood-output")]),
            grant(&[], &[]),
            limits,
        )
        .await;
    assert_eq!(
        stopped_by(&report),
        LimitExceeded::Output {
            stream: "stdout".into(),
            limit: 64 << 10
        }
    );
    assert!(report.stdout.len() <= 64 << 10);
    hello_still_runs(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_call_flood_is_stopped_and_every_call_is_audited() {
    let env = Env::new();
    let probe = env.prepare("probe");
    let limits = RunLimits {
        host_calls: 500,
        ..RunLimits::default()
    };
    let (run_id, report) = env
        .run(
            &probe,
            text_params(&[("mode", "flood-calls")]),
            grant(&[], &[]),
            limits,
        )
        .await;
    assert_eq!(stopped_by(&report), LimitExceeded::HostCalls { limit: 500 });
    let records = env.host_call_records(&run_id);
    // 500 allowed calls, then the one refused call that ended the run.
    assert_eq!(records.len(), 501);
    assert_eq!(report.host_calls, 501);
    let last = records.last().expect("records");
    assert!(
        matches!(&last.entry.decision, Decision::Denied { policy: Some(p), .. } if p == "limits")
    );
    hello_still_runs(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_host_call_argument_is_stopped() {
    let env = Env::new();
    let probe = env.prepare("probe");
    let limits = RunLimits {
        call_bytes: 1 << 20,
        ..RunLimits::default()
    };
    let (_, report) = env
        .run(
            &probe,
            text_params(&[("mode", "big-arg")]),
            grant(&[], &[]),
            limits,
        )
        .await;
    assert!(
        matches!(stopped_by(&report), LimitExceeded::CallBytes { limit, .. } if limit == 1 << 20),
        "{report:?}"
    );
    hello_still_runs(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn handle_hoarding_is_stopped_by_the_handle_limit() {
    let env = Env::new();
    env.add_password("ops", "ops", "hunter2hunter2");
    let probe = env.prepare("probe");
    let limits = RunLimits {
        handles: 16,
        ..RunLimits::default()
    };
    let params = text_params(&[("mode", "handles"), ("credential", "ops")]);
    let (_, report) = env.run(&probe, params, grant(&["ops"], &[]), limits).await;
    assert_eq!(stopped_by(&report), LimitExceeded::Handles { limit: 16 });
    hello_still_runs(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ungranted_credential_is_denied_visibly_and_audited() {
    let env = Env::new();
    env.add_password("root-pw", "root", "s3cr3t-value-xyz");
    let probe = env.prepare("probe");
    let params = text_params(&[("mode", "ungranted"), ("credential", "root-pw")]);
    let (run_id, report) = env
        .run(&probe, params, grant(&["other"], &[]), RunLimits::default())
        .await;
    match &report.outcome {
        RunOutcome::Succeeded { result } => assert!(result.contains("Denied"), "{result}"),
        other => panic!("denial must be guest-visible, not a trap: {other:?}"),
    }
    let records = env.host_call_records(&run_id);
    let denied: Vec<_> = records
        .iter()
        .filter(|r| matches!(r.entry.decision, Decision::Denied { .. }))
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].entry.action, "credentials.acquire");
    assert_eq!(denied[0].entry.credential.as_deref(), Some("root-pw"));
    assert_eq!(records.len() as u64, report.host_calls);
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_grants_no_files_env_args_sockets_or_stdin() {
    let env = Env::new();
    let probe = env.prepare("probe");
    let (_, report) = env
        .run(
            &probe,
            text_params(&[("mode", "wasi-escape")]),
            grant(&[], &[]),
            RunLimits::default(),
        )
        .await;
    let probes = result_json(&report);
    let probes = probes.as_object().expect("object");
    assert!(probes.len() >= 6, "{probes:?}");
    for (name, outcome) in probes {
        let outcome = outcome.as_str().unwrap_or_default();
        assert!(
            outcome.starts_with("err:"),
            "{name} escaped the sandbox: {outcome}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_host_call_has_exactly_one_audit_record() {
    let env = Env::new();
    let probe = env.prepare("probe");
    let params = vec![
        warden_host::registry::inputs::Param {
            name: "mode".into(),
            value: warden_host::registry::inputs::Value::Text("calls".into()),
        },
        warden_host::registry::inputs::Param {
            name: "n".into(),
            value: warden_host::registry::inputs::Value::Integer(40),
        },
    ];
    let (run_id, report) = env
        .run(&probe, params, grant(&[], &[]), RunLimits::default())
        .await;
    assert!(report.outcome.is_success(), "{report:?}");
    // 40 calls, plus reading `mode` and `n`.
    assert_eq!(report.host_calls, 42);
    assert_eq!(
        env.host_call_records(&run_id).len() as u64,
        report.host_calls
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_reported_as_a_trap() {
    let env = Env::new();
    let probe = env.prepare("probe");
    let (_, report) = env
        .run(
            &probe,
            text_params(&[("mode", "panic")]),
            grant(&[], &[]),
            RunLimits::default(),
        )
        .await;
    assert!(
        matches!(report.outcome, RunOutcome::Trapped { .. }),
        "{report:?}"
    );
    hello_still_runs(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_and_stderr_are_captured_not_inherited() {
    let env = Env::new();
    let probe = env.prepare("probe");
    let (_, report) = env
        .run(
            &probe,
            text_params(&[("mode", "echo")]),
            grant(&[], &[]),
            RunLimits::default(),
        )
        .await;
    assert!(report.stdout.contains("to-stdout"), "{report:?}");
    assert!(report.stderr.contains("to-stderr"), "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_call_to_an_interface_the_manifest_did_not_request_is_denied_by_policy() {
    let env = Env::new();
    env.add_password("ops", "ops", "a-password-of-sorts");
    let probe = env.prepare("probe");
    let engine =
        warden_host::policy::PolicyEngine::load(&warden_tests::repo_root().join("policies"))
            .expect("policies load");
    // The manifest asked for params and log only: acquiring a credential must be refused
    // by policy even though the grant names the credential.
    let requested = ["params".to_string(), "log".to_string()].into();
    let policy = warden_host::capabilities::HostCallPolicy {
        engine,
        requested,
        scope: Default::default(),
    };
    let params = text_params(&[("mode", "ungranted"), ("credential", "ops")]);
    let (run_id, report) = env
        .run_with_policy(
            &probe,
            params,
            grant(&["ops"], &[]),
            RunLimits::default(),
            Some(policy),
        )
        .await;
    match &report.outcome {
        RunOutcome::Succeeded { result } => assert!(result.contains("Denied"), "{result}"),
        other => panic!("denial must be guest-visible: {other:?}"),
    }
    let records = env.host_call_records(&run_id);
    let acquire = records
        .iter()
        .find(|r| r.entry.action == "credentials.acquire")
        .expect("audited");
    match &acquire.entry.decision {
        Decision::Denied { policy, .. } => {
            assert_eq!(
                policy.as_deref(),
                Some("host-call-requires-module-request"),
                "names the policy"
            );
        }
        other => panic!("expected a denial: {other:?}"),
    }
    // The params and log calls the manifest did request went through.
    assert!(
        records
            .iter()
            .any(|r| r.entry.action == "params.get" && r.entry.decision == Decision::Allowed)
    );
}
