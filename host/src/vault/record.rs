//! The stored form of one credential: envelope encryption.
//!
//! Threat: theft or tampering of the database. Each record has its own random data key; the
//! secret is sealed under the data key, and the data key is wrapped under the master key. Both
//! seals authenticate the record's metadata (format, name, username, kind, creation time), so
//! editing metadata, moving a record to another name or swapping ciphertexts between records
//! makes it fail to open. Envelope encryption keeps a master-key rotation cheap (rewrap 32-byte
//! data keys, never touch secrets) and leaves room for per-version data keys: a later format
//! can hold several sealed versions, each with its own data key, told apart by `format`.

use serde::{Deserialize, Serialize};

use super::crypto::{self, CryptoError, Sealed, SymmetricKey, associated_data, random_key};
use super::{CredentialInfo, CredentialKind, MasterKey, Secret};

/// The only record layout this code writes and reads.
pub(crate) const FORMAT_V1: u32 = 1;

/// Role labels: a wrapped data key can never be opened as a secret, or the reverse.
const DATA_KEY_LABEL: &str = "warden-vault/data-key/v1";
const SECRET_LABEL: &str = "warden-vault/secret/v1";

/// One credential as stored (JSON) in the `credentials` tree, keyed by its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredCredential {
    pub format: u32,
    pub name: String,
    pub username: String,
    pub kind: CredentialKind,
    pub created_ms: u64,
    /// Public fingerprint of the master key that wraps `data_key` (see `MasterKey::id`).
    pub master_key_id: String,
    /// The record's data key, sealed under the master key.
    pub data_key: Sealed,
    /// The secret, sealed under the data key.
    pub secret: Sealed,
}

impl StoredCredential {
    /// Seals `secret` for the record described by `info` under a fresh data key.
    pub(crate) fn seal(
        master: &MasterKey,
        info: &CredentialInfo,
        secret: &Secret,
    ) -> Result<Self, CryptoError> {
        let master_key_id = master.id();
        let data_key = random_key();
        let wrap_aad = data_key_aad(info, &master_key_id);
        Ok(Self {
            format: FORMAT_V1,
            name: info.name.clone(),
            username: info.username.clone(),
            kind: info.kind,
            created_ms: info.created_ms,
            data_key: crypto::seal(master.bytes(), data_key.as_ref(), &wrap_aad)?,
            secret: crypto::seal(&data_key, secret.expose(), &secret_aad(info))?,
            master_key_id,
        })
    }

    pub(crate) fn info(&self) -> CredentialInfo {
        CredentialInfo {
            name: self.name.clone(),
            username: self.username.clone(),
            kind: self.kind,
            created_ms: self.created_ms,
        }
    }

    /// Unwraps the data key, which authenticates all of the record's metadata.
    pub(crate) fn unwrap_data_key(&self, master: &MasterKey) -> Result<SymmetricKey, CryptoError> {
        if self.format != FORMAT_V1 {
            return Err(CryptoError);
        }
        let aad = data_key_aad(&self.info(), &self.master_key_id);
        crypto::open_key(master.bytes(), &self.data_key, &aad)
    }

    /// Decrypts the secret.
    pub(crate) fn open_secret(&self, master: &MasterKey) -> Result<Secret, CryptoError> {
        let data_key = self.unwrap_data_key(master)?;
        let plaintext = crypto::open(&data_key, &self.secret, &secret_aad(&self.info()))?;
        Ok(Secret(plaintext))
    }
}

/// The wrap also binds the master key id: a rekey rewraps under a new id, and an edited id
/// cannot mislead it into treating a record as already rekeyed.
fn data_key_aad(info: &CredentialInfo, master_key_id: &str) -> Vec<u8> {
    let mut fields = metadata_fields(info);
    fields.push(master_key_id.as_bytes().to_vec());
    aad_of(DATA_KEY_LABEL, &fields)
}

/// The secret's seal binds only metadata, so a rekey never has to re-encrypt secrets.
fn secret_aad(info: &CredentialInfo) -> Vec<u8> {
    aad_of(SECRET_LABEL, &metadata_fields(info))
}

fn metadata_fields(info: &CredentialInfo) -> Vec<Vec<u8>> {
    vec![
        FORMAT_V1.to_be_bytes().to_vec(),
        info.name.as_bytes().to_vec(),
        info.username.as_bytes().to_vec(),
        info.kind.as_str().as_bytes().to_vec(),
        info.created_ms.to_be_bytes().to_vec(),
    ]
}

fn aad_of(label: &str, fields: &[Vec<u8>]) -> Vec<u8> {
    let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
    associated_data(label, &refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> CredentialInfo {
        CredentialInfo {
            name: "db-root".into(),
            username: "root".into(),
            kind: CredentialKind::Password,
            created_ms: 42,
        }
    }

    fn sealed(master: &MasterKey) -> StoredCredential {
        let secret = Secret::from_bytes(b"correct horse".to_vec());
        StoredCredential::seal(master, &info(), &secret).unwrap()
    }

    #[test]
    fn opens_what_it_sealed() {
        let master = MasterKey::generate();
        let secret = sealed(&master).open_secret(&master).unwrap();
        assert_eq!(secret.expose(), b"correct horse");
    }

    #[test]
    fn each_record_gets_its_own_data_key() {
        let master = MasterKey::generate();
        let (a, b) = (sealed(&master), sealed(&master));
        let key_a = a.unwrap_data_key(&master).unwrap();
        let key_b = b.unwrap_data_key(&master).unwrap();
        assert_ne!(key_a, key_b);
    }

    #[test]
    fn rejects_every_metadata_edit() {
        let master = MasterKey::generate();
        let edits: [fn(&mut StoredCredential); 6] = [
            |r| r.name = "db-root2".into(),
            |r| r.username = "admin".into(),
            |r| r.kind = CredentialKind::SshKey,
            |r| r.created_ms += 1,
            |r| r.master_key_id = "0".repeat(16),
            |r| r.format = 2,
        ];
        for edit in edits {
            let mut record = sealed(&master);
            edit(&mut record);
            assert!(record.open_secret(&master).is_err());
        }
    }

    #[test]
    fn rejects_wrapped_key_used_as_secret_and_the_reverse() {
        let master = MasterKey::generate();
        let mut record = sealed(&master);
        std::mem::swap(&mut record.data_key, &mut record.secret);
        assert!(record.open_secret(&master).is_err());
    }
}
