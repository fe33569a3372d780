//! Statuses into the store: online state, agent version and ordering.

mod store_support;

use store_support::*;
use tidegate_protocol::StatusState::{Offline, Online};
use tidegate_server::store::{AgentSummary, IngestOutcome, StoreReader};

fn summary(reader: &StoreReader, id: &str) -> AgentSummary {
    reader
        .agent(id)
        .expect("read the agent")
        .expect("the agent is stored")
        .summary
}

#[test]
fn status_creates_unknown_agent() {
    let (_dir, path, mut store) = temp_store();

    let outcomes = store
        .ingest(vec![status_in(
            status(AGENT, Online, 1_000, "0.1.0"),
            1_003,
        )])
        .unwrap();

    assert_eq!(outcomes, vec![IngestOutcome::StatusRecorded]);
    let agent = summary(&StoreReader::open(&path).unwrap(), AGENT);
    assert!(agent.online);
    assert_eq!(agent.agent_version.as_deref(), Some("0.1.0"));
    assert_eq!(agent.first_seen_unix_s, 1_003);
    assert_eq!(agent.last_seen_unix_s, 1_003);
    assert_eq!(agent.hostname, "");
    assert_eq!(agent.reports_received, 0);
}

#[test]
fn newer_status_replaces() {
    let (_dir, path, mut store) = temp_store();

    store
        .ingest(vec![
            status_in(status(AGENT, Online, 1_000, "0.1.0"), 1_001),
            status_in(status(AGENT, Offline, 1_500, "0.2.0"), 1_502),
        ])
        .unwrap();

    let agent = summary(&StoreReader::open(&path).unwrap(), AGENT);
    assert!(!agent.online);
    assert_eq!(agent.agent_version.as_deref(), Some("0.2.0"));
    assert_eq!(agent.last_seen_unix_s, 1_502);
}

#[test]
fn older_status_ignored() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![status_in(
            status(AGENT, Online, 2_000, "0.2.0"),
            2_001,
        )])
        .unwrap();

    // The broker delivers the last will of an earlier connection after the new online status.
    let outcomes = store
        .ingest(vec![status_in(
            status(AGENT, Offline, 1_900, "0.1.0"),
            2_050,
        )])
        .unwrap();

    assert_eq!(outcomes, vec![IngestOutcome::StatusRecorded]);
    let agent = summary(&StoreReader::open(&path).unwrap(), AGENT);
    assert!(agent.online, "an older offline status must not win");
    assert_eq!(agent.agent_version.as_deref(), Some("0.2.0"));
    assert_eq!(agent.last_seen_unix_s, 2_050);
}

#[test]
fn same_time_status_later_arrival_wins() {
    let (_dir, path, mut store) = temp_store();

    store
        .ingest(vec![
            status_in(status(AGENT, Online, 3_000, "0.1.0"), 3_001),
            status_in(status(AGENT, Offline, 3_000, "0.1.0"), 3_001),
        ])
        .unwrap();

    let agent = summary(&StoreReader::open(&path).unwrap(), AGENT);
    assert!(!agent.online);
}

#[test]
fn status_keeps_inventory() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory()),
            COLLECTED_AT,
        )])
        .unwrap();

    store
        .ingest(vec![status_in(
            status(AGENT, Online, COLLECTED_AT + 30, "0.1.0"),
            COLLECTED_AT + 31,
        )])
        .unwrap();

    let agent = summary(&StoreReader::open(&path).unwrap(), AGENT);
    assert!(agent.online);
    assert_eq!(agent.hostname, "gw-01");
    assert_eq!(agent.package_count, 4);
    assert_eq!(agent.reports_received, 1);
    assert_eq!(agent.first_seen_unix_s, COLLECTED_AT);
    assert_eq!(agent.last_seen_unix_s, COLLECTED_AT + 31);
}
