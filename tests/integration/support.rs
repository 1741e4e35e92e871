//! In-process test environment: a data directory, its services and a bridge.

use std::sync::{Arc, OnceLock};

use tempfile::TempDir;
use warden_host::audit::{AuditFilter, AuditLog, AuditRecord};
use warden_host::bridge::PreparedTask;
use warden_host::bridge::Runtime;
use warden_host::bridge::{Bridge, RunSpec};
use warden_host::capabilities::grant::Grant;
use warden_host::capabilities::{RunIdentity, Services};
use warden_host::registry::inputs::{Param, Value};
use warden_host::runtime::RunReport;
use warden_host::runtime::engine::EngineConfig;
use warden_host::runtime::limits::RunLimits;
use warden_host::ssh::{SshConfig, SshPool};
use warden_host::store::DataDir;
use warden_host::targets::TargetStore;
use warden_host::vault::lease::LeaseStore;
use warden_host::vault::{CredentialKind, Secret, Vault};
use warden_tests::guests;

/// One runtime for the whole test process: compiling a component is the slow part.
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<(TempDir, Arc<Runtime>)> = OnceLock::new();
    let (_, rt) = RUNTIME.get_or_init(|| {
        let dir = TempDir::new().expect("temp dir");
        let rt = Runtime::new(&EngineConfig::default(), dir.path()).expect("runtime");
        (dir, rt)
    });
    rt.clone()
}

/// A data directory with its services and a bridge over the shared runtime.
pub struct Env {
    _dir: TempDir,
    pub vault: Vault,
    pub audit: AuditLog,
    pub targets: TargetStore,
    pub bridge: Bridge,
}

impl Env {
    pub fn new() -> Env {
        let dir = TempDir::new().expect("temp dir");
        let data = DataDir::init(&dir.path().join("data")).expect("init");
        let vault = Vault::open(&data.db, data.master_key).expect("vault");
        let audit = AuditLog::open(&data.db, data.server_key).expect("audit");
        let targets = TargetStore::open(&data.db).expect("targets");
        let leases = LeaseStore::open(&data.db, audit.clone()).expect("leases");
        let services = Services::local(
            audit.clone(),
            vault.clone(),
            targets.clone(),
            SshPool::new(SshConfig::default()),
            leases.clone(),
        );
        let bridge = Bridge::new(runtime(), services);
        Env {
            _dir: dir,
            vault,
            audit,
            targets,
            bridge,
        }
    }

    /// The data directory (sled files and keys) behind this environment.
    pub fn data_path(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    pub fn add_password(&self, name: &str, username: &str, secret: &str) {
        self.vault
            .add(
                name,
                username,
                CredentialKind::Password,
                Secret::from_bytes(secret.as_bytes().to_vec()),
            )
            .expect("add credential");
    }

    /// Adds `name` as an admin password credential: the kind sudo may type.
    pub fn add_admin_password(&self, name: &str, username: &str, secret: &str) {
        let new = warden_host::vault::NewCredential {
            name,
            username,
            kind: CredentialKind::Password,
            admin: true,
        };
        let secret = Secret::from_bytes(secret.as_bytes().to_vec());
        self.vault
            .add_credential(new, secret, "test", "admin credential")
            .expect("add admin credential");
    }

    pub fn prepare(&self, component: &str) -> Arc<PreparedTask> {
        let bytes = std::fs::read(guests::component(component)).expect("component built");
        self.bridge.runtime().prepare(&bytes).expect("prepare")
    }

    pub async fn run(
        &self,
        task: &Arc<PreparedTask>,
        params: Vec<Param>,
        grant: Grant,
        limits: RunLimits,
    ) -> (String, RunReport) {
        self.run_with_policy(task, params, grant, limits, None)
            .await
    }

    /// [`Env::run`] of a guest example the way its signed manifest scopes it: every host call
    /// must also fit the manifest's `[requests]` (commands, paths, target tags).
    pub async fn run_example(
        &self,
        example: &str,
        params: Vec<Param>,
        grant: Grant,
        limits: RunLimits,
    ) -> (String, RunReport) {
        let task = self.prepare(example);
        let manifest = std::fs::read_to_string(guests::manifest(example)).expect("manifest");
        let manifest =
            warden_host::registry::manifest::Manifest::parse(&manifest).expect("manifest parses");
        let spec = run_spec(example, task, params, grant, limits);
        let run_id = spec.identity.run_id.clone();
        let report = self
            .bridge
            .execute_in_scope(spec, &manifest.requests)
            .await
            .expect("run executes");
        (run_id, report)
    }

    /// [`Env::run`] with the caller holding the run's control (to cancel it mid-run).
    pub async fn run_controlled(
        &self,
        task: &Arc<PreparedTask>,
        params: Vec<Param>,
        grant: Grant,
        limits: RunLimits,
        control: Arc<warden_host::runtime::RunControl>,
        run_id: &str,
    ) -> RunReport {
        let mut spec = run_spec("probe", task.clone(), params, grant, limits);
        spec.identity.run_id = run_id.into();
        spec.control = control;
        self.bridge.execute(spec).await.expect("run executes")
    }

    /// A one-target environment: an sshd on loopback registered as target `t0`, and a fresh
    /// account on it whose password is credential `pw`.
    pub fn with_target() -> (Env, warden_tests::sshd::Sshd, warden_tests::sshd::TestUser) {
        let (env, mut sshds, user) = Env::with_targets(1);
        let sshd = sshds.pop().expect("one sshd");
        (env, sshd, user)
    }

    /// [`Env::with_target`] with `n` targets `t0`, `t1`, … (one sshd each, one account on
    /// all of them whose password is credential `pw`).
    pub fn with_targets(
        n: usize,
    ) -> (
        Env,
        Vec<warden_tests::sshd::Sshd>,
        warden_tests::sshd::TestUser,
    ) {
        let env = Env::new();
        let sshds = warden_tests::sshd::Sshd::fleet(n).expect("sshd fleet");
        let user = warden_tests::sshd::TestUser::create("wdn").expect("test user");
        for (i, sshd) in sshds.iter().enumerate() {
            env.targets
                .add(target_of(&format!("t{i}"), sshd))
                .expect("add target");
        }
        env.add_password("pw", &user.name, &user.password);
        (env, sshds, user)
    }

    /// [`Env::run`] the way the server runs processes: every host call is also checked
    /// against the interfaces the manifest requested and the Cedar policies.
    pub async fn run_with_policy(
        &self,
        task: &Arc<PreparedTask>,
        params: Vec<Param>,
        grant: Grant,
        limits: RunLimits,
        policy: Option<warden_host::capabilities::HostCallPolicy>,
    ) -> (String, RunReport) {
        let spec = run_spec("probe", task.clone(), params, grant, limits);
        let run_id = spec.identity.run_id.clone();
        let report = match policy {
            Some(policy) => self.bridge.execute_with_policy(spec, policy).await,
            None => self.bridge.execute(spec).await,
        };
        (run_id, report.expect("run executes"))
    }

    /// The audit records that say how each of one run's host calls ended — one per call:
    /// minus its `run.start` and `run.end`, minus `lease.revoked` (the host revokes a run's
    /// leases; no guest call does), and minus the intent records written before a call acts
    /// (`tests/integration/spine.rs` checks those).
    pub fn host_call_records(&self, run_id: &str) -> Vec<AuditRecord> {
        let filter = AuditFilter {
            run_id: Some(run_id.into()),
            ..AuditFilter::default()
        };
        let records = self.audit.query(&filter).expect("query");
        records
            .into_iter()
            .filter(|r| !r.entry.action.starts_with("run."))
            .filter(|r| r.entry.action != warden_host::vault::lease::REVOKED_ACTION)
            .filter(|r| !is_intent(r))
            .collect()
    }
}

/// A run of `task` as module `module` by actor `test`, under a fresh run id and control.
pub fn run_spec(
    module: &str,
    task: Arc<PreparedTask>,
    params: Vec<Param>,
    grant: Grant,
    limits: RunLimits,
) -> RunSpec {
    RunSpec {
        identity: RunIdentity {
            run_id: uuid::Uuid::new_v4().to_string(),
            actor: "test".into(),
            module: module.into(),
        },
        task,
        params,
        grant,
        limits,
        control: warden_host::runtime::RunControl::new(),
    }
}

/// True for the record a host call writes before it acts (its outcome record follows).
pub fn is_intent(record: &AuditRecord) -> bool {
    record.entry.outcome == warden_host::capabilities::INTENT_OUTCOME
}

/// The detail of an outcome record without the reference to its intent record.
pub fn detail_of(record: &AuditRecord) -> &str {
    let detail = record.entry.detail.as_deref().unwrap_or_default();
    match detail.rfind("; intent #") {
        Some(at) => &detail[..at],
        None => detail.strip_prefix("intent #").map_or(detail, |_| ""),
    }
}

/// The target record for `sshd`, pinned to its host key.
pub fn target_of(name: &str, sshd: &warden_tests::sshd::Sshd) -> warden_host::targets::Target {
    warden_host::targets::Target {
        name: name.into(),
        address: sshd.ip.clone(),
        port: sshd.port,
        host_key: sshd.host_key_line.clone(),
        zone: "default".into(),
        tags: vec![],
    }
}

/// `name=text` params.
pub fn text_params(pairs: &[(&str, &str)]) -> Vec<Param> {
    pairs
        .iter()
        .map(|(k, v)| Param {
            name: k.to_string(),
            value: Value::Text(v.to_string()),
        })
        .collect()
}

/// A grant of credentials (and targets) by name.
pub fn grant(credentials: &[&str], targets: &[&str]) -> Grant {
    Grant {
        credentials: credentials.iter().map(|s| s.to_string()).collect(),
        targets: targets.iter().map(|s| s.to_string()).collect(),
        // Any shell text, with or without sudo: these tests exercise the SSH layer, not the
        // argv grants (`grant.rs` does).
        commands: vec!["sudo **".into()],
        raw_shell: true,
        paths: vec!["/tmp".into()],
        ..Default::default()
    }
}
