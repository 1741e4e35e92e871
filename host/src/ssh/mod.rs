//! SSH and SFTP to targets, with credentials applied by the host.
//!
//! The guest names a target and a credential handle; this module authenticates with the
//! credential's password or key, verifies the server against the target's pinned host key,
//! runs commands (optionally under `sudo`, feeding the password on stdin) and transfers files.
//! It stops three threats:
//! - an impostor server receiving credentials: the host key is pinned, never learned
//!   ([`hostkey`]);
//! - a password leaking through the process table or environment of the target: it travels
//!   only inside the SSH authentication or on sudo's stdin, and only after sudo has asked for
//!   it ([`exec`]);
//! - a target exhausting the host: output, stdin, transfers and time are capped per call, and
//!   a dead target costs at most the connect timeout.
//!
//! Redaction of secrets echoed back in output is the caller's job (`crate::redact`): this
//! module returns raw bytes.
//!
//! Layout: [`pool`] keeps one authenticated connection per (target, credential) and
//! multiplexes channels on it; [`connect`] opens and authenticates one; [`exec`] runs one
//! command on a channel; [`sftp`] resolves remote paths on the target and uploads and downloads; [`error`] is the error type.

mod connect;
mod error;
mod exec;
mod hostkey;
mod pool;
mod sftp;
#[cfg(test)]
mod tests;

use std::time::Duration;

use secrecy::SecretString;

pub use error::SshError;
pub use exec::{MAX_COMMAND_LEN, MAX_OUTPUT_CAP, MAX_STDIN_BYTES};
pub use pool::{PendingTransfer, SshPool};
pub use sftp::{Access, MAX_DOWNLOAD_BYTES, MAX_PATH_LEN, MAX_UPLOAD_BYTES};

/// How a credential authenticates. The secret is only exposed to russh's authentication
/// call and to sudo's stdin.
pub enum SshAuth {
    Password(SecretString),
    /// An unencrypted OpenSSH private key (PEM text).
    PrivateKey(SecretString),
}

impl std::fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SshAuth::Password(_) => "Password([hidden])",
            SshAuth::PrivateKey(_) => "PrivateKey([hidden])",
        })
    }
}

/// A credential as the SSH layer needs it.
#[derive(Debug)]
pub struct SshCredential {
    /// Connection-cache key: must change whenever the secret changes (e.g. name + version),
    /// so that a rotated credential never rides on a connection made with the old one.
    pub id: String,
    pub username: String,
    pub auth: SshAuth,
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: String,
    /// Run under sudo. With a password credential: `sudo -S`, fed the password when sudo
    /// prompts. With a key credential: `sudo -n` (works only with NOPASSWD rules; otherwise
    /// sudo fails and its message is returned as the command's output).
    pub sudo: bool,
    /// Bytes written to the command's stdin, then EOF. `None`: EOF at once.
    pub stdin: Option<Vec<u8>>,
    /// Wall time for the whole call including opening the channel (not the connection).
    pub timeout: Duration,
    /// Bytes kept of stdout and of stderr each; the rest is read and discarded.
    pub output_cap: usize,
}

/// What a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_status: Option<i32>,
    pub exit_signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// Pool and connection settings.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// TCP connect + SSH handshake + authentication, per connection attempt.
    pub connect_timeout: Duration,
    /// A connection unused for this long is closed.
    pub idle_timeout: Duration,
    /// How many targets [`SshPool::fan_out`] works on at once.
    pub max_concurrency: usize,
    /// Channels open at once on one connection. OpenSSH's default `MaxSessions` is 10; more
    /// concurrent calls on one (target, credential) wait for a free channel.
    pub max_channels_per_connection: usize,
    /// Keepalive probe interval; three unanswered probes drop the connection.
    pub keepalive_interval: Duration,
    /// Wall time for one upload or download including opening the SFTP channel.
    pub transfer_timeout: Duration,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_concurrency: 64,
            max_channels_per_connection: 8,
            keepalive_interval: Duration::from_secs(30),
            transfer_timeout: Duration::from_secs(300),
        }
    }
}

/// Connects without pinning and returns the server's host key line (`algorithm base64`) for
/// an administrator to check and pin (`warden target scan`). Never stores it, never
/// authenticates.
pub async fn scan_host_key(
    address: &str,
    port: u16,
    timeout: Duration,
) -> Result<String, SshError> {
    connect::scan(address, port, timeout).await
}
