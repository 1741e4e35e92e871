//! # Warden host: bridge, vault, audit and CLI
//!
//! Warden runs privileged IT tasks — rotate a password, push a key, collect logs, lock an
//! account — as WebAssembly components that never hold a credential. The guest gets opaque
//! handles; this crate authenticates, checks the grant, acts over SSH, redacts, and audits
//! every call.
//!
//! ## Layout
//!
//! - [`runtime`]: wasmtime engine, module cache, per-run store, limits, WASI with nothing
//!   granted.
//! - [`capabilities`]: the host side of each WIT interface, one file each; the grant check.
//! - [`bridge`]: executes a run (task + inputs + grant + limits), bracketed by audit records.
//! - [`vault`]: credentials encrypted at rest under a master key kept outside the database;
//!   run-scoped credential leases (`vault::lease`).
//! - [`audit`]: the append-only, hash-chained, durably flushed audit log.
//! - [`ssh`]: SSH and SFTP to targets with pinned host keys, pooled connections.
//! - [`targets`]: registered endpoints and their pinned host keys.
//! - [`policy`]: Cedar policies for roles and host calls, loaded from `policies/`.
//! - [`rotation`]: the credential rotation engine (generate, set, verify, promote,
//!   reconcile) and the administrator's password policy; no WIT types.
//! - [`redact`]: replaces every secret a run touched (and its encodings) in output.
//! - [`registry`]: task manifests; signing and verifying task modules.
//! - [`runs`]: processes and runs: persistence and the run state machine.
//! - [`store`]: the data directory and its keys.
//! - [`users`]: users, custom roles and API tokens (stored hashed, checked in constant time).
//! - [`notify`]: the audit stream exported to webhooks, syslog and files; alert rules.
//! - [`triggers`]: signed inbound events (Standard Webhooks) that start runs.
//! - [`api`]: the HTTP API (axum): routes, authentication, errors, OpenAPI.
//! - [`ui`]: the web console under `/ui/` (server-rendered, every page an API call as the user).
//! - [`tls`]: the server's TLS (certificate, self-signed by `warden init`) and the clients'
//!   verification of it (system roots, a CA file, or a pinned fingerprint).
//! - [`cli`]: the `warden` command line.

pub mod api;
pub mod audit;
pub mod bridge;
pub mod capabilities;
pub mod cli;
pub mod notify;
pub mod policy;
pub mod redact;
pub mod registry;
pub mod rotation;
pub mod runs;
pub mod runtime;
pub mod ssh;
pub mod store;
pub mod targets;
pub mod tls;
pub mod triggers;
pub mod ui;
pub mod users;
pub mod vault;
pub mod workflow;
