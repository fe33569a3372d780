//! Keys, roots and bundles for the trust tests. Keys are generated fresh from the system random
//! generator: the tests depend on which key signed what, never on key values.

#![allow(dead_code)]

use std::collections::BTreeMap;

use ring::rand::SystemRandom;
use tidegate_protocol::trust::{
    BundleFile, BundleManifest, BundleVerdict, ClockTrust, HighWater, Payload, PayloadRef,
    PublicKey, Role, SignedTrustRoot, SigningKey, Step, StreamName, TargetSelector, Thresholds,
    TrustRoot,
};

/// 2026-06-01T00:00:00Z.
pub const EXPIRES: i64 = 1_780_272_000;
/// 2026-05-31T23:59:59Z, the last second before [`EXPIRES`].
pub const LAST_VALID_SECOND: i64 = 1_780_271_999;
/// 2026-05-01T00:00:00Z.
pub const NOT_BEFORE: i64 = 1_777_593_600;
/// 2026-05-15T00:00:00Z, inside the validity of [`manifest`].
pub const NOW: i64 = 1_778_803_200;

pub fn key(role: Role) -> SigningKey {
    SigningKey::generate(role, &SystemRandom::new()).expect("key generation")
}

/// Builds a root with the given keys and every default threshold 1 except `root_threshold`.
pub fn root(version: u64, keys: &[&SigningKey], root_threshold: u32) -> TrustRoot {
    TrustRoot {
        version,
        keys: keys.iter().map(|k| k.public_key().clone()).collect(),
        thresholds: Thresholds {
            root: root_threshold,
            security: 1,
            ot: 1,
        },
        tier_overrides: BTreeMap::new(),
        command_tiers: Default::default(),
    }
}

pub fn public_keys(keys: &[&SigningKey]) -> Vec<PublicKey> {
    keys.iter().map(|k| k.public_key().clone()).collect()
}

/// Encodes `root` and signs it with each of `signers`, in order.
pub fn sign_root(root: &TrustRoot, signers: &[&SigningKey]) -> SignedTrustRoot {
    let mut signed = SignedTrustRoot::new(root).expect("valid root");
    for signer in signers {
        signed.sign(signer).expect("root key signs");
    }
    signed
}

pub const PAYLOAD_NAME: &str = "motd";
pub const PAYLOAD_CONTENT: &[u8] = b"hello\n";

/// Builds a manifest of stream `openssl` valid from [`NOT_BEFORE`] until [`EXPIRES`], with one step
/// that writes the payload [`PAYLOAD_NAME`].
pub fn manifest(sequence: u64) -> BundleManifest {
    BundleManifest {
        bundle_id: tidegate_protocol::trust::BundleId::parse("openssl-fix").unwrap(),
        stream: StreamName::parse("openssl").unwrap(),
        sequence,
        not_before_unix_s: NOT_BEFORE,
        expires_unix_s: EXPIRES,
        target: TargetSelector::default(),
        steps: vec![Step::WriteFile {
            path: "etc/motd".into(),
            payload: PAYLOAD_NAME.into(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
        }],
        payloads: vec![PayloadRef::of_content(PAYLOAD_NAME, PAYLOAD_CONTENT)],
        execution: Default::default(),
    }
}

pub fn payloads() -> Vec<Payload> {
    vec![Payload {
        name: PAYLOAD_NAME.into(),
        content: PAYLOAD_CONTENT.to_vec(),
    }]
}

/// Builds a bundle file of `manifest` with [`payloads`], signed by each of `signers`, in order.
pub fn bundle_file(manifest: &BundleManifest, signers: &[&SigningKey]) -> BundleFile {
    let mut file = BundleFile::new(manifest, payloads()).expect("valid bundle");
    for signer in signers {
        file.sign(signer).expect("security key signs");
    }
    file
}

/// Encodes [`bundle_file`].
pub fn bundle_bytes(manifest: &BundleManifest, signers: &[&SigningKey]) -> Vec<u8> {
    bundle_file(manifest, signers)
        .encode()
        .expect("bundle encodes")
}

pub fn no_marks() -> BTreeMap<StreamName, HighWater> {
    BTreeMap::new()
}

pub fn mark(stream: &str, mark: HighWater) -> BTreeMap<StreamName, HighWater> {
    BTreeMap::from([(StreamName::parse(stream).unwrap(), mark)])
}

/// Verifies with a trusted clock at `now`, for tier `office`, with no high-water marks.
pub fn verify_at(file_bytes: &[u8], root: &TrustRoot, now: i64) -> BundleVerdict {
    tidegate_protocol::trust::verify_bundle(
        file_bytes,
        root,
        "office",
        now,
        &ClockTrust::Trusted,
        &no_marks(),
    )
}

/// Returns the rule and detail of a rejection, and panics with the verdict for any other outcome.
pub fn rejection(verdict: &BundleVerdict) -> (tidegate_protocol::trust::RejectRule, &str) {
    match verdict {
        BundleVerdict::Rejected { rule, detail } => (*rule, detail.as_str()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Appends `value` as an unsigned LEB128 varint, the length and count encoding of the trust file
/// formats, written here independently of the library.
pub fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub fn varint_len(value: u64) -> usize {
    let mut out = Vec::new();
    push_varint(&mut out, value);
    out.len()
}
