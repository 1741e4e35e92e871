//! The run list's user and time filters (`GET /v1/runs?user=&since=&until=`), through the API
//! and the console's runs page: they narrow, page with `before=` as before, refuse bad values
//! (400), and never show — nor, through the page cursor, point at — a run the caller could not
//! see anyway; the Super Administrator finds no trace of another administrator's unshared
//! process by filtering on its owner or its time.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::http::{Server, new_key};

use super::{http_get, http_sign_in};

/// Unix milliseconds as RFC 3339 (`YYYY-MM-DDTHH:MM:SS.mmmZ`), without a date crate.
fn rfc3339(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(days).expect("days") + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

/// A server with the probe published and a process of it owned by the admin, not shared.
async fn setup() -> (Server, String) {
    let s = Server::start().await;
    let key = new_key();
    s.trust("filters", &key).await;
    let probe = s.publish("probe", &key).await;
    let body = json!({ "name": "admins-proc", "module_digest": probe, "grant": {} });
    let r = s.post("/v1/processes", &s.admin, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (s, r.body["id"].as_str().expect("id").to_string())
}

/// Starts a run and waits for its end; its record.
async fn run(s: &Server, process: &str, token: &str) -> Value {
    let id = s.start_run(process, token, json!({ "mode": "echo" })).await;
    s.wait_for_state_or_end(&id).await;
    // Distinct creation milliseconds, so time bounds fall between runs.
    tokio::time::sleep(Duration::from_millis(15)).await;
    s.get(&format!("/v1/runs/{id}"), &s.admin).await.body
}

#[tokio::test]
async fn filters_runs_by_user_and_time_and_pages_through_them() {
    let (s, process) = setup().await;
    let alice = s.user("alice", &[]).await;
    let bob = s.user("bob", &[]).await;
    s.share(&process, &s.admin, &["alice", "bob"]).await;
    let a1 = run(&s, &process, &alice).await;
    let b1 = run(&s, &process, &bob).await;
    let a2 = run(&s, &process, &alice).await;
    let a3 = run(&s, &process, &alice).await;
    let id = |r: &Value| r["id"].as_str().expect("id").to_string();
    let at = |r: &Value| r["created_ms"].as_u64().expect("created_ms");

    let list = s.get("/v1/runs?user=alice", &s.admin).await;
    assert_eq!(
        ids(&list.body),
        [id(&a3), id(&a2), id(&a1)],
        "{}",
        list.text
    );
    let list = s.get("/v1/runs?user=bob", &s.admin).await;
    assert_eq!(ids(&list.body), [id(&b1)]);

    // `since` is inclusive, `until` exclusive.
    let q = format!("/v1/runs?since={}", rfc3339(at(&b1)));
    assert_eq!(
        ids(&s.get(&q, &s.admin).await.body),
        [id(&a3), id(&a2), id(&b1)]
    );
    let q = format!("/v1/runs?until={}", rfc3339(at(&a2)));
    assert_eq!(ids(&s.get(&q, &s.admin).await.body), [id(&b1), id(&a1)]);
    let q = format!(
        "/v1/runs?user=alice&since={}&until={}",
        rfc3339(at(&b1)),
        rfc3339(at(&a3))
    );
    assert_eq!(ids(&s.get(&q, &s.admin).await.body), [id(&a2)]);
    // Another zone's way of writing the same instant.
    let q = format!(
        "/v1/runs?user=alice&since={}",
        rfc3339(at(&a3)).replace('Z', "%2B00:00")
    );
    assert_eq!(ids(&s.get(&q, &s.admin).await.body), [id(&a3)]);

    // Paging keeps the filters: one run a page, newest first, then the end.
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut q = "/v1/runs?user=alice&limit=1".to_string();
        if let Some(b) = &before {
            q.push_str(&format!("&before={b}"));
        }
        let page = s.get(&q, &s.admin).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen.extend(ids(&page.body));
        match page.headers.get("x-warden-next-before") {
            Some(next) => before = Some(next.to_str().expect("ascii").to_string()),
            None => break,
        }
        assert!(seen.len() <= 3, "the pages end");
    }
    assert_eq!(seen, [id(&a3), id(&a2), id(&a1)]);
    // A `before` older than `until` wins; an `until` older than `before` too.
    let q = format!(
        "/v1/runs?until={}&before={}:{}",
        rfc3339(at(&a3)),
        at(&a2),
        id(&a2)
    );
    assert_eq!(ids(&s.get(&q, &s.admin).await.body), [id(&b1), id(&a1)]);

    // The console's runs page passes them on (a datetime-local value is UTC).
    let (cookie, _) = http_sign_in(&s.base, &s.admin).await;
    let (status, _, html) = http_get(&s.base, &cookie, "/ui/runs?user=bob").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&id(&b1)[..8]) && !html.contains(&id(&a1)[..8]),
        "{html}"
    );
    let since = rfc3339(at(&a3));
    let local = &since[..19]; // YYYY-MM-DDTHH:MM:SS, no zone
    let (_, _, html) = http_get(
        &s.base,
        &cookie,
        &format!("/ui/runs?since={local}&user=alice"),
    )
    .await;
    let shown = [&a1, &a2, &a3].map(|r| html.contains(&id(r)[..8]));
    // The second-truncated bound includes a3 and whatever shared its second.
    assert!(shown[2], "{html}");
    let (status, _, html) = http_get(&s.base, &cookie, "/ui/runs?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("RFC 3339"), "the API's reason shown: {html}");
}

#[tokio::test]
async fn refuses_bad_filter_values_with_400() {
    let (s, _) = setup().await;
    for q in [
        "since=yesterday",
        "since=2026-12-01",
        "until=2026-13-01T00:00:00Z",
        "since=1969-12-31T23:59:59Z",
        "until=1700000000000",
        "user=Alice",
        "user=a%2Fb",
        "user=",
        &format!("user={}", "a".repeat(65)),
    ] {
        let r = s.get(&format!("/v1/runs?{q}"), &s.admin).await;
        r.expect_error(StatusCode::BAD_REQUEST, "invalid");
    }
}

#[tokio::test]
async fn the_user_filter_never_shows_runs_the_caller_could_not_see() {
    let (s, shared) = setup().await;
    // Bob may view the processes shared with him (and their runs): Execute Privileged Process.
    let r = s
        .post(
            "/v1/roles",
            &s.admin,
            json!({ "name": "executors", "privileges": ["ExecutePrivilegedProcess"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let alice = s.user("alice", &[]).await;
    let bob = s.user("bob", &["executors"]).await;
    s.share(&shared, &s.admin, &["alice", "bob"]).await;
    // Alice's runs of the process shared with both, and of one shared with her only.
    let probe = s
        .get(&format!("/v1/processes/{shared}"), &s.admin)
        .await
        .body["module_digest"]
        .as_str()
        .expect("digest")
        .to_string();
    // A second process shared with alice only: bob may not see its runs.
    let mine = s.create_process(&s.admin, "alice-only", &probe).await;
    assert_eq!(mine.status, StatusCode::CREATED, "{}", mine.text);
    let private = mine.body["id"].as_str().expect("id").to_string();
    s.share(&private, &s.admin, &["alice"]).await;
    let id = |r: Value| r["id"].as_str().expect("id").to_string();
    let seen = id(run(&s, &shared, &alice).await);
    let mut hidden = Vec::new();
    for _ in 0..3 {
        hidden.push(id(run(&s, &private, &alice).await));
    }
    // Alice sees all four (so the checks below can fail).
    assert_eq!(
        ids(&s.get("/v1/runs?user=alice", &alice).await.body).len(),
        4
    );

    for q in [
        "user=alice",
        "user=alice&limit=1",
        "user=alice&limit=2",
        &format!("user=alice&process={private}"),
        &format!("user=alice&since={}", rfc3339(0)),
    ] {
        let r = s.get(&format!("/v1/runs?{q}"), &bob).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
        let headers = format!("{:?}", r.headers);
        for h in &hidden {
            assert!(!r.text.contains(h.as_str()), "{q}: bob sees {h}");
            assert!(
                !headers.contains(h.as_str()),
                "{q}: the cursor points at {h}"
            );
        }
        assert!(!r.text.contains(&private), "{q}");
    }
    // Bob may read alice's run of the process shared with him, by id and in the list.
    let one = s.get(&format!("/v1/runs/{seen}"), &bob).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    let r = s.get("/v1/runs?user=alice", &bob).await;
    assert_eq!(
        ids(&r.body),
        [seen.clone()],
        "only the shared process's run"
    );
    // A filter matching only runs bob may not see: empty, and no cursor.
    let r = s
        .get(
            &format!("/v1/runs?user=alice&process={private}&limit=1"),
            &bob,
        )
        .await;
    assert!(ids(&r.body).is_empty());
    assert!(r.headers.get("x-warden-next-before").is_none(), "no cursor");
}

#[tokio::test]
async fn the_super_administrator_finds_no_trace_of_an_unshared_process_through_the_filters() {
    let (s, hidden) = setup().await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(run(&s, &hidden, &s.admin).await);
    }
    let sam = s.user("sam", &["super-administrator"]).await;
    let first = runs[0]["created_ms"].as_u64().expect("ms");
    let mut traces: Vec<String> = runs
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    traces.push(hidden.clone());
    traces.push("admins-proc".into());
    // The owner finds them with the same filters (so the checks below can fail).
    let owner = s.get("/v1/runs?user=admin", &s.admin).await;
    assert_eq!(ids(&owner.body).len(), 3, "{}", owner.text);

    let queries = [
        "user=admin".to_string(),
        "user=admin&limit=1".into(),
        format!("user=admin&since={}", rfc3339(first)),
        format!("until={}", rfc3339(first + 60_000)),
        format!("since={}&limit=1", rfc3339(first)),
        format!("user=admin&process={hidden}&limit=1"),
    ];
    for q in &queries {
        let r = s.get(&format!("/v1/runs?{q}"), &sam).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
        assert!(ids(&r.body).is_empty(), "{q}: {}", r.text);
        let headers = format!("{:?}", r.headers);
        for t in &traces {
            assert!(!r.text.contains(t.as_str()), "{q}: body shows {t}");
            assert!(!headers.contains(t.as_str()), "{q}: a header shows {t}");
        }
        assert!(
            r.headers.get("x-warden-next-before").is_none(),
            "{q}: a cursor says more runs exist"
        );
    }
    // Nor the console's runs page with the same filters.
    let (cookie, _) = http_sign_in(&s.base, &sam).await;
    for q in &queries {
        let (status, _, html) = http_get(&s.base, &cookie, &format!("/ui/runs?{q}")).await;
        assert_eq!(status, StatusCode::OK, "{q}");
        for t in &traces {
            assert!(!html.contains(t.as_str()), "/ui/runs?{q} shows {t}");
        }
    }
}
