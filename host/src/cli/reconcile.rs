//! `warden credential reconcile`: resolves a rotation that crashed between "new secret set on
//! the target" and "promoted in the vault". Offline, on the data directory (stop the server
//! first: sled allows one process).
//!
//! It logs in to the target with each pending version and with the current one, promotes the
//! pending version that works (or keeps the current one), marks the others failed, and for a
//! key credential removes the public keys that should no longer open the account (acting as
//! the admin credential under sudo; `--admin` must name an admin credential, as a rotation's
//! must). It calls the rotation engine ([`crate::rotation`]) directly. Secrets are used only for SSH authentication and sudo;
//! nothing is printed but version numbers. One `credential.reconcile` audit record is written
//! whatever the outcome, after the vault-step records.

use std::time::Instant;

use clap::Args;

use super::DataArg;
use crate::audit::{AuditEntry, AuditLog, Decision};
use crate::redact::Redactor;
use crate::rotation::{Actor, Backends, Reconciled, Rotator};
use crate::ssh::{SshConfig, SshPool};
use crate::store::DataDir;
use crate::targets::TargetStore;
use crate::vault::Vault;

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// The credential whose rotation to resolve.
    name: String,
    /// The target the rotation was setting the secret on.
    #[arg(long)]
    target: String,
    /// The admin credential (sudo on the target) used to remove stale public keys; must be
    /// an admin credential.
    #[arg(long)]
    admin: String,
    #[command(flatten)]
    data: DataArg,
}

/// Exit codes: 0 resolved (or nothing pending), 1 nothing logs in or a step failed.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<i32> {
    let DataDir {
        db,
        master_key,
        server_key,
        ..
    } = args.data.open()?;
    let audit = AuditLog::open(&db, server_key)?;
    let services = Backends {
        audit,
        vault: Vault::open(&db, master_key)?,
        targets: TargetStore::open(&db)?,
        ssh: SshPool::new(SshConfig::default()),
    };
    let actor = Actor {
        name: super::exec::local_actor(),
        run_id: None,
    };
    let started = Instant::now();
    let redactor = Redactor::new();
    let rotator = Rotator::new(services.clone(), redactor.clone(), actor.clone());
    let result = rotator
        .reconcile(&args.name, &args.target, &args.admin)
        .await;
    let (outcome, detail) = match &result {
        Ok(done) => ("ok".to_string(), summary(done)),
        Err(e) => (
            redactor.redact_str(&e.describe()),
            "nothing changed in the vault".to_string(),
        ),
    };
    services
        .audit
        .append(AuditEntry {
            run_id: None,
            actor: actor.name,
            action: "credential.reconcile".into(),
            target: Some(args.target.clone()),
            credential: Some(args.name.clone()),
            decision: Decision::Allowed,
            outcome: outcome.clone(),
            duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            detail: Some(format!("admin credential {}; {detail}", args.admin)),
        })
        .await?;
    services.ssh.close_all().await;
    match result {
        Ok(_) => {
            println!("{}: {detail}", args.name);
            Ok(0)
        }
        Err(_) => {
            eprintln!("{}: reconcile failed: {outcome}", args.name);
            Ok(1)
        }
    }
}

fn summary(done: &Reconciled) -> String {
    let failed = |f: &[u32]| match f {
        [] => String::new(),
        f => format!("; marked failed: {f:?}"),
    };
    match done {
        Reconciled::NothingPending { current } => match current {
            Some(v) => format!("nothing pending; version {v} is current"),
            None => "nothing pending".to_string(),
        },
        Reconciled::PromotedPending { version, failed: f } => {
            format!(
                "promoted pending version {version} (it logs in){}",
                failed(f)
            )
        }
        Reconciled::KeptCurrent { version, failed: f } => {
            format!("kept version {version} current (it logs in){}", failed(f))
        }
    }
}
