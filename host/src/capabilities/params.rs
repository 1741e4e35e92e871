//! `params`: the run's inputs, validated by the host before the run started.

use crate::runtime::bindings::params::{Host, Param, Value};

use super::{HostContext, Subject};

impl Host for HostContext {
    async fn all(&mut self) -> wasmtime::Result<Vec<Param>> {
        let call = self.begin("params.all", 0).await?;
        let allowed = self
            .interface_call(call, "params", Subject::default())
            .await?;
        Ok(if allowed {
            self.params.clone()
        } else {
            Vec::new()
        })
    }

    async fn get(&mut self, name: String) -> wasmtime::Result<Option<Value>> {
        let call = self.begin("params.get", name.len()).await?;
        let subject = Subject {
            detail: Some(format!("param: {name}")),
            ..Subject::default()
        };
        if !self.interface_call(call, "params", subject).await? {
            return Ok(None);
        }
        Ok(self
            .params
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.clone()))
    }
}
