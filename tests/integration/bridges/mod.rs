//! Remote bridges, with real isolation: the server on the host's loopback, each zone's bridge
//! and its target sshd in a network namespace of their own (its own 127.0.0.1), joined to
//! the server only by a Unix-socket forwarder. The target is reachable from the bridge alone.

mod attacks;
mod liveness;
mod routing;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::api::ServerLimits;
use warden_tests::http::{Server, new_key};
use warden_tests::netns::{Forward, Netns};
use warden_tests::sshd::{Sshd, TestUser};

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// The port the forwarder listens on inside each namespace.
const FORWARD_PORT: u16 = 7443;

/// A server with the probe published and a password credential `pw` for `user`.
struct Lab {
    server: Server,
    user: TestUser,
    digest: String,
}

impl Lab {
    /// A lab whose bridges count as lost after `lost_after` of silence.
    async fn new(lost_after: Duration) -> Lab {
        Lab::with(|limits| limits.cluster.bridge_lost_after = lost_after).await
    }

    /// A lab whose server's limits `tune` changed (the sweep runs every 500 ms).
    async fn with(tune: impl FnOnce(&mut ServerLimits)) -> Lab {
        let mut limits = ServerLimits::default();
        limits.cluster.sweep = Duration::from_millis(500);
        tune(&mut limits);
        Lab::on(Server::start_with(&limits).await).await
    }

    /// A lab on `server` (in this process or another).
    async fn on(server: Server) -> Lab {
        let key = new_key();
        server.trust("tests", &key).await;
        let digest = server.publish("probe", &key).await;
        let user = TestUser::create("wbr").expect("user");
        let r = server
            .post(
                "/v1/credentials",
                &server.admin,
                json!({ "name": "pw", "username": user.name, "secret": user.password }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        Lab {
            server,
            user,
            digest,
        }
    }

    /// The server's address as `host:port`.
    fn server_addr(&self) -> String {
        self.server.base.trim_start_matches("http://").to_string()
    }

    /// Registers target `name` in `zone` at `sshd`.
    async fn target(&self, name: &str, zone: &str, sshd: &Sshd) {
        let body = json!({ "name": name, "address": sshd.addr(), "host_key": sshd.host_key_line, "zone": zone });
        let r = self
            .server
            .post("/v1/targets", &self.server.admin, body)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }

    /// A process running the probe with `pw` on `targets`, allowed `id -un` and `sleep *`.
    async fn process(&self, name: &str, targets: &[&str]) -> String {
        let body = json!({
            "name": name,
            "module_digest": self.digest,
            "grant": { "credentials": ["pw"], "targets": targets, "commands": ["id -un", "sleep *", "echo *"] },
        });
        let r = self
            .server
            .post("/v1/processes", &self.server.admin, body)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_str().expect("id").to_string()
    }

    /// Starts `command` on `target` through process `process`; the run id.
    async fn exec(&self, process: &str, target: &str, command: &str) -> String {
        let inputs =
            json!({ "mode": "exec", "credential": "pw", "target": target, "command": command });
        self.server
            .start_run(process, &self.server.admin, inputs)
            .await
    }

    /// A one-time enrolment token for `zone`.
    async fn token(&self, zone: &str) -> String {
        let r = self
            .server
            .post(
                "/v1/bridges/tokens",
                &self.server.admin,
                json!({ "zone": zone, "ttl_secs": 600 }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["token"].as_str().expect("token").to_string()
    }

    async fn run(&self, id: &str) -> Value {
        let r = self
            .server
            .get(&format!("/v1/runs/{id}"), &self.server.admin)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }
}

/// A zone's network: a namespace with its target sshd, and the way to the server.
struct Zone {
    ns: Netns,
    sshd: Sshd,
    forward: Forward,
}

impl Zone {
    fn new(lab: &Lab) -> Zone {
        let ns = Netns::create("wz").expect("netns");
        let sshd = Sshd::start_in(&ns.name).expect("sshd in netns");
        let forward = ns
            .forward_to_host(FORWARD_PORT, &lab.server_addr())
            .expect("forwarder");
        Zone { ns, sshd, forward }
    }

    /// Points the namespace's way out at `host_addr` (a restarted server); the old forwarder
    /// stops first.
    fn forward_to(&mut self, host_addr: &str) {
        self.forward.cut();
        self.forward = self
            .ns
            .forward_to_host(FORWARD_PORT, host_addr)
            .expect("forwarder");
    }

    /// The server's URL as seen from inside the namespace.
    fn server_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.forward.port)
    }

    /// `warden bridge enroll` inside the namespace; its output and whether it succeeded.
    fn enroll(&self, dir: &Path, token: &str) -> (bool, String) {
        let out = self
            .ns
            .command(BIN)
            .args(["bridge", "enroll", "--server", &self.server_url(), "--data"])
            .arg(dir)
            .env("WARDEN_BRIDGE_TOKEN", token)
            .output()
            .expect("enroll");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// An enrolled bridge, running, inside the namespace.
    fn bridge(&self, token: &str) -> Bridge {
        self.bridge_with_slots(token, 8)
    }

    /// [`Self::bridge`] executing at most `slots` runs at once.
    fn bridge_with_slots(&self, token: &str, slots: usize) -> Bridge {
        let dir = TempDir::new().expect("bridge dir");
        let data = dir.path().join("bridge");
        let (ok, text) = self.enroll(&data, token);
        assert!(ok, "enrolment failed: {text}");
        let identity: Value =
            serde_json::from_slice(&std::fs::read(data.join("bridge.json")).expect("identity"))
                .expect("identity json");
        let mut bridge = Bridge {
            id: identity["bridge_id"].as_str().expect("id").to_string(),
            data,
            slots,
            child: None,
            _dir: dir,
        };
        bridge.start(self);
        bridge
    }
}

/// A remote bridge process.
struct Bridge {
    id: String,
    data: PathBuf,
    slots: usize,
    child: Option<Child>,
    _dir: TempDir,
}

impl Bridge {
    fn start(&mut self, zone: &Zone) {
        let log = std::fs::File::create(self.data.join("log")).expect("log");
        let child = zone
            .ns
            .command(BIN)
            .args([
                "bridge",
                "run",
                "--slots",
                &self.slots.to_string(),
                "--data",
            ])
            .arg(&self.data)
            .env("WARDEN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("bridge run");
        self.child = Some(child);
    }

    /// SIGKILL, no goodbye.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("log")).unwrap_or_default()
    }

    /// The bridge's signing key (what only the bridge has; an attack test plays a rogue
    /// bridge with another bridge's key).
    fn signer(&self) -> warden_host::bridge::wire::RequestSigner {
        let seed = std::fs::read_to_string(self.data.join("bridge.key")).expect("key");
        let seed: [u8; 32] = hex::decode(seed.trim())
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        warden_host::bridge::wire::RequestSigner::new(
            self.id.clone(),
            ed25519_dalek::SigningKey::from_bytes(&seed),
        )
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A request signed by `signer`, sent straight to the server (as a bridge would).
async fn signed(
    lab: &Lab,
    signer: &warden_host::bridge::wire::RequestSigner,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let body = serde_json::to_vec(&body).expect("json");
    let mut request = lab
        .server
        .client
        .post(format!("{}{path}", lab.server.base))
        .header("content-type", "application/json");
    for (name, value) in signer.headers("POST", path, &body) {
        request = request.header(name, value);
    }
    let response = request.body(body).send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Waits until run `id` has left `queued`/`running`; its record.
async fn ended(lab: &Lab, id: &str) -> Value {
    lab.server.wait_for_state_or_end(id).await
}

/// The server's audit chain verifies end to end.
async fn assert_verifies(lab: &Lab) {
    let r = lab.server.get("/v1/audit/verify", &lab.server.admin).await;
    assert_eq!(r.body["ok"], true, "{}", r.text);
}
