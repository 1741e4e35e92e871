//! Live events of runs on remote bridges. A bridge sends what its run logged with each claim
//! renewal (every 500 ms); the server hands the events to whoever streams the run (SSE)
//! through one broadcast channel per run. Every event carries its index in the run's event
//! log, so a stream knows exactly which events it has shown: at the run's end it replays
//! from the stored record only the ones after them — none twice, and none lost to a stream
//! that fell behind or to a renewal that reached another server.
//!
//! Threat: a bridge (or a stolen bridge key) flooding the server through its renewals, or
//! writing into another run's stream. Events are accepted only with a renewal the hub
//! accepted — for a run this bridge holds — at most [`MAX_EVENTS_PER_RENEW`] of them with at
//! most [`MAX_RENEW_MESSAGE_BYTES`] of messages, and the channels are bounded in number
//! ([`MAX_CHANNELS`]) and dropped when idle. The messages were redacted on the bridge, by
//! the same run redactor as on the embedded bridge, before the bridge's run saw them
//! succeed; they are the same text the stored record gets at the run's end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::wire::LiveEvent;

/// Most events one renewal may carry (the bridge sends the rest with the next one).
pub const MAX_EVENTS_PER_RENEW: usize = 256;

/// Most message bytes one renewal may carry.
pub const MAX_RENEW_MESSAGE_BYTES: usize = 256 << 10;

/// Most runs with a live channel at once; past it, a stream shows the run's events at its
/// end (from the stored record), as it would for a run another server serves.
const MAX_CHANNELS: usize = 4096;

/// A channel nobody published to or subscribed to for this long is dropped (its run ended
/// without a report, or nobody watches it).
const IDLE: Duration = Duration::from_secs(120);

/// Events a slow stream may fall behind by; it then replays the missed ones at the end.
const BUFFER: usize = 256;

struct Channel {
    sender: broadcast::Sender<LiveEvent>,
    touched: Instant,
}

/// The live channels of remote runs; cheap to clone.
#[derive(Clone, Default)]
pub struct RemoteLive {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl RemoteLive {
    /// Events of `run` from now on; `None` when no more channels may be opened.
    pub fn subscribe(&self, run: &str) -> Option<broadcast::Receiver<LiveEvent>> {
        let mut channels = self.channels.lock().ok()?;
        Some(channel(&mut channels, run)?.subscribe())
    }

    /// Hands `events` of `run` to its streams (none may be listening).
    pub fn publish(&self, run: &str, events: Vec<LiveEvent>) {
        if events.is_empty() {
            return;
        }
        let Ok(mut channels) = self.channels.lock() else {
            return;
        };
        if let Some(sender) = channel(&mut channels, run) {
            for event in events {
                // No receiver is not an error: nobody watches the run right now.
                let _ = sender.send(event);
            }
        }
    }

    /// The run ended: its streams see the channel close.
    pub fn close(&self, run: &str) {
        if let Ok(mut channels) = self.channels.lock() {
            channels.remove(run);
        }
    }
}

/// `run`'s channel, opened if need be (after dropping idle ones).
fn channel<'a>(
    channels: &'a mut HashMap<String, Channel>,
    run: &str,
) -> Option<&'a broadcast::Sender<LiveEvent>> {
    let now = Instant::now();
    if !channels.contains_key(run) {
        channels.retain(|_, c| now.duration_since(c.touched) < IDLE);
        if channels.len() >= MAX_CHANNELS {
            return None;
        }
        let (sender, _) = broadcast::channel(BUFFER);
        channels.insert(
            run.to_string(),
            Channel {
                sender,
                touched: now,
            },
        );
    }
    let channel = channels.get_mut(run)?;
    channel.touched = now;
    Some(&channel.sender)
}

/// Whether a renewal's `events` are within the caps.
pub fn within_caps(events: &[LiveEvent]) -> bool {
    let bytes: usize = events.iter().map(|e| e.event.message.len()).sum();
    events.len() <= MAX_EVENTS_PER_RENEW && bytes <= MAX_RENEW_MESSAGE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RunEvent;

    fn event(index: u64) -> LiveEvent {
        LiveEvent {
            index,
            event: RunEvent {
                at_ms: index,
                level: "info".into(),
                message: format!("line {index}"),
            },
        }
    }

    #[tokio::test]
    async fn a_stream_gets_its_runs_events_and_no_other_runs() {
        let live = RemoteLive::default();
        let mut mine = live.subscribe("a").unwrap();
        live.publish("b", vec![event(0)]);
        live.publish("a", vec![event(0), event(1)]);
        assert_eq!(mine.recv().await.unwrap(), event(0));
        assert_eq!(mine.recv().await.unwrap(), event(1));
        assert!(
            mine.try_recv().is_err(),
            "run b's event reached run a's stream"
        );
        live.close("a");
        assert!(matches!(
            mine.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
    }

    #[test]
    fn renewals_past_the_caps_are_refused() {
        let many: Vec<_> = (0..=MAX_EVENTS_PER_RENEW as u64).map(event).collect();
        assert!(!within_caps(&many));
        assert!(within_caps(&many[..MAX_EVENTS_PER_RENEW]));
        let mut big = event(0);
        big.event.message = "x".repeat(MAX_RENEW_MESSAGE_BYTES + 1);
        assert!(!within_caps(&[big]));
    }

    #[test]
    fn channels_are_bounded() {
        let live = RemoteLive::default();
        for i in 0..MAX_CHANNELS {
            assert!(live.subscribe(&format!("run-{i}")).is_some());
        }
        assert!(live.subscribe("one-too-many").is_none());
        // A known run still gets its channel.
        assert!(live.subscribe("run-0").is_some());
    }
}
