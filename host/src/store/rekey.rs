//! Replacing the master key file: the file side of `warden vault rekey`.
//!
//! Threat: a leaked or retired master key must stop opening the vault, and a crash at any
//! point must leave every credential openable. The protocol:
//!
//! 1. write a fresh key to `master.key.new` (mode 0600, fsynced, directory fsynced);
//! 2. re-wrap every record's data keys under it ([`Vault::rekey`]; secrets are never
//!    decrypted), keeping `master.key` (the old key) to read records not yet moved;
//! 3. rename `master.key.new` over `master.key` (atomic) and fsync the directory.
//!
//! While `master.key.new` exists, [`DataDir::open_with`](super::DataDir::open_with) refuses to
//! open the directory (each record is under one key or the other); running the rekey again
//! picks the same new key up and finishes. No key material is ever printed or logged.

use std::fs::{self, File};
use std::path::Path;

use super::{
    DataDirError, DatabaseLocation, MASTER_KEY_FILE, NEW_MASTER_KEY_FILE, SERVER_KEY_FILE,
    open_database,
};
use crate::vault::{MasterKey, RekeyReport, Vault, VaultError};

/// Moves the data directory at `root` to a fresh master key (or finishes an interrupted
/// move) and retires the old key file. Needs the key in `master.key`.
pub fn rekey_master_key(
    root: &Path,
    location: &DatabaseLocation,
) -> Result<RekeyReport, DataDirError> {
    if !root.join(SERVER_KEY_FILE).exists() {
        return Err(DataDirError::NotInitialised(root.to_path_buf()));
    }
    let current_path = root.join(MASTER_KEY_FILE);
    let new_path = root.join(NEW_MASTER_KEY_FILE);
    let old = MasterKey::load(&current_path)?;
    let new = new_or_resumed_key(&new_path)?;
    let db = open_database(root, location)?;
    let vault = Vault::open_with_keys(&db, new.duplicate(), Some(old))?;
    // Every swap is durable when it returns.
    let report = vault.rekey(&new)?;
    drop(vault);
    drop(db);
    // Only now, with every record under the new key, does the old key file go.
    fs::rename(&new_path, &current_path)?;
    File::open(root)?.sync_all()?;
    Ok(report)
}

/// The key of an interrupted rekey if there is one, else a fresh key file. A `.new` file of
/// the wrong length can only come from a crash while it was being written, before any record
/// moved under it, so it is replaced.
fn new_or_resumed_key(path: &Path) -> Result<MasterKey, DataDirError> {
    if !path.exists() {
        return Ok(MasterKey::create(path)?);
    }
    match MasterKey::load(path) {
        Ok(key) => Ok(key),
        Err(VaultError::KeyFileLength(_)) => {
            fs::remove_file(path)?;
            Ok(MasterKey::create(path)?)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::DataDir;
    use super::*;
    use crate::vault::{CredentialKind, Secret};

    fn add(dir: &DataDir, name: &str, secret: &str) {
        let vault = Vault::open(&dir.db, dir.master_key.duplicate()).unwrap();
        vault
            .add(
                name,
                "root",
                CredentialKind::Password,
                Secret::from_bytes(secret.as_bytes().to_vec()),
            )
            .unwrap();
    }

    #[test]
    fn rekey_replaces_the_key_file_and_every_secret_still_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let dir = DataDir::init(&root).unwrap();
        add(&dir, "a", "secret-a");
        add(&dir, "b", "secret-b");
        let old_bytes = fs::read(root.join(MASTER_KEY_FILE)).unwrap();
        drop(dir);

        let report = rekey_master_key(&root, &DatabaseLocation::Embedded).unwrap();
        assert_eq!((report.rekeyed, report.already_current), (2, 0));
        let key_file = root.join(MASTER_KEY_FILE);
        assert_ne!(fs::read(&key_file).unwrap(), old_bytes);
        assert_eq!(
            fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!root.join(NEW_MASTER_KEY_FILE).exists());

        let dir = DataDir::open(&root).unwrap();
        let vault = Vault::open(&dir.db, dir.master_key.duplicate()).unwrap();
        assert_eq!(vault.secret("a").unwrap().expose(), b"secret-a");
        assert_eq!(vault.secret("b").unwrap().expose(), b"secret-b");
        drop((vault, dir));

        // The old key, now in a file of its own, is refused at open.
        let old_path = tmp.path().join("old.key");
        fs::write(&old_path, &old_bytes).unwrap();
        fs::set_permissions(&old_path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = DataDir::open_with(&root, &crate::vault::MasterKeySource::File(old_path))
            .err()
            .unwrap();
        assert!(
            matches!(err, DataDirError::WrongMasterKey { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn interrupted_rekey_blocks_open_and_a_second_run_finishes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let dir = DataDir::init(&root).unwrap();
        for i in 0..3 {
            add(&dir, &format!("c{i}"), &format!("secret-{i}"));
        }
        // Stand for a crash midway: the new key file exists, the old key file is still in
        // place, three records are under the new key and two under the old one.
        let new = MasterKey::create(&root.join(NEW_MASTER_KEY_FILE)).unwrap();
        let vault = Vault::open(&dir.db, dir.master_key.duplicate()).unwrap();
        vault.rekey(&new).unwrap();
        add(&dir, "c3", "secret-3");
        add(&dir, "c4", "secret-4");
        drop((vault, dir));

        let err = DataDir::open(&root).err().unwrap();
        assert!(matches!(err, DataDirError::InterruptedRekey(_)), "{err:?}");

        let report = rekey_master_key(&root, &DatabaseLocation::Embedded).unwrap();
        assert_eq!((report.rekeyed, report.already_current), (2, 3));
        assert_eq!(report.key_id, new.id());
        let dir = DataDir::open(&root).unwrap();
        let vault = Vault::open(&dir.db, dir.master_key.duplicate()).unwrap();
        for i in 0..5 {
            let secret = vault.secret(&format!("c{i}")).unwrap();
            assert_eq!(secret.expose(), format!("secret-{i}").as_bytes());
        }
    }

    #[test]
    fn a_torn_new_key_file_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let dir = DataDir::init(&root).unwrap();
        add(&dir, "a", "secret-a");
        drop(dir);
        let torn = root.join(NEW_MASTER_KEY_FILE);
        fs::write(&torn, [7u8; 5]).unwrap();
        fs::set_permissions(&torn, fs::Permissions::from_mode(0o600)).unwrap();
        let report = rekey_master_key(&root, &DatabaseLocation::Embedded).unwrap();
        assert_eq!(report.rekeyed, 1);
        let dir = DataDir::open(&root).unwrap();
        let vault = Vault::open(&dir.db, dir.master_key.duplicate()).unwrap();
        assert_eq!(vault.secret("a").unwrap().expose(), b"secret-a");
    }

    #[test]
    fn rekey_refuses_an_uninitialised_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let err = rekey_master_key(tmp.path(), &DatabaseLocation::Embedded).unwrap_err();
        assert!(matches!(err, DataDirError::NotInitialised(_)), "{err:?}");
    }
}
