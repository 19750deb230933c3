//! Bounded waiting on a condition.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
pub fn until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
