//! Every state of the language, retry and catch, map tolerance, resume, and a step's grant
//! staying its own.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_state_runs_and_outputs_flow_between_steps() {
    let lab = Lab::new().await;
    let workflow = json!({
        "inputs": { "user": { "type": "string", "required": true } },
        "start_at": "facts",
        "states": {
            "facts": lab.emit(r#"{"n": 3, "hosts": ["h1", "h2", "h3"]}"#, json!({"next": "pick"})),
            "pick": { "type": "choice", "choices": [
                { "when": { "variable": "$.steps.facts.n", "numeric_greater_than": 5 }, "next": "never" },
                { "when": { "and": [
                    { "variable": "$.steps.facts.n", "numeric_greater_than_equals": 3 },
                    { "variable": "$.inputs.user", "string_starts_with": "ad" } ] }, "next": "both" }
            ], "default": "never" },
            "never": { "type": "fail", "error": "wrong-branch" },
            "both": { "type": "parallel", "next": "each", "branches": [
                { "start_at": "left", "states": { "left": lab.probe("emit", json!({"content.$": "$.inputs.user"}), json!({"end": true})) } },
                { "start_at": "right", "states": { "right": lab.emit("right", json!({"end": true})) } }
            ] },
            "each": { "type": "map", "items": "$.steps.facts.hosts", "max_concurrency": 2, "next": "pause",
                "iterator": { "start_at": "one", "states": {
                    "one": lab.probe("emit", json!({"content.$": "$.item"}), json!({"end": true})) } } },
            "pause": { "type": "wait", "seconds": 1, "next": "done" },
            "done": { "type": "succeed", "output": "$.steps.each" }
        }
    });
    let pid = lab.process("every-state", workflow).await;
    let started = std::time::Instant::now();
    let run = lab.run(&pid, json!({ "user": "ada" })).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "the wait waited"
    );
    let output: Value =
        serde_json::from_str(run["result"].as_str().expect("result")).expect("json");
    assert_eq!(output, json!(["h1", "h2", "h3"]));
    assert_eq!(step(&run, "pick")["next"], "both");
    assert_eq!(step(&run, "both")["output"], json!(["ada", "right"]));
    assert_eq!(step(&run, "facts")["output"]["n"], 3);
    for path in [
        "facts",
        "both/0/left",
        "both/1/right",
        "each/0/one",
        "each/2/one",
        "pause",
    ] {
        assert_eq!(step(&run, path)["status"], "succeeded", "{path}: {run}");
    }
    assert!(
        step(&run, "never").is_null(),
        "the branch not taken never ran"
    );
    // Each task step ran as a run of its own that names its workflow run and step.
    let child = step(&run, "each/1/one")["attempts"][0]["run_id"]
        .as_str()
        .expect("child");
    let r = lab
        .server
        .get(&format!("/v1/runs/{child}"), &lab.server.admin)
        .await;
    assert_eq!(r.body["step"]["run"], run["id"]);
    assert_eq!(r.body["step"]["definition_path"], "each/*/one");
    assert_eq!(r.body["result"], "h2");
    // Every step transition is audited under the workflow run with the step's name.
    let records = lab
        .server
        .audit(&format!("run={}", run["id"].as_str().unwrap_or("")))
        .await;
    let steps: Vec<&str> = records
        .iter()
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("workflow.step."))
        })
        .filter_map(|r| r["detail"].as_str())
        .collect();
    for name in [
        "step facts (task)",
        "step pick (choice)",
        "step each/2/one (task)",
        "step pause (wait)",
    ] {
        assert!(
            steps.iter().any(|d| d.starts_with(name)),
            "{name} in {steps:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_then_a_catch_runs_the_compensating_step() {
    let lab = Lab::new().await;
    let workflow = json!({
        "start_at": "flaky",
        "states": {
            "flaky": lab.probe("fail", json!({}), json!({
                "next": "unreached",
                "retry": [{ "errors": ["failed"], "max_attempts": 3, "interval_seconds": 0.1, "backoff_rate": 2.0 }],
                "catch": [{ "errors": ["*"], "next": "compensate" }] })),
            "unreached": lab.emit("no", json!({"end": true})),
            "compensate": lab.probe("emit", json!({"content.$": "$.steps.flaky.error"}), json!({"end": true}))
        }
    });
    let pid = lab.process("retry-catch", workflow).await;
    let run = lab.run(&pid, json!({})).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let flaky = step(&run, "flaky");
    assert_eq!(flaky["status"], "caught");
    assert_eq!(flaky["next"], "compensate");
    assert_eq!(
        flaky["attempts"].as_array().map(Vec::len),
        Some(3),
        "{flaky}"
    );
    assert!(
        flaky["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|a| a["state"] == "failed")
    );
    assert_eq!(step(&run, "compensate")["output"], "failed");
    assert!(step(&run, "unreached").is_null());
    assert_eq!(run["result"], "failed");

    // Without a catch, the run fails after its attempts, naming the step.
    let workflow = json!({ "start_at": "flaky", "states": {
        "flaky": lab.probe("fail", json!({}), json!({ "end": true,
            "retry": [{ "errors": ["timed-out"], "max_attempts": 3 }] })) } });
    let pid = lab.process("no-catch", workflow).await;
    let run = lab.run(&pid, json!({})).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("step flaky")),
        "{run}"
    );
    // A retry rule for another kind does not retry it.
    assert_eq!(
        step(&run, "flaky")["attempts"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_resumes_from_the_step_that_failed_without_rerunning_the_rest() {
    let user = TestUser::create("wwf").expect("user");
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let lab = Lab::new().await;
    fleet(&lab.server, "pw", &user, std::slice::from_ref(&sshd)).await;
    let flag = format!("/tmp/warden-wf-{}", uuid::Uuid::new_v4());
    let grant = json!({ "credentials": ["pw"], "targets": ["t0"], "commands": ["test -e *"] });
    let workflow = json!({ "start_at": "first", "states": {
        "first": lab.emit(r#"{"ok": true}"#, json!({"next": "check"})),
        "check": lab.probe("exec-strict",
            json!({ "credential": "pw", "target": "t0", "command": format!("test -e {flag}") }),
            json!({ "grant": grant, "next": "last" })),
        "last": lab.emit("done", json!({"end": true}))
    } });
    let pid = lab.process("resumable", workflow).await;
    let run = lab.run(&pid, json!({})).await;
    assert_eq!(run["state"], "failed", "{run}");
    let first_child = step(&run, "first")["attempts"][0]["run_id"].clone();
    assert_eq!(step(&run, "check")["status"], "failed");
    let id = run["id"].as_str().expect("id").to_string();

    // Who may not see the process cannot resume its run, and learns nothing of it: a Super
    // Administrator (the process is another administrator's, unshared) and a Password Auditor.
    for (name, role) in [("sa", "super-administrator"), ("aud", "password-auditor")] {
        let token = lab.server.user(name, &[role]).await;
        let r = lab
            .server
            .post(&format!("/v1/runs/{id}/resume"), &token, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{name}: {}", r.text);
    }
    let still = lab
        .server
        .get(&format!("/v1/runs/{id}"), &lab.server.admin)
        .await;
    assert_eq!(still.body["state"], "failed");
    assert_eq!(
        still.body["workflow"]["attempt"], 1,
        "the refusals resumed nothing"
    );
    std::fs::write(&flag, b"").expect("flag");
    let r = lab
        .server
        .post(
            &format!("/v1/runs/{id}/resume"),
            &lab.server.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["workflow"]["attempt"], 2);
    let again = lab.server.wait_for_state_or_end(&id).await;
    let _ = std::fs::remove_file(&flag);
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(again["result"], "done");
    // The step that succeeded was not run again; the failed one has a second attempt.
    let first = step(&again, "first");
    assert_eq!(first["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(first["attempts"][0]["run_id"], first_child);
    let check = step(&again, "check");
    assert_eq!(
        check["attempts"].as_array().map(Vec::len),
        Some(2),
        "{check}"
    );
    assert_eq!(check["attempts"][1]["state"], "succeeded");
    let r = lab
        .server
        .post(
            &format!("/v1/runs/{id}/resume"),
            &lab.server.admin,
            json!({}),
        )
        .await;
    r.expect_error(StatusCode::CONFLICT, "conflict");
    let resumed = lab
        .server
        .audit(&format!("run={id}&action=run.resumed"))
        .await;
    assert_eq!(resumed.len(), 1);
    // A single-task run cannot be resumed.
    let single = step(&again, "last")["attempts"][0]["run_id"]
        .as_str()
        .expect("child")
        .to_string();
    let r = lab
        .server
        .post(
            &format!("/v1/runs/{single}/resume"),
            &lab.server.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "conflict", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_map_tolerates_a_dead_target_within_its_limit_and_fails_beyond_it() {
    let user = TestUser::create("wwm").expect("user");
    let sshds = Sshd::fleet(2).expect("sshd");
    let lab = Lab::new().await;
    fleet(&lab.server, "pw", &user, &sshds).await;
    // A target nothing listens on.
    let dead =
        json!({ "name": "dead", "address": "127.0.0.1:1", "host_key": sshds[0].host_key_line });
    let r = lab
        .server
        .post("/v1/targets", &lab.server.admin, dead)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let grant =
        json!({ "credentials": ["pw"], "targets": ["t0", "t1", "dead"], "commands": ["id -un"] });
    let map = |tolerated: u32| {
        json!({
            "inputs": { "targets": { "type": "string-list", "required": true } },
            "start_at": "each",
            "states": { "each": { "type": "map", "items": "$.inputs.targets", "max_concurrency": 3,
                "tolerated_failures": tolerated, "end": true,
                "iterator": { "start_at": "who", "states": { "who": lab.probe("exec-strict",
                    json!({ "credential": "pw", "command": "id -un", "target.$": "$.item" }),
                    json!({ "grant": grant, "end": true })) } } } }
        })
    };
    let targets = json!({ "targets": ["t0", "dead", "t1"] });
    let tolerant = lab.process("map-tolerant", map(1)).await;
    let run = lab.run(&tolerant, targets.clone()).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let out: Value = serde_json::from_str(run["result"].as_str().expect("result")).expect("json");
    assert_eq!(out, json!([user.name, null, user.name]));
    assert_eq!(step(&run, "each/1/who")["status"], "failed");

    let strict = lab.process("map-strict", map(0)).await;
    let run = lab.run(&strict, targets).await;
    assert_eq!(run["state"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or("");
    assert!(
        error.starts_with("branch-failed") && error.contains("1 of 3"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_granted_to_step_two_is_refused_in_step_one() {
    let user = TestUser::create("wwg").expect("user");
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let lab = Lab::new().await;
    fleet(&lab.server, "pw", &user, std::slice::from_ref(&sshd)).await;
    let exec = json!({ "credential": "pw", "target": "t0", "command": "id -un" });
    let granted = json!({ "credentials": ["pw"], "targets": ["t0"], "commands": ["id -un"] });
    // Step one asks for step two's credential, with a grant of its own that names only the
    // target (variant: with no grant at all).
    for first_grant in [
        json!({ "targets": ["t0"], "commands": ["id -un"] }),
        json!({}),
    ] {
        let workflow = json!({ "start_at": "one", "states": {
            "one": lab.probe("exec-strict", exec.clone(), json!({ "grant": first_grant, "next": "two",
                "catch": [{ "errors": ["*"], "next": "two" }] })),
            "two": lab.probe("exec-strict", exec.clone(), json!({ "grant": granted, "end": true }))
        } });
        let pid = lab
            .process(
                &format!("grants-{}", uuid::Uuid::new_v4().simple()),
                workflow,
            )
            .await;
        let run = lab.run(&pid, json!({})).await;
        assert_eq!(run["state"], "succeeded", "{run}");
        let one = step(&run, "one");
        assert_eq!(one["status"], "caught", "{one}");
        assert!(
            one["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("is not granted to this run")),
            "{one}"
        );
        assert_eq!(step(&run, "two")["output"], user.name.as_str());
        // The denial is audited under step one's own run.
        let child = one["attempts"][0]["run_id"].as_str().expect("child");
        let denied: Vec<Value> = lab
            .server
            .audit(&format!("run={child}"))
            .await
            .into_iter()
            .filter(|r| r["decision"]["verdict"] == "denied")
            .collect();
        assert!(!denied.is_empty(), "no denial audited for {child}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn definitions_are_validated_at_create_and_update_naming_the_state() {
    let lab = Lab::new().await;
    let bad = [
        (
            json!({ "start_at": "a", "states": { "a": lab.emit("x", json!({"next": "b"})) } }),
            "`a`",
            "names no state",
        ),
        (
            json!({ "start_at": "a", "states": { "a": lab.emit("x", json!({"end": true})), "b": lab.emit("y", json!({"end": true})) } }),
            "`b`",
            "unreachable",
        ),
        (
            json!({ "start_at": "a", "states": { "a": lab.emit("x", json!({"next": "b"})), "b": lab.emit("y", json!({"next": "a"})) } }),
            "`a`",
            "loop",
        ),
        (
            json!({ "start_at": "a", "states": { "a": { "type": "task", "module": "c".repeat(64), "end": true } } }),
            "`a`",
            "not in the registry",
        ),
        (
            json!({ "start_at": "a", "states": { "a": lab.probe("emit", json!({"content.$": "$.steps.zz"}), json!({"end": true})) } }),
            "`a`",
            "points nowhere",
        ),
        (
            json!({ "start_at": "a", "states": { "a": lab.probe("emit", json!({"colour": "red"}), json!({"end": true})) } }),
            "`a`",
            "not declared",
        ),
    ];
    for (workflow, state, why) in bad {
        let r = lab.create("bad", workflow.clone()).await;
        r.expect_error(StatusCode::BAD_REQUEST, "invalid_workflow");
        let message = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(state) && message.contains(why),
            "{message} for {workflow}"
        );
    }
    // A step's grant beyond what its author may grant: a process manager whose role lists
    // `db-pw` only, naming `root-pw` in the second step (and in a map's iterator).
    let role = json!({ "name": "db-team", "privileges": ["ManagePrivilegedProcess"],
        "credentials": ["db-pw"], "targets": ["db-1"] });
    lab.server.role(role).await;
    let mona = lab.server.user("mona", &["db-team"]).await;
    let fine = json!({ "credentials": ["db-pw"], "targets": ["db-1"] });
    let wide = json!({ "credentials": ["root-pw"], "targets": ["db-1"] });
    let nested = json!({ "type": "map", "items": "$.steps.a", "end": true, "iterator": { "start_at": "x",
        "states": { "x": lab.emit("x", json!({"end": true, "grant": wide})) } } });
    for second in [lab.emit("y", json!({"end": true, "grant": wide})), nested] {
        let workflow = json!({ "start_at": "a", "states": {
            "a": lab.emit("x", json!({"next": "b", "grant": fine})), "b": second } });
        let r = lab
            .server
            .post(
                "/v1/processes",
                &mona,
                json!({ "name": "wide", "workflow": workflow }),
            )
            .await;
        r.expect_error(StatusCode::FORBIDDEN, "grant_not_permitted");
        assert!(
            r.text.contains("workflow state `b") && r.text.contains("root-pw"),
            "{}",
            r.text
        );
    }
    let r = lab.server.get("/v1/processes", &lab.server.admin).await;
    assert!(
        !r.text.contains("\"wide\""),
        "nothing was created: {}",
        r.text
    );
    // Process-level approvals and grants do not apply to a workflow.
    let ok = json!({ "start_at": "a", "states": { "a": lab.emit("x", json!({"end": true})) } });
    let r = lab
        .server
        .post(
            "/v1/processes",
            &lab.server.admin,
            json!({ "name": "wf", "workflow": ok, "required_approvals": 1 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // An update is validated the same way and leaves the process as it was.
    let r = lab.create("wf", ok.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let (pid, digest) = (
        r.body["id"].as_str().expect("id").to_string(),
        r.body["module_digest"].clone(),
    );
    let broken =
        json!({ "start_at": "a", "states": { "a": lab.emit("x", json!({"next": "gone"})) } });
    let r = put_workflow(&lab, &pid, broken).await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_workflow");
    let r = lab
        .server
        .get(&format!("/v1/processes/{pid}"), &lab.server.admin)
        .await;
    assert_eq!(r.body["module_digest"], digest);
    assert_eq!(r.body["revision"], 1);
    // A module whose publisher is distrusted since is refused at the next update.
    let r = lab
        .server
        .request(
            reqwest::Method::DELETE,
            "/v1/publishers/acme",
            Some(&lab.server.admin),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = put_workflow(&lab, &pid, ok).await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_workflow");
    assert!(r.text.contains("trusted publisher"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_workflow_run_cancels_its_step_run_and_starts_nothing_after() {
    let lab = Lab::new().await;
    let workflow = json!({ "start_at": "long", "states": {
        "long": lab.probe("sleep", json!({"n": 60000}), json!({"next": "after",
            "catch": [{ "errors": ["*"], "next": "after" }] })),
        "after": lab.emit("should not run", json!({"end": true}))
    } });
    let pid = lab.process("cancellable", workflow).await;
    let id = lab
        .server
        .start_run(&pid, &lab.server.admin, json!({}))
        .await;
    let mut child = String::new();
    for _ in 0..400 {
        let r = lab
            .server
            .get(&format!("/v1/runs/{id}"), &lab.server.admin)
            .await;
        if let Some(c) = step(&r.body, "long")["attempts"][0]["run_id"].as_str() {
            let c = lab
                .server
                .get(&format!("/v1/runs/{c}"), &lab.server.admin)
                .await;
            if c.body["state"] == "running" {
                child = c.body["id"].as_str().unwrap_or_default().to_string();
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(!child.is_empty(), "the step run never started");
    let r = lab
        .server
        .post(
            &format!("/v1/runs/{id}/cancel"),
            &lab.server.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let run = lab.server.wait_for_state_or_end(&id).await;
    assert_eq!(run["state"], "cancelled", "{run}");
    let c = lab.server.wait_for_state_or_end(&child).await;
    assert_eq!(c["state"], "cancelled", "{c}");
    assert_eq!(
        step(&run, "long")["status"],
        "cancelled",
        "a cancel is not caught"
    );
    assert!(
        step(&run, "after").is_null(),
        "nothing ran after the cancel"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_limit_times_the_step_out_and_schedules_check_a_workflows_inputs() {
    let lab = Lab::new().await;
    let workflow = json!({
        "inputs": { "user": { "type": "string", "required": true } },
        "start_at": "slow", "states": {
        "slow": lab.probe("sleep", json!({"n": 20000}), json!({ "limits": { "timeout_seconds": 1 },
            "next": "never", "catch": [{ "errors": ["timed-out"], "next": "late" }] })),
        "never": lab.emit("no", json!({"end": true})),
        "late": lab.emit("late", json!({"end": true}))
    } });
    let pid = lab.process("limited", workflow).await;
    let started = std::time::Instant::now();
    let run = lab.run(&pid, json!({ "user": "ada" })).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the step limit held"
    );
    assert_eq!(run["result"], "late", "{run}");
    let slow = step(&run, "slow");
    assert_eq!(slow["error"]["kind"], "timed-out", "{slow}");
    assert_eq!(slow["attempts"][0]["state"], "timed-out");
    // A run's inputs are the workflow's: checked at start and when a schedule is made.
    let r = lab
        .server
        .post(
            &format!("/v1/processes/{pid}/runs"),
            &lab.server.admin,
            json!({ "inputs": {} }),
        )
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_inputs");
    let r = lab
        .server
        .post(
            &format!("/v1/processes/{pid}/runs"),
            &lab.server.admin,
            json!({ "inputs": { "user": "ada", "extra": 1 } }),
        )
        .await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_inputs");
    let path = format!("/v1/processes/{pid}/schedules");
    let r = lab
        .server
        .post(
            &path,
            &lab.server.admin,
            json!({ "cron": "0 3 * * *", "inputs": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = lab
        .server
        .post(
            &path,
            &lab.server.admin,
            json!({ "cron": "0 3 * * *", "inputs": { "user": "ada" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// Replaces process `pid`'s definition (named `wf`) as the admin.
async fn put_workflow(lab: &Lab, pid: &str, workflow: Value) -> warden_tests::http::Reply {
    let body = json!({ "name": "wf", "workflow": workflow });
    let path = format!("/v1/processes/{pid}");
    lab.server
        .request(
            reqwest::Method::PUT,
            &path,
            Some(&lab.server.admin),
            Some(&body),
        )
        .await
}
