//! Runs go to a bridge of their targets' zone, and only there.

use serde_json::json;

use super::{Lab, Zone, assert_verifies, ended};

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_bridge_runs_the_task_on_a_target_only_its_network_reaches() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    // The same address registered twice: in zone dmz (the bridge's) and in the server's own
    // zone, where the embedded bridge would have to reach it.
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    lab.target("same-host-from-server", "default", &zone.sshd)
        .await;
    let local = lab.process("local", &["same-host-from-server"]).await;
    let remote = lab.process("remote", &["dmz-host"]).await;

    // The embedded bridge cannot reach the target: nothing listens on that port here.
    let id = lab.exec(&local, "same-host-from-server", "id -un").await;
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let result: serde_json::Value =
        serde_json::from_str(run["result"].as_str().expect("result")).expect("json");
    assert_eq!(result["error"], "connection-refused", "{result}");
    assert!(run.get("bridge").is_none(), "{run}");

    // Queued while no bridge of the zone is online, with the reason.
    let id = lab.exec(&remote, "dmz-host", "id -un").await;
    let queued = lab.run(&id).await;
    assert_eq!(queued["state"], "queued", "{queued}");
    assert_eq!(
        queued["waiting"], "waiting for a bridge of zone dmz",
        "{queued}"
    );

    let bridge = zone.bridge(&lab.token("dmz").await);
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "succeeded", "{run} {}", bridge.log());
    assert_eq!(run["bridge"], bridge.id, "{run}");
    let result: serde_json::Value =
        serde_json::from_str(run["result"].as_str().expect("result")).expect("json");
    assert_eq!(result["exit"], 0, "{result}");
    assert_eq!(
        result["stdout"].as_str().map(str::trim),
        Some(lab.user.name.as_str())
    );

    // Every host call is in the server's chain, stamped with the bridge, and it verifies.
    let records = lab.server.audit(&format!("run={id}")).await;
    let exec: Vec<_> = records
        .iter()
        .filter(|r| r["action"] == "ssh.exec")
        .collect();
    assert_eq!(exec.len(), 2, "intent and outcome: {records:?}");
    let stamp = format!("bridge {}", bridge.id);
    assert!(
        exec.iter()
            .all(|r| r["detail"].as_str().is_some_and(|d| d.contains(&stamp))),
        "{exec:?}"
    );
    assert!(
        records.iter().any(|r| r["action"] == "credentials.acquire"),
        "{records:?}"
    );
    // The secret is in no record and no field of the run.
    let everything = format!("{records:?}{run}");
    assert!(!everything.contains(&lab.user.password));
    assert_verifies(&lab).await;

    // The bridge is listed, online, with nothing in flight.
    let r = lab.server.get("/v1/bridges", &lab.server.admin).await;
    let listed = r.body.as_array().expect("list").clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["zone"], "dmz");
    assert_eq!(listed[0]["online"], true);
    assert_eq!(listed[0]["runs_in_flight"], 0);
    assert_eq!(lab.server.metric("warden_bridges_online").await, 1);
    assert_eq!(
        lab.server
            .metric("warden_bridge_runs_dispatched_total")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_spanning_zones_is_refused_when_the_process_is_created() {
    let lab = Lab::new(30).await;
    let a = warden_tests::sshd::Sshd::start("127.0.0.1").expect("sshd");
    lab.target("in-dmz", "dmz", &a).await;
    lab.target("in-default", "default", &a).await;
    let body = json!({
        "name": "both",
        "module_digest": lab.digest,
        "grant": { "credentials": ["pw"], "targets": ["in-dmz", "in-default"], "commands": ["id -un"] },
    });
    let r = lab
        .server
        .post("/v1/processes", &lab.server.admin, body)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "grant_spans_zones");
    assert!(
        r.text.contains("default") && r.text.contains("dmz"),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_waits_for_a_bridge_of_its_zone_only_so_long() {
    let lab = Lab::with_args(&["--bridge-wait-secs", "1"]).await;
    let a = warden_tests::sshd::Sshd::start("127.0.0.1").expect("sshd");
    lab.target("far", "nobody-home", &a).await;
    let process = lab.process("stranded", &["far"]).await;
    let id = lab.exec(&process, "far", "id -un").await;
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "cancelled", "{run}");
    assert_eq!(
        run["error"], "no bridge of zone nobody-home took the run within 1 s",
        "{run}"
    );
    assert!(run.get("waiting").is_none(), "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bridges_of_one_zone_share_its_runs_each_run_once() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("in-dmz", &["dmz-host"]).await;
    let first = zone.bridge_with_slots(&lab.token("dmz").await, 1);
    let second = zone.bridge_with_slots(&lab.token("dmz").await, 1);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(lab.exec(&process, "dmz-host", "sleep 1").await);
    }
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        let run = ended(&lab, id).await;
        assert_eq!(run["state"], "succeeded", "{run}");
        *by.entry(run["bridge"].as_str().expect("bridge").to_string())
            .or_default() += 1;
        // Claimed once: one running transition per run.
        let records = lab
            .server
            .audit(&format!("run={id}&action=run.running"))
            .await;
        assert_eq!(records.len(), 1, "{records:?}");
    }
    assert_eq!(by.len(), 2, "both bridges took runs: {by:?}");
    assert!(by.contains_key(&first.id) && by.contains_key(&second.id));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_bridge_redacts_the_secret_exactly_as_the_embedded_one() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("in-dmz", &["dmz-host"]).await;
    let _bridge = zone.bridge(&lab.token("dmz").await);
    // The command itself names the secret and prints it: neither the intent record, the
    // outcome, nor the result the task sees may hold it.
    let echo = format!("echo {}", lab.user.password);
    let id = lab.exec(&process, "dmz-host", &echo).await;
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let result: serde_json::Value =
        serde_json::from_str(run["result"].as_str().expect("result")).expect("json");
    assert_eq!(result["exit"], 0, "{result}");
    let stdout = result["stdout"].as_str().expect("stdout");
    assert!(!stdout.contains(&lab.user.password), "{stdout}");
    assert!(stdout.contains("[REDACTED"), "{stdout}");
    // (The run's inputs hold it: the test typed it there, as a careless operator could.)
    let records = lab.server.audit(&format!("run={id}")).await;
    let all = format!(
        "{records:?}{}{}{}{}",
        run["result"], run["events"], run["stdout"], run["stderr"]
    );
    assert!(
        !all.contains(&lab.user.password),
        "the secret reached a record or the output"
    );
    assert!(records.iter().any(|r| r["action"] == "ssh.exec"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_step_runs_on_its_zones_bridge_with_only_its_own_grant() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let exec = serde_json::json!({ "mode": "exec", "credential": "pw", "target": "dmz-host", "command": "id -un" });
    let task = |grant: serde_json::Value, next: serde_json::Value| {
        let mut t = serde_json::json!({ "type": "task", "module": lab.digest, "inputs": exec, "grant": grant });
        if let (Some(t), Some(n)) = (t.as_object_mut(), next.as_object()) {
            t.extend(n.clone());
        }
        t
    };
    // Step one may use the target but not the credential; step two both.
    let workflow = serde_json::json!({ "start_at": "one", "states": {
        "one": task(serde_json::json!({ "targets": ["dmz-host"], "commands": ["id -un"] }), serde_json::json!({ "next": "two", "catch": [{ "errors": ["*"], "next": "two" }] })),
        "two": task(serde_json::json!({ "credentials": ["pw"], "targets": ["dmz-host"], "commands": ["id -un"] }), serde_json::json!({ "end": true })),
    } });
    let r = lab
        .server
        .post(
            "/v1/processes",
            &lab.server.admin,
            serde_json::json!({ "name": "remote-flow", "workflow": workflow }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().expect("id").to_string();
    let bridge = zone.bridge(&lab.token("dmz").await);
    let id = lab
        .server
        .start_run(&pid, &lab.server.admin, serde_json::json!({}))
        .await;
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "succeeded", "{run} {}", bridge.log());
    let steps = &run["workflow"]["steps"];
    // Step one's run is denied the credential on the bridge too.
    let one = &steps["one"];
    assert_eq!(one["status"], "caught", "{one}");
    assert!(
        one["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("denied")),
        "{one}"
    );
    let two = &steps["two"]["output"];
    assert_eq!(two["exit"], 0, "{two}");
    assert_eq!(
        two["stdout"].as_str().map(str::trim),
        Some(lab.user.name.as_str()),
        "{two}"
    );
    for step in ["one", "two"] {
        let child = steps[step]["attempts"][0]["run_id"]
            .as_str()
            .expect("child");
        let r = lab
            .server
            .get(&format!("/v1/runs/{child}"), &lab.server.admin)
            .await;
        assert_eq!(r.body["bridge"], bridge.id, "{}", r.text);
    }
}
