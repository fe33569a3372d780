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
