//! The task manifest (`warden.toml`): what a module is, the inputs it takes, and the
//! capabilities it asks for. Inputs given to a run are checked against it before the run
//! starts, so a task sees only declared inputs of their declared types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry::inputs::{Param, Value};

/// Largest manifest accepted. Blocks a parser memory bomb.
pub const MAX_MANIFEST_BYTES: usize = 64 << 10;
/// Inputs one run may carry, and bytes one input value may hold. Blocks oversized runs.
pub const MAX_INPUTS: usize = 128;
/// Bytes of one input value (text, or all items of a list together).
pub const MAX_INPUT_BYTES: usize = 64 << 10;

/// A parsed manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Module name, `[a-z0-9-]`.
    pub name: String,
    /// Module version.
    pub version: String,
    /// What the task does.
    #[serde(default)]
    pub description: String,
    /// WIT interfaces the component imports: `params`, `log`, `credentials`, `ssh`, `transfer`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Declared inputs, by name.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Narrower asks (target tags, path prefixes, command patterns).
    #[serde(default)]
    pub requests: Requests,
    /// Resources the task needs beyond the server's defaults (signed with the manifest).
    /// Left out of the signed JSON when empty, so older signatures stay valid.
    #[serde(default, skip_serializing_if = "ModuleLimits::is_empty")]
    pub limits: ModuleLimits,
}

/// Per-module resource asks, e.g. `[limits] memory_mib = 256` for an interpreted-language
/// task (CPython, SpiderMonkey) that needs far more linear memory than a Rust task. The
/// server caps every ask at its own maximum (see `RunLimits::for_module`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ModuleLimits {
    /// Linear memory the run may grow to, in MiB (1..=[`MAX_MEMORY_MIB`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
}

/// The largest memory ask a manifest may carry. Blocks an absurd number that would
/// overflow when turned into bytes; the server's own cap is usually lower.
pub const MAX_MEMORY_MIB: u32 = 64 << 10;

impl ModuleLimits {
    /// True when the module asks for nothing beyond the defaults.
    pub fn is_empty(&self) -> bool {
        self.memory_mib.is_none()
    }

    /// The memory ask in bytes, if any.
    pub fn memory_bytes(&self) -> Option<usize> {
        self.memory_mib.map(|mib| (mib as usize) << 20)
    }
}

/// The type and rules of one input.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// `string`, `int`, `float`, `bool` or `string-list`.
    #[serde(rename = "type")]
    pub kind: InputKind,
    /// What the input means.
    #[serde(default)]
    pub description: String,
    /// Whether a run must supply it (ignored when a default is given).
    #[serde(default)]
    pub required: bool,
    /// The value used when a run gives none.
    #[serde(default)]
    pub default: Option<toml::Value>,
}

/// An input's type.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    /// Text.
    String,
    /// A signed 64-bit integer.
    Int,
    /// A float.
    Float,
    /// true / false.
    Bool,
    /// A list of text.
    StringList,
}

/// Narrower capability asks; checked against the process grant when one is configured.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Requests {
    /// Target tags the task expects to work on.
    #[serde(rename = "target-tags")]
    pub target_tags: Vec<String>,
    /// Path prefixes the task reads or writes.
    pub paths: Vec<String>,
    /// Command patterns the task runs.
    pub commands: Vec<String>,
}

/// Why a manifest or a run's inputs were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The manifest does not parse.
    #[error("invalid manifest: {0}")]
    Parse(String),
    /// An input the manifest does not declare.
    #[error("unknown input '{name}' (declared: {declared})")]
    UnknownInput { name: String, declared: String },
    /// A required input is missing.
    #[error("missing required input '{0}'")]
    MissingInput(String),
    /// An input of the wrong type.
    #[error("input '{name}' must be {expected}: {why}")]
    BadInput {
        name: String,
        expected: String,
        why: String,
    },
}

/// The interfaces a manifest may name.
pub const INTERFACES: [&str; 5] = ["params", "log", "credentials", "ssh", "transfer"];

impl Manifest {
    /// Parses and validates a manifest.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::Parse(format!(
                "over {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Parse(e.message().to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the name, capabilities and input defaults.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let manifest = self;
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !valid_name(&manifest.name) {
            return Err(ManifestError::Parse(format!(
                "bad module name '{}'",
                manifest.name
            )));
        }
        if let Some(unknown) = manifest
            .capabilities
            .iter()
            .find(|c| !INTERFACES.contains(&c.as_str()))
        {
            return Err(ManifestError::Parse(format!(
                "unknown capability '{unknown}'"
            )));
        }
        if let Some(mib) = manifest.limits.memory_mib
            && !(1..=MAX_MEMORY_MIB).contains(&mib)
        {
            return Err(ManifestError::Parse(format!(
                "limits.memory_mib must be between 1 and {MAX_MEMORY_MIB}, got {mib}"
            )));
        }
        for (name, spec) in &manifest.inputs {
            if let Some(default) = &spec.default {
                convert(name, spec.kind, default)?;
            }
        }
        Ok(())
    }

    /// Checks a run's inputs and fills in defaults, producing the params the task sees
    /// (in name order).
    pub fn resolve_inputs(
        &self,
        given: &BTreeMap<String, toml::Value>,
    ) -> Result<Vec<Param>, ManifestError> {
        if given.len() > MAX_INPUTS {
            return Err(ManifestError::BadInput {
                name: "*".into(),
                expected: format!("at most {MAX_INPUTS} inputs"),
                why: format!("{} given", given.len()),
            });
        }
        if let Some(name) = given.keys().find(|k| !self.inputs.contains_key(*k)) {
            let declared = self.inputs.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(ManifestError::UnknownInput {
                name: name.clone(),
                declared,
            });
        }
        let mut params = Vec::new();
        for (name, spec) in &self.inputs {
            let value = match (given.get(name), &spec.default) {
                (Some(v), _) | (None, Some(v)) => convert(name, spec.kind, v)?,
                (None, None) if spec.required => {
                    return Err(ManifestError::MissingInput(name.clone()));
                }
                (None, None) => continue,
            };
            params.push(Param {
                name: name.clone(),
                value,
            });
        }
        Ok(params)
    }

    /// Parses `--param key=value` text into the declared type of `key`.
    pub fn parse_cli_value(&self, key: &str, text: &str) -> Result<toml::Value, ManifestError> {
        let Some(spec) = self.inputs.get(key) else {
            let declared = self.inputs.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(ManifestError::UnknownInput {
                name: key.into(),
                declared,
            });
        };
        let bad = |why: String| ManifestError::BadInput {
            name: key.into(),
            expected: kind_name(spec.kind).into(),
            why,
        };
        Ok(match spec.kind {
            InputKind::String => toml::Value::String(text.into()),
            InputKind::Int => toml::Value::Integer(text.parse().map_err(|e| bad(format!("{e}")))?),
            InputKind::Float => toml::Value::Float(text.parse().map_err(|e| bad(format!("{e}")))?),
            InputKind::Bool => toml::Value::Boolean(text.parse().map_err(|e| bad(format!("{e}")))?),
            InputKind::StringList => toml::Value::Array(
                text.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.into()))
                    .collect(),
            ),
        })
    }
}

fn kind_name(kind: InputKind) -> &'static str {
    match kind {
        InputKind::String => "a string",
        InputKind::Int => "an integer",
        InputKind::Float => "a number",
        InputKind::Bool => "true or false",
        InputKind::StringList => "a list of strings",
    }
}

/// Converts a TOML/JSON-shaped value into the declared type, refusing anything else.
fn convert(name: &str, kind: InputKind, value: &toml::Value) -> Result<Value, ManifestError> {
    let bad = |why: &str| ManifestError::BadInput {
        name: name.into(),
        expected: kind_name(kind).into(),
        why: why.into(),
    };
    let converted = match (kind, value) {
        (InputKind::String, toml::Value::String(s)) => Value::Text(s.clone()),
        (InputKind::Int, toml::Value::Integer(i)) => Value::Integer(*i),
        (InputKind::Float, toml::Value::Float(f)) => Value::Number(*f),
        (InputKind::Float, toml::Value::Integer(i)) => Value::Number(*i as f64),
        (InputKind::Bool, toml::Value::Boolean(b)) => Value::Flag(*b),
        (InputKind::StringList, toml::Value::Array(items)) => Value::TextList(
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("an item is not a string"))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(bad(&format!("got {}", value.type_str()))),
    };
    let size = match &converted {
        Value::Text(s) => s.len(),
        Value::TextList(l) => l.iter().map(String::len).sum(),
        _ => 0,
    };
    if size > MAX_INPUT_BYTES {
        return Err(bad(&format!(
            "{size} bytes, over the limit of {MAX_INPUT_BYTES}"
        )));
    }
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
        name = "hello"
        version = "0.1.0"
        capabilities = ["params", "log"]
        [inputs.name]
        type = "string"
        default = "world"
        [inputs.times]
        type = "int"
        required = true
    "#;

    fn given(pairs: &[(&str, toml::Value)]) -> BTreeMap<String, toml::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn resolves_defaults_and_typed_inputs() -> Result<(), ManifestError> {
        let m = Manifest::parse(HELLO)?;
        let params = m.resolve_inputs(&given(&[("times", toml::Value::Integer(3))]))?;
        assert_eq!(params.len(), 2);
        assert!(matches!(&params[0].value, Value::Text(s) if s == "world"));
        assert!(matches!(params[1].value, Value::Integer(3)));
        Ok(())
    }

    #[test]
    fn refuses_unknown_missing_and_mistyped_inputs() -> Result<(), ManifestError> {
        let m = Manifest::parse(HELLO)?;
        let unknown = m.resolve_inputs(&given(&[("nme", toml::Value::String("x".into()))]));
        assert!(matches!(unknown, Err(ManifestError::UnknownInput { .. })));
        let missing = m.resolve_inputs(&given(&[]));
        assert!(matches!(missing, Err(ManifestError::MissingInput(name)) if name == "times"));
        let wrong = m.resolve_inputs(&given(&[("times", toml::Value::String("3".into()))]));
        assert!(matches!(wrong, Err(ManifestError::BadInput { .. })));
        assert!(m.parse_cli_value("times", "three").is_err());
        assert_eq!(m.parse_cli_value("times", "3"), Ok(toml::Value::Integer(3)));
        Ok(())
    }

    #[test]
    fn refuses_bad_manifests() {
        assert!(Manifest::parse("name = 'x'").is_err());
        assert!(Manifest::parse("name = 'Bad Name'\nversion = '1'").is_err());
        assert!(Manifest::parse("name = 'x'\nversion = '1'\ncapabilities = ['fs']").is_err());
        assert!(Manifest::parse("name = 'x'\nversion = '1'\nextra = 1").is_err());
        let bad_default = "name = 'x'\nversion = '1'\n[inputs.n]\ntype = 'int'\ndefault = 'z'";
        assert!(Manifest::parse(bad_default).is_err());
    }

    #[test]
    fn memory_ask_is_optional_bounded_and_left_out_of_the_json_when_absent()
    -> Result<(), ManifestError> {
        let plain = Manifest::parse("name = 'x'\nversion = '1'")?;
        assert_eq!(plain.limits.memory_bytes(), None);
        let json =
            serde_json::to_string(&plain).map_err(|e| ManifestError::Parse(e.to_string()))?;
        assert!(!json.contains("limits"), "{json}");
        let asked = Manifest::parse("name = 'x'\nversion = '1'\n[limits]\nmemory_mib = 256")?;
        assert_eq!(asked.limits.memory_bytes(), Some(256 << 20));
        for bad in [
            "memory_mib = 0",
            "memory_mib = 70000",
            "memory_mib = -1",
            "cpu = 2",
        ] {
            let text = format!("name = 'x'\nversion = '1'\n[limits]\n{bad}");
            assert!(Manifest::parse(&text).is_err(), "{bad} accepted");
        }
        Ok(())
    }
}
