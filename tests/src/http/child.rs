//! `warden serve` as a child process on a free loopback port: over TLS (pinned by the
//! certificate's fingerprint, which the harness reads from the certificate file itself, not
//! from anything the server says) or plain HTTP, with its stderr (the request log) in a file
//! and, if asked, its stdout in another; [`ServeCommand`] says how to start it (arguments,
//! environment), [`ServeChild`] waits for it (bounded), signals it and reads its logs.

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
    stdout: Option<PathBuf>,
    /// `https://127.0.0.1:PORT` or `http://127.0.0.1:PORT`.
    pub base: String,
    /// The served certificate's fingerprint, read from its file (None for plain HTTP).
    pub fingerprint: Option<Fingerprint>,
    /// A client that trusts exactly that certificate (a plain one for plain HTTP).
    pub client: reqwest::Client,
    /// How long the harness waits for it to answer or to exit.
    patience: Duration,
}

/// How to start a `warden serve` child: `BIN serve --listen 127.0.0.1:<free port> --data
/// DATA --policies <repo policies> [transport flags] ARGS`, with every inherited `WARDEN_*`
/// variable removed and `envs` set, stderr into `log` (and stdout into a file, if asked).
pub struct ServeCommand {
    bin: String,
    /// `--data DATA --policies <repo policies>`; `None` leaves both to the arguments.
    data: Option<PathBuf>,
    transport: Transport,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    stdout: Option<PathBuf>,
    cwd: Option<PathBuf>,
    patience: Duration,
}

impl ServeCommand {
    /// Plain HTTP, no more arguments, no environment.
    pub fn new(bin: &str, data: &Path, log: PathBuf) -> ServeCommand {
        ServeCommand {
            data: Some(data.to_path_buf()),
            ..ServeCommand::bare(bin, log)
        }
    }

    /// `BIN serve --listen 127.0.0.1:<free port>` and the arguments only: no `--data`, no
    /// `--policies` (what a configuration file or the defaults say), plain HTTP.
    pub fn bare(bin: &str, log: PathBuf) -> ServeCommand {
        ServeCommand {
            bin: bin.to_string(),
            data: None,
            transport: Transport::Plain,
            args: Vec::new(),
            envs: Vec::new(),
            log,
            stdout: None,
            cwd: None,
            patience: PATIENCE,
        }
    }

    /// Runs the child in `dir`.
    pub fn cwd(mut self, dir: &Path) -> ServeCommand {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// How long the harness waits for the child to answer or to exit ([`PATIENCE`] unless set).
    pub fn patience(mut self, patience: Duration) -> ServeCommand {
        self.patience = patience;
        self
    }

    pub fn transport(mut self, transport: Transport) -> ServeCommand {
        self.transport = transport;
        self
    }

    /// More `warden serve` arguments.
    pub fn args(mut self, args: &[&str]) -> ServeCommand {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Environment variables for the child (after the inherited `WARDEN_*` are removed).
    pub fn envs(mut self, envs: &[(&str, &str)]) -> ServeCommand {
        self.envs
            .extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// The child's stdout into `path` (it goes nowhere otherwise).
    pub fn stdout(mut self, path: PathBuf) -> ServeCommand {
        self.stdout = Some(path);
        self
    }

    /// Spawns the child and waits (bounded) until `/healthz` answers.
    pub async fn start(self) -> ServeChild {
        let mut serve = self.spawn();
        serve.wait_healthy().await;
        serve
    }

    /// Spawns a child that must refuse to start: waits (bounded) for it to exit, asserts it
    /// failed, and returns its stderr.
    pub async fn refused(self) -> String {
        let mut serve = self.spawn();
        let code = serve.exit_code().await;
        assert_ne!(code, 0, "warden serve started: {}", serve.stderr());
        serve.stderr()
    }

    /// Spawns the child without waiting for it.
    pub fn spawn(self) -> ServeChild {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(&self.bin);
        command.args(["serve", "--listen", &listen]);
        if let Some(data) = &self.data {
            command
                .arg("--data")
                .arg(data)
                .arg("--policies")
                .arg(repo_root().join("policies"));
        }
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        let cert = match &self.transport {
            Transport::DataDirTls => {
                let data = self
                    .data
                    .as_deref()
                    .expect("a data directory for its certificate");
                Some(ServerTls::data_dir_files(data).0)
            }
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
        let stdout = match &self.stdout {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("stdout file")),
            None => Stdio::null(),
        };
        let child = command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(std::fs::File::create(&self.log).expect("log file"))
            .spawn()
            .expect("warden serve starts");
        let fingerprint =
            cert.map(|cert| Fingerprint::of_pem_file(&cert).expect("certificate readable"));
        let (scheme, client) = match fingerprint {
            Some(pin) => ("https", pinned_client(pin)),
            None => ("http", client()),
        };
        ServeChild {
            child,
            log: self.log,
            stdout: self.stdout,
            base: format!("{scheme}://{listen}"),
            fingerprint,
            client,
            patience: self.patience,
        }
    }
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
        ServeCommand::new(bin, data, log)
            .transport(transport)
            .args(args)
            .start()
            .await
    }

    /// [`ServeChild::start`] over plain HTTP with no more arguments.
    pub async fn plain(bin: &str, data: &Path, log: PathBuf) -> ServeChild {
        ServeCommand::new(bin, data, log).start().await
    }

    async fn wait_healthy(&mut self) {
        let deadline = tokio::time::Instant::now() + self.patience;
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

    /// The server's stdout so far (empty unless [`ServeCommand::stdout`] named a file).
    pub fn stdout(&self) -> String {
        self.stdout
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// Ctrl-C (SIGINT, the graceful shutdown), then waits up to 20 s; SIGKILL if it hangs.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        self.signal("INT");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill_9();
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
        let deadline = tokio::time::Instant::now() + self.patience;
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
