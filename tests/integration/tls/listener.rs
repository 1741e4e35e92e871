//! What the server accepts: plain HTTP only on loopback (or with --insecure-http), TLS
//! handshakes bounded in time and never blocking each other, private keys only, exactly the
//! ALPN protocols it speaks, and a graceful shutdown over TLS.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use warden_tests::http::{ServeChild, Transport};

use super::{BIN, impostor, init, list_processes, warden};
use warden_tests::http::init_data_dir;

#[test]
fn a_non_loopback_address_needs_tls_or_insecure_http() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let data_arg = data.to_string_lossy().into_owned();
    let (out, _, stderr) = warden(
        &["serve", "--listen", "0.0.0.0:0", "--data", &data_arg],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to serve plain HTTP on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure-http"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one sentence: {stderr}");
    // The same through the environment, and the configuration file cannot mean otherwise.
    let (out, _, stderr) = warden(
        &["serve", "--data", &data_arg],
        &[("WARDEN_LISTEN", "0.0.0.0:0")],
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");

    // Accepted with --insecure-http, or with a certificate: bind only, never connect.
    let (cert, key, _) = impostor(tmp.path());
    let cert_arg = cert.to_string_lossy().into_owned();
    let key_arg = key.to_string_lossy().into_owned();
    for (flags, scheme) in [
        (vec!["--insecure-http"], "http"),
        (
            vec!["--tls-cert", &cert_arg, "--tls-key", &key_arg],
            "https",
        ),
    ] {
        let log = tmp.path().join(format!("{scheme}.log"));
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "0.0.0.0:0", "--data", &data_arg])
            .arg("--policies")
            .arg(warden_tests::repo_root().join("policies"))
            .args(&flags)
            .env_remove("WARDEN_DATA")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(60);
        let needle = format!("listening on {scheme}://0.0.0.0:");
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(&needle) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{flags:?}: exited {status}: {text}");
            }
            assert!(Instant::now() < deadline, "{flags:?}: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stall_the_handshake_neither_block_others_nor_hold_sockets_for_ever() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let (admin, pin) = init(&data, &[]);
    let log = tmp.path().join("serve.log");
    let serve = ServeChild::start(BIN, &data, Transport::DataDirTls, &[], log).await;
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..32 {
        let mut tcp = tokio::net::TcpStream::connect(serve.addr())
            .await
            .expect("connect");
        // Half of them start a ClientHello record and stop; half send nothing.
        if i % 2 == 0 {
            use tokio::io::AsyncWriteExt;
            tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .expect("partial hello");
        }
        stalled.push(tcp);
    }
    // Meanwhile a real client is served at once, the CLI too.
    for _ in 0..3 {
        let started = Instant::now();
        let r = serve.server(&admin).get("/v1/processes", &admin).await;
        assert_eq!(r.status, reqwest::StatusCode::OK, "{}", r.text);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    let (out, _, stderr) = list_processes(
        &serve.base,
        &admin,
        &["--server-fingerprint", &pin.to_string()],
    );
    assert!(out.status.success(), "{stderr}");
    // The stalled sockets are closed by the server after the handshake timeout.
    for mut tcp in stalled {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf))
            .await
            .expect("the server closed the stalled connection within 30 s");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "a stalled client got bytes: {read:?}"
        );
    }
    let waited = opened.elapsed();
    let timeout = warden_host::tls::HANDSHAKE_TIMEOUT;
    assert!(
        waited >= timeout - Duration::from_secs(1),
        "closed too early: {waited:?}"
    );
    // And the server still serves.
    let r = serve.server(&admin).get("/healthz", &admin).await;
    assert_eq!(r.status, reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_over_tls_drains_and_exits_zero() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let (admin, _) = init(&data, &[]);
    let log = tmp.path().join("serve.log");
    let mut serve = ServeChild::start(BIN, &data, Transport::DataDirTls, &[], log).await;
    let r = serve.server(&admin).get("/v1/processes", &admin).await;
    assert_eq!(r.status, reqwest::StatusCode::OK, "{}", r.text);
    serve.signal("TERM");
    assert_eq!(serve.exit_code().await, 0, "{}", serve.stderr());
    assert!(serve.stderr().contains("stopped"), "{}", serve.stderr());
}

#[test]
fn a_tls_key_others_may_read_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let (cert, key, _) = impostor(tmp.path());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let data_arg = data.to_string_lossy().into_owned();
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let (out, _, stderr) = warden(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            &data_arg,
            "--tls-cert",
            &cert_arg,
            "--tls-key",
            &key_arg,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("may be read by others"), "{stderr}");
    // And a certificate without its key is a usage error.
    let (out, _, stderr) = warden(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            &data_arg,
            "--tls-cert",
            &cert_arg,
        ],
        &[],
    );
    assert!(!out.status.success(), "{stderr}");
}

/// The server offers exactly what it speaks: h2 and http/1.1 in ALPN (nothing else is
/// negotiated), over TLS 1.3 and 1.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_offers_exactly_h2_and_http11_over_tls12_and_tls13() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let (_, pin) = init(&data, &[]);
    let log = tmp.path().join("serve.log");
    let serve = ServeChild::start(BIN, &data, Transport::DataDirTls, &[], log).await;
    let connect =
        |alpn: Vec<Vec<u8>>, versions: &'static [&'static rustls::SupportedProtocolVersion]| {
            let addr = serve.addr();
            async move {
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(versions)
                    .expect("versions")
                    .dangerous()
                    .with_custom_certificate_verifier(std::sync::Arc::new(
                        warden_host::tls::PinnedVerifier::new(pin, provider),
                    ))
                    .with_no_client_auth();
                config.alpn_protocols = alpn;
                let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                connector.connect(name, tcp).await
            }
        };
    static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    let both = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    for (offered, want) in [
        (both.clone(), &b"h2"[..]),
        (vec![b"http/1.1".to_vec()], &b"http/1.1"[..]),
    ] {
        for versions in [&TLS13[..], &TLS12[..]] {
            let tls = connect(offered.clone(), versions).await.expect("handshake");
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(want));
        }
    }
    assert!(connect(vec![b"spdy/3".to_vec()], &TLS13).await.is_err());
}

/// `tls_cert`/`tls_key` in the configuration file are settings like any other (relative to
/// the file), and `insecure_http` with a certificate is refused as a contradiction.
#[test]
fn the_configuration_file_names_the_certificate_and_key() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    impostor(tmp.path());
    let file = tmp.path().join("warden.toml");
    let write = |text: &str| {
        std::fs::write(&file, text).expect("config");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    };
    write("data = \"data\"\ntls_cert = \"impostor/cert.pem\"\ntls_key = \"impostor/key.pem\"\n");
    let file_arg = file.to_string_lossy().into_owned();
    let (out, stdout, stderr) = warden(&["config", "check", "--config", &file_arg], &[]);
    assert!(out.status.success(), "{stderr}");
    let cert = tmp.path().join("impostor/cert.pem");
    assert!(
        stdout.contains(&format!("tls_cert = \"{}\"  # config file", cert.display())),
        "{stdout}"
    );
    write("data = \"data\"\ntls_cert = \"impostor/cert.pem\"\n");
    let (out, _, stderr) = warden(&["config", "check", "--config", &file_arg], &[]);
    assert!(!out.status.success());
    assert!(
        stderr.contains("give both tls_cert and tls_key"),
        "{stderr}"
    );
    write(
        "data = \"data\"\ntls_cert = \"impostor/cert.pem\"\ntls_key = \"impostor/key.pem\"\ninsecure_http = true\n",
    );
    let (out, _, stderr) = warden(&["config", "check", "--config", &file_arg], &[]);
    assert!(!out.status.success());
    assert!(stderr.contains("contradict"), "{stderr}");
}
