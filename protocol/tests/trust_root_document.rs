//! The trust root document's own rules (thresholds, keys, tier overrides) and the signed root file
//! format.

mod trust_support;

use std::collections::BTreeMap;

use tidegate_protocol::trust::root::{MAX_ROOT_FILE_BYTES, MAX_ROOT_KEYS};
use tidegate_protocol::trust::{
    FormatError, KeyId, Role, RootError, SignedTrustRoot, TierThresholds, TrustRoot, MAX_SIGNATURES,
};
use trust_support::*;

/// Root keys R1 and R2 with threshold 2, security keys S1 and S2, one OT key.
fn two_of_each() -> TrustRoot {
    let keys = [
        key(Role::Root),
        key(Role::Root),
        key(Role::Security),
        key(Role::Security),
        key(Role::Ot),
    ];
    root(1, &keys.iter().collect::<Vec<_>>(), 2)
}

#[test]
fn valid_root_round_trips_through_file() {
    let root_key = key(Role::Root);
    let document = root(1, &[&root_key, &key(Role::Security), &key(Role::Ot)], 1);
    let signed = sign_root(&document, &[&root_key]);

    let decoded = SignedTrustRoot::decode(&signed.encode().unwrap()).unwrap();

    assert_eq!(decoded, signed);
    assert_eq!(decoded.document(), Ok(document));
}

#[test]
fn file_starts_with_magic_and_format() {
    let signed = SignedTrustRoot::new(&two_of_each()).unwrap();

    let bytes = signed.encode().unwrap();

    assert_eq!(&bytes[..5], b"TGRT\x01");
}

#[test]
fn zero_threshold_is_rejected() {
    let mut document = two_of_each();
    document.thresholds.security = 0;

    let error = document.validate().unwrap_err();

    assert_eq!(
        error.to_string(),
        "invalid trust root v1: the security threshold is 0, but it must be at least 1 and at \
         most the 2 security keys listed"
    );
}

#[test]
fn threshold_above_key_count_is_rejected() {
    let mut document = two_of_each();
    document.thresholds.root = 3;

    let error = document.validate().unwrap_err();

    assert_eq!(
        error,
        RootError::UnsatisfiableThreshold {
            version: 1,
            role: Role::Root,
            tier: None,
            threshold: 3,
            keys: 2
        }
    );
}

#[test]
fn role_without_keys_is_rejected() {
    let root_key = key(Role::Root);
    let document = root(1, &[&root_key, &key(Role::Security)], 1);

    let error = document.validate().unwrap_err();

    assert!(
        matches!(
            error,
            RootError::UnsatisfiableThreshold {
                role: Role::Ot,
                keys: 0,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn tier_override_is_checked_like_defaults() {
    let mut document = two_of_each();
    document.tier_overrides.insert(
        "critical".into(),
        TierThresholds {
            security: Some(3),
            ot: None,
        },
    );

    let error = document.validate().unwrap_err();

    assert_eq!(
        error.to_string(),
        "invalid trust root v1: the security threshold of tier critical is 3, but it must be at \
         least 1 and at most the 2 security keys listed"
    );
}

#[test]
fn empty_or_misnamed_tier_override_is_rejected() {
    let mut empty = two_of_each();
    empty.tier_overrides.insert(
        "office".into(),
        TierThresholds {
            security: None,
            ot: None,
        },
    );
    let mut misnamed = two_of_each();
    misnamed.tier_overrides.insert(
        "Plant Floor".into(),
        TierThresholds {
            security: Some(1),
            ot: None,
        },
    );

    assert!(matches!(
        empty.validate(),
        Err(RootError::EmptyTierOverride { .. })
    ));
    assert!(matches!(
        misnamed.validate(),
        Err(RootError::InvalidTier { .. })
    ));
}

#[test]
fn tier_threshold_falls_back_to_default() {
    let mut document = two_of_each();
    document.tier_overrides.insert(
        "critical".into(),
        TierThresholds {
            security: Some(2),
            ot: None,
        },
    );

    assert_eq!(document.threshold(Role::Security, "critical"), 2);
    assert_eq!(document.threshold(Role::Ot, "critical"), 1);
    assert_eq!(document.threshold(Role::Security, "office"), 1);
    assert_eq!(document.threshold(Role::Root, "critical"), 2);
}

#[test]
fn duplicate_key_is_rejected() {
    let mut document = two_of_each();
    let mut again = document.keys[0].clone();
    again.role = Role::Security;
    document.keys.push(again.clone());

    let error = document.validate().unwrap_err();

    assert_eq!(
        error,
        RootError::DuplicateKey {
            version: 1,
            key_id: again.key_id
        }
    );
}

#[test]
fn key_listed_under_wrong_id_is_rejected() {
    let mut document = two_of_each();
    let actual = document.keys[2].key_id;
    document.keys[2].key_id = KeyId::parse("0000000000000000").unwrap();

    let error = document.validate().unwrap_err();

    assert_eq!(
        error,
        RootError::KeyIdMismatch {
            version: 1,
            listed: KeyId::parse("0000000000000000").unwrap(),
            actual
        }
    );
}

#[test]
fn too_many_keys_are_rejected() {
    let mut document = two_of_each();
    while document.keys.len() <= MAX_ROOT_KEYS {
        document.keys.push(key(Role::Ot).public_key().clone());
    }

    let error = document.validate().unwrap_err();

    assert!(
        matches!(
            error,
            RootError::Format(FormatError::TooMany {
                count: 65,
                max: 64,
                ..
            })
        ),
        "{error:?}"
    );
}

#[test]
fn unknown_magic_and_format_are_rejected() {
    let bytes = SignedTrustRoot::new(&two_of_each())
        .unwrap()
        .encode()
        .unwrap();
    let mut wrong_magic = bytes.clone();
    wrong_magic[0] = b'X';
    let mut wrong_format = bytes.clone();
    wrong_format[4] = 2;

    let magic_error = SignedTrustRoot::decode(&wrong_magic).unwrap_err();
    let format_error = SignedTrustRoot::decode(&wrong_format).unwrap_err();

    assert_eq!(
        magic_error.to_string(),
        "not a signed trust root: the input does not start with the magic \"TGRT\""
    );
    assert_eq!(
        format_error.to_string(),
        "unknown signed trust root format 2: this build reads format 1"
    );
}

#[test]
fn oversized_input_is_rejected_before_decoding() {
    let mut bytes = b"TGRT\x01".to_vec();
    bytes.resize(MAX_ROOT_FILE_BYTES + 1, 0);

    let error = SignedTrustRoot::decode(&bytes).unwrap_err();

    assert_eq!(
        error.to_string(),
        "signed trust root is 65537 bytes, larger than the limit of 65536 bytes"
    );
}

#[test]
fn signature_count_above_limit_is_rejected() {
    let document_bytes = SignedTrustRoot::new(&two_of_each()).unwrap().document_bytes;
    let mut bytes = b"TGRT\x01".to_vec();
    push_varint(&mut bytes, document_bytes.len() as u64);
    bytes.extend_from_slice(&document_bytes);
    push_varint(&mut bytes, MAX_SIGNATURES as u64 + 1);
    bytes.resize(bytes.len() + 72 * (MAX_SIGNATURES + 1), 0);

    let error = SignedTrustRoot::decode(&bytes).unwrap_err();

    assert!(
        matches!(
            error,
            RootError::Format(FormatError::TooMany {
                count: 33,
                max: 32,
                ..
            })
        ),
        "{error:?}"
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = SignedTrustRoot::new(&two_of_each())
        .unwrap()
        .encode()
        .unwrap();
    bytes.push(0);

    let error = SignedTrustRoot::decode(&bytes).unwrap_err();

    assert!(
        matches!(
            error,
            RootError::Format(FormatError::TrailingBytes { count: 1, .. })
        ),
        "{error:?}"
    );
}

#[test]
fn non_canonical_document_is_rejected() {
    let document = two_of_each();
    let signed = SignedTrustRoot::new(&document).unwrap();
    // The document starts with the version, 1. Write it as the two-byte varint 0x81 0x00, which
    // postcard reads as 1 too.
    let mut long_form = vec![0x81, 0x00];
    long_form.extend_from_slice(&signed.document_bytes[1..]);
    let tampered = SignedTrustRoot {
        document_bytes: long_form,
        signatures: Vec::new(),
    };

    let error = tampered.document().unwrap_err();

    assert!(
        matches!(error, RootError::Format(FormatError::NotCanonical { .. })),
        "{error:?}"
    );
}

#[test]
fn unsorted_tier_map_is_not_canonical() {
    let mut document = two_of_each();
    let office = TierThresholds {
        security: Some(1),
        ot: None,
    };
    document.tier_overrides = BTreeMap::from([("a".into(), office), ("b".into(), office)]);
    let bytes = SignedTrustRoot::new(&document).unwrap().document_bytes;
    // Each entry encodes as: name length 1, the name, Some(1) as 0x01 0x01, None as 0x00. Swap
    // the two five-byte entries before the document's last byte, the empty command tier set.
    let entries_start = bytes.len() - 11;
    assert_eq!(
        &bytes[entries_start..],
        b"\x01a\x01\x01\x00\x01b\x01\x01\x00\x00"
    );
    let mut swapped = bytes[..entries_start].to_vec();
    swapped.extend_from_slice(b"\x01b\x01\x01\x00\x01a\x01\x01\x00\x00");
    let tampered = SignedTrustRoot {
        document_bytes: swapped,
        signatures: Vec::new(),
    };

    let error = tampered.document().unwrap_err();

    assert!(
        matches!(error, RootError::Format(FormatError::NotCanonical { .. })),
        "{error:?}"
    );
}

#[test]
fn command_tiers_are_validated_and_queried() {
    let mut document = two_of_each();
    document.command_tiers.insert("plant-floor".into());
    assert!(document.validate().is_ok());
    assert!(document.allows_commands("plant-floor"));
    assert!(!document.allows_commands("office"));

    document.command_tiers.insert("Bad Tier".into());
    assert!(matches!(
        document.validate(),
        Err(RootError::InvalidTier { .. })
    ));
}
