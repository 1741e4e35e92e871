//! Web console benchmark (a bench binary that prints its figures; run with
//! `cargo bench -p warden-tests --bench console`):
//!
//! - seeds a sled store with 100,000 runs (written through the store layer's batches, the
//!   run table and its time index, as the run store writes them) and 1,000,000 audit records
//!   (through the real audit log: chained, signed, durable);
//! - serves it on a bound port and signs in to the console;
//! - the overview (`/ui/`) and the runs page (`/ui/runs`): p50/p99 of the time from sending
//!   the request to the last byte of the page, over loopback with keep-alive, measured by the
//!   client (so an upper bound on the server's time), 200 requests each after 20 warm-ups;
//! - live events: a `drip` run started over the API and followed through the console's event
//!   stream (`/ui/runs/{id}/events`, what the run page's `EventSource` reads): for each log
//!   line, the delay from the task logging it (the run's `started_ms` plus the event's
//!   `at_ms`) to the client holding it; and the time from sending the start request to the
//!   first live event (which includes the task's own 250 ms before its first line).

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::api::AppState;
use warden_host::audit::{AuditEntry, Decision};
use warden_host::runs::{RUNS, RUNS_BY_TIME, RunRecord, RunState};
use warden_host::store::{Batch, DataDir, Expect};
use warden_tests::http::{bootstrap_admin, component_bytes, manifest_text, new_key, signed};
use warden_tests::repo_root;

const RUN_COUNT: usize = 100_000;
const AUDIT_COUNT: usize = 1_000_000;
const CHUNK: usize = 1_000;
const APPENDERS: usize = 8;
const REQUESTS: usize = 200;
const WARMUP: usize = 20;
const LIVE_RUNS: usize = 10;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The run store's time-index key: `created_ms` big-endian, then the id.
fn time_key(created_ms: u64, id: &str) -> Vec<u8> {
    let mut key = created_ms.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

/// 100,000 finished runs of `process`, one a second back from now, 2% failed.
fn seed_runs(state: &AppState, process: &str, digest: &str) -> anyhow::Result<()> {
    let db = state.users.database();
    let start = now_ms() - RUN_COUNT as u64 * 1_000;
    for chunk in 0..RUN_COUNT / CHUNK {
        let mut batch = Batch::new();
        for i in chunk * CHUNK..(chunk + 1) * CHUNK {
            let id = uuid::Uuid::new_v4().to_string();
            let mut run = RunRecord::new_queued(
                id.clone(),
                process.to_string(),
                digest.to_string(),
                "admin".into(),
                [("mode".to_string(), json!("echo"))].into_iter().collect(),
            );
            run.created_ms = start + i as u64 * 1_000;
            run.started_ms = Some(run.created_ms + 5);
            run.finished_ms = Some(run.created_ms + 50);
            run.state = if i % 50 == 0 {
                RunState::Failed
            } else {
                RunState::Succeeded
            };
            run.result = Some("{\"ok\":true}".into());
            run.events = vec![json!({"at_ms": 1, "level": "info", "message": "hello"})];
            batch
                .put(
                    &RUNS,
                    id.as_bytes(),
                    serde_json::to_vec(&run)?,
                    Expect::Absent,
                )
                .put(
                    &RUNS_BY_TIME,
                    time_key(run.created_ms, &id),
                    id.as_bytes(),
                    Expect::Any,
                );
        }
        db.apply(&batch)?;
    }
    Ok(())
}

fn entry(i: usize) -> AuditEntry {
    AuditEntry {
        run_id: Some(format!("seeded-run-{}", i % 20_000)),
        actor: "admin".into(),
        action: ["ssh.exec", "credentials.acquire", "run.running"][i % 3].into(),
        target: Some(format!("web-{}", i % 50)),
        credential: None,
        decision: Decision::Allowed,
        outcome: "exit 0".into(),
        duration_us: 10,
        detail: Some("host calls: 1".into()),
    }
}

async fn seed_audit(state: &AppState, total: usize) -> anyhow::Result<()> {
    let mut appenders = Vec::new();
    for a in 0..APPENDERS {
        let log = state.audit.clone();
        appenders.push(tokio::spawn(async move {
            let mut i = a * CHUNK;
            while i < total {
                log.append_all((i..i + CHUNK).map(entry).collect()).await?;
                i += APPENDERS * CHUNK;
            }
            anyhow::Ok(())
        }));
    }
    for appender in appenders {
        appender.await??;
    }
    Ok(())
}

async fn page_times(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let mut samples = Vec::new();
    for i in 0..REQUESTS + WARMUP {
        let t = Instant::now();
        let resp = client
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "{path}: {}", resp.status());
        let body = resp.bytes().await?;
        let elapsed = t.elapsed();
        anyhow::ensure!(body.len() > 1_000, "{path}: a real page");
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

/// One drip run followed through the console's stream: (start → first event, each event's
/// delay from being logged to being received).
async fn follow_one(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    admin: &str,
    process: &str,
) -> anyhow::Result<(Duration, Vec<f64>)> {
    let sent = Instant::now();
    let r = client
        .post(format!("{base}/v1/processes/{process}/runs"))
        .bearer_auth(admin)
        .json(&json!({ "inputs": { "mode": "drip", "n": 4 } }))
        .send()
        .await?;
    let run: Value = r.json().await?;
    let id = run["id"].as_str().unwrap_or("").to_string();
    let mut stream = client
        .get(format!("{base}/ui/runs/{id}/events"))
        .header("cookie", cookie)
        .send()
        .await?
        .bytes_stream();
    let mut first = None;
    let mut delays = Vec::new();
    let mut buffer = String::new();
    let mut events = Vec::new();
    'read: while let Some(chunk) = stream.next().await {
        let received = now_ms();
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.contains("event: log") {
                first.get_or_insert_with(|| sent.elapsed());
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or("");
                let event: Value = serde_json::from_str(data)?;
                events.push((event["at_ms"].as_u64().unwrap_or(0), received));
            }
            if block.contains("event: state") {
                break 'read;
            }
        }
    }
    let record: Value = client
        .get(format!("{base}/v1/runs/{id}"))
        .bearer_auth(admin)
        .send()
        .await?
        .json()
        .await?;
    let started = record["started_ms"].as_u64().unwrap_or(0);
    for (at, received) in events {
        delays.push(received as f64 - (started + at) as f64);
    }
    Ok((first.unwrap_or_default(), delays))
}

async fn bench() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let root = dir.path().join("data");
    let data = DataDir::init(&root)?;
    let state = AppState::open(data, &repo_root().join("policies")).await?;
    let admin = bootstrap_admin(&state.users);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(warden_host::api::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    let key = new_key();
    let publisher =
        json!({ "name": "bench", "public_key": hex::encode(key.verifying_key().as_bytes()) });
    client
        .post(format!("{base}/v1/publishers"))
        .bearer_auth(&admin)
        .json(&publisher)
        .send()
        .await?;
    let module = signed("probe", &manifest_text("probe"), &key);
    let up: Value = client
        .post(format!("{base}/v1/modules"))
        .bearer_auth(&admin)
        .header("content-type", "application/wasm")
        .body(module)
        .send()
        .await?
        .json()
        .await?;
    let digest = up["digest"].as_str().unwrap_or("").to_string();
    let _ = component_bytes;
    let p: Value = client
        .post(format!("{base}/v1/processes"))
        .bearer_auth(&admin)
        .json(&json!({ "name": "bench-proc", "module_digest": digest, "grant": {} }))
        .send()
        .await?
        .json()
        .await?;
    let process = p["id"].as_str().unwrap_or("").to_string();

    let t = Instant::now();
    seed_runs(&state, &process, &digest)?;
    println!(
        "seeded {RUN_COUNT} runs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    // CONSOLE_BENCH_AUDIT=N seeds fewer audit records (a quicker run while iterating).
    let audit_count = std::env::var("CONSOLE_BENCH_AUDIT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(AUDIT_COUNT);
    seed_audit(&state, audit_count).await?;
    println!(
        "seeded {audit_count} audit records in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let resp = client
        .post(format!("{base}/ui/signin"))
        .form(&[("token", admin.as_str())])
        .send()
        .await?;
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .to_string();
    for path in [
        "/v1/runs?limit=100",
        "/v1/runs?state=running&limit=10",
        "/v1/runs?state=failed&limit=10",
        "/v1/approvals",
        "/v1/processes",
    ] {
        let t = Instant::now();
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth(&admin)
            .send()
            .await?;
        let _ = r.bytes().await?;
        println!("  (one API call {path}: {:.1} ms)", ms(t.elapsed()));
    }
    for (name, path) in [("overview", "/ui/"), ("runs", "/ui/runs")] {
        let (p50, p99) = page_times(&client, &base, &cookie, path).await?;
        println!(
            "{name:9} page ({path}) with {RUN_COUNT} runs, {audit_count} audit records: p50 {:.2} ms  p99 {:.2} ms ({REQUESTS} requests)",
            ms(p50),
            ms(p99)
        );
    }
    let mut firsts = Vec::new();
    let mut delays = Vec::new();
    for _ in 0..LIVE_RUNS {
        let (first, d) = follow_one(&client, &base, &cookie, &admin, &process).await?;
        firsts.push(first);
        delays.extend(d);
    }
    firsts.sort();
    delays.sort_by(|a, b| a.total_cmp(b));
    let d = |p: f64| delays[((delays.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "live events through /ui/runs/{{id}}/events: logged → received p50 {:.0} ms  max {:.0} ms ({} events, ms clock); start request → first event p50 {:.0} ms (the task waits 250 ms before its first line)",
        d(0.5),
        d(1.0),
        delays.len(),
        ms(percentile(&firsts, 0.5))
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench())
}
