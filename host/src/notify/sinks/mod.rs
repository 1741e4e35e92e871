//! The destinations: Standard Webhooks endpoints, syslog collectors, JSON-lines files.

pub mod file;
pub mod syslog;
pub mod webhook;
