//! Standard Webhooks signature verification for inbound events: `webhook-id`,
//! `webhook-timestamp` (Unix seconds) and `webhook-signature` (space-separated `v1,<base64
//! HMAC-SHA256>` or `v1a,<base64 ed25519>`), over `{id}.{timestamp}.{body}`.
//!
//! Threat: forging an event by measuring how long a wrong signature takes to refuse, or by
//! making the verifier parse something huge first. Every `v1` candidate is compared with
//! [`subtle`] (no early exit on the first differing byte) and all candidates are checked, so
//! the time depends only on how many signatures the header carries (capped) and never on
//! how close a guess is. Header sizes and counts are capped before any decoding; an unknown
//! trigger is "verified" against a random key so it costs the same work.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Longest `webhook-id`. It becomes a storage key for the replay check.
pub const MAX_ID_BYTES: usize = 256;
/// Longest `webhook-signature` header, and most signatures in it. Bounds the work per event.
pub const MAX_SIGNATURE_HEADER: usize = 4096;
pub const MAX_SIGNATURES: usize = 8;
/// Length of a freshly generated HMAC key (the spec allows 24 to 64 bytes).
pub const SECRET_BYTES: usize = 32;

/// The key an event is checked against.
pub enum Verifier {
    Hmac(Zeroizing<Vec<u8>>),
    Ed25519(VerifyingKey),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verifier::Hmac(_) => f.write_str("Verifier::Hmac(..)"),
            Verifier::Ed25519(k) => write!(f, "Verifier::Ed25519({})", B64.encode(k.as_bytes())),
        }
    }
}

/// The three headers of one event, as received.
#[derive(Clone, Copy, Debug)]
pub struct Headers<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// Why an event's signature headers were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// Missing or malformed headers, or no signature verifies.
    BadSignature,
    /// A valid signature over a timestamp outside the tolerance.
    Stale,
}

/// A new HMAC key and its `whsec_` text (shown to the creator once).
pub fn generate_secret() -> (Zeroizing<Vec<u8>>, Zeroizing<String>) {
    use rand::RngCore;
    let mut key = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    rand::rngs::OsRng.fill_bytes(&mut key);
    let text = Zeroizing::new(format!("whsec_{}", B64.encode(key.as_slice())));
    (key, text)
}

/// A standard-base64 ed25519 public key (32 bytes), or `None`.
pub fn parse_public_key(text: &str) -> Option<VerifyingKey> {
    let bytes = B64.decode(text.trim()).ok()?;
    let bytes: [u8; 32] = bytes.as_slice().try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Checks the headers' shape: an id of printable ASCII, a decimal timestamp, a bounded
/// signature list. Cheap, and the same for every trigger.
pub fn well_formed(h: &Headers<'_>) -> Option<i64> {
    let id_ok = !h.id.is_empty()
        && h.id.len() <= MAX_ID_BYTES
        && h.id.bytes().all(|b| b.is_ascii_graphic());
    if !id_ok || h.signature.len() > MAX_SIGNATURE_HEADER || h.timestamp.len() > 20 {
        return None;
    }
    if !h.timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    h.timestamp.parse().ok()
}

/// Whether one signature in the header verifies over `{id}.{timestamp}.{body}`, then
/// whether the timestamp is within `tolerance_secs` of `now_secs` (either way).
pub fn verify(
    verifier: &Verifier,
    h: &Headers<'_>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let Some(timestamp) = well_formed(h) else {
        return Err(SignatureError::BadSignature);
    };
    let mut content = Vec::with_capacity(h.id.len() + h.timestamp.len() + body.len() + 2);
    content.extend_from_slice(h.id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(h.timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    if !signature_matches(verifier, &content, h.signature) {
        return Err(SignatureError::BadSignature);
    }
    let tolerance = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
    if now_secs.abs_diff(timestamp) > tolerance.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// True if any of the header's signatures of the verifier's kind is valid. Every candidate
/// is checked (no short-circuit), each in constant time.
fn signature_matches(verifier: &Verifier, content: &[u8], header: &str) -> bool {
    let candidates = header
        .split(' ')
        .filter(|p| !p.is_empty())
        .take(MAX_SIGNATURES);
    match verifier {
        Verifier::Hmac(key) => {
            let Ok(mut mac) = Hmac::<sha2_11::Sha256>::new_from_slice(key) else {
                return false;
            };
            mac.update(content);
            let expected = mac.finalize().into_bytes();
            let mut found = subtle::Choice::from(0);
            for part in candidates {
                let Some(b64) = part.strip_prefix("v1,") else {
                    continue;
                };
                // Room for any 32-byte encoding; a longer one fails to decode or to match.
                let mut given = [0u8; 48];
                let decoded = b64.len() <= 64
                    && B64
                        .decode_slice(b64.as_bytes(), &mut given)
                        .is_ok_and(|n| n == 32);
                found |= given[..32].ct_eq(expected.as_slice())
                    & subtle::Choice::from(u8::from(decoded));
            }
            found.into()
        }
        Verifier::Ed25519(key) => {
            let mut found = false;
            for part in candidates {
                let Some(b64) = part.strip_prefix("v1a,") else {
                    continue;
                };
                let mut raw = [0u8; 96];
                let decoded = b64.len() <= 128
                    && B64
                        .decode_slice(b64.as_bytes(), &mut raw)
                        .is_ok_and(|n| n == 64);
                if let (true, Ok(bytes)) = (decoded, <[u8; 64]>::try_from(&raw[..64])) {
                    let sig = Signature::from_bytes(&bytes);
                    // Public-key checks leak nothing about a secret; no constant time needed.
                    found |= key.verify_strict(content, &sig).is_ok();
                }
            }
            found
        }
    }
}

/// A random key to verify events of unknown triggers against, so refusing them costs what
/// refusing a bad signature costs.
pub fn decoy() -> Verifier {
    let (key, _) = generate_secret();
    Verifier::Hmac(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn sign_v1(key: &[u8], content: &[u8]) -> String {
        let mut mac = Hmac::<sha2_11::Sha256>::new_from_slice(key).unwrap();
        mac.update(content);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn hmac_verifies_and_refuses_edits_other_keys_and_stale_times() {
        let (key, _) = generate_secret();
        let v = Verifier::Hmac(key.clone());
        let sig = sign_v1(&key, b"msg_1.1000.{}");
        let h = Headers {
            id: "msg_1",
            timestamp: "1000",
            signature: &format!("v1,AAAA {sig}"),
        };
        assert_eq!(verify(&v, &h, b"{}", 1000, 300), Ok(()));
        assert_eq!(
            verify(&v, &h, b"{ }", 1000, 300),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(verify(&v, &h, b"{}", 1301, 300), Err(SignatureError::Stale));
        assert_eq!(verify(&v, &h, b"{}", 699, 300), Err(SignatureError::Stale));
        assert_eq!(
            verify(&decoy(), &h, b"{}", 1000, 300),
            Err(SignatureError::BadSignature)
        );
        let h_other_id = Headers { id: "msg_2", ..h };
        assert_eq!(
            verify(&v, &h_other_id, b"{}", 1000, 300),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn ed25519_verifies_v1a_only() {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let v = Verifier::Ed25519(sk.verifying_key());
        let sig = B64.encode(sk.sign(b"e.5.body").to_bytes());
        let good = format!("v1a,{sig}");
        let h = Headers {
            id: "e",
            timestamp: "5",
            signature: &good,
        };
        assert_eq!(verify(&v, &h, b"body", 5, 300), Ok(()));
        let as_v1 = format!("v1,{sig}");
        let h = Headers {
            signature: &as_v1,
            ..h
        };
        assert_eq!(
            verify(&v, &h, b"body", 5, 300),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn malformed_headers_are_refused_before_any_crypto() {
        for (id, ts) in [
            ("", "1"),
            ("a b", "1"),
            ("x", "-1"),
            ("x", "1e3"),
            ("x", ""),
        ] {
            let h = Headers {
                id,
                timestamp: ts,
                signature: "v1,x",
            };
            assert!(well_formed(&h).is_none(), "{id:?} {ts:?}");
        }
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let h = Headers {
            id: &long,
            timestamp: "1",
            signature: "",
        };
        assert!(well_formed(&h).is_none());
    }
}
