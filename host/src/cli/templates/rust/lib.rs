//! `{{name}}`: runs `uname -a` on a target and logs it.
//!
//! Build with `warden build`, then `warden sign` and `warden module push`.

use warden_sdk::ssh::ExecOptions;
use warden_sdk::{Task, credentials, export_task, log, params, ssh};

struct Main;

impl Task for Main {
    fn run() -> Result<String, String> {
        let target = params::text("target").ok_or("input `target` is required")?;
        let name = params::text("credential").ok_or("input `credential` is required")?;
        let credential = credentials::acquire(&name).map_err(|e| format!("{e}"))?;
        let out = ssh::exec(&target, &credential, "uname -a", ExecOptions::default())
            .map_err(|e| format!("{e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        log::info(&format!("{target}: {text}"));
        Ok(text)
    }
}

export_task!(Main);
