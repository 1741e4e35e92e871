//! `warden backup` and `warden restore` against the real binary: a snapshot of a server with
//! runs and credential writes in flight, restored into an empty directory whose audit log
//! verifies with every record up to the snapshot, whose every stored state has its audit
//! record, and whose credentials open with the same master key; a restore without that key,
//! or of a cut, edited, reordered or newer backup, refused with nothing left behind; the
//! control socket refusing anyone but the data directory's owner; a restore into PostgreSQL.
//!
//! The attacker: whoever holds a backup file (it must open nothing without the master key,
//! and an edit — even with the checksum recomputed — must not restore) and whoever races the
//! backup with writes (the snapshot must not be torn).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use warden_host::store::{DataDir, Database, DatabaseLocation, Scan};
use warden_host::vault::{MasterKeySource, Vault};
use warden_tests::http::Server;
use warden_tests::random_secret;

use super::{arg, audit_verify, probe_process, run, start_serve, warden};
use warden_tests::http::init_data_dir;

/// `warden backup --data DATA -o OUT` (in `cwd`); stdout, or a panic with the output.
fn backup(cwd: &Path, data: &Path, out: &Path) -> String {
    let mut command = warden(cwd);
    command
        .args(["backup", "--data", &arg(data), "-o", &arg(out)])
        .env("WARDEN_DATA", "/nonexistent");
    let (status, stdout, stderr) = run(command);
    assert!(status.status.success(), "{stdout}{stderr}");
    stdout
}

/// `warden restore -i FILE --data DIR EXTRA…`: (success, stdout + stderr).
fn restore(cwd: &Path, file: &Path, dir: &Path, extra: &[&str]) -> (bool, String) {
    let mut command = warden(cwd);
    command
        .args(["restore", "-i", &arg(file), "--data", &arg(dir)])
        .args(extra);
    let (out, stdout, stderr) = run(command);
    (out.status.success(), format!("{stdout}{stderr}"))
}

/// Opens a stopped data directory's database (the server may take a moment to let go).
fn open_stopped(data: &Path, key: &Path) -> DataDir {
    let source = MasterKeySource::File(key.to_path_buf());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match DataDir::open_at(data, &source, &DatabaseLocation::Embedded) {
            Ok(dir) => return dir,
            Err(e) if std::time::Instant::now() > deadline => panic!("cannot open: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

fn audit_records(db: &Database) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    loop {
        let chunk = db
            .backend()
            .audit_range(all.len() as u64, 1024)
            .expect("audit range");
        if chunk.is_empty() {
            return all;
        }
        all.extend(chunk.into_iter().map(|(_, bytes)| bytes));
    }
}

fn header(file: &Path) -> Value {
    let text = std::fs::read_to_string(file).expect("backup");
    serde_json::from_str(text.lines().next().expect("header")).expect("header json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_a_busy_server_restores_every_record_and_credential_with_the_same_key() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let serve = start_serve(tmp.path(), &["--data", &arg(&data)], &[]).await;
    let (server, process) = probe_process(&serve, &admin).await;
    let server = Arc::new(server);

    // Credentials and runs keep being written while the backups are taken.
    let secrets: Arc<std::sync::Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..3 {
        let (server, admin, process, stop, secrets) = (
            server.clone(),
            admin.clone(),
            process.clone(),
            stop.clone(),
            secrets.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut runs = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                if worker == 0 {
                    let name = format!("cred-{i}");
                    let secret = random_secret(24);
                    let body = json!({"name": name, "username": "svc", "secret": secret});
                    let r = server.post("/v1/credentials", &admin, body).await;
                    assert!(r.status.is_success(), "{}", r.text);
                    secrets.lock().expect("lock").insert(name, secret);
                } else {
                    let inputs = json!({"mode": "calls", "n": 8});
                    let id = server.start_run(&process, &admin, inputs).await;
                    server.wait_for_state_or_end(&id).await;
                    runs.push(id);
                }
                i += 1;
            }
            runs
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let files: Vec<PathBuf> = (0..2)
        .map(|i| tmp.path().join(format!("backup-{i}.jsonl")))
        .collect();
    for file in &files {
        let (cwd, data, file) = (tmp.path().to_path_buf(), data.clone(), file.clone());
        let stdout = tokio::task::spawn_blocking(move || backup(&cwd, &data, &file))
            .await
            .expect("backup");
        assert!(stdout.contains("from the running server"), "{stdout}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut started = 0;
    for worker in load {
        started += worker.await.expect("load").len();
    }
    assert!(started > 4, "only {started} runs started");
    let after_backup = format!("late-{}", random_secret(8));
    let body = json!({"name": after_backup, "username": "svc", "secret": random_secret(24)});
    assert!(
        server
            .post("/v1/credentials", &admin, body)
            .await
            .status
            .is_success()
    );
    drop(serve);

    let key = data.join("master.key");
    let original = open_stopped(&data, &key);
    let all = audit_records(&original.db);
    let secrets = secrets.lock().expect("lock").clone();
    for (i, file) in files.iter().enumerate() {
        let snapshot = header(file)["audit_records"].as_u64().expect("count") as usize;
        assert!(
            snapshot > 0 && snapshot <= all.len(),
            "{snapshot} of {}",
            all.len()
        );
        let restored = tmp.path().join(format!("restored-{i}"));
        let (ok, out) = restore(
            tmp.path(),
            file,
            &restored,
            &["--master-key-file", &arg(&key)],
        );
        assert!(ok, "{out}");

        let (status, stdout, stderr) = audit_verify(tmp.path(), &restored, &key);
        assert!(status.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains(&format!("{snapshot} records")), "{stdout}");

        let dir = open_stopped(&restored, &key);
        // Every record up to the snapshot, byte for byte, and none after it.
        assert_eq!(audit_records(&dir.db), all[..snapshot].to_vec());
        // Not torn: every stored run state has its audit record in the backup.
        let mut audited = BTreeSet::new();
        for bytes in &all[..snapshot] {
            let record: Value = serde_json::from_slice(bytes).expect("record");
            if let Some(run) = record["run_id"].as_str() {
                audited.insert((
                    run.to_string(),
                    record["action"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        let runs = dir
            .db
            .table(&warden_host::runs::RUNS)
            .scan(&Scan::all())
            .expect("runs");
        assert!(!runs.is_empty());
        // Not torn between tables either: the time index names exactly the stored runs.
        let indexed: BTreeSet<Vec<u8>> = dir
            .db
            .table(&warden_host::runs::RUNS_BY_TIME)
            .scan(&Scan::all())
            .expect("index")
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let stored: BTreeSet<Vec<u8>> = runs.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(indexed, stored);
        for (_, value) in runs {
            let run: Value = serde_json::from_slice(&value).expect("run");
            let id = run["id"].as_str().expect("id").to_string();
            let action = format!("run.{}", run["state"].as_str().expect("state"));
            assert!(
                audited.contains(&(id.clone(), action.clone())),
                "{id} {action} not audited"
            );
        }
        // The credentials open with the same master key; the one added later is absent.
        let vault = Vault::open(
            &dir.db,
            MasterKeySource::File(key.clone()).load().expect("key"),
        )
        .expect("vault");
        let names: Vec<String> = vault
            .list()
            .expect("list")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert!(!names.is_empty());
        assert!(!names.contains(&after_backup));
        for name in &names {
            let secret = vault.secret(name).expect("secret opens");
            assert_eq!(secret.expose(), secrets[name].as_bytes(), "{name}");
        }
        drop(dir);
    }

    // The restored directory serves: its audit log answers queries by run.
    let restored = tmp.path().join("restored-1");
    let serve = start_serve(
        tmp.path(),
        &["--data", &arg(&restored), "--master-key-file", &arg(&key)],
        &[],
    )
    .await;
    let again = Server::remote(serve.base.clone(), admin.clone());
    let r = again.get("/v1/credentials", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    drop(serve);
}

/// Rewrites a backup with `edit` applied to its lines and the checksum recomputed, as an
/// attacker who knows the format would.
fn forge(file: &Path, out: &Path, edit: impl FnOnce(&mut Vec<Value>)) {
    let text = std::fs::read_to_string(file).expect("backup");
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    lines.pop();
    edit(&mut lines);
    let mut body = String::new();
    for line in &lines {
        body.push_str(&line.to_string());
        body.push('\n');
    }
    let count = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count();
    let end = json!({
        "kind": "end",
        "files": count("file"),
        "rows": count("row"),
        "audit_records": count("audit"),
        "sha256": hex::encode(Sha256::digest(body.as_bytes())),
    });
    body.push_str(&end.to_string());
    body.push('\n');
    std::fs::write(out, body).expect("write");
}

/// Serves `data`, adds credential `db-root` holding `secret`, lets a probe run end, then
/// backs the directory up into `file` while it is served; the server is stopped after.
async fn back_up_after_a_run(cwd: &Path, data: &Path, admin: &str, secret: &str, file: &Path) {
    let serve = start_serve(cwd, &["--data", &arg(data)], &[]).await;
    let (server, process) = probe_process(&serve, admin).await;
    let body = json!({"name": "db-root", "username": "root", "secret": secret});
    assert!(
        server
            .post("/v1/credentials", admin, body)
            .await
            .status
            .is_success()
    );
    let id = server
        .start_run(&process, admin, json!({"mode": "calls", "n": 4}))
        .await;
    server.wait_for_state_or_end(&id).await;
    backup(cwd, data, file);
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_edited_reordered_or_newer_backup_or_a_wrong_key_restores_nothing() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let good = tmp.path().join("good.jsonl");
    back_up_after_a_run(tmp.path(), &data, &admin, &random_secret(24), &good).await;
    let key = data.join("master.key");
    let with_key = ["--master-key-file", &arg(&key)];
    let bytes = std::fs::read(&good).expect("backup");
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    let n_lines = text.lines().count();

    let mut cases: Vec<(&str, PathBuf, &str)> = Vec::new();
    let mut case = |name: &'static str, content: Vec<u8>, expect: &'static str| {
        let path = tmp.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, content).expect("write");
        cases.push((name, path, expect));
    };
    case("half", bytes[..bytes.len() / 2].to_vec(), "truncated");
    let without_end: String = text
        .lines()
        .take(n_lines - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    case("no-end", without_end.into_bytes(), "truncated");
    case(
        "one-byte-short",
        bytes[..bytes.len() - 1].to_vec(),
        "truncated",
    );
    // One base64 character of a row changed, checksum as it was.
    let flipped = {
        let row = text.find("\"kind\":\"row\"").expect("a row");
        let at = row + text[row..].find("\"value\":\"").expect("value") + 9;
        let mut b = bytes.clone();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        b
    };
    case("flipped", flipped, "fails its checksum");
    let newer = text.replacen("\"version\":1", "\"version\":2", 1);
    case("newer", newer.into_bytes(), "newer warden");
    let forged = |name: &'static str, edit: fn(&mut Vec<Value>)| {
        let path = tmp.path().join(format!("{name}.jsonl"));
        forge(&good, &path, edit);
        path
    };
    // With the checksum recomputed: an audit record edited, one removed, two swapped, a row
    // for a table this warden does not know.
    let edited = forged("edited", |lines| {
        let at = lines
            .iter()
            .rposition(|l| l["kind"] == "audit")
            .expect("audit");
        let record = BASE64
            .decode(lines[at]["record"].as_str().expect("b64"))
            .expect("b64");
        let record =
            String::from_utf8(record)
                .expect("utf-8")
                .replacen("\"time_ms\":1", "\"time_ms\":2", 1);
        lines[at]["record"] = json!(BASE64.encode(record));
    });
    let removed = forged("removed", |lines| {
        let at = lines
            .iter()
            .rposition(|l| l["kind"] == "audit")
            .expect("audit");
        lines.remove(at);
        let count = lines[0]["audit_records"].as_u64().expect("count");
        lines[0]["audit_records"] = json!(count - 1);
    });
    let swapped = forged("swapped", |lines| {
        let at = lines
            .iter()
            .rposition(|l| l["kind"] == "audit")
            .expect("audit");
        lines.swap(at, at - 1);
    });
    let unknown = forged("unknown-table", |lines| {
        let at = lines.iter().position(|l| l["kind"] == "row").expect("row");
        lines[at]["table"] = json!("shadow_admins");
    });
    for (path, expect) in [
        (edited, "does not verify"),
        (removed, "signed head"),
        (swapped, "sequence"),
        (unknown, "unknown here"),
    ] {
        cases.push(("forged", path, expect));
    }
    for (name, path, expect) in &cases {
        let target = tmp
            .path()
            .join(format!("target-{name}-{}", random_secret(6)));
        let (ok, out) = restore(tmp.path(), path, &target, &with_key);
        assert!(!ok, "{name} restored: {out}");
        assert!(out.contains(expect), "{name}: {out}");
        assert_eq!(out.lines().count(), 1, "{name}: one sentence: {out}");
        assert!(!target.exists(), "{name} left {}", target.display());
    }

    // Without the master key, or with another one: refused, nothing left.
    let target = tmp.path().join("no-key");
    let (ok, out) = restore(tmp.path(), &good, &target, &[]);
    assert!(!ok && out.contains("no master key at"), "{out}");
    assert!(!target.exists());
    let other = tmp.path().join("other.key");
    let dir = tempfile::tempdir().expect("dir");
    DataDir::init(dir.path()).expect("another data dir");
    std::fs::copy(dir.path().join("master.key"), &other).expect("copy key");
    let (ok, out) = restore(
        tmp.path(),
        &good,
        &target,
        &["--master-key-file", &arg(&other)],
    );
    assert!(
        !ok && out.contains("the master key does not open this backup"),
        "{out}"
    );
    assert!(!target.exists());
    // A non-empty target is refused and kept as it was.
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).expect("dir");
    std::fs::write(busy.join("keep"), b"x").expect("file");
    let (ok, out) = restore(tmp.path(), &good, &busy, &with_key);
    assert!(!ok && out.contains("is not empty"), "{out}");
    assert!(busy.join("keep").exists());
    // The master key is in no form in the file.
    let master = std::fs::read(&key).expect("key");
    for form in [
        master.clone(),
        hex::encode(&master).into_bytes(),
        BASE64.encode(&master).into_bytes(),
    ] {
        assert!(!bytes.windows(form.len()).any(|w| w == form.as_slice()));
    }
    // And the good one still restores.
    let (ok, out) = restore(tmp.path(), &good, &tmp.path().join("fine"), &with_key);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_data_directorys_owner_gets_a_backup_even_through_a_loosened_socket() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let serve = start_serve(tmp.path(), &["--data", &arg(&data)], &[]).await;
    let socket = data.join("control.sock");
    let mode = |path: &Path| std::fs::metadata(path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    // The misconfiguration an attacker hopes for: directory and socket opened to everyone.
    let open = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    open(tmp.path(), 0o755);
    open(&data, 0o755);
    open(&socket, 0o666);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).expect("dir");
    open(&out, 0o777);
    let stolen = out.join("stolen.jsonl");
    let mut command = std::process::Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(super::BIN)
        .args(["backup", "--data", &arg(&data), "-o", &arg(&stolen)])
        .env_remove("WARDEN_DATA");
    let (status, stdout, stderr) = run(command);
    assert!(!status.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("only the data directory's owner may ask for a backup"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&out).expect("out").count(),
        0,
        "a file was left"
    );
    // The owner speaking anything but the one request gets a refusal, not state.
    for request in [
        "backup 2\n",
        "dump\n",
        &format!("backup 1{}\n", "x".repeat(200)),
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        stream.write_all(request.as_bytes()).expect("write");
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        assert!(
            answer.starts_with("error: unknown request"),
            "{request:?}: {answer}"
        );
        assert_eq!(answer.lines().count(), 1, "{answer}");
    }
    let log = serve.stderr();
    assert!(log.contains("refused a peer that does not own"), "{log}");
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_an_empty_postgres_database_and_never_into_a_used_one() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let secret = random_secret(24);
    let file = tmp.path().join("backup.jsonl");
    back_up_after_a_run(tmp.path(), &data, &admin, &secret, &file).await;
    let snapshot = header(&file)["audit_records"].as_u64().expect("count");
    let key = data.join("master.key");
    let url = warden_tests::postgres::fresh_database();

    let keys = tmp.path().join("pg-keys");
    let with = ["--database", url.as_str(), "--master-key-file", &arg(&key)];
    let (ok, out) = restore(tmp.path(), &file, &keys, &with);
    assert!(ok, "{out}");
    let mut verify = warden(tmp.path());
    verify
        .args(["audit", "verify", "--data", &arg(&keys)])
        .args(with);
    let (status, stdout, stderr) = run(verify);
    assert!(status.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{snapshot} records")), "{stdout}");
    let dir = DataDir::open_at(
        &keys,
        &MasterKeySource::File(key.clone()),
        &DatabaseLocation::Postgres(url.clone()),
    )
    .expect("open");
    let vault = Vault::open(
        &dir.db,
        MasterKeySource::File(key.clone()).load().expect("key"),
    )
    .expect("vault");
    assert_eq!(
        vault.secret("db-root").expect("secret").expose(),
        secret.as_bytes()
    );
    // Without --database the restored directory says where its state is.
    let (status, _, stderr) = audit_verify(tmp.path(), &keys, &key);
    assert!(
        !status.status.success() && stderr.contains("--database"),
        "{stderr}"
    );
    drop(dir);

    // The database now holds state: a second restore into it is refused, leaving nothing.
    let again = tmp.path().join("again");
    let (ok, out) = restore(tmp.path(), &file, &again, &with);
    assert!(!ok && out.contains("already holds Warden state"), "{out}");
    assert!(!again.exists());
}
