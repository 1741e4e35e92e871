//! Tests of the lease store against real sled databases and a real audit log.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tempfile::TempDir;

use super::*;
use crate::audit::{AuditFilter, AuditRecord};

struct Fixture {
    dir: TempDir,
    db: sled::Db,
    audit: AuditLog,
    store: LeaseStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        Self::open(dir, db)
    }

    fn open(dir: TempDir, db: sled::Db) -> Self {
        let audit = AuditLog::open(
            &crate::store::sled_db(&db),
            SigningKey::from_bytes(&[7; 32]),
        )
        .unwrap();
        let store = LeaseStore::open(&crate::store::sled_db(&db), audit.clone()).unwrap();
        Fixture {
            dir,
            db,
            audit,
            store,
        }
    }

    /// Closes everything and opens the database again from disk.
    fn reopen(self) -> Self {
        let Fixture {
            dir,
            db,
            audit,
            store,
        } = self;
        drop((store, audit, db));
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

    fn revocations(&self) -> Vec<AuditRecord> {
        let filter = AuditFilter {
            action: Some(REVOKED_ACTION.into()),
            ..AuditFilter::default()
        };
        self.audit.query(&filter).unwrap()
    }
}

fn targets(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn far_deadline() -> u64 {
    now_ms() + 3_600_000
}

async fn issue(store: &LeaseStore, run: &str, credential: &str, deadline_ms: u64) -> Lease {
    let granted = targets(&["t0", "t1"]);
    store
        .issue(NewLease {
            run_id: run,
            actor: "alice",
            credential,
            targets: &granted,
            deadline_ms,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn issued_lease_allows_its_run_credential_and_targets_only() {
    let f = Fixture::new();
    let lease = issue(&f.store, "run-1", "pw", far_deadline()).await;
    assert_eq!(lease.status(), LeaseStatus::Active);
    assert_eq!(lease.targets, targets(&["t0", "t1"]));

    let ok = f.store.check(&lease.id, "run-1", "pw", "t1").unwrap();
    assert_eq!(ok, lease);
    let deny = |run: &str, cred: &str, target: &str| {
        f.store.check(&lease.id, run, cred, target).unwrap_err()
    };
    assert_eq!(
        deny("run-1", "pw", "t9"),
        LeaseDenial::TargetOutside {
            id: lease.id.clone(),
            target: "t9".into()
        }
    );
    assert_eq!(
        deny("run-2", "pw", "t0"),
        LeaseDenial::OtherRun(lease.id.clone())
    );
    assert_eq!(
        deny("run-1", "key", "t0"),
        LeaseDenial::OtherCredential(lease.id.clone())
    );
    assert_eq!(
        f.store.check("no-such-lease", "run-1", "pw", "t0"),
        Err(LeaseDenial::Unknown("no-such-lease".into()))
    );
}

#[tokio::test]
async fn lease_never_outlives_the_run_deadline_and_is_refused_once_expired() {
    let f = Fixture::new();
    let deadline = now_ms() + 60_000;
    let lease = issue(&f.store, "run-1", "pw", deadline).await;
    assert_eq!(lease.expires_ms, deadline);
    assert!(
        f.store
            .check_at(&lease.id, "run-1", "pw", "t0", deadline - 1)
            .is_ok()
    );
    assert_eq!(
        f.store.check_at(&lease.id, "run-1", "pw", "t0", deadline),
        Err(LeaseDenial::Expired(lease.id.clone()))
    );
    assert_eq!(lease.status_at(deadline), LeaseStatus::Expired);
}

#[tokio::test]
async fn max_ttl_shortens_a_lease_but_never_lengthens_it() {
    let f = Fixture::new();
    let short = f.store.clone().with_max_ttl(Duration::from_millis(50));
    let lease = issue(&short, "run-1", "pw", far_deadline()).await;
    assert!(lease.expires_ms <= lease.issued_ms + 50, "{lease:?}");
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        short.check(&lease.id, "run-1", "pw", "t0"),
        Err(LeaseDenial::Expired(lease.id.clone()))
    );
    let early = now_ms() + 10;
    let bounded = issue(&short, "run-1", "pw", early).await;
    assert_eq!(bounded.expires_ms, early, "the run deadline still wins");
}

#[tokio::test]
async fn revoked_lease_is_refused_and_its_revocation_audited_once() {
    let f = Fixture::new();
    let lease = issue(&f.store, "run-1", "pw", far_deadline()).await;
    let revoked = f
        .store
        .revoke(&lease.id, "bob", "incident 42")
        .await
        .unwrap();
    let r = revoked.revoked.clone().expect("revocation recorded");
    assert_eq!((r.by.as_str(), r.reason.as_str()), ("bob", "incident 42"));
    assert_eq!(revoked.status(), LeaseStatus::Revoked);
    assert_eq!(
        f.store.check(&lease.id, "run-1", "pw", "t0"),
        Err(LeaseDenial::Revoked {
            id: lease.id.clone(),
            by: "bob".into(),
            reason: "incident 42".into()
        })
    );
    assert!(matches!(
        f.store.revoke(&lease.id, "bob", "again").await,
        Err(LeaseError::AlreadyRevoked(_))
    ));
    assert!(matches!(
        f.store.revoke("missing", "bob", "x").await,
        Err(LeaseError::NotFound(_))
    ));
    let records = f.revocations();
    assert_eq!(records.len(), 1, "{records:?}");
    let entry = &records[0].entry;
    assert_eq!(entry.actor, "bob");
    assert_eq!(entry.run_id.as_deref(), Some("run-1"));
    assert_eq!(entry.credential.as_deref(), Some("pw"));
    assert_eq!(
        entry.detail.as_deref(),
        Some(format!("lease {}: incident 42", lease.id).as_str())
    );
}

#[tokio::test]
async fn revoke_refuses_reasons_that_could_forge_log_lines_or_bloat_them() {
    let f = Fixture::new();
    let lease = issue(&f.store, "run-1", "pw", far_deadline()).await;
    for (by, reason) in [
        ("bob", "line\nforged"),
        ("", "no actor"),
        ("bob", &"x".repeat(MAX_REASON_BYTES + 1)),
    ] {
        assert!(
            matches!(
                f.store.revoke(&lease.id, by, reason).await,
                Err(LeaseError::Invalid(_))
            ),
            "{by:?} {reason:?}"
        );
    }
    assert!(f.store.check(&lease.id, "run-1", "pw", "t0").is_ok());
    assert!(f.revocations().is_empty());
}

#[tokio::test]
async fn revoke_run_revokes_only_that_runs_active_leases() {
    let f = Fixture::new();
    let a = issue(&f.store, "run-1", "pw", far_deadline()).await;
    let b = issue(&f.store, "run-1", "key", far_deadline()).await;
    let other = issue(&f.store, "run-10", "pw", far_deadline()).await;
    f.store.revoke(&b.id, "bob", "early").await.unwrap();

    let revoked = f
        .store
        .revoke_run("run-1", "system:run-end", "run ended")
        .await
        .unwrap();
    let ids: Vec<_> = revoked.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, [a.id.as_str()], "b was revoked already");
    assert!(f.store.check(&a.id, "run-1", "pw", "t0").is_err());
    assert!(
        f.store.check(&other.id, "run-10", "pw", "t0").is_ok(),
        "run-10 shares a prefix with run-1 but is another run"
    );
    // b keeps its first revocation.
    let b_now = f.store.get(&b.id).unwrap().unwrap();
    assert_eq!(b_now.revoked.unwrap().reason, "early");
    let listed: Vec<_> = f
        .store
        .list_for_run("run-1")
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&a.id) && listed.contains(&b.id));
    assert_eq!(f.revocations().len(), 2);
}

#[tokio::test]
async fn a_run_is_issued_at_most_the_capped_number_of_leases() {
    let f = Fixture::new();
    for _ in 0..MAX_LEASES_PER_RUN {
        issue(&f.store, "run-1", "pw", far_deadline()).await;
    }
    let granted = targets(&["t0"]);
    let over = f
        .store
        .issue(NewLease {
            run_id: "run-1",
            actor: "alice",
            credential: "pw",
            targets: &granted,
            deadline_ms: far_deadline(),
        })
        .await;
    assert!(matches!(over, Err(LeaseError::TooMany(_))), "{over:?}");
    assert_eq!(
        f.store.list_for_run("run-1").unwrap().len(),
        MAX_LEASES_PER_RUN
    );
}

#[tokio::test]
async fn leases_and_revocations_survive_reopening_and_restart_revokes_what_is_left() {
    let f = Fixture::new();
    let kept = issue(&f.store, "run-1", "pw", far_deadline()).await;
    let gone = issue(&f.store, "run-2", "pw", far_deadline()).await;
    f.store.revoke(&gone.id, "bob", "done").await.unwrap();

    let f = f.reopen();
    assert_eq!(f.store.get(&kept.id).unwrap(), Some(kept.clone()));
    assert_eq!(
        f.store.get(&gone.id).unwrap().unwrap().status(),
        LeaseStatus::Revoked
    );
    assert!(f.store.check(&kept.id, "run-1", "pw", "t0").is_ok());

    let revoked = f
        .store
        .revoke_all_active("system:recovery", "server restarted")
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].id, kept.id);

    let f = f.reopen();
    let after = f.store.get(&kept.id).unwrap().unwrap();
    assert_eq!(after.revoked.unwrap().reason, "server restarted");
    assert!(
        f.store
            .revoke_all_active("system:recovery", "server restarted")
            .await
            .unwrap()
            .is_empty(),
        "nothing is left active"
    );
    assert_eq!(f.revocations().len(), 2);
}

#[tokio::test]
async fn a_corrupt_lease_is_refused_not_allowed() {
    let f = Fixture::new();
    let lease = issue(&f.store, "run-1", "pw", far_deadline()).await;
    f.db.open_tree(LEASES.name)
        .unwrap()
        .insert(lease.id.as_bytes(), b"{not json".as_slice())
        .unwrap();
    assert_eq!(
        f.store.check(&lease.id, "run-1", "pw", "t0"),
        Err(LeaseDenial::Unreadable(lease.id.clone()))
    );
    let _ = &f.dir;
}
