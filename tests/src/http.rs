//! The HTTP harness of the integration tests: a Warden server on a real bound port (in this
//! process, or another one), a reqwest client, replies with their JSON error codes, and the
//! helpers every API test needs (bootstrap an administrator, trust a publisher, publish a
//! signed guest, create users with their own tokens, start and wait for runs, read the
//! audit and a run's server-sent events). [`ServeChild`] (in `child.rs`) is `warden serve` as
//! a child process, over TLS or plain HTTP.

use std::collections::BTreeSet;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::api::AppState;
use warden_host::registry::manifest::Manifest;
use warden_host::registry::signing;
use warden_host::store::{DataDir, DatabaseLocation};
use warden_host::tls::{Fingerprint, ServerTrust};
use warden_host::users::UserStore;

use crate::{guests, repo_root};

mod child;
pub use child::{ServeChild, Transport};

/// How long a test waits for a run, a stream or a server before failing.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Mints `user`'s own token with its enrollment token (what a new user does once): the
/// token an administrator mints for someone else is good for nothing else.
pub async fn redeem(client: &reqwest::Client, base: &str, user: &str, enrollment: &str) -> String {
    let resp = client
        .post(format!("{base}/v1/users/{user}/tokens"))
        .bearer_auth(enrollment)
        .json(&json!({ "label": "own" }))
        .send()
        .await
        .expect("redeem request");
    let r = reply(resp).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["kind"], "full", "{}", r.text);
    r.body["token"].as_str().expect("token").to_string()
}

/// One HTTP reply: status, raw body text, and the body as JSON (`Null` if it is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    /// The stable error code of a JSON error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the status and the error code.
    pub fn expect_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.code(), code, "{}", self.text);
    }
}

/// A Warden server on a real port, and an admin token for it.
pub struct Server {
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    /// The in-process server's state (None for a server in another process).
    pub _state: Option<AppState>,
    _dir: Option<TempDir>,
}

impl Server {
    /// Starts the API in-process on 127.0.0.1:0 over a new data directory, with a
    /// Privileged Administrator `admin` bootstrapped through the user store.
    pub async fn start() -> Server {
        Self::start_with(&warden_host::api::ServerLimits::default()).await
    }

    /// [`Server::start`] with `limits` (pool size, run-queue bounds). The state is in sled,
    /// or, when `WARDEN_TEST_BACKEND=postgres`, in a fresh database of the PostgreSQL test
    /// cluster (how `.ci/run` runs the API suites a second time).
    pub async fn start_with(limits: &warden_host::api::ServerLimits) -> Server {
        let location = match std::env::var("WARDEN_TEST_BACKEND").as_deref() {
            Ok("postgres") => DatabaseLocation::Postgres(crate::postgres::fresh_database()),
            Ok("sled") | Err(_) => DatabaseLocation::Embedded,
            Ok(other) => panic!("WARDEN_TEST_BACKEND={other}: use sled or postgres"),
        };
        Self::start_at(limits, &location).await
    }

    /// [`Server::start_with`] over the database at `location`.
    pub async fn start_at(
        limits: &warden_host::api::ServerLimits,
        location: &DatabaseLocation,
    ) -> Server {
        let dir = TempDir::new().expect("temp dir");
        let root = dir.path().join("data");
        let data = DataDir::init_at(&root, &DataDir::default_key_source(&root), location)
            .expect("init data dir");
        let state = AppState::open_with(data, &repo_root().join("policies"), limits)
            .await
            .expect("app state");
        let admin = bootstrap_admin(&state.users);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        tokio::spawn(warden_host::api::serve(
            listener,
            state.clone(),
            std::future::pending(),
        ));
        Server {
            base,
            admin,
            client: client(),
            _state: Some(state),
            _dir: Some(dir),
        }
    }

    /// A server already running at `base` (another process).
    pub fn remote(base: String, admin: String) -> Server {
        Self::remote_with(base, admin, client())
    }

    /// [`Server::remote`] through `client` (one that verifies the server's TLS, say).
    pub fn remote_with(base: String, admin: String, client: reqwest::Client) -> Server {
        Server {
            base,
            admin,
            client,
            _state: None,
            _dir: None,
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        reply(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(token), Some(&body))
            .await
    }

    /// POSTs raw bytes (a module upload, a malformed body).
    pub async fn post_raw(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Reply {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        reply(req.send().await.expect("request sent")).await
    }

    pub async fn upload(&self, bytes: Vec<u8>) -> Reply {
        self.post_raw("/v1/modules", &self.admin, "application/wasm", bytes)
            .await
    }

    /// Trusts `key` as publisher `name`.
    pub async fn trust(&self, name: &str, key: &SigningKey) {
        let body =
            json!({ "name": name, "public_key": hex::encode(key.verifying_key().as_bytes()) });
        let r = self.post("/v1/publishers", &self.admin, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    /// Signs `component` with its own manifest, uploads it, and returns its digest.
    pub async fn publish(&self, component: &str, key: &SigningKey) -> String {
        let r = self
            .upload(signed(component, &manifest_text(component), key))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["digest"].as_str().expect("digest").to_string()
    }

    /// Shares process `id` with `users`, as `token`'s user; it must succeed.
    pub async fn share(&self, id: &str, token: &str, users: &[&str]) {
        let path = format!("/v1/processes/{id}/share");
        let r = self.post(&path, token, json!({ "users": users })).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }

    /// Creates a process as `token`'s user; returns its id.
    pub async fn create_process(&self, token: &str, name: &str, digest: &str) -> Reply {
        let body = json!({ "name": name, "module_digest": digest, "grant": {} });
        self.post("/v1/processes", token, body).await
    }

    /// Creates a user with `roles` (as the admin) and returns a fresh API token for it.
    pub async fn user(&self, name: &str, roles: &[&str]) -> String {
        let r = self
            .post(
                "/v1/users",
                &self.admin,
                json!({ "name": name, "roles": roles }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = self
            .post(&format!("/v1/users/{name}/tokens"), &self.admin, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let enrollment = r.body["token"].as_str().expect("token");
        self.redeem(name, enrollment).await
    }

    /// Redeems `name`'s enrollment token (minted by an administrator) for the user's own
    /// full token, as the user would.
    pub async fn redeem(&self, name: &str, enrollment: &str) -> String {
        redeem(&self.client, &self.base, name, enrollment).await
    }

    /// Starts a run of process `id` as `token`'s user; returns the run id.
    pub async fn start_run(&self, id: &str, token: &str, inputs: Value) -> String {
        let r = self
            .post(
                &format!("/v1/processes/{id}/runs"),
                token,
                json!({ "inputs": inputs }),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        r.body["id"].as_str().expect("run id").to_string()
    }
    /// Polls run `id` until it is in a terminal state; fails after [`PATIENCE`].
    pub async fn wait_for_state_or_end(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let r = self.get(&format!("/v1/runs/{id}"), &self.admin).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let state = r.body["state"].as_str().unwrap_or("");
            if !matches!(state, "queued" | "running" | "awaiting-approval") {
                return r.body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{}", r.text);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One sample of `/metrics` (it needs no token).
    pub async fn metric(&self, name: &str) -> u64 {
        let r = self.request(Method::GET, "/metrics", None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{}", r.text))
    }

    /// Polls run `id` until its state is `want`; fails after [`PATIENCE`].
    pub async fn wait_for_state(&self, id: &str, want: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let r = self.get(&format!("/v1/runs/{id}"), &self.admin).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            if r.body["state"] == want {
                return r.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run never became {want}: {}",
                r.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Audit records matching `query` (e.g. `action=module.upload`), as the admin.
    pub async fn audit(&self, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/audit?{query}"), &self.admin).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body.as_array().expect("audit array").clone()
    }

    /// Reads `path`'s server-sent events until a `state` event; returns (event, data) pairs.
    pub async fn events_until_state(&self, path: &str, token: &str) -> Vec<(String, String)> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("events request");
        assert_eq!(resp.status(), StatusCode::OK);
        let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let mut stream = resp.bytes_stream();
        let mut buffer = String::new();
        let mut events = Vec::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if let Some(event) = parse_sse_block(&block) {
                        let done = event.0 == "state";
                        events.push(event);
                        if done {
                            return;
                        }
                    }
                }
            }
            panic!("event stream ended without a state event");
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("state event in time");
        events
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("http client")
}

/// A client that trusts exactly the server certificate `pin` (and speaks plain HTTP to
/// `http://` URLs).
pub fn pinned_client(pin: Fingerprint) -> reqwest::Client {
    ServerTrust::Pinned(pin)
        .client_builder()
        .expect("pinned client")
        .build()
        .expect("http client")
}

pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        body,
    }
}

/// One SSE block's (event, data); `None` for a comment-only block (keep-alive).
pub fn parse_sse_block(block: &str) -> Option<(String, String)> {
    let mut event = None;
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim_start().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some((event.unwrap_or_else(|| "message".into()), data.join("\n")))
}

/// Creates the first Privileged Administrator `admin` directly in the store; its token.
pub fn bootstrap_admin(users: &UserStore) -> String {
    let roles = BTreeSet::from(["privileged-administrator".to_string()]);
    users.create_user("admin", roles).expect("create admin");
    let issued = users
        .issue_token("admin", "bootstrap")
        .expect("issue token");
    issued.token.expose_secret().to_string()
}

pub fn new_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

pub fn component_bytes(name: &str) -> Vec<u8> {
    std::fs::read(guests::component(name)).expect("guest component built")
}

pub fn manifest_text(name: &str) -> String {
    std::fs::read_to_string(guests::manifest(name)).expect("guest manifest")
}

/// `component` signed with `manifest` (TOML text) by `key`.
pub fn signed(component: &str, manifest: &str, key: &SigningKey) -> Vec<u8> {
    let manifest = Manifest::parse(manifest).expect("manifest parses");
    signing::sign(&component_bytes(component), &manifest, key).expect("sign")
}
