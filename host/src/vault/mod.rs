//! Encrypted credential store in sled.
//!
//! Threat: theft of the data directory must not reveal any secret, and secrets must not linger
//! in memory or leak through logs, `Debug` or errors. Every secret is sealed with
//! ChaCha20-Poly1305 under its own data key, itself wrapped under a [`MasterKey`] kept in a
//! separate 0600 file; records authenticate their metadata. Plaintext exists only inside
//! [`Secret`] (zeroized on drop, redacted in `Debug`, not `Serialize`, not `Clone`). Failures to
//! decrypt are deliberately vague ([`VaultError::DecryptionFailed`]).
//!
//! Layout:
//! - `master_key`: creating and loading the key file.
//! - `crypto`: AEAD seal/open and associated data.
//! - `record`: the stored envelope of one credential.
//!
//! Removal deletes the record; sled may keep the old (encrypted) bytes in its log until
//! compaction, which is harmless because they remain sealed under the master key.

mod crypto;
mod master_key;
mod record;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use master_key::MasterKey;

use record::StoredCredential;

/// Tree holding the credential records, keyed by name.
pub const CREDENTIALS_TREE: &str = "credentials";

/// Longest credential name, in characters (names are ASCII). Names come from API requests and
/// appear in grants, URLs and audit records; the cap keeps them from bloating any of those.
pub const MAX_NAME_LEN: usize = 128;

/// Longest username, in bytes. Request-controlled; capped so a record stays small.
pub const MAX_USERNAME_BYTES: usize = 256;

/// Largest secret, in bytes: ample for a password or an SSH private key, and stops a request
/// from filling the database (and host memory on every decryption) with one "credential".
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

/// Errors from the vault. None of them carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("master key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("master key file {0} already exists; refusing to overwrite it")]
    KeyFileExists(PathBuf),
    #[error("master key file {path} has mode {mode:o}; group/other access is refused (use 0600)")]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("master key file {0} is not a regular file")]
    KeyFileNotRegular(PathBuf),
    #[error("master key file {0} must contain exactly 32 bytes")]
    KeyFileLength(PathBuf),
    #[error("invalid credential name: {0}")]
    InvalidName(&'static str),
    #[error("invalid username: {0}")]
    InvalidUsername(&'static str),
    #[error("invalid secret: {0}")]
    InvalidSecret(&'static str),
    #[error("credential {0:?} already exists")]
    AlreadyExists(String),
    #[error("credential {0:?} changed while it was being updated; retry")]
    Conflict(String),
    #[error("credential {0:?} not found")]
    NotFound(String),
    #[error("decryption failed")]
    DecryptionFailed,
    #[error("encryption failed")]
    EncryptionFailed,
    #[error("credential record {name:?} failed its integrity check (tampered or wrong master key)")]
    CorruptRecord { name: String },
    #[error("cannot encode credential record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("vault storage error: {0}")]
    Storage(#[from] sled::Error),
}

/// What a credential is; decides how the host uses it (password auth vs public-key auth).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    Password,
    SshKey,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::SshKey => "ssh-key",
        }
    }
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is neither "password" nor "ssh-key".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown credential kind (expected \"password\" or \"ssh-key\")")]
pub struct ParseKindError;

impl FromStr for CredentialKind {
    type Err = ParseKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "password" => Ok(Self::Password),
            "ssh-key" => Ok(Self::SshKey),
            _ => Err(ParseKindError),
        }
    }
}

/// Everything about a credential except its secret; safe to show and serialize.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    pub name: String,
    pub username: String,
    pub kind: CredentialKind,
    /// Unix time in milliseconds.
    pub created_ms: u64,
}

/// Secret bytes (a password or private key): wiped on drop, never printed or serialized.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of the bytes (no copy is made).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes. Every call site is a place a secret can leak; keep them few.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// The credential store; cheap to clone.
#[derive(Clone)]
pub struct Vault {
    tree: sled::Tree,
    key: Arc<MasterKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault in `db` (tree [`CREDENTIALS_TREE`]).
    pub fn open(db: &sled::Db, key: MasterKey) -> Result<Self, VaultError> {
        Ok(Self {
            tree: db.open_tree(CREDENTIALS_TREE)?,
            key: Arc::new(key),
        })
    }

    /// Stores a new credential durably; refuses an existing name.
    pub fn add(
        &self,
        name: &str,
        username: &str,
        kind: CredentialKind,
        secret: Secret,
    ) -> Result<CredentialInfo, VaultError> {
        validate_name(name)?;
        validate_username(username)?;
        validate_secret(&secret)?;
        let info = CredentialInfo {
            name: name.to_owned(),
            username: username.to_owned(),
            kind,
            created_ms: now_ms(),
        };
        let stored = StoredCredential::seal(&self.key, &info, &secret)
            .map_err(|_| VaultError::EncryptionFailed)?;
        let bytes = serde_json::to_vec(&stored).map_err(VaultError::Encode)?;
        // Compare-and-swap from "absent" makes the duplicate check and the insert one step.
        if self
            .tree
            .compare_and_swap(name, None::<&[u8]>, Some(bytes))?
            .is_err()
        {
            return Err(VaultError::AlreadyExists(name.to_owned()));
        }
        self.tree.flush()?;
        Ok(info)
    }

    /// Replaces the credential's secret (same name, username and kind), durably and
    /// atomically: a concurrent change makes this fail rather than be lost. Keeping older
    /// versions is the versioned vault's job; this keeps only the new one.
    pub fn replace_secret(&self, name: &str, secret: Secret) -> Result<CredentialInfo, VaultError> {
        validate_name(name)?;
        validate_secret(&secret)?;
        let Some(old) = self.tree.get(name)? else {
            return Err(VaultError::NotFound(name.to_owned()));
        };
        let current = self.authenticated_info(name.as_bytes(), &old)?;
        let info = CredentialInfo {
            created_ms: now_ms(),
            ..current
        };
        let stored = StoredCredential::seal(&self.key, &info, &secret)
            .map_err(|_| VaultError::EncryptionFailed)?;
        let bytes = serde_json::to_vec(&stored).map_err(VaultError::Encode)?;
        if self
            .tree
            .compare_and_swap(name, Some(old), Some(bytes))?
            .is_err()
        {
            return Err(VaultError::Conflict(name.to_owned()));
        }
        self.tree.flush()?;
        Ok(info)
    }

    /// The credential's metadata, authenticated; `None` if there is no such credential.
    pub fn info(&self, name: &str) -> Result<Option<CredentialInfo>, VaultError> {
        validate_name(name)?;
        let Some(value) = self.tree.get(name)? else {
            return Ok(None);
        };
        self.authenticated_info(name.as_bytes(), &value).map(Some)
    }

    /// All credentials' metadata, in name order, each authenticated.
    pub fn list(&self) -> Result<Vec<CredentialInfo>, VaultError> {
        let mut infos = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item?;
            infos.push(self.authenticated_info(&key, &value)?);
        }
        Ok(infos)
    }

    /// Decrypts the credential's secret. Only the capability layer should call this.
    pub fn secret(&self, name: &str) -> Result<Secret, VaultError> {
        validate_name(name)?;
        let Some(value) = self.tree.get(name)? else {
            return Err(VaultError::NotFound(name.to_owned()));
        };
        let stored = parse(name.as_bytes(), &value).ok_or(VaultError::DecryptionFailed)?;
        stored
            .open_secret(&self.key)
            .map_err(|_| VaultError::DecryptionFailed)
    }

    /// Deletes the credential durably; `false` if it did not exist.
    pub fn remove(&self, name: &str) -> Result<bool, VaultError> {
        validate_name(name)?;
        let existed = self.tree.remove(name)?.is_some();
        if existed {
            self.tree.flush()?;
        }
        Ok(existed)
    }

    /// Parses a record and checks its metadata against the master key, so `info`/`list` never
    /// show metadata an attacker edited in the database.
    fn authenticated_info(&self, key: &[u8], value: &[u8]) -> Result<CredentialInfo, VaultError> {
        let corrupt = || VaultError::CorruptRecord {
            name: String::from_utf8_lossy(key).into_owned(),
        };
        let stored = parse(key, value).ok_or_else(corrupt)?;
        stored.unwrap_data_key(&self.key).map_err(|_| corrupt())?;
        Ok(stored.info())
    }
}

/// A record that parses and is stored under its own name (the name is also authenticated).
fn parse(key: &[u8], value: &[u8]) -> Option<StoredCredential> {
    let stored: StoredCredential = serde_json::from_slice(value).ok()?;
    (stored.name.as_bytes() == key).then_some(stored)
}

fn validate_name(name: &str) -> Result<(), VaultError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(VaultError::InvalidName("must be 1 to 128 characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(allowed) {
        return Err(VaultError::InvalidName(
            "only A-Z, a-z, 0-9, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

fn validate_username(username: &str) -> Result<(), VaultError> {
    if username.is_empty() || username.len() > MAX_USERNAME_BYTES {
        return Err(VaultError::InvalidUsername("must be 1 to 256 bytes"));
    }
    if username.chars().any(char::is_control) {
        return Err(VaultError::InvalidUsername(
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn validate_secret(secret: &Secret) -> Result<(), VaultError> {
    match secret.expose().len() {
        0 => Err(VaultError::InvalidSecret("must not be empty")),
        n if n > MAX_SECRET_BYTES => Err(VaultError::InvalidSecret("larger than 16 KiB")),
        _ => Ok(()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
