//! The HTTP harness of the integration tests: a Warden server on a real bound port (in this
//! process, or another one), a reqwest client, replies with their JSON error codes and typed
//! records (`reply.rs`), bootstrap and publish helpers (`setup.rs`: an administrator, users
//! with their own tokens, trusted publishers, signed guests), bounded waits for runs, and a
//! reader of a run's server-sent events (`sse.rs`). [`ServeChild`] (in `child.rs`) is
//! `warden serve` as a child process, over TLS or plain HTTP.
//!
//! Its threat is a test that passes for the wrong reason: every wait is bounded (a hung
//! server fails the test with the last reply), every helper asserts the status it relies on
//! and shows the reply text when it is not, and nothing is mocked.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use warden_host::api::AppState;
use warden_host::store::{DataDir, DatabaseLocation};
use warden_host::tls::{Fingerprint, ServerTrust};

use crate::repo_root;

mod child;
mod reply;
mod setup;
mod sse;
pub use child::{ServeChild, ServeCommand, Transport};
pub use reply::{Created, IssuedToken, Reply, RunState, Uploaded, reply};
pub use setup::{
    ADMIN_ROLE, admin_in, bootstrap_admin, bootstrap_admin_as, component_bytes, init_data_dir,
    manifest_text, new_key, redeem, signed, signed_bytes,
};
pub use sse::parse_sse_block;

/// How long a test waits for a run, a stream or a server before failing.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The states of a run that has not ended yet, as [`Server::wait_for_state_or_end`] sees them.
pub const UNFINISHED: &[&str] = &["queued", "running", "awaiting-approval"];

/// A Warden server on a real port, and an admin token for it.
pub struct Server {
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    /// The in-process server's state (None for a server in another process).
    pub _state: Option<AppState>,
    _dir: Option<TempDir>,
    /// How long this harness's waits last ([`PATIENCE`] unless set otherwise).
    pub patience: Duration,
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

    /// [`Server::start`] in sled whatever `WARDEN_TEST_BACKEND` says (the suites whose
    /// server always was sled).
    pub async fn start_embedded() -> Server {
        Self::start_configured(&Default::default(), &DatabaseLocation::Embedded, |state| {
            state
        })
        .await
    }

    /// [`Server::start_with`] over the database at `location`.
    pub async fn start_at(
        limits: &warden_host::api::ServerLimits,
        location: &DatabaseLocation,
    ) -> Server {
        Self::start_configured(limits, location, |state| state).await
    }

    /// [`Server::start_at`], with the state passed through `configure` before the server
    /// serves it (to set an approval lifetime, say).
    pub async fn start_configured(
        limits: &warden_host::api::ServerLimits,
        location: &DatabaseLocation,
        configure: impl FnOnce(AppState) -> AppState,
    ) -> Server {
        let dir = TempDir::new().expect("temp dir");
        let root = dir.path().join("data");
        let data = DataDir::init_at(&root, &DataDir::default_key_source(&root), location)
            .expect("init data dir");
        let state = AppState::open_with(data, &repo_root().join("policies"), limits)
            .await
            .expect("app state");
        let state = configure(state);
        let admin = bootstrap_admin(&state.users);
        let mut server = Self::serve_state(state, admin).await;
        server._dir = Some(dir);
        server
    }

    /// Serves `state` in this process on 127.0.0.1:0 until the test ends; the harness on it
    /// as `admin`.
    pub async fn serve_state(state: AppState, admin: String) -> Server {
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
            _dir: None,
            patience: PATIENCE,
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
            patience: PATIENCE,
        }
    }

    /// This harness with its waits lasting `patience` instead of [`PATIENCE`].
    pub fn with_patience(mut self, patience: Duration) -> Server {
        self.patience = patience;
        self
    }

    /// The in-process server's state; fails for a server in another process.
    pub fn state(&self) -> &AppState {
        self._state.as_ref().expect("in-process server")
    }

    /// The data directory of the in-process server; fails for one in another process.
    pub fn data_path(&self) -> std::path::PathBuf {
        self._dir
            .as_ref()
            .expect("in-process server")
            .path()
            .join("data")
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

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(Method::PUT, path, Some(token), Some(&body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// `method path` as the admin (with `body`, if any); asserts `want` and returns the reply.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        want: StatusCode,
    ) -> Reply {
        let shown = format!("{method} {path}");
        let r = self
            .request(method, path, Some(&self.admin), body.as_ref())
            .await;
        assert_eq!(r.status, want, "{shown}: {}", r.text);
        r
    }

    /// POSTs `body` as the admin, asserts `want`, returns the JSON reply.
    pub async fn admin_post(&self, path: &str, body: Value, want: StatusCode) -> Value {
        self.expect(Method::POST, path, Some(body), want).await.body
    }

    /// GETs `path` as the admin and asserts 200.
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.expect(Method::GET, path, None, StatusCode::OK).await
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

    /// Creates process `body` as the admin (it must succeed); its id.
    pub async fn process(&self, body: Value) -> String {
        let r = self
            .expect(
                Method::POST,
                "/v1/processes",
                Some(body),
                StatusCode::CREATED,
            )
            .await;
        r.json::<Created>().id
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
        r.json::<Created>().id
    }

    /// Run `id`'s record, as the admin (it must exist).
    pub async fn run(&self, id: &str) -> Value {
        self.admin_get(&format!("/v1/runs/{id}")).await.body
    }

    /// Polls run `id` until it is in a terminal state; fails after [`Server::patience`].
    pub async fn wait_for_state_or_end(&self, id: &str) -> Value {
        self.wait_while(id, UNFINISHED).await
    }

    /// Polls run `id` (as the admin, every 50 ms) while its state is one of `states`; the
    /// first record in another state. Fails after [`Server::patience`] with the last reply.
    pub async fn wait_while(&self, id: &str, states: &[&str]) -> Value {
        self.poll_run(id, |run| !states.contains(&run.state.as_str()))
            .await
    }

    /// Polls run `id` until its state is `want`; fails after [`Server::patience`].
    pub async fn wait_for_state(&self, id: &str, want: &str) -> Value {
        self.poll_run(id, |run| run.state == want).await
    }

    /// Polls run `id` (as the admin, every 50 ms) until `done` holds for it; its record.
    async fn poll_run(&self, id: &str, done: impl Fn(&RunState) -> bool) -> Value {
        let done = &done;
        let what = format!("run {id} to get there");
        crate::wait::until(
            self.patience,
            Duration::from_millis(50),
            &what,
            || async move {
                let r = self.get(&format!("/v1/runs/{id}"), &self.admin).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
                let run: RunState = r.json();
                assert_eq!(run.id, id, "{}", r.text);
                if done(&run) {
                    Ok(r.body)
                } else {
                    Err(format!("still {}: {}", run.state, r.text))
                }
            },
        )
        .await
    }

    /// One sample of `/metrics` (it needs no token).
    pub async fn metric(&self, name: &str) -> u64 {
        let r = self.request(Method::GET, "/metrics", None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{}", r.text))
    }

    /// Run `run`'s approval request as `token`'s user sees it (it must be visible).
    pub async fn approval(&self, run: &str, token: &str) -> Value {
        self.get(&format!("/v1/runs/{run}/approval"), token)
            .await
            .expect(StatusCode::OK)
            .clone()
    }

    /// Approves run `run` as `token`'s user; the reply, whatever it is.
    pub async fn approve(&self, run: &str, token: &str) -> Reply {
        self.post(&format!("/v1/runs/{run}/approve"), token, json!({}))
            .await
    }

    /// Audit records matching `query` (e.g. `action=module.upload`), as the admin.
    pub async fn audit(&self, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/audit?{query}"), &self.admin).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body.as_array().expect("audit array").clone()
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
