//! One event at a time: what a valid signed event starts, and every way an event that is
//! not the detector's (forged, stale, replayed, signed for another trigger, oversized, for an
//! unknown trigger) or does not map is refused, audited, and starts nothing.

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_event_starts_a_run_with_the_mapped_inputs_as_the_trigger() {
    let (server, pid) = hello_process(0).await;
    let (tid, signer) = trigger(
        &server,
        &pid,
        json!({ "map": { "name": "/alert/user", "times": "/alert/count" } }),
    )
    .await;
    assert!(matches!(&signer, Signer::Hmac(s) if s.starts_with("whsec_")));
    let body = json!({ "alert": { "user": "alice", "count": 2 }, "name": "mallory" }).to_string();
    let (id, ts) = (event_id(), now());
    let sig = signer.sign(&id, ts, &body);
    let r = deliver(&server, &tid, Some((&id, ts, &sig)), &body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let run_id = r.body["run"]["id"].as_str().expect("run id").to_string();
    let run = server.wait_for_state(&run_id, "succeeded").await;
    assert_eq!(run["actor"], format!("trigger:{tid}"));
    // Only the mapped pointer reaches the input; a top-level `name` in the event does not.
    assert_eq!(run["inputs"]["name"], "alice", "{run}");
    assert_eq!(run["inputs"]["times"], 2, "{run}");
    assert_eq!(run["result"], "hello, alice");
    // The run's audit trail names the event and the body's digest.
    let digest = hex::encode(Sha256::digest(body.as_bytes()));
    let records = server
        .audit(&format!("run={run_id}&action=trigger.event"))
        .await;
    assert_eq!(records.len(), 1, "{records:?}");
    let detail = records[0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&id) && detail.contains(&digest), "{detail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_stale_replayed_and_foreign_events_are_refused_audited_and_start_nothing() {
    let (server, pid) = hello_process(0).await;
    let map = json!({ "map": { "name": "/user" } });
    let (tid, signer) = trigger(&server, &pid, map.clone()).await;
    let (other, other_signer) = trigger(&server, &pid, map).await;
    let body = json!({ "user": "bob" }).to_string();
    let t = now();
    let fresh = |signer: &Signer, ts: i64, body: &str| {
        let id = event_id();
        let sig = signer.sign(&id, ts, body);
        (id, ts, sig)
    };
    // No headers at all; a made-up signature; the other trigger's (right) secret; a body
    // changed after signing; a signature moved to another event id; stale and future stamps.
    assert_eq!(
        deliver(&server, &tid, None, &body).await.code(),
        "bad_signature"
    );
    let made_up = "v1,bm90IGEgc2lnbmF0dXJlIGF0IGFsbCwganVzdCBieXRlcw==";
    let r = deliver(&server, &tid, Some((&event_id(), t, made_up)), &body).await;
    r.expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    let (id, ts, sig) = fresh(&other_signer, t, &body);
    let r = deliver(&server, &tid, Some((&id, ts, &sig)), &body).await;
    r.expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    let (id, ts, sig) = fresh(&signer, t, &body);
    let edited = json!({ "user": "root" }).to_string();
    let r = deliver(&server, &tid, Some((&id, ts, &sig)), &edited).await;
    r.expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    let r = deliver(&server, &tid, Some((&event_id(), ts, &sig)), &body).await;
    r.expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    // Just past the 300 s tolerance either way (the future one with room for the signer).
    for offset in [-301, 330] {
        let (id, ts, sig) = fresh(&signer, now() + offset, &body);
        let r = deliver(&server, &tid, Some((&id, ts, &sig)), &body).await;
        r.expect_error(StatusCode::UNAUTHORIZED, "stale_timestamp");
    }
    assert!(runs_of(&server, &pid).await.is_empty(), "nothing ran");
    // A valid event runs once; the same bytes again are a replay.
    let (id, ts, sig) = fresh(&signer, t, &body);
    let r = deliver(&server, &tid, Some((&id, ts, &sig)), &body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let r = deliver(&server, &tid, Some((&id, ts, &sig)), &body).await;
    r.expect_error(StatusCode::CONFLICT, "replayed");
    // The other trigger accepts its own signature over the same id: ids are per trigger.
    let sig_other = other_signer.sign(&id, ts, &body);
    let r = deliver(&server, &other, Some((&id, ts, &sig_other)), &body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(
        runs_of(&server, &pid).await.len(),
        2,
        "one run per accepted event"
    );
    let reasons = refusal_reasons(&server, &tid).await;
    for reason in ["bad_signature", "stale_timestamp", "replayed"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} not audited: {reasons:?}"
        );
    }
    assert!(refusal_reasons(&server, &other).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn events_that_do_not_map_are_refused_with_400_and_start_nothing() {
    let (server, pid) = hello_process(0).await;
    let body = json!({
        "map": { "name": "/subject/user", "times": "/n" },
        "allow": { "name": ["alice", "bob"] },
    });
    let (tid, signer) = trigger(&server, &pid, body).await;
    let cases = [
        (json!({ "n": 1 }), "unmapped"),
        (json!({ "subject": { "user": null }, "n": 1 }), "unmapped"),
        (
            json!({ "subject": { "user": { "$ne": "x" } }, "n": 1 }),
            "unmapped",
        ),
        (
            json!({ "subject": { "user": "mallory" }, "n": 1 }),
            "not_allowed",
        ),
        (
            json!({ "subject": { "user": ["alice", "root"] }, "n": 1 }),
            "not_allowed",
        ),
        (
            json!({ "subject": { "user": "alice" }, "n": "many" }),
            "invalid_inputs",
        ),
    ];
    for (event, code) in &cases {
        let r = send(&server, &tid, &signer, event).await;
        r.expect_error(StatusCode::BAD_REQUEST, code);
    }
    // Signed, but not JSON at all.
    let (id, ts) = (event_id(), now());
    let sig = signer.sign(&id, ts, "user=alice");
    let r = deliver(&server, &tid, Some((&id, ts, &sig)), "user=alice").await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    assert!(runs_of(&server, &pid).await.is_empty(), "nothing ran");
    let reasons = refusal_reasons(&server, &tid).await;
    for code in ["unmapped", "not_allowed", "invalid_inputs", "invalid_json"] {
        assert!(reasons.iter().any(|r| r == code), "{code}: {reasons:?}");
    }
    // The same trigger still works for an event that maps.
    let ok = send(
        &server,
        &tid,
        &signer,
        &json!({ "subject": { "user": "bob" }, "n": 1 }),
    )
    .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_and_unknown_triggers_are_refused_before_parsing() {
    let (server, pid) = hello_process(0).await;
    let (tid, signer) = trigger(&server, &pid, json!({ "map": { "name": "/user" } })).await;
    // Correctly signed, one byte over the cap.
    let pad = "x".repeat(64 * 1024);
    let body = json!({ "user": "alice", "pad": pad }).to_string();
    let (id, ts) = (event_id(), now());
    let sig = signer.sign(&id, ts, &body);
    let r = deliver(&server, &tid, Some((&id, ts, &sig)), &body).await;
    r.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // A trigger id that does not exist (with this trigger's valid signature).
    let unknown = uuid::Uuid::new_v4().to_string();
    let body = json!({ "user": "alice" }).to_string();
    let sig = signer.sign(&id, ts, &body);
    let r = deliver(&server, &unknown, Some((&id, ts, &sig)), &body).await;
    r.expect_error(StatusCode::NOT_FOUND, "not_found");
    assert!(runs_of(&server, &pid).await.is_empty(), "nothing ran");
    assert_eq!(refusal_reasons(&server, &tid).await, ["too_large"]);
    assert_eq!(refusal_reasons(&server, "unknown").await, ["not_found"]);
    // The event id was not consumed by the refusals: sent right, it runs.
    let r = deliver(&server, &tid, Some((&id, ts, &sig)), &body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn ed25519_triggers_verify_v1a_and_refuse_hmac_and_other_keys() {
    let (server, pid) = hello_process(0).await;
    let (public, seed) = ed25519_pair();
    let body = json!({ "map": { "name": "/user" }, "ed25519_public_key": public });
    let (tid, hmac_signer) = trigger(&server, &pid, body).await;
    assert!(
        matches!(&hmac_signer, Signer::Hmac(s) if s.is_empty()),
        "no secret for v1a"
    );
    let event = json!({ "user": "carol" });
    let r = send(&server, &tid, &Signer::Ed25519(seed), &event).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let (_, other_seed) = ed25519_pair();
    let r = send(&server, &tid, &Signer::Ed25519(other_seed), &event).await;
    r.expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    // A v1 HMAC signature keyed with the public key's bytes is no signature here.
    let r = send(
        &server,
        &tid,
        &Signer::Hmac(format!("whsec_{public}")),
        &event,
    )
    .await;
    r.expect_error(StatusCode::UNAUTHORIZED, "bad_signature");
    assert_eq!(runs_of(&server, &pid).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bad_signatures_writes_one_record_then_one_count() {
    let (server, pid) = hello_process(0).await;
    let (tid, _) = trigger(&server, &pid, json!({ "map": { "name": "/user" } })).await;
    let body = json!({ "user": "x" }).to_string();
    for _ in 0..50 {
        let sig = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let r = deliver(&server, &tid, Some((&event_id(), now(), sig)), &body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(refusal_reasons(&server, &tid).await, ["bad_signature"]);
    let counts = wait_for_audit(&server, &tid, "trigger.refused.count").await;
    assert_eq!(counts.len(), 1, "{counts:?}");
    let detail = counts[0]["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("count 49;"), "{detail}");
    assert!(runs_of(&server, &pid).await.is_empty());
}
