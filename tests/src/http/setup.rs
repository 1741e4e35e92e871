//! Bootstrap and publish: the first administrator made directly in the store (in a running
//! server's state or in a data directory a child server will open), users with their own
//! tokens, publishers trusted, guests signed with their manifests and uploaded.

use std::collections::BTreeSet;
use std::path::Path;

use ed25519_dalek::SigningKey;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::json;
use warden_host::registry::manifest::Manifest;
use warden_host::registry::signing;
use warden_host::store::DataDir;
use warden_host::users::UserStore;

use super::{IssuedToken, Server, Uploaded, reply};
use crate::guests;

/// The role the bootstrapped administrator holds.
pub const ADMIN_ROLE: &str = "privileged-administrator";

/// Creates the first Privileged Administrator `admin` directly in the store; its token.
pub fn bootstrap_admin(users: &UserStore) -> String {
    bootstrap_admin_as(users, "bootstrap")
}

/// [`bootstrap_admin`] with the token labelled `label`.
pub fn bootstrap_admin_as(users: &UserStore, label: &str) -> String {
    let roles = BTreeSet::from([ADMIN_ROLE.to_string()]);
    users.create_user("admin", roles).expect("create admin");
    let issued = users.issue_token("admin", label).expect("issue token");
    issued.token.expose_secret().to_string()
}

/// Initialises a data directory (file master key) with `admin` (as `warden init` would) and
/// returns its token, closing the database so a server process can open it.
pub fn init_data_dir(data: &Path) -> String {
    let dir = DataDir::init(data).expect("init data dir");
    admin_in(&dir)
}

/// Bootstraps `admin` in the already opened data directory `dir`; its token.
pub fn admin_in(dir: &DataDir) -> String {
    let users = UserStore::open(&dir.db).expect("user store");
    bootstrap_admin(&users)
}

/// Mints `user`'s own token with its enrollment token (what a new user does once): the
/// token an administrator mints for someone else is good for nothing else.
pub async fn redeem(client: &reqwest::Client, base: &str, user: &str, enrollment: &str) -> String {
    let resp = client
        .post(format!("{base}/v1/users/{user}/tokens"))
        .bearer_auth(enrollment)
        .json(&json!({ "label": "own" }))
        .send()
        .await
        .expect("redeem request");
    let r = reply(resp).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let issued: IssuedToken = r.json();
    assert_eq!(issued.kind.as_deref(), Some("full"), "{}", r.text);
    issued.token
}

pub fn new_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

pub fn component_bytes(name: &str) -> Vec<u8> {
    std::fs::read(guests::component(name)).expect("guest component built")
}

pub fn manifest_text(name: &str) -> String {
    std::fs::read_to_string(guests::manifest(name)).expect("guest manifest")
}

/// `component` signed with `manifest` (TOML text) by `key`.
pub fn signed(component: &str, manifest: &str, key: &SigningKey) -> Vec<u8> {
    signed_bytes(&component_bytes(component), manifest, key)
}

/// The component `bytes` signed with `manifest` (TOML text) by `key`.
pub fn signed_bytes(bytes: &[u8], manifest: &str, key: &SigningKey) -> Vec<u8> {
    let manifest = Manifest::parse(manifest).expect("manifest parses");
    signing::sign(bytes, &manifest, key).expect("sign")
}

impl Server {
    pub async fn upload(&self, bytes: Vec<u8>) -> super::Reply {
        self.post_raw("/v1/modules", &self.admin, "application/wasm", bytes)
            .await
    }

    /// Trusts `key` as publisher `name`.
    pub async fn trust(&self, name: &str, key: &SigningKey) {
        let body =
            json!({ "name": name, "public_key": hex::encode(key.verifying_key().as_bytes()) });
        let r = self.post("/v1/publishers", &self.admin, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    /// Uploads signed module bytes that must be accepted; returns the digest.
    pub async fn publish_signed(&self, signed: Vec<u8>) -> String {
        let r = self.upload(signed).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json::<Uploaded>().digest
    }

    /// Signs `component` with its own manifest, uploads it, and returns its digest.
    pub async fn publish(&self, component: &str, key: &SigningKey) -> String {
        self.publish_signed(signed(component, &manifest_text(component), key))
            .await
    }

    /// Trusts a fresh key as publisher `publisher`, then publishes `component` signed by it.
    pub async fn publish_as(&self, publisher: &str, component: &str) -> String {
        let key = new_key();
        self.trust(publisher, &key).await;
        self.publish(component, &key).await
    }

    /// Creates a user with `roles` (as the admin) and returns a fresh API token for it.
    pub async fn user(&self, name: &str, roles: &[&str]) -> String {
        let r = self
            .post(
                "/v1/users",
                &self.admin,
                json!({ "name": name, "roles": roles }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = self
            .post(&format!("/v1/users/{name}/tokens"), &self.admin, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let enrollment = r.json::<IssuedToken>().token;
        self.redeem(name, &enrollment).await
    }

    /// Creates role `body` (`name`, `privileges`, optionally `credentials` and `targets`)
    /// as the admin; it must succeed.
    pub async fn role(&self, body: serde_json::Value) {
        let r = self.post("/v1/roles", &self.admin, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    /// Redeems `name`'s enrollment token (minted by an administrator) for the user's own
    /// full token, as the user would.
    pub async fn redeem(&self, name: &str, enrollment: &str) -> String {
        redeem(&self.client, &self.base, name, enrollment).await
    }
}
