//! Replacing the master key: re-wrapping every record's data keys under a new key.
//!
//! Threat: a compromised or retired master key must stop opening the vault, and a rekey that
//! stops midway (crash, power loss) must not lose a credential. Secrets are never decrypted:
//! only 32-byte data keys are unwrapped (in zeroizing buffers) and wrapped again. Each record
//! is rewritten whole, by compare-and-swap, so at every instant it is entirely under the old
//! key or entirely under the new one; its `master_key_id` says which, and opening picks that
//! key. The new key takes over all writes before the first record moves, so nothing written
//! during the rekey lands under the old key.
//!
//! Operator protocol (the CLI's job): store the new key durably beside the old one, run the
//! rekey, and only once it reports success retire the old key. After a crash, open with
//! [`Vault::open_with_keys`] (new, Some(old)) and run the rekey again; it skips records
//! already moved.

use std::sync::{Arc, PoisonError};

use serde::Serialize;

use super::record::Stored;
use super::{KeyRing, MAX_CAS_RETRIES, MasterKey, Vault, VaultError};

/// Passes over the tree before giving up. The first pass moves everything; a later one only
/// finds records another thread wrote under the old key in the instant before the switch.
const MAX_REKEY_PASSES: usize = 4;

/// What a rekey did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RekeyReport {
    /// Public fingerprint of the new master key.
    pub key_id: String,
    /// Records re-wrapped by this run.
    pub rekeyed: usize,
    /// Records already under the new key (from an earlier, interrupted run).
    pub already_current: usize,
}

/// What happened to one record.
enum Outcome {
    Rekeyed,
    AlreadyCurrent,
    Gone,
}

impl Vault {
    /// Re-wraps every record's data keys under `new` and makes `new` the key for all writes
    /// of this vault (and its clones). Records under a key this vault does not know are
    /// reported as [`VaultError::CorruptRecord`] and stop the run; records moved before that
    /// stay moved, and running it again resumes.
    pub fn rekey(&self, new: &MasterKey) -> Result<RekeyReport, VaultError> {
        self.rekey_up_to(new, None)
    }

    /// [`Vault::rekey`] that stops after moving `stop_after` records: tests use it to stand
    /// for a crash midway.
    pub(super) fn rekey_up_to(
        &self,
        new: &MasterKey,
        stop_after: Option<usize>,
    ) -> Result<RekeyReport, VaultError> {
        let new = Arc::new(new.duplicate());
        self.install(Arc::clone(&new));
        let mut report = RekeyReport {
            key_id: new.id(),
            rekeyed: 0,
            already_current: 0,
        };
        for pass in 0..MAX_REKEY_PASSES {
            let mut moved = 0;
            for (key, _) in self.tree.all()? {
                if stop_after.is_some_and(|limit| report.rekeyed >= limit) {
                    return Ok(report);
                }
                match self.rekey_record(&key, &new)? {
                    Outcome::Rekeyed => {
                        moved += 1;
                        report.rekeyed += 1;
                    }
                    Outcome::AlreadyCurrent if pass == 0 => report.already_current += 1,
                    Outcome::AlreadyCurrent | Outcome::Gone => {}
                }
            }
            if moved == 0 {
                return Ok(report);
            }
        }
        Err(VaultError::RekeyIncomplete)
    }

    /// Makes `new` the write key, keeping the old ones for reading records not yet moved.
    fn install(&self, new: Arc<MasterKey>) {
        let mut ring = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if ring.current.id() == new.id() {
            return;
        }
        let old = std::mem::replace(&mut ring.current, new);
        let KeyRing { older, .. } = &mut *ring;
        older.retain(|k| k.id() != old.id());
        older.push(old);
    }

    /// Moves one record under `new`, retrying if it changes meanwhile.
    fn rekey_record(&self, key: &[u8], new: &MasterKey) -> Result<Outcome, VaultError> {
        let corrupt = || VaultError::CorruptRecord {
            name: String::from_utf8_lossy(key).into_owned(),
        };
        let new_id = new.id();
        for _ in 0..MAX_CAS_RETRIES {
            let Some(old) = self.tree.get(key)? else {
                return Ok(Outcome::Gone);
            };
            let stored = Stored::decode(key, &old).ok_or_else(corrupt)?;
            if stored.master_key_id() == new_id {
                return Ok(Outcome::AlreadyCurrent);
            }
            let ring = self.keyring();
            let master = ring.find(stored.master_key_id()).ok_or_else(corrupt)?;
            let envelope = stored.open(master).map_err(|_| corrupt())?;
            let bytes = self.encode(&envelope, new)?;
            if self.tree.swap(key, &old, bytes)? {
                return Ok(Outcome::Rekeyed);
            }
        }
        Err(VaultError::Conflict(
            String::from_utf8_lossy(key).into_owned(),
        ))
    }
}
