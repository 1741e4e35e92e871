//! A rotation that crashed between "set on target" and "promote", resolved by the real
//! `warden credential reconcile` on the real data directory: the live password is promoted,
//! a pending version that never took is given up, nothing changes when nothing logs in, and
//! for a key the stale public key is removed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use warden_host::ssh::SshError;
use warden_host::store::DataDir;
use warden_host::vault::{Secret, Vault, VersionState};
use warden_tests::sshd::{Sshd, TestUser};
use warden_tests::{grep_dir, guests, random_secret, warden};

use crate::rotation::{current_secret, key, login, make_admin, password, states};

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

/// The `warden-e2e` CLI on one data directory.
pub(crate) struct Cli {
    _dir: tempfile::TempDir,
    pub(crate) data: PathBuf,
}

impl Cli {
    pub(crate) fn init() -> Cli {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let data = dir.path().join("data");
        let cli = Cli { _dir: dir, data };
        cli.ok(&["init"], None);
        cli
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend([
            "--data".to_string(),
            self.data.to_string_lossy().into_owned(),
        ]);
        all
    }

    pub(crate) fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
        let all = self.args(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        warden(BIN, &all, stdin).expect("warden runs")
    }

    /// `warden credential reconcile CREDENTIAL --target t0 --admin ADMIN`.
    pub(crate) fn reconcile(&self, credential: &str, admin: &str) -> std::process::Output {
        let args = [
            "credential",
            "reconcile",
            credential,
            "--target",
            "t0",
            "--admin",
            admin,
        ];
        self.run(&args, None)
    }

    /// [`Cli::reconcile`] that must succeed; its standard output.
    pub(crate) fn reconcile_ok(&self, credential: &str, admin: &str) -> String {
        let args = [
            "credential",
            "reconcile",
            credential,
            "--target",
            "t0",
            "--admin",
            admin,
        ];
        self.ok(&args, None)
    }

    pub(crate) fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "warden {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `warden exec probe --param mode=rotate …` with the crash fault point armed.
    fn rotate_and_crash(&self, account: &str, admin: &str) -> std::process::Output {
        let probe = guests::component("probe");
        let manifest = guests::manifest("probe");
        let args = self.args(&[
            "exec",
            &probe.to_string_lossy(),
            "--manifest",
            &manifest.to_string_lossy(),
            "--param",
            "mode=rotate",
            "--param",
            &format!("credential={account}"),
            "--param",
            &format!("admin={admin}"),
            "--param",
            "target=t0",
            "--allow-credential",
            account,
            "--allow-credential",
            admin,
            "--allow-target",
            "t0",
            "--allow-rotate",
            account,
        ]);
        Command::new(BIN)
            .args(&args)
            .env("WARDEN_TEST_CRASH_AT", "rotation.after-set")
            .env_remove("WARDEN_DATA")
            .output()
            .expect("warden exec runs")
    }

    /// The vault, opened in-process (the CLI must not be running: sled allows one process).
    pub(crate) fn vault(&self) -> (warden_host::store::Database, Vault) {
        let DataDir { db, master_key, .. } = DataDir::open(&self.data).expect("open data dir");
        let vault = Vault::open(&db, master_key).expect("vault");
        (db, vault)
    }

    /// Waits (bounded) until no handle of this process holds the database any more: sled's
    /// flusher thread lets go of its file lock shortly after the last handle drops, and the
    /// CLI started next would find it locked.
    pub(crate) fn wait_unlocked(&self) {
        let file = self.data.join("db/db");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let free = Command::new("flock")
                .arg("-n")
                .arg(&file)
                .arg("true")
                .status()
                .is_ok_and(|s| s.success());
            if free {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "database stays locked"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub(crate) fn audit_lines(&self, action: &str) -> Vec<Json> {
        self.ok(&["audit", "show", "--action", action], None)
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }
}

pub(crate) fn cli_with_target(sshd: &Sshd, user: &TestUser) -> Cli {
    let cli = Cli::init();
    cli.ok(
        &[
            "target",
            "add",
            "t0",
            "--address",
            &sshd.addr(),
            "--host-key",
            &sshd.host_key_line,
        ],
        None,
    );
    cli.ok(
        &["credential", "add", "acct", "--username", &user.name],
        Some(format!("{}\n", user.password).as_bytes()),
    );
    {
        let (_db, vault) = cli.vault();
        make_admin(&vault, "acct");
    }
    cli.wait_unlocked();
    cli
}

fn assert_no_plaintext(data: &Path, secrets: &[&str]) {
    for secret in secrets {
        assert_eq!(
            grep_dir(data, secret.as_bytes()).expect("grep"),
            0,
            "plaintext on disk"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_between_set_and_promote_is_resolved_by_reconcile_promoting_the_live_password() {
    let user = TestUser::create("wrc")
        .expect("user")
        .with_sudo()
        .expect("sudo");
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let cli = cli_with_target(&sshd, &user);

    let crashed = cli.rotate_and_crash("acct", "acct");
    assert_eq!(
        crashed.status.code(),
        None,
        "killed by SIGABRT: {crashed:?}"
    );
    assert!(String::from_utf8_lossy(&crashed.stderr).contains("rotation.after-set"));

    // After the crash the target has the pending password, the vault's current one is stale.
    let pending = {
        let (_dir, vault) = cli.vault();
        assert_eq!(
            states(&vault, "acct"),
            [(1, VersionState::Current), (2, VersionState::Pending)]
        );
        let v2 = vault.secret_version("acct", 2).expect("pending");
        String::from_utf8(v2.expose().to_vec()).expect("utf-8")
    };
    login(&sshd, &user.name, password(&pending))
        .await
        .expect("pending is live");
    assert!(
        login(&sshd, &user.name, password(&user.password))
            .await
            .is_err()
    );

    let out = cli.reconcile_ok("acct", "acct");
    assert!(out.contains("promoted pending version 2"), "{out}");
    {
        let (_dir, vault) = cli.vault();
        assert_eq!(
            states(&vault, "acct"),
            [(1, VersionState::Previous), (2, VersionState::Current)]
        );
        let current = current_secret(&vault, "acct");
        login(&sshd, &user.name, password(&current))
            .await
            .expect("current logs in");
    }
    let again = cli.reconcile_ok("acct", "acct");
    assert!(
        again.contains("nothing pending; version 2 is current"),
        "{again}"
    );

    let records = cli.audit_lines("credential.reconcile");
    assert_eq!(records.len(), 2, "one record per reconcile");
    assert_eq!(records[0]["outcome"], "ok");
    assert_eq!(cli.audit_lines("credential.rotation.pending").len(), 1);
    assert_eq!(cli.audit_lines("credential.rotation.promoted").len(), 1);
    assert!(cli.ok(&["audit", "verify"], None).contains("audit log OK"));
    let shown = cli.ok(&["audit", "show"], None);
    assert!(!shown.contains(&pending) && !shown.contains(&user.password));
    assert_no_plaintext(&cli.data, &[&pending, &user.password]);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_keeps_the_current_password_when_the_pending_one_never_took() {
    let user = TestUser::create("wrn")
        .expect("user")
        .with_sudo()
        .expect("sudo");
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let cli = cli_with_target(&sshd, &user);
    // What a crash after "stored as pending" and before the set step leaves behind.
    {
        let (_db, vault) = cli.vault();
        let never_set = Secret::from_bytes(random_secret(24).into_bytes());
        vault
            .add_pending("acct", never_set, "test", "rotation on target t0")
            .expect("pending");
    }
    cli.wait_unlocked();
    let out = cli.reconcile_ok("acct", "acct");
    assert!(out.contains("kept version 1 current"), "{out}");
    assert!(out.contains("marked failed: [2]"), "{out}");
    let (_dir, vault) = cli.vault();
    assert_eq!(
        states(&vault, "acct"),
        [(1, VersionState::Current), (2, VersionState::Failed)]
    );
    login(&sshd, &user.name, password(&current_secret(&vault, "acct")))
        .await
        .expect("current logs in");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_fails_clearly_and_changes_nothing_when_no_version_logs_in() {
    let user = TestUser::create("wrx")
        .expect("user")
        .with_sudo()
        .expect("sudo");
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let cli = cli_with_target(&sshd, &user);
    let crashed = cli.rotate_and_crash("acct", "acct");
    assert_eq!(crashed.status.code(), None, "{crashed:?}");
    // Someone changes the password behind the vault's back.
    let mut chpasswd = Command::new("chpasswd")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("chpasswd");
    use std::io::Write;
    let other = random_secret(24);
    chpasswd
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{}:{other}\n", user.name).as_bytes())
        .expect("write");
    assert!(chpasswd.wait().expect("chpasswd").success());

    let out = cli.reconcile("acct", "acct");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vault is left unchanged"), "{stderr}");
    let (_dir, vault) = cli.vault();
    assert_eq!(
        states(&vault, "acct"),
        [(1, VersionState::Current), (2, VersionState::Pending)]
    );
    drop((_dir, vault));
    let records = cli.audit_lines("credential.reconcile");
    assert!(
        records[0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .starts_with("auth-failed")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_crash_is_resolved_by_reconcile_which_removes_the_old_key() {
    let user = TestUser::create("wrq").expect("user");
    // The admin is another account: an admin credential beside one of the same account
    // (which a task could run commands as) is refused.
    let admin = TestUser::create("wra")
        .expect("admin")
        .with_sudo()
        .expect("sudo");
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let cli = cli_with_target(&sshd, &admin);
    cli.ok(
        &[
            "credential",
            "add",
            "key",
            "--username",
            &user.name,
            "--kind",
            "ssh-key",
        ],
        Some(user.private_key_openssh.as_bytes()),
    );

    let crashed = cli.rotate_and_crash("key", "acct");
    assert_eq!(
        crashed.status.code(),
        None,
        "killed by SIGABRT: {crashed:?}"
    );
    // The crash came after the new key was installed and before the old one was removed:
    // both open the account now.
    let pending = {
        let (_db, vault) = cli.vault();
        let v2 = vault.secret_version("key", 2).expect("pending");
        String::from_utf8(v2.expose().to_vec()).expect("utf-8")
    };
    login(&sshd, &user.name, key(&pending))
        .await
        .expect("pending key is live");
    login(&sshd, &user.name, key(&user.private_key_openssh))
        .await
        .expect("old key not yet removed");

    let out = cli.reconcile_ok("key", "acct");
    assert!(out.contains("promoted pending version 2"), "{out}");
    login(&sshd, &user.name, key(&pending))
        .await
        .expect("new key logs in");
    let old = login(&sshd, &user.name, key(&user.private_key_openssh)).await;
    assert!(
        matches!(old, Err(SshError::AuthFailed(_))),
        "old key removed: {old:?}"
    );
    let (_db, vault) = cli.vault();
    assert_eq!(
        states(&vault, "key"),
        [(1, VersionState::Previous), (2, VersionState::Current)]
    );
}
