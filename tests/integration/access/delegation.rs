//! Item 6: minting tokens for others, schedule creators as requesters, the auditor's view.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use warden_tests::http::{PATIENCE, Server, new_key};
use warden_tests::random_secret;

use super::{delete, hello_server, id_of, process};

// ---------------------------------------------------------------------------------------
// Item 6: minting a token for someone else
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_for_another_user_cannot_run_or_approve_as_them() {
    let (server, digest, _) = hello_server().await;
    let sam = server.user("sam", &["super-administrator"]).await;
    server
        .role(json!({ "name": "approvers", "privileges": ["ApproveRun"] }))
        .await;
    let r = server
        .post(
            "/v1/users",
            &server.admin,
            json!({ "name": "bob", "roles": ["approvers"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Sam's own process, shared with bob only, needing one approval.
    let p = process(&server, &sam, "sams", &digest, json!({}), 1).await;
    let pid = id_of(&p);
    server.share(&pid, &sam, &["bob"]).await;
    let run = server.start_run(&pid, &sam, json!({})).await;

    // Sam (ManageUsers) mints "bob's" token: an enrollment token, good for nothing else.
    let minted = server.post("/v1/users/bob/tokens", &sam, json!({})).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.text);
    assert_eq!(minted.body["kind"], "enrollment");
    let as_bob = minted.body["token"].as_str().expect("token").to_string();
    for (method, path, body) in [
        (
            Method::POST,
            format!("/v1/runs/{run}/approve"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/processes/{pid}/runs"),
            Some(json!({})),
        ),
        (Method::GET, "/v1/processes".to_string(), None),
        (Method::GET, "/v1/whoami".to_string(), None),
        (
            Method::DELETE,
            "/v1/tokens/0000000000000000".to_string(),
            None,
        ),
    ] {
        let r = server
            .request(method, &path, Some(&as_bob), body.as_ref())
            .await;
        r.expect_error(StatusCode::FORBIDDEN, "enrollment_token");
    }
    let approval = server.get(&format!("/v1/runs/{run}/approval"), &sam).await;
    assert_eq!(approval.body["valid_approvals"], 0, "{}", approval.text);
    // The audit names who minted it.
    let enrolls = server.audit("action=token.enroll").await;
    assert!(
        enrolls.iter().any(|r| r["actor"] == "sam"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("for bob minted by sam"))),
        "{enrolls:?}"
    );
    // Whoever redeems it consumes it: the second redemption (bob's, here) fails, which is
    // how a user notices; the redeemed token records the enrollment's minter.
    let first = server.redeem("bob", &as_bob).await;
    let again = server
        .post("/v1/users/bob/tokens", &as_bob, json!({}))
        .await;
    again.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let tokens = server.get("/v1/users/bob/tokens", &first).await;
    assert!(
        tokens.text.contains("\"enrolled_by\":\"sam\""),
        "{}",
        tokens.text
    );
    let issued = server.audit("action=token.issue").await;
    assert!(
        issued.iter().any(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("redeeming an enrollment by sam"))),
        "{issued:?}"
    );
    // Nobody mints for a user they may not manage; a plain user not even for others.
    let bob = first;
    let r = server.post("/v1/users/sam/tokens", &bob, json!({})).await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    let r = server.post("/v1/users/admin/tokens", &sam, json!({})).await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    // A token minted with the redeemed one keeps the trail back to the enrollment, so
    // "laundering" it through a second mint does not hide who once held the secret.
    let second = server.post("/v1/users/bob/tokens", &bob, json!({})).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    let bob = second.body["token"].as_str().expect("token").to_string();
    let tokens = server.get("/v1/users/bob/tokens", &bob).await;
    let with_trail = tokens
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["enrolled_by"] == "sam");
    assert_eq!(with_trail.count(), 2, "{}", tokens.text);
    // Bob's token approves (the four-eyes path works for the real bob), and the approval
    // record says which token, enrolled by whom: whoever redeemed sam's enrollment first
    // (sam himself, say) stays attributable.
    let r = server
        .post(&format!("/v1/runs/{run}/approve"), &bob, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let granted = server
        .audit(&format!("run={run}&action=run.approval.granted"))
        .await;
    assert!(
        granted.iter().any(|r| r["actor"] == "bob"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("(enrolled by sam)"))),
        "{granted:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Item 6: the creator of a schedule is the requester of its runs
// ---------------------------------------------------------------------------------------

/// Polls `/v1/runs?process=...` until a run awaits approval; its id.
async fn awaiting_run(server: &Server, process: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = server
            .get(
                &format!("/v1/runs?process={process}&state=awaiting-approval"),
                &server.admin,
            )
            .await;
        if let Some(id) = r.body[0]["id"].as_str() {
            return id.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled run: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creator_of_a_schedule_cannot_approve_or_reject_the_runs_it_fires() {
    let (server, digest, _) = hello_server().await;
    server
        .role(json!({ "name": "approvers", "privileges": ["ApproveRun"] }))
        .await;
    let carol = server.user("carol", &["approvers"]).await;
    let p = process(&server, &server.admin, "nightly", &digest, json!({}), 1).await;
    let pid = id_of(&p);
    server.share(&pid, &server.admin, &["carol"]).await;
    let schedule = server
        .post(
            &format!("/v1/processes/{pid}/schedules"),
            &server.admin,
            json!({ "cron": "* * * * * *" }),
        )
        .await;
    let sid = id_of(&schedule);
    let run = awaiting_run(&server, &pid).await;
    let path = format!("/v1/processes/{pid}/schedules/{sid}");
    assert_eq!(
        delete(&server, &path, &server.admin).await.status,
        StatusCode::NO_CONTENT
    );
    // The gap this closes: the requester is "schedule:<id>", not the admin who created it.
    let got = server.get(&format!("/v1/runs/{run}"), &server.admin).await;
    assert_eq!(got.body["actor"], format!("schedule:{sid}"), "{}", got.text);

    // With the schedule gone its requester cannot be established: nobody approves.
    let r = server
        .post(&format!("/v1/runs/{run}/approve"), &carol, json!({}))
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(r.text.contains("no-requester"), "{}", r.text);

    // A live schedule: its creator is refused, another approver is not.
    let schedule = server
        .post(
            &format!("/v1/processes/{pid}/schedules"),
            &server.admin,
            json!({ "cron": "* * * * * *" }),
        )
        .await;
    let sid = id_of(&schedule);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let run = loop {
        let r = server
            .get(
                &format!("/v1/runs?process={pid}&state=awaiting-approval"),
                &server.admin,
            )
            .await;
        let mine = r
            .body
            .as_array()
            .into_iter()
            .flatten()
            .find(|run| run["actor"] == format!("schedule:{sid}"));
        if let Some(id) = mine.and_then(|run| run["id"].as_str()) {
            break id.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run of the new schedule"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let path = format!("/v1/processes/{pid}/schedules/{sid}");
    for action in ["approve", "reject"] {
        let r = server
            .post(
                &format!("/v1/runs/{run}/{action}"),
                &server.admin,
                json!({}),
            )
            .await;
        r.expect_error(StatusCode::FORBIDDEN, "forbidden");
        assert!(r.text.contains("no-self-approval"), "{}", r.text);
    }
    let refused = server
        .audit(&format!("run={run}&action=run.approval.refused"))
        .await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    let r = server
        .post(&format!("/v1/runs/{run}/approve"), &carol, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["started"], true, "{}", r.text);
    assert_eq!(
        delete(&server, &path, &server.admin).await.status,
        StatusCode::NO_CONTENT
    );
}

// ---------------------------------------------------------------------------------------
// Item 6: the Password Auditor's view carries no free text
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_auditor_view_has_no_paths_or_target_errors() {
    use warden_tests::sshd::{Sshd, TestUser};
    let server = Server::start().await;
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("probe", &key).await;
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let user = TestUser::create("wac").expect("user");
    let target = json!({ "name": "t0", "address": sshd.addr(), "host_key": sshd.host_key_line });
    let r = server.post("/v1/targets", &server.admin, target).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let cred = json!({ "name": "pw", "username": user.name, "secret": user.password });
    let r = server.post("/v1/credentials", &server.admin, cred).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // A transfer into a directory that does not exist: the target's error names the path.
    let secret_dir = format!("/srv/wac-{}", random_secret(10).to_lowercase());
    let grant = json!({ "credentials": ["pw"], "targets": ["t0"], "paths": [secret_dir] });
    let p = process(&server, &server.admin, "xfer", &digest, grant, 0).await;
    let pid = id_of(&p);
    let inputs = json!({ "mode": "transfer", "credential": "pw", "target": "t0",
        "path": format!("{secret_dir}/deep/file.txt"), "content": "x" });
    let run = server.start_run(&pid, &server.admin, inputs).await;
    server.wait_for_state(&run, "succeeded").await;
    // Positive control: the full audit holds the path in the failed call's outcome.
    let full = server.audit(&format!("run={run}")).await;
    let failed: Vec<_> = full
        .iter()
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("transfer"))
        })
        .collect();
    assert!(!failed.is_empty(), "{full:?}");
    let full_text = serde_json::to_string(&failed).unwrap_or_default();
    assert!(full_text.contains(&secret_dir), "{full_text}");

    let pat = server.user("pat", &["password-auditor"]).await;
    let view = server.get("/v1/audit/resources", &pat).await;
    assert_eq!(view.status, StatusCode::OK, "{}", view.text);
    assert!(!view.text.contains(&secret_dir), "{}", view.text);
    assert!(!view.text.contains(&run), "{}", view.text);
    let records = view.body.as_array().expect("records");
    let transfers: Vec<_> = records
        .iter()
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("transfer"))
        })
        .collect();
    assert!(!transfers.is_empty(), "{}", view.text);
    let allowed = [
        "seq",
        "time_ms",
        "actor",
        "action",
        "target",
        "credential",
        "decision",
        "policy",
        "outcome",
    ];
    for record in records {
        for (field, value) in record.as_object().expect("object") {
            assert!(allowed.contains(&field.as_str()), "field {field}: {record}");
            if let Some(text) = value.as_str() {
                assert!(!text.contains(' '), "free text in {field}: {record}");
            }
        }
        let outcome = record["outcome"].as_str().unwrap_or_default();
        assert!(
            ["ok", "denied", "revoked", "failed"].contains(&outcome),
            "{record}"
        );
    }
    assert!(
        transfers.iter().any(|r| r["outcome"] == "failed"),
        "{transfers:?}"
    );
    // The auditor still has no full audit.
    server
        .get("/v1/audit", &pat)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
}
