//! Tasks per language (a bench binary that prints its figures; run as root with
//! `cargo bench -p warden-tests --bench languages`).
//!
//! The same small task — run `uname -a` on a target over SSH and log it, as `warden new`
//! writes it — in Rust, Python (componentize-py) and JavaScript (componentize-js), built
//! with `warden new` + `warden build`, run on a real loopback sshd. For each language:
//! - component size, and compile time (what an upload pays once);
//! - cold: the first instantiate + run after the upload (with a new SSH connection);
//! - warm: median and p90 instantiate + run of later runs (every one a fresh store);
//! - the smallest memory limit the task succeeds under (how much linear memory it needs).
//!
//! The projects are built once into `target/guests/lang/bench/` and reused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use warden_host::audit::AuditLog;
use warden_host::bridge::PreparedTask;
use warden_host::bridge::Runtime;
use warden_host::bridge::{Bridge, RunSpec};
use warden_host::capabilities::grant::Grant;
use warden_host::capabilities::{RunIdentity, Services};
use warden_host::registry::inputs::{Param, Value};
use warden_host::registry::manifest::Manifest;
use warden_host::runtime::engine::EngineConfig;
use warden_host::runtime::limits::RunLimits;
use warden_host::runtime::{RunOutcome, RunReport};
use warden_host::ssh::{SshConfig, SshPool};
use warden_host::store::DataDir;
use warden_host::targets::{Target, TargetStore};
use warden_host::vault::{CredentialKind, Secret, Vault};
use warden_tests::guests;
use warden_tests::sshd::{Sshd, TestUser};

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");
const WARM_RUNS: usize = 20;
/// Memory limits tried, smallest first, to find what each task needs.
const MEMORY_STEPS_MIB: [usize; 10] = [4, 8, 16, 24, 32, 48, 64, 96, 128, 256];

/// Builds the template project for `lang` once; returns its component and manifest.
fn project(lang: &str) -> anyhow::Result<(PathBuf, Manifest)> {
    let root = guests::lang_dir().join("bench");
    let name = format!("bench-{lang}");
    let dir = root.join(&name);
    let wasm = dir.join(format!("{name}.wasm"));
    if !wasm.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&root)?;
        warden(&root, &["new", "--lang", lang, &name])?;
        warden(&dir, &["build"])?;
    }
    let manifest = Manifest::parse(&std::fs::read_to_string(dir.join("warden.toml"))?)?;
    Ok((wasm, manifest))
}

fn warden(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env(
            "CARGO_TARGET_DIR",
            warden_tests::repo_root().join("target/guests"),
        )
        .env("WARDEN_COMPONENTIZE_PY", guests::componentize_py())
        .env("WARDEN_COMPONENTIZE_JS", guests::componentize_js())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "warden {args:?} failed in {}",
        dir.display()
    );
    Ok(())
}

fn median_and_p90(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 9) / 10])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Bench {
    rt: tokio::runtime::Runtime,
    bridge: Bridge,
}

/// A bridge with a new SSH pool, so each language's cold run pays the same SSH handshake.
fn fresh_bridge(runtime: &Arc<Runtime>, services: &Services) -> Bridge {
    Bridge::new(
        runtime.clone(),
        Services {
            ssh: SshPool::new(SshConfig::default()),
            ..services.clone()
        },
    )
}

impl Bench {
    fn run(
        &self,
        task: &Arc<PreparedTask>,
        memory_bytes: usize,
    ) -> anyhow::Result<(Duration, RunReport)> {
        let spec = RunSpec {
            identity: RunIdentity {
                run_id: uuid::Uuid::new_v4().to_string(),
                actor: "bench".into(),
                module: "bench".into(),
            },
            task: task.clone(),
            params: vec![text("credential", "ops"), text("target", "web-1")],
            grant: Grant {
                credentials: ["ops".to_string()].into(),
                targets: ["web-1".to_string()].into(),
                ..Grant::default()
            },
            limits: RunLimits {
                memory_bytes,
                ..RunLimits::default()
            },
            control: warden_host::runtime::RunControl::new(),
        };
        let started = Instant::now();
        let report = self.rt.block_on(self.bridge.execute(spec))?;
        Ok((started.elapsed(), report))
    }
}

fn text(name: &str, value: &str) -> Param {
    Param {
        name: name.into(),
        value: Value::Text(value.into()),
    }
}

fn main() -> anyhow::Result<()> {
    let user = TestUser::create("wlb")?;
    let sshd = Sshd::start("127.0.0.1")?;
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
        "ops",
        &user.name,
        CredentialKind::Password,
        Secret::from_bytes(user.password.as_bytes().to_vec()),
    )?;
    let targets = TargetStore::open(&db)?;
    targets.add(Target {
        name: "web-1".into(),
        address: sshd.ip.clone(),
        port: sshd.port,
        host_key: sshd.host_key_line.clone(),
        zone: "default".into(),
        tags: vec![],
    })?;
    let audit = AuditLog::open(&db, server_key)?;
    let services = Services::local(
        audit.clone(),
        vault,
        targets,
        SshPool::new(SshConfig::default()),
        warden_host::vault::lease::LeaseStore::open(&db, audit)?,
    );
    let mut bench = Bench {
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        bridge: fresh_bridge(&runtime, &services),
    };

    println!(
        "{:<8} {:>9} {:>11} {:>10} {:>11} {:>10} {:>12}",
        "language", "size", "compile", "cold run", "warm med", "warm p90", "min memory"
    );
    for lang in ["rust", "python", "js"] {
        let (wasm, manifest) = project(lang)?;
        bench.bridge = fresh_bridge(&runtime, &services);
        let bytes = std::fs::read(&wasm)?;
        let compiling = Instant::now();
        let task = runtime.prepare(&bytes)?;
        let compile = compiling.elapsed();
        let memory = RunLimits::default()
            .for_module(manifest.limits.memory_bytes(), runtime.max_memory_bytes())
            .memory_bytes;
        let (cold, report) = bench.run(&task, memory)?;
        anyhow::ensure!(
            matches!(report.outcome, RunOutcome::Succeeded { .. }),
            "{lang}: {:?} {}",
            report.outcome,
            report.stderr
        );
        let warm = (0..WARM_RUNS)
            .map(|_| bench.run(&task, memory).map(|(d, _)| d))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (median, p90) = median_and_p90(warm);
        let mut needed = None;
        for mib in MEMORY_STEPS_MIB {
            let (_, report) = bench.run(&task, mib << 20)?;
            if report.outcome.is_success() {
                needed = Some(mib);
                break;
            }
        }
        println!(
            "{:<8} {:>6} MB {:>11} {:>10} {:>11} {:>10} {:>12}",
            lang,
            bytes.len() >> 20,
            ms(compile),
            ms(cold),
            ms(median),
            ms(p90),
            needed.map_or("> 256 MiB".to_string(), |m| format!("<= {m} MiB")),
        );
    }
    Ok(())
}
