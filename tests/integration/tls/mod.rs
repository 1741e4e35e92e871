//! TLS on the server and verified TLS in the CLI (issue 12), against the real `warden`
//! binary on a real bound port. This file: `warden init`'s certificate and
//! `observe_fingerprint`; `cli`: the CLI's verification and the demo; `listener`: what the
//! server accepts (addresses, handshakes, keys, ALPN, shutdown).
//!
//! The attacker sits on the network between the CLI and the server: reads what crosses it
//! (so the API must be TLS where it is not loopback), or answers in the server's place with
//! a certificate of their own, to collect the caller's token. A client that cannot verify
//! the server must refuse with one clear sentence before a single request (and so the
//! token) reaches whoever answered; a server must not be held by clients that stall the
//! handshake.

mod cli;
mod listener;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;
use warden_host::tls::{Fingerprint, ServerTls, ServerTrust, observe_fingerprint};
use warden_tests::http::{ServeChild, Transport};

pub(super) const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// `warden ARGS` with none of the caller's `WARDEN_*` settings, plus `envs`.
pub(super) fn warden(args: &[&str], envs: &[(&str, &str)]) -> (Output, String, String) {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WARDEN_") {
            command.env_remove(&key);
        }
    }
    let out = command
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("warden runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// `warden init --data DIR ARGS`: the admin token and the fingerprint it printed.
pub(super) fn init(data: &Path, args: &[&str]) -> (String, Fingerprint) {
    let data_arg = data.to_string_lossy().into_owned();
    let mut all = vec!["init", "--data", &data_arg];
    all.extend(args);
    let (out, stdout, stderr) = warden(&all, &[]);
    assert!(out.status.success(), "{stdout}{stderr}");
    let token = stdout
        .lines()
        .find_map(|l| l.split("keep it): ").nth(1))
        .expect("admin token printed")
        .to_string();
    let printed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("server certificate fingerprint: "))
        .expect("fingerprint printed");
    (token, printed.parse().expect("a fingerprint"))
}

pub(super) fn cert_of(data: &Path) -> PathBuf {
    ServerTls::data_dir_files(data).0
}

/// A second, unrelated self-signed certificate (the impostor's), with the same names.
pub(super) fn impostor(dir: &Path) -> (PathBuf, PathBuf, Fingerprint) {
    let tls = dir.join("impostor");
    let fp = ServerTls::generate_self_signed(&tls, &[]).expect("impostor certificate");
    (tls.join("cert.pem"), tls.join("key.pem"), fp)
}

/// `warden process list` against `base` as `token`, with `extra` trust flags.
pub(super) fn list_processes(base: &str, token: &str, extra: &[&str]) -> (Output, String, String) {
    let mut args = vec!["process", "list", "--server", base];
    args.extend(extra);
    warden(&args, &[("WARDEN_TOKEN", token)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_private_key_and_prints_the_fingerprint_the_server_really_serves() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let (_admin, printed) = init(&data, &["--tls-name", "warden.test"]);
    let (cert, key) = ServerTls::data_dir_files(&data);
    let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600, "the TLS key is private");
    assert_eq!(mode(key.parent().expect("tls dir")), 0o700);
    let key_text = std::fs::read_to_string(&key).expect("key");
    assert!(key_text.contains("PRIVATE KEY"), "a PEM key");

    let log = tmp.path().join("serve.log");
    let serve = ServeChild::start(BIN, &data, Transport::DataDirTls, &[], log).await;
    assert!(serve.base.starts_with("https://"), "{}", serve.base);
    // What the server presents on the wire, verified through the certificate file as a CA
    // (not through the printed pin): it is the printed fingerprint.
    let served = observe_fingerprint(&serve.base, &ServerTrust::CaFile(cert.clone()))
        .await
        .expect("observed");
    assert_eq!(served, printed);
    assert!(
        serve
            .stderr()
            .contains(&format!("listening on https://{}", serve.addr())),
        "{}",
        serve.stderr()
    );

    // `warden tls fingerprint` prints it again, from the data directory or the file.
    let data_arg = data.to_string_lossy().into_owned();
    let cert_arg = cert.to_string_lossy().into_owned();
    for args in [
        ["tls", "fingerprint", "--data", &data_arg],
        ["tls", "fingerprint", "--cert", &cert_arg],
    ] {
        let (out, stdout, stderr) = warden(&args, &[]);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(stdout.trim(), printed.to_string());
    }
    // The extra name is in the certificate: a CA-verifying client dialling it by that name
    // completes the handshake; by a name not in it, it does not.
    for (name, valid) in [
        ("warden.test", true),
        ("localhost", true),
        ("other.test", false),
    ] {
        let config = ServerTrust::CaFile(cert.clone())
            .client_config()
            .expect("config");
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(serve.addr())
            .await
            .expect("tcp");
        let server_name = rustls::pki_types::ServerName::try_from(name).expect("name");
        let done = connector.connect(server_name, tcp).await;
        assert_eq!(done.is_ok(), valid, "{name}: {:?}", done.err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_fingerprint_returns_the_served_certificate_and_verifies_first() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let (_, printed) = init(&data, &[]);
    let log = tmp.path().join("serve.log");
    let serve = ServeChild::start(BIN, &data, Transport::DataDirTls, &[], log).await;
    let by_ca = observe_fingerprint(&serve.base, &ServerTrust::CaFile(cert_of(&data)))
        .await
        .expect("by CA");
    assert_eq!(
        by_ca,
        Fingerprint::of_pem_file(&cert_of(&data)).expect("fp")
    );
    assert_eq!(by_ca, printed);
    let by_pin = observe_fingerprint(&serve.base, &ServerTrust::Pinned(printed))
        .await
        .expect("by pin");
    assert_eq!(by_pin, printed);
    // It verifies before it reports: a wrong pin, no trust, plain http are errors.
    let (_, _, other) = impostor(tmp.path());
    let err = observe_fingerprint(&serve.base, &ServerTrust::Pinned(other))
        .await
        .expect_err("wrong pin");
    assert!(
        err.to_string().contains("does not match the pinned"),
        "{err:#}"
    );
    let err = observe_fingerprint(&serve.base, &ServerTrust::SystemRoots)
        .await
        .expect_err("not a system CA");
    assert!(err.to_string().contains("not signed by a CA"), "{err:#}");
    let plain = serve.base.replace("https://", "http://");
    assert!(
        observe_fingerprint(&plain, &ServerTrust::Pinned(printed))
            .await
            .is_err()
    );
}

#[test]
fn init_refuses_a_bad_tls_name_before_creating_anything() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let data_arg = data.to_string_lossy().into_owned();
    for bad in ["two words", "", "tab\there"] {
        let (out, _, stderr) = warden(&["init", "--data", &data_arg, "--tls-name", bad], &[]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(stderr.contains("not a host name or address"), "{stderr}");
        assert!(
            !data.exists(),
            "{bad:?}: a half-made data directory was left"
        );
    }
}
