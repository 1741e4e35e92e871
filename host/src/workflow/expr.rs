//! Paths into a run's data (`$.inputs.…`, `$.steps.STATE.…`, `$.item.…`) and the conditions of
//! `choice` states: parsing (at validation, so a bad path is a 400 naming its state) and
//! evaluation (at run time, against a [`Scope`]).
//!
//! Threat: a definition that makes the engine do unbounded work or read what it should not. A
//! path reads only the run's own inputs and its own steps' outputs; paths and conditions are
//! length- and depth-capped; evaluation never panics on a missing or mistyped value (it is
//! simply absent, or the comparison is false).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::definition::{Condition, MAX_CONDITION_DEPTH, MAX_NAME_BYTES};

/// Where a path starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Root {
    /// The run's inputs.
    Inputs,
    /// The output of an earlier state of this name.
    Step(String),
    /// The current item of the enclosing `map`.
    Item,
}

/// One step into a value: an object field or a list index.
#[derive(Clone, Debug, PartialEq)]
pub enum Segment {
    Field(String),
    Index(usize),
}

/// A parsed path.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    pub root: Root,
    pub rest: Vec<Segment>,
}

impl Path {
    /// Parses `$.inputs[.seg]*`, `$.steps.NAME[.seg]*` or `$.item[.seg]*`; a segment of digits
    /// is a list index.
    pub fn parse(text: &str) -> Result<Path, String> {
        if text.len() > MAX_NAME_BYTES {
            return Err(format!("path is over {MAX_NAME_BYTES} bytes"));
        }
        let body = text
            .strip_prefix("$.")
            .ok_or_else(|| format!("path {text:?} must start with `$.`"))?;
        let mut parts = body.split('.');
        let root = match parts.next() {
            Some("inputs") => Root::Inputs,
            Some("item") => Root::Item,
            Some("steps") => match parts.next() {
                Some(name) if !name.is_empty() => Root::Step(name.to_string()),
                _ => return Err(format!("path {text:?} names no step after `$.steps`")),
            },
            _ => {
                return Err(format!(
                    "path {text:?} must start with $.inputs, $.steps.STATE or $.item"
                ));
            }
        };
        let mut rest = Vec::new();
        for part in parts {
            if part.is_empty() {
                return Err(format!("path {text:?} has an empty segment"));
            }
            rest.push(match part.parse::<usize>() {
                Ok(i) if part.bytes().all(|b| b.is_ascii_digit()) => Segment::Index(i),
                _ => Segment::Field(part.to_string()),
            });
        }
        Ok(Path { root, rest })
    }

    /// The run input a `$.inputs.NAME…` path reads, if it is one.
    pub fn input_name(&self) -> Option<&str> {
        match (&self.root, self.rest.first()) {
            (Root::Inputs, Some(Segment::Field(name))) => Some(name),
            _ => None,
        }
    }

    /// The value the path leads to in `scope`, if any.
    pub fn resolve(&self, scope: &Scope) -> Option<Value> {
        let start = match &self.root {
            Root::Inputs => {
                let mut rest = self.rest.iter();
                let Some(Segment::Field(name)) = rest.next() else {
                    // `$.inputs` alone: every input, as an object.
                    return (self.rest.is_empty()).then(|| {
                        Value::Object(
                            scope
                                .inputs
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        )
                    });
                };
                return descend(scope.inputs.get(name)?, rest.as_slice());
            }
            Root::Step(name) => scope.outputs.get(name)?,
            Root::Item => scope.item.as_ref()?,
        };
        descend(start, &self.rest)
    }
}

fn descend(mut value: &Value, rest: &[Segment]) -> Option<Value> {
    for segment in rest {
        value = match (segment, value) {
            (Segment::Field(f), Value::Object(map)) => map.get(f)?,
            (Segment::Index(i), Value::Array(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(value.clone())
}

/// What paths can see while a branch runs: the run's inputs, the outputs of the states that
/// ran before in this branch and the branches enclosing it, and the current `map` item.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub inputs: Arc<BTreeMap<String, Value>>,
    pub item: Option<Value>,
    pub outputs: HashMap<String, Value>,
}

impl Scope {
    /// The scope of a new branch inside this one (a `parallel` branch or a `map` iteration).
    pub fn branch(&self, item: Option<Value>) -> Scope {
        Scope {
            inputs: self.inputs.clone(),
            item: item.or_else(|| self.item.clone()),
            outputs: self.outputs.clone(),
        }
    }
}

/// Checks a condition's shape (exactly one operator or one comparison per node, depth capped,
/// paths parse) and returns the paths it reads.
pub fn check_condition(condition: &Condition) -> Result<Vec<Path>, String> {
    let mut paths = Vec::new();
    check_node(condition, 0, &mut paths)?;
    Ok(paths)
}

fn check_node(c: &Condition, depth: usize, paths: &mut Vec<Path>) -> Result<(), String> {
    if depth > MAX_CONDITION_DEPTH {
        return Err(format!(
            "condition nests deeper than {MAX_CONDITION_DEPTH} levels"
        ));
    }
    let operators = [c.and.is_some(), c.or.is_some(), c.not.is_some()];
    let operators = operators.iter().filter(|b| **b).count();
    let tests = comparisons(c);
    match (operators, c.variable.is_some(), tests) {
        (1, false, 0) => {}
        (0, true, 1) => {
            let variable = c.variable.as_deref().unwrap_or_default();
            paths.push(Path::parse(variable)?);
            return Ok(());
        }
        (0, true, n) => {
            return Err(format!(
                "condition on {:?} needs exactly one comparison, has {n}",
                c.variable.as_deref().unwrap_or_default()
            ));
        }
        _ => {
            return Err(
                "a condition is exactly one of `and`, `or`, `not`, or a `variable` with one \
                 comparison"
                    .into(),
            );
        }
    }
    let children: Vec<&Condition> = match (&c.and, &c.or, &c.not) {
        (Some(list), _, _) | (_, Some(list), _) => {
            if list.is_empty() || list.len() > 16 {
                return Err("`and` / `or` take 1 to 16 conditions".into());
            }
            list.iter().collect()
        }
        (_, _, Some(inner)) => vec![inner.as_ref()],
        _ => Vec::new(),
    };
    for child in children {
        check_node(child, depth + 1, paths)?;
    }
    Ok(())
}

fn comparisons(c: &Condition) -> usize {
    [
        c.exists.is_some(),
        c.equals.is_some(),
        c.numeric_less_than.is_some(),
        c.numeric_less_than_equals.is_some(),
        c.numeric_greater_than.is_some(),
        c.numeric_greater_than_equals.is_some(),
        c.string_equals.is_some(),
        c.string_less_than.is_some(),
        c.string_greater_than.is_some(),
        c.string_starts_with.is_some(),
        c.string_contains.is_some(),
        c.boolean_equals.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count()
}

/// Whether `condition` holds in `scope`. A comparison with a missing or mistyped value is
/// false (`exists: false` is how to test for absence).
pub fn eval(condition: &Condition, scope: &Scope) -> bool {
    if let Some(all) = &condition.and {
        return all.iter().all(|c| eval(c, scope));
    }
    if let Some(any) = &condition.or {
        return any.iter().any(|c| eval(c, scope));
    }
    if let Some(inner) = &condition.not {
        return !eval(inner, scope);
    }
    let Some(path) = condition
        .variable
        .as_deref()
        .and_then(|v| Path::parse(v).ok())
    else {
        return false;
    };
    let value = path.resolve(scope);
    if let Some(want) = condition.exists {
        return value.is_some() == want;
    }
    let Some(value) = value else {
        return false;
    };
    let number = value.as_f64();
    let text = value.as_str();
    let c = condition;
    let num = |f: fn(f64, f64) -> bool, bound: Option<f64>| match (number, bound) {
        (Some(n), Some(b)) => Some(f(n, b)),
        _ => None,
    };
    let string = |f: fn(&str, &str) -> bool, other: &Option<String>| match (text, other) {
        (Some(t), Some(o)) => Some(f(t, o)),
        _ => None,
    };
    if let Some(want) = &c.equals {
        return match (value.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => &value == want,
        };
    }
    if let Some(want) = c.boolean_equals {
        return value.as_bool() == Some(want);
    }
    let answers = [
        num(|n, b| n < b, c.numeric_less_than),
        num(|n, b| n <= b, c.numeric_less_than_equals),
        num(|n, b| n > b, c.numeric_greater_than),
        num(|n, b| n >= b, c.numeric_greater_than_equals),
        string(|t, o| t == o, &c.string_equals),
        string(|t, o| t < o, &c.string_less_than),
        string(|t, o| t > o, &c.string_greater_than),
        string(|t, o| t.starts_with(o), &c.string_starts_with),
        string(|t, o| t.contains(o), &c.string_contains),
    ];
    answers.into_iter().flatten().next().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let mut inputs = BTreeMap::new();
        inputs.insert("user".to_string(), json!("ada"));
        inputs.insert("hosts".to_string(), json!(["a", "b"]));
        let mut outputs = HashMap::new();
        outputs.insert(
            "check".to_string(),
            json!({"count": 3, "ok": true, "name": "web-1"}),
        );
        Scope {
            inputs: Arc::new(inputs),
            item: Some(json!({"host": "b"})),
            outputs,
        }
    }

    fn cond(value: serde_json::Value) -> Condition {
        serde_json::from_value(value).unwrap_or_default()
    }

    #[test]
    fn paths_read_inputs_steps_items_and_indexes() {
        let s = scope();
        let get = |p: &str| Path::parse(p).ok().and_then(|p| p.resolve(&s));
        assert_eq!(get("$.inputs.user"), Some(json!("ada")));
        assert_eq!(get("$.inputs.hosts.1"), Some(json!("b")));
        assert_eq!(get("$.steps.check.count"), Some(json!(3)));
        assert_eq!(get("$.item.host"), Some(json!("b")));
        assert_eq!(get("$.steps.check.missing"), None);
        assert_eq!(get("$.steps.other"), None);
        assert_eq!(get("$.inputs.hosts.9"), None);
        assert_eq!(get("$.inputs.user.x"), None);
    }

    #[test]
    fn malformed_paths_are_refused_with_the_reason() {
        for bad in [
            "inputs.user",
            "$.",
            "$.env.HOME",
            "$.steps",
            "$.steps.",
            "$.inputs..x",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
        assert!(Path::parse(&format!("$.inputs.{}", "a".repeat(300))).is_err());
    }

    #[test]
    fn every_comparison_and_operator_evaluates() {
        let s = scope();
        let holds = |v| eval(&cond(v), &s);
        assert!(holds(
            json!({"variable": "$.steps.check.count", "numeric_greater_than": 2})
        ));
        assert!(!holds(
            json!({"variable": "$.steps.check.count", "numeric_greater_than": 3})
        ));
        assert!(holds(
            json!({"variable": "$.steps.check.count", "numeric_greater_than_equals": 3})
        ));
        assert!(holds(
            json!({"variable": "$.steps.check.count", "numeric_less_than": 4})
        ));
        assert!(holds(
            json!({"variable": "$.steps.check.count", "numeric_less_than_equals": 3})
        ));
        assert!(holds(
            json!({"variable": "$.steps.check.count", "equals": 3.0})
        ));
        assert!(holds(
            json!({"variable": "$.steps.check.ok", "boolean_equals": true})
        ));
        assert!(holds(
            json!({"variable": "$.inputs.user", "string_equals": "ada"})
        ));
        assert!(holds(
            json!({"variable": "$.inputs.user", "string_less_than": "bob"})
        ));
        assert!(holds(
            json!({"variable": "$.inputs.user", "string_greater_than": "aa"})
        ));
        assert!(holds(
            json!({"variable": "$.steps.check.name", "string_starts_with": "web-"})
        ));
        assert!(holds(
            json!({"variable": "$.steps.check.name", "string_contains": "b-1"})
        ));
        assert!(holds(
            json!({"variable": "$.steps.check.nothing", "exists": false})
        ));
        assert!(!holds(
            json!({"variable": "$.steps.check.nothing", "string_equals": "x"})
        ));
        // A mistyped value is false, not an error.
        assert!(!holds(
            json!({"variable": "$.inputs.user", "numeric_greater_than": 1})
        ));
        assert!(holds(json!({"and": [
            {"variable": "$.inputs.user", "exists": true},
            {"not": {"variable": "$.steps.check.ok", "boolean_equals": false}}
        ]})));
        assert!(holds(json!({"or": [
            {"variable": "$.inputs.user", "string_equals": "bob"},
            {"variable": "$.item.host", "string_equals": "b"}
        ]})));
    }

    #[test]
    fn conditions_must_have_one_operator_or_one_comparison_and_bounded_depth() {
        let bad = [
            json!({}),
            json!({"variable": "$.inputs.user"}),
            json!({"variable": "$.inputs.user", "exists": true, "string_equals": "a"}),
            json!({"and": [], "or": []}),
            json!({"and": []}),
            json!({"variable": "nope", "exists": true}),
        ];
        for b in bad {
            assert!(check_condition(&cond(b.clone())).is_err(), "{b}");
        }
        let mut deep = json!({"variable": "$.inputs.user", "exists": true});
        for _ in 0..=MAX_CONDITION_DEPTH {
            deep = json!({ "not": deep });
        }
        assert!(check_condition(&cond(deep)).is_err());
        let paths = check_condition(&cond(json!({"and": [
            {"variable": "$.inputs.user", "exists": true},
            {"variable": "$.steps.check.ok", "exists": true}
        ]})));
        assert_eq!(paths.map(|p| p.len()), Ok(2));
    }
}
