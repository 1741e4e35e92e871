//! Enrolment of a remote bridge, and how it reaches its server: the one-time token is
//! redeemed for a registration of the bridge's own ed25519 key (generated here, written 0600,
//! never sent), and the server is pinned — by the fingerprint the operator gave, or by the
//! certificate a CA or the system roots vouched for at enrolment.
//!
//! Threat: a bridge talking to an impostor. Every client this module builds verifies the
//! server per [`Trust`]; plain `http://` is accepted for a loopback server only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::remote::VERSION;
use super::wire;

/// How the bridge knows its server: what `bridge.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    pub bridge_id: String,
    pub zone: String,
    /// The server's base URL.
    pub server: String,
    /// How the server's certificate is verified.
    pub trust: Trust,
}

/// How the server's TLS certificate is verified.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Trust {
    /// The pinned SHA-256 fingerprint of the server's certificate (`sha256:…`).
    pub fingerprint: Option<String>,
    /// A CA certificate file.
    pub ca: Option<PathBuf>,
}

pub(super) const KEY_FILE: &str = "bridge.key";
pub(super) const IDENTITY_FILE: &str = "bridge.json";

/// Enrols a new bridge in `dir` with `token` at `server`: generates its key (0600), registers
/// it, pins the server, and writes `bridge.json`.
pub async fn enroll(
    dir: &Path,
    server: &str,
    token: &str,
    trust: Trust,
    name: &str,
) -> anyhow::Result<Identity> {
    if dir.join(IDENTITY_FILE).exists() {
        bail!(
            "{} already holds an enrolled bridge; use another --data directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, seed.as_mut());
    let key = SigningKey::from_bytes(&seed);
    let server = server.trim_end_matches('/').to_string();
    let mut trust = trust;
    if let Some(rest) = server.strip_prefix("http://") {
        if trust.fingerprint.is_some() || trust.ca.is_some() {
            bail!("--server-fingerprint and --ca need an https:// server URL");
        }
        let host = rest.split(['/', ':']).next().unwrap_or("");
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            bail!(
                "the server URL is plain http:// to another machine: the bridge's secrets would \
                 cross the network in clear; use https://"
            );
        }
    } else if trust.fingerprint.is_none() {
        // Verified by the CA or the system roots now; pinned from then on, so that a later
        // certificate from the same CA cannot stand in for this server.
        let seen = crate::tls::observe_fingerprint(
            &server,
            &crate::tls::ServerTrust::from_args(trust.ca.as_deref(), None)?,
        )
        .await?;
        trust.fingerprint = Some(seen.to_string());
        trust.ca = None;
    }
    let http = http_client(&trust)?;
    let request = wire::EnrollRequest {
        token: token.to_string(),
        public_key: hex::encode(key.verifying_key().as_bytes()),
        name: name.to_string(),
        version: VERSION.to_string(),
    };
    let response = http
        .post(format!("{server}/v1/bridges/enroll"))
        .json(&request)
        .send()
        .await
        .map_err(|e| reach_error(&trust, &server, &e))?;
    if !response.status().is_success() {
        bail!("enrolment refused: {}", error_text(response).await);
    }
    let reply: wire::EnrollReply = response.json().await?;
    write_private(&dir.join(KEY_FILE), hex::encode(seed.as_ref()).as_bytes())?;
    let identity = Identity {
        bridge_id: reply.bridge_id,
        zone: reply.zone,
        server,
        trust,
    };
    std::fs::write(
        dir.join(IDENTITY_FILE),
        serde_json::to_vec_pretty(&identity)?,
    )?;
    Ok(identity)
}

/// Writes `bytes` to a new file readable by its owner only (mode set before any byte).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// The HTTPS client that verifies the server per `trust`.
pub(super) fn http_client(trust: &Trust) -> anyhow::Result<reqwest::Client> {
    crate::tls::ServerTrust::from_args(trust.ca.as_deref(), trust.fingerprint.as_deref())?
        .client_builder()?
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(VERSION)
        .build()
        .context("building the HTTPS client")
}

/// Why the server could not be reached, in one sentence (a certificate that does not match
/// the pin is said so).
pub(super) fn reach_error(trust: &Trust, server: &str, e: &reqwest::Error) -> anyhow::Error {
    let explained =
        crate::tls::ServerTrust::from_args(trust.ca.as_deref(), trust.fingerprint.as_deref())
            .ok()
            .and_then(|t| t.explain(e));
    match explained {
        Some(why) => anyhow::anyhow!("refusing the server at {server}: {why}; nothing was sent"),
        None => anyhow::anyhow!("cannot reach the server at {server}: {e}"),
    }
}

pub(super) async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or("");
    format!("{status}: {message}")
}
