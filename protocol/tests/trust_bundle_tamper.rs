//! One flipped bit anywhere in a bundle file: the file is rejected, never accepted, and the
//! rejection names the part that was damaged.
//!
//! The test walks the documented layout of the bundle file to know which part each byte belongs
//! to, then flips each of the 8 bits of every byte.

mod trust_support;

use tidegate_protocol::trust::{BundleVerdict, RejectRule, Role};
use trust_support::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Magic,
    FormatByte,
    ManifestLength,
    Manifest,
    PayloadCount,
    PayloadNameLength,
    PayloadName,
    PayloadLength,
    PayloadContent,
    SignatureCount,
    SignatureKeyId,
    SignatureBytes,
}

/// Returns the part of each byte of a bundle file with one payload and one signature, from the layout in
/// the `bundle` module's documentation.
fn layout(manifest_len: usize, name_len: usize, content_len: usize) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut add = |part, count| parts.extend(std::iter::repeat_n(part, count));
    add(Part::Magic, 4);
    add(Part::FormatByte, 1);
    add(Part::ManifestLength, varint_len(manifest_len as u64));
    add(Part::Manifest, manifest_len);
    add(Part::PayloadCount, 1);
    add(Part::PayloadNameLength, varint_len(name_len as u64));
    add(Part::PayloadName, name_len);
    add(Part::PayloadLength, varint_len(content_len as u64));
    add(Part::PayloadContent, content_len);
    add(Part::SignatureCount, 1);
    add(Part::SignatureKeyId, 8);
    add(Part::SignatureBytes, 64);
    parts
}

/// Checks that the rejection of a file damaged in `part` names what it should.
fn check_rejection(part: Part, position: usize, bit: u8, verdict: &BundleVerdict) {
    let context = format!("bit {bit} of byte {position} ({part:?})");
    let BundleVerdict::Rejected { rule, detail } = verdict else {
        panic!("{context}: expected a rejection, got {verdict:?}");
    };
    let rule = *rule;
    match part {
        Part::Magic | Part::FormatByte => {
            assert_eq!(rule, RejectRule::Format, "{context}: {detail}");
        }
        // A damaged length or count misaligns everything after it, or exceeds a limit.
        Part::ManifestLength
        | Part::PayloadCount
        | Part::PayloadNameLength
        | Part::PayloadLength
        | Part::SignatureCount => {
            assert!(
                matches!(rule, RejectRule::Format | RejectRule::SizeLimit),
                "{context}: {rule:?} {detail}"
            );
        }
        // Signatures are checked before the manifest is decoded.
        Part::Manifest | Part::SignatureBytes => {
            assert_eq!(rule, RejectRule::BadSignature, "{context}: {detail}");
            assert!(detail.starts_with("signature 0 "), "{context}: {detail}");
        }
        Part::SignatureKeyId => {
            assert_eq!(rule, RejectRule::UnknownKey, "{context}: {detail}");
            assert!(detail.starts_with("signature 0: "), "{context}: {detail}");
        }
        // A renamed payload leaves the listed one missing, unless the new name is not UTF-8.
        Part::PayloadName => {
            assert!(
                matches!(rule, RejectRule::PayloadMissing | RejectRule::Format),
                "{context}: {rule:?} {detail}"
            );
            if rule == RejectRule::PayloadMissing {
                assert!(detail.contains("\"motd\""), "{context}: {detail}");
            }
        }
        Part::PayloadContent => {
            assert_eq!(rule, RejectRule::PayloadHash, "{context}: {detail}");
            assert!(detail.contains("\"motd\""), "{context}: {detail}");
        }
    }
}

#[test]
fn every_flipped_bit_is_rejected_and_named() {
    let security = key(Role::Security);
    let root = root(1, &[&key(Role::Root), &security, &key(Role::Ot)], 1);
    let file = bundle_file(&manifest(1), &[&security]);
    let original = file.encode().unwrap();
    let parts = layout(
        file.manifest_bytes.len(),
        PAYLOAD_NAME.len(),
        PAYLOAD_CONTENT.len(),
    );
    assert_eq!(
        parts.len(),
        original.len(),
        "layout does not cover the file"
    );
    assert!(matches!(
        verify_at(&original, &root, NOW),
        BundleVerdict::Accepted { .. }
    ));

    for (position, part) in parts.iter().enumerate() {
        for bit in 0..8u8 {
            let mut damaged = original.clone();
            damaged[position] ^= 1 << bit;

            let verdict = verify_at(&damaged, &root, NOW);

            check_rejection(*part, position, bit, &verdict);
        }
    }
}
