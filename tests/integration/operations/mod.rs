//! Operating Warden as a service (issue 17), against the real `warden` binary: the built-in
//! policies and their override, the configuration file and its precedence, graceful
//! shutdown and its exit codes, request log lines, and the errors a person reads.
//!
//! The attacker here is whoever can influence the server's surroundings rather than its API:
//! a stray `policies/` in the working directory, a configuration file with a typo or a
//! secret's neighbourhood, a client that keeps starting runs while the server stops, or a
//! log shipper that would happily forward a bearer token.
//!
//! Layout: this file holds the helpers (the `warden` command without the caller's
//! `WARDEN_*` settings, the shared `warden serve` child started in a directory of its own); `policies` the
//! built-in set, its export and override, syntax errors, the port in use, completions and
//! man pages; `config` the configuration file and `config check`; `lifecycle` request log
//! lines and graceful shutdown; `backup` backup and restore (of a running server, into sled
//! or PostgreSQL, refusing damaged files) and the control socket; `errors` the data
//! directory in use and the master key missing or unreadable.

mod backup;
mod config;
mod errors;
mod lifecycle;
mod policies;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use warden_tests::http::{ServeCommand, Server, new_key};

pub(super) const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// Longest a server may take to answer, or to exit after a signal.
pub(super) const PATIENCE: Duration = Duration::from_secs(60);

/// The `warden` command with none of the caller's `WARDEN_*` settings, run in `cwd`.
pub(super) fn warden(cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(cwd).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WARDEN_") {
            command.env_remove(&key);
        }
    }
    command
}

pub(super) fn run(mut command: Command) -> (Output, String, String) {
    let out = command.output().expect("warden runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// A `warden serve` child with its stderr in a file; SIGKILLed on drop if still running.
pub(super) use warden_tests::http::ServeChild as Serve;

/// Starts `warden serve --listen <free port> ARGS` in `cwd` (no `--data` or `--policies`
/// unless `args` has them) and waits (up to [`PATIENCE`]) until `/healthz` answers.
pub(super) async fn start_serve(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Serve {
    let log = cwd.join(format!("serve-{}.log", uuid::Uuid::new_v4()));
    ServeCommand::bare(BIN, log)
        .cwd(cwd)
        .args(args)
        .envs(envs)
        .patience(PATIENCE)
        .start()
        .await
}

/// A path as a command-line argument.
pub(super) fn arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `warden audit verify --data DATA --master-key-file KEY` in `cwd`.
pub(super) fn audit_verify(cwd: &Path, data: &Path, key: &Path) -> (Output, String, String) {
    let mut verify = warden(cwd);
    verify.args([
        "audit",
        "verify",
        "--data",
        &arg(data),
        "--master-key-file",
        &arg(key),
    ]);
    run(verify)
}

/// The `sha256=` digest on the log line `what` ("policies loaded", "policies reloaded").
pub(super) fn logged_digest(log: &str, what: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(what))?;
    let digest = line.split("sha256=").nth(1)?;
    Some(digest.chars().take_while(char::is_ascii_hexdigit).collect())
}

/// Exports the built-in set into `dir`; returns the digest it prints.
pub(super) fn export(cwd: &Path, dir: &Path) -> String {
    let mut command = warden(cwd);
    command.args(["policies", "export"]).arg(dir);
    let (out, stdout, stderr) = run(command);
    assert!(out.status.success(), "{stdout}{stderr}");
    let digest = stdout.split("sha256 ").nth(1).expect("digest printed");
    digest.chars().take_while(char::is_ascii_hexdigit).collect()
}

/// Waits (bounded) until the server's log contains `needle`; the log.
pub(super) async fn wait_for(serve: &Serve, needle: &str) -> String {
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
pub(super) async fn probe_process(serve: &Serve, admin: &str) -> (Server, String) {
    let server = Server::remote(serve.base.clone(), admin.to_string());
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("probe", &key).await;
    let r = server.create_process(admin, "probe-ops", &digest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let process = r.body["id"].as_str().expect("process id").to_string();
    (server, process)
}
