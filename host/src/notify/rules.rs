//! Alert rules over the audit stream, and the metrics derived from it.
//!
//! The engine reads committed records with its own cursor (from the head at its first start:
//! history does not fire), matches each rule, and for a match whose rule is not cooling down
//! appends an `alert.fired` record naming the rule, the count of matches it stands for and
//! the sinks it is routed to. Matches during the cool-down are counted and reported by the
//! next firing (or once the cool-down ends), so a storm gives one alert with a count.
//!
//! Threat: an alert storm that floods the log and the receivers, and an alert loop (alerts
//! about alerts). Firings are bounded by the cool-down per rule and key; the engine ignores
//! the records of this module (`alert.*`, `notify.*`). Burst windows hold at most
//! `threshold` timestamps per key, and at most [`MAX_KEYS`] keys per rule.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::config::{Invalid, MAX_ITEMS, check_name};
use super::delivery::{ALERT_ACTION, now_ms};
use super::{ACTOR, NotifyStore, RULES_CURSOR};
use crate::audit::{AuditRecord, Decision};

/// Most keys (runs, actors) tracked per rule; beyond it new keys are not tracked.
pub const MAX_KEYS: usize = 10_000;
const MAX_THRESHOLD: u32 = 10_000;
const MAX_WINDOW_SECS: u64 = 86_400;

/// What a rule matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Match {
    /// A run failed, timed out, was lost or interrupted.
    RunFailed,
    /// A host call was denied.
    DeniedHostCall,
    /// `threshold` denials by one run or one actor within `window_secs`.
    DenialBurst {
        threshold: u32,
        window_secs: u64,
        by: BurstKey,
    },
    /// An approval was rejected, invalidated or expired.
    ApprovalRejected,
    /// A rotation failed or was left pending.
    RotationFailed,
    /// Audit verification failed.
    AuditVerifyFailed,
    /// An expired or revoked token was used.
    TokenMisuse,
    /// A bridge not heard from for longer than `secs`: once per offline period and bridge
    /// (the registry is polled, see [`super::bridge_offline`]).
    BridgeOffline { secs: u64 },
    /// Any record whose action is `action`, or starts with it when it ends in `*` (for
    /// example `trigger.overflow`, `bridge.revoked`, `bridge.enrol.*`).
    Action { action: String },
}

/// Longest action pattern of a [`Match::Action`] rule.
const MAX_ACTION_PATTERN: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BurstKey {
    Run,
    Actor,
}

/// One rule: what it matches, where its alerts go, and its cool-down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(rename = "match")]
    pub matches: Match,
    /// Sink names this rule's firings are routed to.
    pub sinks: Vec<String>,
    #[serde(default = "default_cooldown")]
    pub cooldown_secs: u64,
}

fn default_cooldown() -> u64 {
    60
}

impl Rule {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_name(&self.name)?;
        if self.sinks.len() > MAX_ITEMS {
            return Err(Invalid("too many sinks".into()));
        }
        for sink in &self.sinks {
            check_name(sink)?;
        }
        if self.cooldown_secs > MAX_WINDOW_SECS {
            return Err(Invalid("cooldown_secs is at most 86400".into()));
        }
        if let Match::DenialBurst {
            threshold,
            window_secs,
            ..
        } = &self.matches
            && (*threshold == 0
                || *threshold > MAX_THRESHOLD
                || *window_secs == 0
                || *window_secs > MAX_WINDOW_SECS)
        {
            return Err(Invalid("threshold 1..=10000, window_secs 1..=86400".into()));
        }
        if let Match::Action { action } = &self.matches {
            let body = action.strip_suffix('*').unwrap_or(action);
            let ok = !body.is_empty()
                && action.len() <= MAX_ACTION_PATTERN
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
            if !ok {
                return Err(Invalid(
                    "action: 1-128 of a-z A-Z 0-9 . _ - :, optionally ending in *".into(),
                ));
            }
        }
        Ok(())
    }
}

fn denied(record: &AuditRecord) -> bool {
    matches!(record.entry.decision, Decision::Denied { .. })
}

fn is_host_call(record: &AuditRecord) -> bool {
    record.entry.run_id.is_some()
        && !record.entry.action.starts_with("run.")
        && !record.entry.action.starts_with("api.")
}

/// Whether `record` is one occurrence of `m` (bursts are counted by the caller).
fn occurrence(m: &Match, record: &AuditRecord) -> bool {
    let action = record.entry.action.as_str();
    let outcome = record.entry.outcome.to_ascii_lowercase();
    match m {
        Match::RunFailed => matches!(
            action,
            "run.failed" | "run.timed-out" | "run.lost" | "run.interrupted"
        ),
        Match::DeniedHostCall | Match::DenialBurst { .. } => denied(record) && is_host_call(record),
        Match::ApprovalRejected => {
            matches!(action, "run.approval.rejected" | "run.approval.invalidated")
                || (action.starts_with("run.approval") && action.contains("expire"))
        }
        Match::RotationFailed => {
            (action.starts_with("credentials.rotate") || action.starts_with("rotation."))
                && (denied(record) || outcome.contains("fail") || outcome.contains("pending"))
        }
        Match::AuditVerifyFailed => {
            action.starts_with("audit.verify") && (denied(record) || outcome != "ok")
        }
        Match::TokenMisuse => {
            matches!(
                action,
                "token.expired" | "token.revoked" | "token.revoked_used"
            )
        }
        Match::BridgeOffline { .. } => false,
        Match::Action { action: pattern } => match pattern.strip_suffix('*') {
            Some(prefix) => action.starts_with(prefix),
            None => action == pattern,
        },
    }
}

/// Cool-down and burst state of one rule.
#[derive(Default)]
struct RuleState {
    /// Per key: time (ms) of the last firing and matches counted since.
    fired: HashMap<String, (u64, u64)>,
    windows: HashMap<String, VecDeque<u64>>,
}

/// Runs the engine until aborted.
pub async fn run_rules(store: NotifyStore, mut wake: watch::Receiver<u64>) {
    let start = match store.cursor(RULES_CURSOR) {
        Ok(Some(c)) => c,
        _ => *wake.borrow(),
    };
    let mut cursor = super::delivery::Cursor::new(RULES_CURSOR, start);
    let mut states: HashMap<String, RuleState> = HashMap::new();
    let mut offline = super::bridge_offline::OfflineWatch::default();
    loop {
        let rules = store.rules().unwrap_or_default();
        let chunk = match store.tail.read(cursor.next).await {
            Ok(chunk) => chunk,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut firings = Vec::new();
        for record in chunk.lines.iter().filter_map(|l| l.line.as_record()) {
            observe(&store, record);
            let own = record.entry.action.starts_with("alert.")
                || record.entry.action.starts_with("notify.");
            if own {
                continue;
            }
            for rule in &rules {
                let state = states.entry(rule.name.clone()).or_default();
                if let Some(fire) = evaluate(rule, state, record) {
                    firings.push(fire);
                }
            }
        }
        firings.extend(flush_cooled(&rules, &mut states));
        if offline.due(now_ms(), &rules) {
            let (db, audit) = (store.db.clone(), store.audit.clone());
            let listed = tokio::task::spawn_blocking(move || {
                crate::bridge::registry::BridgeRegistry::open(&db, audit).list()
            })
            .await;
            match listed {
                Ok(Ok(bridges)) => firings.extend(offline.check(&rules, &bridges, now_ms())),
                _ => tracing::warn!("bridge_offline: cannot read the bridge registry"),
            }
        }
        for (rule, key, count, seq) in firings {
            fire(&store, &rule, &key, count, seq).await;
        }
        if chunk.next != cursor.next {
            cursor.advance(&store, chunk.next, false);
        } else {
            cursor.advance(&store, chunk.next, true);
            if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), wake.changed()).await {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            tokio::time::sleep(super::delivery::COALESCE).await;
        }
    }
}

/// Metrics every record feeds.
fn observe(store: &NotifyStore, record: &AuditRecord) {
    let metrics = &store.metrics;
    if let Some(state) = record.entry.action.strip_prefix("run.")
        && !state.contains('.')
    {
        metrics.run_state(state);
    } else if is_host_call(record) {
        metrics.host_call(
            &record.entry.action,
            denied(record),
            record.entry.duration_us,
        );
    }
    if let Decision::Denied { policy, .. } = &record.entry.decision {
        metrics.denial(policy.as_deref().unwrap_or("none"));
    }
}

type Firing = (Rule, String, u64, u64);

fn evaluate(rule: &Rule, state: &mut RuleState, record: &AuditRecord) -> Option<Firing> {
    if !occurrence(&rule.matches, record) {
        return None;
    }
    let key = match &rule.matches {
        Match::DenialBurst {
            threshold,
            window_secs,
            by,
        } => {
            let key = match by {
                BurstKey::Run => record.entry.run_id.clone().unwrap_or_default(),
                BurstKey::Actor => record.entry.actor.clone(),
            };
            if state.windows.len() >= MAX_KEYS && !state.windows.contains_key(&key) {
                return None;
            }
            let window = state.windows.entry(key.clone()).or_default();
            let since = record.time_ms.saturating_sub(window_secs * 1000);
            window.push_back(record.time_ms);
            while window.front().is_some_and(|t| *t < since) || window.len() > *threshold as usize {
                window.pop_front();
            }
            if window.len() < *threshold as usize {
                return None;
            }
            window.clear();
            key
        }
        _ => String::new(),
    };
    let now = now_ms();
    if state.fired.len() >= MAX_KEYS && !state.fired.contains_key(&key) {
        return None;
    }
    let entry = state.fired.entry(key.clone()).or_insert((0, 0));
    entry.1 += 1;
    if entry.0 != 0 && now.saturating_sub(entry.0) < rule.cooldown_secs * 1000 {
        return None;
    }
    let count = entry.1;
    *entry = (now, 0);
    Some((rule.clone(), key, count, record.seq))
}

/// Matches counted during a cool-down that has ended: one firing with their count.
fn flush_cooled(rules: &[Rule], states: &mut HashMap<String, RuleState>) -> Vec<Firing> {
    let now = now_ms();
    let mut out = Vec::new();
    for rule in rules {
        let Some(state) = states.get_mut(&rule.name) else {
            continue;
        };
        for (key, (last, count)) in state.fired.iter_mut() {
            if *count > 0 && now.saturating_sub(*last) >= rule.cooldown_secs * 1000 {
                out.push((rule.clone(), key.clone(), *count, 0));
                *last = now;
                *count = 0;
            }
        }
    }
    out
}

async fn fire(store: &NotifyStore, rule: &Rule, key: &str, count: u64, seq: u64) {
    store.metrics.alert(&rule.name);
    let detail = serde_json::json!({
        "rule": rule.name,
        "match": rule.matches,
        "key": key,
        "count": count,
        "seq": seq,
        "sinks": rule.sinks,
    });
    let recorded = store
        .record(
            ACTOR,
            ALERT_ACTION,
            Some(&rule.name),
            Decision::Allowed,
            Some(detail.to_string()),
        )
        .await;
    if let Err(e) = recorded {
        tracing::error!(rule = %rule.name, error = %e, "cannot record an alert");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEntry, GENESIS_HASH};

    fn denial(seq: u64, run: &str, time_ms: u64) -> AuditRecord {
        AuditRecord::seal(
            seq,
            time_ms,
            AuditEntry {
                run_id: Some(run.into()),
                actor: "mallory".into(),
                action: "ssh.exec".into(),
                target: Some("web".into()),
                credential: None,
                decision: Decision::Denied {
                    reason: "no grant".into(),
                    policy: None,
                },
                outcome: "denied".into(),
                duration_us: 5,
                detail: None,
            },
            GENESIS_HASH.into(),
        )
        .unwrap()
    }

    fn rule(matches: Match, cooldown_secs: u64) -> Rule {
        Rule {
            name: "r".into(),
            matches,
            sinks: vec!["s".into()],
            cooldown_secs,
        }
    }

    #[test]
    fn a_storm_fires_once_and_the_count_comes_with_the_next_firing() {
        let rule = rule(Match::DeniedHostCall, 3600);
        let mut state = RuleState::default();
        let fired: Vec<_> = (0..1000)
            .filter_map(|i| evaluate(&rule, &mut state, &denial(i, "run-1", 1)))
            .collect();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].2, 1);
        assert_eq!(state.fired[""].1, 999, "the suppressed matches are counted");
    }

    #[test]
    fn burst_needs_threshold_within_the_window_per_run() {
        let burst = Match::DenialBurst {
            threshold: 3,
            window_secs: 10,
            by: BurstKey::Run,
        };
        let rule = rule(burst, 0);
        let mut state = RuleState::default();
        // Spread out: never 3 within 10 s.
        for (i, t) in [0u64, 11_000, 22_000, 33_000].iter().enumerate() {
            assert!(evaluate(&rule, &mut state, &denial(i as u64, "a", *t)).is_none());
        }
        // Two runs interleaved: neither reaches 3 on its own until the third of "b".
        assert!(evaluate(&rule, &mut state, &denial(10, "b", 50_000)).is_none());
        assert!(evaluate(&rule, &mut state, &denial(11, "c", 50_001)).is_none());
        assert!(evaluate(&rule, &mut state, &denial(12, "b", 50_002)).is_none());
        let fired = evaluate(&rule, &mut state, &denial(13, "b", 50_003)).unwrap();
        assert_eq!(fired.1, "b");
    }

    #[test]
    fn an_action_rule_matches_its_action_or_prefix_only() {
        let exact = rule(
            Match::Action {
                action: "trigger.overflow".into(),
            },
            0,
        );
        let prefix = rule(
            Match::Action {
                action: "bridge.enrol.*".into(),
            },
            0,
        );
        let mut state = RuleState::default();
        let mut record = denial(1, "x", 1);
        record.entry.action = "trigger.overflow".into();
        assert!(evaluate(&exact, &mut state, &record).is_some());
        record.entry.action = "trigger.overflowed".into();
        assert!(evaluate(&exact, &mut state, &record).is_none());
        record.entry.action = "bridge.enrol.refused".into();
        assert!(evaluate(&prefix, &mut state, &record).is_some());
        record.entry.action = "bridge.enrolled".into();
        assert!(evaluate(&prefix, &mut RuleState::default(), &record).is_none());
        for bad in ["", "*", "a b", &"x".repeat(129), "run.*.x*"] {
            let r = rule(
                Match::Action {
                    action: bad.to_string(),
                },
                0,
            );
            assert!(r.validate().is_err(), "{bad:?}");
        }
        assert!(exact.validate().is_ok() && prefix.validate().is_ok());
    }

    #[test]
    fn a_timed_out_or_lost_run_is_a_failed_run() {
        let rule = rule(Match::RunFailed, 0);
        for action in ["run.timed-out", "run.lost", "run.failed", "run.interrupted"] {
            let mut record = denial(1, "x", 1);
            record.entry.action = action.into();
            assert!(
                evaluate(&rule, &mut RuleState::default(), &record).is_some(),
                "{action}"
            );
        }
        let mut record = denial(1, "x", 1);
        record.entry.action = "run.succeeded".into();
        assert!(evaluate(&rule, &mut RuleState::default(), &record).is_none());
    }

    #[test]
    fn allowed_calls_and_api_denials_are_not_denied_host_calls() {
        let rule = rule(Match::DeniedHostCall, 0);
        let mut state = RuleState::default();
        let mut api = denial(1, "x", 1);
        api.entry.run_id = None;
        assert!(evaluate(&rule, &mut state, &api).is_none());
        let mut ok = denial(2, "x", 1);
        ok.entry.decision = Decision::Allowed;
        assert!(evaluate(&rule, &mut state, &ok).is_none());
        assert!(evaluate(&rule, &mut state, &denial(3, "x", 1)).is_some());
    }
}
