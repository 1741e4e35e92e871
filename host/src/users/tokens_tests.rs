//! Token lifecycle tests against a real sled database: expiry, enrollment, disable, delete.

use std::collections::BTreeSet;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;

fn store() -> (tempfile::TempDir, UserStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let store = UserStore::open(&crate::store::sled_db(&db)).unwrap();
    store.create_user("alice", BTreeSet::new()).unwrap();
    store
        .create_user("admin", ["privileged-administrator".to_string()].into())
        .unwrap();
    (dir, store)
}

fn request<'a>(user: &'a str, minted_by: &'a str, ttl: Option<Duration>) -> TokenRequest<'a> {
    TokenRequest {
        user,
        label: "t",
        minted_by,
        ttl,
        enrolled_by: None,
    }
}

#[test]
fn every_token_expires_and_an_expired_one_is_told_apart_only_to_the_server() {
    let (_dir, store) = store();
    let default = store.issue_token("alice", "laptop").unwrap();
    let days = (default.info.expires_ms - default.info.created_ms) / 86_400_000;
    assert_eq!(days, 30);
    let short = store
        .issue(&request("alice", "alice", Some(Duration::from_secs(1))))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let presented = short.token.expose_secret();
    assert!(matches!(
        store.authenticate_token(presented).unwrap(),
        Authenticated::Expired(info) if info.id == short.info.id
    ));
    assert_eq!(store.authenticate(presented).unwrap(), None);
    for ttl in [Duration::ZERO, MAX_TOKEN_TTL + Duration::from_secs(1)] {
        assert!(matches!(
            store.issue(&request("alice", "alice", Some(ttl))),
            Err(UserError::InvalidTtl { .. })
        ));
    }
}

#[test]
fn a_token_minted_by_someone_else_is_a_single_use_enrollment() {
    let (_dir, store) = store();
    let enrollment = store.issue(&request("alice", "admin", None)).unwrap();
    assert_eq!(enrollment.info.kind, TokenKind::Enrollment);
    assert_eq!(enrollment.info.minted_by, "admin");
    assert!(matches!(
        store.issue(&request("alice", "admin", Some(MAX_ENROLLMENT_TTL * 2))),
        Err(UserError::InvalidTtl { .. })
    ));
    let own = store.redeem(&enrollment.info, "laptop", None).unwrap();
    assert_eq!(own.info.kind, TokenKind::Full);
    assert_eq!(own.info.minted_by, "alice");
    assert_eq!(own.info.enrolled_by.as_deref(), Some("admin"));
    // Consumed: neither a second redemption nor the old token works.
    assert!(matches!(
        store.redeem(&enrollment.info, "again", None),
        Err(UserError::EnrollmentUsed)
    ));
    assert_eq!(
        store
            .authenticate_token(enrollment.token.expose_secret())
            .unwrap(),
        Authenticated::Invalid
    );
    // A full token cannot be "redeemed" into another.
    assert!(matches!(
        store.redeem(&own.info, "x", None),
        Err(UserError::EnrollmentUsed)
    ));
}

#[test]
fn disabled_and_deleted_users_tokens_stop_at_once_and_names_stay_reserved() {
    let (_dir, store) = store();
    let token = store.issue_token("alice", "ci").unwrap();
    let presented = token.token.expose_secret();
    store.set_disabled("alice", true).unwrap();
    assert_eq!(store.authenticate(presented).unwrap(), None);
    store.set_disabled("alice", false).unwrap();
    assert!(store.authenticate(presented).unwrap().is_some());
    let (tombstone, revoked) = store.delete_user("alice").unwrap();
    assert_eq!(revoked, 1);
    assert!(tombstone.deleted_ms.is_some() && tombstone.roles.is_empty());
    assert_eq!(store.authenticate(presented).unwrap(), None);
    assert!(matches!(
        store.create_user("alice", BTreeSet::new()),
        Err(UserError::UserExists(_))
    ));
    assert!(matches!(
        store.issue_token("alice", "again"),
        Err(UserError::Deleted(_))
    ));
    assert!(matches!(
        store.set_disabled("alice", false),
        Err(UserError::Deleted(_))
    ));
}
