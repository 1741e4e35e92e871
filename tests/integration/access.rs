//! Issue 10, items 6 and 7, over real HTTP: roles no wider than the seed's model, and
//! revocation. Each test is written as the attacker would try it, and fails on a server
//! without the rule:
//! - a custom Manage Privileged Process role trusting its own publisher, or naming in a
//!   grant a credential or target it was never granted (create and update);
//! - a Super Administrator reading another administrator's unshared process through the
//!   audit, the resource view, run routes, SSE, leases or approvals;
//! - an administrator minting a user's token to run or approve as them;
//! - the creator of a schedule approving the runs it fires;
//! - a Password Auditor reading free text (paths, target stderr) in the resource view;
//! - revoked, expired, disabled and deleted users' tokens, and distrusted publishers'
//!   modules (new runs, scheduled runs and runs already awaiting approval).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use warden_tests::http::{PATIENCE, Reply, Server, new_key};
use warden_tests::random_secret;

/// The id of a created thing, from a 201 reply.
fn id_of(r: &Reply) -> String {
    assert!(r.status.is_success(), "{} {}", r.status, r.text);
    r.body["id"].as_str().expect("id").to_string()
}

/// A server with `hello` published by publisher `acme`; its digest.
async fn hello_server() -> (Server, String, ed25519_dalek::SigningKey) {
    let server = Server::start().await;
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("hello", &key).await;
    (server, digest, key)
}

/// Creates a process as `token`'s user with `grant` and `approvals`; the reply.
async fn process(
    server: &Server,
    token: &str,
    name: &str,
    digest: &str,
    grant: Value,
    approvals: u32,
) -> Reply {
    let body = json!({ "name": name, "module_digest": digest, "grant": grant,
        "required_approvals": approvals });
    server.post("/v1/processes", token, body).await
}

async fn delete(server: &Server, path: &str, token: &str) -> Reply {
    server
        .request(Method::DELETE, path, Some(token), None)
        .await
}

/// Every audit record `token` may see, as text.
async fn audit_text(server: &Server, token: &str, query: &str) -> String {
    let r = server.get(&format!("/v1/audit?{query}"), token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.text
}

// ---------------------------------------------------------------------------------------
// Item 6: publisher trust and grant names
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_managers_and_super_admins_cannot_trust_or_distrust_publishers() {
    let (server, _, _) = hello_server().await;
    let r = server
        .post(
            "/v1/roles",
            &server.admin,
            json!({ "name": "builders", "privileges": ["ManagePrivilegedProcess"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let mona = server.user("mona", &["builders"]).await;
    let sam = server.user("sam", &["super-administrator"]).await;
    let own_key = new_key();
    let body =
        json!({ "name": "mine", "public_key": hex::encode(own_key.verifying_key().as_bytes()) });
    for (who, token) in [("mona", &mona), ("sam", &sam)] {
        let r = server.post("/v1/publishers", token, body.clone()).await;
        r.expect_error(StatusCode::FORBIDDEN, "forbidden");
        let r = delete(&server, "/v1/publishers/acme", token).await;
        r.expect_error(StatusCode::FORBIDDEN, "forbidden");
        let denials = server
            .audit(&format!("actor={who}&action=api.TrustPublishers"))
            .await;
        assert_eq!(denials.len(), 2, "{who}: {denials:?}");
    }
    // The key never became trusted: a module signed with it is refused at upload.
    let signed = warden_tests::http::signed(
        "hello",
        &warden_tests::http::manifest_text("hello"),
        &own_key,
    );
    let r = server
        .post_raw("/v1/modules", &mona, "application/wasm", signed)
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "untrusted_publisher");
    let publishers = server.get("/v1/publishers", &server.admin).await;
    assert_eq!(
        publishers.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        publishers.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_may_name_only_credentials_and_targets_granted_to_the_authors_role() {
    let (server, digest, _) = hello_server().await;
    let role = json!({ "name": "db-team", "privileges": ["ManagePrivilegedProcess"],
        "credentials": ["db-pw"], "targets": ["db-1"] });
    let r = server.post("/v1/roles", &server.admin, role).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let mona = server.user("mona", &["db-team"]).await;

    let granted = json!({ "credentials": ["db-pw"], "targets": ["db-1"] });
    let p = process(&server, &mona, "db-check", &digest, granted.clone(), 0).await;
    let id = id_of(&p);

    // Create: every way to name something not granted.
    for (n, grant, missing) in [
        (
            1,
            json!({ "credentials": ["root-pw"], "targets": ["db-1"] }),
            "credential 'root-pw'",
        ),
        (
            2,
            json!({ "credentials": ["db-pw"], "targets": ["web-1"] }),
            "target 'web-1'",
        ),
        (3, json!({ "targets": ["db-1", "db-2"] }), "target 'db-2'"),
        (
            4,
            json!({ "credentials": ["db-pw"], "targets": ["db-1"], "rotations": ["root-pw"] }),
            "credential 'root-pw'",
        ),
        // A granted target name is not a credential name.
        (5, json!({ "credentials": ["db-1"] }), "credential 'db-1'"),
    ] {
        let r = process(&server, &mona, &format!("wide-{n}"), &digest, grant, 0).await;
        r.expect_error(StatusCode::FORBIDDEN, "grant_not_permitted");
        assert!(r.text.contains(missing), "{n}: {}", r.text);
    }
    // Update: widening one's own process is refused and changes nothing.
    let wider = json!({ "name": "db-check", "module_digest": digest,
        "grant": { "credentials": ["db-pw", "root-pw"], "targets": ["db-1"] } });
    let r = server
        .request(
            Method::PUT,
            &format!("/v1/processes/{id}"),
            Some(&mona),
            Some(&wider),
        )
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "grant_not_permitted");
    let now = server.get(&format!("/v1/processes/{id}"), &mona).await;
    assert_eq!(
        now.body["grant"]["credentials"],
        json!(["db-pw"]),
        "{}",
        now.text
    );
    assert_eq!(now.body["revision"], 1);
    let denials = server.audit("actor=mona&action=api.UseCredential").await;
    assert_eq!(denials.len(), 4, "{denials:?}");

    // Taking a grant away from the role takes it away from the next edit too.
    let r = server
        .request(
            Method::PUT,
            "/v1/roles/db-team/grants",
            Some(&server.admin),
            Some(&json!({ "credentials": [], "targets": ["db-1"] })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let same = json!({ "name": "db-check", "module_digest": digest, "grant": granted });
    let r = server
        .request(
            Method::PUT,
            &format!("/v1/processes/{id}"),
            Some(&mona),
            Some(&same),
        )
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "grant_not_permitted");
    // Only those who manage users set a role's grants.
    let r = server
        .request(
            Method::PUT,
            "/v1/roles/db-team/grants",
            Some(&mona),
            Some(&json!({ "credentials": ["root-pw"] })),
        )
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    // Administrators name anything.
    let any = json!({ "credentials": ["root-pw"], "targets": ["web-1"] });
    let r = process(&server, &server.admin, "admin-wide", &digest, any, 0).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

// ---------------------------------------------------------------------------------------
// Item 6: the Super Administrator sees nothing of an unshared administrator's process
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn super_admin_sees_no_trace_of_another_admins_unshared_process_anywhere() {
    let (server, digest, _) = hello_server().await;
    let sam = server.user("sam", &["super-administrator"]).await;
    let marker = format!("marker{}", random_secret(12));
    let p = process(&server, &server.admin, "private-ops", &digest, json!({}), 0).await;
    let pid = id_of(&p);
    let run = server
        .start_run(&pid, &server.admin, json!({ "name": marker }))
        .await;
    server.wait_for_state(&run, "succeeded").await;
    // A run awaiting approval, and a schedule: both name the process.
    let gated = process(
        &server,
        &server.admin,
        "private-gated",
        &digest,
        json!({}),
        1,
    )
    .await;
    let gid = id_of(&gated);
    let waiting = server
        .start_run(&gid, &server.admin, json!({ "name": marker }))
        .await;
    let schedule = server
        .post(
            &format!("/v1/processes/{pid}/schedules"),
            &server.admin,
            json!({ "cron": "0 0 1 1 *", "catch_up": false }),
        )
        .await;
    let sid = id_of(&schedule);
    // The admin (positive control) sees all of it.
    let full = audit_text(&server, &server.admin, "").await;
    for needle in [&pid, &gid, &run, &waiting, &sid] {
        assert!(full.contains(needle.as_str()), "admin misses {needle}");
    }
    // The super administrator: not through any filter of the audit...
    let hidden = [&pid, &gid, &run, &waiting, &sid, &marker];
    for query in [
        String::new(),
        format!("run={run}"),
        format!("run={waiting}"),
        "actor=admin".to_string(),
        "action=run.succeeded".to_string(),
        "action=process.create".to_string(),
        "action=schedule.create".to_string(),
        "since_ms=0&until_ms=99999999999999".to_string(),
        "limit=10000".to_string(),
    ] {
        let seen = audit_text(&server, &sam, &query).await;
        for needle in hidden {
            assert!(
                !seen.contains(needle.as_str()),
                "?{query} shows {needle}: {seen}"
            );
        }
    }
    let resources = server.get("/v1/audit/resources", &sam).await;
    assert_eq!(resources.status, StatusCode::OK);
    for needle in hidden {
        assert!(!resources.text.contains(needle.as_str()));
    }
    // ...nor the run routes, its event stream, leases or approval.
    for path in [
        format!("/v1/runs/{run}"),
        format!("/v1/runs/{run}/events"),
        format!("/v1/runs/{run}/leases"),
        format!("/v1/runs/{waiting}/approval"),
        format!("/v1/processes/{pid}/schedules"),
    ] {
        let r = server.get(&path, &sam).await;
        r.expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    let r = server
        .post(&format!("/v1/runs/{waiting}/approve"), &sam, json!({}))
        .await;
    r.expect_error(StatusCode::NOT_FOUND, "not_found");
    let listed = server.get("/v1/runs", &sam).await;
    assert!(!listed.text.contains(&run) && !listed.text.contains(&waiting));
    // Limit applies to what is visible, so it does not reveal hidden records by count.
    let one = server.get("/v1/audit?limit=1", &sam).await;
    assert_eq!(one.body.as_array().map(Vec::len), Some(1), "{}", one.text);

    // Shared with it, all of it appears (so the checks above could fail).
    let r = server
        .post(
            &format!("/v1/processes/{pid}/share"),
            &server.admin,
            json!({ "users": ["sam"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let seen = audit_text(&server, &sam, &format!("run={run}")).await;
    assert!(
        seen.contains("run.succeeded") && seen.contains(&run),
        "{seen}"
    );
    let r = server.get(&format!("/v1/runs/{run}"), &sam).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let seen = audit_text(&server, &sam, "action=schedule.create").await;
    assert!(seen.contains(&sid), "{seen}");
    // The other process stays hidden.
    let seen = audit_text(&server, &sam, "").await;
    assert!(!seen.contains(&waiting) && !seen.contains(&gid), "{seen}");
}

// ---------------------------------------------------------------------------------------
// Item 6: minting a token for someone else
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_for_another_user_cannot_run_or_approve_as_them() {
    let (server, digest, _) = hello_server().await;
    let sam = server.user("sam", &["super-administrator"]).await;
    let r = server
        .post(
            "/v1/roles",
            &server.admin,
            json!({ "name": "approvers", "privileges": ["ApproveRun"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
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
    let r = server
        .post(
            &format!("/v1/processes/{pid}/share"),
            &sam,
            json!({ "users": ["bob"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
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
    // Bob's own token approves (the four-eyes path still works for the real bob).
    let r = server
        .post(&format!("/v1/runs/{run}/approve"), &bob, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
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
    let r = server
        .post(
            "/v1/roles",
            &server.admin,
            json!({ "name": "approvers", "privileges": ["ApproveRun"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let carol = server.user("carol", &["approvers"]).await;
    let p = process(&server, &server.admin, "nightly", &digest, json!({}), 1).await;
    let pid = id_of(&p);
    let r = server
        .post(
            &format!("/v1/processes/{pid}/share"),
            &server.admin,
            json!({ "users": ["carol"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
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

// ---------------------------------------------------------------------------------------
// Item 7: revocation, disable, delete, expiry
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_and_disabled_or_deleted_users_are_refused_at_once() {
    let (server, digest, _) = hello_server().await;
    let bob = server.user("bob", &[]).await;
    let alice = server.user("alice", &[]).await;
    let sam = server.user("sam", &["super-administrator"]).await;
    let p = process(&server, &server.admin, "greet", &digest, json!({}), 0).await;
    let pid = id_of(&p);
    let r = server
        .post(
            &format!("/v1/processes/{pid}/share"),
            &server.admin,
            json!({ "users": ["bob"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let run = server.start_run(&pid, &bob, json!({})).await;
    server.wait_for_state(&run, "succeeded").await;

    // Listing: metadata only, never a secret.
    let list = server.get("/v1/users/bob/tokens", &bob).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let secret = bob.rsplit('_').next().unwrap_or_default();
    assert!(!list.text.contains(secret), "{}", list.text);
    let ids: Vec<String> = list
        .body
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    let own_id = bob.split('_').nth(1).expect("id").to_string();
    assert!(ids.contains(&own_id), "{ids:?}");
    // Others' tokens: not listed or revoked by a peer.
    server
        .get("/v1/users/bob/tokens", &alice)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    delete(&server, &format!("/v1/tokens/{own_id}"), &alice)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(server.get("/v1/whoami", &bob).await.status, StatusCode::OK);

    // Revoked by its user: refused on the very next request.
    let spare = server
        .post("/v1/users/bob/tokens", &bob, json!({ "label": "spare" }))
        .await;
    assert_eq!(spare.body["kind"], "full", "{}", spare.text);
    let spare_token = spare.body["token"].as_str().expect("token").to_string();
    let spare_id = spare.body["id"].as_str().expect("id").to_string();
    let r = delete(&server, &format!("/v1/tokens/{spare_id}"), &bob).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    server
        .get("/v1/whoami", &spare_token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    delete(&server, &format!("/v1/tokens/{spare_id}"), &bob)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let revokes = server.audit("action=token.revoke").await;
    assert_eq!(revokes.len(), 1, "{revokes:?}");

    // Disabled: refused at once; enabled again: works.
    let r = server
        .post("/v1/users/bob/disable", &alice, json!({}))
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    let r = server.post("/v1/users/bob/disable", &sam, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = server
        .post(&format!("/v1/processes/{pid}/runs"), &bob, json!({}))
        .await;
    r.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let r = server.post("/v1/users/bob/enable", &sam, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(server.get("/v1/whoami", &bob).await.status, StatusCode::OK);

    // A super administrator cannot disable or delete an administrator; nobody themselves.
    let r = server
        .post("/v1/users/admin/disable", &sam, json!({}))
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    delete(&server, "/v1/users/admin", &sam)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    delete(&server, "/v1/users/admin", &server.admin)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");

    // Deleted: every token refused, the name never reused, the runs still bob's.
    let r = delete(&server, "/v1/users/bob", &sam).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    server
        .get("/v1/whoami", &bob)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let r = server
        .post(
            "/v1/users",
            &server.admin,
            json!({ "name": "bob", "roles": [] }),
        )
        .await;
    r.expect_error(StatusCode::CONFLICT, "conflict");
    server
        .post("/v1/users/bob/tokens", &server.admin, json!({}))
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    let got = server.get(&format!("/v1/runs/{run}"), &server.admin).await;
    assert_eq!(got.body["actor"], "bob", "{}", got.text);
    for action in ["user.disable", "user.enable", "user.delete"] {
        assert_eq!(
            server.audit(&format!("action={action}")).await.len(),
            1,
            "{action}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_and_its_use_audited() {
    let server = Server::start().await;
    let bob = server.user("bob", &[]).await;
    let short = server
        .post("/v1/users/bob/tokens", &bob, json!({ "ttl_secs": 1 }))
        .await;
    assert_eq!(short.status, StatusCode::CREATED, "{}", short.text);
    let token = short.body["token"].as_str().expect("token").to_string();
    let id = short.body["id"].as_str().expect("id").to_string();
    assert_eq!(
        server.get("/v1/whoami", &token).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server
        .get("/v1/whoami", &token)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_expired");
    let expired = server.audit("action=token.expired").await;
    assert!(
        expired
            .iter()
            .any(|r| r["actor"] == "bob" && r["detail"].as_str().is_some_and(|d| d.contains(&id))),
        "{expired:?}"
    );
    // Lifetimes are bounded, for full and enrollment tokens alike.
    for (path, token, ttl) in [
        ("/v1/users/bob/tokens", &bob, 366 * 86_400),
        ("/v1/users/bob/tokens", &bob, 0),
        ("/v1/users/bob/tokens", &server.admin, 8 * 86_400),
    ] {
        let r = server.post(path, token, json!({ "ttl_secs": ttl })).await;
        r.expect_error(StatusCode::BAD_REQUEST, "invalid");
    }
    // The default is 30 days.
    let default = server.post("/v1/users/bob/tokens", &bob, json!({})).await;
    let tokens = server.get("/v1/users/bob/tokens", &bob).await;
    let record = tokens
        .body
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == default.body["id"])
        .cloned()
        .unwrap_or_default();
    let life =
        record["expires_ms"].as_u64().unwrap_or(0) - record["created_ms"].as_u64().unwrap_or(0);
    assert_eq!(life, 30 * 86_400_000, "{record}");
}

// ---------------------------------------------------------------------------------------
// Item 7: distrusting a publisher stops its modules
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distrusted_publishers_module_starts_no_run_scheduled_or_approved() {
    let (server, digest, key) = hello_server().await;
    let carol = server.user("carol", &["privileged-administrator"]).await;
    let p = process(&server, &server.admin, "greet", &digest, json!({}), 0).await;
    let pid = id_of(&p);
    let gated = process(&server, &server.admin, "gated", &digest, json!({}), 1).await;
    let gid = id_of(&gated);
    let before = server.start_run(&pid, &server.admin, json!({})).await;
    server.wait_for_state(&before, "succeeded").await;
    let waiting = server.start_run(&gid, &server.admin, json!({})).await;

    let r = delete(&server, "/v1/publishers/acme", &server.admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(server.audit("action=publisher.distrust").await.len(), 1);
    delete(&server, "/v1/publishers/acme", &server.admin)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // A new run: refused with a clear error, audited.
    let r = server
        .post(
            &format!("/v1/processes/{pid}/runs"),
            &server.admin,
            json!({}),
        )
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "untrusted_module");
    assert!(r.text.contains("unknown publisher"), "{}", r.text);
    let refused = server.audit("action=run.refused").await;
    assert!(
        refused
            .iter()
            .any(|r| r["detail"].as_str().is_some_and(|d| d.contains(&pid))),
        "{refused:?}"
    );
    // A run already awaiting approval: the approval is refused, audited, and nothing runs.
    let r = server
        .post(&format!("/v1/runs/{waiting}/approve"), &carol, json!({}))
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "untrusted_module");
    let refusals = server
        .audit(&format!("run={waiting}&action=run.approval.refused"))
        .await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let request = server
        .get(&format!("/v1/runs/{waiting}/approval"), &carol)
        .await;
    assert!(
        request.body["blocked"]
            .as_str()
            .is_some_and(|b| b.contains("refused")),
        "{}",
        request.text
    );
    let still = server
        .get(&format!("/v1/runs/{waiting}"), &server.admin)
        .await;
    assert_eq!(still.body["state"], "awaiting-approval");
    // A scheduled run: the firing fails, audited.
    let schedule = server
        .post(
            &format!("/v1/processes/{pid}/schedules"),
            &server.admin,
            json!({ "cron": "* * * * * *" }),
        )
        .await;
    // Creating a schedule resolves the module too.
    schedule.expect_error(StatusCode::FORBIDDEN, "untrusted_module");
    // The same publisher name with another key does not revive the old signatures.
    server.trust("acme", &new_key()).await;
    let r = server
        .post(
            &format!("/v1/processes/{pid}/runs"),
            &server.admin,
            json!({}),
        )
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "untrusted_module");
    // Trusting the real key again lets it run (the refusals above were about trust).
    let r = delete(&server, "/v1/publishers/acme", &server.admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    server.trust("acme", &key).await;
    let after = server.start_run(&pid, &server.admin, json!({})).await;
    server.wait_for_state(&after, "succeeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_firing_a_distrusted_module_fails_audited() {
    let (server, digest, _) = hello_server().await;
    let p = process(&server, &server.admin, "tick", &digest, json!({}), 0).await;
    let pid = id_of(&p);
    let schedule = server
        .post(
            &format!("/v1/processes/{pid}/schedules"),
            &server.admin,
            json!({ "cron": "* * * * * *" }),
        )
        .await;
    let sid = id_of(&schedule);
    let r = delete(&server, "/v1/publishers/acme", &server.admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let failed = server.audit("action=schedule.failed").await;
        if failed.iter().any(|r| {
            r["actor"] == format!("schedule:{sid}")
                && r["decision"]["reason"]
                    .as_str()
                    .is_some_and(|d| d.contains("unknown publisher"))
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no schedule.failed: {failed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = format!("/v1/processes/{pid}/schedules/{sid}");
    assert_eq!(
        delete(&server, &path, &server.admin).await.status,
        StatusCode::NO_CONTENT
    );
}

// ---------------------------------------------------------------------------------------
// Item 7: the CLI for all of it
// ---------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// Runs `warden ARGS --server BASE --token TOKEN`; (exit code, stdout, stderr).
async fn cli(base: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend([
        "--server".into(),
        base.into(),
        "--token".into(),
        token.into(),
    ]);
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        warden_tests::warden(BIN, &refs, None).expect("warden runs")
    })
    .await
    .expect("cli task");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_enrolls_lists_revokes_disables_deletes_and_distrusts() {
    let (server, _, _) = hello_server().await;
    let base = server.base.clone();
    let (code, enrollment, err) = cli(
        &base,
        &server.admin,
        &["user", "create", "carl", "--role", "password-auditor"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(enrollment.starts_with("wdn_"), "{enrollment}");
    // The enrollment token cannot list anything; it mints carl's own token once.
    let (code, _, err) = cli(&base, &enrollment, &["publisher", "list"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("enrollment_token"), "{err}");
    let (code, own, err) = cli(
        &base,
        &enrollment,
        &["token", "create", "--user", "carl", "--ttl", "2h"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(own.starts_with("wdn_") && own != enrollment);
    let (code, _, _) = cli(&base, &enrollment, &["token", "create", "--user", "carl"]).await;
    assert_ne!(code, 0, "an enrollment token is single-use");
    let (code, listed, err) = cli(&base, &own, &["token", "list"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&listed).expect("json");
    let own_id = own.split('_').nth(1).expect("id");
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t["id"] == own_id)),
        "{listed}"
    );
    assert!(
        !listed
            .to_string()
            .contains(own.rsplit('_').next().unwrap_or("-"))
    );
    // A second token, revoked from the CLI, stops at once.
    let (_, spare, _) = cli(&base, &own, &["token", "create"]).await;
    let spare_id = spare.split('_').nth(1).expect("id").to_string();
    let (code, _, err) = cli(&base, &own, &["token", "revoke", &spare_id]).await;
    assert_eq!(code, 0, "{err}");
    server
        .get("/v1/whoami", &spare)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // Carl may not distrust publishers or disable users.
    let (code, _, err) = cli(&base, &own, &["publisher", "distrust", "acme"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
    let (code, _, err) = cli(&base, &own, &["user", "disable", "admin"]).await;
    assert!(code != 0 && err.contains("403"), "{err}");
    // The administrator disables, then deletes carl; distrusts acme.
    let (code, _, err) = cli(&base, &server.admin, &["user", "disable", "carl"]).await;
    assert_eq!(code, 0, "{err}");
    server
        .get("/v1/audit/resources", &own)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let (code, _, err) = cli(&base, &server.admin, &["user", "delete", "carl"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&base, &server.admin, &["user", "enable", "carl"]).await;
    assert!(code != 0 && err.contains("409"), "{err}");
    let (code, _, err) = cli(&base, &server.admin, &["publisher", "distrust", "acme"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, listed, err) = cli(&base, &server.admin, &["publisher", "list"]).await;
    assert_eq!((code, listed.as_str()), (0, "[]"), "{err}");
}
