//! The shared `error` type: how host-side failures become guest-visible errors.

use crate::capabilities::bindings::types::{Error, Host};
use crate::ssh::SshError;

use super::HostContext;

impl Host for HostContext {}

/// `kind: message` for audit outcomes and logs.
pub(crate) fn describe(error: &Error) -> String {
    let (kind, message) = match error {
        Error::Denied(m) => ("denied", m),
        Error::NotFound(m) => ("not-found", m),
        Error::InvalidArgument(m) => ("invalid-argument", m),
        Error::Unavailable(m) => ("unavailable", m),
        Error::Unreachable(m) => ("unreachable", m),
        Error::ConnectionRefused(m) => ("connection-refused", m),
        Error::HostKeyMismatch(m) => ("host-key-mismatch", m),
        Error::AuthFailed(m) => ("auth-failed", m),
        Error::Timeout(m) => ("timeout", m),
        Error::Remote(m) => ("remote", m),
        Error::Internal(m) => ("internal", m),
    };
    format!("{kind}: {message}")
}

/// Maps an SSH-layer failure to the guest's error, case for case.
pub(crate) fn from_ssh(error: SshError) -> Error {
    let message = error.to_string();
    match error {
        SshError::Unreachable(_) => Error::Unreachable(message),
        SshError::ConnectionRefused(_) => Error::ConnectionRefused(message),
        SshError::HostKeyMismatch { .. } => Error::HostKeyMismatch(message),
        SshError::AuthFailed(_) => Error::AuthFailed(message),
        SshError::Timeout(_) => Error::Timeout(message),
        SshError::Remote(_) => Error::Remote(message),
        SshError::NotFound(_) => Error::NotFound(message),
        SshError::InvalidArgument(_) => Error::InvalidArgument(message),
        SshError::Cancelled => Error::Unavailable("the run was stopped during the call".into()),
        SshError::Internal(detail) => {
            tracing::warn!(%detail, "ssh internal error");
            Error::Internal("the host failed to complete the call".into())
        }
    }
}

/// A host-side failure the guest should not see the detail of.
pub(crate) fn internal(context: &str, error: impl std::fmt::Display) -> Error {
    tracing::warn!(%error, "{context}");
    Error::Internal(format!("{context} failed on the host"))
}
