//! The vault master key, kept in its own file outside the database.
//!
//! Threat: theft of the data directory. The master key lives in a separate 0600 file (ideally
//! on another volume or injected by the deployment), so a copy of the database alone reveals
//! no secret. Loading refuses a key file that other users could read or replace, and the key
//! bytes live only in a zeroizing `SecretBox`, redacted from `Debug`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use sha2::{Digest, Sha256};

use super::VaultError;
use super::crypto::{KEY_LEN, random_key};

/// Permission bits a key file must not have: any access for group or others. Write access
/// matters as much as read: whoever can replace the key can make the host seal new secrets
/// under a key they know.
const FORBIDDEN_MODE_BITS: u32 = 0o077;

/// The 256-bit key that wraps every credential's data key.
pub struct MasterKey(SecretBox<[u8; KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

impl MasterKey {
    /// A new random key, in memory only.
    pub fn generate() -> Self {
        let random = random_key();
        Self(SecretBox::init_with_mut(|key: &mut [u8; KEY_LEN]| {
            key.copy_from_slice(random.as_ref());
        }))
    }

    /// Creates a new random key file with mode 0600; refuses to overwrite an existing file.
    pub fn create(path: &Path) -> Result<Self, VaultError> {
        let key = Self::generate();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => VaultError::KeyFileExists(path.into()),
                _ => key_file_error(path, e),
            })?;
        if let Err(e) = write_durably(&mut file, key.bytes(), path) {
            // Leave no half-written key behind for a later `load` to trust.
            let _ = std::fs::remove_file(path);
            return Err(key_file_error(path, e));
        }
        Ok(key)
    }

    /// Loads a key file; refuses one that group or others may access, or that is not exactly
    /// 32 bytes.
    pub fn load(path: &Path) -> Result<Self, VaultError> {
        let mut file = File::open(path).map_err(|e| key_file_error(path, e))?;
        // Check the opened file itself, not the path, so a swap after the check cannot win.
        let metadata = file.metadata().map_err(|e| key_file_error(path, e))?;
        if !metadata.is_file() {
            return Err(VaultError::KeyFileNotRegular(path.into()));
        }
        let mode = metadata.permissions().mode();
        if mode & FORBIDDEN_MODE_BITS != 0 {
            return Err(VaultError::KeyFilePermissions {
                path: path.into(),
                mode: mode & 0o7777,
            });
        }
        if metadata.len() != KEY_LEN as u64 {
            return Err(VaultError::KeyFileLength(path.into()));
        }
        let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
        file.read_exact(key.expose_secret_mut())
            .map_err(|_| VaultError::KeyFileLength(path.into()))?;
        if file
            .read(&mut [0u8; 1])
            .map_err(|e| key_file_error(path, e))?
            != 0
        {
            return Err(VaultError::KeyFileLength(path.into()));
        }
        Ok(Self(key))
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        self.0.expose_secret()
    }

    /// A short public fingerprint naming which master key wraps a record. Lets a future rekey
    /// find the records still under the old key; reveals nothing about the key itself.
    pub(crate) fn id(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"warden-vault/master-key-id/v1");
        hasher.update(self.bytes());
        hex::encode(&hasher.finalize()[..8])
    }
}

fn write_durably(file: &mut File, bytes: &[u8], path: &Path) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()?;
    // Persist the directory entry too, or a crash could lose the new file.
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn key_file_error(path: &Path, source: std::io::Error) -> VaultError {
    VaultError::KeyFile {
        path: path.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_writes_32_byte_file_with_mode_0600_and_load_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let created = MasterKey::create(&path).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(metadata.len(), 32);
        let loaded = MasterKey::load(&path).unwrap();
        assert_eq!(created.bytes(), loaded.bytes());
        assert_eq!(created.id(), loaded.id());
    }

    #[test]
    fn create_refuses_to_overwrite_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = MasterKey::create(&path).unwrap();
        let err = MasterKey::create(&path).unwrap_err();
        assert!(matches!(err, VaultError::KeyFileExists(_)), "{err:?}");
        assert_eq!(MasterKey::load(&path).unwrap().bytes(), first.bytes());
    }

    #[test]
    fn load_refuses_group_or_world_accessible_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::create(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = MasterKey::load(&path).unwrap_err();
            assert!(
                matches!(err, VaultError::KeyFilePermissions { mode: m, .. } if m == mode),
                "{mode:o}: {err:?}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        MasterKey::load(&path).unwrap();
    }

    #[test]
    fn load_refuses_file_of_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 31, 33, 64] {
            let path = dir.path().join(format!("key-{len}"));
            std::fs::write(&path, vec![1u8; len]).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let err = MasterKey::load(&path).unwrap_err();
            assert!(
                matches!(err, VaultError::KeyFileLength(_)),
                "{len}: {err:?}"
            );
        }
    }

    #[test]
    fn load_reports_missing_file_and_refuses_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = MasterKey::load(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(err, VaultError::KeyFile { .. }), "{err:?}");
        let err = MasterKey::load(dir.path()).unwrap_err();
        assert!(matches!(err, VaultError::KeyFileNotRegular(_)), "{err:?}");
    }

    #[test]
    fn debug_and_errors_show_no_key_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::create(&path).unwrap();
        let debug = format!("{key:?}");
        assert_eq!(debug, "MasterKey([REDACTED])");
        assert!(!debug.contains(&hex::encode(key.bytes())));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let message = MasterKey::load(&path).unwrap_err().to_string();
        assert!(!message.contains(&hex::encode(key.bytes())));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(MasterKey::generate().bytes(), MasterKey::generate().bytes());
    }
}
