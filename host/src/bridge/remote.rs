//! A remote bridge: enrols once with a one-time token, then pulls the runs of its zone from
//! the server (outbound HTTPS only; it listens on no port) and executes them with the same
//! [`Bridge`] as the embedded one. Its host calls reach the server through [`RunLink`]: the
//! audit records go into the server's chain (a call's result reaches the task only once its
//! record is durable there), each secret is fetched under the run's lease for the call that
//! needs it, and nothing secret is written to the bridge's disk.
//!
//! On disk (`--data DIR`): `bridge.key` (its ed25519 seed, 0600, never sent), `bridge.json`
//! (its id, zone, server URL and how the server is verified), `modules/` (signed modules by
//! digest, verified again against the server's publishers before every run), `artifacts/`
//! (precompiled components), `policies/` (the server's policy files by digest) and `cache/`
//! (the target records of its runs: addresses and pinned host keys, never credentials).
//!
//! Threat: a server impersonator (the bridge verifies the server's TLS certificate against
//! its pin or CA), a tampered module (verified here, against the publishers the server
//! trusts), a run that outlives the bridge's contact with the server (the server ends it
//! `lost`; the bridge stops it when the server says the run is no longer its).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use super::enrol::{IDENTITY_FILE, KEY_FILE, error_text, http_client, reach_error};
pub use super::enrol::{Identity, Trust, enroll};
use super::link::RunLink;
use super::wire::{self, ClaimedRun, RequestSigner};
use super::{Bridge, PreparedTask, RunSpec, Runtime};
use crate::capabilities::server::ServerSide;
use crate::capabilities::{HostCallPolicy, RunIdentity, Services};
use crate::policy::PolicyEngine;
use crate::registry::signing::{self, TrustedPublishers};
use crate::runtime::{RunControl, RunReport};
use crate::ssh::{SshConfig, SshPool};
use crate::targets::TargetStore;

/// The bridge's version, reported to the server.
pub const VERSION: &str = concat!("warden-bridge/", env!("CARGO_PKG_VERSION"));

/// How long a claim waits on the server for a run.
const CLAIM_WAIT_MS: u64 = 20_000;

/// How often a running run's claim is renewed (and a cancel looked for).
const RENEW_EVERY: Duration = Duration::from_millis(500);

/// How long the end of a run is retried towards an unreachable server.
const FINISH_FOR: Duration = Duration::from_secs(600);

/// A bridge, enrolled, ready to pull work.
pub struct Agent {
    identity: Identity,
    http: reqwest::Client,
    signer: RequestSigner,
    runtime: Arc<Runtime>,
    targets: TargetStore,
    ssh: SshPool,
    dir: PathBuf,
    prepared: Mutex<HashMap<String, Arc<PreparedTask>>>,
    policy: Mutex<Option<(String, PolicyEngine)>>,
    slots: tokio::sync::Semaphore,
    slot_count: usize,
}

impl Agent {
    /// Opens the bridge enrolled in `dir`, with at most `slots` runs at once.
    pub fn open(dir: &Path, slots: usize) -> anyhow::Result<Arc<Self>> {
        let identity: Identity = serde_json::from_slice(
            &std::fs::read(dir.join(IDENTITY_FILE)).with_context(|| {
                format!(
                    "{} holds no enrolled bridge (run `warden bridge enroll`)",
                    dir.display()
                )
            })?,
        )?;
        let seed_hex = Zeroizing::new(std::fs::read_to_string(dir.join(KEY_FILE))?);
        let seed = Zeroizing::new(hex::decode(seed_hex.trim()).context("bridge.key")?);
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .context("bridge.key: not a 32-byte key")?;
        let key = SigningKey::from_bytes(&seed);
        let engine = crate::runtime::engine::EngineConfig::default();
        let runtime = Runtime::new(&engine, &dir.join("artifacts"))?;
        let cache = crate::store::Database::from_backend(Arc::new(
            crate::store::SledBackend::open(&dir.join("cache"))?,
        ));
        Ok(Arc::new(Agent {
            http: http_client(&identity.trust)?,
            signer: RequestSigner::new(identity.bridge_id.clone(), key),
            identity,
            runtime,
            targets: TargetStore::open(&cache)?,
            ssh: SshPool::new(SshConfig::default()),
            dir: dir.to_path_buf(),
            prepared: Mutex::default(),
            policy: Mutex::default(),
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            slot_count: slots.max(1),
        }))
    }

    /// The bridge's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// A signed request to the server.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let url = format!("{}{path}", self.identity.server);
        let mut request = self.http.request(method.clone(), url);
        for (name, value) in self.signer.headers(method.as_str(), path, &body) {
            request = request.header(name, value);
        }
        request
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
    }

    /// [`Self::send`], retried while the server cannot be reached at all (restarting, or the
    /// network is back soon) for up to `patience`: a request that never reached the server
    /// is safe to send again.
    pub(super) async fn send_patiently(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        patience: Duration,
    ) -> Result<reqwest::Response, String> {
        let until = tokio::time::Instant::now() + patience;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.send(method.clone(), path, body.clone()).await {
                Ok(response) => return Ok(response),
                Err(e) if e.is_connect() && tokio::time::Instant::now() + pause < until => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(format!("the server cannot be reached: {e}")),
            }
        }
    }

    /// Pulls and executes runs until `stop` fires; reconnects by itself.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut pause = Duration::from_millis(200);
        tracing::info!(bridge = %self.identity.bridge_id, zone = %self.identity.zone, server = %self.identity.server, "bridge pulling runs");
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => break,
                permit = self.slots.acquire() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let claimed = tokio::select! {
                () = stop.cancelled() => break,
                claimed = self.claim() => claimed,
            };
            match claimed {
                Ok(Some(run)) => {
                    pause = Duration::from_millis(200);
                    permit.forget();
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.execute(run).await;
                        this.slots.add_permits(1);
                    });
                }
                Ok(None) => pause = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "claim failed");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Waits up to `grace` for the runs in progress to end (after [`Self::run`] stopped
    /// claiming); how many were still running.
    pub async fn drain(&self, grace: Duration) -> usize {
        let until = tokio::time::Instant::now() + grace;
        loop {
            let busy = self.slot_count - self.slots.available_permits();
            if busy == 0 || tokio::time::Instant::now() >= until {
                return busy;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn claim(&self) -> anyhow::Result<Option<ClaimedRun>> {
        let digest = self
            .policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(d, _)| d.clone());
        let body = serde_json::to_vec(&wire::ClaimRequest {
            wait_ms: CLAIM_WAIT_MS,
            policy_digest: digest,
            version: VERSION.to_string(),
        })?;
        let response = self
            .send(reqwest::Method::POST, "/v1/bridge/claim", body)
            .await
            .map_err(|e| reach_error(&self.identity.trust, &self.identity.server, &e))?;
        match response.status() {
            reqwest::StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => Ok(Some(response.json().await?)),
            _ => bail!("{}", error_text(response).await),
        }
    }

    /// Executes one claimed run and reports its end.
    async fn execute(self: &Arc<Self>, run: ClaimedRun) {
        let run_id = run.run_id.clone();
        let control = RunControl::new();
        let gone = Arc::new(AtomicBool::new(false));
        let renewing = tokio::spawn(self.clone().renew(
            run_id.clone(),
            control.clone(),
            gone.clone(),
        ));
        let report = match self.prepare(&run).await {
            Ok((task, policy)) => {
                let services = Services {
                    targets: self.targets.clone(),
                    ssh: self.ssh.clone(),
                    server: ServerSide::Remote(Arc::new(RunLink::new(self.clone(), &run))),
                };
                let spec = RunSpec {
                    identity: RunIdentity {
                        run_id: run.run_id.clone(),
                        actor: run.actor.clone(),
                        module: run.module.clone(),
                    },
                    task,
                    params: run.params.clone(),
                    grant: run.grant.clone(),
                    limits: run.limits.clone(),
                    control: control.clone(),
                };
                let bridge = Bridge::new(self.runtime.clone(), services);
                match bridge.execute_recorded(spec, policy).await {
                    Ok(report) => report,
                    Err(e) => failed_report(format!("{e}")),
                }
            }
            Err(e) => failed_report(format!("the bridge could not run the module: {e:#}")),
        };
        renewing.abort();
        if gone.load(Ordering::SeqCst) {
            tracing::warn!(run = %run_id, "run ended after the server took it back; not reported");
            return;
        }
        self.finish(&run_id, report).await;
    }

    /// The verified, prepared module and the checks of the run's host calls.
    async fn prepare(
        &self,
        run: &ClaimedRun,
    ) -> anyhow::Result<(Arc<PreparedTask>, HostCallPolicy)> {
        for target in &run.targets {
            if self.targets.get(&target.name)?.as_ref() != Some(target) {
                let _ = self.targets.remove(&target.name);
                self.targets.add(target.clone())?;
            }
        }
        let engine = self.policy_engine(run)?;
        let task = self.module(&run.digest).await?;
        let policy = HostCallPolicy {
            engine,
            requested: run.requested.iter().cloned().collect(),
            scope: run.scope.clone(),
        };
        Ok((task, policy))
    }

    fn policy_engine(&self, run: &ClaimedRun) -> anyhow::Result<PolicyEngine> {
        let mut held = self.policy.lock().unwrap_or_else(PoisonError::into_inner);
        if !crate::runs::is_sha256_hex(&run.policy_digest) {
            bail!("the server sent a malformed policy digest");
        }
        if let Some(files) = &run.policies {
            let dir = self.dir.join("policies").join(&run.policy_digest);
            std::fs::create_dir_all(&dir)?;
            for file in files {
                let ok = !file.name.is_empty()
                    && file.name.len() <= 64
                    && file
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    && !file.name.starts_with('.');
                if !ok {
                    bail!("the server sent a policy file with a bad name");
                }
                std::fs::write(dir.join(&file.name), &file.text)?;
            }
            let engine = PolicyEngine::load(&dir)?;
            *held = Some((run.policy_digest.clone(), engine));
        }
        match &*held {
            Some((digest, engine)) if *digest == run.policy_digest => Ok(engine.clone()),
            _ => bail!("the server's policy set was not sent"),
        }
    }

    /// Module `digest`: fetched once, verified on every run against the publishers the server
    /// trusts now, compiled once.
    async fn module(&self, digest: &str) -> anyhow::Result<Arc<PreparedTask>> {
        if !crate::runs::is_sha256_hex(digest) {
            bail!("bad module digest");
        }
        let trusted = self.publishers().await?;
        let path = self.dir.join("modules").join(format!("{digest}.wasm"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(_) => {
                let response = self
                    .send(
                        reqwest::Method::GET,
                        &format!("/v1/bridge/modules/{digest}"),
                        Vec::new(),
                    )
                    .await?;
                if !response.status().is_success() {
                    bail!("fetching module {digest}: {}", error_text(response).await);
                }
                response.bytes().await?.to_vec()
            }
        };
        let verified = signing::verify(&bytes, &trusted).with_context(|| {
            format!("module {digest} does not verify against the server's publishers")
        })?;
        if verified.digest != digest {
            bail!(
                "module bytes are {} but the run names {digest}",
                verified.digest
            );
        }
        if !path.exists() {
            std::fs::create_dir_all(self.dir.join("modules"))?;
            std::fs::write(&path, &bytes)?;
        }
        if let Some(task) = self
            .prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
        {
            return Ok(task.clone());
        }
        let task = self.runtime.prepare(&bytes)?;
        self.prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest.to_string(), task.clone());
        Ok(task)
    }

    async fn publishers(&self) -> anyhow::Result<TrustedPublishers> {
        let response = self
            .send(reqwest::Method::GET, "/v1/bridge/publishers", Vec::new())
            .await?;
        if !response.status().is_success() {
            bail!(
                "reading the server's publishers: {}",
                error_text(response).await
            );
        }
        let keys: Vec<serde_json::Value> = response.json().await?;
        let mut trusted = TrustedPublishers::default();
        for key in keys {
            let name = key["name"].as_str().unwrap_or_default();
            let bytes: [u8; 32] = hex::decode(key["public_key"].as_str().unwrap_or_default())
                .ok()
                .and_then(|b| b.try_into().ok())
                .context("a publisher key from the server is malformed")?;
            trusted.trust(name, ed25519_dalek::VerifyingKey::from_bytes(&bytes)?);
        }
        Ok(trusted)
    }

    /// Renews the run's claim until aborted, sending what the run logged since the last
    /// renewal (its live events); cancels the run when asked to, or when the server says the
    /// run is no longer this bridge's (lost, revoked).
    async fn renew(
        self: Arc<Self>,
        run_id: String,
        control: Arc<RunControl>,
        gone: Arc<AtomicBool>,
    ) {
        let path = format!("/v1/bridge/runs/{run_id}/renew");
        let mut events = LiveEvents::new(&control);
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let batch = events.take();
            let body = serde_json::to_vec(&wire::RenewRequest {
                events: batch.clone(),
            })
            .unwrap_or_else(|_| b"{}".to_vec());
            match self.send(reqwest::Method::POST, &path, body).await {
                Ok(r) if r.status().is_success() => {
                    let asked = r.json::<wire::RenewReply>().await.is_ok_and(|r| r.cancel);
                    if asked {
                        control.cancel();
                    }
                }
                Ok(r) if matches!(r.status().as_u16(), 401 | 403 | 409) => {
                    tracing::warn!(run = %run_id, status = %r.status(), "the server took the run back; stopping it");
                    gone.store(true, Ordering::SeqCst);
                    control.cancel();
                    return;
                }
                // Events it will not take (never the claim's fault): not sent again.
                Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => {
                    tracing::warn!(run = %run_id, "the server refused the run's live events");
                }
                // Unreachable or a transient error: keep trying (the events again); the
                // server decides when the claim is lost.
                _ => events.put_back(batch),
            }
        }
    }

    async fn finish(&self, run_id: &str, mut report: RunReport) {
        for stream in [&mut report.stdout, &mut report.stderr] {
            truncate(stream, 1 << 20);
        }
        let Ok(body) = serde_json::to_vec(&report) else {
            return;
        };
        let path = format!("/v1/bridge/runs/{run_id}/finish");
        match self
            .send_patiently(reqwest::Method::POST, &path, body, FINISH_FOR)
            .await
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                let error = error_text(r).await;
                tracing::warn!(run = %run_id, %error, "run end not recorded");
            }
            Err(e) => tracing::error!(run = %run_id, error = %e, "run end not recorded"),
        }
    }
}

fn failed_report(error: String) -> RunReport {
    RunReport {
        outcome: crate::runtime::RunOutcome::Failed { error },
        events: Vec::new(),
        stdout: String::new(),
        stderr: String::new(),
        host_calls: 0,
        duration_ms: 0,
    }
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// The run's events as the renewals send them: each with its index in the run's event log
/// (what a stream on the server needs to replay, at the end, only what it did not show).
struct LiveEvents {
    receiver: tokio::sync::broadcast::Receiver<crate::runtime::RunEvent>,
    next: u64,
    unsent: Vec<wire::LiveEvent>,
}

impl LiveEvents {
    /// Subscribed before the run starts, so the first event is index 0.
    fn new(control: &RunControl) -> Self {
        LiveEvents {
            receiver: control.subscribe(),
            next: 0,
            unsent: Vec::new(),
        }
    }

    /// What to send now: at most one renewal's worth, within its caps.
    fn take(&mut self) -> Vec<wire::LiveEvent> {
        use tokio::sync::broadcast::error::TryRecvError;
        while self.unsent.len() < super::live::MAX_EVENTS_PER_RENEW {
            match self.receiver.try_recv() {
                Ok(event) => {
                    // One too big for a renewal is shown from the stored record at the end.
                    if event.message.len() <= super::live::MAX_RENEW_MESSAGE_BYTES {
                        self.unsent.push(wire::LiveEvent {
                            index: self.next,
                            event,
                        });
                    }
                    self.next += 1;
                }
                // Missed ones are skipped here; the server's streams replay them at the end.
                Err(TryRecvError::Lagged(n)) => self.next += n,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let mut bytes = 0;
        let fit = self
            .unsent
            .iter()
            .take_while(|e| {
                bytes += e.event.message.len();
                bytes <= super::live::MAX_RENEW_MESSAGE_BYTES
            })
            .count();
        self.unsent.drain(..fit).collect()
    }

    /// A batch the server did not take goes out again with the next renewal.
    fn put_back(&mut self, mut batch: Vec<wire::LiveEvent>) {
        batch.append(&mut self.unsent);
        batch.truncate(4 * super::live::MAX_EVENTS_PER_RENEW);
        self.unsent = batch;
    }
}
