//! Issue 10, items 6 and 7, over real HTTP: roles no wider than the seed's model, and
//! revocation. Each test is written as the attacker would try it, and fails on a server
//! without the rule:
//! - a custom Manage Privileged Process role trusting its own publisher, or naming in a
//!   grant a credential or target it was never granted (create and update);
//! - a Super Administrator reading another administrator's unshared process through the
//!   audit, the resource view, run routes, SSE, leases or approvals;
//! - an administrator minting a user's token to run or approve as them;
//! - the creator of a schedule approving the runs it fires;
//! - a Password Auditor reading free text (paths, target stderr) in the resource view;
//! - revoked, expired, disabled and deleted users' tokens, and distrusted publishers'
//!   modules (new runs, scheduled runs and runs already awaiting approval).
//!
//! Layout: this file holds the shared helpers; `roles` the trust, grant and audit-visibility
//! tests; `delegation` token minting, schedules and the auditor's view; `revocation` item 7
//! and the CLI.

mod delegation;
mod revocation;
mod roles;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use warden_tests::http::{Reply, Server, new_key};

/// The id of a created thing, from a 201 reply.
pub(super) fn id_of(r: &Reply) -> String {
    assert!(r.status.is_success(), "{} {}", r.status, r.text);
    r.body["id"].as_str().expect("id").to_string()
}

/// A server with `hello` published by publisher `acme`; its digest.
pub(super) async fn hello_server() -> (Server, String, ed25519_dalek::SigningKey) {
    let server = Server::start().await;
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("hello", &key).await;
    (server, digest, key)
}

/// Creates a process as `token`'s user with `grant` and `approvals`; the reply.
pub(super) async fn process(
    server: &Server,
    token: &str,
    name: &str,
    digest: &str,
    grant: Value,
    approvals: u32,
) -> Reply {
    let body = json!({ "name": name, "module_digest": digest, "grant": grant,
        "required_approvals": approvals });
    server.post("/v1/processes", token, body).await
}

pub(super) async fn delete(server: &Server, path: &str, token: &str) -> Reply {
    server
        .request(Method::DELETE, path, Some(token), None)
        .await
}

/// Every audit record `token` may see, as text.
pub(super) async fn audit_text(server: &Server, token: &str, query: &str) -> String {
    let r = server.get(&format!("/v1/audit?{query}"), token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.text
}
