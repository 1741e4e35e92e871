//! Storage benchmark (a bench binary that prints its figures; run with
//! `cargo bench -p warden-tests --bench storage`, PostgreSQL too when
//! `WARDEN_TEST_DATABASE_URL` names a cluster):
//!
//! - audit query by run id (the API's `GET /v1/audit?run=…`, first page) on a log of
//!   1,000,000 records written through the real audit log (chained, signed, durable),
//!   20,000 runs of 50 records each: p50/p99 over 200 queries, and how long the load took.
//!
//! Both backends answer from an index, so the figure should not depend on the log's length.

use std::time::{Duration, Instant};

use tempfile::TempDir;
use warden_host::audit::{AuditEntry, AuditFilter, AuditLog, Decision};
use warden_host::store::{DataDir, DatabaseLocation};

const TOTAL: usize = 1_000_000;
const RUNS: usize = 20_000;
const CHUNK: usize = 1_000;
const APPENDERS: usize = 8;
const QUERIES: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn entry(i: usize) -> AuditEntry {
    AuditEntry {
        run_id: Some(format!("run-{}", i % RUNS)),
        actor: ["alice", "bob", "carol"][i % 3].into(),
        action: ["ssh.exec", "credentials.acquire", "run.running"][i % 3].into(),
        target: Some(format!("web-{}", i % 50)),
        credential: None,
        decision: Decision::Allowed,
        outcome: "exit 0".into(),
        duration_us: 10,
        detail: Some("host calls: 1".into()),
    }
}

async fn bench(kind: &str, location: &DatabaseLocation) -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let root = dir.path().join("data");
    let data = DataDir::init_at(&root, &DataDir::default_key_source(&root), location)?;
    let log = AuditLog::open(&data.db, data.server_key.clone())?;
    let start = Instant::now();
    let mut appenders = Vec::new();
    for a in 0..APPENDERS {
        let log = log.clone();
        appenders.push(tokio::spawn(async move {
            let mut i = a * CHUNK;
            while i < TOTAL {
                let entries = (i..i + CHUNK).map(entry).collect();
                log.append_all(entries).await?;
                i += APPENDERS * CHUNK;
            }
            anyhow::Ok(())
        }));
    }
    for appender in appenders {
        appender.await??;
    }
    println!(
        "{kind:8} wrote {TOTAL} audit records in {:.1} s ({:.0} records/s, {APPENDERS} appenders)",
        start.elapsed().as_secs_f64(),
        TOTAL as f64 / start.elapsed().as_secs_f64()
    );
    let mut samples = Vec::with_capacity(QUERIES);
    for q in 0..QUERIES + 20 {
        let filter = AuditFilter {
            run_id: Some(format!("run-{}", (q * 7_919) % RUNS)),
            limit: Some(100),
            ..AuditFilter::default()
        };
        let t = Instant::now();
        let found = log.query(&filter)?;
        let elapsed = t.elapsed();
        anyhow::ensure!(found.len() == TOTAL / RUNS, "{} records", found.len());
        if q >= 20 {
            samples.push(elapsed); // the first 20 warm caches and connections
        }
    }
    samples.sort();
    println!(
        "{kind:8} audit query by run id on {TOTAL} records: p50 {:.2} ms  p99 {:.2} ms ({QUERIES} queries)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for (kind, location) in warden_tests::postgres::bench_backends() {
        rt.block_on(bench(kind, &location))?;
    }
    Ok(())
}
