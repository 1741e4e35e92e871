//! Tests of the cluster sweep against a real sled database and audit log. (Several servers
//! over one PostgreSQL database are tested end to end in `tests/integration/cluster.rs`.)

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;

use super::*;
use crate::audit::{AuditFilter, AuditLog};
use crate::runs::RunRecord;
use crate::vault::lease::NewLease;

struct Fixture {
    _dir: tempfile::TempDir,
    db: Database,
    audit: AuditLog,
    leases: LeaseStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::sled_db(&sled::open(dir.path()).unwrap());
        let audit = AuditLog::open(&db, SigningKey::from_bytes(&[5; 32])).unwrap();
        let leases = LeaseStore::open(&db, audit.clone()).unwrap();
        Self {
            _dir: dir,
            db,
            audit,
            leases,
        }
    }

    fn runs_of(&self, server: &str) -> RunStore {
        RunStore::open(&self.db, self.audit.clone())
            .unwrap()
            .owned_by(server)
    }

    fn cluster_of(&self, server: &str) -> Cluster {
        Cluster::new(
            &self.db,
            self.runs_of(server),
            self.leases.clone(),
            ClusterConfig::default(),
        )
    }

    fn actions_of(&self, run_id: &str) -> Vec<String> {
        let filter = AuditFilter {
            run_id: Some(run_id.into()),
            ..AuditFilter::default()
        };
        let records = self.audit.query(&filter).unwrap();
        records.into_iter().map(|r| r.entry.action).collect()
    }
}

fn new_run(id: &str) -> RunRecord {
    RunRecord::new_queued(
        id.into(),
        "proc-1".into(),
        "a".repeat(64),
        "alice".into(),
        BTreeMap::new(),
    )
}

/// On sled the database belongs to one process: a run held by any other server id (the
/// previous process) is ended by the first sweep, once, and its leases are revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_servers_running_and_queued_runs_end_once_with_their_leases() {
    let f = Fixture::new();
    let old = f.runs_of("server-old");
    old.create_running(new_run("run-running"), "")
        .await
        .unwrap();
    old.create(new_run("run-queued")).await.unwrap();
    let targets = BTreeSet::from(["web1".to_string()]);
    let lease = f
        .leases
        .issue(NewLease {
            run_id: "run-running",
            actor: "alice",
            credential: "root-pw",
            targets: &targets,
            deadline_ms: u64::MAX,
        })
        .await
        .unwrap();
    assert_eq!(old.held().unwrap().len(), 2);

    let cluster = f.cluster_of("server-new");
    let mut ended = cluster.sweep().await.unwrap();
    ended.sort();
    assert_eq!(ended, ["run-queued", "run-running"]);
    let runs = f.runs_of("server-new");
    let running = runs.get("run-running").unwrap().unwrap();
    assert_eq!(running.state, RunState::Interrupted);
    assert_eq!(running.error.as_deref(), Some(INTERRUPTED_ERROR));
    let queued = runs.get("run-queued").unwrap().unwrap();
    assert_eq!(queued.state, RunState::Cancelled);
    assert!(f.leases.get(&lease.id).unwrap().unwrap().revoked.is_some());
    assert!(
        runs.held().unwrap().is_empty(),
        "ended runs are held by nobody"
    );

    // A second sweep (another server's, or the next tick) finds nothing to end.
    assert!(cluster.sweep().await.unwrap().is_empty());
    let actions = f.actions_of("run-running");
    assert_eq!(
        actions.iter().filter(|a| *a == "run.interrupted").count(),
        1,
        "{actions:?}"
    );
    // The old holder's own late end loses: the run is not ended twice.
    let late = old
        .transition("run-running", RunState::Succeeded, "alice", |_| {})
        .await;
    assert!(
        matches!(late, Err(RunsError::BadTransition { .. })),
        "{late:?}"
    );
}

/// A server's own runs are never swept by itself, and runs in other states are not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_leaves_its_own_runs_and_runs_nobody_holds_alone() {
    let f = Fixture::new();
    let mine = f.runs_of("me");
    mine.create_running(new_run("mine"), "").await.unwrap();
    let mut waiting = new_run("waiting");
    waiting.state = RunState::AwaitingApproval;
    mine.create(waiting).await.unwrap();
    assert_eq!(
        mine.held().unwrap(),
        [("mine".to_string(), "me".to_string())]
    );

    let cluster = f.cluster_of("me");
    assert!(cluster.sweep().await.unwrap().is_empty());
    assert_eq!(mine.get("mine").unwrap().unwrap().state, RunState::Running);
    // The run's end releases it.
    mine.transition("mine", RunState::Succeeded, "alice", |_| {})
        .await
        .unwrap();
    assert!(mine.held().unwrap().is_empty());
}

/// A cancel request for a run this server does not hold stays for its holder; requests for
/// runs nobody holds any more are forgotten by the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_wait_for_their_holder_and_are_forgotten_once_the_run_ends() {
    let f = Fixture::new();
    let holder = f.runs_of("holder");
    holder.create_running(new_run("r1"), "").await.unwrap();
    let other = f.cluster_of("holder");
    other.request_cancel("r1", "bob").await.unwrap();
    let cancels = f.db.table(&RUN_CANCELS);
    assert!(cancels.get("r1").unwrap().is_some());
    holder
        .transition("r1", RunState::Cancelled, "bob", |_| {})
        .await
        .unwrap();
    other.sweep().await.unwrap();
    assert!(cancels.get("r1").unwrap().is_none());
}
