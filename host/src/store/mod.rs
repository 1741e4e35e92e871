//! The data directory: where Warden keeps its state, and the keys that guard it.
//!
//! ```text
//! DATA/            0700
//!   db/            sled database: vault, audit log, targets, …
//!   master.key     256-bit vault master key, 0600, never inside the database
//!   server.key     ed25519 key that signs audit checkpoints, 0600
//!   artifacts/     precompiled task modules, 0700
//! ```
//!
//! Threat: another local user reading keys or state. Everything is created owner-only,
//! and a key file that others can read is refused.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::vault::MasterKey;

/// Why the data directory could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// `init` found an existing data directory.
    #[error("{0} is already initialised")]
    AlreadyInitialised(PathBuf),
    /// `open` found no data directory.
    #[error("{0} is not a Warden data directory (run `warden init --data {0}` first)")]
    NotInitialised(PathBuf),
    /// A key file is readable by others or malformed.
    #[error("{path}: {why}")]
    BadKeyFile { path: PathBuf, why: String },
    /// The vault master key could not be created or loaded.
    #[error("master key: {0}")]
    MasterKey(#[from] crate::vault::VaultError),
    /// The database could not be opened (for example another process holds it).
    #[error("database: {0}")]
    Database(#[from] sled::Error),
    /// Some other filesystem error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// An opened data directory.
pub struct DataDir {
    root: PathBuf,
    /// The sled database.
    pub db: sled::Db,
    /// The vault master key.
    pub master_key: MasterKey,
    /// The server's audit-signing key.
    pub server_key: SigningKey,
}

impl DataDir {
    /// Creates a new data directory with fresh keys. Refuses an existing one.
    pub fn init(root: &Path) -> Result<Self, DataDirError> {
        if root.join("master.key").exists() || root.join("db").exists() {
            return Err(DataDirError::AlreadyInitialised(root.to_path_buf()));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        MasterKey::create(&root.join("master.key"))?;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        write_new_private(&root.join("server.key"), seed.as_ref())?;
        Self::open(root)
    }

    /// Opens an existing data directory.
    pub fn open(root: &Path) -> Result<Self, DataDirError> {
        let key_path = root.join("master.key");
        if !key_path.exists() {
            return Err(DataDirError::NotInitialised(root.to_path_buf()));
        }
        let master_key = MasterKey::load(&key_path)?;
        let server_key = load_signing_key(&root.join("server.key"))?;
        let db = sled::Config::new().path(root.join("db")).open()?;
        Ok(DataDir {
            root: root.to_path_buf(),
            db,
            master_key,
            server_key,
        })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where precompiled modules are cached.
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }
}

fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn load_signing_key(path: &Path) -> Result<SigningKey, DataDirError> {
    let bad = |why: &str| DataDirError::BadKeyFile {
        path: path.to_path_buf(),
        why: why.into(),
    };
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(bad("readable by group or others; chmod 600 it"));
    }
    let bytes = Zeroizing::new(fs::read(path)?);
    let seed: &[u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| bad("not a 32-byte key"))?;
    Ok(SigningKey::from_bytes(seed))
}
