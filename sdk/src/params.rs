//! Typed access to the run's inputs. The host validated them against the module's
//! manifest before the run started, so a declared input has its declared type.

use crate::bindings::warden::task::params as raw;
pub use crate::bindings::warden::task::params::{Param, Value};

/// Every input of the run, in name order.
pub fn all() -> Vec<Param> {
    raw::all()
}

/// One input by name, whatever its type.
///
/// ```no_run
/// if let Some(v) = warden_sdk::params::get("dry-run") {
///     println!("dry-run is {v:?}");
/// }
/// ```
pub fn get(name: &str) -> Option<Value> {
    raw::get(name)
}

/// A text input, or `None` when absent or not text.
///
/// ```no_run
/// let user = warden_sdk::params::text("user").unwrap_or_default();
/// ```
pub fn text(name: &str) -> Option<String> {
    match raw::get(name)? {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

/// An integer input, or `None` when absent or not an integer.
///
/// ```no_run
/// let days = warden_sdk::params::integer("days").unwrap_or(30);
/// ```
pub fn integer(name: &str) -> Option<i64> {
    match raw::get(name)? {
        Value::Integer(i) => Some(i),
        _ => None,
    }
}

/// A float input, or `None` when absent or not a number.
///
/// ```no_run
/// let ratio = warden_sdk::params::number("ratio").unwrap_or(0.5);
/// ```
pub fn number(name: &str) -> Option<f64> {
    match raw::get(name)? {
        Value::Number(n) => Some(n),
        _ => None,
    }
}

/// A boolean input, or `None` when absent or not a flag.
///
/// ```no_run
/// let dry_run = warden_sdk::params::flag("dry-run").unwrap_or(true);
/// ```
pub fn flag(name: &str) -> Option<bool> {
    match raw::get(name)? {
        Value::Flag(b) => Some(b),
        _ => None,
    }
}

/// A list-of-text input. A single text value is returned as a one-item list, so a task can
/// take `targets` as either.
///
/// ```no_run
/// let targets = warden_sdk::params::text_list("targets").unwrap_or_default();
/// ```
pub fn text_list(name: &str) -> Option<Vec<String>> {
    match raw::get(name)? {
        Value::TextList(l) => Some(l),
        Value::Text(s) => Some(vec![s]),
        _ => None,
    }
}
