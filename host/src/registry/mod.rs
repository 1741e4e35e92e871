//! The module registry: task manifests (and, with signing, trusted task modules).

pub mod inputs;
pub mod manifest;
pub mod signing;
pub mod store;
