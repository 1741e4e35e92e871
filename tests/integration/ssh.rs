//! SSH and SFTP through the sandbox against real OpenSSH `sshd` instances on loopback:
//! auth by password and key, sudo with the password on stdin, redaction, pinned host
//! keys, grants, distinct errors per failure, and the real guest examples.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value as Json;
use warden_host::audit::Decision;
use warden_host::capabilities::grant::Grant;
use warden_host::registry::inputs::{Param, Value};
use warden_host::runtime::RunOutcome;
use warden_host::runtime::limits::RunLimits;
use warden_host::targets::Target;
use warden_host::vault::{CredentialKind, Secret};
use warden_tests::sshd::{Sshd, TestUser};

use crate::support::Env;

/// A test environment with `n` sshd targets (`t0`, `t1`, …) and one user on them, whose
/// password is credential `pw` and whose key is credential `key`.
pub(crate) struct Fleet {
    pub(crate) env: Env,
    pub(crate) user: TestUser,
    sshds: Vec<Sshd>,
}

impl Fleet {
    pub(crate) fn new(n: usize) -> Fleet {
        Self::with_user(n, TestUser::create("wdn").expect("test user"))
    }

    pub(crate) fn with_user(n: usize, user: TestUser) -> Fleet {
        let env = Env::new();
        let sshds = Sshd::fleet(n).expect("sshd fleet");
        for (i, sshd) in sshds.iter().enumerate() {
            env.targets
                .add(target(&format!("t{i}"), sshd, &sshd.host_key_line))
                .expect("add target");
        }
        env.add_password("pw", &user.name, &user.password);
        env.vault
            .add(
                "key",
                &user.name,
                CredentialKind::SshKey,
                Secret::from_bytes(user.private_key_openssh.as_bytes().to_vec()),
            )
            .expect("add key credential");
        Fleet { env, user, sshds }
    }

    /// Adds `name`: the user's password as an admin credential, the kind sudo may type.
    pub(crate) fn add_admin_password(&self, name: &str) {
        self.env
            .add_admin_password(name, &self.user.name, &self.user.password);
    }

    fn names(&self) -> Vec<String> {
        (0..self.sshds.len()).map(|i| format!("t{i}")).collect()
    }

    pub(crate) async fn probe(
        &self,
        params: Vec<Param>,
        grant: Grant,
    ) -> (String, Json, RunOutcome) {
        let probe = self.env.prepare("probe");
        let (run_id, report) = self
            .env
            .run(&probe, params, grant, RunLimits::default())
            .await;
        let json = match &report.outcome {
            RunOutcome::Succeeded { result } => serde_json::from_str(result).unwrap_or(Json::Null),
            _ => Json::Null,
        };
        (run_id, json, report.outcome)
    }

    /// Everything the run left behind that a person could read: its report, and every
    /// audit record in the log.
    fn all_audit_text(&self) -> String {
        let records = self.env.audit.query(&Default::default()).expect("query");
        records
            .iter()
            .map(|r| serde_json::to_string(r).expect("json"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn target(name: &str, sshd: &Sshd, host_key: &str) -> Target {
    Target {
        name: name.into(),
        address: sshd.ip.clone(),
        port: sshd.port,
        host_key: host_key.into(),
        zone: "default".into(),
        tags: vec![],
    }
}

pub(crate) fn p(name: &str, value: &str) -> Param {
    Param {
        name: name.into(),
        value: Value::Text(value.into()),
    }
}

pub(crate) fn flag(name: &str, value: bool) -> Param {
    Param {
        name: name.into(),
        value: Value::Flag(value),
    }
}

fn int(name: &str, value: i64) -> Param {
    Param {
        name: name.into(),
        value: Value::Integer(value),
    }
}

fn list(name: &str, values: &[String]) -> Param {
    Param {
        name: name.into(),
        value: Value::TextList(values.to_vec()),
    }
}

fn grant_all(fleet: &Fleet, credentials: &[&str]) -> Grant {
    Grant {
        credentials: credentials.iter().map(|s| s.to_string()).collect(),
        targets: fleet.names().into_iter().collect(),
        // Any shell text, with or without sudo: these tests exercise the SSH layer, not the
        // argv grants (`grant.rs` does).
        commands: vec!["sudo **".into()],
        raw_shell: true,
        paths: vec!["/tmp".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_a_command_on_three_targets_with_password_and_with_key_auth() {
    let fleet = Fleet::new(3);
    for cred in ["pw", "key"] {
        let params = vec![
            p("mode", "exec-many"),
            p("credential", cred),
            list("targets", &fleet.names()),
            p("command", "echo out-$(whoami); echo err-line >&2; exit 7"),
        ];
        let (_, json, outcome) = fleet.probe(params, grant_all(&fleet, &[cred])).await;
        let results = json.as_array().unwrap_or_else(|| panic!("{outcome:?}"));
        assert_eq!(results.len(), 3);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r["target"], format!("t{i}"));
            assert_eq!(r["exit"], 7, "{r}");
            assert_eq!(r["stdout"], format!("out-{}\n", fleet.user.name), "{r}");
            assert_eq!(r["stderr"], "err-line\n", "{r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_reaches_no_guest_memory_output_audit_or_target_argv() {
    let user = TestUser::create("wdm")
        .expect("user")
        .with_sudo()
        .expect("sudoers");
    let fleet = Fleet::with_user(1, user);
    // sudo types the password only for an admin credential.
    fleet.add_admin_password("adm");
    let password = fleet.user.password.clone();
    // While a sudo command sleeps on the target, read every process's argv on this machine
    // (the target is local) looking for the password.
    let watcher = {
        let password = password.clone();
        std::thread::spawn(move || {
            let mut seen = 0usize;
            let mut scans = 0usize;
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(50));
                scans += 1;
                for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                        seen += cmdline
                            .windows(password.len())
                            .filter(|w| *w == password.as_bytes())
                            .count();
                    }
                    if let Ok(environ) = std::fs::read(entry.path().join("environ")) {
                        seen += environ
                            .windows(password.len())
                            .filter(|w| *w == password.as_bytes())
                            .count();
                    }
                }
            }
            (seen, scans)
        })
    };
    let params = vec![
        p("mode", "exec"),
        p("credential", "adm"),
        p("target", "t0"),
        p("command", "sleep 1.5; id -u"),
        flag("sudo", true),
    ];
    let (_, json, outcome) = fleet.probe(params, grant_all(&fleet, &["adm"])).await;
    assert_eq!(
        json["stdout"], "0\n",
        "sudo ran the command as root: {outcome:?}"
    );
    let (seen, scans) = watcher.join().expect("watcher");
    assert!(scans >= 20);
    assert_eq!(
        seen, 0,
        "password visible in a process's argv or environment"
    );

    // Guest memory, after acquiring and using the credential against the real target.
    let needle = hex::encode(password.as_bytes());
    let params = vec![
        p("mode", "memscan"),
        p("credential", "adm"),
        p("needle", &needle),
        p("target", "t0"),
        p("command", "id"),
        flag("sudo", true),
    ];
    let (_, scan, outcome) = fleet.probe(params, grant_all(&fleet, &["adm"])).await;
    assert_eq!(scan["found"], 0, "secret in guest memory: {outcome:?}");
    assert!(
        !fleet.all_audit_text().contains(&password),
        "password in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sudo_takes_the_password_on_stdin_and_echoed_secrets_come_back_redacted() {
    use base64::Engine;
    let user = TestUser::create("wds")
        .expect("user")
        .with_sudo()
        .expect("sudoers");
    let fleet = Fleet::with_user(1, user);
    fleet.add_admin_password("adm");
    let password = fleet.user.password.clone();
    let b64 = base64::engine::general_purpose::STANDARD.encode(password.as_bytes());
    let hexed = hex::encode(password.as_bytes());
    let command = format!(
        "id -u; echo 'plain {password}'; echo 'b64 {b64}'; echo 'hex {hexed}'; echo 'err {password}' >&2"
    );
    let params = vec![
        p("mode", "exec"),
        p("credential", "adm"),
        p("target", "t0"),
        p("command", &command),
        flag("sudo", true),
    ];
    let (run_id, json, outcome) = fleet.probe(params, grant_all(&fleet, &["adm"])).await;
    let stdout = json["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("{outcome:?}"));
    assert_eq!(
        stdout,
        "0\nplain [REDACTED]\nb64 [REDACTED]\nhex [REDACTED]\n"
    );
    assert_eq!(json["stderr"], "err [REDACTED]\n");
    // The command text itself (which here holds the password) is redacted in the audit.
    let records = fleet.env.host_call_records(&run_id);
    assert!(records.iter().any(|r| r.entry.action == "ssh.exec"));
    assert!(!fleet.all_audit_text().contains(&password));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_whose_host_key_changed_is_refused_naming_the_offered_fingerprint() {
    let fleet = Fleet::new(2);
    // Pin t1's key on a target that points at t0.
    fleet
        .env
        .targets
        .add(target(
            "moved",
            &fleet.sshds[0],
            &fleet.sshds[1].host_key_line,
        ))
        .expect("add");
    let mut grant = grant_all(&fleet, &["pw"]);
    grant.targets.insert("moved".into());
    let params = vec![
        p("mode", "exec"),
        p("credential", "pw"),
        p("target", "moved"),
        p("command", "id"),
    ];
    let (run_id, json, _) = fleet.probe(params, grant).await;
    assert_eq!(json["error"], "host-key-mismatch", "{json}");
    let offered =
        warden_host::targets::fingerprint(&fleet.sshds[0].host_key_line).expect("fingerprint");
    assert!(
        json["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&offered),
        "{json}"
    );
    let records = fleet.env.host_call_records(&run_id);
    let exec = records
        .iter()
        .find(|r| r.entry.action == "ssh.exec")
        .expect("audited");
    assert!(
        exec.entry.outcome.contains(&offered),
        "audit names the offered key: {}",
        exec.entry.outcome
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ungranted_target_credential_command_and_path_are_denied_and_audited() {
    let fleet = Fleet::new(1);
    let base = Grant {
        credentials: BTreeSet::from(["pw".to_string()]),
        targets: BTreeSet::from(["t0".to_string()]),
        commands: vec!["echo *".into()],
        paths: vec!["/tmp/warden-allowed".into()],
        ..Default::default()
    };
    let cases: Vec<(Vec<Param>, &str)> = vec![
        (
            vec![
                p("mode", "exec"),
                p("credential", "pw"),
                p("target", "t9"),
                p("command", "echo hi"),
            ],
            "grant.targets",
        ),
        (
            vec![
                p("mode", "exec"),
                p("credential", "pw"),
                p("target", "t0"),
                p("command", "rm -rf /tmp/x"),
            ],
            "grant.commands",
        ),
        (
            vec![
                p("mode", "transfer"),
                p("credential", "pw"),
                p("target", "t0"),
                p("path", "/etc/warden-test"),
            ],
            "grant.paths",
        ),
        (
            vec![
                p("mode", "transfer"),
                p("credential", "pw"),
                p("target", "t0"),
                p("path", "/tmp/warden-allowed/../../etc/passwd"),
            ],
            "grant.paths",
        ),
    ];
    for (params, rule) in cases {
        let (run_id, json, outcome) = fleet.probe(params, base.clone()).await;
        let first_error = if json["error"].is_string() {
            json.clone()
        } else {
            json["upload"].clone()
        };
        assert_eq!(first_error["error"], "denied", "{rule}: {json} {outcome:?}");
        assert!(
            first_error["message"]
                .as_str()
                .unwrap_or_default()
                .contains(rule),
            "{json}"
        );
        let records = fleet.env.host_call_records(&run_id);
        let denied = records
            .iter()
            .filter(|r| matches!(&r.entry.decision, Decision::Denied { policy: Some(p), .. } if p == rule))
            .count();
        assert!(denied >= 1, "{rule} denial audited: {records:?}");
    }
    assert!(!std::path::Path::new("/etc/warden-test").exists());
    // The credential itself, when not granted.
    let params = vec![
        p("mode", "exec"),
        p("credential", "key"),
        p("target", "t0"),
        p("command", "echo hi"),
    ];
    let (_, json, outcome) = fleet.probe(params, base).await;
    assert!(
        matches!(outcome, RunOutcome::Failed { .. }),
        "{json} {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_refused_wrong_password_and_timeout_each_give_their_own_error() {
    let fleet = Fleet::new(1);
    // A listener that accepts TCP but never speaks SSH: a dead host, as far as SSH goes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    // A port nothing listens on.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let key = fleet.sshds[0].host_key_line.clone();
    for (name, port) in [("dead", silent_port), ("refused", closed_port)] {
        let t = Target {
            name: name.into(),
            address: "127.0.0.1".into(),
            port,
            host_key: key.clone(),
            zone: "default".into(),
            tags: vec![],
        };
        fleet.env.targets.add(t).expect("add");
    }
    fleet
        .env
        .add_password("wrong", &fleet.user.name, "definitely-not-the-password");
    let mut grant = grant_all(&fleet, &["pw", "wrong"]);
    grant
        .targets
        .extend(["dead".to_string(), "refused".to_string()]);

    let targets = vec!["dead".to_string(), "refused".to_string(), "t0".to_string()];
    let params = vec![
        p("mode", "exec-many"),
        p("credential", "pw"),
        list("targets", &targets),
        p("command", "echo alive"),
    ];
    let (_, json, outcome) = fleet.probe(params, grant.clone()).await;
    let results = json.as_array().unwrap_or_else(|| panic!("{outcome:?}"));
    assert_eq!(results[0]["error"], "unreachable", "{json}");
    assert_eq!(results[1]["error"], "connection-refused", "{json}");
    assert_eq!(
        results[2]["stdout"], "alive\n",
        "the live target still ran: {json}"
    );

    let params = vec![
        p("mode", "exec"),
        p("credential", "wrong"),
        p("target", "t0"),
        p("command", "id"),
    ];
    let (_, json, _) = fleet.probe(params, grant.clone()).await;
    assert_eq!(json["error"], "auth-failed", "{json}");

    let params = vec![
        p("mode", "exec"),
        p("credential", "pw"),
        p("target", "t0"),
        p("command", "sleep 5"),
        int("timeout-ms", 300),
    ];
    let (_, json, _) = fleet.probe(params, grant).await;
    assert_eq!(json["error"], "timeout", "{json}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn sftp_upload_sets_the_mode_and_download_returns_the_bytes() {
    let fleet = Fleet::new(1);
    let dir = format!("/tmp/warden-sftp-{}", uuid::Uuid::new_v4());
    std::fs::create_dir(&dir).expect("mkdir");
    std::process::Command::new("chown")
        .arg(&fleet.user.name)
        .arg(&dir)
        .status()
        .expect("chown");
    let path = format!("{dir}/motd");
    let params = vec![
        p("mode", "transfer"),
        p("credential", "key"),
        p("target", "t0"),
        p("path", &path),
        p("content", "maintenance at 22:00\n"),
        int("file-mode", 0o640),
    ];
    let (_, json, outcome) = fleet.probe(params, grant_all(&fleet, &["key"])).await;
    assert_eq!(json["upload"]["bytes"], 21, "{json} {outcome:?}");
    assert_eq!(json["download"]["content"], "maintenance at 22:00\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("uploaded")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_reused_across_calls_and_runs() {
    let fleet = Fleet::new(1);
    let before = fleet.env.bridge.services().ssh.connections_opened();
    for _ in 0..3 {
        let params = vec![
            p("mode", "exec"),
            p("credential", "key"),
            p("target", "t0"),
            p("command", "true"),
        ];
        let (_, json, _) = fleet.probe(params, grant_all(&fleet, &["key"])).await;
        assert_eq!(json["exit"], 0, "{json}");
    }
    assert_eq!(
        fleet.env.bridge.services().ssh.connections_opened() - before,
        1
    );
}

/// Runs a guest example with typed inputs against the fleet.
/// Runs guest example `name` within its manifest's `[requests]`, as a server would.
async fn example(fleet: &Fleet, name: &str, params: Vec<Param>, grant: Grant) -> Json {
    let (_, report) = fleet
        .env
        .run_example(name, params, grant, RunLimits::default())
        .await;
    match report.outcome {
        RunOutcome::Succeeded { result } => serde_json::from_str(&result).expect("JSON result"),
        other => panic!("{name} failed: {other:?} {:?}", report.events),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn collect_logs_downloads_each_targets_log_with_size_and_digest() {
    let fleet = Fleet::new(2);
    let path = format!("/tmp/warden-log-{}.log", uuid::Uuid::new_v4());
    let content = "line one\nline two\nline three\n";
    std::fs::write(&path, content).expect("write log");
    let params = vec![
        list("targets", &fleet.names()),
        p("credential", "key"),
        p("path", &path),
    ];
    let json = example(&fleet, "collect-logs", params, grant_all(&fleet, &["key"])).await;
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(content.as_bytes()));
    for t in json["targets"].as_array().expect("targets") {
        assert_eq!(t["bytes"], content.len(), "{json}");
        assert_eq!(t["sha256"], digest.as_str());
        assert_eq!(t["lines"], 3);
    }
    std::fs::remove_file(&path).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_ssh_key_adds_the_key_once() {
    let fleet = Fleet::new(1);
    let path = format!("/home/{}/.ssh/authorized_keys", fleet.user.name);
    let new_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQ2B2p3u8QbOqgvPcbmB3xBn0aGz2R2w1m8C4a2u3Yk deploy@test";
    let mut grant = grant_all(&fleet, &["key"]);
    grant.paths = vec![format!("/home/{}/.ssh", fleet.user.name)];
    let params = || {
        vec![
            list("targets", &fleet.names()),
            p("credential", "key"),
            p("public_key", new_key),
            p("path", &path),
        ]
    };
    let first = example(&fleet, "deploy-ssh-key", params(), grant.clone()).await;
    assert_eq!(first["added"], 1, "{first}");
    let second = example(&fleet, "deploy-ssh-key", params(), grant).await;
    assert_eq!(second["unchanged"], 1, "{second}");
    let contents = std::fs::read_to_string(&path).expect("authorized_keys");
    assert_eq!(contents.matches("deploy@test").count(), 1);
    assert!(
        contents.contains(
            fleet
                .user
                .public_key_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("-")
        ),
        "existing key kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lockdown_user_locks_the_account_and_kills_its_sessions() {
    let admin = TestUser::create("wda")
        .expect("admin")
        .with_sudo()
        .expect("sudo");
    let fleet = Fleet::with_user(1, admin);
    // Every lockdown command runs under sudo: an admin credential types the password.
    fleet.add_admin_password("adm");
    let victim = TestUser::create("wdv").expect("victim");
    // A session of the victim's: a long sleep running as that user.
    let mut session = std::process::Command::new("su")
        .args(["-s", "/bin/sh", "-c", "sleep 60", &victim.name])
        .spawn()
        .expect("victim session");
    std::thread::sleep(Duration::from_millis(300));
    let params = vec![
        list("targets", &fleet.names()),
        p("credential", "adm"),
        p("user", &victim.name),
    ];
    let json = example(&fleet, "lockdown-user", params, grant_all(&fleet, &["adm"])).await;
    assert_eq!(json["locked"], 1, "{json}");
    let shadow = std::fs::read_to_string("/etc/shadow").expect("shadow");
    let line = shadow
        .lines()
        .find(|l| l.starts_with(&format!("{}:", victim.name)))
        .expect("victim in shadow");
    assert!(
        line.split(':').nth(1).unwrap_or_default().starts_with('!'),
        "password locked: {line}"
    );
    let status = session.wait().expect("session ended");
    assert!(!status.success(), "the victim's session was killed");
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_report_lists_pending_updates_per_target() {
    let fleet = Fleet::new(2);
    let params = vec![list("targets", &fleet.names()), p("credential", "key")];
    let json = example(&fleet, "patch-report", params, grant_all(&fleet, &["key"])).await;
    // The targets are this machine, so the truth is what apt says here.
    let local = std::process::Command::new("sh")
        .args([
            "-c",
            "LC_ALL=C apt list --upgradable 2>/dev/null | grep -c upgradable || true",
        ])
        .output()
        .expect("apt");
    let expected: u64 = String::from_utf8_lossy(&local.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let targets = json["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 2);
    for t in targets {
        assert_eq!(t["pending"], expected, "{json}");
        assert_eq!(t["manager"], "apt");
    }
    assert_eq!(json["total_pending"], expected * 2);
}
