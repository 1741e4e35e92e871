//! The connection pool: one authenticated connection per (target, credential), shared.
//!
//! A connection is keyed by the target's name, address, port and pinned host key and by the
//! credential's id, so a re-pinned target or a rotated credential never rides on an old
//! connection. Concurrent calls multiplex channels on it (bounded per connection, matching
//! OpenSSH's `MaxSessions`). A connection found broken when opening a channel is dropped and
//! re-established once; a failure after the command was sent is never retried, so no command
//! runs twice. Idle connections are closed by [`SshPool::close_idle`], which a background
//! task calls when the pool is created inside a tokio runtime.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use futures::StreamExt;
use russh::client::Msg;
use russh::{Channel, Disconnect};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout, timeout_at};

use super::connect::{self, Connection};
use super::sftp::{self, Access};
use super::{ExecRequest, ExecResult, SshConfig, SshCredential, SshError, exec};
use crate::targets::Target;

/// Time allowed for a polite disconnect of an idle connection.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

/// Longest pause between background idle sweeps.
const MAX_REAP_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    target: String,
    address: String,
    port: u16,
    host_key: String,
    credential: String,
}

impl PoolKey {
    fn new(target: &Target, cred: &SshCredential) -> Self {
        PoolKey {
            target: target.name.clone(),
            address: target.address.clone(),
            port: target.port,
            host_key: target.host_key.clone(),
            credential: cred.id.clone(),
        }
    }
}

struct Conn {
    handle: Connection,
    channels: Arc<Semaphore>,
    last_used: Mutex<Instant>,
    busy: AtomicUsize,
}

impl Conn {
    fn is_idle_for(&self, idle: Duration) -> bool {
        let last = *self.last_used.lock().unwrap_or_else(|e| e.into_inner());
        self.busy.load(Ordering::Acquire) == 0 && last.elapsed() >= idle
    }
}

/// Holds a connection and one channel slot on it while a call runs.
struct Lease {
    conn: Arc<Conn>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self
            .conn
            .last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A transfer whose path the target has resolved, holding its SFTP session and channel
/// slot until the caller has authorised [`PendingTransfer::path`] and acts (or drops it).
pub struct PendingTransfer {
    resolved: sftp::Resolved,
    lease: Lease,
    inner: Arc<Inner>,
    key: PoolKey,
    deadline: Instant,
    budget: Duration,
}

impl PendingTransfer {
    /// The path as resolved on the target: what to authorise, and all that is acted on.
    pub fn path(&self) -> &str {
        self.resolved.path()
    }

    /// Uploads to the resolved path (see [`SshPool::upload`]).
    pub async fn upload(self, contents: &[u8], mode: u32) -> Result<u64, SshError> {
        let work = self.resolved.upload(contents, mode);
        let result = timeout_at(self.deadline, work).await.unwrap_or_else(|_| {
            Err(SshError::Timeout(format!(
                "upload of {} did not finish within {:?}",
                self.path(),
                self.budget
            )))
        });
        self.forget_if_broken().await;
        result
    }

    /// Downloads the resolved path (see [`SshPool::download`]).
    pub async fn download(self, max_bytes: u64) -> Result<Vec<u8>, SshError> {
        sftp::validate_download(self.path(), max_bytes)?;
        let work = self.resolved.download(max_bytes);
        let result = timeout_at(self.deadline, work).await.unwrap_or_else(|_| {
            Err(SshError::Timeout(format!(
                "download of {} did not finish within {:?}",
                self.path(),
                self.budget
            )))
        });
        self.forget_if_broken().await;
        result
    }

    async fn forget_if_broken(&self) {
        if self.lease.conn.handle.is_closed() {
            self.inner.forget(&self.key, &self.lease.conn).await;
        }
    }
}

/// One pool entry; its async lock makes concurrent callers share one connection attempt.
#[derive(Default)]
struct Slot {
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

struct Inner {
    config: SshConfig,
    slots: Mutex<HashMap<PoolKey, Arc<Slot>>>,
    opened: AtomicU64,
}

/// SSH connection pool; cheap to clone (clones share connections).
#[derive(Clone)]
pub struct SshPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SshPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshPool")
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

impl SshPool {
    /// Creates a pool. Inside a tokio runtime this also starts the idle reaper, which stops
    /// when the last clone of the pool is dropped.
    pub fn new(config: SshConfig) -> Self {
        let inner = Arc::new(Inner {
            config,
            slots: Mutex::default(),
            opened: AtomicU64::new(0),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&inner)));
        }
        SshPool { inner }
    }

    pub fn config(&self) -> &SshConfig {
        &self.inner.config
    }

    /// Runs one command. See [`ExecRequest`] for sudo, stdin, timeout and caps.
    pub async fn exec(
        &self,
        target: &Target,
        cred: &SshCredential,
        req: &ExecRequest,
    ) -> Result<ExecResult, SshError> {
        self.exec_cancellable(target, cred, req, &CancellationToken::new())
            .await
    }

    /// [`SshPool::exec`] that stops when `cancel` fires: the remote command is signalled
    /// (`TERM`) and its channel closed, and the call returns [`SshError::Cancelled`]. A run
    /// that is cancelled mid-call thus never leaves its command running unrecorded.
    pub async fn exec_cancellable(
        &self,
        target: &Target,
        cred: &SshCredential,
        req: &ExecRequest,
        cancel: &CancellationToken,
    ) -> Result<ExecResult, SshError> {
        let plan = exec::plan(req, cred)?;
        let opened = tokio::select! {
            opened = self.channel(target, cred, req.timeout) => opened,
            () = cancel.cancelled() => return Err(SshError::Cancelled),
        };
        let (lease, channel, deadline) = opened?;
        let result = exec::run(channel, plan, req, deadline, cancel).await;
        self.forget_if_broken(target, cred, &lease).await;
        result
    }

    /// Runs one command on many (target, credential) pairs, at most
    /// [`SshConfig::max_concurrency`] at once; results come back in input order.
    pub async fn exec_many(
        &self,
        jobs: &[(&Target, &SshCredential)],
        req: &ExecRequest,
    ) -> Vec<Result<ExecResult, SshError>> {
        self.fan_out(jobs.iter(), |(t, c)| self.exec(t, c, req))
            .await
    }

    /// Applies `f` to every item with at most [`SshConfig::max_concurrency`] in flight and
    /// returns the outputs in input order. A slow item holds one slot, never the others.
    pub async fn fan_out<I, F, Fut>(&self, items: I, f: F) -> Vec<Fut::Output>
    where
        I: IntoIterator,
        F: Fn(I::Item) -> Fut,
        Fut: Future,
    {
        let f = &f;
        let mut indexed: Vec<(usize, Fut::Output)> =
            futures::stream::iter(items.into_iter().enumerate())
                .map(|(i, item)| async move { (i, f(item).await) })
                .buffer_unordered(self.inner.config.max_concurrency.max(1))
                .collect()
                .await;
        indexed.sort_by_key(|(i, _)| *i);
        indexed.into_iter().map(|(_, out)| out).collect()
    }

    /// Resolves `path` on the target for a transfer (see [`sftp`]): the parent's `realpath`,
    /// and the final component's type. The caller authorises [`PendingTransfer::path`],
    /// the resolved path, then acts; nothing is read or written before that.
    pub async fn resolve(
        &self,
        target: &Target,
        cred: &SshCredential,
        path: &str,
        access: Access,
    ) -> Result<PendingTransfer, SshError> {
        sftp::validate_path(path)?;
        let budget = self.inner.config.transfer_timeout;
        let (lease, channel, deadline) = self.channel(target, cred, budget).await?;
        let work = sftp::resolve(channel, budget.as_secs(), path, access);
        let resolved = timeout_at(deadline, work).await.unwrap_or_else(|_| {
            Err(SshError::Timeout(format!(
                "resolving {path} did not finish within {budget:?}"
            )))
        });
        match resolved {
            Ok(resolved) => Ok(PendingTransfer {
                resolved,
                lease,
                inner: self.inner.clone(),
                key: PoolKey::new(target, cred),
                deadline,
                budget,
            }),
            Err(e) => {
                self.forget_if_broken(target, cred, &lease).await;
                Err(e)
            }
        }
    }

    /// Writes `contents` to the absolute `path` with permission bits `mode`, replacing any
    /// existing regular file (never through a link). Returns the number of bytes written.
    pub async fn upload(
        &self,
        target: &Target,
        cred: &SshCredential,
        path: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<u64, SshError> {
        sftp::validate_upload(path, contents, mode)?;
        let pending = self.resolve(target, cred, path, Access::Write).await?;
        pending.upload(contents, mode).await
    }

    /// Reads the regular file at the absolute `path` (never through a final link), failing
    /// (without reading the rest) as soon as it is known to be larger than `max_bytes`.
    pub async fn download(
        &self,
        target: &Target,
        cred: &SshCredential,
        path: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, SshError> {
        sftp::validate_download(path, max_bytes)?;
        let pending = self.resolve(target, cred, path, Access::Read).await?;
        pending.download(max_bytes).await
    }

    /// Logs in to `target` with `cred` on a fresh connection that is never pooled, then
    /// disconnects. A rotation verifies a new secret this way: a pooled connection made
    /// with the old secret would prove nothing.
    pub async fn verify_login(
        &self,
        target: &Target,
        cred: &SshCredential,
    ) -> Result<(), SshError> {
        let handle = connect::open(&self.inner.config, target, cred).await?;
        let bye = handle.disconnect(Disconnect::ByApplication, "login verified", "en");
        let _ = timeout(DISCONNECT_GRACE, bye).await;
        Ok(())
    }

    /// Drops every pooled connection made with the credential `credential_id` (e.g. after
    /// its secret was rotated), on every target. Connections busy right now are forgotten
    /// by the pool and close once their last call ends.
    pub async fn evict_credential(&self, credential_id: &str) {
        let mut closing = Vec::new();
        for (key, slot) in self.inner.snapshot() {
            if key.credential != credential_id {
                continue;
            }
            closing.extend(slot.conn.lock().await.take());
            let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(&key);
            }
        }
        for conn in closing {
            if conn.busy.load(Ordering::Acquire) == 0 {
                let bye =
                    conn.handle
                        .disconnect(Disconnect::ByApplication, "credential rotated", "en");
                let _ = timeout(DISCONNECT_GRACE, bye).await;
            }
        }
    }

    /// Closes connections unused for `idle_timeout` and forgets broken ones.
    pub async fn close_idle(&self) {
        self.inner.close_idle().await;
    }

    /// Closes every connection not in use right now (e.g. at shutdown).
    pub async fn close_all(&self) {
        self.inner.close_where(|_| true).await;
    }

    /// How many SSH connections this pool has opened since creation (for tests and metrics).
    pub fn connections_opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// How many pool entries currently hold a connection (possibly busy).
    pub fn open_connections(&self) -> usize {
        self.inner
            .snapshot()
            .iter()
            .filter(|(_, slot)| slot.conn.try_lock().map(|c| c.is_some()).unwrap_or(true))
            .count()
    }

    /// A channel on a healthy connection, plus the deadline for the work on it. The budget
    /// starts once a connection is available: connecting has its own timeout and error.
    async fn channel(
        &self,
        target: &Target,
        cred: &SshCredential,
        budget: Duration,
    ) -> Result<(Lease, Channel<Msg>, Instant), SshError> {
        let key = PoolKey::new(target, cred);
        let mut retried = false;
        loop {
            let (conn, reused) = self.inner.connection(&key, target, cred).await?;
            let deadline = Instant::now() + budget;
            let permit = timeout_at(deadline, conn.channels.clone().acquire_owned())
                .await
                .map_err(|_| SshError::Timeout(format!("no free channel within {budget:?}")))?
                .map_err(|_| SshError::Internal("channel semaphore closed".into()))?;
            conn.busy.fetch_add(1, Ordering::AcqRel);
            let lease = Lease {
                conn: conn.clone(),
                _permit: permit,
            };
            let opened = timeout_at(deadline, conn.handle.channel_open_session()).await;
            match opened {
                Err(_) => {
                    return Err(SshError::Timeout(format!(
                        "opening a channel took over {budget:?}"
                    )));
                }
                Ok(Ok(channel)) => return Ok((lease, channel, deadline)),
                // The server refusing one more channel (MaxSessions) leaves the connection fine.
                Ok(Err(russh::Error::ChannelOpenFailure(reason))) if !conn.handle.is_closed() => {
                    return Err(SshError::Remote(format!(
                        "server refused a channel: {reason:?}"
                    )));
                }
                Ok(Err(e)) => {
                    drop(lease);
                    self.inner.forget(&key, &conn).await;
                    if !reused || retried {
                        return Err(SshError::Unreachable(format!("connection lost: {e}")));
                    }
                    retried = true;
                }
            }
        }
    }

    async fn forget_if_broken(&self, target: &Target, cred: &SshCredential, lease: &Lease) {
        if lease.conn.handle.is_closed() {
            self.inner
                .forget(&PoolKey::new(target, cred), &lease.conn)
                .await;
        }
    }
}

impl Inner {
    /// The pooled connection for `key`, connecting if there is none or it is closed.
    async fn connection(
        &self,
        key: &PoolKey,
        target: &Target,
        cred: &SshCredential,
    ) -> Result<(Arc<Conn>, bool), SshError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(key.clone()).or_default().clone()
        };
        let mut current = slot.conn.lock().await;
        if let Some(conn) = current.as_ref().filter(|c| !c.handle.is_closed()) {
            return Ok((conn.clone(), true));
        }
        *current = None;
        let handle = connect::open(&self.config, target, cred).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            handle,
            channels: Arc::new(Semaphore::new(
                self.config.max_channels_per_connection.max(1),
            )),
            last_used: Mutex::new(Instant::now()),
            busy: AtomicUsize::new(0),
        });
        *current = Some(conn.clone());
        Ok((conn, false))
    }

    /// Drops `conn` from the pool if it is still the entry for `key`.
    async fn forget(&self, key: &PoolKey, conn: &Arc<Conn>) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        if let Some(slot) = slot {
            let mut current = slot.conn.lock().await;
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                *current = None;
            }
        }
    }

    fn snapshot(&self) -> Vec<(PoolKey, Arc<Slot>)> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
    }

    async fn close_idle(&self) {
        let idle = self.config.idle_timeout;
        self.close_where(|c| c.handle.is_closed() || c.is_idle_for(idle))
            .await;
    }

    /// Takes out every unused connection matching `pred` (skipping entries that are being
    /// connected right now), removes emptied entries, then disconnects them politely.
    async fn close_where(&self, pred: impl Fn(&Conn) -> bool) {
        let mut closing = Vec::new();
        for (key, slot) in self.snapshot() {
            let Ok(mut current) = slot.conn.try_lock() else {
                continue;
            };
            if let Some(conn) = current.take_if(|c| c.busy.load(Ordering::Acquire) == 0 && pred(c))
            {
                closing.push(conn);
            }
            if current.is_none() {
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                if slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    slots.remove(&key);
                }
            }
        }
        for conn in closing {
            let bye = conn
                .handle
                .disconnect(Disconnect::ByApplication, "idle", "en");
            let _ = timeout(DISCONNECT_GRACE, bye).await;
        }
    }
}

async fn reap(inner: Weak<Inner>) {
    let interval = match inner.upgrade() {
        Some(inner) => {
            (inner.config.idle_timeout / 2).clamp(Duration::from_millis(100), MAX_REAP_INTERVAL)
        }
        None => return,
    };
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        inner.close_idle().await;
    }
}
