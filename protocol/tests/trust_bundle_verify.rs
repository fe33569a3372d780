//! Bundle verification: signers and thresholds, payloads, validity in time, the untrusted clock and
//! the per-stream sequence.

mod trust_support;

use tidegate_protocol::trust::{
    verify_bundle, BundleFile, BundleHash, BundleVerdict, ClockTrust, HighWater, Payload,
    PayloadRef, RejectRule, Role, SigningContext, SigningKey, Step, TierThresholds, TrustRoot,
};
use trust_support::*;

/// A root with two security keys, an OT key and one root key, where tier `critical` needs two
/// security signatures and every other tier one.
struct Fixture {
    s1: SigningKey,
    s2: SigningKey,
    ot: SigningKey,
    root: TrustRoot,
}

impl Fixture {
    fn new() -> Self {
        let s1 = key(Role::Security);
        let s2 = key(Role::Security);
        let ot = key(Role::Ot);
        let mut root = root(1, &[&key(Role::Root), &s1, &s2, &ot], 1);
        root.tier_overrides.insert(
            "critical".into(),
            TierThresholds {
                security: Some(2),
                ot: None,
            },
        );
        Self { s1, s2, ot, root }
    }

    fn verify(&self, file: &[u8], tier: &str) -> BundleVerdict {
        verify_bundle(
            file,
            &self.root,
            tier,
            NOW,
            &ClockTrust::Trusted,
            &no_marks(),
        )
    }
}

fn hash_of(file: &[u8]) -> BundleHash {
    BundleFile::decode(file).unwrap().bundle_hash()
}

#[test]
fn valid_bundle_is_accepted_with_payloads() {
    let fixture = Fixture::new();
    let file = bundle_bytes(&manifest(1), &[&fixture.s1]);

    let verdict = fixture.verify(&file, "office");

    let BundleVerdict::Accepted {
        manifest: accepted,
        bundle_hash,
        payloads: accepted_payloads,
    } = verdict
    else {
        panic!("expected acceptance, got {verdict:?}");
    };
    assert_eq!(accepted, manifest(1));
    assert_eq!(bundle_hash, hash_of(&file));
    assert_eq!(accepted_payloads, payloads());
}

#[test]
fn last_second_before_expiry_is_accepted() {
    let fixture = Fixture::new();
    let file = bundle_bytes(&manifest(1), &[&fixture.s1]);

    let verdict = verify_at(&file, &fixture.root, LAST_VALID_SECOND);

    assert!(
        matches!(verdict, BundleVerdict::Accepted { .. }),
        "{verdict:?}"
    );
}

#[test]
fn expiry_instant_is_expired() {
    let fixture = Fixture::new();
    let file = bundle_bytes(&manifest(1), &[&fixture.s1]);

    let verdict = verify_at(&file, &fixture.root, EXPIRES);

    let (rule, detail) = rejection(&verdict);
    assert_eq!(rule, RejectRule::Expired);
    assert_eq!(
        detail,
        "bundle openssl-fix expired at 2026-06-01T00:00:00Z (1780272000); the clock reads \
         2026-06-01T00:00:00Z (1780272000)"
    );
}

#[test]
fn before_not_before_is_not_yet_valid() {
    let fixture = Fixture::new();
    let file = bundle_bytes(&manifest(1), &[&fixture.s1]);

    let at_start = verify_at(&file, &fixture.root, NOT_BEFORE);
    let just_before = verify_at(&file, &fixture.root, NOT_BEFORE - 1);

    assert!(
        matches!(at_start, BundleVerdict::Accepted { .. }),
        "{at_start:?}"
    );
    let (rule, detail) = rejection(&just_before);
    assert_eq!(rule, RejectRule::NotYetValid);
    assert!(
        detail.contains("not valid before 2026-05-01T00:00:00Z"),
        "{detail}"
    );
}

#[test]
fn untrusted_clock_defers_expired_bundle() {
    let fixture = Fixture::new();
    let file = bundle_bytes(&manifest(1), &[&fixture.s1]);
    let clock = ClockTrust::Untrusted {
        reason: "clock is earlier than the build time".into(),
    };

    let verdict = verify_bundle(
        &file,
        &fixture.root,
        "office",
        EXPIRES + 86_400,
        &clock,
        &no_marks(),
    );

    let BundleVerdict::Deferred {
        manifest: deferred,
        reason,
        ..
    } = verdict
    else {
        panic!("expected a deferral, got {verdict:?}");
    };
    assert_eq!(deferred.bundle_id.as_str(), "openssl-fix");
    assert!(
        reason.contains("clock is earlier than the build time"),
        "{reason}"
    );
}

#[test]
fn untrusted_clock_does_not_hide_bad_signature() {
    let fixture = Fixture::new();
    let mut file = bundle_file(&manifest(1), &[&fixture.s1]);
    file.signatures[0].bytes[5] ^= 0x04;
    let clock = ClockTrust::Untrusted {
        reason: "not synchronised".into(),
    };

    let verdict = verify_bundle(
        &file.encode().unwrap(),
        &fixture.root,
        "office",
        NOW,
        &clock,
        &no_marks(),
    );

    assert_eq!(verdict.rejection_rule(), Some(RejectRule::BadSignature));
}

#[test]
fn lower_sequence_is_rollback() {
    let fixture = Fixture::new();
    let applied = bundle_bytes(&manifest(42), &[&fixture.s1]);
    let older = bundle_bytes(&manifest(40), &[&fixture.s1]);
    let marks = mark(
        "openssl",
        HighWater {
            sequence: 42,
            bundle_hash: hash_of(&applied),
        },
    );

    let verdict = verify_bundle(
        &older,
        &fixture.root,
        "office",
        NOW,
        &ClockTrust::Trusted,
        &marks,
    );

    let (rule, detail) = rejection(&verdict);
    assert_eq!(rule, RejectRule::Rollback);
    assert_eq!(
        detail,
        "bundle openssl-fix has sequence 40 of stream openssl, below the applied sequence 42; a \
         lower sequence is a rollback attempt"
    );
}

#[test]
fn same_sequence_same_hash_is_already_applied() {
    let fixture = Fixture::new();
    let applied = bundle_bytes(&manifest(42), &[&fixture.s1]);
    let marks = mark(
        "openssl",
        HighWater {
            sequence: 42,
            bundle_hash: hash_of(&applied),
        },
    );

    let verdict = verify_bundle(
        &applied,
        &fixture.root,
        "office",
        NOW,
        &ClockTrust::Trusted,
        &marks,
    );

    assert!(
        matches!(verdict, BundleVerdict::AlreadyApplied { ref bundle_hash, .. } if *bundle_hash == hash_of(&applied)),
        "{verdict:?}"
    );
}

#[test]
fn same_sequence_other_hash_is_rejected() {
    let fixture = Fixture::new();
    let applied = bundle_bytes(&manifest(42), &[&fixture.s1]);
    let mut other = manifest(42);
    other.expires_unix_s += 1;
    let other = bundle_bytes(&other, &[&fixture.s1]);
    let marks = mark(
        "openssl",
        HighWater {
            sequence: 42,
            bundle_hash: hash_of(&applied),
        },
    );

    let verdict = verify_bundle(
        &other,
        &fixture.root,
        "office",
        NOW,
        &ClockTrust::Trusted,
        &marks,
    );

    let (rule, detail) = rejection(&verdict);
    assert_eq!(rule, RejectRule::SequenceReused);
    assert!(detail.contains(&hash_of(&applied).to_string()), "{detail}");
    assert!(detail.contains(&hash_of(&other).to_string()), "{detail}");
}

#[test]
fn higher_sequence_and_other_streams_are_accepted() {
    let fixture = Fixture::new();
    let applied = bundle_bytes(&manifest(42), &[&fixture.s1]);
    let newer = bundle_bytes(&manifest(43), &[&fixture.s1]);
    let high_water = HighWater {
        sequence: 42,
        bundle_hash: hash_of(&applied),
    };
    let verify_with = |file: &[u8], stream: &str| {
        verify_bundle(
            file,
            &fixture.root,
            "office",
            NOW,
            &ClockTrust::Trusted,
            &mark(stream, high_water),
        )
    };

    let newer_verdict = verify_with(&newer, "openssl");
    let other_stream_verdict = verify_with(&applied, "baseline-office");

    assert!(
        matches!(newer_verdict, BundleVerdict::Accepted { .. }),
        "{newer_verdict:?}"
    );
    assert!(
        matches!(other_stream_verdict, BundleVerdict::Accepted { .. }),
        "{other_stream_verdict:?}"
    );
}

#[test]
fn tier_override_raises_threshold() {
    let fixture = Fixture::new();
    let one_signature = bundle_bytes(&manifest(1), &[&fixture.s1]);
    let two_signatures = bundle_bytes(&manifest(1), &[&fixture.s1, &fixture.s2]);

    let office = fixture.verify(&one_signature, "office");
    let critical = fixture.verify(&one_signature, "critical");
    let critical_two = fixture.verify(&two_signatures, "critical");

    assert!(
        matches!(office, BundleVerdict::Accepted { .. }),
        "{office:?}"
    );
    let (rule, detail) = rejection(&critical);
    assert_eq!(rule, RejectRule::Threshold);
    assert_eq!(
        detail,
        format!(
            "the bundle has valid signatures from 1 distinct security keys ({}), but tier \
             critical requires 2 under trust root v1",
            fixture.s1.key_id()
        )
    );
    assert!(
        matches!(critical_two, BundleVerdict::Accepted { .. }),
        "{critical_two:?}"
    );
}

#[test]
fn same_key_twice_counts_once() {
    let fixture = Fixture::new();
    let mut file = bundle_file(&manifest(1), &[&fixture.s1]);
    let copy = file.signatures[0].clone();
    file.signatures.push(copy);
    assert_eq!(
        file.sign(&fixture.s1).unwrap(),
        tidegate_protocol::trust::SignOutcome::AlreadySigned
    );
    assert_eq!(file.signatures.len(), 2);

    let verdict = fixture.verify(&file.encode().unwrap(), "critical");

    assert_eq!(verdict.rejection_rule(), Some(RejectRule::Threshold));
}

#[test]
fn unsigned_bundle_fails_threshold() {
    let fixture = Fixture::new();
    let file = bundle_bytes(&manifest(1), &[]);

    let verdict = fixture.verify(&file, "office");

    let (rule, detail) = rejection(&verdict);
    assert_eq!(rule, RejectRule::Threshold);
    assert!(
        detail.contains("from 0 distinct security keys (none)"),
        "{detail}"
    );
}

#[test]
fn unknown_signer_is_named() {
    let fixture = Fixture::new();
    let stranger = key(Role::Security);
    let file = bundle_bytes(&manifest(1), &[&fixture.s1, &stranger]);

    let verdict = fixture.verify(&file, "office");

    let (rule, detail) = rejection(&verdict);
    assert_eq!(rule, RejectRule::UnknownKey);
    assert_eq!(
        detail,
        format!(
            "signature 1: unknown key {}, not listed in trust root v1",
            stranger.key_id()
        )
    );
}

#[test]
fn ot_key_signature_is_wrong_role() {
    let fixture = Fixture::new();
    let mut file = bundle_file(&manifest(1), &[&fixture.s1]);
    let ot_signature = fixture
        .ot
        .sign(SigningContext::BundleManifest, &file.manifest_bytes);
    file.signatures.push(ot_signature);

    let verdict = fixture.verify(&file.encode().unwrap(), "office");

    let (rule, detail) = rejection(&verdict);
    assert_eq!(rule, RejectRule::WrongRole);
    assert_eq!(
        detail,
        format!(
            "signature 1: key {} has role ot, but this document needs security keys",
            fixture.ot.key_id()
        )
    );
}

#[test]
fn ot_key_cannot_sign_through_bundle_file() {
    let fixture = Fixture::new();
    let mut file = bundle_file(&manifest(1), &[]);

    let error = file.sign(&fixture.ot).unwrap_err();

    assert_eq!(error.rule(), RejectRule::WrongRole);
    assert!(file.signatures.is_empty());
}

#[test]
fn signature_from_another_context_is_bad() {
    let fixture = Fixture::new();
    let mut file = bundle_file(&manifest(1), &[]);
    // A valid signature by a listed security key, but over the manifest as if it were a window
    // schedule.
    let wrong_context = fixture
        .s1
        .sign(SigningContext::WindowSchedule, &file.manifest_bytes);
    file.signatures.push(wrong_context);

    let verdict = fixture.verify(&file.encode().unwrap(), "office");

    let (rule, detail) = rejection(&verdict);
    assert_eq!(rule, RejectRule::BadSignature);
    assert_eq!(
        detail,
        format!(
            "signature 0 by key {} does not verify over the signed bytes",
            fixture.s1.key_id()
        )
    );
}

#[test]
fn payload_mismatches_are_named() {
    let fixture = Fixture::new();
    let cases: [(&str, Vec<Payload>, RejectRule, &str); 4] = [
        (
            "missing",
            vec![],
            RejectRule::PayloadMissing,
            "bundle openssl-fix: payload \"motd\" is listed in the manifest but missing from the file",
        ),
        (
            "extra",
            vec![
                Payload {
                    name: PAYLOAD_NAME.into(),
                    content: PAYLOAD_CONTENT.to_vec(),
                },
                Payload {
                    name: "extra.sh".into(),
                    content: b"#!/bin/sh\n".to_vec(),
                },
            ],
            RejectRule::PayloadExtra,
            "bundle openssl-fix: payload \"extra.sh\" is in the file but not listed in the manifest",
        ),
        (
            "size",
            vec![Payload {
                name: PAYLOAD_NAME.into(),
                content: b"hello!\n".to_vec(),
            }],
            RejectRule::PayloadSize,
            "bundle openssl-fix: payload \"motd\" is 7 bytes, but the manifest lists 6 bytes",
        ),
        (
            "hash",
            vec![Payload {
                name: PAYLOAD_NAME.into(),
                content: b"hellO\n".to_vec(),
            }],
            RejectRule::PayloadHash,
            "bundle openssl-fix: payload \"motd\" has SHA-256",
        ),
    ];

    for (case, replacement, expected_rule, expected_detail) in cases {
        let mut file = bundle_file(&manifest(1), &[&fixture.s1]);
        file.payloads = replacement;

        let verdict = fixture.verify(&file.encode().unwrap(), "office");

        let (rule, detail) = rejection(&verdict);
        assert_eq!(rule, expected_rule, "case {case}");
        assert!(detail.starts_with(expected_detail), "case {case}: {detail}");
    }
}

#[test]
fn duplicate_payload_is_extra() {
    let fixture = Fixture::new();
    let mut file = bundle_file(&manifest(1), &[&fixture.s1]);
    file.payloads.push(file.payloads[0].clone());

    let verdict = fixture.verify(&file.encode().unwrap(), "office");

    let (rule, detail) = rejection(&verdict);
    assert_eq!(rule, RejectRule::PayloadExtra);
    assert_eq!(
        detail,
        "bundle openssl-fix: payload \"motd\" appears more than once in the file"
    );
}

#[test]
fn bundle_with_several_steps_and_payloads_is_accepted() {
    let fixture = Fixture::new();
    let deb = vec![0x21; 3000];
    let mut rich = manifest(7);
    rich.steps = vec![
        Step::InstallDeb {
            package: "openssl".into(),
            version: "3.0.15-1~deb12u1".into(),
            payload: "openssl_3.0.15-1~deb12u1_amd64.deb".into(),
        },
        Step::EnsureConfigLine {
            path: "etc/ssh/sshd_config".into(),
            match_prefix: "PermitRootLogin".into(),
            line: "PermitRootLogin no".into(),
        },
        Step::Sysctl {
            key: "net.ipv4.ip_forward".into(),
            value: "0".into(),
        },
        Step::SystemdUnit {
            unit: "telnet.socket".into(),
            action: tidegate_protocol::trust::UnitAction::Disable,
        },
        Step::LockAccount {
            user: "olduser".into(),
        },
        Step::RemoveDeb {
            package: "telnetd".into(),
        },
        Step::RunCommand {
            argv: vec!["/usr/sbin/update-ca-certificates".into()],
            revert_argv: None,
        },
    ];
    rich.payloads = vec![PayloadRef::of_content(
        "openssl_3.0.15-1~deb12u1_amd64.deb",
        &deb,
    )];
    rich.target.tiers = vec!["office".into(), "critical".into()];
    rich.target.os = vec!["debian-12".into()];
    rich.execution.runs_commands = true;
    let mut file = BundleFile::new(
        &rich,
        vec![Payload {
            name: "openssl_3.0.15-1~deb12u1_amd64.deb".into(),
            content: deb,
        }],
    )
    .unwrap();
    file.sign(&fixture.s1).unwrap();
    file.sign(&fixture.s2).unwrap();

    let verdict = fixture.verify(&file.encode().unwrap(), "critical");

    let BundleVerdict::Accepted { manifest, .. } = verdict else {
        panic!("expected acceptance, got {verdict:?}");
    };
    assert_eq!(manifest, rich);
}
