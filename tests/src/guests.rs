//! Builds the guest components once per test process and hands out their paths.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::repo_root;

/// The directory the guests are built into.
fn out_dir() -> PathBuf {
    repo_root().join("target/guests/wasm32-wasip2/release")
}

fn build(manifest: &str) -> Result<(), String> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(repo_root().join(manifest))
        .env("CARGO_TARGET_DIR", repo_root().join("target/guests"))
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building {manifest} failed: {status}"))
    }
}

/// Builds `guest-examples/` and `tests/fixtures/` (once) and returns the path of the
/// component named `name` (e.g. `hello`, `probe`).
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        build("guest-examples/Cargo.toml")?;
        build("tests/fixtures/Cargo.toml")
    });
    if let Err(e) = built {
        panic!("guest build failed (is the wasm32-wasip2 target installed?): {e}");
    }
    out_dir().join(format!("{}.wasm", name.replace('-', "_")))
}

/// The manifest (`warden.toml`) of a guest example or fixture.
pub fn manifest(name: &str) -> PathBuf {
    let example = repo_root()
        .join("guest-examples")
        .join(name)
        .join("warden.toml");
    if example.exists() {
        example
    } else {
        repo_root()
            .join("tests/fixtures")
            .join(name)
            .join("warden.toml")
    }
}

/// The Python or JavaScript example task (`"python"` or `"js"`) as built by `.ci/run`
/// (`guest-examples/{python,js}/build.sh`) into `target/guests/lang/`. These are not built
/// here: each needs its own tool (componentize-py, componentize-js) and ~10-30 s, so the
/// test run reuses the one build. Panics with what to run when the component is missing.
pub fn lang_component(lang: &str) -> PathBuf {
    let path = lang_dir().join(format!("user_report_{}.wasm", lang_suffix(lang)));
    if !path.exists() {
        panic!(
            "{} is missing: build it with `guest-examples/{lang}/build.sh` (needs the pinned \
             tools that .ci/run installs: componentize-py 0.25.1 in target/lang/venv, \
             componentize-js from sdk/js/package-lock.json)",
            path.display()
        );
    }
    path
}

/// The manifest of the Python or JavaScript example task.
pub fn lang_manifest(lang: &str) -> PathBuf {
    repo_root()
        .join("guest-examples")
        .join(lang)
        .join("warden.toml")
}

/// Where `.ci/run` builds the Python and JavaScript components.
pub fn lang_dir() -> PathBuf {
    repo_root().join("target/guests/lang")
}

/// The componentize-py that `.ci/run` installs (pinned), if present.
pub fn componentize_py() -> PathBuf {
    repo_root().join("target/lang/venv/bin/componentize-py")
}

/// The componentize-js that `.ci/run` installs (pinned by `sdk/js/package-lock.json`).
pub fn componentize_js() -> PathBuf {
    repo_root().join("sdk/js/node_modules/.bin/componentize-js")
}

fn lang_suffix(lang: &str) -> &str {
    match lang {
        "python" => "py",
        other => other,
    }
}
