//! Fingerprint parsing and the pinned verifier, against real certificates and a real
//! handshake (in memory, rustls client against rustls server).

use std::sync::Arc;

use super::*;

fn sample() -> Fingerprint {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(0xa5);
    }
    Fingerprint(bytes)
}

#[test]
fn a_fingerprint_round_trips_and_accepts_the_openssl_spelling() {
    let fp = sample();
    let text = fp.to_string();
    assert!(text.starts_with("sha256:") && text.len() == 71, "{text}");
    assert_eq!(text, text.to_lowercase());
    assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
    let colons =
        fp.0.iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
    assert_eq!(format!("SHA256:{colons}").parse::<Fingerprint>(), Ok(fp));
    assert_eq!(
        format!("sha256:{}", hex::encode_upper(fp.0)).parse(),
        Ok(fp)
    );
    assert_eq!(format!("  {text}\n").parse::<Fingerprint>(), Ok(fp));
}

#[test]
fn malformed_fingerprints_are_refused_with_the_expected_spelling() {
    let hex64 = hex::encode(sample().0);
    let bad = [
        String::new(),
        "sha256:".into(),
        hex64.clone(),                                 // no prefix
        format!("sha1:{hex64}"),                       // another digest
        format!("sha256:{}", &hex64[..62]),            // 31 bytes
        format!("sha256:{hex64}00"),                   // 33 bytes
        format!("sha256:{}g", &hex64[..63]),           // not hex
        format!("sha256:{}", hex64.replace('a', "é")), // not ASCII
        format!("sha256: {hex64}"),                    // inner space
        // Colons, but not between every byte.
        format!("sha256:{}:{}", &hex64[..2], &hex64[2..]),
        format!(
            "sha256:{}",
            hex64
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(":")
        ),
        // 32 groups of two, but one of them ends in a colon.
        format!("sha256:{}", "ab:".repeat(32)),
    ];
    for text in bad {
        let err = text.parse::<Fingerprint>().expect_err(&text);
        assert!(err.to_string().contains("sha256:<64 hex digits>"), "{err}");
    }
}

#[test]
fn both_ca_and_fingerprint_are_refused() {
    let pin = sample().to_string();
    let err =
        ServerTrust::from_args(Some(Path::new("/etc/ca.pem")), Some(&pin)).expect_err("both given");
    assert!(err.to_string().contains("not both"), "{err}");
    assert_eq!(
        ServerTrust::from_args(None, Some(&pin)).expect("pin"),
        ServerTrust::Pinned(sample())
    );
    assert_eq!(
        ServerTrust::from_args(None, None).expect("default"),
        ServerTrust::SystemRoots
    );
    assert!(ServerTrust::from_args(None, Some("sha256:abc")).is_err());
}

/// A generated certificate in a temporary directory, loaded back.
fn generated(extra: &[String]) -> (tempfile::TempDir, ServerTls, Fingerprint) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let tls_dir = dir.path().join(TLS_DIR);
    let printed = ServerTls::generate_self_signed(&tls_dir, extra).expect("generate");
    let tls = ServerTls::load(&tls_dir.join(CERT_FILE), &tls_dir.join(KEY_FILE)).expect("load");
    (dir, tls, printed)
}

#[test]
fn a_generated_certificate_has_a_private_key_and_the_printed_fingerprint() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, tls, printed) = generated(&["warden.example.org".into()]);
    assert_eq!(tls.fingerprint(), printed);
    let tls_dir = dir.path().join(TLS_DIR);
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&tls_dir.join(KEY_FILE)), 0o600);
    assert_eq!(mode(&tls_dir), 0o700);
    assert_eq!(
        Fingerprint::of_pem_file(&tls_dir.join(CERT_FILE)).expect("fp"),
        printed
    );
    // Never over an existing key.
    assert!(ServerTls::generate_self_signed(&tls_dir, &[]).is_err());
    // A key others may read is refused at load.
    std::fs::set_permissions(
        tls_dir.join(KEY_FILE),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let err = ServerTls::load(&tls_dir.join(CERT_FILE), &tls_dir.join(KEY_FILE))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("read by others"), "{err}");
}

#[test]
fn a_key_of_another_certificate_is_refused_at_load() {
    let (a, _, _) = generated(&[]);
    let (b, _, _) = generated(&[]);
    let err = ServerTls::load(
        &a.path().join(TLS_DIR).join(CERT_FILE),
        &b.path().join(TLS_DIR).join(KEY_FILE),
    )
    .err()
    .expect("mismatched key refused");
    assert!(err.to_string().contains("not a usable"), "{err:#}");
}

/// Runs a full handshake in memory between a client trusting `trust` (connecting to
/// `name`) and a server with `tls`; the client's error if it fails.
fn handshake(trust: &ServerTrust, tls: &ServerTls, name: &str) -> Result<(), rustls::Error> {
    let client_config = Arc::new(trust.client_config().expect("client config"));
    let server_config = Arc::new(tls.server_config().expect("server config"));
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
    let client = rustls::ClientConnection::new(client_config, name).expect("client");
    let server = rustls::ServerConnection::new(server_config).expect("server");
    drive(client, server)
}

/// Shuttles the handshake's bytes between `client` and `server` until it is done; the
/// client's error if it fails.
fn drive(
    mut client: rustls::ClientConnection,
    mut server: rustls::ServerConnection,
) -> Result<(), rustls::Error> {
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).expect("server read");
        }
        // The server's own errors (a bad alert) surface on the client side below.
        let _ = server.process_new_packets();
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).expect("client read");
        }
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn the_pinned_verifier_accepts_exactly_the_pinned_certificate() {
    let (_a, tls, printed) = generated(&[]);
    let (_b, other, _) = generated(&[]);
    // The pin, whatever name was dialled (it is not in the certificate).
    let pinned = ServerTrust::Pinned(printed);
    handshake(&pinned, &tls, "bridge-forwarder.invalid").expect("pinned cert accepted");
    // Another self-signed certificate with the same names is refused, explaining both.
    let err = handshake(&pinned, &other, "localhost").expect_err("other cert refused");
    let sentence = pinned.explain(&err).expect("explained");
    assert!(
        sentence.contains(&format!("does not match the pinned {printed}")),
        "{sentence}"
    );
    assert!(
        sentence.contains(&other.fingerprint().to_string()),
        "{sentence}"
    );
    // A pin one bit off is refused.
    let mut near = printed;
    near.0[31] ^= 1;
    let err = handshake(&ServerTrust::Pinned(near), &tls, "localhost").expect_err("near pin");
    assert!(matches!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(_))
    ));
}

#[test]
fn the_pinned_verifier_still_checks_the_handshake_signature() {
    // The certificate is public: a server that presents it with another key must fail
    // the signature check, not pass on the pin. Build such a server from the real
    // certificate and the key of another one (rustls would refuse the pair at
    // `with_single_cert`, so go through a resolver that skips that check).
    let (_a, tls, printed) = generated(&[]);
    let (_b, other, _) = generated(&[]);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&other.key_pem).expect("key");
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).expect("load");
    let certified = Arc::new(rustls::sign::CertifiedKey::new(tls.chain.clone(), signing));
    let resolver = Arc::new(Fixed(certified));
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    let forged = Arc::new(server_config);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(printed, provider)))
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let client = rustls::ClientConnection::new(Arc::new(client_config), name).expect("c");
        let server = rustls::ServerConnection::new(forged.clone()).expect("server");
        let err = drive(client, server).expect_err("a forged signature must fail the handshake");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
            ),
            "{version:?}: {err:?}"
        );
        let sentence = ServerTrust::Pinned(printed)
            .explain(&err)
            .expect("explained");
        assert!(
            sentence.contains("does not hold the pinned certificate's key"),
            "{sentence}"
        );
    }
}

#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[test]
fn a_ca_file_verifies_the_name_and_the_issuer() {
    let (a, tls, _) = generated(&["warden.example.org".into()]);
    let (b, _, _) = generated(&[]);
    let own = ServerTrust::CaFile(a.path().join(TLS_DIR).join(CERT_FILE));
    handshake(&own, &tls, "localhost").expect("own cert as CA");
    handshake(&own, &tls, "warden.example.org").expect("extra name");
    let err = handshake(&own, &tls, "evil.example.org").expect_err("wrong name");
    assert!(
        own.explain(&err)
            .expect("explained")
            .contains("not valid for the host name")
    );
    let other = ServerTrust::CaFile(b.path().join(TLS_DIR).join(CERT_FILE));
    let err = handshake(&other, &tls, "localhost").expect_err("other CA");
    assert!(
        other
            .explain(&err)
            .expect("explained")
            .contains("not signed by the CA in")
    );
    // The system's store does not know a self-signed certificate.
    let err = handshake(&ServerTrust::SystemRoots, &tls, "localhost").expect_err("system");
    let sentence = ServerTrust::SystemRoots.explain(&err).expect("explained");
    assert!(sentence.contains("--server-fingerprint"), "{sentence}");
}
