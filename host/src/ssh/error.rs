//! The SSH layer's error type: one variant per outcome a guest must be able to tell apart.
//!
//! Messages name targets, users, paths and fingerprints, never secrets: they flow to the guest
//! and into audit records. Library errors are rendered through [`SshError::remote`] and
//! friends, which only see russh/SFTP error values (which carry no credential bytes).

/// Why an SSH operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    /// No route, no TCP answer, or no SSH answer within the connect timeout (a dead host).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The TCP connection was actively refused (nothing listens on the port).
    #[error("connection refused: {0}")]
    ConnectionRefused(String),
    /// The server offered a host key other than the pinned one; nothing was sent to it.
    #[error("host key mismatch: expected {expected}, server offered {offered}")]
    HostKeyMismatch { expected: String, offered: String },
    /// The server rejected the credential, or sudo rejected the password.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The command or transfer did not finish within its timeout.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The remote side failed: a refused channel, an SFTP error, a dropped connection.
    #[error("remote error: {0}")]
    Remote(String),
    /// A remote file does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request itself is malformed or over a cap.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A bug or local failure in the host.
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller cancelled the call; a running command was signalled and its channel closed.
    #[error("cancelled")]
    Cancelled,
}

impl SshError {
    /// A short stable name for the variant, for audit records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SshError::Unreachable(_) => "unreachable",
            SshError::ConnectionRefused(_) => "connection-refused",
            SshError::HostKeyMismatch { .. } => "host-key-mismatch",
            SshError::AuthFailed(_) => "auth-failed",
            SshError::Timeout(_) => "timeout",
            SshError::Remote(_) => "remote",
            SshError::NotFound(_) => "not-found",
            SshError::InvalidArgument(_) => "invalid-argument",
            SshError::Internal(_) => "internal",
            SshError::Cancelled => "cancelled",
        }
    }
}
