//! Maintenance-window arithmetic, shared by the agent and the server so that both reach the same
//! instants to the second.
//!
//! A schedule's window part ([`CalendarSpec`]) holds recurring windows (a five-field cron
//! expression, a duration and an optional cutoff, all in one IANA time zone), one-off windows,
//! freezes that override every window, and a validity interval. [`Calendar::new`] validates it:
//! an expression that can never fire, a fixed UTC offset in place of a zone name, or a cutoff
//! that leaves no time to start is rejected there, and the queries never fail afterwards.
//!
//! This module is pure: it reads no clock and no files. Time zones come from the tz database
//! compiled into the binary, so a device without `/usr/share/zoneinfo` computes what the server
//! computes (see [`zone`]).
//!
//! # Public API
//!
//! - [`CronExpr::parse`], [`CronExpr::uses_or_rule`], [`CronExpr::matches_date`],
//!   [`CronExpr::times_of_day`];
//! - [`Zone::parse`], [`Zone::start_instant`], [`Zone::format_local`], [`Zone::parse_local`];
//! - [`CalendarSpec`], [`WindowRule`], [`Freeze`]: the serialisable, signed form;
//! - [`Calendar::new`], and the queries [`Calendar::decide`] (allowed with the window, or denied
//!   with a [`DenyReason`] and the next allowed instant), [`Calendar::current_window`],
//!   [`Calendar::windows_from`] (the next N windows), [`Calendar::next_allowed`] (the earliest
//!   instant at or after a given one at which a start is allowed), [`Calendar::freezes_from`]
//!   and [`Calendar::or_rule_windows`];
//! - [`parse_duration`] and [`format_duration`] for `2h`, `45m`, `1h30m`.
//!
//! All instants are `i64` seconds since the Unix epoch, UTC.

pub mod calendar;
pub mod cron;
pub mod zone;

pub use calendar::{
    format_duration, parse_duration, Calendar, CalendarSpec, Decision, DenyReason, Freeze, Window,
    WindowError, WindowRule, MAX_FREEZES, MAX_QUERY_WINDOWS, MAX_REASON_LEN, MAX_SEARCH_DAYS,
    MAX_WINDOW_DURATION, MAX_WINDOW_RULES,
};
pub use cron::{CronError, CronExpr, MAX_CRON_LEN};
pub use zone::{Zone, ZoneError, MAX_ZONE_NAME_LEN};

#[cfg(test)]
mod tests;
