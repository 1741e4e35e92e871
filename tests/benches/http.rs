//! HTTP benchmark (a bench binary that prints its figures; run with
//! `cargo bench -p warden-tests --bench http`):
//!
//! - a trivial process (`noop`) started over HTTP until its result is available: the client
//!   POSTs the run and reads its event stream until the final `state` event (p50, p99);
//! - runs per second with 50 concurrent clients doing the same.
//!
//! The server runs in-process on a real loopback port; every run transition and host call
//! is audited durably while measured. Both storage backends are measured side by side
//! (PostgreSQL when `WARDEN_TEST_DATABASE_URL` names a cluster; `.ci/postgres start`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use secrecy::ExposeSecret;
use tempfile::TempDir;
use warden_host::api::AppState;
use warden_host::registry::manifest::Manifest;
use warden_host::registry::signing;
use warden_host::runs::NewProcess;
use warden_host::store::{DataDir, DatabaseLocation};
use warden_tests::{guests, repo_root};

const SEQUENTIAL_RUNS: usize = 300;
const CLIENTS: usize = 50;
const RUNS_PER_CLIENT: usize = 20;

/// Starts a run and waits for its final state; returns whether it succeeded.
async fn run_once(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    process: &str,
) -> anyhow::Result<bool> {
    let started: serde_json::Value = client
        .post(format!("{base}/v1/processes/{process}/runs"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "inputs": {} }))
        .send()
        .await?
        .json()
        .await?;
    let id = started["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no run id: {started}"))?;
    let events = client
        .get(format!("{base}/v1/runs/{id}/events"))
        .bearer_auth(token)
        .send()
        .await?
        .text()
        .await?;
    Ok(events.contains("event: state") && events.contains("\"state\":\"succeeded\""))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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
    {
        let dir = TempDir::new()?;
        let root = dir.path().join("data");
        let data = DataDir::init_at(&root, &DataDir::default_key_source(&root), location)?;
        let state = AppState::open(data, &repo_root().join("policies")).await?;
        let roles: BTreeSet<String> = ["privileged-administrator".to_string()].into();
        state.users.create_user("admin", roles)?;
        let token = state
            .users
            .issue_token("admin", "bench")?
            .token
            .expose_secret()
            .to_string();
        let key = SigningKey::from_bytes(&[42u8; 32]);
        state
            .modules
            .trust_publisher("bench", &key.verifying_key())?;
        let manifest = Manifest::parse(&std::fs::read_to_string(guests::manifest("noop"))?)?;
        let signed = signing::sign(&std::fs::read(guests::component("noop"))?, &manifest, &key)?;
        let verified = state.modules.verify(&signed)?;
        state.bridge.runtime().prepare(&signed)?;
        let module = state.modules.store(&verified, &signed, "admin")?;
        let process = state.processes.create(NewProcess {
            name: "noop".into(),
            description: String::new(),
            owner: "admin".into(),
            module_digest: module.digest.clone(),
            module: "noop@0.1.0".into(),
            grant: Default::default(),
            default_inputs: Default::default(),
            shared_users: Default::default(),
            shared_roles: Default::default(),
            required_approvals: 0,
            retry_on_lost: false,
            limits: Default::default(),
            workflow: None,
        })?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(warden_host::api::serve(
            listener,
            state.clone(),
            std::future::pending(),
        ));
        let client = reqwest::Client::new();

        for _ in 0..20 {
            run_once(&client, &base, &token, &process.id).await?;
        }
        let mut samples = Vec::with_capacity(SEQUENTIAL_RUNS);
        for _ in 0..SEQUENTIAL_RUNS {
            let t = Instant::now();
            anyhow::ensure!(
                run_once(&client, &base, &token, &process.id).await?,
                "run failed"
            );
            samples.push(t.elapsed());
        }
        samples.sort();
        println!(
            "trivial process over HTTP, start until result available ({SEQUENTIAL_RUNS} sequential runs): p50 {:.2} ms  p99 {:.2} ms",
            percentile(&samples, 0.5).as_secs_f64() * 1e3,
            percentile(&samples, 0.99).as_secs_f64() * 1e3
        );

        let (base, token, pid) = (
            Arc::new(base),
            Arc::new(token),
            Arc::new(process.id.clone()),
        );
        let t = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (client, base, token, pid) =
                (client.clone(), base.clone(), token.clone(), pid.clone());
            clients.push(tokio::spawn(async move {
                let mut ok = 0usize;
                for _ in 0..RUNS_PER_CLIENT {
                    if run_once(&client, &base, &token, &pid)
                        .await
                        .unwrap_or(false)
                    {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for c in clients {
            ok += c.await.unwrap_or(0);
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{CLIENTS} concurrent clients: {:.0} runs/s ({ok} of {} runs succeeded in {secs:.2} s)",
            ok as f64 / secs,
            CLIENTS * RUNS_PER_CLIENT
        );
        let report = state.audit.verify()?;
        println!("audit chain verifies: {} records", report.count);
        Ok(())
    }
}
