//! The PostgreSQL backend as the server uses it: from inside a tokio runtime (the API's
//! handlers and `#[tokio::test]`s are), over databases from the test cluster helper.

use std::sync::Arc;

use warden_host::store::postgres::{PgBackend, status};
use warden_host::store::{AuditBatch, AuditRow, Batch, Database, Expect, TableDef};
use warden_tests::postgres::fresh_database;

static USERS: TableDef = TableDef {
    name: "users",
    columns: &[],
    columns_of: None,
};

fn connect(url: &str) -> Database {
    Database::from_backend(Arc::new(PgBackend::connect(url).unwrap()))
}

#[test]
fn fresh_databases_are_migrated_and_separate() {
    let (a, b) = (fresh_database(), fresh_database());
    assert_ne!(a, b);
    let (db_a, db_b) = (connect(&a), connect(&b));
    db_a.table(&USERS).put("k", "only in a").unwrap();
    assert_eq!(
        db_a.table(&USERS).get("k").unwrap(),
        Some(b"only in a".to_vec())
    );
    assert_eq!(db_b.table(&USERS).get("k").unwrap(), None);
    assert_eq!(
        status(&a).unwrap().schema_version,
        status(&a).unwrap().binary_version
    );
}

/// A current-thread runtime, as `#[tokio::test]` makes: a backend that called `block_on`
/// (or dropped its own runtime) here would panic.
#[tokio::test]
async fn the_backend_works_and_drops_inside_a_current_thread_runtime() {
    let url = fresh_database();
    let db = connect(&url);
    let mut batch = Batch::new();
    batch.put(&USERS, "k", "v", Expect::Absent);
    db.apply_async(batch.clone()).await.unwrap();
    assert!(db.apply(&batch).unwrap_err().is_conflict());
    let (sealed, _) = db
        .backend()
        .audit_commit(
            &mut |_| {
                Ok(AuditBatch {
                    rows: vec![AuditRow {
                        seq: 0,
                        time_ms: 1,
                        run_id: None,
                        actor: "alice".into(),
                        action: "login".into(),
                        resource: None,
                        credential: None,
                        hash: "h0".into(),
                        prev_hash: "genesis".into(),
                        canonical: b"{}".to_vec(),
                    }],
                    checkpoint: b"c0".to_vec(),
                })
            },
            &[],
        )
        .unwrap();
    assert_eq!(sealed.rows.len(), 1);
    assert_eq!(
        db.backend().audit_tip().unwrap().checkpoint,
        Some(b"c0".to_vec())
    );
    drop(db);
    // Still usable after a backend was dropped inside this runtime.
    assert_eq!(
        connect(&url).table(&USERS).get("k").unwrap(),
        Some(b"v".to_vec())
    );
}
