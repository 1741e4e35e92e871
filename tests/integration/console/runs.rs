//! Runs in the browser: start one from the generated form and watch its output arrive live,
//! HTML and script in task output, inputs and a process's description shown as text, a form
//! value of the wrong type refused by the API's own validation, and cancel.

use serde_json::json;

use super::Console;

/// What a hostile task author puts in output and names.
const HOSTILE: &str =
    "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\"><b id=bold>bold</b>";

#[tokio::test]
async fn starts_a_run_from_the_form_and_its_output_arrives_live_as_text() {
    let c = Console::start().await;
    let admin = c.server.admin.clone();
    let process = c
        .process(
            &admin,
            json!({ "name": "console-drip", "description": HOSTILE, "grant": {} }),
        )
        .await;
    c.sign_in(&admin).await;
    let b = &c.browser;
    // The process description, hostile HTML, is text on the list and the process page.
    let list = c.page("/ui/processes").await;
    assert!(
        list.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"),
        "{list}"
    );
    assert!(b.find_all("img[src=x]").await.expect("query").is_empty());
    c.browser.screenshot("processes").await.expect("screenshot");

    c.page(&format!("/ui/processes/{process}")).await;
    // The form is generated from the manifest: typed fields, labelled.
    let n = b.wait_for("#in-n").await.expect("int input");
    assert_eq!(
        n.attr("type").await.expect("attr").as_deref(),
        Some("number")
    );
    assert!(b.find("label[for=in-mode]").await.is_some());
    let caps = b
        .wait_for("#capabilities")
        .await
        .expect("caps")
        .text()
        .await
        .expect("text");
    assert!(
        caps.contains("ssh") && caps.contains("credentials"),
        "{caps}"
    );
    c.browser
        .screenshot("start-form")
        .await
        .expect("screenshot");
    b.fill("#in-mode", "drip").await.expect("mode");
    b.fill("#in-n", "8").await.expect("n");
    b.fill("#in-needle", HOSTILE).await.expect("needle");
    b.click("form.start button[type=submit]")
        .await
        .expect("start");

    // The run page: the first event arrives over the stream while the run still runs.
    b.wait_for("#events[data-live='1'] li")
        .await
        .expect("a live event");
    let state_now = b
        .wait_for("#run-state")
        .await
        .expect("state")
        .text()
        .await
        .expect("text");
    assert!(
        !state_now.contains("succeeded"),
        "the event was live, not the final replay: {state_now}"
    );
    c.browser.screenshot("run-live").await.expect("screenshot");
    b.wait_for("#events[data-ended='succeeded']")
        .await
        .expect("the run ends");
    let lines = b.find_all("#events li").await.expect("events");
    assert_eq!(lines.len(), 8, "every line, once");
    let first = lines[0].text().await.expect("text");
    assert!(
        first.contains("line 0: <script>window.pwned=1</script>"),
        "{first}"
    );
    // None of it became markup or ran.
    assert!(
        b.find_all("#events b, #events img, #events script, #bold")
            .await
            .expect("query")
            .is_empty()
    );
    let result = b
        .wait_for("#run-result")
        .await
        .expect("result")
        .text()
        .await
        .expect("text");
    assert!(result.contains("<b id=bold>bold</b>"), "{result}");
    let pwned = b
        .client
        .execute("return window.pwned === undefined;", vec![])
        .await
        .expect("js");
    assert_eq!(pwned, json!(true), "no injected script ran");

    // Reloaded after the end, the stored events and inputs are escaped in the HTML itself.
    let url = b.client.current_url().await.expect("url");
    let html = c.page(url.path()).await;
    assert!(
        !html.contains("<script>window.pwned"),
        "raw script in the page"
    );
    assert!(html.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"));
    assert!(
        b.find_all("#bold, img[src=x]")
            .await
            .expect("query")
            .is_empty()
    );
    c.browser.screenshot("run-done").await.expect("screenshot");
    // Times are shown in the viewer's zone by app.js (UTC stays in the title).
    let t = b.wait_for("time[datetime]").await.expect("a time");
    let (shown, utc) = (
        t.text().await.expect("text"),
        t.attr("title").await.expect("title"),
    );
    assert!(
        utc.as_deref().is_some_and(|u| u.ends_with(" UTC")),
        "{utc:?}"
    );
    assert_ne!(
        Some(shown.as_str()),
        utc.as_deref(),
        "app.js rewrote the time"
    );

    // The runs filter, through htmx (under the CSP): the list is swapped in, the URL pushed.
    c.page("/ui/runs").await;
    let state = b.wait_for("#f-state").await.expect("filter");
    state.select_by_value("failed").await.expect("select");
    // Survives an htmx swap, not a full page load.
    b.client
        .execute("window.sameDocument = true;", vec![])
        .await
        .expect("js");
    b.click("form.filters button[type=submit]")
        .await
        .expect("filter");
    b.wait_for("p.empty").await.expect("no failed run");
    let url = b.client.current_url().await.expect("url");
    assert!(url.query().unwrap_or("").contains("state=failed"), "{url}");
    let swapped = b
        .client
        .execute("return document.querySelectorAll('main').length;", vec![])
        .await
        .expect("js");
    assert_eq!(swapped, json!(1), "one <main>, swapped in place");
    let same = b
        .client
        .execute("return window.sameDocument === true;", vec![])
        .await
        .expect("js");
    assert_eq!(
        same,
        json!(true),
        "htmx swapped the list without a page load"
    );
    c.browser.screenshot("runs").await.expect("screenshot");
    c.browser.close().await;
}

#[tokio::test]
async fn a_form_value_of_the_wrong_type_is_refused_by_the_api_validation() {
    let c = Console::start().await;
    let admin = c.server.admin.clone();
    let process = c
        .process(&admin, json!({ "name": "typed", "grant": {} }))
        .await;
    c.sign_in(&admin).await;
    let b = &c.browser;
    c.page(&format!("/ui/processes/{process}")).await;
    // An unknown input, smuggled into the form, is refused like over the API.
    b.client
        .execute(
            "var i = document.createElement('input'); i.name = 'in.evil'; i.value = 'x'; \
             document.querySelector('form.start').append(i);",
            vec![],
        )
        .await
        .expect("js");
    b.fill("#in-mode", "echo").await.expect("mode");
    b.click("form.start button[type=submit]")
        .await
        .expect("start");
    let alert = b
        .wait_for("p.error")
        .await
        .expect("refusal")
        .text()
        .await
        .expect("text");
    assert!(alert.contains("unknown input 'evil'"), "{alert}");
    let runs = c.server.get("/v1/runs", &admin).await;
    assert_eq!(
        runs.body.as_array().map(Vec::len),
        Some(0),
        "no run was created"
    );
    c.browser.close().await;
}

#[tokio::test]
async fn cancels_a_running_run_from_its_page() {
    let c = Console::start().await;
    let admin = c.server.admin.clone();
    let process = c
        .process(&admin, json!({ "name": "long-drip", "grant": {} }))
        .await;
    let run = c
        .server
        .start_run(&process, &admin, json!({ "mode": "drip", "n": 200 }))
        .await;
    c.sign_in(&admin).await;
    let b = &c.browser;
    c.page(&format!("/ui/runs/{run}")).await;
    b.wait_for("#events[data-live='1'] li")
        .await
        .expect("running");
    b.click("#cancel-form button").await.expect("cancel");
    let record = c.server.wait_for_state_or_end(&run).await;
    assert_eq!(record["state"], "cancelled", "{record}");
    // The page shows it, and offers no cancel any more.
    let html = c.page(&format!("/ui/runs/{run}")).await;
    assert!(html.contains("state-cancelled"), "{html}");
    assert!(b.find("#cancel-form").await.is_none());
    let audit = c.server.audit(&format!("run={run}")).await;
    assert!(
        audit.iter().any(
            |r| r["action"].as_str().is_some_and(|a| a.contains("cancel")) && r["actor"] == "admin"
        ),
        "the cancel is audited as the admin: {audit:?}"
    );
    c.browser.close().await;
}

#[tokio::test]
async fn a_workflow_run_page_shows_its_step_tree_and_a_step_run_links_back() {
    let c = Console::start().await;
    let admin = c.server.admin.clone();
    let emit = |content: &str, next: serde_json::Value| {
        let mut s = json!({ "type": "task", "module": c.probe, "inputs": { "mode": "emit", "content": content } });
        if let (Some(s), Some(n)) = (s.as_object_mut(), next.as_object()) {
            s.extend(n.clone());
        }
        s
    };
    let workflow = json!({ "start_at": "first", "states": {
        "first": emit(HOSTILE, json!({ "next": "fan" })),
        "fan": { "type": "parallel", "end": true, "branches": [
            { "start_at": "inner", "states": { "inner": emit("{\"ok\": true}", json!({ "end": true })) } }
        ] }
    } });
    let r = c
        .server
        .post(
            "/v1/processes",
            &admin,
            json!({ "name": "console-flow", "workflow": workflow }),
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.text);
    let pid = r.body["id"].as_str().expect("id").to_string();
    let id = c.server.start_run(&pid, &admin, json!({})).await;
    let run = c.server.wait_for_state_or_end(&id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    c.sign_in(&admin).await;
    let html = c.page(&format!("/ui/runs/{id}")).await;
    let b = &c.browser;
    let rows = b.find_all("table.steps tr.step").await.expect("rows");
    assert_eq!(rows.len(), 3, "{html}");
    for path in ["first", "fan", "fan/0/inner"] {
        assert!(
            b.find(&format!("tr.step[data-path='{path}']"))
                .await
                .is_some(),
            "{path}: {html}"
        );
    }
    // A step's output is text, even when it is hostile HTML.
    assert!(b.find_all("img[src=x]").await.expect("query").is_empty());
    assert!(html.contains("&lt;script&gt;"), "{html}");
    c.browser
        .screenshot("workflow-run")
        .await
        .expect("screenshot");
    // A step run's page links back to its workflow run.
    let child = run["workflow"]["steps"]["fan/0/inner"]["attempts"][0]["run_id"]
        .as_str()
        .expect("child")
        .to_string();
    let html = c.page(&format!("/ui/runs/{child}")).await;
    assert!(html.contains(&format!("href=\"/ui/runs/{id}\"")), "{html}");
}
