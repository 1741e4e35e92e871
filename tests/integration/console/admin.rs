//! Administration in the browser: a process created, shared and scheduled through the
//! console's forms (each checked through the API), the module, user and bridge lists, and
//! revoking one's own token from the console, which ends the session at once.

use reqwest::StatusCode;
use serde_json::json;

use super::Console;

#[tokio::test]
async fn creates_shares_and_schedules_a_process_through_the_console() {
    let c = Console::start().await;
    let s = &c.server;
    s.user("olga", &[]).await;
    c.sign_in(&s.admin).await;
    let b = &c.browser;
    c.page("/ui/processes").await;
    b.fill("#p-name", "made-here").await.expect("name");
    b.fill("#p-description", "made in the console")
        .await
        .expect("description");
    b.click("form.create button[type=submit]")
        .await
        .expect("create");
    b.wait_for("form.start")
        .await
        .expect("the new process's page");
    let list = s.get("/v1/processes", &s.admin).await;
    let made = list
        .body
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["name"] == "made-here")
        .cloned();
    let made = made.expect("created through the API");
    assert_eq!(made["module_digest"], c.probe.as_str());
    let id = made["id"].as_str().expect("id").to_string();

    b.fill("#sh-users", "olga").await.expect("share with");
    b.click("form.share button[type=submit]")
        .await
        .expect("share");
    b.wait_until_html("the page after sharing", |h| {
        h.contains("Shared with users: olga")
    })
    .await
    .expect("back on the page");
    let p = s.get(&format!("/v1/processes/{id}"), &s.admin).await;
    assert_eq!(p.body["shared_users"], json!(["olga"]), "{}", p.text);

    b.fill("#s-cron", "0 3 * * *").await.expect("cron");
    b.fill("#s-inputs", "{\"mode\": \"echo\"}")
        .await
        .expect("inputs");
    b.click("form.schedule button[type=submit]")
        .await
        .expect("schedule");
    b.wait_for("table.schedules").await.expect("listed");
    let sch = s
        .get(&format!("/v1/processes/{id}/schedules"), &s.admin)
        .await;
    assert_eq!(sch.body.as_array().map(Vec::len), Some(1), "{}", sch.text);
    c.browser.screenshot("process").await.expect("screenshot");

    // A bad cron is the API's refusal, shown; nothing added.
    b.fill("#s-cron", "not a cron").await.expect("cron");
    b.click("form.schedule button[type=submit]")
        .await
        .expect("schedule");
    b.wait_for("p.error").await.expect("refused");
    let sch = s
        .get(&format!("/v1/processes/{id}/schedules"), &s.admin)
        .await;
    assert_eq!(sch.body.as_array().map(Vec::len), Some(1), "{}", sch.text);

    for (page, shot, marker) in [
        ("/ui/modules", "modules", "table.modules"),
        ("/ui/users", "users", "table.users"),
        ("/ui/bridges", "bridges", "table.bridges"),
    ] {
        c.page(page).await;
        b.wait_for(marker).await.expect("the list");
        c.browser.screenshot(shot).await.expect("screenshot");
    }
    let html = c.page("/ui/users").await;
    assert!(html.contains("olga"), "{html}");
    // A user created, then disabled, through the console (the API decides and audits).
    b.fill("#u-name", "newbie").await.expect("name");
    b.click("form.create-user button[type=submit]")
        .await
        .expect("create");
    b.click("button[aria-label='disable newbie']")
        .await
        .expect("disable");
    b.wait_for("button[aria-label='enable newbie']")
        .await
        .expect("disabled");
    let users = s.get("/v1/users", &s.admin).await;
    let newbie = users
        .body
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == "newbie")
        .cloned();
    assert_eq!(newbie.expect("created")["disabled"], true);

    // Edit the definition: the API bumps the revision.
    let before = s.get(&format!("/v1/processes/{id}"), &s.admin).await.body["revision"]
        .as_u64()
        .expect("revision");
    c.page(&format!("/ui/processes/{id}")).await;
    b.click("#h-edit + details summary")
        .await
        .expect("open the edit form");
    b.fill("#p-description", "edited in the console")
        .await
        .expect("description");
    b.fill("#p-approvals", "1").await.expect("approvals");
    b.click("form.edit button[type=submit]")
        .await
        .expect("save");
    b.wait_until_html("the edited page", |h| h.contains("edited in the console"))
        .await
        .expect("saved");
    let p = s.get(&format!("/v1/processes/{id}"), &s.admin).await;
    assert_eq!(p.body["revision"], before + 1, "{}", p.text);
    assert_eq!(p.body["required_approvals"], 1);
    assert_eq!(p.body["shared_users"], json!(["olga"]), "sharing kept");
    c.browser.close().await;
}

#[tokio::test]
async fn revoking_the_sessions_own_token_in_the_console_signs_out_at_once() {
    let c = Console::start().await;
    let olga = c.server.user("olga", &[]).await;
    c.sign_in(&olga).await;
    let b = &c.browser;
    c.page("/ui/tokens").await;
    let rows = b.find_all("table.tokens tbody tr").await.expect("rows");
    assert_eq!(rows.len(), 1, "olga's own token");
    b.click("table.tokens form button").await.expect("revoke");
    b.wait_for("#token")
        .await
        .expect("signed out: the sign-in page");
    let r = c.server.get("/v1/whoami", &olga).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the token itself is revoked"
    );
    c.browser.close().await;
}
