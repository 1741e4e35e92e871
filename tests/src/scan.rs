//! Looking for plaintext secrets where none may be: files of a data directory, logs, API
//! and audit output.
//!
//! A secret counts as found in any of the encodings a careless log line or serializer would
//! produce: raw bytes, lowercase or uppercase hex, and base64 (standard or URL-safe, padded
//! or not). Base64 is checked at all three byte alignments (the secret may start anywhere in a
//! longer encoded buffer), using the part of the encoding its neighbours cannot change.
//!
//! ```no_run
//! let scan = warden_tests::scan::SecretScan::new(&[b"hunter2-but-longer".as_slice()]);
//! let mut findings = scan.dir(std::path::Path::new("/tmp/data")).unwrap();
//! findings.extend(scan.text("server log", "…"));
//! warden_tests::scan::assert_clean(&findings);
//! ```

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Shortest secret the scan accepts: shorter ones match by chance in binary files.
pub const MIN_SECRET_LEN: usize = 12;

/// One encoding of one secret to look for, as a Latin-1 string (see [`latin1`]).
struct Needle {
    secret: usize,
    encoding: String,
    text: String,
}

/// Where a secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file or stream (e.g. `server stderr`).
    pub place: String,
    /// Index of the secret in the list given to [`SecretScan::new`].
    pub secret: usize,
    /// `raw`, `hex`, `HEX`, `base64+N`, `base64url+N` (N = alignment).
    pub encoding: String,
}

/// The encodings of a set of secrets, ready to search for.
pub struct SecretScan {
    needles: Vec<Needle>,
}

impl SecretScan {
    /// Prepares the search. Panics on a secret shorter than [`MIN_SECRET_LEN`] (a test bug).
    pub fn new(secrets: &[&[u8]]) -> SecretScan {
        let mut needles = Vec::new();
        for (index, secret) in secrets.iter().enumerate() {
            assert!(
                secret.len() >= MIN_SECRET_LEN,
                "secret {index} is too short to scan for reliably"
            );
            let mut push = |encoding: String, bytes: Vec<u8>| {
                needles.push(Needle {
                    secret: index,
                    encoding,
                    text: latin1(&bytes),
                })
            };
            push("raw".into(), secret.to_vec());
            push("hex".into(), hex::encode(secret).into_bytes());
            push("HEX".into(), hex::encode_upper(secret).into_bytes());
            for offset in 0..3 {
                push(
                    format!("base64+{offset}"),
                    stable_base64(&STANDARD_NO_PAD, secret, offset),
                );
                push(
                    format!("base64url+{offset}"),
                    stable_base64(&URL_SAFE_NO_PAD, secret, offset),
                );
            }
        }
        SecretScan { needles }
    }

    /// Every secret encoding found in `bytes`, labelled `place`.
    pub fn bytes(&self, place: &str, bytes: &[u8]) -> Vec<Finding> {
        let haystack = latin1(bytes);
        self.needles
            .iter()
            .filter(|n| haystack.contains(n.text.as_str()))
            .map(|n| Finding {
                place: place.to_string(),
                secret: n.secret,
                encoding: n.encoding.clone(),
            })
            .collect()
    }

    /// [`SecretScan::bytes`] for text.
    pub fn text(&self, place: &str, text: &str) -> Vec<Finding> {
        self.bytes(place, text.as_bytes())
    }

    /// Every finding in every file under `dir`, recursively (symlinks are not followed).
    pub fn dir(&self, dir: &Path) -> anyhow::Result<Vec<Finding>> {
        let mut findings = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                findings.extend(self.dir(&path)?);
            } else if kind.is_file() {
                let data = std::fs::read(&path)?;
                findings.extend(self.bytes(&path.display().to_string(), &data));
            }
        }
        Ok(findings)
    }
}

/// Counts the regular files under `dir` (so a test can show its scan read something).
pub fn count_files(dir: &Path) -> anyhow::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            count += count_files(&entry.path())?;
        } else if kind.is_file() {
            count += 1;
        }
    }
    Ok(count)
}

/// Panics listing every finding (never the secret itself).
pub fn assert_clean(findings: &[Finding]) {
    assert!(
        findings.is_empty(),
        "plaintext secrets found: {}",
        findings
            .iter()
            .map(|f| format!("secret #{} as {} in {}", f.secret, f.encoding, f.place))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

/// The base64 characters of `secret` placed `offset` bytes into a stream that do not depend
/// on the bytes around it: the first group touched by the preceding bytes and the last
/// (partial) group are dropped.
fn stable_base64(engine: &impl Engine, secret: &[u8], offset: usize) -> Vec<u8> {
    let mut shifted = vec![0u8; offset];
    shifted.extend_from_slice(secret);
    let full_groups = shifted.len() / 3;
    let encoded = engine.encode(&shifted[..full_groups * 3]);
    let skip = if offset == 0 { 0 } else { 4 };
    encoded.as_bytes()[skip..].to_vec()
}

/// Maps each byte to the char of the same value. The map is one-to-one and UTF-8 is
/// self-synchronising, so a needle occurs in a haystack exactly when its image occurs in the
/// haystack's image; this lets the search use `str::contains` (the standard library's
/// optimised substring search) even on binary files of many megabytes.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    const SECRET: &[u8] = b"correct-horse-battery";

    #[test]
    fn finds_raw_hex_and_base64_at_every_alignment_with_any_padding() {
        let scan = SecretScan::new(&[SECRET]);
        assert!(!scan.text("raw", "x correct-horse-battery y").is_empty());
        assert!(!scan.text("hex", &hex::encode(SECRET)).is_empty());
        assert!(!scan.text("HEX", &hex::encode_upper(SECRET)).is_empty());
        for prefix in 0..6 {
            for suffix in 0..4 {
                let mut buffer = vec![b'#'; prefix];
                buffer.extend_from_slice(SECRET);
                buffer.extend(std::iter::repeat_n(b'!', suffix));
                for (name, encoded) in [
                    ("std", STANDARD.encode(&buffer)),
                    ("url", URL_SAFE.encode(&buffer)),
                    ("nopad", STANDARD_NO_PAD.encode(&buffer)),
                ] {
                    assert!(
                        !scan.text(name, &encoded).is_empty(),
                        "missed {name} with prefix {prefix} suffix {suffix}"
                    );
                }
            }
        }
    }

    #[test]
    fn ignores_other_text_and_names_the_place() {
        let scan = SecretScan::new(&[SECRET, b"another-secret-value"]);
        assert!(scan.text("clean", "correct-horse-batter").is_empty());
        let found = scan.text("log", "another-secret-value");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].place.as_str(), found[0].secret), ("log", 1));
    }
}
