//! Debian version ordering, as `dpkg --compare-versions` computes it.
//!
//! A Debian version is `[epoch:]upstream[-revision]` (Debian Policy 5.6.12). The epoch is the
//! number before the first colon and defaults to 0. The revision is everything after the last
//! hyphen, and a missing revision compares equal to `0`. Epochs compare as numbers, then upstream
//! versions and then revisions compare with dpkg's `verrevcmp`: the string is read as alternating
//! non-digit and digit parts. Non-digit parts compare character by character, with `~` before
//! everything (even the end of the part), then the end of the part, then letters, then all other
//! characters. Digit parts compare as numbers.
//!
//! This follows `verrevcmp` and `dpkg_version_compare` in dpkg's `lib/dpkg/version.c`, and the way
//! dpkg 1.21.22 splits and trims versions, and the integration tests check it against the
//! installed `dpkg`. [`compare`] agrees with `dpkg --compare-versions` on every version that dpkg
//! accepts, including the ones it accepts with a warning. It accepts any string, so it also orders
//! the versions that dpkg rejects:
//!
//! - An epoch that is not a number (`a:1.0`), or is negative, is not taken as an epoch. The whole
//!   string is then the upstream version and revision.
//! - An epoch above dpkg's limit of 2147483647 still compares as a number.
//! - An empty revision (`1.0-`) compares like a missing one.
//! - The empty string sorts before every other version, as `dpkg --compare-versions` does with an
//!   empty argument. A version of only spaces and tabs counts as empty.
//!
//! [`parse`] is the strict counterpart: it rejects what dpkg rejects, and also what dpkg only warns
//! about.

use std::cmp::Ordering;

use super::compare_digit_runs;

/// The largest epoch that dpkg accepts (C `INT_MAX`).
pub const MAX_EPOCH: u32 = i32::MAX as u32;

/// A Debian version that [`parse`] accepted, split into its three parts. It orders the way
/// [`compare`] does, so two versions can be equal without being written the same (`1.0` and
/// `0:1.0-0`).
#[derive(Debug, Clone, Copy)]
pub struct DebVersion<'a> {
    pub epoch: u32,
    pub upstream: &'a str,
    /// The text after the last hyphen, or `""` when the version has no hyphen.
    pub revision: &'a str,
}

/// A Debian version that [`parse`] rejected, with the text that was rejected and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Debian version {value:?}: {reason}")]
pub struct InvalidDebVersion {
    pub value: String,
    pub reason: &'static str,
}

/// Compares two Debian versions the way `dpkg --compare-versions` does. Accepts any string: see
/// the module documentation for how it orders versions that dpkg rejects.
pub fn compare(a: &str, b: &str) -> Ordering {
    let a = split_lenient(a);
    let b = split_lenient(b);

    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => compare_digit_runs(a.epoch, b.epoch)
            .then_with(|| verrevcmp(a.upstream, b.upstream))
            .then_with(|| verrevcmp(a.revision, b.revision)),
    }
}

/// Parses a Debian version, rejecting any version that Debian Policy 5.6.12 does not allow.
///
/// Leading and trailing spaces and tabs are ignored, as dpkg ignores them. The epoch must be plain
/// ASCII digits, up to [`MAX_EPOCH`]. This is stricter than dpkg, which also accepts a sign or
/// leading whitespace before the epoch digits. The upstream version must start with a digit and
/// contain only letters, digits and `. + ~ - :`. The revision must not be empty after a hyphen
/// and may contain only letters, digits and `. + ~`.
pub fn parse(version: &str) -> Result<DebVersion<'_>, InvalidDebVersion> {
    let invalid = |reason| InvalidDebVersion {
        value: version.chars().take(80).collect(),
        reason,
    };

    let trimmed = version.trim_matches(is_blank);
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    if trimmed.contains(is_blank) {
        return Err(invalid("it contains a space or tab"));
    }

    let (epoch, rest) = match trimmed.split_once(':') {
        None => (0, trimmed),
        Some((epoch, rest)) => {
            if epoch.is_empty() || !epoch.bytes().all(|c| c.is_ascii_digit()) {
                return Err(invalid("the epoch before the first ':' is not a number"));
            }
            let epoch = match epoch.parse::<u32>() {
                Ok(epoch) if epoch <= MAX_EPOCH => epoch,
                _ => return Err(invalid("the epoch is larger than 2147483647")),
            };
            (epoch, rest)
        }
    };

    let (upstream, revision) = match rest.rsplit_once('-') {
        None => (rest, ""),
        Some((_, "")) => return Err(invalid("the revision after the last '-' is empty")),
        Some((upstream, revision)) => (upstream, revision),
    };

    if upstream.is_empty() {
        return Err(invalid("the upstream version is empty"));
    }
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(invalid("the upstream version does not start with a digit"));
    }
    let upstream_allowed = |c: char| c.is_ascii_alphanumeric() || ".+~-:".contains(c);
    if !upstream.chars().all(upstream_allowed) {
        return Err(invalid(
            "the upstream version may contain only letters, digits and '.', '+', '~', '-', ':'",
        ));
    }
    let revision_allowed = |c: char| c.is_ascii_alphanumeric() || ".+~".contains(c);
    if !revision.chars().all(revision_allowed) {
        return Err(invalid(
            "the revision may contain only letters, digits and '.', '+', '~'",
        ));
    }

    Ok(DebVersion {
        epoch,
        upstream,
        revision,
    })
}

impl Ord for DebVersion<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream.as_bytes(), other.upstream.as_bytes()))
            .then_with(|| verrevcmp(self.revision.as_bytes(), other.revision.as_bytes()))
    }
}

impl PartialOrd for DebVersion<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for DebVersion<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for DebVersion<'_> {}

/// The parts of a version as [`compare`] reads them, before any validation.
#[derive(Debug, Clone, Copy)]
struct Parts<'a> {
    /// ASCII digits, possibly with leading zeros, or empty for epoch 0.
    epoch: &'a [u8],
    upstream: &'a [u8],
    revision: &'a [u8],
}

/// Splits a version the way dpkg's `parseversion` does, but accepts anything. Returns `None` for
/// the empty version.
fn split_lenient(version: &str) -> Option<Parts<'_>> {
    let version = version.trim_matches(is_blank).as_bytes();
    if version.is_empty() {
        return None;
    }

    // dpkg takes the text before the first colon as the epoch and rejects the version when that
    // text is not a number. Here such text stays part of the upstream version instead.
    let (epoch, rest) = match version.iter().position(|&c| c == b':') {
        Some(colon) => match epoch_digits(&version[..colon]) {
            Some(digits) => (digits, &version[colon + 1..]),
            None => (&[][..], version),
        },
        None => (&[][..], version),
    };

    let (upstream, revision) = match rest.iter().rposition(|&c| c == b'-') {
        Some(hyphen) => (&rest[..hyphen], &rest[hyphen + 1..]),
        None => (rest, &[][..]),
    };

    Some(Parts {
        epoch,
        upstream,
        revision,
    })
}

/// Returns the digits of an epoch in the forms that dpkg reads with C `strtol`: optional
/// whitespace, an optional sign and at least one digit, with nothing after them. Returns `None`
/// for anything else and for a negative epoch other than zero, which dpkg rejects.
fn epoch_digits(text: &[u8]) -> Option<&[u8]> {
    let start = text.iter().position(|&c| !is_c_space(c))?;
    let text = &text[start..];
    let (negative, digits) = match text.first() {
        Some(b'+') => (false, &text[1..]),
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };

    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if negative && digits.iter().any(|&c| c != b'0') {
        return None;
    }
    Some(digits)
}

/// Compares two upstream versions or two revisions with dpkg's `verrevcmp` algorithm.
fn verrevcmp(mut a: &[u8], mut b: &[u8]) -> Ordering {
    while !a.is_empty() || !b.is_empty() {
        // The non-digit part, one character at a time. It ends on each side at a digit or at the
        // end of the string.
        loop {
            let char_a = a.first().copied().filter(|c| !c.is_ascii_digit());
            let char_b = b.first().copied().filter(|c| !c.is_ascii_digit());
            if char_a.is_none() && char_b.is_none() {
                break;
            }
            let order_a = non_digit_order(char_a);
            let order_b = non_digit_order(char_b);
            if order_a != order_b {
                return order_a.cmp(&order_b);
            }
            // Equal weights mean both sides had a character, since only the end of the part
            // weighs 0.
            a = a.get(1..).unwrap_or_default();
            b = b.get(1..).unwrap_or_default();
        }

        let (digits_a, rest_a) = split_digit_run(a);
        let (digits_b, rest_b) = split_digit_run(b);
        let ordering = compare_digit_runs(digits_a, digits_b);
        if ordering != Ordering::Equal {
            return ordering;
        }
        a = rest_a;
        b = rest_b;
    }
    Ordering::Equal
}

/// Returns the weight of one character of a non-digit part, or of its end (`None`), as dpkg's
/// `order` function does.
fn non_digit_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        // dpkg adds 256 to a C `char`. That type is signed on amd64, so bytes from 0x80 up weigh
        // 128 to 255: after letters and before ASCII punctuation.
        // NOTE: dpkg on platforms with an unsigned `char` (arm64) weighs those bytes 384 to 511,
        // after ASCII punctuation. Such bytes make dpkg warn that the version is invalid.
        Some(c) => i32::from(c as i8) + 256,
    }
}

/// Splits `text` into its leading run of ASCII digits and the rest.
fn split_digit_run(text: &[u8]) -> (&[u8], &[u8]) {
    let end = text
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Returns whether `c` is a space or a tab, the characters that dpkg trims around a version.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Returns whether `c` is whitespace for C `isspace`, which `strtol` skips before a number.
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
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
    fn security_update_sorts_before_the_revision_it_patches() {
        assert_order("1.2.3-1~deb7u1", "1.2.3-1", Less);
    }

    #[test]
    fn revision_digit_runs_compare_as_numbers() {
        assert_order("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less);
    }

    #[test]
    fn epoch_outweighs_upstream_version() {
        assert_order("2:9.0.0", "8.3.2", Greater);
    }

    #[test]
    fn release_candidate_with_tilde_sorts_before_release() {
        assert_order("1:2.0~rc1-3", "1:2.0-1", Less);
    }

    #[test]
    fn tilde_sorts_before_end_of_part() {
        assert_order("1.0~~", "1.0~", Less);
        assert_order("1.0~", "1.0", Less);
        assert_order("1.0~~", "1.0", Less);
    }

    #[test]
    fn missing_revision_and_epoch_equal_zero() {
        assert_order("1.0-0", "1.0", Equal);
        assert_order("1.0", "0:1.0", Equal);
        assert_order("1.0-0", "0:1.0", Equal);
    }

    #[test]
    fn letters_sort_before_other_characters() {
        // Debian Policy 5.6.12 gives this sequence as sorted.
        let sorted = ["~~", "~~a", "~", "", "a"];
        for pair in sorted.windows(2) {
            let a = format!("1.0{}", pair[0]);
            let b = format!("1.0{}", pair[1]);
            assert_order(&a, &b, Less);
        }
        assert_order("1.0a", "1.0+", Less);
        assert_order("1.0z", "1.0.", Less);
        assert_order("1.0Z", "1.0a", Less);
        assert_order("1.0+", "1.0.", Less);
    }

    #[test]
    fn digit_runs_ignore_leading_zeros() {
        assert_order("1.001", "1.1", Equal);
        assert_order("1.09", "1.10", Less);
        assert_order("1.0-00", "1.0-0", Equal);
    }

    #[test]
    fn huge_digit_runs_compare_without_overflow() {
        let huge = "9".repeat(200);
        let larger = format!("1{}", "0".repeat(200));
        assert_order(&format!("1.{huge}"), &format!("1.{larger}"), Less);
        assert_order(&format!("{huge}:1"), &format!("{larger}:0"), Less);
        assert_order(&format!("000{huge}"), &huge, Equal);
    }

    #[test]
    fn revision_starts_after_last_hyphen() {
        // Upstream "1.0-1", revision "2" against upstream "1.0", revision "3".
        assert_order("1.0-1-2", "1.0-3", Greater);
        assert_order("0:0-0-0", "0:0-0-00", Equal);
    }

    #[test]
    fn epoch_ends_at_first_colon() {
        // Upstream "0:0", revision "0", as dpkg's own tests parse it.
        assert_order("0:0:0-0", "0:0:0-0", Equal);
        assert_order("1:1:0", "1:2", Less);
    }

    #[test]
    fn dpkg_test_suite_equalities() {
        // Based on dpkg's lib/dpkg/t/t-version.c, and checked with dpkg 1.21.
        assert_order("0:0.0-0.0", "0.0-0.0", Equal);
        assert_order("0:09azAZ.-+~:-0", "0:9azAZ.-+~:-0", Equal);
        assert_order("  \t0:0-1", "0:0-1", Equal);
        assert_order("\t  0:0-1  \t", "0-1", Equal);
    }

    #[test]
    fn dpkg_accepts_signed_epoch() {
        // dpkg 1.21 accepts a sign before the epoch digits.
        assert_order("+1:2.0", "1:2.0", Equal);
        assert_order("-0:2.0", "2.0", Equal);
    }

    #[test]
    fn empty_version_sorts_first() {
        assert_order("", "", Equal);
        assert_order("", "0", Less);
        assert_order("", "~", Less);
        assert_order("  ", "", Equal);
    }

    #[test]
    fn rejected_versions_still_order() {
        // Each of these makes dpkg exit with an error. The results here are the documented
        // fallbacks, not dpkg's.
        assert_order("a:1.0", "1.0", Greater);
        assert_order("-1:1.0", "-1:1.0", Equal);
        assert_order("1.0-", "1.0", Equal);
        assert_order("1:", "1:0", Equal);
        assert_order("1 0", "1", Greater);
    }

    #[test]
    fn non_ascii_sorts_between_letters_and_punctuation() {
        assert_order("1.0é", "1.0z", Greater);
        assert_order("1.0é", "1.0+", Less);
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
            ":-",
            "-:",
            "\0",
            "\u{10ffff}",
            "1:-",
            "+:",
        ];
        for a in inputs {
            for b in inputs {
                let _ = compare(a, b);
                let _ = parse(a);
            }
        }
    }

    #[test]
    fn parse_splits_the_three_parts() {
        let version = parse("1:2.30-1+deb12u2").unwrap();
        assert_eq!(version.epoch, 1);
        assert_eq!(version.upstream, "2.30");
        assert_eq!(version.revision, "1+deb12u2");

        let version = parse(" 0:1.0-beta-2 ").unwrap();
        assert_eq!(version.epoch, 0);
        assert_eq!(version.upstream, "1.0-beta");
        assert_eq!(version.revision, "2");

        let version = parse("2.0").unwrap();
        assert_eq!(version.epoch, 0);
        assert_eq!(version.revision, "");
    }

    #[test]
    fn parsed_versions_order_like_compare() {
        let older = parse("1:2.0~rc1-3").unwrap();
        let newer = parse("1:2.0-1").unwrap();
        assert!(older < newer);
        assert_eq!(parse("1.0-0").unwrap(), parse("0:1.0").unwrap());
    }

    #[test]
    fn parse_accepts_largest_epoch() {
        assert_eq!(parse("2147483647:1").unwrap().epoch, MAX_EPOCH);
    }

    #[test]
    fn parse_rejects_what_dpkg_rejects() {
        // dpkg rejects each of these with an error or a warning (dpkg 1.21, t-version.c).
        let rejected = [
            ("", "it is empty"),
            ("  ", "it is empty"),
            ("0:0 0-1", "it contains a space or tab"),
            ("-1:0-1", "the epoch before the first ':' is not a number"),
            ("a:0-0", "the epoch before the first ':' is not a number"),
            (":1.0", "the epoch before the first ':' is not a number"),
            ("2147483648:0-1", "the epoch is larger than 2147483647"),
            (
                "999999999999999999999999:0-1",
                "the epoch is larger than 2147483647",
            ),
            ("0:", "the upstream version is empty"),
            ("-0", "the upstream version is empty"),
            ("0:-0", "the upstream version is empty"),
            ("1.0-", "the revision after the last '-' is empty"),
            (
                "0:abc3-0",
                "the upstream version does not start with a digit",
            ),
            (
                "0:0_-0",
                "the upstream version may contain only letters, digits and '.', '+', '~', '-', ':'",
            ),
            (
                "0:0-0:0",
                "the revision may contain only letters, digits and '.', '+', '~'",
            ),
            (
                "0:0-0_",
                "the revision may contain only letters, digits and '.', '+', '~'",
            ),
        ];
        for (version, reason) in rejected {
            let error = parse(version).expect_err(version);
            assert_eq!(error.reason, reason, "parse({version:?})");
        }
    }

    #[test]
    fn parse_error_names_the_version() {
        let error = parse("a:1").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid Debian version \"a:1\": the epoch before the first ':' is not a number"
        );
    }
}
