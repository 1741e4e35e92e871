//! API token format, generation and hashing.
//!
//! A token is `wdn_<id>_<secret>`: `id` is 16 lowercase hex digits (8 random bytes) and
//! names the stored record; `secret` is 64 lowercase hex digits (32 bytes from the OS
//! RNG). Only SHA-256 of the secret is stored. A fast hash is enough here because the
//! secret is 256 random bits, not a password: there is nothing to brute-force, so a stolen
//! database yields no usable token.

use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Token prefix; makes leaked tokens easy to recognise for secret scanners.
pub const PREFIX: &str = "wdn_";
/// Hex digits of the token id.
pub const ID_HEX_LEN: usize = 16;
/// Hex digits of the token secret (32 bytes).
pub const SECRET_HEX_LEN: usize = 64;
/// Longest token string looked at. A request controls the presented token; anything longer
/// than a real token is refused before parsing or hashing, so a huge header costs nothing.
pub const MAX_TOKEN_LEN: usize = 128;

/// A freshly generated token: its public id, the whole token (shown once) and the hash to
/// store.
pub(super) struct Fresh {
    pub id: String,
    pub token: SecretString,
    pub hash_hex: String,
}

/// Generates a token from the OS RNG.
pub(super) fn generate() -> Fresh {
    let mut id = [0u8; ID_HEX_LEN / 2];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let id = hex::encode(id);
    let mut secret = Zeroizing::new([0u8; SECRET_HEX_LEN / 2]);
    rand::rngs::OsRng.fill_bytes(secret.as_mut());
    let secret_hex = Zeroizing::new(hex::encode(secret.as_ref()));
    let hash_hex = hex::encode(hash_secret(&secret_hex));
    let token = SecretString::from(format!("{PREFIX}{id}_{}", secret_hex.as_str()));
    Fresh {
        id,
        token,
        hash_hex,
    }
}

/// A presented token split into its id and secret; the secret stays borrowed from the
/// caller's buffer and is never copied.
pub(super) struct Parsed<'a> {
    pub id: &'a str,
    secret: &'a str,
}

impl Parsed<'_> {
    /// SHA-256 of the presented secret.
    pub fn secret_hash(&self) -> [u8; 32] {
        hash_secret(self.secret)
    }
}

/// Splits a presented token; `None` for anything that is not exactly the format.
pub(super) fn parse(token: &str) -> Option<Parsed<'_>> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = |s: &str, len: usize| s.len() == len && s.bytes().all(is_lower_hex);
    (ok(id, ID_HEX_LEN) && ok(secret, SECRET_HEX_LEN)).then_some(Parsed { id, secret })
}

/// Whether `id` has the shape of a token id (used to refuse junk keys early).
pub(super) fn is_valid_id(id: &str) -> bool {
    id.len() == ID_HEX_LEN && id.bytes().all(is_lower_hex)
}

/// Constant-time comparison of a presented secret's hash with the stored hex hash. A
/// stored hash that does not decode compares unequal.
pub(super) fn hash_matches(presented: &[u8; 32], stored_hex: &str) -> bool {
    let mut stored = [0u8; 32];
    if hex::decode_to_slice(stored_hex, &mut stored).is_err() {
        // Still do the comparison so a corrupt record costs the same time as a wrong secret.
        let _ = presented.ct_eq(&[0u8; 32]);
        return false;
    }
    presented.ct_eq(&stored).into()
}

fn hash_secret(secret_hex: &str) -> [u8; 32] {
    Sha256::digest(secret_hex.as_bytes()).into()
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// The secret part of an issued token, for tests that look for it on disk.
#[cfg(test)]
pub(super) fn secret_of(token: &SecretString) -> String {
    use secrecy::ExposeSecret;
    token
        .expose_secret()
        .rsplit('_')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn generated_tokens_have_the_documented_shape_and_hash() {
        let fresh = generate();
        let token = fresh.token.expose_secret();
        assert_eq!(token.len(), PREFIX.len() + ID_HEX_LEN + 1 + SECRET_HEX_LEN);
        let parsed = parse(token).unwrap();
        assert_eq!(parsed.id, fresh.id);
        assert!(hash_matches(&parsed.secret_hash(), &fresh.hash_hex));
        assert_ne!(generate().id, fresh.id);
    }

    #[test]
    fn parse_refuses_anything_but_the_exact_format() {
        let good = format!("wdn_{}_{}", "a".repeat(16), "b".repeat(64));
        assert!(parse(&good).is_some());
        for bad in [
            String::new(),
            format!("wdx_{}_{}", "a".repeat(16), "b".repeat(64)),
            format!("wdn_{}_{}", "a".repeat(15), "b".repeat(64)),
            format!("wdn_{}_{}", "a".repeat(16), "b".repeat(63)),
            format!("wdn_{}_{}", "A".repeat(16), "b".repeat(64)),
            format!("wdn_{}_{}", "a".repeat(16), "g".repeat(64)),
            format!("wdn_{}{}", "a".repeat(16), "b".repeat(64)),
            format!("wdn_{}_{}_", "a".repeat(16), "b".repeat(64)),
            format!("wdn_{}_{}", "a".repeat(16), "b".repeat(200)),
        ] {
            assert!(parse(&bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn hash_mismatch_and_corrupt_stored_hash_do_not_match() {
        let fresh = generate();
        let other = generate();
        let parsed = parse(other.token.expose_secret()).unwrap();
        assert!(!hash_matches(&parsed.secret_hash(), &fresh.hash_hex));
        assert!(!hash_matches(&parsed.secret_hash(), "zz"));
    }
}
