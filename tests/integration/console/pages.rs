//! Administration pages in the browser: a target added by scan and confirm against a real
//! sshd (nothing pinned before the confirmation, the pinned key the server's), and a
//! credential added and replaced through the write-only field with no page or response ever
//! containing the secret.

use reqwest::StatusCode;
use serde_json::json;
use warden_tests::sshd::Sshd;

use super::{Console, http_get, http_sign_in};

#[tokio::test]
async fn adds_a_target_by_scanning_its_host_key_and_pinning_it_only_once_confirmed() {
    let c = Console::start().await;
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    c.sign_in(&c.server.admin).await;
    let b = &c.browser;
    c.page("/ui/targets").await;
    b.fill("#t-name", "web1").await.expect("name");
    b.fill("#t-address", &sshd.addr()).await.expect("address");
    b.fill("#t-tags", "web, prod").await.expect("tags");
    b.click("#scan").await.expect("scan");
    let shown = b
        .wait_for("#fingerprint")
        .await
        .expect("fingerprint")
        .text()
        .await
        .expect("text");
    let real = warden_host::targets::fingerprint(&sshd.host_key_line).expect("fingerprint");
    assert_eq!(shown, real, "the page shows the key the server offered");
    c.browser
        .screenshot("target-confirm")
        .await
        .expect("screenshot");
    // Scanned, not pinned.
    let r = c.server.get("/v1/targets/web1", &c.server.admin).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "nothing pinned before the confirmation"
    );
    b.click("#confirm").await.expect("confirm");
    b.wait_for("table.targets").await.expect("the list");
    let r = c.server.get("/v1/targets/web1", &c.server.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        warden_host::targets::fingerprint(r.body["host_key"].as_str().expect("key")).expect("fp"),
        real
    );
    assert_eq!(r.body["tags"], json!(["web", "prod"]));
    let html = c.page("/ui/targets").await;
    assert!(
        html.contains(&real),
        "the list shows the pinned fingerprint"
    );
    c.browser.screenshot("targets").await.expect("screenshot");
    let audit = c.server.audit("action=target.add").await;
    assert_eq!(audit.len(), 1, "{audit:?}");

    // A scan of a closed port shows the failure and pins nothing.
    c.page("/ui/targets").await;
    b.fill("#t-name", "ghost").await.expect("name");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr");
    b.fill("#t-address", &closed.to_string())
        .await
        .expect("address");
    b.click("#scan").await.expect("scan");
    b.wait_for("p.error").await.expect("the scan failed");
    let r = c.server.get("/v1/targets/ghost", &c.server.admin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    c.browser.close().await;
}

#[tokio::test]
async fn a_credential_secret_added_or_replaced_in_the_console_never_appears_in_any_page() {
    let c = Console::start().await;
    let secret = format!("S3cr3t-{}", warden_tests::random_secret(24));
    let replaced = format!("R3pl4ced-{}", warden_tests::random_secret(24));
    let admin = c.server.admin.clone();
    c.sign_in(&admin).await;
    let b = &c.browser;
    c.page("/ui/credentials").await;
    let field = b.wait_for("#c-secret").await.expect("secret field");
    assert_eq!(
        field.prop("value").await.expect("value").as_deref(),
        Some("")
    );
    b.fill("#c-name", "db-root").await.expect("name");
    b.fill("#c-user", "root").await.expect("user");
    b.fill("#c-secret", &secret).await.expect("secret");
    b.click("form.add button[type=submit]").await.expect("add");
    b.wait_for("p.notice").await.expect("added");
    c.browser
        .screenshot("credentials")
        .await
        .expect("screenshot");
    // Replace it through the row's write-only field.
    b.fill("#s-db-root", &replaced).await.expect("new secret");
    b.click("form.replace button[type=submit]")
        .await
        .expect("replace");
    b.wait_until_html("the replaced notice", |h| h.contains("Secret replaced."))
        .await
        .expect("replaced");
    let r = c
        .server
        .get("/v1/credentials/db-root/versions", &admin)
        .await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(2), "{}", r.text);
    // A run that uses it, so the run and audit pages have something to show.
    let process = c
        .process(
            &admin,
            json!({ "name": "uses-db", "grant": { "credentials": ["db-root"] } }),
        )
        .await;
    let run = c
        .server
        .start_run(
            &process,
            &admin,
            json!({ "mode": "handles", "credential": "db-root" }),
        )
        .await;
    c.server.wait_for_state_or_end(&run).await;
    let pages = [
        "/ui/".to_string(),
        "/ui/runs".into(),
        format!("/ui/runs/{run}"),
        "/ui/processes".into(),
        format!("/ui/processes/{process}"),
        "/ui/approvals".into(),
        "/ui/audit".into(),
        "/ui/audit/resources".into(),
        "/ui/credentials".into(),
        "/ui/targets".into(),
    ];
    for page in &pages {
        let html = c.page(page).await;
        for s in [&secret, &replaced] {
            assert!(!html.contains(s.as_str()), "{page} contains the secret");
        }
    }
    c.browser.screenshot("audit").await.expect("screenshot");
    // And no response body either, read raw (no script run, no DOM).
    let (cookie, _) = http_sign_in(&c.server.base, &admin).await;
    for page in &pages {
        let (status, _, body) = http_get(&c.server.base, &cookie, page).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for s in [&secret, &replaced] {
            assert!(
                !body.contains(s.as_str()),
                "{page} response contains the secret"
            );
        }
    }
    c.browser.close().await;
}
