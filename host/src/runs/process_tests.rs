//! Tests of the process store against real sled databases in temporary directories.

use std::sync::Barrier;

use serde_json::json;
use tempfile::TempDir;

use super::*;

fn fixture() -> (TempDir, sled::Db, ProcessStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let store = ProcessStore::open(&crate::store::sled_db(&db)).unwrap();
    (dir, db, store)
}

fn new_process(name: &str) -> NewProcess {
    NewProcess {
        name: name.into(),
        description: "Rotate the root password\non every web server".into(),
        owner: "alice".into(),
        module_digest: "ab".repeat(32),
        module: "rotate-password@1.2.0".into(),
        grant: Grant {
            credentials: ["root-pw".to_string()].into(),
            targets: ["web-1".to_string(), "web-2".to_string()].into(),
            commands: vec!["chpasswd".into()],
            paths: vec!["/var/log".into()],
            ..Default::default()
        },
        default_inputs: [("account".to_string(), json!("root"))].into(),
        shared_users: ["bob".to_string()].into(),
        shared_roles: BTreeSet::new(),
        required_approvals: 0,
        retry_on_lost: false,
        limits: Default::default(),
        workflow: None,
    }
}

fn invalid_field(err: RunsError) -> &'static str {
    match err {
        RunsError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn creates_and_finds_a_process_by_id_and_by_name() {
    let (_dir, _db, store) = fixture();
    let created = store.create(new_process("rotate-root")).unwrap();
    assert!(uuid::Uuid::parse_str(&created.id).is_ok());
    assert_eq!(created.revision, 1);
    assert_eq!(created.created_ms, created.updated_ms);
    assert_eq!(created.grant, new_process("x").grant);
    assert_eq!(store.get(&created.id).unwrap(), Some(created.clone()));
    assert_eq!(store.get_by_name("rotate-root").unwrap(), Some(created));
    assert_eq!(store.get("no-such-id").unwrap(), None);
    assert_eq!(store.get_by_name("no-such-name").unwrap(), None);
}

#[test]
fn lists_every_process_sorted_by_name() {
    let (_dir, _db, store) = fixture();
    for name in ["zeta", "alpha", "mid"] {
        store.create(new_process(name)).unwrap();
    }
    let names: Vec<_> = store.list().unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
}

#[test]
fn processes_survive_a_reopen() {
    let (dir, db, store) = fixture();
    let created = store.create(new_process("durable")).unwrap();
    drop(store);
    drop(db);
    let db = crate::store::reopen_after_drop(dir.path());
    let store = ProcessStore::open(&db).unwrap();
    assert_eq!(store.get_by_name("durable").unwrap(), Some(created));
}

#[test]
fn refuses_a_duplicate_name() {
    let (_dir, _db, store) = fixture();
    let first = store.create(new_process("dup")).unwrap();
    let err = store.create(new_process("dup")).unwrap_err();
    assert!(
        matches!(err, RunsError::NameTaken(ref n) if n == "dup"),
        "{err:?}"
    );
    assert_eq!(store.list().unwrap(), vec![first]);
}

#[test]
fn concurrent_creates_of_one_name_yield_exactly_one_process() {
    let (_dir, _db, store) = fixture();
    let threads = 8;
    let barrier = std::sync::Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.create(new_process("contested"))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, RunsError::NameTaken(_)))
    );
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn refuses_invalid_names() {
    let (_dir, _db, store) = fixture();
    let too_long = "a".repeat(65);
    for bad in [
        "",
        "has space",
        "slash/name",
        "ünïcode",
        "new\nline",
        too_long.as_str(),
    ] {
        let err = store.create(new_process(bad)).unwrap_err();
        assert!(
            matches!(err, RunsError::InvalidName(ref n) if n == bad),
            "{bad:?}: {err:?}"
        );
    }
    assert!(store.list().unwrap().is_empty());
    assert!(store.create(new_process(&"a".repeat(64))).is_ok());
}

#[test]
fn refuses_each_invalid_field_naming_it() {
    let (_dir, _db, store) = fixture();
    type Edit = fn(&mut NewProcess);
    let cases: &[(&str, Edit)] = &[
        ("description", |p| {
            p.description = "x".repeat(MAX_DESCRIPTION_BYTES + 1)
        }),
        ("description", |p| p.description = "red \u{1b}[31m".into()),
        ("owner", |p| p.owner = String::new()),
        ("owner", |p| p.owner = "eve\nforged line".into()),
        ("module_digest", |p| p.module_digest = "AB".repeat(32)),
        ("module_digest", |p| p.module_digest = "ab".repeat(16)),
        ("module", |p| p.module = "no-version".into()),
        ("module", |p| p.module = "name@".into()),
        ("module", |p| p.module = "@1.0".into()),
        ("module", |p| p.module = "name@1.0 beta".into()),
        ("grant.credentials", |p| {
            p.grant.credentials = ["a b".to_string()].into()
        }),
        ("grant.targets", |p| {
            p.grant.targets = ["".to_string()].into()
        }),
        ("grant.targets", |p| {
            p.grant.targets = (0..=MAX_GRANT_ENTRIES).map(|i| format!("t{i}")).collect()
        }),
        ("grant.commands", |p| p.grant.commands = vec![String::new()]),
        ("grant.commands", |p| {
            p.grant.commands = vec!["a".repeat(MAX_PATTERN_BYTES + 1)]
        }),
        ("grant.commands", |p| {
            p.grant.commands = vec!["id\nrm -rf /".into()]
        }),
        ("grant.paths", |p| {
            p.grant.paths = vec!["relative/path".into()]
        }),
        ("default_inputs", |p| {
            p.default_inputs = (0..=MAX_DEFAULT_INPUTS)
                .map(|i| (format!("i{i}"), json!(1)))
                .collect()
        }),
        ("default_inputs", |p| {
            p.default_inputs = [("bad key".into(), json!(1))].into()
        }),
        ("default_inputs", |p| {
            let big = "x".repeat(MAX_DEFAULT_INPUTS_BYTES);
            p.default_inputs = [("big".into(), json!(big))].into()
        }),
        ("shared_users", |p| {
            p.shared_users = [" padded".to_string()].into()
        }),
        ("shared_roles", |p| {
            p.shared_roles = (0..=MAX_SHARES).map(|i| format!("role{i}")).collect()
        }),
        ("required_approvals", |p| {
            p.required_approvals = MAX_REQUIRED_APPROVALS + 1
        }),
    ];
    for (i, (field, edit)) in cases.iter().enumerate() {
        let mut process = new_process(&format!("p{i}"));
        edit(&mut process);
        let err = store.create(process).unwrap_err();
        assert_eq!(invalid_field(err), *field, "case {i}");
    }
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn update_bumps_revision_and_time_and_keeps_creation() {
    let (_dir, _db, store) = fixture();
    let created = store.create(new_process("upd")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3));
    let updated = store
        .update(&created.id, |p| {
            p.description = "new text".into();
            p.revision = 99; // ignored: the store owns the revision
            p.required_approvals = 2;
        })
        .unwrap();
    assert_eq!(updated.revision, 2);
    assert!(updated.updated_ms > created.updated_ms);
    assert_eq!(updated.created_ms, created.created_ms);
    assert_eq!(updated.required_approvals, 2);
    assert_eq!(store.get(&created.id).unwrap(), Some(updated.clone()));
    let again = store.update(&created.id, |_| {}).unwrap();
    assert_eq!(again.revision, 3);
}

#[test]
fn update_can_rename_and_frees_the_old_name() {
    let (_dir, _db, store) = fixture();
    let created = store.create(new_process("old-name")).unwrap();
    store
        .update(&created.id, |p| p.name = "new-name".into())
        .unwrap();
    assert_eq!(store.get_by_name("old-name").unwrap(), None);
    assert_eq!(
        store.get_by_name("new-name").unwrap().unwrap().id,
        created.id
    );
    assert!(store.create(new_process("old-name")).is_ok());
}

#[test]
fn update_refuses_a_name_in_use_and_changes_nothing() {
    let (_dir, _db, store) = fixture();
    let a = store.create(new_process("a")).unwrap();
    store.create(new_process("b")).unwrap();
    let err = store.update(&a.id, |p| p.name = "b".into()).unwrap_err();
    assert!(
        matches!(err, RunsError::NameTaken(ref n) if n == "b"),
        "{err:?}"
    );
    assert_eq!(store.get(&a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.get_by_name("a").unwrap(), Some(a));
}

#[test]
fn update_refuses_changing_identity_fields() {
    let (_dir, _db, store) = fixture();
    let created = store.create(new_process("ident")).unwrap();
    type Edit = fn(&mut Process);
    let cases: &[(&str, Edit)] = &[
        ("id", |p| p.id = "other".into()),
        ("owner", |p| p.owner = "mallory".into()),
        ("created_ms", |p| p.created_ms = 1),
    ];
    for (field, edit) in cases {
        let err = store.update(&created.id, *edit).unwrap_err();
        assert_eq!(invalid_field(err), *field);
    }
    assert_eq!(store.get(&created.id).unwrap(), Some(created));
}

#[test]
fn update_validates_the_result_and_changes_nothing_when_invalid() {
    let (_dir, _db, store) = fixture();
    let created = store.create(new_process("valid")).unwrap();
    let err = store
        .update(&created.id, |p| p.name = "bad name".into())
        .unwrap_err();
    assert!(matches!(err, RunsError::InvalidName(_)), "{err:?}");
    let err = store
        .update(&created.id, |p| p.module_digest.clear())
        .unwrap_err();
    assert_eq!(invalid_field(err), "module_digest");
    assert_eq!(store.get(&created.id).unwrap(), Some(created));
}

#[test]
fn update_of_a_missing_process_is_not_found() {
    let (_dir, _db, store) = fixture();
    let err = store.update("missing", |_| {}).unwrap_err();
    assert!(
        matches!(err, RunsError::NotFound(ref id) if id == "missing"),
        "{err:?}"
    );
}

#[test]
fn update_refuses_a_write_that_raced_another_store() {
    let (_dir, db, store) = fixture();
    let created = store.create(new_process("raced")).unwrap();
    let other = ProcessStore::open(&crate::store::sled_db(&db)).unwrap();
    let err = store
        .update(&created.id, |p| {
            // Another store (another lock) commits while this edit is in progress.
            other
                .update(&p.id, |q| q.description = "theirs".into())
                .unwrap();
            p.description = "ours".into();
        })
        .unwrap_err();
    assert!(
        matches!(err, RunsError::Conflict(ref id) if *id == created.id),
        "{err:?}"
    );
    let stored = store.get(&created.id).unwrap().unwrap();
    assert_eq!(
        (stored.description.as_str(), stored.revision),
        ("theirs", 2)
    );
}

#[test]
fn share_adds_and_unshare_removes_users_and_roles() {
    let (_dir, _db, store) = fixture();
    let created = store.create(new_process("shared")).unwrap();
    let users = ["carol".to_string(), "bob".to_string()];
    let shared = store
        .share(&created.id, &users, &["operators".into()])
        .unwrap();
    let expect_users: BTreeSet<String> = ["bob", "carol"].map(String::from).into();
    assert_eq!(shared.shared_users, expect_users);
    assert_eq!(shared.shared_roles, ["operators".to_string()].into());
    assert_eq!(shared.revision, 2);
    let unshared = store
        .unshare(&created.id, &["bob".into()], &["operators".into()])
        .unwrap();
    assert_eq!(unshared.shared_users, ["carol".to_string()].into());
    assert!(unshared.shared_roles.is_empty());
    assert_eq!(unshared.revision, 3);
    let err = store
        .share(&created.id, &["bad\nname".into()], &[])
        .unwrap_err();
    assert_eq!(invalid_field(err), "shared_users");
    assert!(matches!(
        store.share("missing", &[], &[]),
        Err(RunsError::NotFound(_))
    ));
}

#[test]
fn delete_removes_the_process_and_frees_its_name() {
    let (_dir, _db, store) = fixture();
    let created = store.create(new_process("gone")).unwrap();
    assert!(store.delete(&created.id).unwrap());
    assert_eq!(store.get(&created.id).unwrap(), None);
    assert_eq!(store.get_by_name("gone").unwrap(), None);
    assert!(!store.delete(&created.id).unwrap());
    assert!(store.list().unwrap().is_empty());
    assert!(store.create(new_process("gone")).is_ok());
}

#[test]
fn reports_a_corrupt_stored_process() {
    let (_dir, db, store) = fixture();
    let created = store.create(new_process("corrupt")).unwrap();
    db.open_tree(PROCESSES.name)
        .unwrap()
        .insert(created.id.as_bytes(), &b"{nope"[..])
        .unwrap();
    assert!(matches!(store.get(&created.id), Err(RunsError::Corrupt(_))));
    assert!(matches!(
        store.get_by_name("corrupt"),
        Err(RunsError::Corrupt(_))
    ));
    assert!(matches!(store.list(), Err(RunsError::Corrupt(_))));
    assert!(matches!(
        store.update(&created.id, |_| {}),
        Err(RunsError::Corrupt(_))
    ));
}

#[test]
fn new_process_decodes_with_defaults_for_optional_fields() {
    let json = json!({
        "name": "min", "owner": "alice", "module_digest": "ab".repeat(32), "module": "m@1"
    });
    let new: NewProcess = serde_json::from_value(json).unwrap();
    assert_eq!(new.required_approvals, 0);
    assert!(new.grant.targets.is_empty() && new.shared_users.is_empty());
    let (_dir, _db, store) = fixture();
    assert!(store.create(new).is_ok());
}
