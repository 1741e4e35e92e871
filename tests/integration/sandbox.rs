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

/// Runs `hello` and checks it succeeds: the host keeps serving after a hostile run.
async fn hello_still_runs(env: &Env) {
    if let Err(problem) = hello_runs(env).await {
        panic!("{problem}");
    }
}

/// [`hello_still_runs`], as a result.
async fn hello_runs(env: &Env) -> Result<(), String> {
    let hello = env.prepare("hello");
    let (_, report) = env
        .run(
            &hello,
            text_params(&[("name", "after")]),
            grant(&[], &[]),
            RunLimits::default(),
        )
        .await;
    let want = RunOutcome::Succeeded {
        result: "hello, after".into(),
    };
    if report.outcome == want {
        Ok(())
    } else {
        Err(format!(
            "hello after the hostile run: {:?}, not {want:?}",
            report.outcome
        ))
    }
}

/// The probe's `memscan` after acquiring credential `db-admin` (a random secret) and
/// calling every capability: it scans its own memory for the secret's bytes, planting them
/// first when `plant` is set. (environment, run id, the scan's JSON result).
async fn memscan(plant: bool) -> (Env, String, serde_json::Value) {
    let env = Env::new();
    let secret = random_secret(32);
    env.add_password("db-admin", "admin", &secret);
    let probe = env.prepare("probe");
    let needle = hex::encode(secret.as_bytes());
    let mut params = vec![
        ("mode", "memscan"),
        ("credential", "db-admin"),
        ("needle", needle.as_str()),
    ];
    if plant {
        params.push(("plant", needle.as_str()));
    }
    let (run_id, report) = env
        .run(
            &probe,
            text_params(&params),
            grant(&["db-admin"], &[]),
            RunLimits::default(),
        )
        .await;
    let scan = result_json(&report);
    (env, run_id, scan)
}

/// Runs the probe in `mode` with no grant and the default limits.
async fn run_probe(env: &Env, mode: &str) -> (String, RunReport) {
    let probe = env.prepare("probe");
    env.run(
        &probe,
        text_params(&[("mode", mode)]),
        grant(&[], &[]),
        RunLimits::default(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_memory_holds_no_secret_byte_after_acquire_and_every_capability() {
    let (env, run_id, scan) = memscan(false).await;
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
    let (_, _, scan) = memscan(true).await;
    assert!(
        scan["found"].as_u64().unwrap_or(0) >= 1,
        "planted secret not found: {scan}"
    );
}

// ---------------------------------------------------------------------------------------
// Limits: one table of hostile probe modes, each stopped by the one limit it breaks
// ---------------------------------------------------------------------------------------

/// One hostile mode of the probe, the one limit lowered to stop it, and the stop expected.
struct LimitCase {
    name: &'static str,
    mode: &'static str,
    /// The default limits with the one this case breaks lowered.
    limits: RunLimits,
    /// A credential (name, secret) added and granted to the run.
    credential: Option<(&'static str, &'static str)>,
    /// The stop expected, as shown on failure, and the test for it.
    expected: &'static str,
    stopped: fn(&LimitExceeded) -> bool,
    /// What else must hold after the stop: the problems found (none when it holds).
    also: fn(&Env, &str, &RunReport) -> Vec<String>,
}

fn nothing_more(_: &Env, _: &str, _: &RunReport) -> Vec<String> {
    Vec::new()
}

/// `problem` when `ok` is false.
fn check(ok: bool, problem: impl FnOnce() -> String) -> Vec<String> {
    if ok { Vec::new() } else { vec![problem()] }
}

fn limit_cases() -> Vec<LimitCase> {
    let default = RunLimits::default;
    vec![
        LimitCase {
            name: "infinite loop stopped by wall time",
            mode: "loop",
            limits: RunLimits {
                wall_time: Duration::from_millis(500),
                ..default()
            },
            credential: None,
            expected: "WallTime { limit_ms: 500 }",
            stopped: |l| *l == LimitExceeded::WallTime { limit_ms: 500 },
            also: |_, _, report| {
                check(report.duration_ms < 5_000, || {
                    format!("not stopped promptly: {} ms", report.duration_ms)
                })
            },
        },
        LimitCase {
            name: "memory bomb stopped by the memory limit",
            mode: "membomb",
            limits: RunLimits {
                memory_bytes: 32 << 20,
                ..default()
            },
            credential: None,
            expected: "Memory { limit: 32 MiB, .. }",
            stopped: |l| matches!(l, LimitExceeded::Memory { limit, .. } if *limit == 32 << 20),
            also: nothing_more,
        },
        LimitCase {
            name: "output flood stopped by the output limit",
            mode: "flood-output",
            limits: RunLimits {
                output_bytes: 64 << 10,
                ..default()
            },
            credential: None,
            expected: "Output { stream: stdout, limit: 64 KiB }",
            stopped: |l| {
                *l == LimitExceeded::Output {
                    stream: "stdout".into(),
                    limit: 64 << 10,
                }
            },
            also: |_, _, report| {
                check(report.stdout.len() <= 64 << 10, || {
                    format!("{} bytes of stdout kept", report.stdout.len())
                })
            },
        },
        LimitCase {
            name: "host call flood stopped, every call audited",
            mode: "flood-calls",
            limits: RunLimits {
                host_calls: 500,
                ..default()
            },
            credential: None,
            expected: "HostCalls { limit: 500 }",
            stopped: |l| *l == LimitExceeded::HostCalls { limit: 500 },
            also: |env, run_id, report| {
                let records = env.host_call_records(run_id);
                // 500 allowed calls, then the one refused call that ended the run.
                let mut problems = check(records.len() == 501, || {
                    format!("{} audit records, not 501", records.len())
                });
                problems.extend(check(report.host_calls == 501, || {
                    format!("{} host calls counted, not 501", report.host_calls)
                }));
                let last = records.last().map(|r| &r.entry.decision);
                problems.extend(check(
                    matches!(last, Some(Decision::Denied { policy: Some(p), .. }) if p == "limits"),
                    || format!("the last call was not denied by `limits`: {last:?}"),
                ));
                problems
            },
        },
        LimitCase {
            name: "oversized host call argument stopped",
            mode: "big-arg",
            limits: RunLimits {
                call_bytes: 1 << 20,
                ..default()
            },
            credential: None,
            expected: "CallBytes { limit: 1 MiB, .. }",
            stopped: |l| matches!(l, LimitExceeded::CallBytes { limit, .. } if *limit == 1 << 20),
            also: nothing_more,
        },
        LimitCase {
            name: "handle hoarding stopped by the handle limit",
            mode: "handles",
            limits: RunLimits {
                handles: 16,
                ..default()
            },
            credential: Some(("ops", "hunter2hunter2")),
            expected: "Handles { limit: 16 }",
            stopped: |l| *l == LimitExceeded::Handles { limit: 16 },
            also: nothing_more,
        },
    ]
}

/// Every row of [`limit_cases`] in a fresh environment: the run is stopped with the limit
/// it broke (not trapped, not finished), what else the row says holds, and `hello` still
/// runs afterwards. Every row runs; the failures are reported together, each by its name.
#[tokio::test(flavor = "multi_thread")]
async fn each_hostile_guest_is_stopped_by_the_limit_it_broke_and_the_host_keeps_serving() {
    let mut failures = Vec::new();
    for case in limit_cases() {
        let env = Env::new();
        let mut params = vec![("mode", case.mode)];
        let mut granted = Vec::new();
        if let Some((name, secret)) = case.credential {
            env.add_password(name, name, secret);
            params.push(("credential", name));
            granted.push(name);
        }
        let probe = env.prepare("probe");
        let (run_id, report) = env
            .run(
                &probe,
                text_params(&params),
                grant(&granted, &[]),
                case.limits,
            )
            .await;
        let mut problems = match &report.outcome {
            RunOutcome::Stopped {
                reason: RunStop::Limit(limit),
            } => check((case.stopped)(limit), || {
                format!("stopped by {limit:?}, not {}", case.expected)
            }),
            other => vec![format!(
                "expected a limit stop ({}), got {other:?}",
                case.expected
            )],
        };
        problems.extend((case.also)(&env, &run_id, &report));
        if let Err(problem) = hello_runs(&env).await {
            problems.push(problem);
        }
        failures.extend(problems.into_iter().map(|p| format!("{}: {p}", case.name)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
    let (_, report) = run_probe(&env, "wasi-escape").await;
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
    let (_, report) = run_probe(&env, "panic").await;
    assert!(
        matches!(report.outcome, RunOutcome::Trapped { .. }),
        "{report:?}"
    );
    hello_still_runs(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_and_stderr_are_captured_not_inherited() {
    let env = Env::new();
    let (_, report) = run_probe(&env, "echo").await;
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
