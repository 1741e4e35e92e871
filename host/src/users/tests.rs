//! Tests of the user store against real sled databases in temporary directories.

use std::path::Path;

use secrecy::ExposeSecret;
use tempfile::TempDir;

use super::*;

struct Fixture {
    dir: TempDir,
    db: sled::Db,
    store: UserStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = UserStore::open(&crate::store::sled_db(&db)).unwrap();
        Fixture { dir, db, store }
    }
}

fn roles(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const ADMIN: &str = "privileged-administrator";

#[test]
fn creates_gets_and_lists_users_and_refuses_duplicates() {
    let f = Fixture::new();
    assert!(f.store.is_empty().unwrap());
    let alice = f.store.create_user("alice", roles(&[ADMIN])).unwrap();
    f.store.create_user("bob.ops", BTreeSet::new()).unwrap();
    assert!(!f.store.is_empty().unwrap());
    assert_eq!(f.store.get_user("alice").unwrap(), Some(alice));
    assert_eq!(f.store.get_user("nobody").unwrap(), None);
    assert_eq!(f.store.get_user("Not Valid").unwrap(), None);
    let names: Vec<_> = f
        .store
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob.ops"]);
    assert!(matches!(
        f.store.create_user("alice", BTreeSet::new()),
        Err(UserError::UserExists(_))
    ));
}

#[test]
fn refuses_invalid_user_and_role_names() {
    let f = Fixture::new();
    for bad in ["", "Alice", "a b", "a/b", &"x".repeat(65)] {
        assert!(
            matches!(
                f.store.create_user(bad, BTreeSet::new()),
                Err(UserError::InvalidName(_))
            ),
            "accepted user {bad:?}"
        );
        assert!(
            matches!(
                f.store.create_role(bad, BTreeSet::new()),
                Err(UserError::InvalidRoleName(_))
            ),
            "accepted role {bad:?}"
        );
    }
    assert!(matches!(
        f.store.create_user("carol", roles(&["Bad Role"])),
        Err(UserError::InvalidRoleName(_))
    ));
}

#[test]
fn refuses_builtin_role_names_for_custom_roles() {
    let f = Fixture::new();
    for role in BuiltinRole::ALL {
        assert!(matches!(
            f.store.create_role(role.as_str(), BTreeSet::new()),
            Err(UserError::ReservedRole(_))
        ));
    }
    assert!(f.store.list_roles().unwrap().is_empty());
}

#[test]
fn creates_lists_and_refuses_duplicate_custom_roles() {
    let f = Fixture::new();
    let ops = f
        .store
        .create_role("ops", [Privilege::ExecutePrivilegedProcess].into())
        .unwrap();
    assert_eq!(f.store.list_roles().unwrap(), vec![ops]);
    assert!(matches!(
        f.store.create_role("ops", BTreeSet::new()),
        Err(UserError::RoleExists(_))
    ));
}

#[test]
fn refuses_unknown_roles_and_too_many_roles() {
    let f = Fixture::new();
    assert!(matches!(
        f.store.create_user("dave", roles(&["no-such-role"])),
        Err(UserError::UnknownRole(r)) if r == "no-such-role"
    ));
    assert_eq!(f.store.get_user("dave").unwrap(), None);
    f.store.create_user("dave", BTreeSet::new()).unwrap();
    assert!(matches!(
        f.store.set_roles("dave", roles(&["no-such-role"])),
        Err(UserError::UnknownRole(_))
    ));
    let many: BTreeSet<String> = (0..=MAX_ROLES_PER_USER).map(|i| format!("r{i}")).collect();
    assert!(matches!(
        f.store.set_roles("dave", many),
        Err(UserError::TooManyRoles(_))
    ));
    assert!(matches!(
        f.store.set_roles("ghost", BTreeSet::new()),
        Err(UserError::UnknownUser(_))
    ));
}

#[test]
fn set_roles_replaces_the_roles() {
    let f = Fixture::new();
    f.store.create_role("ops", BTreeSet::new()).unwrap();
    f.store.create_user("erin", roles(&[ADMIN])).unwrap();
    let erin = f.store.set_roles("erin", roles(&["ops"])).unwrap();
    assert_eq!(erin.roles, roles(&["ops"]));
    assert_eq!(f.store.get_user("erin").unwrap(), Some(erin));
}

#[test]
fn an_issued_token_authenticates_its_user() {
    let f = Fixture::new();
    let alice = f.store.create_user("alice", roles(&[ADMIN])).unwrap();
    let issued = f.store.issue_token("alice", "laptop").unwrap();
    assert_eq!(issued.info.user, "alice");
    assert_eq!(issued.info.label, "laptop");
    assert!(
        issued
            .token
            .expose_secret()
            .starts_with(&format!("wdn_{}_", issued.info.id))
    );
    let who = f.store.authenticate(issued.token.expose_secret()).unwrap();
    assert_eq!(who, Some(alice));
    assert_eq!(
        f.store.list_tokens("alice").unwrap(),
        vec![issued.info.clone()]
    );
    assert_eq!(
        f.store.token_info(&issued.info.id).unwrap(),
        Some(issued.info)
    );
}

#[test]
fn wrong_secret_unknown_id_malformed_and_revoked_tokens_do_not_authenticate() {
    let f = Fixture::new();
    f.store.create_user("alice", BTreeSet::new()).unwrap();
    let issued = f.store.issue_token("alice", "").unwrap();
    let token = issued.token.expose_secret();
    let id = &issued.info.id;

    let mut wrong_secret = token.to_string();
    let last = if wrong_secret.ends_with('0') {
        "1"
    } else {
        "0"
    };
    wrong_secret.replace_range(wrong_secret.len() - 1.., last);
    let unknown_id = format!("wdn_{}_{}", "0".repeat(16), token::secret_of(&issued.token));
    let over_long = format!("{token}{}", "0".repeat(MAX_TOKEN_LEN));
    for bad in [
        wrong_secret.as_str(),
        unknown_id.as_str(),
        "",
        "wdn_",
        "Bearer x",
        &token[..token.len() - 1],
        &over_long,
    ] {
        assert_eq!(f.store.authenticate(bad).unwrap(), None, "accepted {bad:?}");
    }

    assert!(f.store.revoke_token(id).unwrap());
    assert!(!f.store.revoke_token(id).unwrap());
    assert!(!f.store.revoke_token("../junk").unwrap());
    assert_eq!(f.store.authenticate(token).unwrap(), None);
    assert_eq!(f.store.token_info(id).unwrap(), None);
    assert!(f.store.list_tokens("alice").unwrap().is_empty());
}

#[test]
fn a_token_whose_user_is_gone_does_not_authenticate() {
    let f = Fixture::new();
    f.store.create_user("alice", BTreeSet::new()).unwrap();
    let issued = f.store.issue_token("alice", "ci").unwrap();
    f.db.open_tree(USERS.name).unwrap().remove("alice").unwrap();
    assert_eq!(
        f.store.authenticate(issued.token.expose_secret()).unwrap(),
        None
    );
}

#[test]
fn refuses_tokens_for_unknown_users_bad_labels_and_over_the_cap() {
    let f = Fixture::new();
    assert!(matches!(
        f.store.issue_token("ghost", "x"),
        Err(UserError::UnknownUser(_))
    ));
    assert!(matches!(
        f.store.list_tokens("ghost"),
        Err(UserError::UnknownUser(_))
    ));
    f.store.create_user("alice", BTreeSet::new()).unwrap();
    for bad in [
        "x".repeat(MAX_LABEL_LEN + 1),
        "a\nb".into(),
        "\u{1b}[31m".into(),
    ] {
        assert!(matches!(
            f.store.issue_token("alice", &bad),
            Err(UserError::InvalidLabel)
        ));
    }
    for _ in 0..MAX_TOKENS_PER_USER {
        f.store.issue_token("alice", "t").unwrap();
    }
    assert!(matches!(
        f.store.issue_token("alice", "t"),
        Err(UserError::TooManyTokens(_))
    ));
    assert_eq!(
        f.store.list_tokens("alice").unwrap().len(),
        MAX_TOKENS_PER_USER
    );
}

#[test]
fn tokens_are_listed_per_user_only() {
    let f = Fixture::new();
    f.store.create_user("alice", BTreeSet::new()).unwrap();
    f.store.create_user("bob", BTreeSet::new()).unwrap();
    let a = f.store.issue_token("alice", "a").unwrap();
    f.store.issue_token("bob", "b").unwrap();
    assert_eq!(f.store.list_tokens("alice").unwrap(), vec![a.info]);
}

#[test]
fn the_database_files_never_contain_a_token_secret() {
    let f = Fixture::new();
    f.store.create_user("alice", BTreeSet::new()).unwrap();
    let issued: Vec<_> = (0..4)
        .map(|_| f.store.issue_token("alice", "x").unwrap())
        .collect();
    f.db.flush().unwrap();
    let mut needles = Vec::new();
    for t in &issued {
        let secret = token::secret_of(&t.token);
        needles.push(secret.as_bytes().to_vec());
        needles.push(hex::decode(&secret).unwrap());
        needles.push(t.token.expose_secret().as_bytes().to_vec());
    }
    assert!(assert_no_file_contains(&f.dir.path().join("db"), &needles) > 0);
    // The id is not secret and is stored: proves the scan reads the files that hold tokens.
    let ids = issued
        .iter()
        .map(|t| t.info.id.as_bytes().to_vec())
        .collect::<Vec<_>>();
    assert!(
        ids.iter()
            .all(|id| any_file_contains(&f.dir.path().join("db"), id))
    );
}

#[test]
fn token_info_and_errors_never_show_the_secret() {
    let f = Fixture::new();
    f.store.create_user("alice", BTreeSet::new()).unwrap();
    let issued = f.store.issue_token("alice", "x").unwrap();
    let secret = token::secret_of(&issued.token);
    let shown = format!(
        "{issued:?} {}",
        serde_json::to_string(&issued.info).unwrap()
    );
    assert!(!shown.contains(&secret));
}

#[test]
fn principal_holds_roles_and_the_union_of_custom_role_privileges() {
    let f = Fixture::new();
    f.store
        .create_role("builders", [Privilege::ManagePrivilegedProcess].into())
        .unwrap();
    f.store
        .create_role(
            "runners",
            [Privilege::ExecutePrivilegedProcess, Privilege::ApproveRun].into(),
        )
        .unwrap();
    f.store.create_role("empty", BTreeSet::new()).unwrap();
    let user = f
        .store
        .create_user("frank", roles(&["builders", "runners", "empty", ADMIN]))
        .unwrap();
    let principal = f.store.principal(&user).unwrap();
    assert_eq!(principal.user, "frank");
    assert_eq!(principal.roles, user.roles);
    assert_eq!(principal.privileges, PRIVILEGES.into_iter().collect());
    assert!(principal.is_administrator());

    let plain = f.store.create_user("gina", roles(&["runners"])).unwrap();
    let principal = f.store.principal(&plain).unwrap();
    assert_eq!(
        principal.privileges,
        [Privilege::ExecutePrivilegedProcess, Privilege::ApproveRun].into()
    );
    assert!(!principal.is_administrator());
}

#[test]
fn roles_round_trip_through_storage_with_privilege_names() {
    let f = Fixture::new();
    f.store
        .create_role("ops", [Privilege::ApproveRun].into())
        .unwrap();
    let raw =
        f.db.open_tree(ROLES.name)
            .unwrap()
            .get("ops")
            .unwrap()
            .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(json["privileges"], serde_json::json!(["ApproveRun"]));
    for p in PRIVILEGES {
        assert_eq!(parse_privilege(p.as_str()), Some(p));
    }
    assert_eq!(parse_privilege("Root"), None);
}

#[test]
fn corrupt_records_are_reported_not_trusted() {
    let f = Fixture::new();
    f.db.open_tree(USERS.name)
        .unwrap()
        .insert("mallory", b"{not json".to_vec())
        .unwrap();
    assert!(matches!(
        f.store.get_user("mallory"),
        Err(UserError::Corrupt(_))
    ));
    f.db.open_tree(ROLES.name)
        .unwrap()
        .insert(
            "bad",
            br#"{"name":"bad","privileges":["Root"],"created_ms":0}"#.to_vec(),
        )
        .unwrap();
    assert!(matches!(f.store.list_roles(), Err(UserError::Corrupt(_))));
}

#[test]
fn state_survives_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let token = {
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = UserStore::open(&crate::store::sled_db(&db)).unwrap();
        store.create_user("alice", roles(&[ADMIN])).unwrap();
        store.issue_token("alice", "x").unwrap().token
    };
    let db = crate::store::reopen_after_drop(&dir.path().join("db"));
    let store = UserStore::open(&db).unwrap();
    let who = store.authenticate(token.expose_secret()).unwrap();
    assert_eq!(who.map(|u| u.name).as_deref(), Some("alice"));
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_no_file_contains(dir: &Path, needles: &[Vec<u8>]) -> usize {
    let paths = files(dir);
    for path in &paths {
        let bytes = std::fs::read(path).unwrap();
        for needle in needles {
            assert!(
                !contains(&bytes, needle),
                "{} contains a secret",
                path.display()
            );
        }
    }
    paths.len()
}

fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    files(dir)
        .iter()
        .any(|p| contains(&std::fs::read(p).unwrap(), needle))
}
