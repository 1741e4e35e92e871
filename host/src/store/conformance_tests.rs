//! The storage conformance suite: the same test bodies run against sled (a temporary
//! directory) and PostgreSQL (a fresh database on the test cluster named by
//! `WARDEN_TEST_DATABASE_URL`; `.ci/postgres start DIR` starts one). A backend passes when
//! every body passes on it: ordering, every expectation, atomic batches, one winner among
//! concurrent inserters, NUL bytes and large values, and the audit log's commit, tip, range
//! and query. PostgreSQL-only behaviour (schema, triggers, lost connections, several servers)
//! is tested in `postgres/tests.rs`.

mod bench;
mod seal;

pub(crate) use seal::{Spec, TestRecord, commit, spec};

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use super::postgres::{PgBackend, testing};
use super::{
    AuditQuery, AuditTip, Batch, ColumnValue, Database, Expect, Scan, SledBackend, StoreError,
    TableDef,
};

pub(crate) static USERS: TableDef = TableDef {
    name: "users",
    columns: &[],
    columns_of: None,
};
pub(crate) static TARGETS: TableDef = TableDef {
    name: "targets",
    columns: &[],
    columns_of: None,
};
pub(crate) static RUNS: TableDef = TableDef {
    name: "runs",
    columns: &["state", "process_id", "actor", "created_ms"],
    columns_of: Some(run_columns),
};

/// The typed columns of a test run record: JSON whose `state`, `process_id`, `actor` (text)
/// and `created_ms` (integer) fields are each optional.
fn run_columns(value: &[u8]) -> Vec<ColumnValue> {
    let v: serde_json::Value = serde_json::from_slice(value).unwrap_or_default();
    let text = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map_or(ColumnValue::Null, |s| ColumnValue::Text(s.into()))
    };
    let int = v.get("created_ms").and_then(|x| x.as_i64());
    vec![
        text("state"),
        text("process_id"),
        text("actor"),
        int.map_or(ColumnValue::Null, ColumnValue::Int),
    ]
}

/// A database for one test, and what keeps it alive (and cleans it up).
pub(crate) struct Fixture {
    pub db: Database,
    /// The PostgreSQL database's URL, dropped after the test.
    pub url: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    pub fn sled() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(&dir.path().join("db")).unwrap();
        Fixture {
            db: Database::from_backend(Arc::new(backend)),
            url: None,
            _dir: Some(dir),
        }
    }

    pub fn postgres() -> Self {
        let url = testing::fresh_database();
        let backend = PgBackend::connect(&url).unwrap();
        Fixture {
            db: Database::from_backend(Arc::new(backend)),
            url: Some(url),
            _dir: None,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(url) = &self.url {
            testing::drop_database(url);
        }
    }
}

/// Runs each named body against both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $( #[test] fn $name() { super::$name(&super::Fixture::sled().db); } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(&super::Fixture::postgres().db); } )*
        }
    };
}

conformance!(
    scans_follow_bytewise_order_like_a_sorted_map,
    every_expectation_is_enforced_on_put_and_delete,
    a_conflicting_batch_writes_nothing_in_any_table,
    later_ops_in_a_batch_see_earlier_ones,
    concurrent_insert_if_absent_has_exactly_one_winner,
    concurrent_compare_and_swap_loses_no_update,
    nul_bytes_and_8_mib_values_round_trip,
    typed_columns_are_accepted_and_checked,
    audit_commit_tip_range_and_query_agree_with_a_model,
    audit_then_conflict_is_skipped_and_records_still_commit,
    audit_seal_error_or_empty_seal_writes_nothing,
);

fn be(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

fn scans_follow_bytewise_order_like_a_sorted_map(db: &Database) {
    let table = db.table(&USERS);
    let mut model = BTreeMap::new();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for n in [0u64, 1, 2, 255, 256, 65_535, 65_536, 1 << 40, u64::MAX] {
        keys.push([b"n/".as_slice(), &be(n)].concat());
    }
    for k in ["m/a", "m/b", "n", "o", "a", "", "nz"] {
        keys.push(k.as_bytes().to_vec());
    }
    keys.extend([
        vec![0xff],
        vec![0xff, 0xff],
        vec![0xff, 0x00],
        vec![0x00],
        vec![b'n', 0xff],
    ]);
    for (i, key) in keys.iter().enumerate() {
        table.put(key.clone(), format!("v{i}")).unwrap();
        model.insert(key.clone(), format!("v{i}").into_bytes());
    }
    // Big-endian numbers under a prefix come back in numeric order.
    let numbers: Vec<u64> = table
        .scan(&Scan::prefix("n/"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| u64::from_be_bytes(k[2..].try_into().unwrap()))
        .collect();
    assert_eq!(
        numbers,
        [0, 1, 2, 255, 256, 65_535, 65_536, 1 << 40, u64::MAX]
    );

    let prefixes: [&[u8]; 6] = [b"", b"n", b"n/", b"m/", &[0xff], b"zz"];
    let bounds: [Option<&[u8]>; 4] = [
        None,
        Some(b"m"),
        Some(b"n/\x00\x00\x00\x00\x00\x00\x01\x00"),
        Some(&[0xff, 0x00]),
    ];
    for prefix in prefixes {
        for from in bounds {
            for until in bounds {
                for reverse in [false, true] {
                    for limit in [None, Some(0), Some(1), Some(3)] {
                        let scan = Scan {
                            prefix: prefix.to_vec(),
                            from: from.map(<[u8]>::to_vec),
                            until: until.map(<[u8]>::to_vec),
                            reverse,
                            limit,
                        };
                        let mut want: Vec<(Vec<u8>, Vec<u8>)> = model
                            .iter()
                            .filter(|(k, _)| scan.contains(k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        if reverse {
                            want.reverse();
                        }
                        want.truncate(limit.unwrap_or(usize::MAX));
                        assert_eq!(table.scan(&scan).unwrap(), want, "{scan:?}");
                    }
                }
            }
        }
    }
    assert_eq!(table.get(b"m/a").unwrap(), Some(b"v9".to_vec()));
    assert_eq!(table.get(b"m/c").unwrap(), None);
}

fn expect_conflict(result: Result<(), StoreError>) {
    match result {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn every_expectation_is_enforced_on_put_and_delete(db: &Database) {
    let t = db.table(&USERS);
    // Absent.
    assert!(t.insert_new("k", "1").unwrap());
    assert!(!t.insert_new("k", "2").unwrap());
    assert_eq!(t.get("k").unwrap(), Some(b"1".to_vec()));
    // Present.
    t.write("k", "2", Expect::Present).unwrap();
    expect_conflict(t.write("missing", "x", Expect::Present));
    assert_eq!(t.get("missing").unwrap(), None);
    // Equals.
    assert!(t.swap("k", b"2", "3").unwrap());
    assert!(!t.swap("k", b"2", "4").unwrap());
    assert!(!t.swap("missing", b"", "4").unwrap());
    assert_eq!(t.get("k").unwrap(), Some(b"3".to_vec()));
    assert_eq!(t.get("missing").unwrap(), None);
    // Any.
    t.put("k", "5").unwrap();
    t.put("fresh", "6").unwrap();
    assert_eq!(t.get("k").unwrap(), Some(b"5".to_vec()));

    let delete = |key: &str, expect: Expect| {
        let mut batch = Batch::new();
        batch.delete(&USERS, key, expect);
        db.apply(&batch)
    };
    expect_conflict(delete("k", Expect::Absent));
    expect_conflict(delete("k", Expect::Equals(b"4".to_vec())));
    expect_conflict(delete("missing", Expect::Present));
    expect_conflict(delete("missing", Expect::Equals(Vec::new())));
    assert_eq!(t.get("k").unwrap(), Some(b"5".to_vec()));
    delete("missing", Expect::Absent).unwrap();
    delete("missing", Expect::Any).unwrap();
    delete("k", Expect::Equals(b"5".to_vec())).unwrap();
    assert_eq!(t.get("k").unwrap(), None);
    assert!(t.remove("fresh").unwrap());
    assert!(!t.remove("fresh").unwrap());
    // An empty value is a value, not an absence.
    assert!(t.insert_new("empty", "").unwrap());
    expect_conflict(delete("empty", Expect::Absent));
    assert!(t.swap("empty", b"", "x").unwrap());
}

fn a_conflicting_batch_writes_nothing_in_any_table(db: &Database) {
    db.table(&TARGETS).put("existing", "old").unwrap();
    db.table(&TARGETS).put("other", "kept").unwrap();
    for failing in [
        Expect::Absent,
        Expect::Equals(b"not-old".to_vec()),
        Expect::Present,
    ] {
        let key = if failing == Expect::Present {
            "gone"
        } else {
            "existing"
        };
        let mut batch = Batch::new();
        batch
            .put(&USERS, "u1", "a", Expect::Absent)
            .put(
                &RUNS,
                "r1",
                r#"{"state":"queued","process_id":"p","actor":"alice","created_ms":7}"#,
                Expect::Any,
            )
            .delete(&TARGETS, "other", Expect::Any)
            .put(&TARGETS, key, "new", failing.clone());
        let err = db.apply(&batch).unwrap_err();
        assert!(err.is_conflict(), "{failing:?}: {err}");
        assert_eq!(db.table(&USERS).get("u1").unwrap(), None);
        assert_eq!(db.table(&RUNS).get("r1").unwrap(), None);
        assert_eq!(
            db.table(&TARGETS).get("existing").unwrap(),
            Some(b"old".to_vec())
        );
        assert_eq!(db.table(&TARGETS).get("gone").unwrap(), None);
        assert_eq!(
            db.table(&TARGETS).get("other").unwrap(),
            Some(b"kept".to_vec())
        );
    }
}

fn later_ops_in_a_batch_see_earlier_ones(db: &Database) {
    let mut batch = Batch::new();
    batch
        .put(&USERS, "k", "1", Expect::Absent)
        .put(&USERS, "k", "2", Expect::Equals(b"1".to_vec()))
        .delete(&USERS, "k", Expect::Present)
        .put(&USERS, "k", "3", Expect::Absent);
    db.apply(&batch).unwrap();
    assert_eq!(db.table(&USERS).get("k").unwrap(), Some(b"3".to_vec()));
    // The same sequence against a key that now exists fails at its first op, whole.
    expect_conflict(db.apply(&batch));
    assert_eq!(db.table(&USERS).get("k").unwrap(), Some(b"3".to_vec()));
}

fn concurrent_insert_if_absent_has_exactly_one_winner(db: &Database) {
    const THREADS: usize = 8;
    for round in 0..10 {
        let key = format!("claim/{round}");
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (db, barrier, key) = (db.clone(), barrier.clone(), key.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let won = db
                        .table(&USERS)
                        .insert_new(key, format!("thread {i}"))
                        .unwrap();
                    (i, won)
                })
            })
            .collect();
        let winners: Vec<usize> = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|(_, won)| *won)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let stored = db.table(&USERS).get(&key).unwrap().unwrap();
        assert_eq!(stored, format!("thread {}", winners[0]).into_bytes());
    }
}

fn concurrent_compare_and_swap_loses_no_update(db: &Database) {
    const THREADS: u64 = 8;
    const EACH: u64 = 15;
    let t = db.table(&USERS);
    t.put("counter", be(0)).unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let t = t.clone();
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    loop {
                        let old = t.get("counter").unwrap().unwrap();
                        let n = u64::from_be_bytes(old.as_slice().try_into().unwrap());
                        if t.swap("counter", &old, be(n + 1)).unwrap() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(t.get("counter").unwrap(), Some(be(THREADS * EACH)));
}

fn nul_bytes_and_8_mib_values_round_trip(db: &Database) {
    let t = db.table(&USERS);
    let nul_key = b"a\0b\0".to_vec();
    let nul_value = b"\0{\"x\":\"\0\"}\0\xff\xfe".to_vec();
    t.put(nul_key.clone(), nul_value.clone()).unwrap();
    assert_eq!(t.get(&nul_key).unwrap(), Some(nul_value.clone()));
    assert!(t.swap(nul_key.clone(), &nul_value, b"\0".to_vec()).unwrap());
    let big: Vec<u8> = (0..8 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    t.put("big", big.clone()).unwrap();
    assert_eq!(t.get("big").unwrap().as_deref(), Some(big.as_slice()));
    assert!(t.swap("big", &big, "small").unwrap());
    let rows = t.scan(&Scan::prefix(b"a\0".to_vec())).unwrap();
    assert_eq!(rows, vec![(nul_key, b"\0".to_vec())]);
}

fn typed_columns_are_accepted_and_checked(db: &Database) {
    let mut batch = Batch::new();
    let record = "{\"state\":\"run\\u0000ning\",\"actor\":\"alice\",\"created_ms\":1700000000000}";
    batch.put(&RUNS, "r1", record, Expect::Absent);
    // A record without the fields leaves the columns empty.
    batch.put(&RUNS, "r2", "{}", Expect::Absent);
    db.apply(&batch).unwrap();
    assert_eq!(
        db.table(&RUNS).get("r1").unwrap(),
        Some(record.as_bytes().to_vec())
    );
    assert_eq!(db.table(&RUNS).all().unwrap().len(), 2);
}

fn records(bytes: Vec<Vec<u8>>) -> Vec<TestRecord> {
    bytes
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect()
}

/// The records of a query's `(seq, bytes)` answer, checking each seq is its record's.
fn queried(found: Vec<(u64, Vec<u8>)>) -> Vec<TestRecord> {
    let seqs: Vec<u64> = found.iter().map(|(seq, _)| *seq).collect();
    let records = records(found.into_iter().map(|(_, b)| b).collect());
    assert_eq!(seqs, records.iter().map(|r| r.seq).collect::<Vec<_>>());
    records
}

fn audit_commit_tip_range_and_query_agree_with_a_model(db: &Database) {
    let backend = db.backend();
    assert_eq!(backend.audit_tip().unwrap(), AuditTip::default());
    let mut all = Vec::new();
    let mut i = 0;
    for size in [1, 3, 7, 1, 20] {
        let specs: Vec<Spec> = (i..i + size).map(spec).collect();
        let (sealed, outcomes) = commit(db, &specs, &[]).unwrap();
        assert!(outcomes.is_empty());
        all.extend(sealed.rows.iter().map(|r| r.canonical.clone()));
        i += size;
        let tip = backend.audit_tip().unwrap();
        assert_eq!(tip.last.as_ref(), all.last());
        assert_eq!(tip.checkpoint, Some(sealed.checkpoint));
    }
    let model = records(all.clone());
    assert_eq!(model.len(), 32);
    assert!(model.iter().enumerate().all(|(i, r)| r.seq == i as u64));

    let range = backend.audit_range(5, 4).unwrap();
    assert_eq!(
        range.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [5, 6, 7, 8]
    );
    assert_eq!(range[0].1, all[5]);
    assert_eq!(backend.audit_range(30, 100).unwrap().len(), 2);
    assert!(backend.audit_range(32, 100).unwrap().is_empty());
    assert!(backend.audit_range(u64::MAX, 100).unwrap().is_empty());

    let runs = [None, Some("run-0"), Some("run-2"), Some("nope")];
    let actors = [None, Some("bob")];
    let actions = [None, Some("exec"), Some("approve")];
    let resources = [None, Some("host-1")];
    let times = [
        (None, None),
        (Some(1_050), None),
        (Some(1_050), Some(1_200)),
    ];
    for run in runs {
        for actor in actors {
            for action in actions {
                for resource in resources {
                    for (since, until) in times {
                        for (after, limit) in [(None, 100), (Some(10), 100), (Some(3), 2)] {
                            let query = AuditQuery {
                                run_id: run.map(str::to_owned),
                                actor: actor.map(str::to_owned),
                                action: action.map(str::to_owned),
                                resource: resource.map(str::to_owned),
                                since_ms: since,
                                until_ms: until,
                                after_seq: after,
                                limit,
                            };
                            let want: Vec<&TestRecord> = model
                                .iter()
                                .filter(|r| {
                                    run.is_none_or(|x| r.run_id.as_deref() == Some(x))
                                        && actor.is_none_or(|x| r.actor == x)
                                        && action.is_none_or(|x| r.action == x)
                                        && resource.is_none_or(|x| r.target.as_deref() == Some(x))
                                        && since.is_none_or(|t| r.time_ms >= t)
                                        && until.is_none_or(|t| r.time_ms <= t)
                                        && after.is_none_or(|s| r.seq > s)
                                })
                                .take(limit)
                                .collect();
                            let got = queried(backend.audit_query(&query).unwrap());
                            assert_eq!(got.iter().collect::<Vec<_>>(), want, "{query:?}");
                        }
                    }
                }
            }
        }
    }
    // Paging with the cursor visits each matching record once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = queried(
            backend
                .audit_query(&AuditQuery {
                    actor: Some("alice".into()),
                    after_seq: after,
                    limit: 3,
                    ..AuditQuery::default()
                })
                .unwrap(),
        );
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        seen.extend(page.into_iter().map(|r| r.seq));
    }
    let alice: Vec<u64> = model
        .iter()
        .filter(|r| r.actor == "alice")
        .map(|r| r.seq)
        .collect();
    assert_eq!(seen, alice);
}

fn audit_then_conflict_is_skipped_and_records_still_commit(db: &Database) {
    db.table(&USERS).put("taken", "x").unwrap();
    let mut first = Batch::new();
    first.put(&USERS, "a", "1", Expect::Absent);
    let mut conflicting = Batch::new();
    conflicting
        .put(&TARGETS, "half", "1", Expect::Any)
        .put(&USERS, "taken", "2", Expect::Absent);
    let mut last = Batch::new();
    last.put(&USERS, "b", "1", Expect::Absent);
    let specs: Vec<Spec> = (0..2).map(spec).collect();
    let (sealed, outcomes) = commit(db, &specs, &[first, conflicting, last]).unwrap();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    assert!(
        matches!(&outcomes[1], Err(e) if e.is_conflict()),
        "{outcomes:?}"
    );
    assert_eq!(db.table(&USERS).get("a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.table(&USERS).get("b").unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.table(&USERS).get("taken").unwrap(), Some(b"x".to_vec()));
    assert_eq!(db.table(&TARGETS).get("half").unwrap(), None);
    let stored = db.backend().audit_range(0, 10).unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].1, sealed.rows[1].canonical);
}

fn audit_seal_error_or_empty_seal_writes_nothing(db: &Database) {
    commit(db, &[spec(0)], &[]).unwrap();
    let before = db.backend().audit_tip().unwrap();
    let mut then = Batch::new();
    then.put(&USERS, "after-seal", "1", Expect::Any);
    let then = [then];
    let err = db
        .backend()
        .audit_commit(
            &mut |_: &AuditTip| Err("signing key unavailable".into()),
            &then,
        )
        .unwrap_err();
    assert!(err.to_string().contains("signing key unavailable"), "{err}");
    let (sealed, outcomes) = commit(db, &[], &then).unwrap();
    assert!(sealed.rows.is_empty() && outcomes.is_empty());
    assert_eq!(db.backend().audit_tip().unwrap(), before);
    assert_eq!(db.backend().audit_range(0, 10).unwrap().len(), 1);
    assert_eq!(db.table(&USERS).get("after-seal").unwrap(), None);
}
