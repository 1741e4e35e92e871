//! The `warden` command line end to end: init, credentials, exec, audit verify/show,
//! and the clear errors for bad input that leave the data directory intact.

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use warden_tests::{grep_dir, guests, random_secret, warden};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

pub(crate) struct Cli {
    _dir: TempDir,
    pub(crate) data: PathBuf,
}

impl Cli {
    pub(crate) fn init() -> Cli {
        let dir = TempDir::new().expect("temp dir");
        let data = dir.path().join("data");
        let cli = Cli { _dir: dir, data };
        let out = cli.ok(&["init"], None);
        assert!(out.contains("initialised"), "{out}");
        cli
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
        let data = self.data.to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data", &data]);
        warden(BIN, &all, stdin).expect("warden runs")
    }

    pub(crate) fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "warden {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command expected to fail; returns (exit code, stderr).
    pub(crate) fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args, None);
        assert!(!out.status.success(), "warden {args:?} should fail");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn audit_count(&self) -> usize {
        let out = self.ok(&["audit", "verify"], None);
        out.split_whitespace()
            .find_map(|w| w.parse().ok())
            .expect("count in verify output")
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn exec_hello_prints_events_and_result_and_audits_it() {
    let cli = Cli::init();
    let hello = path(&guests::component("hello"));
    let manifest = path(&guests::manifest("hello"));
    let out = cli.ok(
        &[
            "exec",
            &hello,
            "--manifest",
            &manifest,
            "--param",
            "name=Ada",
            "--param",
            "times=2",
        ],
        None,
    );
    assert!(out.contains("greeting 2 of 2 for Ada"), "{out}");
    assert!(out.contains("result: hello, Ada"), "{out}");
    let shown = cli.ok(&["audit", "show"], None);
    let actions: Vec<serde_json::Value> = shown
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(
        actions.first().and_then(|r| r["action"].as_str()),
        Some("run.start")
    );
    assert_eq!(
        actions.last().and_then(|r| r["action"].as_str()),
        Some("run.end")
    );
    assert!(cli.audit_count() >= 4);
}

#[test]
fn exit_code_reflects_a_failing_task() {
    let cli = Cli::init();
    let probe = path(&guests::component("probe"));
    let out = cli.run(&["exec", &probe, "--param", "mode=fail"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("task failed on purpose"));
}

#[test]
fn credential_secret_is_read_from_stdin_and_never_stored_in_plaintext() {
    let cli = Cli::init();
    let secret = random_secret(32);
    cli.ok(
        &["credential", "add", "web-admin", "--username", "admin"],
        Some(format!("{secret}\n").as_bytes()),
    );
    let list = cli.ok(&["credential", "list"], None);
    assert!(
        list.contains("web-admin") && list.contains("admin"),
        "{list}"
    );
    assert!(!list.contains(&secret));
    // Use it in a run so the vault decrypts it at least once, then look for it on disk.
    let probe = path(&guests::component("probe"));
    let needle = hex::encode(secret.as_bytes());
    let out = cli.ok(
        &[
            "exec",
            &probe,
            "--param",
            "mode=memscan",
            "--param",
            "credential=web-admin",
            "--param",
            &format!("needle={needle}"),
            "--allow-credential",
            "web-admin",
        ],
        None,
    );
    assert!(out.contains("\"found\":0"), "{out}");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret.as_bytes());
    for form in [secret.as_bytes(), needle.as_bytes(), b64.as_bytes()] {
        assert_eq!(
            grep_dir(&cli.data, form).expect("grep"),
            0,
            "plaintext secret on disk"
        );
    }
    assert!(!cli.ok(&["audit", "show"], None).contains(&secret));
}

#[test]
fn audit_verify_names_a_record_with_one_flipped_byte() {
    let cli = Cli::init();
    let hello = path(&guests::component("hello"));
    cli.ok(&["exec", &hello, "--param", "name=x"], None);
    let count = cli.audit_count();
    assert!(count >= 3);
    tamper(&cli.data, |tree| {
        let key = 1u64.to_be_bytes();
        let mut value = tree.get(key).expect("read").expect("record 1").to_vec();
        let at = value.iter().position(|b| *b == b'"').expect("a quote") + 1;
        value[at] ^= 0x01;
        tree.insert(key, value).expect("write");
    });
    let (code, err) = cli.fails(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(err.contains("audit record 1:"), "must name record 1: {err}");
}

#[test]
fn audit_verify_names_a_deleted_record() {
    let cli = Cli::init();
    let hello = path(&guests::component("hello"));
    cli.ok(&["exec", &hello], None);
    tamper(&cli.data, |tree| {
        tree.remove(2u64.to_be_bytes())
            .expect("remove")
            .expect("record 2 existed");
    });
    let (code, err) = cli.fails(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("audit record 2: missing"),
        "must name record 2: {err}"
    );
}

#[test]
fn audit_verify_detects_a_truncated_tail() {
    let cli = Cli::init();
    let hello = path(&guests::component("hello"));
    cli.ok(&["exec", &hello], None);
    let count = cli.audit_count() as u64;
    tamper(&cli.data, |tree| {
        tree.remove((count - 1).to_be_bytes())
            .expect("remove")
            .expect("last record existed");
    });
    let (code, err) = cli.fails(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("audit record {}", count - 1)),
        "must name the lost tail: {err}"
    );
}

/// Edits the audit tree directly, as an attacker with access to the database would.
pub(crate) fn tamper(data: &Path, edit: impl FnOnce(&sled::Tree)) {
    let db = sled::open(data.join("db")).expect("open db");
    let tree = db.open_tree("audit").expect("audit tree");
    edit(&tree);
    db.flush().expect("flush");
}

#[test]
fn bad_components_params_and_credentials_give_clear_errors_and_change_nothing() {
    let cli = Cli::init();
    cli.ok(
        &["credential", "add", "ops", "--username", "ops"],
        Some(b"correct horse battery"),
    );
    let hello = path(&guests::component("hello"));
    let manifest = path(&guests::manifest("hello"));
    cli.ok(&["exec", &hello, "--manifest", &manifest], None);
    let before = cli.audit_count();
    let dir = TempDir::new().expect("temp");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").expect("write");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let truncated = dir.path().join("truncated.wasm");
    let bytes = std::fs::read(guests::component("hello")).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["exec".into(), path(&garbage)],
            "not a WebAssembly file",
        ),
        (vec!["exec".into(), path(&core)], "core WebAssembly module"),
        (
            vec!["exec".into(), path(&truncated)],
            "invalid WebAssembly component",
        ),
        (
            vec![
                "exec".into(),
                hello.clone(),
                "--manifest".into(),
                manifest.clone(),
                "--param".into(),
                "nmae=x".into(),
            ],
            "'nmae': unknown input",
        ),
        (
            vec![
                "exec".into(),
                hello.clone(),
                "--manifest".into(),
                manifest.clone(),
                "--param".into(),
                "times=lots".into(),
            ],
            "'times' must be an integer",
        ),
        (
            vec![
                "exec".into(),
                hello.clone(),
                "--allow-credential".into(),
                "nosuch".into(),
            ],
            "unknown credential 'nosuch'",
        ),
        (
            vec![
                "exec".into(),
                dir.path()
                    .join("missing.wasm")
                    .to_string_lossy()
                    .into_owned(),
            ],
            "missing.wasm",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err) = cli.fails(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected '{expected}' in: {err}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one clear line, no backtrace: {err}"
        );
    }
    assert_eq!(cli.audit_count(), before, "no run started, nothing audited");
    assert!(cli.ok(&["credential", "list"], None).contains("ops"));
}

#[test]
fn credential_add_refuses_duplicates_and_open_refuses_uninitialised_dirs() {
    let cli = Cli::init();
    cli.ok(
        &["credential", "add", "ops", "--username", "ops"],
        Some(b"pw-one-two-three"),
    );
    let out = cli.run(
        &["credential", "add", "ops", "--username", "ops"],
        Some(b"pw-two"),
    );
    assert!(!out.status.success());
    let dir = TempDir::new().expect("temp");
    let out = warden(
        BIN,
        &[
            "credential",
            "list",
            "--data",
            &path(&dir.path().join("nope")),
        ],
        None,
    )
    .expect("runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Warden data directory"));
    let out = warden(BIN, &["init", "--data", &path(&cli.data)], None).expect("runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already initialised"));
}

#[test]
fn target_scan_add_list_and_an_ssh_run_whose_logs_hold_no_secret() {
    use warden_tests::sshd::{Sshd, TestUser};
    let cli = Cli::init();
    let sshd = Sshd::start("127.0.0.1").expect("sshd");
    let user = TestUser::create("wdc").expect("user");
    let address = format!("127.0.0.1:{}", sshd.port);
    // scan prints the key for a person to check; it pins nothing.
    let scanned = warden(BIN, &["target", "scan", &address], None).expect("runs");
    assert!(
        scanned.status.success(),
        "{}",
        String::from_utf8_lossy(&scanned.stderr)
    );
    let key_line = String::from_utf8_lossy(&scanned.stdout).trim().to_string();
    let sshd_key: Vec<&str> = sshd.host_key_line.split_whitespace().take(2).collect();
    assert_eq!(
        key_line.split_whitespace().take(2).collect::<Vec<_>>(),
        sshd_key
    );
    assert!(String::from_utf8_lossy(&scanned.stderr).contains("SHA256:"));
    assert!(
        !cli.ok(&["target", "list"], None).contains("web-1"),
        "scan must not pin"
    );
    cli.ok(
        &[
            "target",
            "add",
            "web-1",
            "--address",
            &address,
            "--host-key",
            &key_line,
            "--tag",
            "web",
        ],
        None,
    );
    let list = cli.ok(&["target", "list"], None);
    assert!(
        list.contains("web-1") && list.contains(&address) && list.contains("web"),
        "{list}"
    );
    let bad = cli.run(
        &[
            "target",
            "add",
            "web-2",
            "--address",
            &address,
            "--host-key",
            "ssh-ed25519 not-a-key",
        ],
        None,
    );
    assert!(!bad.status.success());

    cli.ok(
        &["credential", "add", "ops", "--username", &user.name],
        Some(user.password.as_bytes()),
    );
    let probe = path(&guests::component("probe"));
    let manifest = path(&guests::manifest("probe"));
    let data = cli.data.to_string_lossy().into_owned();
    let out = std::process::Command::new(BIN)
        .args(["exec", &probe, "--manifest", &manifest, "--data", &data])
        .args([
            "--param",
            "mode=exec",
            "--param",
            "credential=ops",
            "--param",
            "target=web-1",
        ])
        .args(["--param", &format!("command=echo {}", user.password)])
        .args(["--allow-credential", "ops", "--allow-target", "web-1"])
        .args(["--allow-command", "echo *"])
        .env("WARDEN_LOG", "trace")
        .output()
        .expect("exec runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("[REDACTED]"), "{stdout}");
    assert!(
        !stdout.contains(&user.password),
        "secret in run output: {stdout}"
    );
    assert!(!stderr.contains(&user.password), "secret in the trace log");
    assert!(!cli.ok(&["audit", "show"], None).contains(&user.password));
}
