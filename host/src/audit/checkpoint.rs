//! The signed head checkpoint.
//!
//! The hash chain alone is keyless: anyone with write access to the database could rewrite a
//! suffix and recompute every hash, or append forged records, or cut the tail off. The writer
//! therefore signs the chain head `{seq, hash}` with the host's ed25519 key after every batch,
//! in the same commit as the records. A verifier holding only the public key can then
//! tell that the last record is the one the host last wrote. (It cannot detect a rollback to an
//! older, genuinely signed state of the whole database; that needs the head anchored outside
//! it, e.g. exported to a remote log.)

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separation: the signature cannot be replayed as any other Warden signature.
const SIGNING_CONTEXT: &[u8] = b"warden-audit-checkpoint-v1\0";

/// The `(seq, hash)` a stored checkpoint signs, if its bytes decode and `key` signed them.
pub fn authentic_head(bytes: &[u8], key: &VerifyingKey) -> Option<(u64, String)> {
    let checkpoint: Checkpoint = serde_json::from_slice(bytes).ok()?;
    checkpoint
        .is_authentic(key)
        .then_some((checkpoint.seq, checkpoint.hash))
}

/// The signed claim "the chain ends at record `seq`, whose hash is `hash`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub seq: u64,
    /// Hex SHA-256 of the head record.
    pub hash: String,
    /// Hex ed25519 signature over [`signed_message`].
    pub signature: String,
}

impl Checkpoint {
    pub(crate) fn sign(key: &SigningKey, seq: u64, hash: &str) -> Self {
        let signature = key.sign(&signed_message(seq, hash));
        Self {
            seq,
            hash: hash.to_owned(),
            signature: hex::encode(signature.to_bytes()),
        }
    }

    /// True only if `signature` is a valid signature by `key` over `{seq, hash}`.
    pub(crate) fn is_authentic(&self, key: &VerifyingKey) -> bool {
        let Ok(bytes) = hex::decode(&self.signature) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        // Strict verification rejects malleable signatures and small-order keys.
        key.verify_strict(&signed_message(self.seq, &self.hash), &signature)
            .is_ok()
    }
}

/// `context || seq (big-endian) || hash (hex text)`: fixed-length fields, so unambiguous.
fn signed_message(seq: u64, hash: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + 8 + hash.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash.as_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn accepts_checkpoint_signed_by_the_key() {
        let checkpoint = Checkpoint::sign(&key(1), 4, &"a".repeat(64));
        assert!(checkpoint.is_authentic(&key(1).verifying_key()));
    }

    #[test]
    fn rejects_checkpoint_signed_by_another_key() {
        let checkpoint = Checkpoint::sign(&key(2), 4, &"a".repeat(64));
        assert!(!checkpoint.is_authentic(&key(1).verifying_key()));
    }

    #[test]
    fn rejects_checkpoint_with_edited_seq_or_hash() {
        let vk = key(1).verifying_key();
        let mut moved = Checkpoint::sign(&key(1), 4, &"a".repeat(64));
        moved.seq = 3;
        assert!(!moved.is_authentic(&vk));
        let mut rehashed = Checkpoint::sign(&key(1), 4, &"a".repeat(64));
        rehashed.hash = "b".repeat(64);
        assert!(!rehashed.is_authentic(&vk));
    }

    #[test]
    fn rejects_checkpoint_with_garbage_signature() {
        let mut checkpoint = Checkpoint::sign(&key(1), 4, &"a".repeat(64));
        checkpoint.signature = "zz".into();
        assert!(!checkpoint.is_authentic(&key(1).verifying_key()));
        checkpoint.signature = "00".repeat(10);
        assert!(!checkpoint.is_authentic(&key(1).verifying_key()));
    }
}
