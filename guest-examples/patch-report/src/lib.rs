//! `patch-report`: lists the package updates pending on each target, read-only.
//!
//! One portable shell script runs on every target at once (`ssh::exec_many`). It picks the
//! package manager it finds (apt, then dnf, then yum), prints a `#warden-pm` marker naming
//! it, the manager's own listing, then a `#warden-rc` marker with the manager's exit status;
//! the task parses that here, so each manager's quirks live in one readable place. Nothing
//! is installed and the package cache is not refreshed (no sudo needed): the report reflects
//! the target's last metadata refresh.

use serde_json::json;
use warden_sdk::ssh::{ExecOptions, ExecOutput};
use warden_sdk::{Task, credentials, export_task, log, params, ssh};

/// The script every target runs. `$?` after `fi` is the status of the branch's last
/// command, i.e. the package manager's. `LC_ALL=C` keeps the output parseable.
const LIST_UPDATES: &str = "\
if command -v apt-get >/dev/null 2>&1 && command -v apt >/dev/null 2>&1; then
  echo '#warden-pm apt'
  LC_ALL=C apt list --upgradable
elif command -v dnf >/dev/null 2>&1; then
  echo '#warden-pm dnf'
  LC_ALL=C dnf -q check-update
elif command -v yum >/dev/null 2>&1; then
  echo '#warden-pm yum'
  LC_ALL=C yum -q check-update
else
  echo '#warden-pm none'
  true
fi
echo \"#warden-rc $?\"
";

/// dnf/yum may refresh metadata first, which can be slow; the host caps this anyway.
const TIMEOUT_MS: u32 = 300_000;

/// Longest stderr excerpt quoted in a per-target error.
const MAX_EXCERPT: usize = 300;

struct PatchReport;

impl Task for PatchReport {
    fn run() -> Result<String, String> {
        let targets = params::text_list("targets").unwrap_or_default();
        if targets.is_empty() || targets.iter().any(|t| t.trim().is_empty()) {
            return Err("input `targets` must list at least one non-empty target".to_string());
        }
        let credential_name = params::text("credential").unwrap_or_default();
        if credential_name.trim().is_empty() {
            return Err("input `credential` is required".to_string());
        }
        let credential = credentials::acquire(&credential_name).map_err(|e| format!("{e}"))?;
        log::info(&format!(
            "listing pending updates on {} target(s)",
            targets.len()
        ));
        let options = ExecOptions::default().with_timeout_ms(TIMEOUT_MS);
        let results = ssh::exec_many(&targets, &credential, LIST_UPDATES, options);

        let mut entries = Vec::with_capacity(results.len());
        let (mut total, mut failed) = (0usize, 0usize);
        for result in results {
            match result
                .outcome
                .map_err(|e| format!("{e}"))
                .and_then(|out| parse_output(&out))
            {
                Ok(updates) => {
                    total += updates.packages.len();
                    entries.push(json!({
                        "target": result.target,
                        "manager": updates.manager,
                        "pending": updates.packages.len(),
                        "packages": updates.packages,
                    }));
                }
                Err(error) => {
                    failed += 1;
                    log::warn(&format!("{}: {error}", result.target));
                    entries.push(json!({ "target": result.target, "error": error }));
                }
            }
        }
        log::info(&format!(
            "{} target(s) checked, {failed} failed, {total} pending update(s) in total",
            entries.len()
        ));
        Ok(json!({ "targets": entries, "total_pending": total }).to_string())
    }
}

export_task!(PatchReport);

/// What one target reported.
#[derive(Debug, PartialEq)]
struct Updates {
    manager: String,
    packages: Vec<String>,
}

/// Turns the script's output into the list of pending packages, or the reason it failed.
fn parse_output(out: &ExecOutput) -> Result<Updates, String> {
    if out.exit_status != Some(0) {
        let how = match (&out.exit_status, &out.exit_signal) {
            (Some(code), _) => format!("status {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "no status".to_string(),
        };
        return Err(format!(
            "listing script ended with {how}: {}",
            excerpt(&out.stderr_text())
        ));
    }
    if out.stdout_truncated {
        return Err("the package list exceeded the host's output cap".to_string());
    }
    parse_listing(&out.stdout_text(), &out.stderr_text())
}

/// Parses the marker-delimited listing the script printed.
fn parse_listing(stdout: &str, stderr: &str) -> Result<Updates, String> {
    let mut manager = None;
    let mut status = None;
    let mut body = Vec::new();
    for line in stdout.lines() {
        if let Some(pm) = line.strip_prefix("#warden-pm ") {
            manager = Some(pm.trim().to_string());
        } else if let Some(rc) = line.strip_prefix("#warden-rc ") {
            status = rc.trim().parse::<i32>().ok();
        } else {
            body.push(line);
        }
    }
    let manager = manager.ok_or("the listing script printed no package-manager marker")?;
    let status = status.ok_or("the listing script printed no exit status")?;
    let packages = match (manager.as_str(), status) {
        ("none", _) => return Err("no supported package manager (apt, dnf, yum)".to_string()),
        ("apt", 0) => parse_apt(&body),
        // check-update exits 100 when updates are pending, 0 when there are none.
        ("dnf" | "yum", 0 | 100) => parse_rpm(&body),
        (_, code) => {
            return Err(format!(
                "{manager} exited with status {code}: {}",
                excerpt(stderr)
            ));
        }
    };
    Ok(Updates { manager, packages })
}

/// `apt list --upgradable` lines look like
/// `bash/jammy-updates 5.1-6ubuntu1.1 amd64 [upgradable from: 5.1-6ubuntu1]`.
fn parse_apt(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line.contains("[upgradable from:"))
        .filter_map(|line| line.split('/').next())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// `check-update` lines look like `openssl-libs.x86_64  1:3.0.7-27.el9  baseos`. yum wraps
/// a long name onto its own line, with version and repository on the next; the
/// "Obsoleting Packages" section repeats packages already listed, so parsing stops there.
fn parse_rpm(lines: &[&str]) -> Vec<String> {
    let mut packages = Vec::new();
    let mut wrapped: Option<&str> = None;
    for line in lines {
        if line.starts_with("Obsoleting Packages") {
            break;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Every real entry names `name.arch`; that dot also rules out stray chatter such
        // as "Loaded plugins: fastestmirror".
        let name_arch = match (fields.as_slice(), wrapped.take()) {
            ([_version, _repo], Some(name)) => Some(name),
            ([name, _version, _repo], _) if name.contains('.') => Some(*name),
            ([name], _) if name.contains('.') => {
                wrapped = Some(*name);
                None
            }
            _ => None,
        };
        if let Some(name_arch) = name_arch {
            let name = name_arch
                .rsplit_once('.')
                .map_or(name_arch, |(name, _arch)| name);
            packages.push(name.to_string());
        }
    }
    packages
}

/// A short, single-line quote of a command's stderr, without apt's CLI-stability warning.
fn excerpt(stderr: &str) -> String {
    let text: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("WARNING: apt does not have a stable CLI"))
        .collect();
    let joined = if text.is_empty() {
        "(no stderr)".to_string()
    } else {
        text.join(" | ")
    };
    joined.chars().take(MAX_EXCERPT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(manager: &str, body: &str, rc: i32) -> String {
        format!("#warden-pm {manager}\n{body}#warden-rc {rc}\n")
    }

    #[test]
    fn parses_apt_upgradable_names_and_skips_header() {
        let body = "Listing...\n\
            bash/jammy-updates 5.1-6ubuntu1.1 amd64 [upgradable from: 5.1-6ubuntu1]\n\
            libssl3/jammy-security,now 3.0.2-0ubuntu1.15 amd64 [upgradable from: 3.0.2]\n";
        let updates = parse_listing(&listing("apt", body, 0), "").unwrap();
        assert_eq!(updates.manager, "apt");
        assert_eq!(updates.packages, ["bash", "libssl3"]);
    }

    #[test]
    fn apt_with_nothing_pending_reports_zero() {
        let updates = parse_listing(&listing("apt", "Listing...\n", 0), "").unwrap();
        assert!(updates.packages.is_empty());
    }

    #[test]
    fn dnf_status_100_means_updates_and_strips_arch() {
        let body =
            "\nopenssl-libs.x86_64  1:3.0.7-27.el9  baseos\npython3.11.noarch 3.11.7-1 appstream\n";
        let updates = parse_listing(&listing("dnf", body, 100), "").unwrap();
        assert_eq!(updates.packages, ["openssl-libs", "python3.11"]);
    }

    #[test]
    fn dnf_status_zero_means_nothing_pending() {
        let updates = parse_listing(&listing("dnf", "", 0), "").unwrap();
        assert_eq!(
            updates,
            Updates {
                manager: "dnf".into(),
                packages: vec![]
            }
        );
    }

    #[test]
    fn yum_status_one_is_an_error_quoting_stderr() {
        let err = parse_listing(
            &listing("yum", "", 1),
            "Error: Cannot find a valid baseurl\n",
        )
        .unwrap_err();
        assert!(
            err.contains("status 1") && err.contains("Cannot find a valid baseurl"),
            "{err}"
        );
    }

    #[test]
    fn yum_wrapped_long_names_are_joined_and_obsoletes_ignored() {
        let body = "a-very-long-package-name-indeed.x86_64\n        2.0-1.el7   updates\n\
            Loaded plugins: fastestmirror\nkernel.x86_64 3.10.0-1160 updates\nObsoleting Packages\n\
            grub2.x86_64 1:2.02 updates\n    grub2.x86_64 1:2.01 @base\n";
        let updates = parse_listing(&listing("yum", body, 100), "").unwrap();
        assert_eq!(
            updates.packages,
            ["a-very-long-package-name-indeed", "kernel"]
        );
    }

    #[test]
    fn missing_package_manager_is_an_error() {
        let err = parse_listing("#warden-pm none\n#warden-rc 0\n", "").unwrap_err();
        assert!(err.contains("no supported package manager"), "{err}");
    }

    #[test]
    fn apt_failure_is_an_error_without_the_cli_warning() {
        let stderr = "WARNING: apt does not have a stable CLI interface.\nE: boom\n";
        let err = parse_listing(&listing("apt", "", 100), stderr).unwrap_err();
        assert!(err.contains("E: boom") && !err.contains("WARNING"), "{err}");
    }

    #[test]
    fn output_without_markers_is_an_error() {
        assert!(parse_listing("bash/jammy 1 amd64 [upgradable from: 0]\n", "").is_err());
        assert!(parse_listing("#warden-pm apt\n", "").is_err());
    }

    #[test]
    fn nonzero_script_status_and_truncation_are_errors() {
        let mut out = ExecOutput {
            exit_status: Some(127),
            exit_signal: None,
            stdout: listing("apt", "", 0).into_bytes(),
            stderr: b"sh: 1: syntax error\n".to_vec(),
            stdout_truncated: false,
            stderr_truncated: false,
        };
        assert!(parse_output(&out).unwrap_err().contains("status 127"));
        out.exit_status = None;
        out.exit_signal = Some("KILL".into());
        assert!(parse_output(&out).unwrap_err().contains("signal KILL"));
        out.exit_status = Some(0);
        out.stdout_truncated = true;
        assert!(parse_output(&out).unwrap_err().contains("output cap"));
        out.stdout_truncated = false;
        assert_eq!(parse_output(&out).unwrap().manager, "apt");
    }
}
