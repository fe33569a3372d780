//! Text formatting for the CLI: aligned tables, relative times, sizes and durations.

/// Renders rows under a header, each column as wide as its widest cell, columns separated by two
/// spaces and left-aligned. Lines carry no trailing spaces. Widths count `char`s, so they are
/// right for ASCII and most Latin text but not for wide (CJK) characters.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(column) {
                Some(current) => *current = (*current).max(width),
                None => widths.push(width),
            }
        }
    }

    let mut out = String::new();
    let header_cells: Vec<String> = headers.iter().map(|header| (*header).to_owned()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let padding = widths[column].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', padding));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders `label: value` lines with the values lined up after the longest label.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(label, _)| label.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (label, value) in fields {
        let label = format!("{label}:");
        out.push_str(format!("{label:<width$}  {value}").trim_end());
        out.push('\n');
    }
    out
}

/// Describes how long before `now_unix_s` the instant `then_unix_s` was, in its largest whole
/// unit: `5s ago`, `3m ago`, `2h ago`, `4d ago`. An instant after `now` (a host clock ahead of
/// this one) reads `in 5s`.
pub fn relative_time(now_unix_s: i64, then_unix_s: i64) -> String {
    let elapsed = now_unix_s.saturating_sub(then_unix_s);
    if elapsed < 0 {
        return format!("in {}", largest_unit(elapsed.unsigned_abs()));
    }
    format!("{} ago", largest_unit(elapsed.unsigned_abs()))
}

fn largest_unit(seconds: u64) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match seconds {
        s if s < MINUTE => format!("{s}s"),
        s if s < HOUR => format!("{}m", s / MINUTE),
        s if s < DAY => format!("{}h", s / HOUR),
        s => format!("{}d", s / DAY),
    }
}

/// Formats a duration in its two largest units: `2d 3h`, `3h 12m`, `4m 10s`, `45s`.
pub fn duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (days, hours, minutes, secs) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60, s % 60);
    let text = if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {secs}s")
    } else {
        format!("{secs}s")
    };
    format!("{sign}{text}")
}

/// Formats a byte count in binary units with one decimal: `512 B`, `1.5 KiB`, `7.8 GiB`.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Formats a pending-update count with its security share: `12 (3 sec)`, or `12` when none of
/// them is a security update.
pub fn pending(total: u64, security: u64) -> String {
    if security == 0 {
        total.to_string()
    } else {
        format!("{total} ({security} sec)")
    }
}

pub fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_time_picks_largest_unit() {
        let now = 1_700_000_000;
        assert_eq!(relative_time(now, now), "0s ago");
        assert_eq!(relative_time(now, now - 5), "5s ago");
        assert_eq!(relative_time(now, now - 59), "59s ago");
        assert_eq!(relative_time(now, now - 60), "1m ago");
        assert_eq!(relative_time(now, now - 3 * 60 - 59), "3m ago");
        assert_eq!(relative_time(now, now - 3_599), "59m ago");
        assert_eq!(relative_time(now, now - 3_600), "1h ago");
        assert_eq!(relative_time(now, now - 86_399), "23h ago");
        assert_eq!(relative_time(now, now - 86_400), "1d ago");
        assert_eq!(relative_time(now, now - 40 * 86_400), "40d ago");
    }

    #[test]
    fn relative_time_in_future() {
        assert_eq!(relative_time(1_000, 1_005), "in 5s");
        assert_eq!(relative_time(1_000, 1_000 + 7_200), "in 2h");
    }

    #[test]
    fn relative_time_extremes_do_not_overflow() {
        assert_eq!(relative_time(i64::MAX, i64::MIN), "106751991167300d ago");
        assert_eq!(relative_time(i64::MIN, i64::MAX), "in 106751991167300d");
    }

    #[test]
    fn table_aligns_columns() {
        let table = render_table(
            &["AGENT", "HOSTNAME", "PENDING"],
            &[
                vec!["3f2a".into(), "gateway-plant-7".into(), "12 (3 sec)".into()],
                vec!["b71c00".into(), "db".into(), "0".into()],
            ],
        );
        let expected = "\
AGENT   HOSTNAME         PENDING
3f2a    gateway-plant-7  12 (3 sec)
b71c00  db               0
";
        assert_eq!(table, expected);
    }

    #[test]
    fn table_trims_trailing_spaces() {
        let table = render_table(&["A", "LONG HEADER"], &[vec!["x".into(), "".into()]]);
        assert_eq!(table, "A  LONG HEADER\nx\n");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let table = render_table(&["NAME", "N"], &[vec!["büro".into(), "1".into()]]);
        assert_eq!(table, "NAME  N\nbüro  1\n");
    }

    #[test]
    fn fields_align_values() {
        let text = render_fields(&[("OS", "Debian 12".into()), ("Reboot", "no".into())]);
        assert_eq!(text, "OS:      Debian 12\nReboot:  no\n");
    }

    #[test]
    fn duration_two_largest_units() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(4 * 60 + 10), "4m 10s");
        assert_eq!(duration(3 * 3_600 + 12 * 60 + 5), "3h 12m");
        assert_eq!(duration(2 * 86_400 + 3 * 3_600 + 59), "2d 3h");
        assert_eq!(duration(-90), "-1m 30s");
    }

    #[test]
    fn bytes_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(8 * 1024 * 1024 * 1024), "8.0 GiB");
        assert_eq!(bytes(8_348_000_000), "7.8 GiB");
    }

    #[test]
    fn pending_shows_security_share() {
        assert_eq!(pending(12, 3), "12 (3 sec)");
        assert_eq!(pending(12, 0), "12");
        assert_eq!(pending(0, 0), "0");
    }
}
