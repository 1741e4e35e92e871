//! Item 7: revoked, expired, disabled and deleted accounts; distrusted publishers; the CLI.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::http::{PATIENCE, Server, new_key};

use super::{delete, hello_server, id_of, process};

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
    server.share(&pid, &server.admin, &["bob"]).await;
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
