//! Tests of the vault against real sled databases and key files in temporary directories.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use tempfile::TempDir;

use super::*;

/// A secret distinctive enough that finding its bytes anywhere on disk means it leaked.
const CANARY: &[u8] = b"W4rden-canary-plaintext-7f3c9e1a-d0n0t-st0re-me";

struct Fixture {
    dir: TempDir,
    db: sled::Db,
    vault: Vault,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let vault = Vault::open(&db, MasterKey::generate()).unwrap();
        Self { dir, db, vault }
    }

    fn add(&self, name: &str, secret: &[u8]) -> CredentialInfo {
        let secret = Secret::from_bytes(secret.to_vec());
        self.vault
            .add(name, "root", CredentialKind::Password, secret)
            .unwrap()
    }

    fn tree(&self) -> sled::Tree {
        self.db.open_tree(CREDENTIALS_TREE).unwrap()
    }

    fn raw(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&self.tree().get(name).unwrap().unwrap()).unwrap()
    }

    fn put_raw(&self, name: &str, value: &serde_json::Value) {
        self.tree()
            .insert(name, serde_json::to_vec(value).unwrap())
            .unwrap();
    }
}

fn secret(bytes: &[u8]) -> Secret {
    Secret::from_bytes(bytes.to_vec())
}

#[test]
fn round_trips_add_info_list_secret_and_remove() {
    let fixture = Fixture::new();
    let vault = &fixture.vault;
    let added = vault
        .add("web.root", "root", CredentialKind::Password, secret(b"pw"))
        .unwrap();
    let key = vault
        .add(
            "deploy-key",
            "deploy",
            CredentialKind::SshKey,
            secret(CANARY),
        )
        .unwrap();
    assert_eq!(added.name, "web.root");
    assert_eq!(added.kind, CredentialKind::Password);
    assert!(added.created_ms > 0);
    assert_eq!(vault.info("web.root").unwrap(), Some(added.clone()));
    assert_eq!(vault.list().unwrap(), vec![key.clone(), added]);
    assert_eq!(vault.secret("web.root").unwrap().expose(), b"pw");
    assert_eq!(vault.secret("deploy-key").unwrap().expose(), CANARY);
    assert!(vault.remove("web.root").unwrap());
    assert!(!vault.remove("web.root").unwrap());
    assert_eq!(vault.info("web.root").unwrap(), None);
    assert!(matches!(
        vault.secret("web.root"),
        Err(VaultError::NotFound(_))
    ));
    assert_eq!(vault.list().unwrap(), vec![key]);
}

#[test]
fn secret_of_unknown_credential_is_not_found() {
    let fixture = Fixture::new();
    assert!(
        matches!(fixture.vault.secret("absent"), Err(VaultError::NotFound(n)) if n == "absent")
    );
}

#[test]
fn survives_reopen_with_key_loaded_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("master.key");
    let db_path = dir.path().join("db");
    {
        let db = sled::open(&db_path).unwrap();
        let vault = Vault::open(&db, MasterKey::create(&key_path).unwrap()).unwrap();
        vault
            .add("db", "sa", CredentialKind::Password, secret(CANARY))
            .unwrap();
    }
    let db = sled::open(&db_path).unwrap();
    let vault = Vault::open(&db, MasterKey::load(&key_path).unwrap()).unwrap();
    assert_eq!(vault.secret("db").unwrap().expose(), CANARY);
}

/// Every encoding of `secret` an accidental leak might use.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut found = vec![secret.to_vec()];
    found.push(hex::encode(secret).into_bytes());
    found.push(hex::encode_upper(secret).into_bytes());
    // Base64 of the secret at each alignment, minus the edge characters that depend on
    // neighbouring bytes.
    for shift in 0..3 {
        for engine in [&STANDARD, &URL_SAFE] {
            let encoded = engine.encode(&secret[shift..]);
            found.push(encoded.trim_end_matches('=').as_bytes()[..encoded.len() - 4].to_vec());
        }
    }
    found
}

fn assert_no_file_contains(dir: &Path, needles: &[Vec<u8>]) -> usize {
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            checked += assert_no_file_contains(&path, needles);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for needle in needles {
            let leaked = bytes.windows(needle.len()).any(|w| w == needle.as_slice());
            assert!(!leaked, "{} contains the secret", path.display());
        }
        checked += 1;
    }
    checked
}

#[test]
fn database_files_contain_no_plaintext_secret() {
    let fixture = Fixture::new();
    fixture.add("canary", CANARY);
    fixture
        .vault
        .add("canary-key", "u", CredentialKind::SshKey, secret(CANARY))
        .unwrap();
    fixture.db.flush().unwrap();
    let checked = assert_no_file_contains(&fixture.dir.path().join("db"), &encodings(CANARY));
    assert!(checked > 0, "no database files found");
    // The same scan finds a value that *is* stored in the clear: the scan itself works.
    let username = b"visible-username-e5a1";
    let user = std::str::from_utf8(username).unwrap();
    fixture
        .vault
        .add("plain", user, CredentialKind::Password, secret(b"x"))
        .unwrap();
    fixture.db.flush().unwrap();
    let result = std::panic::catch_unwind(|| {
        assert_no_file_contains(&fixture.dir.path().join("db"), &[username.to_vec()])
    });
    assert!(result.is_err(), "scan failed to find a stored username");
}

#[test]
fn wrong_master_key_fails_decryption() {
    let fixture = Fixture::new();
    fixture.add("db", CANARY);
    let other = Vault::open(&fixture.db, MasterKey::generate()).unwrap();
    assert!(matches!(
        other.secret("db"),
        Err(VaultError::DecryptionFailed)
    ));
    assert!(matches!(
        other.info("db"),
        Err(VaultError::CorruptRecord { .. })
    ));
    assert!(matches!(other.list(), Err(VaultError::CorruptRecord { name }) if name == "db"));
}

fn flip_base64_byte(value: &mut serde_json::Value, field: &str) {
    let text = value[field]["ciphertext"].as_str().unwrap();
    let mut bytes = STANDARD.decode(text).unwrap();
    bytes[0] ^= 0x01;
    value[field]["ciphertext"] = STANDARD.encode(bytes).into();
}

#[test]
fn tampered_ciphertext_fails_decryption() {
    for field in ["secret", "data_key"] {
        let fixture = Fixture::new();
        fixture.add("db", CANARY);
        let mut record = fixture.raw("db");
        flip_base64_byte(&mut record, field);
        fixture.put_raw("db", &record);
        assert!(
            matches!(
                fixture.vault.secret("db"),
                Err(VaultError::DecryptionFailed)
            ),
            "{field}"
        );
    }
}

#[test]
fn edited_metadata_fails_decryption_and_info() {
    let edits = [
        ("username", serde_json::json!("admin")),
        ("kind", serde_json::json!("ssh-key")),
        ("created_ms", serde_json::json!(1)),
    ];
    for (field, value) in edits {
        let fixture = Fixture::new();
        fixture.add("db", CANARY);
        let mut record = fixture.raw("db");
        record[field] = value;
        fixture.put_raw("db", &record);
        assert!(
            matches!(
                fixture.vault.secret("db"),
                Err(VaultError::DecryptionFailed)
            ),
            "{field}"
        );
        assert!(matches!(
            fixture.vault.info("db"),
            Err(VaultError::CorruptRecord { .. })
        ));
    }
}

#[test]
fn swapped_ciphertexts_between_records_fail_decryption() {
    let fixture = Fixture::new();
    fixture.add("alpha", b"alpha-secret");
    fixture.add("beta", b"beta-secret");
    let (mut alpha, beta) = (fixture.raw("alpha"), fixture.raw("beta"));
    alpha["secret"] = beta["secret"].clone();
    fixture.put_raw("alpha", &alpha);
    assert!(matches!(
        fixture.vault.secret("alpha"),
        Err(VaultError::DecryptionFailed)
    ));
    // Both sealed parts moved together still fail: the data key's wrap binds the name.
    let mut alpha = fixture.raw("alpha");
    alpha["data_key"] = beta["data_key"].clone();
    fixture.put_raw("alpha", &alpha);
    assert!(matches!(
        fixture.vault.secret("alpha"),
        Err(VaultError::DecryptionFailed)
    ));
}

#[test]
fn record_copied_under_another_name_fails_decryption() {
    let fixture = Fixture::new();
    fixture.add("alpha", b"alpha-secret");
    let mut copy = fixture.raw("alpha");
    fixture.put_raw("gamma", &copy);
    assert!(matches!(
        fixture.vault.secret("gamma"),
        Err(VaultError::DecryptionFailed)
    ));
    copy["name"] = "gamma".into();
    fixture.put_raw("gamma", &copy);
    assert!(matches!(
        fixture.vault.secret("gamma"),
        Err(VaultError::DecryptionFailed)
    ));
    assert!(
        matches!(fixture.vault.list(), Err(VaultError::CorruptRecord { name }) if name == "gamma")
    );
}

#[test]
fn unparseable_or_future_format_record_fails_closed() {
    let fixture = Fixture::new();
    fixture.add("db", CANARY);
    let mut record = fixture.raw("db");
    record["format"] = 2.into();
    fixture.put_raw("db", &record);
    assert!(matches!(
        fixture.vault.secret("db"),
        Err(VaultError::DecryptionFailed)
    ));
    fixture.tree().insert("db", b"not json".as_slice()).unwrap();
    assert!(matches!(
        fixture.vault.secret("db"),
        Err(VaultError::DecryptionFailed)
    ));
    assert!(matches!(
        fixture.vault.info("db"),
        Err(VaultError::CorruptRecord { .. })
    ));
}

#[test]
fn refuses_duplicate_name() {
    let fixture = Fixture::new();
    fixture.add("db", b"first");
    let err = fixture
        .vault
        .add("db", "other", CredentialKind::SshKey, secret(b"second"))
        .unwrap_err();
    assert!(
        matches!(err, VaultError::AlreadyExists(ref n) if n == "db"),
        "{err:?}"
    );
    assert_eq!(fixture.vault.secret("db").unwrap().expose(), b"first");
}

#[test]
fn concurrent_adds_of_one_name_store_exactly_one() {
    let fixture = Fixture::new();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let vault = fixture.vault.clone();
                s.spawn(move || vault.add("race", "u", CredentialKind::Password, secret(&[i + 1])))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, VaultError::AlreadyExists(_)))
    );
}

#[test]
fn refuses_invalid_names() {
    let fixture = Fixture::new();
    let long = "a".repeat(MAX_NAME_LEN + 1);
    for name in ["", "a b", "a/b", "db:1", "naïve", "x\n", long.as_str()] {
        let err = fixture
            .vault
            .add(name, "root", CredentialKind::Password, secret(b"pw"))
            .unwrap_err();
        assert!(
            matches!(err, VaultError::InvalidName(_)),
            "{name:?}: {err:?}"
        );
        assert!(matches!(
            fixture.vault.secret(name),
            Err(VaultError::InvalidName(_))
        ));
        assert!(matches!(
            fixture.vault.info(name),
            Err(VaultError::InvalidName(_))
        ));
        assert!(matches!(
            fixture.vault.remove(name),
            Err(VaultError::InvalidName(_))
        ));
    }
    let longest = "a".repeat(MAX_NAME_LEN);
    fixture.add(&longest, b"pw");
    fixture.add("A-z_0.9", b"pw");
}

#[test]
fn refuses_invalid_usernames() {
    let fixture = Fixture::new();
    let long = "u".repeat(MAX_USERNAME_BYTES + 1);
    for username in ["", "root\n", "a\u{0}b", long.as_str()] {
        let err = fixture
            .vault
            .add("db", username, CredentialKind::Password, secret(b"pw"))
            .unwrap_err();
        assert!(
            matches!(err, VaultError::InvalidUsername(_)),
            "{username:?}: {err:?}"
        );
    }
    let ok = fixture.vault.add(
        "db",
        r"CORP\jöe@example",
        CredentialKind::Password,
        secret(b"x"),
    );
    assert_eq!(ok.unwrap().username, r"CORP\jöe@example");
}

#[test]
fn enforces_secret_size_cap() {
    let fixture = Fixture::new();
    let too_big = vec![7u8; MAX_SECRET_BYTES + 1];
    for bytes in [Vec::new(), too_big] {
        let err = fixture
            .vault
            .add(
                "db",
                "root",
                CredentialKind::SshKey,
                Secret::from_bytes(bytes),
            )
            .unwrap_err();
        assert!(matches!(err, VaultError::InvalidSecret(_)), "{err:?}");
    }
    let max = vec![7u8; MAX_SECRET_BYTES];
    fixture.add("db", &max);
    assert_eq!(fixture.vault.secret("db").unwrap().expose(), max.as_slice());
}

#[test]
fn debug_output_shows_no_secret_bytes() {
    let fixture = Fixture::new();
    fixture.add("db", CANARY);
    let shown = fixture.vault.secret("db").unwrap();
    let debug = format!("{shown:?} {:?} {:#?}", fixture.vault, MasterKey::generate());
    assert_eq!(format!("{shown:?}"), "Secret([REDACTED])");
    for needle in encodings(CANARY) {
        assert!(
            !debug
                .as_bytes()
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        );
    }
}

#[test]
fn errors_show_no_secret_bytes() {
    let fixture = Fixture::new();
    fixture.add("db", CANARY);
    let errors = [
        fixture
            .vault
            .add("db", "root", CredentialKind::Password, secret(CANARY))
            .unwrap_err(),
        Vault::open(&fixture.db, MasterKey::generate())
            .unwrap()
            .secret("db")
            .unwrap_err(),
    ];
    let canary = std::str::from_utf8(CANARY).unwrap();
    for err in errors {
        assert!(!format!("{err} {err:?}").contains(canary));
    }
}

#[test]
fn credential_kind_parses_and_serializes_as_documented() {
    assert_eq!(
        "password".parse::<CredentialKind>(),
        Ok(CredentialKind::Password)
    );
    assert_eq!(
        "ssh-key".parse::<CredentialKind>(),
        Ok(CredentialKind::SshKey)
    );
    assert_eq!("sshkey".parse::<CredentialKind>(), Err(ParseKindError));
    assert_eq!(
        serde_json::to_string(&CredentialKind::SshKey).unwrap(),
        r#""ssh-key""#
    );
    assert_eq!(CredentialKind::Password.to_string(), "password");
    let info = CredentialInfo {
        name: "n".into(),
        username: "u".into(),
        kind: CredentialKind::Password,
        created_ms: 1,
    };
    assert_eq!(
        serde_json::to_string(&info).unwrap(),
        r#"{"name":"n","username":"u","kind":"password","created_ms":1}"#
    );
}

#[test]
fn replace_secret_keeps_metadata_and_only_the_new_secret_opens() {
    let fixture = Fixture::new();
    let vault = &fixture.vault;
    let before = fixture.add("db.admin", b"old-secret-value");
    let after = vault
        .replace_secret("db.admin", secret(b"new-secret-value"))
        .unwrap();
    assert_eq!(
        (after.name.as_str(), after.username.as_str(), after.kind),
        ("db.admin", "root", before.kind)
    );
    assert_eq!(
        vault.secret("db.admin").unwrap().expose(),
        b"new-secret-value"
    );
    assert!(matches!(
        vault.replace_secret("nope", secret(b"x")),
        Err(VaultError::NotFound(_))
    ));
    assert!(matches!(
        vault.replace_secret("db.admin", secret(b"")),
        Err(VaultError::InvalidSecret(_))
    ));
    assert_eq!(vault.list().unwrap().len(), 1);
}
