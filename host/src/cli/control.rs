//! The running server's control socket, `DATA/control.sock`: how `warden backup --data DATA`
//! gets a consistent snapshot while the server holds the database (sled locks its directory
//! against every other process). One request, `backup 1`, answered with `ok` and the backup
//! stream ([`super::backup`]) or with `error: …` and one sentence.
//!
//! Threat: another local user asking for a backup (the vault's sealed records and the audit
//! log). The socket lives in the owner-only data directory with mode 0600, and each
//! connection's peer credentials must name the data directory's owner or root; anyone else is
//! refused before a byte of state is read. The request is a short, capped line; one backup
//! runs at a time.

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};

use super::backup::{self, Source};
use super::serve::SERVER_LOG;

/// The socket's name in the data directory.
pub const SOCKET: &str = "control.sock";
/// The one request this socket answers.
const REQUEST: &str = "backup 1";
/// Longest request line read.
const MAX_REQUEST: u64 = 64;

/// The listening socket; removed when dropped (the server stops).
pub(crate) struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Listens on `DATA/control.sock` for backup requests. A socket left by a server that
    /// died is replaced; one that answers belongs to another live server (several servers
    /// over one PostgreSQL database may share a data directory), which keeps it.
    pub(crate) fn start(source: Source) -> anyhow::Result<Option<ControlSocket>> {
        let path = source.root.join(SOCKET);
        if UnixStream::connect(&path).is_ok() {
            tracing::warn!(
                target: SERVER_LOG,
                socket = %path.display(),
                "another warden answers on this data directory's control socket; not replacing it"
            );
            return Ok(None);
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("listening on {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let owner = std::fs::metadata(&source.root)?.uid();
        let source = Arc::new(source);
        let busy = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let allowed = stream
                    .peer_cred()
                    .is_ok_and(|cred| cred.uid() == owner || cred.uid() == 0);
                let (source, busy) = (source.clone(), busy.clone());
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                tokio::task::spawn_blocking(move || answer(stream, allowed, &source, &busy));
            }
        });
        Ok(Some(ControlSocket { path, task }))
    }
}

/// Answers one connection (blocking).
fn answer(mut stream: UnixStream, allowed: bool, source: &Source, busy: &AtomicBool) {
    // The answer, then the rest of what the peer sent (bounded) is read and dropped, so it
    // reads the sentence rather than a reset connection.
    let refuse = |stream: &mut UnixStream, why: &str| {
        let _ = stream.write_all(format!("error: {why}\n").as_bytes());
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = std::io::copy(&mut (&*stream).take(64 * 1024), &mut std::io::sink());
    };
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    if !allowed {
        tracing::warn!(target: SERVER_LOG, "control socket: refused a peer that does not own the data directory");
        return refuse(
            &mut stream,
            "only the data directory's owner may ask for a backup",
        );
    }
    let mut line = String::new();
    let read = std::io::BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    if read.is_err() || line.trim_end() != REQUEST {
        return refuse(
            &mut stream,
            "unknown request (this server answers `backup 1`)",
        );
    }
    if busy.swap(true, Ordering::SeqCst) {
        return refuse(
            &mut stream,
            "a backup is being taken already; try again when it ends",
        );
    }
    // Cleared however this ends (a panic included).
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::SeqCst);
        }
    }
    let _done = Done(busy);
    let _ = stream.set_read_timeout(None);
    let started = std::time::Instant::now();
    let taken = match backup::take_snapshot(source) {
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!(target: SERVER_LOG, error = %format!("{e:#}"), "backup refused");
            return refuse(&mut stream, &format!("{e:#}"));
        }
    };
    let result = stream
        .write_all(b"ok\n")
        .map_err(anyhow::Error::from)
        .and_then(|()| backup::stream_snapshot(source, taken, &mut stream));
    match result {
        Ok(summary) => tracing::info!(
            target: SERVER_LOG,
            rows = summary.rows,
            audit_records = summary.audit_records,
            ms = started.elapsed().as_millis() as u64,
            "backup taken"
        ),
        Err(e) => tracing::warn!(target: SERVER_LOG, error = %format!("{e:#}"), "backup failed"),
    }
}

/// Connects to the control socket of a server running on `data`; `None` if none runs there
/// (no socket, or one left behind by a server that stopped).
pub(super) fn connect(data: &Path) -> anyhow::Result<Option<UnixStream>> {
    let path = data.join(SOCKET);
    match UnixStream::connect(&path) {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("connecting to {}", path.display())),
    }
}

/// Asks the server for a backup and copies it into `out`.
pub(super) fn request_backup(mut stream: UnixStream, out: &mut dyn Write) -> anyhow::Result<()> {
    stream
        .write_all(format!("{REQUEST}\n").as_bytes())
        .context("asking the server for a backup")?;
    let mut reader = std::io::BufReader::new(stream);
    let mut status = String::new();
    (&mut reader)
        .take(4096)
        .read_line(&mut status)
        .context("reading the server's answer")?;
    match status.trim_end() {
        "ok" => {}
        other => match other.strip_prefix("error: ") {
            Some(why) => bail!("the server refused the backup: {why}"),
            None => bail!("the server answered the backup request with {other:?}"),
        },
    }
    std::io::copy(&mut reader, out).context("receiving the backup")?;
    Ok(())
}
