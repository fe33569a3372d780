//! The gate in front of the executor: a verified bundle starts only inside a window of a schedule
//! that an OT key signed, and only while the agent trusts its clock. These tests drive the trust
//! store and the gate with the clock readings a person chose, on real signed files.

use std::collections::BTreeMap;
use std::path::Path;

use ring::rand::SystemRandom;
use tidegate_agent::gate::Gate;
use tidegate_agent::trust::TrustStore;
use tidegate_protocol::trust::{
    BundleFile, BundleHash, BundleId, BundleManifest, Payload, PayloadRef, Role, ScheduleDocument,
    SignedSchedule, SignedTrustRoot, SigningKey, Step, StreamName, TargetSelector, Thresholds,
    TrustRoot,
};
use tidegate_protocol::window::{CalendarSpec, WindowRule};
use tidegate_protocol::BundleOutcome;

fn nothing_applied(_: &BundleHash) -> bool {
    false
}

/// 2026-05-01T00:00:00Z: the floor these tests give the store, because their clocks run in May.
const FLOOR: i64 = 1_777_593_600;
/// 2026-05-01T00:00:00Z and 2026-06-01T00:00:00Z: the bundle's validity.
const MAY_1: i64 = 1_777_593_600;
const JUNE_1: i64 = 1_780_272_000;
/// 2026-05-10T00:30:00Z, when the clock is set right.
const MAY_10_0030: i64 = 1_778_373_000;
/// 2026-05-10T02:00:00Z, when that day's window opens.
const MAY_10_0200: i64 = 1_778_378_400;
/// The schedule is valid through 2026: from 2026-01-01T00:00:00Z to 2027-01-01T00:00:00Z.
const YEAR_START: i64 = 1_767_225_600;
const YEAR_END: i64 = 1_798_761_600;

struct Keys {
    root: SigningKey,
    security: SigningKey,
    ot: SigningKey,
}

fn keys() -> Keys {
    let rng = SystemRandom::new();
    Keys {
        root: SigningKey::generate(Role::Root, &rng).unwrap(),
        security: SigningKey::generate(Role::Security, &rng).unwrap(),
        ot: SigningKey::generate(Role::Ot, &rng).unwrap(),
    }
}

fn write_root(keys: &Keys, path: &Path) {
    let root = TrustRoot {
        version: 1,
        keys: vec![
            keys.root.public_key().clone(),
            keys.security.public_key().clone(),
            keys.ot.public_key().clone(),
        ],
        thresholds: Thresholds {
            root: 1,
            security: 1,
            ot: 1,
        },
        tier_overrides: BTreeMap::new(),
        command_tiers: Default::default(),
    };
    let mut signed = SignedTrustRoot::new(&root).unwrap();
    signed.sign(&keys.root).unwrap();
    std::fs::write(path, signed.encode().unwrap()).unwrap();
}

fn bundle(keys: &Keys) -> Vec<u8> {
    let manifest = BundleManifest {
        bundle_id: BundleId::parse("motd-fix").unwrap(),
        stream: StreamName::parse("baseline").unwrap(),
        sequence: 1,
        not_before_unix_s: MAY_1,
        expires_unix_s: JUNE_1,
        target: TargetSelector::default(),
        steps: vec![Step::WriteFile {
            path: "etc/motd".into(),
            payload: "motd".into(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
        }],
        payloads: vec![PayloadRef::of_content("motd", b"patched\n")],
        execution: Default::default(),
    };
    let payloads = vec![Payload {
        name: "motd".into(),
        content: b"patched\n".to_vec(),
    }];
    let mut file = BundleFile::new(&manifest, payloads).unwrap();
    file.sign(&keys.security).unwrap();
    file.encode().unwrap()
}

/// Builds a daily window at 02:00 UTC of one hour, for tier `default`, signed by the OT key.
fn daily_two_am(keys: &Keys) -> Vec<u8> {
    let document = ScheduleDocument {
        tier: "default".into(),
        site: None,
        version: 1,
        calendar: CalendarSpec {
            zone: "UTC".into(),
            not_before_unix_s: YEAR_START,
            expires_unix_s: YEAR_END,
            windows: vec![WindowRule::Recurring {
                cron: "0 2 * * *".into(),
                duration_s: 3600,
                cutoff_s: None,
            }],
            freezes: Vec::new(),
        },
    };
    let mut signed = SignedSchedule::new(&document).unwrap();
    signed.sign(&keys.ot).unwrap();
    signed.encode().unwrap()
}

fn newest_outcome(trust: &TrustStore) -> BundleOutcome {
    trust.records().last().expect("a record").outcome.clone()
}

#[test]
fn gate_clock_1970_then_next_window() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let root_path = dir.path().join("root.tgrt");
    write_root(&keys, &root_path);
    let state = dir.path().join("state");
    let mut trust = TrustStore::open(&state, Some(&root_path), FLOOR).unwrap();
    let mut gate = Gate::open(&state, "default", None, true).unwrap();

    // 1970-01-01T00:00:10Z: a dead RTC battery. Both files are kept, neither is rejected.
    let early = 10;
    let record = trust
        .receive_bundle(&bundle(&keys), "default", early, &nothing_applied)
        .unwrap();
    assert!(
        matches!(record.outcome, BundleOutcome::Deferred { .. }),
        "{:?}",
        record.outcome
    );
    let decision = gate
        .receive_schedule(&daily_two_am(&keys), &mut trust, early)
        .unwrap();
    assert!(
        matches!(
            decision,
            tidegate_agent::schedule::ScheduleDecision::Deferred { .. }
        ),
        "{decision:?}"
    );
    let poll = gate.poll(&mut trust, early).unwrap();
    assert!(poll.start.is_none());

    // The clock is set right at 00:30Z: the bundle is verified again and waits for 02:00Z.
    for (record, file) in trust
        .retry_deferred("default", MAY_10_0030, &nothing_applied)
        .unwrap()
    {
        assert_eq!(record.outcome, BundleOutcome::Accepted);
        gate.enqueue(&file).unwrap();
    }
    let poll = gate.poll(&mut trust, MAY_10_0030).unwrap();
    assert!(poll.start.is_none());
    assert!(poll.records_changed);
    assert_eq!(
        newest_outcome(&trust),
        BundleOutcome::Waiting {
            code: "outside-windows".into(),
            reason: "no window is open".into(),
            expected_start_unix_s: Some(MAY_10_0200),
        }
    );

    // One second before the window nothing starts; at 02:00:00Z the bundle does.
    assert!(gate
        .poll(&mut trust, MAY_10_0200 - 1)
        .unwrap()
        .start
        .is_none());
    let started = gate.poll(&mut trust, MAY_10_0200).unwrap().start;
    assert_eq!(
        started.map(|bundle| bundle.manifest.bundle_id.to_string()),
        Some("motd-fix".to_owned())
    );
    assert_eq!(gate.waiting(), 0);
}

#[test]
fn gate_queue_survives_restart() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let root_path = dir.path().join("root.tgrt");
    write_root(&keys, &root_path);
    let state = dir.path().join("state");
    {
        let mut trust = TrustStore::open(&state, Some(&root_path), FLOOR).unwrap();
        let mut gate = Gate::open(&state, "default", None, true).unwrap();
        gate.receive_schedule(&daily_two_am(&keys), &mut trust, MAY_10_0030)
            .unwrap();
        let file = bundle(&keys);
        let record = trust
            .receive_bundle(&file, "default", MAY_10_0030, &nothing_applied)
            .unwrap();
        assert_eq!(record.outcome, BundleOutcome::Accepted);
        gate.enqueue(&file).unwrap();
    }
    // The agent restarts at 01:00Z, before the window, with its clock still trusted.
    let mut trust = TrustStore::open(&state, Some(&root_path), FLOOR).unwrap();
    let mut gate = Gate::open(&state, "default", None, true).unwrap();
    assert_eq!(gate.waiting(), 1);
    assert!(gate
        .poll(&mut trust, MAY_10_0030 + 1800)
        .unwrap()
        .start
        .is_none());
    assert!(gate.poll(&mut trust, MAY_10_0200).unwrap().start.is_some());
}

#[test]
fn gate_without_schedule_per_setting() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let root_path = dir.path().join("root.tgrt");
    write_root(&keys, &root_path);
    for (require_schedule, starts) in [(true, false), (false, true)] {
        let state = dir.path().join(format!("state-{require_schedule}"));
        let mut trust = TrustStore::open(&state, Some(&root_path), FLOOR).unwrap();
        let mut gate = Gate::open(&state, "default", None, require_schedule).unwrap();
        let file = bundle(&keys);
        trust
            .receive_bundle(&file, "default", MAY_10_0030, &nothing_applied)
            .unwrap();
        gate.enqueue(&file).unwrap();
        let poll = gate.poll(&mut trust, MAY_10_0030).unwrap();
        assert_eq!(
            poll.start.is_some(),
            starts,
            "require_schedule = {require_schedule}"
        );
        if !starts {
            assert!(matches!(
                newest_outcome(&trust),
                BundleOutcome::Waiting { ref code, expected_start_unix_s: None, .. } if code == "no-schedule"
            ));
        }
    }
}
