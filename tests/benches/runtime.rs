//! Runtime benchmarks (a bench binary that prints its figures; run with
//! `cargo bench -p warden-tests --bench runtime`):
//!
//! - instantiate + call of a trivial precompiled task (`noop`), median over 1,000 runs;
//! - audited host calls per second, every record durably flushed (group commit), with
//!   several runs making calls concurrently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use warden_host::audit::AuditLog;
use warden_host::bridge::Runtime;
use warden_host::bridge::{Bridge, RunSpec};
use warden_host::capabilities::grant::Grant;
use warden_host::capabilities::{HostContext, RunIdentity, Services};
use warden_host::registry::inputs::{Param, Value};
use warden_host::runtime::engine::EngineConfig;
use warden_host::runtime::limits::RunLimits;
use warden_host::ssh::{SshConfig, SshPool};
use warden_host::store::DataDir;
use warden_host::targets::TargetStore;
use warden_host::vault::Vault;
use warden_tests::guests;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = TempDir::new()?;
    let data = DataDir::init(&dir.path().join("data"))?;
    let runtime = Runtime::new(&EngineConfig::default(), &data.artifacts())?;

    let services = services(data)?;
    let noop = runtime.prepare(&std::fs::read(guests::component("noop"))?)?;
    let probe = runtime.prepare(&std::fs::read(guests::component("probe"))?)?;

    // 1. Instantiate + call, no host calls, no audit: the sandbox's own overhead.
    let limits = RunLimits::default();
    let identity = RunIdentity {
        run_id: "bench".into(),
        actor: "bench".into(),
        module: "noop".into(),
    };
    let mut samples = Vec::with_capacity(1000);
    rt.block_on(async {
        for i in 0..1100 {
            let control = warden_host::runtime::RunControl::new();
            let host = HostContext::new(
                identity.clone(),
                Grant::default(),
                vec![],
                services.clone(),
                limits.clone(),
                &control,
            );
            let started = Instant::now();
            let report = runtime.run(&noop, host, &limits, &control).await;
            let elapsed = started.elapsed();
            assert!(report.outcome.is_success(), "{:?}", report.outcome);
            if i >= 100 {
                samples.push(elapsed); // the first 100 warm the pool
            }
        }
    });
    samples.sort();
    println!(
        "instantiate+call (noop, precompiled, pooling): median {:?}  p99 {:?}  over {} runs",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.len()
    );

    // 2. and 3. on each storage backend.
    drop(services);
    for (kind, location) in warden_tests::postgres::bench_backends() {
        println!("--- {kind}");
        let dir = TempDir::new()?;
        let root = dir.path().join("data");
        let data = DataDir::init_at(&root, &DataDir::default_key_source(&root), &location)?;
        audited_calls(&rt, &runtime, &probe, data)?;
    }
    Ok(())
}

/// Audited host calls per second over the database of `data`.
fn audited_calls(
    rt: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
    probe: &Arc<warden_host::bridge::PreparedTask>,
    data: DataDir,
) -> anyhow::Result<()> {
    let (db, key) = (data.db.clone(), data.server_key.verifying_key());
    let services = services(data)?;
    // 2. Audited host calls per second: `concurrency` runs each make `per_run` calls that
    //    read only the run's own state (one durable record each, after the call).
    let bridge = Bridge::new(Arc::clone(runtime), services.clone());
    for concurrency in [1usize, 8, 32] {
        let params = vec![text("mode", "calls"), int("n", 2_000)];
        let (calls, secs) =
            rt.block_on(flood(&bridge, probe, concurrency, params, Grant::default()));
        println!(
            "audited host calls/s (durable, group commit), {concurrency:>2} concurrent runs: {:>8.0} calls/s ({calls} calls in {secs:.2} s)",
            calls as f64 / secs
        );
    }
    // 3. Host calls that act outside the run (`credentials.acquire`: a lease is looked up or
    //    issued), each with a durable intent record before it acts and an outcome after.
    local(&services).vault.add(
        "bench",
        "bench",
        warden_host::vault::CredentialKind::Password,
        warden_host::vault::Secret::from_bytes(b"bench-secret".to_vec()),
    )?;
    let grant = Grant {
        credentials: ["bench".to_string()].into(),
        ..Grant::default()
    };
    for concurrency in [1usize, 8, 32, 64] {
        let params = vec![
            text("mode", "acquire-repeat"),
            text("credential", "bench"),
            int("n", 1_000),
        ];
        let (calls, secs) = rt.block_on(flood(&bridge, probe, concurrency, params, grant.clone()));
        println!(
            "acting host calls/s (intent + outcome, both durable), {concurrency:>2} concurrent runs: {:>8.0} calls/s ({calls} calls in {secs:.2} s)",
            calls as f64 / secs
        );
    }
    let verified = warden_host::audit::verify(&db, &key)?;
    println!("audit chain verifies: {} records", verified.count);
    Ok(())
}

/// The in-process stores of `services`.
fn local(services: &Services) -> &warden_host::capabilities::LocalServer {
    match &services.server {
        warden_host::capabilities::ServerSide::Local(local) => local,
        warden_host::capabilities::ServerSide::Remote(_) => unreachable!("built local"),
    }
}

/// The capability services over the stores of `data`.
fn services(data: DataDir) -> anyhow::Result<Services> {
    let audit = AuditLog::open(&data.db, data.server_key.clone())?;
    Ok(Services::local(
        audit.clone(),
        Vault::open(&data.db, data.master_key)?,
        TargetStore::open(&data.db)?,
        SshPool::new(SshConfig::default()),
        warden_host::vault::lease::LeaseStore::open(&data.db, audit)?,
    ))
}

fn text(name: &str, value: &str) -> Param {
    Param {
        name: name.into(),
        value: Value::Text(value.into()),
    }
}

fn int(name: &str, value: i64) -> Param {
    Param {
        name: name.into(),
        value: Value::Integer(value),
    }
}

/// Runs `concurrency` probe runs at once with `params` under `grant`; the host calls they
/// made and the seconds it took.
async fn flood(
    bridge: &Bridge,
    probe: &Arc<warden_host::bridge::PreparedTask>,
    concurrency: usize,
    params: Vec<Param>,
    grant: Grant,
) -> (u64, f64) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let spec = RunSpec {
            identity: RunIdentity {
                run_id: format!("bench-{}-{concurrency}-{i}", uuid::Uuid::new_v4()),
                actor: "bench".into(),
                module: "probe".into(),
            },
            task: probe.clone(),
            params: params.clone(),
            grant: grant.clone(),
            limits: RunLimits::default(),
            control: warden_host::runtime::RunControl::new(),
        };
        let bridge = bridge.clone();
        tasks.push(tokio::spawn(async move {
            bridge
                .execute(spec)
                .await
                .map(|r| r.host_calls)
                .unwrap_or(0)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    (total, started.elapsed().as_secs_f64())
}
