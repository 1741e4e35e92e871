//! `warden keygen` and `warden sign`: a publisher's key pair, and signing a task module
//! with its manifest into the one file that is uploaded.
//!
//! Threat: a publisher's private key read by another local user, or leaked through an error
//! message. The key file is created owner-only (0600, never overwritten), a key file that
//! group or others can access is refused, the seed lives only in `Zeroizing` buffers, and
//! no error repeats the file's content.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::registry::manifest::{MAX_MANIFEST_BYTES, Manifest};
use crate::registry::signing::{self, TrustedPublishers};
use crate::registry::store::MAX_MODULE_BYTES;

/// Largest key file read: a 64-digit hex key plus whitespace fits many times over. Stops a
/// mistaken path (a disk image) from being read into memory.
const MAX_KEY_FILE_BYTES: u64 = 1024;

/// Arguments of `warden keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Output prefix: writes PREFIX.key (0600, the 32-byte seed as hex) and PREFIX.pub (the
    /// public key as hex).
    #[arg(long, short = 'o', value_name = "PREFIX")]
    pub out: PathBuf,
}

/// Arguments of `warden sign`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// The publisher's private key file (from `warden keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The task component (`.wasm`).
    pub task: PathBuf,
    /// The task's manifest (`warden.toml`).
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// Where to write the signed module.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,
}

/// `warden keygen`: writes a new key pair and prints its key id. Refuses to overwrite.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<i32> {
    let key_path = with_suffix(&args.out, ".key");
    let pub_path = with_suffix(&args.out, ".pub");
    for path in [&key_path, &pub_path] {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; refusing to overwrite it",
                path.display()
            );
        }
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let key = SigningKey::from_bytes(&seed);
    let key_hex = Zeroizing::new(format!("{}\n", hex::encode(seed.as_ref())));
    write_new(&key_path, key_hex.as_bytes(), 0o600)?;
    let public = format!("{}\n", hex::encode(key.verifying_key().as_bytes()));
    if let Err(e) = write_new(&pub_path, public.as_bytes(), 0o644) {
        // Leave no half-made pair behind.
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    println!(
        "private key: {} (mode 0600; keep it secret)",
        key_path.display()
    );
    println!("public key:  {}", pub_path.display());
    println!("key id:      {}", signing::key_id(&key.verifying_key()));
    Ok(0)
}

/// `warden sign`: signs the component with the manifest, writes the signed module, and
/// prints its digest.
pub fn sign(args: SignArgs) -> anyhow::Result<i32> {
    let key = load_signing_key(&args.key)?;
    let manifest_bytes = read_bounded(&args.manifest, MAX_MANIFEST_BYTES as u64)?;
    let manifest_text = String::from_utf8(manifest_bytes)
        .with_context(|| format!("{} is not UTF-8", args.manifest.display()))?;
    let manifest = Manifest::parse(&manifest_text)
        .with_context(|| format!("manifest {}", args.manifest.display()))?;
    let component = read_bounded(&args.task, MAX_MODULE_BYTES as u64)?;
    let signed = signing::sign(&component, &manifest, &key)
        .with_context(|| format!("signing {}", args.task.display()))?;
    if signed.len() > MAX_MODULE_BYTES {
        bail!("the signed module would exceed the {MAX_MODULE_BYTES}-byte upload limit");
    }
    // Check our own output the way a server will, before anyone uploads it.
    let mut own = TrustedPublishers::default();
    own.trust("self", key.verifying_key());
    let verified = signing::verify(&signed, &own).context("verifying the signed module")?;
    fs::write(&args.output, &signed)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("signed {}@{}", manifest.name, manifest.version);
    println!("digest: {}", verified.digest);
    println!("key id: {}", signing::key_id(&key.verifying_key()));
    println!("output: {}", args.output.display());
    Ok(0)
}

/// Loads a private key written by `warden keygen`. Refuses a file that group or others can
/// access; errors never include the file's content.
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let meta = fs::metadata(path).with_context(|| format!("reading key {}", path.display()))?;
    if !meta.is_file() {
        bail!("key {} is not a regular file", path.display());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "key {} is accessible by group or others; chmod 600 it",
            path.display()
        );
    }
    let text = Zeroizing::new(read_bounded(path, MAX_KEY_FILE_BYTES)?);
    let mut seed = Zeroizing::new([0u8; 32]);
    let trimmed = text.trim_ascii();
    if hex::decode_to_slice(trimmed, seed.as_mut()).is_err() {
        bail!("key {} is not a 64-digit hex ed25519 key", path.display());
    }
    Ok(SigningKey::from_bytes(&seed))
}

/// Loads a publisher's public key from a `.pub` file, or from the hex itself.
pub fn load_public_key(path_or_hex: &str) -> anyhow::Result<VerifyingKey> {
    let hex_text = if is_key_hex(path_or_hex) {
        path_or_hex.to_string()
    } else {
        let bytes = read_bounded(Path::new(path_or_hex), MAX_KEY_FILE_BYTES)?;
        String::from_utf8(bytes)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| is_key_hex(s))
            .with_context(|| format!("{path_or_hex} does not hold a 64-digit hex public key"))?
    };
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(&hex_text, &mut bytes).context("public key is not hex")?;
    VerifyingKey::from_bytes(&bytes).context("not a valid ed25519 public key")
}

fn is_key_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `PREFIX` + `suffix`, keeping any dots already in the prefix (`acme.v2` → `acme.v2.key`).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads a whole file, refusing one over `limit` bytes without reading past it.
fn read_bounded(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!("{} is larger than {limit} bytes", path.display());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, Verifier};

    use super::*;

    const MANIFEST: &str = "name = 'demo'\nversion = '1.0.0'\ncapabilities = ['log']\n";

    fn component() -> Vec<u8> {
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        c.extend_from_slice(&[0, 5, 4, b't', b'e', b's', b't']);
        c
    }

    fn keygen_in(dir: &Path) -> (PathBuf, PathBuf) {
        let out = dir.join("acme");
        assert_eq!(keygen(KeygenArgs { out: out.clone() }).unwrap(), 0);
        (dir.join("acme.key"), dir.join("acme.pub"))
    }

    fn sign_args(dir: &Path, key: PathBuf) -> SignArgs {
        fs::write(dir.join("task.wasm"), component()).unwrap();
        fs::write(dir.join("warden.toml"), MANIFEST).unwrap();
        SignArgs {
            key,
            task: dir.join("task.wasm"),
            manifest: dir.join("warden.toml"),
            output: dir.join("task.signed.wasm"),
        }
    }

    #[test]
    fn keygen_writes_an_owner_only_key_whose_pub_verifies_its_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let (key_path, pub_path) = keygen_in(dir.path());
        let mode = fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = load_signing_key(&key_path).unwrap();
        let public = load_public_key(pub_path.to_str().unwrap()).unwrap();
        let signature = key.sign(b"message");
        assert!(public.verify(b"message", &signature).is_ok());
        assert!(public.verify(b"other", &signature).is_err());
    }

    #[test]
    fn keygen_refuses_to_overwrite_either_file() {
        let dir = tempfile::tempdir().unwrap();
        let (key_path, _) = keygen_in(dir.path());
        let before = fs::read(&key_path).unwrap();
        assert!(
            keygen(KeygenArgs {
                out: dir.path().join("acme")
            })
            .is_err()
        );
        assert_eq!(fs::read(&key_path).unwrap(), before);
        fs::write(dir.path().join("only.pub"), "x").unwrap();
        assert!(
            keygen(KeygenArgs {
                out: dir.path().join("only")
            })
            .is_err()
        );
        assert!(!dir.path().join("only.key").exists());
    }

    #[test]
    fn a_signed_module_verifies_with_the_publisher_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (key_path, pub_path) = keygen_in(dir.path());
        let args = sign_args(dir.path(), key_path);
        let output = args.output.clone();
        assert_eq!(sign(args).unwrap(), 0);
        let signed = fs::read(output).unwrap();
        let mut trusted = TrustedPublishers::default();
        trusted.trust("acme", load_public_key(pub_path.to_str().unwrap()).unwrap());
        let verified = signing::verify(&signed, &trusted).unwrap();
        assert_eq!(verified.publisher, "acme");
        assert_eq!(verified.manifest, Manifest::parse(MANIFEST).unwrap());
        let other = SigningKey::from_bytes(&[1u8; 32]).verifying_key();
        let mut stranger = TrustedPublishers::default();
        stranger.trust("other", other);
        assert!(signing::verify(&signed, &stranger).is_err());
    }

    #[test]
    fn sign_refuses_a_key_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let (key_path, _) = keygen_in(dir.path());
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let args = sign_args(dir.path(), key_path);
        let output = args.output.clone();
        let err = sign(args).unwrap_err();
        assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
        assert!(!output.exists());
    }

    #[test]
    fn sign_refuses_an_invalid_manifest_and_an_unsigned_output_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let (key_path, _) = keygen_in(dir.path());
        let args = sign_args(dir.path(), key_path);
        fs::write(&args.manifest, "name = 'demo'\ncapabilities = ['fs']").unwrap();
        let output = args.output.clone();
        assert!(sign(args).is_err());
        assert!(!output.exists());
    }

    #[test]
    fn a_malformed_key_is_refused_without_echoing_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        write_new(&path, b"s3cr3t-not-hex-zzzzzzzz", 0o600).unwrap();
        let err = format!("{:#}", load_signing_key(&path).unwrap_err());
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(load_signing_key(&dir.path().join("missing.key")).is_err());
    }

    #[test]
    fn load_public_key_accepts_hex_or_a_file_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[5u8; 32]).verifying_key();
        let hex_key = hex::encode(key.as_bytes());
        assert_eq!(load_public_key(&hex_key).unwrap(), key);
        let path = dir.path().join("k.pub");
        fs::write(&path, format!("{hex_key}\n")).unwrap();
        assert_eq!(load_public_key(path.to_str().unwrap()).unwrap(), key);
        fs::write(&path, "not a key").unwrap();
        assert!(load_public_key(path.to_str().unwrap()).is_err());
        assert!(load_public_key("abc").is_err());
    }
}
