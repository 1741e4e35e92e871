//! Inbound triggers against a real server on a bound port: events signed by an independent
//! implementation (`tests/triggers/sign.py`: the pinned `standardwebhooks` package for `v1`,
//! `cryptography` for `v1a`), sent as real HTTP, starting real guests, and for the incident
//! example a real sshd fleet. This file holds the shared harness; one file per area.

mod cluster;
mod events;
mod incident;
mod limits;
mod manage;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_host::api::AppState;
use warden_tests::http::{Reply, Server, new_key, reply};
use warden_tests::repo_root;

/// How the tests sign: an HMAC `whsec_` secret or an ed25519 seed (hex).
#[derive(Clone)]
pub(super) enum Signer {
    Hmac(String),
    Ed25519(String),
}

impl Signer {
    /// The `webhook-signature` value of each `(id, timestamp, body)`, from the Python signer.
    pub(super) fn sign_all(&self, events: &[(String, i64, String)]) -> Vec<String> {
        let (flag, value) = match self {
            Signer::Hmac(secret) => ("--secret", secret),
            Signer::Ed25519(seed) => ("--ed25519-seed", seed),
        };
        let mut child = Command::new(crate::notify::python())
            .arg(repo_root().join("tests/triggers/sign.py"))
            .args([flag, value])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start signer");
        let mut stdin = child.stdin.take().expect("stdin");
        let lines: String = events
            .iter()
            .map(|(id, ts, body)| {
                json!({ "id": id, "timestamp": ts, "body": body }).to_string() + "\n"
            })
            .collect();
        let writer = std::thread::spawn(move || stdin.write_all(lines.as_bytes()));
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let signatures: Vec<String> = out
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(&l.expect("line")).expect("json");
                v["signature"].as_str().expect("signature").to_string()
            })
            .collect();
        writer.join().expect("writer").expect("write");
        assert!(child.wait().expect("signer").success());
        assert_eq!(signatures.len(), events.len());
        signatures
    }

    pub(super) fn sign(&self, id: &str, ts: i64, body: &str) -> String {
        self.sign_all(&[(id.to_string(), ts, body.to_string())])
            .remove(0)
    }
}

pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(super) fn event_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

pub(super) fn state(server: &Server) -> &AppState {
    server._state.as_ref().expect("in-process server")
}

/// POSTs one event with the three Standard Webhooks headers (none left out if `None`).
pub(super) async fn deliver(
    server: &Server,
    trigger: &str,
    headers: Option<(&str, i64, &str)>,
    body: &str,
) -> Reply {
    let mut req = server
        .client
        .post(format!("{}/v1/triggers/{trigger}/events", server.base))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some((id, ts, signature)) = headers {
        req = req
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature);
    }
    reply(req.send().await.expect("event sent")).await
}

/// Signs `body` as a fresh event now and delivers it.
pub(super) async fn send(server: &Server, trigger: &str, signer: &Signer, body: &Value) -> Reply {
    let (id, ts, body) = (event_id(), now(), body.to_string());
    let signature = signer.sign(&id, ts, &body);
    deliver(server, trigger, Some((&id, ts, &signature)), &body).await
}

/// A server with `hello` published and a process `name` of it; (server, process id).
pub(super) async fn hello_process(approvals: u32) -> (Server, String) {
    let server = Server::start().await;
    state(&server)
        .triggers
        .set_tally_window(Duration::from_secs(1));
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("hello", &key).await;
    let body = json!({
        "name": "greeter", "module_digest": digest, "grant": {},
        "required_approvals": approvals,
    });
    let r = server.post("/v1/processes", &server.admin, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let pid = r.body["id"].as_str().expect("id").to_string();
    (server, pid)
}

/// Creates a trigger of `pid` as the admin; (trigger id, its signer).
pub(super) async fn trigger(server: &Server, pid: &str, body: Value) -> (String, Signer) {
    let r = server
        .post(
            &format!("/v1/processes/{pid}/triggers"),
            &server.admin,
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().expect("id").to_string();
    let secret = r.body["secret"].as_str().unwrap_or_default().to_string();
    (id, Signer::Hmac(secret))
}

/// The runs of process `pid` (as the admin sees them).
pub(super) async fn runs_of(server: &Server, pid: &str) -> Vec<Value> {
    let r = server
        .get(&format!("/v1/runs?process={pid}"), &server.admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body.as_array().expect("runs").clone()
}

/// The audit records with `action` written as trigger `id`.
pub(super) async fn audited(server: &Server, id: &str, action: &str) -> Vec<Value> {
    server
        .audit(&format!("actor=trigger:{id}&action={action}&limit=1000"))
        .await
}

/// The reasons of the trigger's `trigger.refused` records.
pub(super) async fn refusal_reasons(server: &Server, id: &str) -> Vec<String> {
    audited(server, id, "trigger.refused")
        .await
        .iter()
        .map(|r| r["decision"]["reason"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Waits (bounded) until `action` records of trigger `id` exist; returns them.
pub(super) async fn wait_for_audit(server: &Server, id: &str, action: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = audited(server, id, action).await;
        if !found.is_empty() {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {action} record for trigger {id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A standard-base64 ed25519 public key and its seed (hex) for the signer.
pub(super) fn ed25519_pair() -> (String, String) {
    use base64::Engine;
    let key = new_key();
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes());
    (public, hex::encode(key.to_bytes()))
}
