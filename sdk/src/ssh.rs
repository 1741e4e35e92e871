//! SSH commands on targets. The host authenticates with the credential, verifies the
//! target's pinned host key and redacts secrets from the output.

use crate::Error;
use crate::bindings::warden::task::ssh as raw;
pub use crate::bindings::warden::task::ssh::{ExecOptions, ExecOutput, TargetResult};
use crate::credentials::Credential;

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            sudo: false,
            stdin: None,
            timeout_ms: None,
        }
    }
}

impl ExecOptions {
    /// Options that run the command under `sudo` (the host feeds the password on stdin).
    ///
    /// ```no_run
    /// let opts = warden_sdk::ssh::ExecOptions::sudo();
    /// assert!(opts.sudo);
    /// ```
    pub fn sudo() -> Self {
        ExecOptions {
            sudo: true,
            ..Self::default()
        }
    }

    /// Sets the bytes written to the command's stdin.
    ///
    /// ```no_run
    /// let opts = warden_sdk::ssh::ExecOptions::default().with_stdin(b"hello\n".to_vec());
    /// ```
    pub fn with_stdin(mut self, stdin: Vec<u8>) -> Self {
        self.stdin = Some(stdin);
        self
    }

    /// Sets the command's timeout in milliseconds (the host caps it).
    ///
    /// ```no_run
    /// let opts = warden_sdk::ssh::ExecOptions::default().with_timeout_ms(5_000);
    /// ```
    pub fn with_timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }
}

impl ExecOutput {
    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }
}

/// Runs a command on one target.
///
/// ```no_run
/// use warden_sdk::{credentials, ssh};
/// let cred = credentials::acquire("web-admin")?;
/// let out = ssh::exec("web-1", &cred, "uptime", ssh::ExecOptions::default())?;
/// println!("{}", out.stdout_text());
/// # Ok::<(), warden_sdk::Error>(())
/// ```
pub fn exec(
    target: &str,
    credential: &Credential,
    command: &str,
    options: ExecOptions,
) -> Result<ExecOutput, Error> {
    raw::exec(target, credential, command, &options)
}

/// Runs a command on many targets concurrently; one result per target, in order.
///
/// ```no_run
/// use warden_sdk::{credentials, ssh};
/// let cred = credentials::acquire("web-admin")?;
/// let targets = vec!["web-1".to_string(), "web-2".to_string()];
/// for r in ssh::exec_many(&targets, &cred, "uptime", ssh::ExecOptions::default()) {
///     match r.outcome {
///         Ok(out) => println!("{}: {}", r.target, out.stdout_text()),
///         Err(e) => println!("{}: {e}", r.target),
///     }
/// }
/// # Ok::<(), warden_sdk::Error>(())
/// ```
pub fn exec_many(
    targets: &[String],
    credential: &Credential,
    command: &str,
    options: ExecOptions,
) -> Vec<TargetResult> {
    raw::exec_many(targets, credential, command, &options)
}
