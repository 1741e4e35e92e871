//! Test harness: network namespaces, so that isolation in a test is real. A [`Netns`] has its
//! own loopback (127.0.0.1 there is not the host's); a target started in it with
//! `Sshd::start_in` is reachable only from processes run in it ([`Netns::command`]). The
//! namespace reaches a server on the host's loopback only through a [`Forward`]: a `socat`
//! pair joined by a Unix socket (a file, seen by both sides), so no address other than the two
//! loopbacks is ever used. Everything is removed on drop.
//!
//! Requires root, `iproute2` and `socat` (`.ci/run` installs them).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rand::Rng;

/// A network namespace with its loopback up.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates a namespace named `<prefix>-<random>`.
    pub fn create(prefix: &str) -> Result<Netns> {
        let name = format!(
            "{prefix}-{:06x}",
            rand::thread_rng().gen_range(0..0xff_ffff)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Whether something accepts TCP connections on `127.0.0.1:port` inside the namespace.
    pub fn accepts(&self, port: u16) -> bool {
        self.command("socat")
            .args([
                "-u",
                "OPEN:/dev/null",
                &format!("TCP:127.0.0.1:{port},connect-timeout=1"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Makes `127.0.0.1:port` inside the namespace lead to `host_addr` on the host's loopback.
    pub fn forward_to_host(&self, port: u16, host_addr: &str) -> Result<Forward> {
        let dir = tempfile::Builder::new().prefix("warden-fwd-").tempdir()?;
        let socket: PathBuf = dir.path().join("fwd.sock");
        let host_side = Command::new("socat")
            .process_group(0)
            .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
            .arg(format!("TCP:{host_addr},nodelay"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting socat (host side)")?;
        let mut forward = Forward {
            children: vec![host_side],
            port,
            _dir: dir,
        };
        wait_for(|| socket.exists(), "the forwarder's socket")?;
        let ns_side = self
            .command("socat")
            .arg(format!(
                "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay"
            ))
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting socat (namespace side)")?;
        forward.children.push(ns_side);
        wait_for(|| self.accepts(port), "the forwarder in the namespace")?;
        Ok(forward)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside would keep nothing alive: the name goes, the stack with
        // the last process.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A forwarder into a namespace (see [`Netns::forward_to_host`]); stopped on drop.
pub struct Forward {
    children: Vec<Child>,
    /// The port inside the namespace.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Forward {
    /// Stops forwarding (a network cut); existing connections break (each socat and the
    /// children it forked for connections are one process group).
    pub fn cut(&mut self) {
        for child in &mut self.children {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.cut();
    }
}

fn wait_for(mut ready: impl FnMut() -> bool, what: &str) -> Result<()> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("{what} did not come up within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
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
