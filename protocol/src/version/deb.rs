//! Placeholder until the comparator lands.
use std::cmp::Ordering;

pub fn compare(a: &str, b: &str) -> Ordering {
    a.cmp(b)
}
