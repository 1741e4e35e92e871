//! Redaction of secret values from bytes that leave the host's trust boundary.
//!
//! Threat: a command echoes a secret it was given (a password typed into `sudo`, a key it
//! printed, a config file it cat'ed), possibly encoded, and the output flows to the guest, the
//! run output, logs or audit. Every secret a run touches is registered here, and every byte
//! string on its way out passes through [`Redactor::redact`], which replaces each occurrence of
//! a secret, or of one of its common encodings, with `[REDACTED]`.
//!
//! Registered forms of a secret `s`:
//! - the raw bytes;
//! - standard and URL-safe base64, each with and without padding;
//! - the base64 characters that depend only on `s` when `s` sits at byte offset 1 or 2 of a
//!   longer base64-encoded stream (e.g. `base64("user:" + s)`), when that core is at least
//!   [`MIN_UNALIGNED_BASE64_LEN`] characters long;
//! - lowercase and uppercase hex.
//!
//! Limits (documented, not handled): encodings wrapped across lines (`base64 -w 76` output of
//! a long secret), other encodings (URL-encoding, rot13, reversed text) and a secret
//! transformed by the command. Secrets of any non-zero length are registered, including very
//! short ones: a short secret over-redacts matching text, which is the safe failure. The empty
//! secret is ignored since it would match everywhere.
//!
//! Overlapping or adjacent occurrences are merged into one `[REDACTED]`, so no byte of any
//! registered form survives, whichever form matched first.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// What replaces each redacted span.
pub const MARKER: &[u8] = b"[REDACTED]";

/// The shortest unaligned base64 core registered. Shorter cores (from 1–3 byte secrets)
/// would match ordinary base64 text everywhere and destroy output for no protection gain.
pub const MIN_UNALIGNED_BASE64_LEN: usize = 4;

/// Most patterns one redactor holds (about 11 per secret). Bounds redaction cost per output
/// byte against a run that registers secrets without limit.
pub const MAX_PATTERNS: usize = 4096;

/// Errors from registering secrets.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("too many secrets registered for redaction")]
    TooManyPatterns,
}

/// A shared, growable set of secret patterns. Clones share state: a secret added through one
/// clone is redacted by all.
#[derive(Clone, Default)]
pub struct Redactor {
    patterns: Arc<RwLock<Vec<Zeroizing<Vec<u8>>>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.read().len())
            .finish()
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret and its encodings. Empty secrets are ignored.
    pub fn add_secret(&self, secret: &[u8]) -> Result<(), RedactError> {
        if secret.is_empty() {
            return Ok(());
        }
        let forms = encoded_forms(secret);
        let mut patterns = self.write();
        let new: Vec<_> = forms
            .into_iter()
            .filter(|f| !patterns.contains(f))
            .collect();
        if patterns.len() + new.len() > MAX_PATTERNS {
            return Err(RedactError::TooManyPatterns);
        }
        patterns.extend(new);
        // Longest first, so that at a position where several forms start, the scan below
        // marks the widest span; overlaps are merged anyway, this only saves work.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Ok(())
    }

    /// True if no secret is registered.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Replaces every occurrence of every registered form with [`MARKER`].
    pub fn redact(&self, data: &[u8]) -> Vec<u8> {
        let mut mask = vec![false; data.len()];
        self.mark_occurrences(data, &mut mask);
        apply_mask(data, &mask)
    }

    /// Like [`Redactor::redact`], for output that was cut at a size cap: a trailing fragment
    /// that is the start of a registered form is also redacted, so truncation cannot leave
    /// the first half of a secret visible.
    pub fn redact_truncated(&self, data: &[u8]) -> Vec<u8> {
        let mut mask = vec![false; data.len()];
        self.mark_occurrences(data, &mut mask);
        self.mark_trailing_prefix(data, &mut mask);
        apply_mask(data, &mask)
    }

    /// [`Redactor::redact`] for text; invalid UTF-8 produced by a cut is replaced lossily.
    pub fn redact_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.redact(text.as_bytes())).into_owned()
    }

    fn mark_occurrences(&self, data: &[u8], mask: &mut [bool]) {
        for pattern in self.read().iter() {
            for start in find_all(data, pattern) {
                mask[start..start + pattern.len()].fill(true);
            }
        }
    }

    fn mark_trailing_prefix(&self, data: &[u8], mask: &mut [bool]) {
        let longest = self
            .read()
            .iter()
            .filter_map(|p| {
                (1..p.len().min(data.len() + 1))
                    .rev()
                    .find(|&n| data.ends_with(&p[..n]))
            })
            .max();
        if let Some(n) = longest {
            let len = mask.len();
            mask[len - n..].fill(true);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Zeroizing<Vec<u8>>>> {
        // A poisoned lock only means another thread panicked mid-insert; the Vec is still
        // a valid list of patterns, and refusing to redact would be the unsafe choice.
        self.patterns.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Zeroizing<Vec<u8>>>> {
        self.patterns.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// All registered forms of one secret, deduplicated.
fn encoded_forms(secret: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut forms: Vec<Zeroizing<Vec<u8>>> = vec![Zeroizing::new(secret.to_vec())];
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        forms.push(Zeroizing::new(engine.encode(secret).into_bytes()));
    }
    for shift in 1..=2 {
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            if let Some(core) = unaligned_base64_core(engine, secret, shift) {
                forms.push(core);
            }
        }
    }
    let hex = Zeroizing::new(hex::encode(secret));
    forms.push(Zeroizing::new(hex.as_bytes().to_vec()));
    forms.push(Zeroizing::new(hex.to_ascii_uppercase().into_bytes()));
    let mut unique: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(forms.len());
    for form in forms {
        if !unique.contains(&form) {
            unique.push(form);
        }
    }
    unique
}

/// The base64 characters fully determined by `secret` when it starts `shift` bytes into an
/// encoded stream: character `i` covers stream bits `6i..6i+6`, and only those inside the
/// secret's bits `8*shift..8*(shift+len)` are independent of the neighbouring bytes.
fn unaligned_base64_core(
    engine: &base64::engine::GeneralPurpose,
    secret: &[u8],
    shift: usize,
) -> Option<Zeroizing<Vec<u8>>> {
    let mut shifted = Zeroizing::new(vec![0u8; shift]);
    shifted.extend_from_slice(secret);
    let encoded = Zeroizing::new(engine.encode(&*shifted).into_bytes());
    let first = (8 * shift).div_ceil(6);
    let end = (8 * (shift + secret.len())) / 6;
    if end <= first || end - first < MIN_UNALIGNED_BASE64_LEN {
        return None;
    }
    Some(Zeroizing::new(encoded[first..end].to_vec()))
}

/// Start offsets of every (possibly overlapping) occurrence of `needle` in `haystack`.
fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let first = needle.first().copied();
    haystack
        .windows(needle.len().max(1))
        .enumerate()
        .filter(move |(_, w)| Some(w[0]) == first && *w == needle)
        .map(|(i, _)| i)
}

/// Copies `data`, replacing each maximal run of masked bytes with one [`MARKER`].
fn apply_mask(data: &[u8], mask: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut in_span = false;
    for (byte, &masked) in data.iter().zip(mask) {
        if masked && !in_span {
            out.extend_from_slice(MARKER);
        }
        if !masked {
            out.push(*byte);
        }
        in_span = masked;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secrets: &[&[u8]]) -> Redactor {
        let r = Redactor::new();
        for s in secrets {
            r.add_secret(s).unwrap();
        }
        r
    }

    fn r(red: &Redactor, s: &str) -> String {
        red.redact_str(s)
    }

    #[test]
    fn redacts_raw_value_everywhere() {
        let red = redactor(&[b"hunter22"]);
        assert_eq!(
            r(&red, "pw=hunter22, again hunter22."),
            "pw=[REDACTED], again [REDACTED]."
        );
        assert_eq!(r(&red, "nothing here"), "nothing here");
    }

    #[test]
    fn redacts_standard_base64_with_and_without_padding() {
        let red = redactor(&[b"hunter2"]);
        let padded = STANDARD.encode("hunter2");
        assert!(padded.ends_with('='));
        assert_eq!(r(&red, &format!("x {padded} y")), "x [REDACTED] y");
        let bare = STANDARD_NO_PAD.encode("hunter2");
        assert_eq!(r(&red, &format!("x {bare}\n")), "x [REDACTED]\n");
    }

    #[test]
    fn redacts_url_safe_base64() {
        // Bytes chosen so standard and URL-safe encodings differ ('+/' vs '-_').
        let secret = [0xfbu8, 0xff, 0xfe, 0x01, 0x02];
        let red = redactor(&[&secret]);
        let url = URL_SAFE.encode(secret);
        assert_ne!(url, STANDARD.encode(secret));
        assert_eq!(r(&red, &format!("<{url}>")), "<[REDACTED]>");
        assert_eq!(
            r(&red, &format!("<{}>", URL_SAFE_NO_PAD.encode(secret))),
            "<[REDACTED]>"
        );
    }

    #[test]
    fn redacts_lower_and_upper_hex() {
        let red = redactor(&[b"s3cr3t!"]);
        let lower = hex::encode("s3cr3t!");
        assert_eq!(r(&red, &format!("a{lower}b")), "a[REDACTED]b");
        assert_eq!(
            r(&red, &format!("a{}b", lower.to_uppercase())),
            "a[REDACTED]b"
        );
    }

    #[test]
    fn redacts_secret_base64_encoded_inside_longer_value() {
        let red = redactor(&[b"correct horse battery"]);
        for prefix in ["", "u:", "ab:", "abc:", "admin:"] {
            let encoded = STANDARD.encode(format!("{prefix}correct horse battery"));
            let out = r(&red, &encoded);
            assert!(out.contains("[REDACTED]"), "prefix {prefix:?}: {out}");
            // No more than the few boundary characters survive.
            assert!(
                out.len() <= "[REDACTED]".len() + 8 + prefix.len() * 2,
                "{out}"
            );
        }
    }

    #[test]
    fn merges_overlapping_secrets_into_one_marker() {
        let red = redactor(&[b"abcdef", b"defghi"]);
        assert_eq!(r(&red, "xxabcdefghiyy"), "xx[REDACTED]yy");
        // Overlapping occurrences of the same secret.
        let red = redactor(&[b"aaaa"]);
        assert_eq!(r(&red, "baaaaaab"), "b[REDACTED]b");
    }

    #[test]
    fn longer_secret_containing_shorter_is_fully_redacted() {
        let red = redactor(&[b"pass", b"password123"]);
        assert_eq!(
            r(&red, "my password123 and pass"),
            "my [REDACTED] and [REDACTED]"
        );
    }

    #[test]
    fn short_secrets_are_registered_and_empty_is_ignored() {
        let red = redactor(&[b"", b"ab"]);
        assert_eq!(r(&red, "xabx"), "x[REDACTED]x");
        assert_eq!(r(&Redactor::new(), "xabx"), "xabx");
        assert!(Redactor::new().is_empty());
        let red = redactor(&[b""]);
        assert!(red.is_empty());
    }

    #[test]
    fn clones_share_registered_secrets() {
        let a = Redactor::new();
        let b = a.clone();
        a.add_secret(b"shared-secret").unwrap();
        assert_eq!(r(&b, "shared-secret"), "[REDACTED]");
    }

    #[test]
    fn truncated_output_hides_leading_fragment_of_secret() {
        let red = redactor(&[b"topsecretvalue"]);
        assert_eq!(red.redact_truncated(b"out: topsec"), b"out: [REDACTED]");
        assert_eq!(red.redact_truncated(b"out: none"), b"out: none");
        // Plain redact leaves fragments alone (not cut output).
        assert_eq!(red.redact(b"out: topsec"), b"out: topsec");
    }

    #[test]
    fn handles_binary_and_non_utf8_data() {
        let red = redactor(&[&[0xff, 0x00, 0xfe, 0x10]]);
        assert_eq!(
            red.redact(&[1, 0xff, 0x00, 0xfe, 0x10, 2]),
            b"\x01[REDACTED]\x02"
        );
    }

    #[test]
    fn debug_output_does_not_reveal_secrets() {
        let red = redactor(&[b"debug-secret"]);
        let dbg = format!("{red:?}");
        assert!(!dbg.contains("debug-secret"), "{dbg}");
    }

    #[test]
    fn refuses_more_patterns_than_cap() {
        let red = Redactor::new();
        let mut result = Ok(());
        for i in 0..MAX_PATTERNS {
            result = red.add_secret(format!("secret-{i:08}").as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(RedactError::TooManyPatterns)));
    }
}
