//! `log`: leveled messages into the run's event log, redacted and size-capped.

use crate::capabilities::bindings::log::{Host, Level};
use crate::runtime::RunStop;
use crate::runtime::limits::LimitExceeded;

use super::call::HostCall;
use super::{HostContext, Subject};

impl Host for HostContext {
    async fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let arg_bytes = message.len();
        let message = self.redactor.redact_str(&message);
        let call = HostCall {
            subject: Subject {
                detail: Some(format!("{} bytes", message.len())),
                ..Subject::default()
            },
            ..HostCall::local("log.write", "log", arg_bytes)
        };
        if !self.local_call(call).await? {
            return Ok(());
        }
        let accepted = self.events.push(level_name(level), message);
        if !accepted {
            let limit = self.limits.output_bytes;
            let stop = RunStop::Limit(LimitExceeded::Output {
                stream: "event log".into(),
                limit,
            });
            return Err(self.end_run(stop));
        }
        Ok(())
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}
