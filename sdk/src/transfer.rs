//! Files on targets over SFTP, within the path prefixes the run's grant allows.

use crate::Error;
use crate::bindings::warden::task::transfer as raw;
use crate::credentials::Credential;

/// Writes `contents` to the absolute `path` on the target with permission bits `mode`.
///
/// ```no_run
/// use warden_sdk::{credentials, transfer};
/// let cred = credentials::acquire("web-admin")?;
/// transfer::upload("web-1", &cred, "/etc/motd", b"maintenance tonight\n", 0o644)?;
/// # Ok::<(), warden_sdk::Error>(())
/// ```
pub fn upload(
    target: &str,
    credential: &Credential,
    path: &str,
    contents: &[u8],
    mode: u32,
) -> Result<u64, Error> {
    raw::upload(target, credential, path, contents, mode)
}

/// Reads the file at the absolute `path` on the target.
///
/// ```no_run
/// use warden_sdk::{credentials, transfer};
/// let cred = credentials::acquire("web-admin")?;
/// let log = transfer::download("web-1", &cred, "/var/log/syslog")?;
/// println!("{} bytes", log.len());
/// # Ok::<(), warden_sdk::Error>(())
/// ```
pub fn download(target: &str, credential: &Credential, path: &str) -> Result<Vec<u8>, Error> {
    raw::download(target, credential, path)
}
