//! Tests of the audit log against real sled databases in temporary directories.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tempfile::TempDir;

use super::checkpoint::Checkpoint;
use super::*;
use crate::store::AUDIT_CHECKPOINT_KEY as CHECKPOINT_KEY;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn entry(i: usize) -> AuditEntry {
    AuditEntry {
        run_id: Some(format!("run-{}", i % 3)),
        actor: if i.is_multiple_of(2) { "alice" } else { "bob" }.into(),
        action: "ssh.exec".into(),
        target: Some("web-1".into()),
        credential: Some("root-pw".into()),
        decision: if i.is_multiple_of(4) {
            Decision::Denied {
                reason: "no grant for target".into(),
                policy: Some("default".into()),
            }
        } else {
            Decision::Allowed
        },
        outcome: format!("exit {i}"),
        duration_us: i as u64,
        detail: None,
    }
}

struct Fixture {
    dir: TempDir,
    db: sled::Db,
    log: AuditLog,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = AuditLog::open(&crate::store::sled_db(&db), signing_key()).unwrap();
        Self { dir, db, log }
    }

    fn with_records(n: usize) -> Self {
        let fixture = Self::new();
        for i in 0..n {
            fixture.log.append_blocking(entry(i)).unwrap();
        }
        fixture
    }

    fn records(&self) -> sled::Tree {
        self.db.open_tree(crate::store::AUDIT_RECORDS.name).unwrap()
    }

    fn meta(&self) -> sled::Tree {
        self.db.open_tree(crate::store::AUDIT_META.name).unwrap()
    }

    fn verify(&self) -> Result<VerifyReport, VerifyError> {
        verify(
            &crate::store::sled_db(&self.db),
            &signing_key().verifying_key(),
        )
    }

    fn stored(&self, seq: u64) -> Vec<u8> {
        self.records()
            .get(seq.to_be_bytes())
            .unwrap()
            .unwrap()
            .to_vec()
    }

    fn overwrite(&self, seq: u64, value: &[u8]) {
        self.records().insert(seq.to_be_bytes(), value).unwrap();
    }

    /// Closes everything and reopens the database from disk.
    fn reopen(self) -> (TempDir, sled::Db) {
        let Fixture { dir, db, log } = self;
        drop(log);
        drop(db);
        let db = open_when_unlocked(&dir);
        (dir, db)
    }
}

/// The writer thread releases its tree handles (and sled's file lock) shortly after the last
/// `AuditLog` is dropped; wait for that instead of racing it.
fn open_when_unlocked(dir: &TempDir) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(dir.path()) {
            Ok(db) => return db,
            Err(e) if Instant::now() > deadline => panic!("cannot reopen: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn record_error(err: VerifyError) -> (u64, RecordProblem) {
    match err {
        VerifyError::Record { seq, problem } => (seq, problem),
        other => panic!("expected a record error, got {other:?}"),
    }
}

#[test]
fn empty_log_verifies_with_count_zero() {
    let fixture = Fixture::new();
    let report = fixture.verify().unwrap();
    assert_eq!(
        report,
        VerifyReport {
            count: 0,
            head_hash: None
        }
    );
}

#[test]
fn chain_verifies_after_sequential_appends() {
    let fixture = Fixture::new();
    let mut prev = GENESIS_HASH.to_owned();
    for i in 0..20 {
        let record = fixture.log.append_blocking(entry(i)).unwrap();
        assert_eq!(record.seq, i as u64);
        assert_eq!(record.prev_hash, prev);
        assert_eq!(record.entry, entry(i));
        prev = record.hash;
    }
    let report = fixture.verify().unwrap();
    assert_eq!(report.count, 20);
    assert_eq!(report.head_hash, Some(prev));
    assert_eq!(fixture.log.verify().unwrap().count, 20);
}

#[test]
fn stored_value_is_the_records_canonical_json() {
    let fixture = Fixture::new();
    let record = fixture.log.append_blocking(entry(0)).unwrap();
    assert_eq!(fixture.stored(0), serde_json::to_vec(&record).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_contiguous_seqs_and_a_valid_chain() {
    let fixture = Fixture::new();
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let log = fixture.log.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    seqs.push(log.append(entry(t * 50 + i)).await.unwrap().seq);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..1600).collect::<Vec<u64>>());
    assert_eq!(fixture.verify().unwrap().count, 1600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_beyond_queue_capacity_wait_instead_of_dropping() {
    let fixture = Fixture::new();
    let total = QUEUE_CAPACITY + 500;
    let appends = (0..total).map(|i| {
        let log = fixture.log.clone();
        tokio::spawn(async move { log.append(entry(i)).await })
    });
    let handles: Vec<_> = appends.collect();
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    assert_eq!(fixture.verify().unwrap().count, total as u64);
}

#[test]
fn verify_names_record_with_any_flipped_byte() {
    let fixture = Fixture::with_records(6);
    let original = fixture.stored(3);
    for position in 0..original.len() {
        let mut tampered = original.clone();
        tampered[position] ^= 0x01;
        fixture.overwrite(3, &tampered);
        let err = fixture.verify().unwrap_err();
        assert_eq!(err.seq(), Some(3), "flip at byte {position}: {err}");
    }
    fixture.overwrite(3, &original);
    assert_eq!(fixture.verify().unwrap().count, 6);
}

#[test]
fn verify_names_record_with_unparseable_value() {
    let fixture = Fixture::with_records(4);
    fixture.overwrite(2, b"not json");
    assert_eq!(
        record_error(fixture.verify().unwrap_err()),
        (2, RecordProblem::Unparseable)
    );
}

#[test]
fn verify_names_record_edited_in_a_way_serde_tolerates() {
    let fixture = Fixture::with_records(4);
    let text = String::from_utf8(fixture.stored(1)).unwrap();
    // Renaming a null optional field still parses to the same values.
    let edited = text.replace(r#""detail":null"#, r#""detaiL":null"#);
    assert_ne!(edited, text);
    fixture.overwrite(1, edited.as_bytes());
    assert_eq!(
        record_error(fixture.verify().unwrap_err()),
        (1, RecordProblem::NotCanonical)
    );
}

#[test]
fn verify_names_deleted_middle_record() {
    let fixture = Fixture::with_records(6);
    fixture.records().remove(2u64.to_be_bytes()).unwrap();
    assert_eq!(
        record_error(fixture.verify().unwrap_err()),
        (2, RecordProblem::Missing)
    );
}

#[test]
fn verify_detects_deleted_last_record_through_checkpoint() {
    let fixture = Fixture::with_records(6);
    fixture.records().remove(5u64.to_be_bytes()).unwrap();
    assert_eq!(
        record_error(fixture.verify().unwrap_err()),
        (5, RecordProblem::Truncated)
    );
}

#[test]
fn verify_detects_all_records_deleted() {
    let fixture = Fixture::with_records(3);
    fixture.records().clear().unwrap();
    assert_eq!(
        record_error(fixture.verify().unwrap_err()),
        (0, RecordProblem::Truncated)
    );
}

#[test]
fn verify_names_reordered_records() {
    let fixture = Fixture::with_records(5);
    let (two, three) = (fixture.stored(2), fixture.stored(3));
    fixture.overwrite(2, &three);
    fixture.overwrite(3, &two);
    assert_eq!(
        record_error(fixture.verify().unwrap_err()),
        (2, RecordProblem::SeqMismatch)
    );
}

/// An attacker who knows the format edits a record and recomputes its hash.
fn rewrite(fixture: &Fixture, seq: u64, outcome: &str) {
    let mut record: AuditRecord = serde_json::from_slice(&fixture.stored(seq)).unwrap();
    record.entry.outcome = outcome.into();
    record.hash = record.recompute_hash().unwrap();
    fixture.overwrite(seq, &record.canonical().unwrap());
}

#[test]
fn verify_names_middle_record_rewritten_with_recomputed_hash() {
    let fixture = Fixture::with_records(5);
    rewrite(&fixture, 2, "exit 0 (nothing to see)");
    assert_eq!(
        record_error(fixture.verify().unwrap_err()),
        (3, RecordProblem::BrokenLink)
    );
}

#[test]
fn verify_names_head_rewritten_with_recomputed_hash() {
    let fixture = Fixture::with_records(5);
    rewrite(&fixture, 4, "exit 0 (nothing to see)");
    assert_eq!(
        record_error(fixture.verify().unwrap_err()),
        (4, RecordProblem::NotSignedHead)
    );
}

fn forge_next(fixture: &Fixture, seq: u64) {
    let prev: AuditRecord = serde_json::from_slice(&fixture.stored(seq - 1)).unwrap();
    let forged = AuditRecord::seal(seq, prev.time_ms, entry(99), prev.hash).unwrap();
    fixture.overwrite(seq, &forged.canonical().unwrap());
}

#[test]
fn verify_names_forged_record_appended_after_signed_head() {
    let fixture = Fixture::with_records(3);
    forge_next(&fixture, 3);
    assert_eq!(
        record_error(fixture.verify().unwrap_err()),
        (3, RecordProblem::BeyondCheckpoint)
    );
}

#[test]
fn verify_rejects_checkpoint_signed_by_another_key() {
    let fixture = Fixture::with_records(3);
    let head: AuditRecord = serde_json::from_slice(&fixture.stored(2)).unwrap();
    let forged = Checkpoint::sign(&SigningKey::from_bytes(&[8; 32]), 2, &head.hash);
    fixture
        .meta()
        .insert(CHECKPOINT_KEY, serde_json::to_vec(&forged).unwrap())
        .unwrap();
    assert!(matches!(
        fixture.verify(),
        Err(VerifyError::Checkpoint(CheckpointProblem::BadSignature))
    ));
}

#[test]
fn verify_rejects_unreadable_or_missing_checkpoint() {
    let fixture = Fixture::with_records(3);
    fixture
        .meta()
        .insert(CHECKPOINT_KEY, b"{".as_slice())
        .unwrap();
    assert!(matches!(
        fixture.verify(),
        Err(VerifyError::Checkpoint(CheckpointProblem::Unreadable))
    ));
    fixture.meta().remove(CHECKPOINT_KEY).unwrap();
    assert!(matches!(
        fixture.verify(),
        Err(VerifyError::Checkpoint(CheckpointProblem::Missing))
    ));
}

#[test]
fn verify_rejects_log_checked_with_the_wrong_key() {
    let fixture = Fixture::with_records(2);
    let other = SigningKey::from_bytes(&[9; 32]).verifying_key();
    assert!(matches!(
        verify(&crate::store::sled_db(&fixture.db), &other),
        Err(VerifyError::Checkpoint(CheckpointProblem::BadSignature))
    ));
}

#[test]
fn verify_names_record_under_a_malformed_key() {
    let fixture = Fixture::with_records(2);
    fixture.records().insert(b"zz", b"{}".as_slice()).unwrap();
    assert_eq!(
        record_error(fixture.verify().unwrap_err()),
        (2, RecordProblem::BadKey)
    );
}

#[test]
fn reopen_continues_the_chain() {
    let fixture = Fixture::with_records(3);
    let head = fixture
        .log
        .query(&AuditFilter::default())
        .unwrap()
        .pop()
        .unwrap();
    let (_dir, db) = fixture.reopen();
    let log = AuditLog::open(&crate::store::sled_db(&db), signing_key()).unwrap();
    let next = log.append_blocking(entry(3)).unwrap();
    assert_eq!(next.seq, 3);
    assert_eq!(next.prev_hash, head.hash);
    assert!(next.time_ms >= head.time_ms);
    assert_eq!(
        verify(&crate::store::sled_db(&db), &signing_key().verifying_key())
            .unwrap()
            .count,
        4
    );
}

#[test]
fn open_refuses_log_whose_tail_was_forged_while_down() {
    let fixture = Fixture::with_records(3);
    forge_next(&fixture, 3);
    let (_dir, db) = fixture.reopen();
    let err = AuditLog::open(&crate::store::sled_db(&db), signing_key()).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Tampered(VerifyError::Record {
                seq: 3,
                problem: RecordProblem::BeyondCheckpoint
            })
        ),
        "{err:?}"
    );
}

#[test]
fn open_refuses_log_whose_head_was_rewritten_or_truncated() {
    let fixture = Fixture::with_records(3);
    rewrite(&fixture, 2, "forged");
    let err = AuditLog::open(&crate::store::sled_db(&fixture.db), signing_key()).unwrap_err();
    assert!(matches!(err, AuditError::Tampered(_)), "{err:?}");
    fixture.records().remove(2u64.to_be_bytes()).unwrap();
    let err = AuditLog::open(&crate::store::sled_db(&fixture.db), signing_key()).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Tampered(VerifyError::Record {
                seq: 2,
                problem: RecordProblem::Truncated
            })
        ),
        "{err:?}"
    );
}

#[test]
fn open_refuses_log_with_another_hosts_key() {
    let fixture = Fixture::with_records(1);
    let err = AuditLog::open(
        &crate::store::sled_db(&fixture.db),
        SigningKey::from_bytes(&[9; 32]),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        AuditError::Tampered(VerifyError::Checkpoint(_))
    ));
}

#[test]
fn query_filters_by_run_actor_action_and_limit() {
    let fixture = Fixture::with_records(12);
    let log = &fixture.log;
    let by_run = log
        .query(&AuditFilter {
            run_id: Some("run-1".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        by_run.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 4, 7, 10]
    );
    let by_actor = log
        .query(&AuditFilter {
            actor: Some("bob".into()),
            limit: Some(2),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_actor.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3]);
    let none = log
        .query(&AuditFilter {
            action: Some("sftp.put".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(none.is_empty());
    let all = log.query(&AuditFilter::default()).unwrap();
    assert_eq!(all.len(), 12);
    assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
}

#[test]
fn query_filters_by_time_window() {
    let fixture = Fixture::new();
    let first = fixture.log.append_blocking(entry(0)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let second = fixture.log.append_blocking(entry(1)).unwrap();
    assert!(second.time_ms > first.time_ms);
    let since = AuditFilter {
        since_ms: Some(second.time_ms),
        ..Default::default()
    };
    assert_eq!(fixture.log.query(&since).unwrap(), vec![second.clone()]);
    let until = AuditFilter {
        until_ms: Some(first.time_ms),
        ..Default::default()
    };
    assert_eq!(fixture.log.query(&until).unwrap(), vec![first]);
}

#[test]
fn query_limit_is_capped() {
    let filter = AuditFilter {
        limit: Some(usize::MAX),
        ..Default::default()
    };
    assert_eq!(filter.effective_limit(), MAX_QUERY_RECORDS);
}

/// A crash between a commit's records and its index entries (or a log from before the index)
/// leaves records the index does not name: opening the database indexes them again.
#[test]
fn records_the_index_missed_are_indexed_when_the_database_opens() {
    let fixture = Fixture::with_records(6);
    let by_run = |db: &sled::Db| {
        let log = AuditLog::open(&crate::store::sled_db(db), signing_key()).unwrap();
        let filter = AuditFilter {
            run_id: Some("run-2".into()),
            ..AuditFilter::default()
        };
        log.query(&filter).unwrap().len()
    };
    assert_eq!(by_run(&fixture.db), 2);
    let (dir, db) = fixture.reopen();
    // The tail's index entries and the mark are lost, as a crash before the flush would.
    db.open_tree("audit_by_run").unwrap().clear().unwrap();
    db.open_tree(crate::store::AUDIT_META.name)
        .unwrap()
        .insert("indexed-through", &1u64.to_be_bytes())
        .unwrap();
    assert_eq!(
        by_run(&db),
        2,
        "the records after the mark are indexed again"
    );
    // A log with no mark at all (written before the index) is indexed whole.
    db.open_tree("audit_by_run").unwrap().clear().unwrap();
    db.open_tree(crate::store::AUDIT_META.name)
        .unwrap()
        .remove("indexed-through")
        .unwrap();
    assert_eq!(by_run(&db), 2);
    drop(dir);
}

#[test]
fn query_reports_corrupt_record() {
    let fixture = Fixture::with_records(3);
    fixture.overwrite(1, b"garbage");
    let err = fixture.log.query(&AuditFilter::default()).unwrap_err();
    assert!(matches!(err, AuditError::Corrupt { seq: 1 }), "{err:?}");
}

#[test]
fn append_caps_oversized_guest_text() {
    let fixture = Fixture::new();
    let mut big = entry(1);
    big.detail = Some("x".repeat(1 << 20));
    big.outcome = "y".repeat(1 << 20);
    let record = fixture.log.append_blocking(big).unwrap();
    assert!(record.entry.detail.unwrap().ends_with(TRUNCATION_MARKER));
    assert!(fixture.stored(0).len() < 3 * MAX_TEXT_BYTES);
    assert_eq!(fixture.verify().unwrap().count, 1);
}

/// Dropping the tree under the running writer makes sled reject its inserts: a real storage
/// failure, not a simulated one.
#[test]
fn fails_closed_after_a_write_failure() {
    let fixture = Fixture::with_records(2);
    assert!(
        fixture
            .db
            .drop_tree(crate::store::AUDIT_RECORDS.name)
            .unwrap()
    );
    let err = fixture.log.append_blocking(entry(2)).unwrap_err();
    assert!(matches!(err, AuditError::WriteFailed(_)), "{err:?}");
    assert!(fixture.log.is_failed());
    let err = fixture.log.append_blocking(entry(3)).unwrap_err();
    assert!(matches!(err, AuditError::Failed), "{err:?}");
    assert!(fixture.log.clone().is_failed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_appends_fail_closed_after_a_write_failure() {
    let fixture = Fixture::new();
    fixture.log.append(entry(0)).await.unwrap();
    fixture.db.drop_tree(crate::store::AUDIT_META.name).unwrap();
    let results = futures_join(&fixture.log, 8).await;
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    assert!(fixture.log.is_failed());
    assert!(matches!(
        fixture.log.append(entry(0)).await,
        Err(AuditError::Failed)
    ));
}

/// A test table for the writes that follow audit records.
const OTHER: crate::store::TableDef = crate::store::TableDef {
    name: "other",
    columns: &[],
    columns_of: None,
};

fn put_other(expect: crate::store::Expect) -> crate::store::Batch {
    let mut batch = crate::store::Batch::new();
    batch.put(&OTHER, "k", "v", expect);
    batch
}

/// `append_then` commits its write with its record and reports that it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_then_writes_with_its_record() {
    let fixture = Fixture::new();
    fixture.log.append(entry(0)).await.unwrap();
    let (record, applied) = fixture
        .log
        .append_then(entry(1), put_other(crate::store::Expect::Absent))
        .await
        .unwrap();
    assert_eq!(record.seq, 1);
    applied.unwrap();
    assert!(fixture.records().get(1u64.to_be_bytes()).unwrap().is_some());
    let other = fixture.db.open_tree("other").unwrap();
    assert_eq!(other.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    fixture.verify().unwrap();
}

/// A follow-up write whose expectation fails is skipped and reported, while its record (and
/// the records of others in the same batch) still commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_then_reports_a_conflicting_write_and_keeps_the_record() {
    let fixture = Fixture::new();
    fixture
        .db
        .open_tree("other")
        .unwrap()
        .insert("k", "old")
        .unwrap();
    let (record, applied) = fixture
        .log
        .append_then(entry(0), put_other(crate::store::Expect::Absent))
        .await
        .unwrap();
    assert!(applied.unwrap_err().is_conflict());
    assert_eq!(record.seq, 0);
    let other = fixture.db.open_tree("other").unwrap();
    assert_eq!(other.get("k").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(fixture.verify().unwrap().count, 1);
}

/// Fail closed: when the record cannot be written, the follow-up write never happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_then_skips_its_write_when_the_record_fails() {
    let fixture = Fixture::new();
    fixture.log.append(entry(0)).await.unwrap();
    fixture.db.drop_tree(crate::store::AUDIT_META.name).unwrap();
    let other = fixture.db.open_tree("other").unwrap();
    let err = fixture
        .log
        .append_then(entry(1), put_other(crate::store::Expect::Any))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::WriteFailed(_)), "{err:?}");
    assert!(
        other.get("k").unwrap().is_none(),
        "write made without its record"
    );
    let err = fixture
        .log
        .append_then(entry(2), put_other(crate::store::Expect::Any))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Failed), "{err:?}");
    assert!(other.get("k").unwrap().is_none());
}

async fn futures_join(log: &AuditLog, n: usize) -> Vec<Result<AuditRecord, AuditError>> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(entry(i)).await })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

/// Run manually: `cargo test --release -- --ignored --nocapture measure_append_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement, run by hand in release mode"]
async fn measure_append_throughput() {
    let fixture = Fixture::new();
    let per_task = 2000;
    let start = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let log = fixture.log.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    log.append(entry(t * per_task + i)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed();
    let total = 8 * per_task;
    println!(
        "{total} appends by 8 concurrent appenders in {elapsed:?}: {:.0} appends/s",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(fixture.verify().unwrap().count, total as u64);
}
