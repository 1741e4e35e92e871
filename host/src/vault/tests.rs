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
        let vault = Vault::open(&crate::store::sled_db(&db), MasterKey::generate()).unwrap();
        Self { dir, db, vault }
    }

    fn add(&self, name: &str, secret: &[u8]) -> CredentialInfo {
        let secret = Secret::from_bytes(secret.to_vec());
        self.vault
            .add(name, "root", CredentialKind::Password, secret)
            .unwrap()
    }

    fn tree(&self) -> sled::Tree {
        self.db.open_tree(CREDENTIALS.name).unwrap()
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
        let vault = Vault::open(
            &crate::store::sled_db(&db),
            MasterKey::create(&key_path).unwrap(),
        )
        .unwrap();
        vault
            .add("db", "sa", CredentialKind::Password, secret(CANARY))
            .unwrap();
    }
    let db = sled::open(&db_path).unwrap();
    let vault = Vault::open(
        &crate::store::sled_db(&db),
        MasterKey::load(&key_path).unwrap(),
    )
    .unwrap();
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
    let other = Vault::open(&crate::store::sled_db(&fixture.db), MasterKey::generate()).unwrap();
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
        flip_base64_byte(&mut record["versions"][0], field);
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
    alpha["versions"][0]["secret"] = beta["versions"][0]["secret"].clone();
    fixture.put_raw("alpha", &alpha);
    assert!(matches!(
        fixture.vault.secret("alpha"),
        Err(VaultError::DecryptionFailed)
    ));
    // Both sealed parts moved together still fail: the data key's wrap binds the name.
    let mut alpha = fixture.raw("alpha");
    alpha["versions"][0]["data_key"] = beta["versions"][0]["data_key"].clone();
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
    record["format"] = 3.into();
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
        Vault::open(&crate::store::sled_db(&fixture.db), MasterKey::generate())
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
        admin: false,
    };
    assert_eq!(
        serde_json::to_string(&info).unwrap(),
        r#"{"name":"n","username":"u","kind":"password","created_ms":1,"admin":false}"#
    );
    let old: CredentialInfo =
        serde_json::from_str(r#"{"name":"n","username":"u","kind":"password","created_ms":1}"#)
            .unwrap();
    assert_eq!(old, info, "the admin flag defaults to false");
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

// ---- Versions ----

fn versions_of(vault: &Vault, name: &str) -> Vec<(u32, VersionState)> {
    let versions = vault.versions(name).unwrap();
    versions.iter().map(|v| (v.version, v.state)).collect()
}

#[test]
fn add_version_keeps_history_and_secret_returns_the_current_one() {
    let fixture = Fixture::new();
    let vault = &fixture.vault;
    fixture.add("db", b"v1-secret");
    let v2 = vault
        .add_version("db", secret(b"v2-secret"), "alice", "quarterly rotation")
        .unwrap();
    assert_eq!(
        (
            v2.version,
            v2.state,
            v2.created_by.as_str(),
            v2.reason.as_str()
        ),
        (2, VersionState::Current, "alice", "quarterly rotation")
    );
    vault
        .add_version("db", secret(b"v3-secret"), "bob", "")
        .unwrap();
    assert_eq!(
        versions_of(vault, "db"),
        vec![
            (1, VersionState::Previous),
            (2, VersionState::Previous),
            (3, VersionState::Current)
        ]
    );
    assert_eq!(vault.secret("db").unwrap().expose(), b"v3-secret");
    assert_eq!(
        vault.secret_version("db", 1).unwrap().expose(),
        b"v1-secret"
    );
    assert_eq!(
        vault.secret_version("db", 2).unwrap().expose(),
        b"v2-secret"
    );
    let first = &vault.versions("db").unwrap()[0];
    assert_eq!(
        (first.created_by.as_str(), first.reason.as_str()),
        (UNATTRIBUTED, "created")
    );
    assert_eq!(
        vault.info("db").unwrap().unwrap().created_ms,
        vault.versions("db").unwrap()[2].created_ms
    );
}

#[test]
fn replace_secret_adds_a_version_and_keeps_the_old_one() {
    let fixture = Fixture::new();
    let vault = &fixture.vault;
    fixture.add("db", b"old-secret-value");
    vault
        .replace_secret("db", secret(b"new-secret-value"))
        .unwrap();
    assert_eq!(
        versions_of(vault, "db"),
        vec![(1, VersionState::Previous), (2, VersionState::Current)]
    );
    assert_eq!(
        vault.secret_version("db", 1).unwrap().expose(),
        b"old-secret-value"
    );
    assert_eq!(vault.versions("db").unwrap()[1].reason, "secret replaced");
}

#[test]
fn version_metadata_never_contains_values() {
    let fixture = Fixture::new();
    let vault = &fixture.vault;
    fixture.add("db", CANARY);
    vault
        .add_version("db", secret(b"second-canary-6b1d"), "a", "r")
        .unwrap();
    vault
        .add_pending("db", secret(b"pending-canary-91ce"), "a", "r")
        .unwrap();
    let shown = format!(
        "{} {:?} {}",
        serde_json::to_string(&vault.versions("db").unwrap()).unwrap(),
        vault.versions("db").unwrap(),
        serde_json::to_string(&vault.info("db").unwrap()).unwrap(),
    );
    let secrets: [&[u8]; 3] = [CANARY, b"second-canary-6b1d", b"pending-canary-91ce"];
    for needle in secrets.iter().flat_map(|s| encodings(s)) {
        assert!(
            !shown
                .as_bytes()
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        );
    }
}

#[test]
fn version_info_serializes_as_documented() {
    let info = VersionInfo {
        version: 2,
        created_ms: 5,
        created_by: "alice".into(),
        reason: "why".into(),
        state: VersionState::Pending,
    };
    assert_eq!(
        serde_json::to_string(&info).unwrap(),
        r#"{"version":2,"created_ms":5,"created_by":"alice","reason":"why","state":"pending"}"#
    );
}

#[test]
fn retention_drops_the_oldest_versions() {
    let fixture = Fixture::new();
    let vault = fixture.vault.clone().with_retention(Retention { keep: 3 });
    fixture.add("db", b"s1");
    for i in 2..=5u8 {
        vault
            .add_version("db", secret(&[b's', b'0' + i]), "a", "r")
            .unwrap();
    }
    assert_eq!(
        versions_of(&vault, "db"),
        vec![
            (3, VersionState::Previous),
            (4, VersionState::Previous),
            (5, VersionState::Current)
        ]
    );
    assert!(matches!(
        vault.secret_version("db", 2),
        Err(VaultError::VersionNotFound { version: 2, .. })
    ));
    assert_eq!(vault.secret_version("db", 3).unwrap().expose(), b"s3");
    // Numbers are never reused after a drop.
    assert_eq!(
        vault
            .add_version("db", secret(b"s6"), "a", "r")
            .unwrap()
            .version,
        6
    );
}

#[test]
fn retention_never_drops_current_or_pending_and_keeps_at_least_one() {
    let fixture = Fixture::new();
    let vault = fixture.vault.clone().with_retention(Retention { keep: 0 });
    fixture.add("db", b"s1");
    vault.add_pending("db", secret(b"p2"), "a", "r").unwrap();
    vault.add_version("db", secret(b"s3"), "a", "r").unwrap();
    assert_eq!(
        versions_of(&vault, "db"),
        vec![(2, VersionState::Pending), (3, VersionState::Current)]
    );
    assert_eq!(Retention::default().keep, Retention::DEFAULT_KEEP);
    let huge = fixture
        .vault
        .clone()
        .with_retention(Retention { keep: usize::MAX });
    assert!(format!("{huge:?}").contains(&MAX_RETAINED_VERSIONS.to_string()));
}

#[test]
fn pending_version_is_not_returned_by_secret_until_promoted() {
    let fixture = Fixture::new();
    let vault = &fixture.vault;
    fixture.add("db", b"old");
    let pending = vault
        .add_pending("db", secret(b"new"), "rotation", "step 2")
        .unwrap();
    assert_eq!(pending.state, VersionState::Pending);
    assert_eq!(vault.secret("db").unwrap().expose(), b"old");
    assert_eq!(
        vault
            .secret_version("db", pending.version)
            .unwrap()
            .expose(),
        b"new"
    );
    let promoted = vault.promote("db", pending.version).unwrap();
    assert_eq!(promoted.state, VersionState::Current);
    assert_eq!(vault.secret("db").unwrap().expose(), b"new");
    assert_eq!(
        versions_of(vault, "db"),
        vec![(1, VersionState::Previous), (2, VersionState::Current)]
    );
    // Promoting again (a retried step) is harmless.
    assert_eq!(vault.promote("db", 2).unwrap().state, VersionState::Current);
}

#[test]
fn failed_versions_are_never_current() {
    let fixture = Fixture::new();
    let vault = &fixture.vault;
    fixture.add("db", b"old");
    let pending = vault
        .add_pending("db", secret(b"bad"), "rotation", "step 2")
        .unwrap();
    let failed = vault.mark_failed("db", pending.version).unwrap();
    assert_eq!(failed.state, VersionState::Failed);
    assert_eq!(
        vault.mark_failed("db", pending.version).unwrap().state,
        VersionState::Failed
    );
    let err = vault.promote("db", pending.version).unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::VersionState {
                state: VersionState::Failed,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(vault.secret("db").unwrap().expose(), b"old");
    // A new current version still never resurrects it.
    vault.add_version("db", secret(b"newer"), "a", "r").unwrap();
    assert_eq!(
        versions_of(vault, "db"),
        vec![
            (1, VersionState::Previous),
            (2, VersionState::Failed),
            (3, VersionState::Current)
        ]
    );
}

#[test]
fn promote_and_mark_failed_refuse_wrong_states_and_unknown_versions() {
    let fixture = Fixture::new();
    let vault = &fixture.vault;
    fixture.add("db", b"v1");
    vault.add_version("db", secret(b"v2"), "a", "r").unwrap();
    assert!(matches!(
        vault.promote("db", 1),
        Err(VaultError::VersionState {
            state: VersionState::Previous,
            ..
        })
    ));
    assert!(matches!(
        vault.mark_failed("db", 2),
        Err(VaultError::VersionState {
            state: VersionState::Current,
            ..
        })
    ));
    assert!(matches!(
        vault.mark_failed("db", 1),
        Err(VaultError::VersionState {
            state: VersionState::Previous,
            ..
        })
    ));
    for result in [vault.promote("db", 9), vault.mark_failed("db", 9)] {
        assert!(matches!(
            result,
            Err(VaultError::VersionNotFound { version: 9, .. })
        ));
    }
    assert!(matches!(
        vault.promote("nope", 1),
        Err(VaultError::NotFound(_))
    ));
    assert!(matches!(
        vault.versions("nope"),
        Err(VaultError::NotFound(_))
    ));
    assert!(matches!(
        vault.secret_version("nope", 1),
        Err(VaultError::NotFound(_))
    ));
    assert!(matches!(
        vault.add_version("nope", secret(b"x"), "a", "r"),
        Err(VaultError::NotFound(_))
    ));
    assert_eq!(vault.secret("db").unwrap().expose(), b"v2");
}

#[test]
fn refuses_too_many_pending_versions() {
    let fixture = Fixture::new();
    fixture.add("db", b"v1");
    for _ in 0..MAX_PENDING_VERSIONS {
        fixture
            .vault
            .add_pending("db", secret(b"p"), "a", "r")
            .unwrap();
    }
    let err = fixture
        .vault
        .add_pending("db", secret(b"p"), "a", "r")
        .unwrap_err();
    assert!(
        matches!(err, VaultError::TooManyPending(ref n) if n == "db"),
        "{err:?}"
    );
    fixture.vault.mark_failed("db", 2).unwrap();
    fixture
        .vault
        .add_pending("db", secret(b"p"), "a", "r")
        .unwrap();
}

#[test]
fn refuses_invalid_attribution_and_secrets_for_new_versions() {
    let fixture = Fixture::new();
    fixture.add("db", b"v1");
    let long_by = "a".repeat(MAX_CREATED_BY_BYTES + 1);
    let long_reason = "r".repeat(MAX_REASON_BYTES + 1);
    let cases = [
        ("", "r"),
        (long_by.as_str(), "r"),
        ("a", long_reason.as_str()),
        ("a\nb", "r"),
        ("a", "line\u{1b}[2J"),
    ];
    for (by, reason) in cases {
        for result in [
            fixture.vault.add_version("db", secret(b"x"), by, reason),
            fixture.vault.add_pending("db", secret(b"x"), by, reason),
        ] {
            assert!(
                matches!(result, Err(VaultError::InvalidAttribution(_))),
                "{by:?} {reason:?}"
            );
        }
        let added = fixture.vault.add_attributed(
            "new",
            "u",
            CredentialKind::Password,
            secret(b"x"),
            by,
            reason,
        );
        assert!(matches!(added, Err(VaultError::InvalidAttribution(_))));
    }
    assert!(matches!(
        fixture.vault.add_version("db", secret(b""), "a", "r"),
        Err(VaultError::InvalidSecret(_))
    ));
    assert!(matches!(
        fixture
            .vault
            .add_pending("db", secret(&vec![1; MAX_SECRET_BYTES + 1]), "a", "r"),
        Err(VaultError::InvalidSecret(_))
    ));
    assert_eq!(
        versions_of(&fixture.vault, "db"),
        vec![(1, VersionState::Current)]
    );
    let max_by = "a".repeat(MAX_CREATED_BY_BYTES);
    let max_reason = "r".repeat(MAX_REASON_BYTES);
    fixture
        .vault
        .add_version("db", secret(b"y"), &max_by, &max_reason)
        .unwrap();
}

#[test]
fn add_attributed_records_who_and_why() {
    let fixture = Fixture::new();
    fixture
        .vault
        .add_attributed(
            "db",
            "u",
            CredentialKind::SshKey,
            secret(b"k"),
            "carol",
            "onboarding",
        )
        .unwrap();
    let first = &fixture.vault.versions("db").unwrap()[0];
    assert_eq!(
        (first.created_by.as_str(), first.reason.as_str()),
        ("carol", "onboarding")
    );
}

#[test]
fn edited_version_state_makes_the_record_corrupt() {
    let fixture = Fixture::new();
    fixture.add("db", b"v1");
    let pending = fixture
        .vault
        .add_pending("db", secret(b"p"), "a", "r")
        .unwrap();
    fixture.vault.mark_failed("db", pending.version).unwrap();
    for (index, state) in [(0, "previous"), (1, "current"), (1, "pending")] {
        let mut record = fixture.raw("db");
        let saved = record.clone();
        record["versions"][index]["state"] = state.into();
        fixture.put_raw("db", &record);
        assert!(matches!(
            fixture.vault.versions("db"),
            Err(VaultError::CorruptRecord { .. })
        ));
        assert!(matches!(
            fixture.vault.secret("db"),
            Err(VaultError::DecryptionFailed)
        ));
        assert!(matches!(
            fixture.vault.promote("db", 2),
            Err(VaultError::CorruptRecord { .. })
        ));
        fixture.put_raw("db", &saved);
    }
    assert_eq!(fixture.vault.secret("db").unwrap().expose(), b"v1");
}

#[test]
fn concurrent_new_versions_are_all_kept_with_distinct_numbers() {
    let fixture = Fixture::new();
    fixture.add("db", b"v1");
    std::thread::scope(|s| {
        for i in 0..6u8 {
            let vault = fixture.vault.clone();
            s.spawn(move || {
                vault
                    .add_version("db", secret(&[b'x', i]), "a", "r")
                    .unwrap()
            });
        }
    });
    let versions = fixture.vault.versions("db").unwrap();
    let numbers: Vec<u32> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, (1..=7).collect::<Vec<_>>());
    let current = versions
        .iter()
        .filter(|v| v.state == VersionState::Current)
        .count();
    assert_eq!(current, 1);
}

#[test]
fn database_files_contain_no_plaintext_of_any_version() {
    let fixture = Fixture::new();
    let vault = &fixture.vault;
    let secrets: [&[u8]; 4] = [
        b"first-version-canary-0a7e",
        b"second-version-canary-93bf",
        b"pending-version-canary-5c21",
        b"failed-version-canary-e804",
    ];
    fixture.add("db", secrets[0]);
    vault
        .add_version("db", secret(secrets[1]), "a", "r")
        .unwrap();
    vault
        .add_pending("db", secret(secrets[2]), "a", "r")
        .unwrap();
    let failed = vault
        .add_pending("db", secret(secrets[3]), "a", "r")
        .unwrap();
    vault.mark_failed("db", failed.version).unwrap();
    vault.rekey(&MasterKey::generate()).unwrap();
    fixture.db.flush().unwrap();
    let needles: Vec<Vec<u8>> = secrets.iter().flat_map(|s| encodings(s)).collect();
    let checked = assert_no_file_contains(&fixture.dir.path().join("db"), &needles);
    assert!(checked > 0);
}

// ---- Format 1 ----

/// Writes a record exactly as the format-1 code did.
fn put_legacy(fixture: &Fixture, key: &MasterKey, name: &str, secret_bytes: &[u8]) {
    let meta = record::RecordMeta {
        name: name.into(),
        username: "root".into(),
        kind: CredentialKind::Password,
        created_ms: 1_700_000_000_000,
        admin: false,
    };
    let legacy = record::LegacyRecord::seal(key, &meta, &secret(secret_bytes)).unwrap();
    fixture
        .tree()
        .insert(name, serde_json::to_vec(&legacy).unwrap())
        .unwrap();
}

#[test]
fn format_1_record_opens_and_migrates_on_write_keeping_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let key = MasterKey::generate();
    let vault = Vault::open(&crate::store::sled_db(&db), key.duplicate()).unwrap();
    let fixture = Fixture { dir, db, vault };
    put_legacy(&fixture, &key, "old", CANARY);
    let vault = &fixture.vault;
    assert_eq!(vault.secret("old").unwrap().expose(), CANARY);
    assert_eq!(
        vault.info("old").unwrap().unwrap().created_ms,
        1_700_000_000_000
    );
    assert_eq!(vault.list().unwrap().len(), 1);
    assert_eq!(versions_of(vault, "old"), vec![(1, VersionState::Current)]);
    let old_ciphertext = fixture.raw("old")["secret"].clone();
    assert_eq!(fixture.raw("old")["format"], 1);
    vault.add_version("old", secret(b"v2"), "a", "r").unwrap();
    let migrated = fixture.raw("old");
    assert_eq!(migrated["format"], 2);
    assert_eq!(migrated["versions"][0]["secret"], old_ciphertext);
    assert_eq!(vault.secret_version("old", 1).unwrap().expose(), CANARY);
    assert_eq!(vault.secret("old").unwrap().expose(), b"v2");
}

#[test]
fn tampered_format_1_record_fails_closed() {
    let fixture = Fixture::new();
    let other = MasterKey::generate();
    put_legacy(&fixture, &other, "foreign", CANARY);
    assert!(matches!(
        fixture.vault.secret("foreign"),
        Err(VaultError::DecryptionFailed)
    ));
    assert!(matches!(
        fixture.vault.info("foreign"),
        Err(VaultError::CorruptRecord { .. })
    ));
}

// ---- Rekey ----

struct Populated {
    fixture: Fixture,
    old: MasterKey,
    /// (name, version, secret) of every stored version.
    expected: Vec<(String, u32, Vec<u8>)>,
}

/// Five credentials, each with three versions (one pending), under `old`.
fn populated() -> Populated {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let old = MasterKey::generate();
    let vault = Vault::open(&crate::store::sled_db(&db), old.duplicate()).unwrap();
    let fixture = Fixture { dir, db, vault };
    let mut expected = Vec::new();
    for c in 0..5 {
        let name = format!("cred-{c}");
        let values: Vec<Vec<u8>> = (1..=3)
            .map(|v| format!("{name}-secret-{v}").into())
            .collect();
        fixture.add(&name, &values[0]);
        fixture
            .vault
            .add_version(&name, secret(&values[1]), "a", "r")
            .unwrap();
        fixture
            .vault
            .add_pending(&name, secret(&values[2]), "a", "r")
            .unwrap();
        for (v, value) in values.into_iter().enumerate() {
            expected.push((name.clone(), v as u32 + 1, value));
        }
    }
    Populated {
        fixture,
        old,
        expected,
    }
}

fn opens_everything(vault: &Vault, expected: &[(String, u32, Vec<u8>)]) -> bool {
    expected.iter().all(|(name, version, value)| {
        vault
            .secret_version(name, *version)
            .is_ok_and(|s| s.expose() == value.as_slice())
    })
}

fn opens_nothing(vault: &Vault, expected: &[(String, u32, Vec<u8>)]) -> bool {
    expected.iter().all(|(name, version, _)| {
        matches!(
            vault.secret_version(name, *version),
            Err(VaultError::DecryptionFailed)
        )
    })
}

#[test]
fn rekey_then_only_the_new_key_opens_every_version() {
    let Populated {
        fixture,
        old,
        expected,
    } = populated();
    let secrets_before: Vec<_> = (0..5).map(|c| fixture.raw(&format!("cred-{c}"))).collect();
    let new = MasterKey::generate();
    let report = fixture.vault.rekey(&new).unwrap();
    assert_eq!((report.rekeyed, report.already_current), (5, 0));
    assert_eq!(report.key_id, new.id());
    let with_new = Vault::open(&crate::store::sled_db(&fixture.db), new.duplicate()).unwrap();
    assert!(opens_everything(&with_new, &expected));
    assert_eq!(with_new.list().unwrap().len(), 5);
    let with_old = Vault::open(&crate::store::sled_db(&fixture.db), old).unwrap();
    assert!(opens_nothing(&with_old, &expected));
    assert!(matches!(
        with_old.list(),
        Err(VaultError::CorruptRecord { .. })
    ));
    // Only the data keys were rewrapped: every secret ciphertext is byte-for-byte the same.
    for (c, before) in secrets_before.iter().enumerate() {
        let after = fixture.raw(&format!("cred-{c}"));
        for v in 0..3 {
            assert_eq!(
                after["versions"][v]["secret"],
                before["versions"][v]["secret"]
            );
            assert_ne!(
                after["versions"][v]["data_key"],
                before["versions"][v]["data_key"]
            );
        }
    }
    // The rekeyed vault itself now writes under the new key.
    fixture.add("after-rekey", b"fresh");
    assert_eq!(with_new.secret("after-rekey").unwrap().expose(), b"fresh");
}

#[test]
fn rekey_interrupted_midway_leaves_every_record_openable_and_rerun_finishes() {
    let Populated {
        fixture,
        old,
        expected,
    } = populated();
    let new = MasterKey::generate();
    let partial = fixture.vault.rekey_up_to(&new, Some(2)).unwrap();
    assert_eq!(partial.rekeyed, 2);
    drop(fixture.vault);
    // "Restart": neither key alone opens everything, both together do.
    let with_old = Vault::open(&crate::store::sled_db(&fixture.db), old.duplicate()).unwrap();
    let with_new = Vault::open(&crate::store::sled_db(&fixture.db), new.duplicate()).unwrap();
    assert!(!opens_everything(&with_old, &expected));
    assert!(!opens_everything(&with_new, &expected));
    let both = Vault::open_with_keys(
        &crate::store::sled_db(&fixture.db),
        new.duplicate(),
        Some(old.duplicate()),
    )
    .unwrap();
    assert!(opens_everything(&both, &expected));
    let report = both.rekey(&new).unwrap();
    assert_eq!((report.rekeyed, report.already_current), (3, 2));
    assert!(opens_everything(&with_new, &expected));
    assert!(opens_nothing(&with_old, &expected));
    assert_eq!(both.rekey(&new).unwrap().rekeyed, 0);
}

#[test]
fn rekey_migrates_format_1_records_without_touching_their_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let old = MasterKey::generate();
    let vault = Vault::open(&crate::store::sled_db(&db), old.duplicate()).unwrap();
    let fixture = Fixture { dir, db, vault };
    put_legacy(&fixture, &old, "legacy", CANARY);
    let ciphertext = fixture.raw("legacy")["secret"].clone();
    let new = MasterKey::generate();
    fixture.vault.rekey(&new).unwrap();
    assert_eq!(fixture.raw("legacy")["versions"][0]["secret"], ciphertext);
    let with_new = Vault::open(&crate::store::sled_db(&fixture.db), new).unwrap();
    assert_eq!(with_new.secret("legacy").unwrap().expose(), CANARY);
}

#[test]
fn rekey_stops_at_a_record_under_an_unknown_key() {
    let Populated {
        fixture, expected, ..
    } = populated();
    put_legacy(&fixture, &MasterKey::generate(), "cred-2x", b"stray");
    let new = MasterKey::generate();
    let err = fixture.vault.rekey(&new).unwrap_err();
    assert!(
        matches!(err, VaultError::CorruptRecord { ref name } if name == "cred-2x"),
        "{err:?}"
    );
    // Everything else is still readable by this vault (old or new key).
    assert!(opens_everything(&fixture.vault, &expected));
}

#[test]
fn rekey_to_the_current_key_changes_nothing() {
    let Populated {
        fixture,
        old,
        expected,
    } = populated();
    let before = fixture.raw("cred-0");
    let report = fixture.vault.rekey(&old).unwrap();
    assert_eq!((report.rekeyed, report.already_current), (0, 5));
    assert_eq!(fixture.raw("cred-0"), before);
    assert!(opens_everything(&fixture.vault, &expected));
}
