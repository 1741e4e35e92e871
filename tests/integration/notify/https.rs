//! HTTPS webhooks against a real TLS receiver (Python's `ssl` serving a self-signed
//! certificate on loopback; signatures still checked by `standardwebhooks`): delivered when
//! the sink pins the certificate or names its CA; never delivered — nothing reaches the
//! receiver, the record dead-letters with a TLS reason — when the pin is another
//! certificate's, the CA file is another CA, or the sink trusts only the system's roots; and
//! TLS options on an `http://` URL, a relative or unreadable CA file, or a malformed pin are
//! refused at configuration.

use super::*;
use warden_host::tls::ServerTls;

/// A self-signed certificate for 127.0.0.1 in `dir`; its fingerprint (`sha256:…`).
fn certificate(dir: &Path) -> String {
    ServerTls::generate_self_signed(dir, &[])
        .expect("certificate")
        .to_string()
}

fn https_sink(name: &str, port: u16, trust: Value) -> Value {
    let mut sink = json!({
        "name": name, "kind": "webhook", "url": format!("https://127.0.0.1:{port}/hook"),
        "secret_credential": "hook-hmac", "timeout_ms": 2000, "retry_ms": []
    });
    for (key, value) in trust.as_object().expect("object") {
        sink[key] = value.clone();
    }
    sink
}

#[tokio::test]
async fn https_webhooks_reach_a_pinned_or_ca_verified_receiver_and_nothing_else() {
    let server = Server::start().await;
    let st = state(&server);
    let (whsec, pubkey) = secrets(st);
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let pin = certificate(&real);
    let impostor = dir.path().join("impostor");
    let other_pin = certificate(&impostor);
    let log = dir.path().join("hook.jsonl");
    let _dump = Dump(log.clone());
    let cert = real.join("cert.pem");
    let key = real.join("key.pem");
    let (_rx, port) = receiver(
        &whsec,
        &pubkey,
        &log,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    set_allow(&server, &[format!("127.0.0.1:{port}")]).await;

    // Trusted wrongly: another certificate's pin, another CA, the system's roots only.
    let wrong = [
        ("wrong-pin", json!({"server_fingerprint": other_pin})),
        (
            "wrong-ca",
            json!({"ca_file": impostor.join("cert.pem").to_str().unwrap()}),
        ),
        ("system-roots", json!({})),
    ];
    for (name, trust) in &wrong {
        let r = server
            .post(
                "/v1/notify/sinks",
                &server.admin,
                https_sink(name, port, trust.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.text);
    }
    denial(st, "run-tls", 2).await;
    wait_until("every wrongly trusting sink dead-letters", || {
        audit_actions(st, "notify.delivery.dead_letter")
            .iter()
            .map(|r| r.entry.target.clone().unwrap_or_default())
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= wrong.len()
    })
    .await;
    for (name, _) in &wrong {
        let r = server
            .get(
                &format!("/v1/notify/sinks/{name}/dead-letters"),
                &server.admin,
            )
            .await;
        let letters = r.body.as_array().expect("letters");
        assert!(!letters.is_empty(), "{name}: {}", r.text);
        let why = letters[0]["last_error"].as_str().unwrap_or_default();
        assert!(
            why.contains("certificate") || why.contains("fingerprint"),
            "{name}: {why}"
        );
    }
    assert!(
        lines(&log).is_empty(),
        "a wrongly trusting sink sent something: {:?}",
        lines(&log)
    );

    // Trusted rightly: pinned, or the certificate as its own CA.
    for (name, trust) in [
        ("pinned", json!({"server_fingerprint": pin})),
        ("ca", json!({"ca_file": cert.to_str().unwrap()})),
    ] {
        let mut sink = https_sink(name, port, trust);
        sink["retry_ms"] = json!([50, 50]);
        let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
        assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.text);
    }
    denial(st, "run-tls-2", 2).await;
    let want = head(st);
    wait_until("every record at the receiver over TLS, twice", || {
        let delivered = lines(&log);
        (0..want).all(|seq| {
            let id = format!("audit-{seq}");
            delivered
                .iter()
                .filter(|l| l["id"] == id.as_str() && l["status"] == 200)
                .count()
                >= 2
        })
    })
    .await;
    assert!(lines(&log).iter().all(|l| l["v1"] == true));
}

#[tokio::test]
async fn tls_options_that_cannot_work_are_refused_at_configuration() {
    let server = Server::start().await;
    let st = state(&server);
    secrets(st);
    let dir = tempfile::tempdir().unwrap();
    let pin = certificate(dir.path());
    set_allow(&server, &["127.0.0.1:9".to_string()]).await;
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    for (why, url, trust) in [
        (
            "a pin on http",
            "http://127.0.0.1:9/",
            json!({"server_fingerprint": pin}),
        ),
        (
            "a CA on http",
            "http://127.0.0.1:9/",
            json!({"ca_file": dir.path().join("cert.pem").to_str().unwrap()}),
        ),
        (
            "both",
            "https://127.0.0.1:9/",
            json!({"server_fingerprint": pin, "ca_file": dir.path().join("cert.pem").to_str().unwrap()}),
        ),
        (
            "a relative CA",
            "https://127.0.0.1:9/",
            json!({"ca_file": "cert.pem"}),
        ),
        (
            "a missing CA",
            "https://127.0.0.1:9/",
            json!({"ca_file": "/nonexistent/ca.pem"}),
        ),
        (
            "not PEM",
            "https://127.0.0.1:9/",
            json!({"ca_file": not_pem.to_str().unwrap()}),
        ),
        (
            "a short pin",
            "https://127.0.0.1:9/",
            json!({"server_fingerprint": "sha256:abcd"}),
        ),
    ] {
        let mut sink =
            json!({"name": "x", "kind": "webhook", "url": url, "secret_credential": "hook-hmac"});
        for (key, value) in trust.as_object().unwrap() {
            sink[key] = value.clone();
        }
        let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}: {}", r.text);
    }
    assert_eq!(
        server.get("/v1/notify/sinks", &server.admin).await.body,
        json!([])
    );
}
