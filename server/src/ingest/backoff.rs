//! Exponential back-off with jitter between connection attempts to the broker.

use std::time::Duration;

/// The first delay ceiling.
pub const BASE: Duration = Duration::from_millis(500);

/// The largest delay ceiling.
pub const CAP: Duration = Duration::from_secs(30);

/// How long a connection must stay up before the next failure starts again from [`BASE`]. A broker
/// that accepts the connection and closes it at once (for example because another client took over
/// the client id) is retried with growing delays, not in a tight loop.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Delays between reconnect attempts: attempt `n` (from 0) waits a random time between half and all
/// of `min(CAP, BASE * 2^n)`. Keeping at least half of the ceiling stops two clients that fail
/// together from retrying at once, and the random half spreads a fleet's reconnects.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// Returns the delay before the next attempt, drawing the jitter from `random`.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if half_nanos == 0 {
            0
        } else {
            random % (half_nanos + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Starts again from the base delay, after a connection that stayed up.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    fn ceiling(&self) -> Duration {
        // 2^6 * 0.5 s already exceeds 30 s; the shift is bounded so it cannot overflow.
        let factor = 1u32 << self.attempt.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BASE, CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_cap() {
        let mut backoff = Backoff::default();
        // With random 0 each delay is half its ceiling: 0.5, 1, 2, 4, 8, 16, 32 -> 30, 30 s.
        let expected_ms = [250, 500, 1000, 2000, 4000, 8000, 15000, 15000];
        for ms in expected_ms {
            assert_eq!(backoff.next_delay(0), Duration::from_millis(ms));
        }
    }

    #[test]
    fn jitter_stays_within_half_and_full_ceiling() {
        let mut backoff = Backoff::default();
        // The first ceiling is 500 ms: half is 250 ms = 250,000,000 ns, so the jitter is
        // random % 250,000,001.
        assert_eq!(backoff.next_delay(250_000_000), Duration::from_millis(500));
        backoff.reset();
        assert_eq!(backoff.next_delay(250_000_001), Duration::from_millis(250));
    }

    #[test]
    fn reset_starts_from_base() {
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.next_delay(0);
        }
        assert_eq!(backoff.attempt(), 10);
        backoff.reset();
        assert_eq!(backoff.next_delay(0), Duration::from_millis(250));
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut backoff = Backoff::default();
        for _ in 0..1000 {
            let delay = backoff.next_delay(u64::MAX);
            assert!(delay <= CAP, "{delay:?}");
            assert!(delay >= Duration::from_millis(250), "{delay:?}");
        }
    }
}
