//! One remote run's view of the server: the [`ServerLink`] the capability code calls on a
//! remote bridge. Every request names the run; the server checks that this bridge holds it.
//!
//! Threat: a host call whose record is not durable on the server before its result reaches
//! the task, or a secret kept past its call. An append the server did not confirm fails the
//! run's audit for good (fail closed); a secret arrives base64 in a response body and is
//! decoded straight into zeroizing memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use zeroize::Zeroizing;

use super::enrol::error_text;
use super::remote::Agent;
use super::wire::{self, ClaimedRun};
use crate::audit::{AuditEntry, AuditError};
use crate::capabilities::server::{HeldLease, LinkError, ServerLink};
use crate::vault::{CredentialInfo, Secret};

/// How long a request may wait for a server that is restarting or unreachable before the
/// call that needs it fails.
const RECONNECT_FOR: Duration = Duration::from_secs(20);

/// One run's view of the server (see `crate::capabilities::server`).
pub struct RunLink {
    agent: Arc<Agent>,
    run_id: String,
    credentials: HashMap<String, CredentialInfo>,
    failed: AtomicBool,
}

impl RunLink {
    pub(super) fn new(agent: Arc<Agent>, run: &ClaimedRun) -> Self {
        RunLink {
            agent,
            run_id: run.run_id.clone(),
            credentials: run
                .credentials
                .iter()
                .map(|c| (c.name.clone(), c.clone()))
                .collect(),
            failed: AtomicBool::new(false),
        }
    }

    async fn post(&self, what: &str, body: Vec<u8>) -> Result<reqwest::Response, LinkError> {
        let path = format!("/v1/bridge/runs/{}/{what}", self.run_id);
        let response = self
            .agent
            .send_patiently(reqwest::Method::POST, &path, body, RECONNECT_FOR)
            .await
            .map_err(LinkError::Failed)?;
        match response.status().as_u16() {
            200..=299 => Ok(response),
            403 => Err(LinkError::Denied(message(response).await)),
            _ => Err(LinkError::Failed(format!(
                "the server refused: {}",
                error_text(response).await
            ))),
        }
    }
}

async fn message(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["error"]["message"]
        .as_str()
        .unwrap_or("refused")
        .to_string()
}

impl ServerLink for RunLink {
    fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
    ) -> BoxFuture<'_, Result<Vec<u64>, AuditError>> {
        Box::pin(async move {
            if self.failed.load(Ordering::SeqCst) {
                return Err(AuditError::Failed);
            }
            let body = serde_json::to_vec(&wire::AuditRequest { entries })
                .map_err(|e| AuditError::WriteFailed(e.to_string()))?;
            let written = match self.post("audit", body).await {
                Ok(response) => response
                    .json::<wire::AuditReply>()
                    .await
                    .map(|r| r.seqs)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            written.map_err(|e| {
                self.failed.store(true, Ordering::SeqCst);
                AuditError::WriteFailed(format!("the server did not record it: {e}"))
            })
        })
    }

    fn audit_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn credential(&self, name: &str) -> Option<CredentialInfo> {
        self.credentials.get(name).cloned()
    }

    fn acquire_lease(
        &self,
        credential: String,
        known: Option<String>,
    ) -> BoxFuture<'_, Result<HeldLease, LinkError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&wire::LeaseRequest { credential, known })
                .map_err(|e| LinkError::Failed(e.to_string()))?;
            self.post("lease", body)
                .await?
                .json::<HeldLease>()
                .await
                .map_err(|e| LinkError::Failed(e.to_string()))
        })
    }

    fn check_leases(
        &self,
        uses: Vec<(String, String, String)>,
    ) -> BoxFuture<'_, Result<Vec<Option<String>>, LinkError>> {
        Box::pin(async move {
            let uses = uses
                .into_iter()
                .map(|(lease, credential, target)| wire::LeaseUse {
                    lease,
                    credential,
                    target: Some(target),
                })
                .collect();
            let body = serde_json::to_vec(&wire::LeaseChecks { uses })
                .map_err(|e| LinkError::Failed(e.to_string()))?;
            self.post("lease-check", body)
                .await?
                .json::<wire::LeaseVerdicts>()
                .await
                .map(|v| v.denied)
                .map_err(|e| LinkError::Failed(e.to_string()))
        })
    }

    fn secret(
        &self,
        lease: String,
        credential: String,
        target: Option<String>,
    ) -> BoxFuture<'_, Result<Secret, LinkError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&wire::LeaseUse {
                lease,
                credential,
                target,
            })
            .map_err(|e| LinkError::Failed(e.to_string()))?;
            let response = self.post("secret", body).await?;
            let text = Zeroizing::new(
                response
                    .bytes()
                    .await
                    .map_err(|e| LinkError::Failed(e.to_string()))?
                    .to_vec(),
            );
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.as_slice())
                .map_err(|_| LinkError::Failed("the server sent a malformed secret".into()))?;
            Ok(Secret::from_bytes(bytes))
        })
    }
}
