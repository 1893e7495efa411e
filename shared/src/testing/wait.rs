//! Waiting for a condition with a deadline: the only way tests synchronise.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// How often a condition is checked again.
const RECHECK: Duration = Duration::from_millis(10);

/// Polls `probe` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(RECHECK).await;
    }
}

/// Awaits `future`, or panics naming `what` after `timeout`.
pub async fn wait_for<T>(what: &str, timeout: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}
