//! The pinned-certificate verifier: the server is the one whose end-entity certificate has
//! exactly the pinned SHA-256, and which proves in the handshake that it holds that
//! certificate's private key.
//!
//! Threat: a man in the middle presenting any other certificate (self-signed, or even one
//! a public CA issued for the same name) is refused before a request byte is sent. The
//! handshake signature is still checked with the provider's algorithms, so a replayed copy
//! of the real (public) certificate without its key is refused too.
//!
//! The host name is not checked: the pin already names one certificate and so one key, a
//! stronger binding than a name; and a bridge or CLI may reach the server by an address
//! its self-signed certificate does not list (a forwarder, a NAT address). Nor is the
//! validity period: the pin, not a CA's dates, is what is trusted; replacing a pinned
//! certificate is a deliberate act that changes the pin.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use super::Fingerprint;

/// The server presented another certificate than the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate {presented} does not match the pinned {pinned}")]
pub struct PinMismatch {
    pub presented: Fingerprint,
    pub pinned: Fingerprint,
}

/// Accepts exactly the server certificate with the pinned fingerprint.
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    pub fn new(pin: Fingerprint, provider: Arc<CryptoProvider>) -> Self {
        PinnedVerifier { pin, provider }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_der(end_entity);
        if presented.ct_eq(&self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = PinMismatch {
                presented,
                pinned: self.pin,
            };
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(mismatch)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
