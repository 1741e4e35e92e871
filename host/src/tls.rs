//! TLS for the server's API and verified TLS for every client of it (the CLI, bridges).
//!
//! Threat: a network attacker between a client and the server who reads what crosses it
//! (API tokens, credentials added over the API, secrets a bridge fetches) or who
//! impersonates the server to a CLI or a bridge (collecting its token, handing it forged
//! runs). The server speaks TLS 1.2+ only ([`ServerTls`]); a client always verifies the
//! server, in one of three ways ([`ServerTrust`]): a CA in the system's trust store, a CA
//! file given by the operator, or a pin of the server certificate's SHA-256
//! ([`Fingerprint`]), which is how a self-signed certificate made by `warden init` is
//! trusted. There is no "accept anything" mode. A refused server certificate is explained
//! in one sentence ([`ServerTrust::explain`]) and no request byte is sent to that server.
//!
//! Limits: plain `http://` URLs still work, for a server on loopback or one started with
//! `--insecure-http`; what crosses such a connection is in clear. A pin trusts one
//! certificate, so a replaced server certificate needs the new pin on every client.

mod pinned;
mod server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

pub use pinned::{PinMismatch, PinnedVerifier};
pub use server::{
    CERT_FILE, HANDSHAKE_TIMEOUT, KEY_FILE, MAX_HANDSHAKES, ServerTls, TLS_DIR, TlsListener,
};

/// The SHA-256 of a certificate's DER encoding, written `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// The fingerprint of the first (end-entity) certificate of a PEM file.
    pub fn of_pem_file(path: &Path) -> anyhow::Result<Fingerprint> {
        let first = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read the certificate {}", path.display()))?
            .next()
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?
            .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
        Ok(Fingerprint::of_der(&first))
    }

    /// Equality in constant time (a pin comparison must not leak how much matched).
    pub fn ct_eq(&self, other: &Fingerprint) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a text is not a fingerprint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FingerprintError {
    #[error(
        "a server fingerprint is written sha256:<64 hex digits> (as `warden init` and \
         `warden tls fingerprint` print it)"
    )]
    Malformed,
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// `sha256:` then 64 hex digits, or 32 two-digit bytes separated by `:` (as `openssl
    /// x509 -fingerprint -sha256` prints them); either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let hex_part = s
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("sha256:"))
            .and_then(|_| s.get(7..))
            .ok_or(FingerprintError::Malformed)?;
        let digits: String = match hex_part.len() {
            64 => hex_part.to_string(),
            95 => {
                let pairs: Vec<&str> = hex_part.split(':').collect();
                if pairs.len() != 32 || pairs.iter().any(|p| p.len() != 2) {
                    return Err(FingerprintError::Malformed);
                }
                pairs.concat()
            }
            _ => return Err(FingerprintError::Malformed),
        };
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FingerprintError::Malformed);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(&digits, &mut out).map_err(|_| FingerprintError::Malformed)?;
        Ok(Fingerprint(out))
    }
}

/// How a client decides that it talks to the real server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTrust {
    /// A CA in the operating system's trust store. `rustls-native-certs`, not the
    /// `webpki-roots` bundle compiled in: an organisation's internal CA (the usual issuer of
    /// an internal server's certificate) is installed in the system store, and the system
    /// store follows the distribution's updates and removals of CAs.
    SystemRoots,
    /// A CA (or the server's own self-signed certificate) in this PEM file.
    CaFile(PathBuf),
    /// Exactly the certificate with this fingerprint (see [`PinnedVerifier`]).
    Pinned(Fingerprint),
}

/// The ALPN protocol the clients speak (reqwest is built without HTTP/2).
const CLIENT_ALPN: &[u8] = b"http/1.1";

impl ServerTrust {
    /// From the `--ca FILE` and `--server-fingerprint sha256:…` options: at most one of them;
    /// neither means the system's trust store.
    pub fn from_args(ca: Option<&Path>, fingerprint: Option<&str>) -> anyhow::Result<Self> {
        match (ca, fingerprint) {
            (Some(_), Some(_)) => anyhow::bail!(
                "give either --ca or --server-fingerprint, not both: a pinned certificate \
                 needs no CA"
            ),
            (Some(ca), None) => Ok(ServerTrust::CaFile(ca.to_path_buf())),
            (None, Some(pin)) => Ok(ServerTrust::Pinned(pin.parse()?)),
            (None, None) => Ok(ServerTrust::SystemRoots),
        }
    }

    /// A rustls client configuration (ring provider, TLS 1.2+) that verifies the server
    /// this way.
    pub fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?;
        let mut config = match self {
            ServerTrust::Pinned(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(*pin, provider)))
                .with_no_client_auth(),
            ServerTrust::CaFile(path) => builder
                .with_root_certificates(roots_from_file(path)?)
                .with_no_client_auth(),
            ServerTrust::SystemRoots => builder
                .with_root_certificates(system_roots())
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![CLIENT_ALPN.to_vec()];
        Ok(config)
    }

    /// A reqwest client builder whose `https://` connections verify the server this way
    /// (`http://` URLs are unaffected).
    pub fn client_builder(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        Ok(reqwest::Client::builder().use_preconfigured_tls(self.client_config()?))
    }

    /// One sentence for a request that failed because the server was not verified (or did
    /// not speak TLS); `None` when `error` is something else.
    pub fn explain(&self, error: &(dyn std::error::Error + 'static)) -> Option<String> {
        let tls = rustls_error(error)?;
        use rustls::CertificateError as C;
        let sentence = match tls {
            rustls::Error::InvalidCertificate(C::Other(other)) => {
                match other.0.downcast_ref::<PinMismatch>() {
                    Some(mismatch) => mismatch.to_string(),
                    None => format!("the server's certificate was refused: {other}"),
                }
            }
            rustls::Error::InvalidCertificate(C::BadSignature)
                if matches!(self, ServerTrust::Pinned(_)) =>
            {
                "the server's handshake signature does not fit its certificate: it does not \
                 hold the pinned certificate's key"
                    .to_string()
            }
            // A CA of the same name that did not sign it is as unknown as any other.
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => match self {
                ServerTrust::CaFile(path) => format!(
                    "the server's certificate is not signed by the CA in {}",
                    path.display()
                ),
                _ => "the server's certificate is not signed by a CA this system trusts; for \
                      a self-signed Warden certificate give --server-fingerprint sha256:… (as \
                      `warden init` printed it) or --ca FILE"
                    .to_string(),
            },
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => "the server's certificate is not valid for the host name in the server URL \
                  (add the name with `warden init --tls-name`, or pin the certificate with \
                  --server-fingerprint)"
                .to_string(),
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                "the server's certificate has expired".to_string()
            }
            rustls::Error::InvalidCertificate(other) => {
                format!("the server's certificate was refused: {other:?}")
            }
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                "the server did not answer in TLS (if it serves plain HTTP, use an http:// URL)"
                    .to_string()
            }
            rustls::Error::AlertReceived(alert) => {
                format!("the server refused the TLS handshake ({alert:?})")
            }
            _ => return None,
        };
        Some(sentence)
    }
}

/// The rustls error somewhere in `error`'s chain.
fn rustls_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = unwrapped(e) {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

/// `e` as a rustls error, looking into `io::Error`s, whose `source()` skips the error they
/// wrap (tokio-rustls puts the rustls error in one, which hyper-util wraps in another).
fn unwrapped<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return unwrapped(inner);
    }
    None
}

/// The certificates of a PEM file as trust anchors.
fn roots_from_file(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let shown = path.display();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read the CA file {shown}"))?
    {
        let cert = cert.with_context(|| format!("{shown} is not PEM certificates"))?;
        roots
            .add(cert)
            .with_context(|| format!("{shown} holds a certificate that cannot be a CA"))?;
    }
    if roots.is_empty() {
        anyhow::bail!("the CA file {shown} holds no certificate");
    }
    Ok(roots)
}

/// The system's trust store. Unusable entries are skipped (system stores carry a few); an
/// empty store only means every `https://` server will be refused, with the advice of
/// [`ServerTrust::explain`].
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::debug!("no usable CA certificate in the system trust store");
    }
    roots
}

/// How long [`observe_fingerprint`] waits for the server.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the server at `url` (an `https://` base URL), verifying it per `trust`, and
/// returns the fingerprint of the end-entity certificate it presented (a bridge enrolled
/// with `--ca` or the system roots pins it from then on). Makes one `GET /healthz`; its
/// answer does not matter.
pub async fn observe_fingerprint(url: &str, trust: &ServerTrust) -> anyhow::Result<Fingerprint> {
    if !url.starts_with("https://") {
        anyhow::bail!("{url} is not an https:// URL: there is no certificate to observe");
    }
    let client = trust
        .client_builder()?
        .tls_info(true)
        // The certificate of this URL's server, not of wherever it might redirect.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(OBSERVE_TIMEOUT)
        .timeout(OBSERVE_TIMEOUT)
        .build()?;
    let health = format!("{}/healthz", url.trim_end_matches('/'));
    let resp = client
        .get(&health)
        .send()
        .await
        .map_err(|e| match trust.explain(&e) {
            Some(sentence) => anyhow::anyhow!(sentence),
            None => anyhow::Error::new(e).context(format!("contacting {url}")),
        })?;
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .context("the connection carried no server certificate")?;
    Ok(Fingerprint::of_der(der))
}
