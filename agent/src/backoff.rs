//! Exponential reconnect back-off with jitter. Pure: the caller supplies the random numbers.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// Returns the delay before the next attempt and doubles the base for the one after. The delay
    /// is drawn between half the base and the base ("equal jitter"), so a fleet that lost its
    /// broker at the same instant does not come back at the same instant. `unit` is a random
    /// number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        base / 2 + base.mul_f64(unit / 2.0)
    }

    /// Starts again from the initial delay, after a connection that stayed up long enough.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5)
            .map(|_| backoff.next_delay(1.0).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![1000, 2000, 4000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(0.0), Duration::from_millis(500));
    }

    proptest! {
        #[test]
        fn delay_stays_within_half_base_and_max(units in prop::collection::vec(0.0f64..1.0, 1..40)) {
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            for unit in units {
                let delay = backoff.next_delay(unit);
                prop_assert!(delay >= Duration::from_millis(250));
                prop_assert!(delay <= Duration::from_secs(30));
            }
        }
    }
}
