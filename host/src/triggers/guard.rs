//! Guard rails of a trigger: the rate limit (runs per window), the concurrency limit (runs
//! in flight), the de-duplication window over a subject field, decided on one shared
//! [`GuardState`] that the store swaps atomically; and the [`Tally`] of refused events,
//! which turns a flood into a bounded number of audit records.
//!
//! Threat: a noisy or hostile detector (or anyone replaying garbage at the URL) starting a
//! storm of privileged runs, or growing the audit log and the shared state without bound.
//! The state holds at most `max_concurrent` flights and [`MAX_SUBJECTS`] subjects; the tally
//! keeps at most [`MAX_TALLY_KEYS`] counters and, per trigger and reason, audits the first
//! refusal of a window in full and the rest as one count when the window ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::Trigger;

/// Most de-duplication subjects remembered per trigger; past it the oldest is forgotten
/// (new subjects only arrive with started runs, which the rate limit bounds).
pub const MAX_SUBJECTS: usize = 4096;

/// How long a reservation for a run being started may stay without its run id before it
/// is dropped (its start failed on a server that then died).
pub const RESERVATION_TTL_MS: u64 = 60_000;

/// Most (trigger, reason) counters held in memory; past it refusals share one counter per
/// reason.
pub const MAX_TALLY_KEYS: usize = 4096;

/// How long a tally window lasts unless set otherwise.
pub const DEFAULT_TALLY_WINDOW_MS: u64 = 60_000;

/// A run (being) started by a trigger and not yet known to have ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flight {
    pub event_id: String,
    pub run_id: Option<String>,
    pub since_ms: u64,
}

/// A recently seen de-duplication subject.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Seen {
    pub at_ms: u64,
    pub event_id: String,
    pub run_id: Option<String>,
}

/// A trigger's shared limits state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuardState {
    pub window_start_ms: u64,
    pub runs_in_window: u32,
    pub in_flight: Vec<Flight>,
    pub subjects: BTreeMap<String, Seen>,
}

/// What the limits say about one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start a run (a reservation for it is in the state).
    Start,
    /// The subject was seen within the window: absorbed, no run.
    Duplicate { run_id: Option<String> },
    /// The window's runs are used up; it reopens in this many seconds.
    RateLimited { retry_after_secs: u64 },
    /// `max_concurrent` runs are in flight.
    ConcurrencyLimited,
}

impl GuardState {
    /// Decides on an event at `now_ms` and records its effect (a reservation, a subject) in
    /// `self`. `ended(run_id)` tells whether a run in flight has ended (or is gone).
    pub fn decide(
        &mut self,
        trigger: &Trigger,
        now_ms: u64,
        event_id: &str,
        subject: Option<&str>,
        ended: impl Fn(&str) -> bool,
    ) -> Verdict {
        let window_ms = trigger.rate.window_secs.saturating_mul(1000);
        if self.window_start_ms == 0 || now_ms.saturating_sub(self.window_start_ms) >= window_ms {
            self.window_start_ms = now_ms;
            self.runs_in_window = 0;
        }
        if let Some(dedupe) = &trigger.dedupe {
            let keep_ms = dedupe.window_secs.saturating_mul(1000);
            self.subjects
                .retain(|_, seen| now_ms.saturating_sub(seen.at_ms) < keep_ms);
            if let Some(seen) = subject.and_then(|s| self.subjects.get(s)) {
                return Verdict::Duplicate {
                    run_id: seen.run_id.clone(),
                };
            }
        }
        self.in_flight.retain(|f| match &f.run_id {
            Some(run) => !ended(run),
            None => now_ms.saturating_sub(f.since_ms) < RESERVATION_TTL_MS,
        });
        if self.in_flight.len() >= usize::try_from(trigger.max_concurrent).unwrap_or(usize::MAX) {
            return Verdict::ConcurrencyLimited;
        }
        if self.runs_in_window >= trigger.rate.runs {
            let reopens = self.window_start_ms.saturating_add(window_ms);
            return Verdict::RateLimited {
                retry_after_secs: reopens.saturating_sub(now_ms).div_ceil(1000).max(1),
            };
        }
        self.runs_in_window += 1;
        self.in_flight.push(Flight {
            event_id: event_id.to_string(),
            run_id: None,
            since_ms: now_ms,
        });
        if let (Some(_), Some(subject)) = (&trigger.dedupe, subject) {
            if self.subjects.len() >= MAX_SUBJECTS
                && let Some(oldest) = self
                    .subjects
                    .iter()
                    .min_by_key(|(_, s)| s.at_ms)
                    .map(|(k, _)| k.clone())
            {
                self.subjects.remove(&oldest);
            }
            self.subjects.insert(
                subject.to_string(),
                Seen {
                    at_ms: now_ms,
                    event_id: event_id.to_string(),
                    run_id: None,
                },
            );
        }
        Verdict::Start
    }

    /// Fills in the run the reservation of `event_id` started, or drops the reservation
    /// (`None`: the start failed). False if there was nothing to change.
    pub fn settle(&mut self, event_id: &str, run_id: Option<&str>) -> bool {
        let Some(at) = self.in_flight.iter().position(|f| f.event_id == event_id) else {
            return false;
        };
        match run_id {
            Some(run) => {
                self.in_flight[at].run_id = Some(run.to_string());
                for seen in self.subjects.values_mut() {
                    if seen.event_id == event_id {
                        seen.run_id = Some(run.to_string());
                    }
                }
            }
            None => {
                self.in_flight.remove(at);
                self.subjects.retain(|_, s| s.event_id != event_id);
            }
        }
        true
    }
}

/// Whether a refusal reason is an overflow of the rate or concurrency limit.
pub fn is_overflow(reason: &str) -> bool {
    matches!(reason, "rate_limited" | "concurrency_limited")
}

#[derive(Clone, Copy, Debug)]
struct Count {
    since_ms: u64,
    total: u64,
}

/// One ended window of one (trigger, reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowCount {
    pub trigger: String,
    pub reason: &'static str,
    pub since_ms: u64,
    /// Every refusal of the window, the first (audited on its own) included.
    pub total: u64,
}

/// Counts of refused events per (trigger, reason) and window, in this server's memory.
#[derive(Debug)]
pub struct Tally {
    counts: Mutex<HashMap<(String, &'static str), Count>>,
    window_ms: AtomicU64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            counts: Mutex::default(),
            window_ms: AtomicU64::new(DEFAULT_TALLY_WINDOW_MS),
        }
    }
}

impl Tally {
    /// Sets the window (tests use a short one).
    pub fn set_window(&self, window_ms: u64) {
        self.window_ms.store(window_ms.max(1), Ordering::Relaxed);
    }

    /// Counts a refusal; true if it is the first of its window (audit it in full).
    pub fn note(&self, trigger: &str, reason: &'static str, now_ms: u64) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (trigger.to_string(), reason);
        if !counts.contains_key(&key) && counts.len() >= MAX_TALLY_KEYS {
            key = ("*".to_string(), reason);
        }
        let count = counts.entry(key).or_insert(Count {
            since_ms: now_ms,
            total: 0,
        });
        count.total += 1;
        count.total == 1
    }

    /// Removes and returns the counters whose window has ended by `now_ms` (all of them if
    /// `all`, at shutdown).
    pub fn due(&self, now_ms: u64, all: bool) -> Vec<WindowCount> {
        let window = self.window_ms.load(Ordering::Relaxed);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let ended: Vec<_> = counts
            .iter()
            .filter(|(_, c)| all || now_ms.saturating_sub(c.since_ms) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|key| {
                let count = counts.remove(&key)?;
                Some(WindowCount {
                    trigger: key.0,
                    reason: key.1,
                    since_ms: count.since_ms,
                    total: count.total,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::{Dedupe, KeySpec, Rate};

    fn trigger(runs: u32, concurrent: u32, dedupe: bool) -> Trigger {
        Trigger {
            id: "t".into(),
            process_id: "p".into(),
            created_by: "a".into(),
            created_ms: 0,
            key: KeySpec::Ed25519 {
                public_key: String::new(),
            },
            map: BTreeMap::new(),
            allow: BTreeMap::new(),
            rate: Rate {
                runs,
                window_secs: 10,
            },
            max_concurrent: concurrent,
            dedupe: dedupe.then(|| Dedupe {
                pointer: "/user".into(),
                window_secs: 5,
            }),
            store_body: false,
            require_approval: false,
            tolerance_secs: 300,
            rotated_ms: None,
        }
    }

    #[test]
    fn rate_limit_counts_per_window_and_reopens() {
        let t = trigger(2, 100, false);
        let mut s = GuardState::default();
        let never = |_: &str| true;
        assert_eq!(s.decide(&t, 1000, "a", None, never), Verdict::Start);
        assert_eq!(s.decide(&t, 1001, "b", None, never), Verdict::Start);
        assert_eq!(
            s.decide(&t, 1002, "c", None, never),
            Verdict::RateLimited {
                retry_after_secs: 10
            }
        );
        assert_eq!(s.decide(&t, 11_000, "d", None, never), Verdict::Start);
    }

    #[test]
    fn concurrency_counts_runs_until_they_end() {
        let t = trigger(100, 1, false);
        let mut s = GuardState::default();
        assert_eq!(s.decide(&t, 0, "a", None, |_| false), Verdict::Start);
        assert!(s.settle("a", Some("run-a")));
        assert_eq!(
            s.decide(&t, 1, "b", None, |_| false),
            Verdict::ConcurrencyLimited
        );
        assert_eq!(s.decide(&t, 2, "b", None, |r| r == "run-a"), Verdict::Start);
        // A failed start gives its reservation back.
        assert!(s.settle("b", None));
        assert_eq!(s.decide(&t, 3, "c", None, |_| false), Verdict::Start);
    }

    #[test]
    fn duplicates_within_the_window_are_absorbed() {
        let t = trigger(100, 100, true);
        let mut s = GuardState::default();
        let ended = |_: &str| true;
        assert_eq!(s.decide(&t, 0, "a", Some("bob"), ended), Verdict::Start);
        s.settle("a", Some("run-a"));
        assert_eq!(
            s.decide(&t, 4_999, "b", Some("bob"), ended),
            Verdict::Duplicate {
                run_id: Some("run-a".into())
            }
        );
        assert_eq!(s.decide(&t, 4_999, "c", Some("eve"), ended), Verdict::Start);
        assert_eq!(s.decide(&t, 5_000, "d", Some("bob"), ended), Verdict::Start);
    }

    #[test]
    fn tally_audits_the_first_and_counts_the_rest_per_window() {
        let tally = Tally::default();
        tally.set_window(1000);
        assert!(tally.note("t", "bad_signature", 0));
        for _ in 0..99 {
            assert!(!tally.note("t", "bad_signature", 10));
        }
        assert!(tally.due(999, false).is_empty());
        let due = tally.due(1000, false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].total, 100);
        assert!(tally.note("t", "bad_signature", 1001), "a new window");
    }
}
