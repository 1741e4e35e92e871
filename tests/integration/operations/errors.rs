//! The one-sentence errors a person reads, with the next step: a data directory another
//! `warden` holds (said once, not twice), a missing master key, one this user cannot read.

use std::path::Path;

use tempfile::TempDir;

use super::{arg, audit_verify, run, start_serve, warden};
use warden_tests::http::init_data_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_in_use_and_a_missing_master_key_are_one_sentence_each() {
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let serve = start_serve(tmp.path(), &["--data", &arg(&data)], &[]).await;
    for args in [
        vec!["serve", "--listen", "127.0.0.1:0", "--data", &arg(&data)],
        vec!["audit", "verify", "--data", &arg(&data)],
        vec!["credential", "list", "--data", &arg(&data)],
    ] {
        let mut command = warden(tmp.path());
        command.args(&args);
        let (out, _, stderr) = run(command);
        assert!(!out.status.success());
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0]
                .contains("is in use by another warden process; stop it or use another --data"),
            "{stderr}"
        );
        assert_eq!(
            errors[0].matches("in use").count(),
            1,
            "said twice: {stderr}"
        );
    }
    drop(serve);

    let moved = tmp.path().join("kept-apart.key");
    std::fs::rename(data.join("master.key"), &moved).expect("move key");
    let mut command = warden(tmp.path());
    command.args(["audit", "verify", "--data", &arg(&data)]);
    let (out, _, stderr) = run(command);
    assert!(!out.status.success());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("no master key at"), "{stderr}");
    assert!(errors[0].contains("--master-key-file"), "{stderr}");
    assert_eq!(
        errors[0].matches("master.key").count(),
        1,
        "said twice: {stderr}"
    );
    // A key this user may not read (the service user's, read by another account).
    let unreadable = tmp.path().join("unreadable");
    std::fs::create_dir(&unreadable).expect("dir");
    std::fs::copy(&moved, unreadable.join("master.key")).expect("copy");
    {
        use std::os::unix::fs::PermissionsExt;
        let open =
            |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        open(tmp.path(), 0o755).expect("chmod");
        open(&data, 0o755).expect("chmod");
        open(&unreadable, 0o755).expect("chmod");
    }
    let mut command = std::process::Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(super::BIN)
        .args([
            "audit",
            "verify",
            "--data",
            &arg(&data),
            "--master-key-file",
        ])
        .arg(unreadable.join("master.key"))
        .env_remove("WARDEN_DATA");
    let (out, _, stderr) = run(command);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot be read by this user"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    // With the key named, the same command works.
    let (out, stdout, stderr) = audit_verify(tmp.path(), &data, &moved);
    assert!(out.status.success(), "{stdout}{stderr}");
}
