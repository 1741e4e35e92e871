//! Where Warden keeps its state: the storage layer ([`Database`], one interface over the sled
//! and PostgreSQL backends) and the data directory with the keys that guard it.
//!
//! Layout: `table` (the interface: tables, conditional batches, audit rows), `sled_backend`
//! and `sled_audit` (embedded), `postgres/` (PostgreSQL: pool, migrations, tables, audit),
//! `rekey` (replacing the master key file). No `sled::` or SQL appears outside this module.
//!
//! ```text
//! DATA/            0700
//!   db/            sled database: vault, audit log, targets, … (absent when the state is
//!                  in PostgreSQL: `--database postgres://…`; the keys stay here either way)
//!   master.key     256-bit vault master key, 0600, never inside the database (default
//!                  source; an environment variable or a command may supply it instead)
//!   master.key.new only while `warden vault rekey` runs: the key taking over
//!   server.key     ed25519 key that signs audit checkpoints, 0600
//!   artifacts/     precompiled task modules, 0700
//! ```
//!
//! Threat: another local user reading keys or state. Everything is created owner-only,
//! and a key file that others can read is refused. Opening also checks that the master key
//! opens every vault record, so a wrong or retired key stops the server at startup instead
//! of failing each credential use later.
//!

pub mod catalog;
pub mod copy;
pub mod postgres;
mod rekey;
mod sled_audit;
mod sled_backend;
mod table;

#[cfg(test)]
mod conformance_tests;

pub use rekey::rekey_master_key;
pub use sled_audit::{
    CHECKPOINT_KEY as AUDIT_CHECKPOINT_KEY, META as AUDIT_META, RECORDS as AUDIT_RECORDS,
};
pub use sled_backend::SledBackend;
pub use table::{
    AuditBatch, AuditQuery, AuditRow, AuditTip, Backend, Batch, ColumnValue, Database, Expect, Op,
    Rows, Scan, Seal, Select, StoreError, Table, TableDef,
};

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::vault::{MasterKey, MasterKeySource, Vault, VaultError};

/// The master key file's name inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// The file holding the new master key while a rekey is under way.
pub const NEW_MASTER_KEY_FILE: &str = "master.key.new";

/// The server's audit-signing key file; its presence marks an initialised data directory.
const SERVER_KEY_FILE: &str = "server.key";

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
    /// The vault master key could not be created or loaded (the vault error names it).
    #[error(transparent)]
    MasterKey(#[from] crate::vault::VaultError),
    /// The master key does not open a vault record: a wrong or retired key (or a tampered
    /// record).
    #[error(
        "the master key does not open credential {name:?}: wrong or retired master key, or \
         a tampered record"
    )]
    WrongMasterKey { name: String },
    /// A `warden vault rekey` stopped midway; the vault needs both keys until it finishes.
    #[error(
        "{0} exists: a master key rekey was interrupted; run `warden vault rekey` again to \
         finish it"
    )]
    InterruptedRekey(PathBuf),
    /// A rekey needs the key in the data directory's file (it writes the new key there).
    #[error("rekey works with the master key file only, not with {0}")]
    RekeyNeedsKeyFile(&'static str),
    /// Another process (a running `warden serve`) holds the embedded database.
    #[error(
        "{0} is in use by another warden process; stop it or use another --data (`warden \
         backup` asks a running server for its snapshot)"
    )]
    InUse(PathBuf),
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] StoreError),
    /// The data directory keeps its state in an external database, but none was given.
    #[error(
        "{0} keeps its state in PostgreSQL: pass --database postgres://… (or set \
         WARDEN_DATABASE_URL)"
    )]
    NeedsDatabaseUrl(PathBuf),
    /// Some other filesystem error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Which database holds the state: sled inside the data directory (the default) or a
/// PostgreSQL server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DatabaseLocation {
    #[default]
    Embedded,
    /// A `postgres://` URL (it may carry a password: never print it whole).
    Postgres(String),
}

/// The environment variable naming the database when `--database` is not given.
pub const DATABASE_URL_ENV: &str = "WARDEN_DATABASE_URL";

impl DatabaseLocation {
    /// From the `--database` flag, else [`DATABASE_URL_ENV`], else embedded.
    pub fn from_flag(flag: Option<&str>) -> Self {
        let url = flag
            .map(str::to_owned)
            .or_else(|| std::env::var(DATABASE_URL_ENV).ok())
            .filter(|u| !u.trim().is_empty());
        match url {
            Some(url) => DatabaseLocation::Postgres(url),
            None => DatabaseLocation::Embedded,
        }
    }
}

/// The file in a data directory whose state lives in PostgreSQL (so opening it without
/// `--database` is a clear error, not a fresh empty sled database).
const EXTERNAL_DATABASE_MARKER: &str = "database";

/// An opened data directory.
pub struct DataDir {
    root: PathBuf,
    /// The database (sled under `db/`, or PostgreSQL).
    pub db: Database,
    /// The vault master key.
    pub master_key: MasterKey,
    /// The server's audit-signing key.
    pub server_key: SigningKey,
}

impl DataDir {
    /// Creates a new data directory with fresh keys (the master key in `master.key`).
    /// Refuses an existing one.
    pub fn init(root: &Path) -> Result<Self, DataDirError> {
        Self::init_with(root, &Self::default_key_source(root))
    }

    /// Creates a new data directory. A [`MasterKeySource::File`] gets a fresh key file; an
    /// environment variable or command must already supply a key, which is checked.
    pub fn init_with(root: &Path, source: &MasterKeySource) -> Result<Self, DataDirError> {
        Self::init_at(root, source, &DatabaseLocation::Embedded)
    }

    /// Creates a new data directory whose state lives at `location` (for PostgreSQL: the
    /// schema is created; the keys stay in `root`).
    pub fn init_at(
        root: &Path,
        source: &MasterKeySource,
        location: &DatabaseLocation,
    ) -> Result<Self, DataDirError> {
        if root.join(SERVER_KEY_FILE).exists()
            || root.join(MASTER_KEY_FILE).exists()
            || root.join("db").exists()
        {
            return Err(DataDirError::AlreadyInitialised(root.to_path_buf()));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        match source {
            MasterKeySource::File(path) => drop(MasterKey::create(path)?),
            other => drop(other.load()?),
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        write_new_private(&root.join(SERVER_KEY_FILE), seed.as_ref())?;
        if let DatabaseLocation::Postgres(_) = location {
            write_new_private(
                &root.join(EXTERNAL_DATABASE_MARKER),
                b"postgres: pass --database or WARDEN_DATABASE_URL\n",
            )?;
        }
        Self::open_at(root, source, location)
    }

    /// Opens an existing data directory with the master key in its `master.key`.
    pub fn open(root: &Path) -> Result<Self, DataDirError> {
        Self::open_with(root, &Self::default_key_source(root))
    }

    /// Opens an existing data directory with the master key from `source`. Refuses a key
    /// file others may access, a key that does not open every vault record, and a data
    /// directory whose rekey was interrupted.
    pub fn open_with(root: &Path, source: &MasterKeySource) -> Result<Self, DataDirError> {
        Self::open_at(root, source, &DatabaseLocation::Embedded)
    }

    /// Opens an existing data directory whose state lives at `location`.
    pub fn open_at(
        root: &Path,
        source: &MasterKeySource,
        location: &DatabaseLocation,
    ) -> Result<Self, DataDirError> {
        if !root.join(SERVER_KEY_FILE).exists() {
            return Err(DataDirError::NotInitialised(root.to_path_buf()));
        }
        let pending = root.join(NEW_MASTER_KEY_FILE);
        if pending.exists() {
            return Err(DataDirError::InterruptedRekey(pending));
        }
        let master_key = source.load()?;
        let server_key = load_signing_key(&root.join(SERVER_KEY_FILE))?;
        let db = open_database(root, location)?;
        check_key_opens_vault(&db, &master_key)?;
        Ok(DataDir {
            root: root.to_path_buf(),
            db,
            master_key,
            server_key,
        })
    }

    /// The default master key source: the `master.key` file in `root`.
    pub fn default_key_source(root: &Path) -> MasterKeySource {
        MasterKeySource::File(root.join(MASTER_KEY_FILE))
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

/// Opens the database of the data directory at `root`.
pub fn open_database(root: &Path, location: &DatabaseLocation) -> Result<Database, DataDirError> {
    match location {
        DatabaseLocation::Embedded => {
            if root.join(EXTERNAL_DATABASE_MARKER).exists() {
                return Err(DataDirError::NeedsDatabaseUrl(root.to_path_buf()));
            }
            let backend = SledBackend::open_exclusive(&root.join("db")).map_err(|e| match e {
                sled_backend::OpenFailure::InUse => DataDirError::InUse(root.to_path_buf()),
                sled_backend::OpenFailure::Store(e) => DataDirError::Database(e),
            })?;
            Ok(Database::from_backend(std::sync::Arc::new(backend)))
        }
        DatabaseLocation::Postgres(url) => {
            let backend = postgres::PgBackend::connect(url)?;
            Ok(Database::from_backend(std::sync::Arc::new(backend)))
        }
    }
}

/// Marks a new data directory whose state lives in PostgreSQL (as `init` does), so opening
/// it without `--database` is a clear error.
pub fn mark_external_database(root: &Path) -> Result<(), DataDirError> {
    Ok(write_new_private(
        &root.join(EXTERNAL_DATABASE_MARKER),
        b"postgres: pass --database or WARDEN_DATABASE_URL\n",
    )?)
}

/// The audit-signing key file's name inside the data directory (`warden backup` carries it,
/// sealed under the master key).
pub const SERVER_KEY_FILE_NAME: &str = SERVER_KEY_FILE;

/// Writes a new owner-only file (refusing to replace one) and syncs it.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_new_private(path, bytes)
}

/// Authenticates every vault record with `key` (metadata only; no secret is decrypted).
pub fn check_key_opens_vault(db: &Database, key: &MasterKey) -> Result<(), DataDirError> {
    let vault = Vault::open(db, key.duplicate())?;
    match vault.list() {
        Ok(_) => Ok(()),
        Err(VaultError::CorruptRecord { name }) => Err(DataDirError::WrongMasterKey { name }),
        Err(e) => Err(e.into()),
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

/// Opens the sled database at `path` in a test that just dropped its last handle: sled's
/// flusher thread lets go of the file lock shortly after, so this retries (bounded, 10 s).
#[cfg(test)]
pub(crate) fn reopen_after_drop(path: &std::path::Path) -> Database {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledBackend::open(path) {
            Ok(backend) => return Database::from_backend(std::sync::Arc::new(backend)),
            Err(e) if std::time::Instant::now() > deadline => panic!("cannot reopen: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// A [`Database`] over an open sled database, for tests that also read or tamper with the
/// raw trees.
#[cfg(test)]
pub(crate) fn sled_db(db: &sled::Db) -> Database {
    let backend = SledBackend::from_db(db.clone(), "test".into());
    sled_audit::ensure_index(&backend).unwrap();
    Database::from_backend(std::sync::Arc::new(backend))
}
