//! Ingest rate of the store, measured on a temporary file. Ignored by default, because the
//! number only means something in a release build on an otherwise idle machine:
//!
//! ```text
//! cargo test --release -p tidegate-server --test store_ingest_rate -- --ignored --nocapture
//! ```
//!
//! It prints reports per second for three workloads: deltas with one upgraded package each,
//! empty deltas (a host where nothing changed), and full reports. Nothing is asserted about the
//! rate, so a slow machine does not fail the suite.

mod store_support;

use std::time::Instant;

use store_support::*;
use tidegate_protocol::{InstallState, Inventory, InventoryDelta, Report};
use tidegate_server::store::{IngestOutcome, Store};

const AGENTS: usize = 2_000;
const PACKAGES_PER_AGENT: usize = 500;
const BATCH: usize = 1_000;

fn agent_name(index: usize) -> String {
    format!("{index:032x}")
}

fn host_inventory(index: usize) -> Inventory {
    let mut inventory = Inventory {
        facts: facts(&format!("host-{index:05}")),
        packages: (0..PACKAGES_PER_AGENT)
            .map(|n| {
                package(
                    &format!("pkg{n:04}"),
                    "amd64",
                    "1.0-1",
                    InstallState::Installed,
                )
            })
            .collect(),
        ..Default::default()
    };
    inventory.normalize();
    inventory
}

/// Ingests `reports` in batches and returns reports per second.
fn ingest_all(store: &mut Store, reports: Vec<Report>, expected: &IngestOutcome) -> f64 {
    let count = reports.len();
    let mut incoming = reports
        .into_iter()
        .map(|report| report_in(report, COLLECTED_AT));
    let started = Instant::now();
    loop {
        let batch: Vec<_> = incoming.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            break;
        }
        for outcome in store.ingest(batch).unwrap() {
            assert_eq!(&outcome, expected);
        }
    }
    count as f64 / started.elapsed().as_secs_f64()
}

#[test]
#[ignore = "a measurement: run in release mode with --ignored --nocapture"]
fn store_ingest_rate() {
    let (_dir, _path, mut store) = temp_store();

    let fulls: Vec<Report> = (0..AGENTS)
        .map(|index| full_report(&agent_name(index), BOOT_1, 1, host_inventory(index)))
        .collect();
    let full_rate = ingest_all(&mut store, fulls, &IngestOutcome::Stored);
    println!(
        "full reports of {PACKAGES_PER_AGENT} packages: {full_rate:.0} reports/s \
         ({AGENTS} agents, batches of {BATCH})"
    );

    // Ten rounds of one delta per agent, each upgrading a different package.
    let mut deltas = Vec::new();
    for round in 0..10u64 {
        for index in 0..AGENTS {
            let mut upgraded = package(
                &format!(
                    "pkg{:04}",
                    (index + round as usize * 7) % PACKAGES_PER_AGENT
                ),
                "amd64",
                &format!("1.{}-1", round + 1),
                InstallState::Installed,
            );
            upgraded.provides = vec![];
            let delta = InventoryDelta {
                upserted: vec![upgraded],
                ..Default::default()
            };
            deltas.push(delta_report(
                &agent_name(index),
                BOOT_1,
                round + 2,
                round + 1,
                delta,
            ));
        }
    }
    let delta_rate = ingest_all(&mut store, deltas, &IngestOutcome::Stored);
    println!("deltas with one upgraded package: {delta_rate:.0} reports/s");

    let mut empty = Vec::new();
    for round in 10..20u64 {
        for index in 0..AGENTS {
            let delta = InventoryDelta::default();
            empty.push(delta_report(
                &agent_name(index),
                BOOT_1,
                round + 2,
                round + 1,
                delta,
            ));
        }
    }
    let empty_rate = ingest_all(&mut store, empty, &IngestOutcome::Stored);
    println!("empty deltas: {empty_rate:.0} reports/s");
}
