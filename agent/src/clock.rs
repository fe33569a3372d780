//! The wall clock, passed in so tests can set it.

use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now_unix_s(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_s(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => since.as_secs() as i64,
            Err(before) => -(before.duration().as_secs() as i64),
        }
    }
}
