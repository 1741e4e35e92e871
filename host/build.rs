//! Sets `WARDEN_COMMIT` (what `warden --version` names) to the commit being built:
//! `WARDEN_COMMIT` from the environment when set (a packager building from a tarball),
//! else `git rev-parse --short=12 HEAD`, else `unknown` (no git, or not a checkout).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=WARDEN_COMMIT");
    let commit = std::env::var("WARDEN_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves: the HEAD file (a branch switch) and the ref it points to (a
    // commit). Paths from git itself, so worktrees work too.
    for path in ["HEAD", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--path-format=absolute", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let reference = git(&["symbolic-ref", "-q", "HEAD"]);
    let ref_file =
        reference.and_then(|r| git(&["rev-parse", "--path-format=absolute", "--git-path", &r]));
    if let Some(file) = ref_file {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rustc-env=WARDEN_COMMIT={commit}");
}
