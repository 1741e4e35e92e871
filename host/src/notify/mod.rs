//! Monitoring and alerts: the audit stream exported to sinks (Standard Webhooks endpoints,
//! syslog collectors, JSON-lines files), alert rules over it, and metrics derived from it.
//!
//! Design: every sink is a reader of the committed audit log with its own persisted cursor
//! (table [`CURSORS`]), woken by [`crate::audit::AuditLog::subscribe`]. Nothing is queued in
//! memory and no run waits for a sink: the log is the disk-backed queue, bounded by nothing a
//! sink controls. Each exported line carries the record's `seq`, `hash` and `prev_hash`, and
//! the stream carries the signed checkpoints ([`export`]), so it can be checked offline
//! ([`export_verify`]). Alert rules ([`rules`]) read the same stream with their own cursor and
//! append an audited `alert.fired` record, which sinks configured for alerts deliver.
//!
//! Threat: the export channel used to leak secrets or reach places no administrator allowed,
//! a receiver that stalls or floods the server, and an exported stream altered on the way.
//! Sink secrets are vault credentials named by the configuration; webhook destinations must be
//! on the administrator's allow-list ([`config::AllowList`]), checked at configuration and at
//! every request; every configuration change, refusal, 410 disable and dead letter is audited.

mod bridge_offline;
pub mod config;
pub mod delivery;
pub mod export;
pub mod export_verify;
pub mod metrics;
pub mod rules;
pub mod sinks;
pub mod tail;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;

use crate::audit::{AuditEntry, AuditLog, Decision};
use crate::store::{Database, Scan, StoreError, TableDef};
use crate::vault::Vault;
use config::{AllowList, SinkConfig};
use rules::Rule;

/// Sink configurations by name (JSON [`SinkConfig`]).
pub static SINKS: TableDef = TableDef {
    name: "notify_sinks",
    columns: &[],
    columns_of: None,
};
/// Next `seq` each sink (and the rule engine, key [`RULES_CURSOR`]) reads.
pub static CURSORS: TableDef = TableDef {
    name: "notify_cursors",
    columns: &[],
    columns_of: None,
};
/// Webhook lines given up on: key `sink \0 id`.
pub static DEAD_LETTERS: TableDef = TableDef {
    name: "notify_dead_letters",
    columns: &[],
    columns_of: None,
};
/// Alert rules by name (JSON [`Rule`]).
pub static RULES: TableDef = TableDef {
    name: "notify_rules",
    columns: &[],
    columns_of: None,
};
/// Settings: the webhook allow-list under key `allow`.
pub static SETTINGS: TableDef = TableDef {
    name: "notify_settings",
    columns: &[],
    columns_of: None,
};

/// The rule engine's cursor key (not a valid sink name).
pub const RULES_CURSOR: &str = "\0rules";
/// Most dead letters kept per sink; older ones are dropped (the count is audited).
pub const MAX_DEAD_LETTERS: usize = 10_000;
/// Actor of the records this module writes on its own.
pub const ACTOR: &str = "warden-notify";

/// A webhook line that exhausted its retries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub sink: String,
    pub id: String,
    pub seq: u64,
    pub body: String,
    pub attempts: u32,
    pub last_error: String,
    pub time_ms: u64,
}

/// Errors of the notify store.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Invalid(#[from] config::Invalid),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// Stored configuration and state, with the handles delivery needs.
#[derive(Clone)]
pub struct NotifyStore {
    pub db: Database,
    pub vault: Vault,
    pub audit: AuditLog,
    pub metrics: Arc<metrics::NotifyMetrics>,
    /// The log as every reader reads it ([`tail`]).
    pub tail: tail::Tail,
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|_| StoreError::Incompatible(format!("{what} unreadable")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl NotifyStore {
    pub fn new(db: &Database, vault: Vault, audit: AuditLog) -> Self {
        Self {
            db: db.clone(),
            vault,
            audit,
            metrics: Arc::default(),
            tail: tail::Tail::new(db),
        }
    }

    pub fn cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.db
            .table(&CURSORS)
            .get(name)?
            .map(|b| decode(&b, "cursor"))
            .transpose()
    }

    pub fn set_cursor(&self, name: &str, next: u64) -> Result<(), StoreError> {
        self.db.table(&CURSORS).put(name, encode(&next))
    }

    pub fn allow_list(&self) -> Result<AllowList, StoreError> {
        Ok(self
            .db
            .table(&SETTINGS)
            .get("allow")?
            .map(|b| decode(&b, "allow-list"))
            .transpose()?
            .unwrap_or_default())
    }

    pub async fn set_allow_list(&self, actor: &str, list: AllowList) -> Result<(), NotifyError> {
        list.validate()?;
        self.db.table(&SETTINGS).put("allow", encode(&list))?;
        self.record(
            actor,
            "notify.allow.set",
            None,
            Decision::Allowed,
            Some(list.entries.join(" ")),
        )
        .await
    }

    pub fn sinks(&self) -> Result<Vec<SinkConfig>, StoreError> {
        self.db
            .table(&SINKS)
            .all()?
            .iter()
            .map(|(_, v)| decode(v, "sink"))
            .collect()
    }

    pub fn sink(&self, name: &str) -> Result<Option<SinkConfig>, StoreError> {
        self.db
            .table(&SINKS)
            .get(name)?
            .map(|b| decode(&b, "sink"))
            .transpose()
    }

    /// Adds a sink after checking it (a webhook destination against the allow-list); a
    /// refusal is audited as a denial and answered as invalid.
    pub async fn add_sink(&self, actor: &str, config: SinkConfig) -> Result<(), NotifyError> {
        let allow = self.allow_list()?;
        if let Err(e) = config.validate(&allow).await {
            let reason = e.0.clone();
            self.record(
                actor,
                "notify.sink.refused",
                Some(&config.name),
                Decision::Denied {
                    reason,
                    policy: Some("notify-config".into()),
                },
                None,
            )
            .await?;
            return Err(e.into());
        }
        if !self
            .db
            .table(&SINKS)
            .insert_new(config.name.clone(), encode(&config))?
        {
            return Err(NotifyError::Exists(format!("sink '{}'", config.name)));
        }
        self.record(
            actor,
            "notify.sink.add",
            Some(&config.name),
            Decision::Allowed,
            Some(describe(&config)),
        )
        .await
    }

    pub async fn remove_sink(&self, actor: &str, name: &str) -> Result<(), NotifyError> {
        if !self.db.table(&SINKS).remove(name)? {
            return Err(NotifyError::NotFound(format!("sink '{name}'")));
        }
        self.db.table(&CURSORS).remove(name)?;
        self.record(
            actor,
            "notify.sink.remove",
            Some(name),
            Decision::Allowed,
            None,
        )
        .await
    }

    /// Enables or disables a sink (an administrator, or a 410 with `actor` = [`ACTOR`]).
    pub async fn set_enabled(
        &self,
        actor: &str,
        name: &str,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<(), NotifyError> {
        let table = self.db.table(&SINKS);
        let old = table
            .get(name)?
            .ok_or_else(|| NotifyError::NotFound(format!("sink '{name}'")))?;
        let mut config: SinkConfig = decode(&old, "sink")?;
        config.enabled = enabled;
        config.disabled_reason = reason.map(str::to_string);
        if !table.swap(name, &old, encode(&config))? {
            return Err(StoreError::conflict(SINKS.name, name.as_bytes()).into());
        }
        let action = if enabled {
            "notify.sink.enabled"
        } else {
            "notify.sink.disabled"
        };
        self.record(
            actor,
            action,
            Some(name),
            Decision::Allowed,
            reason.map(str::to_string),
        )
        .await
    }

    /// A 410 Gone: disable and audit; errors only logged (the task stops either way).
    pub(crate) async fn disable(&self, name: &str, reason: &str) {
        if let Err(e) = self.set_enabled(ACTOR, name, false, Some(reason)).await {
            tracing::error!(sink = %name, error = %e, "cannot disable the sink");
        }
    }

    pub(crate) async fn dead_letter(&self, letter: DeadLetter) {
        let key = format!("{}\0{}", letter.sink, letter.id);
        let detail = format!(
            "{} after {} attempts: {}",
            letter.id, letter.attempts, letter.last_error
        );
        let sink = letter.sink.clone();
        if let Err(e) = self.db.table(&DEAD_LETTERS).put(key, encode(&letter)) {
            tracing::error!(sink = %sink, error = %e, "cannot store a dead letter");
        }
        let _ = self.trim_dead_letters(&sink);
        if let Err(e) = self
            .record(
                ACTOR,
                "notify.delivery.dead_letter",
                Some(&sink),
                Decision::Allowed,
                Some(detail),
            )
            .await
        {
            tracing::error!(sink = %sink, error = %e, "cannot audit a dead letter");
        }
    }

    fn trim_dead_letters(&self, sink: &str) -> Result<(), StoreError> {
        let letters = self.dead_letters(sink)?;
        if letters.len() <= MAX_DEAD_LETTERS {
            return Ok(());
        }
        let mut oldest = letters;
        oldest.sort_by_key(|l| l.time_ms);
        for letter in oldest.iter().take(oldest.len() - MAX_DEAD_LETTERS) {
            self.db
                .table(&DEAD_LETTERS)
                .remove(format!("{}\0{}", letter.sink, letter.id))?;
        }
        Ok(())
    }

    pub fn dead_letters(&self, sink: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.db
            .table(&DEAD_LETTERS)
            .scan(&Scan::prefix(format!("{sink}\0")))?
            .iter()
            .map(|(_, v)| decode(v, "dead letter"))
            .collect()
    }

    /// Sends each dead letter of `sink` once more (one attempt each); delivered ones leave
    /// the list. Returns `(delivered, still dead)`.
    pub async fn replay(&self, actor: &str, sink: &str) -> Result<(usize, usize), NotifyError> {
        let config = self
            .sink(sink)?
            .ok_or_else(|| NotifyError::NotFound(format!("sink '{sink}'")))?;
        let config::SinkKind::Webhook(webhook) = config.kind else {
            return Err(config::Invalid("only webhooks have dead letters".into()).into());
        };
        let hook = sinks::webhook::Webhook::new(webhook, self.vault.clone(), self.allow_list()?);
        let (mut sent, mut kept) = (0, 0);
        for letter in self.dead_letters(sink)? {
            if hook.attempt(&letter.id, &letter.body).await == sinks::webhook::Attempt::Delivered {
                self.db
                    .table(&DEAD_LETTERS)
                    .remove(format!("{sink}\0{}", letter.id))?;
                sent += 1;
            } else {
                kept += 1;
            }
        }
        self.record(
            actor,
            "notify.dead_letter.replay",
            Some(sink),
            Decision::Allowed,
            Some(format!("{sent} delivered, {kept} still failing")),
        )
        .await?;
        Ok((sent, kept))
    }

    pub fn rules(&self) -> Result<Vec<Rule>, StoreError> {
        self.db
            .table(&RULES)
            .all()?
            .iter()
            .map(|(_, v)| decode(v, "rule"))
            .collect()
    }

    pub async fn add_rule(&self, actor: &str, rule: Rule) -> Result<(), NotifyError> {
        rule.validate()?;
        if !self
            .db
            .table(&RULES)
            .insert_new(rule.name.clone(), encode(&rule))?
        {
            return Err(NotifyError::Exists(format!("rule '{}'", rule.name)));
        }
        self.record(
            actor,
            "notify.rule.add",
            Some(&rule.name),
            Decision::Allowed,
            Some(encode_text(&rule)),
        )
        .await
    }

    pub async fn remove_rule(&self, actor: &str, name: &str) -> Result<(), NotifyError> {
        if !self.db.table(&RULES).remove(name)? {
            return Err(NotifyError::NotFound(format!("rule '{name}'")));
        }
        self.record(
            actor,
            "notify.rule.remove",
            Some(name),
            Decision::Allowed,
            None,
        )
        .await
    }

    pub(crate) async fn record(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        decision: Decision,
        detail: Option<String>,
    ) -> Result<(), NotifyError> {
        let denied = matches!(decision, Decision::Denied { .. });
        self.audit
            .append(AuditEntry {
                run_id: None,
                actor: actor.to_string(),
                action: action.to_string(),
                target: target.map(str::to_string),
                credential: None,
                decision,
                outcome: if denied {
                    "refused".into()
                } else {
                    "ok".into()
                },
                duration_us: 0,
                detail,
            })
            .await?;
        Ok(())
    }
}

/// What a sink is, for its audit record (no secret: only credential names).
fn describe(config: &SinkConfig) -> String {
    let mut value = serde_json::to_value(config).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("disabled_reason");
    }
    value.to_string()
}

fn encode_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The running sinks and the rule engine; [`Self::reload`] after a configuration change.
#[derive(Clone)]
pub struct Notifier {
    pub store: NotifyStore,
    tasks: Arc<Mutex<HashMap<String, AbortHandle>>>,
}

impl Notifier {
    pub fn new(store: NotifyStore) -> Self {
        Self {
            store,
            tasks: Arc::default(),
        }
    }

    /// (Re)starts one task per enabled sink and the rule engine, each from its cursor.
    pub fn reload(&self) -> Result<(), StoreError> {
        let sinks = self.store.sinks()?;
        let Ok(mut tasks) = self.tasks.lock() else {
            return Ok(());
        };
        for (_, task) in tasks.drain() {
            task.abort();
        }
        for sink in sinks.into_iter().filter(|s| s.enabled) {
            let name = sink.name.clone();
            let task = tokio::spawn(delivery::run_sink(
                self.store.clone(),
                sink,
                self.store.audit.subscribe(),
            ));
            tasks.insert(name, task.abort_handle());
        }
        let engine = tokio::spawn(rules::run_rules(
            self.store.clone(),
            self.store.audit.subscribe(),
        ));
        tasks.insert(RULES_CURSOR.into(), engine.abort_handle());
        Ok(())
    }

    /// Stops every task (cursors are stored; a later start resumes there).
    pub fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for (_, task) in tasks.drain() {
                task.abort();
            }
        }
    }

    /// The metrics text for `/metrics`.
    pub fn metrics_text(&self) -> String {
        self.store.metrics.render()
    }
}
