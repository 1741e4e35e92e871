//! Bounded polling: wait for a condition the tests cannot be told about (a schedule firing,
//! an audit record landing, a lock let go), checking every few milliseconds and failing with
//! what was last seen once the patience runs out, so a hang is a failure and not a stuck run.

use std::future::Future;
use std::time::Duration;

/// Calls `poll` every `every` until it returns `Ok`; its value. Fails after `patience` with
/// `what` and the last `Err` (what was seen instead).
pub async fn until<T, F, Fut>(patience: Duration, every: Duration, what: &str, mut poll: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match poll().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what} not within {patience:?}: {seen}"
            ),
        }
        tokio::time::sleep(every).await;
    }
}
