//! Trigger benchmark (a bench binary that prints its figures; run with
//! `cargo bench -p warden-tests --bench triggers`): from a signed event's arrival (just before
//! the client sends it to a real loopback port) to the first host call of the run it starts
//! (the durable audit record of `hello`'s first `params.get`), p50 and p99 over sequential
//! events. Every step on the way is durable as in production: the replay id and the guard
//! state's swap, the run record, the `trigger.event` audit record.
//!
//! The events are signed before the clock starts by `tests/triggers/sign.py` (the pinned
//! `standardwebhooks` package; `WARDEN_NOTIFY_PYTHON` names its venv's python). Both storage
//! backends are measured (PostgreSQL when `WARDEN_TEST_DATABASE_URL` names a cluster).

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use warden_host::audit::AuditFilter;
use warden_host::store::DatabaseLocation;
use warden_tests::http::{Server, new_key};
use warden_tests::repo_root;

const EVENTS: usize = 200;
const WARMUP: usize = 10;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn python() -> std::path::PathBuf {
    std::env::var_os("WARDEN_NOTIFY_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join("target/notify-venv/bin/python"))
}

/// `(id, timestamp, body, signature)` of `n` events about distinct users, signed now.
fn signed_events(secret: &str, n: usize) -> anyhow::Result<Vec<(String, i64, String, String)>> {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let events: Vec<(String, i64, String)> = (0..n)
        .map(|i| {
            let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            (id, ts, json!({ "user": format!("user{i}") }).to_string())
        })
        .collect();
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/triggers/sign.py"))
        .args(["--secret", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
    let lines: String = events
        .iter()
        .map(|(id, ts, body)| json!({ "id": id, "timestamp": ts, "body": body }).to_string() + "\n")
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(lines.as_bytes()));
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("stdout"))?;
    let mut signatures = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        signatures.push(v["signature"].as_str().unwrap_or_default().to_string());
    }
    writer.join().map_err(|_| anyhow::anyhow!("writer"))??;
    anyhow::ensure!(child.wait()?.success(), "signer failed");
    Ok(events
        .into_iter()
        .zip(signatures)
        .map(|((id, ts, body), sig)| (id, ts, body, sig))
        .collect())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for (kind, location) in warden_tests::postgres::bench_backends() {
        println!("--- {kind}");
        rt.block_on(bench(&location))?;
    }
    Ok(())
}

async fn bench(location: &DatabaseLocation) -> anyhow::Result<()> {
    let server = Server::start_at(&Default::default(), location).await;
    let state = server
        ._state
        .clone()
        .ok_or_else(|| anyhow::anyhow!("state"))?;
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("hello", &key).await;
    let body = json!({ "name": "greeter", "module_digest": digest, "grant": {} });
    let process = server.post("/v1/processes", &server.admin, body).await;
    let pid = process.body["id"].as_str().unwrap_or_default().to_string();
    let hook = json!({
        "map": { "name": "/user" },
        "rate": { "runs": 10_000, "window_secs": 60 },
        "max_concurrent": 256,
    });
    let created = server
        .post(
            &format!("/v1/processes/{pid}/triggers"),
            &server.admin,
            hook,
        )
        .await;
    anyhow::ensure!(created.status.is_success(), "{}", created.text);
    let tid = created.body["id"].as_str().unwrap_or_default().to_string();
    let secret = created.body["secret"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let events = signed_events(&secret, EVENTS + WARMUP)?;
    let url = format!("{}/v1/triggers/{tid}/events", server.base);
    let mut samples = Vec::with_capacity(EVENTS);
    for (i, (id, ts, body, sig)) in events.into_iter().enumerate() {
        let mut commits = state.audit.subscribe();
        commits.borrow_and_update();
        let start = Instant::now();
        let resp = server
            .client
            .post(&url)
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", &sig)
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().as_u16() == 202,
            "event refused: {}",
            resp.status()
        );
        let reply: Value = resp.json().await?;
        let run = reply["run"]["id"].as_str().unwrap_or_default().to_string();
        let filter = AuditFilter {
            run_id: Some(run),
            action: Some("params.get".into()),
            limit: Some(1),
            ..AuditFilter::default()
        };
        let deadline = start + Duration::from_secs(30);
        loop {
            commits.borrow_and_update();
            if !state.audit.query(&filter)?.is_empty() {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "no host call within 30 s");
            let _ = tokio::time::timeout(Duration::from_millis(50), commits.changed()).await;
        }
        if i >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    println!(
        "signed event to the first host call of its run ({EVENTS} sequential events): p50 {:.2} ms  p99 {:.2} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3
    );
    Ok(())
}
