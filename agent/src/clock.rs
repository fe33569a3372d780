//! The wall clock and the operating system's report on it, passed in so tests can set both.

use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now_unix_s(&self) -> i64;

    /// Returns whether the operating system reports the clock as synchronised to a time source.
    fn os_sync(&self) -> OsClockSync {
        OsClockSync::Unknown
    }
}

/// The operating system's word on the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsClockSync {
    Synchronised,
    /// The kernel reports that no time source disciplines the clock (`adjtimex` returns
    /// `TIME_ERROR`).
    Unsynchronised,
    /// The operating system cannot tell, or the agent cannot ask it.
    Unknown,
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_s(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => since.as_secs() as i64,
            Err(before) => -(before.duration().as_secs() as i64),
        }
    }

    fn os_sync(&self) -> OsClockSync {
        kernel_clock_sync()
    }
}

/// Asks the Linux kernel through `adjtimex` with no mode bits set, which only reads. NTP daemons
/// (chrony, ntpd, systemd-timesyncd) clear the kernel's "unsynchronised" flag while they keep the
/// clock in step, and the call then returns `TIME_OK` or a leap-second state.
#[cfg(target_os = "linux")]
fn kernel_clock_sync() -> OsClockSync {
    // SAFETY: `timex` is plain data for which all zero bytes are valid, and with `modes == 0`
    // adjtimex only fills it in.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live, writable `timex` for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut timex) };
    match state {
        -1 => OsClockSync::Unknown,
        libc::TIME_ERROR => OsClockSync::Unsynchronised,
        _ => OsClockSync::Synchronised,
    }
}

#[cfg(not(target_os = "linux"))]
fn kernel_clock_sync() -> OsClockSync {
    OsClockSync::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_reads_after_the_release_date() {
        assert!(SystemClock.now_unix_s() > 1_796_083_200);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_answers_the_read_only_query() {
        // Both results occur on real machines, so only a failed call is an error.
        assert_ne!(kernel_clock_sync(), OsClockSync::Unknown);
    }
}
