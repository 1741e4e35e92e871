//! Command grants as argv patterns, sudo as part of the grant, and where a password may be
//! typed (admin credentials), attacked through the `probe` guest against real OpenSSH sshd.
//!
//! Each test is written as the task author would try it: inject a second command into a
//! granted one, take sudo where the grant gave none, plant a fake `sudo` in the account's
//! `~/.bashrc` and wait for the password, use the admin credential for ordinary work, or
//! build a process whose grant pairs the admin credential with another of the same account.

use std::path::PathBuf;
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use warden_host::audit::Decision;
use warden_host::capabilities::HostCallPolicy;
use warden_host::capabilities::grant::Grant;
use warden_host::policy::PolicyEngine;
use warden_host::registry::inputs::Param;
use warden_host::registry::manifest::Manifest;
use warden_host::runtime::RunOutcome;
use warden_host::runtime::limits::RunLimits;
use warden_host::vault::{CredentialKind, NewCredential, Secret};
use warden_tests::sshd::TestUser;
use warden_tests::{guests, random_secret, repo_root};

use crate::cli::Cli;
use crate::ssh::{Fleet, flag, p};
use warden_tests::http::{Reply, Server};

/// A grant of `credentials` on `t0` with `commands` (argv patterns).
fn grant(credentials: &[&str], commands: &[&str]) -> Grant {
    Grant {
        credentials: credentials.iter().map(|s| s.to_string()).collect(),
        targets: ["t0".to_string()].into(),
        commands: commands.iter().map(|s| s.to_string()).collect(),
        ..Grant::default()
    }
}

fn exec_params(credential: &str, command: &str, sudo: bool) -> Vec<Param> {
    vec![
        p("mode", "exec"),
        p("credential", credential),
        p("target", "t0"),
        p("command", command),
        flag("sudo", sudo),
    ]
}

/// Runs one `exec` call through the probe; its JSON (output or error) and the run id.
async fn exec(
    fleet: &Fleet,
    grant: Grant,
    cred: &str,
    command: &str,
    sudo: bool,
) -> (String, Json) {
    let (run_id, json, outcome) = fleet.probe(exec_params(cred, command, sudo), grant).await;
    assert!(
        matches!(outcome, RunOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    (run_id, json)
}

/// The denial rule the run's `action` record names, if that call was denied.
fn denied_rule(fleet: &Fleet, run_id: &str, action: &str) -> Option<String> {
    fleet
        .env
        .host_call_records(run_id)
        .into_iter()
        .find(|r| r.entry.action == action)
        .and_then(|r| match r.entry.decision {
            Decision::Denied { policy, .. } => policy,
            Decision::Allowed => None,
        })
}

/// A path on this machine (the targets are local) that no test has created yet.
fn fresh_path(tag: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/warden-grant-{tag}-{}", random_secret(10)))
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_injection_under_an_argv_grant_never_runs_a_second_command() {
    let fleet = Fleet::new(1);
    let marker = fresh_path("marker");
    let m = marker.display().to_string();
    let granted = || grant(&["pw"], &["echo status *"]);
    let attacks = [
        format!("echo status x; touch {m}"),
        format!("echo status x && touch {m}"),
        format!("echo status x || touch {m}"),
        format!("echo status x | touch {m}"),
        format!("echo status $(touch {m})"),
        format!("echo status `touch {m}`"),
        format!("echo status x\ntouch {m}"),
        format!("echo status x\r\ntouch {m}"),
        format!("echo status x > {m}"),
        format!("echo status x>{m}"),
        format!("echo status \"$(touch {m})\""),
        format!("echo status x &touch {m}"),
        "X=1 echo status x".to_string(),
        format!("echo status x\\;touch {m}"),
    ];
    for attack in &attacks {
        let (run_id, json) = exec(&fleet, granted(), "pw", attack, false).await;
        assert!(
            json["error"] == "denied" || json["error"] == "invalid-argument",
            "{attack:?} was not refused: {json}"
        );
        assert!(!marker.exists(), "{attack:?} ran a second command");
        assert_eq!(
            denied_rule(&fleet, &run_id, "ssh.exec").as_deref(),
            Some("grant.commands"),
            "{attack:?} audited as a grant denial"
        );
    }
    // The same metacharacters, quoted, are one literal word: printed, never run.
    let literal = format!("echo status 'x; touch {m}'");
    let (_, json) = exec(&fleet, granted(), "pw", &literal, false).await;
    assert_eq!(json["stdout"], format!("status x; touch {m}\n"), "{json}");
    let literal = format!("echo status '$(touch {m})'");
    let (_, json) = exec(&fleet, granted(), "pw", &literal, false).await;
    assert_eq!(json["stdout"], format!("status $(touch {m})\n"), "{json}");
    assert!(!marker.exists(), "a quoted metacharacter was executed");
    // `*` is one word: two words after `status` are refused.
    let (_, json) = exec(&fleet, granted(), "pw", "echo status a b", false).await;
    assert_eq!(json["error"], "denied", "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sudo_runs_only_where_the_pattern_starts_with_sudo() {
    let user = TestUser::create("wgs")
        .expect("user")
        .with_sudo_nopasswd()
        .expect("sudo");
    let fleet = Fleet::with_user(1, user);
    let uid = String::from_utf8(
        Command::new("id")
            .args(["-u", &fleet.user.name])
            .output()
            .expect("id")
            .stdout,
    )
    .expect("utf8");
    // A pattern without `sudo` allows the command, but never under sudo.
    let plain = || grant(&["key"], &["id -u"]);
    let (_, json) = exec(&fleet, plain(), "key", "id -u", false).await;
    assert_eq!(json["stdout"], uid, "{json}");
    let (run_id, json) = exec(&fleet, plain(), "key", "id -u", true).await;
    assert_eq!(
        json["error"], "denied",
        "sudo taken without a sudo pattern: {json}"
    );
    assert_eq!(
        denied_rule(&fleet, &run_id, "ssh.exec").as_deref(),
        Some("grant.commands")
    );
    // A `sudo` pattern allows it under sudo, and only so.
    let root = || grant(&["key"], &["sudo id -u"]);
    let (_, json) = exec(&fleet, root(), "key", "id -u", true).await;
    assert_eq!(json["stdout"], "0\n", "{json}");
    let (_, json) = exec(&fleet, root(), "key", "id -u", false).await;
    assert_eq!(json["error"], "denied", "{json}");
    // Even `**` (any command) does not let the task call sudo itself.
    for command in ["sudo id -u", "/usr/bin/sudo id -u", "sudo -n id -u"] {
        let (_, json) = exec(&fleet, grant(&["key"], &["**"]), "key", command, false).await;
        assert_eq!(json["error"], "denied", "{command}: {json}");
    }
    // A raw shell under sudo needs `sudo **`.
    let raw = |commands: &[&str]| Grant {
        raw_shell: true,
        ..grant(&["key"], commands)
    };
    let (_, json) = exec(&fleet, raw(&["sudo id -u"]), "key", "id -u | cat", true).await;
    assert_eq!(json["error"], "denied", "{json}");
    let (_, json) = exec(&fleet, raw(&["sudo **"]), "key", "id -u | cat", true).await;
    assert_eq!(json["stdout"], "0\n", "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cedar_policy_forbids_sudo_while_the_grant_allows_it() {
    let user = TestUser::create("wgc")
        .expect("user")
        .with_sudo_nopasswd()
        .expect("sudo");
    let fleet = Fleet::with_user(1, user);
    let policies = tempfile::TempDir::new().expect("temp dir");
    for entry in std::fs::read_dir(repo_root().join("policies")).expect("policies") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, policies.path().join(path.file_name().expect("name"))).expect("copy");
    }
    std::fs::write(
        policies.path().join("site.cedar"),
        "@id(\"no-sudo\")\nforbid (principal, action == Action::\"HostCall\", resource)\nwhen { context.sudo };\n",
    )
    .expect("policy");
    let engine = PolicyEngine::load(policies.path()).expect("policies load");
    let manifest = std::fs::read_to_string(guests::manifest("probe")).expect("manifest");
    let manifest = Manifest::parse(&manifest).expect("parse");
    let policy = HostCallPolicy {
        engine,
        requested: manifest.capabilities.iter().cloned().collect(),
        scope: manifest.requests.clone(),
    };
    let probe = fleet.env.prepare("probe");
    let both = grant(&["key"], &["id -u", "sudo id -u"]);
    let mut results = Vec::new();
    for sudo in [true, false] {
        let (run_id, report) = fleet
            .env
            .run_with_policy(
                &probe,
                exec_params("key", "id -u", sudo),
                both.clone(),
                RunLimits::default(),
                Some(policy.clone()),
            )
            .await;
        let RunOutcome::Succeeded { result } = &report.outcome else {
            panic!("{:?}", report.outcome);
        };
        let json: Json = serde_json::from_str(result).expect("json");
        results.push((run_id, json));
    }
    let (run_id, json) = &results[0];
    assert_eq!(json["error"], "denied", "policy let sudo through: {json}");
    assert!(
        json["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no-sudo"),
        "{json}"
    );
    assert_eq!(
        denied_rule(&fleet, run_id, "ssh.exec").as_deref(),
        Some("no-sudo")
    );
    assert!(
        results[1].1["stdout"].as_str().is_some_and(|s| s != "0\n"),
        "{}",
        results[1].1
    );
}

/// A `~/.bashrc` that stands in for sudo: bash reads it for `ssh host cmd` before running
/// the command, finds sudo's random prompt in the command line, prints it, and writes the
/// line it is then sent (the password) to `capture`.
fn fake_sudo_bashrc(capture: &str) -> String {
    format!(
        r#"case "$BASH_EXECUTION_STRING" in *sudo*)
  p=$(printf '%s' "$BASH_EXECUTION_STRING" | sed -n "s/.* -p '\([^']*\)'.*/\1/p")
  printf '%s' "$p" >&2
  IFS= read -r line
  printf '%s\n' "$line" >> {capture}
  exit 0;;
esac
"#
    )
}

/// A user with password sudo and bash as login shell (so `~/.bashrc` is read for commands).
fn bash_user(prefix: &str) -> TestUser {
    TestUser::create(prefix)
        .and_then(TestUser::with_sudo)
        .and_then(TestUser::with_bash)
        .expect("sudo user with bash")
}

fn captured(capture: &PathBuf) -> String {
    std::fs::read_to_string(capture).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fake_sudo_planted_in_bashrc_never_receives_the_password() {
    let fleet = Fleet::with_user(1, bash_user("wgb"));
    let home = fleet.user.home.display().to_string();
    let password = fleet.user.password.clone();
    // The admin credential logs in as the same account as `pw`.
    fleet
        .env
        .vault
        .add_credential(
            NewCredential {
                name: "root-pw",
                username: &fleet.user.name,
                kind: CredentialKind::Password,
                admin: true,
            },
            Secret::from_bytes(password.clone().into_bytes()),
            "test",
            "admin credential of the task's own account",
        )
        .expect("admin credential");
    let raw = |credentials: &[&str]| Grant {
        raw_shell: true,
        paths: vec![home.clone()],
        ..grant(credentials, &["sudo **"])
    };

    // Variant 1: the task writes ~/.bashrc with a command, then asks for sudo.
    let capture = fresh_path("capture");
    let bashrc = fake_sudo_bashrc(&capture.display().to_string());
    let mut plant = exec_params("pw", "cat > ~/.bashrc", false);
    plant.push(p("stdin", &bashrc));
    let (_, json, _) = fleet.probe(plant, raw(&["pw"])).await;
    assert_eq!(json["exit"], 0, "planting the fake: {json}");
    let (run_id, json) = exec(&fleet, raw(&["pw"]), "pw", "id -u", true).await;
    assert_eq!(
        json["error"], "denied",
        "sudo typed a non-admin password: {json}"
    );
    assert!(
        json["message"]
            .as_str()
            .unwrap_or_default()
            .contains("admin credential"),
        "{json}"
    );
    assert_eq!(
        denied_rule(&fleet, &run_id, "ssh.exec").as_deref(),
        Some("grant.sudo-password")
    );
    assert_eq!(
        captured(&capture),
        "",
        "the fake sudo received the password"
    );

    // Variant 2: the task uploads ~/.bashrc over SFTP, then asks for sudo with argv grants.
    let capture = fresh_path("capture");
    let upload = vec![
        p("mode", "transfer"),
        p("credential", "pw"),
        p("target", "t0"),
        p("path", &format!("{home}/.bashrc")),
        p("content", &fake_sudo_bashrc(&capture.display().to_string())),
    ];
    let (_, json, _) = fleet.probe(upload, raw(&["pw"])).await;
    assert!(
        json["upload"]["bytes"].is_number(),
        "uploading the fake: {json}"
    );
    let argv = grant(&["pw"], &["sudo id -u"]);
    let (_, json) = exec(&fleet, argv, "pw", "id -u", true).await;
    assert_eq!(json["error"], "denied", "{json}");
    assert_eq!(captured(&capture), "");

    // Variant 3: the grant also holds an admin credential of the same account; the task
    // planted the fake as `pw` and now asks for sudo as `root-pw`.
    let both = raw(&["pw", "root-pw"]);
    let (run_id, json) = exec(&fleet, both, "root-pw", "id -u", true).await;
    assert_eq!(
        json["error"], "denied",
        "admin password typed into the task's account: {json}"
    );
    assert_eq!(
        denied_rule(&fleet, &run_id, "ssh.exec").as_deref(),
        Some("grant.admin-credential")
    );
    assert_eq!(captured(&capture), "");
    assert!(!captured(&capture).contains(&password));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_credential_runs_no_unprivileged_command_or_transfer() {
    let user = TestUser::create("wga")
        .expect("user")
        .with_sudo()
        .expect("sudo");
    let fleet = Fleet::with_user(1, user);
    let add = |name: &str, kind, secret: &str| {
        fleet
            .env
            .vault
            .add_credential(
                NewCredential {
                    name,
                    username: &fleet.user.name,
                    kind,
                    admin: true,
                },
                Secret::from_bytes(secret.as_bytes().to_vec()),
                "test",
                "admin",
            )
            .expect("admin credential")
    };
    add("adm-pw", CredentialKind::Password, &fleet.user.password);
    add(
        "adm-key",
        CredentialKind::SshKey,
        &fleet.user.private_key_openssh,
    );
    let marker = fresh_path("admin");
    let m = marker.display().to_string();
    for cred in ["adm-pw", "adm-key"] {
        let argv = grant(&[cred], &["**", "sudo id -u"]);
        let (run_id, json) = exec(&fleet, argv.clone(), cred, &format!("touch {m}"), false).await;
        assert_eq!(json["error"], "denied", "{cred}: {json}");
        assert_eq!(
            denied_rule(&fleet, &run_id, "ssh.exec").as_deref(),
            Some("grant.admin-credential")
        );
        let raw = Grant {
            raw_shell: true,
            ..argv.clone()
        };
        let (_, json) = exec(&fleet, raw, cred, &format!("touch {m}"), false).await;
        assert_eq!(json["error"], "denied", "{cred} raw: {json}");
        let transfer = vec![
            p("mode", "transfer"),
            p("credential", cred),
            p("target", "t0"),
            p("path", &m),
            p("content", "x"),
        ];
        let (run_id, json, _) = fleet
            .probe(
                transfer,
                Grant {
                    paths: vec!["/tmp".into()],
                    ..argv
                },
            )
            .await;
        assert_eq!(json["upload"]["error"], "denied", "{cred}: {json}");
        assert_eq!(json["download"]["error"], "denied", "{cred}: {json}");
        assert_eq!(
            denied_rule(&fleet, &run_id, "transfer.upload").as_deref(),
            Some("grant.admin-credential")
        );
        assert!(!marker.exists(), "{cred} ran an unprivileged command");
    }
    // What an admin password credential is for: sudo, the password typed by the host.
    let (_, json) = exec(
        &fleet,
        grant(&["adm-pw"], &["sudo id -u"]),
        "adm-pw",
        "id -u",
        true,
    )
    .await;
    assert_eq!(json["stdout"], "0\n", "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn process_create_refuses_an_admin_credential_beside_one_of_the_same_account() {
    let api = Server::start_embedded().await;
    for (name, username, kind, admin) in [
        ("root-pw", "ops", "password", true),
        ("ops-key", "ops", "ssh-key", false),
        ("ops-pw", "ops", "password", false),
        ("app-pw", "app", "password", false),
    ] {
        let body = json!({ "name": name, "username": username, "kind": kind, "secret": random_secret(20), "admin": admin });
        api.expect(
            Method::POST,
            "/v1/credentials",
            Some(body),
            StatusCode::CREATED,
        )
        .await;
    }
    let listed = api.admin_get("/v1/credentials").await.body;
    let flags: Vec<(String, bool)> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["admin"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert!(
        flags.contains(&("root-pw".into(), true)) && flags.contains(&("ops-key".into(), false)),
        "{listed}"
    );
    let audit = api.admin_get("/v1/audit").await.body;
    assert!(
        audit.to_string().contains("credential.create-admin"),
        "admin creation audited"
    );

    let digest = api.publish_as("tests", "probe").await;
    let process =
        |name: &str, grant: Json| json!({ "name": name, "module_digest": digest, "grant": grant });
    let refused = [
        json!({ "credentials": ["root-pw", "ops-key"], "targets": ["t0"], "commands": ["sudo id -u"] }),
        json!({ "credentials": ["ops-pw", "root-pw"], "targets": ["t0"], "commands": ["sudo **"], "raw_shell": true }),
        json!({ "credentials": ["app-pw"], "targets": ["t0"], "commands": ["sudo id -u"] }),
        json!({ "credentials": ["app-pw"], "targets": ["t0"], "commands": ["uptime; id"] }),
    ];
    for (i, grant) in refused.into_iter().enumerate() {
        let Reply {
            status,
            text,
            body: json,
            ..
        } = api
            .post(
                "/v1/processes",
                &api.admin,
                process(&format!("bad-{i}"), grant.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{grant}: {text}");
        assert!(
            !json["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{text}"
        );
        if i < 2 {
            assert!(text.contains("same user"), "{text}");
        }
    }
    // Allowed: the admin credential alone for sudo, a different account's for the rest.
    let ok = json!({ "credentials": ["root-pw", "app-pw"], "targets": ["t0"], "commands": ["sudo id -u", "uptime"] });
    let id = &api.process(process("good", ok)).await;
    // An update cannot smuggle the same-account credential in afterwards.
    let worse = json!({ "credentials": ["root-pw", "ops-pw"], "targets": ["t0"], "commands": ["sudo id -u"] });
    let Reply { status, text, .. } = api
        .put(
            &format!("/v1/processes/{id}"),
            &api.admin,
            process("good", worse),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
}

#[test]
fn the_cli_marks_admin_credentials_and_refuses_unsafe_exec_grants_before_running() {
    let cli = Cli::init();
    cli.ok(
        &[
            "credential",
            "add",
            "root-pw",
            "--username",
            "ops",
            "--admin",
        ],
        Some(b"first-secret"),
    );
    cli.ok(
        &["credential", "add", "ops-pw", "--username", "ops"],
        Some(b"second-secret"),
    );
    let list = cli.ok(&["credential", "list"], None);
    assert!(
        list.lines()
            .any(|l| l.starts_with("root-pw\t") && l.ends_with("\tadmin")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("ops-pw\t") && l.ends_with("\t-")),
        "{list}"
    );
    let hello = guests::component("hello").to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--allow-credential",
                "root-pw",
                "--allow-credential",
                "ops-pw",
            ],
            "same user",
        ),
        (&["--allow-command", "uptime; id"], "metacharacter"),
        (
            &["--allow-credential", "ops-pw", "--allow-command", "sudo id"],
            "sudo patterns",
        ),
    ];
    for (flags, why) in cases {
        let mut args = vec!["exec", hello.as_str()];
        args.extend_from_slice(flags);
        let (code, stderr) = cli.fails(&args);
        assert_eq!(code, 2, "{flags:?}: {stderr}");
        assert!(stderr.contains(why), "{flags:?}: {stderr}");
    }
}
