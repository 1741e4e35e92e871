//! Minting secrets from the console, against a real `warden serve` process whose log is kept:
//! an API token for oneself, an enrollment token for another user, and a bridge enrolment
//! token are each shown exactly once — in the page that answers the post — and in no other
//! page, no response header and no line of the server's log; each one works. Refused: a user
//! minting another user's token without the right to manage them, a bridge token without
//! `ManageTargets`, and a mint posted without the CSRF token (nothing minted).

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::Value;
use warden_tests::browser::Browser;
use warden_tests::http::{ServeChild, init_data_dir, new_key};

use super::{BIN, Console, csrf_of, http_sign_in, raw_client};

/// A console over a `warden serve` child whose stderr goes to the returned log file.
async fn console_over_process(tmp: &tempfile::TempDir) -> (ServeChild, Console, PathBuf) {
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let log = tmp.path().join("serve.log");
    let process = ServeChild::plain(BIN, &data, log.clone()).await;
    let server = process.server(&admin);
    let key = new_key();
    server.trust("console-tests", &key).await;
    let probe = server.publish("probe", &key).await;
    let browser = Browser::start().await.expect("headless chromium");
    let console = Console {
        server,
        browser,
        probe,
    };
    (process, console, log)
}

/// Every console page a signed-in administrator can open, to scan for a secret.
const PAGES: [&str; 12] = [
    "/ui/",
    "/ui/runs",
    "/ui/processes",
    "/ui/approvals",
    "/ui/audit",
    "/ui/credentials",
    "/ui/targets",
    "/ui/bridges",
    "/ui/modules",
    "/ui/users",
    "/ui/roles",
    "/ui/tokens",
];

/// The secret in the answer page's read-only field.
async fn shown_secret(c: &Console) -> String {
    let field = c
        .browser
        .wait_for("#minted-secret")
        .await
        .expect("the secret field");
    field.attr("value").await.expect("value").expect("a secret")
}

/// No page of [`PAGES`] (nor the audit log's JSON) contains `secret`.
async fn nowhere_else(c: &Console, secret: &str) {
    for path in PAGES {
        let html = c.page(path).await;
        assert!(!html.contains(secret), "{path} shows the secret");
    }
    let audit = c.server.get("/v1/audit?limit=1000", &c.server.admin).await;
    assert!(!audit.text.contains(secret), "an audit record holds it");
}

#[tokio::test]
async fn a_minted_token_is_shown_once_works_and_appears_nowhere_else() {
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let (_process, c, log) = console_over_process(&tmp).await;
    let s = &c.server;
    let b = &c.browser;
    s.user("olga", &[]).await;
    c.sign_in(&s.admin).await;

    // One's own token.
    c.page("/ui/tokens").await;
    b.fill("#t-label", "from-the-console").await.expect("label");
    b.fill("#t-days", "2").await.expect("days");
    b.click("form.mint button[type=submit]")
        .await
        .expect("mint");
    let own = shown_secret(&c).await;
    let html = b.html().await.expect("html");
    assert_eq!(html.matches(&own).count(), 1, "shown exactly once");
    c.browser.screenshot("token-minted").await.expect("shot");
    let works = s.get("/v1/processes", &own).await;
    assert_eq!(
        works.status,
        StatusCode::OK,
        "the token works: {}",
        works.text
    );
    let tokens = s.get("/v1/users/admin/tokens", &s.admin).await;
    assert!(tokens.text.contains("from-the-console"), "{}", tokens.text);
    assert!(!tokens.text.contains(&own), "metadata only");

    // An enrollment token for olga, from the users page; she redeems it.
    c.page("/ui/users").await;
    b.click("#e-user option[value=olga]").await.expect("olga");
    b.fill("#e-label", "olga-enrol").await.expect("label");
    b.click("form.mint-user button[type=submit]")
        .await
        .expect("mint");
    let enrollment = shown_secret(&c).await;
    assert!(b.html().await.expect("html").contains("enrollment"));
    let olga = s.redeem("olga", &enrollment).await;
    assert_eq!(s.get("/v1/runs", &olga).await.status, StatusCode::OK);

    // A bridge enrolment token.
    c.page("/ui/bridges").await;
    b.fill("#b-zone", "dmz").await.expect("zone");
    b.click("form.enrol button[type=submit]")
        .await
        .expect("create");
    let bridge = shown_secret(&c).await;
    assert!(!bridge.is_empty());
    let created = s.audit("action=bridge.token.created").await;
    assert_eq!(created.len(), 1, "audited by the API path");

    for secret in [&own, &enrollment, &bridge] {
        nowhere_else(&c, secret).await;
    }

    // Over plain HTTP: the answer carries the secret in its body once and in no header, and
    // says not to store it.
    let (cookie, _) = http_sign_in(&s.base, &s.admin).await;
    let (_, _, page) = super::http_get(&s.base, &cookie, "/ui/tokens").await;
    let resp = raw_client()
        .post(format!("{}/ui/tokens", s.base))
        .header("cookie", &cookie)
        .form(&[("_csrf", csrf_of(&page).as_str()), ("label", "http")])
        .send()
        .await
        .expect("mint");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let headers = format!("{:?}", resp.headers());
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body = resp.text().await.expect("body");
    let at = body.find("id=\"minted-secret\"").expect("the field");
    let value = body[at..].split("value=\"").nth(1).expect("value");
    let secret = value.split('"').next().expect("secret").to_string();
    assert!(secret.starts_with("wdn_"), "{secret}");
    assert_eq!(body.matches(&secret).count(), 1);
    assert!(!headers.contains(&secret), "no header carries it");

    let log = std::fs::read_to_string(&log).expect("server log");
    assert!(log.contains("/ui/tokens"), "the log has the mint requests");
    for secret in [&own, &enrollment, &bridge, &secret] {
        assert!(!log.contains(secret.as_str()), "the server logged a secret");
    }
}

#[tokio::test]
async fn minting_without_the_right_or_without_csrf_is_refused_and_mints_nothing() {
    let c = Console::start().await;
    let s = &c.server;
    let b = &c.browser;
    let plain = s.user("plain", &[]).await;
    s.user("victim", &[]).await;
    let count = |list: Value| list.as_array().map_or(0, Vec::len);
    let victim_tokens = count(s.get("/v1/users/victim/tokens", &s.admin).await.body);

    c.sign_in(&plain).await;
    // Another user's enrollment token: the form is not offered (no users page) and the
    // forged post is the API's 403.
    let html = c.page("/ui/users").await;
    assert!(!html.contains("form class=\"mint-user\""), "{html}");
    c.page("/ui/").await;
    b.forge_form(
        "/ui/users/tokens",
        &[("user", "victim"), ("label", "x")],
        None,
        true,
    )
    .await
    .expect("forge");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("denied by policy"), "refused: {html}");
    assert!(!html.contains("minted-secret"), "no secret");
    // A bridge enrolment token without ManageTargets.
    c.page("/ui/").await;
    b.forge_form("/ui/bridges/tokens", &[("zone", "dmz")], None, true)
        .await
        .expect("forge");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("denied by policy"), "refused: {html}");
    assert!(!html.contains("minted-secret"), "no secret");
    // One's own token, but posted without the CSRF token.
    c.page("/ui/tokens").await;
    let own_before = count(s.get("/v1/users/plain/tokens", &s.admin).await.body);
    b.forge_form("/ui/tokens", &[("label", "forged")], None, false)
        .await
        .expect("forge");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("CSRF"), "refused: {html}");
    assert!(!html.contains("minted-secret"), "no secret");

    assert_eq!(
        count(s.get("/v1/users/victim/tokens", &s.admin).await.body),
        victim_tokens,
        "no token minted for the victim"
    );
    assert_eq!(
        count(s.get("/v1/users/plain/tokens", &s.admin).await.body),
        own_before,
        "no token minted without CSRF"
    );
    assert!(s.audit("action=bridge.token.created").await.is_empty());
    assert!(
        !s.audit("action=console.refused&actor=plain")
            .await
            .is_empty()
    );
    assert!(
        !s.audit("action=api.ManageTargets&actor=plain")
            .await
            .is_empty()
    );
}
