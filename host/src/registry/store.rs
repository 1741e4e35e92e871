//! The module registry: uploaded task modules and the publishers this server trusts, kept
//! through [`crate::store`].
//!
//! Threat: running a module no trusted publisher signed, or one whose stored bytes are not
//! the ones whose signature was checked. Publisher keys are kept per server and only an
//! admin adds them ([`ModuleStore::trust_publisher`]); every upload is verified against
//! them; [`ModuleStore::store`] verifies the bytes it stores again, so the record and the
//! blob written together always describe a module that verified. A module's identity is
//! its component digest; re-uploading the same component with a different manifest or
//! publisher is refused rather than silently keeping either.
//!
//! Distrusting a publisher ([`ModuleStore::distrust_publisher`]) stops its modules at their
//! next run start: [`ModuleStore::check_trusted`] re-verifies a module's signature against
//! the publishers trusted at that moment (the bytes are hashed once per module and server
//! process; the signature itself is checked again every time).
//!
//! Also here: [`check_imports`], the check that a component imports no Warden interface its
//! signed manifest did not declare.
//!
//! Trees: `modules` (digest → JSON [`ModuleInfo`]), `module_blobs` (digest → signed file
//! bytes), `publishers` (name → 32-byte ed25519 public key).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::{Batch, Database, Expect, Table, TableDef};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::manifest::Manifest;
use super::signing::{self, Seal, SignError, TrustedPublishers, VerifiedModule};

/// Table of module records.
pub const MODULES: TableDef = TableDef {
    name: "modules",
    columns: &[],
    columns_of: None,
};
/// Table of signed module files.
pub const BLOBS: TableDef = TableDef {
    name: "module_blobs",
    columns: &[],
    columns_of: None,
};
/// Table of trusted publisher keys.
pub const PUBLISHERS: TableDef = TableDef {
    name: "publishers",
    columns: &[],
    columns_of: None,
};

/// Largest signed module accepted. An upload is held in memory, hashed and compiled; this
/// bounds the memory and CPU one upload can cost.
pub const MAX_MODULE_BYTES: usize = 64 << 20;
/// Longest publisher name. Names reach storage keys, API responses and audit records.
pub const MAX_PUBLISHER_NAME_LEN: usize = 64;
/// Most trusted publishers. Bounds the key set loaded for every verification.
pub const MAX_PUBLISHERS: usize = 256;

/// The WIT package whose interfaces are capabilities.
const WARDEN_PACKAGE: &str = "warden:task/";
/// The one Warden interface that grants nothing (shared type definitions).
const TYPES_INTERFACE: &str = "types";

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Signature verification failed (unsigned, unknown publisher, tampered, malformed).
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("module {0} not found")]
    NotFound(String),
    #[error("module is {0} bytes; the limit is {MAX_MODULE_BYTES}")]
    TooLarge(usize),
    #[error(
        "module {0} is already stored with a different manifest or publisher; \
         bump the version to publish a change"
    )]
    Conflict(String),
    #[error("the module imports capability '{0}' that its manifest does not declare")]
    UndeclaredCapability(String),
    #[error("invalid publisher name {0:?}: use 1-{MAX_PUBLISHER_NAME_LEN} of a-z 0-9 . _ -")]
    InvalidName(String),
    #[error("this key is already trusted as publisher {0:?}")]
    KeyInUse(String),
    #[error("at most {MAX_PUBLISHERS} publishers may be trusted")]
    TooManyPublishers,
    #[error("stored {0} is corrupt")]
    Encode(String),
    #[error("module storage failed: {0}")]
    Storage(#[from] crate::store::StoreError),
}

/// A stored module, as listed and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModuleInfo {
    /// SHA-256 (hex) of the component: the module's identity.
    pub digest: String,
    pub name: String,
    pub version: String,
    pub description: String,
    /// The signed manifest.
    #[schema(value_type = Object)]
    pub manifest: Manifest,
    /// The trusted publisher whose key signed it.
    pub publisher: String,
    /// The user who uploaded it.
    pub uploaded_by: String,
    pub uploaded_ms: u64,
    /// Size of the signed file in bytes.
    pub size: u64,
    /// Retired modules stay for audit and existing runs but start no new runs.
    pub retired: bool,
}

/// Uploaded modules and trusted publishers; cheap to clone.
#[derive(Clone)]
pub struct ModuleStore {
    modules: Table,
    blobs: Table,
    publishers: Table,
    /// The verified signature of each module checked so far, by digest (a stored blob
    /// never changes). One small entry per stored module.
    seals: Arc<Mutex<HashMap<String, Seal>>>,
}

impl std::fmt::Debug for ModuleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleStore").finish_non_exhaustive()
    }
}

impl ModuleStore {
    /// Opens the three tables.
    pub fn open(db: &Database) -> Result<Self, RegistryError> {
        Ok(ModuleStore {
            modules: db.table(&MODULES),
            blobs: db.table(&BLOBS),
            publishers: db.table(&PUBLISHERS),
            seals: Arc::default(),
        })
    }

    /// Re-verifies `module`'s signature against the publishers trusted now; called when a
    /// run of it starts, so a distrusted publisher's (or a rotated key's) modules stop.
    /// The first check per module reads and verifies the stored bytes in full.
    pub fn check_trusted(&self, module: &ModuleInfo) -> Result<(), RegistryError> {
        let trusted = self.publishers()?;
        let cached = self
            .seals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&module.digest)
            .cloned();
        let seal = match cached {
            Some(seal) => seal,
            None => {
                let bytes = self
                    .bytes(&module.digest)?
                    .ok_or_else(|| RegistryError::NotFound(module.digest.clone()))?;
                let (verified, seal) = signing::verify_sealed(&bytes, &trusted)?;
                if verified.digest != module.digest || verified.manifest != module.manifest {
                    return Err(RegistryError::Conflict(module.digest.clone()));
                }
                self.seals
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(module.digest.clone(), seal.clone());
                seal
            }
        };
        seal.check(&trusted)?;
        Ok(())
    }

    /// Trusts `key` as publisher `name`, replacing the key `name` had (key rotation). A key
    /// already trusted under another name is refused: one key must map to one publisher,
    /// or a module's recorded publisher would depend on load order.
    pub fn trust_publisher(&self, name: &str, key: &VerifyingKey) -> Result<(), RegistryError> {
        if !is_valid_name(name) {
            return Err(RegistryError::InvalidName(name.to_string()));
        }
        let mut count = 0;
        for (other, other_key) in self.publisher_keys()? {
            if other_key == *key && other != name {
                return Err(RegistryError::KeyInUse(other));
            }
            count += usize::from(other != name);
        }
        if count >= MAX_PUBLISHERS {
            return Err(RegistryError::TooManyPublishers);
        }
        self.publishers.put(name, key.as_bytes().as_slice())?;
        Ok(())
    }

    /// Stops trusting publisher `name`; `false` if it was not trusted. Modules it signed
    /// stay stored but no longer verify (re-checked when fetched by a bridge).
    pub fn distrust_publisher(&self, name: &str) -> Result<bool, RegistryError> {
        Ok(self.publishers.remove(name)?)
    }

    /// The trusted publisher keys, for [`signing::verify`].
    pub fn publishers(&self) -> Result<TrustedPublishers, RegistryError> {
        let mut trusted = TrustedPublishers::default();
        for (name, key) in self.publisher_keys()? {
            trusted.trust(&name, key);
        }
        Ok(trusted)
    }

    /// Trusted publishers as `(name, key id)`, by name.
    pub fn list_publishers(&self) -> Result<Vec<(String, String)>, RegistryError> {
        Ok(self
            .publisher_keys()?
            .into_iter()
            .map(|(name, key)| (name, signing::key_id(&key)))
            .collect())
    }

    /// Checks the size and the signature against the trusted publishers. Does not compile
    /// the component or check its imports: the caller does that with the runtime (and
    /// [`check_imports`]) before calling [`ModuleStore::store`].
    pub fn verify(&self, signed: &[u8]) -> Result<VerifiedModule, RegistryError> {
        if signed.len() > MAX_MODULE_BYTES {
            return Err(RegistryError::TooLarge(signed.len()));
        }
        Ok(signing::verify(signed, &self.publishers()?)?)
    }

    /// Stores a verified module. Idempotent: storing the same digest with the same manifest
    /// and publisher returns the record already stored (retired or not).
    pub fn store(
        &self,
        verified: &VerifiedModule,
        signed: &[u8],
        uploaded_by: &str,
    ) -> Result<ModuleInfo, RegistryError> {
        // Verify the exact bytes being stored, so a caller mixing up two uploads cannot
        // store a blob under another module's record.
        let again = self.verify(signed)?;
        if again.digest != verified.digest
            || again.manifest != verified.manifest
            || again.publisher != verified.publisher
        {
            return Err(RegistryError::Conflict(verified.digest.clone()));
        }
        let info = new_info(again, signed.len(), uploaded_by);
        let stored = self.insert_if_absent(&info, signed)?;
        if stored.manifest != info.manifest || stored.publisher != info.publisher {
            return Err(RegistryError::Conflict(info.digest));
        }
        Ok(stored)
    }

    /// The module with `digest`, if stored.
    pub fn get(&self, digest: &str) -> Result<Option<ModuleInfo>, RegistryError> {
        self.modules
            .get(digest)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// The signed file of module `digest`, if stored.
    pub fn bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        Ok(self.blobs.get(digest)?)
    }

    /// Every stored module, by digest.
    pub fn list(&self) -> Result<Vec<ModuleInfo>, RegistryError> {
        self.modules.all()?.iter().map(|(_, v)| decode(v)).collect()
    }

    /// Marks module `digest` retired and returns its record. Idempotent.
    pub fn retire(&self, digest: &str) -> Result<ModuleInfo, RegistryError> {
        loop {
            let old = self
                .modules
                .get(digest)?
                .ok_or_else(|| RegistryError::NotFound(digest.to_string()))?;
            let mut info: ModuleInfo = decode(&old)?;
            info.retired = true;
            // Compare-and-swap: a concurrent change is re-read, never overwritten.
            if self.modules.swap(digest, &old, encode(&info)?)? {
                return Ok(info);
            }
        }
    }

    /// Writes record and blob in one transaction unless the digest is already stored;
    /// returns what is stored afterwards.
    fn insert_if_absent(
        &self,
        info: &ModuleInfo,
        signed: &[u8],
    ) -> Result<ModuleInfo, RegistryError> {
        let record = encode(info)?;
        let mut batch = Batch::new();
        batch
            .put(
                &MODULES,
                info.digest.as_str(),
                record.clone(),
                Expect::Absent,
            )
            .put(&BLOBS, info.digest.as_str(), signed, Expect::Any);
        match self.modules.database().apply(&batch) {
            Ok(()) => decode(&record),
            // Stored already (perhaps just now by another upload or server): keep that one.
            Err(e) if e.is_conflict() => {
                let stored = self
                    .modules
                    .get(info.digest.as_str())?
                    .ok_or_else(|| RegistryError::Encode("module (vanished)".into()))?;
                decode(&stored)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The trusted publishers and their keys, by name.
    pub fn publisher_keys(&self) -> Result<Vec<(String, VerifyingKey)>, RegistryError> {
        let corrupt = || RegistryError::Encode("publisher key".into());
        self.publishers
            .all()?
            .into_iter()
            .map(|(name, key)| {
                let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt())?;
                let key: [u8; 32] = key.as_slice().try_into().map_err(|_| corrupt())?;
                let key = VerifyingKey::from_bytes(&key).map_err(|_| corrupt())?;
                Ok((name, key))
            })
            .collect()
    }
}

/// Checks a component's imports against its manifest: every `warden:task/<iface>` import
/// other than `types` must be a declared capability. `imports` are the component's import
/// names, such as `warden:task/ssh@0.1.0` or `wasi:cli/stdout@0.2.3`; non-Warden imports are
/// left to the linker, which satisfies none of them beyond what the sandbox grants.
pub fn check_imports(manifest: &Manifest, imports: &[String]) -> Result<(), RegistryError> {
    for import in imports {
        let Some(rest) = import.strip_prefix(WARDEN_PACKAGE) else {
            continue;
        };
        let iface = rest.split_once('@').map_or(rest, |(iface, _)| iface);
        if iface != TYPES_INTERFACE && !manifest.capabilities.iter().any(|c| c == iface) {
            return Err(RegistryError::UndeclaredCapability(iface.to_string()));
        }
    }
    Ok(())
}

fn new_info(verified: VerifiedModule, size: usize, uploaded_by: &str) -> ModuleInfo {
    ModuleInfo {
        digest: verified.digest,
        name: verified.manifest.name.clone(),
        version: verified.manifest.version.clone(),
        description: verified.manifest.description.clone(),
        manifest: verified.manifest,
        publisher: verified.publisher,
        uploaded_by: uploaded_by.to_string(),
        uploaded_ms: now_ms(),
        size: u64::try_from(size).unwrap_or(u64::MAX),
        retired: false,
    }
}

/// True for 1..=64 characters of `[a-z0-9._-]`.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PUBLISHER_NAME_LEN
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

fn encode(info: &ModuleInfo) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(info).map_err(|_| RegistryError::Encode("module (encoding)".into()))
}

fn decode(bytes: &[u8]) -> Result<ModuleInfo, RegistryError> {
    serde_json::from_slice(bytes).map_err(|_| RegistryError::Encode("module".into()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
