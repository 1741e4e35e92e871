//! What the module's signed manifest narrowed its requests to: command patterns, path
//! prefixes and target tags under `[requests]`.
//!
//! Threat: a module that asks approvers for little (`commands = ["uptime"]`) and, once run
//! under a broad process grant, does much more. The effective permission of every host call
//! is manifest ∩ grant ∩ policy: the grant and the policies are checked in
//! [`super::HostContext::authorize`], and this scope is checked after them by the spine. An
//! empty list does not narrow (the manifest's `capabilities` list already says which
//! interfaces the module may use at all); a non-empty one must be matched by every call of
//! its kind.

use crate::registry::manifest::Requests;
use crate::targets::TargetStore;

use super::argv::{self, Pattern};
use super::grant::{self, CommandLine, Denial, Request};

/// The manifest's narrower requests, ready to check calls against.
#[derive(Clone, Debug, Default)]
pub struct ManifestScope {
    requests: Requests,
}

impl From<&Requests> for ManifestScope {
    fn from(requests: &Requests) -> Self {
        ManifestScope {
            requests: requests.clone(),
        }
    }
}

fn denial(detail: String) -> Denial {
    Denial {
        rule: "manifest.requests",
        detail,
        policy: None,
    }
}

impl ManifestScope {
    /// Whether the manifest's command patterns allow `line`. Shell text (a raw-shell grant)
    /// is within them only if it is plain words that they match, or if the manifest asked
    /// for any command (`**`, `sudo **`): a raw-shell grant widens what the grant allows,
    /// never what the module asked for.
    fn command_requested(&self, line: &CommandLine, sudo: bool) -> bool {
        let patterns = &self.requests.commands;
        match line {
            CommandLine::Argv(_) => grant::commands_allow(patterns, line, sudo),
            CommandLine::Raw(text) => match argv::split(text) {
                Ok(words) => grant::commands_allow(patterns, &CommandLine::Argv(words), sudo),
                Err(_) => patterns
                    .iter()
                    .filter_map(|p| Pattern::parse(p).ok())
                    .any(|p| p.allows_any(sudo)),
            },
        }
    }

    /// Refuses a call that goes beyond what the manifest requested.
    pub fn permits(&self, request: &Request<'_>, targets: &TargetStore) -> Result<(), Denial> {
        let (target, _, _, path) = request.parts();
        if let Request::Exec { line, sudo, .. } = request
            && !self.requests.commands.is_empty()
            && !self.command_requested(line, *sudo)
        {
            return Err(denial(
                "command matches none of the command patterns the module's manifest requests"
                    .into(),
            ));
        }
        if let Some(path) = path
            && !self.requests.paths.is_empty()
            && !self
                .requests
                .paths
                .iter()
                .any(|prefix| grant::path_under(path, prefix))
        {
            return Err(denial(format!(
                "path '{path}' is outside the path prefixes the module's manifest requests"
            )));
        }
        if let Some(target) = target
            && !self.requests.target_tags.is_empty()
        {
            let tags = match targets.get(target) {
                Ok(Some(t)) => t.tags,
                // An unknown target fails later with not-found; nothing to narrow here.
                Ok(None) => return Ok(()),
                Err(_) => return Err(denial("the target's tags could not be read".into())),
            };
            if !tags.iter().any(|t| self.requests.target_tags.contains(t)) {
                return Err(denial(format!(
                    "target '{target}' carries none of the tags the module's manifest requests"
                )));
            }
        }
        Ok(())
    }
}
