//! A remote run's log events reach the server with the bridge's renewals and stream to a
//! watcher while the run runs — each event once, in order, also for a watcher that joins
//! late — and a bridge cannot push events into a run it does not hold, nor flood one.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use warden_tests::http::{PATIENCE, parse_sse_block};

use super::{Lab, Zone, ended, signed};

/// Lines the drip logs, one every 250 ms.
const LINES: usize = 12;

/// The run's SSE events until its `state` event: (when it arrived, event, data).
async fn watch(lab: &Lab, id: &str) -> Vec<(Instant, String, String)> {
    let resp = lab
        .server
        .client
        .get(format!("{}/v1/runs/{id}/events", lab.server.base))
        .bearer_auth(&lab.server.admin)
        .send()
        .await
        .expect("events request");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                if let Some((event, data)) = parse_sse_block(&block) {
                    let done = event == "state";
                    events.push((Instant::now(), event, data));
                    if done {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.expect("in time");
    events
}

/// The numbers of the drip's `line N: …` log events, in the order they came.
fn lines(events: &[(Instant, String, String)]) -> Vec<usize> {
    events
        .iter()
        .filter(|(_, event, _)| event == "log")
        .filter_map(|(_, _, data)| {
            let v: serde_json::Value = serde_json::from_str(data).ok()?;
            let message = v["message"].as_str()?;
            message
                .strip_prefix("line ")?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_runs_log_events_stream_while_it_runs_each_once() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("drip", &["dmz-host"]).await;
    let bridge = zone.bridge(&lab.token("dmz").await);
    let inputs = json!({ "mode": "drip", "n": LINES, "needle": "<b>x</b>" });

    // A watcher from the start sees every line, in order, once, most of them before the end.
    let id = lab
        .server
        .start_run(&process, &lab.server.admin, inputs.clone())
        .await;
    let events = watch(&lab, &id).await;
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "succeeded", "{run} {}", bridge.log());
    assert_eq!(run["bridge"], bridge.id, "{run}");
    assert_eq!(lines(&events), (0..LINES).collect::<Vec<_>>(), "{events:?}");
    let (end, _, _) = events.last().expect("state event");
    let first_line = events
        .iter()
        .find(|(_, event, _)| event == "log")
        .expect("a log event");
    // The drip takes 3 s; at the end only would put every line within a moment of the end.
    assert!(
        end.duration_since(first_line.0) >= Duration::from_millis(1500),
        "the first line came {:?} before the end: not live",
        end.duration_since(first_line.0)
    );
    assert!(!events.iter().any(|(_, e, _)| e == "lagged"), "{events:?}");

    // A watcher that joins half-way sees each later line once, the rest at the end, and is
    // told how many it missed before it joined.
    let id = lab
        .server
        .start_run(&process, &lab.server.admin, inputs)
        .await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let events = watch(&lab, &id).await;
    let seen = lines(&events);
    assert_eq!(ended(&lab, &id).await["state"], "succeeded");
    let first = *seen.first().expect("some lines");
    assert!(first > 0, "joined late but saw line 0: {seen:?}");
    assert_eq!(seen, (first..LINES).collect::<Vec<_>>(), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(_, e, d)| e == "lagged" && d.parse::<usize>().ok() == Some(first)),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_cannot_push_events_into_a_run_it_does_not_hold_nor_flood_one() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("drip", &["dmz-host"]).await;
    let bridge = zone.bridge(&lab.token("dmz").await);
    let forged = |index: u64, message: &str| json!({ "index": index, "at_ms": 1, "level": "info", "message": message });

    // A run on the embedded bridge (default zone): no remote bridge holds it.
    let local = lab
        .server
        .post(
            "/v1/processes",
            &lab.server.admin,
            json!({ "name": "local-drip", "module_digest": lab.digest, "grant": {} }),
        )
        .await;
    assert_eq!(local.status, 201, "{}", local.text);
    let local_id = lab
        .server
        .start_run(
            local.body["id"].as_str().expect("id"),
            &lab.server.admin,
            json!({ "mode": "drip", "n": 8 }),
        )
        .await;
    let watcher = {
        let id = local_id.clone();
        let lab = &lab;
        async move { watch(lab, &id).await }
    };
    let pushed = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let body = json!({ "events": [forged(0, "line 99: forged")] });
        let path = format!("/v1/bridge/runs/{local_id}/renew");
        signed(&lab, &bridge.signer(), &path, body).await
    };
    let (events, (status, reply)) = tokio::join!(watcher, pushed);
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["error"]["code"], "run_not_held", "{reply}");
    assert!(
        !lines(&events).contains(&99),
        "a forged event reached another run's stream: {events:?}"
    );

    // Its own run: a renewal over the caps is refused whole, and the run goes on.
    let id = lab
        .server
        .start_run(
            &process,
            &lab.server.admin,
            json!({ "mode": "drip", "n": 8 }),
        )
        .await;
    let deadline = Instant::now() + PATIENCE;
    while lab.run(&id).await["state"] != "running" {
        assert!(Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = format!("/v1/bridge/runs/{id}/renew");
    let signer = bridge.signer();
    let many: Vec<_> = (0..257).map(|i| forged(i, "x")).collect();
    let big = "y".repeat((256 << 10) + 1);
    for (what, events) in [
        ("257 events", json!(many)),
        ("a big one", json!([forged(0, &big)])),
    ] {
        let (status, reply) = signed(&lab, &signer, &path, json!({ "events": events })).await;
        assert_eq!(status, 400, "{what}: {reply}");
        assert_eq!(reply["error"]["code"], "too_many_events", "{what}: {reply}");
    }
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "succeeded", "{run} {}", bridge.log());
}
