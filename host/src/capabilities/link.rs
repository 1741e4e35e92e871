//! How the sandbox runs a task with these capabilities: the generated bindings are linked
//! against [`HostContext`], and the task's `run` export is called through them. This is the
//! one place that ties the runtime ([`crate::runtime::TaskHost`]) to the capabilities; the
//! runtime itself knows nothing of them.

use wasmtime::Store;
use wasmtime::component::{HasData, InstancePre, Linker};

use super::HostContext;
use super::bindings::{Task, TaskPre};
use crate::runtime::{Finished, RunState, RunStop, TaskHost};

/// Selects the Warden part of the store as the data the generated host traits see.
struct WardenView;

impl HasData for WardenView {
    type Data<'a> = &'a mut HostContext;
}

impl TaskHost for HostContext {
    type Pre = TaskPre<RunState<HostContext>>;

    fn add_to_linker(linker: &mut Linker<RunState<Self>>) -> anyhow::Result<()> {
        Task::add_to_linker::<RunState<Self>, WardenView>(linker, |s| &mut s.host)
            .map_err(|e| anyhow::anyhow!("linking Warden capabilities: {e}"))
    }

    fn pre(pre: InstancePre<RunState<Self>>) -> wasmtime::Result<Self::Pre> {
        TaskPre::new(pre)
    }

    async fn call_run<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<RunState<Self>>,
    ) -> wasmtime::Result<Result<String, String>> {
        let instance = pre.instantiate_async(&mut *store).await?;
        instance.call_run(&mut *store).await
    }

    fn stop(&mut self) -> &mut Option<RunStop> {
        &mut self.stop
    }

    fn finish(self) -> Finished {
        Finished {
            events: self.events.into_events(),
            host_calls: self.host_calls,
            redactor: self.redactor,
        }
    }
}
