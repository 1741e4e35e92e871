//! Test harness: real OpenSSH servers on loopback and throwaway Unix users to log in as.
//!
//! [`Sshd::start`] runs `/usr/sbin/sshd -D -e` with its own config, a freshly generated
//! ed25519 host key and a free port on one loopback address (127.0.0.x); [`Sshd::fleet`]
//! starts one per address from 127.0.0.2 up, since one sshd listens on at most 16 sockets.
//! [`TestUser::create`] adds a Unix user with a random password and an authorized ed25519
//! key, optionally with a sudo rule. Everything is removed on drop. Names and ports are
//! unique per call, so tests may run in parallel threads and processes.
//!
//! Requires root (useradd, sshd) and `openssh-server` + `sudo` (`.ci/run` installs them).

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rand::Rng;
use rand::distributions::Alphanumeric;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

/// How long a started sshd may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts to find a port that stays free until sshd binds it (another test may grab it).
const START_ATTEMPTS: usize = 5;

const SSHD: &str = "/usr/sbin/sshd";

/// A Unix user that exists until dropped.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub password: String,
    /// The user's private key in OpenSSH PEM format (unencrypted).
    pub private_key_openssh: String,
    /// The matching `ssh-ed25519 AAAA…` line, as written to `authorized_keys`.
    pub public_key_line: String,
    pub home: PathBuf,
    sudoers_file: Option<PathBuf>,
}

impl TestUser {
    /// Creates a user named `<prefix><random>` (prefix cut to 16 characters) with a random
    /// 24-character password and an authorized ed25519 key.
    pub fn create(name_prefix: &str) -> Result<TestUser> {
        let prefix: String = name_prefix
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .take(16)
            .collect();
        let name = format!(
            "{}{}",
            if prefix.is_empty() { "wt" } else { &prefix },
            random_lower(10)
        );
        let home = PathBuf::from("/home").join(&name);
        run(Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-d"])
            .arg(&home)
            .arg(&name))?;
        // From here on, Drop removes the user even if a later step fails.
        let mut user = TestUser {
            name,
            password: random_alnum(24),
            private_key_openssh: String::new(),
            public_key_line: String::new(),
            home,
            sudoers_file: None,
        };
        run_with_stdin(
            Command::new("chpasswd"),
            format!("{}:{}\n", user.name, user.password).as_bytes(),
        )?;
        let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)?;
        user.private_key_openssh = key.to_openssh(LineEnding::LF)?.to_string();
        user.public_key_line = key.public_key().to_openssh()?;
        user.authorize_key()?;
        Ok(user)
    }

    /// Allows the user to run anything through sudo, password required, no credential
    /// caching (each sudo asks again) and no lecture.
    pub fn with_sudo(self) -> Result<TestUser> {
        self.with_sudo_rule("timestamp_timeout=0, !lecture", "ALL")
    }

    /// Allows the user to run anything through sudo without a password (NOPASSWD).
    pub fn with_sudo_nopasswd(self) -> Result<TestUser> {
        self.with_sudo_rule("!lecture", "NOPASSWD: ALL")
    }

    /// Gives the user a sudo rule that demands root's password (`rootpw`), which no test
    /// knows: sudo prompts and rejects whatever password it is given.
    pub fn with_sudo_rejecting_password(self) -> Result<TestUser> {
        self.with_sudo_rule(
            "rootpw, timestamp_timeout=0, !lecture, passwd_tries=3",
            "ALL",
        )
    }

    /// Makes bash the user's login shell (so `~/.bashrc` is read for commands over SSH, as
    /// on an admin account's usual setup).
    pub fn with_bash(self) -> Result<TestUser> {
        run(Command::new("usermod").args(["-s", "/bin/bash", &self.name]))?;
        Ok(self)
    }

    fn with_sudo_rule(mut self, defaults: &str, commands: &str) -> Result<TestUser> {
        let path = PathBuf::from(format!("/etc/sudoers.d/warden-test-{}", self.name));
        let rule = format!(
            "Defaults:{0} {defaults}\n{0} ALL=(ALL:ALL) {commands}\n",
            self.name
        );
        write_file(&path, rule.as_bytes(), 0o440)?;
        self.sudoers_file = Some(path.clone());
        run(Command::new("visudo").args(["-c", "-q", "-f"]).arg(&path))?;
        Ok(self)
    }

    fn authorize_key(&self) -> Result<()> {
        let ssh_dir = self.home.join(".ssh");
        std::fs::create_dir_all(&ssh_dir)?;
        write_file(
            &ssh_dir.join("authorized_keys"),
            format!("{}\n", self.public_key_line).as_bytes(),
            0o600,
        )?;
        set_mode(&ssh_dir, 0o700)?;
        let owner = format!("{0}:{0}", self.name);
        run(Command::new("chown").arg("-R").arg(&owner).arg(&ssh_dir))
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Some(path) = &self.sudoers_file {
            let _ = std::fs::remove_file(path);
        }
        // `-f` removes the account even while one of its sessions is still closing.
        for _ in 0..20 {
            let removed = Command::new("userdel")
                .args(["-r", "-f", &self.name])
                .stderr(Stdio::null())
                .status();
            if removed.is_ok_and(|s| s.success()) || !user_exists(&self.name) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running OpenSSH server; killed on drop.
#[derive(Debug)]
pub struct Sshd {
    pub ip: String,
    pub port: u16,
    /// The server's host key as `ssh-ed25519 AAAA…` (pin this).
    pub host_key_line: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts an sshd on `ip` (a 127.0.0.x address) and a free port, and waits until it
    /// accepts connections.
    pub fn start(ip: &str) -> Result<Sshd> {
        Sshd::start_with(ip, "")
    }

    /// [`Sshd::start`] with `extra` appended to the configuration (e.g. a `Match` block).
    pub fn start_with(ip: &str, extra: &str) -> Result<Sshd> {
        std::fs::create_dir_all("/run/sshd")?;
        let dir = tempfile::Builder::new().prefix("warden-sshd-").tempdir()?;
        let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)?;
        let host_key = dir.path().join("host_ed25519");
        write_file(&host_key, key.to_openssh(LineEnding::LF)?.as_bytes(), 0o600)?;
        let host_key_line = key.public_key().to_openssh()?;
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port(ip)?;
            let config = dir.path().join("sshd_config");
            let text = sshd_config(ip, port, dir.path()) + extra;
            write_file(&config, text.as_bytes(), 0o600)?;
            match spawn_and_wait(&config, dir.path(), ip, port) {
                Ok(child) => {
                    return Ok(Sshd {
                        ip: ip.to_string(),
                        port,
                        host_key_line,
                        child,
                        dir,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("sshd did not start")))
    }

    /// Starts an sshd on 127.0.0.1 inside network namespace `netns` (see `netns.rs`):
    /// reachable only from processes run there.
    pub fn start_in(netns: &str) -> Result<Sshd> {
        let in_ns = |program: &str| {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", netns, program]);
            cmd
        };
        let accepts = |port: u16| {
            in_ns("socat")
                .args([
                    "-u",
                    "OPEN:/dev/null",
                    &format!("TCP:127.0.0.1:{port},connect-timeout=1"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        std::fs::create_dir_all("/run/sshd")?;
        let dir = tempfile::Builder::new().prefix("warden-sshd-").tempdir()?;
        let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)?;
        let host_key = dir.path().join("host_ed25519");
        write_file(&host_key, key.to_openssh(LineEnding::LF)?.as_bytes(), 0o600)?;
        let host_key_line = key.public_key().to_openssh()?;
        // The namespace's loopback is its own: any port is free there.
        let port = rand::thread_rng().gen_range(20_000..60_000);
        let config = dir.path().join("sshd_config");
        write_file(
            &config,
            sshd_config("127.0.0.1", port, dir.path()).as_bytes(),
            0o600,
        )?;
        let log = std::fs::File::create(dir.path().join("sshd.log"))?;
        let mut child = in_ns(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting sshd in the namespace")?;
        let started = Instant::now();
        while !accepts(port) {
            if let Some(status) = child.try_wait()? {
                bail!("sshd in {netns} exited with {status}");
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("sshd in {netns} did not accept connections");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Sshd {
            ip: "127.0.0.1".into(),
            port,
            host_key_line,
            child,
            dir,
        })
    }

    /// Starts `n` servers on 127.0.0.2, 127.0.0.3, … (at most 253).
    pub fn fleet(n: usize) -> Result<Vec<Sshd>> {
        ensure!(n <= 253, "at most 253 loopback hosts");
        (0..n)
            .map(|i| Sshd::start(&format!("127.0.0.{}", i + 2)))
            .collect()
    }

    /// `ip:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// The server's log so far (sshd runs with `-e`; useful in failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_config(ip: &str, port: u16, dir: &Path) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "ListenAddress {ip}:{port}");
    let _ = writeln!(c, "HostKey {}", dir.join("host_ed25519").display());
    let _ = writeln!(c, "PidFile {}", dir.join("sshd.pid").display());
    c.push_str(
        "UsePAM no\n\
         PasswordAuthentication yes\n\
         PubkeyAuthentication yes\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin no\n\
         AuthorizedKeysFile .ssh/authorized_keys\n\
         StrictModes no\n\
         MaxStartups 200\n\
         MaxSessions 100\n\
         MaxAuthTries 20\n\
         LoginGraceTime 30\n\
         UseDNS no\n\
         PrintMotd no\n\
         LogLevel ERROR\n\
         Subsystem sftp internal-sftp\n",
    );
    c
}

fn spawn_and_wait(config: &Path, dir: &Path, ip: &str, port: u16) -> Result<Child> {
    let log = std::fs::File::create(dir.join("sshd.log"))?;
    let mut child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting /usr/sbin/sshd")?;
    let addr: SocketAddr = format!("{ip}:{port}").parse()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
            bail!("sshd on {addr} exited with {status}: {log}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(child);
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("sshd on {addr} did not accept connections within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port(ip: &str) -> Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("no stdin")?.write_all(stdin)?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn random_lower(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
        .collect()
}

fn random_alnum(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_sshd_that_speaks_ssh_and_stops_on_drop() {
        let sshd = Sshd::start("127.0.0.1").unwrap();
        let mut banner = [0u8; 8];
        let mut stream = TcpStream::connect(sshd.addr()).unwrap();
        std::io::Read::read_exact(&mut stream, &mut banner).unwrap();
        assert_eq!(&banner, b"SSH-2.0-");
        assert!(sshd.host_key_line.starts_with("ssh-ed25519 "));
        let addr = sshd.addr();
        drop(sshd);
        std::thread::sleep(Duration::from_millis(100));
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn creates_and_removes_user_with_sudo_rule() {
        let user = TestUser::create("harness").unwrap().with_sudo().unwrap();
        let (name, sudoers) = (user.name.clone(), user.sudoers_file.clone().unwrap());
        assert!(name.len() <= 32 && user_exists(&name));
        assert!(sudoers.exists());
        let keys = std::fs::read_to_string(user.home.join(".ssh/authorized_keys")).unwrap();
        assert_eq!(keys.trim(), user.public_key_line);
        drop(user);
        assert!(!user_exists(&name));
        assert!(!sudoers.exists());
    }

    #[test]
    fn fleet_uses_distinct_addresses() {
        let fleet = Sshd::fleet(3).unwrap();
        let ips: Vec<_> = fleet.iter().map(|s| s.ip.as_str()).collect();
        assert_eq!(ips, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    }
}
