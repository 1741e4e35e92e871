//! Bridges that die, are cut off or revoked; servers that restart: a run is never left
//! `running`, and the audit chain stays whole.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Lab, Zone, assert_leases_revoked, assert_verifies, ended, wait_for_intent};

/// The lost timeout these tests use.
const LOST_AFTER: Duration = Duration::from_secs(5);

/// Every outcome record of run `id` follows an intent of the same call, and the chain verifies.
async fn assert_complete(lab: &Lab, id: &str) -> Vec<Value> {
    let records = lab.server.audit(&format!("run={id}")).await;
    let intents = records
        .iter()
        .filter(|r| r["action"] == "ssh.exec" && r["outcome"] == "intent")
        .count();
    let outcomes = records
        .iter()
        .filter(|r| r["action"] == "ssh.exec" && r["outcome"] != "intent")
        .count();
    assert!(
        outcomes <= intents,
        "an outcome without its intent: {records:?}"
    );
    assert_verifies(lab).await;
    records
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_killed_mid_call_leaves_the_run_lost_within_the_timeout_and_the_audit_whole() {
    let lab = Lab::new(LOST_AFTER.as_secs()).await;
    let zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("in-dmz", &["dmz-host"]).await;
    let mut bridge = zone.bridge(&lab.token("dmz").await);
    let id = lab.exec(&process, "dmz-host", "sleep 30").await;
    wait_for_intent(&lab, &id, "ssh.exec").await;
    bridge.kill();
    let killed = Instant::now();
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "lost", "{run}");
    assert!(
        killed.elapsed() < LOST_AFTER + Duration::from_secs(3),
        "lost after {:?}",
        killed.elapsed()
    );
    assert!(
        run["error"]
            .as_str()
            .unwrap_or("")
            .contains("stopped renewing"),
        "{run}"
    );
    let records = assert_complete(&lab, &id).await;
    // The intent of the call in flight is there (its effect is unknown), and so is the end.
    assert!(
        records.iter().any(|r| r["action"] == "run.lost"),
        "{records:?}"
    );
    assert_leases_revoked(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_killed_between_many_calls_loses_no_record_of_a_call_the_task_saw() {
    let lab = Lab::new(LOST_AFTER.as_secs()).await;
    let zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("in-dmz", &["dmz-host"]).await;
    let mut bridge = zone.bridge(&lab.token("dmz").await);
    let inputs = json!({ "mode": "exec-repeat", "credential": "pw", "target": "dmz-host", "command": "id -un", "n": 200 });
    let id = lab
        .server
        .start_run(&process, &lab.server.admin, inputs)
        .await;
    // Killed somewhere in the middle of the calls.
    for _ in 0..400 {
        let records = lab.server.audit(&format!("run={id}&action=ssh.exec")).await;
        if records.len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bridge.kill();
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "lost", "{run}");
    assert_complete(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_from_the_api_stops_a_remote_run_at_once() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("in-dmz", &["dmz-host"]).await;
    let bridge = zone.bridge(&lab.token("dmz").await);
    let id = lab.exec(&process, "dmz-host", "sleep 30").await;
    wait_for_intent(&lab, &id, "ssh.exec").await;
    let asked = Instant::now();
    let r = lab
        .server
        .post(
            &format!("/v1/runs/{id}/cancel"),
            &lab.server.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let run = ended(&lab, &id).await;
    let took = asked.elapsed();
    assert_eq!(run["state"], "cancelled", "{run} {}", bridge.log());
    assert!(took < Duration::from_secs(3), "cancel took {took:?}");
    assert_complete(&lab, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_cut_ends_the_run_lost_and_the_bridge_reconnects_by_itself() {
    let lab = Lab::new(LOST_AFTER.as_secs()).await;
    let mut zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("in-dmz", &["dmz-host"]).await;
    let bridge = zone.bridge(&lab.token("dmz").await);
    let id = lab.exec(&process, "dmz-host", "sleep 30").await;
    wait_for_intent(&lab, &id, "ssh.exec").await;
    zone.forward.cut();
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "lost", "{run}");
    assert_complete(&lab, &id).await;
    // The network returns: the same bridge takes the next run without being restarted.
    zone.forward_to(&lab.server_addr());
    let id = lab.exec(&process, "dmz-host", "id -un").await;
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "succeeded", "{run} {}", bridge.log());
    assert_eq!(run["bridge"], bridge.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_restart_mid_run_the_bridge_reconnects_and_the_run_finishes() {
    let mut lab = Lab::new(30).await;
    let mut zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("in-dmz", &["dmz-host"]).await;
    let bridge = zone.bridge(&lab.token("dmz").await);
    let id = lab.exec(&process, "dmz-host", "sleep 3").await;
    wait_for_intent(&lab, &id, "ssh.exec").await;
    lab.restart(&["--bridge-lost-after-secs", "30"]).await;
    zone.forward_to(&lab.server_addr());
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "succeeded", "{run} {}", bridge.log());
    assert_eq!(run["bridge"], bridge.id);
    let result: Value =
        serde_json::from_str(run["result"].as_str().expect("result")).expect("json");
    assert_eq!(result["exit"], 0, "{result}");
    assert_complete(&lab, &id).await;
    // And it keeps serving after the restart.
    let id = lab.exec(&process, "dmz-host", "id -un").await;
    assert_eq!(ended(&lab, &id).await["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_run_starts_again_only_when_its_process_says_that_is_safe() {
    let lab = Lab::new(LOST_AFTER.as_secs()).await;
    let zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let body = json!({
        "name": "idempotent",
        "module_digest": lab.digest,
        "retry_on_lost": true,
        "grant": { "credentials": ["pw"], "targets": ["dmz-host"], "commands": ["sleep *"] },
    });
    let r = lab
        .server
        .post("/v1/processes", &lab.server.admin, body)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let retrying = r.body["id"].as_str().expect("id").to_string();
    let once = lab.process("once", &["dmz-host"]).await;

    let mut first = zone.bridge(&lab.token("dmz").await);
    let lost_retried = lab.exec(&retrying, "dmz-host", "sleep 2").await;
    let lost_once = lab.exec(&once, "dmz-host", "sleep 2").await;
    wait_for_intent(&lab, &lost_retried, "ssh.exec").await;
    wait_for_intent(&lab, &lost_once, "ssh.exec").await;
    first.kill();
    assert_eq!(ended(&lab, &lost_retried).await["state"], "lost");
    assert_eq!(ended(&lab, &lost_once).await["state"], "lost");

    // One new run, of the process that allows it, with the same inputs and requester.
    let retried = loop {
        let records = lab.server.audit("action=run.retried").await;
        if let Some(record) = records.first() {
            assert_eq!(records.len(), 1, "{records:?}");
            assert_eq!(record["run_id"], lost_retried.as_str());
            break record["detail"].as_str().expect("detail").to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new_id = retried.rsplit(' ').next().expect("new run id").to_string();
    let queued = lab.run(&new_id).await;
    assert_eq!(queued["process_id"], retrying.as_str());
    assert_eq!(queued["actor"], "admin");
    assert_eq!(queued["inputs"]["command"], "sleep 2");
    let second = zone.bridge(&lab.token("dmz").await);
    let run = ended(&lab, &new_id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["bridge"], second.id);
    // Nothing retried the other one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lab.server.audit("action=run.retried").await.len(), 1);
}
