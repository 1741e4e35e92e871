//! The vault master key, kept outside the database: in its own file (default), in an
//! environment variable, or printed by a command (an external KMS/HSM helper).
//!
//! Threat: theft of the data directory. The master key lives apart from the database, so a
//! copy of the database alone reveals no secret. Loading refuses a key file that other users
//! could read or replace; a command runs without a shell (no injection through its arguments)
//! and its output is read into a zeroizing buffer. The key bytes live only in a zeroizing
//! `SecretBox`, redacted from `Debug`, and no error message ever quotes key material.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::VaultError;
use super::crypto::{KEY_LEN, random_key};

/// Permission bits a key file must not have: any access for group or others. Write access
/// matters as much as read: whoever can replace the key can make the host seal new secrets
/// under a key they know.
const FORBIDDEN_MODE_BITS: u32 = 0o077;

/// Most bytes read from a key command's output. A key is 64 hex characters plus a newline;
/// the cap stops a misbehaving helper from filling host memory at startup.
const MAX_KEY_COMMAND_OUTPUT: u64 = 4096;

/// Where the server gets its master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    /// A 32-byte file with mode 0600 (the default).
    File(PathBuf),
    /// An environment variable holding 64 hex characters.
    Env(String),
    /// A command (program and arguments, run without a shell) printing 64 hex characters.
    Command(Vec<String>),
}

impl MasterKeySource {
    pub fn load(&self) -> Result<MasterKey, VaultError> {
        match self {
            Self::File(path) => MasterKey::load(path),
            Self::Env(var) => MasterKey::from_env(var),
            Self::Command(argv) => MasterKey::from_command(argv),
        }
    }
}

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
        let mut file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VaultError::KeyFileMissing(path.into()),
            std::io::ErrorKind::PermissionDenied => VaultError::KeyFileUnreadable(path.into()),
            _ => key_file_error(path, e),
        })?;
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

    /// Reads the key from environment variable `var`: 64 hex characters, surrounding
    /// whitespace ignored.
    pub fn from_env(var: &str) -> Result<Self, VaultError> {
        let error = |reason| VaultError::KeyEnv {
            var: var.to_owned(),
            reason,
        };
        let value = std::env::var_os(var).ok_or_else(|| error("not set"))?;
        let value = Zeroizing::new(value.into_encoded_bytes());
        parse_hex_key(&value).ok_or_else(|| error("must hold exactly 64 hex characters"))
    }

    /// Runs `argv` (no shell; stdin closed, stderr inherited) and reads the key from its
    /// standard output: 64 hex characters, surrounding whitespace ignored. Fails if the
    /// command cannot start or exits unsuccessfully.
    pub fn from_command(argv: &[String]) -> Result<Self, VaultError> {
        let (program, args) = argv.split_first().ok_or_else(|| VaultError::KeyCommand {
            program: String::new(),
            reason: "no command given".into(),
        })?;
        let error = |reason: String| VaultError::KeyCommand {
            program: program.clone(),
            reason,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| error(format!("cannot start: {e}")))?;
        let mut output = Zeroizing::new(Vec::new());
        let read = match child.stdout.take() {
            Some(stdout) => stdout
                .take(MAX_KEY_COMMAND_OUTPUT + 1)
                .read_to_end(&mut output)
                .map(|_| ()),
            None => Ok(()),
        };
        // Always reap the child, even when reading failed.
        let status = child
            .wait()
            .map_err(|e| error(format!("cannot wait for it: {e}")))?;
        read.map_err(|e| error(format!("cannot read its output: {e}")))?;
        if !status.success() {
            return Err(error(format!("exited unsuccessfully ({status})")));
        }
        if output.len() as u64 > MAX_KEY_COMMAND_OUTPUT {
            return Err(error("printed too much output".into()));
        }
        parse_hex_key(&output)
            .ok_or_else(|| error("output must be exactly 64 hex characters".into()))
    }

    /// An independent copy of the key (for a vault that must own it).
    pub(crate) fn duplicate(&self) -> Self {
        Self(SecretBox::init_with_mut(|key: &mut [u8; KEY_LEN]| {
            key.copy_from_slice(self.bytes());
        }))
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

/// Decodes 64 hex characters (surrounding ASCII whitespace ignored) straight into the key's
/// buffer; `None` for anything else.
fn parse_hex_key(text: &[u8]) -> Option<MasterKey> {
    let hex_text = text.trim_ascii();
    if hex_text.len() != KEY_LEN * 2 {
        return None;
    }
    let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
    hex::decode_to_slice(hex_text, key.expose_secret_mut()).ok()?;
    Some(MasterKey(key))
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

fn key_file_error(path: &Path, error: std::io::Error) -> VaultError {
    VaultError::KeyFile {
        path: path.into(),
        error,
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
        assert!(matches!(err, VaultError::KeyFileMissing(_)), "{err:?}");
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

    fn argv(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    const HEX_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn from_command_reads_hex_key_from_stdout() {
        let key = MasterKey::from_command(&argv(&format!("echo {HEX_KEY}"))).unwrap();
        assert_eq!(hex::encode(key.bytes()), HEX_KEY.to_lowercase());
        let file_key = MasterKey::generate();
        let echoed = argv(&format!(
            "printf '  %s\n\n' {}",
            hex::encode(file_key.bytes())
        ));
        assert_eq!(
            MasterKey::from_command(&echoed).unwrap().id(),
            file_key.id()
        );
    }

    #[test]
    fn from_command_runs_without_a_shell() {
        // With a shell, `;` would run a second command; without one it is just an argument.
        let args = vec![
            "echo".to_owned(),
            HEX_KEY.to_owned(),
            ";".to_owned(),
            "false".to_owned(),
        ];
        let err = MasterKey::from_command(&args).unwrap_err();
        assert!(matches!(err, VaultError::KeyCommand { .. }), "{err:?}");
        let plain = vec!["echo".to_owned(), HEX_KEY.to_owned()];
        MasterKey::from_command(&plain).unwrap();
    }

    #[test]
    fn from_command_refuses_bad_output_and_never_quotes_it() {
        let short = &HEX_KEY[..62];
        let cases = [
            argv(&format!("echo {short}")),
            argv(&format!("echo {HEX_KEY}00")),
            argv(&format!("echo {}zz", &HEX_KEY[..62])),
            argv(&format!("echo {HEX_KEY}; exit 3")),
            argv(&format!("yes {HEX_KEY} | head -c 100000")),
            argv(""),
        ];
        for case in cases {
            let err = MasterKey::from_command(&case).unwrap_err();
            let message = format!("{err} {err:?}");
            assert!(matches!(err, VaultError::KeyCommand { .. }), "{message}");
            assert!(!message.contains(short), "{message}");
        }
    }

    #[test]
    fn from_command_reports_missing_program_and_empty_argv() {
        let missing = vec!["/nonexistent/warden-kms-helper".to_owned()];
        let err = MasterKey::from_command(&missing).unwrap_err();
        assert!(err.to_string().contains("cannot start"), "{err}");
        assert!(matches!(
            MasterKey::from_command(&[]),
            Err(VaultError::KeyCommand { .. })
        ));
    }

    #[test]
    fn from_env_reports_unset_and_malformed_variables_without_their_value() {
        let err = MasterKey::from_env("WARDEN_TEST_SURELY_UNSET_7f3c").unwrap_err();
        assert!(
            matches!(&err, VaultError::KeyEnv { reason, .. } if *reason == "not set"),
            "{err:?}"
        );
        // PATH is always set and never a hex key; its value must not be echoed back.
        let path = std::env::var("PATH").unwrap();
        let err = MasterKey::from_env("PATH").unwrap_err();
        assert!(matches!(err, VaultError::KeyEnv { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains(&path));
    }

    #[test]
    fn hex_parser_accepts_only_64_hex_characters() {
        let key = parse_hex_key(format!("\n {HEX_KEY} \n").as_bytes()).unwrap();
        assert_eq!(hex::encode(key.bytes()), HEX_KEY.to_lowercase());
        for bad in [
            "",
            &HEX_KEY[..63],
            &format!("{HEX_KEY}0"),
            &format!("{}g", &HEX_KEY[..63]),
        ] {
            assert!(parse_hex_key(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn source_loads_from_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let created = MasterKey::create(&path).unwrap();
        let from_file = MasterKeySource::File(path.clone()).load().unwrap();
        assert_eq!(from_file.id(), created.id());
        let echo = argv(&format!("echo {}", hex::encode(created.bytes())));
        assert_eq!(
            MasterKeySource::Command(echo).load().unwrap().id(),
            created.id()
        );
        assert!(
            MasterKeySource::Env("WARDEN_TEST_SURELY_UNSET_7f3c".into())
                .load()
                .is_err()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKeySource::File(path).load(),
            Err(VaultError::KeyFilePermissions { .. })
        ));
    }

    #[test]
    fn duplicate_is_the_same_key() {
        let key = MasterKey::generate();
        assert_eq!(key.duplicate().bytes(), key.bytes());
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(MasterKey::generate().bytes(), MasterKey::generate().bytes());
    }
}
