//! `warden exec`: run a task locally in the sandbox, print its events and result.
//!
//! Everything is checked before the run starts — the component compiles, the inputs match
//! the manifest, every granted credential and target exists — so a bad invocation changes
//! nothing in the data directory. Exit codes: 0 the task succeeded, 1 it returned an
//! error, 3 the host stopped it (a limit, fail-closed audit), 4 it trapped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::DataArg;
use crate::audit::AuditLog;
use crate::bridge::Runtime;
use crate::bridge::{Bridge, RunSpec};
use crate::capabilities::admin::check_grant_credentials;
use crate::capabilities::argv::Pattern;
use crate::capabilities::grant::Grant;
use crate::capabilities::{RunIdentity, Services};
use crate::registry::inputs::{Param, Value};
use crate::registry::manifest::Manifest;
use crate::runs::dispatch::json_to_toml;
use crate::runtime::engine::EngineConfig;
use crate::runtime::limits::RunLimits;
use crate::runtime::{RunOutcome, RunReport};
use crate::ssh::{SshConfig, SshPool};
use crate::store::DataDir;
use crate::targets::TargetStore;
use crate::vault::Vault;
use crate::vault::lease::LeaseStore;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The task component (`.wasm`).
    task: PathBuf,
    /// The task's manifest; its inputs type and check `--input`. Without one, every input
    /// is passed as text.
    #[arg(long)]
    manifest: Option<PathBuf>,
    #[arg(
        long = "input",
        visible_alias = "param",
        value_name = "KEY=VALUE",
        help = super::inputs::INPUT_HELP
    )]
    params: Vec<String>,
    /// A credential the run may acquire.
    #[arg(long = "allow-credential", value_name = "NAME")]
    credentials: Vec<String>,
    /// A target the run may act on.
    #[arg(long = "allow-target", value_name = "NAME")]
    targets: Vec<String>,
    /// A command pattern the run may execute, as argv words: `*` one word, `**` (last) the
    /// rest, a leading `sudo` for sudo (e.g. `systemctl status *`, `sudo apt-get install **`).
    /// None: no command.
    #[arg(long = "allow-command", value_name = "PATTERN")]
    commands: Vec<String>,
    /// Trusted tasks only: send commands to the target as shell text instead of argv words
    /// (sudo then needs `--allow-command 'sudo **'`).
    #[arg(long = "allow-raw-shell")]
    raw_shell: bool,
    /// A path prefix the run may transfer files under.
    #[arg(long = "allow-path", value_name = "PREFIX")]
    paths: Vec<String>,
    /// A credential the run may rotate (on allowed targets, with an allowed admin credential).
    #[arg(long = "allow-rotate", value_name = "NAME")]
    rotations: Vec<String>,
    #[command(flatten)]
    rotation_policy: super::RotationPolicyArgs,
    /// Wall-time limit in seconds.
    #[arg(long, value_name = "SECONDS")]
    wall_time: Option<u64>,
    /// Linear-memory limit in MiB.
    #[arg(long, value_name = "MIB")]
    memory: Option<usize>,
    /// Print the run report as JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArg,
}

pub async fn run(args: ExecArgs) -> anyhow::Result<i32> {
    let component =
        std::fs::read(&args.task).with_context(|| format!("reading {}", args.task.display()))?;
    let manifest = match &args.manifest {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(Manifest::parse(&text).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    let params = resolve_params(manifest.as_ref(), &args.params)?;
    let rotation_policy = args.rotation_policy.policy();
    rotation_policy
        .check()
        .context("--rotation-min-length/--rotation-classes")?;
    let limits = limits_from(&args, manifest.as_ref());

    let dir = args.data.open()?;
    let runtime = Runtime::new(&EngineConfig::default(), &dir.artifacts())?;
    let task = runtime
        .prepare(&component)
        .with_context(|| args.task.display().to_string())?;
    let DataDir {
        db,
        master_key,
        server_key,
        ..
    } = dir;
    let vault = Vault::open(&db, master_key)?;
    let targets = TargetStore::open(&db)?;
    let mut infos = Vec::new();
    for name in args.credentials.iter().chain(&args.rotations) {
        match vault.info(name)? {
            Some(info) => infos.push(info),
            None => anyhow::bail!("unknown credential '{name}' (see `warden credential list`)"),
        }
    }
    for pattern in &args.commands {
        Pattern::parse(pattern).with_context(|| format!("--allow-command {pattern:?}"))?;
    }
    for name in &args.targets {
        if targets.get(name)?.is_none() {
            anyhow::bail!("unknown target '{name}' (see `warden target list`)");
        }
    }
    let audit = AuditLog::open(&db, server_key)?;
    let leases = LeaseStore::open(&db, audit.clone())?;
    let services = Services::local(
        audit,
        vault,
        targets,
        SshPool::new(SshConfig::default()),
        leases,
    );
    let bridge = Bridge::new(runtime, services);
    let grant = Grant {
        credentials: args.credentials.into_iter().collect(),
        targets: args.targets.into_iter().collect(),
        commands: args.commands,
        raw_shell: args.raw_shell,
        paths: args.paths,
        rotations: args.rotations.into_iter().collect(),
        rotation_policy,
    };
    check_grant_credentials(&grant, &infos).map_err(anyhow::Error::msg)?;
    let module = manifest.as_ref().map_or_else(
        || {
            args.task
                .file_stem()
                .map_or("task".into(), |s| s.to_string_lossy().into_owned())
        },
        |m| format!("{}@{}", m.name, m.version),
    );
    let identity = RunIdentity {
        run_id: uuid::Uuid::new_v4().to_string(),
        actor: local_actor(),
        module,
    };
    let spec = RunSpec {
        identity,
        task: Arc::clone(&task),
        params,
        grant,
        limits,
        control: crate::runtime::RunControl::new(),
    };
    let report = match &manifest {
        Some(m) => bridge.execute_in_scope(spec, &m.requests).await?,
        None => bridge.execute(spec).await?,
    };
    print_report(&report, args.json)?;
    Ok(exit_code(&report.outcome))
}

fn limits_from(args: &ExecArgs, manifest: Option<&Manifest>) -> RunLimits {
    let ask = manifest.and_then(|m| m.limits.memory_bytes());
    let mut limits = RunLimits::default().for_module(ask, EngineConfig::default().max_memory_bytes);
    if let Some(secs) = args.wall_time {
        limits.wall_time = Duration::from_secs(secs);
    }
    if let Some(mib) = args.memory {
        limits.memory_bytes = mib << 20;
    }
    limits
}

/// Turns `--input` pairs into the task's params, typed by the manifest if any (as text
/// without one).
fn resolve_params(manifest: Option<&Manifest>, raw: &[String]) -> anyhow::Result<Vec<Param>> {
    let Some(m) = manifest else {
        let declared = super::inputs::all_text(raw);
        return Ok(super::inputs::parse("input", raw, Some(&declared))?
            .into_values()
            .into_iter()
            .map(|(name, v)| Param {
                name,
                value: Value::Text(v.as_str().unwrap_or_default().into()),
            })
            .collect());
    };
    let given = super::inputs::parse("input", raw, Some(&m.inputs))?
        .into_values()
        .iter()
        .map(|(k, v)| Ok((k.clone(), json_to_toml(k, v)?)))
        .collect::<Result<BTreeMap<_, _>, crate::registry::manifest::ManifestError>>()?;
    Ok(m.resolve_inputs(&given)?)
}

pub(super) fn local_actor() -> String {
    format!(
        "local:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn exit_code(outcome: &RunOutcome) -> i32 {
    match outcome {
        RunOutcome::Succeeded { .. } => 0,
        RunOutcome::Failed { .. } => 1,
        RunOutcome::Stopped { .. } => 3,
        RunOutcome::Trapped { .. } => 4,
    }
}

fn print_report(report: &RunReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for event in &report.events {
        println!(
            "[{:>6} ms] {:<5} {}",
            event.at_ms, event.level, event.message
        );
    }
    for (name, text) in [("stdout", &report.stdout), ("stderr", &report.stderr)] {
        if !text.is_empty() {
            println!("--- {name} ---\n{}", text.trim_end());
        }
    }
    match &report.outcome {
        RunOutcome::Succeeded { result } => println!("result: {result}"),
        RunOutcome::Failed { error } => println!("task failed: {error}"),
        RunOutcome::Stopped { reason } => println!("run stopped: {reason}"),
        RunOutcome::Trapped { error } => println!("task trapped: {error}"),
    }
    println!(
        "({} host calls, {} ms)",
        report.host_calls, report.duration_ms
    );
    Ok(())
}
