//! Notify benchmark (a bench binary that prints its figures; run with
//! `cargo bench -p warden-tests --bench notify`):
//!
//! - audited host calls per second (8 concurrent probe runs, 2,000 calls each, every record
//!   durable) with no sink, and with a syslog sink and a webhook sink attached (both
//!   delivering every record: a TCP collector that reads and discards, an HTTP receiver that
//!   answers 200), alternated three times, medians;
//! - end-to-end latency from the start of a run whose host call is denied to the arrival of
//!   that denial's record at the webhook receiver (p50, p99 over 50 runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use warden_host::audit::AuditLog;
use warden_host::bridge::{Bridge, RunSpec, Runtime};
use warden_host::capabilities::grant::Grant;
use warden_host::capabilities::{RunIdentity, Services};
use warden_host::notify::config::{
    AllowList, Events, From, SinkConfig, SinkKind, SyslogConfig, SyslogFormat, WebhookConfig,
};
use warden_host::notify::{Notifier, NotifyStore};
use warden_host::registry::inputs::{Param, Value};
use warden_host::runtime::engine::EngineConfig;
use warden_host::runtime::limits::RunLimits;
use warden_host::ssh::{SshConfig, SshPool};
use warden_host::store::DataDir;
use warden_host::targets::TargetStore;
use warden_host::vault::{CredentialKind, Secret, Vault};
use warden_tests::guests;

const RUNS: usize = 8;
const CALLS: i64 = 2_000;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let data = DataDir::init(&dir.path().join("data"))?;
    let runtime = Runtime::new(&EngineConfig::default(), &data.artifacts())?;
    let audit = AuditLog::open(&data.db, data.server_key.clone())?;
    let vault = Vault::open(&data.db, data.master_key)?;
    let services = Services::local(
        audit.clone(),
        vault.clone(),
        TargetStore::open(&data.db)?,
        SshPool::new(SshConfig::default()),
        warden_host::vault::lease::LeaseStore::open(&data.db, audit.clone())?,
    );
    let probe = runtime.prepare(&std::fs::read(guests::component("probe"))?)?;
    let bridge = Bridge::new(Arc::clone(&runtime), services);
    vault.add(
        "bench-hmac",
        "webhook",
        CredentialKind::Password,
        Secret::from_bytes(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec()),
    )?;
    let (arrivals, mut arrived) = mpsc::unbounded_channel();
    let hook_port = http_receiver(arrivals).await?;
    let syslog_port = tcp_discard().await?;
    let store = NotifyStore::new(&data.db, vault.clone(), audit.clone());
    let notifier = Notifier::new(store.clone());
    store
        .set_allow_list(
            "bench",
            AllowList {
                entries: vec![format!("127.0.0.1:{hook_port}")],
            },
        )
        .await?;
    let sinks = [
        SinkConfig {
            name: "hook".into(),
            kind: SinkKind::Webhook(WebhookConfig {
                url: format!("http://127.0.0.1:{hook_port}/"),
                secret_credential: Some("bench-hmac".into()),
                signing_credential: None,
                timeout_ms: 5_000,
                retry_ms: vec![100],
                ca_file: None,
                server_fingerprint: None,
                batch: 64,
            }),
            events: Events::All,
            from: From::Now,
            enabled: true,
            disabled_reason: None,
        },
        SinkConfig {
            name: "syslog".into(),
            kind: SinkKind::Syslog(SyslogConfig {
                address: format!("127.0.0.1:{syslog_port}"),
                tls: false,
                ca_file: None,
                server_name: None,
                client_cert_file: None,
                client_key_credential: None,
                format: SyslogFormat::Json,
                hostname: "bench".into(),
            }),
            events: Events::All,
            from: From::Now,
            enabled: true,
            disabled_reason: None,
        },
    ];
    for sink in sinks {
        store.add_sink("bench", sink).await?;
    }

    let params = vec![text("mode", "calls"), int("n", CALLS)];
    let configs: [(&str, &[&str]); 4] = [
        ("no sink", &[]),
        ("syslog sink", &["syslog"]),
        ("webhook sink", &["hook"]),
        ("syslog + webhook sinks", &["syslog", "hook"]),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for _ in 0..3 {
        for (i, (_, on)) in configs.iter().enumerate() {
            for sink in ["syslog", "hook"] {
                store
                    .set_enabled("bench", sink, on.contains(&sink), None)
                    .await?;
            }
            notifier.reload()?;
            rates[i].push(flood(&bridge, &probe, params.clone(), Grant::default()).await);
            drain(&store, &audit, on).await;
        }
    }
    let base = median(&mut rates[0]);
    for (i, (label, _)) in configs.iter().enumerate() {
        let rate = median(&mut rates[i]);
        println!(
            "audited host calls/s, {RUNS} concurrent runs, {label:<24} {rate:>8.0} calls/s ({:>5.1}% of no sink; runs {:.0?})",
            100.0 * rate / base,
            rates[i]
        );
    }
    for sink in ["syslog", "hook"] {
        store.set_enabled("bench", sink, true, None).await?;
    }
    notifier.reload()?;

    // Latency: a run whose one host call is denied, to that record at the webhook.
    let denied = vec![
        text("mode", "acquire-repeat"),
        text("credential", "not-granted"),
        int("n", 1),
    ];
    while arrived.try_recv().is_ok() {}
    let mut samples = Vec::new();
    for i in 0..50 {
        let run_id = format!("lat-{i}");
        let started = Instant::now();
        run(&bridge, &probe, &run_id, denied.clone(), Grant::default()).await;
        let needle = format!("\"run_id\":\"{run_id}\"");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, arrived.recv()).await {
                Ok(Some((at, body)))
                    if body.contains(&needle) && body.contains("\"verdict\":\"denied\"") =>
                {
                    samples.push(at.duration_since(started));
                    break;
                }
                Ok(Some(_)) => {}
                _ => anyhow::bail!("the denial of {run_id} never arrived"),
            }
        }
    }
    samples.sort();
    println!(
        "denied call -> webhook arrival: p50 {:?}  p99 {:?}  over {} runs (from the run's start)",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples.len()
    );
    notifier.stop();
    Ok(())
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Waits until the sinks `on` have taken every committed record (cursors are stored when a
/// sink is idle).
async fn drain(store: &NotifyStore, audit: &AuditLog, on: &[&str]) {
    let started = Instant::now();
    loop {
        let head = *audit.subscribe().borrow();
        let behind = on
            .iter()
            .any(|s| store.cursor(s).ok().flatten().unwrap_or(0) + 2 < head);
        if !behind || started.elapsed() > Duration::from_secs(120) {
            println!(
                "  sinks caught up {:.2} s after the flood",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

async fn run(
    bridge: &Bridge,
    probe: &Arc<warden_host::bridge::PreparedTask>,
    run_id: &str,
    params: Vec<Param>,
    grant: Grant,
) -> u64 {
    let spec = RunSpec {
        identity: RunIdentity {
            run_id: run_id.into(),
            actor: "bench".into(),
            module: "probe".into(),
        },
        task: probe.clone(),
        params,
        grant,
        limits: RunLimits::default(),
        control: warden_host::runtime::RunControl::new(),
    };
    bridge
        .execute(spec)
        .await
        .map(|r| r.host_calls)
        .unwrap_or(0)
}

/// Host calls per second of `RUNS` concurrent runs.
async fn flood(
    bridge: &Bridge,
    probe: &Arc<warden_host::bridge::PreparedTask>,
    params: Vec<Param>,
    grant: Grant,
) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..RUNS {
        let (bridge, probe, params, grant) =
            (bridge.clone(), probe.clone(), params.clone(), grant.clone());
        let id = format!("bench-{}", uuid::Uuid::new_v4());
        tasks.push(tokio::spawn(async move {
            run(&bridge, &probe, &id, params, grant).await
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// A syslog collector that reads and discards.
async fn tcp_discard() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    Ok(port)
}

/// A minimal HTTP/1.1 keep-alive receiver answering 200; reports each body's arrival.
async fn http_receiver(arrivals: mpsc::UnboundedSender<(Instant, String)>) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let arrivals = arrivals.clone();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let _ = arrivals
                        .send((Instant::now(), String::from_utf8_lossy(&body).into_owned()));
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.get_mut().write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}
