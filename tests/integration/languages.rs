//! Tasks in Python and JavaScript next to Rust: the `user-report` examples built with
//! componentize-py and componentize-js go through the same server path as a Rust task
//! (signed upload over HTTP, process, run) against a real sshd; an uploaded Python module is
//! not recompiled when the server restarts; and `warden new` + `warden build` make a
//! component in each language that the server accepts.
//!
//! The Python and JavaScript components are built once by `.ci/run` (see
//! `guests::lang_component`); the scaffolded projects are built here with the same tools.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::registry::manifest::Manifest;
use warden_tests::http::{
    Reply, ServeChild, ServeCommand, Server, init_data_dir, new_key, signed_bytes,
};
use warden_tests::sshd::{Sshd, TestUser};
use warden_tests::{guests, repo_root, warden};

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// How long a test waits for a run or a server before failing. Generous: the first run of
/// a big guest on a loaded 2-core machine includes compiling it.
const PATIENCE: Duration = Duration::from_secs(180);

/// The bound on how long a precompiled Python module takes to start after a restart.
const START_AFTER_RESTART: Duration = Duration::from_millis(500);

/// The states a run here is still in before it ends (no process here needs approvals).
const RUNNING: &[&str] = &["queued", "running"];

// ---------------------------------------------------------------------------------------
// Harness: the server (in-process or a `warden serve` child) is `warden_tests::http`'s;
// one sshd target
// ---------------------------------------------------------------------------------------

/// A server in this process on 127.0.0.1:0 over a new data directory.
async fn start_in_process() -> Server {
    Server::start_embedded().await.with_patience(PATIENCE)
}

/// `warden serve` on `data` logging at `info` into `log`, and the harness on it as `admin`.
async fn start_child(data: &Path, log: PathBuf, admin: &str) -> (ServeChild, Server) {
    let child = ServeCommand::new(BIN, data, log)
        .envs(&[("WARDEN_LOG", "info")])
        .start()
        .await;
    let http = child.server(admin).with_patience(PATIENCE);
    (child, http)
}

/// One real sshd target and a user on it, registered on a server as target `web-1` and
/// credential `ops` (the user's password).
struct Target {
    sshd: Sshd,
    user: TestUser,
}

impl Target {
    fn start() -> Target {
        let sshd = Sshd::start("127.0.0.1").expect("sshd");
        let user = TestUser::create("wlang").expect("user");
        Target { sshd, user }
    }

    async fn register(&self, http: &Server) {
        let target = json!({
            "name": "web-1",
            "address": self.sshd.addr(),
            "host_key": self.sshd.host_key_line,
        });
        http.admin_post("/v1/targets", target, StatusCode::CREATED)
            .await;
        let credential = json!({
            "name": "ops",
            "username": self.user.name,
            "secret": self.user.password,
        });
        http.admin_post("/v1/credentials", credential, StatusCode::CREATED)
            .await;
    }

    fn home(&self) -> String {
        self.user.home.to_string_lossy().into_owned()
    }

    /// A process running `digest` on this target, allowed to write under the user's home.
    async fn process(&self, http: &Server, name: &str, digest: &str) -> String {
        let body = json!({
            "name": name,
            "module_digest": digest,
            "grant": {
                "credentials": ["ops"],
                "targets": ["web-1"],
                // The user report's two commands, as argv patterns.
                "commands": ["getent passwd", "getent group **"],
                "paths": [self.home()],
            },
        });
        let created = http
            .admin_post("/v1/processes", body, StatusCode::CREATED)
            .await;
        created["id"].as_str().expect("process id").to_string()
    }

    /// Starts a user report run of `process`; returns the run id.
    async fn start_report(&self, http: &Server, process: &str) -> String {
        let inputs =
            json!({ "targets": ["web-1"], "credential": "ops", "report_dir": self.home() });
        let run = http
            .admin_post(
                &format!("/v1/processes/{process}/runs"),
                json!({ "inputs": inputs }),
                StatusCode::ACCEPTED,
            )
            .await;
        run["id"].as_str().expect("run id").to_string()
    }
}

/// The `lang` example (`python`, `js`) signed with its manifest by `key`.
fn signed_example(lang: &str, key: &SigningKey) -> Vec<u8> {
    let component = std::fs::read(guests::lang_component(lang)).expect("component");
    let text = std::fs::read_to_string(guests::lang_manifest(lang)).expect("manifest");
    signed_bytes(&component, &text, key)
}

// ---------------------------------------------------------------------------------------
// 1. Python and JavaScript tasks through the server, against a real sshd
// ---------------------------------------------------------------------------------------

/// Uploads the `lang` example, runs it on a real sshd target over HTTP, and checks its
/// report, its file on the target, its log and audit, and that the secret leaked nowhere.
async fn user_report_runs_through_the_server(lang: &str, language: &str) {
    let http = start_in_process().await;
    let target = Target::start();
    target.register(&http).await;
    let key = new_key();
    http.trust("acme", &key).await;
    let digest = http.publish_signed(signed_example(lang, &key)).await;
    let process = target.process(&http, "user-report", &digest).await;
    let run = target.start_report(&http, &process).await;
    let record = http.wait_while(&run, RUNNING).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");

    // The report: the task parsed real `getent` output and its file made the round trip.
    let result: Value =
        serde_json::from_str(record["result"].as_str().expect("result")).expect("result JSON");
    assert_eq!(result["language"], language, "{result:#}");
    assert_eq!(result["failed"], 0, "{result:#}");
    let entry = &result["targets"][0];
    let accounts: Vec<&str> = entry["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(accounts.contains(&target.user.name.as_str()), "{entry:#}");
    assert!(accounts.contains(&"root"), "{entry:#}");
    assert_eq!(entry["intact"], true, "{entry:#}");
    let path = target.user.home.join("user-report-web-1.json");
    assert_eq!(entry["report"], path.to_string_lossy().as_ref());
    let on_target = std::fs::read_to_string(&path).expect("report file on the target");
    assert_eq!(entry["bytes"], on_target.len(), "{entry:#}");
    let stored: Value = serde_json::from_str(&on_target).expect("report file is JSON");
    assert_eq!(stored["target"], "web-1");

    // The log went through the host.
    let messages: Vec<&str> = record["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("login account(s)")),
        "{messages:?}"
    );

    // Every host call is audited, with the run's id.
    let reply = http.get(&format!("/v1/audit?run={run}"), &http.admin).await;
    let (audit_text, audit) = (reply.text, reply.body);
    let actions: Vec<&str> = audit
        .as_array()
        .expect("audit array")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for want in [
        "credentials.acquire",
        "ssh.exec",
        "transfer.upload",
        "transfer.download",
        "log.write",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }

    // The secret is in none of the run's outputs, its audit, nor the whole audit log.
    let whole_audit = http.get("/v1/audit", &http.admin).await.text;
    let secret = &target.user.password;
    for (what, text) in [
        ("run record", record.to_string()),
        ("run audit", audit_text),
        ("audit log", whole_audit),
        ("report file", on_target),
    ] {
        assert!(
            !text.contains(secret.as_str()),
            "the secret is in the {what}"
        );
    }
    drop(target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_task_acquires_a_credential_runs_ssh_transfers_and_logs_without_the_secret() {
    user_report_runs_through_the_server("python", "python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_task_acquires_a_credential_runs_ssh_transfers_and_logs_without_the_secret() {
    user_report_runs_through_the_server("js", "javascript").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_module_is_held_to_the_memory_its_signed_manifest_asks_for() {
    let http = start_in_process().await;
    let key = new_key();
    http.trust("acme", &key).await;
    // The same Python component, signed with an ask (8 MiB) below what CPython needs.
    let text = std::fs::read_to_string(guests::lang_manifest("python"))
        .expect("manifest")
        .replace("memory_mib = 64", "memory_mib = 8");
    let manifest = Manifest::parse(&text).expect("manifest parses");
    assert_eq!(manifest.limits.memory_mib, Some(8));
    let component = std::fs::read(guests::lang_component("python")).expect("component");
    let signed = signed_bytes(&component, &text, &key);
    let digest = http.publish_signed(signed).await;
    let body = json!({ "name": "starved", "module_digest": digest, "grant": {} });
    let created = http
        .admin_post("/v1/processes", body, StatusCode::CREATED)
        .await;
    let process = created["id"].as_str().expect("process id");
    let inputs = json!({ "targets": ["web-1"], "credential": "ops", "report_dir": "/tmp" });
    let run = http
        .admin_post(
            &format!("/v1/processes/{process}/runs"),
            json!({ "inputs": inputs }),
            StatusCode::ACCEPTED,
        )
        .await;
    let record = http
        .wait_while(run["id"].as_str().expect("run id"), RUNNING)
        .await;
    assert_eq!(record["state"], "failed", "{record:#}");
    let error = record["error"].as_str().unwrap_or("");
    assert!(
        error.contains(&format!("memory limit of {} bytes exceeded", 8 << 20)),
        "{record:#}"
    );
    assert_eq!(record["host_calls"], 0, "{record:#}");
}

// ---------------------------------------------------------------------------------------
// 2. A restart does not recompile an uploaded Python module
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loads_the_precompiled_python_module_and_its_first_run_starts_fast() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let target = Target::start();
    let (mut first, http) = start_child(&data, tmp.path().join("1.log"), &admin).await;
    target.register(&http).await;
    let key = new_key();
    http.trust("acme", &key).await;
    assert_eq!(http.metric("warden_module_compiles_total").await, 0);
    let digest = http.publish_signed(signed_example("python", &key)).await;
    // The upload compiled it, once, and left the artifact in the data directory.
    assert_eq!(http.metric("warden_module_compiles_total").await, 1);
    let artifacts: Vec<String> = std::fs::read_dir(data.join("artifacts"))
        .expect("artifacts dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        artifacts.iter().filter(|a| a.ends_with(".cwasm")).count(),
        1,
        "{artifacts:?}"
    );
    let process = target.process(&http, "user-report", &digest).await;
    first.kill_9();

    let (second, http) = start_child(&data, tmp.path().join("2.log"), &admin).await;
    let asked = Instant::now();
    let run = target.start_report(&http, &process).await;
    let started = loop {
        let Reply { text, body, .. } = http.get(&format!("/v1/runs/{run}"), &http.admin).await;
        if body["state"] != "queued" {
            break asked.elapsed();
        }
        assert!(asked.elapsed() < PATIENCE, "never started: {text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let record = http.wait_while(&run, RUNNING).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    assert_eq!(
        http.metric("warden_module_compiles_total").await,
        0,
        "the restarted server recompiled the module: {}",
        second.stderr()
    );
    assert!(
        !second.stderr().contains("compiled component"),
        "{}",
        second.stderr()
    );
    assert!(
        started <= START_AFTER_RESTART,
        "first run after restart took {started:?} to start (bound {START_AFTER_RESTART:?})"
    );
    eprintln!("python: first run after restart started in {started:?}");
}

// ---------------------------------------------------------------------------------------
// 3. `warden new` + `warden build` in each language
// ---------------------------------------------------------------------------------------

/// Runs the `warden` CLI in `dir` with `env`; asserts success; returns stdout.
fn cli(dir: &Path, args: &[&str], env: &[(&str, PathBuf)]) -> String {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args).current_dir(dir).env_remove("WARDEN_DATA");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("warden runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "warden {args:?}: {stdout}\n{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_new_and_build_make_a_component_the_server_accepts_in_each_language() {
    let tmp = TempDir::new().expect("temp dir");
    let http = start_in_process().await;
    let keys = tmp.path().join("publisher");
    let out = warden(BIN, &["keygen", "--out", &keys.to_string_lossy()], None).expect("keygen");
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(keys.with_extension("pub")).expect("public key");
    let body = json!({ "name": "acme", "public_key": public.trim() });
    http.admin_post("/v1/publishers", body, StatusCode::CREATED)
        .await;

    let projects = tmp.path().join("projects");
    std::fs::create_dir_all(&projects).expect("projects dir");
    let tools = [
        // Reuse the compiled warden-sdk and wit-bindgen of the guest build.
        ("CARGO_TARGET_DIR", repo_root().join("target/guests")),
        ("WARDEN_COMPONENTIZE_PY", guests::componentize_py()),
        ("WARDEN_COMPONENTIZE_JS", guests::componentize_js()),
    ];
    for (lang, name) in [
        ("rust", "hello-rs"),
        ("python", "hello-py"),
        ("js", "hello-js"),
    ] {
        let created = cli(&projects, &["new", "--lang", lang, name], &[]);
        assert!(created.contains("warden build"), "{created}");
        let project = projects.join(name);
        let built = cli(&project, &["build"], &tools);
        let wasm = project.join(format!("{name}.wasm"));
        assert!(built.contains(&format!("{name}.wasm")), "{built}");
        assert!(wasm.exists(), "{built}");
        let signed = project.join(format!("{name}.signed.wasm"));
        cli(
            &project,
            &[
                "sign",
                "--key",
                &keys.with_extension("key").to_string_lossy(),
                "--manifest",
                "warden.toml",
                &wasm.to_string_lossy(),
                "-o",
                &signed.to_string_lossy(),
            ],
            &[],
        );
        let bytes = std::fs::read(&signed).expect("signed module");
        let Reply {
            status, text, body, ..
        } = http.upload(bytes).await;
        assert_eq!(status, StatusCode::CREATED, "{lang}: {text}");
        assert_eq!(body["name"], name, "{text}");
        let memory = body["manifest"]["limits"]["memory_mib"].as_u64();
        assert_eq!(memory.is_some(), lang != "rust", "{lang}: {text}");
    }
}
