//! RPM version ordering, as rpm 4.18 computes it for `[epoch:]version[-release]` strings.
//!
//! The string splits the way rpm's `rpmverParse` splits it. The epoch is the run of digits at the
//! start when a colon follows it, and it is 0 when missing or empty. The release is everything
//! after the last hyphen. Epochs, then versions, then releases compare with `rpmvercmp`, and a
//! missing release sorts before any release, as in rpm's `rpmverCmp`. `rpm.vercmp()` in rpm
//! 4.18's Lua interpreter returns the same results, and the integration tests check against it
//! when `rpm` is installed.
//!
//! `rpmvercmp` reads each string as segments of ASCII letters or ASCII digits. Every other
//! character separates segments, except `~` and `^`:
//!
//! - `~` sorts before everything, even the end of the string (`1.0~rc1` < `1.0`).
//! - `^` sorts after the end of the string but before anything else (`1.0` < `1.0^git1` <
//!   `1.0.1`).
//! - A digit segment sorts after a letter segment, digit segments compare as numbers, and letter
//!   segments compare byte by byte.
//! - Separators only split segments, so `1.0`, `1_0` and `1..0` are equal.
//! - When all segments are equal, the string with segments left over is newer.
//!
//! The one deviation: `rpm.vercmp()` raises an error for the empty string. Here the empty string
//! compares like `.`, a version without segments: after versions that start with `~`, and
//! before all others that are not equal to it.

use std::cmp::Ordering;

use super::compare_digit_runs;

/// Compares two RPM `[epoch:]version[-release]` strings the way rpm 4.18's `rpmverCmp` does.
/// Accepts any string, including the empty one.
pub fn compare(a: &str, b: &str) -> Ordering {
    let a = Evr::split(a.as_bytes());
    let b = Evr::split(b.as_bytes());

    rpmvercmp(a.epoch, b.epoch)
        .then_with(|| rpmvercmp(a.version, b.version))
        .then_with(|| match (a.release, b.release) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(release_a), Some(release_b)) => rpmvercmp(release_a, release_b),
        })
}

/// An `[epoch:]version[-release]` string split into its parts.
#[derive(Debug, Clone, Copy)]
struct Evr<'a> {
    /// ASCII digits, `b"0"` when the string has no epoch.
    epoch: &'a [u8],
    version: &'a [u8],
    release: Option<&'a [u8]>,
}

impl<'a> Evr<'a> {
    fn split(evr: &'a [u8]) -> Self {
        let digits_end = evr
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(evr.len());

        let (epoch, rest) = match evr.get(digits_end) {
            Some(b':') if digits_end == 0 => (&b"0"[..], &evr[1..]),
            Some(b':') => (&evr[..digits_end], &evr[digits_end + 1..]),
            _ => (&b"0"[..], evr),
        };

        let (version, release) = match rest.iter().rposition(|&c| c == b'-') {
            Some(hyphen) => (&rest[..hyphen], Some(&rest[hyphen + 1..])),
            None => (rest, None),
        };

        Self {
            epoch,
            version,
            release,
        }
    }
}

/// Compares two version or release strings with rpm's `rpmvercmp` algorithm.
fn rpmvercmp(mut a: &[u8], mut b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }

    while !a.is_empty() || !b.is_empty() {
        a = skip_separators(a);
        b = skip_separators(b);
        let first_a = a.first().copied();
        let first_b = b.first().copied();

        if first_a == Some(b'~') || first_b == Some(b'~') {
            if first_a != Some(b'~') {
                return Ordering::Greater;
            }
            if first_b != Some(b'~') {
                return Ordering::Less;
            }
            a = &a[1..];
            b = &b[1..];
            continue;
        }

        // `^` works like `~`, except that the end of the string sorts before it.
        if first_a == Some(b'^') || first_b == Some(b'^') {
            if first_a.is_none() {
                return Ordering::Less;
            }
            if first_b.is_none() {
                return Ordering::Greater;
            }
            if first_a != Some(b'^') {
                return Ordering::Greater;
            }
            if first_b != Some(b'^') {
                return Ordering::Less;
            }
            a = &a[1..];
            b = &b[1..];
            continue;
        }

        if a.is_empty() || b.is_empty() {
            break;
        }

        // `a` starts a segment here. Its first character decides whether the segment on both sides
        // is read as digits or as letters.
        let numeric = a[0].is_ascii_digit();
        let in_segment = if numeric {
            u8::is_ascii_digit
        } else {
            u8::is_ascii_alphabetic
        };
        let (segment_a, rest_a) = split_while(a, in_segment);
        let (segment_b, rest_b) = split_while(b, in_segment);

        // `b` has a segment of the other kind. A digit segment is the newer one.
        if segment_b.is_empty() {
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }

        let ordering = if numeric {
            compare_digit_runs(segment_a, segment_b)
        } else {
            segment_a.cmp(segment_b)
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
        a = rest_a;
        b = rest_b;
    }

    // All segments compared equal, so the string with anything left over is newer.
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, _) => Ordering::Greater,
    }
}

/// Skips characters that only separate segments: all but ASCII letters, ASCII digits, `~`
/// and `^`.
fn skip_separators(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .position(|&c| c.is_ascii_alphanumeric() || c == b'~' || c == b'^')
        .unwrap_or(text.len());
    &text[start..]
}

/// Splits `text` into its longest prefix whose bytes all satisfy `predicate`, and the rest.
fn split_while(text: &[u8], predicate: fn(&u8) -> bool) -> (&[u8], &[u8]) {
    let end = text
        .iter()
        .position(|c| !predicate(c))
        .unwrap_or(text.len());
    text.split_at(end)
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering::{Equal, Greater, Less};

    use super::*;

    /// Asserts `compare(a, b) == expected` and the reverse comparison, so each case also checks
    /// antisymmetry.
    #[track_caller]
    fn assert_order(a: &str, b: &str, expected: Ordering) {
        assert_eq!(compare(a, b), expected, "compare({a:?}, {b:?})");
        assert_eq!(compare(b, a), expected.reverse(), "compare({b:?}, {a:?})");
    }

    #[test]
    fn tilde_sorts_before_release() {
        assert_order("1.0~rc1", "1.0", Less);
    }

    #[test]
    fn caret_sorts_between_end_and_next_segment() {
        assert_order("1.1^201601", "1.1", Greater);
        assert_order("1.1^201601", "1.1.1", Less);
    }

    #[test]
    fn leading_zeros_are_ignored() {
        assert_order("1.01", "1.1", Equal);
    }

    #[test]
    fn underscore_is_a_separator() {
        // `_rc1` adds segments `rc` and `1`, so unlike `~rc1` it sorts after the bare version.
        assert_order("1.0_rc1", "1.0", Greater);
    }

    #[test]
    fn epoch_then_version_then_release() {
        assert_order("1:2.9.8.0-2.el6", "1:2.9.8.2-1.el6", Less);
        assert_order("1:1.0", "2.0", Greater);
        assert_order("1.0-2", "1.0.1-1", Less);
        assert_order("1.0-2.el8", "1.0-10.el8", Less);
    }

    #[test]
    fn missing_release_sorts_before_any_release() {
        assert_order("1.0", "1.0-1", Less);
        assert_order("1.0", "1.0-", Less);
        assert_order("1.0-", "1.0-0", Less);
    }

    #[test]
    fn missing_or_empty_epoch_equals_zero() {
        assert_order("0:1.0", "1.0", Equal);
        assert_order(":1.0", "1.0", Equal);
        assert_order("01:1.0", "1:1.0", Equal);
    }

    #[test]
    fn non_numeric_epoch_is_part_of_version() {
        // "a:1.0" has no epoch, so its version "a:1.0" starts with a letter segment.
        assert_order("a:1.0", "1.0", Less);
    }

    #[test]
    fn release_starts_after_last_hyphen() {
        // Version "1.0-1", release "2" against version "1.0", release "2".
        assert_order("1.0-1-2", "1.0-2", Greater);
        assert_order("1.0-1-2", "1.0-1-3", Less);
    }

    #[test]
    fn rpm_test_suite_cases() {
        // Cases from rpm's tests/rpmvercmp.at, and more for `^`, each checked against rpm 4.18.
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0.1", Equal),
            ("2.0", "2.0.1", Less),
            ("2.0.1a", "2.0.1", Greater),
            ("5.5p1", "5.5p2", Less),
            ("5.5p1", "5.5p10", Less),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("xyz.4", "8", Less),
            ("xyz.4", "2", Less),
            ("5.5p2", "5.6p1", Less),
            ("5.6p1", "6.5p1", Less),
            ("6.0.rc1", "6.0", Greater),
            ("10b2", "10a1", Greater),
            ("10a2", "10b2", Less),
            ("1.0aa", "1.0a", Greater),
            ("10.0001", "10.1", Equal),
            ("10.0001", "10.0039", Less),
            ("4.999.9", "5.0", Less),
            ("20101121", "20101122", Less),
            ("2_0", "2.0", Equal),
            ("a+", "a_", Equal),
            ("+a", "_a", Equal),
            ("_+", "+_", Equal),
            ("+", "_", Equal),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git123", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^", "1.0^git1", Less),
            ("1.0^git1", "1.0^git2", Less),
            ("1.0^git1", "1.01", Less),
            ("1.0^20160101", "1.0.1", Less),
            ("1.0^20160101^git1", "1.0^20160101", Greater),
            ("1.0^20160102", "1.0^20160101^git1", Greater),
            ("1.0~rc1^git1", "1.0~rc1", Greater),
            ("1.0^git1~pre", "1.0^git1", Less),
            ("1.0^git1", "1.0^git1~pre", Greater),
        ];
        for (a, b, expected) in cases {
            assert_order(a, b, expected);
        }
    }

    #[test]
    fn non_ascii_bytes_are_separators() {
        assert_order("1.1.α", "1.1.β", Equal);
        assert_order("1.1.α", "1.1", Equal);
    }

    #[test]
    fn huge_digit_runs_compare_without_overflow() {
        let huge = "9".repeat(200);
        let larger = format!("1{}", "0".repeat(200));
        assert_order(&format!("1.{huge}"), &format!("1.{larger}"), Less);
        assert_order(&format!("{huge}:1"), &format!("{larger}:0"), Less);
        assert_order(&format!("1.000{huge}"), &format!("1.{huge}"), Equal);
    }

    #[test]
    fn empty_version_has_no_segments() {
        assert_order("", "", Equal);
        assert_order("", ".", Equal);
        assert_order("", "0", Less);
        assert_order("", "a", Less);
        assert_order("", "^", Less);
        assert_order("", "~", Greater);
    }

    #[test]
    fn garbage_does_not_panic() {
        let inputs = [
            "",
            ":",
            "::",
            "-",
            "--",
            "~",
            "^",
            ":-",
            "-:",
            "\0",
            "\u{10ffff}",
            "^~",
        ];
        for a in inputs {
            for b in inputs {
                let _ = compare(a, b);
            }
        }
    }
}
