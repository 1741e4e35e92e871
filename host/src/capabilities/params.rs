//! `params`: the run's inputs, validated by the host before the run started. The run holds
//! them as domain values ([`crate::registry::inputs`]); this file alone turns them into the
//! WIT types the guest receives.

use super::bindings::params::{Host, Param, Value};
use crate::registry::inputs;

use super::call::HostCall;
use super::{HostContext, Subject};

impl Host for HostContext {
    async fn all(&mut self) -> wasmtime::Result<Vec<Param>> {
        let allowed = self
            .local_call(HostCall::local("params.all", "params", 0))
            .await?;
        Ok(if allowed {
            self.params.iter().map(to_wit).collect()
        } else {
            Vec::new()
        })
    }

    async fn get(&mut self, name: String) -> wasmtime::Result<Option<Value>> {
        let call = HostCall {
            subject: Subject {
                detail: Some(format!("param: {name}")),
                ..Subject::default()
            },
            ..HostCall::local("params.get", "params", name.len())
        };
        if !self.local_call(call).await? {
            return Ok(None);
        }
        Ok(self
            .params
            .iter()
            .find(|p| p.name == name)
            .map(|p| to_wit(p).value))
    }
}

/// An input as the guest receives it.
fn to_wit(param: &inputs::Param) -> Param {
    let value = match &param.value {
        inputs::Value::Text(s) => Value::Text(s.clone()),
        inputs::Value::Integer(i) => Value::Integer(*i),
        inputs::Value::Number(f) => Value::Number(*f),
        inputs::Value::Flag(b) => Value::Flag(*b),
        inputs::Value::TextList(l) => Value::TextList(l.clone()),
    };
    Param {
        name: param.name.clone(),
        value,
    }
}
