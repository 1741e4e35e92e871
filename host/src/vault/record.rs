//! The stored form of one credential and all its versions: envelope encryption.
//!
//! Threat: theft or tampering of the database. Every version of a secret is sealed under its
//! own random data key; each data key is wrapped under the master key. A record-level header
//! (an AEAD tag over an empty plaintext, under the master key) authenticates every piece of
//! metadata, including each version's state, so an attacker cannot edit who created a version,
//! drop a version or make a failed version current. Each wrap and each secret seal also binds
//! its record and version, so ciphertexts cannot be swapped between versions or records.
//! Secrets' seals never involve the master key, so a rekey only rewraps 32-byte data keys.
//!
//! Not stopped: rolling the whole record back to an older, validly sealed copy (that needs
//! state outside the database, e.g. a monotonic counter).
//!
//! Format 1 (one secret, no versions) still opens: it is read as a one-version record and
//! rewritten as format 2 on the next write, keeping its secret ciphertext (and so its
//! format-1 associated data, see [`SecretAad`]) untouched.

use serde::{Deserialize, Serialize};

use super::crypto::{self, CryptoError, Sealed, SymmetricKey, associated_data, random_key};
use super::{CredentialInfo, CredentialKind, MasterKey, Secret, VersionInfo, VersionState};

/// The original single-secret layout; read, never written.
pub(crate) const FORMAT_V1: u32 = 1;
/// The versioned layout this code writes.
pub(crate) const FORMAT_V2: u32 = 2;

/// Role labels: no sealed item can be opened in another role.
const V1_DATA_KEY_LABEL: &str = "warden-vault/data-key/v1";
const V1_SECRET_LABEL: &str = "warden-vault/secret/v1";
const DATA_KEY_LABEL: &str = "warden-vault/data-key/v2";
const SECRET_LABEL: &str = "warden-vault/secret/v2";
const HEADER_LABEL: &str = "warden-vault/record/v2";

/// A format-1 record: one secret under one data key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LegacyRecord {
    pub format: u32,
    pub name: String,
    pub username: String,
    pub kind: CredentialKind,
    pub created_ms: u64,
    pub master_key_id: String,
    pub data_key: Sealed,
    pub secret: Sealed,
}

/// Which associated data a version's secret was sealed with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SecretAad {
    /// Migrated from format 1: the secret keeps its original seal.
    V1,
    #[default]
    V2,
}

/// One version as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredVersion {
    pub version: u32,
    pub created_ms: u64,
    pub created_by: String,
    pub reason: String,
    pub state: VersionState,
    #[serde(default)]
    pub secret_aad: SecretAad,
    /// The version's data key, sealed under the record's master key.
    pub data_key: Sealed,
    /// The secret, sealed under the data key.
    pub secret: Sealed,
}

/// A format-2 record (JSON in the `credentials` tree, keyed by its name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub format: u32,
    pub name: String,
    pub username: String,
    pub kind: CredentialKind,
    pub created_ms: u64,
    /// Absent (false) in records written before the flag existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    /// Never reused, so a dropped version's number cannot name a later secret.
    pub next_version: u32,
    /// Public fingerprint of the master key that wraps every data key and seals the header.
    pub master_key_id: String,
    pub versions: Vec<StoredVersion>,
    pub header: Sealed,
}

/// A record as found in the database, in either format.
pub(crate) enum Stored {
    V1(LegacyRecord),
    V2(StoredRecord),
}

#[derive(Deserialize)]
struct FormatProbe {
    format: u32,
}

impl Stored {
    /// Parses a record stored under `key`; `None` if it does not parse or names another key.
    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Option<Self> {
        let probe: FormatProbe = serde_json::from_slice(value).ok()?;
        let (stored, name) = match probe.format {
            FORMAT_V1 => {
                let record: LegacyRecord = serde_json::from_slice(value).ok()?;
                let name = record.name.clone();
                (Self::V1(record), name)
            }
            FORMAT_V2 => {
                let record: StoredRecord = serde_json::from_slice(value).ok()?;
                let name = record.name.clone();
                (Self::V2(record), name)
            }
            _ => return None,
        };
        (name.as_bytes() == key).then_some(stored)
    }

    pub(crate) fn master_key_id(&self) -> &str {
        match self {
            Self::V1(r) => &r.master_key_id,
            Self::V2(r) => &r.master_key_id,
        }
    }

    /// Authenticates the record under `master` and unwraps every data key.
    pub(crate) fn open(&self, master: &MasterKey) -> Result<Envelope, CryptoError> {
        match self {
            Self::V1(r) => r.open(master),
            Self::V2(r) => r.open(master),
        }
    }
}

/// Record-level metadata, fixed at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    pub name: String,
    pub username: String,
    pub kind: CredentialKind,
    pub created_ms: u64,
    pub admin: bool,
}

/// One version with its data key unwrapped (the secret stays sealed).
pub(crate) struct OpenVersion {
    pub info: VersionInfo,
    secret_aad: SecretAad,
    data_key: SymmetricKey,
    secret: Sealed,
}

/// An authenticated record in memory: what every read and write works on.
pub(crate) struct Envelope {
    pub meta: RecordMeta,
    pub next_version: u32,
    pub versions: Vec<OpenVersion>,
}

impl Envelope {
    /// A record whose only version is `first` (which should be current).
    pub(crate) fn new(
        meta: RecordMeta,
        first: VersionInfo,
        secret: &Secret,
    ) -> Result<Self, CryptoError> {
        let mut envelope = Self {
            meta,
            next_version: first.version,
            versions: Vec::new(),
        };
        envelope.push(first, secret)?;
        Ok(envelope)
    }

    /// Appends a version sealed under a fresh data key; `info.version` must be `next_version`.
    pub(crate) fn push(&mut self, info: VersionInfo, secret: &Secret) -> Result<(), CryptoError> {
        if info.version != self.next_version {
            return Err(CryptoError);
        }
        let data_key = random_key();
        let aad = secret_aad_v2(&self.meta, &info);
        let sealed = crypto::seal(&data_key, secret.expose(), &aad)?;
        self.next_version = info.version.checked_add(1).ok_or(CryptoError)?;
        self.versions.push(OpenVersion {
            info,
            secret_aad: SecretAad::V2,
            data_key,
            secret: sealed,
        });
        Ok(())
    }

    pub(crate) fn version(&self, version: u32) -> Option<&OpenVersion> {
        self.versions.iter().find(|v| v.info.version == version)
    }

    pub(crate) fn current(&self) -> Option<&OpenVersion> {
        self.versions
            .iter()
            .find(|v| v.info.state == VersionState::Current)
    }

    /// The credential's metadata; `created_ms` is when the current secret was stored.
    pub(crate) fn info(&self) -> CredentialInfo {
        CredentialInfo {
            name: self.meta.name.clone(),
            username: self.meta.username.clone(),
            kind: self.meta.kind,
            created_ms: self
                .current()
                .map_or(self.meta.created_ms, |v| v.info.created_ms),
            admin: self.meta.admin,
        }
    }

    /// Decrypts one version's secret.
    pub(crate) fn open_secret(&self, version: &OpenVersion) -> Result<Secret, CryptoError> {
        let aad = match version.secret_aad {
            SecretAad::V1 => secret_aad_v1(&self.meta, version.info.created_ms),
            SecretAad::V2 => secret_aad_v2(&self.meta, &version.info),
        };
        Ok(Secret(crypto::open(
            &version.data_key,
            &version.secret,
            &aad,
        )?))
    }

    /// Wraps every data key under `master` and seals the header; secrets are copied as they
    /// are, never decrypted.
    pub(crate) fn seal(&self, master: &MasterKey) -> Result<StoredRecord, CryptoError> {
        let master_key_id = master.id();
        let mut versions = Vec::with_capacity(self.versions.len());
        for v in &self.versions {
            let aad = data_key_aad(&self.meta, &v.info, v.secret_aad, &master_key_id);
            versions.push(StoredVersion {
                version: v.info.version,
                created_ms: v.info.created_ms,
                created_by: v.info.created_by.clone(),
                reason: v.info.reason.clone(),
                state: v.info.state,
                secret_aad: v.secret_aad,
                data_key: crypto::seal(master.bytes(), v.data_key.as_ref(), &aad)?,
                secret: v.secret.clone(),
            });
        }
        let mut record = StoredRecord {
            format: FORMAT_V2,
            name: self.meta.name.clone(),
            username: self.meta.username.clone(),
            kind: self.meta.kind,
            created_ms: self.meta.created_ms,
            admin: self.meta.admin,
            next_version: self.next_version,
            master_key_id,
            versions,
            header: Sealed {
                nonce: String::new(),
                ciphertext: String::new(),
            },
        };
        record.header = crypto::seal(master.bytes(), &[], &header_aad(&record))?;
        Ok(record)
    }
}

impl StoredRecord {
    fn meta(&self) -> RecordMeta {
        RecordMeta {
            name: self.name.clone(),
            username: self.username.clone(),
            kind: self.kind,
            created_ms: self.created_ms,
            admin: self.admin,
        }
    }

    fn open(&self, master: &MasterKey) -> Result<Envelope, CryptoError> {
        if self.format != FORMAT_V2 || master.id() != self.master_key_id {
            return Err(CryptoError);
        }
        crypto::open(master.bytes(), &self.header, &header_aad(self))?;
        let meta = self.meta();
        let mut versions = Vec::with_capacity(self.versions.len());
        for v in &self.versions {
            let info = VersionInfo {
                version: v.version,
                created_ms: v.created_ms,
                created_by: v.created_by.clone(),
                reason: v.reason.clone(),
                state: v.state,
            };
            let aad = data_key_aad(&meta, &info, v.secret_aad, &self.master_key_id);
            versions.push(OpenVersion {
                data_key: crypto::open_key(master.bytes(), &v.data_key, &aad)?,
                secret_aad: v.secret_aad,
                secret: v.secret.clone(),
                info,
            });
        }
        let envelope = Envelope {
            meta,
            next_version: self.next_version,
            versions,
        };
        well_formed(&envelope)
            .then_some(envelope)
            .ok_or(CryptoError)
    }
}

/// Exactly one current version, numbers unique, ascending and below `next_version`. The
/// header already authenticates all of this; checking it keeps a bug from sealing nonsense.
fn well_formed(envelope: &Envelope) -> bool {
    let current = envelope
        .versions
        .iter()
        .filter(|v| v.info.state == VersionState::Current)
        .count();
    let ascending = envelope
        .versions
        .windows(2)
        .all(|w| w[0].info.version < w[1].info.version);
    let below_next = envelope
        .versions
        .last()
        .is_some_and(|v| v.info.version < envelope.next_version);
    current == 1 && ascending && below_next
}

/// Attribution given to a version migrated from format 1, which recorded none.
pub(crate) const MIGRATED_BY: &str = "unattributed";
const MIGRATED_REASON: &str = "stored before versioning";

impl LegacyRecord {
    fn meta(&self) -> RecordMeta {
        RecordMeta {
            name: self.name.clone(),
            username: self.username.clone(),
            kind: self.kind,
            created_ms: self.created_ms,
            admin: false,
        }
    }

    /// Opens a format-1 record as a one-version envelope (version 1, current).
    fn open(&self, master: &MasterKey) -> Result<Envelope, CryptoError> {
        if self.format != FORMAT_V1 || master.id() != self.master_key_id {
            return Err(CryptoError);
        }
        let meta = self.meta();
        let aad = v1_data_key_aad(&meta, &self.master_key_id);
        let data_key = crypto::open_key(master.bytes(), &self.data_key, &aad)?;
        let info = VersionInfo {
            version: 1,
            created_ms: self.created_ms,
            created_by: MIGRATED_BY.to_owned(),
            reason: MIGRATED_REASON.to_owned(),
            state: VersionState::Current,
        };
        Ok(Envelope {
            meta,
            next_version: 2,
            versions: vec![OpenVersion {
                info,
                secret_aad: SecretAad::V1,
                data_key,
                secret: self.secret.clone(),
            }],
        })
    }

    /// Writes a format-1 record, as the previous code did; only tests need to.
    #[cfg(test)]
    pub(crate) fn seal(
        master: &MasterKey,
        meta: &RecordMeta,
        secret: &Secret,
    ) -> Result<Self, CryptoError> {
        let master_key_id = master.id();
        let data_key = random_key();
        let wrap_aad = v1_data_key_aad(meta, &master_key_id);
        Ok(Self {
            format: FORMAT_V1,
            name: meta.name.clone(),
            username: meta.username.clone(),
            kind: meta.kind,
            created_ms: meta.created_ms,
            data_key: crypto::seal(master.bytes(), data_key.as_ref(), &wrap_aad)?,
            secret: crypto::seal(
                &data_key,
                secret.expose(),
                &secret_aad_v1(meta, meta.created_ms),
            )?,
            master_key_id,
        })
    }
}

fn v1_fields(meta: &RecordMeta, created_ms: u64) -> Vec<Vec<u8>> {
    vec![
        FORMAT_V1.to_be_bytes().to_vec(),
        meta.name.as_bytes().to_vec(),
        meta.username.as_bytes().to_vec(),
        meta.kind.as_str().as_bytes().to_vec(),
        created_ms.to_be_bytes().to_vec(),
    ]
}

fn v1_data_key_aad(meta: &RecordMeta, master_key_id: &str) -> Vec<u8> {
    let mut fields = v1_fields(meta, meta.created_ms);
    fields.push(master_key_id.as_bytes().to_vec());
    aad_of(V1_DATA_KEY_LABEL, &fields)
}

fn secret_aad_v1(meta: &RecordMeta, created_ms: u64) -> Vec<u8> {
    aad_of(V1_SECRET_LABEL, &v1_fields(meta, created_ms))
}

/// The immutable identity of a version: its record and its own metadata (not its state,
/// which changes on promotion and is covered by the header instead).
fn version_fields(meta: &RecordMeta, info: &VersionInfo) -> Vec<Vec<u8>> {
    vec![
        FORMAT_V2.to_be_bytes().to_vec(),
        meta.name.as_bytes().to_vec(),
        meta.username.as_bytes().to_vec(),
        meta.kind.as_str().as_bytes().to_vec(),
        meta.created_ms.to_be_bytes().to_vec(),
        info.version.to_be_bytes().to_vec(),
        info.created_ms.to_be_bytes().to_vec(),
        info.created_by.as_bytes().to_vec(),
        info.reason.as_bytes().to_vec(),
    ]
}

/// Binds the master key id, so an edited id cannot make a rekey skip a record.
fn data_key_aad(
    meta: &RecordMeta,
    info: &VersionInfo,
    scheme: SecretAad,
    master_key_id: &str,
) -> Vec<u8> {
    let mut fields = version_fields(meta, info);
    fields.push(scheme_tag(scheme).to_vec());
    fields.push(master_key_id.as_bytes().to_vec());
    aad_of(DATA_KEY_LABEL, &fields)
}

/// Never binds the master key, so a rekey never has to re-encrypt a secret.
fn secret_aad_v2(meta: &RecordMeta, info: &VersionInfo) -> Vec<u8> {
    aad_of(SECRET_LABEL, &version_fields(meta, info))
}

fn header_aad(record: &StoredRecord) -> Vec<u8> {
    let mut fields = vec![
        record.format.to_be_bytes().to_vec(),
        record.name.as_bytes().to_vec(),
        record.username.as_bytes().to_vec(),
        record.kind.as_str().as_bytes().to_vec(),
        record.created_ms.to_be_bytes().to_vec(),
        record.next_version.to_be_bytes().to_vec(),
        record.master_key_id.as_bytes().to_vec(),
        (record.versions.len() as u64).to_be_bytes().to_vec(),
    ];
    // Bound only when set, so records written before the flag existed still verify.
    if record.admin {
        fields.push(b"admin".to_vec());
    }
    for v in &record.versions {
        fields.push(v.version.to_be_bytes().to_vec());
        fields.push(v.created_ms.to_be_bytes().to_vec());
        fields.push(v.created_by.as_bytes().to_vec());
        fields.push(v.reason.as_bytes().to_vec());
        fields.push(v.state.as_str().as_bytes().to_vec());
        fields.push(scheme_tag(v.secret_aad).to_vec());
    }
    aad_of(HEADER_LABEL, &fields)
}

fn scheme_tag(scheme: SecretAad) -> &'static [u8] {
    match scheme {
        SecretAad::V1 => b"v1",
        SecretAad::V2 => b"v2",
    }
}

fn aad_of(label: &str, fields: &[Vec<u8>]) -> Vec<u8> {
    let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
    associated_data(label, &refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RecordMeta {
        RecordMeta {
            name: "db-root".into(),
            username: "root".into(),
            kind: CredentialKind::Password,
            created_ms: 42,
            admin: false,
        }
    }

    fn version(n: u32, state: VersionState) -> VersionInfo {
        VersionInfo {
            version: n,
            created_ms: 40 + u64::from(n),
            created_by: "alice".into(),
            reason: "test".into(),
            state,
        }
    }

    fn two_versions(master: &MasterKey) -> StoredRecord {
        let secret = Secret::from_bytes(b"one".to_vec());
        let mut env = Envelope::new(meta(), version(1, VersionState::Previous), &secret).unwrap();
        env.push(
            version(2, VersionState::Current),
            &Secret::from_bytes(b"two".to_vec()),
        )
        .unwrap();
        env.seal(master).unwrap()
    }

    fn open(record: &StoredRecord, master: &MasterKey) -> Result<Envelope, CryptoError> {
        Stored::V2(record.clone()).open(master)
    }

    #[test]
    fn opens_every_version_it_sealed() {
        let master = MasterKey::generate();
        let env = open(&two_versions(&master), &master).unwrap();
        let secrets: Vec<Vec<u8>> = env
            .versions
            .iter()
            .map(|v| env.open_secret(v).unwrap().expose().to_vec())
            .collect();
        assert_eq!(secrets, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(env.current().unwrap().info.version, 2);
    }

    #[test]
    fn each_version_gets_its_own_data_key() {
        let master = MasterKey::generate();
        let env = open(&two_versions(&master), &master).unwrap();
        assert_ne!(env.versions[0].data_key, env.versions[1].data_key);
    }

    #[test]
    fn rejects_every_metadata_edit() {
        let master = MasterKey::generate();
        let edits: [fn(&mut StoredRecord); 12] = [
            |r| r.name = "db-root2".into(),
            |r| r.username = "admin".into(),
            |r| r.kind = CredentialKind::SshKey,
            |r| r.created_ms += 1,
            |r| r.next_version += 1,
            |r| r.format = 3,
            |r| r.versions[0].state = VersionState::Current,
            |r| r.versions[1].state = VersionState::Failed,
            |r| r.versions[0].created_by = "mallory".into(),
            |r| r.versions[0].reason = "other".into(),
            |r| r.versions[0].secret_aad = SecretAad::V1,
            |r| {
                r.versions.remove(0);
            },
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut record = two_versions(&master);
            edit(&mut record);
            assert!(open(&record, &master).is_err(), "edit {i}");
        }
    }

    #[test]
    fn rejects_data_keys_or_secrets_swapped_between_versions() {
        let master = MasterKey::generate();
        let mut record = two_versions(&master);
        let first = record.versions[0].secret.clone();
        record.versions[0].secret = record.versions[1].secret.clone();
        record.versions[1].secret = first;
        let env = open(&record, &master).unwrap();
        assert!(env.versions.iter().all(|v| env.open_secret(v).is_err()));
        let mut record = two_versions(&master);
        record.versions[0].data_key = record.versions[1].data_key.clone();
        assert!(open(&record, &master).is_err());
    }

    #[test]
    fn rejects_wrapped_key_used_as_secret_and_the_reverse() {
        let master = MasterKey::generate();
        let mut record = two_versions(&master);
        let v = &mut record.versions[1];
        std::mem::swap(&mut v.data_key, &mut v.secret);
        assert!(open(&record, &master).is_err());
    }

    #[test]
    fn rejects_other_master_key_and_forged_key_id() {
        let master = MasterKey::generate();
        let other = MasterKey::generate();
        let mut record = two_versions(&master);
        assert!(open(&record, &other).is_err());
        record.master_key_id = other.id();
        assert!(open(&record, &other).is_err());
        assert!(open(&record, &master).is_err());
    }

    #[test]
    fn legacy_record_opens_as_one_current_version_and_reseals_as_v2() {
        let master = MasterKey::generate();
        let legacy =
            LegacyRecord::seal(&master, &meta(), &Secret::from_bytes(b"old".to_vec())).unwrap();
        let env = Stored::V1(legacy.clone()).open(&master).unwrap();
        assert_eq!(env.versions.len(), 1);
        assert_eq!(env.current().unwrap().info.version, 1);
        let resealed = env.seal(&master).unwrap();
        assert_eq!(
            resealed.versions[0].secret, legacy.secret,
            "secret re-encrypted"
        );
        let env = open(&resealed, &master).unwrap();
        let secret = env.open_secret(env.current().unwrap()).unwrap();
        assert_eq!(secret.expose(), b"old");
    }

    #[test]
    fn decode_refuses_unknown_format_and_record_under_another_name() {
        let master = MasterKey::generate();
        let bytes = serde_json::to_vec(&two_versions(&master)).unwrap();
        assert!(Stored::decode(b"db-root", &bytes).is_some());
        assert!(Stored::decode(b"other", &bytes).is_none());
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        value["format"] = 9.into();
        assert!(Stored::decode(b"db-root", &serde_json::to_vec(&value).unwrap()).is_none());
        assert!(Stored::decode(b"db-root", b"not json").is_none());
    }
}
