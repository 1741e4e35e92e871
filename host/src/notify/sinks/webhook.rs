//! Webhook delivery following the Standard Webhooks specification: headers `webhook-id`
//! (the line's stable id, so a receiver deduplicates at-least-once delivery),
//! `webhook-timestamp` and `webhook-signature` over `{id}.{timestamp}.{body}` (`v1,` HMAC-
//! SHA256 under the `whsec_` secret; `v1a,` ed25519), the spec's retry schedule with jitter,
//! 410 Gone disabling the endpoint, and a per-request timeout. `https://` receivers are
//! verified by a pinned certificate, a CA file, or the system's trust store.
//!
//! Threat: requests to places no administrator allowed, and secrets leaking. The client
//! connects only to the addresses the allow-list check returned (no DNS after it), never
//! follows a redirect, ignores proxy variables, and the secrets come from the vault per
//! request into zeroizing buffers; no error or audit text carries them.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, KeyInit, Mac};
use zeroize::Zeroizing;

use crate::notify::config::{AllowList, WebhookConfig};
use crate::vault::Vault;

/// What one attempt (or a whole schedule) came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// 410 Gone: the endpoint asks never to be called again.
    Gone,
    /// Worth retrying: the reason (status or transport error, never the body).
    Failed(String),
    /// Will never work as configured (secret missing, destination no longer allowed).
    Refused(String),
}

/// The signature header value for `content` (`{id}.{timestamp}.{body}`).
pub fn signature_header(
    content: &[u8],
    hmac_secret: Option<&[u8]>,
    ed25519: Option<&SigningKey>,
) -> String {
    let mut parts = Vec::new();
    if let Some(secret) = hmac_secret
        && let Ok(mut mac) = Hmac::<sha2_11::Sha256>::new_from_slice(secret)
    {
        mac.update(content);
        parts.push(format!("v1,{}", B64.encode(mac.finalize().into_bytes())));
    }
    if let Some(key) = ed25519 {
        parts.push(format!("v1a,{}", B64.encode(key.sign(content).to_bytes())));
    }
    parts.join(" ")
}

/// Decodes a `whsec_<base64>` secret (the prefix is optional) into its key bytes.
pub fn decode_hmac_secret(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let text = text.strip_prefix(b"whsec_").unwrap_or(text);
    let text: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let text = Zeroizing::new(text);
    B64.decode(text.as_slice())
        .ok()
        .filter(|k| !k.is_empty())
        .map(Zeroizing::new)
}

/// Decodes a base64 32-byte ed25519 seed (`whsk_` prefix optional).
pub fn decode_signing_key(text: &[u8]) -> Option<SigningKey> {
    let text = text.strip_prefix(b"whsk_").unwrap_or(text);
    let text: Zeroizing<Vec<u8>> = Zeroizing::new(
        text.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    let bytes = Zeroizing::new(B64.decode(text.as_slice()).ok()?);
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(bytes.as_slice().try_into().ok()?);
    Some(SigningKey::from_bytes(&seed))
}

/// One webhook endpoint.
pub struct Webhook {
    pub config: WebhookConfig,
    pub vault: Vault,
    pub allow: AllowList,
    /// The client pinned to the addresses last checked (kept for connection reuse; rebuilt
    /// when the check returns other addresses).
    client: std::sync::Mutex<Option<(Vec<std::net::SocketAddr>, reqwest::Client)>>,
}

impl Webhook {
    pub fn new(config: WebhookConfig, vault: Vault, allow: AllowList) -> Self {
        Self {
            config,
            vault,
            allow,
            client: std::sync::Mutex::new(None),
        }
    }

    /// A client that connects only to `destination`'s checked addresses.
    fn client_for(
        &self,
        destination: &crate::notify::config::Destination,
    ) -> Option<reqwest::Client> {
        let mut cached = self.client.lock().ok()?;
        if let Some((addrs, client)) = cached.as_ref()
            && *addrs == destination.addrs
        {
            return Some(client.clone());
        }
        // https: verified by the sink's pin, CA file or the system's roots (see
        // `crate::tls::ServerTrust`); checked when the sink was configured.
        let builder = if self.config.url.starts_with("https://") {
            self.config
                .trust()
                .ok()
                .and_then(|trust| trust.client_builder().ok())?
        } else {
            reqwest::Client::builder()
        };
        let client = builder
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .resolve_to_addrs(&destination.host, &destination.addrs)
            .build()
            .ok()?;
        *cached = Some((destination.addrs.clone(), client.clone()));
        Some(client)
    }

    /// One signed POST of `body` with id `id`.
    pub async fn attempt(&self, id: &str, body: &str) -> Attempt {
        let destination = match self.allow.check_url(&self.config.url).await {
            Ok(d) => d,
            Err(e) => return Attempt::Refused(e.0),
        };
        let hmac = match &self.config.secret_credential {
            None => None,
            Some(name) => match self.vault.secret(name) {
                Ok(secret) => match decode_hmac_secret(secret.expose()) {
                    Some(key) => Some(key),
                    None => {
                        return Attempt::Refused(format!(
                            "credential '{name}' is not a whsec_ secret"
                        ));
                    }
                },
                Err(_) => return Attempt::Refused(format!("credential '{name}' is unavailable")),
            },
        };
        let ed = match &self.config.signing_credential {
            None => None,
            Some(name) => match self.vault.secret(name) {
                Ok(secret) => match decode_signing_key(secret.expose()) {
                    Some(key) => Some(key),
                    None => {
                        return Attempt::Refused(format!(
                            "credential '{name}' is not a base64 ed25519 seed"
                        ));
                    }
                },
                Err(_) => return Attempt::Refused(format!("credential '{name}' is unavailable")),
            },
        };
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let content = format!("{id}.{timestamp}.{body}");
        let signature = signature_header(
            content.as_bytes(),
            hmac.as_ref().map(|k| k.as_slice()),
            ed.as_ref(),
        );
        let Some(client) = self.client_for(&destination) else {
            return Attempt::Failed("cannot build the HTTP client".into());
        };
        let sent = client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", &timestamp)
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) if response.status() == reqwest::StatusCode::GONE => Attempt::Gone,
            Ok(response) => Attempt::Failed(format!("HTTP {}", response.status().as_u16())),
            Err(e) if e.is_timeout() => Attempt::Failed("timed out".into()),
            Err(e) => match self.tls_refusal(&e) {
                Some(why) => Attempt::Failed(why),
                None if e.is_connect() => Attempt::Failed("connection failed".into()),
                None => Attempt::Failed("request failed".into()),
            },
        }
    }

    /// One sentence when `error` is the receiver failing TLS verification (wrong pin,
    /// unknown CA, no TLS at all).
    fn tls_refusal(&self, error: &reqwest::Error) -> Option<String> {
        let trust = self.config.trust().ok()?;
        trust.explain(error)
    }

    /// The first attempt and then one per step of the retry schedule (jittered), until one
    /// is delivered, gone or refused. Returns the outcome and the attempts made.
    pub async fn deliver(&self, id: &str, body: &str) -> (Attempt, u32) {
        let mut attempts = 0;
        let mut delays = self.config.retry_ms.iter();
        loop {
            attempts += 1;
            let outcome = self.attempt(id, body).await;
            if !matches!(outcome, Attempt::Failed(_)) {
                return (outcome, attempts);
            }
            let Some(delay) = delays.next() else {
                return (outcome, attempts);
            };
            tokio::time::sleep(jittered(*delay)).await;
        }
    }
}

/// `ms` ± up to 20%.
pub fn jittered(ms: u64) -> Duration {
    use rand::Rng;
    let spread = ms / 5;
    let low = ms - spread;
    let high = ms.saturating_add(spread);
    Duration::from_millis(rand::thread_rng().gen_range(low..=high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_matches_the_specification_example() {
        // The example of the Standard Webhooks reference implementations.
        let secret = decode_hmac_secret(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let content = br#"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#;
        assert_eq!(
            signature_header(content, Some(&secret), None),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn v1a_verifies_under_the_public_key_and_not_after_an_edit() {
        let key = decode_signing_key(&B64.encode([7u8; 32]).into_bytes()).unwrap();
        let header = signature_header(b"a.1.{}", None, Some(&key));
        let sig = B64.decode(header.strip_prefix("v1a,").unwrap()).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        assert!(key.verifying_key().verify_strict(b"a.1.{}", &sig).is_ok());
        assert!(key.verifying_key().verify_strict(b"a.2.{}", &sig).is_err());
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jittered(1000).as_millis();
            assert!((800..=1200).contains(&d), "{d}");
        }
        assert_eq!(jittered(0), Duration::ZERO);
    }
}
