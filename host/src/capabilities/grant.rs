//! The run's grant: which credentials, targets, commands and paths a run may use.
//!
//! Threat: a task (buggy or malicious) reaching credentials or machines its process was
//! not configured for. Every host call asks [`Grant::authorize`] — the single check that a
//! later policy engine plugs into — before it acts; a denial names the rule that refused.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// What one run may do. Empty sets allow nothing; there is no wildcard.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Grant {
    /// Credential names the run may acquire.
    pub credentials: BTreeSet<String>,
    /// Target names the run may act on.
    pub targets: BTreeSet<String>,
    /// Command patterns (`*` matches any run of characters). Empty: any command.
    pub commands: Vec<String>,
    /// Absolute path prefixes the run may transfer files under. Empty: no file transfer.
    pub paths: Vec<String>,
    /// Credential names the run may rotate (`credentials.rotate`), on granted targets and
    /// with a granted admin credential. Empty: no rotation.
    pub rotations: BTreeSet<String>,
    /// The floor for passwords those rotations generate; a task may only ask for more.
    pub rotation_policy: crate::rotation::RotationPolicy,
}

/// One thing a host call wants to do, as the grant sees it.
#[derive(Debug)]
pub enum Request<'a> {
    /// A call that touches no target or credential (inputs, logging, a handle's name).
    Interface,
    /// Acquire a credential handle.
    Acquire { credential: &'a str },
    /// Run a command on a target.
    Exec {
        target: &'a str,
        credential: &'a str,
        command: &'a str,
    },
    /// Move a file to or from a target. `path` is already normalised.
    Transfer {
        target: &'a str,
        credential: &'a str,
        path: &'a str,
    },
    /// Replace a credential's secret on a target, acting there as `admin`.
    Rotate {
        target: &'a str,
        credential: &'a str,
        admin: &'a str,
    },
}

/// Why a call was refused; `rule` names it for the guest and the audit log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {detail}")]
pub struct Denial {
    /// The rule that refused, e.g. `grant.credentials`, `limits` or `policy`.
    pub rule: &'static str,
    /// What was asked for.
    pub detail: String,
    /// The Cedar policies that refused, when a policy did (for the audit record).
    pub policy: Option<String>,
}

impl Request<'_> {
    /// (target, credential, command, path) named by the request, for policies and audit.
    pub fn parts(&self) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
        match *self {
            Request::Interface => (None, None, None, None),
            Request::Acquire { credential } => (None, Some(credential), None, None),
            Request::Exec {
                target,
                credential,
                command,
            } => (Some(target), Some(credential), Some(command), None),
            Request::Transfer {
                target,
                credential,
                path,
            } => (Some(target), Some(credential), None, Some(path)),
            Request::Rotate {
                target, credential, ..
            } => (Some(target), Some(credential), None, None),
        }
    }
}

impl Grant {
    /// Decides whether the run may make `request`.
    pub fn authorize(&self, request: &Request<'_>) -> Result<(), Denial> {
        match *request {
            Request::Interface => Ok(()),
            Request::Acquire { credential } => self.check_credential(credential),
            Request::Exec {
                target,
                credential,
                command,
            } => {
                self.check_credential(credential)?;
                self.check_target(target)?;
                self.check_command(command)
            }
            Request::Transfer {
                target,
                credential,
                path,
            } => {
                self.check_credential(credential)?;
                self.check_target(target)?;
                self.check_path(path)
            }
            Request::Rotate {
                target,
                credential,
                admin,
            } => {
                self.check_credential(credential)?;
                self.check_credential(admin)?;
                self.check_target(target)?;
                self.check_rotation(credential)
            }
        }
    }

    fn check_rotation(&self, name: &str) -> Result<(), Denial> {
        if self.rotations.contains(name) {
            return Ok(());
        }
        Err(Denial {
            rule: "grant.rotations",
            detail: format!("rotating credential '{name}' is not granted to this run"),
            policy: None,
        })
    }

    fn check_credential(&self, name: &str) -> Result<(), Denial> {
        if self.credentials.contains(name) {
            return Ok(());
        }
        Err(Denial {
            rule: "grant.credentials",
            detail: format!("credential '{name}' is not granted to this run"),
            policy: None,
        })
    }

    fn check_target(&self, name: &str) -> Result<(), Denial> {
        if self.targets.contains(name) {
            return Ok(());
        }
        Err(Denial {
            rule: "grant.targets",
            detail: format!("target '{name}' is not granted to this run"),
            policy: None,
        })
    }

    fn check_command(&self, command: &str) -> Result<(), Denial> {
        if self.commands.is_empty() || self.commands.iter().any(|p| glob_match(p, command)) {
            return Ok(());
        }
        Err(Denial {
            rule: "grant.commands",
            detail: "command matches none of the granted command patterns".to_string(),
            policy: None,
        })
    }

    fn check_path(&self, path: &str) -> Result<(), Denial> {
        if self.paths.iter().any(|prefix| path_under(path, prefix)) {
            return Ok(());
        }
        Err(Denial {
            rule: "grant.paths",
            detail: format!("path '{path}' is outside the granted path prefixes"),
            policy: None,
        })
    }
}

/// Normalises an absolute path lexically: collapses `//`, drops `.`, and resolves `..`
/// against the components before it (never above `/`). Returns `None` for a relative
/// path or one containing NUL. The normalised path is the one used on the target, so a
/// `..` can never take the operation outside the prefix the grant checked.
pub fn normalize_path(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// True when normalised `path` equals `prefix` or lies below it, on component boundaries
/// (`/var/log` allows `/var/log/syslog`, not `/var/logs`).
fn path_under(path: &str, prefix: &str) -> bool {
    let Some(prefix) = normalize_path(prefix) else {
        return false;
    };
    if prefix == "/" {
        return true;
    }
    path == prefix
        || path
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Matches `text` against `pattern`, where `*` matches any run of characters (including
/// none) and every other character matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            credentials: ["ops".to_string()].into(),
            targets: ["web-1".to_string()].into(),
            commands: vec!["apt list *".to_string(), "uptime".to_string()],
            paths: vec!["/var/log".to_string()],
            rotations: ["ops".to_string()].into(),
            ..Grant::default()
        }
    }

    #[test]
    fn rotation_needs_its_own_grant_and_a_granted_admin_and_target() {
        let rotate = |credential, target, admin| Request::Rotate {
            target,
            credential,
            admin,
        };
        assert!(grant().authorize(&rotate("ops", "web-1", "ops")).is_ok());
        let no_rotation = Grant {
            rotations: BTreeSet::new(),
            ..grant()
        };
        assert_eq!(
            no_rotation
                .authorize(&rotate("ops", "web-1", "ops"))
                .map_err(|d| d.rule),
            Err("grant.rotations")
        );
        let rule = |r| grant().authorize(&r).map_err(|d| d.rule);
        assert_eq!(rule(rotate("ops", "db-1", "ops")), Err("grant.targets"));
        assert_eq!(
            rule(rotate("ops", "web-1", "root")),
            Err("grant.credentials")
        );
    }

    #[test]
    fn denies_credential_outside_grant() {
        let d = grant().authorize(&Request::Acquire { credential: "root" });
        assert_eq!(d.map_err(|d| d.rule), Err("grant.credentials"));
        assert!(
            grant()
                .authorize(&Request::Acquire { credential: "ops" })
                .is_ok()
        );
    }

    #[test]
    fn denies_exec_on_target_outside_grant() {
        let r = Request::Exec {
            target: "db-1",
            credential: "ops",
            command: "uptime",
        };
        assert_eq!(
            grant().authorize(&r).map_err(|d| d.rule),
            Err("grant.targets")
        );
    }

    #[test]
    fn denies_command_matching_no_pattern() {
        let ok = Request::Exec {
            target: "web-1",
            credential: "ops",
            command: "apt list --upgradable",
        };
        assert!(grant().authorize(&ok).is_ok());
        let bad = Request::Exec {
            target: "web-1",
            credential: "ops",
            command: "rm -rf /",
        };
        assert_eq!(
            grant().authorize(&bad).map_err(|d| d.rule),
            Err("grant.commands")
        );
        let sneaky = Request::Exec {
            target: "web-1",
            credential: "ops",
            command: "uptime; id",
        };
        assert!(grant().authorize(&sneaky).is_err());
    }

    #[test]
    fn empty_command_list_allows_any_command() {
        let g = Grant {
            commands: vec![],
            ..grant()
        };
        let r = Request::Exec {
            target: "web-1",
            credential: "ops",
            command: "id",
        };
        assert!(g.authorize(&r).is_ok());
    }

    #[test]
    fn dotdot_never_escapes_the_granted_prefix() {
        let p = normalize_path("/var/log/../../etc/shadow").unwrap_or_default();
        assert_eq!(p, "/etc/shadow");
        let r = Request::Transfer {
            target: "web-1",
            credential: "ops",
            path: &p,
        };
        assert_eq!(
            grant().authorize(&r).map_err(|d| d.rule),
            Err("grant.paths")
        );
        assert_eq!(normalize_path("/../../etc").as_deref(), Some("/etc"));
    }

    #[test]
    fn path_prefix_matches_on_component_boundaries() {
        assert!(path_under("/var/log/syslog", "/var/log"));
        assert!(path_under("/var/log", "/var/log/"));
        assert!(!path_under("/var/logs/x", "/var/log"));
        assert!(normalize_path("relative/path").is_none());
        assert!(normalize_path("/a\0b").is_none());
    }

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("*.log", "x.log"));
        assert!(!glob_match("*.log", "x.logs"));
        assert!(glob_match("a**b", "ab"));
        assert!(!glob_match("abc", "abcd"));
    }
}
