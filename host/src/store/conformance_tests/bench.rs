//! Storage figures on both backends, printed (run with `--ignored --nocapture`): single-row
//! apply latency, audit commit of 1/64/1024 rows, and audit query by run id on a log of
//! 1,000,000 records. Ignored by default: they measure, they do not check.

use std::time::{Duration, Instant};

use super::{Fixture, Spec, USERS, commit};
use crate::store::{AuditQuery, Database};

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "p50 {:>8.3} ms  p99 {:>8.3} ms  (n={})",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples.len()
    )
}

fn timed(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn row(i: u64, runs: u64) -> Spec {
    Spec {
        time_ms: 1_700_000_000_000 + i,
        run_id: Some(format!("run-{}", i % runs)),
        actor: ["alice", "bob", "carol"][(i % 3) as usize].into(),
        action: ["exec", "read", "write", "approve"][(i % 4) as usize].into(),
        target: Some(format!("host-{}", i % 50)),
    }
}

fn writes(kind: &str, db: &Database) {
    let table = db.table(&USERS);
    // Warm up: connections, prepared statements, the fresh database's first pages.
    for i in 0..100 {
        table.put(format!("w{i}"), vec![7u8; 200]).unwrap();
    }
    let samples = (0..500)
        .map(|i| timed(|| table.put(format!("k{i}"), vec![7u8; 200]).unwrap()))
        .collect();
    println!(
        "{kind:8} apply 1 row (put)          {}",
        percentiles(samples)
    );
    let samples = (0..500)
        .map(|i| timed(|| assert!(table.insert_new(format!("n{i}"), vec![7u8; 200]).unwrap())))
        .collect();
    println!(
        "{kind:8} apply 1 row (insert_new)   {}",
        percentiles(samples)
    );
    let mut i = 0;
    for (size, times) in [(1u64, 200), (64, 50), (1024, 10)] {
        let samples = (0..times)
            .map(|_| {
                let specs: Vec<Spec> = (i..i + size).map(|n| row(n, 1000)).collect();
                i += size;
                timed(|| drop(commit(db, &specs, &[]).unwrap()))
            })
            .collect();
        println!(
            "{kind:8} audit commit {size:>4} rows     {}",
            percentiles(samples)
        );
    }
}

fn query_one_million(kind: &str, db: &Database, queries: usize) {
    const TOTAL: u64 = 1_000_000;
    const RUNS: u64 = 20_000;
    let start = Instant::now();
    let mut i = 0;
    while i < TOTAL {
        let specs: Vec<Spec> = (i..i + 10_000).map(|n| row(n, RUNS)).collect();
        commit(db, &specs, &[]).unwrap();
        i += 10_000;
    }
    println!(
        "{kind:8} loaded {TOTAL} audit records in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let samples = (0..queries)
        .map(|q| {
            let run = (q as u64 * 7_919) % RUNS;
            let query = AuditQuery {
                run_id: Some(format!("run-{run}")),
                limit: 100,
                ..AuditQuery::default()
            };
            timed(|| assert_eq!(db.backend().audit_query(&query).unwrap().len(), 50))
        })
        .collect();
    println!(
        "{kind:8} audit query by run, 1M rows {}",
        percentiles(samples)
    );
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_storage_writes_sled() {
    writes("sled", &Fixture::sled().db);
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_storage_writes_postgres() {
    writes("postgres", &Fixture::postgres().db);
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_audit_query_one_million_sled() {
    query_one_million("sled", &Fixture::sled().db, 10);
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_audit_query_one_million_postgres() {
    let fixture = Fixture::postgres();
    query_one_million("postgres", &fixture.db, 200);
    if let Some(url) = &fixture.url {
        let plan = crate::store::postgres::testing::query(
            url,
            "EXPLAIN ANALYZE SELECT record FROM warden.audit_records WHERE seq > -1 \
             AND run_id = 'run-4242' ORDER BY seq LIMIT 100",
        )
        .unwrap();
        for line in plan {
            println!("  {}", line[0].as_deref().unwrap_or(""));
        }
    }
}
