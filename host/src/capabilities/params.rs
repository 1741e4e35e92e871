//! `params`: the run's inputs, validated by the host before the run started.

use crate::runtime::bindings::params::{Host, Param, Value};

use super::call::HostCall;
use super::{HostContext, Subject};

impl Host for HostContext {
    async fn all(&mut self) -> wasmtime::Result<Vec<Param>> {
        let allowed = self
            .local_call(HostCall::local("params.all", "params", 0))
            .await?;
        Ok(if allowed {
            self.params.clone()
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
            .map(|p| p.value.clone()))
    }
}
