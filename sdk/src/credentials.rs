//! Credential handles. A handle names a vault credential; the secret stays on the host.

use crate::Error;
use crate::bindings::warden::task::credentials as raw;
pub use crate::bindings::warden::task::credentials::{Credential, CredentialKind};

/// Acquires a handle to the named credential, if the run's grant allows it.
///
/// ```no_run
/// let admin = warden_sdk::credentials::acquire("web-admin")?;
/// println!("acting as {}", admin.username());
/// # Ok::<(), warden_sdk::Error>(())
/// ```
pub fn acquire(name: &str) -> Result<Credential, Error> {
    raw::acquire(name)
}
