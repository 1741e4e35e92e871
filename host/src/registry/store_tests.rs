//! Tests of the module store against real sled databases in temporary directories.

use ed25519_dalek::SigningKey;
use tempfile::TempDir;

use super::*;

struct Fixture {
    _dir: TempDir,
    db: sled::Db,
    store: ModuleStore,
    key: SigningKey,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = ModuleStore::open(&crate::store::sled_db(&db)).unwrap();
        let key = SigningKey::from_bytes(&[7u8; 32]);
        store.trust_publisher("acme", &key.verifying_key()).unwrap();
        Fixture {
            _dir: dir,
            db,
            store,
            key,
        }
    }

    fn signed(&self, manifest: &Manifest) -> Vec<u8> {
        signing::sign(&component(b"hello"), manifest, &self.key).unwrap()
    }
}

/// A minimal component: the header and one small custom section.
fn component(payload: &[u8]) -> Vec<u8> {
    let name = b"test";
    let mut c = b"\0asm\x0d\0\x01\0".to_vec();
    c.push(0);
    c.push(u8::try_from(1 + name.len() + payload.len()).unwrap());
    c.push(u8::try_from(name.len()).unwrap());
    c.extend_from_slice(name);
    c.extend_from_slice(payload);
    c
}

fn manifest(capabilities: &[&str]) -> Manifest {
    let caps = capabilities
        .iter()
        .map(|c| format!("'{c}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Manifest::parse(&format!(
        "name = 'demo'\nversion = '1.0.0'\ndescription = 'd'\ncapabilities = [{caps}]"
    ))
    .unwrap()
}

fn imports(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn stores_a_verified_module_and_returns_record_and_bytes() {
    let f = Fixture::new();
    let signed = f.signed(&manifest(&["log"]));
    let verified = f.store.verify(&signed).unwrap();
    let info = f.store.store(&verified, &signed, "alice").unwrap();
    assert_eq!(info.digest, verified.digest);
    assert_eq!(
        (info.name.as_str(), info.version.as_str()),
        ("demo", "1.0.0")
    );
    assert_eq!(info.description, "d");
    assert_eq!(info.publisher, "acme");
    assert_eq!(info.uploaded_by, "alice");
    assert_eq!(info.size, signed.len() as u64);
    assert!(!info.retired);
    assert_eq!(f.store.get(&info.digest).unwrap(), Some(info.clone()));
    assert_eq!(f.store.bytes(&info.digest).unwrap(), Some(signed));
    assert_eq!(f.store.list().unwrap(), vec![info]);
    assert_eq!(f.store.get("nope").unwrap(), None);
    assert_eq!(f.store.bytes("nope").unwrap(), None);
}

#[test]
fn storing_the_same_module_twice_is_idempotent() {
    let f = Fixture::new();
    let signed = f.signed(&manifest(&["log"]));
    let verified = f.store.verify(&signed).unwrap();
    let first = f.store.store(&verified, &signed, "alice").unwrap();
    let second = f.store.store(&verified, &signed, "bob").unwrap();
    assert_eq!(first, second);
    assert_eq!(f.store.list().unwrap().len(), 1);
}

#[test]
fn refuses_the_same_component_with_a_different_manifest() {
    let f = Fixture::new();
    let signed = f.signed(&manifest(&["log"]));
    let verified = f.store.verify(&signed).unwrap();
    f.store.store(&verified, &signed, "alice").unwrap();
    let broader = f.signed(&manifest(&["log", "ssh"]));
    let verified_broader = f.store.verify(&broader).unwrap();
    assert_eq!(verified_broader.digest, verified.digest);
    assert!(matches!(
        f.store.store(&verified_broader, &broader, "alice"),
        Err(RegistryError::Conflict(_))
    ));
    let kept = f.store.get(&verified.digest).unwrap().unwrap();
    assert_eq!(kept.manifest.capabilities, ["log"]);
}

#[test]
fn refuses_to_store_bytes_that_are_not_the_verified_module() {
    let f = Fixture::new();
    let signed = f.signed(&manifest(&["log"]));
    let other = signing::sign(&component(b"other"), &manifest(&["log"]), &f.key).unwrap();
    let verified = f.store.verify(&signed).unwrap();
    assert!(matches!(
        f.store.store(&verified, &other, "alice"),
        Err(RegistryError::Conflict(_))
    ));
    let mut tampered = signed.clone();
    tampered[10] ^= 1;
    assert!(matches!(
        f.store.store(&verified, &tampered, "alice"),
        Err(RegistryError::Sign(_))
    ));
    assert!(f.store.list().unwrap().is_empty());
    assert_eq!(f.store.bytes(&verified.digest).unwrap(), None);
}

#[test]
fn verify_rejects_unsigned_untrusted_tampered_and_oversize_modules() {
    let f = Fixture::new();
    assert!(matches!(
        f.store.verify(&component(b"x")),
        Err(RegistryError::Sign(SignError::Unsigned))
    ));
    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    let untrusted = signing::sign(&component(b"x"), &manifest(&[]), &stranger).unwrap();
    assert!(matches!(
        f.store.verify(&untrusted),
        Err(RegistryError::Sign(SignError::UnknownPublisher(_)))
    ));
    let mut tampered = f.signed(&manifest(&["log"]));
    let in_manifest = tampered.windows(6).position(|w| w == b"\"demo\"").unwrap() + 1;
    tampered[in_manifest] ^= 1;
    assert!(matches!(
        f.store.verify(&tampered),
        Err(RegistryError::Sign(_))
    ));
    let huge = vec![0u8; MAX_MODULE_BYTES + 1];
    assert!(matches!(
        f.store.verify(&huge),
        Err(RegistryError::TooLarge(n)) if n == MAX_MODULE_BYTES + 1
    ));
}

#[test]
fn retire_marks_the_module_and_unknown_digests_are_not_found() {
    let f = Fixture::new();
    let signed = f.signed(&manifest(&[]));
    let verified = f.store.verify(&signed).unwrap();
    f.store.store(&verified, &signed, "alice").unwrap();
    let retired = f.store.retire(&verified.digest).unwrap();
    assert!(retired.retired);
    assert_eq!(
        f.store.get(&verified.digest).unwrap(),
        Some(retired.clone())
    );
    assert_eq!(f.store.retire(&verified.digest).unwrap(), retired);
    // Uploading it again does not silently un-retire it.
    assert!(f.store.store(&verified, &signed, "bob").unwrap().retired);
    assert!(matches!(
        f.store.retire("nope"),
        Err(RegistryError::NotFound(_))
    ));
}

#[test]
fn trusts_lists_rotates_and_distrusts_publishers() {
    let f = Fixture::new();
    let acme_id = signing::key_id(&f.key.verifying_key());
    assert_eq!(
        f.store.list_publishers().unwrap(),
        vec![("acme".to_string(), acme_id)]
    );
    let rotated = SigningKey::from_bytes(&[8u8; 32]);
    f.store
        .trust_publisher("acme", &rotated.verifying_key())
        .unwrap();
    let listed = f.store.list_publishers().unwrap();
    assert_eq!(
        listed,
        vec![("acme".into(), signing::key_id(&rotated.verifying_key()))]
    );
    // The old key no longer verifies.
    assert!(matches!(
        f.store.verify(&f.signed(&manifest(&[]))),
        Err(RegistryError::Sign(SignError::UnknownPublisher(_)))
    ));
    assert!(f.store.distrust_publisher("acme").unwrap());
    assert!(!f.store.distrust_publisher("acme").unwrap());
    assert!(f.store.publishers().unwrap().is_empty());
}

#[test]
fn refuses_bad_publisher_names_and_a_key_trusted_under_another_name() {
    let f = Fixture::new();
    for bad in ["", "Acme", "a b", &"x".repeat(65)] {
        assert!(matches!(
            f.store.trust_publisher(bad, &f.key.verifying_key()),
            Err(RegistryError::InvalidName(_))
        ));
    }
    assert!(matches!(
        f.store.trust_publisher("acme-2", &f.key.verifying_key()),
        Err(RegistryError::KeyInUse(name)) if name == "acme"
    ));
}

#[test]
fn refuses_publishers_over_the_cap() {
    let f = Fixture::new();
    for i in 1..MAX_PUBLISHERS {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        seed[31] = 1;
        let key = SigningKey::from_bytes(&seed).verifying_key();
        f.store.trust_publisher(&format!("p{i}"), &key).unwrap();
    }
    let extra = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
    assert!(matches!(
        f.store.trust_publisher("one-more", &extra),
        Err(RegistryError::TooManyPublishers)
    ));
    // Rotating an existing publisher's key is still allowed at the cap.
    f.store.trust_publisher("acme", &extra).unwrap();
}

#[test]
fn corrupt_records_are_reported() {
    let f = Fixture::new();
    f.db.open_tree(PUBLISHERS.name)
        .unwrap()
        .insert("short", b"123".to_vec())
        .unwrap();
    assert!(matches!(
        f.store.publishers(),
        Err(RegistryError::Encode(_))
    ));
    f.db.open_tree(MODULES.name)
        .unwrap()
        .insert("d", b"{".to_vec())
        .unwrap();
    assert!(matches!(f.store.get("d"), Err(RegistryError::Encode(_))));
}

#[test]
fn modules_and_publishers_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let signed = signing::sign(&component(b"x"), &manifest(&[]), &key).unwrap();
    let digest = {
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = ModuleStore::open(&crate::store::sled_db(&db)).unwrap();
        store.trust_publisher("acme", &key.verifying_key()).unwrap();
        let verified = store.verify(&signed).unwrap();
        store.store(&verified, &signed, "alice").unwrap().digest
    };
    let db = sled::open(dir.path().join("db")).unwrap();
    let store = ModuleStore::open(&crate::store::sled_db(&db)).unwrap();
    assert_eq!(store.bytes(&digest).unwrap(), Some(signed.clone()));
    assert!(store.verify(&signed).is_ok());
}

#[test]
fn check_imports_accepts_declared_and_non_warden_imports() {
    let m = manifest(&["log", "ssh"]);
    let ok = imports(&[
        "warden:task/types@0.1.0",
        "warden:task/log@0.1.0",
        "warden:task/ssh@0.1.0",
        "warden:task/ssh",
        "wasi:cli/stdout@0.2.3",
    ]);
    assert!(check_imports(&m, &ok).is_ok());
    assert!(check_imports(&manifest(&[]), &imports(&["warden:task/types@0.1.0"])).is_ok());
}

#[test]
fn check_imports_rejects_an_undeclared_capability() {
    let m = manifest(&["log"]);
    for (import, iface) in [
        ("warden:task/ssh@0.1.0", "ssh"),
        ("warden:task/credentials@0.1.0", "credentials"),
        ("warden:task/transfer", "transfer"),
        ("warden:task/params@0.1.0", "params"),
    ] {
        let err = check_imports(&m, &imports(&["warden:task/log@0.1.0", import]));
        assert!(
            matches!(&err, Err(RegistryError::UndeclaredCapability(i)) if i == iface),
            "{import}: {err:?}"
        );
    }
}
