//! Fleet benchmark (a bench binary that prints its figures; run as root with
//! `cargo bench -p warden-tests --bench fleet`; `WARDEN_FLEET=N` sets the fleet size,
//! default 50).
//!
//! Side by side, on one fleet of loopback OpenSSH `sshd` hosts:
//! - one command on every host through Warden (guest → `ssh.exec-many` → audit), with
//!   fresh connections and with pooled ones, host keys always checked;
//! - the same with N OpenSSH clients in parallel (fresh connections, host keys checked
//!   against a known_hosts file);
//! - per-command latency on one reused connection: Warden vs OpenSSH ControlMaster.
//!
//! Every Warden call is audited durably while it is measured.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use warden_host::audit::AuditLog;
use warden_host::bridge::Runtime;
use warden_host::bridge::{Bridge, RunSpec};
use warden_host::capabilities::grant::Grant;
use warden_host::capabilities::{RunIdentity, Services};
use warden_host::registry::inputs::{Param, Value};
use warden_host::runtime::RunOutcome;
use warden_host::runtime::engine::EngineConfig;
use warden_host::runtime::limits::RunLimits;
use warden_host::ssh::{SshConfig, SshPool};
use warden_host::store::DataDir;
use warden_host::targets::{Target, TargetStore};
use warden_host::vault::{CredentialKind, Secret, Vault};
use warden_tests::guests;
use warden_tests::sshd::{Sshd, TestUser};

const ROUNDS: usize = 5;
const LATENCY_CALLS: usize = 200;

fn text(name: &str, value: &str) -> Param {
    Param {
        name: name.into(),
        value: Value::Text(value.into()),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let size: usize = std::env::var("WARDEN_FLEET")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let user = TestUser::create("wdb")?;
    let fleet = Sshd::fleet(size)?;
    let dir = TempDir::new()?;
    let data = DataDir::init(&dir.path().join("data"))?;
    let runtime = Runtime::new(&EngineConfig::default(), &data.artifacts())?;
    let DataDir {
        db,
        master_key,
        server_key,
        ..
    } = data;
    let vault = Vault::open(&db, master_key)?;
    vault.add(
        "key",
        &user.name,
        CredentialKind::SshKey,
        Secret::from_bytes(user.private_key_openssh.as_bytes().to_vec()),
    )?;
    let targets = TargetStore::open(&db)?;
    let names: Vec<String> = (0..size).map(|i| format!("h{i}")).collect();
    for (name, sshd) in names.iter().zip(&fleet) {
        targets.add(Target {
            name: name.clone(),
            address: sshd.ip.clone(),
            port: sshd.port,
            host_key: sshd.host_key_line.clone(),
            zone: "default".into(),
            tags: vec![],
        })?;
    }
    let audit = AuditLog::open(&db, server_key)?;
    let leases = warden_host::vault::lease::LeaseStore::open(&db, audit.clone())?;
    let probe = runtime.prepare(&std::fs::read(guests::component("probe"))?)?;
    let grant = Grant {
        credentials: ["key".to_string()].into(),
        targets: names.iter().cloned().collect(),
        // The benchmark's one command, as an argv grant (split, matched and quoted per call).
        commands: vec!["true".into()],
        paths: vec![],
        ..Default::default()
    };
    let config = SshConfig {
        max_concurrency: size.max(1),
        ..SshConfig::default()
    };
    let bridge_with = |pool: SshPool| {
        Bridge::new(
            runtime.clone(),
            Services::local(
                audit.clone(),
                vault.clone(),
                targets.clone(),
                pool,
                leases.clone(),
            ),
        )
    };
    let fan_out = |bridge: &Bridge| -> anyhow::Result<Duration> {
        let params = vec![
            text("mode", "exec-many"),
            text("credential", "key"),
            Param {
                name: "targets".into(),
                value: Value::TextList(names.clone()),
            },
            text("command", "true"),
        ];
        let identity = RunIdentity {
            run_id: uuid::Uuid::new_v4().to_string(),
            actor: "bench".into(),
            module: "probe".into(),
        };
        let spec = RunSpec {
            identity,
            task: probe.clone(),
            params,
            grant: grant.clone(),
            limits: RunLimits::default(),
            control: warden_host::runtime::RunControl::new(),
        };
        let started = Instant::now();
        let report = rt.block_on(bridge.execute(spec))?;
        let elapsed = started.elapsed();
        let RunOutcome::Succeeded { result } = &report.outcome else {
            anyhow::bail!("run failed: {:?}", report.outcome)
        };
        let ok = serde_json::from_str::<serde_json::Value>(result)?
            .as_array()
            .map_or(0, |a| a.iter().filter(|r| r["exit"] == 0).count());
        anyhow::ensure!(ok == size, "only {ok}/{size} hosts answered: {result}");
        Ok(elapsed)
    };

    // Warden, fresh connections: a new pool for every round.
    let fresh = (0..ROUNDS)
        .map(|_| fan_out(&bridge_with(SshPool::new(config.clone()))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Warden, pooled: one pool, warmed by a first round.
    let pooled_bridge = bridge_with(SshPool::new(config.clone()));
    fan_out(&pooled_bridge)?;
    let pooled = (0..ROUNDS)
        .map(|_| fan_out(&pooled_bridge))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // OpenSSH, N clients in parallel, host keys checked against known_hosts.
    let key_path = dir.path().join("id_ed25519");
    write_private(&key_path, user.private_key_openssh.as_bytes())?;
    let known_hosts = dir.path().join("known_hosts");
    let mut kh = std::fs::File::create(&known_hosts)?;
    for sshd in &fleet {
        writeln!(kh, "[{}]:{} {}", sshd.ip, sshd.port, sshd.host_key_line)?;
    }
    drop(kh);
    let ssh_args = |sshd: &Sshd| -> Vec<String> {
        vec![
            "-i".into(),
            key_path.display().to_string(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", known_hosts.display()),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-p".into(),
            sshd.port.to_string(),
            format!("{}@{}", user.name, sshd.ip),
        ]
    };
    let mut openssh = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let children = fleet
            .iter()
            .map(|s| {
                Command::new("ssh")
                    .args(ssh_args(s))
                    .arg("true")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut ok = 0;
        for mut c in children {
            ok += usize::from(c.wait()?.success());
        }
        openssh.push(started.elapsed());
        anyhow::ensure!(ok == size, "OpenSSH: only {ok}/{size} hosts answered");
    }

    println!(
        "fleet of {size} loopback sshd hosts, one command (`true`) on every host, median of {ROUNDS} rounds:"
    );
    println!(
        "  Warden, fresh connections (host keys pinned):   {:>8.1} ms",
        ms(median(fresh))
    );
    println!(
        "  Warden, pooled connections:                     {:>8.1} ms",
        ms(median(pooled))
    );
    println!(
        "  OpenSSH, {size} clients in parallel (known_hosts): {:>8.1} ms",
        ms(median(openssh))
    );

    // Per-command latency on one reused connection.
    let target = &fleet[0];
    let repeat = |n: usize| -> anyhow::Result<Duration> {
        let params = vec![
            text("mode", "exec-repeat"),
            text("credential", "key"),
            text("target", "h0"),
            text("command", "true"),
            Param {
                name: "n".into(),
                value: Value::Integer(n as i64),
            },
        ];
        let identity = RunIdentity {
            run_id: uuid::Uuid::new_v4().to_string(),
            actor: "bench".into(),
            module: "probe".into(),
        };
        let spec = RunSpec {
            identity,
            task: probe.clone(),
            params,
            grant: grant.clone(),
            limits: RunLimits::default(),
            control: warden_host::runtime::RunControl::new(),
        };
        let started = Instant::now();
        let report = rt.block_on(pooled_bridge.execute(spec))?;
        anyhow::ensure!(report.outcome.is_success(), "{:?}", report.outcome);
        Ok(started.elapsed())
    };
    repeat(5)?;
    let warden_per_call = repeat(LATENCY_CALLS)? / LATENCY_CALLS as u32;

    let socket = dir.path().join("cm.sock");
    let mut master = Command::new("ssh")
        .args(ssh_args(target))
        .args(["-M", "-S"])
        .arg(&socket)
        .args(["-o", "ControlPersist=no", "-N"])
        .spawn()?;
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let control = |n: usize| -> anyhow::Result<Duration> {
        let started = Instant::now();
        for _ in 0..n {
            let status = Command::new("ssh")
                .args(ssh_args(target))
                .arg("-S")
                .arg(&socket)
                .arg("true")
                .status()?;
            anyhow::ensure!(status.success(), "ControlMaster command failed");
        }
        Ok(started.elapsed())
    };
    control(5)?;
    let control_per_call = control(LATENCY_CALLS)? / LATENCY_CALLS as u32;
    master.kill().ok();
    master.wait().ok();

    println!("per-command latency on a reused connection, {LATENCY_CALLS} sequential commands:");
    println!(
        "  Warden (pooled, audited):  {:>7.2} ms",
        ms(warden_per_call)
    );
    println!(
        "  OpenSSH ControlMaster:     {:>7.2} ms",
        ms(control_per_call)
    );
    println!(
        "  ratio Warden/ControlMaster: {:.2}",
        warden_per_call.as_secs_f64() / control_per_call.as_secs_f64()
    );
    let verified = audit.verify()?;
    println!("audit chain verifies: {} records", verified.count);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
