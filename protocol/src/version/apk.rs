//! Alpine (APK) version ordering, following `apk_version_compare` in apk-tools' `src/version.c`,
//! in the form that reads `~<commit hash>` (the `TOKEN_COMMIT_HASH` tokenizer).
//!
//! An Alpine version is `digits{.digits}[letter]{_suffix[digits]}[~hash][-r<digits>]`, for
//! example `1.2.3b_rc2_p1~1a2b3c-r4`. Both versions are read token by token and compared token by
//! token while the two token kinds match:
//!
//! - Numbers compare as numbers, except that a component after a dot compares as a string when
//!   either side has a leading zero (`1.01` < `1.1`, and `1.0` < `1.00`).
//! - A letter compares by its character. A commit hash compares as a string.
//! - The suffixes `_alpha` < `_beta` < `_pre` < `_rc` sort before the release without a suffix,
//!   and `_cvs` < `_svn` < `_git` < `_hg` < `_p` sort after it.
//!
//! When the kinds differ, or one version ends, a pre-release suffix sorts first. Otherwise the
//! version whose next token comes earlier in the grammar above is the newer one, and the end of
//! the version comes after every token. So `1.0` < `1.0.1`, `1.0_alpha` < `1.0`, `1.0` < `1.0_p1`
//! and `1.0-r1` < `1.0_p1-r0`.
//!
//! Where a version breaks the grammar, apk stops reading it with an invalid token, which comes
//! after the end in that order. Two versions that both turn invalid at the same token are equal,
//! whatever follows. This module does the same, so it returns an ordering for any input.
//!
//! The one deviation: apk reads numbers into 64-bit integers, which wrap around above
//! 18446744073709551615. Here numbers of any length compare by value.

use std::cmp::Ordering;

use super::compare_digit_runs;

/// Compares two Alpine package versions the way apk-tools does. Accepts any string: see the
/// module documentation for how it orders versions that break apk's grammar.
pub fn compare(a: &str, b: &str) -> Ordering {
    let mut tokens_a = Tokenizer::new(a.as_bytes());
    let mut tokens_b = Tokenizer::new(b.as_bytes());

    loop {
        let token_a = tokens_a.next_token();
        let token_b = tokens_b.next_token();

        if token_a.kind() != token_b.kind() || token_a.kind() >= Kind::End {
            return compare_after_last_match(token_a, token_b);
        }
        let ordering = compare_same_kind(token_a, token_b);
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
}

/// Token kinds in the order the grammar allows them. The tokenizer rejects a token whose kind
/// comes before the previous one, with a few exceptions (see [`Tokenizer::next_token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InitialDigits,
    Digits,
    Letter,
    Suffix,
    SuffixNumber,
    CommitHash,
    RevisionNumber,
    End,
    Invalid,
}

/// The suffixes apk accepts, in sort order. The release without a suffix sorts between `Rc` and
/// `Cvs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Suffix {
    Alpha,
    Beta,
    Pre,
    Rc,
    Cvs,
    Svn,
    Git,
    Hg,
    P,
}

impl Suffix {
    fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"alpha" => Some(Self::Alpha),
            b"beta" => Some(Self::Beta),
            b"pre" => Some(Self::Pre),
            b"rc" => Some(Self::Rc),
            b"cvs" => Some(Self::Cvs),
            b"svn" => Some(Self::Svn),
            b"git" => Some(Self::Git),
            b"hg" => Some(Self::Hg),
            b"p" => Some(Self::P),
            _ => None,
        }
    }

    fn is_pre_release(self) -> bool {
        self <= Self::Rc
    }
}

/// One token of a version. Number tokens hold their ASCII digits.
#[derive(Debug, Clone, Copy)]
enum Token<'a> {
    /// The number the version starts with.
    InitialDigits(&'a [u8]),
    /// A number after a dot.
    Digits(&'a [u8]),
    Letter(u8),
    Suffix(Suffix),
    SuffixNumber(&'a [u8]),
    /// Lowercase hexadecimal digits after `~`.
    CommitHash(&'a [u8]),
    /// The number after `-r`.
    RevisionNumber(&'a [u8]),
    End,
    Invalid,
}

impl Token<'_> {
    fn kind(&self) -> Kind {
        match self {
            Self::InitialDigits(_) => Kind::InitialDigits,
            Self::Digits(_) => Kind::Digits,
            Self::Letter(_) => Kind::Letter,
            Self::Suffix(_) => Kind::Suffix,
            Self::SuffixNumber(_) => Kind::SuffixNumber,
            Self::CommitHash(_) => Kind::CommitHash,
            Self::RevisionNumber(_) => Kind::RevisionNumber,
            Self::End => Kind::End,
            Self::Invalid => Kind::Invalid,
        }
    }

    fn is_pre_release_suffix(&self) -> bool {
        matches!(self, Self::Suffix(suffix) if suffix.is_pre_release())
    }
}

/// Reads a version one token at a time, checking that each token may follow the previous one.
struct Tokenizer<'a> {
    rest: &'a [u8],
    /// The kind of the last token returned, `None` before the first.
    previous: Option<Kind>,
}

impl<'a> Tokenizer<'a> {
    fn new(version: &'a [u8]) -> Self {
        Self {
            rest: version,
            previous: None,
        }
    }

    fn next_token(&mut self) -> Token<'a> {
        let token = match self.previous {
            None => match self.take_digits() {
                Some(digits) => Token::InitialDigits(digits),
                None => Token::Invalid,
            },
            // The comparison stops at these, so nothing reads past them.
            Some(Kind::End | Kind::Invalid) => Token::Invalid,
            Some(previous) => self.read_after(previous),
        };
        self.previous = Some(token.kind());
        token
    }

    /// Reads the token after one of kind `previous`.
    fn read_after(&mut self, previous: Kind) -> Token<'a> {
        let Some(&first) = self.rest.first() else {
            return Token::End;
        };

        match first {
            b'a'..=b'z' if previous <= Kind::Digits => {
                self.rest = &self.rest[1..];
                Token::Letter(first)
            }
            b'.' if previous <= Kind::Digits => {
                self.rest = &self.rest[1..];
                match self.take_digits() {
                    Some(digits) => Token::Digits(digits),
                    None => Token::Invalid,
                }
            }
            // apk accepts digits without a dot after other digits too, but a run of digits
            // always ends at a non-digit, so only a suffix name can come before them here.
            b'0'..=b'9' if previous == Kind::Suffix => match self.take_digits() {
                Some(digits) => Token::SuffixNumber(digits),
                None => Token::Invalid,
            },
            // Suffixes may repeat (`_alpha1_pre2`), so a suffix may follow a suffix number.
            b'_' if previous <= Kind::SuffixNumber => {
                self.rest = &self.rest[1..];
                let name = self.take_while(|c| c.is_ascii_lowercase());
                match Suffix::from_name(name) {
                    Some(suffix) => Token::Suffix(suffix),
                    None => Token::Invalid,
                }
            }
            b'~' if previous < Kind::CommitHash => {
                self.rest = &self.rest[1..];
                let hash = self.take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
                if hash.is_empty() {
                    Token::Invalid
                } else {
                    Token::CommitHash(hash)
                }
            }
            b'-' if previous < Kind::RevisionNumber => match self.rest.strip_prefix(b"-r") {
                Some(rest) => {
                    self.rest = rest;
                    match self.take_digits() {
                        Some(digits) => Token::RevisionNumber(digits),
                        None => Token::Invalid,
                    }
                }
                None => Token::Invalid,
            },
            _ => Token::Invalid,
        }
    }

    /// Takes the run of ASCII digits at the start, or returns `None` when there is none.
    fn take_digits(&mut self) -> Option<&'a [u8]> {
        let digits = self.take_while(|c| c.is_ascii_digit());
        (!digits.is_empty()).then_some(digits)
    }

    fn take_while(&mut self, predicate: impl Fn(u8) -> bool) -> &'a [u8] {
        let end = self
            .rest
            .iter()
            .position(|&c| !predicate(c))
            .unwrap_or(self.rest.len());
        let (taken, rest) = self.rest.split_at(end);
        self.rest = rest;
        taken
    }
}

/// Compares two tokens of the same kind.
fn compare_same_kind(a: Token<'_>, b: Token<'_>) -> Ordering {
    match (a, b) {
        // A leading zero makes apk compare the component as a string, as Gentoo does.
        (Token::Digits(a), Token::Digits(b)) if a.starts_with(b"0") || b.starts_with(b"0") => {
            a.cmp(b)
        }
        (Token::InitialDigits(a), Token::InitialDigits(b))
        | (Token::Digits(a), Token::Digits(b))
        | (Token::SuffixNumber(a), Token::SuffixNumber(b))
        | (Token::RevisionNumber(a), Token::RevisionNumber(b)) => compare_digit_runs(a, b),
        (Token::Letter(a), Token::Letter(b)) => a.cmp(&b),
        (Token::Suffix(a), Token::Suffix(b)) => a.cmp(&b),
        (Token::CommitHash(a), Token::CommitHash(b)) => a.cmp(b),
        // End and Invalid end the comparison before they get here, and the kinds match.
        _ => Ordering::Equal,
    }
}

/// Decides the order once the versions stop having tokens of the same kind: at the first pair of
/// different kinds, or when both reached the end or an invalid token.
fn compare_after_last_match(a: Token<'_>, b: Token<'_>) -> Ordering {
    if a.kind() == b.kind() {
        return Ordering::Equal;
    }
    if a.is_pre_release_suffix() {
        return Ordering::Less;
    }
    if b.is_pre_release_suffix() {
        return Ordering::Greater;
    }
    // The version that goes on with a token earlier in the grammar is the newer one.
    b.kind().cmp(&a.kind())
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
    fn alpha_suffix_sorts_before_release() {
        assert_order("1.1_alpha1", "1.1", Less);
    }

    #[test]
    fn patch_suffix_sorts_after_release() {
        assert_order("1.8.5", "1.8.5_p2", Less);
    }

    #[test]
    fn revisions_compare_as_numbers() {
        assert_order("1.3.5-r8", "1.3.5-r10", Less);
    }

    #[test]
    fn patch_suffix_outweighs_revision() {
        assert_order("6.4-r2", "6.4_p20231125-r0", Less);
    }

    #[test]
    fn suffixes_sort_in_apk_order() {
        let sorted = [
            "1.0_alpha",
            "1.0_beta",
            "1.0_pre",
            "1.0_rc",
            "1.0",
            "1.0_cvs",
            "1.0_svn",
            "1.0_git",
            "1.0_hg",
            "1.0_p",
        ];
        for pair in sorted.windows(2) {
            assert_order(pair[0], pair[1], Less);
        }
    }

    #[test]
    fn suffix_number_follows_bare_suffix() {
        assert_order("1.0_alpha", "1.0_alpha0", Less);
        assert_order("1.0_alpha2", "1.0_alpha10", Less);
        assert_order("1.0_rc9", "1.0", Less);
    }

    #[test]
    fn leading_zero_compares_as_string() {
        assert_order("1.01", "1.1", Less);
        assert_order("1.0", "1.00", Less);
        assert_order("1.09", "1.1", Less);
        // Only the initial number and numbers after a suffix or `-r` compare by value.
        assert_order("01.1", "1.1", Equal);
        assert_order("1_p01", "1_p1", Equal);
        assert_order("1-r01", "1-r1", Equal);
    }

    #[test]
    fn letter_sorts_after_shorter_version() {
        assert_order("1.7", "1.7b", Less);
        assert_order("1.7b", "1.7c", Less);
        assert_order("1.7b", "1.7.1", Less);
    }

    #[test]
    fn commit_hash_sorts_between_suffix_and_revision() {
        assert_order("1.0~abc", "1.0~abd", Less);
        assert_order("1.0", "1.0~abc", Less);
        assert_order("1.0~abc", "1.0-r1", Greater);
        assert_order("1.0_p1", "1.0~abc", Greater);
        assert_order("1.0_rc1", "1.0~abc", Less);
    }

    #[test]
    fn apk_test_suite_cases() {
        // From apk-tools' test/version.data.
        let cases = [
            ("2.34", "0.1.0_alpha", Greater),
            ("23_foo", "4_beta", Greater),
            ("1.0", "1.0bc", Less),
            ("0.1.0_alpha", "0.1.0_alpha", Equal),
            ("0.1.0_alpha2", "0.1.0_alpha", Greater),
            ("2.2.39-r1", "1.0.4-r3", Greater),
            ("1.0.4-r3", "1.0.4-r4", Less),
            ("0.8_beta1", "0.8_beta2", Less),
            ("2.3.0b-r1", "2.3.0b-r2", Less),
            ("1.06-r6", "006", Less),
            ("2.01.01_alpha10", "0.94", Greater),
            ("0.99.3.20040818", "0.7", Greater),
            ("1.00_beta2", "0.9.2", Greater),
            ("0.5.2.7", "4.2.52_p2-r1", Less),
            ("4.2.52_p2-r1", "4.2.52_p4-r2", Less),
            ("1.02.07", "1.02.10-r1", Less),
            ("3.0.20060720", "20060720", Less),
            ("2.5.1-r8", "2.5.1a-r1", Less),
            ("20040401", "2.0.0_rc3-r1", Greater),
            ("3.9_pre20060124", "0.01", Greater),
            ("0.10.0", "0.10.1_rc1", Less),
            ("1.0-r1", "0.15.1b", Greater),
            ("22.7-r1", "22.7.3-r1", Less),
            ("22.7.3-r1", "22.7", Greater),
            ("2.10.1", "02.08.01b", Greater),
            ("1.6d", "1.2.07.8", Greater),
            ("1.2.07.8", "1.2.12.04", Less),
            ("0.1_pre20060810", "0.1_pre20060817", Less),
            ("0.59s-r11", "0.65", Less),
            ("0.20070118", "0.20070207_rc1", Less),
            ("4.5_p1-r1", "4.5_p1", Greater),
            ("0.9.8c-r1", "0.9.8d", Less),
            ("2.4.3-r16", "2.4.4-r4", Less),
            ("1.6.8_p12-r1", "1.6.8_p9-r2", Greater),
            ("0.9.28.1", "087-r1", Less),
            ("2.12r-r4", "2.12r-r5", Less),
            ("7.0.17", "7.0.174", Less),
            ("1.3_pre1-r1", "1.3.2", Less),
            ("1.0_p10-r0", "1.0_p9-r0", Greater),
            ("0.1.0_alpha_pre2", "0.1.0_alpha", Less),
            (
                "1.0.0_pre20191002222144-r0",
                "1.0.0_pre20210530193627-r0",
                Less,
            ),
        ];
        for (a, b, expected) in cases {
            assert_order(a, b, expected);
        }
    }

    #[test]
    fn invalid_tail_sorts_after_end() {
        // `_foo` is no suffix, so `1.0_foo` turns invalid after `1.0`.
        assert_order("1.0_foo", "1.0", Less);
        assert_order("1.0_foo", "1.0_alpha", Greater);
        assert_order("1.0_foo", "1.0_bar", Equal);
        assert_order("1.0-1", "1.0-r1", Less);
        assert_order("1.0-r", "1.0", Less);
    }

    #[test]
    fn versions_invalid_from_the_start_are_equal() {
        assert_order("", "", Equal);
        assert_order("", "abc", Equal);
        assert_order("", "0", Less);
        assert_order("v1.0", "1.0", Less);
    }

    #[test]
    fn huge_numbers_compare_without_overflow() {
        let huge = "9".repeat(200);
        let larger = format!("1{}", "0".repeat(200));
        assert_order(&huge, &larger, Less);
        assert_order(&format!("1.{huge}"), &format!("1.{larger}"), Less);
        assert_order(&format!("1-r{huge}"), &format!("1-r{larger}"), Less);
        // 2^64 and 2^64 + 1, where apk's 64-bit numbers wrap around to 0 and 1.
        assert_order("18446744073709551616", "18446744073709551617", Less);
        assert_order("18446744073709551616", "1", Greater);
    }

    #[test]
    fn garbage_does_not_panic() {
        let inputs = [
            "",
            ".",
            "_",
            "~",
            "-",
            "-r",
            "1.",
            "1_",
            "1~",
            "1-",
            "1-r",
            "\0",
            "1\u{10ffff}",
        ];
        for a in inputs {
            for b in inputs {
                let _ = compare(a, b);
            }
        }
    }
}
