//! Pagination of the API's long lists (runs, audit records) with cursors: every item once, in
//! order, whatever the page size, answered from an index on sled and on PostgreSQL (`.ci/run`
//! runs this suite over both).

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::json;
use warden_tests::http::{Server, new_key};

/// Follows the `header` cursor of `path` (which ends in a query) as `param` until the last
/// page; returns every item's `field` in order.
async fn all_pages(
    server: &Server,
    path: &str,
    header: &str,
    param: &str,
    field: &str,
) -> Vec<String> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{path}&{param}={c}"),
            None => path.to_string(),
        };
        let r = server.get(&url, &server.admin).await;
        assert_eq!(r.status, StatusCode::OK, "{url}: {}", r.text);
        for item in r.body.as_array().expect("a list") {
            items.push(item[field].to_string().trim_matches('"').to_string());
        }
        assert!(
            r.headers.get(header).is_none_or(|v| !v.is_empty()),
            "an empty cursor header on {url}"
        );
        let next = r
            .headers
            .get(header)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if next.is_empty() {
            return items;
        }
        cursor = Some(next);
    }
    panic!("pagination of {path} never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_audit_records_page_through_every_item_once_in_order() {
    let server = Server::start().await;
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("probe", &key).await;
    let r = server.create_process(&server.admin, "pager", &digest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let process = r.body["id"].as_str().expect("id").to_string();
    let mut started = Vec::new();
    for i in 0..7 {
        let mode = if i % 3 == 0 { "fail" } else { "echo" };
        let run = server
            .start_run(&process, &server.admin, json!({ "mode": mode }))
            .await;
        server.wait_for_state_or_end(&run).await;
        started.push(run);
    }
    let newest_first: Vec<String> = started.iter().rev().cloned().collect();
    for page in [1, 2, 3, 7, 100] {
        let runs = all_pages(
            &server,
            &format!("/v1/runs?process={process}&limit={page}"),
            "x-warden-next-before",
            "before",
            "id",
        )
        .await;
        assert_eq!(runs, newest_first, "page size {page}");
    }
    // A filter pages over its matches only.
    let failed = all_pages(
        &server,
        "/v1/runs?state=failed&limit=2",
        "x-warden-next-before",
        "before",
        "id",
    )
    .await;
    let want: Vec<String> = newest_first
        .iter()
        .enumerate()
        .filter(|(i, _)| (started.len() - 1 - i) % 3 == 0)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(failed, want);

    // Audit records of one run, page by page: the same records as one big page, in seq order.
    let run = &started[1];
    let whole = all_pages(
        &server,
        &format!("/v1/audit?run={run}&limit=1000"),
        "x-warden-next-after",
        "after",
        "seq",
    )
    .await;
    assert!(whole.len() >= 2, "{whole:?}");
    for page in [1, 2, 3] {
        let paged = all_pages(
            &server,
            &format!("/v1/audit?run={run}&limit={page}"),
            "x-warden-next-after",
            "after",
            "seq",
        )
        .await;
        assert_eq!(paged, whole, "page size {page}");
    }
    let seqs: Vec<u64> = whole.iter().map(|s| s.parse().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The whole log pages too, with no record twice.
    let all = all_pages(
        &server,
        "/v1/audit?limit=5",
        "x-warden-next-after",
        "after",
        "seq",
    )
    .await;
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
    let count = server.get("/v1/audit/verify", &server.admin).await.body["count"]
        .as_u64()
        .expect("count");
    assert_eq!(all.len() as u64, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_cursor_is_a_clear_400() {
    let server = Server::start().await;
    for bad in [
        "x",
        "12",
        ":abc",
        "12:",
        "12:a%20b",
        "99999999999999999999999:a",
    ] {
        let r = server
            .get(&format!("/v1/runs?before={bad}"), &server.admin)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let r = server.get("/v1/audit?after=minus-one", &server.admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}
