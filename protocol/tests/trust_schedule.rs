//! Signed window schedules: signers and thresholds, target, version replay, the untrusted clock,
//! validity in time, and decoders that never panic.

mod trust_support;

use std::sync::OnceLock;

use proptest::prelude::*;
use tidegate_protocol::trust::{
    verify_schedule, ClockTrust, RejectRule, Role, ScheduleDocument, ScheduleError,
    ScheduleVerdict, SignedSchedule, SigningKey, TierThresholds, TrustRoot,
};
use tidegate_protocol::window::{CalendarSpec, Freeze, WindowRule};
use trust_support::*;

/// A root with two OT keys, a security key and a root key, where tier `critical` needs two OT
/// signatures and every other tier one.
struct Fixture {
    ot1: SigningKey,
    ot2: SigningKey,
    security: SigningKey,
    root: TrustRoot,
}

impl Fixture {
    fn new() -> Self {
        let ot1 = key(Role::Ot);
        let ot2 = key(Role::Ot);
        let security = key(Role::Security);
        let mut root = root(1, &[&key(Role::Root), &security, &ot1, &ot2], 1);
        root.tier_overrides.insert(
            "critical".into(),
            TierThresholds {
                security: None,
                ot: Some(2),
            },
        );
        Self {
            ot1,
            ot2,
            security,
            root,
        }
    }

    fn verify(&self, file: &[u8], tier: &str, current: Option<u64>) -> ScheduleVerdict {
        verify_schedule(
            file,
            &self.root,
            tier,
            None,
            NOW,
            &ClockTrust::Trusted,
            current,
        )
    }
}

/// A daily 02:00 UTC window for `tier`, valid from [`NOT_BEFORE`] until [`EXPIRES`].
fn document(tier: &str, site: Option<&str>, version: u64) -> ScheduleDocument {
    ScheduleDocument {
        tier: tier.into(),
        site: site.map(str::to_owned),
        version,
        calendar: CalendarSpec {
            zone: "UTC".into(),
            not_before_unix_s: NOT_BEFORE,
            expires_unix_s: EXPIRES,
            windows: vec![WindowRule::Recurring {
                cron: "0 2 * * *".into(),
                duration_s: 3600,
                cutoff_s: Some(600),
            }],
            freezes: vec![Freeze {
                start_unix_s: NOW,
                end_unix_s: NOW + 86_400,
                reason: "line changeover".into(),
            }],
        },
    }
}

fn schedule_bytes(document: &ScheduleDocument, signers: &[&SigningKey]) -> Vec<u8> {
    let mut signed = SignedSchedule::new(document).unwrap();
    for signer in signers {
        signed.sign(signer).unwrap();
    }
    signed.encode().unwrap()
}

fn rule_of(verdict: &ScheduleVerdict) -> RejectRule {
    verdict
        .rejection_rule()
        .unwrap_or_else(|| panic!("expected a rejection, got {verdict:?}"))
}

#[test]
fn signed_schedule_is_accepted() {
    let fixture = Fixture::new();
    let file = schedule_bytes(&document("plant", None, 3), &[&fixture.ot1]);
    let verdict = fixture.verify(&file, "plant", Some(2));
    let ScheduleVerdict::Accepted {
        document: accepted,
        calendar,
        schedule_hash,
    } = verdict
    else {
        panic!("expected acceptance, got {verdict:?}");
    };
    assert_eq!(accepted, document("plant", None, 3));
    assert_eq!(
        schedule_hash,
        SignedSchedule::decode(&file).unwrap().schedule_hash()
    );
    // NOW is 2026-05-15T00:00Z and frozen for a day; the window of 05-16 02:00Z is next.
    assert_eq!(calendar.next_allowed(NOW), Some(NOW + 86_400 + 2 * 3600));
}

#[test]
fn replayed_older_version_is_rejected() {
    let fixture = Fixture::new();
    let file = schedule_bytes(&document("plant", None, 3), &[&fixture.ot1]);
    let verdict = fixture.verify(&file, "plant", Some(4));
    assert_eq!(rule_of(&verdict), RejectRule::Rollback);
    let ScheduleVerdict::Rejected { detail, .. } = verdict else {
        unreachable!()
    };
    assert!(detail.contains("version 3"), "{detail}");
    assert!(detail.contains("current version 4"), "{detail}");

    let verdict = fixture.verify(&file, "plant", Some(3));
    assert!(matches!(
        verdict,
        ScheduleVerdict::AlreadyHave { version: 3 }
    ));
}

#[test]
fn security_key_cannot_sign_schedule() {
    let fixture = Fixture::new();
    // The library refuses to sign, so build the signature the way a forger would.
    let mut signed = SignedSchedule::new(&document("plant", None, 1)).unwrap();
    let error = signed.sign(&fixture.security).unwrap_err();
    assert!(matches!(error, ScheduleError::NotOtKey { .. }));
    signed.signatures.push(fixture.security.sign(
        tidegate_protocol::trust::SigningContext::WindowSchedule,
        &signed.document_bytes,
    ));
    let verdict = fixture.verify(&signed.encode().unwrap(), "plant", None);
    assert_eq!(rule_of(&verdict), RejectRule::WrongRole);
}

#[test]
fn unknown_key_is_rejected() {
    let fixture = Fixture::new();
    let stranger = key(Role::Ot);
    let file = schedule_bytes(&document("plant", None, 1), &[&fixture.ot1, &stranger]);
    let verdict = fixture.verify(&file, "plant", None);
    assert_eq!(rule_of(&verdict), RejectRule::UnknownKey);
}

#[test]
fn tier_threshold_applies() {
    let fixture = Fixture::new();
    let one = schedule_bytes(&document("critical", None, 1), &[&fixture.ot1]);
    assert_eq!(
        rule_of(&fixture.verify(&one, "critical", None)),
        RejectRule::Threshold
    );
    let two = schedule_bytes(
        &document("critical", None, 1),
        &[&fixture.ot1, &fixture.ot2],
    );
    assert!(matches!(
        fixture.verify(&two, "critical", None),
        ScheduleVerdict::Accepted { .. }
    ));
    let unsigned = schedule_bytes(&document("plant", None, 1), &[]);
    assert_eq!(
        rule_of(&fixture.verify(&unsigned, "plant", None)),
        RejectRule::Threshold
    );
}

#[test]
fn damaged_signature_is_rejected() {
    let fixture = Fixture::new();
    let mut signed = SignedSchedule::new(&document("plant", None, 1)).unwrap();
    signed.sign(&fixture.ot1).unwrap();
    signed.signatures[0].bytes[0] ^= 1;
    let verdict = fixture.verify(&signed.encode().unwrap(), "plant", None);
    assert_eq!(rule_of(&verdict), RejectRule::BadSignature);
}

#[test]
fn other_tier_or_site_is_rejected() {
    let fixture = Fixture::new();
    let file = schedule_bytes(&document("office", None, 1), &[&fixture.ot1]);
    assert_eq!(
        rule_of(&fixture.verify(&file, "plant", None)),
        RejectRule::WrongTarget
    );

    let site_file = schedule_bytes(&document("plant", Some("hamburg"), 1), &[&fixture.ot1]);
    let verify_site = |site: Option<&str>| {
        verify_schedule(
            &site_file,
            &fixture.root,
            "plant",
            site,
            NOW,
            &ClockTrust::Trusted,
            None,
        )
    };
    assert!(matches!(
        verify_site(Some("hamburg")),
        ScheduleVerdict::Accepted { .. }
    ));
    assert_eq!(
        rule_of(&verify_site(Some("bremen"))),
        RejectRule::WrongTarget
    );
    assert_eq!(rule_of(&verify_site(None)), RejectRule::WrongTarget);
}

#[test]
fn untrusted_clock_defers() {
    let fixture = Fixture::new();
    let file = schedule_bytes(&document("plant", None, 2), &[&fixture.ot1]);
    // 1970-01-01T00:00:10Z: the schedule is neither valid nor expired by this reading.
    let verdict = verify_schedule(
        &file,
        &fixture.root,
        "plant",
        None,
        10,
        &ClockTrust::Untrusted {
            reason: "the clock is behind the build time".into(),
        },
        Some(1),
    );
    let ScheduleVerdict::Deferred {
        document: kept,
        reason,
        ..
    } = verdict
    else {
        panic!("expected deferral, got {verdict:?}");
    };
    assert_eq!(kept.version, 2);
    assert!(reason.contains("behind the build time"), "{reason}");
}

#[test]
fn validity_in_time() {
    let fixture = Fixture::new();
    let file = schedule_bytes(&document("plant", None, 1), &[&fixture.ot1]);
    let at = |now: i64| {
        verify_schedule(
            &file,
            &fixture.root,
            "plant",
            None,
            now,
            &ClockTrust::Trusted,
            None,
        )
    };
    assert_eq!(rule_of(&at(NOT_BEFORE - 1)), RejectRule::NotYetValid);
    assert!(matches!(at(NOT_BEFORE), ScheduleVerdict::Accepted { .. }));
    assert!(matches!(
        at(LAST_VALID_SECOND),
        ScheduleVerdict::Accepted { .. }
    ));
    assert_eq!(rule_of(&at(EXPIRES)), RejectRule::Expired);
}

#[test]
fn invalid_document_cannot_be_built() {
    let mut never = document("plant", None, 1);
    never.calendar.windows = vec![WindowRule::Recurring {
        cron: "0 2 30 2 *".into(),
        duration_s: 3600,
        cutoff_s: None,
    }];
    let error = SignedSchedule::new(&never).unwrap_err().to_string();
    assert!(
        error.contains("schedule for tier plant, version 1: window 0"),
        "{error}"
    );
    assert!(error.contains("never fires"), "{error}");

    let mut offset = document("plant", None, 1);
    offset.calendar.zone = "+01:00".into();
    let error = SignedSchedule::new(&offset).unwrap_err().to_string();
    assert!(error.contains("IANA time zone name"), "{error}");

    assert!(matches!(
        SignedSchedule::new(&document("plant", None, 0)),
        Err(ScheduleError::InvalidVersion)
    ));
    assert!(SignedSchedule::new(&document("Plant", None, 1)).is_err());
    assert!(SignedSchedule::new(&document("plant", Some("a/b"), 1)).is_err());
}

#[test]
fn signed_invalid_document_is_rejected() {
    // A document that only a modified tool could produce: signed, but with a cron expression
    // that never fires. The agent rejects it after the signatures verified.
    let fixture = Fixture::new();
    let mut never = document("plant", None, 1);
    never.calendar.windows = vec![WindowRule::Recurring {
        cron: "0 0 31 4 *".into(),
        duration_s: 3600,
        cutoff_s: None,
    }];
    let document_bytes = postcard::to_allocvec(&never).unwrap();
    let mut signed = SignedSchedule {
        document_bytes,
        signatures: vec![],
    };
    signed.sign(&fixture.ot1).unwrap();
    let verdict = fixture.verify(&signed.encode().unwrap(), "plant", None);
    assert_eq!(rule_of(&verdict), RejectRule::InvalidSchedule);
}

#[test]
fn file_round_trip_and_framing() {
    let fixture = Fixture::new();
    let file = schedule_bytes(&document("plant", None, 1), &[&fixture.ot1, &fixture.ot2]);
    assert_eq!(&file[..5], b"TGWS\x01");
    let decoded = SignedSchedule::decode(&file).unwrap();
    assert_eq!(decoded.signers().len(), 2);
    assert_eq!(decoded.encode().unwrap(), file);
    let (document_again, _) = decoded.document().unwrap();
    assert_eq!(document_again, document("plant", None, 1));

    let mut wrong_format = file.clone();
    wrong_format[4] = 2;
    assert_eq!(
        rule_of(&fixture.verify(&wrong_format, "plant", None)),
        RejectRule::Format
    );
    let mut trailing = file.clone();
    trailing.push(0);
    assert_eq!(
        rule_of(&fixture.verify(&trailing, "plant", None)),
        RejectRule::Format
    );
    let huge = vec![0u8; 200 * 1024];
    assert_eq!(
        rule_of(&fixture.verify(&huge, "plant", None)),
        RejectRule::SizeLimit
    );
}

fn signed_fixture() -> &'static (Vec<u8>, TrustRoot) {
    static FIXTURE: OnceLock<(Vec<u8>, TrustRoot)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let fixture = Fixture::new();
        let file = schedule_bytes(&document("plant", None, 1), &[&fixture.ot1]);
        (file, fixture.root)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (_, root) = signed_fixture();
        let _ = SignedSchedule::decode(&bytes);
        let _ = ScheduleDocument::decode(&bytes);
        let verdict = verify_schedule(&bytes, root, "plant", None, NOW, &ClockTrust::Trusted, None);
        prop_assert!(verdict.rejection_rule().is_some());
    }

    #[test]
    fn framed_arbitrary_body_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let (_, root) = signed_fixture();
        let mut bytes = b"TGWS\x01".to_vec();
        bytes.extend_from_slice(&body);
        let verdict = verify_schedule(&bytes, root, "plant", None, NOW, &ClockTrust::Trusted, None);
        prop_assert!(verdict.rejection_rule().is_some());
    }

    #[test]
    fn arbitrary_document_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = ScheduleDocument::decode(&body);
    }

    #[test]
    fn flipped_byte_is_never_accepted(index in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (file, root) = signed_fixture();
        let mut damaged = file.clone();
        let position = index.index(damaged.len());
        damaged[position] ^= 1 << bit;
        let verdict = verify_schedule(&damaged, root, "plant", None, NOW, &ClockTrust::Trusted, None);
        prop_assert!(verdict.rejection_rule().is_some(), "{:?}", verdict);
    }
}

#[test]
fn schedule_order_round_trips() {
    use tidegate_protocol::{decode, encode, Message, Order, OrderBody, OrderId};

    let fixture = Fixture::new();
    let file = schedule_bytes(&document("plant", None, 1), &[&fixture.ot1]);
    let message = Message::Order(Order {
        order_id: OrderId([7; 16]),
        body: OrderBody::Schedule { file: file.clone() },
    });
    let decoded = decode(&encode(&message).unwrap()).unwrap();
    assert_eq!(decoded, message);
}
