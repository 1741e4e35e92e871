//! Managing triggers: who may create, see and delete them (the process's rules, down to the
//! Super Administrator who cannot see an unshared process), the secret shown once and
//! rotated, deletion answering 404 at once, and stored bodies redacted.

use reqwest::StatusCode;
use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_trigger_makes_its_url_answer_404_at_once() {
    let (server, pid) = hello_process(0).await;
    let (tid, signer) = trigger(&server, &pid, json!({ "map": { "name": "/user" } })).await;
    let event = json!({ "user": "alice" });
    assert_eq!(
        send(&server, &tid, &signer, &event).await.status,
        StatusCode::ACCEPTED
    );
    // Signed ahead of the delete, sent right after it.
    let (id, ts, body) = (event_id(), now(), event.to_string());
    let sig = signer.sign(&id, ts, &body);
    let path = format!("/v1/triggers/{tid}");
    let r = server
        .request(reqwest::Method::DELETE, &path, Some(&server.admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = deliver(&server, &tid, Some((&id, ts, &sig)), &body).await;
    r.expect_error(StatusCode::NOT_FOUND, "not_found");
    server
        .get(&path, &server.admin)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(runs_of(&server, &pid).await.len(), 1);
    // Its secret left the vault with it.
    let creds = server.get("/v1/credentials", &server.admin).await;
    assert!(!creds.text.contains(&tid), "{}", creds.text);
    let deleted = server.audit("action=trigger.delete").await;
    assert_eq!(deleted.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_process_deletes_its_triggers_and_their_secrets() {
    let (server, pid) = hello_process(0).await;
    let (tid, signer) = trigger(&server, &pid, json!({ "map": { "name": "/user" } })).await;
    let r = server
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/processes/{pid}"),
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    send(&server, &tid, &signer, &json!({ "user": "alice" }))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    server
        .get(&format!("/v1/triggers/{tid}"), &server.admin)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    let creds = server.get("/v1/credentials", &server.admin).await;
    assert!(!creds.text.contains(&tid), "{}", creds.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_is_shown_once_and_rotation_retires_the_old_one_at_once() {
    let (server, pid) = hello_process(0).await;
    let (tid, old) = trigger(&server, &pid, json!({ "map": { "name": "/user" } })).await;
    let Signer::Hmac(old_secret) = &old else {
        panic!("hmac")
    };
    let shown = server
        .get(&format!("/v1/triggers/{tid}"), &server.admin)
        .await;
    let listed = server
        .get(&format!("/v1/processes/{pid}/triggers"), &server.admin)
        .await;
    let raw = old_secret.trim_start_matches("whsec_");
    for text in [&shown.text, &listed.text] {
        assert!(!text.contains(raw), "secret shown again: {text}");
    }
    let r = server
        .post(
            &format!("/v1/triggers/{tid}/rotate-secret"),
            &server.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let new = Signer::Hmac(r.body["secret"].as_str().expect("new secret").to_string());
    let event = json!({ "user": "alice" });
    send(&server, &tid, &old, &event)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    assert_eq!(
        send(&server, &tid, &new, &event).await.status,
        StatusCode::ACCEPTED
    );
    // Neither secret is in the audit log or the data directory's clear text.
    let audit = server.get("/v1/audit?limit=1000", &server.admin).await;
    let Signer::Hmac(new_secret) = &new else {
        panic!("hmac")
    };
    for secret in [old_secret, new_secret] {
        let raw = secret.trim_start_matches("whsec_");
        assert!(!audit.text.contains(raw), "secret in the audit log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_managers_of_a_visible_process_create_see_or_delete_its_triggers() {
    let (server, pid) = hello_process(0).await;
    let (tid, _) = trigger(&server, &pid, json!({ "map": { "name": "/user" } })).await;
    let sam = server.user("sam", &["super-administrator"]).await;
    let olivia = server.user("olivia", &[]).await;
    let create = format!("/v1/processes/{pid}/triggers");
    let one = format!("/v1/triggers/{tid}");
    let body = json!({ "map": { "name": "/user" } });
    // The Super Administrator does not see the admin's unshared process, nor its triggers.
    for token in [&sam, &olivia] {
        server
            .post(&create, token, body.clone())
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
        server
            .get(&create, token)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
        server
            .get(&one, token)
            .await
            .expect_error(StatusCode::NOT_FOUND, "not_found");
        let r = server
            .request(reqwest::Method::DELETE, &one, Some(token), None)
            .await;
        r.expect_error(StatusCode::NOT_FOUND, "not_found");
    }
    // Shared with olivia: she may run the process, not view or manage its triggers.
    server.share(&pid, &server.admin, &["olivia"]).await;
    server
        .get(&one, &olivia)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    server
        .post(&create, &olivia, body.clone())
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let r = server
        .request(reqwest::Method::DELETE, &one, Some(&olivia), None)
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    let r = server
        .post(&format!("{one}/rotate-secret"), &olivia, json!({}))
        .await;
    r.expect_error(StatusCode::FORBIDDEN, "forbidden");
    // A trigger may map only inputs the manifest declares.
    let bad = json!({ "map": { "credential": "/cred" } });
    server
        .post(&create, &server.admin, bad)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid");
    let bad = json!({ "map": { "name": "user" } });
    server
        .post(&create, &server.admin, bad)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid");
    let listed = server.get(&create, &server.admin).await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_bodies_are_redacted_and_kept_only_when_asked() {
    let (server, pid) = hello_process(0).await;
    let keep = json!({ "map": { "name": "/user" }, "store_body": true });
    let (tid, signer) = trigger(&server, &pid, keep).await;
    let Signer::Hmac(secret) = &signer else {
        panic!("hmac")
    };
    let password = format!("pw-{}", warden_tests::random_secret(16));
    let event = json!({
        "user": "alice",
        "evidence": { "Password": password, "note": format!("leaked {secret}") },
    });
    let r = send(&server, &tid, &signer, &event).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let stored = server
        .get(&format!("/v1/triggers/{tid}/bodies"), &server.admin)
        .await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text);
    let items = stored.body.as_array().expect("stored events");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["run_id"], r.body["run"]["id"]);
    let body = items[0]["body"].as_str().expect("body");
    assert!(
        body.contains("alice") && body.contains("[REDACTED]"),
        "{body}"
    );
    assert!(!body.contains(&password), "{body}");
    assert!(
        !body.contains(secret.trim_start_matches("whsec_")),
        "{body}"
    );
    // A trigger that does not keep bodies keeps none.
    let (plain, signer) = trigger(&server, &pid, json!({ "map": { "name": "/user" } })).await;
    assert_eq!(
        send(&server, &plain, &signer, &event).await.status,
        StatusCode::ACCEPTED
    );
    let none = server
        .get(&format!("/v1/triggers/{plain}/bodies"), &server.admin)
        .await;
    assert_eq!(none.body, json!([]), "{}", none.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_starts_nothing_once_its_creator_is_disabled() {
    let (server, pid) = hello_process(0).await;
    let tess = server.user("tess", &["privileged-administrator"]).await;
    let r = server
        .post(
            &format!("/v1/processes/{pid}/triggers"),
            &tess,
            json!({ "map": { "name": "/user" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let tid = r.body["id"].as_str().expect("id").to_string();
    let signer = Signer::Hmac(r.body["secret"].as_str().expect("secret").to_string());
    let event = json!({ "user": "alice" });
    assert_eq!(
        send(&server, &tid, &signer, &event).await.status,
        StatusCode::ACCEPTED
    );
    let r = server
        .post("/v1/users/tess/disable", &server.admin, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    send(&server, &tid, &signer, &event)
        .await
        .expect_error(StatusCode::FORBIDDEN, "creator_inactive");
    assert_eq!(runs_of(&server, &pid).await.len(), 1);
    assert!(
        refusal_reasons(&server, &tid)
            .await
            .contains(&"creator_inactive".into())
    );
    let r = server
        .post("/v1/users/tess/enable", &server.admin, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(
        send(&server, &tid, &signer, &event).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_creates_lists_rotates_and_deletes_triggers() {
    let (server, _pid) = hello_process(0).await;
    let bin = env!("CARGO_BIN_EXE_warden-e2e");
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--server", &server.base, "--token", &server.admin]);
        let out = warden_tests::warden(bin, &all, None).expect("warden runs");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let created: serde_json::Value = serde_json::from_str(&cli(&[
        "trigger",
        "create",
        "greeter",
        "--map",
        "name=/alert/user",
        "--allow",
        "name=alice,bob",
        "--rate",
        "3/1m",
        "--max-concurrent",
        "2",
        "--dedupe",
        "/alert/user/10m",
        "--store-body",
    ]))
    .expect("json");
    let tid = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["rate"], json!({ "runs": 3, "window_secs": 60 }));
    assert_eq!(
        created["dedupe"],
        json!({ "pointer": "/alert/user", "window_secs": 600 })
    );
    assert_eq!(created["max_concurrent"], 2);
    let signer = Signer::Hmac(created["secret"].as_str().expect("secret").to_string());
    let event = json!({ "alert": { "user": "bob" } });
    assert_eq!(
        send(&server, &tid, &signer, &event).await.status,
        StatusCode::ACCEPTED
    );
    let listed = cli(&["trigger", "list", "greeter"]);
    assert!(
        listed.contains(&tid) && !listed.contains("whsec_"),
        "{listed}"
    );
    let shown = cli(&["trigger", "show", &tid]);
    assert!(
        shown.contains("/alert/user") && !shown.contains("whsec_"),
        "{shown}"
    );
    let rotated: serde_json::Value =
        serde_json::from_str(&cli(&["trigger", "rotate-secret", &tid])).expect("json");
    assert_ne!(rotated["secret"], created["secret"]);
    send(
        &server,
        &tid,
        &signer,
        &json!({ "alert": { "user": "alice" } }),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    cli(&["trigger", "delete", &tid]);
    let r = send(&server, &tid, &signer, &event).await;
    r.expect_error(StatusCode::NOT_FOUND, "not_found");
}
