//! A run's inputs as the domain knows them: typed values, validated against the module's
//! manifest ([`super::manifest::Manifest::resolve_inputs`]) before the run starts.
//!
//! These are Warden's own types, not the WIT-generated ones: the registry, the run store and
//! the bridge speak them, and only the `params` capability turns them into what the guest
//! receives. The variants mirror the WIT `params.value` variant one to one.

use serde::{Deserialize, Serialize};

/// One typed input value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Value {
    /// A string.
    Text(String),
    /// A signed 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Number(f64),
    /// A boolean.
    Flag(bool),
    /// A list of strings (for example target names).
    TextList(Vec<String>),
}

/// A named input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// The input's name, as declared in the manifest.
    pub name: String,
    /// Its value.
    pub value: Value,
}
