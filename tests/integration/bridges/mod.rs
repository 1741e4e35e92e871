//! Remote bridges, with real isolation: the server on the host's loopback, each zone's bridge
//! and its target sshd in a network namespace of their own (its own 127.0.0.1), joined to
//! the server only by a Unix-socket forwarder. The target is reachable from the bridge alone.

mod attacks;
mod live;
mod liveness;
mod routing;
mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::tls::{ServerTls, TLS_DIR};
use warden_tests::http::{ServeChild, Server, Transport, new_key};
use warden_tests::netns::{Forward, Netns};
use warden_tests::sshd::{Sshd, TestUser};

use warden_tests::http::init_data_dir;

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// The port the forwarder listens on inside each namespace.
const FORWARD_PORT: u16 = 7443;

/// A `warden serve` over TLS (its data directory's certificate, pinned by the harness), the
/// probe published, and a password credential `pw` for `user`.
struct Lab {
    server: Server,
    serve: ServeChild,
    user: TestUser,
    digest: String,
    data: PathBuf,
    admin: String,
    tmp: TempDir,
}

impl Lab {
    /// A lab whose bridges count as lost after `lost_after_secs` of silence.
    async fn new(lost_after_secs: u64) -> Lab {
        Lab::with_args(&["--bridge-lost-after-secs", &lost_after_secs.to_string()]).await
    }

    /// A lab whose server gets `args` too (its sweep runs every 500 ms).
    async fn with_args(args: &[&str]) -> Lab {
        let tmp = TempDir::new().expect("temp dir");
        let data = tmp.path().join("data");
        let admin = init_data_dir(&data);
        ServerTls::generate_self_signed(&data.join(TLS_DIR), &[]).expect("certificate");
        let serve = Lab::serve(&data, &tmp, args, 1).await;
        let mut lab = Lab {
            server: serve.server(&admin),
            serve,
            user: TestUser::create("wbr").expect("user"),
            digest: String::new(),
            data,
            admin,
            tmp,
        };
        let key = new_key();
        lab.server.trust("tests", &key).await;
        lab.digest = lab.server.publish("probe", &key).await;
        let r = lab
            .server
            .post(
                "/v1/credentials",
                &lab.server.admin,
                json!({ "name": "pw", "username": lab.user.name, "secret": lab.user.password }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        lab
    }

    async fn serve(data: &Path, tmp: &TempDir, args: &[&str], attempt: usize) -> ServeChild {
        let mut all = vec!["--server-dead-after-secs", "1"];
        all.extend_from_slice(args);
        let log = tmp.path().join(format!("serve-{attempt}.log"));
        ServeChild::start(BIN, data, Transport::DataDirTls, &all, log).await
    }

    /// SIGKILLs the server and starts it again on the same data (a new port).
    async fn restart(&mut self, args: &[&str]) {
        self.serve.kill_9();
        self.serve = Lab::serve(&self.data, &self.tmp, args, 2).await;
        self.server = self.serve.server(&self.admin);
    }

    /// The server's address as `host:port`.
    fn server_addr(&self) -> String {
        self.serve.addr()
    }

    /// The server certificate's pin.
    fn pin(&self) -> String {
        self.serve.fingerprint.expect("tls").to_string()
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
    /// The server certificate's pin, as an operator gives it to the bridge.
    pin: String,
}

impl Zone {
    fn new(lab: &Lab) -> Zone {
        let ns = Netns::create("wz").expect("netns");
        let sshd = Sshd::start_in(&ns.name).expect("sshd in netns");
        let forward = ns
            .forward_to_host(FORWARD_PORT, &lab.server_addr())
            .expect("forwarder");
        Zone {
            ns,
            sshd,
            forward,
            pin: lab.pin(),
        }
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
        format!("https://127.0.0.1:{}", self.forward.port)
    }

    /// `warden bridge enroll` inside the namespace, pinning the server's certificate; its
    /// output and whether it succeeded.
    fn enroll(&self, dir: &Path, token: &str) -> (bool, String) {
        self.enroll_with(dir, token, &["--server-fingerprint", &self.pin])
    }

    /// `warden bridge enroll` verifying the server with `trust` (flags).
    fn enroll_with(&self, dir: &Path, token: &str, trust: &[&str]) -> (bool, String) {
        let out = self
            .ns
            .command(BIN)
            .args(["bridge", "enroll", "--server", &self.server_url()])
            .args(trust)
            .arg("--data")
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

/// Waits until run `id` has a durable `action` intent record (the call is in flight).
async fn wait_for_intent(lab: &Lab, id: &str, action: &str) -> Vec<Value> {
    for _ in 0..400 {
        let records = lab.server.audit(&format!("run={id}")).await;
        if records
            .iter()
            .any(|r| r["action"] == action && r["outcome"] == "intent")
        {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {id} never made a {action} call");
}

/// Run `id` was issued leases, and every one of them is revoked now.
async fn assert_leases_revoked(lab: &Lab, id: &str) {
    let leases = lab
        .server
        .get(&format!("/v1/runs/{id}/leases"), &lab.server.admin)
        .await;
    let all = leases.body.as_array().expect("leases");
    assert!(!all.is_empty(), "the run acquired no lease");
    assert!(
        all.iter().all(|l| l["status"] == "revoked"),
        "{}",
        leases.text
    );
}

/// The server's audit chain verifies end to end.
async fn assert_verifies(lab: &Lab) {
    let r = lab.server.get("/v1/audit/verify", &lab.server.admin).await;
    assert_eq!(r.body["ok"], true, "{}", r.text);
}
