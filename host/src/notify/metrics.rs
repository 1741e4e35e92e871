//! Prometheus series this module keeps: deliveries, failures, attempts and lag per sink,
//! alerts fired per rule, and the ones derived from the audit stream (host calls by
//! capability and decision, host-call latency, denials by policy, run transitions by state).
//! Counts only; label values are sink, rule, action and state names (never record text
//! beyond the action name, which the log caps).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the host-call latency histogram.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];
/// Most distinct label values kept per series (actions come from the code, but cap anyway).
const MAX_LABELS: usize = 512;

#[derive(Default)]
pub struct NotifyMetrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    delivered: BTreeMap<String, u64>,
    failures: BTreeMap<String, u64>,
    attempts: BTreeMap<String, u64>,
    lag: BTreeMap<String, u64>,
    alerts: BTreeMap<String, u64>,
    host_calls: BTreeMap<(String, &'static str), u64>,
    denials: BTreeMap<String, u64>,
    runs: BTreeMap<String, u64>,
    latency: [u64; BUCKETS.len()],
    latency_count: u64,
    latency_sum_us: u64,
}

fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, by: u64) {
    if map.len() >= MAX_LABELS && !map.contains_key(&key) {
        return;
    }
    *map.entry(key).or_default() += by;
}

impl NotifyMetrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut inner) = self.inner.lock() {
            f(&mut inner);
        }
    }

    pub fn delivered(&self, sink: &str, lines: usize) {
        self.with(|m| bump(&mut m.delivered, sink.into(), lines as u64));
    }

    pub fn failed(&self, sink: &str) {
        self.with(|m| bump(&mut m.failures, sink.into(), 1));
    }

    pub fn attempts(&self, sink: &str, attempts: u32) {
        self.with(|m| bump(&mut m.attempts, sink.into(), u64::from(attempts)));
    }

    pub fn set_lag(&self, sink: &str, lag: u64) {
        self.with(|m| {
            if m.lag.len() < MAX_LABELS || m.lag.contains_key(sink) {
                m.lag.insert(sink.into(), lag);
            }
        });
    }

    pub fn alert(&self, rule: &str) {
        self.with(|m| bump(&mut m.alerts, rule.into(), 1));
    }

    /// One audited host call (a record with a run and a capability action).
    pub fn host_call(&self, action: &str, denied: bool, duration_us: u64) {
        self.with(|m| {
            let decision = if denied { "denied" } else { "allowed" };
            bump(&mut m.host_calls, (action.into(), decision), 1);
            m.latency_count += 1;
            m.latency_sum_us = m.latency_sum_us.saturating_add(duration_us);
            let secs = duration_us as f64 / 1e6;
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    m.latency[i] += 1;
                }
            }
        });
    }

    pub fn denial(&self, policy: &str) {
        self.with(|m| bump(&mut m.denials, policy.into(), 1));
    }

    pub fn run_state(&self, state: &str) {
        self.with(|m| bump(&mut m.runs, state.into(), 1));
    }

    /// The Prometheus text of every series.
    pub fn render(&self) -> String {
        let Ok(m) = self.inner.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let mut family =
            |name: &str, kind: &str, help: &str, label: &str, map: &BTreeMap<String, u64>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (key, value) in map {
                    let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {value}", escape(key));
                }
            };
        family(
            "warden_sink_deliveries_total",
            "counter",
            "Export lines a sink accepted.",
            "sink",
            &m.delivered,
        );
        family(
            "warden_sink_failures_total",
            "counter",
            "Failed sink deliveries (each retry round, 410, dead letter).",
            "sink",
            &m.failures,
        );
        family(
            "warden_sink_attempts_total",
            "counter",
            "Webhook requests sent.",
            "sink",
            &m.attempts,
        );
        family(
            "warden_sink_queue_depth",
            "gauge",
            "Committed audit records a sink has not taken yet.",
            "sink",
            &m.lag,
        );
        family(
            "warden_alerts_fired_total",
            "counter",
            "Alert firings (each may count several matches).",
            "rule",
            &m.alerts,
        );
        family(
            "warden_denials_total",
            "counter",
            "Denied host calls and requests, by the policy that denied.",
            "policy",
            &m.denials,
        );
        family(
            "warden_run_transitions_total",
            "counter",
            "Run state transitions, by the state entered.",
            "state",
            &m.runs,
        );
        let _ = writeln!(
            out,
            "# HELP warden_host_calls_total Audited host calls by capability and decision.\n# TYPE warden_host_calls_total counter"
        );
        for ((action, decision), value) in &m.host_calls {
            let _ = writeln!(
                out,
                "warden_host_calls_total{{capability=\"{}\",decision=\"{decision}\"}} {value}",
                escape(action)
            );
        }
        let _ = writeln!(
            out,
            "# HELP warden_host_call_duration_seconds Host-call duration as audited.\n# TYPE warden_host_call_duration_seconds histogram"
        );
        for (bound, count) in BUCKETS.iter().zip(m.latency) {
            let _ = writeln!(
                out,
                "warden_host_call_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "warden_host_call_duration_seconds_bucket{{le=\"+Inf\"}} {}\nwarden_host_call_duration_seconds_sum {}\nwarden_host_call_duration_seconds_count {}",
            m.latency_count,
            m.latency_sum_us as f64 / 1e6,
            m.latency_count
        );
        out
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
