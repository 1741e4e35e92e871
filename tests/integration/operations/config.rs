//! The configuration file (`--config`) and `warden config check`: precedence of flags,
//! environment and file, refusals, and the master key shown only as where it is read from.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use warden_tests::random_secret;

use super::{run, start_serve, warden};

/// Writes `text` as a configuration file with mode 0600.
fn config_file(dir: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("warden.toml");
    std::fs::write(&path, text).expect("config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn config_check(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = warden(cwd);
    command
        .args(["config", "check"])
        .args(args)
        .envs(envs.iter().copied());
    let (out, stdout, stderr) = run(command);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn config_file_settings_yield_to_environment_and_flags_in_that_order() {
    let tmp = TempDir::new().expect("temp dir");
    let file = config_file(
        tmp.path(),
        "listen = \"127.0.0.1:7171\"\ndata = \"state\"\nshutdown_grace = 7\n\
         log_format = \"json\"\nmax_concurrent_runs = 3\nmax_queued_runs = 11\n",
    );
    let file_arg = file.to_string_lossy().into_owned();
    let (code, stdout, stderr) = config_check(
        tmp.path(),
        &["--config", &file_arg, "--max-concurrent-runs", "5"],
        &[
            ("WARDEN_SHUTDOWN_GRACE", "9"),
            ("WARDEN_MAX_CONCURRENT_RUNS", "4"),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let expect = [
        "listen = \"127.0.0.1:7171\"  # config file".to_string(),
        // Relative to the file's directory, not the working directory.
        format!(
            "data = \"{}\"  # config file",
            tmp.path().join("state").display()
        ),
        "shutdown_grace = 9  # environment".to_string(),
        "log_format = \"json\"  # config file".to_string(),
        "max_concurrent_runs = 5  # flag".to_string(),
        "max_queued_runs = 11  # config file".to_string(),
        "max_running_per_user = 16  # default".to_string(),
    ];
    for line in expect {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?}:\n{stdout}"
        );
    }
    assert!(stdout.contains("# policies: the built-in set"), "{stdout}");
}

#[test]
fn a_config_file_with_a_typo_a_loose_mode_or_two_key_sources_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().expect("temp dir");
    // A misspelt key would otherwise be ignored and the default used in its place.
    let file = config_file(
        tmp.path(),
        "listen = \"127.0.0.1:7171\"\nmax_concurent_runs = 2\n",
    );
    let file_arg = file.to_string_lossy().into_owned();
    let (code, _, stderr) = config_check(tmp.path(), &["--config", &file_arg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&file_arg), "{stderr}");
    assert!(stderr.contains("line 2, column 1"), "{stderr}");
    assert!(stderr.contains("max_concurent_runs"), "{stderr}");

    // A value of the wrong type.
    config_file(tmp.path(), "shutdown_grace = \"soon\"\n");
    let (code, _, stderr) = config_check(tmp.path(), &["--config", &file_arg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 1, column 18"), "{stderr}");

    // Anyone who may rewrite the file may point the server at other policies.
    config_file(tmp.path(), "shutdown_grace = 5\n");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (code, _, stderr) = config_check(tmp.path(), &["--config", &file_arg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("writable by group or others"), "{stderr}");

    // Which master key wins must not depend on an order nobody wrote down.
    config_file(
        tmp.path(),
        "master_key_env = \"K\"\nmaster_key_file = \"/etc/warden/master.key\"\n",
    );
    let (code, _, stderr) = config_check(tmp.path(), &["--config", &file_arg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("at most one of"), "{stderr}");

    // A database password in a file that `config check` prints and many may read.
    config_file(
        tmp.path(),
        "database = \"postgres://warden:hunter2-secret@db.example/warden\"\n",
    );
    let (code, stdout, stderr) = config_check(tmp.path(), &["--config", &file_arg], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("without a password"), "{stderr}");
    assert!(
        !stderr.contains("hunter2") && !stdout.contains("hunter2"),
        "{stderr}"
    );

    // A --config that does not exist is an error, not a silent fallback to defaults.
    let missing = tmp.path().join("nope.toml").to_string_lossy().into_owned();
    let (code, _, stderr) = config_check(tmp.path(), &["--config", &missing], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot read the configuration file"),
        "{stderr}"
    );
}

#[test]
fn config_check_names_where_the_master_key_is_and_never_prints_it() {
    let tmp = TempDir::new().expect("temp dir");
    let key = hex::encode(rand::random::<[u8; 32]>());
    let file = config_file(tmp.path(), "master_key_env = \"OPS_TEST_MASTER_KEY\"\n");
    let file_arg = file.to_string_lossy().into_owned();
    let (code, stdout, stderr) = config_check(
        tmp.path(),
        &["--config", &file_arg],
        &[("OPS_TEST_MASTER_KEY", &key)],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("master_key_env = \"OPS_TEST_MASTER_KEY\"  # config file"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&key) && !stderr.contains(&key),
        "key printed"
    );
    // A flag for another source wins over the file's, and is what is shown.
    let (code, stdout, _) = config_check(
        tmp.path(),
        &["--config", &file_arg, "--master-key-file", "/run/key"],
        &[("OPS_TEST_MASTER_KEY", &key)],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("master_key_file = \"/run/key\"  # flag"),
        "{stdout}"
    );
    assert!(!stdout.contains("OPS_TEST_MASTER_KEY"), "{stdout}");
    // A database URL from the environment may carry a password: never shown.
    let url = format!("postgres://warden:{}@db.example/warden", random_secret(16));
    let (code, stdout, stderr) = config_check(
        tmp.path(),
        &["--config", &file_arg],
        &[("OPS_TEST_MASTER_KEY", &key), ("WARDEN_DATABASE_URL", &url)],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("# database: a PostgreSQL URL from the environment (not shown)"));
    assert!(!stdout.contains(&url) && !stderr.contains(&url), "{stdout}");
}

/// The systemd unit's way: the key lives outside the data directory (a credential), named
/// by `--master-key-file` or by `master_key_file` in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_file_kept_apart_opens_the_data_directory_and_a_loose_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().expect("temp dir");
    let data = tmp.path().join("data");
    let key = tmp.path().join("credentials").join("master-key");
    std::fs::create_dir_all(key.parent().expect("parent")).expect("mkdir");
    let mut init = warden(tmp.path());
    init.args(["init", "--data"])
        .arg(&data)
        .arg("--master-key-file")
        .arg(&key);
    let (out, stdout, stderr) = run(init);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !data.join("master.key").exists(),
        "the key was written into the data dir"
    );
    assert_eq!(std::fs::metadata(&key).expect("key").len(), 32);

    // Through the configuration file (a relative path, from the file's directory).
    let file = config_file(
        tmp.path(),
        "data = \"data\"\nmaster_key_file = \"credentials/master-key\"\n",
    );
    let file_arg = file.to_string_lossy().into_owned();
    // Plain HTTP on loopback: the subject is the key file, not the certificate `warden init`
    // made (tests/integration/tls.rs covers that).
    let serve = start_serve(tmp.path(), &["--config", &file_arg, "--insecure-http"], &[]).await;
    assert!(
        serve.stderr().contains("listening on"),
        "{}",
        serve.stderr()
    );
    drop(serve);

    // Without it, the data directory alone does not open.
    let data_arg = data.to_string_lossy().into_owned();
    let mut bare = warden(tmp.path());
    bare.args(["serve", "--listen", "127.0.0.1:0", "--data", &data_arg]);
    let (out, _, stderr) = run(bare);
    assert_eq!(out.status.code(), Some(2), "{stderr}");

    // A key others may read is refused, named by the flag as by the file.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let key_arg = key.to_string_lossy().into_owned();
    let mut loose = warden(tmp.path());
    loose.args(["serve", "--listen", "127.0.0.1:0", "--data", &data_arg]);
    loose.args(["--master-key-file", &key_arg]);
    let (out, _, stderr) = run(loose);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&key_arg), "{stderr}");
}
