//! Approvals in the browser: the requester sees no approve button on their own run; a second
//! user approves what the page showed; an approval posted after the run's inputs changed is
//! refused as stale (and nothing is approved), and a forged binding likewise.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Console, csrf_of, http_get, http_sign_in, raw_client};

#[tokio::test]
async fn a_second_user_approves_and_an_approval_after_an_input_change_is_stale() {
    let c = Console::start().await;
    let s = &c.server;
    let r = s
        .post(
            "/v1/roles",
            &s.admin,
            json!({ "name": "approvers", "privileges": ["ApproveRun"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let rita = s.user("rita", &[]).await;
    let alan = s.user("alan", &["approvers"]).await;
    let process = c
        .process(
            &s.admin,
            json!({ "name": "guarded", "grant": {}, "required_approvals": 1 }),
        )
        .await;
    let share = json!({ "users": ["rita"], "roles": ["approvers"] });
    let r = s
        .post(&format!("/v1/processes/{process}/share"), &s.admin, share)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let run = s
        .start_run(
            &process,
            &rita,
            json!({ "mode": "echo", "needle": "first" }),
        )
        .await;

    // The API's inbox: the approver's and the requester's, nobody else's.
    let otto = s.user("otto", &[]).await;
    for (token, listed) in [(&alan, true), (&rita, true), (&otto, false)] {
        let r = s.get("/v1/approvals", token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let ids: Vec<&str> = r
            .body
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|x| x["id"].as_str())
            .collect();
        assert_eq!(ids.contains(&run.as_str()), listed, "{ids:?}");
    }

    // The requester: the request, but no approve button.
    c.sign_in(&rita).await;
    let b = &c.browser;
    let html = c.page(&format!("/ui/approvals/{run}")).await;
    assert!(b.find("#own-request").await.is_some(), "{html}");
    assert!(
        b.find("#approve").await.is_none(),
        "no approve button for one's own run"
    );
    assert!(b.find("form.approve").await.is_none());
    c.sign_out().await;

    // The approver sees exactly what is approved.
    c.sign_in(&alan).await;
    c.page("/ui/approvals").await;
    b.wait_for(&format!("a[href='/ui/approvals/{run}']"))
        .await
        .expect("in the inbox");
    c.browser.screenshot("approvals").await.expect("screenshot");
    c.page(&format!("/ui/approvals/{run}")).await;
    let digest = b
        .wait_for("#module-digest")
        .await
        .expect("digest")
        .text()
        .await
        .expect("text");
    assert_eq!(digest, c.probe);
    let shown_binding = b
        .wait_for("#binding")
        .await
        .expect("binding")
        .text()
        .await
        .expect("text");
    assert!(b.find("#approve").await.is_some());
    c.browser
        .screenshot("approval-request")
        .await
        .expect("screenshot");

    // Meanwhile the requester changes the inputs.
    let r = s
        .request(
            Method::PUT,
            &format!("/v1/runs/{run}/inputs"),
            Some(&rita),
            Some(&json!({ "inputs": { "mode": "echo", "needle": "second" } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Approving the page as shown is refused as stale; nothing was approved.
    b.click("#approve").await.expect("approve");
    let alert = b
        .wait_for("p.error")
        .await
        .expect("refusal")
        .text()
        .await
        .expect("text");
    assert!(alert.contains("stale"), "{alert}");
    let request = s.get(&format!("/v1/runs/{run}/approval"), &alan).await;
    assert_eq!(request.body["valid_approvals"], 0, "{}", request.text);
    assert_eq!(request.body["state"], "awaiting-approval");
    let new_binding = b
        .wait_for("#binding")
        .await
        .expect("binding")
        .text()
        .await
        .expect("text");
    assert_ne!(
        new_binding, shown_binding,
        "the page now shows the new request"
    );
    let inputs = b
        .wait_for("table.inputs")
        .await
        .expect("inputs")
        .text()
        .await
        .expect("text");
    assert!(inputs.contains("second"), "{inputs}");

    // Approving the new request as now shown starts the run.
    b.click("#approve").await.expect("approve again");
    b.wait_for("p.notice").await.expect("approved");
    let record = s.wait_for_state_or_end(&run).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert!(
        record["result"].as_str().unwrap_or("").contains("second"),
        "{record}"
    );
    c.browser.close().await;
}

#[tokio::test]
async fn an_approval_with_a_forged_or_missing_binding_is_refused_and_self_approval_too() {
    let c = Console::start().await;
    let s = &c.server;
    let r = s
        .post(
            "/v1/roles",
            &s.admin,
            json!({ "name": "approvers", "privileges": ["ApproveRun"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let alan = s.user("alan", &["approvers"]).await;
    let process = c
        .process(
            &s.admin,
            json!({ "name": "guarded", "grant": {}, "required_approvals": 1 }),
        )
        .await;
    let r = s
        .post(
            &format!("/v1/processes/{process}/share"),
            &s.admin,
            json!({ "roles": ["approvers"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let run = s
        .start_run(&process, &s.admin, json!({ "mode": "echo" }))
        .await;
    let (cookie, _) = http_sign_in(&s.base, &alan).await;
    let (_, _, html) = http_get(&s.base, &cookie, &format!("/ui/approvals/{run}")).await;
    let csrf = csrf_of(&html);
    for binding in [
        "",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let resp = raw_client()
            .post(format!("{}/ui/approvals/{run}/approve", s.base))
            .header("cookie", &cookie)
            .form(&[("_csrf", csrf.as_str()), ("binding", binding)])
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::CONFLICT, "binding {binding:?}");
    }
    let request = s.get(&format!("/v1/runs/{run}/approval"), &alan).await;
    assert_eq!(request.body["valid_approvals"], 0, "{}", request.text);
    // The requester posting an approval by hand (no button shown) is refused by the API.
    let (cookie, _) = http_sign_in(&s.base, &s.admin).await;
    let (_, _, html) = http_get(&s.base, &cookie, &format!("/ui/approvals/{run}")).await;
    assert!(
        !html.contains("id=\"approve\""),
        "no approve button for the requester"
    );
    let binding = request.body["binding"].as_str().expect("binding");
    let resp = raw_client()
        .post(format!("{}/ui/approvals/{run}/approve", s.base))
        .header("cookie", &cookie)
        .form(&[("_csrf", csrf_of(&html).as_str()), ("binding", binding)])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let request = s.get(&format!("/v1/runs/{run}/approval"), &alan).await;
    assert_eq!(request.body["valid_approvals"], 0, "{}", request.text);
}
