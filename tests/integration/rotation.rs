//! Credential rotation against real OpenSSH `sshd` on loopback: passwords set with `chpasswd`
//! under sudo and verified by a fresh login, ed25519 keys swapped in `authorized_keys`, a
//! verification that fails, grants and bad policies, and the `rotate-password` example.
//! Crashes resolved by `warden credential reconcile` are in `rotation_reconcile`; attacks by
//! a task author in `rotation_attacks`. The helpers here are shared by both.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use warden_host::audit::{AuditRecord, Decision};
use warden_host::capabilities::grant::Grant;
use warden_host::registry::inputs::{Param, Value};
use warden_host::rotation::{CharClass, RotationPolicy};
use warden_host::runtime::RunOutcome;
use warden_host::runtime::limits::RunLimits;
use warden_host::ssh::{SshAuth, SshConfig, SshCredential, SshError, SshPool};
use warden_host::targets::Target;
use warden_host::vault::{CredentialKind, Secret, Vault, VersionState};
use warden_tests::sshd::{Sshd, TestUser};
use warden_tests::{grep_dir, guests, random_secret};

use crate::support::Env;

/// The mask the probe's memscan stores needles under (see `tests/fixtures/probe`).
const MEMSCAN_MASK: u8 = 0xA5;

pub(crate) fn target(name: &str, sshd: &Sshd) -> Target {
    crate::support::target_of(name, sshd)
}

pub(crate) fn p(name: &str, value: &str) -> Param {
    Param {
        name: name.into(),
        value: Value::Text(value.into()),
    }
}

/// Grants the credentials, the targets, and rotation of `rotate`.
pub(crate) fn rotation_grant(credentials: &[&str], targets: &[&str], rotate: &[&str]) -> Grant {
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
    Grant {
        credentials: set(credentials),
        targets: set(targets),
        rotations: set(rotate),
        ..Grant::default()
    }
}

/// Makes a credential the tests just added an admin credential, as a rotation's admin handle
/// must be. The flag is fixed at creation (a credential that ran task commands must never
/// become one), so this stores the same secret again under the same name, flagged.
pub(crate) fn make_admin(vault: &Vault, name: &str) {
    let info = vault.info(name).expect("info").expect("credential exists");
    let secret = vault.secret(name).expect("secret");
    assert!(vault.remove(name).expect("remove"));
    let new = warden_host::vault::NewCredential {
        name,
        username: &info.username,
        kind: info.kind,
        admin: true,
    };
    let secret = warden_host::vault::Secret::from_bytes(secret.expose().to_vec());
    assert!(
        vault
            .add_credential(new, secret, "test", "admin credential")
            .expect("add admin")
            .admin
    );
}

/// Logs in once on a fresh connection: `Ok` if the server accepts the secret.
pub(crate) async fn login(sshd: &Sshd, username: &str, auth: SshAuth) -> Result<(), SshError> {
    let cred = SshCredential {
        id: format!("check-{}", uuid::Uuid::new_v4()),
        username: username.into(),
        auth,
    };
    SshPool::new(SshConfig::default())
        .verify_login(&target("check", sshd), &cred)
        .await
}

pub(crate) fn password(secret: &str) -> SshAuth {
    SshAuth::Password(secret.to_string().into())
}

pub(crate) fn key(pem: &str) -> SshAuth {
    SshAuth::PrivateKey(pem.to_string().into())
}

pub(crate) fn current_secret(vault: &Vault, name: &str) -> String {
    let secret = vault.secret(name).expect("current secret");
    String::from_utf8(secret.expose().to_vec()).expect("utf-8 secret")
}

pub(crate) fn states(vault: &Vault, name: &str) -> Vec<(u32, VersionState)> {
    vault
        .versions(name)
        .expect("versions")
        .into_iter()
        .map(|v| (v.version, v.state))
        .collect()
}

pub(crate) fn result_json(outcome: &RunOutcome) -> Json {
    match outcome {
        RunOutcome::Succeeded { result } => serde_json::from_str(result).expect("JSON result"),
        other => panic!("run did not succeed: {other:?}"),
    }
}

/// The probe's `rotate` mode on `target`, rotating `account` as `admin`.
pub(crate) async fn probe_rotate(
    env: &Env,
    account: &str,
    admin: &str,
    target: &str,
    policy: Option<&str>,
    grant: Grant,
) -> (String, Json) {
    let probe = env.prepare("probe");
    let mut params = vec![
        p("mode", "rotate"),
        p("credential", account),
        p("admin", admin),
        p("target", target),
    ];
    params.extend(policy.map(|text| p("policy", text)));
    let (run_id, report) = env.run(&probe, params, grant, RunLimits::default()).await;
    (run_id, result_json(&report.outcome))
}

pub(crate) fn records_of(env: &Env, run_id: &str, action: &str) -> Vec<AuditRecord> {
    env.host_call_records(run_id)
        .into_iter()
        .filter(|r| r.entry.action == action)
        .collect()
}

pub(crate) fn all_audit_text(env: &Env) -> String {
    let records = env.audit.query(&Default::default()).expect("query");
    records
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn masked_hex(secret: &[u8]) -> String {
    hex::encode(secret.iter().map(|b| b ^ MEMSCAN_MASK).collect::<Vec<_>>())
}

/// A file the test writes and removes, e.g. the probe's handoff.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits (bounded) until the credential's version `version` has left the pending state.
async fn settled(vault: &Vault, name: &str, version: u32) -> VersionState {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = states(vault, name)
            .into_iter()
            .find(|(v, _)| *v == version)
            .map(|(_, s)| s);
        match state {
            Some(s) if s != VersionState::Pending => return s,
            _ if Instant::now() > deadline => panic!("version {version} never settled"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A sudo-capable account (name prefix `prefix`) on a real sshd registered as target `t0`,
/// its password the admin credential `acct`: (account, sshd, environment).
pub(crate) fn admin_account(prefix: &str) -> (TestUser, Sshd, Env) {
    let user = TestUser::create(prefix)
        .expect("user")
        .with_sudo()
        .expect("sudo");
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let env = Env::new();
    env.targets.add(target("t0", &sshd)).expect("target");
    env.add_password("acct", &user.name, &user.password);
    make_admin(&env.vault, "acct");
    (user, sshd, env)
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_password_logs_in_the_old_one_does_not_and_the_guest_never_saw_either() {
    let (user, sshd, env) = admin_account("wro");
    // The handoff wait runs as another account's ordinary credential: an admin credential
    // is for privileged operations, not a task's commands.
    let reader = TestUser::create("wrr").expect("reader");
    env.add_password("reader", &reader.name, &reader.password);
    let handoff = TempFile(PathBuf::from(format!(
        "/tmp/warden-handoff-{}",
        uuid::Uuid::new_v4()
    )));

    // The run rotates, then waits for the handoff file; the test writes the masked old and
    // new secrets there once the vault shows the rotation finished.
    let probe = env.prepare("probe");
    let params = vec![
        p("mode", "rotate"),
        p("credential", "acct"),
        p("admin", "acct"),
        p("target", "t0"),
        p("handoff", &handoff.0.to_string_lossy()),
        p("handoff-as", "reader"),
    ];
    // The probe waits for the handoff with a shell loop, as the ordinary credential
    // `reader`: raw shell text, no sudo.
    let grant = Grant {
        raw_shell: true,
        ..rotation_grant(&["acct", "reader"], &["t0"], &["acct"])
    };
    let run = env.run(&probe, params, grant, RunLimits::default());
    let hand_over = async {
        assert_eq!(settled(&env.vault, "acct", 2).await, VersionState::Current);
        let new = current_secret(&env.vault, "acct");
        let lines = format!(
            "{}\n{}\n",
            masked_hex(user.password.as_bytes()),
            masked_hex(new.as_bytes())
        );
        std::fs::write(&handoff.0, lines).expect("handoff");
        new
    };
    let ((run_id, report), new) = tokio::join!(run, hand_over);
    let json = result_json(&report.outcome);

    assert_eq!(json["rotation"]["version"], 2, "{json}");
    assert_eq!(json["rotation"]["credential"], "acct");
    assert_eq!(
        json["found"],
        serde_json::json!([0, 0]),
        "a secret in guest memory: {json}"
    );
    assert_ne!(new, user.password);
    assert_eq!(new.len(), 24, "the default policy's length");
    login(&sshd, &user.name, password(&new))
        .await
        .expect("new password logs in");
    let old = login(&sshd, &user.name, password(&user.password)).await;
    assert!(
        matches!(old, Err(SshError::AuthFailed(_))),
        "old password: {old:?}"
    );
    assert_eq!(
        states(&env.vault, "acct"),
        [(1, VersionState::Previous), (2, VersionState::Current)]
    );
    let old_version = env.vault.secret_version("acct", 1).expect("v1");
    assert_eq!(old_version.expose(), user.password.as_bytes());

    let calls = records_of(&env, &run_id, "credentials.rotate");
    assert_eq!(calls.len(), 1, "one record for the rotate call");
    assert_eq!(calls[0].entry.decision, Decision::Allowed);
    assert_eq!(calls[0].entry.outcome, "ok");
    assert_eq!(calls[0].entry.target.as_deref(), Some("t0"));
    for step in [
        "credential.rotation.pending",
        "credential.rotation.promoted",
    ] {
        assert_eq!(records_of(&env, &run_id, step).len(), 1, "{step}");
    }
    let audit = all_audit_text(&env);
    let data = env.data_path();
    for secret in [&user.password, &new] {
        assert!(
            !audit.contains(secret.as_str()),
            "a secret in the audit log"
        );
        assert_eq!(
            grep_dir(&data, secret.as_bytes()).expect("grep"),
            0,
            "plaintext on disk"
        );
        let hex = hex::encode(secret.as_bytes());
        assert_eq!(
            grep_dir(&data, hex.as_bytes()).expect("grep"),
            0,
            "hex on disk"
        );
    }
    for event in &report.events {
        assert!(
            !event.message.contains(new.as_str()),
            "secret in the event log"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_verification_keeps_the_old_password_current_and_marks_the_new_one_failed() {
    let user = TestUser::create("wrf").expect("user");
    let admin = TestUser::create("wrg")
        .expect("admin")
        .with_sudo()
        .expect("sudo");
    // The target refuses password logins for the account, so the set step succeeds and
    // the verification fails; a second server over the same accounts checks the rollback.
    let refuses = format!("Match User {}\n  PasswordAuthentication no\n", user.name);
    let sshd = Sshd::start_with("127.0.0.1", &refuses).expect("sshd");
    let checker = Sshd::start("127.0.0.1").expect("sshd");
    let env = Env::new();
    env.targets.add(target("t0", &sshd)).expect("target");
    env.add_password("acct", &user.name, &user.password);
    env.add_password("admin", &admin.name, &admin.password);
    make_admin(&env.vault, "admin");

    let grant = rotation_grant(&["acct", "admin"], &["t0"], &["acct"]);
    let (run_id, json) = probe_rotate(&env, "acct", "admin", "t0", None, grant).await;

    let rotation = &json["rotation"];
    assert_eq!(rotation["error"], "auth-failed", "{json}");
    let message = rotation["message"].as_str().unwrap_or_default();
    assert!(message.contains("verification failed"), "{message}");
    assert!(message.contains("old version stays current"), "{message}");
    assert_eq!(
        states(&env.vault, "acct"),
        [(1, VersionState::Current), (2, VersionState::Failed)]
    );
    assert_eq!(current_secret(&env.vault, "acct"), user.password);
    login(&checker, &user.name, password(&user.password))
        .await
        .expect("the old password still logs in (rolled back)");
    let calls = records_of(&env, &run_id, "credentials.rotate");
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0].entry.outcome.starts_with("auth-failed"),
        "{:?}",
        calls[0]
    );
    let failed = records_of(&env, &run_id, "credential.rotation.failed");
    assert_eq!(failed.len(), 1, "the failure is audited");
    assert!(records_of(&env, &run_id, "credential.rotation.promoted").is_empty());
    let never_current = env.vault.secret_version("acct", 2).expect("v2");
    let never_current = String::from_utf8(never_current.expose().to_vec()).expect("utf-8");
    assert!(!all_audit_text(&env).contains(&never_current));
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_installs_a_new_ed25519_key_and_removes_the_old_one() {
    let user = TestUser::create("wrk").expect("user");
    // The admin is another account: an admin credential beside one of the same account
    // (which a task could run commands as) is refused.
    let admin = TestUser::create("wrj")
        .expect("admin")
        .with_sudo()
        .expect("sudo");
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let env = Env::new();
    env.targets.add(target("t0", &sshd)).expect("target");
    env.add_admin_password("admin", &admin.name, &admin.password);
    env.vault
        .add(
            "key",
            &user.name,
            CredentialKind::SshKey,
            Secret::from_bytes(user.private_key_openssh.as_bytes().to_vec()),
        )
        .expect("key credential");
    // Another key of the account's, which the rotation must leave alone.
    let keys_path = user.home.join(".ssh/authorized_keys");
    let bystander =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBystanderKeyBystanderKeyBystanderKey0 other";
    let mut keys = std::fs::read_to_string(&keys_path).expect("keys");
    keys.push_str(bystander);
    keys.push('\n');
    std::fs::write(&keys_path, keys).expect("keys");

    let grant = rotation_grant(&["key", "admin"], &["t0"], &["key"]);
    let (run_id, json) = probe_rotate(&env, "key", "admin", "t0", None, grant).await;

    assert_eq!(json["rotation"]["version"], 2, "{json}");
    let new = current_secret(&env.vault, "key");
    assert!(new.contains("BEGIN OPENSSH PRIVATE KEY"));
    assert_ne!(new, user.private_key_openssh);
    login(&sshd, &user.name, key(&new))
        .await
        .expect("new key logs in");
    let old = login(&sshd, &user.name, key(&user.private_key_openssh)).await;
    assert!(
        matches!(old, Err(SshError::AuthFailed(_))),
        "old key: {old:?}"
    );
    let keys = std::fs::read_to_string(&keys_path).expect("keys");
    let old_blob = user
        .public_key_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("-");
    assert!(!keys.contains(old_blob), "old key removed: {keys}");
    assert!(keys.contains(bystander), "other keys kept: {keys}");
    assert_eq!(keys.matches("ssh-ed25519").count(), 2, "{keys}");
    assert!(keys.contains(" warden:key"), "{keys}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&keys_path).expect("meta");
    assert_eq!(meta.mode() & 0o777, 0o600);
    let owner = Command::new("id")
        .args(["-u", &user.name])
        .output()
        .expect("id");
    assert_eq!(
        meta.uid().to_string(),
        String::from_utf8_lossy(&owner.stdout).trim(),
        "authorized_keys still belongs to the account"
    );
    assert_eq!(
        states(&env.vault, "key"),
        [(1, VersionState::Previous), (2, VersionState::Current)]
    );
    assert_eq!(
        records_of(&env, &run_id, "credentials.rotate")[0]
            .entry
            .outcome,
        "ok"
    );
    let audit = all_audit_text(&env);
    assert!(
        !audit.contains("PRIVATE KEY"),
        "a private key in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_password_policies_are_refused_and_change_nothing() {
    let env = Env::new();
    env.add_password("acct", "nobody", &random_secret(20));
    make_admin(&env.vault, "acct");
    let too_long_exclude = format!("exclude={}", "x".repeat(257));
    // A request weaker than the grant (too short, no class) is raised, not refused: see
    // `rotation_attacks`. What no policy can satisfy is refused.
    let cases = [
        ("length=129", "length 129"),
        (too_long_exclude.as_str(), "exclude list is longer"),
        (
            "no-lower,no-upper,no-symbols,exclude=0123456789",
            "every digit",
        ),
    ];
    for (policy, expected) in cases {
        let grant = rotation_grant(&["acct"], &["t0"], &["acct"]);
        let (run_id, json) = probe_rotate(&env, "acct", "acct", "t0", Some(policy), grant).await;
        assert_eq!(
            json["rotation"]["error"], "invalid-argument",
            "{policy}: {json}"
        );
        let message = json["rotation"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{policy}: {message}");
        let calls = records_of(&env, &run_id, "credentials.rotate");
        assert_eq!(calls.len(), 1);
        assert!(calls[0].entry.outcome.starts_with("invalid-argument"));
    }
    assert_eq!(states(&env.vault, "acct"), [(1, VersionState::Current)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_outside_the_grant_is_denied_and_audited() {
    let env = Env::new();
    env.add_password("acct", "nobody", &random_secret(20));
    let cases = [
        (rotation_grant(&["acct"], &["t0"], &[]), "grant.rotations"),
        (
            rotation_grant(&["acct"], &["t1"], &["acct"]),
            "grant.targets",
        ),
    ];
    for (grant, rule) in cases {
        let (run_id, json) = probe_rotate(&env, "acct", "acct", "t0", None, grant).await;
        assert_eq!(json["rotation"]["error"], "denied", "{json}");
        let message = json["rotation"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(rule), "{message}");
        let calls = records_of(&env, &run_id, "credentials.rotate");
        assert_eq!(calls.len(), 1, "the denial is audited once");
        match &calls[0].entry.decision {
            Decision::Denied { policy, .. } => assert_eq!(policy.as_deref(), Some(rule)),
            other => panic!("not a denial: {other:?}"),
        }
        assert!(records_of(&env, &run_id, "credential.rotation.pending").is_empty());
    }
    assert_eq!(states(&env.vault, "acct"), [(1, VersionState::Current)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_password_example_rotates_each_target_and_reports_the_one_that_failed() {
    let users: Vec<TestUser> = (0..2)
        .map(|_| {
            TestUser::create("wre")
                .expect("user")
                .with_sudo()
                .expect("sudo")
        })
        .collect();
    let sshds = Sshd::fleet(2).expect("fleet");
    let env = Env::new();
    for (i, (sshd, user)) in sshds.iter().zip(&users).enumerate() {
        env.targets
            .add(target(&format!("t{i}"), sshd))
            .expect("target");
        env.add_password(&format!("root-t{i}"), &user.name, &user.password);
        make_admin(&env.vault, &format!("root-t{i}"));
    }
    // t2: a registered target where nothing listens.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dead = Target {
        port: dead_port,
        ..target("t2", &sshds[0])
    };
    env.targets.add(dead).expect("target");
    env.add_password("root-t2", &users[0].name, "unused-password");
    make_admin(&env.vault, "root-t2");

    let names: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
    let creds: Vec<String> = (0..3).map(|i| format!("root-t{i}")).collect();
    let creds: Vec<&str> = creds.iter().map(String::as_str).collect();
    let task = env.prepare("rotate-password");
    let params = vec![
        Param {
            name: "targets".into(),
            value: Value::TextList(names.clone()),
        },
        p("credential", "root-{target}"),
        p("admin", ""),
        Param {
            name: "length".into(),
            value: Value::Integer(32),
        },
        Param {
            name: "symbols".into(),
            value: Value::Flag(false),
        },
        p("exclude", "0O1lI"),
    ];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut grant = rotation_grant(&creds, &names, &creds);
    // The administrator allows passwords without symbols (the example asks for none).
    grant.rotation_policy = RotationPolicy {
        min_length: 24,
        classes: [
            CharClass::Lowercase,
            CharClass::Uppercase,
            CharClass::Digits,
        ]
        .into(),
    };
    // As the server runs it: the manifest's interfaces and the shipped Cedar policies too.
    let engine =
        warden_host::policy::PolicyEngine::load(&warden_tests::repo_root().join("policies"))
            .expect("policies load");
    let manifest = std::fs::read_to_string(guests::manifest("rotate-password")).expect("manifest");
    let manifest = warden_host::registry::manifest::Manifest::parse(&manifest).expect("parse");
    let policy = warden_host::capabilities::HostCallPolicy {
        engine,
        requested: manifest.capabilities.iter().cloned().collect(),
        scope: manifest.requests.clone(),
    };
    let (_, report) = env
        .run_with_policy(&task, params, grant, RunLimits::default(), Some(policy))
        .await;
    let json = result_json(&report.outcome);

    assert_eq!(json["rotated"], 2, "{json}");
    assert_eq!(json["failed"], 1, "{json}");
    let entries = json["targets"].as_array().expect("targets");
    assert_eq!(entries[2]["status"], "error");
    assert_eq!(entries[2]["error"], "connection-refused", "{json}");
    // The rotation there stopped before the target was touched: the stored pending version
    // was given up, the old one stays current.
    assert_eq!(
        states(&env.vault, "root-t2"),
        [(1, VersionState::Current), (2, VersionState::Failed)]
    );
    assert_eq!(current_secret(&env.vault, "root-t2"), "unused-password");
    for (i, (sshd, user)) in sshds.iter().zip(&users).enumerate() {
        assert_eq!(entries[i]["status"], "ok", "{json}");
        assert_eq!(entries[i]["version"], 2);
        let new = current_secret(&env.vault, &format!("root-t{i}"));
        assert_eq!(new.len(), 32);
        assert!(
            new.chars()
                .all(|c| c.is_ascii_alphanumeric() && !"0O1lI".contains(c))
        );
        login(sshd, &user.name, password(&new))
            .await
            .expect("new password");
        assert!(!report.stdout.contains(&new) && !json.to_string().contains(&new));
    }
}
