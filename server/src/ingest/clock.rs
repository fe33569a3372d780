//! The clock and the random source that ingest reads, passed in so tests control them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The source of time for ingest.
pub trait Clock: Send + Sync {
    /// Wall-clock time in seconds since the Unix epoch, stored as the time a message was received.
    fn now_unix_s(&self) -> i64;

    /// Monotonic time since an arbitrary fixed instant, for expiry, rate limits and back-off.
    fn monotonic(&self) -> Duration;
}

/// The operating system's clocks.
#[derive(Debug, Clone)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_unix_s(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since_epoch) => i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
            Err(before_epoch) => {
                -i64::try_from(before_epoch.duration().as_secs()).unwrap_or(i64::MAX)
            }
        }
    }

    fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Random numbers for order ids and back-off jitter. They need to be unpredictable enough to
/// spread reconnects and to make order ids unique, not to resist an attacker.
pub trait RandomSource: Send + Sync {
    fn next_u64(&self) -> u64;
}

/// fastrand's generator, seeded per thread by fastrand.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRandom;

impl RandomSource for SystemRandom {
    fn next_u64(&self) -> u64 {
        fastrand::u64(..)
    }
}
