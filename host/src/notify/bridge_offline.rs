//! The `bridge_offline` alert rule. The audit stream records no silence, so the rule engine
//! polls the bridge registry (at most once a second): an enrolled, unrevoked bridge last
//! heard from (or, never heard from, enrolled) more than `secs` ago is offline. Each offline
//! period of a bridge fires once per rule — the period is named by the last time the bridge
//! was seen, so it ends only when the bridge is heard from again — and the rule's cool-down
//! applies per bridge: a bridge that flaps gives one alert per cool-down with the count of
//! periods it stands for.
//!
//! Threat: a bridge silenced (cut off, stopped, its host taken) without anyone noticing; and
//! an alert flood from flapping bridges. Tracking is bounded to [`super::rules::MAX_KEYS`]
//! bridges per rule; the state is in memory, so after a restart a bridge that is still
//! offline fires once more.

use std::collections::HashMap;

use super::rules::{MAX_KEYS, Match, Rule};
use crate::bridge::registry::{BridgeRecord, Seen};

/// How often the registry is read, at most.
const CHECK_EVERY_MS: u64 = 1_000;

/// An alert to fire: the rule, the bridge id, the count, the seq (0: not tied to a record).
pub(super) type Firing = (Rule, String, u64, u64);

/// One bridge's offline state under one rule.
#[derive(Default)]
struct Period {
    /// The `seen` time of the offline period already alerted on.
    fired_for: Option<u64>,
    /// When this rule last fired for the bridge.
    last_fire_ms: u64,
    /// Offline periods not alerted on because of the cool-down, and the last of them.
    suppressed: u64,
    pending_for: Option<u64>,
}

/// What the engine remembers between checks.
#[derive(Default)]
pub(super) struct OfflineWatch {
    checked_ms: u64,
    /// Per rule name, per bridge id.
    periods: HashMap<String, HashMap<String, Period>>,
}

impl OfflineWatch {
    /// Whether a check is due at `now` (and, if so, notes that it is being done).
    pub(super) fn due(&mut self, now: u64, rules: &[Rule]) -> bool {
        let any = rules
            .iter()
            .any(|r| matches!(r.matches, Match::BridgeOffline { .. }));
        if !any || now.saturating_sub(self.checked_ms) < CHECK_EVERY_MS {
            return false;
        }
        self.checked_ms = now;
        true
    }

    /// The firings `bridges` (as the registry lists them) call for at `now`.
    pub(super) fn check(
        &mut self,
        rules: &[Rule],
        bridges: &[(BridgeRecord, Option<Seen>)],
        now: u64,
    ) -> Vec<Firing> {
        let mut out = Vec::new();
        self.periods
            .retain(|name, _| rules.iter().any(|r| r.name == *name));
        for rule in rules {
            let Match::BridgeOffline { secs } = rule.matches else {
                continue;
            };
            let periods = self.periods.entry(rule.name.clone()).or_default();
            for (bridge, seen) in bridges {
                if bridge.revoked.is_some() {
                    periods.remove(&bridge.id);
                    continue;
                }
                let last = seen.as_ref().map_or(bridge.enrolled_ms, |s| s.seen_ms);
                let offline = now.saturating_sub(last) > secs.saturating_mul(1000);
                if !offline {
                    // Heard from again: the period (if any) is over; the cool-down stays.
                    if let Some(period) = periods.get_mut(&bridge.id) {
                        period.fired_for = None;
                    }
                    continue;
                }
                if periods.len() >= MAX_KEYS && !periods.contains_key(&bridge.id) {
                    continue;
                }
                let period = periods.entry(bridge.id.clone()).or_default();
                if period.fired_for == Some(last) {
                    continue;
                }
                let cooling = period.last_fire_ms != 0
                    && now.saturating_sub(period.last_fire_ms)
                        < rule.cooldown_secs.saturating_mul(1000);
                if cooling {
                    // Counted once per period, alerted on when the cool-down ends.
                    if period.pending_for != Some(last) {
                        period.suppressed += 1;
                        period.pending_for = Some(last);
                    }
                    continue;
                }
                let count = if period.pending_for == Some(last) {
                    period.suppressed
                } else {
                    period.suppressed + 1
                };
                out.push((rule.clone(), bridge.id.clone(), count, 0));
                *period = Period {
                    fired_for: Some(last),
                    last_fire_ms: now,
                    suppressed: 0,
                    pending_for: None,
                };
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(secs: u64, cooldown_secs: u64) -> Rule {
        Rule {
            name: "down".into(),
            matches: Match::BridgeOffline { secs },
            sinks: vec![],
            cooldown_secs,
        }
    }

    fn bridge(id: &str, enrolled_ms: u64, revoked: bool) -> BridgeRecord {
        BridgeRecord {
            id: id.into(),
            name: id.into(),
            zone: "dmz".into(),
            public_key: String::new(),
            version: "1".into(),
            enrolled_ms,
            enrolled_by: "admin".into(),
            revoked: revoked.then(|| crate::bridge::registry::Revocation {
                by: "admin".into(),
                at_ms: enrolled_ms,
                reason: "gone".into(),
            }),
        }
    }

    fn seen(ms: u64) -> Option<Seen> {
        Some(Seen {
            seen_ms: ms,
            version: "1".into(),
        })
    }

    #[test]
    fn fires_once_per_offline_period_and_again_after_it_came_back() {
        let rules = [rule(10, 0)];
        let mut watch = OfflineWatch::default();
        let b = |s| vec![(bridge("b1", 0, false), seen(s))];
        // Alive, then silent for 10 s (not more): nothing.
        assert!(watch.check(&rules, &b(1_000), 5_000).is_empty());
        assert!(watch.check(&rules, &b(1_000), 11_000).is_empty());
        // Silent for longer: one firing, however often it is checked.
        let fired = watch.check(&rules, &b(1_000), 11_001);
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].1.as_str(), fired[0].2), ("b1", 1));
        for now in [12_000, 50_000, 500_000] {
            assert!(watch.check(&rules, &b(1_000), now).is_empty(), "{now}");
        }
        // Back, then silent again: a new period, a new firing.
        assert!(watch.check(&rules, &b(600_000), 600_500).is_empty());
        assert_eq!(watch.check(&rules, &b(600_000), 611_000).len(), 1);
    }

    #[test]
    fn a_flapping_bridge_gives_one_alert_per_cool_down_with_a_count() {
        let rules = [rule(1, 60)];
        let mut watch = OfflineWatch::default();
        let b = |s| vec![(bridge("b1", 0, false), seen(s))];
        assert_eq!(watch.check(&rules, &b(0), 2_000).len(), 1);
        // Three more offline periods within the minute: no alert yet.
        for start in [3_000u64, 10_000, 20_000] {
            assert!(watch.check(&rules, &b(start), start + 100).is_empty());
            assert!(watch.check(&rules, &b(start), start + 2_000).is_empty());
        }
        // Still offline when the cool-down ends: one alert counting the three.
        let fired = watch.check(&rules, &b(20_000), 63_000);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].2, 3);
    }

    #[test]
    fn never_seen_counts_from_enrolment_and_revoked_bridges_never_fire() {
        let rules = [rule(5, 0)];
        let mut watch = OfflineWatch::default();
        let bridges = vec![
            (bridge("quiet", 1_000, false), None),
            (bridge("revoked", 0, true), seen(0)),
        ];
        assert!(watch.check(&rules, &bridges, 6_000).is_empty());
        let fired = watch.check(&rules, &bridges, 6_001);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].1, "quiet");
        assert!(watch.check(&rules, &bridges, 100_000).is_empty());
    }

    #[test]
    fn due_at_most_once_a_second_and_only_with_such_a_rule() {
        let mut watch = OfflineWatch::default();
        assert!(!watch.due(5_000, &[]));
        let rules = [rule(1, 0)];
        assert!(watch.due(5_000, &rules));
        assert!(!watch.due(5_500, &rules));
        assert!(watch.due(6_000, &rules));
    }
}
