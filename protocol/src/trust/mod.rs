//! Signing keys, the rotating trust root and signed remediation bundles.
//!
//! This module owns the trust decisions an agent makes before it touches a host. [`keys`] defines
//! which keys exist and what each may sign, and [`root`] how the list of keys moves from one
//! version to the next. [`bundle`] defines what a bundle file contains, and [`verify`] whether an
//! agent may apply one. [`schedule`] defines the signed maintenance-window schedules and whether an
//! agent takes one. It is pure logic over bytes: it reads no files and no clock, and it draws random
//! numbers only from a generator the caller passes in. The caller reads `now` once, decides
//! whether its clock is trustworthy, stores the pinned root and the per-stream high-water marks,
//! and acts on the verdict.
//!
//! Every signature covers `context || 0x00 || bytes`, where the context names the kind of document
//! ([`SigningContext`]), so a signature made for one kind never verifies as another.
//!
//! Every file format starts with a 4-byte magic and a format byte, and every decoder checks a
//! documented size limit before it allocates. Signed documents (the root document and the bundle
//! manifest) must be in canonical postcard encoding, so one document has exactly one byte form and
//! one hash.

pub(crate) mod codec;

pub mod bundle;
pub mod keys;
pub mod root;
pub mod schedule;
pub mod verify;

pub use bundle::{
    inspect_bundle, BundleError, BundleFile, BundleHash, BundleId, BundleInspection,
    BundleManifest, ExecutionPolicy, HealthCheck, Payload, PayloadRef, PayloadSummary, Step,
    StreamName, TargetSelector, UnitAction,
};
pub use codec::FormatError;
pub use keys::{
    InvalidRole, KeyError, KeyId, PublicKey, Role, SignOutcome, Signature, SigningContext,
    SigningKey,
};
pub use root::{
    verify_initial_root, verify_root_update, RootError, SignedTrustRoot, Thresholds,
    TierThresholds, TrustRoot,
};
pub use schedule::{
    verify_schedule, ScheduleDocument, ScheduleError, ScheduleHash, ScheduleVerdict,
    SignedSchedule, MAX_SCHEDULE_DOCUMENT_BYTES, MAX_SCHEDULE_FILE_BYTES,
};
pub use verify::{
    verify_bundle, verify_signatures, BundleVerdict, ClockTrust, HighWater, RejectRule,
    SignatureError,
};

/// Maximum number of signatures on one root or bundle file. Each signature costs one Ed25519
/// verification, so this bounds the work an unverified file can cause. No threshold in practice
/// comes close to it.
pub const MAX_SIGNATURES: usize = 32;

/// Maximum length in bytes of a tier name, a bundle id or a stream name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a tier name, bundle id or stream name: 1 to 64 characters of `[a-z0-9_-]`. These names
/// end up in topic levels, database keys and directory names on the agent, so they can never
/// contain a path separator, a dot segment or an MQTT wildcard.
pub(crate) fn validate_name(kind: &'static str, value: &str) -> Result<(), crate::InvalidId> {
    let invalid = |reason| crate::InvalidId {
        kind,
        value: value.chars().take(80).collect(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("it is empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 64 characters"));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if !value.chars().all(allowed) {
        return Err(invalid(
            "only lowercase letters, digits, '-' and '_' are allowed",
        ));
    }
    Ok(())
}

/// Lowercase hexadecimal of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Parses hexadecimal digits (either case) into bytes, or returns `None` for an odd length or a
/// character that is not a hex digit.
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Formats seconds since the Unix epoch as an RFC 3339 UTC timestamp, such as
/// `2026-06-01T00:00:00Z`, for messages that a person reads.
pub fn format_unix_s(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let second_of_day = unix_s.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Converts days since 1970-01-01 into a proleptic Gregorian (year, month, day), by Howard
/// Hinnant's `civil_from_days` algorithm (<https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        assert_eq!(format_unix_s(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_s(1_780_272_000), "2026-06-01T00:00:00Z");
        assert_eq!(format_unix_s(1_780_271_999), "2026-05-31T23:59:59Z");
        // 2024 is a leap year: 1709164800 is 2024-02-29T00:00:00Z.
        assert_eq!(format_unix_s(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(format_unix_s(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(to_hex(&[0x00, 0xab, 0x0f]), "00ab0f");
        assert_eq!(from_hex("00AB0f"), Some(vec![0x00, 0xab, 0x0f]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn names_follow_topic_level_rules() {
        assert!(validate_name("tier", "plant-floor_2").is_ok());
        for bad in ["", "a/b", "..", "a.b", "Critical", "a+", &"a".repeat(65)] {
            assert!(validate_name("tier", bad).is_err(), "{bad:?} was accepted");
        }
    }
}
