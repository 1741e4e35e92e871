//! The one syntax every command takes for a run's inputs: `warden exec --input`, `warden
//! process create --input`, `warden process schedule --input`, `warden run start --input`.
//!
//! ```text
//! KEY=VALUE    VALUE read as the type KEY is declared with (module manifest or workflow):
//!                string       VALUE as is (`name=123` is the text "123")
//!                int, float   a number (`count=3`, `ratio=0.5`)
//!                bool         `true` or `false`
//!                string-list  a JSON array of strings when VALUE starts with `[`
//!                             (`targets=["a","b"]`), else comma-separated items
//!                             (`targets=a,b`); `\,` is a comma, `\\` a backslash and a
//!                             leading `\[` a bracket inside an item; empty items are dropped
//! KEY:=JSON    the JSON value itself (`count:=3`, `name:="a \"quoted\" name"`), checked
//!              against the declared type like any other
//! ```
//!
//! Where the CLI cannot read the declarations (`warden exec` without `--manifest`; a user
//! who may start a process but not read its module), the types are inferred from the text:
//! a number, `true`/`false` or a JSON array as such, anything else as text; the server
//! checks the result against the manifest either way.
//!
//! Deprecated, still accepted with a warning on stderr: a JSON-quoted string after `=`
//! (`name="Ada"`, which the remote commands used to decode; write `name=Ada` or
//! `name:="Ada"`).
//!
//! Why this form: the manifest already says each input's type, so the plain `KEY=VALUE`
//! `warden exec` always took can mean exactly one thing; guessing JSON (what the server
//! commands did) turned `name=123` into a number the server then refused, and made
//! `targets=a,b` one target named "a,b". JSON stays available where it is unambiguous: a
//! list that starts with `[`, and the explicit `:=` (as HTTPie spells it).
//!
//! Threat: none of its own — the server (and `warden exec`'s manifest check) validate every
//! value again; this module only makes one command line mean the same thing everywhere, so
//! that an operator does not start a run with inputs they did not mean (a list read as one
//! target name, a number read as text).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::registry::manifest::{InputKind, InputSpec};

/// The `--help` text of every `--input` flag.
pub(crate) const INPUT_HELP: &str = "An input, KEY=VALUE, VALUE read as KEY's declared type \
    (string as is; int, float, bool; string-list as a,b,c with \\, for a comma, or a JSON \
    array); KEY:=JSON for a raw JSON value. Repeat for each input";

/// Inputs parsed from the command line, and the warnings to print about them.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Parsed {
    /// By name, as the API takes them.
    pub values: BTreeMap<String, Value>,
    /// One sentence per deprecated form used or guess made.
    pub warnings: Vec<String>,
}

impl Parsed {
    /// Prints the warnings on stderr and returns the values.
    pub fn into_values(self) -> BTreeMap<String, Value> {
        for warning in &self.warnings {
            eprintln!("warning: {warning}");
        }
        self.values
    }
}

/// Parses every `flag` pair (`KEY=VALUE` or `KEY:=JSON`) against `declared`, or by inference
/// when the declarations are unknown (`None`).
pub(crate) fn parse(
    flag: &str,
    pairs: &[String],
    declared: Option<&BTreeMap<String, InputSpec>>,
) -> anyhow::Result<Parsed> {
    let mut parsed = Parsed::default();
    for pair in pairs {
        let (key, raw) = split(flag, pair)?;
        if parsed.values.contains_key(key) {
            bail!("--{flag} '{key}' given twice");
        }
        let kind = match declared {
            None => None,
            Some(inputs) => match inputs.get(key) {
                Some(spec) => Some(spec.kind),
                None => bail!(
                    "--{flag} '{key}': unknown input (declared: {})",
                    inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            },
        };
        let value = match raw {
            Raw::Json(text) => {
                let value: Value = serde_json::from_str(text)
                    .with_context(|| format!("--{flag} '{key}': not JSON after ':='"))?;
                if let Some(kind) = kind {
                    check_kind(key, kind, &value)?;
                }
                value
            }
            Raw::Text(text) => match kind {
                Some(kind) => typed(flag, key, kind, text, &mut parsed.warnings)?,
                None => inferred(flag, key, text, &mut parsed.warnings),
            },
        };
        parsed.values.insert(key.to_string(), value);
    }
    Ok(parsed)
}

enum Raw<'a> {
    Text(&'a str),
    Json(&'a str),
}

/// `KEY=VALUE` or `KEY:=JSON`, split at the first `=`.
fn split<'a>(flag: &str, pair: &'a str) -> anyhow::Result<(&'a str, Raw<'a>)> {
    let Some((key, value)) = pair.split_once('=') else {
        bail!("--{flag} '{pair}' is not KEY=VALUE (or KEY:=JSON)");
    };
    let (key, raw) = match key.strip_suffix(':') {
        Some(key) => (key, Raw::Json(value)),
        None => (key, Raw::Text(value)),
    };
    if key.is_empty() {
        bail!("--{flag} '{pair}' has no KEY before '='");
    }
    Ok((key, raw))
}

/// VALUE read as `kind`.
fn typed(
    flag: &str,
    key: &str,
    kind: InputKind,
    text: &str,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Value> {
    let bad = |expected: &str| anyhow::anyhow!("--{flag} '{key}' must be {expected}, got {text:?}");
    Ok(match kind {
        InputKind::String => match quoted_json_string(text) {
            Some(s) => {
                warnings.push(deprecated_quoted(flag, key));
                Value::String(s)
            }
            None => Value::String(text.to_string()),
        },
        InputKind::Int => Value::from(text.trim().parse::<i64>().map_err(|_| bad("an integer"))?),
        InputKind::Float => {
            let f: f64 = text.trim().parse().map_err(|_| bad("a number"))?;
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| bad("a finite number"))?
        }
        InputKind::Bool => match text.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad("true or false")),
        },
        InputKind::StringList if text.starts_with('[') => {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                anyhow::anyhow!(
                    "--{flag} '{key}' starts with '[' but is not a JSON array ({e}); write \
                     \\[ for a leading bracket in a comma-separated item"
                )
            })?;
            check_kind(key, kind, &value)?;
            value
        }
        InputKind::StringList => Value::from(split_list(flag, key, text)?),
    })
}

/// VALUE with no declared type: a number, a boolean or a JSON array as such, else text.
fn inferred(flag: &str, key: &str, text: &str, warnings: &mut Vec<String>) -> Value {
    if let Some(s) = quoted_json_string(text) {
        warnings.push(deprecated_quoted(flag, key));
        return Value::String(s);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Array(_))) => v,
        _ => Value::String(text.to_string()),
    }
}

/// The decoded text when `text` is a whole JSON string literal (`"Ada"`).
fn quoted_json_string(text: &str) -> Option<String> {
    if text.len() < 2 || !text.starts_with('"') || !text.ends_with('"') {
        return None;
    }
    serde_json::from_str::<String>(text).ok()
}

fn deprecated_quoted(flag: &str, key: &str) -> String {
    format!(
        "--{flag} {key}=\"…\": a JSON-quoted string after '=' is deprecated and will be taken \
         as is in a later release; write {key}=TEXT, or {key}:='\"TEXT\"' for JSON"
    )
}

/// Comma-separated items; `\,` is a comma, `\\` a backslash, `\[` a bracket; empty items
/// are dropped (`a,b,` is `["a", "b"]`, and an empty VALUE the empty list).
fn split_list(flag: &str, key: &str, text: &str) -> anyhow::Result<Vec<String>> {
    let mut items = Vec::new();
    let mut item = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ (',' | '\\' | '[')) => item.push(escaped),
                Some(other) => {
                    bail!("--{flag} '{key}': unknown escape '\\{other}' (only \\, \\\\ and \\[)")
                }
                None => bail!("--{flag} '{key}': a lone '\\' at the end (write \\\\)"),
            },
            ',' => items.push(std::mem::take(&mut item)),
            c => item.push(c),
        }
    }
    items.push(item);
    items.retain(|i| !i.is_empty());
    Ok(items)
}

/// Refuses a JSON value that is not of the declared type.
fn check_kind(key: &str, kind: InputKind, value: &Value) -> anyhow::Result<()> {
    let ok = match kind {
        InputKind::String => value.is_string(),
        InputKind::Int => value.is_i64(),
        InputKind::Float => value.is_number(),
        InputKind::Bool => value.is_boolean(),
        InputKind::StringList => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
    };
    if !ok {
        let expected = match kind {
            InputKind::String => "a string",
            InputKind::Int => "an integer",
            InputKind::Float => "a number",
            InputKind::Bool => "true or false",
            InputKind::StringList => "a list of strings",
        };
        bail!("input '{key}' must be {expected}, got {value}");
    }
    Ok(())
}

/// A declaration of every key in `pairs` as a string: `warden exec` without a manifest,
/// whose task gets every param as text.
pub(crate) fn all_text(pairs: &[String]) -> BTreeMap<String, InputSpec> {
    pairs
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, _)| {
            let key = key.strip_suffix(':').unwrap_or(key);
            let spec = InputSpec {
                kind: InputKind::String,
                description: String::new(),
                required: false,
                default: None,
            };
            (key.to_string(), spec)
        })
        .collect()
}

/// The declared inputs in a workflow definition (JSON), or a module's manifest as the API
/// shows it (`{"manifest": {"inputs": …}}`).
pub(crate) fn declared_in(value: &Value) -> anyhow::Result<BTreeMap<String, InputSpec>> {
    let inputs = value
        .get("manifest")
        .map_or_else(|| value.get("inputs"), |m| m.get("inputs"));
    match inputs {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(inputs) => serde_json::from_value(inputs.clone()).context("the declared inputs"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn declared() -> BTreeMap<String, InputSpec> {
        let spec = |kind| InputSpec {
            kind,
            description: String::new(),
            required: false,
            default: None,
        };
        BTreeMap::from([
            ("name".to_string(), spec(InputKind::String)),
            ("count".to_string(), spec(InputKind::Int)),
            ("ratio".to_string(), spec(InputKind::Float)),
            ("dry".to_string(), spec(InputKind::Bool)),
            ("targets".to_string(), spec(InputKind::StringList)),
        ])
    }

    fn one(pair: &str) -> anyhow::Result<Value> {
        let parsed = parse("input", &[pair.to_string()], Some(&declared()))?;
        assert!(parsed.warnings.is_empty(), "{pair}: {:?}", parsed.warnings);
        Ok(parsed.values.into_values().next().unwrap_or(Value::Null))
    }

    fn error(pair: &str) -> String {
        match parse("input", &[pair.to_string()], Some(&declared())) {
            Ok(parsed) => panic!("{pair} was accepted as {:?}", parsed.values),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn reads_each_declared_type() -> anyhow::Result<()> {
        assert_eq!(one("name=Ada Lovelace")?, json!("Ada Lovelace"));
        assert_eq!(one("name=123")?, json!("123"), "a string input stays text");
        assert_eq!(one("name=true")?, json!("true"));
        assert_eq!(one("name=[x]")?, json!("[x]"));
        assert_eq!(one("name=")?, json!(""));
        assert_eq!(one("name=a=b")?, json!("a=b"), "split at the first '='");
        assert_eq!(one("count=3")?, json!(3));
        assert_eq!(one("count=-42")?, json!(-42));
        assert_eq!(one("ratio=0.5")?, json!(0.5));
        assert_eq!(one("ratio=2")?, json!(2.0));
        assert_eq!(one("dry=true")?, json!(true));
        assert_eq!(one("dry=false")?, json!(false));
        Ok(())
    }

    #[test]
    fn reads_lists_comma_separated_or_as_json() -> anyhow::Result<()> {
        assert_eq!(one("targets=a,b")?, json!(["a", "b"]));
        assert_eq!(one("targets=web-1")?, json!(["web-1"]));
        assert_eq!(one("targets=")?, json!([]));
        assert_eq!(one("targets=a,,b,")?, json!(["a", "b"]));
        assert_eq!(one(r"targets=a\,b,c")?, json!(["a,b", "c"]));
        assert_eq!(one(r"targets=back\\slash")?, json!([r"back\slash"]));
        assert_eq!(one(r"targets=\[x],y")?, json!(["[x]", "y"]));
        assert_eq!(one(r#"targets=["a","b"]"#)?, json!(["a", "b"]));
        assert_eq!(one(r#"targets=["a,b"]"#)?, json!(["a,b"]));
        assert_eq!(one("targets=[]")?, json!([]));
        assert_eq!(one(r#"targets:=["x"]"#)?, json!(["x"]));
        Ok(())
    }

    #[test]
    fn reads_raw_json_after_colon_equals() -> anyhow::Result<()> {
        assert_eq!(one("count:=7")?, json!(7));
        assert_eq!(one(r#"name:="\"quoted\"""#)?, json!("\"quoted\""));
        assert_eq!(one(r#"name:="123""#)?, json!("123"));
        assert_eq!(one("dry:=true")?, json!(true));
        Ok(())
    }

    #[test]
    fn refuses_bad_values_naming_the_key() {
        for (pair, want) in [
            ("count=three", "'count' must be an integer"),
            ("count=3.5", "'count' must be an integer"),
            ("count=99999999999999999999", "'count' must be an integer"),
            ("ratio=fast", "'ratio' must be a number"),
            ("ratio=inf", "'ratio' must be a finite number"),
            ("dry=yes", "'dry' must be true or false"),
            ("dry=1", "'dry' must be true or false"),
            (
                "targets=[a,b]",
                "'targets' starts with '[' but is not a JSON array",
            ),
            ("targets=[1,2]", "'targets' must be a list of strings"),
            (r"targets=a\n", r"'targets': unknown escape '\n'"),
            (r"targets=a\", "'targets': a lone"),
            ("count:=\"3\"", "'count' must be an integer"),
            ("name:=3", "'name' must be a string"),
            ("name:={", "'name': not JSON after ':='"),
            (
                "nope=1",
                "'nope': unknown input (declared: count, dry, name, ratio, targets)",
            ),
            ("count", "'count' is not KEY=VALUE"),
            ("=3", "has no KEY"),
        ] {
            let message = error(pair);
            assert!(message.contains(want), "{pair}: {message}");
        }
    }

    #[test]
    fn refuses_a_key_given_twice() {
        let pairs = ["count=1".to_string(), "count:=2".to_string()];
        let message = match parse("input", &pairs, Some(&declared())) {
            Ok(p) => panic!("accepted {:?}", p.values),
            Err(e) => e.to_string(),
        };
        assert!(message.contains("'count' given twice"), "{message}");
    }

    #[test]
    fn the_deprecated_quoted_string_still_works_and_warns() -> anyhow::Result<()> {
        for declared in [Some(declared()), None] {
            let parsed = parse("input", &[r#"name="Ada""#.to_string()], declared.as_ref())?;
            assert_eq!(parsed.values["name"], json!("Ada"));
            assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
            assert!(
                parsed.warnings[0].contains("deprecated"),
                "{:?}",
                parsed.warnings
            );
            assert!(
                parsed.warnings[0].contains("name=TEXT"),
                "{:?}",
                parsed.warnings
            );
        }
        // A lone quote or one inside the text is no JSON string: taken as is, no warning.
        let parsed = parse(
            "input",
            &[r#"name="#.to_string() + "\"", r#"count=3"#.to_string()],
            Some(&declared()),
        )?;
        assert_eq!(parsed.values["name"], json!("\""));
        assert!(parsed.warnings.is_empty());
        Ok(())
    }

    #[test]
    fn infers_types_when_no_declaration_is_known() -> anyhow::Result<()> {
        let pairs: Vec<String> = ["n=3", "f=0.5", "b=true", r#"l=["a"]"#, "s=a,b", "t=web 1"]
            .map(str::to_string)
            .to_vec();
        let parsed = parse("input", &pairs, None)?;
        assert_eq!(
            Value::Object(parsed.values.into_iter().collect()),
            json!({"n": 3, "f": 0.5, "b": true, "l": ["a"], "s": "a,b", "t": "web 1"})
        );
        Ok(())
    }

    #[test]
    fn finds_declarations_in_a_module_or_a_workflow() -> anyhow::Result<()> {
        let module =
            json!({"digest": "x", "manifest": {"name": "m", "inputs": {"n": {"type": "int"}}}});
        assert_eq!(declared_in(&module)?["n"].kind, InputKind::Int);
        let workflow = json!({"start_at": "a", "inputs": {"t": {"type": "string-list"}}});
        assert_eq!(declared_in(&workflow)?["t"].kind, InputKind::StringList);
        assert!(declared_in(&json!({"start_at": "a"}))?.is_empty());
        Ok(())
    }
}
