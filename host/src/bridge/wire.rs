//! The remote-bridge protocol: how a bridge's requests are signed and checked, and the
//! messages both sides exchange (JSON over the server's HTTPS API, under `/v1/bridge/`).
//!
//! Authentication: every request of an enrolled bridge carries its id, the time, a random
//! nonce and an ed25519 signature over [`signing_input`] (method, path and query, time,
//! nonce, SHA-256 of the body). Signed requests rather than mTLS with server-issued
//! certificates: the key never leaves the bridge and needs no certificate authority, expiry or
//! renewal on the server; the signature binds each request's method, path and body, so it
//! survives any TLS-terminating hop in between (the Unix-socket forwarder of the tests, a
//! corporate proxy) without trusting that hop; and the server's TLS certificate, which the
//! bridge pins, stays the only transport trust. The server refuses a time outside
//! [`MAX_SKEW_MS`] and a nonce it saw within that window, so a captured request cannot be
//! replayed to the same server.
//!
//! Threat: a network attacker or another zone's bridge forging, replaying or altering a
//! bridge's requests (to claim its runs, read its secrets or write its audit records). Limit:
//! the nonce memory is per server; over several servers a replay within the skew window to
//! another server is refused only by TLS (the attacker must break it to capture a request).

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::AuditEntry;
use crate::capabilities::grant::Grant;
use crate::registry::inputs::Param;
use crate::registry::manifest::Requests;
use crate::runtime::limits::RunLimits;
use crate::targets::Target;
use crate::vault::CredentialInfo;

/// The bridge's id.
pub const BRIDGE_HEADER: &str = "warden-bridge";
/// Unix time of the request, milliseconds.
pub const TIME_HEADER: &str = "warden-time";
/// 16 random bytes, hex.
pub const NONCE_HEADER: &str = "warden-nonce";
/// ed25519 signature over [`signing_input`], hex.
pub const SIGNATURE_HEADER: &str = "warden-signature";

/// How far a request's time may be from the server's clock.
pub const MAX_SKEW_MS: u64 = 60_000;

/// Most nonces remembered (a flood beyond this is refused until old ones expire).
const MAX_NONCES: usize = 200_000;

/// Domain separation: a signature made for this protocol cannot mean anything elsewhere.
const DOMAIN: &[u8] = b"warden-bridge-request-v1\n";

/// The bytes a request's signature covers.
pub fn signing_input(method: &str, path: &str, time_ms: u64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut input = DOMAIN.to_vec();
    for part in [
        method.as_bytes(),
        path.as_bytes(),
        time_ms.to_string().as_bytes(),
        nonce.as_bytes(),
    ] {
        input.extend_from_slice(part);
        input.push(b'\n');
    }
    input.extend_from_slice(hex::encode(Sha256::digest(body)).as_bytes());
    input
}

/// Signs a bridge's requests with its key.
pub struct RequestSigner {
    bridge_id: String,
    key: SigningKey,
}

impl RequestSigner {
    /// A signer for bridge `bridge_id` holding `key`.
    pub fn new(bridge_id: String, key: SigningKey) -> Self {
        RequestSigner { bridge_id, key }
    }

    /// The bridge's id.
    pub fn bridge_id(&self) -> &str {
        &self.bridge_id
    }

    /// The headers that authenticate one request.
    pub fn headers(&self, method: &str, path: &str, body: &[u8]) -> [(&'static str, String); 4] {
        let time_ms = crate::vault::lease::now_ms();
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let nonce = hex::encode(nonce);
        let signature = self
            .key
            .sign(&signing_input(method, path, time_ms, &nonce, body));
        [
            (BRIDGE_HEADER, self.bridge_id.clone()),
            (TIME_HEADER, time_ms.to_string()),
            (NONCE_HEADER, nonce),
            (SIGNATURE_HEADER, hex::encode(signature.to_bytes())),
        ]
    }
}

/// Why a bridge request was not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    #[error("request time is more than 60 s away from the server's clock")]
    Skew,
    #[error("request replayed (nonce seen before)")]
    Replay,
    #[error("bad request signature")]
    Signature,
}

/// Nonces seen within the skew window.
#[derive(Default)]
pub struct NonceCache {
    seen: Mutex<HashMap<String, u64>>,
}

impl NonceCache {
    /// Records `nonce` (expiring at `expires_ms`); false if it was seen before or the cache
    /// is full of live nonces.
    fn insert(&self, nonce: &str, now_ms: u64) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_NONCES {
            seen.retain(|_, expires| *expires > now_ms);
            if seen.len() >= MAX_NONCES {
                return false;
            }
        }
        if seen.contains_key(nonce) {
            return false;
        }
        seen.insert(nonce.to_string(), now_ms + 2 * MAX_SKEW_MS);
        true
    }
}

/// The authentication headers of a request, as read.
pub struct SignedHeaders<'a> {
    pub bridge: &'a str,
    pub time: &'a str,
    pub nonce: &'a str,
    pub signature: &'a str,
}

/// Checks a request signed by the holder of `key`.
pub fn verify(
    key: &VerifyingKey,
    headers: &SignedHeaders<'_>,
    method: &str,
    path: &str,
    body: &[u8],
    nonces: &NonceCache,
) -> Result<(), WireError> {
    let time_ms: u64 = headers
        .time
        .parse()
        .map_err(|_| WireError::Header(TIME_HEADER))?;
    let now = crate::vault::lease::now_ms();
    if time_ms.abs_diff(now) > MAX_SKEW_MS {
        return Err(WireError::Skew);
    }
    if headers.nonce.len() != 32 || !headers.nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WireError::Header(NONCE_HEADER));
    }
    let signature: [u8; 64] = hex::decode(headers.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::Header(SIGNATURE_HEADER))?;
    let signature = Signature::from_bytes(&signature);
    key.verify(
        &signing_input(method, path, time_ms, headers.nonce, body),
        &signature,
    )
    .map_err(|_| WireError::Signature)?;
    // Only a correctly signed request spends a nonce, so garbage cannot fill the cache.
    if !nonces.insert(headers.nonce, now) {
        return Err(WireError::Replay);
    }
    Ok(())
}

/// `POST /v1/bridges/enroll` (authenticated by the token, not a signature).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    /// The bridge's ed25519 public key, hex.
    pub public_key: String,
    pub name: String,
    pub version: String,
}

/// The answer to an enrolment.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollReply {
    pub bridge_id: String,
    pub zone: String,
}

/// `POST /v1/bridge/claim`: wait up to `wait_ms` for a run of the bridge's zone.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub wait_ms: u64,
    /// The digest of the policy set the bridge holds (the server sends the set if it differs).
    #[serde(default)]
    pub policy_digest: Option<String>,
    /// The bridge's version, for `GET /v1/bridges`.
    #[serde(default)]
    pub version: String,
}

/// One policy file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyFile {
    pub name: String,
    pub text: String,
}

/// A run the bridge now holds: everything it needs to execute it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClaimedRun {
    pub run_id: String,
    pub actor: String,
    /// `name@version`.
    pub module: String,
    /// The module's digest (`GET /v1/bridge/modules/{digest}`).
    pub digest: String,
    pub params: Vec<Param>,
    pub grant: Grant,
    pub limits: RunLimits,
    /// Interfaces the signed manifest requested.
    pub requested: Vec<String>,
    /// The manifest's narrower requests.
    pub scope: Requests,
    /// The records of the grant's targets (all in the bridge's zone).
    pub targets: Vec<Target>,
    /// The metadata of the grant's credentials (never a secret).
    pub credentials: Vec<CredentialInfo>,
    /// The server's policy set's digest, and the set itself if the bridge's differs.
    pub policy_digest: String,
    pub policies: Option<Vec<PolicyFile>>,
}

/// `POST /v1/bridge/runs/{id}/audit`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRequest {
    pub entries: Vec<AuditEntry>,
}

/// The records' sequence numbers in the server's chain, once durable.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditReply {
    pub seqs: Vec<u64>,
}

/// `POST /v1/bridge/runs/{id}/lease`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub credential: String,
    pub known: Option<String>,
}

/// `POST /v1/bridge/runs/{id}/lease-check` and (with `target` optional) `/secret`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseUse {
    pub lease: String,
    pub credential: String,
    pub target: Option<String>,
}

/// `POST /v1/bridge/runs/{id}/lease-check`: several uses at once (at most
/// [`MAX_LEASE_CHECKS`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseChecks {
    pub uses: Vec<LeaseUse>,
}

/// For each use, in order: `None` if allowed, else the denial.
#[derive(Debug, Serialize, Deserialize)]
pub struct LeaseVerdicts {
    pub denied: Vec<Option<String>>,
}

/// Most lease uses one check may carry (a fan-out's targets).
pub const MAX_LEASE_CHECKS: usize = 1024;

/// A refusal of a lease or secret request (HTTP 403 with this body).
#[derive(Debug, Serialize, Deserialize)]
pub struct Refused {
    pub denied: String,
}

/// `POST /v1/bridge/runs/{id}/renew`'s body: the events the run logged since the last
/// renewal (older bridges send `{}`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RenewRequest {
    #[serde(default)]
    pub events: Vec<LiveEvent>,
}

/// One event of a remote run and its index in the run's event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEvent {
    pub index: u64,
    #[serde(flatten)]
    pub event: crate::runtime::RunEvent,
}

/// `POST /v1/bridge/runs/{id}/renew`'s answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct RenewReply {
    /// Someone cancelled the run: stop it.
    pub cancel: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(
        signer: &RequestSigner,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> [(&'static str, String); 4] {
        signer.headers(method, path, body)
    }

    fn check(
        key: &VerifyingKey,
        h: &[(&'static str, String); 4],
        method: &str,
        path: &str,
        body: &[u8],
        nonces: &NonceCache,
    ) -> Result<(), WireError> {
        let headers = SignedHeaders {
            bridge: &h[0].1,
            time: &h[1].1,
            nonce: &h[2].1,
            signature: &h[3].1,
        };
        verify(key, &headers, method, path, body, nonces)
    }

    #[test]
    fn a_signed_request_verifies_once_and_any_change_breaks_it() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let public = key.verifying_key();
        let signer = RequestSigner::new("b1".into(), key);
        let nonces = NonceCache::default();
        let h = signed(&signer, "POST", "/v1/bridge/claim", b"{}");
        assert_eq!(
            check(&public, &h, "POST", "/v1/bridge/claim", b"{}", &nonces),
            Ok(())
        );
        assert_eq!(
            check(&public, &h, "POST", "/v1/bridge/claim", b"{}", &nonces),
            Err(WireError::Replay)
        );
        for (method, path, body) in [
            ("GET", "/v1/bridge/claim", &b"{}"[..]),
            ("POST", "/v1/bridge/claim?x=1", b"{}"),
            ("POST", "/v1/bridge/claim", b"{ }"),
        ] {
            let h = signed(&signer, "POST", "/v1/bridge/claim", b"{}");
            assert_eq!(
                check(&public, &h, method, path, body, &nonces),
                Err(WireError::Signature),
                "{method} {path}"
            );
        }
        // Another key under the same id.
        let other = RequestSigner::new("b1".into(), SigningKey::from_bytes(&[4u8; 32]));
        let h = signed(&other, "POST", "/p", b"");
        assert_eq!(
            check(&public, &h, "POST", "/p", b"", &nonces),
            Err(WireError::Signature)
        );
    }

    #[test]
    fn stale_times_and_malformed_headers_are_refused_before_the_signature_counts() {
        let key = SigningKey::from_bytes(&[5u8; 32]);
        let public = key.verifying_key();
        let signer = RequestSigner::new("b1".into(), key);
        let nonces = NonceCache::default();
        let mut h = signed(&signer, "POST", "/p", b"");
        h[1].1 = (crate::vault::lease::now_ms() - 2 * MAX_SKEW_MS).to_string();
        assert_eq!(
            check(&public, &h, "POST", "/p", b"", &nonces),
            Err(WireError::Skew)
        );
        let mut h = signed(&signer, "POST", "/p", b"");
        h[1].1 = "soon".into();
        assert_eq!(
            check(&public, &h, "POST", "/p", b"", &nonces),
            Err(WireError::Header(TIME_HEADER))
        );
        let mut h = signed(&signer, "POST", "/p", b"");
        h[2].1 = "short".into();
        assert_eq!(
            check(&public, &h, "POST", "/p", b"", &nonces),
            Err(WireError::Header(NONCE_HEADER))
        );
        let mut h = signed(&signer, "POST", "/p", b"");
        h[3].1 = "00".into();
        assert_eq!(
            check(&public, &h, "POST", "/p", b"", &nonces),
            Err(WireError::Header(SIGNATURE_HEADER))
        );
        // A refused request spends no nonce: the genuine one still goes through.
        let h = signed(&signer, "POST", "/p", b"");
        let mut forged = h.clone();
        forged[3].1 = hex::encode([0u8; 64]);
        assert_eq!(
            check(&public, &forged, "POST", "/p", b"", &nonces),
            Err(WireError::Signature)
        );
        assert_eq!(check(&public, &h, "POST", "/p", b"", &nonces), Ok(()));
    }

    #[test]
    fn the_signed_bytes_separate_their_fields() {
        // Moving bytes between path and nonce, or method and path, changes the input.
        let a = signing_input("POST", "/a", 1, "n", b"");
        let b = signing_input("POS", "T/a", 1, "n", b"");
        assert_ne!(a, b);
        assert!(a.starts_with(DOMAIN));
    }
}
