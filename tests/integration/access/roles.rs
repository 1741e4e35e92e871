//! Item 6: publisher trust, grant names, and what a Super Administrator sees.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use warden_tests::http::{Server, new_key};
use warden_tests::random_secret;

use super::{audit_text, delete, hello_server, id_of, process};

// ---------------------------------------------------------------------------------------
// Item 6: publisher trust and grant names
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_managers_and_super_admins_cannot_trust_or_distrust_publishers() {
    let (server, _, _) = hello_server().await;
    server
        .role(json!({ "name": "builders", "privileges": ["ManagePrivilegedProcess"] }))
        .await;
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
    server.role(role).await;
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
    // A run holding a credential lease: the lease is invisible too.
    let (leased_run, lease) = leased_run(&server).await;
    for (method, path) in [
        (Method::GET, format!("/v1/leases/{lease}")),
        (Method::POST, format!("/v1/leases/{lease}/revoke")),
        (Method::GET, format!("/v1/runs/{leased_run}/leases")),
    ] {
        let r = server.request(method, &path, Some(&sam), None).await;
        r.expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    let seen = audit_text(&server, &sam, "").await;
    assert!(
        !seen.contains(&lease) && !seen.contains(&leased_run),
        "{seen}"
    );
    // In the resource view, of `pw` it sees only its creation, not the run's use of it.
    let uses = |view: &Value| -> usize {
        view.as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["credential"] == "pw" && r["action"] != "credential.create")
            .count()
    };
    let resources = server.get("/v1/audit/resources", &sam).await;
    assert_eq!(uses(&resources.body), 0, "{}", resources.text);
    let admins = server.get("/v1/audit/resources", &server.admin).await;
    assert!(uses(&admins.body) > 0, "positive control: {}", admins.text);
    let full = audit_text(&server, &server.admin, "").await;
    assert!(
        full.contains(&lease),
        "positive control: the admin sees the lease"
    );
    // Limit applies to what is visible, so it does not reveal hidden records by count.
    let one = server.get("/v1/audit?limit=1", &sam).await;
    assert_eq!(one.body.as_array().map(Vec::len), Some(1), "{}", one.text);

    // Shared with it, all of it appears (so the checks above could fail).
    server.share(&pid, &server.admin, &["sam"]).await;
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

/// As the admin: the probe, granted vault credential `pw`, run in `handles` mode (it
/// acquires the credential until refused); the run id and its lease id.
async fn leased_run(server: &Server) -> (String, String) {
    let key = new_key();
    server.trust("probe-pub", &key).await;
    let digest = server.publish("probe", &key).await;
    let cred = json!({ "name": "pw", "username": "nobody", "secret": random_secret(24) });
    let r = server.post("/v1/credentials", &server.admin, cred).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let p = process(
        server,
        &server.admin,
        "private-leases",
        &digest,
        json!({ "credentials": ["pw"] }),
        0,
    )
    .await;
    let pid = id_of(&p);
    let run = server
        .start_run(
            &pid,
            &server.admin,
            json!({ "mode": "handles", "credential": "pw" }),
        )
        .await;
    server.wait_for_state(&run, "failed").await;
    let leases = server
        .get(&format!("/v1/runs/{run}/leases"), &server.admin)
        .await;
    let lease = leases.body[0]["id"].as_str().expect("a lease").to_string();
    (run, lease)
}
