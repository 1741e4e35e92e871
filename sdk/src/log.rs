//! Leveled messages into the run's event log. The host redacts secrets and caps sizes.

use crate::bindings::warden::task::log as raw;
pub use crate::bindings::warden::task::log::Level;

/// Writes a message at the given level.
///
/// ```no_run
/// warden_sdk::log::write(warden_sdk::log::Level::Debug, "checked 3 targets");
/// ```
pub fn write(level: Level, message: &str) {
    raw::write(level, message)
}

/// Writes a debug message.
///
/// ```no_run
/// warden_sdk::log::debug("connecting");
/// ```
pub fn debug(message: &str) {
    raw::write(Level::Debug, message)
}

/// Writes an info message.
///
/// ```no_run
/// warden_sdk::log::info("rotation done");
/// ```
pub fn info(message: &str) {
    raw::write(Level::Info, message)
}

/// Writes a warning.
///
/// ```no_run
/// warden_sdk::log::warn("target web-2 skipped");
/// ```
pub fn warn(message: &str) {
    raw::write(Level::Warn, message)
}

/// Writes an error message.
///
/// ```no_run
/// warden_sdk::log::error("upload failed");
/// ```
pub fn error(message: &str) {
    raw::write(Level::Error, message)
}
