//! Encrypted, versioned credential store, kept through [`crate::store`].
//!
//! Threat: theft of the data directory must not reveal any secret, and secrets must not linger
//! in memory or leak through logs, `Debug` or errors. Every version of every secret is sealed
//! with ChaCha20-Poly1305 under its own data key, itself wrapped under a [`MasterKey`] kept
//! outside the database (file, environment or external command); records authenticate all of
//! their metadata, including which version is current. Plaintext exists only inside
//! [`Secret`] (zeroized on drop, redacted in `Debug`, not `Serialize`, not `Clone`); version
//! metadata ([`VersionInfo`]) never carries a value. Failures to decrypt are deliberately vague
//! ([`VaultError::DecryptionFailed`]).
//!
//! Versions: an update adds a version and keeps the previous ones up to a [`Retention`]. A
//! rotation stores its new secret as a *pending* version, which [`Vault::secret`] ignores until
//! [`Vault::promote`]; a rotation that fails marks it *failed*, and a failed version is never
//! made current.
//!
//! Rekey ([`Vault::rekey`]): switches writes to the new master key, then rewraps each record's
//! data keys (never its secrets) one record at a time with compare-and-swap. Every record is
//! whole under one key at every instant, so after a crash midway each record opens with the old
//! or the new key; [`Vault::open_with_keys`] with both, then `rekey` again, finishes the job.
//!
//! Layout:
//! - `master_key`: creating and loading the key (file, environment variable, command).
//! - `crypto`: AEAD seal/open and associated data.
//! - `record`: the stored envelope of one credential and its versions (and format 1).
//! - `rekey`: re-wrapping every record under a new master key.
//! - `lease`: run-scoped, time-bounded grants to use a credential (just-in-time access).
//! - `password`: generating passwords for rotations from a policy.
//!
//! Stored rows hold only sealed data: ciphertext, wrapped data keys and authenticated
//! metadata (table [`CREDENTIALS`]; PostgreSQL sees nothing more than sled does). Removal
//! deletes the record; sled may keep the old (encrypted) bytes in its log until compaction
//! (PostgreSQL: until vacuum), which is harmless because they remain sealed under the master
//! key.

mod crypto;
pub mod lease;
mod master_key;
pub mod password;
mod record;
mod rekey;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use master_key::{MasterKey, MasterKeySource};
pub use rekey::RekeyReport;

use record::{Envelope, RecordMeta, Stored};

/// The credential records, keyed by name.
pub const CREDENTIALS: crate::store::TableDef = crate::store::TableDef {
    name: "credentials",
    columns: &[],
    columns_of: None,
};

/// Longest credential name, in characters (names are ASCII). Names come from API requests and
/// appear in grants, URLs and audit records; the cap keeps them from bloating any of those.
pub const MAX_NAME_LEN: usize = 128;

/// Longest username, in bytes. Request-controlled; capped so a record stays small.
pub const MAX_USERNAME_BYTES: usize = 256;

/// Largest secret, in bytes: ample for a password or an SSH private key, and stops a request
/// from filling the database (and host memory on every decryption) with one "credential".
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

/// Longest "created by" of a version, in bytes. Request-controlled and shown in the API and
/// audit; capped so it cannot bloat either (or the record, which every read authenticates).
pub const MAX_CREATED_BY_BYTES: usize = 256;

/// Longest reason of a version, in bytes; request-controlled, capped like
/// [`MAX_CREATED_BY_BYTES`].
pub const MAX_REASON_BYTES: usize = 1024;

/// Most versions a [`Retention`] may keep. Every read authenticates and unwraps all of a
/// record's versions, so an unbounded history would make each use of a credential slower and
/// let a stream of updates grow one record without limit.
pub const MAX_RETAINED_VERSIONS: usize = 100;

/// Most pending versions one credential may hold. A rotation that keeps failing before it
/// can mark its version failed (e.g. crashing) would otherwise pile pending versions up,
/// since retention never drops one (a pending secret may already be live on a target).
pub const MAX_PENDING_VERSIONS: usize = 4;

/// Compare-and-swap attempts before an update gives up with [`VaultError::Conflict`]. Each
/// retry recomputes the change from the record as it now is, so retrying loses nothing; the
/// cap only stops a pathological livelock.
const MAX_CAS_RETRIES: usize = 16;

/// Attribution of versions written through the unattributed calls ([`Vault::add`],
/// [`Vault::replace_secret`]) and of secrets stored before versioning existed.
pub const UNATTRIBUTED: &str = record::MIGRATED_BY;

pub(crate) use crypto::Sealed;

/// Seals bytes kept outside the vault's records (the key files a backup carries) under the
/// master key, authenticating `aad` (which names what they are, so one cannot stand for
/// another).
pub(crate) fn seal_with_master(
    key: &MasterKey,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Sealed, VaultError> {
    crypto::seal(key.bytes(), plaintext, aad).map_err(|_| VaultError::EncryptionFailed)
}

/// Opens what [`seal_with_master`] sealed; fails for another key, another `aad` or an edit.
pub(crate) fn open_with_master(
    key: &MasterKey,
    sealed: &Sealed,
    aad: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError> {
    crypto::open(key.bytes(), sealed, aad).map_err(|_| VaultError::DecryptionFailed)
}

/// Errors from the vault. None of them carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("master key file {path}: {error}")]
    KeyFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "no master key at {0}: put back the key kept apart from the data (mode 0600), or name \
         it with --master-key-file, --master-key-env or --master-key-command"
    )]
    KeyFileMissing(PathBuf),
    #[error(
        "master key file {0} cannot be read by this user: run warden as the user that owns \
         it, or hand it over with systemd's LoadCredential and --master-key-file"
    )]
    KeyFileUnreadable(PathBuf),
    #[error("master key file {0} already exists; refusing to overwrite it")]
    KeyFileExists(PathBuf),
    #[error("master key file {path} has mode {mode:o}; group/other access is refused (use 0600)")]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("master key file {0} is not a regular file")]
    KeyFileNotRegular(PathBuf),
    #[error("master key file {0} must contain exactly 32 bytes")]
    KeyFileLength(PathBuf),
    #[error("master key environment variable {var}: {reason}")]
    KeyEnv { var: String, reason: &'static str },
    #[error("master key command {program:?}: {reason}")]
    KeyCommand { program: String, reason: String },
    #[error("invalid credential name: {0}")]
    InvalidName(&'static str),
    #[error("invalid username: {0}")]
    InvalidUsername(&'static str),
    #[error("invalid secret: {0}")]
    InvalidSecret(&'static str),
    #[error("invalid version attribution: {0}")]
    InvalidAttribution(&'static str),
    #[error("credential {0:?} already exists")]
    AlreadyExists(String),
    #[error("credential {0:?} changed while it was being updated; retry")]
    Conflict(String),
    #[error("credential {0:?} not found")]
    NotFound(String),
    #[error("credential {name:?} has no version {version}")]
    VersionNotFound { name: String, version: u32 },
    #[error("version {version} of credential {name:?} is {state}, which does not allow this")]
    VersionState {
        name: String,
        version: u32,
        state: VersionState,
    },
    #[error("credential {0:?} already has the most pending versions allowed")]
    TooManyPending(String),
    #[error("rekey did not converge: records kept being written under another key; run it again")]
    RekeyIncomplete,
    #[error("decryption failed")]
    DecryptionFailed,
    #[error("encryption failed")]
    EncryptionFailed,
    #[error("credential record {name:?} failed its integrity check (tampered or wrong master key)")]
    CorruptRecord { name: String },
    #[error("cannot encode credential record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Storage(#[from] crate::store::StoreError),
}

/// What a credential is; decides how the host uses it (password auth vs public-key auth).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CredentialInfo {
    pub name: String,
    pub username: String,
    pub kind: CredentialKind,
    /// Unix time in milliseconds.
    pub created_ms: u64,
    /// An admin credential: its secret is typed only by the host for privileged operations
    /// (sudo with a password, rotation's admin), never used for a task's own unprivileged
    /// command or file transfer, because a task that runs commands as an account can take
    /// over that account's shell start-up. Fixed at creation; false for records stored
    /// before the flag existed.
    #[serde(default)]
    pub admin: bool,
}

/// What identifies a new credential ([`Vault::add_credential`]).
#[derive(Clone, Copy, Debug)]
pub struct NewCredential<'a> {
    pub name: &'a str,
    pub username: &'a str,
    pub kind: CredentialKind,
    /// See [`CredentialInfo::admin`].
    pub admin: bool,
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

/// Where a version stands in its credential's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VersionState {
    /// The one version [`Vault::secret`] returns.
    Current,
    /// A superseded version, kept for audit and recovery.
    Previous,
    /// Stored by a rotation that has not finished; may or may not be live on the target yet.
    Pending,
    /// A rotation gave up on it; never made current.
    Failed,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "previous",
            Self::Pending => "pending",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for VersionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One version's metadata (never its value); safe to show and serialize.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionInfo {
    /// 1 for the first version; increases by one per version and is never reused.
    pub version: u32,
    /// Unix time in milliseconds.
    pub created_ms: u64,
    pub created_by: String,
    pub reason: String,
    pub state: VersionState,
}

/// How many versions a credential keeps: the current one plus the newest previous or failed
/// ones, `keep` in all. Pending versions are not counted and never dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub keep: usize,
}

impl Retention {
    pub const DEFAULT_KEEP: usize = 10;

    /// `keep` clamped to `1..=MAX_RETAINED_VERSIONS`: the current version is always kept.
    fn clamped(self) -> Self {
        Self {
            keep: self.keep.clamp(1, MAX_RETAINED_VERSIONS),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep: Self::DEFAULT_KEEP,
        }
    }
}

/// The master keys a vault can open records with: `current` (which every write uses) and
/// older keys of a rekey that may not have finished.
#[derive(Clone)]
struct KeyRing {
    current: Arc<MasterKey>,
    older: Vec<Arc<MasterKey>>,
}

impl KeyRing {
    fn find(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id() == id)
            .map(|k| &**k)
    }
}

/// The credential store; cheap to clone. Clones share one key ring, so a rekey through any
/// of them switches the writes of all.
#[derive(Clone)]
pub struct Vault {
    tree: crate::store::Table,
    keys: Arc<RwLock<KeyRing>>,
    retention: Retention,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault in `db` (table [`CREDENTIALS`]).
    pub fn open(db: &crate::store::Database, key: MasterKey) -> Result<Self, VaultError> {
        Self::open_with_keys(db, key, None)
    }

    /// Opens the vault with `current` for writing and reading, and `previous` for reading
    /// records a crashed rekey left under it; run [`Vault::rekey`] with `current` to finish.
    pub fn open_with_keys(
        db: &crate::store::Database,
        current: MasterKey,
        previous: Option<MasterKey>,
    ) -> Result<Self, VaultError> {
        let ring = KeyRing {
            current: Arc::new(current),
            older: previous.map(Arc::new).into_iter().collect(),
        };
        Ok(Self {
            tree: db.table(&CREDENTIALS),
            keys: Arc::new(RwLock::new(ring)),
            retention: Retention::default(),
        })
    }

    /// Sets how many versions each credential keeps (clamped to `1..=MAX_RETAINED_VERSIONS`);
    /// applied whenever a credential is next written.
    #[must_use]
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention.clamped();
        self
    }

    /// Stores a new credential durably (version 1, unattributed); refuses an existing name.
    pub fn add(
        &self,
        name: &str,
        username: &str,
        kind: CredentialKind,
        secret: Secret,
    ) -> Result<CredentialInfo, VaultError> {
        self.add_attributed(name, username, kind, secret, UNATTRIBUTED, "created")
    }

    /// Stores a new credential durably, its first version attributed to `created_by` for
    /// `reason`; refuses an existing name.
    pub fn add_attributed(
        &self,
        name: &str,
        username: &str,
        kind: CredentialKind,
        secret: Secret,
        created_by: &str,
        reason: &str,
    ) -> Result<CredentialInfo, VaultError> {
        let new = NewCredential {
            name,
            username,
            kind,
            admin: false,
        };
        self.add_credential(new, secret, created_by, reason)
    }

    /// Stores a new credential durably, admin or not, its first version attributed to
    /// `created_by` for `reason`; refuses an existing name.
    pub fn add_credential(
        &self,
        new: NewCredential<'_>,
        secret: Secret,
        created_by: &str,
        reason: &str,
    ) -> Result<CredentialInfo, VaultError> {
        let NewCredential {
            name,
            username,
            kind,
            admin,
        } = new;
        validate_name(name)?;
        validate_username(username)?;
        validate_secret(&secret)?;
        validate_attribution(created_by, reason)?;
        let created_ms = now_ms();
        let meta = RecordMeta {
            name: name.to_owned(),
            username: username.to_owned(),
            kind,
            created_ms,
            admin,
        };
        let first = new_version(1, created_by, reason, VersionState::Current);
        let envelope =
            Envelope::new(meta, first, &secret).map_err(|_| VaultError::EncryptionFailed)?;
        let bytes = self.encode(&envelope, &self.keyring().current)?;
        // Compare-and-swap from "absent" makes the duplicate check and the insert one step.
        if !self.tree.insert_new(name, bytes)? {
            return Err(VaultError::AlreadyExists(name.to_owned()));
        }
        Ok(envelope.info())
    }

    /// Stores `secret` as a new current version (unattributed), keeping the previous ones
    /// within the retention. Same name, username and kind; `created_ms` is the new version's.
    pub fn replace_secret(&self, name: &str, secret: Secret) -> Result<CredentialInfo, VaultError> {
        validate_name(name)?;
        validate_secret(&secret)?;
        let new = NewVersion {
            secret: &secret,
            created_by: UNATTRIBUTED,
            reason: "secret replaced",
            state: VersionState::Current,
        };
        let retention = self.retention;
        self.update(name, |env| {
            push_version(env, new, retention)?;
            Ok(env.info())
        })
    }

    /// Stores `secret` as a new version that becomes current; the old current one becomes
    /// previous, and versions beyond the retention are dropped, oldest first.
    pub fn add_version(
        &self,
        name: &str,
        secret: Secret,
        created_by: &str,
        reason: &str,
    ) -> Result<VersionInfo, VaultError> {
        validate_name(name)?;
        validate_secret(&secret)?;
        validate_attribution(created_by, reason)?;
        let new = NewVersion {
            secret: &secret,
            created_by,
            reason,
            state: VersionState::Current,
        };
        let retention = self.retention;
        self.update(name, |env| push_version(env, new, retention))
    }

    /// Stores `secret` as a pending version: readable through [`Vault::secret_version`], but
    /// [`Vault::secret`] keeps returning the current one until [`Vault::promote`].
    pub fn add_pending(
        &self,
        name: &str,
        secret: Secret,
        created_by: &str,
        reason: &str,
    ) -> Result<VersionInfo, VaultError> {
        validate_name(name)?;
        validate_secret(&secret)?;
        validate_attribution(created_by, reason)?;
        let new = NewVersion {
            secret: &secret,
            created_by,
            reason,
            state: VersionState::Pending,
        };
        let retention = self.retention;
        self.update(name, |env| {
            let pending = env
                .versions
                .iter()
                .filter(|v| v.info.state == VersionState::Pending)
                .count();
            if pending >= MAX_PENDING_VERSIONS {
                return Err(VaultError::TooManyPending(env.meta.name.clone()));
            }
            push_version(env, new, retention)
        })
    }

    /// Makes a pending version current (the old current one becomes previous). Promoting the
    /// version that is already current succeeds, so a retried rotation step is harmless; any
    /// other state is refused.
    pub fn promote(&self, name: &str, version: u32) -> Result<VersionInfo, VaultError> {
        validate_name(name)?;
        let retention = self.retention;
        self.update(name, |env| {
            let state = state_of(env, version)?;
            match state {
                VersionState::Current => {}
                VersionState::Pending => {
                    set_state(env, VersionState::Current, VersionState::Previous);
                    set_version_state(env, version, VersionState::Current);
                    retain(env, retention);
                }
                VersionState::Previous | VersionState::Failed => {
                    return Err(version_state_error(env, version, state));
                }
            }
            version_info(env, version)
        })
    }

    /// Marks a pending version failed, so it can never become current. Marking an already
    /// failed version succeeds; any other state is refused.
    pub fn mark_failed(&self, name: &str, version: u32) -> Result<VersionInfo, VaultError> {
        validate_name(name)?;
        self.update(name, |env| {
            let state = state_of(env, version)?;
            match state {
                VersionState::Failed => {}
                VersionState::Pending => set_version_state(env, version, VersionState::Failed),
                VersionState::Current | VersionState::Previous => {
                    return Err(version_state_error(env, version, state));
                }
            }
            version_info(env, version)
        })
    }

    /// The credential's metadata, authenticated; `None` if there is no such credential.
    pub fn info(&self, name: &str) -> Result<Option<CredentialInfo>, VaultError> {
        validate_name(name)?;
        let Some(value) = self.tree.get(name)? else {
            return Ok(None);
        };
        Ok(Some(self.authenticated(name.as_bytes(), &value)?.info()))
    }

    /// All credentials' metadata, in name order, each authenticated.
    pub fn list(&self) -> Result<Vec<CredentialInfo>, VaultError> {
        let mut infos = Vec::new();
        for (key, value) in self.tree.all()? {
            infos.push(self.authenticated(&key, &value)?.info());
        }
        Ok(infos)
    }

    /// Every retained version's metadata, oldest first; never any value.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, VaultError> {
        validate_name(name)?;
        let Some(value) = self.tree.get(name)? else {
            return Err(VaultError::NotFound(name.to_owned()));
        };
        let envelope = self.authenticated(name.as_bytes(), &value)?;
        Ok(envelope.versions.iter().map(|v| v.info.clone()).collect())
    }

    /// Decrypts the current version's secret. Only the capability layer should call this.
    pub fn secret(&self, name: &str) -> Result<Secret, VaultError> {
        let envelope = self.decryptable(name)?;
        let current = envelope.current().ok_or(VaultError::DecryptionFailed)?;
        envelope
            .open_secret(current)
            .map_err(|_| VaultError::DecryptionFailed)
    }

    /// Decrypts one retained version's secret, whatever its state (a rotation sets a pending
    /// one on its target; a reconcile tries pending and current ones).
    pub fn secret_version(&self, name: &str, version: u32) -> Result<Secret, VaultError> {
        let envelope = self.decryptable(name)?;
        let found = envelope
            .version(version)
            .ok_or_else(|| VaultError::VersionNotFound {
                name: name.to_owned(),
                version,
            })?;
        envelope
            .open_secret(found)
            .map_err(|_| VaultError::DecryptionFailed)
    }

    /// Deletes the credential and all its versions durably; `false` if it did not exist.
    pub fn remove(&self, name: &str) -> Result<bool, VaultError> {
        validate_name(name)?;
        Ok(self.tree.remove(name)?)
    }

    fn keyring(&self) -> KeyRing {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads, changes and writes back one record under the current key, atomically: if the
    /// record changed meanwhile, the change is recomputed from the new state.
    fn update<T>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut Envelope) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        for _ in 0..MAX_CAS_RETRIES {
            let Some(old) = self.tree.get(name)? else {
                return Err(VaultError::NotFound(name.to_owned()));
            };
            let ring = self.keyring();
            let mut envelope = open_record(name.as_bytes(), &old, &ring).ok_or_else(|| {
                VaultError::CorruptRecord {
                    name: name.to_owned(),
                }
            })?;
            let result = change(&mut envelope)?;
            let bytes = self.encode(&envelope, &ring.current)?;
            if self.tree.swap(name, &old, bytes)? {
                return Ok(result);
            }
        }
        Err(VaultError::Conflict(name.to_owned()))
    }

    fn encode(&self, envelope: &Envelope, key: &MasterKey) -> Result<Vec<u8>, VaultError> {
        let stored = envelope
            .seal(key)
            .map_err(|_| VaultError::EncryptionFailed)?;
        serde_json::to_vec(&stored).map_err(VaultError::Encode)
    }

    /// Opens a record for its metadata, so `info`/`list`/`versions` never show metadata an
    /// attacker edited in the database.
    fn authenticated(&self, key: &[u8], value: &[u8]) -> Result<Envelope, VaultError> {
        open_record(key, value, &self.keyring()).ok_or_else(|| VaultError::CorruptRecord {
            name: String::from_utf8_lossy(key).into_owned(),
        })
    }

    /// Opens a record for decryption; every failure is the same vague error.
    fn decryptable(&self, name: &str) -> Result<Envelope, VaultError> {
        validate_name(name)?;
        let Some(value) = self.tree.get(name)? else {
            return Err(VaultError::NotFound(name.to_owned()));
        };
        open_record(name.as_bytes(), &value, &self.keyring()).ok_or(VaultError::DecryptionFailed)
    }
}

/// Parses and authenticates a record with whichever known key wrapped it.
fn open_record(key: &[u8], value: &[u8], ring: &KeyRing) -> Option<Envelope> {
    let stored = Stored::decode(key, value)?;
    let master = ring.find(stored.master_key_id())?;
    stored.open(master).ok()
}

fn new_version(version: u32, created_by: &str, reason: &str, state: VersionState) -> VersionInfo {
    VersionInfo {
        version,
        created_ms: now_ms(),
        created_by: created_by.to_owned(),
        reason: reason.to_owned(),
        state,
    }
}

/// Appends a version in `state` (a new current version demotes the old one), then applies
/// `retention`.
fn push_version(
    env: &mut Envelope,
    new: NewVersion<'_>,
    retention: Retention,
) -> Result<VersionInfo, VaultError> {
    let NewVersion {
        secret,
        created_by,
        reason,
        state,
    } = new;
    let info = new_version(env.next_version, created_by, reason, state);
    if state == VersionState::Current {
        set_state(env, VersionState::Current, VersionState::Previous);
    }
    env.push(info.clone(), secret)
        .map_err(|_| VaultError::EncryptionFailed)?;
    retain(env, retention);
    Ok(info)
}

/// What [`push_version`] appends; `Copy` so an update can retry with it.
#[derive(Clone, Copy)]
struct NewVersion<'a> {
    secret: &'a Secret,
    created_by: &'a str,
    reason: &'a str,
    state: VersionState,
}

fn state_of(env: &Envelope, version: u32) -> Result<VersionState, VaultError> {
    env.version(version)
        .map(|v| v.info.state)
        .ok_or_else(|| VaultError::VersionNotFound {
            name: env.meta.name.clone(),
            version,
        })
}

fn version_info(env: &Envelope, version: u32) -> Result<VersionInfo, VaultError> {
    env.version(version)
        .map(|v| v.info.clone())
        .ok_or_else(|| VaultError::VersionNotFound {
            name: env.meta.name.clone(),
            version,
        })
}

fn version_state_error(env: &Envelope, version: u32, state: VersionState) -> VaultError {
    VaultError::VersionState {
        name: env.meta.name.clone(),
        version,
        state,
    }
}

fn set_state(env: &mut Envelope, from: VersionState, to: VersionState) {
    for v in env.versions.iter_mut().filter(|v| v.info.state == from) {
        v.info.state = to;
    }
}

fn set_version_state(env: &mut Envelope, version: u32, to: VersionState) {
    for v in env
        .versions
        .iter_mut()
        .filter(|v| v.info.version == version)
    {
        v.info.state = to;
    }
}

/// Drops the oldest previous or failed versions until at most `retention.keep` non-pending
/// versions remain. The current version and pending ones are never dropped.
fn retain(env: &mut Envelope, retention: Retention) {
    let counted = env
        .versions
        .iter()
        .filter(|v| v.info.state != VersionState::Pending)
        .count();
    let mut excess = counted.saturating_sub(retention.keep);
    env.versions.retain(|v| {
        let droppable = matches!(v.info.state, VersionState::Previous | VersionState::Failed);
        if excess > 0 && droppable {
            excess -= 1;
            return false;
        }
        true
    });
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

fn validate_attribution(created_by: &str, reason: &str) -> Result<(), VaultError> {
    if created_by.is_empty() || created_by.len() > MAX_CREATED_BY_BYTES {
        return Err(VaultError::InvalidAttribution(
            "created_by must be 1 to 256 bytes",
        ));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(VaultError::InvalidAttribution(
            "reason must be at most 1024 bytes",
        ));
    }
    // Both end up in API output and audit lines; control characters could forge either.
    if created_by
        .chars()
        .chain(reason.chars())
        .any(char::is_control)
    {
        return Err(VaultError::InvalidAttribution(
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
