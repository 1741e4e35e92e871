//! The bridge trusts exactly the server it enrolled with: a wrong pin, another certificate
//! or an impostor behind the same address get nothing from it.

use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use warden_host::tls::{ServerTls, TLS_DIR};
use warden_tests::http::{ServeChild, Transport};

use super::{BIN, Lab, Zone, ended};
use warden_tests::http::init_data_dir;

/// `pin` with its last hex digit changed.
fn altered(pin: &str) -> String {
    let mut bytes = pin.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    String::from_utf8(bytes).expect("utf8")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_with_a_wrong_pin_refuses_the_server_and_sends_it_nothing() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    let token = lab.token("dmz").await;
    let dirs = TempDir::new().expect("dirs");
    let (ok, text) = zone.enroll_with(
        &dirs.path().join("wrong"),
        &token,
        &["--server-fingerprint", &altered(&zone.pin)],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("does not match the pinned"), "{text}");
    assert!(!dirs.path().join("wrong").join("bridge.key").exists());
    // Nothing reached the server: no enrolment attempt was audited, and the token still works.
    assert_eq!(
        lab.serve.requests_to("/v1/bridges/enroll"),
        0,
        "{}",
        lab.serve.stderr()
    );
    assert!(
        lab.server
            .audit("action=bridge.enrol.refused")
            .await
            .is_empty()
    );
    // No trust at all: the self-signed certificate is not in the system's roots.
    let (ok, text) = zone.enroll_with(&dirs.path().join("none"), &token, &[]);
    assert!(!ok && text.contains("not signed by a CA"), "{text}");
    let (ok, text) = zone.enroll(&dirs.path().join("right"), &token);
    assert!(ok, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_enrolled_through_a_ca_pins_the_certificate_it_saw() {
    let lab = Lab::new(30).await;
    let zone = Zone::new(&lab);
    let dir = TempDir::new().expect("dir");
    let data = dir.path().join("bridge");
    let ca = ServerTls::data_dir_files(&lab.data).0;
    let ca = ca.to_string_lossy().into_owned();
    let (ok, text) = zone.enroll_with(&data, &lab.token("dmz").await, &["--ca", &ca]);
    assert!(ok, "{text}");
    let identity: Value =
        serde_json::from_slice(&std::fs::read(data.join("bridge.json")).expect("identity"))
            .expect("json");
    assert_eq!(identity["trust"]["fingerprint"], lab.pin(), "{identity}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_impostor_behind_the_servers_address_gets_no_request_from_the_bridge() {
    let lab = Lab::new(30).await;
    let mut zone = Zone::new(&lab);
    lab.target("dmz-host", "dmz", &zone.sshd).await;
    let process = lab.process("in-dmz", &["dmz-host"]).await;
    let bridge = zone.bridge(&lab.token("dmz").await);
    let id = lab.exec(&process, "dmz-host", "id -un").await;
    assert_eq!(ended(&lab, &id).await["state"], "succeeded");

    // Another Warden, its own certificate, where the bridge's way out now leads.
    let tmp = TempDir::new().expect("tmp");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    ServerTls::generate_self_signed(&data.join(TLS_DIR), &[]).expect("certificate");
    let impostor = ServeChild::start(
        BIN,
        &data,
        Transport::DataDirTls,
        &[],
        tmp.path().join("log"),
    )
    .await;
    zone.forward_to(&impostor.addr());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        impostor.requests_to("/v1/bridge/claim"),
        0,
        "{}",
        impostor.stderr()
    );
    assert!(
        bridge.log().contains("does not match the pinned"),
        "{}",
        bridge.log()
    );

    // Back to the real server: the bridge works again by itself.
    zone.forward_to(&lab.server_addr());
    let id = lab.exec(&process, "dmz-host", "id -un").await;
    assert_eq!(
        ended(&lab, &id).await["state"],
        "succeeded",
        "{}",
        bridge.log()
    );
}
