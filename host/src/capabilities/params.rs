//! `params`: the run's inputs, validated by the host before the run started.

use crate::runtime::bindings::params::{Host, Param, Value};

use super::{HostContext, Subject};
use crate::audit::Decision;

impl Host for HostContext {
    async fn all(&mut self) -> wasmtime::Result<Vec<Param>> {
        let call = self.begin("params.all", 0).await?;
        let params = self.params.clone();
        self.finish(call, Subject::default(), Decision::Allowed, Ok(params))
            .await
            .map(|r| r.unwrap_or_default())
    }

    async fn get(&mut self, name: String) -> wasmtime::Result<Option<Value>> {
        let call = self.begin("params.get", name.len()).await?;
        let value = self
            .params
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.clone());
        let subject = Subject {
            detail: Some(format!("param: {name}")),
            ..Subject::default()
        };
        self.finish(call, subject, Decision::Allowed, Ok(value))
            .await
            .map(|r| r.ok().flatten())
    }
}
