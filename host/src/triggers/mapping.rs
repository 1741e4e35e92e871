//! Input mapping: each mapped process input takes the value an RFC 6901 JSON pointer names
//! in the event's body, and must then pass the trigger's allow-list for that input; the
//! result is validated against the signed manifest by the dispatcher like any run's inputs.
//!
//! Threat: an event (from a compromised or confused detector) that names something the
//! trigger never meant to reach: another target, another user, an input the trigger does
//! not map (say the credential). Only mapped inputs are taken from the event; a missing
//! field, a `null` or an object, or a value (or list element) outside the allow-list
//! refuses the whole event, so nothing runs on a partial mapping.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{MAX_POINTER_BYTES, Trigger};

/// Most elements of a list value taken from an event. Bounds the run's inputs.
pub const MAX_LIST_ITEMS: usize = 256;

/// Longest string value taken from an event.
pub const MAX_VALUE_BYTES: usize = 4096;

/// Why an event does not map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("the body is not a JSON document")]
    NotJson,
    #[error("input {input}: the event has no value at {pointer}")]
    Missing { input: String, pointer: String },
    #[error("input {input}: {why}")]
    BadValue { input: String, why: String },
    #[error("input {input}: {value:?} is not in the trigger's allow-list")]
    NotAllowed { input: String, value: String },
}

impl MapError {
    /// The stable code of the refusal (the API's error code, the audit reason).
    pub fn code(&self) -> &'static str {
        match self {
            MapError::NotJson => "invalid_json",
            MapError::Missing { .. } | MapError::BadValue { .. } => "unmapped",
            MapError::NotAllowed { .. } => "not_allowed",
        }
    }
}

/// Checks a JSON pointer's syntax: empty (the whole document) or `/`-separated tokens in
/// which `~` only appears as `~0` or `~1`.
pub fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.len() > MAX_POINTER_BYTES {
        return Err(format!("a pointer is at most {MAX_POINTER_BYTES} bytes"));
    }
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "{pointer:?} is not a JSON pointer (it must start with /)"
        ));
    }
    let bytes = pointer.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err(format!("{pointer:?}: `~` must be followed by 0 or 1"));
        }
    }
    Ok(())
}

/// The run inputs an event's body maps to under `trigger`.
pub fn map_inputs(trigger: &Trigger, body: &Value) -> Result<BTreeMap<String, Value>, MapError> {
    let mut inputs = BTreeMap::new();
    for (input, pointer) in &trigger.map {
        let value = body.pointer(pointer).ok_or_else(|| MapError::Missing {
            input: input.clone(),
            pointer: pointer.clone(),
        })?;
        check_value(input, value)?;
        if let Some(allowed) = trigger.allow.get(input) {
            let items: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for item in items {
                let text = scalar_text(item);
                if !allowed.contains(&text) {
                    return Err(MapError::NotAllowed {
                        input: input.clone(),
                        value: text.chars().take(128).collect(),
                    });
                }
            }
        }
        inputs.insert(input.clone(), value.clone());
    }
    Ok(inputs)
}

/// The subject of an event for de-duplication: the value at `pointer`, as text; `None` if
/// the event has none (such an event is never a duplicate).
pub fn subject(body: &Value, pointer: &str) -> Option<String> {
    let value = body.pointer(pointer)?;
    let text = match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(text.chars().take(MAX_VALUE_BYTES).collect())
}

/// The text an allow-list compares: a string as is, anything else as its JSON.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Refuses `null`, objects, nested lists and oversized values (the manifest check would
/// refuse most of them too; these caps hold before it).
fn check_value(input: &str, value: &Value) -> Result<(), MapError> {
    let bad = |why: &str| MapError::BadValue {
        input: input.to_string(),
        why: why.to_string(),
    };
    let scalar_ok = |v: &Value| match v {
        Value::String(s) => s.len() <= MAX_VALUE_BYTES,
        Value::Bool(_) | Value::Number(_) => true,
        Value::Null | Value::Object(_) | Value::Array(_) => false,
    };
    match value {
        Value::Array(items) if items.len() > MAX_LIST_ITEMS => {
            Err(bad(&format!("a list of at most {MAX_LIST_ITEMS} items")))
        }
        Value::Array(items) if items.iter().all(scalar_ok) => Ok(()),
        Value::Array(_) => Err(bad("a list of strings, numbers or booleans")),
        v if scalar_ok(v) => Ok(()),
        _ => Err(bad(&format!(
            "a string (at most {MAX_VALUE_BYTES} bytes), number, boolean or list; got null or an object"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::{KeySpec, Rate};
    use serde_json::json;

    fn trigger() -> Trigger {
        Trigger {
            id: "t".into(),
            process_id: "p".into(),
            created_by: "alice".into(),
            created_ms: 0,
            key: KeySpec::Hmac {
                credential: "c".into(),
            },
            map: BTreeMap::from([
                ("user".into(), "/subject/user".into()),
                ("targets".into(), "/hosts".into()),
            ]),
            allow: BTreeMap::from([("targets".into(), ["web1".into(), "web2".into()].into())]),
            rate: Rate::default(),
            max_concurrent: 1,
            dedupe: None,
            store_body: false,
            require_approval: false,
            tolerance_secs: 300,
            rotated_ms: None,
        }
    }

    #[test]
    fn maps_pointers_and_applies_the_allow_list_to_each_element() {
        let t = trigger();
        let body = json!({"subject": {"user": "mallory"}, "hosts": ["web1", "web2"], "x": 1});
        let inputs = map_inputs(&t, &body).unwrap();
        assert_eq!(inputs["user"], "mallory");
        assert_eq!(inputs["targets"], json!(["web1", "web2"]));
        assert_eq!(inputs.len(), 2, "unmapped fields never become inputs");
        let outside = json!({"subject": {"user": "m"}, "hosts": ["web1", "db1"]});
        assert!(matches!(
            map_inputs(&t, &outside),
            Err(MapError::NotAllowed { .. })
        ));
        let scalar_outside = json!({"subject": {"user": "m"}, "hosts": "db1"});
        assert!(matches!(
            map_inputs(&t, &scalar_outside),
            Err(MapError::NotAllowed { .. })
        ));
    }

    #[test]
    fn missing_null_and_object_values_do_not_map() {
        let t = trigger();
        for body in [
            json!({"hosts": ["web1"]}),
            json!({"subject": {"user": null}, "hosts": ["web1"]}),
            json!({"subject": {"user": {"a": 1}}, "hosts": ["web1"]}),
            json!({"subject": {"user": "m"}, "hosts": [["web1"]]}),
        ] {
            let err = map_inputs(&t, &body).unwrap_err();
            assert_eq!(err.code(), "unmapped", "{body}: {err}");
        }
    }

    #[test]
    fn pointer_syntax_is_rfc_6901() {
        for ok in ["", "/a", "/a/0", "/a~1b", "/m~0n", "/"] {
            assert!(check_pointer(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "/a~",
            "/a~2",
            &format!("/{}", "x".repeat(MAX_POINTER_BYTES)),
        ] {
            assert!(check_pointer(bad).is_err(), "{bad}");
        }
        assert_eq!(
            subject(&json!({"a/b": {"~": "v"}}), "/a~1b/~0").as_deref(),
            Some("v")
        );
    }
}
