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
//! `WARDEN_*` settings, a `warden serve` child that can be signalled); `policies` the
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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use warden_tests::http::{Server, client, new_key};

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

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `warden serve` child with its stderr in a file; SIGKILLed on drop if still running.
pub(super) struct Serve {
    child: Child,
    log: PathBuf,
    pub(super) base: String,
}

impl Serve {
    /// Starts `warden serve --listen <free port> ARGS` in `cwd` (no `--policies` unless
    /// `args` has one) and waits until `/healthz` answers.
    pub(super) async fn start(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Serve {
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

    pub(super) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(super) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub(super) async fn exit_code(&mut self) -> i32 {
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
