//! AEAD primitives for the vault: ChaCha20-Poly1305 with random nonces, and the associated
//! data that binds a ciphertext to its record.
//!
//! Threat: an attacker with the database edits, swaps or moves ciphertexts. Every seal is
//! authenticated, and its associated data names what it belongs to, so a ciphertext opens only
//! under the right key, in the right role, for the right record. Plaintext lives only in
//! zeroizing buffers, and encryption happens in place so no unzeroized copy is left behind.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Length of every symmetric key (master and data keys): 256 bits.
pub(crate) const KEY_LEN: usize = 32;
/// ChaCha20-Poly1305 nonce length: 96 bits, random per seal.
const NONCE_LEN: usize = 12;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;

/// A symmetric key held in a buffer that is wiped on drop.
pub(crate) type SymmetricKey = Zeroizing<[u8; KEY_LEN]>;

/// Deliberately carries no detail: which check failed is of use only to an attacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CryptoError;

/// One AEAD ciphertext with its nonce, base64 in the stored JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sealed {
    pub nonce: String,
    pub ciphertext: String,
}

/// A fresh random 256-bit key from the OS generator.
pub(crate) fn random_key() -> SymmetricKey {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    OsRng.fill_bytes(key.as_mut());
    key
}

/// Encrypts `plaintext` under `key` with a random nonce, authenticating `aad`.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Sealed, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    // Reserve room for the tag up front so the buffer never reallocates (and so never leaves
    // a stray plaintext copy in freed memory).
    let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
    buffer.extend_from_slice(plaintext);
    cipher(key)
        .encrypt_in_place(Nonce::from_slice(&nonce), aad, &mut *buffer)
        .map_err(|_| CryptoError)?;
    Ok(Sealed {
        nonce: BASE64.encode(nonce),
        ciphertext: BASE64.encode(buffer.as_slice()),
    })
}

/// Decrypts and authenticates `sealed`; the plaintext is returned in a zeroizing buffer.
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    sealed: &Sealed,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let nonce = BASE64.decode(&sealed.nonce).map_err(|_| CryptoError)?;
    if nonce.len() != NONCE_LEN {
        return Err(CryptoError);
    }
    let mut buffer = Zeroizing::new(BASE64.decode(&sealed.ciphertext).map_err(|_| CryptoError)?);
    cipher(key)
        .decrypt_in_place(Nonce::from_slice(&nonce), aad, &mut *buffer)
        .map_err(|_| CryptoError)?;
    Ok(buffer)
}

/// Opens a sealed key: exactly [`KEY_LEN`] bytes or an error.
pub(crate) fn open_key(
    key: &[u8; KEY_LEN],
    sealed: &Sealed,
    aad: &[u8],
) -> Result<SymmetricKey, CryptoError> {
    let plaintext = open(key, sealed, aad)?;
    let mut unwrapped = Zeroizing::new([0u8; KEY_LEN]);
    if plaintext.len() != KEY_LEN {
        return Err(CryptoError);
    }
    unwrapped.copy_from_slice(&plaintext);
    Ok(unwrapped)
}

fn cipher(key: &[u8; KEY_LEN]) -> ChaCha20Poly1305 {
    // The cipher zeroizes its copy of the key on drop.
    ChaCha20Poly1305::new(Key::from_slice(key))
}

/// Unambiguous associated data: a role label, then each field length-prefixed, so no two
/// different field lists (e.g. name "ab" + user "c" vs "a" + "bc") encode the same.
pub(crate) fn associated_data(label: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    for part in std::iter::once(label.as_bytes()).chain(fields.iter().copied()) {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_matching_key_and_aad() {
        let key = random_key();
        let sealed = seal(&key, b"hunter2", b"aad").unwrap();
        assert_eq!(open(&key, &sealed, b"aad").unwrap().as_slice(), b"hunter2");
    }

    #[test]
    fn rejects_wrong_key_wrong_aad_and_flipped_bits() {
        let key = random_key();
        let sealed = seal(&key, b"hunter2", b"aad").unwrap();
        assert_eq!(open(&random_key(), &sealed, b"aad"), Err(CryptoError));
        assert_eq!(open(&key, &sealed, b"aae"), Err(CryptoError));
        let mut bytes = BASE64.decode(&sealed.ciphertext).unwrap();
        bytes[0] ^= 1;
        let flipped = Sealed {
            ciphertext: BASE64.encode(bytes),
            ..sealed.clone()
        };
        assert_eq!(open(&key, &flipped, b"aad"), Err(CryptoError));
    }

    #[test]
    fn rejects_malformed_nonce_or_base64() {
        let key = random_key();
        let sealed = seal(&key, b"x", b"").unwrap();
        let short = Sealed {
            nonce: BASE64.encode([0u8; 8]),
            ..sealed.clone()
        };
        assert_eq!(open(&key, &short, b""), Err(CryptoError));
        let garbage = Sealed {
            ciphertext: "!!".into(),
            ..sealed
        };
        assert_eq!(open(&key, &garbage, b""), Err(CryptoError));
    }

    #[test]
    fn nonces_are_fresh_per_seal() {
        let key = random_key();
        let a = seal(&key, b"same", b"").unwrap();
        let b = seal(&key, b"same", b"").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn open_key_rejects_plaintext_of_wrong_length() {
        let key = random_key();
        let sealed = seal(&key, &[1u8; 31], b"").unwrap();
        assert_eq!(open_key(&key, &sealed, b""), Err(CryptoError));
    }

    #[test]
    fn associated_data_is_unambiguous() {
        assert_ne!(
            associated_data("l", &[b"ab", b"c"]),
            associated_data("l", &[b"a", b"bc"])
        );
        assert_ne!(
            associated_data("l1", &[b"a"]),
            associated_data("l2", &[b"a"])
        );
    }
}
