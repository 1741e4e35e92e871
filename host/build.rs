//! Sets `WARDEN_COMMIT` (what `warden --version` names) to the commit being built:
//! `WARDEN_COMMIT` from the environment when set (a packager building from a tarball),
//! else `git rev-parse --short=12 HEAD`, else `unknown` (no git, or not a checkout).

use std::path::PathBuf;
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
    // commit), loose or packed. Paths from git itself, so worktrees work too. Only paths that
    // exist: cargo takes a missing one as changed, which would rebuild the crate every time;
    // a ref not written loose yet is watched through its folder.
    let reference = git(&["symbolic-ref", "-q", "HEAD"]);
    let path_of = |name: &str| {
        git(&["rev-parse", "--path-format=absolute", "--git-path", name]).map(PathBuf::from)
    };
    let mut watched: Vec<PathBuf> = ["HEAD", "packed-refs"]
        .into_iter()
        .filter_map(path_of)
        .filter(|p| p.exists())
        .collect();
    if let Some(file) = reference.as_deref().and_then(path_of) {
        if file.exists() {
            watched.push(file);
        } else {
            watched.extend(file.parent().filter(|d| d.exists()).map(PathBuf::from));
        }
    }
    for path in watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=WARDEN_COMMIT={commit}");
}
