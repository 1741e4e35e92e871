//! The `bridge_offline` rule: a bridge enrolled through the registry, heard from, then
//! silent. Its alert fires once per offline period (not once per check), not while it is
//! heard from, again after it came back and went silent, never for a revoked bridge, and
//! reaches the rule's sink.

use super::*;

fn fired_for(state: &AppState, bridge: &str) -> usize {
    audit_actions(state, "alert.fired")
        .iter()
        .filter(|r| {
            let detail: Value =
                serde_json::from_str(r.entry.detail.as_deref().unwrap_or("{}")).unwrap_or_default();
            detail["key"] == bridge && detail["rule"] == "bridge-down"
        })
        .count()
}

/// Enrols a bridge through the registry (as `warden bridge enroll` would) and notes it
/// heard from once.
async fn enrol(registry: &warden_host::bridge::registry::BridgeRegistry, name: &str) -> String {
    let (token, _) = registry
        .create_token("dmz", Duration::from_secs(60), "admin")
        .await
        .expect("token");
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let bridge = registry
        .enroll(&token, &key.verifying_key(), name, "1.0")
        .await
        .expect("enrol");
    registry.seen(&bridge.id, "1.0").expect("seen");
    bridge.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_bridge_fires_once_per_offline_period_and_a_revoked_one_never() {
    let server = Server::start().await;
    let st = state(&server);
    let registry = &st.hub.registry;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pager.jsonl");
    let sink = json!({"name": "pager", "kind": "file", "path": path.to_str().unwrap(), "events": "alerts", "from": "now"});
    let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let rule = json!({"name": "bridge-down", "match": {"kind": "bridge_offline", "secs": 3},
        "sinks": ["pager"], "cooldown_secs": 0});
    let r = server.post("/v1/notify/rules", &server.admin, rule).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let quiet = enrol(registry, "quiet").await;
    let chatty = enrol(registry, "chatty").await;
    let revoked = enrol(registry, "revoked").await;
    registry
        .revoke(&revoked, "admin", "decommissioned")
        .await
        .expect("revoke");

    // `chatty` keeps being heard from (the registry writes "seen" every 2 s at most); `quiet`
    // goes silent.
    let heartbeat = {
        let (registry, chatty) = (registry.clone(), chatty.clone());
        tokio::spawn(async move {
            loop {
                registry.seen(&chatty, "1.0").expect("seen");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let started = tokio::time::Instant::now();
    wait_until("the alert for the silent bridge", || {
        fired_for(st, &quiet) == 1
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "fired too early"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(fired_for(st, &quiet), 1, "one alert per offline period");
    assert_eq!(
        fired_for(st, &chatty),
        0,
        "a bridge heard from is not offline"
    );
    assert_eq!(
        fired_for(st, &revoked),
        0,
        "a revoked bridge is gone, not offline"
    );
    wait_until("the alert at the pager", || {
        lines(&path).iter().any(|l| {
            l["record"]["action"] == "alert.fired"
                && l["record"]["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&quiet)
        })
    })
    .await;

    // Heard from again, then silent again: a second period, a second alert.
    registry.seen(&quiet, "1.0").expect("seen");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        fired_for(st, &quiet),
        1,
        "back: no alert while it is heard from"
    );
    wait_until("the second period's alert", || fired_for(st, &quiet) == 2).await;
    assert_eq!(fired_for(st, &chatty), 0);
    heartbeat.abort();
}
