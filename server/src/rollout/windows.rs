//! The window source of a running server: rollout deadlines count from the end of the window,
//! in the tier's current stored schedule, in which an agent can start the bundle.
//!
//! Agents report no site yet, so only the schedule of the whole tier counts, not a site's. A tier
//! without a schedule, or whose schedule allows no start before it expires, gives no window end:
//! its agents start nothing, and the machine counts them failed at the send time plus the grace
//! period. Each call reads the tier's current schedule from the store and decodes it, once per
//! agent sent the bundle. The call is synchronous and blocks the driver's task for that read;
//! it has not been measured for large waves.

use tracing::warn;

use super::machine::WindowSource;
use crate::schedules::{stored_calendar, window_end_after};
use crate::store::schedules::Schedules;

/// Window ends from the schedules stored by `POST /api/v1/schedules`.
#[derive(Clone)]
pub struct StoredWindows {
    schedules: Schedules,
}

impl StoredWindows {
    pub fn new(schedules: Schedules) -> Self {
        Self { schedules }
    }
}

impl WindowSource for StoredWindows {
    fn window_end_for(&self, tier: &str, sent_at_unix_s: i64) -> Option<i64> {
        let schedule = match self.schedules.current(tier, None) {
            Ok(Some(schedule)) => schedule,
            Ok(None) => return None,
            Err(error) => {
                warn!(%error, tier, "failed to read the tier's schedule, so the deadline counts from the send time");
                return None;
            }
        };
        let calendar = match stored_calendar(&schedule) {
            Ok(calendar) => calendar,
            Err(error) => {
                warn!(%error, tier, "the tier's stored schedule is invalid, so the deadline counts from the send time");
                return None;
            }
        };
        window_end_after(&calendar, sent_at_unix_s)
    }
}
