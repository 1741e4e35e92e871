//! Warden's integration tests: one binary (faster to link), one module per area.
//!
//! Every test uses real parts: guest components built from `guest-examples/` and
//! `tests/fixtures/`, sled files in a temporary data directory, OpenSSH `sshd` on
//! loopback, and the real `warden` command line.

mod access;
mod accounts;
mod api;
mod approvals;
mod bridges;
mod cli;
mod cli_inputs;
mod cluster;
mod console;
mod db;
mod grant;
mod languages;
mod leases;
mod notify;
mod openapi;
mod operations;
mod paging;
mod pg;
mod queue;
mod redact;
mod rotation;
mod rotation_attacks;
mod rotation_reconcile;
mod sandbox;
mod spine;
mod ssh;
mod support;
mod tls;
mod triggers;
mod vault;
mod workflows;
