//! The window rules of one schedule and the queries over them: is a start allowed at an
//! instant, which window contains an instant, which windows come next, and when is the earliest
//! allowed start.
//!
//! Conventions:
//!
//! - instants are seconds since the Unix epoch, UTC;
//! - a window is the half-open interval `[start, end)`; its cutoff, when it has one, ends the
//!   part in which a bundle may start, so a start is allowed in `[start, cutoff)`;
//! - durations are elapsed time, so a 2-hour window across a DST change still lasts 7200 s;
//! - a recurring start in a skipped local hour moves to the end of the gap, and one in a
//!   repeated hour fires once, at its first occurrence (see [`super::zone`]);
//! - a freeze denies every start in `[start, end)`, whatever the windows say;
//! - the schedule is valid in `[not_before, expires)`, and no start is allowed outside it.
//!
//! Windows are reported as they occur, one per rule and start: two rules, or one rule whose
//! duration is longer than its spacing, can report windows that overlap. A rule's starts that a
//! DST gap moves onto the same instant are reported once.
//!
//! Every search is bounded: recurring windows are enumerated day by day for at most
//! [`MAX_SEARCH_DAYS`] local days, which covers the longest gap between two firings of any
//! accepted expression (29 February, eight years apart around 2100). A query that finds
//! nothing within that horizon returns no window rather than searching on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

use jiff::civil::{Date, Time};
use serde::{Deserialize, Deserializer, Serialize};

use super::cron::{CronError, CronExpr};
use super::zone::{Zone, ZoneError};
use crate::trust::format_unix_s;

/// Maximum duration of a recurring window. Enumeration starts this far before the queried
/// instant to find a window that is still open, so it bounds the work of every query.
pub const MAX_WINDOW_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// Maximum number of window rules, recurring and one-off together, in one schedule.
pub const MAX_WINDOW_RULES: usize = 64;

/// Maximum number of freezes in one schedule.
pub const MAX_FREEZES: usize = 256;

/// Maximum length in bytes of a freeze's reason.
pub const MAX_REASON_LEN: usize = 200;

/// Number of local days a search enumerates before it gives up. Ten years and a margin: the
/// longest gap between two firings of an accepted expression is eight years (`0 0 29 2 *`
/// between 2096 and 2104, because 2100 is not a leap year).
pub const MAX_SEARCH_DAYS: u32 = 3_700;

/// Maximum number of windows one [`Calendar::windows_from`] call returns.
pub const MAX_QUERY_WINDOWS: usize = 1_000;

/// One rule of a schedule that opens windows.
///
/// postcard encodes the variant index and then the fields in order, so variants are only ever
/// appended, and a variant's fields never change once schedules are signed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowRule {
    /// A window that opens at each start of the cron expression, in the schedule's zone.
    Recurring {
        cron: String,
        /// Length of each window in seconds, elapsed time.
        duration_s: u32,
        /// Length of the last part of each window in which no bundle starts, in seconds.
        cutoff_s: Option<u32>,
    },
    /// A single window `[start, end)`.
    Once {
        start_unix_s: i64,
        end_unix_s: i64,
        cutoff_s: Option<u32>,
    },
}

/// An interval in which no bundle starts, whatever the windows say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub start_unix_s: i64,
    /// The freeze ends at this instant: a start exactly at `end_unix_s` may be allowed.
    pub end_unix_s: i64,
    /// Why changes are frozen, such as `year-end closing`; shown in previews and denials.
    pub reason: String,
}

/// The window part of a schedule document, as it is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarSpec {
    /// IANA time zone name of the recurring rules, such as `Europe/Berlin`.
    pub zone: String,
    /// The schedule allows nothing before this instant.
    pub not_before_unix_s: i64,
    /// The schedule allows nothing from this instant on: `expires <= now` is expired.
    pub expires_unix_s: i64,
    #[serde(deserialize_with = "deserialize_window_rules")]
    pub windows: Vec<WindowRule>,
    #[serde(deserialize_with = "deserialize_freezes")]
    pub freezes: Vec<Freeze>,
}

fn deserialize_window_rules<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<WindowRule>, D::Error> {
    crate::trust::codec::deserialize_bounded_vec(deserializer, MAX_WINDOW_RULES)
}

fn deserialize_freezes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Freeze>, D::Error> {
    crate::trust::codec::deserialize_bounded_vec(deserializer, MAX_FREEZES)
}

/// One occurrence of a window rule.
///
/// The derived order compares the start first, so sorting windows sorts them by start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start_unix_s: i64,
    pub end_unix_s: i64,
    /// No bundle starts from this instant on; equal to `end_unix_s` for a window without a
    /// cutoff.
    pub cutoff_unix_s: i64,
    /// Index of the rule in [`CalendarSpec::windows`].
    pub rule: usize,
}

impl Window {
    /// Returns whether `unix_s` lies in `[start, end)`.
    pub fn contains(&self, unix_s: i64) -> bool {
        self.start_unix_s <= unix_s && unix_s < self.end_unix_s
    }

    /// Returns whether a start at `unix_s` is inside the window and before its cutoff.
    pub fn allows_start(&self, unix_s: i64) -> bool {
        self.start_unix_s <= unix_s && unix_s < self.cutoff_unix_s
    }
}

/// The answer to "may a bundle start at this instant?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A start is allowed; `window` is the window that allows it, the one with the latest
    /// cutoff when several do.
    Allowed { window: Window },
    /// No start is allowed. `next_allowed_unix_s` is the earliest instant after this one at
    /// which a start is allowed, or `None` when there is none before the schedule expires or
    /// within the search horizon.
    Denied {
        reason: DenyReason,
        next_allowed_unix_s: Option<i64>,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// Why a start is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// The instant is before the schedule's `not_before`.
    NotYetValid { not_before_unix_s: i64 },
    /// The schedule expired.
    Expired { expires_unix_s: i64 },
    /// A freeze covers the instant.
    Frozen { freeze: Freeze },
    /// The instant is inside a window but past its cutoff.
    PastCutoff { window: Window },
    /// No window covers the instant.
    OutsideWindows,
}

impl DenyReason {
    /// Returns a stable kebab-case name of the reason, for reports.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotYetValid { .. } => "schedule-not-yet-valid",
            Self::Expired { .. } => "schedule-expired",
            Self::Frozen { .. } => "frozen",
            Self::PastCutoff { .. } => "past-cutoff",
            Self::OutsideWindows => "outside-windows",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotYetValid { not_before_unix_s } => write!(
                f,
                "the schedule is not valid before {}",
                format_unix_s(*not_before_unix_s)
            ),
            Self::Expired { expires_unix_s } => write!(
                f,
                "the schedule expired at {}",
                format_unix_s(*expires_unix_s)
            ),
            Self::Frozen { freeze } => write!(
                f,
                "changes are frozen from {} to {} ({})",
                format_unix_s(freeze.start_unix_s),
                format_unix_s(freeze.end_unix_s),
                freeze.reason
            ),
            Self::PastCutoff { window } => write!(
                f,
                "the window {} to {} is past its cutoff at {}",
                format_unix_s(window.start_unix_s),
                format_unix_s(window.end_unix_s),
                format_unix_s(window.cutoff_unix_s)
            ),
            Self::OutsideWindows => f.write_str("no window is open"),
        }
    }
}

/// A schedule's window part that is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error("window {index}: {source}")]
    Cron { index: usize, source: CronError },
    #[error("window {index}: {reason}")]
    Window { index: usize, reason: String },
    #[error("freeze {index}: {reason}")]
    Freeze { index: usize, reason: String },
    #[error(
        "invalid validity: expires ({}) must be later than not_before ({})",
        format_unix_s(*.expires_unix_s),
        format_unix_s(*.not_before_unix_s)
    )]
    Validity {
        not_before_unix_s: i64,
        expires_unix_s: i64,
    },
    #[error("the schedule has no window, so it would never allow a change; add one")]
    NoWindows,
    #[error("the schedule has {count} {items}, more than the limit of {max}")]
    TooMany {
        items: &'static str,
        count: usize,
        max: usize,
    },
}

#[derive(Debug, Clone)]
struct RecurringRule {
    index: usize,
    cron: CronExpr,
    duration_s: i64,
    cutoff_s: i64,
}

/// A validated [`CalendarSpec`], ready for queries. Building one parses every cron expression
/// and the zone; the queries then never fail, they only find nothing.
#[derive(Debug, Clone)]
pub struct Calendar {
    zone: Zone,
    not_before_unix_s: i64,
    expires_unix_s: i64,
    recurring: Vec<RecurringRule>,
    /// Occurrences of the one-off rules, sorted.
    once: Vec<Window>,
    /// Sorted by start.
    freezes: Vec<Freeze>,
}

impl Calendar {
    /// Validates `spec`: a known IANA zone, `not_before < expires`, one to
    /// [`MAX_WINDOW_RULES`] windows, cron expressions that fire, durations from 1 s to
    /// [`MAX_WINDOW_DURATION`], cutoffs shorter than their window, freezes with `start < end`
    /// and a reason.
    pub fn new(spec: &CalendarSpec) -> Result<Self, WindowError> {
        let zone = Zone::parse(&spec.zone)?;
        if spec.expires_unix_s <= spec.not_before_unix_s {
            return Err(WindowError::Validity {
                not_before_unix_s: spec.not_before_unix_s,
                expires_unix_s: spec.expires_unix_s,
            });
        }
        if spec.windows.is_empty() {
            return Err(WindowError::NoWindows);
        }
        check_count("windows", spec.windows.len(), MAX_WINDOW_RULES)?;
        check_count("freezes", spec.freezes.len(), MAX_FREEZES)?;

        let mut recurring = Vec::new();
        let mut once = Vec::new();
        for (index, rule) in spec.windows.iter().enumerate() {
            let invalid = |reason: String| WindowError::Window { index, reason };
            match rule {
                WindowRule::Recurring {
                    cron,
                    duration_s,
                    cutoff_s,
                } => {
                    let cron = CronExpr::parse(cron)
                        .map_err(|source| WindowError::Cron { index, source })?;
                    let duration_s = i64::from(*duration_s);
                    if duration_s == 0 || duration_s as u64 > MAX_WINDOW_DURATION.as_secs() {
                        return Err(invalid(format!(
                            "the duration {} is invalid: it must be at least 1s and at most {}",
                            format_duration(duration_s),
                            format_duration(MAX_WINDOW_DURATION.as_secs() as i64)
                        )));
                    }
                    let cutoff_s = check_cutoff(*cutoff_s, duration_s).map_err(invalid)?;
                    recurring.push(RecurringRule {
                        index,
                        cron,
                        duration_s,
                        cutoff_s,
                    });
                }
                WindowRule::Once {
                    start_unix_s,
                    end_unix_s,
                    cutoff_s,
                } => {
                    if end_unix_s <= start_unix_s {
                        return Err(invalid(format!(
                            "the end {} must be later than the start {}",
                            format_unix_s(*end_unix_s),
                            format_unix_s(*start_unix_s)
                        )));
                    }
                    let cutoff_s =
                        check_cutoff(*cutoff_s, end_unix_s - start_unix_s).map_err(invalid)?;
                    once.push(Window {
                        start_unix_s: *start_unix_s,
                        end_unix_s: *end_unix_s,
                        cutoff_unix_s: end_unix_s - cutoff_s,
                        rule: index,
                    });
                }
            }
        }
        once.sort();

        for (index, freeze) in spec.freezes.iter().enumerate() {
            let invalid = |reason: String| WindowError::Freeze { index, reason };
            if freeze.end_unix_s <= freeze.start_unix_s {
                return Err(invalid(format!(
                    "the end {} must be later than the start {}",
                    format_unix_s(freeze.end_unix_s),
                    format_unix_s(freeze.start_unix_s)
                )));
            }
            if freeze.reason.trim().is_empty() {
                return Err(invalid(
                    "the reason is empty; say why changes are frozen".into(),
                ));
            }
            if freeze.reason.len() > MAX_REASON_LEN {
                return Err(invalid(format!(
                    "the reason is {} bytes long, more than the limit of {MAX_REASON_LEN}",
                    freeze.reason.len()
                )));
            }
        }
        let mut freezes = spec.freezes.clone();
        freezes.sort_by_key(|freeze| (freeze.start_unix_s, freeze.end_unix_s));

        Ok(Self {
            zone,
            not_before_unix_s: spec.not_before_unix_s,
            expires_unix_s: spec.expires_unix_s,
            recurring,
            once,
            freezes,
        })
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    pub fn not_before_unix_s(&self) -> i64 {
        self.not_before_unix_s
    }

    pub fn expires_unix_s(&self) -> i64 {
        self.expires_unix_s
    }

    /// Returns the freezes that have not ended at `unix_s`, sorted by start.
    pub fn freezes_from(&self, unix_s: i64) -> Vec<Freeze> {
        self.freezes
            .iter()
            .filter(|freeze| freeze.end_unix_s > unix_s)
            .cloned()
            .collect()
    }

    /// Returns the rule indexes whose cron expressions restrict both day of month and day of
    /// week, so that a day matches when either matches. Previews warn about these.
    pub fn or_rule_windows(&self) -> Vec<usize> {
        self.recurring
            .iter()
            .filter(|rule| rule.cron.uses_or_rule())
            .map(|rule| rule.index)
            .collect()
    }

    /// Decides whether a bundle may start at `unix_s`.
    pub fn decide(&self, unix_s: i64) -> Decision {
        let denied = |reason: DenyReason, from: i64| Decision::Denied {
            reason,
            next_allowed_unix_s: self.next_allowed(from),
        };
        if unix_s < self.not_before_unix_s {
            return denied(
                DenyReason::NotYetValid {
                    not_before_unix_s: self.not_before_unix_s,
                },
                self.not_before_unix_s,
            );
        }
        if unix_s >= self.expires_unix_s {
            return Decision::Denied {
                reason: DenyReason::Expired {
                    expires_unix_s: self.expires_unix_s,
                },
                next_allowed_unix_s: None,
            };
        }
        if let Some(freeze) = self.freeze_at(unix_s) {
            return denied(
                DenyReason::Frozen {
                    freeze: freeze.clone(),
                },
                unix_s,
            );
        }

        let containing = self.windows_containing(unix_s);
        let allowing = containing
            .iter()
            .filter(|window| window.allows_start(unix_s))
            .max_by_key(|window| (window.cutoff_unix_s, window.end_unix_s));
        if let Some(window) = allowing {
            return Decision::Allowed { window: *window };
        }
        let reason = match containing.iter().max_by_key(|window| window.end_unix_s) {
            Some(window) => DenyReason::PastCutoff { window: *window },
            None => DenyReason::OutsideWindows,
        };
        denied(reason, unix_s)
    }

    /// Returns the window that contains `unix_s`, whether or not a freeze or the cutoff denies
    /// a start in it. When several windows contain it, the one with the latest cutoff.
    pub fn current_window(&self, unix_s: i64) -> Option<Window> {
        self.windows_containing(unix_s)
            .into_iter()
            .max_by_key(|window| (window.cutoff_unix_s, window.end_unix_s))
    }

    /// Returns up to `count` windows (at most [`MAX_QUERY_WINDOWS`]) that have not ended at
    /// `unix_s`, sorted by start, including one that is open at `unix_s`. Windows that start
    /// at or after `expires`, or end at or before `not_before`, are left out. Freezes do not
    /// remove windows; [`Calendar::freezes_from`] lists them.
    pub fn windows_from(&self, unix_s: i64, count: usize) -> Vec<Window> {
        self.occurrences_from(unix_s)
            .take(count.min(MAX_QUERY_WINDOWS))
            .collect()
    }

    /// Returns the earliest instant at or after `unix_s` at which a start is allowed: inside a
    /// window before its cutoff, outside every freeze and within the validity. `None` means no
    /// such instant before the schedule expires or within the search horizon.
    pub fn next_allowed(&self, unix_s: i64) -> Option<i64> {
        let mut cursor = unix_s.max(self.not_before_unix_s);
        // Each round either returns or moves the cursor past the end of one more freeze.
        for _ in 0..=2 * self.freezes.len() + 1 {
            if cursor >= self.expires_unix_s {
                return None;
            }
            if let Some(freeze) = self.freeze_at(cursor) {
                cursor = freeze.end_unix_s;
                continue;
            }
            // No freeze covers [cursor, next_freeze), so the first window that allows a start
            // in that interval gives the answer.
            let next_freeze = self
                .freezes
                .iter()
                .map(|freeze| freeze.start_unix_s)
                .filter(|start| *start > cursor)
                .min()
                .unwrap_or(i64::MAX);
            for window in self.occurrences_from(cursor) {
                let earliest = window.start_unix_s.max(cursor);
                if earliest >= next_freeze {
                    break;
                }
                if earliest < window.cutoff_unix_s.min(self.expires_unix_s) {
                    return Some(earliest);
                }
            }
            if next_freeze == i64::MAX {
                return None;
            }
            cursor = next_freeze;
        }
        None
    }

    fn freeze_at(&self, unix_s: i64) -> Option<&Freeze> {
        self.freezes
            .iter()
            .filter(|freeze| freeze.start_unix_s <= unix_s && unix_s < freeze.end_unix_s)
            .max_by_key(|freeze| freeze.end_unix_s)
    }

    fn windows_containing(&self, unix_s: i64) -> Vec<Window> {
        self.occurrences_from(unix_s)
            .take_while(|window| window.start_unix_s <= unix_s)
            .collect()
    }

    /// Enumerates the windows that have not ended at `unix_s`, sorted by start.
    fn occurrences_from(&self, unix_s: i64) -> Occurrences<'_> {
        let earliest_start = unix_s.saturating_sub(MAX_WINDOW_DURATION.as_secs() as i64);
        // A day earlier still, because a local date can begin before the UTC one.
        let next_date = self
            .zone
            .local_date(earliest_start)
            .and_then(|date| date.yesterday().ok());
        let mut pending: BinaryHeap<Reverse<Window>> = self
            .once
            .iter()
            .filter(|window| window.end_unix_s > unix_s)
            .map(|window| Reverse(*window))
            .collect();
        if next_date.is_none() {
            pending.clear();
        }
        Occurrences {
            calendar: self,
            after_unix_s: unix_s,
            pending,
            next_date,
            days_left: MAX_SEARCH_DAYS,
        }
    }

    /// Adds the windows that the recurring rules open on local `date` to `pending`.
    fn load_day(&self, date: Date, pending: &mut BinaryHeap<Reverse<Window>>) {
        let weekday = date.weekday().to_sunday_zero_offset() as u32;
        let (month, day) = (date.month() as u32, date.day() as u32);
        for rule in &self.recurring {
            if !rule.cron.matches_date(month, day, weekday) {
                continue;
            }
            let mut previous_start = None;
            for (hour, minute) in rule.cron.times_of_day() {
                let Ok(time) = Time::new(hour as i8, minute as i8, 0, 0) else {
                    continue;
                };
                let Some(start) = self.zone.start_instant(date, time) else {
                    continue;
                };
                // Starts that a DST gap moved onto one instant fire once.
                if previous_start == Some(start) {
                    continue;
                }
                previous_start = Some(start);
                pending.push(Reverse(Window {
                    start_unix_s: start,
                    end_unix_s: start + rule.duration_s,
                    cutoff_unix_s: start + rule.duration_s - rule.cutoff_s,
                    rule: rule.index,
                }));
            }
        }
    }
}

/// The windows of a calendar in order of start, produced one local day at a time.
///
/// Local start times map to instants monotonically (a gap moves a start to the gap's end, a
/// fold takes the first occurrence), so every window of a later local date starts at or after
/// the instant of that date's midnight. A pending window that starts before that instant can
/// therefore be returned before the date is loaded.
struct Occurrences<'a> {
    calendar: &'a Calendar,
    /// Only windows that end after this instant are returned.
    after_unix_s: i64,
    pending: BinaryHeap<Reverse<Window>>,
    /// The next local date to load, or `None` once loading has stopped.
    next_date: Option<Date>,
    days_left: u32,
}

impl Iterator for Occurrences<'_> {
    type Item = Window;

    fn next(&mut self) -> Option<Window> {
        let calendar = self.calendar;
        loop {
            self.load_until_ordered();
            let Reverse(window) = self.pending.pop()?;
            if window.start_unix_s >= calendar.expires_unix_s {
                // Everything after it starts later still.
                self.pending.clear();
                self.next_date = None;
                return None;
            }
            if window.end_unix_s <= self.after_unix_s
                || window.end_unix_s <= calendar.not_before_unix_s
            {
                continue;
            }
            return Some(window);
        }
    }
}

impl Occurrences<'_> {
    /// Loads local days until the earliest pending window starts before every window of the
    /// days not loaded yet, or until the search horizon or the schedule's expiry ends loading.
    fn load_until_ordered(&mut self) {
        while let Some(date) = self.next_date {
            let day_start = self.calendar.zone.start_instant(date, Time::midnight());
            let Some(day_start) = day_start else {
                self.next_date = None;
                return;
            };
            if let Some(Reverse(first)) = self.pending.peek() {
                if first.start_unix_s < day_start {
                    return;
                }
            }
            if self.days_left == 0 || day_start >= self.calendar.expires_unix_s {
                self.next_date = None;
                return;
            }
            self.days_left -= 1;
            self.calendar.load_day(date, &mut self.pending);
            self.next_date = date.tomorrow().ok();
        }
    }
}

fn check_count(items: &'static str, count: usize, max: usize) -> Result<(), WindowError> {
    if count > max {
        return Err(WindowError::TooMany { items, count, max });
    }
    Ok(())
}

/// Checks a cutoff against its window's length and returns it in seconds, 0 for none.
fn check_cutoff(cutoff_s: Option<u32>, length_s: i64) -> Result<i64, String> {
    let Some(cutoff_s) = cutoff_s else {
        return Ok(0);
    };
    let cutoff_s = i64::from(cutoff_s);
    if cutoff_s == 0 || cutoff_s >= length_s {
        return Err(format!(
            "the cutoff {} is invalid: it must be at least 1s and shorter than the window ({}); \
             leave it out for none",
            format_duration(cutoff_s),
            format_duration(length_s)
        ));
    }
    Ok(cutoff_s)
}

/// Parses a duration such as `2h`, `45m`, `1h30m`, `90s` or `1d`: one or more numbers, each
/// followed by a unit `d`, `h`, `m` or `s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "{text:?} is not a duration; write a number and a unit d, h, m or s, such as 2h, \
             45m or 1h30m"
        )
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let number: u64 = digits.parse().map_err(|_| invalid())?;
        total = number
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(invalid)?;
        digits.clear();
    }
    if !digits.is_empty() || text.trim().is_empty() {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

/// Formats seconds as the largest units that fit, such as `2h`, `1h30m` or `45m`; the inverse
/// of [`parse_duration`].
pub fn format_duration(seconds: i64) -> String {
    if seconds == 0 {
        return "0s".into();
    }
    let mut rest = seconds.unsigned_abs();
    let mut out = if seconds < 0 {
        "-".to_owned()
    } else {
        String::new()
    };
    for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
        if rest >= unit {
            out.push_str(&(rest / unit).to_string());
            out.push(name);
            rest %= unit;
        }
    }
    out
}
