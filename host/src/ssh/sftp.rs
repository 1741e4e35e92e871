//! SFTP upload and download on one channel of a pooled connection, acting only on paths the
//! target itself resolved.
//!
//! Threats, and what stops them:
//! - A path inside a granted prefix that names a file outside it through a symbolic link
//!   (`/srv/app/link -> /etc`, a link as the final component, `..` in a link's target, a
//!   chain of links, a relative link). A transfer takes two steps on one SFTP session:
//!   [`resolve`] asks the target for the `realpath` of the parent directory, `lstat`s the
//!   final component (a link, a directory or a special file is refused) and returns the
//!   resolved path for the caller to authorise; only then does [`Resolved::download`] or
//!   [`Resolved::upload`] act, on that resolved path, re-checking it first.
//! - An upload writing through a link. The final name is never opened: a fresh temporary
//!   file is created in the resolved directory (exclusive create, so even a link planted
//!   under the temporary name is not followed; random name; the requested mode set on the
//!   handle before any byte is written), then renamed over the final name
//!   (`posix-rename@openssh.com`, atomic). A rename replaces a link planted as the final name
//!   and never follows it; a hard link to the old file keeps the old contents.
//! - A download of a FIFO (opening it would hang the SFTP server) or a device: refused by
//!   `lstat` before anything is opened. The opened handle's `fstat`, and a second `lstat` of
//!   the path, must agree with the first (a regular file, same owner, group and mode).
//! - A remote file larger than the host can hold: the advertised size is checked first and
//!   the download stops at the cap, never allocating past it.
//!
//! What remains (SFTP v3 has no `openat`, no `O_NOFOLLOW`, no inode numbers):
//! - A race by a concurrent process of the same account that swaps a directory of the
//!   resolved path for a link between the check and the open or rename. Every step re-checks
//!   (the directory's `realpath` before acting and again before the rename; `lstat` and
//!   `fstat` must agree), which narrows the window to about one round trip but cannot close
//!   it, and a swap to a file with the same owner, group and mode is not detected. Such a
//!   process needs to run commands as that account at the same time, and what it can reach
//!   is what the account can reach.
//! - Hard links: a hard link inside the prefix to a file elsewhere is that file, and SFTP v3
//!   reports no link count. Linux's `fs.protected_hardlinks` (on by default) lets an account
//!   link only files it owns or can read and write, so a link reaches nothing the account
//!   could not already read; uploads replace the name and never write through a link.
//! - Bind mounts are the target administrator's: a path is judged in the mount namespace the
//!   SFTP server sees.
//! - Replacing a file makes the login account its owner and needs write access to its
//!   directory; a file that is writable only through its own permissions cannot be replaced.

use rand::Rng;
use russh::Channel;
use russh::client::Msg;
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};

use super::SshError;

/// Longest remote path accepted (Linux PATH_MAX). Bounds a guest-supplied string.
pub const MAX_PATH_LEN: usize = 4096;

/// Largest upload accepted. Bounds what one call makes the host send and hold.
pub const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// Largest download cap a caller may request. Bounds host memory per call.
pub const MAX_DOWNLOAD_BYTES: u64 = 256 * 1024 * 1024;

/// Read size per request (OpenSSH serves up to 255 KiB); memory beyond the result is one chunk.
const READ_CHUNK: usize = 64 * 1024;

/// Write size per request, and how many writes are in flight at once.
const WRITE_CHUNK: usize = 32 * 1024;
const WRITES_IN_FLIGHT: usize = 8;

/// Permission bits an upload may set (including setuid/setgid/sticky, which the login user
/// could set with chmod anyway).
const MODE_MASK: u32 = 0o7777;

const POSIX_RENAME: &str = "posix-rename@openssh.com";
const FSYNC: &str = "fsync@openssh.com";

/// What a transfer will do with the resolved path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Download: the path must be an existing regular file.
    Read,
    /// Upload: the path must be absent or a regular file, which is replaced.
    Write,
}

pub(crate) fn validate_path(path: &str) -> Result<(), SshError> {
    let bad = |m: &str| Err(SshError::InvalidArgument(format!("remote path: {m}")));
    if !path.starts_with('/') {
        return bad("must be absolute");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("too long");
    }
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    Ok(())
}

pub(crate) fn validate_upload(path: &str, contents: &[u8], mode: u32) -> Result<(), SshError> {
    validate_path(path)?;
    if contents.len() > MAX_UPLOAD_BYTES {
        return Err(SshError::InvalidArgument(format!(
            "upload is larger than {MAX_UPLOAD_BYTES} bytes"
        )));
    }
    if mode & !MODE_MASK != 0 {
        return Err(SshError::InvalidArgument(format!(
            "mode {mode:o} has bits outside 7777"
        )));
    }
    Ok(())
}

pub(crate) fn validate_download(path: &str, max_bytes: u64) -> Result<(), SshError> {
    validate_path(path)?;
    if max_bytes > MAX_DOWNLOAD_BYTES {
        return Err(SshError::InvalidArgument(format!(
            "download cap is larger than {MAX_DOWNLOAD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A path as the target resolved it, on the SFTP session that resolved it.
pub(crate) struct Resolved {
    sftp: RawSftpSession,
    posix_rename: bool,
    fsync: bool,
    /// The parent directory's `realpath`.
    dir: String,
    /// `dir` joined with the requested final component.
    path: String,
    /// The final component's `lstat` at resolution; `None` if it did not exist.
    seen: Option<FileAttributes>,
}

/// Starts SFTP on `channel` and resolves `path` for `access` (see the module docs).
pub(crate) async fn resolve(
    channel: Channel<Msg>,
    request_timeout_secs: u64,
    path: &str,
    access: Access,
) -> Result<Resolved, SshError> {
    validate_path(path)?;
    let (parent, name) = split(path)?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| SshError::Remote(format!("starting sftp subsystem: {e}")))?;
    let sftp = RawSftpSession::new(channel.into_stream());
    sftp.set_timeout(request_timeout_secs.max(1));
    let version = sftp
        .init()
        .await
        .map_err(|e| SshError::Remote(format!("starting sftp session: {e}")))?;
    let has = |ext: &str| version.extensions.get(ext).is_some_and(|v| v == "1");
    let (posix_rename, fsync) = (has(POSIX_RENAME), has(FSYNC));
    let dir = real_dir(&sftp, parent).await?;
    let path = join(&dir, name);
    validate_path(&path)?;
    let seen = lstat(&sftp, &path).await?;
    check_kind(&path, seen.as_ref(), access)?;
    Ok(Resolved {
        sftp,
        posix_rename,
        fsync,
        dir,
        path,
        seen,
    })
}

impl Resolved {
    /// The resolved path: the one to authorise, and the only one acted on.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Reads the file, failing as soon as it is known to exceed `max_bytes`.
    pub(crate) async fn download(&self, max_bytes: u64) -> Result<Vec<u8>, SshError> {
        let seen = self.seen.as_ref().ok_or_else(|| not_found(&self.path))?;
        let cap = usize::try_from(max_bytes).map_err(|_| self.too_big(max_bytes))?;
        if seen.size.is_some_and(|size| size > max_bytes) {
            return Err(self.too_big(max_bytes));
        }
        self.recheck_dir().await?;
        let handle = self
            .sftp
            .open(&self.path, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|e| sftp_error(&self.path, e))?
            .handle;
        let result = self.read_checked(&handle, seen, cap, max_bytes).await;
        let _ = self.sftp.close(handle).await;
        result
    }

    async fn read_checked(
        &self,
        handle: &str,
        seen: &FileAttributes,
        cap: usize,
        max_bytes: u64,
    ) -> Result<Vec<u8>, SshError> {
        let opened = self
            .sftp
            .fstat(handle)
            .await
            .map_err(|e| sftp_error(&self.path, e))?
            .attrs;
        let again = lstat(&self.sftp, &self.path).await?;
        if !same_file(seen, &opened) || !again.as_ref().is_some_and(|a| same_file(seen, a)) {
            return Err(changed(&self.path));
        }
        if opened.size.is_some_and(|size| size > max_bytes) {
            return Err(self.too_big(max_bytes));
        }
        let mut out = Vec::new();
        loop {
            let offset = out.len() as u64;
            let data = match self.sftp.read(handle, offset, READ_CHUNK as u32).await {
                Ok(data) => data.data,
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break,
                Err(e) => return Err(sftp_error(&self.path, e)),
            };
            if data.is_empty() {
                break;
            }
            // The file may have grown since the size check; the cap holds regardless.
            if out.len() + data.len() > cap {
                return Err(self.too_big(max_bytes));
            }
            reserve_capped(&mut out, data.len(), cap);
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    /// Writes `contents` with exactly `mode` to a new temporary file next to the path, then
    /// renames it over the path.
    pub(crate) async fn upload(&self, contents: &[u8], mode: u32) -> Result<u64, SshError> {
        validate_upload(&self.path, contents, mode)?;
        self.recheck_dir().await?;
        let temp = join(&self.dir, &temp_name());
        let attrs = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        // EXCLUDE is O_EXCL: the open fails on any existing name, a link included.
        let flags = OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE;
        let handle = self
            .sftp
            .open(&temp, flags, attrs)
            .await
            .map_err(|e| sftp_error(&self.path, e))?
            .handle;
        let written = self.fill(&handle, contents, mode).await;
        let closed = self.sftp.close(handle).await;
        let result = match (written, closed) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(sftp_error(&self.path, e)),
            (Ok(()), Ok(_)) => self.replace(&temp).await,
        };
        if result.is_err() {
            let _ = self.sftp.remove(&temp).await;
        }
        result.map(|()| contents.len() as u64)
    }

    async fn fill(&self, handle: &str, contents: &[u8], mode: u32) -> Result<(), SshError> {
        use futures::StreamExt;
        use futures::stream::FuturesUnordered;
        let e = |e: SftpError| sftp_error(&self.path, e);
        // The create-time mode is filtered by the server's umask (never looser than asked);
        // setting it on the handle before writing makes it exact.
        let exact = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        self.sftp.fsetstat(handle, exact).await.map_err(e)?;
        // Up to WRITES_IN_FLIGHT writes at once, each at its own offset.
        let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();
        let mut offset = 0u64;
        for chunk in contents.chunks(WRITE_CHUNK) {
            in_flight.push(self.sftp.write(handle, offset, chunk.to_vec()));
            offset += chunk.len() as u64;
            if in_flight.len() >= WRITES_IN_FLIGHT
                && let Some(done) = in_flight.next().await
            {
                done.map_err(e)?;
            }
        }
        while let Some(done) = in_flight.next().await {
            done.map_err(e)?;
        }
        let attrs = self.sftp.fstat(handle).await.map_err(e)?.attrs;
        let complete = kind(&attrs) == Kind::Regular
            && attrs.size == Some(contents.len() as u64)
            && attrs.permissions.map(|p| p & MODE_MASK) == Some(mode);
        if !complete {
            return Err(SshError::Remote(format!(
                "{}: the uploaded file does not have the size and mode written",
                self.path
            )));
        }
        if self.fsync {
            self.sftp.fsync(handle).await.map_err(e)?;
        }
        Ok(())
    }

    /// Renames `temp` over the path. A link or file now at the path is replaced, never
    /// followed; a directory makes the rename fail.
    async fn replace(&self, temp: &str) -> Result<(), SshError> {
        self.recheck_dir().await?;
        let e = |e| sftp_error(&self.path, e);
        if self.posix_rename {
            let mut data = Vec::new();
            for s in [temp, self.path.as_str()] {
                data.extend_from_slice(&(s.len() as u32).to_be_bytes());
                data.extend_from_slice(s.as_bytes());
            }
            return match self.sftp.extended(POSIX_RENAME, data).await.map_err(e)? {
                Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
                Packet::Status(s) => Err(e(SftpError::Status(s))),
                _ => Err(SshError::Remote(format!(
                    "{}: odd reply to rename",
                    self.path
                ))),
            };
        }
        // Plain SFTP rename refuses an existing target, so the old name goes first: not
        // atomic, but removing a name never follows it.
        match lstat(&self.sftp, &self.path).await? {
            Some(a) if kind(&a) == Kind::Dir => return Err(is_dir(&self.path)),
            Some(_) => {
                self.sftp.remove(&self.path).await.map_err(e)?;
            }
            None => {}
        }
        self.sftp.rename(temp, &self.path).await.map_err(e)?;
        Ok(())
    }

    /// The directory must still resolve to what was checked (no component swapped for a
    /// link since).
    async fn recheck_dir(&self) -> Result<(), SshError> {
        if real_dir(&self.sftp, &self.dir).await? != self.dir {
            return Err(changed(&self.path));
        }
        Ok(())
    }

    fn too_big(&self, max_bytes: u64) -> SshError {
        SshError::InvalidArgument(format!(
            "{} is larger than the {max_bytes}-byte cap",
            self.path
        ))
    }
}

/// Splits an absolute path into its parent and a final component that names a file.
fn split(path: &str) -> Result<(&str, &str), SshError> {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    if matches!(name, "" | "." | "..") {
        return Err(SshError::InvalidArgument(format!(
            "remote path {path} does not name a file"
        )));
    }
    Ok((if parent.is_empty() { "/" } else { parent }, name))
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// An absolute path with no empty, `.` or `..` component (what `realpath` must return).
fn is_canonical(path: &str) -> bool {
    path == "/"
        || (path.starts_with('/') && path[1..].split('/').all(|c| !matches!(c, "" | "." | "..")))
}

/// The target's `realpath` of `dir`, which must be an existing directory.
async fn real_dir(sftp: &RawSftpSession, dir: &str) -> Result<String, SshError> {
    let name = sftp.realpath(dir).await.map_err(|e| sftp_error(dir, e))?;
    let real = name
        .files
        .into_iter()
        .next()
        .map(|f| f.filename)
        .filter(|p| is_canonical(p) && p.len() <= MAX_PATH_LEN)
        .ok_or_else(|| SshError::Remote(format!("{dir}: the server's realpath is unusable")))?;
    match lstat(sftp, &real).await? {
        Some(a) if kind(&a) == Kind::Dir => Ok(real),
        Some(_) => Err(SshError::InvalidArgument(format!(
            "{dir} is not a directory"
        ))),
        None => Err(not_found(&real)),
    }
}

/// `lstat` (never follows a link); `None` when nothing has that name.
async fn lstat(sftp: &RawSftpSession, path: &str) -> Result<Option<FileAttributes>, SshError> {
    match sftp.lstat(path).await {
        Ok(attrs) => Ok(Some(attrs.attrs)),
        Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(None),
        Err(e) => Err(sftp_error(path, e)),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Regular,
    Dir,
    Symlink,
    Special(&'static str),
    Unknown,
}

/// The file type from `st_mode`. (russh-sftp's `is_regular` tests single bits, which a
/// link's and a socket's type also contain.)
fn kind(attrs: &FileAttributes) -> Kind {
    match attrs.permissions.map(|p| p & 0o170000) {
        Some(0o100000) => Kind::Regular,
        Some(0o040000) => Kind::Dir,
        Some(0o120000) => Kind::Symlink,
        Some(0o010000) => Kind::Special("a FIFO"),
        Some(0o020000) => Kind::Special("a character device"),
        Some(0o060000) => Kind::Special("a block device"),
        Some(0o140000) => Kind::Special("a socket"),
        _ => Kind::Unknown,
    }
}

fn check_kind(path: &str, seen: Option<&FileAttributes>, access: Access) -> Result<(), SshError> {
    let refuse = |what: &str| Err(SshError::InvalidArgument(format!("{path} is {what}")));
    match seen.map(kind) {
        None if access == Access::Write => Ok(()),
        None => Err(not_found(path)),
        Some(Kind::Regular) => Ok(()),
        Some(Kind::Symlink) => {
            refuse("a symbolic link; transfers never follow a link as the final component")
        }
        Some(Kind::Dir) => Err(is_dir(path)),
        Some(Kind::Special(what)) => refuse(&format!("{what}, not a regular file")),
        Some(Kind::Unknown) => Err(SshError::Remote(format!(
            "{path}: the server did not report the file type"
        ))),
    }
}

/// Same regular file as far as SFTP v3 can tell: type, owner, group and mode. (Size and
/// times are left out: a log being appended to changes them legitimately.)
fn same_file(a: &FileAttributes, b: &FileAttributes) -> bool {
    kind(a) == Kind::Regular
        && kind(b) == Kind::Regular
        && (a.uid, a.gid, a.permissions) == (b.uid, b.gid, b.permissions)
}

fn temp_name() -> String {
    let nonce: [u8; 16] = rand::thread_rng().r#gen();
    format!(".warden-upload-{}", hex::encode(nonce))
}

fn not_found(path: &str) -> SshError {
    SshError::NotFound(format!("{path}: no such file"))
}

fn is_dir(path: &str) -> SshError {
    SshError::InvalidArgument(format!("{path} is a directory"))
}

fn changed(path: &str) -> SshError {
    SshError::Remote(format!(
        "{path} changed on the target while it was being checked; nothing was transferred"
    ))
}

/// Grows `buf` geometrically for `extra` more bytes, but never past `cap`.
fn reserve_capped(buf: &mut Vec<u8>, extra: usize, cap: usize) {
    let needed = buf.len() + extra;
    if needed <= buf.capacity() {
        return;
    }
    let target = (buf.capacity() * 2).max(needed).max(READ_CHUNK).min(cap);
    buf.reserve_exact(target - buf.len());
}

fn sftp_error(path: &str, e: SftpError) -> SshError {
    match e {
        SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile => not_found(path),
        SftpError::Status(s) if s.status_code == StatusCode::PermissionDenied => {
            SshError::Remote(format!("{path}: permission denied"))
        }
        SftpError::Timeout => SshError::Timeout(format!("{path}: sftp request timed out")),
        other => SshError::Remote(format!("{path}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_absolute_path_without_nul() {
        assert!(validate_path("/etc/motd").is_ok());
        for bad in ["", "etc/motd", "./x", "/a\0b"] {
            assert!(
                matches!(validate_path(bad), Err(SshError::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(matches!(
            validate_path(&long),
            Err(SshError::InvalidArgument(_))
        ));
    }

    #[test]
    fn rejects_mode_bits_outside_permissions() {
        assert!(validate_upload("/x", b"", 0o4755).is_ok());
        assert!(matches!(
            validate_upload("/x", b"", 0o100644),
            Err(SshError::InvalidArgument(_))
        ));
    }

    #[test]
    fn rejects_download_cap_over_maximum() {
        assert!(validate_download("/x", MAX_DOWNLOAD_BYTES).is_ok());
        assert!(matches!(
            validate_download("/x", MAX_DOWNLOAD_BYTES + 1),
            Err(SshError::InvalidArgument(_))
        ));
    }

    #[test]
    fn buffer_growth_never_exceeds_cap() {
        let cap = 100_000;
        let mut buf = Vec::new();
        for _ in 0..3 {
            reserve_capped(&mut buf, 30_000, cap);
            buf.extend_from_slice(&[0u8; 30_000]);
            assert!(buf.capacity() <= cap + 64, "capacity {}", buf.capacity());
        }
    }

    #[test]
    fn splits_into_parent_and_a_file_name() {
        assert_eq!(split("/etc/motd").ok(), Some(("/etc", "motd")));
        assert_eq!(split("/motd").ok(), Some(("/", "motd")));
        for bad in ["/", "/etc/", "/etc/.", "/etc/.."] {
            assert!(split(bad).is_err(), "{bad}");
        }
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/srv/app", "x"), "/srv/app/x");
    }

    #[test]
    fn canonical_paths_have_no_dot_or_empty_components() {
        for good in ["/", "/etc", "/srv/app/x"] {
            assert!(is_canonical(good), "{good}");
        }
        for bad in ["", "etc", "/etc/", "//etc", "/srv/../etc", "/srv/./x"] {
            assert!(!is_canonical(bad), "{bad}");
        }
    }

    #[test]
    fn file_type_comes_from_all_type_bits() {
        let with = |mode| FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        assert_eq!(kind(&with(0o100644)), Kind::Regular);
        assert_eq!(kind(&with(0o120777)), Kind::Symlink);
        assert_eq!(kind(&with(0o140755)), Kind::Special("a socket"));
        assert_eq!(kind(&with(0o010644)), Kind::Special("a FIFO"));
        assert_eq!(kind(&with(0o060660)), Kind::Special("a block device"));
        assert_eq!(kind(&FileAttributes::empty()), Kind::Unknown);
        assert!(check_kind("/x", None, Access::Write).is_ok());
        assert!(matches!(
            check_kind("/x", None, Access::Read),
            Err(SshError::NotFound(_))
        ));
        let link = with(0o120777);
        assert!(check_kind("/x", Some(&link), Access::Write).is_err());
    }
}
