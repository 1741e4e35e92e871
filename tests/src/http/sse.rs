//! A server-sent-events reader for the run event streams: reads blocks until a named event,
//! within a bounded time, and parses each block into (event, data).

use futures::StreamExt;
use reqwest::StatusCode;

use super::{PATIENCE, Server};

impl Server {
    /// Reads `path`'s server-sent events until a `state` event; returns (event, data) pairs.
    pub async fn events_until_state(&self, path: &str, token: &str) -> Vec<(String, String)> {
        self.events_until(path, token, "state").await
    }

    /// Reads `path`'s server-sent events until an event named `last` (asserting the stream is
    /// `text/event-stream`); returns every (event, data) pair read. Fails after [`PATIENCE`]
    /// or when the stream ends first.
    pub async fn events_until(&self, path: &str, token: &str, last: &str) -> Vec<(String, String)> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("events request");
        assert_eq!(resp.status(), StatusCode::OK);
        let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let mut stream = resp.bytes_stream();
        let mut buffer = String::new();
        let mut events = Vec::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if let Some(event) = parse_sse_block(&block) {
                        let done = event.0 == last;
                        events.push(event);
                        if done {
                            return;
                        }
                    }
                }
            }
            panic!("event stream ended without a {last} event");
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("state event in time");
        events
    }
}

/// One SSE block's (event, data); `None` for a comment-only block (keep-alive).
pub fn parse_sse_block(block: &str) -> Option<(String, String)> {
    let mut event = None;
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim_start().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some((event.unwrap_or_else(|| "message".into()), data.join("\n")))
}
