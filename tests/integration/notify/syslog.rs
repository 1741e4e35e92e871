//! Syslog sinks against a real `rsyslogd`: octet-counted RFC 5424 over TCP and TLS.

use super::*;

struct Rsyslog {
    /// With TLS: require a client certificate chaining to the collector's CA
    /// (`x509/certvalid`) instead of taking any client (`anon`).
    mutual: bool,
    child: Option<Reaper>,
    conf: PathBuf,
    pid: PathBuf,
    out: PathBuf,
    port: u16,
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl CLI).
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path, name: &str) -> Pki {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    let run = |args: &[&str]| openssl(&d, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let subject = ["-days", "2", "-subj"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem"],
        &subject,
        &["/CN=warden test CA"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "key.pem",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    Pki {
        ca: d.join("ca.pem"),
        cert: d.join("cert.pem"),
        key: d.join("key.pem"),
    }
}

impl Rsyslog {
    fn new(dir: &Path) -> Rsyslog {
        Self::with_tls(dir, None)
    }

    /// With `tls`: imtcp through the gtls driver (rsyslog-gnutls) with that certificate.
    fn with_tls(dir: &Path, tls: Option<&Pki>) -> Rsyslog {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Rsyslog {
            mutual: false,
            child: None,
            conf: dir.join("rsyslog.conf"),
            pid: dir.join("rsyslog.pid"),
            out: dir.join("received.log"),
            port,
        };
        r.configure(dir, tls);
        r.start();
        r
    }

    fn configure(&mut self, dir: &Path, tls: Option<&Pki>) {
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let (global, module) = match tls {
            None => (String::new(), String::new()),
            Some(p) => (
                format!(
                    " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                    p.ca.display(),
                    p.cert.display(),
                    p.key.display()
                ),
                format!(
                    " streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"{}\"",
                    if self.mutual {
                        "x509/certvalid"
                    } else {
                        "anon"
                    }
                ),
            ),
        };
        std::fs::write(
            &self.conf,
            format!(
                "global(workDirectory=\"{}\"{global})\nmodule(load=\"imtcp\"{module})\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{}\")\ntemplate(name=\"t\" type=\"string\" string=\"%PRI% %APP-NAME% %MSGID% %STRUCTURED-DATA% %msg%\\n\")\n*.* action(type=\"omfile\" file=\"{}\" template=\"t\")\n",
                work.display(),
                self.port,
                self.out.display()
            ),
        )
        .unwrap();
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(&self.pid);
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(&self.pid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd (apt-get install rsyslog)");
        self.child = Some(Reaper(child));
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "rsyslogd did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut reaper) = self.child.take() {
            // SIGTERM lets it flush and close its connections (as a restart would).
            let _ = Command::new("kill").arg(reaper.0.id().to_string()).status();
            let _ = reaper.0.wait();
        }
    }

    /// `seq`s of the audit records received, in arrival order.
    fn seqs(&self) -> Vec<u64> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" audit [warden@32473"))
            .filter_map(|l| l.split("seq=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn syslog_collector_down_for_a_while_loses_nothing() {
    let server = Server::start().await;
    let st = state(&server);
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::new(dir.path());
    let sink = json!({"name": "rsyslog", "kind": "syslog", "address": format!("127.0.0.1:{}", rsyslog.port)});
    let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    denial(st, "run-s", 3).await;
    let first = head(st);
    wait_until("the first records at rsyslog", || {
        rsyslog.seqs().contains(&(first - 1))
    })
    .await;
    let text = std::fs::read_to_string(&rsyslog.out).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("108 warden audit [warden@32473 seq=")),
        "{text}"
    );
    rsyslog.stop();
    // Records committed while the collector is down: runs do not wait for it.
    let started = std::time::Instant::now();
    denial(st, "run-s", 20).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(700)).await;
    rsyslog.start();
    let want = head(st);
    wait_until("every record after the collector returned", || {
        let got = rsyslog.seqs();
        (0..want).all(|seq| got.contains(&seq))
    })
    .await;
    let got = rsyslog.seqs();
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique,
        (0..unique.len() as u64).collect::<Vec<_>>(),
        "no gap"
    );
    assert!(
        got.len() <= 2 * unique.len(),
        "duplicates only from one resent chunk"
    );
}

#[tokio::test]
async fn syslog_over_tls_verifies_the_collector_certificate() {
    let server = Server::start().await;
    let st = state(&server);
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path(), "good");
    let rogue = pki(dir.path(), "rogue");
    // First the collector presents a certificate of a CA the sink does not trust.
    let mut rsyslog = Rsyslog::with_tls(dir.path(), Some(&rogue));
    let sink = json!({"name": "tls", "kind": "syslog", "address": format!("127.0.0.1:{}", rsyslog.port),
        "tls": true, "ca_file": good.ca.to_str().unwrap(), "format": "cef"});
    let r = server.post("/v1/notify/sinks", &server.admin, sink).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    denial(st, "run-t", 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        rsyslog.seqs().is_empty(),
        "nothing goes to an unverified collector"
    );
    // The genuine collector on the same address gets everything, over TLS.
    rsyslog.stop();
    rsyslog.configure(dir.path(), Some(&good));
    rsyslog.start();
    let want = head(st);
    wait_until("every record over TLS", || {
        let got = rsyslog.seqs();
        (0..want).all(|seq| got.contains(&seq))
    })
    .await;
    let text = std::fs::read_to_string(&rsyslog.out).unwrap();
    assert!(text.contains("CEF:0|Warden|Warden|"), "{text}");
    // A plain-TCP sink cannot talk to the TLS collector (no silent downgrade either way).
    let bad = json!({"name": "tls2", "kind": "syslog", "address": "127.0.0.1:1", "tls": true});
    let r = server.post("/v1/notify/sinks", &server.admin, bad).await;
    r.expect_error(StatusCode::BAD_REQUEST, "invalid");
}

/// Runs `openssl ARGS` in `dir`; it must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client certificate for `name`, signed by `ca`'s CA key (openssl CLI); (cert, key PEM).
fn client_cert(dir: &Path, ca: &Pki, name: &str) -> (PathBuf, Vec<u8>) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let ca_dir = ca.ca.parent().unwrap();
    let run = |args: &[&str]| openssl(&d, args);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "client.csr",
        "-subj",
        &format!("/CN={name}"),
    ]);
    std::fs::write(d.join("ext.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    let ca_pem = ca.ca.to_str().unwrap().to_string();
    let ca_key = ca_dir.join("ca.key").to_str().unwrap().to_string();
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        d.join("cert.pem"),
        std::fs::read(d.join("key.pem")).unwrap(),
    )
}

#[tokio::test]
async fn syslog_over_mutual_tls_is_accepted_only_with_a_client_certificate_of_the_collectors_ca() {
    let server = Server::start().await;
    let st = state(&server);
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path(), "good");
    let rogue = pki(dir.path(), "rogue");
    let (genuine_cert, genuine_key) = client_cert(dir.path(), &good, "warden-client");
    let (forged_cert, forged_key) = client_cert(dir.path(), &rogue, "warden-forged");
    for (name, pem) in [
        ("syslog-client-key", &genuine_key),
        ("forged-client-key", &forged_key),
    ] {
        st.vault
            .add(
                name,
                "syslog",
                CredentialKind::Password,
                Secret::from_bytes(pem.clone()),
            )
            .expect("credential");
    }
    let mut rsyslog = Rsyslog::with_tls(dir.path(), Some(&good));
    rsyslog.stop();
    rsyslog.mutual = true;
    rsyslog.configure(dir.path(), Some(&good));
    rsyslog.start();
    let address = format!("127.0.0.1:{}", rsyslog.port);
    let sink = |name: &str, client: Option<(&Path, &str)>| {
        let mut sink = json!({"name": name, "kind": "syslog", "address": address,
            "tls": true, "ca_file": good.ca.to_str().unwrap()});
        if let Some((cert, key)) = client {
            sink["client_cert_file"] = json!(cert.to_str().unwrap());
            sink["client_key_credential"] = json!(key);
        }
        sink
    };
    // Without a certificate, or with one from another CA: the collector takes nothing.
    for s in [
        sink("no-cert", None),
        sink("forged", Some((forged_cert.as_path(), "forged-client-key"))),
    ] {
        let r = server.post("/v1/notify/sinks", &server.admin, s).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    denial(st, "run-m", 3).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        rsyslog.seqs().is_empty(),
        "the collector took a client it should not"
    );
    // With the certificate the collector's CA signed: everything arrives.
    let s = sink("mtls", Some((genuine_cert.as_path(), "syslog-client-key")));
    let r = server.post("/v1/notify/sinks", &server.admin, s).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let want = head(st);
    wait_until("every record over mutual TLS", || {
        let got = rsyslog.seqs();
        (0..want).all(|seq| got.contains(&seq))
    })
    .await;
    // The key is named, never shown.
    let r = server.get("/v1/notify/sinks", &server.admin).await;
    let pem = String::from_utf8(genuine_key.clone()).unwrap();
    let body_line = pem.lines().nth(1).unwrap();
    assert!(
        !r.text.contains(body_line) && r.text.contains("syslog-client-key"),
        "{}",
        r.text
    );
    // Half a client identity, or one without TLS: refused at configuration.
    for bad in [
        json!({"name": "b1", "kind": "syslog", "address": address, "tls": true,
            "ca_file": good.ca.to_str().unwrap(), "client_cert_file": genuine_cert.to_str().unwrap()}),
        json!({"name": "b2", "kind": "syslog", "address": address, "tls": true,
            "ca_file": good.ca.to_str().unwrap(), "client_key_credential": "syslog-client-key"}),
        json!({"name": "b3", "kind": "syslog", "address": address,
            "client_cert_file": genuine_cert.to_str().unwrap(), "client_key_credential": "syslog-client-key"}),
        json!({"name": "b4", "kind": "syslog", "address": address, "tls": true,
            "ca_file": good.ca.to_str().unwrap(), "client_cert_file": "cert.pem", "client_key_credential": "syslog-client-key"}),
    ] {
        let r = server.post("/v1/notify/sinks", &server.admin, bad).await;
        r.expect_error(StatusCode::BAD_REQUEST, "invalid");
    }
}
