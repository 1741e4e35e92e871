//! The vault end to end: `warden vault rekey` then a restart, where the master key comes
//! from (file, environment variable, command) and the refusal of a readable key file,
//! credential versions over the API, and no plaintext secret anywhere on disk, in the logs
//! or in the audit after secret updates and a run that uses them.
//!
//! Servers here are real `warden serve` processes (so their stdout/stderr can be scanned and
//! they can be restarted on the same data directory) on a free loopback port.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::registry::manifest::Manifest;
use warden_host::registry::signing;
use warden_host::store::DataDir;
use warden_host::users::UserStore;
use warden_host::vault::{CredentialKind, MasterKeySource, Secret, Vault, VaultError};
use warden_tests::scan::{SecretScan, assert_clean, count_files};
use warden_tests::sshd::{Sshd, TestUser};
use warden_tests::{guests, random_secret, repo_root};

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// How long a test waits for a server or a run before failing.
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A `warden serve` child process with its stdout and stderr in files; stopped on drop.
struct Serve {
    child: Child,
    base: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Serve {
    /// Spawns `warden serve --data DATA ARGS…` with `envs`, logging into `logs/NAME.*`.
    fn spawn(data: &Path, args: &[&str], envs: &[(&str, &str)], logs: &Path, name: &str) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let stdout = logs.join(format!("{name}.stdout"));
        let stderr = logs.join(format!("{name}.stderr"));
        let child = Command::new(BIN)
            .args(["serve", "--listen", &listen, "--data"])
            .arg(data)
            .arg("--policies")
            .arg(repo_root().join("policies"))
            .args(args)
            .env_remove("WARDEN_DATA")
            .env_remove("WARDEN_POLICIES")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("warden serve starts");
        Serve {
            child,
            base: format!("http://{listen}"),
            stdout,
            stderr,
        }
    }

    /// Spawns a server and waits until it answers `/healthz`.
    async fn start(
        data: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        logs: &Path,
        name: &str,
    ) -> Serve {
        let mut serve = Serve::spawn(data, args, envs, logs, name);
        let deadline = Instant::now() + PATIENCE;
        let client = reqwest::Client::new();
        loop {
            let reply = client.get(format!("{}/healthz", serve.base)).send().await;
            if reply.is_ok_and(|r| r.status() == StatusCode::OK) {
                return serve;
            }
            if let Ok(Some(status)) = serve.child.try_wait() {
                panic!("warden serve exited with {status}: {}", serve.stderr_text());
            }
            assert!(
                Instant::now() < deadline,
                "never healthy: {}",
                serve.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Spawns a server that must refuse to start; returns its stderr.
    fn refused(
        data: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        logs: &Path,
        name: &str,
    ) -> String {
        let mut serve = Serve::spawn(data, args, envs, logs, name);
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = serve.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "warden serve did not refuse to start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            !status.success(),
            "warden serve started: {}",
            serve.stderr_text()
        );
        serve.stderr_text()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Ctrl-C (SIGINT, the graceful shutdown), then waits; SIGKILL if it hangs.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client bound to one server and token.
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) token: String,
    client: reqwest::Client,
}

impl Api {
    pub(crate) fn new(base: &str, token: &str) -> Api {
        Api {
            base: base.to_string(),
            token: token.to_string(),
            client: reqwest::Client::new(),
        }
    }

    /// Sends a request; returns the status, the raw body and the body as JSON.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, String, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, text, json)
    }

    /// As the admin; asserts `want`.
    pub(crate) async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        want: StatusCode,
    ) -> (String, Value) {
        let (status, text, json) = self.call(method, path, Some(&self.token), body).await;
        assert_eq!(status, want, "{path}: {text}");
        (text, json)
    }

    pub(crate) async fn get(&self, path: &str) -> (String, Value) {
        self.ok(Method::GET, path, None, StatusCode::OK).await
    }
}

/// Initialises a data directory (file master key) with a Privileged Administrator `admin`;
/// returns its token, with the database closed so a server process can open it.
fn init_data_dir(data: &Path) -> String {
    let dir = DataDir::init(data).expect("init data dir");
    bootstrap_admin(&dir)
}

fn bootstrap_admin(dir: &DataDir) -> String {
    let users = UserStore::open(&dir.db).expect("user store");
    let roles = BTreeSet::from(["privileged-administrator".to_string()]);
    users.create_user("admin", roles).expect("create admin");
    let issued = users.issue_token("admin", "bootstrap").expect("token");
    issued.token.expose_secret().to_string()
}

/// Runs the `warden` binary with `args` and `envs`, feeding `stdin`.
fn warden(args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("WARDEN_DATA")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("warden runs");
    // Taking the pipe closes it when this scope ends, with or without bytes written.
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
        pipe.write_all(bytes).expect("stdin");
    }
    child.wait_with_output().expect("warden output")
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
    let mut serve = Serve::start(&data, &[], &[], tmp.path(), "after-rekey").await;
    let api = Api::new(&serve.base, &admin);
    let (_, list) = api.get("/v1/credentials").await;
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["db-root", "web-key"]);
    let (_, versions) = api.get("/v1/credentials/db-root/versions").await;
    assert_eq!(versions.as_array().map(Vec::len), Some(2), "{versions}");
    serve.stop();
    let mut findings = scan.text("server stdout", &serve.stdout_text());
    findings.extend(scan.text("server stderr", &serve.stderr_text()));
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
    let stderr = Serve::refused(
        &data,
        &["--master-key-command", &old_command],
        &[],
        tmp.path(),
        "old-key",
    );
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
        let mut serve = Serve::start(&data, &args, &envs, tmp.path(), name).await;
        let api = Api::new(&serve.base, &admin);
        let (text, _) = api.get("/v1/credentials").await;
        assert!(text.contains("\"c1\""), "{name}: {text}");
        serve.stop();
        let logs = serve.stderr_text() + &serve.stdout_text();
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
        let stderr = Serve::refused(&data, &[], &[], tmp.path(), &format!("mode-{mode:o}"));
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
    let mut serve = Serve::start(&data, &[], &[], tmp.path(), "mode-600").await;
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
    let mut serve = Serve::start(&data, &[], &[], tmp.path(), "versions").await;
    let api = Api::new(&serve.base, &admin);
    let (first, second) = (random_secret(24), random_secret(24));
    api.ok(
        Method::POST,
        "/v1/credentials",
        Some(json!({ "name": "db", "username": "root", "secret": first })),
        StatusCode::CREATED,
    )
    .await;
    api.ok(
        Method::PUT,
        "/v1/credentials/db/secret",
        Some(json!({ "secret": second })),
        StatusCode::OK,
    )
    .await;
    let (text, versions) = api.get("/v1/credentials/db/versions").await;
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

    let (status, _, body) = api
        .call(
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
    let (status, _, _) = api
        .call(Method::GET, "/v1/credentials/db/versions", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    api.ok(
        Method::POST,
        "/v1/users",
        Some(json!({ "name": "bob", "roles": [] })),
        StatusCode::CREATED,
    )
    .await;
    let (_, token) = api
        .ok(
            Method::POST,
            "/v1/users/bob/tokens",
            Some(json!({})),
            StatusCode::CREATED,
        )
        .await;
    let enrollment = token["token"].as_str().expect("token");
    let bob = &warden_tests::http::redeem(&api.client, &api.base, "bob", enrollment).await;
    let (status, text, _) = api
        .call(Method::GET, "/v1/credentials/db/versions", Some(bob), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    serve.stop();
}

// ---------------------------------------------------------------------------------------
// No plaintext anywhere
// ---------------------------------------------------------------------------------------

/// Trusts a fresh publisher and uploads the signed `probe` fixture; returns its digest.
pub(crate) async fn publish_probe(api: &Api) -> String {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let body =
        json!({ "name": "tests", "public_key": hex::encode(key.verifying_key().as_bytes()) });
    api.ok(
        Method::POST,
        "/v1/publishers",
        Some(body),
        StatusCode::CREATED,
    )
    .await;
    let manifest = std::fs::read_to_string(guests::manifest("probe")).expect("manifest");
    let manifest = Manifest::parse(&manifest).expect("manifest parses");
    let component = std::fs::read(guests::component("probe")).expect("component built");
    let signed = signing::sign(&component, &manifest, &key).expect("sign");
    let resp = api
        .client
        .post(format!("{}/v1/modules", api.base))
        .bearer_auth(&api.token)
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .body(signed)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.expect("json");
    body["digest"].as_str().expect("digest").to_string()
}

/// Polls run `id` until it ends; returns its JSON.
async fn wait_for_end(api: &Api, id: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, run) = api.get(&format!("/v1/runs/{id}")).await;
        let state = run["state"].as_str().unwrap_or_default();
        if !matches!(
            state,
            "queued" | "running" | "pending" | "awaiting-approval"
        ) {
            return run;
        }
        assert!(Instant::now() < deadline, "run never ended: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
    let mut serve = Serve::start(&data, &[], &[("WARDEN_LOG", log)], tmp.path(), "scan").await;
    let api = Api::new(&serve.base, &admin);

    // `ops` starts with a decoy and is updated to the real password; `spare` is updated and
    // never used. All four values must stay sealed.
    let (ops_old, spare_old, spare_new) = (random_secret(24), random_secret(24), random_secret(32));
    let ops_new = user.password.clone();
    let target = json!({ "name": "t0", "address": format!("{}:{}", sshd.ip, sshd.port),
        "host_key": sshd.host_key_line });
    api.ok(
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
        api.ok(
            Method::POST,
            "/v1/credentials",
            Some(body),
            StatusCode::CREATED,
        )
        .await;
        let path = format!("/v1/credentials/{name}/secret");
        api.ok(
            Method::PUT,
            &path,
            Some(json!({ "secret": new })),
            StatusCode::OK,
        )
        .await;
    }

    // A run that logs in with the updated password and gives it to sudo.
    let digest = publish_probe(&api).await;
    let process = json!({ "name": "whoami", "module_digest": digest,
        "grant": { "credentials": ["ops"], "targets": ["t0"], "commands": ["sudo id -un"] } });
    let (_, created) = api
        .ok(
            Method::POST,
            "/v1/processes",
            Some(process),
            StatusCode::CREATED,
        )
        .await;
    let process_id = created["id"].as_str().expect("process id");
    let inputs = json!({ "inputs": { "mode": "exec", "credential": "ops", "target": "t0",
        "command": "id -un", "sudo": true } });
    let path = format!("/v1/processes/{process_id}/runs");
    let (_, started) = api
        .ok(Method::POST, &path, Some(inputs), StatusCode::ACCEPTED)
        .await;
    let run_id = started["id"].as_str().expect("run id").to_string();
    let run = wait_for_end(&api, &run_id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(run.to_string().contains("root"), "sudo ran as root: {run}");

    let (run_text, _) = api.get(&format!("/v1/runs/{run_id}")).await;
    let (audit_text, audit) = api.get("/v1/audit").await;
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
    let (versions_text, _) = api.get("/v1/credentials/ops/versions").await;
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
    findings.extend(scan.text("server stdout", &serve.stdout_text()));
    findings.extend(scan.text("server stderr", &serve.stderr_text()));
    findings.extend(scan.text("GET /v1/audit", &audit_text));
    findings.extend(scan.text("warden audit show", &audit_cli));
    findings.extend(scan.text("GET /v1/runs/{id}", &run_text));
    findings.extend(scan.text("GET versions", &versions_text));
    assert_clean(&findings);
    // The scan read real material: sled files, a trace log, the audit trail.
    assert!(count_files(&data).expect("count") >= 4);
    assert!(
        serve.stderr_text().lines().count() > 20,
        "trace log is too thin to mean much"
    );
    assert!(
        audit_cli.contains("credential.update-secret"),
        "{audit_cli}"
    );
}
