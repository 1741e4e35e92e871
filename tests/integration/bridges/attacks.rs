//! Bridges and would-be bridges that try to get what is not theirs: another zone's runs and
//! secrets, a second enrolment with a used token, requests after revocation, forged or
//! replayed requests.

use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use super::{Lab, Zone, assert_leases_revoked, ended, signed, wait_for_intent};

#[tokio::test(flavor = "multi_thread")]
async fn another_zones_bridge_never_gets_the_runs_or_the_secrets_of_this_zone() {
    let lab = Lab::new(30).await;
    let dmz = Zone::new(&lab);
    let lab_zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &dmz.sshd).await;
    let process = lab.process("in-dmz", &["dmz-host"]).await;
    // The other zone's bridge is online first: it must not take dmz's runs.
    let other = lab_zone.bridge(&lab.token("lab").await);
    let id = lab.exec(&process, "dmz-host", "sleep 3").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(lab.run(&id).await["state"], "queued");
    let mine = dmz.bridge(&lab.token("dmz").await);
    lab.server.wait_for_state(&id, "running").await;

    // Playing a rogue bridge with the other bridge's own key: every request about the dmz
    // run is refused, whatever it asks for.
    let rogue = other.signer();
    let lease_body = json!({ "lease": "x", "credential": "pw", "target": "dmz-host" });
    for (what, body) in [
        ("secret", lease_body.clone()),
        (
            "secret",
            json!({ "lease": "x", "credential": "pw", "target": null }),
        ),
        ("lease", json!({ "credential": "pw", "known": null })),
        ("lease-check", json!({ "uses": [lease_body] })),
        ("audit", json!({ "entries": [] })),
        ("renew", json!({})),
    ] {
        let path = format!("/v1/bridge/runs/{id}/{what}");
        let (status, reply) = signed(&lab, &rogue, &path, body).await;
        assert_eq!(status, 409, "{what}: {reply}");
        assert_eq!(reply["error"]["code"], "run_not_held", "{what}: {reply}");
        assert!(!reply.to_string().contains(&lab.user.password));
    }
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["bridge"], mine.id);

    // Nor can the run's own bridge get a secret for a target outside its zone, even one of
    // the grant's credentials under a live lease of its run.
    let outside = warden_tests::sshd::Sshd::start("127.0.0.1").expect("sshd");
    lab.target("lab-host", "lab", &outside).await;
    let id = lab.exec(&process, "dmz-host", "sleep 3").await;
    lab.server.wait_for_state(&id, "running").await;
    let lease = wait_for_lease(&lab, &id).await;
    let path = format!("/v1/bridge/runs/{id}/secret");
    let (status, reply) = signed(
        &lab,
        &mine.signer(),
        &path,
        json!({ "lease": lease, "credential": "pw", "target": "lab-host" }),
    )
    .await;
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply.to_string().contains("not this bridge's zone"),
        "{reply}"
    );
    // One check of several uses answers each on its own: its own target allowed, the other
    // zone's refused, an unknown lease refused.
    let (status, reply) = signed(
        &lab,
        &mine.signer(),
        &format!("/v1/bridge/runs/{id}/lease-check"),
        json!({ "uses": [
            { "lease": lease, "credential": "pw", "target": "dmz-host" },
            { "lease": lease, "credential": "pw", "target": "lab-host" },
            { "lease": "no-such-lease", "credential": "pw", "target": "dmz-host" },
        ] }),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let denied = reply["denied"].as_array().expect("verdicts");
    assert!(denied[0].is_null(), "{reply}");
    assert!(
        denied[1]
            .as_str()
            .is_some_and(|d| d.contains("not this bridge's zone")),
        "{reply}"
    );
    assert!(
        denied[2]
            .as_str()
            .is_some_and(|d| d.contains("does not exist")),
        "{reply}"
    );
    // While the same request for its own target is answered (the positive control).
    let (status, reply) = signed(
        &lab,
        &mine.signer(),
        &path,
        json!({ "lease": lease, "credential": "pw", "target": "dmz-host" }),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    ended(&lab, &id).await;
}

/// The id of the first lease run `id` was issued (it has acquired its credential).
async fn wait_for_lease(lab: &Lab, id: &str) -> String {
    for _ in 0..200 {
        let r = lab
            .server
            .get(&format!("/v1/runs/{id}/leases"), &lab.server.admin)
            .await;
        if let Some(lease) = r.body.as_array().and_then(|l| l.first()) {
            return lease["id"].as_str().expect("lease id").to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {id} acquired no lease");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolment_token_works_once_and_a_bad_or_expired_one_never() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    let token = lab.token("dmz").await;
    let dirs = TempDir::new().expect("dirs");
    let (ok, text) = zone.enroll(&dirs.path().join("first"), &token);
    assert!(ok, "{text}");
    // Reused, also from another directory (another machine): refused.
    let (ok, text) = zone.enroll(&dirs.path().join("second"), &token);
    assert!(!ok && text.contains("already used"), "{text}");
    assert!(!dirs.path().join("second").join("bridge.key").exists());
    // A token with one character changed, and one made up.
    let mut altered = token.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
    for bad in [
        String::from_utf8(altered).expect("utf8"),
        "wbt_0000".to_string(),
    ] {
        let (ok, text) = zone.enroll(&dirs.path().join("third"), &bad);
        assert!(!ok && text.contains("unknown enrolment token"), "{text}");
    }
    // An expired token.
    let r = lab
        .server
        .post(
            "/v1/bridges/tokens",
            &lab.server.admin,
            json!({ "zone": "dmz", "ttl_secs": 1 }),
        )
        .await;
    let short = r.body["token"].as_str().expect("token").to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (ok, text) = zone.enroll(&dirs.path().join("fourth"), &short);
    assert!(!ok && text.contains("expired"), "{text}");

    // One bridge enrolled; every refusal audited, without the token itself.
    let r = lab.server.get("/v1/bridges", &lab.server.admin).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{}", r.text);
    let refused = lab.server.audit("action=bridge.enrol.refused").await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    let all = format!("{:?}", lab.server.audit("").await);
    assert!(
        !all.contains(&token) && !all.contains(&short),
        "a token reached the audit log"
    );

    // An ordinary user may not create tokens or list bridges.
    let user = lab.server.user("nobody-special", &[]).await;
    let r = lab
        .server
        .post("/v1/bridges/tokens", &user, json!({ "zone": "dmz" }))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = lab.server.get("/v1/bridges", &user).await;
    assert_eq!(r.status, 403, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_replayed_and_unsigned_bridge_requests_are_refused() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    let bridge = zone.bridge(&lab.token("dmz").await);
    let signer = bridge.signer();
    let base = &lab.server.base;
    let claim = serde_json::to_vec(&json!({ "wait_ms": 0 })).expect("json");
    let send = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut request = lab
            .server
            .client
            .post(format!("{base}/v1/bridge/claim"))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.body(body).send()
    };
    // Unsigned.
    let r = send(vec![], claim.clone()).await.expect("send");
    assert_eq!(r.status(), 401);
    // Signed, then replayed verbatim.
    let headers: Vec<_> = signer.headers("POST", "/v1/bridge/claim", &claim).into();
    let r = send(headers.clone(), claim.clone()).await.expect("send");
    assert_eq!(r.status(), 204);
    let r = send(headers.clone(), claim.clone()).await.expect("send");
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap_or_default().contains("replayed"));
    // Signed for one body, sent with another (a longer wait).
    let headers: Vec<_> = signer.headers("POST", "/v1/bridge/claim", &claim).into();
    let other = serde_json::to_vec(&json!({ "wait_ms": 20000 })).expect("json");
    let r = send(headers, other).await.expect("send");
    assert_eq!(r.status(), 401);
    // Signed for another path.
    let headers: Vec<_> = signer
        .headers("POST", "/v1/bridge/publishers", &claim)
        .into();
    let r = send(headers, claim.clone()).await.expect("send");
    assert_eq!(r.status(), 401);
    // Signed by a key the server does not know, under this bridge's id.
    let stranger = warden_host::bridge::wire::RequestSigner::new(
        bridge.id.clone(),
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
    );
    let headers: Vec<_> = stranger.headers("POST", "/v1/bridge/claim", &claim).into();
    let r = send(headers, claim.clone()).await.expect("send");
    assert_eq!(r.status(), 401);
    // A stale time (the signature is fine, the clock is not).
    let mut headers: Vec<_> = signer.headers("POST", "/v1/bridge/claim", &claim).into();
    headers[1].1 = (warden_host::vault::lease::now_ms() - 120_000).to_string();
    let r = send(headers, claim.clone()).await.expect("send");
    assert_eq!(r.status(), 401);

    // The module of a run the bridge does not hold is not served to it.
    let path = format!("/v1/bridge/modules/{}", lab.digest);
    let headers = signer.headers("GET", &path, b"");
    let mut request = lab.server.client.get(format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.expect("send").status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_bridge_is_refused_and_its_runs_end_lost() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("in-dmz", &["dmz-host"]).await;
    let bridge = zone.bridge(&lab.token("dmz").await);
    let id = lab.exec(&process, "dmz-host", "sleep 20").await;
    wait_for_intent(&lab, &id, "ssh.exec").await;
    let r = lab
        .server
        .post(
            &format!("/v1/bridges/{}/revoke", bridge.id),
            &lab.server.admin,
            json!({ "reason": "machine decommissioned" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The run ends `lost` at the next sweep, not after the 30 s timeout.
    let started = std::time::Instant::now();
    let run = ended(&lab, &id).await;
    assert_eq!(run["state"], "lost", "{run}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Its leases are revoked.
    assert_leases_revoked(&lab, &id).await;
    // Its next request is refused with the reason.
    let (status, reply): (u16, Value) = signed(
        &lab,
        &bridge.signer(),
        "/v1/bridge/claim",
        json!({ "wait_ms": 0 }),
    )
    .await;
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply.to_string().contains("machine decommissioned"),
        "{reply}"
    );
    let r = lab.server.get("/v1/bridges", &lab.server.admin).await;
    assert_eq!(r.body[0]["revoked"], true, "{}", r.text);
    assert_eq!(r.body[0]["online"], false, "{}", r.text);
    // Revoking twice is a conflict.
    let r = lab
        .server
        .post(
            &format!("/v1/bridges/{}/revoke", bridge.id),
            &lab.server.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
}
