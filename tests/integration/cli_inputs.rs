//! One `--input` syntax for every command (`host/src/cli/inputs.rs`): the real binary runs
//! `warden exec`, `warden process create` and `warden run start` with the same pairs, and the
//! probe's `echo` mode shows the typed values the task received.

use std::process::Command;

use serde_json::Value;
use warden_tests::guests;
use warden_tests::http::{Server, new_key};

use crate::cli::{BIN, Cli};

/// The same pairs every command takes: a string that looks like a number, an integer, a
/// comma-separated list with an escaped comma.
const PAIRS: [&str; 4] = ["mode=echo", "command=123", "n=7", r"targets=web-1,db\,2"];

/// What `echo` prints for [`PAIRS`] (the params' Debug forms, by name).
fn expected_echo(result: &Value) {
    assert_eq!(result["command"], r#"Value::Text("123")"#, "{result}");
    assert_eq!(result["n"], "Value::Integer(7)", "{result}");
    assert_eq!(
        result["targets"], r#"Value::TextList(["web-1", "db,2"])"#,
        "{result}"
    );
}

fn with_inputs<'a>(args: &[&'a str], pairs: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    for pair in pairs {
        all.extend(["--input", pair]);
    }
    all
}

/// `warden ARGS` against `server` as the admin; (exit code, stdout, stderr).
fn remote(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("WARDEN_SERVER", &server.base)
        .env("WARDEN_TOKEN", &server.admin)
        .env_remove("WARDEN_DATA")
        .output()
        .expect("warden runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON result in `warden exec`/`run start --wait` output (`result: {…}` or
/// `succeeded: {…}`).
fn result_json(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("result: ")
                .or_else(|| l.strip_prefix("succeeded: "))
        })
        .unwrap_or_else(|| panic!("no result in {stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn exec_types_inputs_by_the_manifest() {
    let cli = Cli::init();
    let probe = guests::component("probe").to_string_lossy().into_owned();
    let manifest = guests::manifest("probe").to_string_lossy().into_owned();
    let out = cli.ok(
        &with_inputs(&["exec", &probe, "--manifest", &manifest], &PAIRS),
        None,
    );
    expected_echo(&result_json(&out));
    // `--param` is the same flag, and a JSON array is a list too.
    let out = cli.ok(
        &[
            "exec",
            &probe,
            "--manifest",
            &manifest,
            "--param",
            "mode=echo",
            "--param",
            r#"targets=["a,b","c"]"#,
        ],
        None,
    );
    let result = result_json(&out);
    assert_eq!(
        result["targets"], r#"Value::TextList(["a,b", "c"])"#,
        "{result}"
    );
    // A bad value is refused before anything runs, naming the key.
    let (code, err) = cli.fails(&with_inputs(
        &["exec", &probe, "--manifest", &manifest],
        &["mode=echo", "n=seven"],
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--input 'n' must be an integer"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn process_create_and_run_start_take_the_same_syntax_as_exec() {
    let server = Server::start().await;
    let key = new_key();
    server.trust("ci", &key).await;
    let digest = server.publish("probe", &key).await;
    // The process's default inputs in the one syntax...
    let (code, out, err) = remote(
        &server,
        &with_inputs(
            &["process", "create", "echo-inputs", "--module", &digest],
            &PAIRS,
        ),
    );
    assert_eq!(code, 0, "{out}{err}");
    let r = server.get("/v1/processes", &server.admin).await;
    let process = r.body.as_array().and_then(|all| all.first()).cloned();
    let defaults = process.map(|p| p["default_inputs"].clone());
    assert_eq!(
        defaults,
        Some(
            serde_json::json!({"mode": "echo", "command": "123", "n": 7, "targets": ["web-1", "db,2"]})
        )
    );
    // ...and a run's inputs in it too, the run seeing the same typed values.
    let (code, out, err) = remote(
        &server,
        &with_inputs(&["run", "start", "echo-inputs", "--wait"], &PAIRS),
    );
    assert_eq!(code, 0, "{out}{err}");
    expected_echo(&result_json(&out));
    assert!(!err.contains("warning"), "{err}");

    // The deprecated JSON-quoted string still works, with a warning on stderr.
    let (code, out, err) = remote(
        &server,
        &[
            "run",
            "start",
            "echo-inputs",
            "--wait",
            "--input",
            r#"command="ls""#,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        result_json(&out)["command"],
        r#"Value::Text("ls")"#,
        "{out}"
    );
    assert!(err.contains("deprecated"), "{err}");

    // An undeclared input and a bad value: refused by the CLI, naming the key; no run.
    for (pair, want) in [
        ("nope=1", "'nope': unknown input"),
        ("n=many", "'n' must be an integer"),
    ] {
        let (code, out, err) = remote(&server, &["run", "start", "echo-inputs", "--input", pair]);
        assert_ne!(code, 0, "{pair}: {out}");
        assert!(err.contains(want), "{pair}: {err}");
    }
    let runs = server.get("/v1/runs", &server.admin).await;
    assert_eq!(runs.body.as_array().map(Vec::len), Some(2), "{}", runs.text);
}
