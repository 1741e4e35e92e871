use std::time::Duration;

use ed25519_dalek::SigningKey;

use super::*;
use crate::store::DataDir;

fn registry() -> (tempfile::TempDir, BridgeRegistry, AuditLog) {
    let dir = tempfile::TempDir::new().expect("dir");
    let data = DataDir::init(&dir.path().join("data")).expect("init");
    let audit = AuditLog::open(&data.db, data.server_key.clone()).expect("audit");
    (dir, BridgeRegistry::open(&data.db, audit.clone()), audit)
}

fn key(n: u8) -> VerifyingKey {
    SigningKey::from_bytes(&[n; 32]).verifying_key()
}

#[tokio::test]
async fn a_token_enrols_exactly_one_bridge_even_when_raced() {
    let (_dir, registry, _) = registry();
    let (token, record) = registry
        .create_token("dmz", Duration::from_secs(60), "admin")
        .await
        .expect("token");
    assert!(token.starts_with(TOKEN_PREFIX));
    assert_eq!(record.zone, "dmz");
    let attempts = (0..8u8).map(|i| {
        let (registry, token) = (registry.clone(), token.clone());
        tokio::spawn(async move { registry.enroll(&token, &key(i + 1), "b", "v1").await })
    });
    let results = futures::future::join_all(attempts).await;
    let won = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(won, 1, "{results:?}");
    assert!(results.iter().all(|r| match r {
        Ok(Err(e)) => matches!(e, RegistryError::TokenUsed),
        _ => true,
    }));
    assert_eq!(registry.list().expect("list").len(), 1);
}

#[tokio::test]
async fn the_token_itself_is_not_stored_and_bad_inputs_are_refused() {
    let (_dir, registry, audit) = registry();
    let (token, _) = registry
        .create_token("dmz", Duration::from_secs(60), "admin")
        .await
        .expect("token");
    let stored: Vec<_> = registry.tokens.all().expect("tokens");
    assert!(stored.iter().all(|(k, v)| {
        !String::from_utf8_lossy(k).contains(&token) && !String::from_utf8_lossy(v).contains(&token)
    }));
    let records = audit.query(&Default::default()).expect("audit");
    assert!(records.iter().all(|r| !format!("{r:?}").contains(&token)));
    for (zone, ttl) in [
        ("bad zone", 60),
        ("", 60),
        ("dmz", 0),
        ("dmz", 8 * 24 * 3600),
    ] {
        assert!(
            registry
                .create_token(zone, Duration::from_secs(ttl), "admin")
                .await
                .is_err(),
            "{zone:?} {ttl}"
        );
    }
    for name in ["", "has space", &"x".repeat(65)] {
        assert!(matches!(
            registry.enroll(&token, &key(1), name, "v1").await,
            Err(RegistryError::Invalid(_))
        ));
    }
    // The refusals did not spend the token.
    registry
        .enroll(&token, &key(1), "b", "v1")
        .await
        .expect("enrol");
}

#[tokio::test]
async fn a_revoked_or_silent_bridge_is_not_alive() {
    let (_dir, registry, _) = registry();
    let (token, _) = registry
        .create_token("dmz", Duration::from_secs(60), "admin")
        .await
        .expect("token");
    let bridge = registry
        .enroll(&token, &key(1), "b", "v1")
        .await
        .expect("enrol");
    let name = holder(&bridge.id);
    let lost_after = Duration::from_secs(30);
    assert!(
        !registry.is_alive(&name, lost_after).expect("alive"),
        "never seen"
    );
    registry.seen(&bridge.id, "v1").expect("seen");
    assert!(registry.is_alive(&name, lost_after).expect("alive"));
    assert!(!registry.is_alive("server-1", lost_after).expect("alive"));
    registry
        .revoke(&bridge.id, "admin", "gone")
        .await
        .expect("revoke");
    assert!(!registry.is_alive(&name, lost_after).expect("alive"));
    assert!(matches!(
        registry.revoke(&bridge.id, "admin", "again").await,
        Err(RegistryError::AlreadyRevoked(_))
    ));
    assert!(matches!(
        registry.revoke("nope", "admin", "x").await,
        Err(RegistryError::NotFound(_))
    ));
}
