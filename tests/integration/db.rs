//! `warden db` end to end against real sled files and a real PostgreSQL database: status,
//! and the move of an existing data directory into PostgreSQL with its audit chain.

use warden_tests::{guests, random_secret};

use crate::cli::{BIN, Cli};

/// `warden db copy` from the data directory of `cli` to `url`: (success, stdout, stderr).
fn copy(cli: &Cli, url: &str) -> (bool, String, String) {
    let from = cli.data.to_string_lossy().into_owned();
    let out = warden_tests::warden(BIN, &["db", "copy", "--from", &from, "--to", url], None)
        .expect("warden runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the hello task locally, so the log has records.
fn run_hello(cli: &Cli) {
    let hello = guests::component("hello").to_string_lossy().into_owned();
    let manifest = guests::manifest("hello").to_string_lossy().into_owned();
    cli.ok(
        &[
            "exec",
            &hello,
            "--manifest",
            &manifest,
            "--param",
            "name=Ada",
        ],
        None,
    );
}

fn count_in(verify: &str) -> u64 {
    verify
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no count in {verify:?}"))
}

#[test]
fn db_copy_moves_a_data_directory_into_postgres_with_its_chain_and_refuses_a_used_target() {
    let cli = Cli::init();
    let secret = random_secret(32);
    cli.ok(
        &["credential", "add", "db-root", "--username", "root"],
        Some(format!("{secret}\n").as_bytes()),
    );
    run_hello(&cli);
    let before = count_in(&cli.ok(&["audit", "verify"], None));
    assert!(before > 0);
    let status = cli.ok(&["db", "status"], None);
    assert!(status.contains("backend: sled"), "{status}");

    let url = warden_tests::postgres::fresh_database();
    let (ok, copied, stderr) = copy(&cli, &url);
    assert!(ok, "{stderr}");
    assert!(copied.contains("chain verified"), "{copied}");
    assert!(copied.contains("credentials: 1 rows"), "{copied}");

    // The copy is the same chain, and the state opens with the same keys.
    let on_pg = ["--database", url.as_str()];
    let after = count_in(&cli.ok(&[&["audit", "verify"][..], &on_pg].concat(), None));
    assert_eq!(after, before);
    let list = cli.ok(&[&["credential", "list"][..], &on_pg].concat(), None);
    assert!(
        list.contains("db-root") && !list.contains(&secret),
        "{list}"
    );
    let status = cli.ok(&[&["db", "status"][..], &on_pg].concat(), None);
    assert!(
        status.contains("backend: postgres") && status.contains("schema: version"),
        "{status}"
    );
    assert!(!status.contains("password"), "{status}");

    // A second copy into the same (now used) database is refused and changes nothing.
    let (ok, _, stderr) = copy(&cli, &url);
    assert!(
        !ok && stderr.contains("already holds Warden state"),
        "{stderr}"
    );
    let again = count_in(&cli.ok(&[&["audit", "verify"][..], &on_pg].concat(), None));
    assert_eq!(again, before);
}

#[test]
fn db_copy_refuses_a_source_whose_chain_does_not_verify() {
    let cli = Cli::init();
    run_hello(&cli);
    crate::cli::tamper(&cli.data, |records| {
        let (key, value) = records.iter().next().expect("a record").expect("read");
        let mut edited = value.to_vec();
        let at = edited.len() / 2;
        edited[at] ^= 1;
        records.insert(key, edited).expect("tamper");
    });
    let url = warden_tests::postgres::fresh_database();
    let (ok, _, stderr) = copy(&cli, &url);
    assert!(!ok && stderr.contains("does not verify"), "{stderr}");
}
