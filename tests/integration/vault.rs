//! The vault end to end: `warden vault rekey` then a restart, where the master key comes
//! from (file, environment variable, command) and the refusal of a readable key file,
//! credential versions over the API, and no plaintext secret anywhere on disk, in the logs
//! or in the audit after secret updates and a run that uses them.
//!
//! Servers here are real `warden serve` processes (so their stdout/stderr can be scanned and
//! they can be restarted on the same data directory) on a free loopback port.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tempfile::TempDir;
use warden_host::store::DataDir;
use warden_host::vault::{CredentialKind, MasterKeySource, Secret, Vault, VaultError};
use warden_tests::http::{Reply, ServeCommand, init_data_dir};
use warden_tests::random_secret;
use warden_tests::scan::{SecretScan, assert_clean, count_files};
use warden_tests::sshd::{Sshd, TestUser};

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

// ---------------------------------------------------------------------------------------
// Harness (the server child, client and waits are `warden_tests::http`'s)
// ---------------------------------------------------------------------------------------

/// `warden serve` on `data` with `args` and `envs`, its stdout and stderr in `logs/NAME.*`.
fn serve_command(
    data: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    logs: &Path,
    name: &str,
) -> ServeCommand {
    ServeCommand::new(BIN, data, logs.join(format!("{name}.stderr")))
        .args(args)
        .envs(envs)
        .stdout(logs.join(format!("{name}.stdout")))
}

/// Runs the `warden` binary with `args` and `envs`, feeding `stdin`.
fn warden(args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> std::process::Output {
    warden_tests::warden_with_env(BIN, args, envs, stdin).expect("warden runs")
}

fn text_of(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn secret(text: &str) -> Secret {
    Secret::from_bytes(text.as_bytes().to_vec())
}

/// Writes `hex` to a 0600 file and returns the `--master-key-command` that prints it.
fn key_command(dir: &Path, name: &str, hex: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{hex}\n")).expect("key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    format!("cat {}", path.display())
}

fn key_source(command: &str) -> MasterKeySource {
    MasterKeySource::Command(command.split_whitespace().map(str::to_string).collect())
}

// ---------------------------------------------------------------------------------------
// Rekey
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_then_restart_every_credential_decrypts_and_the_old_key_no_longer_opens_the_vault() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let (s1, s2, s3) = (random_secret(24), random_secret(24), random_secret(40));
    {
        let dir = DataDir::open(&data).expect("open");
        let vault = Vault::open(&dir.db, dir.master_key).expect("vault");
        vault
            .add("db-root", "root", CredentialKind::Password, secret(&s1))
            .expect("add");
        vault
            .add_version("db-root", secret(&s2), "alice", "rotated by hand")
            .expect("version");
        vault
            .add("web-key", "deploy", CredentialKind::SshKey, secret(&s3))
            .expect("add");
    }
    let old_key = std::fs::read(data.join("master.key")).expect("old key");

    let out = warden(
        &["vault", "rekey", "--data", &data.display().to_string()],
        &[],
        None,
    );
    let (stdout, stderr) = text_of(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("2 credential(s) re-wrapped"), "{stdout}");
    let key_file = data.join("master.key");
    let new_key = std::fs::read(&key_file).expect("new key");
    assert_eq!(new_key.len(), 32);
    assert_ne!(new_key, old_key);
    let mode = std::fs::metadata(&key_file)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!data.join("master.key.new").exists());
    let scan = SecretScan::new(&[
        s1.as_bytes(),
        s2.as_bytes(),
        s3.as_bytes(),
        &old_key,
        &new_key,
    ]);
    let mut findings = scan.text("rekey stdout", &stdout);
    findings.extend(scan.text("rekey stderr", &stderr));
    assert_clean(&findings);

    // Restart the server on the rekeyed directory: it opens, and lists both credentials.
    let mut serve = serve_command(&data, &[], &[], tmp.path(), "after-rekey")
        .start()
        .await;
    let api = serve.server(&admin);
    let list = api.admin_get("/v1/credentials").await.body;
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["db-root", "web-key"]);
    let versions = api.admin_get("/v1/credentials/db-root/versions").await.body;
    assert_eq!(versions.as_array().map(Vec::len), Some(2), "{versions}");
    serve.stop();
    let mut findings = scan.text("server stdout", &serve.stdout());
    findings.extend(scan.text("server stderr", &serve.stderr()));
    assert_clean(&findings);

    // Every version of every credential decrypts under the new key.
    {
        let dir = DataDir::open(&data).expect("open after rekey");
        let vault = Vault::open(&dir.db, dir.master_key).expect("vault");
        assert_eq!(
            vault.secret("db-root").expect("db-root").expose(),
            s2.as_bytes()
        );
        assert_eq!(
            vault.secret_version("db-root", 1).expect("v1").expose(),
            s1.as_bytes()
        );
        assert_eq!(
            vault.secret("web-key").expect("web-key").expose(),
            s3.as_bytes()
        );
    }

    // The old key opens nothing: directly, and the server refuses to start with it.
    let old_command = key_command(tmp.path(), "old.hex", &hex::encode(&old_key));
    {
        let db = warden_host::store::open_database(&data, &Default::default()).expect("db");
        let old = key_source(&old_command).load().expect("old key loads");
        let vault = Vault::open(&db, old).expect("vault");
        for name in ["db-root", "web-key"] {
            let err = vault.secret(name).expect_err("old key must not decrypt");
            assert!(matches!(err, VaultError::DecryptionFailed), "{err:?}");
        }
    }
    let stderr = serve_command(
        &data,
        &["--master-key-command", &old_command],
        &[],
        tmp.path(),
        "old-key",
    )
    .refused()
    .await;
    assert!(stderr.contains("does not open credential"), "{stderr}");
    assert_clean(&scan.text("refused server stderr", &stderr));
}

#[test]
fn rekey_refuses_an_external_key_source_and_an_uninitialised_directory() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let data_arg = data.display().to_string();
    let out = warden(
        &[
            "vault",
            "rekey",
            "--data",
            &data_arg,
            "--master-key-env",
            "SOME_VAR",
        ],
        &[],
        None,
    );
    let (_, stderr) = text_of(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rekey works with the master key file only"),
        "{stderr}"
    );
    let before = std::fs::read(data.join("master.key")).expect("key");
    let empty = tmp.path().join("empty");
    let out = warden(
        &["vault", "rekey", "--data", &empty.display().to_string()],
        &[],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text_of(&out).1.contains("not a Warden data directory"),
        "{:?}",
        text_of(&out)
    );
    assert_eq!(
        std::fs::read(data.join("master.key")).expect("key"),
        before,
        "key untouched"
    );
}

// ---------------------------------------------------------------------------------------
// Master key sources
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_can_come_from_an_environment_variable_or_a_command() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let data_arg = data.display().to_string();
    let key_hex = hex::encode(rand::random::<[u8; 32]>());
    let env = [("WARDEN_TEST_MASTER_KEY", key_hex.as_str())];
    let command = key_command(tmp.path(), "key.hex", &key_hex);

    let out = warden(
        &[
            "init",
            "--data",
            &data_arg,
            "--master-key-env",
            "WARDEN_TEST_MASTER_KEY",
        ],
        &env,
        None,
    );
    let (stdout, stderr) = text_of(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !data.join("master.key").exists(),
        "no key file with an external key"
    );
    let admin = stdout
        .lines()
        .find_map(|l| l.split("keep it): ").nth(1))
        .expect("admin token printed")
        .trim()
        .to_string();
    assert!(!stdout.contains(&key_hex) && !stderr.contains(&key_hex));

    // From the environment variable.
    let password = random_secret(24);
    let add = warden(
        &[
            "credential",
            "add",
            "c1",
            "--username",
            "u",
            "--data",
            &data_arg,
            "--master-key-env",
            "WARDEN_TEST_MASTER_KEY",
        ],
        &env,
        Some(password.as_bytes()),
    );
    assert!(add.status.success(), "{:?}", text_of(&add));
    // From the command, which prints the same key.
    let list = warden(
        &[
            "credential",
            "list",
            "--data",
            &data_arg,
            "--master-key-command",
            &command,
        ],
        &[],
        None,
    );
    assert!(list.status.success(), "{:?}", text_of(&list));
    assert!(text_of(&list).0.contains("c1"));

    // Each way of getting it wrong is refused with its own clear message.
    let other_hex = hex::encode(rand::random::<[u8; 32]>());
    // (extra arguments, environment, what the error must say)
    type Case<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 5] = [
        (&[], vec![], "master.key"),
        (
            &["--master-key-env", "WARDEN_TEST_MASTER_KEY"],
            vec![("WARDEN_TEST_MASTER_KEY", other_hex.as_str())],
            "does not open credential",
        ),
        (
            &["--master-key-env", "WARDEN_TEST_UNSET_KEY"],
            vec![],
            "not set",
        ),
        (
            &["--master-key-command", "false"],
            vec![],
            "exited unsuccessfully",
        ),
        (
            &["--master-key-env", "X", "--master-key-command", "true"],
            vec![],
            "cannot be used with",
        ),
    ];
    for (args, envs, want) in cases {
        let mut all = vec!["credential", "list", "--data", &data_arg];
        all.extend_from_slice(args);
        let out = warden(&all, &envs, None);
        let (stdout, stderr) = text_of(&out);
        assert!(!out.status.success(), "{args:?} should fail: {stdout}");
        assert!(
            stderr.contains(want),
            "{args:?}: expected {want:?} in {stderr}"
        );
        assert!(
            !stderr.contains(&key_hex) && !stderr.contains(&other_hex),
            "{stderr}"
        );
    }

    // The server takes the key either way too (plain HTTP on loopback: the subject here is
    // the master key, not the certificate `warden init` made; tests/integration/tls.rs is).
    for (name, args, envs) in [
        (
            "env",
            vec![
                "--master-key-env",
                "WARDEN_TEST_MASTER_KEY",
                "--insecure-http",
            ],
            env.to_vec(),
        ),
        (
            "command",
            vec!["--master-key-command", command.as_str(), "--insecure-http"],
            vec![],
        ),
    ] {
        let mut serve = serve_command(&data, &args, &envs, tmp.path(), name)
            .start()
            .await;
        let api = serve.server(&admin);
        let text = api.admin_get("/v1/credentials").await.text;
        assert!(text.contains("\"c1\""), "{name}: {text}");
        serve.stop();
        let logs = serve.stderr() + &serve.stdout();
        assert!(
            !logs.contains(&key_hex) && !logs.contains(&password),
            "{name}: {logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_to_start_with_a_key_file_group_or_others_can_read() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let key = data.join("master.key");
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let stderr = serve_command(&data, &[], &[], tmp.path(), &format!("mode-{mode:o}"))
            .refused()
            .await;
        assert!(
            stderr.contains(&format!("has mode {mode:o}"))
                && stderr.contains("group/other access is refused"),
            "{mode:o}: {stderr}"
        );
        let out = warden(
            &["credential", "list", "--data", &data.display().to_string()],
            &[],
            None,
        );
        assert!(!out.status.success(), "offline commands refuse it too");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut serve = serve_command(&data, &[], &[], tmp.path(), "mode-600")
        .start()
        .await;
    serve.stop();
}

// ---------------------------------------------------------------------------------------
// Versions over the API
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_update_adds_an_attributed_version_and_the_list_shows_no_value() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let mut serve = serve_command(&data, &[], &[], tmp.path(), "versions")
        .start()
        .await;
    let api = serve.server(&admin);
    let (first, second) = (random_secret(24), random_secret(24));
    api.expect(
        Method::POST,
        "/v1/credentials",
        Some(json!({ "name": "db", "username": "root", "secret": first })),
        StatusCode::CREATED,
    )
    .await;
    api.expect(
        Method::PUT,
        "/v1/credentials/db/secret",
        Some(json!({ "secret": second })),
        StatusCode::OK,
    )
    .await;
    let Reply {
        text,
        body: versions,
        ..
    } = api.admin_get("/v1/credentials/db/versions").await;
    let versions = versions.as_array().expect("array");
    assert_eq!(versions.len(), 2, "{text}");
    let expected = [
        (1, "previous", "created over the API"),
        (2, "current", "secret updated over the API"),
    ];
    for (v, (number, state, reason)) in versions.iter().zip(expected) {
        assert_eq!(v["version"], number, "{text}");
        assert_eq!(v["state"], state, "{text}");
        assert_eq!(v["created_by"], "admin", "{text}");
        assert_eq!(v["reason"], reason, "{text}");
        assert!(v["created_ms"].as_u64() > Some(0), "{text}");
        let fields: BTreeSet<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from(["version", "state", "created_ms", "created_by", "reason"]),
            "metadata only"
        );
    }
    assert!(versions[1]["created_ms"].as_u64() >= versions[0]["created_ms"].as_u64());
    let scan = SecretScan::new(&[first.as_bytes(), second.as_bytes()]);
    assert_clean(&scan.text("versions response", &text));

    let Reply { status, body, .. } = api
        .request(
            Method::GET,
            "/v1/credentials/nope/versions",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let status = api
        .request(Method::GET, "/v1/credentials/db/versions", None, None)
        .await
        .status;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    api.expect(
        Method::POST,
        "/v1/users",
        Some(json!({ "name": "bob", "roles": [] })),
        StatusCode::CREATED,
    )
    .await;
    let token = api
        .expect(
            Method::POST,
            "/v1/users/bob/tokens",
            Some(json!({})),
            StatusCode::CREATED,
        )
        .await
        .body;
    let enrollment = token["token"].as_str().expect("token");
    let bob = &api.redeem("bob", enrollment).await;
    let Reply { status, text, .. } = api
        .request(Method::GET, "/v1/credentials/db/versions", Some(bob), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    serve.stop();
}

// ---------------------------------------------------------------------------------------
// No plaintext anywhere
// ---------------------------------------------------------------------------------------

/// The states a run is in before it ends, as this module waits on them.
const NOT_ENDED: &[&str] = &["queued", "running", "pending", "awaiting-approval"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_secret_in_the_data_dir_logs_or_audit_after_updates_and_a_run() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let sshd = Sshd::start("127.0.0.3").expect("sshd");
    let user = TestUser::create("wdn")
        .expect("user")
        .with_sudo()
        .expect("sudo");
    // Everything Warden and the SSH layer log, down to trace; the compiler's own trace
    // (gigabytes of machine code listings) is left out.
    let log = "trace,cranelift=info,wasmtime=info,regalloc2=info,wasmparser=info";
    let mut serve = serve_command(&data, &[], &[("WARDEN_LOG", log)], tmp.path(), "scan")
        .start()
        .await;
    let api = serve.server(&admin);

    // `ops` starts with a decoy and is updated to the real password; `spare` is updated and
    // never used. All four values must stay sealed.
    let (ops_old, spare_old, spare_new) = (random_secret(24), random_secret(24), random_secret(32));
    let ops_new = user.password.clone();
    let target = json!({ "name": "t0", "address": format!("{}:{}", sshd.ip, sshd.port),
        "host_key": sshd.host_key_line });
    api.expect(
        Method::POST,
        "/v1/targets",
        Some(target),
        StatusCode::CREATED,
    )
    .await;
    for (name, username, old, new) in [
        ("ops", user.name.as_str(), &ops_old, &ops_new),
        ("spare", "nobody", &spare_old, &spare_new),
    ] {
        // `ops` types its password into sudo, so it is an admin credential.
        let body =
            json!({ "name": name, "username": username, "secret": old, "admin": name == "ops" });
        api.expect(
            Method::POST,
            "/v1/credentials",
            Some(body),
            StatusCode::CREATED,
        )
        .await;
        let path = format!("/v1/credentials/{name}/secret");
        api.expect(
            Method::PUT,
            &path,
            Some(json!({ "secret": new })),
            StatusCode::OK,
        )
        .await;
    }

    // A run that logs in with the updated password and gives it to sudo.
    let digest = api.publish_as("tests", "probe").await;
    let process = json!({ "name": "whoami", "module_digest": digest,
        "grant": { "credentials": ["ops"], "targets": ["t0"], "commands": ["sudo id -un"] } });
    let process_id = &api.process(process).await;
    let inputs = json!({ "inputs": { "mode": "exec", "credential": "ops", "target": "t0",
        "command": "id -un", "sudo": true } });
    let path = format!("/v1/processes/{process_id}/runs");
    let started = api
        .expect(Method::POST, &path, Some(inputs), StatusCode::ACCEPTED)
        .await
        .body;
    let run_id = started["id"].as_str().expect("run id").to_string();
    let run = api.wait_while(&run_id, NOT_ENDED).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(run.to_string().contains("root"), "sudo ran as root: {run}");

    let run_text = api.admin_get(&format!("/v1/runs/{run_id}")).await.text;
    let Reply {
        text: audit_text,
        body: audit,
        ..
    } = api.admin_get("/v1/audit").await;
    let actions: BTreeSet<&str> = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.contains("credential.update-secret") && actions.contains("ssh.exec"),
        "{actions:?}"
    );
    let versions_text = api.admin_get("/v1/credentials/ops/versions").await.text;
    serve.stop();
    let audit_show = warden(
        &["audit", "show", "--data", &data.display().to_string()],
        &[],
        None,
    );
    assert!(audit_show.status.success(), "{:?}", text_of(&audit_show));
    let (audit_cli, _) = text_of(&audit_show);

    let secrets = [&ops_old, &ops_new, &spare_old, &spare_new];
    let scan = SecretScan::new(&secrets.map(|s| s.as_bytes()));
    let mut findings = scan.dir(&data).expect("scan data dir");
    findings.extend(scan.text("server stdout", &serve.stdout()));
    findings.extend(scan.text("server stderr", &serve.stderr()));
    findings.extend(scan.text("GET /v1/audit", &audit_text));
    findings.extend(scan.text("warden audit show", &audit_cli));
    findings.extend(scan.text("GET /v1/runs/{id}", &run_text));
    findings.extend(scan.text("GET versions", &versions_text));
    assert_clean(&findings);
    // The scan read real material: sled files, a trace log, the audit trail.
    assert!(count_files(&data).expect("count") >= 4);
    assert!(
        serve.stderr().lines().count() > 20,
        "trace log is too thin to mean much"
    );
    assert!(
        audit_cli.contains("credential.update-secret"),
        "{audit_cli}"
    );
}
