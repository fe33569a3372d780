//! Ingest records each bundle decision an agent reports for the first time in the audit log,
//! in the transaction that stores the report.

mod store_support;

use serde_json::json;
use store_support::*;
use tidegate_protocol::{BundleOutcome, BundleRecord, InventoryDelta};
use tidegate_server::audit;

fn record(bundle_id: &str, sequence: u64, outcome: BundleOutcome) -> BundleRecord {
    BundleRecord {
        bundle_id: bundle_id.into(),
        stream: "baseline".into(),
        sequence,
        bundle_hash: "ab".repeat(32),
        outcome,
        decided_at_unix_s: 1_700_000_100,
        steps: Vec::new(),
    }
}

#[test]
fn new_bundle_decisions_are_audited_once() {
    let (_dir, path, mut store) = temp_store();
    let accepted = record("baseline-5", 5, BundleOutcome::Accepted);
    let rejected = record(
        "baseline-6",
        6,
        BundleOutcome::Rejected {
            rule: "unknown-key".into(),
            detail: "key 1111222233334444 is not in the trust root".into(),
        },
    );

    // A full report with one decision, then the same report again after a restart (a new
    // boot), then a delta that adds a second decision.
    let mut first = inventory();
    first.bundles = vec![accepted.clone()];
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, first.clone()),
            COLLECTED_AT + 60,
        )])
        .unwrap();
    store
        .ingest(vec![report_in(
            full_report(AGENT, tidegate_protocol::BootId([2; 16]), 1, first),
            COLLECTED_AT + 120,
        )])
        .unwrap();
    let delta = InventoryDelta {
        bundles: Some(vec![accepted.clone(), rejected.clone()]),
        ..Default::default()
    };
    store
        .ingest(vec![report_in(
            delta_report(AGENT, tidegate_protocol::BootId([2; 16]), 2, 1, delta),
            COLLECTED_AT + 180,
        )])
        .unwrap();

    let records = audit::read_file(&path).unwrap();
    let summary: Vec<(u64, i64, &str, &str, &str)> = records
        .iter()
        .map(|entry| {
            (
                entry.seq,
                entry.at_unix_s,
                entry.actor.as_str(),
                entry.action.as_str(),
                entry.subject.as_str(),
            )
        })
        .collect();
    let actor = format!("agent:{AGENT}");
    assert_eq!(
        summary,
        vec![
            (
                1,
                COLLECTED_AT + 60,
                actor.as_str(),
                "agent.bundle.accepted",
                "baseline-5"
            ),
            (
                2,
                COLLECTED_AT + 180,
                actor.as_str(),
                "agent.bundle.rejected",
                "baseline-6"
            ),
        ]
    );
    assert_eq!(
        records[1].detail,
        json!({
            "bundle_id": "baseline-6",
            "stream": "baseline",
            "sequence": 6,
            "bundle_hash": "ab".repeat(32),
            "outcome": {"Rejected": {
                "rule": "unknown-key",
                "detail": "key 1111222233334444 is not in the trust root",
            }},
            "decided_at_unix_s": 1_700_000_100,
            "steps": [],
        })
    );
    assert!(audit::verify(&records).is_intact());
}
