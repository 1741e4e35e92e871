//! File sinks, the offline verifier, alert rules, metrics, restarts.

use super::*;

/// Waits until the file sink's export ends with the checkpoint of the head.
async fn export_until_head(server: &Server, path: &Path) -> String {
    let st = state(server);
    let want = head(st) - 1;
    wait_until("the export to reach the signed head", || {
        lines(path)
            .last()
            .is_some_and(|l| l["type"] == "audit.checkpoint" && l["seq"] == want)
    })
    .await;
    std::fs::read_to_string(path).unwrap()
}

/// A server with a file sink `file` exporting into `DIR/export.jsonl`; (server, DIR, path).
async fn exporting_server() -> (Server, tempfile::TempDir, std::path::PathBuf) {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.jsonl");
    let sink = json!({"name": "file", "kind": "file", "path": path.to_str().unwrap()});
    let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (server, dir, path)
}

#[tokio::test]
async fn exported_file_verifies_offline_and_edits_removals_reorders_are_caught() {
    let (server, dir, path) = exporting_server().await;
    let st = state(&server);
    denial(st, "run-f", 6).await;
    let text = export_until_head(&server, &path).await;
    let key = st.audit.verifying_key();
    let clean = verify_export(text.as_bytes(), &key).unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.first_seq, Some(0));
    let records: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"audit.record\""))
        .collect();
    let all: Vec<&str> = text.lines().collect();
    // Edited: a denial turned into an allowed call.
    let edited = text.replacen(
        "\"verdict\":\"denied\",\"reason\":\"no grant\"",
        "\"verdict\":\"denied\",\"reason\":\"granted\"",
        1,
    );
    // Edited and re-hashed by someone without the key: the chain or checkpoint breaks.
    let removed: String = all
        .iter()
        .filter(|l| **l != records[3])
        .map(|l| format!("{l}\n"))
        .collect();
    let mut swapped = all.clone();
    let (a, b) = (
        all.iter().position(|l| *l == records[2]).unwrap(),
        all.iter().position(|l| *l == records[4]).unwrap(),
    );
    swapped.swap(a, b);
    let reordered: String = swapped.iter().map(|l| format!("{l}\n")).collect();
    let cut: String = all[..all.len() - 1]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
    for (name, variant, key) in [
        ("edited", edited.as_str(), key),
        ("removed", removed.as_str(), key),
        ("reordered", reordered.as_str(), key),
        ("cut tail", cut.as_str(), key),
        ("wrong key", text.as_str(), other_key),
    ] {
        let report = verify_export(variant.as_bytes(), &key).unwrap();
        assert!(!report.is_clean(), "{name} not caught: {report:?}");
    }
    // A repeated chunk (at-least-once) is accepted.
    let repeated = format!("{text}{}\n{}\n", records[4], records[5]);
    let report = verify_export(repeated.as_bytes(), &key).unwrap();
    assert!(
        report.problems.is_empty() && report.duplicates == 2,
        "{report:?}"
    );
    // The CLI says the same.
    let key_hex = hex::encode(key.as_bytes());
    std::fs::write(dir.path().join("edited.jsonl"), &edited).unwrap();
    for (file, code) in [("export.jsonl", 0), ("edited.jsonl", 1)] {
        let out = warden_tests::warden(
            env!("CARGO_BIN_EXE_warden-e2e"),
            &[
                "audit",
                "verify",
                "--export",
                dir.path().join(file).to_str().unwrap(),
                "--server-key",
                &key_hex,
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{file}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[tokio::test]
async fn a_denial_storm_fires_one_alert_routed_to_its_sink() {
    let server = Server::start().await;
    let st = state(&server);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let sink = json!({"name": "pager", "kind": "file", "path": path.to_str().unwrap(), "events": "alerts", "from": "now"});
    let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let rule = json!({"name": "burst", "match": {"kind": "denial_burst", "threshold": 5, "window_secs": 60, "by": "run"},
        "sinks": ["pager"], "cooldown_secs": 3600});
    let r = server.post("/v1/notify/rules", &server.admin, rule).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    tokio::time::sleep(Duration::from_millis(300)).await;
    denial(st, "run-storm", 200).await;
    denial(st, "run-quiet", 2).await;
    wait_until("the alert", || !audit_actions(st, "alert.fired").is_empty()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fired = audit_actions(st, "alert.fired");
    assert_eq!(
        fired.len(),
        1,
        "one alert for the storm, none for the quiet run"
    );
    let detail: Value = serde_json::from_str(fired[0].entry.detail.as_deref().unwrap()).unwrap();
    assert_eq!(detail["key"], "run-storm");
    wait_until("the alert at its sink", || {
        lines(&path)
            .iter()
            .any(|l| l["record"]["action"] == "alert.fired")
    })
    .await;
    assert!(
        lines(&path)
            .iter()
            .all(|l| l["record"]["action"] == "alert.fired"),
        "alerts only"
    );
}

#[tokio::test]
async fn metrics_the_dashboard_uses_exist_and_count_host_calls() {
    let server = Server::start().await;
    let st = state(&server);
    // The rule engine starts at the head: give it a moment, then make denied host calls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    denial(st, "run-m", 4).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let text = loop {
        let r = server
            .request(reqwest::Method::GET, "/metrics", None, None)
            .await;
        if r.text
            .contains("warden_host_calls_total{capability=\"ssh.exec\",decision=\"denied\"} 4")
        {
            break r.text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains("warden_host_call_duration_seconds_count 4"),
        "{text}"
    );
    let dashboard =
        std::fs::read_to_string(repo_root().join("host/packaging/grafana/warden.json")).unwrap();
    let mut names: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("warden_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let base = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {base} ")),
            "dashboard uses {name}, /metrics lacks it"
        );
    }
}

#[tokio::test]
async fn a_stopped_notifier_resumes_at_its_cursor_without_a_gap() {
    let (server, _dir, path) = exporting_server().await;
    let st = state(&server);
    denial(st, "run-r", 3).await;
    export_until_head(&server, &path).await;
    // The server's sinks stop (as in a restart); records keep committing meanwhile.
    st.notify.stop();
    denial(st, "run-r", 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = lines(&path).len();
    st.notify.reload().unwrap();
    let text = export_until_head(&server, &path).await;
    assert!(lines(&path).len() > before + 30);
    let report = verify_export(text.as_bytes(), &st.audit.verifying_key()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.last_seq, Some(head(st) - 1));
}

#[tokio::test]
async fn a_file_sink_cannot_append_to_a_file_that_is_not_an_export() {
    let server = Server::start().await;
    let st = state(&server);
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("authorized_keys");
    std::fs::write(&victim, "ssh-ed25519 AAAA... admin\n").unwrap();
    let link = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for path in [&victim, &link] {
        let sink = json!({"name": "f", "kind": "file", "path": path.to_str().unwrap()});
        let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
        r.expect_error(StatusCode::BAD_REQUEST, "invalid");
    }
    assert_eq!(audit_actions(st, "notify.sink.refused").len(), 2);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "ssh-ed25519 AAAA... admin\n"
    );
}
