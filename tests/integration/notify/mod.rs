//! Monitoring sinks against real receivers: a Python Standard Webhooks receiver that checks
//! signatures with the `standardwebhooks` package (not Warden's code), a real `rsyslogd`
//! started per test on a loopback port (plain TCP and TLS), and the offline verifier over a
//! file sink's export. This file holds the shared harness; one file per sink kind.

mod batch;
mod bridge_offline;
mod export;
mod https;
mod syslog;
mod webhook;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_host::api::AppState;
use warden_host::audit::{AuditEntry, Decision};
use warden_host::notify::export_verify::verify_export;
use warden_host::vault::{CredentialKind, Secret};
use warden_tests::http::Server;
use warden_tests::repo_root;

const PATIENCE: Duration = Duration::from_secs(30);

/// Kills the child when dropped (a failing test leaves no receiver running).
pub(super) struct Reaper(Child);

/// Prints the receiver's log if the test fails.
pub(super) struct Dump(PathBuf);

impl Drop for Dump {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "receiver log:\n{}",
                std::fs::read_to_string(&self.0).unwrap_or_default()
            );
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn python() -> PathBuf {
    let path = std::env::var_os("WARDEN_NOTIFY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/notify-venv/bin/python"));
    assert!(
        path.exists(),
        "{} missing: create the venv with tests/notify/requirements.txt (.ci/run does)",
        path.display()
    );
    path
}

/// Starts the receiver; returns it and its port.
pub(super) fn receiver(secret: &str, pubkey: &str, log: &Path, extra: &[&str]) -> (Reaper, u16) {
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/notify/receiver.py"))
        .args(["--secret", secret, "--pubkey", pubkey, "--log"])
        .arg(log)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start receiver");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("receiver port");
    let port = line.trim().parse().expect("port");
    (Reaper(child), port)
}

pub(super) fn state(server: &Server) -> &AppState {
    server._state.as_ref().expect("in-process server")
}

/// A denied host call as the spine records it.
pub(super) async fn denial(state: &AppState, run: &str, n: usize) {
    for i in 0..n {
        state
            .audit
            .append(AuditEntry {
                run_id: Some(run.into()),
                actor: "mallory".into(),
                action: "ssh.exec".into(),
                target: Some(format!("web-{i}")),
                credential: None,
                decision: Decision::Denied {
                    reason: "no grant".into(),
                    policy: None,
                },
                outcome: "denied".into(),
                duration_us: 7,
                detail: None,
            })
            .await
            .expect("append");
    }
}

pub(super) fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub(super) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) fn head(state: &AppState) -> u64 {
    *state.audit.subscribe().borrow()
}

pub(super) async fn set_allow(server: &Server, entries: &[String]) {
    let r = server
        .request(
            reqwest::Method::PUT,
            "/v1/notify/allow",
            Some(&server.admin),
            Some(&json!({ "entries": entries })),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

pub(super) fn secrets(state: &AppState) -> (String, String) {
    let key = [42u8; 24];
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let seed = [9u8; 32];
    let pubkey = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .as_bytes(),
    );
    for (name, secret) in [
        ("hook-hmac", whsec.clone()),
        (
            "hook-ed",
            base64::engine::general_purpose::STANDARD.encode(seed),
        ),
    ] {
        state
            .vault
            .add(
                name,
                "webhook",
                CredentialKind::Password,
                Secret::from_bytes(secret.into_bytes()),
            )
            .expect("credential");
    }
    (whsec, pubkey)
}

pub(super) fn audit_actions(
    state: &AppState,
    action: &str,
) -> Vec<warden_host::audit::AuditRecord> {
    state
        .audit
        .query(&warden_host::audit::AuditFilter {
            action: Some(action.into()),
            ..Default::default()
        })
        .expect("query")
}
