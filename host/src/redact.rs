//! Redaction of secret values from bytes that leave the host's trust boundary.
//!
//! Threat: a command echoes a secret it was given (a password typed into `sudo`, a key it
//! printed, a config file it cat'ed), possibly encoded, and the output flows to the guest, the
//! run output, logs or audit. Every secret a run touches is registered here, and every byte
//! string on its way out passes through [`Redactor::redact`], which replaces each occurrence of
//! a secret, or of one of its common encodings, with `[REDACTED]`.
//!
//! Second threat: redaction itself as an oracle. A task controls most of the bytes that are
//! redacted (it chose the command), so anything redaction does that depends on a *partial*
//! match would tell it whether its guess is the start of a secret. Two rules close that:
//! - only full occurrences of a registered form are ever replaced; a fragment is never
//!   treated differently from any other text;
//! - output that was cut at a size cap ([`Redactor::redact_truncated`]) always loses its last
//!   [`Redactor::withheld_at_cut`] bytes, whatever they are. That amount is a function of the
//!   registered lengths only, rounded up to [`CUT_WITHHOLD_BLOCK`] (so the lengths of
//!   secrets up to 256 bytes are not revealed either, nor whether any secret is registered),
//!   and is never less than the longest registered form minus one, so an occurrence that
//!   the cap cut in two lies wholly in the withheld tail.
//!
//! Timing: the scan is a Rabin–Karp rolling hash (modulo 2^61−1, with a random base chosen
//! per redactor and never shown). Every window of every registered length costs the same
//! arithmetic, branch-free; bytes are compared only when the whole window's hash equals a
//! form's hash, i.e. for a full match (or a collision the task cannot aim for, probability
//! about `len / 2^61`). A window that shares a prefix with a secret therefore costs exactly
//! what a window that shares nothing costs. (A byte-by-byte comparison that stops at the
//! first difference, as the previous version did, runs longer the more of a guess is right.)
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
//! a long secret), other encodings (URL-encoding, rot13, reversed text), a secret transformed
//! by the command, and a secret emitted in pieces each shorter than a full form (two calls
//! that each print half, or one half on stdout and one on stderr): a piece cannot be told
//! apart from ordinary text without becoming the oracle described above. The final strings
//! of a run (result, error, log lines, captured stdio) are redacted again as a whole, which
//! catches pieces a task joined back together there. Secrets of any non-zero length are
//! registered, including very short ones: a short secret over-redacts matching text, which
//! is the safe failure. The empty secret is ignored since it would match everywhere.
//!
//! Overlapping or adjacent occurrences are merged into one `[REDACTED]`, so no byte of any
//! registered form survives, whichever form matched first.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::{Zeroize, Zeroizing};

/// What replaces each redacted span.
pub const MARKER: &[u8] = b"[REDACTED]";

/// The shortest unaligned base64 core registered. Shorter cores (from 1–3 byte secrets)
/// would match ordinary base64 text everywhere and destroy output for no protection gain.
pub const MIN_UNALIGNED_BASE64_LEN: usize = 4;

/// Most patterns one redactor holds (about 11 per secret). Bounds redaction cost per output
/// byte against a run that registers secrets without limit.
pub const MAX_PATTERNS: usize = 4096;

/// Granularity of the tail withheld from cut output. Withholding a multiple of this (at
/// least one block) hides the registered secrets' lengths up to `CUT_WITHHOLD_BLOCK / 2`
/// bytes (their hex form is the longest) from a task that measures how much was withheld.
pub const CUT_WITHHOLD_BLOCK: usize = 512;

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
    patterns: Arc<RwLock<Patterns>>,
}

/// The registered forms, and their hashes grouped by length for the rolling scan.
struct Patterns {
    forms: Vec<Zeroizing<Vec<u8>>>,
    /// Length → (base^(length−1) mod P, [(hash, index into `forms`)]).
    by_len: BTreeMap<usize, (u64, Vec<(u64, usize)>)>,
    /// The hash's secret base, in `[256, P)`.
    base: u64,
}

impl Default for Patterns {
    fn default() -> Self {
        use rand::Rng;
        Patterns {
            forms: Vec::new(),
            by_len: BTreeMap::new(),
            base: rand::thread_rng().gen_range(256..P),
        }
    }
}

impl Drop for Patterns {
    fn drop(&mut self) {
        // The hashes are a function of the secrets under `base`; wipe them with the forms.
        self.base.zeroize();
        for (pow, entries) in self.by_len.values_mut() {
            pow.zeroize();
            entries.iter_mut().for_each(|(h, _)| h.zeroize());
        }
    }
}

impl Patterns {
    fn longest(&self) -> usize {
        self.by_len.keys().next_back().copied().unwrap_or(0)
    }

    fn insert(&mut self, form: Zeroizing<Vec<u8>>) {
        let hash = hash(&form, self.base);
        let len = form.len();
        let base = self.base;
        let entry = self
            .by_len
            .entry(len)
            .or_insert_with(|| (pow(base, len - 1), Vec::new()));
        entry.1.push((hash, self.forms.len()));
        self.forms.push(form);
    }

    /// Marks every full occurrence of every form. See the module docs for why this is a
    /// rolling hash and not a byte comparison.
    fn mark(&self, data: &[u8], mask: &mut [bool]) {
        for (&len, (top, entries)) in &self.by_len {
            if len == 0 || len > data.len() {
                continue;
            }
            let mut h = hash(&data[..len], self.base);
            for start in 0..=data.len() - len {
                if start > 0 {
                    let out = mul(u64::from(data[start - 1]), *top);
                    h = add(
                        mul(sub(h, out), self.base),
                        u64::from(data[start + len - 1]),
                    );
                }
                for &(form_hash, index) in entries {
                    let window = &data[start..start + len];
                    if h == form_hash && window == self.forms[index].as_slice() {
                        mask[start..start + len].fill(true);
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.read().forms.len())
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
            .filter(|f| !patterns.forms.contains(f))
            .collect();
        if patterns.forms.len() + new.len() > MAX_PATTERNS {
            return Err(RedactError::TooManyPatterns);
        }
        for form in new {
            patterns.insert(form);
        }
        Ok(())
    }

    /// True if no secret is registered.
    pub fn is_empty(&self) -> bool {
        self.read().forms.is_empty()
    }

    /// Replaces every full occurrence of every registered form with [`MARKER`].
    pub fn redact(&self, data: &[u8]) -> Vec<u8> {
        let mut mask = vec![false; data.len()];
        self.read().mark(data, &mut mask);
        apply_mask(data, &mask)
    }

    /// Like [`Redactor::redact`], for output that was cut at a size cap: the last
    /// [`Redactor::withheld_at_cut`] bytes are always dropped, whatever they are, so a secret
    /// the cap cut in two leaves no visible start and nothing depends on a partial match.
    /// The caller reports the output as truncated.
    pub fn redact_truncated(&self, data: &[u8]) -> Vec<u8> {
        let patterns = self.read();
        let mut mask = vec![false; data.len()];
        // Full occurrences are found over everything that arrived, so one that straddles
        // the withheld tail is still masked in the part that is kept.
        patterns.mark(data, &mut mask);
        let keep = data.len().saturating_sub(withheld(patterns.longest()));
        apply_mask(&data[..keep], &mask[..keep])
    }

    /// How many trailing bytes [`Redactor::redact_truncated`] withholds: the longest
    /// registered form minus one, rounded up to a whole number of [`CUT_WITHHOLD_BLOCK`]s,
    /// and one block when nothing is registered.
    pub fn withheld_at_cut(&self) -> usize {
        withheld(self.read().longest())
    }

    /// [`Redactor::redact`] for text; invalid UTF-8 produced by a cut is replaced lossily.
    pub fn redact_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.redact(text.as_bytes())).into_owned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Patterns> {
        // A poisoned lock only means another thread panicked mid-insert; the patterns are
        // still valid, and refusing to redact would be the unsafe choice.
        self.patterns.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Patterns> {
        self.patterns.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn withheld(longest: usize) -> usize {
    longest
        .saturating_sub(1)
        .max(1)
        .div_ceil(CUT_WITHHOLD_BLOCK)
        .saturating_mul(CUT_WITHHOLD_BLOCK)
}

/// The Mersenne prime 2^61 − 1: products of two residues fit in a `u128` and reduce with
/// shifts and masks, with no data-dependent branch.
const P: u64 = (1 << 61) - 1;

/// `x mod P` for `x < 2P`, branch-free.
fn reduce(x: u64) -> u64 {
    let y = x.wrapping_sub(P);
    // All ones when `y` wrapped (x < P), else zero.
    let wrapped = 0u64.wrapping_sub(y >> 63);
    y.wrapping_add(P & wrapped)
}

fn add(a: u64, b: u64) -> u64 {
    reduce(a + b)
}

fn sub(a: u64, b: u64) -> u64 {
    reduce(a + P - b)
}

fn mul(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    // Both halves are below 2^61, so their sum is below 2P.
    let low = (product as u64) & P;
    let high = (product >> 61) as u64;
    reduce(low + high)
}

fn pow(base: u64, exp: usize) -> u64 {
    (0..exp).fold(1, |acc, _| mul(acc, base))
}

/// The polynomial hash `Σ bytes[i]·base^(n−1−i) mod P`.
fn hash(bytes: &[u8], base: u64) -> u64 {
    bytes
        .iter()
        .fold(0, |h, &b| add(mul(h, base), u64::from(b)))
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
    fn cut_output_withholds_a_fixed_tail_and_never_reacts_to_a_fragment() {
        let red = redactor(&[b"topsecretvalue"]);
        let w = red.withheld_at_cut();
        assert_eq!(w, CUT_WITHHOLD_BLOCK);
        let pad = vec![b'x'; 2000];
        let mut right = pad.clone();
        right.extend_from_slice(b"topsec");
        let mut wrong = pad.clone();
        wrong.extend_from_slice(b"xopsec");
        let (r, w2) = (red.redact_truncated(&right), red.redact_truncated(&wrong));
        assert_eq!(r, w2, "a right guess and a wrong one look the same");
        assert_eq!(r, &right[..right.len() - w]);
        // Uncut output keeps fragments as the text they are.
        assert_eq!(red.redact(b"out: topsec"), b"out: topsec");
        // Shorter than the withheld tail: nothing is left.
        assert_eq!(red.redact_truncated(b"out: topsec"), b"");
    }

    #[test]
    fn no_prefix_of_any_form_changes_cut_output() {
        let secret = b"correct-horse-battery";
        let red = redactor(&[secret]);
        let mut forms: Vec<Vec<u8>> = vec![secret.to_vec(), hex::encode(secret).into_bytes()];
        forms.push(hex::encode_upper(secret).into_bytes());
        forms.push(STANDARD.encode(secret).into_bytes());
        forms.push(URL_SAFE_NO_PAD.encode(secret).into_bytes());
        for form in forms {
            for cap in [600, 700, 1500] {
                for n in 1..form.len() {
                    let mut right = vec![b'.'; cap - n];
                    right.extend_from_slice(&form[..n]);
                    let mut wrong = vec![b'.'; cap - n];
                    wrong.extend(form[..n].iter().map(|b| b ^ 0x20));
                    assert_eq!(
                        red.redact_truncated(&right),
                        red.redact_truncated(&wrong),
                        "prefix of {n} bytes, cap {cap}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_full_match_straddling_the_withheld_tail_is_masked_in_the_kept_part() {
        let red = redactor(&[b"hunter22"]);
        let w = red.withheld_at_cut();
        let mut data = vec![b'a'; 100];
        data.extend_from_slice(b"hunter22");
        data.extend(vec![b'b'; w - 4]);
        assert_eq!(
            red.redact_truncated(&data),
            [&[b'a'; 100][..], MARKER].concat()
        );
    }

    #[test]
    fn withheld_amount_depends_on_lengths_only_in_whole_blocks() {
        assert_eq!(Redactor::new().withheld_at_cut(), CUT_WITHHOLD_BLOCK);
        assert_eq!(redactor(&[b"a"]).withheld_at_cut(), CUT_WITHHOLD_BLOCK);
        let longest_hidden = vec![b'k'; CUT_WITHHOLD_BLOCK / 2];
        assert_eq!(
            redactor(&[&longest_hidden]).withheld_at_cut(),
            CUT_WITHHOLD_BLOCK
        );
        // A 300-byte secret: hex is 600 bytes, so 599 must be withheld: two blocks.
        let key = vec![b'k'; 300];
        let red = redactor(&[&key]);
        assert_eq!(red.withheld_at_cut(), 2 * CUT_WITHHOLD_BLOCK);
        let mut data = vec![b'.'; 4000];
        data.extend_from_slice(hex::encode(&key[..299]).as_bytes());
        let out = red.redact_truncated(&data);
        assert!(
            !out.windows(8).any(|w| w == b"6b6b6b6b"),
            "no hex of the key is left"
        );
    }

    /// The rolling-hash scan finds exactly what a naive search finds.
    #[test]
    fn rolling_scan_agrees_with_naive_search() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let secret: Vec<u8> = (0..rng.gen_range(1..12))
                .map(|_| rng.gen_range(b'a'..b'e'))
                .collect();
            let data: Vec<u8> = (0..rng.gen_range(0..300))
                .map(|_| rng.gen_range(b'a'..b'e'))
                .collect();
            let red = redactor(&[&secret]);
            let mut expected = vec![false; data.len()];
            for form in encoded_forms(&secret) {
                for start in 0..data.len().saturating_sub(form.len() - 1) {
                    if data[start..start + form.len()] == form[..] {
                        expected[start..start + form.len()].fill(true);
                    }
                }
            }
            assert_eq!(
                red.redact(&data),
                apply_mask(&data, &expected),
                "{secret:?} in {data:?}"
            );
        }
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
