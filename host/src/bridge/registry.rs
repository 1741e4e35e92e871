//! The server's register of remote bridges: one-time enrolment tokens, the enrolled bridges
//! (id, zone, public key, revocation) and when each was last heard from.
//!
//! Threats and answers:
//! - *A leaked or replayed enrolment token.* A token is 32 random bytes shown once; only its
//!   SHA-256 is stored. It expires (at most [`MAX_TOKEN_TTL`]), is bound to one zone, and is
//!   redeemed by a compare-and-swap that marks it used, so of two enrolments with one token
//!   (on one server or several) exactly one succeeds. Every redemption, refused or not, is
//!   audited.
//! - *An impersonated bridge.* The bridge generates its ed25519 key itself; the server keeps
//!   only the public half, and every later request must be signed with it
//!   (`super::wire`). A revoked bridge stays listed (for the audit trail) and is refused.
//! - *A bridge that silently dies.* [`BridgeRegistry::seen`] records when it was last heard
//!   from; runs it holds end `lost` once that is older than the lost timeout
//!   (`crate::runs::cluster`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{AuditEntry, AuditLog, Decision};
use crate::store::{Database, Expect, StoreError, Table, TableDef};
use crate::targets::is_valid_label;

/// Enrolment tokens: SHA-256 (hex) of the token -> [`EnrolmentToken`] JSON.
pub const BRIDGE_TOKENS: TableDef = TableDef {
    name: "bridge_tokens",
    columns: &[],
    columns_of: None,
};

/// Enrolled bridges: id -> [`BridgeRecord`] JSON.
pub const BRIDGES: TableDef = TableDef {
    name: "bridges",
    columns: &[],
    columns_of: None,
};

/// When each bridge was last heard from: `bridge:<id>` -> [`Seen`] JSON (the key is the
/// holder name its runs are held under).
pub const BRIDGES_SEEN: TableDef = TableDef {
    name: "bridges_seen",
    columns: &[],
    columns_of: None,
};

/// What enrolment tokens start with (so a leaked one is recognisable in a scanner).
pub const TOKEN_PREFIX: &str = "wbt_";

/// Longest an enrolment token may stay valid.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest bridge name or version string.
const MAX_LABEL: usize = 64;

/// How often a bridge's "last seen" is written at most (per server): liveness needs seconds,
/// not every request.
const SEEN_EVERY_MS: u64 = 2_000;

/// The holder name of runs a bridge holds.
pub fn holder(bridge_id: &str) -> String {
    format!("bridge:{bridge_id}")
}

/// A stored enrolment token (never the token itself).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnrolmentToken {
    /// The zone the bridge it enrols will serve.
    pub zone: String,
    pub created_by: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// The bridge it enrolled, once used.
    pub used_by: Option<String>,
}

/// Why a bridge was revoked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    pub by: String,
    pub at_ms: u64,
    pub reason: String,
}

/// An enrolled bridge.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BridgeRecord {
    pub id: String,
    pub name: String,
    pub zone: String,
    /// The bridge's ed25519 public key, hex.
    pub public_key: String,
    /// The version it reported at enrolment (updated as it is seen).
    pub version: String,
    pub enrolled_ms: u64,
    /// Who created the token it enrolled with.
    pub enrolled_by: String,
    pub revoked: Option<Revocation>,
}

impl BridgeRecord {
    /// Its public key, parsed.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        let bytes: [u8; 32] = hex::decode(&self.public_key).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()
    }
}

/// When a bridge was last heard from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Seen {
    pub seen_ms: u64,
    pub version: String,
}

/// Why an enrolment or a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown enrolment token")]
    UnknownToken,
    #[error("this enrolment token was already used")]
    TokenUsed,
    #[error("this enrolment token has expired")]
    TokenExpired,
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("no bridge {0}")]
    NotFound(String),
    #[error("bridge {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("bridge registry storage: {0}")]
    Storage(#[from] StoreError),
    #[error("bridge registry record unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The register; cheap to clone.
#[derive(Clone)]
pub struct BridgeRegistry {
    tokens: Table,
    bridges: Table,
    seen: Table,
    audit: AuditLog,
    /// When this server last wrote each bridge's "seen".
    written: Arc<Mutex<HashMap<String, u64>>>,
}

impl BridgeRegistry {
    /// The register in `db`, auditing to `audit`.
    pub fn open(db: &Database, audit: AuditLog) -> Self {
        BridgeRegistry {
            tokens: db.table(&BRIDGE_TOKENS),
            bridges: db.table(&BRIDGES),
            seen: db.table(&BRIDGES_SEEN),
            audit,
            written: Arc::default(),
        }
    }

    /// Creates a one-time token enrolling one bridge into `zone`, valid for `ttl`; returns the
    /// token (shown once) and its record. Audited `bridge.token.created` by `by`.
    pub async fn create_token(
        &self,
        zone: &str,
        ttl: Duration,
        by: &str,
    ) -> Result<(String, EnrolmentToken), RegistryError> {
        if !is_valid_label(zone) {
            return Err(RegistryError::Invalid("zone"));
        }
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(RegistryError::Invalid("ttl (1 s to 7 days)"));
        }
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(raw));
        let now = now_ms();
        let record = EnrolmentToken {
            zone: zone.to_string(),
            created_by: by.to_string(),
            created_ms: now,
            expires_ms: now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            used_by: None,
        };
        let key = token_key(&token);
        self.tokens
            .write(key.clone(), serde_json::to_vec(&record)?, Expect::Absent)?;
        let detail = format!(
            "zone {zone}; token {}; expires {}",
            &key[..16],
            record.expires_ms
        );
        self.record(by, "bridge.token.created", Decision::Allowed, "ok", detail)
            .await?;
        Ok((token, record))
    }

    /// Redeems `token` for a new bridge with `public_key`: marks the token used (exactly once,
    /// across servers) and stores the bridge. Every attempt is audited (`bridge.enrolled`, or
    /// `bridge.enrol.refused` with the reason).
    pub async fn enroll(
        &self,
        token: &str,
        public_key: &VerifyingKey,
        name: &str,
        version: &str,
    ) -> Result<BridgeRecord, RegistryError> {
        match self.redeem(token, public_key, name, version) {
            Ok(bridge) => {
                let detail = format!(
                    "bridge {} ({}) zone {}; key {}",
                    bridge.id, bridge.name, bridge.zone, bridge.public_key
                );
                self.record(
                    &holder(&bridge.id),
                    "bridge.enrolled",
                    Decision::Allowed,
                    "ok",
                    detail,
                )
                .await?;
                Ok(bridge)
            }
            Err(e) => {
                let key = token_key(token);
                let reason = e.to_string();
                let decision = Decision::Denied {
                    reason: reason.clone(),
                    policy: Some("bridge.enrolment".into()),
                };
                self.record(
                    "anonymous",
                    "bridge.enrol.refused",
                    decision,
                    "denied",
                    format!("token {}: {reason}", &key[..16]),
                )
                .await?;
                Err(e)
            }
        }
    }

    fn redeem(
        &self,
        token: &str,
        public_key: &VerifyingKey,
        name: &str,
        version: &str,
    ) -> Result<BridgeRecord, RegistryError> {
        check_label(name, "bridge name")?;
        check_label(version, "bridge version")?;
        let key = token_key(token);
        let old = self
            .tokens
            .get(key.as_bytes())?
            .ok_or(RegistryError::UnknownToken)?;
        let mut record: EnrolmentToken = serde_json::from_slice(&old)?;
        if record.used_by.is_some() {
            return Err(RegistryError::TokenUsed);
        }
        if now_ms() > record.expires_ms {
            return Err(RegistryError::TokenExpired);
        }
        let id = uuid::Uuid::new_v4().to_string();
        record.used_by = Some(id.clone());
        let bridge = BridgeRecord {
            id: id.clone(),
            name: name.to_string(),
            zone: record.zone.clone(),
            public_key: hex::encode(public_key.as_bytes()),
            version: version.to_string(),
            enrolled_ms: now_ms(),
            enrolled_by: record.created_by.clone(),
            revoked: None,
        };
        let mut batch = crate::store::Batch::new();
        batch
            .put(
                &BRIDGE_TOKENS,
                key.as_bytes(),
                serde_json::to_vec(&record)?,
                Expect::Equals(old),
            )
            .put(
                &BRIDGES,
                id.as_bytes(),
                serde_json::to_vec(&bridge)?,
                Expect::Absent,
            );
        match self.bridges.database().apply(&batch) {
            Ok(()) => Ok(bridge),
            // Another enrolment redeemed it between the read and the swap.
            Err(e) if e.is_conflict() => Err(RegistryError::TokenUsed),
            Err(e) => Err(e.into()),
        }
    }

    /// The bridge with this id.
    pub fn get(&self, id: &str) -> Result<Option<BridgeRecord>, RegistryError> {
        Ok(self
            .bridges
            .get(id.as_bytes())?
            .map(|b| serde_json::from_slice(&b))
            .transpose()?)
    }

    /// Every enrolled bridge (revoked ones included), with when each was last seen.
    pub fn list(&self) -> Result<Vec<(BridgeRecord, Option<Seen>)>, RegistryError> {
        let mut out = Vec::new();
        for (_, bytes) in self.bridges.all()? {
            let bridge: BridgeRecord = serde_json::from_slice(&bytes)?;
            let seen = self.last_seen(&bridge.id)?;
            out.push((bridge, seen));
        }
        Ok(out)
    }

    /// When bridge `id` was last heard from.
    pub fn last_seen(&self, id: &str) -> Result<Option<Seen>, RegistryError> {
        Ok(self
            .seen
            .get(holder(id).as_bytes())?
            .map(|b| serde_json::from_slice(&b))
            .transpose()?)
    }

    /// Notes that bridge `id` (running `version`) was heard from now; written at most every
    /// couple of seconds per bridge and server.
    pub fn seen(&self, id: &str, version: &str) -> Result<(), RegistryError> {
        let now = now_ms();
        {
            let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
            if written
                .get(id)
                .is_some_and(|last| now.saturating_sub(*last) < SEEN_EVERY_MS)
            {
                return Ok(());
            }
            written.insert(id.to_string(), now);
        }
        let seen = Seen {
            seen_ms: now,
            version: version.chars().take(MAX_LABEL).collect(),
        };
        self.seen.put(holder(id), serde_json::to_vec(&seen)?)?;
        Ok(())
    }

    /// Whether holder `holder` (a `bridge:<id>`) is an enrolled, unrevoked bridge heard from
    /// within `lost_after`.
    pub fn is_alive(&self, holder_name: &str, lost_after: Duration) -> Result<bool, RegistryError> {
        let Some(id) = holder_name.strip_prefix("bridge:") else {
            return Ok(false);
        };
        match self.get(id)? {
            Some(b) if b.revoked.is_none() => {}
            _ => return Ok(false),
        }
        let lost_after = u64::try_from(lost_after.as_millis()).unwrap_or(u64::MAX);
        Ok(self
            .last_seen(id)?
            .is_some_and(|s| now_ms().saturating_sub(s.seen_ms) <= lost_after))
    }

    /// Revokes bridge `id`: its next request is refused and the runs it holds end. Audited
    /// `bridge.revoked` by `by`.
    pub async fn revoke(
        &self,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<BridgeRecord, RegistryError> {
        check_text(reason)?;
        let old = self
            .bridges
            .get(id.as_bytes())?
            .ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
        let mut bridge: BridgeRecord = serde_json::from_slice(&old)?;
        if bridge.revoked.is_some() {
            return Err(RegistryError::AlreadyRevoked(id.to_string()));
        }
        bridge.revoked = Some(Revocation {
            by: by.to_string(),
            at_ms: now_ms(),
            reason: reason.to_string(),
        });
        if !self
            .bridges
            .swap(id.as_bytes(), &old, serde_json::to_vec(&bridge)?)?
        {
            return Err(RegistryError::AlreadyRevoked(id.to_string()));
        }
        let detail = format!("bridge {id} zone {}: {reason}", bridge.zone);
        self.record(by, "bridge.revoked", Decision::Allowed, "ok", detail)
            .await?;
        Ok(bridge)
    }

    async fn record(
        &self,
        actor: &str,
        action: &str,
        decision: Decision,
        outcome: &str,
        detail: String,
    ) -> Result<(), RegistryError> {
        self.audit
            .append(AuditEntry {
                run_id: None,
                actor: actor.to_string(),
                action: action.to_string(),
                target: None,
                credential: None,
                decision,
                outcome: outcome.to_string(),
                duration_us: 0,
                detail: Some(detail),
            })
            .await?;
        Ok(())
    }
}

/// The stored key of a token: SHA-256 hex of its text.
fn token_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn check_label(s: &str, what: &'static str) -> Result<(), RegistryError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(what))
    }
}

fn check_text(s: &str) -> Result<(), RegistryError> {
    if s.len() > 256 || s.chars().any(char::is_control) {
        return Err(RegistryError::Invalid("reason"));
    }
    Ok(())
}

fn now_ms() -> u64 {
    crate::vault::lease::now_ms()
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
