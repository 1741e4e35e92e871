//! Custom roles and bridges in the browser: a role created with the Manage and Execute
//! Privileged Process privileges and grants, its grants replaced, and assigned to a new user
//! (who then holds its powers through the API); a bridge enrolled with a token minted in the
//! console (the real `warden bridge enroll`) and revoked from it. Refused: a user without
//! `ManageUsers` or `ManageTargets` posting those forms, and posts without the CSRF token —
//! each shown, audited, and nothing changed.

use reqwest::StatusCode;
use serde_json::Value;

use super::{BIN, Console};

fn role<'a>(roles: &'a Value, name: &str) -> Option<&'a Value> {
    roles.as_array()?.iter().find(|r| r["name"] == name)
}

#[tokio::test]
async fn creates_a_role_changes_its_grants_and_assigns_it_through_the_console() {
    let c = Console::start().await;
    let s = &c.server;
    let b = &c.browser;
    c.sign_in(&s.admin).await;
    c.page("/ui/roles").await;
    b.fill("#r-name", "deployers").await.expect("name");
    b.click("#r-ManagePrivilegedProcess").await.expect("manage");
    b.click("#r-ExecutePrivilegedProcess")
        .await
        .expect("execute");
    b.fill("#r-credentials", "db-root")
        .await
        .expect("credentials");
    b.fill("#r-targets", "web1").await.expect("targets");
    b.click("form.create-role button[type=submit]")
        .await
        .expect("create");
    b.wait_for("form.grants").await.expect("listed");
    let roles = s.get("/v1/roles", &s.admin).await;
    let made = role(&roles.body, "deployers").expect("created").clone();
    assert_eq!(
        made["privileges"],
        serde_json::json!(["ManagePrivilegedProcess", "ExecutePrivilegedProcess"]),
        "{made}"
    );
    assert_eq!(made["credentials"], serde_json::json!(["db-root"]));
    c.browser.screenshot("roles").await.expect("shot");

    // Replace its grants.
    b.fill("#g-cred-deployers", "").await.expect("credentials");
    b.fill("#g-tgt-deployers", "web1, web2")
        .await
        .expect("targets");
    b.click("form.grants[action=\"/ui/roles/deployers/grants\"] button")
        .await
        .expect("save");
    b.wait_for("form.grants").await.expect("listed");
    let roles = s.get("/v1/roles", &s.admin).await;
    let now = role(&roles.body, "deployers").expect("still there");
    assert_eq!(now["credentials"], serde_json::json!([]), "{now}");
    assert_eq!(now["targets"], serde_json::json!(["web1", "web2"]), "{now}");

    // Assign it to a new user; through the API she holds its powers (ManageModules comes
    // with Manage Privileged Process), which a user without it lacks.
    c.page("/ui/users").await;
    b.fill("#u-name", "dana").await.expect("name");
    b.fill("#u-roles", "deployers").await.expect("roles");
    b.click("form.create-user button[type=submit]")
        .await
        .expect("create");
    b.wait_for("table.users").await.expect("listed");
    let users = s.get("/v1/users", &s.admin).await;
    let dana = users
        .body
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "dana"));
    assert_eq!(
        dana.expect("dana")["roles"],
        serde_json::json!(["deployers"])
    );
    let r = s
        .post("/v1/users/dana/tokens", &s.admin, serde_json::json!({}))
        .await;
    let dana = s
        .redeem("dana", r.body["token"].as_str().expect("token"))
        .await;
    let plain = s.user("plain", &[]).await;
    assert_eq!(s.get("/v1/modules", &dana).await.status, StatusCode::OK);
    assert_eq!(
        s.get("/v1/modules", &plain).await.status,
        StatusCode::FORBIDDEN
    );

    assert_eq!(s.audit("action=role.create&actor=admin").await.len(), 1);
    assert_eq!(s.audit("action=role.grants&actor=admin").await.len(), 1);
}

#[tokio::test]
async fn role_changes_are_refused_without_manage_users_or_csrf() {
    let c = Console::start().await;
    let s = &c.server;
    let b = &c.browser;
    let r = s
        .post(
            "/v1/roles",
            &s.admin,
            serde_json::json!({ "name": "managers", "privileges": ["ManagePrivilegedProcess"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let manager = s.user("manager", &["managers"]).await;
    let before = s.get("/v1/roles", &s.admin).await.text;

    // A process manager may not manage roles: the page is the API's 403, the forged posts
    // (a new role that would give them more, grants for their own role) are refused.
    c.sign_in(&manager).await;
    let html = c.page("/ui/roles").await;
    assert!(html.contains("denied by policy"), "{html}");
    for (action, fields) in [
        (
            "/ui/roles",
            vec![("name", "escalate"), ("privilege", "ApproveRun")],
        ),
        (
            "/ui/roles/managers/grants",
            vec![("credentials", "db-root"), ("targets", "prod")],
        ),
    ] {
        c.page("/ui/").await;
        b.forge_form(action, &fields, None, true)
            .await
            .expect("forge");
        let html = b.submit_forged().await.expect("answer");
        assert!(html.contains("denied by policy"), "{action}: {html}");
    }
    assert_eq!(
        s.audit("action=api.ManageUsers&actor=manager").await.len(),
        3
    );
    c.sign_out().await;

    // The administrator, without the CSRF token: refused before the API.
    c.sign_in(&s.admin).await;
    c.page("/ui/roles").await;
    b.forge_form(
        "/ui/roles",
        &[("name", "forged"), ("privilege", "ApproveRun")],
        None,
        false,
    )
    .await
    .expect("forge");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("CSRF"), "{html}");
    assert_eq!(
        s.get("/v1/roles", &s.admin).await.text,
        before,
        "no role changed"
    );
}

/// `warden bridge enroll` against the test server with `token` (off the runtime's thread,
/// which serves the in-process server); whether it succeeded, and its output.
async fn enroll(base: &str, dir: &std::path::Path, token: &str) -> (bool, String) {
    let mut command = std::process::Command::new(BIN);
    command
        .args([
            "bridge", "enroll", "--server", base, "--name", "edge-1", "--data",
        ])
        .arg(dir)
        .env("WARDEN_BRIDGE_TOKEN", token);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joined")
        .expect("enroll");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn enrols_a_bridge_with_a_console_token_and_revokes_it_from_the_console() {
    let c = Console::start().await;
    let s = &c.server;
    let b = &c.browser;
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let plain = s.user("plain", &[]).await;
    c.sign_in(&s.admin).await;
    c.page("/ui/bridges").await;
    b.fill("#b-zone", "dmz").await.expect("zone");
    b.click("form.enrol button[type=submit]")
        .await
        .expect("create");
    let field = b.wait_for("#minted-secret").await.expect("secret");
    let token = field.attr("value").await.expect("attr").expect("value");
    let (ok, text) = enroll(&s.base, &tmp.path().join("bridge"), &token).await;
    assert!(ok, "enrolled: {text}");
    let html = c.page("/ui/bridges").await;
    assert!(html.contains("edge-1"), "listed: {html}");
    let list = s.get("/v1/bridges", &s.admin).await;
    let id = list.body[0]["id"].as_str().expect("id").to_string();
    c.sign_out().await;

    // A plain user cannot revoke it (nor without CSRF can anyone).
    c.sign_in(&plain).await;
    c.page("/ui/").await;
    b.forge_form(&format!("/ui/bridges/{id}/revoke"), &[], None, true)
        .await
        .expect("forge");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("denied by policy"), "{html}");
    c.sign_out().await;
    c.sign_in(&s.admin).await;
    c.page("/ui/bridges").await;
    b.forge_form(&format!("/ui/bridges/{id}/revoke"), &[], None, false)
        .await
        .expect("forge");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("CSRF"), "{html}");
    let list = s.get("/v1/bridges", &s.admin).await;
    assert_eq!(list.body[0]["revoked"], false, "{}", list.text);

    // The administrator revokes it with a reason.
    c.page("/ui/bridges").await;
    b.fill(&format!("#reason-{id}"), "decommissioned")
        .await
        .expect("reason");
    b.click("form.revoke-bridge button").await.expect("revoke");
    b.wait_until_html("revoked", |h| h.contains(">revoked<"))
        .await
        .expect("shown revoked");
    let list = s.get("/v1/bridges", &s.admin).await;
    assert_eq!(list.body[0]["revoked"], true, "{}", list.text);
    let revoked = s.audit("action=bridge.revoked&actor=admin").await;
    assert_eq!(revoked.len(), 1);
    assert!(
        revoked[0].to_string().contains("decommissioned"),
        "{revoked:?}"
    );
    // A second revoke is the API's conflict, shown.
    c.page("/ui/").await;
    b.forge_form(&format!("/ui/bridges/{id}/revoke"), &[], None, true)
        .await
        .expect("forge");
    let html = b.submit_forged().await.expect("answer");
    assert!(html.contains("p class=\"error\""), "{html}");
}
