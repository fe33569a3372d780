//! Bundle states in the store: each agent's outcome per bundle hash with its step records, kept
//! after the agent's own list of recent records moves on.

mod store_support;

use store_support::*;
use tidegate_protocol::{BundleOutcome, BundleRecord, InventoryDelta, StepOutcome, StepRecord};
use tidegate_server::store::StoreReader;

const RECEIVED: i64 = COLLECTED_AT + 2;

fn record(hash_digit: char, outcome: BundleOutcome, steps: Vec<StepRecord>) -> BundleRecord {
    BundleRecord {
        bundle_id: "motd".into(),
        stream: "motd".into(),
        sequence: 3,
        bundle_hash: hash_digit.to_string().repeat(64),
        outcome,
        decided_at_unix_s: 1_700_000_100,
        steps,
    }
}

fn step(index: u32, outcome: StepOutcome, detail: &str) -> StepRecord {
    StepRecord {
        index,
        kind: "write-file".into(),
        outcome,
        started_at_unix_s: 1_700_000_090 + i64::from(index),
        finished_at_unix_s: Some(1_700_000_095 + i64::from(index)),
        detail: detail.into(),
    }
}

#[test]
fn states_keep_steps_and_outlive_records() {
    let (_dir, path, mut store) = temp_store();
    let mut first = inventory();
    first.bundles = vec![record(
        'a',
        BundleOutcome::RevertFailed {
            step: 1,
            detail: "revert of step 1 failed".into(),
        },
        vec![
            step(0, StepOutcome::Reverted, "verify failed"),
            step(1, StepOutcome::RevertFailed, "revert of step 1 failed"),
        ],
    )];
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, first),
            RECEIVED,
        )])
        .unwrap();

    // The agent's list moves on to another bundle; the first state stays in the store.
    let delta = InventoryDelta {
        bundles: Some(vec![record(
            'b',
            BundleOutcome::Applied,
            vec![step(0, StepOutcome::Applied, "")],
        )]),
        ..Default::default()
    };
    store
        .ingest(vec![report_in(
            delta_report(AGENT, BOOT_1, 2, 1, delta),
            RECEIVED + 60,
        )])
        .unwrap();

    let detail = StoreReader::open(&path)
        .unwrap()
        .agent(AGENT)
        .unwrap()
        .unwrap();
    assert_eq!(detail.bundles.len(), 1);
    assert_eq!(detail.bundle_states.len(), 2);
    let failed = detail
        .bundle_states
        .iter()
        .find(|state| state.bundle_hash == "a".repeat(64))
        .expect("the first bundle's state");
    assert_eq!(failed.outcome, "revert-failed");
    assert_eq!(failed.step, Some(1));
    assert_eq!(failed.detail, "revert of step 1 failed");
    assert!(failed.needs_person);
    assert_eq!(failed.steps.len(), 2);
    assert_eq!(failed.steps[1].outcome, StepOutcome::RevertFailed);
    assert_eq!(failed.steps[1].started_at_unix_s, 1_700_000_091);
    assert_eq!(failed.steps[1].finished_at_unix_s, Some(1_700_000_096));
    let applied = detail
        .bundle_states
        .iter()
        .find(|state| state.bundle_hash == "b".repeat(64))
        .expect("the second bundle's state");
    assert_eq!(applied.outcome, "applied");
    assert!(!applied.needs_person);
}

#[test]
fn newer_outcome_replaces_state() {
    let (_dir, path, mut store) = temp_store();
    let mut first = inventory();
    first.bundles = vec![record('c', BundleOutcome::Applied, vec![])];
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, first),
            RECEIVED,
        )])
        .unwrap();
    let delta = InventoryDelta {
        bundles: Some(vec![record('c', BundleOutcome::RolledBack, vec![])]),
        ..Default::default()
    };
    store
        .ingest(vec![report_in(
            delta_report(AGENT, BOOT_1, 2, 1, delta),
            RECEIVED + 60,
        )])
        .unwrap();

    let detail = StoreReader::open(&path)
        .unwrap()
        .agent(AGENT)
        .unwrap()
        .unwrap();
    assert_eq!(detail.bundle_states.len(), 1);
    assert_eq!(detail.bundle_states[0].outcome, "rolled-back");
}

#[test]
fn fleet_counts_waiting_and_failed_bundles() {
    let (_dir, path, mut store) = temp_store();
    let mut first = inventory();
    first.bundles = vec![
        record(
            'd',
            BundleOutcome::Waiting {
                code: "frozen".into(),
                reason: "changes are frozen".into(),
                expected_start_unix_s: Some(1_700_003_600),
            },
            vec![],
        ),
        record(
            'e',
            BundleOutcome::RollbackFailed {
                step: 0,
                detail: "restore of etc/motd failed".into(),
            },
            vec![step(
                0,
                StepOutcome::RevertFailed,
                "restore of etc/motd failed",
            )],
        ),
        record('f', BundleOutcome::Applied, vec![]),
    ];
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, first),
            RECEIVED,
        )])
        .unwrap();

    let reader = StoreReader::open(&path).unwrap();
    let fleet = reader.fleet().unwrap();
    assert_eq!(fleet.len(), 1);
    assert_eq!(fleet[0].bundles_waiting, 1);
    assert_eq!(fleet[0].bundles_needing_person, 1);
    let detail = reader.agent(AGENT).unwrap().unwrap();
    assert_eq!(detail.summary.bundles_waiting, 1);
    assert_eq!(detail.summary.bundles_needing_person, 1);

    // Once the waiting bundle applies, it no longer counts.
    let delta = InventoryDelta {
        bundles: Some(vec![record('d', BundleOutcome::Applied, vec![])]),
        ..Default::default()
    };
    store
        .ingest(vec![report_in(
            delta_report(AGENT, BOOT_1, 2, 1, delta),
            RECEIVED + 60,
        )])
        .unwrap();
    let fleet = reader.fleet().unwrap();
    assert_eq!(fleet[0].bundles_waiting, 0);
    assert_eq!(fleet[0].bundles_needing_person, 1);
}
