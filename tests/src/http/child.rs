//! `warden serve` as a child process on a free loopback port: over TLS (pinned by the
//! certificate's fingerprint, which the harness reads from the certificate file itself, not
//! from anything the server says) or plain HTTP, with its stderr (the request log) in a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use warden_host::tls::{Fingerprint, ServerTls};

use super::{PATIENCE, Server, client, pinned_client};
use crate::repo_root;

/// How the child serves.
#[derive(Clone, Debug)]
pub enum Transport {
    /// The data directory's own certificate (`DATA/tls/cert.pem`, made by `warden init`).
    DataDirTls,
    /// `--tls-cert CERT --tls-key KEY`.
    Tls { cert: PathBuf, key: PathBuf },
    /// Plain HTTP on loopback (a data directory without a certificate).
    Plain,
    /// `--insecure-http`: plain HTTP even when the data directory has a certificate.
    InsecureHttp,
}

/// A `warden serve` child; SIGKILLed on drop if still running.
pub struct ServeChild {
    child: Child,
    log: PathBuf,
    /// `https://127.0.0.1:PORT` or `http://127.0.0.1:PORT`.
    pub base: String,
    /// The served certificate's fingerprint, read from its file (None for plain HTTP).
    pub fingerprint: Option<Fingerprint>,
    /// A client that trusts exactly that certificate (a plain one for plain HTTP).
    pub client: reqwest::Client,
}

impl ServeChild {
    /// Spawns `BIN serve --listen 127.0.0.1:<free port> --data DATA --policies <repo
    /// policies> [transport flags] ARGS`, logging to `log`, and waits until `/healthz`
    /// answers.
    pub async fn start(
        bin: &str,
        data: &Path,
        transport: Transport,
        args: &[&str],
        log: PathBuf,
    ) -> ServeChild {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(bin);
        command
            .args(["serve", "--listen", &listen, "--data"])
            .arg(data)
            .arg("--policies")
            .arg(repo_root().join("policies"));
        let cert = match &transport {
            Transport::DataDirTls => Some(ServerTls::data_dir_files(data).0),
            Transport::Tls { cert, key } => {
                command
                    .arg("--tls-cert")
                    .arg(cert)
                    .arg("--tls-key")
                    .arg(key);
                Some(cert.clone())
            }
            Transport::Plain => None,
            Transport::InsecureHttp => {
                command.arg("--insecure-http");
                None
            }
        };
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WARDEN_") {
                command.env_remove(&key);
            }
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("warden serve starts");
        let fingerprint =
            cert.map(|cert| Fingerprint::of_pem_file(&cert).expect("certificate readable"));
        let (scheme, client) = match fingerprint {
            Some(pin) => ("https", pinned_client(pin)),
            None => ("http", client()),
        };
        let mut serve = ServeChild {
            child,
            log,
            base: format!("{scheme}://{listen}"),
            fingerprint,
            client,
        };
        serve.wait_healthy().await;
        serve
    }

    async fn wait_healthy(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let reply = self
                .client
                .get(format!("{}/healthz", self.base))
                .send()
                .await;
            if reply.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("warden serve exited with {status}: {}", self.stderr());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server never healthy: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The API harness on this server, as `admin`, through the verifying client.
    pub fn server(&self, admin: &str) -> Server {
        Server::remote_with(self.base.clone(), admin.to_string(), self.client.clone())
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.base
            .split("://")
            .nth(1)
            .expect("base has a scheme")
            .to_string()
    }

    /// The server's stderr so far (its log lines, one per request).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Request log lines naming `route` (a route template such as `/v1/processes`).
    pub fn requests_to(&self, route: &str) -> usize {
        let needle = format!("route={route} ");
        self.stderr()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// Sends signal `name` (`TERM`, `INT`) to the server.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits (bounded) for the server to exit; its exit code.
    pub async fn exit_code(&mut self) -> i32 {
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

    /// SIGKILL: no shutdown hook, no flush.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.kill_9();
    }
}
