//! Where the policy set comes from: the set built into the binary (the repository's
//! `policies/` at build time) or a directory an administrator keeps, and the digest that
//! names exactly which set is in force.
//!
//! Threat: a server that quietly runs a policy set other than the one the operator meant
//! (an installed binary picking up whatever `policies/` sits in its working directory, or a
//! directory edited after review). The built-in set is used unless a directory is named
//! explicitly; the server logs which set it loaded with a SHA-256 digest over every file's
//! name and content, so a reviewer can compare it with `warden policies export` of a known
//! binary. The digest is the same for the built-in set and for a faithful export of it.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::PolicyError;
use super::load::SCHEMA_FILE;

/// The shipped schema and policies, compiled in: `(file name, content)`, schema first.
pub const BUILTIN_FILES: [(&str, &str); 7] = [
    (
        SCHEMA_FILE,
        include_str!("../../../policies/schema.cedarschema"),
    ),
    (
        "custom-roles.cedar",
        include_str!("../../../policies/custom-roles.cedar"),
    ),
    (
        "host-calls.cedar",
        include_str!("../../../policies/host-calls.cedar"),
    ),
    (
        "ordinary-users.cedar",
        include_str!("../../../policies/ordinary-users.cedar"),
    ),
    (
        "password-auditor.cedar",
        include_str!("../../../policies/password-auditor.cedar"),
    ),
    (
        "privileged-administrator.cedar",
        include_str!("../../../policies/privileged-administrator.cedar"),
    ),
    (
        "super-administrator.cedar",
        include_str!("../../../policies/super-administrator.cedar"),
    ),
];

/// The policies' README, exported beside them as a starting point for an administrator.
pub const BUILTIN_README: &str = include_str!("../../../policies/README.md");

/// Label used instead of a directory in messages about the built-in set.
const BUILTIN_LABEL: &str = "<built-in>";

/// Where a policy set is loaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicySource {
    /// The set compiled into this binary.
    Builtin,
    /// A directory with `schema.cedarschema` and `*.cedar` files.
    Dir(PathBuf),
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySource::Builtin => f.write_str("the built-in policy set"),
            PolicySource::Dir(dir) => write!(f, "directory {}", dir.display()),
        }
    }
}

impl From<&Path> for PolicySource {
    fn from(dir: &Path) -> Self {
        PolicySource::Dir(dir.to_path_buf())
    }
}

impl From<&PathBuf> for PolicySource {
    fn from(dir: &PathBuf) -> Self {
        PolicySource::Dir(dir.clone())
    }
}

impl From<PathBuf> for PolicySource {
    fn from(dir: PathBuf) -> Self {
        PolicySource::Dir(dir)
    }
}

impl From<Option<PathBuf>> for PolicySource {
    /// A directory when one is given, else the built-in set.
    fn from(dir: Option<PathBuf>) -> Self {
        dir.map_or(PolicySource::Builtin, PolicySource::Dir)
    }
}

/// The texts of one policy set, read whole, before parsing.
pub(super) struct Texts {
    /// The schema file (its path, for messages) and content.
    pub(super) schema: (PathBuf, String),
    /// Every `*.cedar` file, sorted by name.
    pub(super) policies: Vec<(PathBuf, String)>,
}

impl Texts {
    /// The built-in set.
    pub(super) fn builtin() -> Texts {
        let label = Path::new(BUILTIN_LABEL);
        let mut files = BUILTIN_FILES
            .iter()
            .map(|(name, text)| (label.join(name), (*text).to_string()));
        let schema = files
            .next()
            .unwrap_or_else(|| (label.join(SCHEMA_FILE), String::new()));
        Texts {
            schema,
            policies: files.collect(),
        }
    }

    /// SHA-256 over each file's name (without its directory) and content, schema first,
    /// then the policies in name order; each field is length-prefixed so no two sets share
    /// a digest by shifting bytes between names and contents.
    pub(super) fn digest(&self) -> String {
        let mut hash = Sha256::new();
        for (path, text) in std::iter::once(&self.schema).chain(&self.policies) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            for field in [name.as_bytes(), text.as_bytes()] {
                hash.update((field.len() as u64).to_le_bytes());
                hash.update(field);
            }
        }
        hex::encode(hash.finalize())
    }
}

/// Writes the built-in set (and its README) into `dir`, creating it. Refuses to overwrite
/// an existing file, so an administrator's edited policies are never clobbered.
pub fn export_builtin(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let write_error = |file: &Path| {
        let file = file.to_path_buf();
        move |source| PolicyError::Write { file, source }
    };
    std::fs::create_dir_all(dir).map_err(write_error(dir))?;
    let files = BUILTIN_FILES
        .iter()
        .copied()
        .chain(std::iter::once(("README.md", BUILTIN_README)));
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(write_error(&path))?;
        file.write_all(text.as_bytes())
            .map_err(write_error(&path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the repository's `policies/` is compiled in, and nothing else: a policy
    /// added there but not to [`BUILTIN_FILES`] would be missing from every installed server.
    #[test]
    fn the_built_in_set_is_exactly_the_repository_policies() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cedar") || n == SCHEMA_FILE)
            .collect();
        on_disk.sort();
        let mut built_in: Vec<String> = BUILTIN_FILES.iter().map(|(n, _)| n.to_string()).collect();
        built_in.sort();
        assert_eq!(on_disk, built_in);
        for (name, text) in BUILTIN_FILES {
            assert_eq!(
                std::fs::read_to_string(dir.join(name)).unwrap(),
                text,
                "{name}"
            );
        }
        assert_eq!(BUILTIN_FILES[0].0, SCHEMA_FILE, "the schema comes first");
    }

    /// The built-in set loads, and its digest equals that of the same files in a directory.
    #[test]
    fn the_digest_is_the_same_for_the_built_in_set_and_its_export() {
        let builtin = super::super::PolicyEngine::load_from(PolicySource::Builtin).unwrap();
        let tmp = tempfile::TempDir::new().unwrap();
        export_builtin(tmp.path()).unwrap();
        let exported = super::super::PolicyEngine::load(tmp.path()).unwrap();
        assert_eq!(builtin.digest(), exported.digest());
        assert_eq!(builtin.policy_ids(), exported.policy_ids());
        std::fs::write(
            tmp.path().join("zz.cedar"),
            "@id(\"extra\")\nforbid(principal, action, resource);\n",
        )
        .unwrap();
        let edited = super::super::PolicyEngine::load(tmp.path()).unwrap();
        assert_ne!(builtin.digest(), edited.digest());
    }
}
