//! Workflow benchmark (a bench binary that prints its figures; run as root with
//! `cargo bench -p warden-tests --bench workflows`; `WARDEN_BENCH_TARGETS=N` sets the map's
//! fleet, default 50):
//!
//! - overhead per step: a workflow of 20 trivial task steps (`noop`) against one of 1, each
//!   measured from the start call to its recorded end on the server (p50 over the rounds),
//!   per-step overhead = (t20 - t1) / 19 (target ≤ 2 ms with sled);
//! - a `map` over N real sshd targets (one `exec` step run per target, all at once) against
//!   one `exec-many` run on the same targets (target ≤ 1.5x): once with the run queue's default
//!   fair-share caps (16 running runs per user: the map's step runs go in waves) and once with
//!   those caps raised to 64 (`--queue-per-user-running`), which is what the target measures.
//!
//! The server runs in-process over sled; every step transition, run transition and host call
//! is audited durably while measured.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden_tests::http::{Server, new_key};
use warden_tests::sshd::{Sshd, TestUser};

const ROUNDS: usize = 30;
const MAP_ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn create(server: &Server, name: &str, workflow: Value) -> anyhow::Result<String> {
    let r = server
        .post(
            "/v1/processes",
            &server.admin,
            json!({ "name": name, "workflow": workflow }),
        )
        .await;
    anyhow::ensure!(r.status == 201, "{}", r.text);
    Ok(r.body["id"].as_str().unwrap_or_default().to_string())
}

/// Starts a run of `pid` in-process and waits for its recorded end; the elapsed time.
async fn timed(server: &Server, pid: &str, inputs: Value) -> anyhow::Result<Duration> {
    Ok(timed_run(server, pid, inputs).await?.0)
}

/// [`timed`], and the run's id.
async fn timed_run(
    server: &Server,
    pid: &str,
    inputs: Value,
) -> anyhow::Result<(Duration, String)> {
    let state = server
        ._state
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("in-process"))?;
    let process = state
        .processes
        .get(pid)?
        .ok_or_else(|| anyhow::anyhow!("process"))?;
    let inputs = serde_json::from_value(inputs)?;
    let started = Instant::now();
    let run = state.dispatcher.start(&process, inputs, "admin").await?;
    let end = state.runs.wait_finished(&run.id).await?;
    let took = started.elapsed();
    anyhow::ensure!(end.state.as_str() == "succeeded", "{:?}", end.error);
    Ok((took, run.id))
}

/// Where a map run's time went: for its step runs, the median time (ms, from the workflow
/// run's start) at which the engine began the step, the step run was created, started and
/// finished, and the engine recorded the step's end.
fn breakdown(server: &Server, run_id: &str) -> anyhow::Result<String> {
    let state = server
        ._state
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("in-process"))?;
    let run = state
        .runs
        .get(run_id)?
        .ok_or_else(|| anyhow::anyhow!("run"))?;
    let base = run.started_ms.unwrap_or(run.created_ms);
    let progress = run.workflow.ok_or_else(|| anyhow::anyhow!("workflow"))?;
    let mut columns: [Vec<u64>; 5] = Default::default();
    let mut children = Vec::new();
    for step in progress.steps.values().filter(|s| s.kind == "task") {
        let Some(attempt) = step.attempts.last() else {
            continue;
        };
        let child = state
            .runs
            .get(&attempt.run_id)?
            .ok_or_else(|| anyhow::anyhow!("step run"))?;
        let at = |ms: u64| ms.saturating_sub(base);
        columns[0].push(at(step.started_ms));
        columns[1].push(at(child.created_ms));
        columns[2].push(at(child.started_ms.unwrap_or(child.created_ms)));
        columns[3].push(at(child.finished_ms.unwrap_or_default()));
        columns[4].push(at(step.finished_ms.unwrap_or_default()));
        children.push(child);
    }
    // One step run's audit records, in ms from its creation: what it waited on.
    children.sort_by_key(|c| c.finished_ms);
    let mut trail = String::new();
    if let Some(child) = children.get(children.len() / 2) {
        let filter = warden_host::audit::AuditFilter {
            run_id: Some(child.id.clone()),
            ..Default::default()
        };
        for record in state.audit.query(&filter)? {
            let at = record.time_ms.saturating_sub(child.created_ms);
            trail.push_str(&format!(" {}@{at}", record.entry.action));
        }
    }
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let [a, b, c, d, e] = &mut columns;
    Ok(format!(
        "step begun {} ms, step run created {}, started {}, finished {}, step recorded {}; \
         last step recorded {} ms, run ended {} ms; median step run's audit (ms):{}",
        median(a),
        median(b),
        median(c),
        median(d),
        median(e),
        e.last().copied().unwrap_or_default(),
        run.finished_ms.unwrap_or_default().saturating_sub(base),
        trail,
    ))
}

fn chain(noop: &str, steps: usize) -> Value {
    let mut states = serde_json::Map::new();
    for i in 0..steps {
        let mut state = json!({ "type": "task", "module": noop });
        if i + 1 == steps {
            state["end"] = json!(true);
        } else {
            state["next"] = json!(format!("s{}", i + 1));
        }
        states.insert(format!("s{i}"), state);
    }
    json!({ "start_at": "s0", "states": states })
}

async fn bench() -> anyhow::Result<()> {
    let server = Server::start().await;
    let key = new_key();
    server.trust("bench", &key).await;
    let noop = server.publish("noop", &key).await;
    let probe = server.publish("probe", &key).await;

    let one = create(&server, "one-step", chain(&noop, 1)).await?;
    let twenty = create(&server, "twenty-steps", chain(&noop, 20)).await?;
    for _ in 0..3 {
        timed(&server, &one, json!({})).await?;
        timed(&server, &twenty, json!({})).await?;
    }
    let (mut t1, mut t20) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        t1.push(timed(&server, &one, json!({})).await?);
        t20.push(timed(&server, &twenty, json!({})).await?);
    }
    let (m1, m20) = (median(t1), median(t20));
    let per_step = (m20.saturating_sub(m1)).as_secs_f64() * 1000.0 / 19.0;
    println!(
        "workflow of 1 step:   p50 {:.2} ms",
        m1.as_secs_f64() * 1000.0
    );
    println!(
        "workflow of 20 steps: p50 {:.2} ms",
        m20.as_secs_f64() * 1000.0
    );
    println!("overhead per step:    {per_step:.2} ms (target <= 2 ms)");

    let n: usize = std::env::var("WARDEN_BENCH_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let user = TestUser::create("wbw")?;
    let sshds = Sshd::fleet(n)?;
    println!("--- default run-queue caps (16 running runs per user)");
    map_vs_many(&server, &probe, &user, &sshds).await?;
    let mut limits = warden_host::api::ServerLimits::default();
    limits.queue.per_user_running = 64;
    limits.queue.per_process_running = 64;
    let wide = Server::start_with(&limits).await;
    wide.trust("bench", &key).await;
    let probe = wide.publish("probe", &key).await;
    println!("--- per-user and per-process caps raised to 64");
    map_vs_many(&wide, &probe, &user, &sshds).await?;
    Ok(())
}

async fn map_vs_many(
    server: &Server,
    probe: &str,
    user: &TestUser,
    sshds: &[Sshd],
) -> anyhow::Result<()> {
    let n = sshds.len();
    let r = server
        .post(
            "/v1/credentials",
            &server.admin,
            json!({ "name": "pw", "username": user.name, "secret": user.password }),
        )
        .await;
    anyhow::ensure!(r.status == 201, "{}", r.text);
    let mut names = Vec::new();
    for (i, sshd) in sshds.iter().enumerate() {
        let name = format!("t{i}");
        let body = json!({ "name": name, "address": sshd.addr(), "host_key": sshd.host_key_line });
        let r = server.post("/v1/targets", &server.admin, body).await;
        anyhow::ensure!(r.status == 201, "{}", r.text);
        names.push(name);
    }
    let grant = json!({ "credentials": ["pw"], "targets": names, "commands": ["id -un"] });
    let map = json!({
        "inputs": { "targets": { "type": "string-list", "required": true } },
        "start_at": "each",
        "states": { "each": { "type": "map", "items": "$.inputs.targets", "max_concurrency": 64,
            "end": true, "iterator": { "start_at": "who", "states": { "who": {
                "type": "task", "module": probe, "grant": grant, "end": true,
                "inputs": { "mode": "exec", "credential": "pw", "command": "id -un", "target.$": "$.item" } } } } } }
    });
    let many = json!({ "start_at": "all", "states": { "all": {
        "type": "task", "module": probe, "grant": grant, "end": true,
        "inputs": { "mode": "exec-many", "credential": "pw", "command": "id -un", "targets.$": "$.inputs.targets" } } },
        "inputs": { "targets": { "type": "string-list", "required": true } } });
    let map_pid = create(server, "map", map).await?;
    let many_pid = create(server, "exec-many", many).await?;
    let inputs = json!({ "targets": names });
    timed(server, &map_pid, inputs.clone()).await?;
    timed(server, &many_pid, inputs.clone()).await?;
    let (mut tm, mut te) = (Vec::new(), Vec::new());
    let mut last_map = String::new();
    for _ in 0..MAP_ROUNDS {
        let (took, id) = timed_run(server, &map_pid, inputs.clone()).await?;
        tm.push(took);
        last_map = id;
        te.push(timed(server, &many_pid, inputs.clone()).await?);
    }
    let (mm, me) = (median(tm), median(te));
    println!(
        "map over {n} targets (one step run each): p50 {:.1} ms",
        mm.as_secs_f64() * 1000.0
    );
    println!(
        "  last map run, medians over its steps: {}",
        breakdown(server, &last_map)?
    );
    println!(
        "one exec-many run on {n} targets:        p50 {:.1} ms",
        me.as_secs_f64() * 1000.0
    );
    println!(
        "ratio: {:.2}x (target <= 1.5x)",
        mm.as_secs_f64() / me.as_secs_f64().max(1e-9)
    );
    Ok(())
}
