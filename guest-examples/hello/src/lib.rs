//! `hello`: the demo task. Reads its inputs and writes to the run's event log.

use warden_sdk::{Task, export_task, log, params};

struct Hello;

impl Task for Hello {
    fn run() -> Result<String, String> {
        let name = params::text("name").unwrap_or_else(|| "world".to_string());
        let times = params::integer("times").unwrap_or(1).clamp(1, 10);
        for i in 1..=times {
            log::info(&format!("greeting {i} of {times} for {name}"));
        }
        Ok(format!("hello, {name}"))
    }
}

export_task!(Hello);
