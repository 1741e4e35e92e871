//! The run's grant: which credentials, targets, commands and paths a run may use.
//!
//! Threat: a task (buggy or malicious) reaching credentials or machines its process was
//! not configured for, or running more than its command grant says. Every host call asks
//! [`Grant::authorize`] — the single check that a later policy engine plugs into — before it
//! acts; a denial names the rule that refused.
//!
//! Commands are granted as argv patterns ([`super::argv`]): the task's command is split into
//! words by the host, each word matched, and `sudo` is part of each pattern. An empty
//! `commands` list allows no command at all (fail safe: a process that forgot its patterns
//! cannot run anything); `**` allows any command without sudo and `sudo **` any command under
//! sudo. `raw_shell` is the explicit grant for trusted processes whose commands are shell
//! text: see [`Grant::raw_shell`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::argv::{self, Pattern};

/// What one run may do. Empty sets allow nothing; there is no wildcard.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Grant {
    /// Credential names the run may acquire.
    pub credentials: BTreeSet<String>,
    /// Target names the run may act on.
    pub targets: BTreeSet<String>,
    /// Command patterns as argv words ([`super::argv`] has the syntax); a leading `sudo`
    /// allows the command only under sudo, and only then. Empty: no command.
    pub commands: Vec<String>,
    /// Trusted processes only: the task's command is sent to the target as shell text, not
    /// split into words, so it can use pipes, redirections and substitutions — and so can do
    /// anything the account can. Without sudo any text is allowed; under sudo only if
    /// `commands` holds `sudo **` (a root shell is "any command as root").
    pub raw_shell: bool,
    /// Absolute path prefixes the run may transfer files under. Empty: no file transfer.
    pub paths: Vec<String>,
    /// Credential names the run may rotate (`credentials.rotate`), on granted targets and
    /// with a granted admin credential. Empty: no rotation.
    pub rotations: BTreeSet<String>,
    /// The floor for passwords those rotations generate; a task may only ask for more.
    #[schema(value_type = Object)]
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
        /// The command as the task wrote it (for policies and audit).
        command: &'a str,
        /// What the host will send: argv words, or shell text under a raw-shell grant.
        line: &'a CommandLine,
        /// Whether the call asks for sudo.
        sudo: bool,
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

/// A command as the host will send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandLine {
    /// Words split by the host; each is quoted on the wire.
    Argv(Vec<String>),
    /// Shell text, under a raw-shell grant.
    Raw(String),
}

impl CommandLine {
    /// The text a POSIX shell on the target runs.
    pub fn shell_text(&self) -> String {
        match self {
            CommandLine::Argv(words) => argv::quote_words(words),
            CommandLine::Raw(text) => text.clone(),
        }
    }
}

impl Request<'_> {
    /// Whether the request asks for sudo (for policies and audit).
    pub fn sudo(&self) -> bool {
        matches!(self, Request::Exec { sudo: true, .. })
    }

    /// (target, credential, command, path) named by the request, for policies and audit.
    pub fn parts(&self) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
        match *self {
            Request::Interface => (None, None, None, None),
            Request::Acquire { credential } => (None, Some(credential), None, None),
            Request::Exec {
                target,
                credential,
                command,
                ..
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
                line,
                sudo,
                ..
            } => {
                self.check_credential(credential)?;
                self.check_target(target)?;
                self.check_command(line, sudo)
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

    /// How the host will send `command` under this grant: shell text under a raw-shell
    /// grant, else argv words. A command that is not plain words is refused here, before any
    /// pattern is consulted, with the reason.
    pub fn command_line(&self, command: &str) -> Result<CommandLine, Denial> {
        if self.raw_shell {
            return Ok(CommandLine::Raw(command.to_string()));
        }
        argv::split(command)
            .map(CommandLine::Argv)
            .map_err(|e| Denial {
                rule: "grant.commands",
                detail: e.to_string(),
                policy: None,
            })
    }

    /// The command patterns that parse; a stored pattern that does not (written before
    /// patterns were argv words, with shell syntax in it) matches nothing.
    fn patterns(&self) -> impl Iterator<Item = Pattern> + '_ {
        self.commands.iter().filter_map(|p| Pattern::parse(p).ok())
    }

    fn check_command(&self, line: &CommandLine, sudo: bool) -> Result<(), Denial> {
        if commands_allow(&self.commands, line, sudo) {
            return Ok(());
        }
        let detail = match (line, sudo) {
            (CommandLine::Raw(_), _) => {
                "raw shell under sudo needs the pattern `sudo **` in the grant".to_string()
            }
            _ if self.commands.is_empty() => {
                "the grant allows no commands (its command list is empty)".to_string()
            }
            (_, true) => "command matches none of the granted sudo patterns \
                          (a pattern allows sudo only if it starts with `sudo`)"
                .to_string(),
            (_, false) => "command matches none of the granted command patterns".to_string(),
        };
        Err(Denial {
            rule: "grant.commands",
            detail,
            policy: None,
        })
    }

    /// Whether any pattern of this grant allows sudo.
    pub fn has_sudo_patterns(&self) -> bool {
        self.patterns().any(|p| p.sudo)
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

/// True when `patterns` (argv patterns, as in [`Grant::commands`]) allow `line` run under
/// sudo or not. Shell text (a raw-shell grant) matches no argv pattern: it is allowed without
/// sudo, and under sudo only by `sudo **`. Used for the grant and for the manifest's own
/// requested patterns alike.
pub(crate) fn commands_allow(patterns: &[String], line: &CommandLine, sudo: bool) -> bool {
    let mut parsed = patterns.iter().filter_map(|p| Pattern::parse(p).ok());
    match line {
        CommandLine::Raw(_) => !sudo || parsed.any(|p| p.allows_any_sudo()),
        CommandLine::Argv(words) => parsed.any(|p| p.matches(words, sudo)),
    }
}

/// True when normalised `path` equals `prefix` or lies below it, on component boundaries
/// (`/var/log` allows `/var/log/syslog`, not `/var/logs`).
pub(crate) fn path_under(path: &str, prefix: &str) -> bool {
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

#[cfg(test)]
#[path = "grant_tests.rs"]
mod tests;
