//! Host key pinning: the russh client handlers that decide whether to talk to a server.
//!
//! Threat: a machine that answers on a target's address but is not the target (a
//! man-in-the-middle, a re-used IP, a re-imaged host). [`PinnedHost`] accepts exactly the
//! pinned key (algorithm and key bytes; the comment is ignored) and otherwise aborts the
//! handshake before authentication, so no password or signature is ever sent to an impostor.
//! There is no trust-on-first-use path: [`ScanHost`] only reports the key for an
//! administrator to check and pin, and always aborts.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::{Algorithm, HashAlg, PublicKey, PublicKeyOrCertificate};

use crate::targets::key_fingerprint;

/// What the handler saw, read back after a failed handshake.
pub(crate) type Seen = Arc<Mutex<Option<PublicKey>>>;

/// Accepts only the pinned key; records any other offered key for the error message.
pub(crate) struct PinnedHost {
    pinned: PublicKey,
    offered: Seen,
}

impl PinnedHost {
    pub(crate) fn new(pinned: PublicKey) -> (Self, Seen) {
        let offered = Seen::default();
        (
            PinnedHost {
                pinned,
                offered: offered.clone(),
            },
            offered,
        )
    }
}

impl client::Handler for PinnedHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Certificates are never requested (no `host_key_certificates` in the config); if a
        // server sent one anyway, only its certified key is compared, and it must be the pin.
        let offered = key.public_key();
        if offered.key_data() == self.pinned.key_data() {
            return Ok(true);
        }
        record(&self.offered, offered);
        Ok(false)
    }
}

/// Records the offered key and aborts; used by [`super::scan_host_key`].
pub(crate) struct ScanHost {
    seen: Seen,
}

impl ScanHost {
    pub(crate) fn new() -> (Self, Seen) {
        let seen = Seen::default();
        (ScanHost { seen: seen.clone() }, seen)
    }
}

impl client::Handler for ScanHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        record(&self.seen, key.public_key());
        Ok(false)
    }
}

fn record(slot: &Seen, key: PublicKey) {
    // A poisoned lock can only come from a panic in this same tiny critical section; the
    // Option inside is still meaningful, so take it rather than lose the fingerprint.
    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    *guard = Some(key);
}

/// The key the handler saw, if any.
pub(crate) fn seen(slot: &Seen) -> Option<PublicKey> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Fingerprint for error messages.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key_fingerprint(key)
}

/// Host key algorithms to offer, the pinned key's algorithm first, so a server with several
/// host keys presents the pinned one rather than one we would then have to refuse.
pub(crate) fn preferred_host_key_algorithms(pinned: Option<&PublicKey>) -> Vec<Algorithm> {
    let defaults = russh::Preferred::DEFAULT.key.to_vec();
    let Some(pinned) = pinned else {
        return defaults;
    };
    let mut first = match pinned.algorithm() {
        Algorithm::Rsa { .. } => vec![
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ],
        other => vec![other],
    };
    let rest: Vec<Algorithm> = defaults
        .into_iter()
        .filter(|a| !first.contains(a))
        .collect();
    first.extend(rest);
    first
}

/// A russh client config with the given host key preference.
pub(crate) fn client_config(
    mut config: client::Config,
    pinned: Option<&PublicKey>,
) -> Arc<client::Config> {
    config.preferred.key = Cow::Owned(preferred_host_key_algorithms(pinned));
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::client::Handler as _;
    use russh::keys::PrivateKey;

    fn key(alg: Algorithm) -> PublicKey {
        PrivateKey::random(&mut russh::keys::key::safe_rng(), alg)
            .unwrap()
            .public_key()
            .clone()
    }

    #[tokio::test]
    async fn accepts_exactly_the_pinned_key_ignoring_comment() {
        let pinned = key(Algorithm::Ed25519);
        let mut with_comment = pinned.clone();
        with_comment.set_comment("root@elsewhere");
        let (mut handler, offered) = PinnedHost::new(pinned);
        let ok = handler
            .check_server_key(&with_comment.into())
            .await
            .unwrap();
        assert!(ok);
        assert!(seen(&offered).is_none());
    }

    #[tokio::test]
    async fn refuses_other_key_and_records_it() {
        let (pinned, other) = (key(Algorithm::Ed25519), key(Algorithm::Ed25519));
        let (mut handler, offered) = PinnedHost::new(pinned);
        assert!(
            !handler
                .check_server_key(&other.clone().into())
                .await
                .unwrap()
        );
        assert_eq!(
            seen(&offered).map(|k| fingerprint(&k)),
            Some(fingerprint(&other))
        );
    }

    #[tokio::test]
    async fn scan_handler_never_accepts() {
        let (mut handler, seen_key) = ScanHost::new();
        let k = key(Algorithm::Ed25519);
        assert!(!handler.check_server_key(&k.clone().into()).await.unwrap());
        assert_eq!(seen(&seen_key), Some(k));
    }

    #[test]
    fn pinned_algorithm_is_offered_first() {
        let ecdsa = key(Algorithm::Ecdsa {
            curve: russh::keys::EcdsaCurve::NistP256,
        });
        let algs = preferred_host_key_algorithms(Some(&ecdsa));
        assert_eq!(algs[0], ecdsa.algorithm());
        assert_eq!(algs.len(), russh::Preferred::DEFAULT.key.len());
        assert_eq!(
            preferred_host_key_algorithms(None),
            russh::Preferred::DEFAULT.key.to_vec()
        );
    }
}
