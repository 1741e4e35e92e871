//! `warden new` and `warden build`: start a task project in Rust, Python or JavaScript,
//! and turn it into a component.
//!
//! A project is a directory with the task's manifest (`warden.toml`), its code, and what
//! its language's build needs. `warden build` finds the language from the files present
//! (`Cargo.toml`, `app.py`, `app.js`), runs that language's own tool (cargo,
//! componentize-py, componentize-js) and leaves `NAME.wasm` next to the manifest, ready
//! for `warden sign` and `warden module push`.
//!
//! Python and JavaScript projects carry their own copy of the WIT contract (`wit/`) and of
//! the helper from `sdk/python` or `sdk/js`, so they build outside this repository. A Rust
//! project depends on the `warden-sdk` crate by path.
//!
//! Threat: a name that escapes the working directory (`../x`) or clobbers a project. Names
//! follow the manifest's rules (`[a-z0-9-]`), and an existing directory is never
//! overwritten. Build tools get arguments, never a shell line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use crate::registry::manifest::Manifest;

/// A task's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, built with cargo for wasm32-wasip2 against the `warden-sdk` crate.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
}

/// Arguments of `warden new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// The task's language.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// The task's name (`[a-z0-9-]`); also the project directory's name.
    pub name: String,
    /// Where to create the project directory (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Rust only: the path of the `warden-sdk` crate (default: the SDK of the source tree
    /// this `warden` was built from).
    #[arg(long, value_name = "DIR")]
    pub sdk: Option<PathBuf>,
}

/// Arguments of `warden build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The project directory.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// The WIT contract every project builds against.
const WIT: &str = include_str!("../../../sdk/wit/warden.wit");
const MANIFEST: &str = include_str!("templates/manifest.toml");

/// Memory the interpreted languages ask for in their manifest. Measured with
/// `cargo bench --bench languages`: the template task needs 16 MiB under CPython or
/// SpiderMonkey (4 MiB in Rust); the ask leaves headroom and stays below the default.
const INTERPRETER_MEMORY: &str =
    "\n[limits]\n# The template runs in 16 MiB; headroom for real work.\nmemory_mib = 64\n";

/// A Rust task imports only the interfaces its code uses.
const RUST_CAPABILITIES: &str = r#"capabilities = ["params", "log", "credentials", "ssh"]"#;
/// componentize-py and the JS helper link every interface of the world, so the manifest
/// must declare them all (the upload check refuses undeclared imports).
const INTERPRETER_CAPABILITIES: &str = "# The helper links every interface of the world.\n\
     capabilities = [\"params\", \"log\", \"credentials\", \"ssh\", \"transfer\"]";

const RUST_FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("templates/rust/lib.rs")),
    (".gitignore", "/target\n*.wasm\n"),
];

const PYTHON_FILES: &[(&str, &str)] = &[
    ("app.py", include_str!("templates/python/app.py")),
    ("wit/warden.wit", WIT),
    (
        "warden/__init__.py",
        include_str!("../../../sdk/python/warden/__init__.py"),
    ),
    (
        "warden/errors.py",
        include_str!("../../../sdk/python/warden/errors.py"),
    ),
    (
        "warden/params.py",
        include_str!("../../../sdk/python/warden/params.py"),
    ),
    (
        "warden/log.py",
        include_str!("../../../sdk/python/warden/log.py"),
    ),
    (
        "warden/credentials.py",
        include_str!("../../../sdk/python/warden/credentials.py"),
    ),
    (
        "warden/ssh.py",
        include_str!("../../../sdk/python/warden/ssh.py"),
    ),
    (
        "warden/transfer.py",
        include_str!("../../../sdk/python/warden/transfer.py"),
    ),
    (".gitignore", "*.wasm\n__pycache__/\n"),
];

const JS_FILES: &[(&str, &str)] = &[
    ("app.js", include_str!("templates/js/app.js")),
    ("package.json", include_str!("templates/js/package.json")),
    ("warden.js", include_str!("../../../sdk/js/warden.js")),
    ("wit/warden.wit", WIT),
    (".gitignore", "*.wasm\nnode_modules/\n"),
];

/// `warden new`: writes a ready-to-build project and says how to build it.
pub fn new(args: NewArgs) -> anyhow::Result<i32> {
    let project = args.dir.join(&args.name);
    let limits = if args.lang == Lang::Rust {
        ""
    } else {
        INTERPRETER_MEMORY
    };
    let capabilities = if args.lang == Lang::Rust {
        RUST_CAPABILITIES
    } else {
        INTERPRETER_CAPABILITIES
    };
    let manifest = fill(MANIFEST, &args.name, "")
        .replace("{{capabilities}}", capabilities)
        .replace("{{limits}}", limits);
    // Refuses a bad name before anything touches the disk.
    Manifest::parse(&manifest).context("the task name must be 1-64 of [a-z0-9-]")?;
    if project.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; refusing to overwrite it",
            project.display()
        );
    }
    let (files, sdk) = match args.lang {
        Lang::Rust => (RUST_FILES, rust_sdk_path(args.sdk)?),
        Lang::Python => (PYTHON_FILES, String::new()),
        Lang::Js => (JS_FILES, String::new()),
    };
    fs::create_dir_all(&project).with_context(|| project.display().to_string())?;
    write(&project.join("warden.toml"), &manifest)?;
    for (path, text) in files {
        write(&project.join(path), &fill(text, &args.name, &sdk))?;
    }
    println!("created {} ({:?} task)", project.display(), args.lang);
    if args.lang == Lang::Js {
        println!(
            "next: cd {} && npm install && warden build",
            project.display()
        );
    } else {
        println!("next: cd {} && warden build", project.display());
    }
    Ok(0)
}

/// `warden build`: builds the project's component into `NAME.wasm`.
pub fn build(args: BuildArgs) -> anyhow::Result<i32> {
    let dir = &args.dir;
    let manifest_path = dir.join("warden.toml");
    let text = fs::read_to_string(&manifest_path)
        .with_context(|| format!("{} (is this a task project?)", manifest_path.display()))?;
    let manifest = Manifest::parse(&text).context(manifest_path.display().to_string())?;
    let out = dir.join(format!("{}.wasm", manifest.name));
    match detect(dir)? {
        Lang::Rust => build_rust(dir, &out)?,
        Lang::Python => {
            let tool = tool("WARDEN_COMPONENTIZE_PY", "componentize-py", None);
            let mut cmd = Command::new(tool);
            cmd.args([
                "-d",
                "wit",
                "-w",
                "task",
                "componentize",
                "-p",
                ".",
                "app",
                "-o",
            ])
            .arg(format!("{}.wasm", manifest.name));
            run(
                cmd.current_dir(dir),
                "componentize-py (pip install componentize-py==0.25.1)",
            )?;
        }
        Lang::Js => {
            let local = dir.join("node_modules/.bin/componentize-js");
            let tool = tool("WARDEN_COMPONENTIZE_JS", "componentize-js", Some(&local));
            let mut cmd = Command::new(tool);
            cmd.args(["--wit", "wit", "--world-name", "task", "-d"])
                .args(["stdio", "random", "clocks", "http", "fetch-event", "-o"])
                .arg(format!("{}.wasm", manifest.name))
                .arg("app.js");
            run(cmd.current_dir(dir), "componentize-js (npm install)")?;
        }
    }
    let size = fs::metadata(&out)
        .with_context(|| format!("the build left no {}", out.display()))?
        .len();
    println!("built {} ({size} bytes)", out.display());
    println!(
        "next: warden sign --key KEY --manifest {} {} -o {}.signed.wasm",
        manifest_path.display(),
        out.display(),
        manifest.name
    );
    Ok(0)
}

fn fill(template: &str, name: &str, sdk: &str) -> String {
    template.replace("{{name}}", name).replace("{{sdk}}", sdk)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, text).with_context(|| path.display().to_string())
}

/// The `warden-sdk` crate a Rust project depends on, as an absolute path.
fn rust_sdk_path(given: Option<PathBuf>) -> anyhow::Result<String> {
    let path = given.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"));
    let path = path
        .canonicalize()
        .with_context(|| format!("warden-sdk not found at {}; pass --sdk DIR", path.display()))?;
    if !path.join("Cargo.toml").exists() {
        bail!(
            "{} is not the warden-sdk crate; pass --sdk DIR",
            path.display()
        );
    }
    Ok(path.to_string_lossy().into_owned())
}

/// The project's language, from the files in it.
fn detect(dir: &Path) -> anyhow::Result<Lang> {
    let found: Vec<Lang> = [
        ("Cargo.toml", Lang::Rust),
        ("app.py", Lang::Python),
        ("app.js", Lang::Js),
    ]
    .into_iter()
    .filter(|(file, _)| dir.join(file).exists())
    .map(|(_, lang)| lang)
    .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => bail!("{}: no Cargo.toml, app.py or app.js", dir.display()),
        _ => bail!(
            "{}: more than one of Cargo.toml, app.py, app.js",
            dir.display()
        ),
    }
}

/// A build tool: `$ENV` if set, else `local` if it exists, else `name` on the PATH.
fn tool(env: &str, name: &str, local: Option<&Path>) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return path.into();
    }
    match local {
        Some(path) if path.exists() => path.to_path_buf(),
        _ => name.into(),
    }
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {what}"))?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(())
}

/// `cargo build` for wasm32-wasip2; copies the component cargo reports to `out`.
fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(dir)
        .stderr(Stdio::inherit())
        .output()
        .context("could not start cargo")?;
    if !output.status.success() {
        bail!("cargo build failed: {}", output.status);
    }
    let wasm = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .flat_map(|msg| {
            msg["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
        .context("cargo built no .wasm (is the crate a cdylib?)")?;
    fs::copy(&wasm, out).with_context(|| format!("copying {}", wasm.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_names_and_existing_directories() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        for bad in ["../escape", "Bad", "a/b", ""] {
            let args = NewArgs {
                lang: Lang::Python,
                name: bad.into(),
                dir: tmp.path().into(),
                sdk: None,
            };
            assert!(new(args).is_err(), "{bad:?} accepted");
        }
        assert_eq!(fs::read_dir(tmp.path())?.count(), 0, "nothing written");
        let args = |name: &str| NewArgs {
            lang: Lang::Js,
            name: name.into(),
            dir: tmp.path().into(),
            sdk: None,
        };
        new(args("twice"))?;
        let err = new(args("twice")).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("already exists")));
        Ok(())
    }

    #[test]
    fn project_files_decide_the_language() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        assert!(detect(tmp.path()).is_err());
        fs::write(tmp.path().join("app.py"), "")?;
        assert_eq!(detect(tmp.path())?, Lang::Python);
        fs::write(tmp.path().join("app.js"), "")?;
        assert!(detect(tmp.path()).is_err());
        Ok(())
    }

    #[test]
    fn templates_make_valid_manifests_with_memory_asks_for_interpreters() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        for (lang, name) in [(Lang::Python, "py-task"), (Lang::Rust, "rs-task")] {
            new(NewArgs {
                lang,
                name: name.into(),
                dir: tmp.path().into(),
                sdk: None,
            })?;
            let text = fs::read_to_string(tmp.path().join(name).join("warden.toml"))?;
            let manifest = Manifest::parse(&text)?;
            assert_eq!(manifest.name, name);
            let ask = manifest.limits.memory_mib;
            assert_eq!(ask.is_some(), lang != Lang::Rust, "{text}");
        }
        Ok(())
    }
}
