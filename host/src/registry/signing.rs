//! Signed task modules: one file that carries the component, its manifest and an ed25519
//! signature by a publisher, in custom sections.
//!
//! Threat: running code (or a manifest) that no trusted publisher vouched for, or that
//! was altered after signing. The signature covers the SHA-256 of every byte of the file
//! except the signature section itself — so the component *and* the embedded manifest —
//! and only keys an admin trusted on this server verify.
//!
//! Layout (close to the WebAssembly tool-conventions signature format): the component,
//! then a custom section `warden-manifest` (the manifest as canonical JSON), then a custom
//! section `signature`:
//!
//! ```text
//! u8 spec_version = 1, u8 content_type = 1, u8 hash_fn = 1 (SHA-256)
//! varuint32 hash_count = 1: varuint32 len, hash
//!   varuint32 signature_count = 1:
//!     varuint32 len, key_id (hex of SHA-256(public key), first 16 bytes)
//!     u8 alg = 1 (Ed25519), varuint32 len, signature over "warden-module-v1:" || hash
//! ```

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::manifest::Manifest;

/// Custom section holding the manifest.
pub const MANIFEST_SECTION: &str = "warden-manifest";
/// Custom section holding the signature (the tool-conventions name).
pub const SIGNATURE_SECTION: &str = "signature";
const DOMAIN: &[u8] = b"warden-module-v1:";

/// Why a module could not be signed or verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// Not a well-formed WebAssembly binary.
    #[error("malformed module: {0}")]
    Malformed(String),
    /// Already carries Warden sections.
    #[error("the component is already signed")]
    AlreadySigned,
    /// No signature section.
    #[error("module is not signed")]
    Unsigned,
    /// Signed by a key this server does not trust.
    #[error("module is signed by an unknown publisher (key id {0})")]
    UnknownPublisher(String),
    /// The signature does not match the bytes.
    #[error("signature does not verify: the module or its manifest was changed after signing")]
    BadSignature,
    /// The embedded manifest is missing or invalid.
    #[error("embedded manifest: {0}")]
    Manifest(String),
}

/// A module whose signature verified.
#[derive(Debug)]
pub struct VerifiedModule {
    /// SHA-256 (hex) of the component without Warden's sections: the module's identity.
    pub digest: String,
    /// The signed manifest.
    pub manifest: Manifest,
    /// The publisher's name, as the server trusts it.
    pub publisher: String,
}

/// The key id of a publisher key: hex of the first 16 bytes of SHA-256(public key).
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// Publisher keys this server trusts, by key id.
#[derive(Clone, Debug, Default)]
pub struct TrustedPublishers {
    keys: BTreeMap<String, (String, VerifyingKey)>,
}

impl TrustedPublishers {
    /// Trusts `key` under `name`.
    pub fn trust(&mut self, name: &str, key: VerifyingKey) {
        self.keys.insert(key_id(&key), (name.to_string(), key));
    }

    /// True when no publisher is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Signs `component` with `manifest`, returning the one file that travels.
pub fn sign(component: &[u8], manifest: &Manifest, key: &SigningKey) -> Result<Vec<u8>, SignError> {
    let sections = parse_sections(component)?;
    if sections
        .iter()
        .any(|s| matches!(s.custom, Some(MANIFEST_SECTION | SIGNATURE_SECTION)))
    {
        return Err(SignError::AlreadySigned);
    }
    let manifest_json =
        serde_json::to_vec(manifest).map_err(|e| SignError::Manifest(e.to_string()))?;
    let mut out = component.to_vec();
    push_custom_section(&mut out, MANIFEST_SECTION, &manifest_json);
    let hash = Sha256::digest(&out);
    let signature = key.sign(&[DOMAIN, hash.as_slice()].concat());
    let mut payload = vec![1u8, 1, 1];
    push_leb(&mut payload, 1);
    push_bytes(&mut payload, &hash);
    push_leb(&mut payload, 1);
    push_bytes(&mut payload, key_id(&key.verifying_key()).as_bytes());
    payload.push(1);
    push_bytes(&mut payload, &signature.to_bytes());
    push_custom_section(&mut out, SIGNATURE_SECTION, &payload);
    Ok(out)
}

/// Verifies a signed module against the trusted publishers.
pub fn verify(signed: &[u8], trusted: &TrustedPublishers) -> Result<VerifiedModule, SignError> {
    verify_sealed(signed, trusted).map(|(verified, _)| verified)
}

/// The signature of a module whose bytes were hashed once: enough to check it again
/// against the publishers trusted *now* without reading or hashing the module again (a
/// run start re-checks it; a 17 MB component takes tens of milliseconds to hash).
#[derive(Clone, Debug)]
pub struct Seal {
    /// The SHA-256 the signature covers, as computed from the bytes when they were verified.
    hash: Vec<u8>,
    key_id: String,
    signature: Signature,
}

impl Seal {
    /// Checks the signature against `trusted`; the publisher's name when it verifies.
    pub fn check(&self, trusted: &TrustedPublishers) -> Result<String, SignError> {
        let (publisher, key) = trusted
            .keys
            .get(&self.key_id)
            .ok_or_else(|| SignError::UnknownPublisher(self.key_id.clone()))?;
        key.verify(&[DOMAIN, self.hash.as_slice()].concat(), &self.signature)
            .map_err(|_| SignError::BadSignature)?;
        Ok(publisher.clone())
    }
}

/// [`verify`], also returning the [`Seal`] of the verified signature.
pub fn verify_sealed(
    signed: &[u8],
    trusted: &TrustedPublishers,
) -> Result<(VerifiedModule, Seal), SignError> {
    let sections = parse_sections(signed)?;
    let Some(sig_index) = sections
        .iter()
        .position(|s| s.custom == Some(SIGNATURE_SECTION))
    else {
        return Err(SignError::Unsigned);
    };
    let signature_section = &sections[sig_index];
    if sig_index != sections.len() - 1 {
        return Err(SignError::Malformed(
            "the signature section must be last".into(),
        ));
    }
    let covered = &signed[..signature_section.start];
    let (hash, key_id, signature) = parse_signature(signature_section.payload(signed))?;
    let (publisher, key) = trusted
        .keys
        .get(&key_id)
        .ok_or_else(|| SignError::UnknownPublisher(key_id.clone()))?;
    let actual = Sha256::digest(covered);
    if actual.as_slice() != hash.as_slice() {
        return Err(SignError::BadSignature);
    }
    key.verify(&[DOMAIN, hash.as_slice()].concat(), &signature)
        .map_err(|_| SignError::BadSignature)?;
    let seal = Seal {
        hash,
        key_id,
        signature,
    };
    let manifest_sections: Vec<_> = sections
        .iter()
        .filter(|s| s.custom == Some(MANIFEST_SECTION))
        .collect();
    let [manifest_section] = manifest_sections.as_slice() else {
        return Err(SignError::Manifest(
            "expected exactly one manifest section".into(),
        ));
    };
    let manifest: Manifest = serde_json::from_slice(manifest_section.payload(signed))
        .map_err(|e| SignError::Manifest(e.to_string()))?;
    manifest
        .validate()
        .map_err(|e| SignError::Manifest(e.to_string()))?;
    let verified = VerifiedModule {
        digest: component_digest(signed, &sections),
        manifest,
        publisher: publisher.clone(),
    };
    Ok((verified, seal))
}

/// SHA-256 of the file with Warden's sections left out: the component as built.
fn component_digest(bytes: &[u8], sections: &[Section<'_>]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(&bytes[..8]);
    for s in sections
        .iter()
        .filter(|s| !matches!(s.custom, Some(MANIFEST_SECTION | SIGNATURE_SECTION)))
    {
        hasher.update(&bytes[s.start..s.end]);
    }
    hex::encode(hasher.finalize())
}

/// One top-level section: where it lies and, for a custom section, its name.
struct Section<'a> {
    start: usize,
    end: usize,
    payload_start: usize,
    custom: Option<&'a str>,
}

impl Section<'_> {
    fn payload<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        &bytes[self.payload_start..self.end]
    }
}

fn parse_sections(bytes: &[u8]) -> Result<Vec<Section<'_>>, SignError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(SignError::Malformed("no \\0asm header".into()));
    }
    let mut sections = Vec::new();
    let mut at = 8;
    while at < bytes.len() {
        let start = at;
        let id = bytes[at];
        at += 1;
        let size = read_leb(bytes, &mut at)? as usize;
        let end = at
            .checked_add(size)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| {
                SignError::Malformed(format!("section at byte {start} runs past the end"))
            })?;
        let mut payload_start = at;
        let custom = if id == 0 {
            let name_len = read_leb(bytes, &mut payload_start)? as usize;
            let name_end = payload_start + name_len;
            if name_end > end {
                return Err(SignError::Malformed(
                    "custom section name runs past its section".into(),
                ));
            }
            let name = std::str::from_utf8(&bytes[payload_start..name_end])
                .map_err(|_| SignError::Malformed("custom section name is not UTF-8".into()))?;
            payload_start = name_end;
            Some(name)
        } else {
            None
        };
        sections.push(Section {
            start,
            end,
            payload_start,
            custom,
        });
        at = end;
    }
    Ok(sections)
}

fn parse_signature(payload: &[u8]) -> Result<(Vec<u8>, String, Signature), SignError> {
    let bad = |why: &str| SignError::Malformed(format!("signature section: {why}"));
    if payload.len() < 3 || payload[..3] != [1, 1, 1] {
        return Err(bad("unsupported version, content type or hash function"));
    }
    let mut at = 3;
    if read_leb(payload, &mut at)? != 1 {
        return Err(bad("expected one signed hash"));
    }
    let hash = read_bytes(payload, &mut at)?.to_vec();
    if read_leb(payload, &mut at)? != 1 {
        return Err(bad("expected one signature"));
    }
    let key_id =
        String::from_utf8(read_bytes(payload, &mut at)?.to_vec()).map_err(|_| bad("key id"))?;
    if payload.get(at) != Some(&1) {
        return Err(bad("unsupported signature algorithm"));
    }
    at += 1;
    let sig: [u8; 64] = read_bytes(payload, &mut at)?
        .try_into()
        .map_err(|_| bad("signature length"))?;
    if at != payload.len() {
        return Err(bad("trailing bytes"));
    }
    Ok((hash, key_id, Signature::from_bytes(&sig)))
}

fn read_leb(bytes: &[u8], at: &mut usize) -> Result<u32, SignError> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or_else(|| SignError::Malformed("truncated LEB128".into()))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(value)
                .map_err(|_| SignError::Malformed("LEB128 overflow".into()));
        }
    }
    Err(SignError::Malformed("LEB128 too long".into()))
}

fn read_bytes<'a>(bytes: &'a [u8], at: &mut usize) -> Result<&'a [u8], SignError> {
    let len = read_leb(bytes, at)? as usize;
    let slice = bytes
        .get(*at..*at + len)
        .ok_or_else(|| SignError::Malformed("length runs past the end".into()))?;
    *at += len;
    Ok(slice)
}

fn push_leb(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    push_leb(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn push_custom_section(out: &mut Vec<u8>, name: &str, payload: &[u8]) {
    let mut body = Vec::with_capacity(name.len() + payload.len() + 5);
    push_bytes(&mut body, name.as_bytes());
    body.extend_from_slice(payload);
    out.push(0);
    push_bytes(out, &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid component: header plus one empty custom section.
    fn component() -> Vec<u8> {
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        push_custom_section(&mut c, "producers-test", b"hello");
        c
    }

    fn manifest() -> Manifest {
        Manifest::parse("name = 'demo'\nversion = '1.0.0'\ncapabilities = ['log']")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn setup() -> (SigningKey, TrustedPublishers, Vec<u8>) {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let mut trusted = TrustedPublishers::default();
        trusted.trust("acme", key.verifying_key());
        let signed = sign(&component(), &manifest(), &key).unwrap_or_default();
        (key, trusted, signed)
    }

    #[test]
    fn a_signed_module_verifies_with_its_manifest_and_digest() -> Result<(), SignError> {
        let (_, trusted, signed) = setup();
        let verified = verify(&signed, &trusted)?;
        assert_eq!(verified.manifest, manifest());
        assert_eq!(verified.publisher, "acme");
        assert_eq!(verified.digest, hex::encode(Sha256::digest(component())));
        Ok(())
    }

    #[test]
    fn rejects_unsigned_and_unknown_publisher() {
        let (_, _, signed) = setup();
        assert_eq!(
            verify(&component(), &TrustedPublishers::default()).err(),
            Some(SignError::Unsigned)
        );
        let mut other = TrustedPublishers::default();
        other.trust("evil", SigningKey::from_bytes(&[9u8; 32]).verifying_key());
        assert!(matches!(
            verify(&signed, &other),
            Err(SignError::UnknownPublisher(_))
        ));
    }

    #[test]
    fn rejects_every_single_flipped_byte_of_code_or_manifest() {
        let (_, trusted, signed) = setup();
        let sections = parse_sections(&signed).unwrap_or_default();
        let sig_start = sections.last().map_or(0, |s| s.start);
        for i in 0..sig_start {
            let mut tampered = signed.clone();
            tampered[i] ^= 0x01;
            assert!(
                verify(&tampered, &trusted).is_err(),
                "flipped byte {i} accepted"
            );
        }
    }

    #[test]
    fn refuses_to_sign_twice_and_rejects_garbage() {
        let (key, trusted, signed) = setup();
        assert_eq!(
            sign(&signed, &manifest(), &key).err(),
            Some(SignError::AlreadySigned)
        );
        assert!(matches!(
            verify(b"nope", &trusted),
            Err(SignError::Malformed(_))
        ));
        let mut truncated = signed.clone();
        truncated.truncate(signed.len() - 3);
        assert!(verify(&truncated, &trusted).is_err());
    }
}
