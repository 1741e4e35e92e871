//! Remote-bridge benchmark (a bench binary that prints its figures; run with
//! `cargo bench -p warden-tests --bench bridges`). The server is a `warden serve` process on
//! a loopback port (sled); the bridge is the real agent (`warden_host::bridge::remote`) in this
//! process, talking to it over HTTP like `warden bridge run` does.
//!
//! - dispatch latency: a trivial run queued for an idle bridge, until the bridge claimed it
//!   (the server's `started_ms - created_ms`), p50/p99;
//! - per-host-call overhead: one run of N `ssh.exec` calls on one target, remote vs embedded;
//! - the 50-host fan-out (`exec-many` over 50 sshd), remote vs embedded;
//! - 1,000 simulated bridges holding idle claims: the server's RSS and CPU.
//!
//! Everything goes over TLS (the data directory's certificate, pinned), as in production.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::bridge::remote::{self, Agent, Trust};
use warden_host::bridge::wire::RequestSigner;
use warden_host::store::DataDir;
use warden_host::tls::{Fingerprint, ServerTls, ServerTrust, TLS_DIR};
use warden_host::users::UserStore;
use warden_tests::http::{Server, bootstrap_admin, new_key, pinned_client};
use warden_tests::sshd::{Sshd, TestUser};

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");
const DISPATCHES: usize = 200;
const CALLS: i64 = 100;
const IDLE_BRIDGES: usize = 1000;

/// `WARDEN_BENCH_IDLE_ONLY=1`: only the idle-bridges part (to study the server's memory).
fn idle_only() -> bool {
    std::env::var_os("WARDEN_BENCH_IDLE_ONLY").is_some()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The server over TLS (its data directory's certificate), and a client pinned to it.
struct Serve {
    child: std::process::Child,
    base: String,
    pin: Fingerprint,
    client: reqwest::Client,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(data: &Path, log: &Path) -> anyhow::Result<Serve> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    // `WARDEN_BENCH_SERVER_WRAPPER=heaptrack` runs the server under a profiler.
    let mut command = match std::env::var("WARDEN_BENCH_SERVER_WRAPPER") {
        Ok(wrapper) => {
            let mut command = std::process::Command::new(wrapper);
            command.arg(BIN);
            command
        }
        Err(_) => std::process::Command::new(BIN),
    };
    let child = command
        .args(["serve", "--listen", &listen, "--data"])
        .arg(data)
        .arg("--policies")
        .arg(warden_tests::repo_root().join("policies"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    let base = format!("https://{listen}");
    let pin = Fingerprint::of_pem_file(&ServerTls::data_dir_files(data).0)?;
    let client = pinned_client(pin);
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return Ok(Serve {
                child,
                base,
                pin,
                client,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("server did not start: {}", std::fs::read_to_string(log)?)
}

async fn wait_end(server: &Server, id: &str) -> Value {
    loop {
        let r = server.get(&format!("/v1/runs/{id}"), &server.admin).await;
        let state = r.body["state"].as_str().unwrap_or("");
        if !matches!(state, "queued" | "running") {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn process(server: &Server, digest: &str, name: &str, targets: &[String]) -> String {
    let body = json!({ "name": name, "module_digest": digest,
        "grant": { "credentials": ["pw"], "targets": targets, "commands": ["true"] } });
    let r = server.post("/v1/processes", &server.admin, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().expect("id").to_string()
}

/// Milliseconds the run took from start to end, as the server recorded it.
fn run_ms(run: &Value) -> u64 {
    run["finished_ms"].as_u64().unwrap_or(0) - run["started_ms"].as_u64().unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tmp = TempDir::new()?;
    let data = tmp.path().join("data");
    let admin = {
        let dir = DataDir::init(&data)?;
        let token = bootstrap_admin(&UserStore::open(&dir.db)?);
        drop(dir);
        ServerTls::generate_self_signed(&data.join(TLS_DIR), &[])?;
        token
    };
    let serve = serve(&data, &tmp.path().join("serve.log")).await?;
    let server = Server::remote_with(serve.base.clone(), admin, serve.client.clone());
    let key = new_key();
    server.trust("bench", &key).await;
    let digest = server.publish("probe", &key).await;
    let user = TestUser::create("wbb")?;
    let r = server
        .post(
            "/v1/credentials",
            &server.admin,
            json!({ "name": "pw", "username": user.name, "secret": user.password }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let fleet = Sshd::fleet(50)?;
    let (mut local, mut remote_targets) = (Vec::new(), Vec::new());
    for (i, sshd) in fleet.iter().enumerate() {
        for (zone, names) in [("default", &mut local), ("dmz", &mut remote_targets)] {
            let name = format!("{zone}-{i}");
            let body = json!({ "name": name, "address": sshd.addr(), "host_key": sshd.host_key_line, "zone": zone });
            let r = server.post("/v1/targets", &server.admin, body).await;
            assert_eq!(r.status, 201, "{}", r.text);
            names.push(name);
        }
    }
    let local_process = process(&server, &digest, "local", &local).await;
    let remote_process = process(&server, &digest, "remote", &remote_targets).await;
    let noop = process(&server, &digest, "noop-remote", &remote_targets[..1]).await;

    // The bridge: enrolled and pulling, in this process.
    let r = server
        .post(
            "/v1/bridges/tokens",
            &server.admin,
            json!({ "zone": "dmz" }),
        )
        .await;
    let token = r.body["token"].as_str().expect("token").to_string();
    let bridge_dir = tmp.path().join("bridge");
    let trust = Trust {
        fingerprint: Some(serve.pin.to_string()),
        ca: None,
    };
    remote::enroll(&bridge_dir, &serve.base, &token, trust, "bench").await?;
    let agent = Agent::open(&bridge_dir, 64)?;
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(agent.run(stop.clone()));

    if !idle_only() {
        measure_runs(
            &server,
            &noop,
            &local_process,
            &remote_process,
            &local,
            &remote_targets,
        )
        .await;
    }
    stop.cancel();
    idle_bridges(&server, &serve).await
}

async fn measure_runs(
    server: &Server,
    noop: &str,
    local_process: &str,
    remote_process: &str,
    local: &[String],
    remote_targets: &[String],
) {
    // 1. Dispatch latency to an idle bridge.
    let echo = json!({ "mode": "echo" });
    let id = server.start_run(noop, &server.admin, echo.clone()).await;
    wait_end(server, &id).await; // warm: module fetched, verified and compiled once
    let mut waits = Vec::with_capacity(DISPATCHES);
    let mut totals = Vec::with_capacity(DISPATCHES);
    for _ in 0..DISPATCHES {
        // The bridge is idle again: its claim is waiting on the server.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let asked = Instant::now();
        let id = server.start_run(noop, &server.admin, echo.clone()).await;
        let run = wait_end(server, &id).await;
        totals.push(asked.elapsed().as_micros() as u64);
        waits.push(
            run["started_ms"].as_u64().unwrap_or(0) - run["created_ms"].as_u64().unwrap_or(0),
        );
    }
    waits.sort_unstable();
    totals.sort_unstable();
    println!(
        "dispatch to an idle remote bridge (queued -> claimed, server clock): p50 {} ms, p99 {} ms ({DISPATCHES} runs)",
        percentile(&waits, 0.5),
        percentile(&waits, 0.99)
    );
    println!(
        "trivial remote run, start request -> end seen by a polling client: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&totals, 0.5) as f64 / 1000.0,
        percentile(&totals, 0.99) as f64 / 1000.0
    );

    // 2. Per-host-call overhead: CALLS execs on one target.
    let mut per_call = Vec::new();
    for (label, process, target) in [
        ("embedded", &local_process, &local[0]),
        ("remote", &remote_process, &remote_targets[0]),
    ] {
        let inputs = json!({ "mode": "exec-repeat", "credential": "pw", "target": target, "command": "true", "n": CALLS });
        let id = server
            .start_run(process, &server.admin, inputs.clone())
            .await;
        wait_end(server, &id).await; // warm the SSH session
        let mut samples = Vec::new();
        for _ in 0..3 {
            let id = server
                .start_run(process, &server.admin, inputs.clone())
                .await;
            let run = wait_end(server, &id).await;
            assert_eq!(run["state"], "succeeded", "{run}");
            samples.push(run_ms(&run));
        }
        samples.sort_unstable();
        let ms = samples[1] as f64 / CALLS as f64;
        println!(
            "{label}: {CALLS} ssh.exec calls in one run: median {} ms, {ms:.2} ms per call",
            samples[1]
        );
        per_call.push(ms);
    }
    println!(
        "remote per-call overhead: {:+.2} ms per ssh.exec ({:.2}x)",
        per_call[1] - per_call[0],
        per_call[1] / per_call[0]
    );

    // 3. The 50-host fan-out.
    let mut fan = Vec::new();
    for (label, process, targets) in [
        ("embedded", &local_process, &local),
        ("remote", &remote_process, &remote_targets),
    ] {
        let inputs = json!({ "mode": "exec-many", "credential": "pw", "targets": targets, "command": "true" });
        let id = server
            .start_run(process, &server.admin, inputs.clone())
            .await;
        wait_end(server, &id).await;
        let mut samples = Vec::new();
        for _ in 0..5 {
            let id = server
                .start_run(process, &server.admin, inputs.clone())
                .await;
            let run = wait_end(server, &id).await;
            assert_eq!(run["state"], "succeeded", "{run}");
            samples.push(run_ms(&run));
        }
        samples.sort_unstable();
        println!("{label}: exec-many over 50 hosts: median {} ms", samples[2]);
        fan.push(samples[2] as f64);
    }
    println!(
        "50-host fan-out, remote / embedded: {:.2}x",
        fan[1] / fan[0].max(1.0)
    );
}

/// 4. 1,000 bridges holding idle claims.
async fn idle_bridges(server: &Server, serve: &Serve) -> anyhow::Result<()> {
    let mut signers = Vec::with_capacity(IDLE_BRIDGES);
    for i in 0..IDLE_BRIDGES {
        let r = server
            .post(
                "/v1/bridges/tokens",
                &server.admin,
                json!({ "zone": format!("idle-{}", i % 10) }),
            )
            .await;
        let token = r.body["token"].as_str().expect("token").to_string();
        let seed: [u8; 32] = rand::random();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let body = json!({ "token": token, "public_key": hex::encode(key.verifying_key().as_bytes()), "name": "sim", "version": "sim" });
        let r = server
            .client
            .post(format!("{}/v1/bridges/enroll", serve.base))
            .json(&body)
            .send()
            .await?;
        let reply: Value = r.json().await?;
        signers.push(RequestSigner::new(
            reply["bridge_id"].as_str().expect("id").to_string(),
            key,
        ));
    }
    let rss_before = rss_kib(serve.child.id());
    let client = ServerTrust::Pinned(serve.pin)
        .client_builder()?
        .pool_max_idle_per_host(IDLE_BRIDGES)
        .build()?;
    let base = serve.base.clone();
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut tasks = Vec::new();
    for signer in signers {
        let (client, base, running) = (client.clone(), base.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let body = serde_json::to_vec(&json!({ "wait_ms": 20000 })).expect("json");
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let mut request = client
                    .post(format!("{base}/v1/bridge/claim"))
                    .body(body.clone());
                for (name, value) in signer.headers("POST", "/v1/bridge/claim", &body) {
                    request = request.header(name, value);
                }
                let _ = request.send().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await; // all claims open and waiting
    let waiting = server.metric("warden_bridge_claims_waiting").await;
    let cpu_before = cpu_ticks(serve.child.id());
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let cpu =
        (cpu_ticks(serve.child.id()) - cpu_before) as f64 / ticks_per_sec() / window.as_secs_f64();
    let rss = rss_kib(serve.child.id());
    if std::env::var_os("WARDEN_BENCH_PAUSE").is_some() {
        eprintln!("server pid {}: inspect it now (60 s)", serve.child.id());
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    println!(
        "{IDLE_BRIDGES} simulated bridges ({waiting} claims held open): server RSS {} MiB (was {} MiB before them), CPU {:.2}% of one core over {} s idle",
        rss / 1024,
        rss_before / 1024,
        cpu * 100.0,
        window.as_secs()
    );
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

fn ticks_per_sec() -> f64 {
    100.0
}
