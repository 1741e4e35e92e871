//! Sessions: sign in and out in the browser, the cookie's flags, the CSP on every page, a
//! revoked token or disabled user ending the session at once, an expired session refused,
//! an enrollment token refused, and form posts without the CSRF token or from another origin
//! refused.

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};
use warden_host::ui::session::{IDLE_MS, SESSIONS, Session};
use warden_tests::http::Server;

use super::{Console, csrf_of, http_get, http_sign_in, raw_client};

/// Every GET page of the console.
const PAGES: [&str; 9] = [
    "/ui/",
    "/ui/runs",
    "/ui/processes",
    "/ui/approvals",
    "/ui/audit",
    "/ui/audit/resources",
    "/ui/credentials",
    "/ui/targets",
    "/ui/signin",
];

#[tokio::test]
async fn signs_in_and_out_in_the_browser_and_the_session_ends_with_sign_out() {
    let c = Console::start().await;
    c.sign_in(&c.server.admin).await;
    let html = c.page("/ui/").await;
    assert!(html.contains("Overview"), "{html}");
    c.browser.screenshot("overview").await.expect("screenshot");
    let cookie = c
        .browser
        .client
        .get_named_cookie("warden_session")
        .await
        .expect("session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.path(), Some("/ui"));
    let sid = format!("warden_session={}", cookie.value());
    c.sign_out().await;
    // The cookie value from before sign-out is dead server-side, not just forgotten.
    let (status, location, _) = http_get(&c.server.base, &sid, "/ui/runs").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/ui/signin"));
    let signins = c.server.audit("action=console.signin").await;
    let signouts = c.server.audit("action=console.signout").await;
    assert_eq!(signins.len(), 1, "{signins:?}");
    assert_eq!(signouts.len(), 1, "{signouts:?}");
    assert_eq!(signouts[0]["actor"], "admin");
    c.browser.close().await;
}

#[tokio::test]
async fn session_cookie_is_httponly_samesite_strict_on_path_ui_and_holds_128_bits() {
    let server = Server::start().await;
    let (pair, line) = http_sign_in(&server.base, &server.admin).await;
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(line.contains(flag), "{flag} missing: {line}");
    }
    // Plain HTTP on loopback: not `Secure` (a browser would drop it); see the TLS test.
    assert!(!line.contains("Secure"), "{line}");
    let value = pair.trim_start_matches("warden_session=");
    assert!(
        value.len() >= 32 && value.chars().all(|c| c.is_ascii_hexdigit()),
        "{value}"
    );
    // The token never becomes the cookie.
    assert!(!line.contains(&server.admin));
}

#[tokio::test]
async fn session_cookie_is_secure_when_served_over_tls() {
    let dir = tempfile::TempDir::new().expect("dir");
    let data = dir.path().join("data");
    let out = warden_tests::warden(
        super::BIN,
        &["init", "--data", data.to_str().expect("utf-8")],
        None,
    )
    .expect("warden init");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout
        .lines()
        .find_map(|l| l.split("keep it): ").nth(1))
        .expect("the admin token printed by init")
        .to_string();
    let serve = warden_tests::http::ServeChild::start(
        super::BIN,
        &data,
        warden_tests::http::Transport::DataDirTls,
        &[],
        dir.path().join("serve.log"),
    )
    .await;
    let client = warden_host::tls::ServerTrust::Pinned(serve.fingerprint.expect("TLS"))
        .client_builder()
        .expect("pinned client")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = client
        .post(format!("{}/ui/signin", serve.base))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .expect("sign in over TLS");
    let line = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(line.contains("; Secure"), "{line}");
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Strict"),
        "{line}"
    );
}

#[tokio::test]
async fn every_page_and_asset_carries_the_strict_csp_and_hardening_headers() {
    let server = Server::start().await;
    let (cookie, _) = http_sign_in(&server.base, &server.admin).await;
    let mut paths: Vec<&str> = PAGES.to_vec();
    paths.extend([
        "/ui/static/app.js",
        "/ui/static/htmx.min.js",
        "/ui/static/app.css",
        "/ui/runs/nope",
    ]);
    for path in paths {
        let resp = raw_client()
            .get(format!("{}{path}", server.base))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("get");
        let h = resp.headers();
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{path}: no CSP"));
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let is_html = h
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/html"));
        let html = resp.text().await.unwrap_or_default();
        if !is_html {
            continue;
        }
        // No inline script or style anywhere: every <script> has a src, no style attribute.
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..html[i..].find('>').map_or(html.len(), |e| i + e)];
            assert!(tag.contains("src="), "{path}: inline script {tag}");
        }
        assert!(
            !html.contains("<style") && !html.contains(" style="),
            "{path}"
        );
        assert!(
            !html.contains(" onclick=") && !html.contains(" onload="),
            "{path}"
        );
    }
    // `/` sends the browser to the console.
    let resp = raw_client()
        .get(format!("{}/", server.base))
        .send()
        .await
        .expect("get /");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/ui/");
}

#[tokio::test]
async fn a_revoked_token_or_a_disabled_user_ends_the_session_at_once() {
    let server = Server::start().await;
    let ops = server.user("olga", &[]).await;
    let (cookie, _) = http_sign_in(&server.base, &ops).await;
    let (status, _, _) = http_get(&server.base, &cookie, "/ui/runs").await;
    assert_eq!(status, StatusCode::OK);
    // Revoke the token the session was opened with (its id is the part before the secret).
    let tokens = server.get("/v1/users/olga/tokens", &ops).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    for token in tokens.body.as_array().expect("tokens") {
        if token["kind"] != "full" {
            continue;
        }
        let id = token["id"].as_str().expect("token id");
        let r = server
            .request(
                reqwest::Method::DELETE,
                &format!("/v1/tokens/{id}"),
                Some(&server.admin),
                None,
            )
            .await;
        assert!(r.status.is_success(), "{}", r.text);
    }
    let (status, location, _) = http_get(&server.base, &cookie, "/ui/runs").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "a revoked token's session is over"
    );
    assert_eq!(location.as_deref(), Some("/ui/signin"));

    // A disabled user: the same, for a session opened with a live token.
    let ops2 = server.user("otto", &[]).await;
    let (cookie2, _) = http_sign_in(&server.base, &ops2).await;
    assert_eq!(
        http_get(&server.base, &cookie2, "/ui/").await.0,
        StatusCode::OK
    );
    let r = server
        .post("/v1/users/otto/disable", &server.admin, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let (status, _, _) = http_get(&server.base, &cookie2, "/ui/").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "a disabled user's session is over"
    );
    // Enabled again, the old session stays dead (it was deleted, not suspended).
    let r = server
        .post("/v1/users/otto/enable", &server.admin, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(
        http_get(&server.base, &cookie2, "/ui/").await.0,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn an_expired_session_is_refused_and_deleted() {
    let server = Server::start().await;
    let (cookie, _) = http_sign_in(&server.base, &server.admin).await;
    let sid = cookie.trim_start_matches("warden_session=").to_string();
    let state = server._state.as_ref().expect("in-process state");
    let table = state.users.database().table(&SESSIONS);
    let key = Sha256::digest(sid.as_bytes()).to_vec();
    let stored = table
        .get(&key)
        .expect("read")
        .expect("the session is stored by its hash");
    let mut session: Session = serde_json::from_slice(&stored).expect("session record");
    // Last used one idle period (and a second) ago.
    session.last_ms -= IDLE_MS + 1_000;
    session.created_ms -= IDLE_MS + 1_000;
    table
        .put(key.clone(), serde_json::to_vec(&session).expect("json"))
        .expect("write");
    let (status, location, _) = http_get(&server.base, &cookie, "/ui/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/ui/signin"));
    assert!(
        table.get(&key).expect("read").is_none(),
        "an expired session is deleted"
    );
}

#[tokio::test]
async fn sign_in_refuses_enrollment_and_invalid_tokens() {
    let server = Server::start().await;
    let r = server
        .post(
            "/v1/users",
            &server.admin,
            json!({"name": "eve", "roles": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = server
        .post("/v1/users/eve/tokens", &server.admin, json!({}))
        .await;
    let enrollment = r.body["token"]
        .as_str()
        .expect("enrollment token")
        .to_string();
    for token in [
        enrollment.as_str(),
        "wdn_nope",
        "",
        &format!("{}x", server.admin),
    ] {
        let resp = raw_client()
            .post(format!("{}/ui/signin", server.base))
            .form(&[("token", token)])
            .send()
            .await
            .expect("sign in");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token}");
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "no session for {token}"
        );
    }
}

#[tokio::test]
async fn a_form_posted_without_or_with_a_wrong_csrf_token_is_refused() {
    let server = Server::start().await;
    let (cookie, _) = http_sign_in(&server.base, &server.admin).await;
    let (_, _, html) = http_get(&server.base, &cookie, "/ui/credentials").await;
    let csrf = csrf_of(&html);
    let (other_cookie, _) = http_sign_in(&server.base, &server.admin).await;
    let (_, _, other_html) = http_get(&server.base, &other_cookie, "/ui/credentials").await;
    let other_csrf = csrf_of(&other_html);
    assert_ne!(csrf, other_csrf);
    let attempts: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("_csrf", "")],
        vec![("_csrf", &csrf[..csrf.len() - 1])],
        vec![("_csrf", &other_csrf)],
    ];
    for (i, mut extra) in attempts.into_iter().enumerate() {
        let name = format!("forged-{i}");
        let mut form = vec![
            ("name", name.as_str()),
            ("username", "root"),
            ("kind", "password"),
            ("secret", "s3cr3t-forged"),
        ];
        form.append(&mut extra);
        let resp = raw_client()
            .post(format!("{}/ui/credentials", server.base))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "attempt {i}");
        let r = server
            .get(&format!("/v1/credentials/{name}"), &server.admin)
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "attempt {i} created nothing"
        );
    }
    // Each refusal is audited, as the session's user.
    let refused = server.audit("action=console.refused").await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|r| r["actor"] == "admin" && r["decision"]["verdict"] == "denied")
    );
    // Sign-out without the token does not end the session either.
    let resp = raw_client()
        .post(format!("{}/ui/signout", server.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        http_get(&server.base, &cookie, "/ui/").await.0,
        StatusCode::OK
    );
    // With the right token it works (the refusals above were for the token, not the form).
    let resp = raw_client()
        .post(format!("{}/ui/credentials", server.base))
        .header("cookie", &cookie)
        .form(&[
            ("name", "real"),
            ("username", "root"),
            ("kind", "password"),
            ("secret", "s3cr3t-real"),
            ("_csrf", csrf.as_str()),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let r = server.get("/v1/credentials/real", &server.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn a_cross_origin_or_cross_site_post_is_refused_even_with_the_csrf_token() {
    let server = Server::start().await;
    let (cookie, _) = http_sign_in(&server.base, &server.admin).await;
    let (_, _, html) = http_get(&server.base, &cookie, "/ui/credentials").await;
    let csrf = csrf_of(&html);
    let host = server.base.trim_start_matches("http://").to_string();
    let own = server.base.clone();
    let cases = [
        ("origin", "https://evil.example".to_string()),
        ("origin", "null".to_string()),
        ("sec-fetch-site", "none".to_string()),
        ("origin", format!("{own}.evil.example")),
        ("sec-fetch-site", "cross-site".to_string()),
        ("sec-fetch-site", "same-site".to_string()),
    ];
    for (i, (header, value)) in cases.iter().enumerate() {
        let name = format!("xo-{i}");
        let resp = raw_client()
            .post(format!("{}/ui/credentials", server.base))
            .header("cookie", &cookie)
            .header("host", &host)
            .header(*header, value)
            .form(&[
                ("name", name.as_str()),
                ("username", "root"),
                ("kind", "password"),
                ("secret", "s3cr3t"),
                ("_csrf", csrf.as_str()),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{header}: {value}");
        let r = server
            .get(&format!("/v1/credentials/{name}"), &server.admin)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{header}: {value}");
    }
    let refused = server.audit("action=console.refused").await;
    assert_eq!(
        refused.len(),
        cases.len(),
        "each refusal audited: {refused:?}"
    );
    // A sign-in posted from another site opens no session either (login CSRF).
    let resp = raw_client()
        .post(format!("{}/ui/signin", server.base))
        .header("origin", "https://evil.example")
        .form(&[("token", server.admin.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("set-cookie").is_none());
}
