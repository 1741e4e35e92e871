//! One task per enabled sink: read committed records from the sink's persisted cursor, send
//! them, move the cursor only after the sink took them; sleep until the audit log commits
//! again. Delivery never touches a run: runs only append to the log, this task only reads it.
//!
//! Threat: a down or hostile receiver stalling the server or losing records. A stalled sink
//! stalls only its own task; nothing is buffered beyond one chunk; a restart resumes at the
//! cursor (at-least-once with stable ids). A webhook that answers 410 is disabled (audited);
//! one that keeps failing after the whole retry schedule puts the line on the dead-letter list
//! (audited) and the stream moves on.

use std::time::Duration;

use tokio::sync::watch;

use super::config::{Events, SinkConfig, SinkKind};
use super::export::ExportLine;
use super::sinks::{file, syslog::Syslog, webhook::Attempt, webhook::Webhook};
use super::tail::Line;
use super::{DeadLetter, NotifyStore};

/// Longest wait between two tries of a failing syslog or file sink.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Re-check the store at least this often even without a wake-up (another server's commits).
const POLL: Duration = Duration::from_secs(2);
/// Most time between two durable cursor writes. A cursor write is a durable commit on the
/// database the audit writer also flushes; one per chunk would compete with the runs'
/// records. After a crash at most this much is sent again (at-least-once, stable ids).
pub(crate) const CURSOR_EVERY: Duration = Duration::from_secs(1);
/// After a wake-up, wait this long for more records to commit, so a flood is read in
/// chunks rather than record by record (the latency a delivery adds, at most).
pub(crate) const COALESCE: Duration = Duration::from_millis(5);

/// A cursor that is stored at most every [`CURSOR_EVERY`] (and always when asked to).
pub(crate) struct Cursor {
    pub name: String,
    pub next: u64,
    stored: u64,
    at: std::time::Instant,
}

impl Cursor {
    pub(crate) fn new(name: &str, next: u64) -> Self {
        Self {
            name: name.to_string(),
            next,
            stored: next,
            at: std::time::Instant::now(),
        }
    }

    /// Moves to `next`, storing it if the last write is old enough (or `now`).
    pub(crate) fn advance(&mut self, store: &NotifyStore, next: u64, now: bool) {
        self.next = next;
        if self.stored == next || (!now && self.at.elapsed() < CURSOR_EVERY) {
            return;
        }
        match store.set_cursor(&self.name, next) {
            Ok(()) => {
                self.stored = next;
                self.at = std::time::Instant::now();
            }
            Err(e) => tracing::warn!(sink = %self.name, error = %e, "cannot store the cursor"),
        }
    }
}

/// The action of an alert firing (what `events: alerts` sinks get).
pub const ALERT_ACTION: &str = "alert.fired";

/// Runs `config` until it is disabled or the task is aborted.
pub async fn run_sink(store: NotifyStore, config: SinkConfig, mut wake: watch::Receiver<u64>) {
    let name = config.name.clone();
    let start = match store.cursor(&name) {
        Ok(Some(c)) => c,
        Ok(None) => {
            let start = match config.from {
                super::config::From::Start => 0,
                super::config::From::Now => *wake.borrow(),
            };
            let _ = store.set_cursor(&name, start);
            start
        }
        Err(e) => {
            tracing::error!(sink = %name, error = %e, "cannot read the sink cursor");
            return;
        }
    };
    let mut syslog = match &config.kind {
        SinkKind::Syslog(s) => Some(Syslog::new(s.clone(), store.vault.clone())),
        _ => None,
    };
    // The allow-list is read when the task starts; a change restarts every task (reload).
    let webhook = match &config.kind {
        SinkKind::Webhook(w) => Some(Webhook::new(
            w.clone(),
            store.vault.clone(),
            store.allow_list().unwrap_or_default(),
        )),
        _ => None,
    };
    let metrics = store.metrics.clone();
    let mut backoff = Duration::from_millis(100);
    let mut cursor = Cursor::new(&name, start);
    loop {
        let chunk = match store.tail.read(cursor.next).await {
            Ok(chunk) => chunk,
            Err(_) => {
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        metrics.set_lag(&name, wake.borrow().saturating_sub(cursor.next));
        if chunk.lines.is_empty() {
            // Idle: the cursor is stored now, whatever its age.
            cursor.advance(&store, chunk.next, true);
            if let Ok(Err(_)) = tokio::time::timeout(POLL, wake.changed()).await {
                // The audit log is gone (shutting down): poll instead of spinning.
                tokio::time::sleep(POLL).await;
            }
            tokio::time::sleep(COALESCE).await;
            continue;
        }
        let lines: Vec<&Line> = chunk
            .lines
            .iter()
            .filter(|line| wanted(&config, &line.line))
            .collect();
        let delivered = match &config.kind {
            SinkKind::File(f) => {
                let f = f.clone();
                let batch: Vec<String> = lines.iter().map(|l| l.json().to_string()).collect();
                match tokio::task::spawn_blocking(move || file::append(&f, &batch)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("write: {}", e.kind())),
                    Err(_) => Err("file task failed".into()),
                }
            }
            SinkKind::Syslog(_) => match syslog.as_mut() {
                Some(s) if !lines.is_empty() => s.send(&lines).await,
                _ => Ok(()),
            },
            SinkKind::Webhook(_) => {
                let Some(hook) = webhook.as_ref() else {
                    return;
                };
                match deliver_webhook(&store, &name, hook, &lines).await {
                    Flow::Continue => Ok(()),
                    Flow::Stop => return,
                }
            }
        };
        match delivered {
            Ok(()) => {
                metrics.delivered(&name, lines.len());
                cursor.advance(&store, chunk.next, false);
                backoff = Duration::from_millis(100);
            }
            Err(reason) => {
                metrics.failed(&name);
                tracing::warn!(sink = %name, %reason, "sink delivery failed; retrying");
                tokio::time::sleep(super::sinks::webhook::jittered(
                    u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                ))
                .await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

enum Flow {
    Continue,
    Stop,
}

/// One webhook message: its id, first seq and body (one line, or a batch of them).
fn messages(lines: &[&Line], batch: u32) -> Vec<(String, u64, String)> {
    if batch <= 1 {
        return lines
            .iter()
            .map(|l| (l.line.id(), l.line.seq(), l.json().to_string()))
            .collect();
    }
    lines
        .chunks(batch as usize)
        .filter_map(|group| {
            let (first, last) = (&group.first()?.line, &group.last()?.line);
            // The lines' own encodings, joined: `{"type":…,"lines":[…]}`.
            let mut body = format!("{{\"type\":\"{BATCH_TYPE}\",\"lines\":[");
            for (i, l) in group.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(l.json());
            }
            body.push_str("]}");
            Some((format!("{}..{}", first.id(), last.id()), first.seq(), body))
        })
        .collect()
}

/// The `type` of a batched webhook message.
pub const BATCH_TYPE: &str = "warden.audit.batch";

/// Posts each message with its retry schedule; dead-letters what fails for good; disables
/// the sink on 410.
async fn deliver_webhook(store: &NotifyStore, name: &str, hook: &Webhook, lines: &[&Line]) -> Flow {
    for (id, seq, body) in messages(lines, hook.config.batch) {
        let (outcome, attempts) = hook.deliver(&id, &body).await;
        store.metrics.attempts(name, attempts);
        match outcome {
            Attempt::Delivered => {}
            Attempt::Gone => {
                store.metrics.failed(name);
                store.disable(name, "the endpoint answered 410 Gone").await;
                return Flow::Stop;
            }
            Attempt::Failed(reason) | Attempt::Refused(reason) => {
                store.metrics.failed(name);
                let letter = DeadLetter {
                    sink: name.to_string(),
                    id,
                    seq,
                    body,
                    attempts,
                    last_error: reason,
                    time_ms: now_ms(),
                };
                store.dead_letter(letter).await;
            }
        }
    }
    Flow::Continue
}

/// Whether `config` gets `line`: `alerts` sinks only alert firings routed to them; a webhook
/// does not get the records about its own failed deliveries (that would loop).
fn wanted(config: &SinkConfig, line: &ExportLine) -> bool {
    let record = line.as_record();
    let own_failure = record.is_some_and(|r| {
        r.entry.action.starts_with("notify.delivery.")
            && r.entry.target.as_deref() == Some(&config.name)
    });
    if own_failure && matches!(config.kind, SinkKind::Webhook(_)) {
        return false;
    }
    match config.events {
        Events::All => true,
        Events::Alerts => record.is_some_and(|r| {
            r.entry.action == ALERT_ACTION
                && r.entry
                    .detail
                    .as_deref()
                    .is_some_and(|d| routed_to(d, &config.name))
        }),
    }
}

fn routed_to(detail: &str, sink: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(detail)
        .ok()
        .and_then(|v| v.get("sinks").cloned())
        .and_then(|s| s.as_array().cloned())
        .is_some_and(|sinks| sinks.iter().any(|s| s.as_str() == Some(sink)))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
