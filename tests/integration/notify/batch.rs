//! Batched webhooks (`"batch": N`): a flood arrives in fewer messages, each signed over its
//! whole body and verified by `standardwebhooks`, each naming its first and last line, and
//! together carrying every record once, in order; a single record still goes at once.

use super::*;

#[tokio::test]
async fn a_batched_webhook_carries_every_record_once_in_fewer_signed_messages() {
    let server = Server::start().await;
    let st = state(&server);
    let (whsec, pubkey) = secrets(st);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.jsonl");
    let _dump = Dump(log.clone());
    let (_rx, port) = receiver(&whsec, &pubkey, &log, &[]);
    set_allow(&server, &[format!("127.0.0.1:{port}")]).await;
    // Refused at configuration: no batch, or one above the cap.
    for batch in [0, 257] {
        let sink = json!({"name": "b", "kind": "webhook", "url": format!("http://127.0.0.1:{port}/"),
            "secret_credential": "hook-hmac", "batch": batch});
        let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{batch}: {}", r.text);
    }
    let sink = json!({"name": "batched", "kind": "webhook", "url": format!("http://127.0.0.1:{port}/"),
        "secret_credential": "hook-hmac", "signing_credential": "hook-ed", "batch": 16, "from": "start"});
    let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    denial(st, "run-flood", 60).await;
    let want = head(st);
    let seqs = |log: &Path| -> Vec<u64> {
        lines(log)
            .iter()
            .filter(|l| l["status"] == 200)
            .flat_map(|l| {
                let body: Value = serde_json::from_str(l["body"].as_str().unwrap()).unwrap();
                body["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|line| line["type"] == "audit.record")
                    .map(|line| line["seq"].as_u64().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    wait_until("every record in a batch", || {
        let got = seqs(&log);
        (0..want).all(|s| got.contains(&s))
    })
    .await;
    let messages = lines(&log);
    assert!(
        messages.len() < want as usize,
        "{} messages for {want} records",
        messages.len()
    );
    let got = seqs(&log);
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(got, sorted, "every record once, in order");
    for message in &messages {
        assert_eq!(message["v1"], true, "standardwebhooks rejected {message}");
        assert_ne!(message["v1a"], false, "ed25519 rejected {message}");
        let body: Value = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["type"], "warden.audit.batch");
        let group = body["lines"].as_array().unwrap();
        assert!(!group.is_empty() && group.len() <= 16, "{}", group.len());
        let id = |line: &Value| match line["type"].as_str().unwrap() {
            "audit.record" => format!("audit-{}", line["seq"]),
            _ => format!("checkpoint-{}", line["seq"]),
        };
        let expected = format!("{}..{}", id(&group[0]), id(group.last().unwrap()));
        assert_eq!(message["id"], expected.as_str());
    }
    // One more record, alone: it goes at once, in a batch of one.
    let before = lines(&log).len();
    denial(st, "run-one", 1).await;
    let one = head(st) - 1;
    wait_until("the single record", || seqs(&log).contains(&one)).await;
    assert!(lines(&log).len() > before);
}
