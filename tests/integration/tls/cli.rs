//! The CLI's verification of the server: the right pin or CA works; a wrong pin, no trust,
//! another CA, plain HTTP mixed with TLS are refused in one sentence with no request sent;
//! the demo's printed command runs pinned.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use warden_host::tls::Fingerprint;
use warden_tests::http::{ServeChild, Transport};

use super::{BIN, cert_of, impostor, init, list_processes, warden};
use warden_tests::http::init_data_dir;

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
