//! Tests of the SSH layer against real OpenSSH servers on loopback (needs root and
//! `/usr/sbin/sshd`; see the harness in `tests/src/sshd.rs`).

#[allow(dead_code)] // the harness has helpers these tests do not use
#[path = "../../../tests/src/sshd.rs"]
mod sshd;

use std::time::{Duration, Instant};

use secrecy::SecretString;

use self::sshd::{Sshd, TestUser};
use super::*;
use crate::redact::Redactor;
use crate::targets::{Target, fingerprint};

fn target(sshd: &Sshd, name: &str) -> Target {
    Target {
        name: name.into(),
        address: sshd.ip.clone(),
        port: sshd.port,
        host_key: sshd.host_key_line.clone(),
        zone: "default".into(),
        tags: vec![],
    }
}

fn password(user: &TestUser) -> SshCredential {
    SshCredential {
        id: format!("pw-{}", user.name),
        username: user.name.clone(),
        auth: SshAuth::Password(SecretString::from(user.password.clone())),
    }
}

fn key(user: &TestUser) -> SshCredential {
    SshCredential {
        id: format!("key-{}", user.name),
        username: user.name.clone(),
        auth: SshAuth::PrivateKey(SecretString::from(user.private_key_openssh.clone())),
    }
}

fn req(command: &str) -> ExecRequest {
    ExecRequest {
        command: command.into(),
        sudo: false,
        stdin: None,
        timeout: Duration::from_secs(20),
        output_cap: 1 << 20,
    }
}

fn sudo(command: &str) -> ExecRequest {
    ExecRequest {
        sudo: true,
        ..req(command)
    }
}

fn pool() -> SshPool {
    SshPool::new(SshConfig {
        connect_timeout: Duration::from_secs(5),
        ..SshConfig::default()
    })
}

struct Env {
    sshd: Sshd,
    user: TestUser,
    target: Target,
    pool: SshPool,
}

fn env(prefix: &str) -> Env {
    let sshd = Sshd::start("127.0.0.1").unwrap();
    let user = TestUser::create(prefix).unwrap();
    let target = target(&sshd, "t1");
    Env {
        sshd,
        user,
        target,
        pool: pool(),
    }
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

/// Every process's argv and environment on this machine (the targets run here).
fn process_table() -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        for file in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                all.push(bytes);
            }
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn user_runs(user: &str, needle: &str) -> bool {
    let out = std::process::Command::new("ps")
        .args(["-u", user, "-o", "args="])
        .output()
        .unwrap();
    text(&out.stdout).contains(needle)
}

#[tokio::test]
async fn password_exec_returns_stdout_stderr_and_exit_code() {
    let e = env("pwexec");
    let cred = password(&e.user);
    let r = e
        .pool
        .exec(&e.target, &cred, &req("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!((r.exit_status, r.exit_signal.as_deref()), (Some(3), None));
    assert_eq!((text(&r.stdout), text(&r.stderr)), ("out\n", "err\n"));
    assert!(!r.stdout_truncated && !r.stderr_truncated);
}

#[tokio::test]
async fn key_exec_runs_as_the_credential_user() {
    let e = env("keyexec");
    let r = e
        .pool
        .exec(&e.target, &key(&e.user), &req("id -un"))
        .await
        .unwrap();
    assert_eq!(text(&r.stdout).trim(), e.user.name);
    assert_eq!(r.exit_status, Some(0));
}

#[tokio::test]
async fn stdin_bytes_reach_the_command_then_eof() {
    let e = env("stdin");
    let cred = password(&e.user);
    let data: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
    let r = e
        .pool
        .exec(
            &e.target,
            &cred,
            &ExecRequest {
                stdin: Some(data.clone()),
                ..req("sha256sum")
            },
        )
        .await
        .unwrap();
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
    };
    assert_eq!(
        text(&r.stdout).split_whitespace().next(),
        Some(expected.as_str())
    );
    // No stdin: EOF at once, so `cat` ends instead of hanging.
    let r = e
        .pool
        .exec(&e.target, &cred, &req("cat; echo done"))
        .await
        .unwrap();
    assert_eq!(text(&r.stdout), "done\n");
}

#[tokio::test]
async fn reports_signal_that_killed_the_command() {
    let e = env("signal");
    let r = e
        .pool
        .exec(&e.target, &password(&e.user), &req("kill -KILL $$"))
        .await
        .unwrap();
    assert_eq!(
        (r.exit_status, r.exit_signal.as_deref()),
        (None, Some("KILL"))
    );
}

#[tokio::test]
async fn output_over_cap_is_truncated_and_drained() {
    let e = env("cap");
    let cmd = "head -c 5000000 /dev/zero; echo tail-err >&2; head -c 3000 /dev/zero >&2; exit 7";
    let r = e
        .pool
        .exec(
            &e.target,
            &password(&e.user),
            &ExecRequest {
                output_cap: 1000,
                ..req(cmd)
            },
        )
        .await
        .unwrap();
    assert_eq!((r.stdout.len(), r.stdout_truncated), (1000, true));
    assert_eq!((r.stderr.len(), r.stderr_truncated), (1000, true));
    assert!(r.stderr.starts_with(b"tail-err\n"));
    // Exit status still arrives: the rest was read and discarded, not left blocking.
    assert_eq!(r.exit_status, Some(7));
}

#[tokio::test]
async fn sudo_with_password_runs_as_root_and_strips_markers() {
    let sshd = Sshd::start("127.0.0.1").unwrap();
    let user = TestUser::create("sudo").unwrap().with_sudo().unwrap();
    let (t, cred, pool) = (target(&sshd, "t"), password(&user), pool());
    let r = pool
        .exec(&t, &cred, &sudo("id -u; echo to-err >&2"))
        .await
        .unwrap();
    assert_eq!(
        (text(&r.stdout), text(&r.stderr)),
        ("0\n", "to-err\n"),
        "{r:?}"
    );
    assert_eq!(r.exit_status, Some(0));
    // The request's stdin goes to the command, after the password went to sudo.
    let r = pool
        .exec(
            &t,
            &cred,
            &ExecRequest {
                stdin: Some(b"line1\nline2".to_vec()),
                ..sudo("cat")
            },
        )
        .await
        .unwrap();
    assert_eq!(text(&r.stdout), "line1\nline2");
    assert!(!contains(&r.stdout, user.password.as_bytes()) && r.stderr.is_empty());
}

#[tokio::test]
async fn sudo_that_does_not_ask_never_receives_the_password() {
    let sshd = Sshd::start("127.0.0.1").unwrap();
    let user = TestUser::create("nopw")
        .unwrap()
        .with_sudo_nopasswd()
        .unwrap();
    let (t, cred) = (target(&sshd, "t"), password(&user));
    // NOPASSWD: sudo never prompts, so nothing may be written before the command's stdin.
    let r = pool().exec(&t, &cred, &sudo("id -u; cat")).await.unwrap();
    assert_eq!((text(&r.stdout), text(&r.stderr)), ("0\n", ""), "{r:?}");
    let stdin = Some(b"only this".to_vec());
    let r = pool()
        .exec(
            &t,
            &cred,
            &ExecRequest {
                stdin,
                ..sudo("cat")
            },
        )
        .await
        .unwrap();
    assert_eq!(text(&r.stdout), "only this");
}

#[tokio::test]
async fn sudo_password_is_never_in_any_process_argv_or_environment() {
    let sshd = Sshd::start("127.0.0.1").unwrap();
    let user = TestUser::create("ps").unwrap().with_sudo().unwrap();
    let (t, cred, pool) = (target(&sshd, "t"), password(&user), pool());
    let secret = user.password.clone().into_bytes();
    let running = {
        let (pool, t) = (pool.clone(), t.clone());
        tokio::spawn(async move { pool.exec(&t, &cred, &sudo("sleep 2; echo slept")).await })
    };
    let mut scans = 0;
    let mut saw_sleep = false;
    while !running.is_finished() {
        let table = process_table();
        saw_sleep |= table.iter().any(|p| p.starts_with(b"sleep\x002"));
        assert!(
            !table.iter().any(|p| contains(p, &secret)),
            "password visible in /proc"
        );
        scans += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = running.await.unwrap().unwrap();
    assert_eq!(text(&r.stdout), "slept\n");
    assert!(
        saw_sleep && scans > 5,
        "scan did not overlap the command ({scans} scans)"
    );
}

#[tokio::test]
async fn echoed_password_and_encodings_are_redacted_by_redactor() {
    let e = env("redact");
    let cred = password(&e.user);
    let redactor = Redactor::new();
    redactor.add_secret(e.user.password.as_bytes()).unwrap();
    let stdin = Some(e.user.password.clone().into_bytes());
    let cmd = "p=$(cat); echo \"raw=$p\"; printf %s \"$p\" | base64; printf %s \"$p\" | od -An -tx1 | tr -d ' \\n'; echo; printf 'u:%s' \"$p\" | base64";
    let r = e
        .pool
        .exec(&e.target, &cred, &ExecRequest { stdin, ..req(cmd) })
        .await
        .unwrap();
    assert!(
        contains(&r.stdout, e.user.password.as_bytes()),
        "command did not echo it"
    );
    let clean = text(&redactor.redact(&r.stdout)).to_string();
    let lines: Vec<&str> = clean.lines().collect();
    assert_eq!(lines[0], "raw=[REDACTED]");
    assert_eq!(lines[1], "[REDACTED]");
    assert_eq!(lines[2], "[REDACTED]");
    assert!(
        lines[3].contains("[REDACTED]") && lines[3].len() < 20,
        "{clean}"
    );
}

#[tokio::test]
async fn sudo_rejecting_the_password_is_auth_failed() {
    let sshd = Sshd::start("127.0.0.1").unwrap();
    let user = TestUser::create("sudorej")
        .unwrap()
        .with_sudo_rejecting_password()
        .unwrap();
    let started = Instant::now();
    let err = pool()
        .exec(&target(&sshd, "t"), &password(&user), &sudo("id -u"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SshError::AuthFailed(m) if m.contains("sudo")),
        "{err:?}"
    );
    assert!(!err.to_string().contains(&user.password));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn sudo_with_key_credential_is_non_interactive() {
    let sshd = Sshd::start("127.0.0.1").unwrap();
    let user = TestUser::create("sudokey").unwrap().with_sudo().unwrap();
    let r = pool()
        .exec(&target(&sshd, "t"), &key(&user), &sudo("id -u"))
        .await
        .unwrap();
    // sudo -n refuses (the rule needs a password) instead of waiting for one.
    assert_eq!(r.exit_status, Some(1));
    assert!(text(&r.stderr).contains("password"), "{r:?}");
    assert!(r.stdout.is_empty());
}

#[tokio::test]
async fn refuses_server_whose_host_key_is_not_the_pinned_one() {
    let e = env("hostkey");
    let other = russh::keys::PrivateKey::random(
        &mut russh::keys::key::safe_rng(),
        russh::keys::Algorithm::Ed25519,
    )
    .unwrap();
    let mut wrong = e.target.clone();
    wrong.host_key = other.public_key().to_openssh().unwrap();
    let err = e
        .pool
        .exec(&wrong, &password(&e.user), &req("true"))
        .await
        .unwrap_err();
    let expected = SshError::HostKeyMismatch {
        expected: fingerprint(&wrong.host_key).unwrap(),
        offered: fingerprint(&e.sshd.host_key_line).unwrap(),
    };
    assert_eq!(err, expected);
    assert_eq!(e.pool.open_connections(), 0);
}

#[tokio::test]
async fn wrong_password_and_wrong_key_are_auth_failed() {
    let e = env("wrongpw");
    let mut cred = password(&e.user);
    cred.auth = SshAuth::Password(SecretString::from("not-the-password".to_string()));
    let err = e
        .pool
        .exec(&e.target, &cred, &req("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::AuthFailed(_)), "{err:?}");
    let stranger = TestUser::create("stranger").unwrap();
    let mut cred = key(&stranger);
    cred.username = e.user.name.clone();
    let err = e
        .pool
        .exec(&e.target, &cred, &req("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::AuthFailed(_)), "{err:?}");
}

#[tokio::test]
async fn malformed_private_key_is_invalid_argument() {
    let e = env("badkey");
    let mut cred = key(&e.user);
    cred.auth = SshAuth::PrivateKey(SecretString::from(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n".to_string(),
    ));
    let err = e
        .pool
        .exec(&e.target, &cred, &req("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = env("refused");
    let mut t = e.target.clone();
    t.port = port;
    let err = e
        .pool
        .exec(&t, &password(&e.user), &req("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::ConnectionRefused(_)), "{err:?}");
}

#[tokio::test]
async fn silent_listener_is_unreachable_within_connect_timeout() {
    // Accepts TCP (kernel backlog) but never speaks SSH: a hung or dead service.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = env("silent");
    let mut t = e.target.clone();
    t.port = listener.local_addr().unwrap().port();
    let pool = SshPool::new(SshConfig {
        connect_timeout: Duration::from_millis(500),
        ..SshConfig::default()
    });
    let started = Instant::now();
    let err = pool
        .exec(&t, &password(&e.user), &req("true"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SshError::Unreachable(m) if m.contains("no SSH answer")),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn host_dropping_syns_is_unreachable() {
    // A listener whose accept queue is full: the kernel drops further SYNs, exactly what a
    // dead or firewalled host looks like to the client.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        let attempt = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_millis(200), attempt).await {
            Ok(stream) => fillers.push(stream.unwrap()),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "accept queue never filled");
    }
    let e = env("noroute");
    let mut t = e.target.clone();
    t.port = addr.port();
    let pool = SshPool::new(SshConfig {
        connect_timeout: Duration::from_millis(500),
        ..SshConfig::default()
    });
    let err = pool
        .exec(&t, &password(&e.user), &req("true"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SshError::Unreachable(m) if m.contains("no TCP answer")),
        "{err:?}"
    );
}

#[tokio::test]
async fn command_over_timeout_is_stopped_and_connection_stays_usable() {
    let e = env("timeout");
    let cred = password(&e.user);
    let slow = ExecRequest {
        timeout: Duration::from_millis(500),
        ..req("sleep 37")
    };
    let started = Instant::now();
    let err = e.pool.exec(&e.target, &cred, &slow).await.unwrap_err();
    assert!(matches!(err, SshError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let gone = async {
        while user_runs(&e.user.name, "sleep 37") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .expect("remote command still running");
    let r = e
        .pool
        .exec(&e.target, &cred, &req("echo alive"))
        .await
        .unwrap();
    assert_eq!(text(&r.stdout), "alive\n");
    assert_eq!(e.pool.connections_opened(), 1);
}

#[tokio::test]
async fn reuses_one_connection_per_target_and_credential() {
    let e = env("reuse");
    let (pw, k) = (password(&e.user), key(&e.user));
    for _ in 0..3 {
        e.pool.exec(&e.target, &pw, &req("true")).await.unwrap();
    }
    assert_eq!(e.pool.connections_opened(), 1);
    e.pool.exec(&e.target, &k, &req("true")).await.unwrap();
    assert_eq!(
        e.pool.connections_opened(),
        2,
        "another credential gets its own connection"
    );
    let mut renamed = e.target.clone();
    renamed.name = "t2".into();
    e.pool.exec(&renamed, &pw, &req("true")).await.unwrap();
    assert_eq!(
        e.pool.connections_opened(),
        3,
        "another target gets its own connection"
    );
}

#[tokio::test]
async fn concurrent_execs_share_one_connection() {
    let e = env("concur");
    let cred = password(&e.user);
    let calls = (0..24).map(|i| {
        let (pool, t, cred) = (&e.pool, &e.target, &cred);
        async move {
            (
                i,
                pool.exec(t, cred, &req(&format!("sleep 0.2; echo {i}")))
                    .await,
            )
        }
    });
    for (i, r) in futures::future::join_all(calls).await {
        assert_eq!(text(&r.unwrap().stdout), format!("{i}\n"));
    }
    assert_eq!(e.pool.connections_opened(), 1);
}

#[tokio::test]
async fn broken_connection_is_replaced_once() {
    let e = env("broken");
    let cred = password(&e.user);
    e.pool.exec(&e.target, &cred, &req("true")).await.unwrap();
    // Kill this connection's server-side session process: the pooled connection dies.
    let _ = e
        .pool
        .exec(&e.target, &cred, &req("kill -KILL $PPID"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = e
        .pool
        .exec(&e.target, &cred, &req("echo again"))
        .await
        .unwrap();
    assert_eq!(text(&r.stdout), "again\n");
    assert_eq!(e.pool.connections_opened(), 2);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let e = env("idle");
    let cred = password(&e.user);
    let pool = SshPool::new(SshConfig {
        idle_timeout: Duration::from_millis(200),
        ..SshConfig::default()
    });
    pool.exec(&e.target, &cred, &req("true")).await.unwrap();
    assert_eq!(pool.open_connections(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        pool.open_connections(),
        0,
        "background reaper did not close it"
    );
    pool.exec(&e.target, &cred, &req("true")).await.unwrap();
    assert_eq!(pool.connections_opened(), 2);
    // Manual sweep: not idle yet, kept; close_all closes it.
    pool.close_idle().await;
    assert_eq!(pool.open_connections(), 1);
    pool.close_all().await;
    assert_eq!(pool.open_connections(), 0);
}

#[tokio::test]
async fn upload_sets_exact_mode_and_download_round_trips() {
    let e = env("sftp");
    let cred = password(&e.user);
    let path = format!("{}/upload.bin", e.user.home.display());
    let data: Vec<u8> = (0..=255u8).cycle().take(1_500_000).collect();
    let n = e
        .pool
        .upload(&e.target, &cred, &path, &data, 0o640)
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    let back = e
        .pool
        .download(&e.target, &cred, &path, 2_000_000)
        .await
        .unwrap();
    assert!(back == data, "round trip differs");
    // Replacing a looser file: truncated, rewritten, mode tightened.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    e.pool
        .upload(&e.target, &cred, &path, b"short", 0o600)
        .await
        .unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.permissions().mode() & 0o7777, meta.size()),
        (0o600, 5)
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"short");
    assert_eq!(
        e.pool.connections_opened(),
        1,
        "sftp rides on the pooled connection"
    );
}

#[tokio::test]
async fn download_over_cap_fails_early() {
    let e = env("dlcap");
    let cred = password(&e.user);
    let path = format!("{}/big.bin", e.user.home.display());
    std::fs::write(&path, vec![7u8; 4 << 20]).unwrap();
    let err = e
        .pool
        .download(&e.target, &cred, &path, 1 << 20)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::InvalidArgument(_)), "{err:?}");
    // A file whose size is unknown (reports 0) and endless: the stream stops at the cap.
    let started = Instant::now();
    let err = e
        .pool
        .download(&e.target, &cred, "/dev/zero", 1 << 20)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::InvalidArgument(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sftp_errors_are_distinct() {
    let e = env("sftperr");
    let cred = password(&e.user);
    let err = e
        .pool
        .download(&e.target, &cred, "/nonexistent/file", 100)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::NotFound(_)), "{err:?}");
    let err = e
        .pool
        .upload(&e.target, &cred, "/root/forbidden", b"x", 0o600)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SshError::Remote(m) if m.contains("permission denied")),
        "{err:?}"
    );
    let err = e
        .pool
        .upload(&e.target, &cred, "relative/path", b"x", 0o600)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn scan_returns_server_key_without_authenticating() {
    let sshd = Sshd::start("127.0.0.1").unwrap();
    let line = scan_host_key(&sshd.ip, sshd.port, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(line, sshd.host_key_line);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = scan_host_key("127.0.0.1", port, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::ConnectionRefused(_)), "{err:?}");
}

#[tokio::test]
async fn fan_out_keeps_order_and_isolates_dead_targets() {
    let fleet = Sshd::fleet(3).unwrap();
    let user = TestUser::create("fanout").unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut targets: Vec<Target> = fleet
        .iter()
        .enumerate()
        .map(|(i, s)| target(s, &format!("h{i}")))
        .collect();
    let mut dead = targets[0].clone();
    dead.name = "dead".into();
    dead.address = "127.0.0.1".into();
    dead.port = silent.local_addr().unwrap().port();
    targets.insert(1, dead);
    let pool = SshPool::new(SshConfig {
        connect_timeout: Duration::from_millis(800),
        max_concurrency: 2,
        ..SshConfig::default()
    });
    for cred in [password(&user), key(&user)] {
        let jobs: Vec<(&Target, &SshCredential)> = targets.iter().map(|t| (t, &cred)).collect();
        let started = Instant::now();
        let results = pool
            .exec_many(&jobs, &req("hostname -I 2>/dev/null; echo ok"))
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "dead target delayed others"
        );
        assert_eq!(results.len(), 4);
        assert!(
            matches!(results[1], Err(SshError::Unreachable(_))),
            "{:?}",
            results[1]
        );
        for i in [0, 2, 3] {
            let r = results[i].as_ref().unwrap();
            assert!(text(&r.stdout).ends_with("ok\n"));
        }
    }
}

/// Not a benchmark (the lead owns those): prints rough latencies for the report.
#[tokio::test]
async fn prints_connect_and_reused_command_latency() {
    let e = env("latency");
    let cred = key(&e.user);
    let started = Instant::now();
    e.pool.exec(&e.target, &cred, &req("true")).await.unwrap();
    let first = started.elapsed();
    let mut samples = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        e.pool.exec(&e.target, &cred, &req("true")).await.unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    eprintln!(
        "latency: connect+auth+first command {first:?}; reused-connection command median {:?} (min {:?}, max {:?})",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1]
    );
    assert_eq!(e.pool.connections_opened(), 1);
}
