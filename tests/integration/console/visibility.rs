//! What each role sees: the Super Administrator no trace of another administrator's unshared
//! process anywhere in the console (lists, counts, audit, approvals, direct links), the
//! Password Auditor the resource audit only.

use reqwest::StatusCode;
use serde_json::json;

use super::{Console, http_get, http_sign_in};

/// Every page a signed-in user can open from the navigation.
const PAGES: [&str; 8] = [
    "/ui/",
    "/ui/runs",
    "/ui/processes",
    "/ui/approvals",
    "/ui/audit",
    "/ui/audit/resources",
    "/ui/credentials",
    "/ui/targets",
];

#[tokio::test]
async fn the_super_administrator_sees_no_trace_of_an_unshared_process() {
    let c = Console::start().await;
    let s = &c.server;
    // The Privileged Administrator's own process, unshared: a finished run, a failed one and
    // one awaiting approval.
    let hidden = c
        .process(
            &s.admin,
            json!({ "name": "hidden-proc", "description": "hush-hush", "grant": {} }),
        )
        .await;
    let guarded = c
        .process(
            &s.admin,
            json!({ "name": "hidden-guarded", "grant": {}, "required_approvals": 1 }),
        )
        .await;
    let done = s
        .start_run(
            &hidden,
            &s.admin,
            json!({ "mode": "echo", "needle": "hush-needle" }),
        )
        .await;
    s.wait_for_state_or_end(&done).await;
    let failed = s
        .start_run(&hidden, &s.admin, json!({ "mode": "fail" }))
        .await;
    s.wait_for_state_or_end(&failed).await;
    let waiting = s
        .start_run(&guarded, &s.admin, json!({ "mode": "echo" }))
        .await;
    // A process of its own, so its pages are not simply empty.
    let sam = s.user("sam", &["super-administrator"]).await;
    let own = c
        .process(&sam, json!({ "name": "sams-proc", "grant": {} }))
        .await;
    let own_run = s.start_run(&own, &sam, json!({ "mode": "fail" })).await;
    s.wait_for_state_or_end(&own_run).await;

    let traces = [
        hidden.as_str(),
        guarded.as_str(),
        done.as_str(),
        failed.as_str(),
        waiting.as_str(),
        "hidden-proc",
        "hidden-guarded",
        "hush-hush",
        "hush-needle",
    ];
    // The owner sees them all on the same pages (so the checks below can fail).
    let (admin_cookie, _) = http_sign_in(&s.base, &s.admin).await;
    for (page, trace) in [
        ("/ui/", failed.as_str()),
        ("/ui/runs", done.as_str()),
        ("/ui/processes", "hidden-proc"),
        ("/ui/approvals", waiting.as_str()),
        ("/ui/audit", done.as_str()),
    ] {
        let (_, _, html) = http_get(&s.base, &admin_cookie, page).await;
        assert!(html.contains(trace), "the owner's {page} shows {trace}");
    }
    c.sign_in(&sam).await;
    for page in PAGES {
        let html = c.page(page).await;
        for trace in traces {
            assert!(!html.contains(trace), "{page} shows {trace}:\n{html}");
        }
    }
    // Its own failure is there (the pages work), the hidden one is not counted.
    let overview = c.page("/ui/").await;
    assert!(overview.contains(&own_run[..8]), "{overview}");
    // Direct links and filters lead nowhere either.
    for page in [
        format!("/ui/runs/{done}"),
        format!("/ui/runs/{waiting}"),
        format!("/ui/processes/{hidden}"),
        format!("/ui/approvals/{waiting}"),
        format!("/ui/runs?process={hidden}"),
        format!("/ui/audit?run={done}"),
        format!("/ui/runs/{done}/events"),
    ] {
        let html = c.page(&page).await;
        // (The id typed into the address may come back; nothing about it may.)
        for trace in &traces[5..] {
            assert!(!html.contains(trace), "{page} shows {trace}:\n{html}");
        }
    }
    let (cookie, _) = http_sign_in(&s.base, &sam).await;
    let (status, _, _) = http_get(&s.base, &cookie, &format!("/ui/runs/{done}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "as the API: not found, not forbidden"
    );
    c.browser.close().await;
}

#[tokio::test]
async fn the_password_auditor_sees_only_the_resource_audit() {
    let c = Console::start().await;
    let s = &c.server;
    let r = s
        .post(
            "/v1/credentials",
            &s.admin,
            json!({ "name": "db-root", "username": "root", "secret": "pa55-word-db" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let process = c
        .process(
            &s.admin,
            json!({ "name": "task-proc", "description": "task-desc", "grant": {} }),
        )
        .await;
    let run = s
        .start_run(
            &process,
            &s.admin,
            json!({ "mode": "echo", "needle": "task-needle" }),
        )
        .await;
    s.wait_for_state_or_end(&run).await;
    let pat = s.user("pat", &["password-auditor"]).await;

    // An administrator's console shows the task automation (so the checks below can fail).
    let (admin_cookie, _) = http_sign_in(&s.base, &s.admin).await;
    let (_, _, html) = http_get(&s.base, &admin_cookie, "/ui/runs").await;
    assert!(html.contains(&run) && html.contains("task-proc"));
    c.sign_in(&pat).await;
    let b = &c.browser;
    // Signed in, the auditor lands on the resource audit, and the navigation has nothing else.
    let url = b.client.current_url().await.expect("url");
    assert_eq!(url.path(), "/ui/audit/resources");
    let links = b.find_all("nav a").await.expect("nav");
    let mut labels = Vec::new();
    for link in links {
        labels.push(link.text().await.expect("text"));
    }
    assert_eq!(labels, ["Resource audit"]);
    let html = c.page("/ui/audit/resources").await;
    assert!(
        html.contains("db-root") && html.contains("credential.create"),
        "{html}"
    );
    c.browser
        .screenshot("resource-audit")
        .await
        .expect("screenshot");
    // Nothing of the task automation anywhere, the full audit refused as by the API.
    for page in PAGES {
        let html = c.page(page).await;
        for trace in [
            run.as_str(),
            process.as_str(),
            "task-proc",
            "task-desc",
            "task-needle",
        ] {
            assert!(!html.contains(trace), "{page} shows {trace}");
        }
    }
    let (cookie, _) = http_sign_in(&s.base, &pat).await;
    for (page, want) in [
        ("/ui/audit", StatusCode::FORBIDDEN),
        ("/ui/credentials", StatusCode::FORBIDDEN),
        ("/ui/targets", StatusCode::FORBIDDEN),
        ("/ui/", StatusCode::SEE_OTHER),
    ] {
        let (status, _, body) = http_get(&s.base, &cookie, page).await;
        assert_eq!(status, want, "{page}: {body}");
    }
    let (status, _, _) = http_get(&s.base, &cookie, &format!("/ui/runs/{run}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.browser.close().await;
}
