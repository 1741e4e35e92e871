//! Operating Warden as a service (issue 17), against the real `warden` binary: the built-in
//! policies and their override, the configuration file and its precedence, graceful
//! shutdown and its exit codes, request log lines, and the errors a person reads.
//!
//! The attacker here is whoever can influence the server's surroundings rather than its API:
//! a stray `policies/` in the working directory, a configuration file with a typo or a
//! secret's neighbourhood, a client that keeps starting runs while the server stops, or a
//! log shipper that would happily forward a bearer token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use warden_tests::http::{Server, client, new_key};
use warden_tests::random_secret;

use crate::api::init_data_dir;

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// Longest a server may take to answer, or to exit after a signal.
const PATIENCE: Duration = Duration::from_secs(60);

/// The `warden` command with none of the caller's `WARDEN_*` settings, run in `cwd`.
fn warden(cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(cwd).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WARDEN_") {
            command.env_remove(&key);
        }
    }
    command
}

fn run(mut command: Command) -> (Output, String, String) {
    let out = command.output().expect("warden runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `warden serve` child with its stderr in a file; SIGKILLed on drop if still running.
struct Serve {
    child: Child,
    log: PathBuf,
    base: String,
}

impl Serve {
    /// Starts `warden serve --listen <free port> ARGS` in `cwd` (no `--policies` unless
    /// `args` has one) and waits until `/healthz` answers.
    async fn start(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Serve {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = cwd.join(format!("serve-{}.log", uuid::Uuid::new_v4()));
        let mut command = warden(cwd);
        command
            .args(["serve", "--listen", &listen])
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let child = command.spawn().expect("warden serve starts");
        let mut serve = Serve {
            child,
            log,
            base: format!("http://{listen}"),
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let reply = client().get(format!("{}/healthz", serve.base)).send().await;
            if reply.is_ok_and(|r| r.status() == StatusCode::OK) {
                return serve;
            }
            if let Ok(Some(status)) = serve.child.try_wait() {
                panic!("warden serve exited with {status}: {}", serve.stderr());
            }
            assert!(tokio::time::Instant::now() < deadline, "{}", serve.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits (bounded) for the process to exit; its exit code.
    async fn exit_code(&mut self) -> i32 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still running: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `sha256=` digest on the log line `what` ("policies loaded", "policies reloaded").
fn logged_digest(log: &str, what: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(what))?;
    let digest = line.split("sha256=").nth(1)?;
    Some(digest.chars().take_while(char::is_ascii_hexdigit).collect())
}

/// Exports the built-in set into `dir`; returns the digest it prints.
fn export(cwd: &Path, dir: &Path) -> String {
    let mut command = warden(cwd);
    command.args(["policies", "export"]).arg(dir);
    let (out, stdout, stderr) = run(command);
    assert!(out.status.success(), "{stdout}{stderr}");
    let digest = stdout.split("sha256 ").nth(1).expect("digest printed");
    digest.chars().take_while(char::is_ascii_hexdigit).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_any_directory_with_the_built_in_policies_and_logs_their_digest() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    // The working directory holds a `policies/` that would load and that permits
    // everything to everyone: the server must not pick it up just because it is there.
    let cwd = tmp.path().join("elsewhere");
    let stray = cwd.join("policies");
    export(tmp.path(), &stray);
    std::fs::write(
        stray.join("zz-open.cedar"),
        "@id(\"open-to-all\")\npermit(principal, action, resource);\n",
    )
    .expect("stray policy");

    let version = run({
        let mut c = warden(&cwd);
        c.arg("--version");
        c
    });
    assert!(
        version.1.starts_with("warden ") && version.1.contains("(commit "),
        "{}",
        version.1
    );

    let exported = export(tmp.path(), &tmp.path().join("exported"));
    let data_arg = data.to_string_lossy().into_owned();
    let builtin = Serve::start(&cwd, &["--data", &data_arg], &[]).await;
    let log = builtin.stderr();
    assert!(log.contains("built-in policy set"), "{log}");
    let digest = logged_digest(&log, "policies loaded").expect("digest logged");
    assert_eq!(digest.len(), 64, "{log}");
    // A faithful export is the same set, by digest; the stray directory is another one.
    assert_eq!(digest, exported, "{log}");
    drop(builtin);

    let stray_arg = stray.to_string_lossy().into_owned();
    let args = ["--data", &data_arg, "--policies", &stray_arg];
    let explicit = Serve::start(&cwd, &args, &[]).await;
    let log = explicit.stderr();
    assert!(log.contains(&format!("directory {stray_arg}")), "{log}");
    let other = logged_digest(&log, "policies loaded").expect("digest logged");
    assert_ne!(
        other, exported,
        "an edited set must not share the built-in digest"
    );

    // SIGHUP reloads the directory and logs the new digest.
    std::fs::remove_file(stray.join("zz-open.cedar")).expect("remove");
    explicit.signal("HUP");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while logged_digest(&explicit.stderr(), "policies reloaded").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            explicit.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reloaded = logged_digest(&explicit.stderr(), "policies reloaded");
    assert_eq!(reloaded.as_deref(), Some(exported.as_str()));
}

#[test]
fn policies_export_never_overwrites_an_administrators_files() {
    let tmp = TempDir::new().expect("temp dir");
    let dir = tmp.path().join("policies");
    export(tmp.path(), &dir);
    let edited = "@id(\"mine\")\nforbid(principal, action, resource);\n";
    std::fs::write(dir.join("host-calls.cedar"), edited).expect("edit");
    let mut again = warden(tmp.path());
    again.args(["policies", "export"]).arg(&dir);
    let (out, _, stderr) = run(again);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot write"), "{stderr}");
    assert!(stderr.contains("empty or new directory"), "{stderr}");
    let kept = std::fs::read_to_string(dir.join("host-calls.cedar")).expect("read");
    assert_eq!(kept, edited, "the export overwrote an edited policy");
}

#[test]
fn a_policy_or_schema_syntax_error_names_the_file_line_and_column() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let dir = tmp.path().join("policies");
    export(tmp.path(), &dir);
    let data_arg = data.to_string_lossy().into_owned();
    let dir_arg = dir.to_string_lossy().into_owned();

    // A policy file: line 3 has a stray token at column 9.
    let broken = dir.join("zz-broken.cedar");
    std::fs::write(
        &broken,
        "@id(\"broken\")\npermit(\n  principal ==,\n  action,\n  resource\n);\n",
    )
    .expect("write");
    for args in [
        vec!["serve", "--listen", "127.0.0.1:0", "--data", &data_arg],
        vec!["config", "check"],
    ] {
        let mut command = warden(tmp.path());
        command.args(&args).args(["--policies", &dir_arg]);
        let (out, _, stderr) = run(command);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let want = format!("{} has a syntax error at line 3, column ", broken.display());
        assert!(stderr.contains(&want), "{args:?}: {stderr}");
        let errors = stderr.lines().filter(|l| l.starts_with("error:")).count();
        assert_eq!(errors, 1, "one line: {stderr}");
    }
    std::fs::remove_file(&broken).expect("remove");

    // The schema: an unterminated entity declaration on line 2.
    let schema = dir.join("schema.cedarschema");
    let text = std::fs::read_to_string(&schema).expect("schema");
    std::fs::write(&schema, format!("// edited\nentity Broken in [\n{text}")).expect("write");
    let mut command = warden(tmp.path());
    command.args(["config", "check", "--policies", &dir_arg]);
    let (out, _, stderr) = run(command);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("schema {} is invalid at line ", schema.display())),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_one_sentence_with_the_next_step() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut command = warden(tmp.path());
    command
        .args(["serve", "--listen", &addr, "--data"])
        .arg(&data);
    let (out, _, stderr) = run(command);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        error,
        [format!(
            "error: {addr} is already in use by another process; stop it or choose another \
             --listen address"
        )],
        "{stderr}"
    );
}

/// Writes `text` as a configuration file with mode 0600.
fn config_file(dir: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("warden.toml");
    std::fs::write(&path, text).expect("config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn config_check(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = warden(cwd);
    command
        .args(["config", "check"])
        .args(args)
        .envs(envs.iter().copied());
    let (out, stdout, stderr) = run(command);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn config_file_settings_yield_to_environment_and_flags_in_that_order() {
    let tmp = TempDir::new().expect("temp dir");
    let file = config_file(
        tmp.path(),
        "listen = \"127.0.0.1:7171\"\ndata = \"state\"\nshutdown_grace = 7\n\
         log_format = \"json\"\nmax_concurrent_runs = 3\nmax_queued_runs = 11\n",
    );
    let file_arg = file.to_string_lossy().into_owned();
    let (code, stdout, stderr) = config_check(
        tmp.path(),
        &["--config", &file_arg, "--max-concurrent-runs", "5"],
        &[
            ("WARDEN_SHUTDOWN_GRACE", "9"),
            ("WARDEN_MAX_CONCURRENT_RUNS", "4"),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let expect = [
        "listen = \"127.0.0.1:7171\"  # config file".to_string(),
        // Relative to the file's directory, not the working directory.
        format!(
            "data = \"{}\"  # config file",
            tmp.path().join("state").display()
        ),
        "shutdown_grace = 9  # environment".to_string(),
        "log_format = \"json\"  # config file".to_string(),
        "max_concurrent_runs = 5  # flag".to_string(),
        "max_queued_runs = 11  # config file".to_string(),
        "max_running_per_user = 16  # default".to_string(),
    ];
    for line in expect {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?}:\n{stdout}"
        );
    }
    assert!(stdout.contains("# policies: the built-in set"), "{stdout}");
}

#[test]
fn a_config_file_with_a_typo_a_loose_mode_or_two_key_sources_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().expect("temp dir");
    // A misspelt key would otherwise be ignored and the default used in its place.
    let file = config_file(
        tmp.path(),
        "listen = \"127.0.0.1:7171\"\nmax_concurent_runs = 2\n",
    );
    let file_arg = file.to_string_lossy().into_owned();
    let (code, _, stderr) = config_check(tmp.path(), &["--config", &file_arg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&file_arg), "{stderr}");
    assert!(stderr.contains("line 2, column 1"), "{stderr}");
    assert!(stderr.contains("max_concurent_runs"), "{stderr}");

    // A value of the wrong type.
    config_file(tmp.path(), "shutdown_grace = \"soon\"\n");
    let (code, _, stderr) = config_check(tmp.path(), &["--config", &file_arg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 1, column 18"), "{stderr}");

    // Anyone who may rewrite the file may point the server at other policies.
    config_file(tmp.path(), "shutdown_grace = 5\n");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (code, _, stderr) = config_check(tmp.path(), &["--config", &file_arg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("writable by group or others"), "{stderr}");

    // Which master key wins must not depend on an order nobody wrote down.
    config_file(
        tmp.path(),
        "master_key_env = \"K\"\nmaster_key_file = \"/etc/warden/master.key\"\n",
    );
    let (code, _, stderr) = config_check(tmp.path(), &["--config", &file_arg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("at most one of"), "{stderr}");

    // A --config that does not exist is an error, not a silent fallback to defaults.
    let missing = tmp.path().join("nope.toml").to_string_lossy().into_owned();
    let (code, _, stderr) = config_check(tmp.path(), &["--config", &missing], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot read the configuration file"),
        "{stderr}"
    );
}

#[test]
fn config_check_names_where_the_master_key_is_and_never_prints_it() {
    let tmp = TempDir::new().expect("temp dir");
    let key = hex::encode(rand::random::<[u8; 32]>());
    let file = config_file(tmp.path(), "master_key_env = \"OPS_TEST_MASTER_KEY\"\n");
    let file_arg = file.to_string_lossy().into_owned();
    let (code, stdout, stderr) = config_check(
        tmp.path(),
        &["--config", &file_arg],
        &[("OPS_TEST_MASTER_KEY", &key)],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("master_key_env = \"OPS_TEST_MASTER_KEY\"  # config file"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&key) && !stderr.contains(&key),
        "key printed"
    );
    // A flag for another source wins over the file's, and is what is shown.
    let (code, stdout, _) = config_check(
        tmp.path(),
        &["--config", &file_arg, "--master-key-file", "/run/key"],
        &[("OPS_TEST_MASTER_KEY", &key)],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("master_key_file = \"/run/key\"  # flag"),
        "{stdout}"
    );
    assert!(!stdout.contains("OPS_TEST_MASTER_KEY"), "{stdout}");
}

/// Every line of `log` that is a JSON request line.
fn request_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["target"] == "warden::request")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_request_lines_carry_route_status_and_caller_but_never_a_token_or_raw_path() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let data_arg = data.to_string_lossy().into_owned();
    let serve = Serve::start(
        tmp.path(),
        &["--data", &data_arg, "--log-format", "json"],
        &[],
    )
    .await;
    let server = Server::remote(serve.base.clone(), admin.clone());

    // Secrets an attacker hopes to see forwarded by a log shipper: in the path, in the
    // query string, and as (wrong) bearer tokens.
    let in_path = random_secret(24);
    let in_query = random_secret(24);
    let forged = format!("wdn_{}", random_secret(40));
    let r = server
        .get(&format!("/v1/runs/{in_path}?secret={in_query}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = server.get("/v1/processes", &forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = server.get(&format!("/no/such/{in_path}"), &admin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    serve.signal("TERM");

    let log = wait_for(&serve, "\"stopped\"").await;
    let lines = request_lines(&log);
    let find = |route: &str| {
        lines
            .iter()
            .find(|l| l["route"] == route)
            .unwrap_or_else(|| panic!("no line for {route}:\n{log}"))
    };
    let run = find("/v1/runs/{id}");
    assert_eq!(run["method"], "GET");
    assert_eq!(run["status"], 404);
    assert_eq!(run["caller"], "admin");
    assert!(run["duration_ms"].as_f64().is_some(), "{run}");
    let token_id = run["token_id"].as_str().expect("token id");
    assert!(!token_id.is_empty() && token_id != "-", "{run}");
    let refused = find("/v1/processes");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["caller"], "-");
    assert_eq!(find("<unmatched>")["status"], 404);
    for secret in [&admin, &forged, &in_path, &in_query] {
        assert!(
            !log.contains(secret.as_str()),
            "{secret} in the log:\n{log}"
        );
    }
    // Not one line that a JSON log collector would choke on.
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
}

/// Waits (bounded) until the server's log contains `needle`; the log.
async fn wait_for(serve: &Serve, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let log = serve.stderr();
        if log.contains(needle) {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A served data directory with the `probe` module published and a process of it.
async fn probe_process(serve: &Serve, admin: &str) -> (Server, String) {
    let server = Server::remote(serve.base.clone(), admin.to_string());
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("probe", &key).await;
    let r = server.create_process(admin, "probe-ops", &digest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let process = r.body["id"].as_str().expect("process id").to_string();
    (server, process)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_runs_lets_the_run_in_flight_finish_and_exits_zero() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let data_arg = data.to_string_lossy().into_owned();
    let args = ["--data", &data_arg, "--shutdown-grace", "30"];
    let mut serve = Serve::start(tmp.path(), &args, &[]).await;
    let (server, process) = probe_process(&serve, &admin).await;
    let run = server
        .start_run(&process, &admin, json!({ "mode": "sleep", "n": 8000 }))
        .await;
    server.wait_for_state(&run, "running").await;

    serve.signal("TERM");
    wait_for(&serve, "shutting down").await;
    // A run start while draining: refused, with a hint when to come back; twice, and
    // through the approval route too (it can start a run).
    for _ in 0..2 {
        let r = server
            .post(
                &format!("/v1/processes/{process}/runs"),
                &admin,
                json!({ "inputs": { "mode": "sleep", "n": 1 } }),
            )
            .await;
        r.expect_error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
    }
    let r = server
        .post(&format!("/v1/runs/{run}/approve"), &admin, json!({}))
        .await;
    r.expect_error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
    let retry = server
        .client
        .post(format!("{}/v1/processes/{process}/runs", server.base))
        .bearer_auth(&admin)
        .json(&json!({ "inputs": { "mode": "sleep", "n": 1 } }))
        .send()
        .await
        .expect("request");
    assert_eq!(retry.headers()["retry-after"], "30");
    let health = server.get("/healthz", &admin).await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.text
    );
    // Following the run in flight still works while it drains.
    let r = server.get(&format!("/v1/runs/{run}"), &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The server exits once the run has ended on its own.
    assert_eq!(serve.exit_code().await, 0, "{}", serve.stderr());

    // It succeeded, and nothing started after the signal: the one run is all there is.
    let restarted = Serve::start(tmp.path(), &["--data", &data_arg], &[]).await;
    let server = Server::remote(restarted.base.clone(), admin.clone());
    let r = server.get(&format!("/v1/runs/{run}"), &admin).await;
    assert_eq!(r.body["state"], "succeeded", "{}", r.text);
    let runs = server.get("/v1/runs", &admin).await;
    let list = runs.body.as_array().expect("runs");
    assert_eq!(list.len(), 1, "{}", runs.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_past_the_grace_period_end_interrupted_audited_and_the_exit_code_says_so() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let admin = init_data_dir(&data);
    let data_arg = data.to_string_lossy().into_owned();
    let args = ["--data", &data_arg, "--shutdown-grace", "1"];
    let mut serve = Serve::start(tmp.path(), &args, &[]).await;
    let (server, process) = probe_process(&serve, &admin).await;
    // One run that never ends by itself, and one that would need far longer than the grace.
    let spinning = server
        .start_run(&process, &admin, json!({ "mode": "loop" }))
        .await;
    let sleeping = server
        .start_run(&process, &admin, json!({ "mode": "sleep", "n": 60000 }))
        .await;
    server.wait_for_state(&spinning, "running").await;
    server.wait_for_state(&sleeping, "running").await;

    serve.signal("TERM");
    assert_eq!(serve.exit_code().await, 3, "{}", serve.stderr());

    let restarted = Serve::start(tmp.path(), &["--data", &data_arg], &[]).await;
    let server = Server::remote(restarted.base.clone(), admin.clone());
    for run in [&spinning, &sleeping] {
        let r = server.get(&format!("/v1/runs/{run}"), &admin).await;
        assert_eq!(r.body["state"], "interrupted", "{}", r.text);
        let records = server.audit(&format!("run={run}")).await;
        assert!(
            records
                .iter()
                .any(|r| r["action"] == "run.interrupted" && r["actor"] == "system:shutdown"),
            "{records:?}"
        );
    }
    let verdict = server.get("/v1/audit/verify", &admin).await;
    assert_eq!(verdict.body["ok"], true, "{}", verdict.text);
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let tmp = TempDir::new().expect("temp dir");
    let mut command = warden(tmp.path());
    command.args(["completions", "bash"]);
    let (out, stdout, _) = run(command);
    assert!(out.status.success());
    for sub in ["serve", "policies", "config"] {
        assert!(stdout.contains(sub), "completion lacks {sub}");
    }
    let mut command = warden(tmp.path());
    command.args(["man"]).arg(tmp.path().join("man"));
    let (out, _, stderr) = run(command);
    assert!(out.status.success(), "{stderr}");
    let page = std::fs::read_to_string(tmp.path().join("man/warden-serve.1")).expect("page");
    assert!(page.contains("shutdown\\-grace"), "{page}");
    assert!(tmp.path().join("man/warden-config-check.1").exists());
    assert!(
        !tmp.path().join("man/warden-man.1").exists(),
        "hidden commands stay hidden"
    );
}
