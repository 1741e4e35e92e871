//! Account lifecycle examples (`provision-user`, `deprovision-user`) against a real sshd on
//! loopback. The target is this machine, so the truth is checked here: `getent`, `id`, the
//! files in the new account's home, and the processes of a live session.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value as Json;
use warden_host::capabilities::grant::Grant;
use warden_host::registry::inputs::{Param, Value};
use warden_host::runtime::RunOutcome;
use warden_host::runtime::limits::RunLimits;
use warden_host::vault::{CredentialKind, Secret};
use warden_tests::sshd::{Sshd, TestUser};

use crate::support::Env;

/// A public key to authorize (never used to log in).
const NEW_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQ2B2p3u8QbOqgvPcbmB3xBn0aGz2R2w1m8C4a2u3Yk new@test";

/// One sshd target `t0` and a sudo-capable admin whose key is credential `admin`: the
/// examples run plain and sudo commands with one credential, which with a password would
/// type it into a session the task shapes, so the admin has NOPASSWD sudo and a key.
struct Site {
    env: Env,
    admin: TestUser,
    _sshd: Sshd,
}

impl Site {
    fn new() -> Site {
        let admin = TestUser::create("wda")
            .expect("admin")
            .with_sudo_nopasswd()
            .expect("sudo");
        let env = Env::new();
        let sshd = Sshd::start("127.0.0.2").expect("sshd");
        env.targets
            .add(crate::support::target_of("t0", &sshd))
            .expect("add target");
        env.vault
            .add(
                "admin",
                &admin.name,
                CredentialKind::SshKey,
                Secret::from_bytes(admin.private_key_openssh.as_bytes().to_vec()),
            )
            .expect("add key credential");
        Site {
            env,
            admin,
            _sshd: sshd,
        }
    }

    fn grant(&self) -> Grant {
        Grant {
            credentials: ["admin".to_string()].into(),
            targets: ["t0".to_string()].into(),
            // The examples build every command from quoted words: argv grants suffice.
            commands: vec!["**".into(), "sudo **".into()],
            ..Grant::default()
        }
    }

    /// Runs a guest example within its manifest's requested commands; returns its run id
    /// and outcome.
    async fn run(&self, example: &str, params: Vec<Param>) -> (String, RunOutcome) {
        let (run_id, report) = self
            .env
            .run_example(example, params, self.grant(), RunLimits::default())
            .await;
        (run_id, report.outcome)
    }

    /// Runs a guest example that must succeed; returns its JSON result.
    async fn run_ok(&self, example: &str, params: Vec<Param>) -> Json {
        match self.run(example, params).await {
            (_, RunOutcome::Succeeded { result }) => {
                serde_json::from_str(&result).expect("JSON result")
            }
            (_, other) => panic!("{example} failed: {other:?}"),
        }
    }
}

/// An account (and group) name the test owns; removed on drop whatever happened.
struct Name(String);

impl Name {
    fn new(prefix: &str) -> Name {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Name(format!("{prefix}{}", &suffix[..10]))
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let quiet = |cmd: &mut Command| {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(Command::new("pkill").args(["-KILL", "-u", &self.0]));
        quiet(Command::new("userdel").args(["-r", "-f", &self.0]));
        quiet(Command::new("groupdel").arg(&self.0));
    }
}

fn text(name: &str, value: &str) -> Param {
    Param {
        name: name.into(),
        value: Value::Text(value.into()),
    }
}

fn list(name: &str, values: &[&str]) -> Param {
    Param {
        name: name.into(),
        value: Value::TextList(values.iter().map(|s| s.to_string()).collect()),
    }
}

fn flag(name: &str, value: bool) -> Param {
    Param {
        name: name.into(),
        value: Value::Flag(value),
    }
}

/// `getent passwd NAME` on this machine, split into its fields; `None` if absent.
fn passwd(name: &str) -> Option<Vec<String>> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .expect("getent");
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(':')
            .map(str::to_string)
            .collect()
    })
}

fn groups_of(name: &str) -> Vec<String> {
    let out = Command::new("id").args(["-nG", name]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn provision_params(user: &str, group: &str) -> Vec<Param> {
    vec![
        list("targets", &["t0"]),
        text("credential", "admin"),
        text("user", user),
        list("groups", &[group]),
        text("public_key", NEW_KEY),
        text("shell", "/bin/bash"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_user_creates_the_account_once_and_a_second_run_changes_nothing() {
    let site = Site::new();
    let user = Name::new("wdp");
    let group = Name::new("wdg");
    assert!(
        Command::new("groupadd")
            .arg(&group.0)
            .status()
            .expect("groupadd")
            .success()
    );
    assert!(passwd(&user.0).is_none());

    let first = site
        .run_ok("provision-user", provision_params(&user.0, &group.0))
        .await;
    assert_eq!(
        (first["changed"].as_u64(), first["failed"].as_u64()),
        (Some(1), Some(0)),
        "{first}"
    );
    let t0 = &first["targets"][0];
    assert_eq!(t0["created"], true, "{first}");
    assert_eq!(t0["key"], "added", "{first}");
    assert_eq!(t0["groups_added"], serde_json::json!([group.0]), "{first}");

    let entry = passwd(&user.0).expect("account created");
    assert_eq!(entry[6], "/bin/bash");
    let (uid, home) = (entry[2].parse::<u32>().expect("uid"), entry[5].clone());
    assert!(groups_of(&user.0).contains(&group.0));
    let ssh_dir = std::path::Path::new(&home).join(".ssh");
    let keys = ssh_dir.join("authorized_keys");
    let dir_meta = std::fs::symlink_metadata(&ssh_dir).expect(".ssh");
    assert!(dir_meta.is_dir());
    assert_eq!((dir_meta.mode() & 0o777, dir_meta.uid()), (0o700, uid));
    let key_meta = std::fs::symlink_metadata(&keys).expect("authorized_keys");
    assert!(key_meta.is_file());
    assert_eq!((key_meta.mode() & 0o777, key_meta.uid()), (0o600, uid));
    let contents = std::fs::read_to_string(&keys).expect("read keys");
    assert_eq!(contents, format!("{NEW_KEY}\n"));
    let mtime = key_meta.mtime_nsec();

    let second = site
        .run_ok("provision-user", provision_params(&user.0, &group.0))
        .await;
    assert_eq!(
        (second["changed"].as_u64(), second["unchanged"].as_u64()),
        (Some(0), Some(1)),
        "{second}"
    );
    let t0 = &second["targets"][0];
    assert_eq!(t0["changed"], false, "{second}");
    assert_eq!(t0["created"], false);
    assert_eq!(t0["key"], "present");
    assert_eq!(t0["groups_added"], serde_json::json!([]));
    assert_eq!(std::fs::read_to_string(&keys).expect("keys"), contents);
    let after = std::fs::symlink_metadata(&keys).expect("keys");
    assert_eq!(after.mtime_nsec(), mtime, "the key file was not rewritten");
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_user_repairs_loose_modes_and_keeps_other_keys() {
    let site = Site::new();
    let user = TestUser::create("wdr").expect("existing user");
    let keys = user.home.join(".ssh/authorized_keys");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let params = vec![
        list("targets", &["t0"]),
        text("credential", "admin"),
        text("user", &user.name),
        text("public_key", NEW_KEY),
        text("shell", "/bin/sh"),
    ];
    let json = site.run_ok("provision-user", params).await;
    let t0 = &json["targets"][0];
    assert_eq!(
        (t0["created"].as_bool(), t0["key"].as_str()),
        (Some(false), Some("added")),
        "{json}"
    );
    let contents = std::fs::read_to_string(&keys).expect("keys");
    assert_eq!(
        contents,
        format!("{}\n{NEW_KEY}\n", user.public_key_line.trim())
    );
    let meta = std::fs::metadata(&keys).expect("keys");
    assert_eq!(meta.mode() & 0o777, 0o600, "the key file ends up 0600");
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_user_refuses_unsafe_names_before_any_command() {
    let site = Site::new();
    for (user, group) in [
        ("x;id", "adm"),
        ("root", "adm"),
        ("ok", "adm'$(id)"),
        ("Upper", "adm"),
    ] {
        let (run_id, outcome) = site
            .run("provision-user", provision_params(user, group))
            .await;
        let RunOutcome::Failed { error } = outcome else {
            panic!("{user:?}/{group:?} was not refused: {outcome:?}");
        };
        assert!(
            error.contains("must match") || error.contains("refusing"),
            "{error}"
        );
        let ssh_calls = site
            .env
            .host_call_records(&run_id)
            .into_iter()
            .filter(|r| r.entry.action.starts_with("ssh"))
            .count();
        assert_eq!(ssh_calls, 0, "{user:?}: no command may run");
    }
    // The credential's own account is refused too.
    let params = provision_params(&site.admin.name, "adm");
    let (_, outcome) = site.run("provision-user", params).await;
    assert!(
        matches!(&outcome, RunOutcome::Failed { error } if error.contains("own account")),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deprovision_user_kills_a_live_session_removes_keys_and_the_account() {
    let site = Site::new();
    let victim = TestUser::create("wdv").expect("victim");
    let keys = victim.home.join(".ssh/authorized_keys");
    assert!(keys.exists());
    let mut session = Command::new("su")
        .args(["-s", "/bin/sh", "-c", "sleep 60", &victim.name])
        .spawn()
        .expect("victim session");
    // Bounded wait until the session's process runs as the victim.
    for _ in 0..50 {
        let running = Command::new("pgrep")
            .args(["-u", &victim.name, "sleep"])
            .stdout(Stdio::null())
            .status()
            .expect("pgrep");
        if running.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let params = vec![
        list("targets", &["t0"]),
        text("credential", "admin"),
        text("user", &victim.name),
        flag("remove_account", true),
        flag("remove_home", true),
    ];
    let json = site.run_ok("deprovision-user", params.clone()).await;
    assert_eq!(json["deprovisioned"], 1, "{json}");
    let t0 = &json["targets"][0];
    assert_eq!(t0["locked"], true, "{json}");
    assert!(t0["processes_found"].as_u64() >= Some(1), "{json}");
    assert_eq!(t0["sessions_killed"], true);
    assert_eq!(
        t0["keys_removed"],
        serde_json::json!([keys.display().to_string()]),
        "{json}"
    );
    assert_eq!(t0["account_removed"], true);

    let status = session.wait().expect("session ended");
    assert!(!status.success(), "the victim's session was killed");
    assert!(passwd(&victim.name).is_none(), "account removed");
    assert!(!victim.home.exists(), "home removed");

    let again = site.run_ok("deprovision-user", params).await;
    assert_eq!(
        (again["absent"].as_u64(), again["failed"].as_u64()),
        (Some(1), Some(0)),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deprovision_user_runs_only_the_chosen_steps() {
    let site = Site::new();
    let victim = TestUser::create("wdl").expect("victim");
    let keys = victim.home.join(".ssh/authorized_keys");
    let params = vec![
        list("targets", &["t0"]),
        text("credential", "admin"),
        text("user", &victim.name),
        flag("remove_keys", false),
        flag("kill_sessions", false),
    ];
    let json = site.run_ok("deprovision-user", params).await;
    let t0 = &json["targets"][0];
    assert_eq!(
        (t0["locked"].as_bool(), t0["account_removed"].as_bool()),
        (Some(true), Some(false)),
        "{json}"
    );
    assert!(passwd(&victim.name).is_some(), "account kept");
    assert!(keys.exists(), "keys kept");
    let shadow = std::fs::read_to_string("/etc/shadow").expect("shadow");
    let line = shadow
        .lines()
        .find(|l| l.starts_with(&format!("{}:", victim.name)))
        .expect("victim in shadow");
    assert!(
        line.split(':').nth(1).unwrap_or_default().starts_with('!'),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deprovision_user_refuses_system_accounts_and_unsafe_names() {
    let site = Site::new();
    let params = |user: &str| {
        vec![
            list("targets", &["t0"]),
            text("credential", "admin"),
            text("user", user),
            flag("remove_account", true),
        ]
    };
    let json = site.run_ok("deprovision-user", params("daemon")).await;
    let error = json["targets"][0]["errors"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("system account"), "{json}");
    assert!(passwd("daemon").is_some(), "daemon untouched");
    for bad in ["a;id", "root", "$(reboot)"] {
        let (run_id, outcome) = site.run("deprovision-user", params(bad)).await;
        assert!(
            matches!(outcome, RunOutcome::Failed { .. }),
            "{bad}: {outcome:?}"
        );
        assert!(
            site.env
                .host_call_records(&run_id)
                .iter()
                .all(|r| !r.entry.action.starts_with("ssh")),
            "{bad}: no command may run"
        );
    }
}
