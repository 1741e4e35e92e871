//! Tests of the run store against real sled databases and a real audit log.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::audit::{AuditFilter, AuditRecord, verify};

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

struct Fixture {
    dir: TempDir,
    db: sled::Db,
    audit: AuditLog,
    store: RunStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        Self::open(dir, db)
    }

    fn open(dir: TempDir, db: sled::Db) -> Self {
        let audit = AuditLog::open(&crate::store::sled_db(&db), signing_key()).unwrap();
        let store = RunStore::open(&crate::store::sled_db(&db), audit.clone()).unwrap();
        Self {
            dir,
            db,
            audit,
            store,
        }
    }

    /// Simulates a restart: closes everything and opens the database again from disk.
    fn restart(self) -> Self {
        let Fixture {
            dir,
            db,
            audit,
            store,
        } = self;
        drop(store);
        drop(audit);
        drop(db);
        // The audit writer thread releases sled's file lock shortly after its last handle.
        let deadline = Instant::now() + Duration::from_secs(10);
        let db = loop {
            match sled::open(dir.path()) {
                Ok(db) => break db,
                Err(e) if Instant::now() > deadline => panic!("cannot reopen: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        Self::open(dir, db)
    }

    fn audit_of(&self, run_id: &str) -> Vec<AuditRecord> {
        let filter = AuditFilter {
            run_id: Some(run_id.into()),
            ..AuditFilter::default()
        };
        self.audit.query(&filter).unwrap()
    }

    fn actions_of(&self, run_id: &str) -> Vec<String> {
        self.audit_of(run_id)
            .into_iter()
            .map(|r| r.entry.action)
            .collect()
    }

    fn audit_count(&self) -> usize {
        self.audit.query(&AuditFilter::default()).unwrap().len()
    }

    fn raw(&self, id: &str) -> Option<sled::IVec> {
        self.db.open_tree(RUNS.name).unwrap().get(id).unwrap()
    }

    fn assert_chain_verifies(&self) {
        verify(
            &crate::store::sled_db(&self.db),
            &signing_key().verifying_key(),
        )
        .unwrap();
    }

    /// A run created in `start` (queued or awaiting-approval) and driven to `state`.
    async fn run_in(&self, id: &str, state: RunState) -> RunRecord {
        use RunState::*;
        let start = if state == AwaitingApproval {
            AwaitingApproval
        } else {
            Queued
        };
        let mut run = self
            .store
            .create(record(id, "proc-1", "alice", start))
            .await
            .unwrap();
        let path: &[RunState] = match state {
            AwaitingApproval | Queued => &[],
            Denied => &[Denied],
            Running => &[Running],
            terminal => &[Running, terminal],
        };
        for next in path {
            run = self
                .store
                .transition(id, *next, "bridge", |_| {})
                .await
                .unwrap();
        }
        assert_eq!(run.state, state);
        run
    }
}

fn record(id: &str, process_id: &str, actor: &str, state: RunState) -> RunRecord {
    let inputs = [("account".to_string(), json!("root"))].into();
    let mut run = RunRecord::new_queued(
        id.into(),
        process_id.into(),
        "cd".repeat(32),
        actor.into(),
        inputs,
    );
    run.state = state;
    run
}

fn at(id: &str, process_id: &str, actor: &str, created_ms: u64) -> RunRecord {
    RunRecord {
        created_ms,
        ..record(id, process_id, actor, RunState::Queued)
    }
}

fn invalid_field(err: RunsError) -> &'static str {
    match err {
        RunsError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn creates_a_queued_run_audited_as_run_queued() {
    let f = Fixture::new();
    let run = f
        .store
        .create(record("r1", "proc-1", "alice", RunState::Queued))
        .await
        .unwrap();
    assert_eq!(f.store.get("r1").unwrap(), Some(run));
    let audit = f.audit_of("r1");
    assert_eq!(audit.len(), 1);
    let entry = &audit[0].entry;
    assert_eq!(
        (entry.action.as_str(), entry.actor.as_str()),
        ("run.queued", "alice")
    );
    assert_eq!(entry.outcome, "queued");
    assert!(entry.detail.as_deref().unwrap_or("").contains("proc-1"));
    assert_eq!(f.store.get("missing").unwrap(), None);
}

/// A run that starts at once: both transitions audited in order, stored as running, and
/// both survive a restart together.
#[tokio::test]
async fn create_running_records_queued_then_running_in_one_commit() {
    let f = Fixture::new();
    let run = f
        .store
        .create_running(
            record("r1", "proc-1", "alice", RunState::Queued),
            "module m@1",
        )
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Running);
    assert!(run.started_ms.is_some());
    assert_eq!(f.store.get("r1").unwrap(), Some(run.clone()));
    let audit = f.audit_of("r1");
    let actions: Vec<_> = audit.iter().map(|r| r.entry.action.as_str()).collect();
    assert_eq!(actions, ["run.queued", "run.running"]);
    assert_eq!(audit[1].seq, audit[0].seq + 1, "records are consecutive");
    assert!(
        audit[1]
            .entry
            .detail
            .as_deref()
            .unwrap_or("")
            .ends_with("; module m@1")
    );
    let f = f.restart();
    assert_eq!(f.store.get("r1").unwrap(), Some(run));
    assert_eq!(f.actions_of("r1"), ["run.queued", "run.running"]);
    verify(
        &crate::store::sled_db(&f.db),
        &signing_key().verifying_key(),
    )
    .unwrap();
}

#[tokio::test]
async fn create_running_refuses_taken_ids_and_non_queued_runs_auditing_nothing() {
    let f = Fixture::new();
    f.store
        .create(record("r1", "proc-1", "alice", RunState::Queued))
        .await
        .unwrap();
    let audited = f.audit_count();
    let err = f
        .store
        .create_running(record("r1", "proc-1", "bob", RunState::Queued), "")
        .await
        .unwrap_err();
    assert!(matches!(err, RunsError::RunExists(_)), "{err:?}");
    let err = f
        .store
        .create_running(
            record("r2", "proc-1", "bob", RunState::AwaitingApproval),
            "",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RunsError::Invalid { .. }), "{err:?}");
    assert_eq!(f.audit_count(), audited);
    assert_eq!(f.store.get("r1").unwrap().unwrap().actor, "alice");
    assert_eq!(f.store.get("r2").unwrap(), None);
}

#[tokio::test]
async fn creates_a_run_awaiting_approval_audited_as_such() {
    let f = Fixture::new();
    let run = record("r1", "proc-1", "alice", RunState::AwaitingApproval);
    f.store.create(run).await.unwrap();
    assert_eq!(f.actions_of("r1"), ["run.awaiting-approval"]);
}

#[tokio::test]
async fn create_refuses_runs_that_are_not_new_and_audits_nothing() {
    let f = Fixture::new();
    for state in RunState::ALL {
        if matches!(state, RunState::Queued | RunState::AwaitingApproval) {
            continue;
        }
        let err = f
            .store
            .create(record("r1", "p", "alice", state))
            .await
            .unwrap_err();
        assert_eq!(invalid_field(err), "state", "{state}");
    }
    type Edit = fn(&mut RunRecord);
    let cases: &[(&str, Edit)] = &[
        ("started_ms", |r| r.started_ms = Some(1)),
        ("started_ms", |r| r.finished_ms = Some(1)),
        ("id", |r| r.id = "../etc".into()),
        ("id", |r| r.id = String::new()),
        ("process_id", |r| r.process_id = "a b".into()),
        ("actor", |r| r.actor = "eve\nforged".into()),
        ("module_digest", |r| r.module_digest = "not-hex".into()),
    ];
    for (field, edit) in cases {
        let mut run = record("r1", "p", "alice", RunState::Queued);
        edit(&mut run);
        assert_eq!(
            invalid_field(f.store.create(run).await.unwrap_err()),
            *field
        );
    }
    assert_eq!(f.audit_count(), 0);
    assert_eq!(f.store.list(&RunFilter::default()).unwrap(), vec![]);
}

#[tokio::test]
async fn create_refuses_an_existing_run_id() {
    let f = Fixture::new();
    let first = f
        .store
        .create(record("r1", "p", "alice", RunState::Queued))
        .await
        .unwrap();
    let err = f
        .store
        .create(record("r1", "q", "bob", RunState::Queued))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunsError::RunExists(ref id) if id == "r1"),
        "{err:?}"
    );
    assert_eq!(f.store.get("r1").unwrap(), Some(first));
    assert_eq!(f.actions_of("r1"), ["run.queued"]);
}

#[tokio::test]
async fn create_refuses_an_oversized_record() {
    let f = Fixture::new();
    let mut run = record("big", "p", "alice", RunState::Queued);
    run.inputs
        .insert("blob".into(), json!("x".repeat(MAX_RUN_RECORD_BYTES)));
    let err = f.store.create(run).await.unwrap_err();
    assert!(matches!(
        err,
        RunsError::RecordTooLarge {
            max: MAX_RUN_RECORD_BYTES,
            ..
        }
    ));
    assert_eq!(f.store.get("big").unwrap(), None);
    assert_eq!(f.audit_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_legal_transition_succeeds_and_every_illegal_one_is_refused() {
    let f = Fixture::new();
    for (i, from) in RunState::ALL.into_iter().enumerate() {
        for (j, to) in RunState::ALL.into_iter().enumerate() {
            let id = format!("r{i}-{j}");
            f.run_in(&id, from).await;
            let before = (f.raw(&id), f.audit_of(&id).len());
            let result = f.store.transition(&id, to, "bob", |_| {}).await;
            if from.can_become(to) {
                let run = result.unwrap();
                assert_eq!(
                    (run.state, f.store.get(&id).unwrap().map(|r| r.state)),
                    (to, Some(to))
                );
                let last = f.audit_of(&id).pop().unwrap().entry;
                assert_eq!(last.action, format!("run.{to}"), "{from} -> {to}");
                assert_eq!(
                    (last.actor.as_str(), last.run_id),
                    ("bob", Some(id.clone()))
                );
                assert_eq!(last.outcome, to.as_str());
            } else {
                let err = result.unwrap_err();
                let refused = matches!(err, RunsError::BadTransition { from: a, to: b }
                    if a == from && b == to);
                assert!(refused, "{from} -> {to}: {err:?}");
                assert_eq!(
                    (f.raw(&id), f.audit_of(&id).len()),
                    before,
                    "{from} -> {to}"
                );
            }
        }
    }
    f.assert_chain_verifies();
}

#[tokio::test]
async fn terminal_runs_never_change() {
    let f = Fixture::new();
    for (i, state) in RunState::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .enumerate()
    {
        let id = format!("t{i}");
        let run = f.run_in(&id, state).await;
        for next in RunState::ALL {
            let err = f
                .store
                .transition(&id, next, "bob", |r| r.result = Some("x".into()))
                .await;
            assert!(
                matches!(err, Err(RunsError::BadTransition { .. })),
                "{state} -> {next}"
            );
        }
        assert_eq!(f.store.get(&id).unwrap(), Some(run));
    }
}

#[tokio::test]
async fn transitions_store_output_and_timestamps() {
    let f = Fixture::new();
    f.run_in("r1", RunState::Queued).await;
    let running = f
        .store
        .transition("r1", RunState::Running, "bridge", |_| {})
        .await
        .unwrap();
    let started = running.started_ms.unwrap();
    assert!(started >= running.created_ms && running.finished_ms.is_none());
    let done = f
        .store
        .transition("r1", RunState::Succeeded, "bridge", |r| {
            r.result = Some("ok".into());
            r.stdout = "out".into();
            r.stderr = "err".into();
            r.events = vec![json!({"kind": "log", "message": "hi"})];
            r.host_calls = 3;
            r.state = RunState::Failed; // ignored: the store sets the state
            r.started_ms = Some(1); // ignored: the store owns timestamps
        })
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(done.started_ms, Some(started));
    assert!(done.finished_ms.unwrap() >= started);
    assert_eq!((done.result.as_deref(), done.host_calls), (Some("ok"), 3));
    assert_eq!(f.store.get("r1").unwrap(), Some(done));
}

#[tokio::test]
async fn transition_refuses_changes_to_the_runs_identity() {
    let f = Fixture::new();
    let run = f.run_in("r1", RunState::Running).await;
    type Edit = fn(&mut RunRecord);
    let cases: &[(&str, Edit)] = &[
        ("id", |r| r.id = "other".into()),
        ("process_id", |r| r.process_id = "other".into()),
        ("module_digest", |r| r.module_digest = "ef".repeat(32)),
        ("actor", |r| r.actor = "mallory".into()),
        ("inputs", |r| r.inputs.clear()),
        ("created_ms", |r| r.created_ms += 1),
    ];
    let audited = f.audit_count();
    for (field, edit) in cases {
        let err = f
            .store
            .transition("r1", RunState::Succeeded, "bridge", edit)
            .await;
        assert_eq!(invalid_field(err.unwrap_err()), *field);
    }
    assert_eq!(f.store.get("r1").unwrap(), Some(run));
    assert_eq!(f.audit_count(), audited);
}

#[tokio::test]
async fn transition_of_a_missing_run_or_by_an_invalid_actor_is_refused() {
    let f = Fixture::new();
    let err = f
        .store
        .transition("nope", RunState::Running, "bob", |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunsError::NotFound(ref id) if id == "nope"),
        "{err:?}"
    );
    f.run_in("r1", RunState::Queued).await;
    let err = f
        .store
        .transition("r1", RunState::Running, "", |_| {})
        .await
        .unwrap_err();
    assert_eq!(invalid_field(err), "actor");
    assert_eq!(f.store.get("r1").unwrap().unwrap().state, RunState::Queued);
    assert_eq!(f.actions_of("r1"), ["run.queued"]);
}

#[tokio::test]
async fn oversized_output_is_refused_and_the_run_keeps_its_state() {
    let f = Fixture::new();
    let before = f.run_in("r1", RunState::Running).await;
    let audited = f.audit_count();
    let err = f
        .store
        .transition("r1", RunState::Succeeded, "bridge", |r| {
            r.stdout = "x".repeat(MAX_RUN_RECORD_BYTES);
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RunsError::RecordTooLarge { .. }), "{err:?}");
    assert_eq!(f.store.get("r1").unwrap(), Some(before));
    assert_eq!(f.audit_count(), audited);
}

/// Dropping the audit tree under the running writer is a real storage failure.
#[tokio::test]
async fn a_failed_audit_append_prevents_the_transition() {
    let f = Fixture::new();
    let before = f.run_in("r1", RunState::Running).await;
    assert!(f.db.drop_tree(crate::store::AUDIT_RECORDS.name).unwrap());
    let err = f
        .store
        .transition("r1", RunState::Succeeded, "bridge", |_| {})
        .await;
    assert!(matches!(err, Err(RunsError::Audit(_))), "{err:?}");
    assert_eq!(f.store.get("r1").unwrap(), Some(before));
    let err = f
        .store
        .create(record("r2", "p", "alice", RunState::Queued))
        .await;
    assert!(matches!(err, Err(RunsError::Audit(_))), "{err:?}");
    assert_eq!(f.store.get("r2").unwrap(), None);
    let err = f
        .store
        .create_running(record("r3", "p", "alice", RunState::Queued), "")
        .await;
    assert!(matches!(err, Err(RunsError::Audit(_))), "{err:?}");
    assert_eq!(f.store.get("r3").unwrap(), None);
    assert!(
        f.store
            .list(&RunFilter::default())
            .unwrap()
            .iter()
            .all(|r| r.id == "r1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transitions_of_one_run_have_exactly_one_winner() {
    let f = Fixture::new();
    for round in 0..5 {
        let id = format!("race-{round}");
        f.run_in(&id, RunState::Running).await;
        let targets = [
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
            RunState::TimedOut,
            RunState::Interrupted,
        ];
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (store, id, next) = (f.store.clone(), id.clone(), targets[i % targets.len()]);
                tokio::spawn(async move { store.transition(&id, next, "racer", |_| {}).await })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(run) => winners.push(run.state),
                Err(RunsError::BadTransition { from, .. }) => assert!(from.is_terminal()),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        assert_eq!(f.store.get(&id).unwrap().unwrap().state, winners[0]);
        let terminal_records = f
            .audit_of(&id)
            .into_iter()
            .filter(|r| r.entry.action != "run.queued" && r.entry.action != "run.running")
            .count();
        assert_eq!(terminal_records, 1);
    }
    f.assert_chain_verifies();
}

/// Another writer (here: a raw write, as a second store would make) changes the run after
/// the transition was checked and audited: the swap must lose and the log must say so.
#[tokio::test]
async fn a_transition_that_loses_its_swap_is_refused_and_audited_as_lost() {
    let f = Fixture::new();
    f.run_in("r1", RunState::Running).await;
    let runs = f.db.open_tree(RUNS.name).unwrap();
    let err = f
        .store
        .transition("r1", RunState::Succeeded, "bridge", |r| {
            let mut theirs = r.clone();
            theirs.state = RunState::Cancelled;
            runs.insert("r1", serde_json::to_vec(&theirs).unwrap())
                .unwrap();
        })
        .await
        .unwrap_err();
    let expected = RunsError::BadTransition {
        from: RunState::Cancelled,
        to: RunState::Succeeded,
    };
    assert_eq!(err.to_string(), expected.to_string());
    assert_eq!(
        f.store.get("r1").unwrap().unwrap().state,
        RunState::Cancelled
    );
    let lost = f.audit_of("r1").pop().unwrap().entry;
    assert_eq!(
        (lost.action.as_str(), lost.outcome.as_str()),
        (LOST_TRANSITION_ACTION, "cancelled")
    );
    assert!(matches!(lost.decision, Decision::Denied { .. }));
    assert_eq!(
        f.actions_of("r1"),
        [
            "run.queued",
            "run.running",
            "run.succeeded",
            LOST_TRANSITION_ACTION
        ]
    );
}

#[tokio::test]
async fn records_each_transition_in_a_verifying_audit_chain() {
    let f = Fixture::new();
    f.run_in("ok", RunState::Succeeded).await;
    f.run_in("no", RunState::AwaitingApproval).await;
    f.store
        .transition("no", RunState::Denied, "approver", |r| {
            r.error = Some("rejected".into())
        })
        .await
        .unwrap();
    assert_eq!(
        f.actions_of("ok"),
        ["run.queued", "run.running", "run.succeeded"]
    );
    assert_eq!(f.actions_of("no"), ["run.awaiting-approval", "run.denied"]);
    let denied = f.audit_of("no").pop().unwrap().entry;
    assert_eq!(
        denied.decision,
        Decision::Denied {
            reason: "rejected".into(),
            policy: None
        }
    );
    assert_eq!(
        denied.detail.as_deref(),
        Some("awaiting-approval -> denied: rejected")
    );
    let report = verify(
        &crate::store::sled_db(&f.db),
        &signing_key().verifying_key(),
    )
    .unwrap();
    assert_eq!(report.count, 5);
}

#[tokio::test]
async fn lists_newest_first_with_filters_and_a_capped_limit() {
    let f = Fixture::new();
    let runs = [
        at("a", "p1", "alice", 10),
        at("b", "p2", "alice", 20),
        at("c", "p1", "bob", 30),
        at("e", "p1", "alice", 40),
        at("d", "p1", "alice", 40),
    ];
    for run in runs {
        f.store.create(run).await.unwrap();
    }
    f.store
        .transition("c", RunState::Running, "bridge", |_| {})
        .await
        .unwrap();
    let ids = |filter: RunFilter| -> Vec<String> {
        f.store
            .list(&filter)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(ids(RunFilter::default()), ["e", "d", "c", "b", "a"]);
    let p1 = RunFilter {
        process_id: Some("p1".into()),
        ..RunFilter::default()
    };
    assert_eq!(ids(p1.clone()), ["e", "d", "c", "a"]);
    let bob = RunFilter {
        actor: Some("bob".into()),
        ..RunFilter::default()
    };
    assert_eq!(ids(bob), ["c"]);
    let queued = RunFilter {
        state: Some(RunState::Queued),
        ..p1.clone()
    };
    assert_eq!(ids(queued), ["e", "d", "a"]);
    assert_eq!(
        ids(RunFilter {
            limit: Some(2),
            ..p1
        }),
        ["e", "d"]
    );
    assert_eq!(
        ids(RunFilter {
            limit: Some(0),
            ..RunFilter::default()
        }),
        Vec::<String>::new()
    );
    let none = RunFilter {
        process_id: Some("p9".into()),
        ..RunFilter::default()
    };
    assert!(ids(none).is_empty());
}

#[tokio::test]
async fn lists_runs_since_a_time_with_until_as_a_cursor_and_the_other_filters() {
    let f = Fixture::new();
    for run in [
        at("a", "p1", "alice", 10),
        at("b", "p1", "bob", 20),
        at("c", "p1", "alice", 30),
        at("e", "p1", "alice", 40),
        at("d", "p1", "alice", 40),
    ] {
        f.store.create(run).await.unwrap();
    }
    let ids = |filter: RunFilter| -> Vec<String> {
        let runs = f.store.list(&filter).unwrap();
        runs.into_iter().map(|r| r.id).collect()
    };
    let since = |ms| RunFilter {
        since_ms: Some(ms),
        ..RunFilter::default()
    };
    assert_eq!(ids(since(20)), ["e", "d", "c", "b"], "inclusive");
    assert_eq!(ids(since(21)), ["e", "d", "c"]);
    assert_eq!(ids(since(41)), Vec::<String>::new());
    // `until` is a cursor with an empty id: before every run of that millisecond.
    let until_40 = Some(RunCursor {
        created_ms: 40,
        id: String::new(),
    });
    assert_eq!(
        ids(RunFilter {
            before: until_40.clone(),
            ..since(20)
        }),
        ["c", "b"]
    );
    assert_eq!(
        ids(RunFilter {
            actor: Some("alice".into()),
            before: until_40,
            ..since(0)
        }),
        ["c", "a"]
    );
    // Paging inside the window.
    let first = RunFilter {
        limit: Some(2),
        ..since(20)
    };
    let page = f.store.list(&first).unwrap();
    assert_eq!(
        page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["e", "d"]
    );
    let next = RunFilter {
        before: page.last().map(RunCursor::after),
        ..first
    };
    assert_eq!(ids(next), ["c", "b"]);
}

#[tokio::test]
async fn list_never_returns_more_than_the_cap() {
    let f = Fixture::new();
    for i in 0..MAX_LIST_RUNS + 3 {
        f.store
            .create(at(&format!("r{i:04}"), "p", "alice", i as u64))
            .await
            .unwrap();
    }
    let all = f.store.list(&RunFilter {
        limit: Some(usize::MAX),
        ..RunFilter::default()
    });
    let all = all.unwrap();
    assert_eq!(all.len(), MAX_LIST_RUNS);
    assert_eq!(all[0].id, format!("r{:04}", MAX_LIST_RUNS + 2));
    assert_eq!(
        f.store.list(&RunFilter::default()).unwrap().len(),
        MAX_LIST_RUNS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_after_restart_interrupts_running_runs_and_leaves_the_rest() {
    let f = Fixture::new();
    f.run_in("run-1", RunState::Running).await;
    f.run_in("queued", RunState::Queued).await;
    f.run_in("waiting", RunState::AwaitingApproval).await;
    f.run_in("run-2", RunState::Running).await;
    f.run_in("done", RunState::Succeeded).await;
    f.run_in("failed", RunState::Failed).await;
    let done_bytes = (f.raw("done"), f.raw("failed"));

    let f = f.restart();
    let interrupted = f.store.recover().await.unwrap();
    assert_eq!(interrupted, ["run-1", "run-2"]);
    for id in ["run-1", "run-2"] {
        let run = f.store.get(id).unwrap().unwrap();
        assert_eq!(run.state, RunState::Interrupted);
        assert_eq!(run.error.as_deref(), Some(INTERRUPTED_ERROR));
        assert!(run.finished_ms.is_some());
        let last = f.audit_of(id).pop().unwrap().entry;
        assert_eq!(
            (last.action.as_str(), last.actor.as_str()),
            ("run.interrupted", RECOVERY_ACTOR)
        );
    }
    assert_eq!(
        f.store.get("queued").unwrap().unwrap().state,
        RunState::Queued
    );
    assert_eq!(f.store.ids_in_state(RunState::Queued).unwrap(), ["queued"]);
    let waiting = f.store.get("waiting").unwrap().unwrap().state;
    assert_eq!(waiting, RunState::AwaitingApproval);
    for (id, state) in [("queued", "queued"), ("waiting", "awaiting-approval")] {
        let last = f.audit_of(id).pop().unwrap().entry;
        assert_eq!(
            (last.action.as_str(), last.outcome.as_str()),
            (RECOVERED_ACTION, state)
        );
    }
    assert_eq!((f.raw("done"), f.raw("failed")), done_bytes);
    assert_eq!(
        f.actions_of("done"),
        ["run.queued", "run.running", "run.succeeded"]
    );
    f.assert_chain_verifies();

    // The interrupted runs are terminal now: a second start interrupts nothing.
    let f = f.restart();
    assert!(f.store.recover().await.unwrap().is_empty());
    assert_eq!(
        f.store.get("run-1").unwrap().unwrap().state,
        RunState::Interrupted
    );
    f.assert_chain_verifies();
}

/// The crash window: the audit record of a transition is durable but the state is not.
/// After recovery the run's last `run.*` record names its stored state again.
#[tokio::test]
async fn recover_supersedes_an_audited_transition_the_crash_lost() {
    let f = Fixture::new();
    f.run_in("mid-success", RunState::Running).await;
    f.run_in("mid-start", RunState::Queued).await;
    for (id, action) in [
        ("mid-success", "run.succeeded"),
        ("mid-start", "run.running"),
    ] {
        let entry = crate::audit::AuditEntry {
            run_id: Some(id.into()),
            actor: "bridge".into(),
            action: action.into(),
            target: None,
            credential: None,
            decision: Decision::Allowed,
            outcome: action.trim_start_matches("run.").into(),
            duration_us: 0,
            detail: None,
        };
        f.audit.append(entry).await.unwrap();
    }
    let f = f.restart();
    f.store.recover().await.unwrap();
    for id in ["mid-success", "mid-start"] {
        let stored = f.store.get(id).unwrap().unwrap().state;
        let last = f.audit_of(id).pop().unwrap().entry;
        assert_eq!(last.outcome, stored.as_str(), "{id}");
    }
    assert_eq!(
        f.store.get("mid-start").unwrap().unwrap().state,
        RunState::Queued
    );
    f.assert_chain_verifies();
}

#[tokio::test]
async fn runs_and_their_audit_survive_a_restart() {
    let f = Fixture::new();
    let run = f.run_in("r1", RunState::Succeeded).await;
    let f = f.restart();
    assert_eq!(f.store.get("r1").unwrap(), Some(run));
    assert_eq!(
        f.actions_of("r1"),
        ["run.queued", "run.running", "run.succeeded"]
    );
    assert_eq!(f.store.list(&RunFilter::default()).unwrap().len(), 1);
}

#[tokio::test]
async fn reports_a_corrupt_stored_run() {
    let f = Fixture::new();
    f.run_in("r1", RunState::Queued).await;
    f.db.open_tree(RUNS.name)
        .unwrap()
        .insert("r1", &b"{garbage"[..])
        .unwrap();
    assert!(matches!(f.store.get("r1"), Err(RunsError::Corrupt(_))));
    assert!(matches!(
        f.store.list(&RunFilter::default()),
        Err(RunsError::Corrupt(_))
    ));
    let err = f
        .store
        .transition("r1", RunState::Running, "bob", |_| {})
        .await;
    assert!(matches!(err, Err(RunsError::Corrupt(_))));
    assert!(matches!(
        f.store.recover().await,
        Err(RunsError::Corrupt(_))
    ));
}

/// A caller that stops waiting (a dropped HTTP request) after the audited write began must
/// not leave the audit record without its state change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transition_future_still_completes_the_audited_write() {
    use std::future::Future;
    use std::task::Poll;

    let f = Fixture::new();
    f.run_in("r1", RunState::Running).await;
    let mut pending = Box::pin(f.store.transition("r1", RunState::Cancelled, "bob", |_| {}));
    // Poll once: takes the lock, checks, and starts the audit append; then give up on it.
    let _ = std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx).map(|_| ()))).await;
    drop(pending);
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.store.get("r1").unwrap().unwrap().state != RunState::Cancelled {
        assert!(Instant::now() < deadline, "the transition never completed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let actions = f.actions_of("r1");
    assert_eq!(actions, ["run.queued", "run.running", "run.cancelled"]);
}
