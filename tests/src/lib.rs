//! Shared harness for Warden's integration tests: builds the guest components, starts
//! real `sshd` instances, and runs the real `warden` binary.
//!
//! Nothing here is mocked: guests are built from `guest-examples/` and `tests/fixtures/`
//! for `wasm32-wasip2`, SSH goes to OpenSSH on loopback, state lives in real sled files.

pub mod browser;
pub mod guests;
pub mod http;
pub mod netns;
pub mod postgres;
pub mod scan;
pub mod sshd;
pub mod wait;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the `warden` binary with `args`, feeding `stdin`; returns its output.
pub fn warden(bin: &str, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<Output> {
    warden_with_env(bin, args, &[], stdin)
}

/// [`warden`] with `envs` set (and `WARDEN_DATA` removed, as always). The pipe to its stdin
/// is closed once `stdin` is written, or at once when there is none.
pub fn warden_with_env(
    bin: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> anyhow::Result<Output> {
    use std::io::Write;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("WARDEN_DATA")
        .envs(envs.iter().copied())
        .spawn()?;
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
        pipe.write_all(bytes)?;
    }
    Ok(child.wait_with_output()?)
}

/// A random printable secret of `len` bytes (alphanumeric, so it is valid as a password
/// and distinctive enough to grep for).
pub fn random_secret(len: usize) -> String {
    use rand::Rng;
    use rand::distributions::Alphanumeric;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Every occurrence count of `needle` in the files under `dir` (recursively).
pub fn grep_dir(dir: &Path, needle: &[u8]) -> anyhow::Result<usize> {
    let mut found = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found += grep_dir(&path, needle)?;
        } else {
            let data = std::fs::read(&path)?;
            found += data.windows(needle.len()).filter(|w| *w == needle).count();
        }
    }
    Ok(found)
}
