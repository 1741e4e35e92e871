//! SFTP upload and download on one channel of a pooled connection.
//!
//! Threats: a remote file larger than the host can hold (download streams in chunks and
//! stops at the cap, never allocating past it; the advertised size is checked first), and a
//! file that is briefly readable by others while a secret is written into it (upload sets the
//! requested mode on the open handle before writing any byte, also when replacing an
//! existing file with looser permissions). Path policy (allow-lists, `..`) is the caller's;
//! this module only insists on an absolute path without NUL bytes.

use russh::Channel;
use russh::client::Msg;
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::SshError;

/// Longest remote path accepted (Linux PATH_MAX). Bounds a guest-supplied string.
pub const MAX_PATH_LEN: usize = 4096;

/// Largest upload accepted. Bounds what one call makes the host send and hold.
pub const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// Largest download cap a caller may request. Bounds host memory per call.
pub const MAX_DOWNLOAD_BYTES: u64 = 256 * 1024 * 1024;

/// Read size per request; memory beyond the result is this plus the SFTP read-ahead window.
const CHUNK: usize = 64 * 1024;

/// Permission bits an upload may set (including setuid/setgid/sticky, which the login user
/// could set with chmod anyway).
const MODE_MASK: u32 = 0o7777;

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

async fn session(
    channel: Channel<Msg>,
    request_timeout_secs: u64,
) -> Result<SftpSession, SshError> {
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| SshError::Remote(format!("starting sftp subsystem: {e}")))?;
    let sftp = SftpSession::new(channel.into_stream())
        .await
        .map_err(|e| SshError::Remote(format!("starting sftp session: {e}")))?;
    sftp.set_timeout(request_timeout_secs.max(1));
    Ok(sftp)
}

/// Writes `contents` to `path` with exactly `mode`, replacing any existing file.
pub(crate) async fn upload(
    channel: Channel<Msg>,
    request_timeout_secs: u64,
    path: &str,
    contents: &[u8],
    mode: u32,
) -> Result<u64, SshError> {
    let sftp = session(channel, request_timeout_secs).await?;
    let attrs = FileAttributes {
        permissions: Some(mode),
        ..FileAttributes::empty()
    };
    let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
    let mut file = sftp
        .open_with_flags_and_attributes(path, flags, attrs.clone())
        .await
        .map_err(|e| sftp_error(path, e))?;
    // The create-time mode is filtered by the server's umask and ignored for an existing
    // file; setting it on the handle before writing makes it exact in both cases.
    file.set_metadata(attrs)
        .await
        .map_err(|e| sftp_error(path, e))?;
    file.write_all(contents)
        .await
        .map_err(|e| io_error(path, e))?;
    file.shutdown().await.map_err(|e| io_error(path, e))?;
    let _ = sftp.close().await;
    Ok(contents.len() as u64)
}

/// Reads `path`, failing as soon as it is known to exceed `max_bytes`.
pub(crate) async fn download(
    channel: Channel<Msg>,
    request_timeout_secs: u64,
    path: &str,
    max_bytes: u64,
) -> Result<Vec<u8>, SshError> {
    let too_big =
        || SshError::InvalidArgument(format!("{path} is larger than the {max_bytes}-byte cap"));
    let cap = usize::try_from(max_bytes).map_err(|_| too_big())?;
    let sftp = session(channel, request_timeout_secs).await?;
    let mut file = sftp.open(path).await.map_err(|e| sftp_error(path, e))?;
    let meta = file.metadata().await.map_err(|e| sftp_error(path, e))?;
    if meta.size.is_some_and(|size| size > max_bytes) {
        return Err(too_big());
    }
    let mut out = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut chunk).await.map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        // The file may have grown since the size check; the cap holds regardless.
        if out.len() + n > cap {
            return Err(too_big());
        }
        reserve_capped(&mut out, n, cap);
        out.extend_from_slice(&chunk[..n]);
    }
    drop(file);
    let _ = sftp.close().await;
    Ok(out)
}

/// Grows `buf` geometrically for `extra` more bytes, but never past `cap`.
fn reserve_capped(buf: &mut Vec<u8>, extra: usize, cap: usize) {
    let needed = buf.len() + extra;
    if needed <= buf.capacity() {
        return;
    }
    let target = (buf.capacity() * 2).max(needed).max(CHUNK).min(cap);
    buf.reserve_exact(target - buf.len());
}

fn sftp_error(path: &str, e: SftpError) -> SshError {
    match e {
        SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile => {
            SshError::NotFound(format!("{path}: no such file"))
        }
        SftpError::Status(s) if s.status_code == StatusCode::PermissionDenied => {
            SshError::Remote(format!("{path}: permission denied"))
        }
        SftpError::Timeout => SshError::Timeout(format!("{path}: sftp request timed out")),
        other => SshError::Remote(format!("{path}: {other}")),
    }
}

fn io_error(path: &str, e: std::io::Error) -> SshError {
    match e.kind() {
        std::io::ErrorKind::TimedOut => {
            SshError::Timeout(format!("{path}: sftp request timed out"))
        }
        _ => SshError::Remote(format!("{path}: {e}")),
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
}
