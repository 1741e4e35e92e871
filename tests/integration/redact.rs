//! Attacks on redaction and on transfer path checks, written the way a task author who wants
//! a secret (or a file outside the grant) would, against a real OpenSSH target on loopback
//! and the hostile `probe` guest (`tests/fixtures/probe/src/attacks.rs`).
//!
//! Redaction: a guess printed right at the output cap must look the same to the task whether
//! it is right or wrong (raw, hex and base64 prefixes; one byte or many; stdout, stderr and
//! exec-many); a secret the cap cuts leaves no visible start; pieces of a secret joined by
//! the task never reach its stored result, error, trap message, event log or stdio.
//!
//! Paths: links inside a granted prefix that lead out of it (a linked directory, a link as
//! the final component, `..` inside a link, a chain, a relative link), a FIFO, and a file
//! replaced by a link just before an upload — each refused with a clear guest error, audited,
//! and the file outside left as it was.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value as Json;
use warden_host::audit::{AuditRecord, Decision};
use warden_host::capabilities::grant::Grant;
use warden_host::registry::inputs::{Param, Value};
use warden_host::runtime::limits::RunLimits;
use warden_host::runtime::{RunOutcome, RunReport};
use warden_host::vault::{CredentialKind, Secret};
use warden_tests::sshd::{Sshd, TestUser};

use crate::support::{Env, text_params};

/// The output cap the oracle runs use: small, so a test prints up to it quickly.
const CAP: usize = 4096;

/// One target `t0` (a real sshd), one user on it: credential `pw` (password) and `key`.
struct Lab {
    env: Env,
    user: TestUser,
    _sshd: Sshd,
}

impl Lab {
    fn new(user: TestUser) -> Lab {
        let env = Env::new();
        let sshd = Sshd::start("127.0.0.1").expect("sshd");
        let target = crate::support::target_of("t0", &sshd);
        env.targets.add(target).expect("add target");
        env.add_password("pw", &user.name, &user.password);
        let key = Secret::from_bytes(user.private_key_openssh.as_bytes().to_vec());
        env.vault
            .add("key", &user.name, CredentialKind::SshKey, key)
            .expect("add key");
        Lab {
            env,
            user,
            _sshd: sshd,
        }
    }

    fn grant(&self, paths: &[&str]) -> Grant {
        Grant {
            credentials: BTreeSet::from(["pw".to_string(), "key".to_string()]),
            targets: BTreeSet::from(["t0".to_string()]),
            // These tests attack redaction with shell pipelines, not the argv grants.
            commands: vec!["sudo **".to_string()],
            raw_shell: true,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }
    }

    async fn run(&self, params: Vec<Param>, grant: Grant) -> (String, RunReport) {
        let limits = RunLimits {
            output_bytes: CAP,
            ..RunLimits::default()
        };
        let probe = self.env.prepare("probe");
        self.env.run(&probe, params, grant, limits).await
    }

    /// Runs the probe with text inputs and returns its JSON result.
    async fn probe(&self, pairs: &[(&str, &str)], grant: Grant) -> (String, Json) {
        self.probe_with(text_params(pairs), grant).await
    }

    async fn probe_with(&self, params: Vec<Param>, grant: Grant) -> (String, Json) {
        let (run_id, report) = self.run(params, grant).await;
        let json = match &report.outcome {
            RunOutcome::Succeeded { result } => serde_json::from_str(result).unwrap_or(Json::Null),
            other => panic!("probe did not succeed: {other:?}"),
        };
        (run_id, json)
    }

    /// What the task sees of `command` (stdout/stderr as hex, flags, exit status).
    async fn seen(&self, credential: &str, command: &str) -> Json {
        let params = [
            ("mode", "exec-bytes"),
            ("credential", credential),
            ("target", "t0"),
            ("command", command),
        ];
        self.probe(&params, self.grant(&["/tmp"])).await.1
    }
}

/// A command printing `CAP - guess.len()` filler bytes, then `guess` (so its last byte is
/// the last one kept), then more (so the output is cut there), on `fd`.
fn at_the_cap(guess: &str, fd: u8) -> String {
    let fill = CAP - guess.len();
    format!(
        "{{ head -c {fill} /dev/zero | tr '\\0' x; printf %s '{guess}'; head -c 99 /dev/zero; }} >&{fd}"
    )
}

/// The same guess with its last character wrong.
fn wrong_last(guess: &str) -> String {
    let mut chars: Vec<char> = guess.chars().collect();
    let last = chars.pop().unwrap_or('a');
    chars.push(if last == '#' { '%' } else { '#' });
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_right_and_a_wrong_guess_at_the_output_cap_look_the_same_to_the_task() {
    let lab = Lab::new(TestUser::create("wro").expect("user"));
    let pw = lab.user.password.clone();
    let hexed = hex::encode(pw.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(pw.as_bytes());
    // (form, how many leading bytes the task guesses, stream)
    let cases = [
        (&pw, 1, 1),
        (&pw, 5, 1),
        (&pw, pw.len() - 1, 1),
        (&pw, 3, 2),
        (&hexed, 1, 1),
        (&hexed, 9, 1),
        (&hexed, hexed.len() - 1, 2),
        (&b64, 4, 1),
        (&b64, b64.len() - 1, 1),
    ];
    for (form, n, fd) in cases {
        let right = &form[..n];
        let wrong = wrong_last(right);
        let seen_right = lab.seen("pw", &at_the_cap(right, fd)).await;
        let seen_wrong = lab.seen("pw", &at_the_cap(&wrong, fd)).await;
        assert_eq!(
            seen_right, seen_wrong,
            "the task can tell a right {n}-byte guess from a wrong one on fd {fd}"
        );
        let stream = if fd == 1 { "stdout" } else { "stderr" };
        assert_eq!(
            seen_right[format!("{stream}_truncated")],
            true,
            "{seen_right}"
        );
        let shown = hex::decode(seen_right[stream].as_str().unwrap_or("")).expect("hex");
        assert!(
            !shown.is_empty() && shown.iter().all(|&b| b == b'x'),
            "{seen_right}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_many_output_at_the_cap_does_not_react_to_a_right_guess() {
    let lab = Lab::new(TestUser::create("wrm").expect("user"));
    let right = lab.user.password[..6].to_string();
    let mut seen = Vec::new();
    for guess in [right.clone(), wrong_last(&right)] {
        let params = vec![
            p("mode", "exec-many"),
            p("credential", "pw"),
            Param {
                name: "targets".into(),
                value: Value::TextList(vec!["t0".into()]),
            },
            p("command", &at_the_cap(&guess, 1)),
        ];
        let (_, report) = lab.run(params, lab.grant(&["/tmp"])).await;
        seen.push(format!("{:?}", report.outcome));
    }
    assert_eq!(seen[0], seen[1]);
    assert!(!seen[0].contains("REDACTED"), "{}", seen[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_cut_by_the_cap_leaves_no_visible_start() {
    let user = TestUser::create("wrc")
        .expect("user")
        .with_sudo()
        .expect("sudo");
    let lab = Lab::new(user);
    let pw = lab.user.password.clone();
    // A root-only file holding the sudo password, read back with sudo, cut after 10 bytes.
    let secret_file = format!("/root/warden-test-{}", lab.user.name);
    std::fs::write(&secret_file, &pw).expect("write secret");
    let cmd = format!(
        "head -c {} /dev/zero | tr '\\0' x; cat {secret_file}; cat {secret_file}",
        CAP - 10
    );
    let params = [
        ("mode", "exec"),
        ("credential", "pw"),
        ("target", "t0"),
        ("command", cmd.as_str()),
    ];
    let mut params = text_params(&params);
    params.push(Param {
        name: "sudo".into(),
        value: Value::Flag(true),
    });
    // sudo types a password only for an admin credential, granted alone.
    lab.env
        .add_admin_password("adm", &lab.user.name, &lab.user.password);
    params[1].value = Value::Text("adm".into());
    let grant = Grant {
        credentials: BTreeSet::from(["adm".to_string()]),
        ..lab.grant(&["/tmp"])
    };
    let (_, json) = lab.probe_with(params, grant).await;
    assert_eq!(json["stdout_truncated"], true, "{json}");
    let stdout = json["stdout"].as_str().unwrap_or_default();
    assert!(
        !stdout.is_empty() && stdout.chars().all(|c| c == 'x'),
        "{json}"
    );
    std::fs::remove_file(&secret_file).ok();

    // The private key, printed whole (redacted) and then cut by the cap mid-key.
    let key_file = lab.user.home.join("id_copy");
    std::fs::write(&key_file, &lab.user.private_key_openssh).expect("write key");
    let key_path = key_file.display().to_string();
    let key_len = lab.user.private_key_openssh.len();
    let cmd = format!(
        "cat {key_path}; head -c {} /dev/zero | tr '\\0' x; cat {key_path}",
        CAP - key_len - 200
    );
    let seen = lab.seen("key", &cmd).await;
    let shown = hex::decode(seen["stdout"].as_str().unwrap_or("")).expect("hex");
    let shown = String::from_utf8_lossy(&shown);
    assert!(shown.starts_with("[REDACTED]"), "{shown}");
    for line in lab.user.private_key_openssh.lines() {
        assert!(!shown.contains(line), "key line visible: {line}");
    }
}

/// The test user's password in a file on the target that the task's account may read.
fn plant_secret(lab: &Lab) -> String {
    let path = lab.user.home.join("secret.txt");
    std::fs::write(&path, &lab.user.password).expect("write secret");
    path.display().to_string()
}

/// Reads the secret in two halves (neither a full match), and has the task join them.
async fn assembled(lab: &Lab, sink: &str, pad: usize) -> RunReport {
    let file = plant_secret(lab);
    let half = lab.user.password.len() / 2;
    let first = format!("head -c {half} {file}");
    let second = format!("tail -c +{} {file}", half + 1);
    let mut params = text_params(&[
        ("mode", "assemble"),
        ("credential", "pw"),
        ("target", "t0"),
        ("command", first.as_str()),
        ("command2", second.as_str()),
        ("sink", sink),
    ]);
    params.push(Param {
        name: "pad".into(),
        value: Value::Integer(i64::try_from(pad).unwrap_or(0)),
    });
    lab.run(params, lab.grant(&["/tmp"])).await.1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_the_task_joins_from_two_pieces_never_reaches_its_result_error_or_logs() {
    let lab = Lab::new(TestUser::create("wrj").expect("user"));
    let pw = lab.user.password.clone();
    for sink in ["result", "error", "panic"] {
        let report = assembled(&lab, sink, 0).await;
        // A panic's message goes to stderr; the trap itself only names the wasm frames.
        let (text, expected) = match &report.outcome {
            RunOutcome::Succeeded { result } => (result, "result: [REDACTED]"),
            RunOutcome::Failed { error } => (error, "error: [REDACTED]"),
            RunOutcome::Trapped { .. } => (&report.stderr, "panic: [REDACTED]"),
            other => panic!("{sink}: {other:?}"),
        };
        assert!(text.contains(expected), "{sink}: {text}");
        let everything = format!("{report:?}");
        assert!(
            !everything.contains(&pw),
            "{sink}: the joined secret is in the report"
        );
        assert!(
            report
                .events
                .iter()
                .any(|e| e.message == "joined: [REDACTED]"),
            "{:?}",
            report.events
        );
        assert!(
            report.stdout.contains("stdout: [REDACTED]"),
            "{}",
            report.stdout
        );
        assert!(
            report.stderr.contains("stderr: [REDACTED]"),
            "{}",
            report.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_joined_secret_cut_by_the_tasks_own_stdout_cap_leaves_no_visible_start() {
    let lab = Lab::new(TestUser::create("wrs").expect("user"));
    let pw = lab.user.password.clone();
    // "stdout: <pw>\n", then padding, then the joined secret with only 12 bytes before the cap.
    let line = format!("stdout: {pw}\n").len();
    let report = assembled(&lab, "stdout-cut", CAP - line - 12).await;
    assert!(
        matches!(report.outcome, RunOutcome::Stopped { .. }),
        "{:?}",
        report.outcome
    );
    assert!(
        report.stdout.starts_with("stdout: [REDACTED]\n"),
        "{}",
        report.stdout
    );
    assert!(
        !report.stdout.contains(&pw[..12]),
        "the start of the joined secret survived the cut"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_api_a_joined_secret_is_in_no_stored_result_error_event_or_audit_record() {
    let (server, digest) = crate::leases::Server::start().await;
    let pw = server.user.password.clone();
    let file = server.user.home.join("secret.txt");
    std::fs::write(&file, &pw).expect("write secret");
    let file = file.display();
    let half = pw.len() / 2;
    for sink in ["result", "error"] {
        let inputs = serde_json::json!({
            "mode": "assemble",
            "credential": "pw",
            "target": "t0",
            "command": format!("head -c {half} {file}"),
            "command2": format!("tail -c +{} {file}", half + 1),
            "sink": sink,
        });
        let run = server
            .start_probe(&digest, &format!("joiner-{sink}"), inputs)
            .await;
        let ended = server.wait_ended(&run).await;
        let record = server.get(&format!("/v1/runs/{run}"), &server.admin).await;
        let audit = server
            .get(&format!("/v1/audit?run={run}"), &server.admin)
            .await;
        for text in [ended.to_string(), record.text, audit.text] {
            assert!(
                !text.contains(&pw),
                "{sink}: the joined secret is visible: {text}"
            );
        }
        let field = if sink == "result" { "result" } else { "error" };
        assert_eq!(ended[field], format!("{sink}: [REDACTED]"), "{ended}");
    }
}

fn p(name: &str, value: &str) -> Param {
    Param {
        name: name.into(),
        value: Value::Text(value.into()),
    }
}

// ---------------------------------------------------------------------------------------
// Transfer paths
// ---------------------------------------------------------------------------------------

/// A granted directory and an outside one, both the test user's (so on an unprotected host
/// the task could really read and write through a link), removed on drop.
struct Tree {
    granted: PathBuf,
    outside: PathBuf,
}

impl Tree {
    fn new(lab: &Lab) -> Tree {
        let id = uuid::Uuid::new_v4();
        let tree = Tree {
            granted: PathBuf::from(format!("/tmp/warden-grant-{id}")),
            outside: PathBuf::from(format!("/tmp/warden-outside-{id}")),
        };
        for dir in [&tree.granted, &tree.outside, &tree.granted.join("real")] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(tree.outside.join("victim"), "outside, unchanged\n").expect("victim");
        std::fs::write(tree.granted.join("real/ok.txt"), "inside\n").expect("ok");
        let status = std::process::Command::new("chown")
            .args(["-R", &lab.user.name])
            .arg(&tree.granted)
            .arg(&tree.outside)
            .status()
            .expect("chown");
        assert!(status.success());
        tree
    }

    fn at(&self, name: &str) -> String {
        self.granted.join(name).display().to_string()
    }

    fn link(&self, name: &str, to: &str) {
        symlink(to, self.granted.join(name)).expect("symlink");
    }

    fn victim(&self) -> String {
        std::fs::read_to_string(self.outside.join("victim")).unwrap_or_default()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.granted).ok();
        std::fs::remove_dir_all(&self.outside).ok();
    }
}

async fn download(lab: &Lab, tree: &Tree, path: &str) -> (String, Json) {
    let granted = tree.granted.display().to_string();
    let params = [
        ("mode", "download-only"),
        ("credential", "key"),
        ("target", "t0"),
        ("path", path),
    ];
    lab.probe(&params, lab.grant(&[&granted])).await
}

async fn upload(lab: &Lab, tree: &Tree, path: &str, content: &str) -> (String, Json) {
    let granted = tree.granted.display().to_string();
    let params = [
        ("mode", "upload-only"),
        ("credential", "key"),
        ("target", "t0"),
        ("path", path),
        ("content", content),
    ];
    lab.probe(&params, lab.grant(&[&granted])).await
}

/// The run's one transfer record.
fn transfer_record(lab: &Lab, run_id: &str) -> AuditRecord {
    let records = lab.env.host_call_records(run_id);
    records
        .into_iter()
        .find(|r| r.entry.action.starts_with("transfer."))
        .expect("the transfer call is audited")
}

/// Asserts a refusal: the guest error kind and words, and its audit record.
fn assert_refused(lab: &Lab, run_id: &str, json: &Json, kind: &str, words: &str) {
    assert_eq!(json["error"], kind, "{json}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.contains(words), "{json}");
    let record = transfer_record(lab, run_id);
    let audited = match &record.entry.decision {
        Decision::Denied { reason, policy } => {
            format!("{reason} {}", policy.clone().unwrap_or_default())
        }
        Decision::Allowed => record.entry.outcome.clone(),
    };
    assert!(audited.contains(words), "audit: {record:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_through_links_that_leave_the_prefix_are_refused() {
    let lab = Lab::new(TestUser::create("wpd").expect("user"));
    let tree = Tree::new(&lab);
    let outside = tree.outside.display().to_string();
    tree.link("etc", "/etc");
    tree.link("out", &outside);
    tree.link("chain1", &tree.at("chain2"));
    tree.link("chain2", &outside);
    tree.link("rel", "../../etc");
    tree.link("dots", "real/../..");
    let outside_name = tree
        .outside
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let cases = [
        tree.at("etc/passwd"),
        tree.at("out/victim"),
        tree.at("chain1/victim"),
        tree.at("rel/passwd"),
        format!("{}/{outside_name}/victim", tree.at("dots")),
    ];
    for path in &cases {
        let (run_id, json) = download(&lab, &tree, path).await;
        assert_refused(&lab, &run_id, &json, "denied", "resolves to");
        assert!(
            json["message"]
                .as_str()
                .unwrap_or("")
                .contains("grant.paths"),
            "{json}"
        );
    }
    // A link as the final component, even one pointing inside the prefix.
    tree.link("passwd", "/etc/passwd");
    tree.link("inner-file", &tree.at("real/ok.txt"));
    for name in ["passwd", "inner-file"] {
        let (run_id, json) = download(&lab, &tree, &tree.at(name)).await;
        assert_refused(&lab, &run_id, &json, "invalid-argument", "symbolic link");
    }
    // A FIFO would block the SFTP server on open; it is refused at once.
    let fifo = tree.at("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()));
    let started = Instant::now();
    let (run_id, json) = download(&lab, &tree, &fifo).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_refused(&lab, &run_id, &json, "invalid-argument", "FIFO");
    let (run_id, json) = download(&lab, &tree, &tree.at("real")).await;
    assert_refused(&lab, &run_id, &json, "invalid-argument", "directory");
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_through_links_are_refused_and_leave_the_outside_file_unchanged() {
    let lab = Lab::new(TestUser::create("wpu").expect("user"));
    let tree = Tree::new(&lab);
    let outside = tree.outside.display().to_string();
    tree.link("out", &outside);
    tree.link(
        "rel",
        &format!(
            "../{}",
            tree.outside
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
        ),
    );
    for path in [
        tree.at("out/victim"),
        tree.at("out/new"),
        tree.at("rel/victim"),
    ] {
        let (run_id, json) = upload(&lab, &tree, &path, "planted\n").await;
        assert_refused(&lab, &run_id, &json, "denied", "resolves to");
    }
    // A link as the final name.
    tree.link("victim-link", &format!("{outside}/victim"));
    let (run_id, json) = upload(&lab, &tree, &tree.at("victim-link"), "planted\n").await;
    assert_refused(&lab, &run_id, &json, "invalid-argument", "symbolic link");
    // A file the task uploaded before, then replaced by a link just before this upload.
    let (_, json) = upload(&lab, &tree, &tree.at("config"), "v1\n").await;
    assert_eq!(json["bytes"], 3, "{json}");
    std::fs::remove_file(tree.granted.join("config")).expect("rm");
    tree.link("config", &format!("{outside}/victim"));
    let (run_id, json) = upload(&lab, &tree, &tree.at("config"), "v2\n").await;
    assert_refused(&lab, &run_id, &json, "invalid-argument", "symbolic link");
    assert_eq!(tree.victim(), "outside, unchanged\n");
    assert!(!tree.outside.join("new").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&tree.granted)
        .expect("ls")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".warden-upload-")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn links_that_stay_inside_the_prefix_still_work_and_uploads_replace_the_name() {
    let lab = Lab::new(TestUser::create("wpi").expect("user"));
    let tree = Tree::new(&lab);
    tree.link("inner", &tree.at("real"));
    let (run_id, json) = download(&lab, &tree, &tree.at("inner/ok.txt")).await;
    assert_eq!(json["content"], "inside\n", "{json}");
    let record = transfer_record(&lab, &run_id);
    let detail = record.entry.detail.clone().unwrap_or_default();
    assert!(detail.contains("resolves to"), "{detail}");
    // An upload replaces a hard-linked file by name: the other link keeps the old bytes.
    let linked = tree.outside.join("hard");
    std::fs::hard_link(tree.granted.join("real/ok.txt"), &linked).expect("hard link");
    let (_, json) = upload(&lab, &tree, &tree.at("inner/ok.txt"), "replaced\n").await;
    assert_eq!(json["bytes"], 9, "{json}");
    assert_eq!(
        std::fs::read_to_string(tree.granted.join("real/ok.txt")).unwrap_or_default(),
        "replaced\n"
    );
    assert_eq!(
        std::fs::read_to_string(&linked).unwrap_or_default(),
        "inside\n"
    );
}
