//! TLS on the server and verified TLS in the CLI (issue 12), against the real `warden`
//! binary on a real bound port.
//!
//! The attacker sits on the network between the CLI and the server: reads what crosses it
//! (so the API must be TLS where it is not loopback), or answers in the server's place with
//! a certificate of their own, to collect the caller's token. A client that cannot verify
//! the server must refuse with one clear sentence before a single request (and so the
//! token) reaches whoever answered; a server must not be held by clients that stall the
//! handshake.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use warden_host::tls::{Fingerprint, ServerTls, ServerTrust, observe_fingerprint};
use warden_tests::http::{ServeChild, Transport};

use crate::api::init_data_dir;

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// `warden ARGS` with none of the caller's `WARDEN_*` settings, plus `envs`.
fn warden(args: &[&str], envs: &[(&str, &str)]) -> (Output, String, String) {
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
fn init(data: &Path, args: &[&str]) -> (String, Fingerprint) {
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

fn cert_of(data: &Path) -> PathBuf {
    ServerTls::data_dir_files(data).0
}

/// A second, unrelated self-signed certificate (the impostor's), with the same names.
fn impostor(dir: &Path) -> (PathBuf, PathBuf, Fingerprint) {
    let tls = dir.join("impostor");
    let fp = ServerTls::generate_self_signed(&tls, &[]).expect("impostor certificate");
    (tls.join("cert.pem"), tls.join("key.pem"), fp)
}

/// `warden process list` against `base` as `token`, with `extra` trust flags.
fn list_processes(base: &str, token: &str, extra: &[&str]) -> (Output, String, String) {
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
async fn the_cli_with_the_right_pin_or_the_certificate_as_ca_works() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let (admin, printed) = init(&data, &[]);
    let log = tmp.path().join("serve.log");
    let serve = ServeChild::start(BIN, &data, Transport::DataDirTls, &[], log).await;
    let pin = printed.to_string();
    let ca = cert_of(&data).to_string_lossy().into_owned();

    let (out, stdout, stderr) =
        list_processes(&serve.base, &admin, &["--server-fingerprint", &pin]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "[]");
    // The same pin in the openssl spelling (upper case, colons), and from the environment.
    let colons = printed
        .0
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let openssl = format!("SHA256:{colons}");
    let (out, _, stderr) = list_processes(&serve.base, &admin, &["--server-fingerprint", &openssl]);
    assert!(out.status.success(), "{stderr}");
    let (out, _, stderr) = warden(
        &["process", "list", "--server", &serve.base],
        &[
            ("WARDEN_TOKEN", admin.as_str()),
            ("WARDEN_SERVER_FINGERPRINT", pin.as_str()),
        ],
    );
    assert!(out.status.success(), "{stderr}");
    // The generated certificate as the CA file, by flag and by environment.
    let (out, _, stderr) = list_processes(&serve.base, &admin, &["--ca", &ca]);
    assert!(out.status.success(), "{stderr}");
    let (out, _, stderr) = warden(
        &["process", "list", "--server", &serve.base],
        &[("WARDEN_TOKEN", admin.as_str()), ("WARDEN_CA", ca.as_str())],
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(serve.requests_to("/v1/processes"), 5, "{}", serve.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_cli_cannot_verify_is_refused_and_receives_no_request() {
    // The CLI was told the real server's pin; whoever answers holds another certificate
    // (self-signed with the same names, as an attacker on the path would make).
    let tmp = TempDir::new().expect("temp dir");
    let real = tmp.path().join("real");
    let (_, real_pin) = init(&real, &[]);
    let data = tmp.path().join("impostor-data");
    let admin = init_data_dir(&data);
    let (cert, key, impostor_pin) = impostor(tmp.path());
    let log = tmp.path().join("impostor.log");
    let transport = Transport::Tls {
        cert: cert.clone(),
        key,
    };
    let serve = ServeChild::start(BIN, &data, transport, &[], log).await;
    let pin = real_pin.to_string();
    let mut near = impostor_pin;
    near.0[0] ^= 0x80;
    let near = near.to_string();
    let real_ca = cert_of(&real).to_string_lossy().into_owned();

    let refusals: [(&[&str], String); 4] = [
        (
            &["--server-fingerprint", &pin],
            format!("the server's certificate {impostor_pin} does not match the pinned {real_pin}"),
        ),
        // One bit away from what it presents.
        (
            &["--server-fingerprint", &near],
            "does not match the pinned".into(),
        ),
        // No trust given: the system's CAs never signed a self-signed certificate.
        (&[], "not signed by a CA this system trusts".into()),
        // The real server's certificate as the CA: it did not sign the impostor's.
        (
            &["--ca", &real_ca],
            format!("not signed by the CA in {real_ca}"),
        ),
    ];
    for (flags, sentence) in refusals {
        let (out, _, stderr) = list_processes(&serve.base, &admin, flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(&sentence), "{flags:?}: {stderr}");
        assert!(stderr.contains("no request was sent"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains(&admin), "{stderr}");
    }
    // Asked to verify, but pointed at http://: refused before connecting at all.
    let plain = serve.base.replace("https://", "http://");
    let (out, _, stderr) = list_processes(&plain, &admin, &["--server-fingerprint", &pin]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("use its https:// URL"), "{stderr}");
    // Not one of those requests (nor the token) reached the server: its request log, which
    // has a line for every request, even a refused one, has none.
    assert_eq!(serve.requests_to("/v1/processes"), 0, "{}", serve.stderr());
    // The same command with the impostor's own pin does reach it (the log above can fail).
    let own = impostor_pin.to_string();
    let (out, _, stderr) = list_processes(&serve.base, &admin, &["--server-fingerprint", &own]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(serve.requests_to("/v1/processes"), 1, "{}", serve.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_tls_do_not_mix_on_one_port() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let (admin, pin) = init(&data, &[]);
    let log = tmp.path().join("tls.log");
    let serve = ServeChild::start(BIN, &data, Transport::DataDirTls, &[], log).await;
    let healthy = serve.requests_to("/healthz");
    // Plain HTTP to the TLS port: no answer, and nothing reaches the router.
    let plain = format!("http://{}", serve.addr());
    let reply = warden_tests::http::client()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(reply.is_err(), "plain HTTP answered on the TLS port");
    let (out, _, stderr) = list_processes(&plain, &admin, &[]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(serve.requests_to("/healthz"), healthy);
    assert_eq!(serve.requests_to("/v1/processes"), 0);

    // TLS to a plain HTTP server: one clear sentence.
    let plain_data = tmp.path().join("plain");
    let plain_admin = init_data_dir(&plain_data);
    let log = tmp.path().join("plain.log");
    let plain_serve = ServeChild::start(BIN, &plain_data, Transport::Plain, &[], log).await;
    assert!(plain_serve.base.starts_with("http://"));
    let https = format!("https://{}", plain_serve.addr());
    let (out, _, stderr) = list_processes(
        &https,
        &plain_admin,
        &["--server-fingerprint", &pin.to_string()],
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("did not answer in TLS"), "{stderr}");
    // `--insecure-http` on a data directory with a certificate serves plain HTTP.
    let log = tmp.path().join("insecure.log");
    drop(serve);
    let insecure = ServeChild::start(BIN, &data, Transport::InsecureHttp, &[], log).await;
    let (out, stdout, stderr) = list_processes(&insecure.base, &admin, &[]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "[]");
}

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

/// The README's "Try it": `warden demo` serves HTTPS with the certificate its new data
/// directory got, and the command it prints (pinned to that certificate) runs the demo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_tls_and_its_printed_command_runs_the_demo_pinned() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("demo-data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (stdout, stderr) = (tmp.path().join("demo.out"), tmp.path().join("demo.err"));
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", &listen, "--data"])
        .arg(&data)
        .arg("--module")
        .arg(warden_tests::guests::component("hello"))
        .arg("--manifest")
        .arg(warden_tests::guests::manifest("hello"))
        .env_remove("WARDEN_DATA")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout"))
        .stderr(std::fs::File::create(&stderr).expect("stderr"))
        .spawn()
        .expect("demo starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let printed = loop {
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        let out = std::fs::read_to_string(&stdout).unwrap_or_default();
        if log.contains(&format!("listening on https://{listen}")) {
            break out;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("demo exited {status}: {out}{log}");
        }
        assert!(Instant::now() < deadline, "{out}{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fingerprint = Fingerprint::of_pem_file(&cert_of(&data)).expect("demo certificate");
    assert!(
        printed.contains(&format!("server certificate fingerprint: {fingerprint}")),
        "{printed}"
    );
    let command = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("./target/release/warden "))
        .expect("the printed command");
    assert!(
        command.contains(&format!(
            "--server https://{listen} --server-fingerprint {fingerprint}"
        )),
        "{command}"
    );
    let args: Vec<&str> = command.split_whitespace().collect();
    let (out, stdout, stderr) = warden(&args, &[]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("succeeded: hello, Ada"), "{stdout}");
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
