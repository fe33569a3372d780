//! Five-field cron expressions: `minute hour day-of-month month day-of-week`.
//!
//! Each field is `*` or a comma-separated list of items. An item is a value, a range `a-b`, or
//! either of those or `*` followed by a step `/n`; `a/n` means `a-max/n`. Months take the names
//! `JAN`-`DEC` and days of the week `SUN`-`SAT` (any case), and day of week `0` and `7` are both
//! Sunday. Ranges do not wrap around: `FRI-MON` is rejected, write `FRI-SUN,MON` instead.
//! Macros such as `@daily` are not supported.
//!
//! Day of month and day of week combine as in Vixie cron and POSIX: when both fields are
//! restricted, a day matches if either matches (OR); when either field starts with `*`, a day
//! must match both (AND, where the `*` field matches every day or only its steps).
//!
//! An expression that can never fire, such as `0 2 30 2 *`, is rejected when it is parsed. The
//! check is arithmetic over the month and day-of-month sets, so it takes no search.

use std::fmt;

/// A parsed cron expression. The text it was parsed from is kept for display and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    text: String,
    /// Bit `m` set: minute `m` matches.
    minutes: u64,
    /// Bit `h` set: hour `h` matches.
    hours: u32,
    /// Bit `d` set: day of month `d` (1-31) matches.
    days_of_month: u32,
    /// Bit `m` set: month `m` (1-12) matches.
    months: u16,
    /// Bit `d` set: day of week `d` matches, 0 being Sunday.
    days_of_week: u8,
    /// Whether the day-of-month field starts with `*`, which selects the AND rule.
    day_of_month_star: bool,
    /// Whether the day-of-week field starts with `*`.
    day_of_week_star: bool,
}

/// Maximum length in bytes of a cron expression. Real expressions are a few dozen bytes.
pub const MAX_CRON_LEN: usize = 200;

/// Why a cron expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("invalid cron expression {expression:?}: {reason}")]
    Syntax { expression: String, reason: String },
    #[error(
        "invalid cron expression {expression:?}: the {field} field {value:?} is invalid: {reason}"
    )]
    Field {
        expression: String,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "cron expression {expression:?} never fires: no month it names has a day {days}; \
         remove the impossible day of month or add a day of week"
    )]
    NeverFires { expression: String, days: String },
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
/// Names map to `min + index`, so January is 1.
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
/// 7 is accepted as a second Sunday and folded onto 0 after parsing.
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// The largest day of each month, 1-based; February counts its leap day.
const DAYS_IN_MONTH_MAX: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl CronExpr {
    /// Parses a five-field expression and rejects it when it can never fire.
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let syntax = |reason: String| CronError::Syntax {
            expression: text.chars().take(MAX_CRON_LEN).collect(),
            reason,
        };
        if text.len() > MAX_CRON_LEN {
            return Err(syntax(format!(
                "it is {} bytes long, more than the limit of {MAX_CRON_LEN}",
                text.len()
            )));
        }
        if text.trim_start().starts_with('@') {
            return Err(syntax(
                "macros such as @daily are not supported; write the five fields, such as `0 0 * * *`"
                    .into(),
            ));
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day_of_month, month, day_of_week] = fields.as_slice() else {
            return Err(syntax(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        };

        let minutes = parse_field(text, minute, &MINUTE)?;
        let hours = parse_field(text, hour, &HOUR)? as u32;
        let days_of_month = parse_field(text, day_of_month, &DAY_OF_MONTH)? as u32;
        let months = parse_field(text, month, &MONTH)? as u16;
        let raw_days_of_week = parse_field(text, day_of_week, &DAY_OF_WEEK)?;
        // Sunday may be written as 7; fold it onto 0.
        let days_of_week = ((raw_days_of_week & 0x7f) | (raw_days_of_week >> 7)) as u8;

        let expr = Self {
            text: fields.join(" "),
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            day_of_month_star: day_of_month.starts_with('*'),
            day_of_week_star: day_of_week.starts_with('*'),
        };
        expr.check_fires()?;
        Ok(expr)
    }

    /// Rejects an expression whose day rule matches no date. Under the OR rule the day-of-week
    /// set alone matches a day every week. Under the AND rule a day matches when some month has
    /// one of the listed days: every calendar date, 29 February included, falls on each day of
    /// the week in some year of the 400-year Gregorian cycle, so the day-of-week set cannot
    /// empty the match once a date exists.
    fn check_fires(&self) -> Result<(), CronError> {
        if self.uses_or_rule() {
            return Ok(());
        }
        let possible = (1..=12u32)
            .filter(|month| self.months & (1 << month) != 0)
            .any(|month| {
                let valid_days = (1u64 << (DAYS_IN_MONTH_MAX[month as usize] + 1)) - 2;
                u64::from(self.days_of_month) & valid_days != 0
            });
        if possible {
            return Ok(());
        }
        let days: Vec<String> = (1..=31u32)
            .filter(|day| self.days_of_month & (1 << day) != 0)
            .map(|day| day.to_string())
            .collect();
        Err(CronError::NeverFires {
            expression: self.text.clone(),
            days: days.join(","),
        })
    }

    /// Returns whether day of month and day of week are both restricted, so that a day matches
    /// when either matches. Previews warn about this, because it is rarely what people expect.
    pub fn uses_or_rule(&self) -> bool {
        !self.day_of_month_star && !self.day_of_week_star
    }

    /// Returns whether the expression matches a date. `weekday` is 0 for Sunday to 6 for
    /// Saturday.
    pub fn matches_date(&self, month: u32, day: u32, weekday: u32) -> bool {
        if month > 12 || day > 31 || weekday > 6 || self.months & (1 << month) == 0 {
            return false;
        }
        let day_match = self.days_of_month & (1 << day) != 0;
        let weekday_match = self.days_of_week & (1 << weekday) != 0;
        if self.uses_or_rule() {
            day_match || weekday_match
        } else {
            day_match && weekday_match
        }
    }

    /// Returns the matching times of day as `(hour, minute)`, in ascending order.
    pub fn times_of_day(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..24u32)
            .filter(|hour| self.hours & (1 << hour) != 0)
            .flat_map(move |hour| {
                (0..60u32)
                    .filter(|minute| self.minutes & (1 << minute) != 0)
                    .map(move |minute| (hour, minute))
            })
    }

    /// Returns the expression with its fields separated by single spaces.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses one field into a bit set over `spec.min..=spec.max`.
fn parse_field(expression: &str, field: &str, spec: &FieldSpec) -> Result<u64, CronError> {
    let invalid = |value: &str, reason: String| CronError::Field {
        expression: expression.to_owned(),
        field: spec.name,
        value: value.to_owned(),
        reason,
    };
    let mut set = 0u64;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| {
                    invalid(item, format!("the step {step:?} is not a whole number"))
                })?;
                if step == 0 || step > spec.max {
                    return Err(invalid(
                        item,
                        format!("the step must be between 1 and {}", spec.max),
                    ));
                }
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((low, high)) = range.split_once('-') {
            let low = parse_value(low, spec).map_err(|reason| invalid(item, reason))?;
            let high = parse_value(high, spec).map_err(|reason| invalid(item, reason))?;
            if low > high {
                return Err(invalid(
                    item,
                    format!(
                        "the range starts after it ends; ranges do not wrap around, so list \
                         both parts, such as `{low}-{},{}-{high}`",
                        spec.max, spec.min
                    ),
                ));
            }
            (low, high)
        } else {
            let value = parse_value(range, spec).map_err(|reason| invalid(item, reason))?;
            // `a/n` runs from `a` to the end of the field.
            (value, if step > 1 { spec.max } else { value })
        };
        let mut value = low;
        while value <= high {
            set |= 1 << value;
            value += step;
        }
    }
    Ok(set)
}

/// Parses a number or, where the field has names, a three-letter name.
fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    if let Some(index) = spec
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(spec.min + index as u32);
    }
    let value: u32 = text.parse().map_err(|_| {
        if spec.names.is_empty() {
            format!("{text:?} is not a number")
        } else {
            format!(
                "{text:?} is neither a number nor one of {}",
                spec.names.join(", ")
            )
        }
    })?;
    if value < spec.min || value > spec.max {
        return Err(format!("{value} is out of range {}-{}", spec.min, spec.max));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minutes(expr: &CronExpr) -> Vec<u32> {
        expr.times_of_day().map(|(_, minute)| minute).collect()
    }

    #[test]
    fn lists_ranges_and_steps() {
        let expr = CronExpr::parse("0,15-17,*/20 3 * * *").unwrap();
        assert_eq!(minutes(&expr), vec![0, 15, 16, 17, 20, 40]);
        let expr = CronExpr::parse("10-30/10 3 * * *").unwrap();
        assert_eq!(minutes(&expr), vec![10, 20, 30]);
        let expr = CronExpr::parse("50/5 3 * * *").unwrap();
        assert_eq!(minutes(&expr), vec![50, 55]);
    }

    #[test]
    fn names_and_sunday_seven() {
        let expr = CronExpr::parse("0 23 * jan-Mar MON-FRI").unwrap();
        // 2026-03-02 is a Monday, 2026-03-01 a Sunday.
        assert!(expr.matches_date(3, 2, 1));
        assert!(!expr.matches_date(3, 1, 0));
        assert!(!expr.matches_date(4, 6, 1));
        let expr = CronExpr::parse("0 0 * * 7").unwrap();
        assert!(expr.matches_date(6, 7, 0));
        assert!(!expr.matches_date(6, 8, 1));
    }

    #[test]
    fn day_rule_is_or_when_both_restricted() {
        let expr = CronExpr::parse("0 2 1-7 * SUN").unwrap();
        assert!(expr.uses_or_rule());
        // 2026-06-03 is a Wednesday, 2026-06-14 a Sunday, 2026-06-15 a Monday.
        assert!(expr.matches_date(6, 3, 3));
        assert!(expr.matches_date(6, 14, 0));
        assert!(!expr.matches_date(6, 15, 1));

        let expr = CronExpr::parse("0 2 */2 * SUN").unwrap();
        assert!(!expr.uses_or_rule());
        assert!(!expr.matches_date(6, 14, 0), "day 14 is not in */2");
        assert!(expr.matches_date(6, 21, 0));
    }

    #[test]
    fn never_firing_is_rejected() {
        for text in [
            "0 2 30 2 *",
            "0 0 31 4 *",
            "0 0 31 2,4,6,9,11 *",
            "0 0 30,31 FEB *",
        ] {
            assert!(
                matches!(CronExpr::parse(text), Err(CronError::NeverFires { .. })),
                "{text} was accepted"
            );
        }
        assert!(CronExpr::parse("0 2 29 2 *").is_ok());
        assert!(
            CronExpr::parse("0 2 30 2 MON").is_ok(),
            "OR rule fires on Mondays"
        );
        assert!(
            CronExpr::parse("0 0 31 4 */2").is_err(),
            "AND rule keeps day 31"
        );
    }

    #[test]
    fn errors_name_field_and_value() {
        let error = CronExpr::parse("0 24 * * *").unwrap_err().to_string();
        assert!(error.contains("hour field \"24\""), "{error}");
        assert!(error.contains("out of range 0-23"), "{error}");
        let error = CronExpr::parse("0 0 * * FRI-MON").unwrap_err().to_string();
        assert!(error.contains("day-of-week"), "{error}");
        let error = CronExpr::parse("0 0 * *").unwrap_err().to_string();
        assert!(error.contains("found 4"), "{error}");
        let error = CronExpr::parse("*/0 * * * *").unwrap_err().to_string();
        assert!(error.contains("step"), "{error}");
        assert!(CronExpr::parse("@daily").is_err());
        assert!(CronExpr::parse("0 0 * FOO *").is_err());
        assert!(CronExpr::parse("0 0 0 * *").is_err());
        assert!(CronExpr::parse("- 0 * * *").is_err());
        assert!(CronExpr::parse("1-2-3 0 * * *").is_err());
    }
}
