//! PostgreSQL-only behaviour, on the test cluster: connecting (unreachable server, password
//! kept out of errors and locations), the schema (versions, every table, a newer schema
//! refused, the audit trigger, the server role's grants), lost connections (nothing
//! half-written), several backends over one database (one gapless audit chain), and the
//! audit query's index.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::testing::{self, Locker, execute, fresh_database, query, try_execute};
use super::{PgBackend, PgOptions, migrate, server_role_grants, status};
use crate::store::conformance_tests::{Fixture, RUNS, TestRecord, USERS, commit, spec};
use crate::store::{AuditQuery, AuditTip, Batch, ColumnValue, Database, Expect, Op, StoreError};

/// A put with explicit typed column values (as a table's `columns_of` would give them).
fn put_with(
    batch: &mut Batch,
    table: &'static crate::store::TableDef,
    key: &str,
    columns: Vec<ColumnValue>,
) {
    batch.ops.push(Op::Put {
        table,
        key: key.into(),
        value: b"{}".to_vec(),
        columns,
        expect: Expect::Any,
    });
}

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn unreachable_database_is_unavailable_quickly_and_never_shows_the_password() {
    let url = format!(
        "postgres://warden:hunter2-secret@127.0.0.1:{}/warden",
        closed_port()
    );
    let start = Instant::now();
    let err = PgBackend::connect(&url).err().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("postgres://warden@127.0.0.1:"), "{shown}");
    assert!(shown.contains("refused"), "{shown}");
    for err in [migrate(&url).unwrap_err(), status(&url).unwrap_err()] {
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(!format!("{err:?}").contains("hunter2"));
    }
}

#[test]
fn a_server_that_accepts_but_never_answers_times_out() {
    // The kernel completes the TCP handshake for the backlog; nothing ever replies.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://warden:pw-x@{}/warden",
        silent.local_addr().unwrap()
    );
    let options = PgOptions {
        connect_timeout: Duration::from_secs(1),
        ..PgOptions::default()
    };
    let start = Instant::now();
    let err = PgBackend::connect_with(&url, &options).err().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("no answer"), "{err}");
}

#[test]
fn location_and_debug_output_leave_the_password_out() {
    let url = fresh_database().replacen("://warden@", "://warden:sekrit-pw@", 1);
    let fixture_url = url.replacen(":sekrit-pw", "", 1);
    let db = Database::from_backend(Arc::new(PgBackend::connect(&url).unwrap()));
    assert_eq!(db.backend().location(), fixture_url);
    assert!(!format!("{db:?}").contains("sekrit"));
    assert_eq!(status(&url).unwrap().location, fixture_url);
    drop(db);
    testing::drop_database(&fixture_url);
}

#[test]
fn migrations_apply_once_and_report_their_versions() {
    let url = fresh_database();
    let now = super::migrations::BINARY_SCHEMA_VERSION;
    assert_eq!(status(&url).unwrap().schema_version, 0);
    assert_eq!(migrate(&url).unwrap(), (0, now));
    assert_eq!(migrate(&url).unwrap(), (now, now));
    let st = status(&url).unwrap();
    assert_eq!((st.schema_version, st.binary_version), (now, now));
    assert!(
        st.server_version.starts_with(|c: char| c.is_ascii_digit()),
        "{st:?}"
    );
    testing::drop_database(&url);
}

#[test]
fn a_version_1_schema_is_upgraded_with_its_rows_kept() {
    let url = fresh_database();
    migrate(&url).unwrap();
    // Back to what a version-1 server left: no bridge, trigger or console tables, version 1
    // recorded.
    execute(
        &url,
        "DROP TABLE warden.bridge_tokens, warden.bridges, warden.bridges_seen, \
         warden.triggers, warden.trigger_state, warden.trigger_replay, warden.trigger_bodies, \
         warden.console_sessions; \
         DELETE FROM warden.schema_version WHERE version > 1; \
         INSERT INTO warden.users (key, value) VALUES ('\\x6b'::bytea, '\\x76'::bytea)",
    );
    assert_eq!(status(&url).unwrap().schema_version, 1);
    let now = super::migrations::BINARY_SCHEMA_VERSION;
    assert_eq!(migrate(&url).unwrap(), (1, now));
    let rows = query(&url, "SELECT count(*) FROM warden.bridges").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("0"));
    let rows = query(&url, "SELECT count(*) FROM warden.users").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("1"));
    testing::drop_database(&url);
}

#[test]
fn servers_starting_at_once_migrate_once() {
    let url = fresh_database();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgBackend::connect(&url).map(drop))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    // One row per migration: each applied once.
    let rows = query(&url, "SELECT count(*) FROM warden.schema_version").unwrap();
    let versions = super::migrations::BINARY_SCHEMA_VERSION.to_string();
    assert_eq!(rows[0][0].as_deref(), Some(versions.as_str()));
    testing::drop_database(&url);
}

#[test]
fn a_schema_from_a_newer_warden_is_refused() {
    let f = Fixture::postgres();
    let url = f.url.clone().unwrap();
    execute(&url, "INSERT INTO warden.schema_version VALUES (999, 0)");
    let want = format!(
        "database schema version 999 is newer than this warden ({}); upgrade warden",
        super::BINARY_SCHEMA_VERSION
    );
    for err in [
        PgBackend::connect(&url).err().unwrap(),
        migrate(&url).unwrap_err(),
    ] {
        assert!(
            matches!(&err, StoreError::Incompatible(m) if *m == want),
            "{err:?}"
        );
    }
    assert_eq!(status(&url).unwrap().schema_version, 999);
}

#[test]
fn every_known_table_exists_with_its_typed_columns() {
    let f = Fixture::postgres();
    let url = f.url.clone().unwrap();
    for table in super::tables::TABLES {
        let sql = format!(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_schema = 'warden' AND table_name = '{}' ORDER BY ordinal_position",
            table.name
        );
        let columns: Vec<(String, String)> = query(&url, &sql)
            .unwrap()
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
            .collect();
        let mut want = vec![
            ("key".to_owned(), "bytea".to_owned()),
            ("value".into(), "bytea".into()),
        ];
        for (name, ty) in table.columns {
            let ty = match ty {
                super::tables::ColumnType::Text => "text",
                super::tables::ColumnType::BigInt => "bigint",
            };
            want.push(((*name).to_owned(), ty.to_owned()));
        }
        assert_eq!(columns, want, "{}", table.name);
    }
    // Every table a domain module keeps is in the schema, with the columns it declares.
    for def in crate::store::catalog::tables() {
        let schema = super::tables::TABLES.iter().find(|t| t.name == def.name);
        let Some(schema) = schema else {
            panic!("table {} is missing from the PostgreSQL schema", def.name)
        };
        let names: Vec<&str> = schema.columns.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, def.columns, "{}", def.name);
    }
}

#[test]
fn unknown_tables_and_mistyped_columns_are_refused_before_anything_is_written() {
    static ELSEWHERE: crate::store::TableDef = crate::store::TableDef {
        name: "users; DROP TABLE warden.users",
        columns: &[],
        columns_of: None,
    };
    let f = Fixture::postgres();
    let db = &f.db;
    assert!(matches!(
        db.table(&ELSEWHERE).get("k"),
        Err(StoreError::Incompatible(_))
    ));
    assert!(matches!(
        db.table(&ELSEWHERE).all(),
        Err(StoreError::Incompatible(_))
    ));
    let mut batch = Batch::new();
    batch
        .put(&USERS, "u", "1", Expect::Any)
        .put(&ELSEWHERE, "k", "v", Expect::Any);
    assert!(matches!(db.apply(&batch), Err(StoreError::Incompatible(_))));
    let mistyped = |columns: Vec<ColumnValue>| {
        let mut batch = Batch::new();
        batch.put(&USERS, "u", "1", Expect::Any);
        put_with(&mut batch, &RUNS, "r", columns);
        db.apply(&batch)
    };
    let text = |s: &str| ColumnValue::Text(s.into());
    for columns in [
        vec![
            ColumnValue::Int(1),
            ColumnValue::Null,
            ColumnValue::Null,
            ColumnValue::Null,
        ],
        vec![text("a"), text("b"), text("c"), text("not a number")],
        vec![text("only one")],
    ] {
        let err = mistyped(columns).unwrap_err();
        assert!(matches!(err, StoreError::Incompatible(_)), "{err:?}");
    }
    // A table definition naming a column the schema lacks.
    static ODD_RUNS: crate::store::TableDef = crate::store::TableDef {
        name: "runs",
        columns: &["state", "owner"],
        columns_of: None,
    };
    let mut batch = Batch::new();
    batch.put(&USERS, "u", "1", Expect::Any);
    put_with(
        &mut batch,
        &ODD_RUNS,
        "r",
        vec![ColumnValue::Null, ColumnValue::Null],
    );
    let err = db.apply(&batch).unwrap_err();
    assert!(
        matches!(&err, StoreError::Incompatible(m) if m.contains("owner")),
        "{err:?}"
    );
    assert_eq!(db.table(&USERS).get("u").unwrap(), None);
    assert!(db.table(&RUNS).all().unwrap().is_empty());
    let url = f.url.clone().unwrap();
    assert!(query(&url, "SELECT 1 FROM warden.users").is_ok());
}

#[test]
fn typed_run_columns_land_in_real_columns_without_nul() {
    let f = Fixture::postgres();
    let mut batch = Batch::new();
    put_with(
        &mut batch,
        &RUNS,
        "r1",
        vec![
            ColumnValue::Text("run\0ning".into()),
            ColumnValue::Text("proc-1".into()),
            ColumnValue::Null,
            ColumnValue::Int(-5),
        ],
    );
    f.db.apply(&batch).unwrap();
    let rows = query(
        f.url.as_deref().unwrap(),
        "SELECT state, process_id, actor, created_ms FROM warden.runs",
    )
    .unwrap();
    assert_eq!(
        rows,
        vec![vec![
            Some("running".into()),
            Some("proc-1".into()),
            None,
            Some("-5".into())
        ]]
    );
}

#[test]
fn audit_rows_cannot_be_updated_deleted_or_truncated() {
    let f = Fixture::postgres();
    let url = f.url.clone().unwrap();
    commit(&f.db, &(0..3).map(spec).collect::<Vec<_>>(), &[]).unwrap();
    let before = f.db.backend().audit_range(0, 10).unwrap();
    for sql in [
        "UPDATE warden.audit_records SET actor = 'mallory' WHERE seq = 1",
        "UPDATE warden.audit_records SET record = record || '\\x00'::bytea",
        "DELETE FROM warden.audit_records WHERE seq = 2",
        "DELETE FROM warden.audit_records",
        "TRUNCATE warden.audit_records",
        "DELETE FROM warden.audit_head",
        "TRUNCATE warden.audit_head",
    ] {
        let err = try_execute(&url, sql).unwrap_err();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(f.db.backend().audit_range(0, 10).unwrap(), before);
    assert!(f.db.backend().audit_tip().unwrap().checkpoint.is_some());
}

#[test]
fn the_server_role_can_work_but_cannot_rewrite_the_audit_log() {
    let f = Fixture::postgres();
    let owner_url = f.url.clone().unwrap();
    let role = format!(
        "warden_srv_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    execute(&owner_url, &format!("CREATE ROLE {role} LOGIN"));
    execute(&owner_url, &server_role_grants(&role).unwrap());
    let url = owner_url.replacen("://warden@", &format!("://{role}@"), 1);
    let result = std::panic::catch_unwind(|| {
        let db = Database::from_backend(Arc::new(PgBackend::connect(&url).unwrap()));
        let mut then = Batch::new();
        then.put(&USERS, "u", "1", Expect::Absent);
        commit(&db, &[spec(0), spec(1)], &[then]).unwrap();
        assert!(db.table(&USERS).swap("u", b"1", "2").unwrap());
        assert!(db.table(&USERS).remove("u").unwrap());
        assert_eq!(
            db.backend()
                .audit_query(&AuditQuery {
                    limit: 10,
                    ..AuditQuery::default()
                })
                .unwrap()
                .len(),
            2
        );
        for sql in [
            "UPDATE warden.audit_records SET actor = 'mallory'",
            "DELETE FROM warden.audit_records",
            "TRUNCATE warden.audit_records",
            "ALTER TABLE warden.audit_records DISABLE TRIGGER USER",
            "DROP TRIGGER audit_records_no_change ON warden.audit_records",
            "INSERT INTO warden.schema_version VALUES (99, 0)",
            "CREATE TABLE warden.extra (x int)",
        ] {
            let err = try_execute(&url, sql).unwrap_err();
            assert!(
                err.contains("permission denied") || err.contains("must be owner"),
                "{sql}: {err}"
            );
        }
        assert_eq!(db.backend().audit_range(0, 10).unwrap().len(), 2);
    });
    drop(f);
    let _ = try_execute(
        &testing::cluster_url(),
        &format!("DROP ROLE IF EXISTS {role}"),
    );
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `write` on another thread, kills its connection once it waits on `locker`'s lock,
/// and returns what `write` returned.
fn killed_while_blocked<T: Send + 'static>(
    url: &str,
    write: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let handle = std::thread::spawn(write);
    let pid = testing::wait_for_blocked_warden(url);
    execute(url, &format!("SELECT pg_terminate_backend({pid})"));
    handle.join().unwrap()
}

#[test]
fn a_connection_killed_mid_batch_writes_nothing_and_the_backend_recovers() {
    let f = Fixture::postgres();
    let url = f.url.clone().unwrap();
    f.db.table(&USERS).put("locked", "old").unwrap();
    let locker = Locker::hold(
        &url,
        "SELECT 1 FROM warden.users WHERE key = 'locked'::bytea FOR UPDATE",
    );
    let db = f.db.clone();
    let result = killed_while_blocked(&url, move || {
        let mut batch = Batch::new();
        batch
            .put(&USERS, "new-1", "x", Expect::Absent)
            .put(&RUNS, "run-1", "x", Expect::Any)
            .put(&USERS, "locked", "new", Expect::Any);
        db.apply(&batch)
    });
    drop(locker);
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(f.db.table(&USERS).get("new-1").unwrap(), None);
    assert_eq!(f.db.table(&RUNS).get("run-1").unwrap(), None);
    assert_eq!(
        f.db.table(&USERS).get("locked").unwrap(),
        Some(b"old".to_vec())
    );
    f.db.table(&USERS).put("after", "1").unwrap();
}

#[test]
fn a_connection_killed_mid_audit_commit_writes_no_record_and_no_follow_up() {
    let f = Fixture::postgres();
    let url = f.url.clone().unwrap();
    commit(&f.db, &[spec(0)], &[]).unwrap();
    let before = f.db.backend().audit_tip().unwrap();
    f.db.table(&USERS).put("locked", "old").unwrap();
    // Killed inside a `then` batch, after the records were inserted in the transaction.
    let locker = Locker::hold(
        &url,
        "SELECT 1 FROM warden.users WHERE key = 'locked'::bytea FOR UPDATE",
    );
    let db = f.db.clone();
    let result = killed_while_blocked(&url, move || {
        let mut first = Batch::new();
        first.put(&USERS, "first", "1", Expect::Any);
        let mut blocked = Batch::new();
        blocked.put(&USERS, "locked", "new", Expect::Any);
        commit(&db, &[spec(1), spec(2)], &[first, blocked]).map(drop)
    });
    drop(locker);
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(f.db.backend().audit_tip().unwrap(), before);
    assert_eq!(f.db.backend().audit_range(0, 10).unwrap().len(), 1);
    assert_eq!(f.db.table(&USERS).get("first").unwrap(), None);

    // Killed while queued for the chain's head lock: the seal never runs.
    let locker = Locker::hold(
        &url,
        "SELECT 1 FROM warden.audit_head WHERE id = 1 FOR UPDATE",
    );
    let db = f.db.clone();
    let result = killed_while_blocked(&url, move || {
        db.backend()
            .audit_commit(
                &mut |_: &AuditTip| panic!("sealed without the head lock"),
                &[],
            )
            .map(drop)
    });
    drop(locker);
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(f.db.backend().audit_tip().unwrap(), before);
    commit(&f.db, &[spec(1)], &[]).unwrap();
    assert_eq!(f.db.backend().audit_range(0, 10).unwrap().len(), 2);
}

#[test]
fn two_backends_on_one_database_append_one_gapless_chain() {
    const TOTAL: usize = 500;
    const THREADS: usize = 8;
    let f = Fixture::postgres();
    let url = f.url.clone().unwrap();
    let second = Database::from_backend(Arc::new(PgBackend::connect(&url).unwrap()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = if t % 2 == 0 {
                f.db.clone()
            } else {
                second.clone()
            };
            std::thread::spawn(move || {
                let mut left = TOTAL / THREADS + usize::from(t < TOTAL % THREADS);
                let mut size = 1;
                while left > 0 {
                    let n = size.min(left);
                    let specs: Vec<_> = (0..n as u64).map(|i| spec(i + t as u64)).collect();
                    let (sealed, _) = commit(&db, &specs, &[]).unwrap();
                    assert_eq!(sealed.rows.len(), n);
                    left -= n;
                    size = size % 3 + 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stored = second.backend().audit_range(0, 10_000).unwrap();
    assert_eq!(stored.len(), TOTAL);
    let mut prev = "genesis".to_owned();
    for (i, (seq, bytes)) in stored.iter().enumerate() {
        let record: TestRecord = serde_json::from_slice(bytes).unwrap();
        assert_eq!((*seq, record.seq), (i as u64, i as u64));
        assert_eq!(record.prev_hash, prev, "record {i}");
        prev = record.hash;
    }
    assert_eq!(
        f.db.backend().audit_tip().unwrap().last.as_ref(),
        stored.last().map(|(_, b)| b)
    );
}

#[test]
fn audit_query_by_run_uses_its_index() {
    let f = Fixture::postgres();
    let url = f.url.clone().unwrap();
    for chunk in 0..4u64 {
        let specs: Vec<_> = (chunk * 5_000..(chunk + 1) * 5_000)
            .map(|i| {
                let mut s = spec(i);
                s.run_id = Some(format!("run-{}", i % 400));
                s
            })
            .collect();
        commit(&f.db, &specs, &[]).unwrap();
    }
    execute(&url, "ANALYZE warden.audit_records");
    let (sql, _) = super::audit::query_sql(&AuditQuery {
        run_id: Some("run-7".into()),
        limit: 100,
        ..AuditQuery::default()
    });
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let explain = format!(
            "SET plan_cache_mode = {mode}; PREPARE q(bigint, text, bigint) AS {sql}; \
             EXPLAIN EXECUTE q(-1, 'run-7', 100)"
        );
        let plan: Vec<String> = query(&url, &explain)
            .unwrap()
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect();
        assert!(
            plan.iter().any(|l| l.contains("audit_records_run")),
            "{mode}: {plan:#?}"
        );
    }
    let got =
        f.db.backend()
            .audit_query(&AuditQuery {
                run_id: Some("run-7".into()),
                limit: 100,
                ..AuditQuery::default()
            })
            .unwrap();
    assert_eq!(got.len(), 50);
}
