//! Loading the policy directory: the schema, then every `*.cedar` file in name order.
//!
//! Threat: a policy that looks right but never matches (a misspelt attribute or action) or
//! that cannot be told apart from another in an audit record. Each policy must carry a
//! unique, well-formed `@id` that becomes its Cedar policy id, and the whole set must pass
//! strict validation against the schema; otherwise nothing loads and the error names the
//! file (and the policy).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};

use super::request::Names;
use super::source::{PolicySource, Texts};
use super::{DEFAULT_DENY, INVALID_REQUEST, OVERSIZE_HOST_CALL, PolicyError};

/// Name of the schema file inside the policy directory.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// Cap on one policy or schema file, in bytes. The files are read whole at start and at
/// every reload; the cap stops a stray huge file (or a link to a device) from exhausting
/// memory and stalling a reload.
pub const MAX_POLICY_FILE_BYTES: u64 = 1024 * 1024;

/// Cap on the number of `*.cedar` files, for the same reason as [`MAX_POLICY_FILE_BYTES`].
pub const MAX_POLICY_FILES: usize = 256;

/// Cap on an `@id`, in bytes: it is written into audit records, whose identifier fields are
/// capped at 256 bytes, and a joined list of ids must stay readable there.
pub const MAX_POLICY_ID_BYTES: usize = 64;

/// A schema and a validated policy set, ready to answer requests.
pub(super) struct Loaded {
    pub(super) schema: Schema,
    /// Every policy: for listing and for looking a policy up by id.
    pub(super) policies: PolicySet,
    /// The policies that may apply to an API operation.
    pub(super) operations: PolicySet,
    /// The policies that may apply to a host call. Cedar evaluates every policy in the set
    /// it is given, so the hot path gets only these (a third of the cost of the full set).
    pub(super) host_calls: PolicySet,
    pub(super) names: Names,
    /// SHA-256 of the files the set was loaded from (see [`Texts::digest`]).
    pub(super) digest: String,
}

impl Loaded {
    /// Reads, parses and validates the set `source` names.
    pub(super) fn from_source(source: &PolicySource) -> Result<Self, PolicyError> {
        let texts = match source {
            PolicySource::Builtin => Texts::builtin(),
            PolicySource::Dir(dir) => read_dir_texts(dir)?,
        };
        Self::from_texts(&texts)
    }

    /// Parses and validates a set already read.
    fn from_texts(texts: &Texts) -> Result<Self, PolicyError> {
        let (schema_file, schema_text) = &texts.schema;
        let schema = load_schema(schema_file, schema_text)?;
        let mut policies = PolicySet::new();
        let mut origin: HashMap<String, PathBuf> = HashMap::new();
        for (file, text) in &texts.policies {
            add_file(&mut policies, &mut origin, file, text)?;
        }
        validate(&schema, &policies, &origin)?;
        let schema_error = |message| PolicyError::Schema {
            file: schema_file.clone(),
            message,
            at: String::new(),
        };
        let names = Names::new(&schema).map_err(schema_error)?;
        names.check_host_call_shape(&schema).map_err(schema_error)?;
        let (operations, host_calls) = names
            .partition(&policies)
            .map_err(|message| PolicyError::Index { message })?;
        Ok(Loaded {
            schema,
            policies,
            operations,
            host_calls,
            names,
            digest: texts.digest(),
        })
    }

    pub(super) fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .policies
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        ids
    }
}

/// The files of the set `source` names, as (file name, text), the schema first: what a remote
/// bridge loads the same set from.
pub(super) fn source_files(source: &PolicySource) -> Result<Vec<(String, String)>, PolicyError> {
    let texts = match source {
        PolicySource::Builtin => Texts::builtin(),
        PolicySource::Dir(dir) => read_dir_texts(dir)?,
    };
    Ok(std::iter::once(texts.schema)
        .chain(texts.policies)
        .map(|(path, text)| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, text)
        })
        .collect())
}

/// Reads the schema and every `*.cedar` file of `dir`, each capped.
fn read_dir_texts(dir: &Path) -> Result<Texts, PolicyError> {
    let schema_file = dir.join(SCHEMA_FILE);
    let schema = read_capped(&schema_file)?;
    let mut policies = Vec::new();
    for file in policy_files(dir)? {
        let text = read_capped(&file)?;
        policies.push((file, text));
    }
    Ok(Texts {
        schema: (schema_file, schema),
        policies,
    })
}

fn load_schema(file: &Path, text: &str) -> Result<Schema, PolicyError> {
    let (schema, warnings) =
        Schema::from_cedarschema_str(text).map_err(|e| PolicyError::Schema {
            file: file.to_path_buf(),
            message: e.to_string(),
            at: Position::describe(&e, text),
        })?;
    for warning in warnings {
        tracing::warn!(file = %file.display(), %warning, "policy schema warning");
    }
    Ok(schema)
}

/// The `*.cedar` files of `dir`, sorted by name so loading is deterministic.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let read_dir_error = |source| PolicyError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_error)? {
        let path = entry.map_err(read_dir_error)?.path();
        if path.extension().is_some_and(|ext| ext == "cedar") && path.is_file() {
            files.push(path);
            if files.len() > MAX_POLICY_FILES {
                return Err(PolicyError::TooManyFiles {
                    dir: dir.to_path_buf(),
                });
            }
        }
    }
    if files.is_empty() {
        return Err(PolicyError::NoPolicies {
            dir: dir.to_path_buf(),
        });
    }
    files.sort();
    Ok(files)
}

fn read_capped(file: &Path) -> Result<String, PolicyError> {
    use std::io::Read;
    let read_error = |source| PolicyError::Read {
        file: file.to_path_buf(),
        source,
    };
    let handle = std::fs::File::open(file).map_err(read_error)?;
    let mut text = String::new();
    // Read one byte past the cap so an over-size file is detected without trusting metadata.
    handle
        .take(MAX_POLICY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_POLICY_FILE_BYTES {
        return Err(PolicyError::FileTooLarge {
            file: file.to_path_buf(),
        });
    }
    Ok(text)
}

/// Parses one file and adds its policies under their `@id`s.
fn add_file(
    policies: &mut PolicySet,
    origin: &mut HashMap<String, PathBuf>,
    file: &Path,
    text: &str,
) -> Result<(), PolicyError> {
    let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Parse {
        file: file.to_path_buf(),
        message: parse_message(&e),
        at: Position::describe(&e, text),
    })?;
    if let Some(index) = parsed.templates().next().map(|t| policy_index(t.id())) {
        return Err(PolicyError::Template {
            file: file.to_path_buf(),
            index,
        });
    }
    let mut in_order: Vec<_> = parsed.policies().collect();
    in_order.sort_by_key(|p| policy_index(p.id()));
    for policy in in_order {
        let index = policy_index(policy.id());
        let id = policy.annotation("id").ok_or(PolicyError::MissingId {
            file: file.to_path_buf(),
            index,
        })?;
        check_id(file, id)?;
        if let Some(other) = origin.get(id) {
            let (file, id, other) = (file.to_path_buf(), id.to_string(), other.clone());
            return Err(PolicyError::DuplicateId { file, id, other });
        }
        // Ids are unique (checked just above), so adding cannot fail for a duplicate; any
        // other failure is still reported against this file.
        policies
            .add(policy.new_id(PolicyId::new(id)))
            .map_err(|e| PolicyError::Parse {
                file: file.to_path_buf(),
                message: e.to_string(),
                at: String::new(),
            })?;
        origin.insert(id.to_string(), file.to_path_buf());
    }
    Ok(())
}

/// The parser's message with every error's text, since `Display` shows only the first.
fn parse_message(errors: &cedar_policy::ParseErrors) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Cedar names the policies of a parsed text `policy0`, `policy1`, ...; the 1-based position
/// in the file is what a person looks for.
fn policy_index(id: &PolicyId) -> usize {
    id.to_string()
        .strip_prefix("policy")
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n + 1)
}

fn check_id(file: &Path, id: &str) -> Result<(), PolicyError> {
    let well_formed = !id.is_empty()
        && id.len() <= MAX_POLICY_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    let reserved = [DEFAULT_DENY, INVALID_REQUEST, OVERSIZE_HOST_CALL].contains(&id);
    if well_formed && !reserved {
        return Ok(());
    }
    Err(PolicyError::BadId {
        file: file.to_path_buf(),
        id: id.to_string(),
    })
}

/// Strict validation of the whole set; the first error is reported against its file.
fn validate(
    schema: &Schema,
    policies: &PolicySet,
    origin: &HashMap<String, PathBuf>,
) -> Result<(), PolicyError> {
    let result = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    for warning in result.validation_warnings() {
        tracing::warn!(%warning, "policy validation warning");
    }
    let Some(error) = result.validation_errors().next() else {
        return Ok(());
    };
    let id = error.policy_id().to_string();
    let file = origin.get(&id).cloned().unwrap_or_default();
    Err(PolicyError::Invalid {
        file,
        id,
        message: error.to_string(),
    })
}

/// A 1-based line and column in a policy or schema file.
struct Position {
    line: usize,
    column: usize,
}

impl Position {
    /// Where the first labelled span of a parser's diagnostic starts in `text`.
    fn of(error: &dyn miette::Diagnostic, text: &str) -> Option<Position> {
        let offset = error.labels()?.next()?.offset();
        let before = text.get(..offset.min(text.len()))?;
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..)?.chars().count() + 1;
        Some(Position { line, column })
    }

    /// " at line L, column C" for [`Position::of`], or "" when the error has no position.
    fn describe(error: &dyn miette::Diagnostic, text: &str) -> String {
        Self::of(error, text).map_or_else(String::new, |at| {
            format!(" at line {}, column {}", at.line, at.column)
        })
    }
}
