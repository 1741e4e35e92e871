//! The built-in policies, their export and override, and the errors a person reads at
//! start: a policy or schema syntax error, a port in use. Also the generated completions
//! and man pages.

use std::time::Duration;

use tempfile::TempDir;

use super::{PATIENCE, export, logged_digest, run, start_serve, warden};
use warden_tests::http::init_data_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_any_directory_with_the_built_in_policies_and_logs_their_digest() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    // The working directory holds a `policies/` that would load and that permits
    // everything to everyone: the server must not pick it up just because it is there.
    let cwd = tmp.path().join("elsewhere");
    let stray = cwd.join("policies");
    export(tmp.path(), &stray);
    std::fs::write(
        stray.join("zz-open.cedar"),
        "@id(\"open-to-all\")\npermit(principal, action, resource);\n",
    )
    .expect("stray policy");

    let version = run({
        let mut c = warden(&cwd);
        c.arg("--version");
        c
    });
    assert!(
        version.1.starts_with("warden ") && version.1.contains("(commit "),
        "{}",
        version.1
    );

    let exported = export(tmp.path(), &tmp.path().join("exported"));
    let data_arg = data.to_string_lossy().into_owned();
    let builtin = start_serve(&cwd, &["--data", &data_arg], &[]).await;
    let log = builtin.stderr();
    assert!(log.contains("built-in policy set"), "{log}");
    let digest = logged_digest(&log, "policies loaded").expect("digest logged");
    assert_eq!(digest.len(), 64, "{log}");
    // A faithful export is the same set, by digest; the stray directory is another one.
    assert_eq!(digest, exported, "{log}");
    drop(builtin);

    let stray_arg = stray.to_string_lossy().into_owned();
    let args = ["--data", &data_arg, "--policies", &stray_arg];
    let explicit = start_serve(&cwd, &args, &[]).await;
    let log = explicit.stderr();
    assert!(log.contains(&format!("directory {stray_arg}")), "{log}");
    let other = logged_digest(&log, "policies loaded").expect("digest logged");
    assert_ne!(
        other, exported,
        "an edited set must not share the built-in digest"
    );

    // SIGHUP reloads the directory and logs the new digest.
    std::fs::remove_file(stray.join("zz-open.cedar")).expect("remove");
    explicit.signal("HUP");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while logged_digest(&explicit.stderr(), "policies reloaded").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            explicit.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reloaded = logged_digest(&explicit.stderr(), "policies reloaded");
    assert_eq!(reloaded.as_deref(), Some(exported.as_str()));
}

#[test]
fn policies_export_never_overwrites_an_administrators_files() {
    let tmp = TempDir::new().expect("temp dir");
    let dir = tmp.path().join("policies");
    export(tmp.path(), &dir);
    let edited = "@id(\"mine\")\nforbid(principal, action, resource);\n";
    std::fs::write(dir.join("host-calls.cedar"), edited).expect("edit");
    let mut again = warden(tmp.path());
    again.args(["policies", "export"]).arg(&dir);
    let (out, _, stderr) = run(again);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot write"), "{stderr}");
    assert!(stderr.contains("empty or new directory"), "{stderr}");
    let kept = std::fs::read_to_string(dir.join("host-calls.cedar")).expect("read");
    assert_eq!(kept, edited, "the export overwrote an edited policy");
}

#[test]
fn a_policy_or_schema_syntax_error_names_the_file_line_and_column() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let dir = tmp.path().join("policies");
    export(tmp.path(), &dir);
    let data_arg = data.to_string_lossy().into_owned();
    let dir_arg = dir.to_string_lossy().into_owned();

    // A policy file: line 3 has a stray token at column 9.
    let broken = dir.join("zz-broken.cedar");
    std::fs::write(
        &broken,
        "@id(\"broken\")\npermit(\n  principal ==,\n  action,\n  resource\n);\n",
    )
    .expect("write");
    for args in [
        vec!["serve", "--listen", "127.0.0.1:0", "--data", &data_arg],
        vec!["config", "check"],
    ] {
        let mut command = warden(tmp.path());
        command.args(&args).args(["--policies", &dir_arg]);
        let (out, _, stderr) = run(command);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let want = format!("{} has a syntax error at line 3, column ", broken.display());
        assert!(stderr.contains(&want), "{args:?}: {stderr}");
        let errors = stderr.lines().filter(|l| l.starts_with("error:")).count();
        assert_eq!(errors, 1, "one line: {stderr}");
    }
    std::fs::remove_file(&broken).expect("remove");

    // The schema: an unterminated entity declaration on line 2.
    let schema = dir.join("schema.cedarschema");
    let text = std::fs::read_to_string(&schema).expect("schema");
    std::fs::write(&schema, format!("// edited\nentity Broken in [\n{text}")).expect("write");
    let mut command = warden(tmp.path());
    command.args(["config", "check", "--policies", &dir_arg]);
    let (out, _, stderr) = run(command);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("schema {} is invalid at line ", schema.display())),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_one_sentence_with_the_next_step() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut command = warden(tmp.path());
    command
        .args(["serve", "--listen", &addr, "--data"])
        .arg(&data);
    let (out, _, stderr) = run(command);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        error,
        [format!(
            "error: {addr} is already in use by another process; stop it or choose another \
             --listen address"
        )],
        "{stderr}"
    );
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let tmp = TempDir::new().expect("temp dir");
    let mut command = warden(tmp.path());
    command.args(["completions", "bash"]);
    let (out, stdout, _) = run(command);
    assert!(out.status.success());
    for sub in ["serve", "policies", "config"] {
        assert!(stdout.contains(sub), "completion lacks {sub}");
    }
    let mut command = warden(tmp.path());
    command.args(["man"]).arg(tmp.path().join("man"));
    let (out, _, stderr) = run(command);
    assert!(out.status.success(), "{stderr}");
    let page = std::fs::read_to_string(tmp.path().join("man/warden-serve.1")).expect("page");
    assert!(page.contains("shutdown\\-grace"), "{page}");
    assert!(tmp.path().join("man/warden-config-check.1").exists());
    assert!(
        !tmp.path().join("man/warden-man.1").exists(),
        "hidden commands stay hidden"
    );
}
