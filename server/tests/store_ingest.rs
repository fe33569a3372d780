//! Reports into the store: full reports, deltas, duplicates and resyncs.

mod store_support;

use store_support::*;
use tidegate_protocol::{Ecosystem, InstallState, InventoryDelta, PackageKey};
use tidegate_server::store::{AgentDetail, IngestOutcome, StoreReader};

const RECEIVED: i64 = COLLECTED_AT + 2;

fn read_agent(reader: &StoreReader, id: &str) -> AgentDetail {
    reader
        .agent(id)
        .expect("read the agent")
        .expect("the agent is stored")
}

fn version_of(detail: &AgentDetail, name: &str, arch: &str) -> Option<String> {
    detail
        .packages
        .iter()
        .find(|package| package.name == name && package.arch == arch)
        .map(|package| package.version.clone())
}

#[test]
fn full_report_stores_inventory() {
    let (_dir, path, mut store) = temp_store();

    let outcomes = store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory()),
            RECEIVED,
        )])
        .unwrap();

    assert_eq!(outcomes, vec![IngestOutcome::Stored]);
    let detail = read_agent(&StoreReader::open(&path).unwrap(), AGENT);
    let summary = &detail.summary;
    assert_eq!(summary.agent_id, AGENT);
    assert_eq!(summary.hostname, "gw-01");
    assert_eq!(summary.os_name, "Debian GNU/Linux");
    assert_eq!(summary.os_version, "12");
    assert_eq!(summary.kernel_version, "6.1.0-18-amd64");
    assert_eq!(summary.arch, "x86_64");
    assert_eq!(summary.cpu_count, 4);
    assert_eq!(summary.memory_total_bytes, 8_589_934_592);
    assert_eq!(summary.package_count, 4);
    assert_eq!(summary.broken_package_count, 1);
    assert_eq!(summary.pending_updates, 2);
    assert_eq!(summary.security_updates, 1);
    assert!(summary.reboot_required);
    assert_eq!(summary.package_lists_updated_unix_s, Some(1_699_999_400));
    assert_eq!(summary.first_seen_unix_s, 1_700_000_002);
    assert_eq!(summary.last_seen_unix_s, 1_700_000_002);
    // Report 1 is collected at COLLECTED_AT + 60, five hours and one minute after boot.
    assert_eq!(summary.last_report_unix_s, Some(1_700_000_060));
    assert_eq!(summary.uptime_seconds, Some(18_060));
    assert_eq!(summary.reports_received, 1);
    assert_eq!(summary.duplicate_reports, 0);
    assert!(!summary.online);
    assert_eq!(summary.agent_version, None);

    assert_eq!(detail.packages.len(), 6);
    let mail = detail
        .packages
        .iter()
        .find(|p| p.name == "bsd-mailx")
        .unwrap();
    assert_eq!(mail.state, "half-configured");
    assert_eq!(mail.selection, "install");
    assert_eq!(mail.provides, vec!["mailx", "mail-reader"]);
    let exim = detail.packages.iter().find(|p| p.name == "exim4").unwrap();
    assert_eq!(exim.state, "config-files");
    assert_eq!(exim.selection, "deinstall");
    assert_eq!(detail.pending_updates.len(), 2);
    assert_eq!(detail.pending_updates[0].name, "curl");
    assert!(!detail.pending_updates[0].security);
    assert_eq!(detail.pending_updates[1].name, "openssl");
    assert_eq!(
        detail.pending_updates[1].candidate_version,
        "3.0.13-1~deb12u1"
    );
    assert!(detail.pending_updates[1].security);
    assert_eq!(detail.reboot_packages, vec!["linux-image-6.1.0-18-amd64"]);
    assert_eq!(detail.warnings.len(), 1);
    assert_eq!(detail.warnings[0].source, "dpkg");
}

#[test]
fn multiarch_rows_both_stored() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory()),
            RECEIVED,
        )])
        .unwrap();

    let detail = read_agent(&StoreReader::open(&path).unwrap(), AGENT);
    let libssl: Vec<(&str, &str)> = detail
        .packages
        .iter()
        .filter(|package| package.name == "libssl3")
        .map(|package| (package.arch.as_str(), package.version.as_str()))
        .collect();
    assert_eq!(
        libssl,
        vec![("amd64", "3.0.11-1~deb12u2"), ("i386", "3.0.11-1~deb12u2")]
    );
}

#[test]
fn delta_upgrades_one_row() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory()),
            RECEIVED,
        )])
        .unwrap();

    let delta = openssl_upgrade();
    assert_eq!(delta.upserted.len(), 1, "the sample delta carries one row");
    let outcomes = store
        .ingest(vec![report_in(
            delta_report(AGENT, BOOT_1, 2, 1, delta),
            RECEIVED + 60,
        )])
        .unwrap();

    assert_eq!(outcomes, vec![IngestOutcome::Stored]);
    let detail = read_agent(&StoreReader::open(&path).unwrap(), AGENT);
    assert_eq!(
        version_of(&detail, "openssl", "amd64").as_deref(),
        Some("3.0.13-1~deb12u1")
    );
    assert_eq!(
        version_of(&detail, "libssl3", "amd64").as_deref(),
        Some("3.0.11-1~deb12u2")
    );
    assert_eq!(detail.packages.len(), 6);
    assert_eq!(detail.summary.package_count, 4);
    assert_eq!(detail.summary.broken_package_count, 1);
    assert_eq!(detail.summary.pending_updates, 1);
    assert_eq!(detail.summary.security_updates, 0);
    assert_eq!(detail.pending_updates[0].name, "curl");
    // Facts did not change, so the delta carried none and the stored ones stay.
    assert_eq!(detail.summary.hostname, "gw-01");
    assert_eq!(detail.summary.last_report_unix_s, Some(1_700_000_120));
    assert_eq!(detail.summary.uptime_seconds, Some(18_120));
    assert_eq!(detail.summary.last_seen_unix_s, 1_700_000_062);
    assert_eq!(detail.summary.reports_received, 2);
}

#[test]
fn delta_state_changes_adjust_counts() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory()),
            RECEIVED,
        )])
        .unwrap();

    // bsd-mailx finishes configuring, curl breaks half-way through an upgrade, exim4's leftover
    // configuration is purged, and a new package arrives.
    let mut mail = package(
        "bsd-mailx",
        "amd64",
        "8.1.2-0.20220412",
        InstallState::Installed,
    );
    mail.provides = vec!["mailx".into()];
    let delta = InventoryDelta {
        upserted: vec![
            mail,
            package(
                "curl",
                "amd64",
                "7.88.1-10+deb12u6",
                InstallState::HalfInstalled,
            ),
            package("jq", "amd64", "1.6-2.1", InstallState::Installed),
        ],
        removed: vec![PackageKey {
            ecosystem: Ecosystem::Deb,
            name: "exim4".into(),
            arch: "amd64".into(),
        }],
        ..Default::default()
    };
    let outcomes = store
        .ingest(vec![report_in(
            delta_report(AGENT, BOOT_1, 2, 1, delta),
            RECEIVED + 60,
        )])
        .unwrap();

    assert_eq!(outcomes, vec![IngestOutcome::Stored]);
    let detail = read_agent(&StoreReader::open(&path).unwrap(), AGENT);
    // Installed: bsd-mailx, jq, libssl3 x2, openssl. Broken: curl. Rows: 6 - exim4 + jq.
    assert_eq!(detail.summary.package_count, 5);
    assert_eq!(detail.summary.broken_package_count, 1);
    assert_eq!(detail.packages.len(), 6);
    assert_eq!(version_of(&detail, "exim4", "amd64"), None);
    let mail = detail
        .packages
        .iter()
        .find(|p| p.name == "bsd-mailx")
        .unwrap();
    assert_eq!(mail.provides, vec!["mailx"]);
    // The delta left pending updates alone.
    assert_eq!(detail.summary.pending_updates, 2);
}

#[test]
fn duplicate_report_counted_once() {
    let (_dir, path, mut store) = temp_store();
    let report = full_report(AGENT, BOOT_1, 1, inventory());
    store
        .ingest(vec![report_in(report.clone(), RECEIVED)])
        .unwrap();

    let mut changed = report;
    if let tidegate_protocol::ReportBody::Full(inventory) = &mut changed.body {
        inventory.packages.clear();
    }
    let outcomes = store
        .ingest(vec![report_in(changed, RECEIVED + 300)])
        .unwrap();

    assert_eq!(outcomes, vec![IngestOutcome::Duplicate]);
    let detail = read_agent(&StoreReader::open(&path).unwrap(), AGENT);
    assert_eq!(detail.summary.duplicate_reports, 1);
    assert_eq!(detail.summary.reports_received, 1);
    assert_eq!(detail.packages.len(), 6, "a duplicate must not be applied");
    assert_eq!(detail.summary.last_seen_unix_s, RECEIVED);
}

#[test]
fn duplicate_within_one_batch() {
    let (_dir, path, mut store) = temp_store();
    let report = full_report(AGENT, BOOT_1, 1, inventory());

    let outcomes = store
        .ingest(vec![
            report_in(report.clone(), RECEIVED),
            report_in(report, RECEIVED),
        ])
        .unwrap();

    assert_eq!(
        outcomes,
        vec![IngestOutcome::Stored, IngestOutcome::Duplicate]
    );
    let summary = read_agent(&StoreReader::open(&path).unwrap(), AGENT).summary;
    assert_eq!(summary.reports_received, 1);
    assert_eq!(summary.duplicate_reports, 1);
}

#[test]
fn delta_on_wrong_seq_needs_resync() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![
            report_in(full_report(AGENT, BOOT_1, 1, inventory()), RECEIVED),
            report_in(
                delta_report(AGENT, BOOT_1, 2, 1, InventoryDelta::default()),
                RECEIVED,
            ),
        ])
        .unwrap();

    // Report 3 was lost, so report 4 builds on a base the store never applied.
    let rejected = delta_report(AGENT, BOOT_1, 4, 3, openssl_upgrade());
    let outcomes = store
        .ingest(vec![report_in(rejected.clone(), RECEIVED + 120)])
        .unwrap();

    let [IngestOutcome::NeedsResync { agent_id, reason }] = outcomes.as_slice() else {
        panic!("expected one NeedsResync, got {outcomes:?}");
    };
    assert_eq!(agent_id.as_str(), AGENT);
    assert!(reason.contains("report 3"), "{reason}");
    assert!(reason.contains("last applied report is 2"), "{reason}");

    let reader = StoreReader::open(&path).unwrap();
    let detail = read_agent(&reader, AGENT);
    assert_eq!(
        version_of(&detail, "openssl", "amd64").as_deref(),
        Some("3.0.11-1~deb12u2"),
        "a rejected delta must not be applied"
    );
    assert_eq!(detail.summary.pending_updates, 2);
    assert_eq!(detail.summary.reports_received, 3);
    assert_eq!(detail.summary.last_seen_unix_s, RECEIVED + 120);
    assert_eq!(detail.summary.last_report_unix_s, Some(COLLECTED_AT + 120));

    // A redelivery of the rejected delta is a duplicate, not a second resync.
    let outcomes = store
        .ingest(vec![report_in(rejected, RECEIVED + 180)])
        .unwrap();
    assert_eq!(outcomes, vec![IngestOutcome::Duplicate]);
    assert_eq!(read_agent(&reader, AGENT).summary.reports_received, 3);
}

#[test]
fn delta_on_other_boot_needs_resync() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory()),
            RECEIVED,
        )])
        .unwrap();

    let outcomes = store
        .ingest(vec![report_in(
            delta_report(AGENT, BOOT_2, 2, 1, openssl_upgrade()),
            RECEIVED + 60,
        )])
        .unwrap();

    let [IngestOutcome::NeedsResync { reason, .. }] = outcomes.as_slice() else {
        panic!("expected one NeedsResync, got {outcomes:?}");
    };
    assert!(reason.contains(&BOOT_2.to_hex()), "{reason}");
    assert!(reason.contains(&BOOT_1.to_hex()), "{reason}");
    let detail = read_agent(&StoreReader::open(&path).unwrap(), AGENT);
    assert_eq!(
        version_of(&detail, "openssl", "amd64").as_deref(),
        Some("3.0.11-1~deb12u2")
    );
}

#[test]
fn first_report_delta_needs_resync() {
    let (_dir, path, mut store) = temp_store();

    let outcomes = store
        .ingest(vec![report_in(
            delta_report(AGENT, BOOT_1, 7, 6, openssl_upgrade()),
            RECEIVED,
        )])
        .unwrap();

    let [IngestOutcome::NeedsResync { reason, .. }] = outcomes.as_slice() else {
        panic!("expected one NeedsResync, got {outcomes:?}");
    };
    assert!(
        reason.contains("no report of this agent has been applied"),
        "{reason}"
    );
    let detail = read_agent(&StoreReader::open(&path).unwrap(), AGENT);
    assert!(detail.packages.is_empty());
    assert_eq!(detail.summary.hostname, "");
    assert_eq!(detail.summary.last_report_unix_s, None);
    assert_eq!(detail.summary.uptime_seconds, None);
    assert_eq!(detail.summary.reports_received, 1);
    assert_eq!(detail.summary.first_seen_unix_s, RECEIVED);
}

#[test]
fn full_report_after_resync_applies() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![report_in(
            delta_report(AGENT, BOOT_1, 7, 6, openssl_upgrade()),
            RECEIVED,
        )])
        .unwrap();

    let outcomes = store
        .ingest(vec![
            report_in(full_report(AGENT, BOOT_1, 8, inventory()), RECEIVED + 5),
            report_in(
                delta_report(AGENT, BOOT_1, 9, 8, openssl_upgrade()),
                RECEIVED + 65,
            ),
        ])
        .unwrap();

    assert_eq!(outcomes, vec![IngestOutcome::Stored, IngestOutcome::Stored]);
    let detail = read_agent(&StoreReader::open(&path).unwrap(), AGENT);
    assert_eq!(
        version_of(&detail, "openssl", "amd64").as_deref(),
        Some("3.0.13-1~deb12u1")
    );
}

#[test]
fn new_boot_full_report_replaces() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory()),
            RECEIVED,
        )])
        .unwrap();

    let mut rebooted = inventory();
    rebooted.facts.kernel_version = "6.1.0-21-amd64".into();
    rebooted.facts.boot_time_unix_s = COLLECTED_AT + 3_600;
    rebooted
        .packages
        .retain(|package| package.name != "exim4" && package.name != "bsd-mailx");
    rebooted.packages[0].version = "7.88.1-10+deb12u6".into();
    assert_eq!(rebooted.packages[0].name, "curl");
    rebooted.pending_updates.clear();
    rebooted.reboot = Default::default();
    rebooted.warnings.clear();
    rebooted.package_lists_updated_unix_s = None;
    let outcomes = store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_2, 1, rebooted),
            RECEIVED + 7_200,
        )])
        .unwrap();

    assert_eq!(outcomes, vec![IngestOutcome::Stored]);
    let reader = StoreReader::open(&path).unwrap();
    let detail = read_agent(&reader, AGENT);
    assert_eq!(detail.summary.kernel_version, "6.1.0-21-amd64");
    assert_eq!(detail.packages.len(), 4);
    assert_eq!(version_of(&detail, "exim4", "amd64"), None);
    assert_eq!(version_of(&detail, "bsd-mailx", "amd64"), None);
    assert_eq!(
        version_of(&detail, "curl", "amd64").as_deref(),
        Some("7.88.1-10+deb12u6")
    );
    assert_eq!(
        version_of(&detail, "libssl3", "i386").as_deref(),
        Some("3.0.11-1~deb12u2")
    );
    assert_eq!(detail.summary.package_count, 4);
    assert_eq!(detail.summary.broken_package_count, 0);
    assert_eq!(detail.summary.pending_updates, 0);
    assert_eq!(detail.summary.security_updates, 0);
    assert!(!detail.summary.reboot_required);
    assert!(detail.reboot_packages.is_empty());
    assert!(detail.warnings.is_empty());
    assert!(detail.pending_updates.is_empty());
    assert_eq!(detail.summary.package_lists_updated_unix_s, None);
    // Collected at COLLECTED_AT + 60, booted at COLLECTED_AT + 3600: the report time is before
    // the boot time, and the uptime shows the negative difference as it is.
    assert_eq!(detail.summary.uptime_seconds, Some(-3_540));
    assert_eq!(detail.summary.reports_received, 2);

    // Deltas now build on the new boot.
    let outcomes = store
        .ingest(vec![report_in(
            delta_report(AGENT, BOOT_2, 2, 1, InventoryDelta::default()),
            RECEIVED + 7_260,
        )])
        .unwrap();
    assert_eq!(outcomes, vec![IngestOutcome::Stored]);
    let outcomes = store
        .ingest(vec![report_in(
            delta_report(AGENT, BOOT_1, 2, 1, InventoryDelta::default()),
            RECEIVED + 7_300,
        )])
        .unwrap();
    assert!(
        matches!(outcomes[0], IngestOutcome::NeedsResync { .. }),
        "{outcomes:?}"
    );
}

#[test]
fn unsorted_full_report_keeps_last_row_per_key() {
    let (_dir, path, mut store) = temp_store();
    let mut inventory = inventory();
    inventory.packages = vec![
        package(
            "zlib1g",
            "amd64",
            "1:1.2.13.dfsg-1",
            InstallState::Installed,
        ),
        package("curl", "amd64", "7.88.1-10", InstallState::HalfInstalled),
        package(
            "curl",
            "amd64",
            "7.88.1-10+deb12u5",
            InstallState::Installed,
        ),
    ];
    inventory.pending_updates = vec![
        pending("curl", "7.88.1-10", "7.88.1-10+deb12u5", true),
        pending("curl", "7.88.1-10+deb12u5", "7.88.1-10+deb12u6", false),
    ];

    let outcomes = store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory),
            RECEIVED,
        )])
        .unwrap();

    assert_eq!(outcomes, vec![IngestOutcome::Stored]);
    let detail = read_agent(&StoreReader::open(&path).unwrap(), AGENT);
    assert_eq!(detail.packages.len(), 2);
    assert_eq!(
        version_of(&detail, "curl", "amd64").as_deref(),
        Some("7.88.1-10+deb12u5")
    );
    assert_eq!(detail.summary.package_count, 2);
    assert_eq!(detail.summary.broken_package_count, 0);
    assert_eq!(detail.summary.pending_updates, 1);
    assert_eq!(detail.summary.security_updates, 0);
    assert_eq!(
        detail.pending_updates[0].candidate_version,
        "7.88.1-10+deb12u6"
    );
}

#[test]
fn outbox_dropped_takes_latest_value() {
    let (_dir, path, mut store) = temp_store();
    let mut first = full_report(AGENT, BOOT_1, 1, inventory());
    first.outbox_dropped = 12;
    let mut second = delta_report(AGENT, BOOT_1, 2, 1, InventoryDelta::default());
    second.outbox_dropped = 3;

    store
        .ingest(vec![
            report_in(first, RECEIVED),
            report_in(second, RECEIVED + 60),
        ])
        .unwrap();

    let summary = read_agent(&StoreReader::open(&path).unwrap(), AGENT).summary;
    assert_eq!(summary.outbox_dropped, 3);
}

#[test]
fn last_seen_never_moves_back() {
    let (_dir, path, mut store) = temp_store();

    store
        .ingest(vec![
            report_in(full_report(AGENT, BOOT_1, 1, inventory()), RECEIVED + 100),
            report_in(
                delta_report(AGENT, BOOT_1, 2, 1, InventoryDelta::default()),
                RECEIVED + 40,
            ),
        ])
        .unwrap();

    let summary = read_agent(&StoreReader::open(&path).unwrap(), AGENT).summary;
    assert_eq!(summary.last_seen_unix_s, RECEIVED + 100);
    assert_eq!(summary.first_seen_unix_s, RECEIVED + 100);
}

#[test]
fn batch_outcomes_follow_input_order() {
    let (_dir, path, mut store) = temp_store();
    let mut other = inventory();
    other.facts.hostname = "historian".into();

    let outcomes = store
        .ingest(vec![
            report_in(full_report(AGENT, BOOT_1, 1, inventory()), RECEIVED),
            status_in(
                status(
                    AGENT,
                    tidegate_protocol::StatusState::Online,
                    COLLECTED_AT,
                    "0.1.0",
                ),
                RECEIVED,
            ),
            report_in(
                delta_report(OTHER_AGENT, BOOT_1, 5, 4, InventoryDelta::default()),
                RECEIVED,
            ),
            report_in(full_report(AGENT, BOOT_1, 1, inventory()), RECEIVED),
            report_in(full_report(OTHER_AGENT, BOOT_1, 6, other), RECEIVED),
        ])
        .unwrap();

    assert_eq!(outcomes.len(), 5);
    assert_eq!(outcomes[0], IngestOutcome::Stored);
    assert_eq!(outcomes[1], IngestOutcome::StatusRecorded);
    assert!(
        matches!(&outcomes[2], IngestOutcome::NeedsResync { agent_id, .. } if agent_id.as_str() == OTHER_AGENT),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[3], IngestOutcome::Duplicate);
    assert_eq!(outcomes[4], IngestOutcome::Stored);

    let fleet = StoreReader::open(&path).unwrap().fleet().unwrap();
    let hosts: Vec<&str> = fleet.iter().map(|agent| agent.hostname.as_str()).collect();
    assert_eq!(hosts, vec!["gw-01", "historian"]);
}

#[test]
fn empty_batch_is_fine() {
    let (_dir, _path, mut store) = temp_store();
    assert_eq!(store.ingest(Vec::new()).unwrap(), Vec::new());
}

#[test]
fn prune_forgets_old_reports() {
    let (_dir, path, mut store) = temp_store();
    let old = full_report(AGENT, BOOT_1, 1, inventory());
    store
        .ingest(vec![
            report_in(old.clone(), 1_000),
            report_in(
                delta_report(AGENT, BOOT_1, 2, 1, InventoryDelta::default()),
                2_000,
            ),
        ])
        .unwrap();

    assert_eq!(store.prune_seen_reports(1_500).unwrap(), 1);

    // Report 1 is forgotten, so its redelivery counts as new; report 2 is still known.
    let outcomes = store
        .ingest(vec![
            report_in(old, 3_000),
            report_in(
                delta_report(AGENT, BOOT_1, 2, 1, InventoryDelta::default()),
                3_000,
            ),
        ])
        .unwrap();
    assert_eq!(
        outcomes,
        vec![IngestOutcome::Stored, IngestOutcome::Duplicate]
    );
    let summary = read_agent(&StoreReader::open(&path).unwrap(), AGENT).summary;
    assert_eq!(summary.reports_received, 3);
}
