//! Approval states (four eyes, stale bindings, timeout and rejection paths) and who sees a
//! workflow run: the Super Administrator and the Password Auditor follow the process rules.

use std::time::Duration;

use super::*;

/// Polls run `id` until its step `path` is waiting.
async fn wait_for_gate(server: &Server, id: &str, path: &str) -> Value {
    for _ in 0..200 {
        let r = server.get(&format!("/v1/runs/{id}"), &server.admin).await;
        if step(&r.body, path)["status"] == "waiting" {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gate {path} of run {id} never opened");
}

fn gated(lab: &Lab, timeout: u64) -> Value {
    json!({ "start_at": "prep", "states": {
        "prep": lab.emit(r#"{"hosts": 2}"#, json!({"next": "gate"})),
        "gate": { "type": "approval", "approvals": 1, "timeout_seconds": timeout,
                  "on_timeout": "late", "next": "done", "comment": "delete the accounts?" },
        "done": lab.emit("approved", json!({"end": true})),
        "late": lab.emit("late", json!({"end": true}))
    } })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_state_needs_another_approver_and_refuses_a_stale_binding() {
    let lab = Lab::new().await;
    let bob = lab.server.user("bob", &["privileged-administrator"]).await;
    let pid = lab.process("gated", gated(&lab, 60)).await;
    let id = lab
        .server
        .start_run(&pid, &lab.server.admin, json!({}))
        .await;
    wait_for_gate(&lab.server, &id, "gate").await;
    let request = lab
        .server
        .get(&format!("/v1/runs/{id}/approval"), &bob)
        .await;
    assert_eq!(request.status, StatusCode::OK, "{}", request.text);
    assert_eq!(request.body["step"], "gate");
    assert_eq!(request.body["outputs"]["prep"], json!({"hosts": 2}));
    let binding = request.body["binding"]
        .as_str()
        .expect("binding")
        .to_string();
    // Who may not see the process gets nothing: not the request, not an approval.
    let sa = lab.server.user("sa", &["super-administrator"]).await;
    let auditor = lab.server.user("aud", &["password-auditor"]).await;
    for token in [&sa, &auditor] {
        let r = lab
            .server
            .get(&format!("/v1/runs/{id}/approval"), token)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        let r = lab
            .server
            .post(
                &format!("/v1/runs/{id}/approve"),
                token,
                json!({ "binding": binding }),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    }
    // The requester cannot approve their own run.
    let r = lab
        .server
        .post(
            &format!("/v1/runs/{id}/approve"),
            &lab.server.admin,
            json!({ "binding": binding }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // A binding other than the gate's is stale.
    let r = lab
        .server
        .post(
            &format!("/v1/runs/{id}/approve"),
            &bob,
            json!({ "binding": "ab".repeat(32) }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let run = lab
        .server
        .get(&format!("/v1/runs/{id}"), &lab.server.admin)
        .await
        .body;
    assert_eq!(run["state"], "running", "the refusals changed nothing");
    let r = lab
        .server
        .post(
            &format!("/v1/runs/{id}/approve"),
            &bob,
            json!({ "binding": binding }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let run = lab.server.wait_for_state_or_end(&id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["result"], "approved");
    assert_eq!(step(&run, "gate")["output"]["approved_by"], json!(["bob"]));
    let refused = lab
        .server
        .audit(&format!("run={id}&action=run.approval.refused"))
        .await;
    assert_eq!(
        refused.len(),
        2,
        "self-approval and stale binding audited: {refused:?}"
    );
    let granted = lab
        .server
        .audit(&format!("run={id}&action=run.approval.granted"))
        .await;
    assert_eq!(granted.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_timeout_takes_the_failure_path_and_a_rejection_fails_the_run() {
    let lab = Lab::new().await;
    let bob = lab.server.user("bob", &["privileged-administrator"]).await;
    let pid = lab.process("gated-short", gated(&lab, 1)).await;
    let run = lab.run(&pid, json!({})).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["result"], "late");
    let gate = step(&run, "gate");
    assert_eq!(gate["status"], "caught");
    assert_eq!(gate["error"]["kind"], "approval-timeout");
    assert!(step(&run, "done").is_null());

    let pid = lab.process("gated-reject", gated(&lab, 60)).await;
    let id = lab
        .server
        .start_run(&pid, &lab.server.admin, json!({}))
        .await;
    wait_for_gate(&lab.server, &id, "gate").await;
    let r = lab
        .server
        .post(
            &format!("/v1/runs/{id}/reject"),
            &bob,
            json!({ "reason": "no" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let run = lab.server.wait_for_state_or_end(&id).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("approval-rejected")),
        "{run}"
    );
    // Approving after the gate closed is refused.
    let r = lab
        .server
        .post(&format!("/v1/runs/{id}/approve"), &bob, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn super_administrator_and_password_auditor_see_workflow_runs_as_they_see_processes() {
    let lab = Lab::new().await;
    let sa = lab.server.user("sa", &["super-administrator"]).await;
    let auditor = lab.server.user("aud", &["password-auditor"]).await;
    let pid = lab
        .process("private-flow", json!({ "start_at": "a", "states": { "a": lab.emit("secret-ish", json!({"end": true})) } }))
        .await;
    let run = lab.run(&pid, json!({})).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let id = run["id"].as_str().expect("id");
    let child = step(&run, "a")["attempts"][0]["run_id"]
        .as_str()
        .expect("child");
    for token in [&sa, &auditor] {
        for run_id in [id, child] {
            let r = lab.server.get(&format!("/v1/runs/{run_id}"), token).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
            let r = lab
                .server
                .get(&format!("/v1/runs/{run_id}/approval"), token)
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        }
        let r = lab.server.get("/v1/runs", token).await;
        assert!(
            !r.text.contains(id) && !r.text.contains(child),
            "{}",
            r.text
        );
        let r = lab.server.get(&format!("/v1/audit?run={id}"), token).await;
        assert!(!r.text.contains("workflow.step"), "{}", r.text);
    }
    // Shared with the Super Administrator, it sees the run.
    lab.server.share(&pid, &lab.server.admin, &["sa"]).await;
    let r = lab.server.get(&format!("/v1/runs/{id}"), &sa).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
