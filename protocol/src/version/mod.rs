//! Version ordering for the three package ecosystems. Each has its own rules, so each has its own
//! comparator; none falls back on another.

pub mod apk;
pub mod deb;
pub mod rpm;

use std::cmp::Ordering;

use crate::inventory::Ecosystem;

/// Compares two versions under the rules of `ecosystem`.
pub fn compare(ecosystem: Ecosystem, a: &str, b: &str) -> Ordering {
    match ecosystem {
        Ecosystem::Deb => deb::compare(a, b),
        Ecosystem::Rpm => rpm::compare(a, b),
        Ecosystem::Apk => apk::compare(a, b),
    }
}

/// Compares two runs of ASCII digits by numeric value. It strips leading zeros and compares
/// lengths before digits, so runs of any length compare without overflow.
fn compare_digit_runs(a: &[u8], b: &[u8]) -> Ordering {
    let a = strip_leading_zeros(a);
    let b = strip_leading_zeros(b);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn strip_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}
