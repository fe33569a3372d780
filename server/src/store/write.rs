//! Applying reports and statuses to the store, inside the caller's transaction.
//!
//! Every statement goes through `prepare_cached`, and a delta touches only the rows it names, so
//! a report with a small change costs a handful of indexed statements. The per-agent counts that
//! the fleet list shows (installed, broken, pending, security) live in the `agents` row and are
//! adjusted here, so reading the fleet never counts package rows.
//!
//! A bundle decision that an agent reports for the first time (a new record in its bundle list)
//! is appended to the audit log in the same transaction, as `agent.bundle.OUTCOME` by the actor
//! `agent:ID`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Transaction};
use tidegate_protocol::{
    BootId, BundleRecord, HostFacts, InstallState, Inventory, InventoryDelta, Package, PackageKey,
    PendingUpdate, RebootRequired, Report, ReportBody, Status, StatusState, Warning,
};

use super::IngestOutcome;
use crate::audit::{self, AuditEntry};

/// An agent's row key, its last applied report and the package counts that go with it.
struct AppliedState {
    agent_key: i64,
    report: Option<(BootId, u64)>,
    counts: PackageCounts,
}

/// Installed and broken package rows of one agent.
#[derive(Debug, Clone, Copy, Default)]
struct PackageCounts {
    installed: i64,
    broken: i64,
}

impl PackageCounts {
    fn add(&mut self, state: InstallState) {
        self.installed += i64::from(state.is_installed());
        self.broken += i64::from(state.is_broken());
    }

    /// Takes back the contribution of a row in `state`, as stored in the `state` column.
    fn remove_stored(&mut self, state: &str) {
        if let Some(state) = InstallState::parse(state) {
            self.installed -= i64::from(state.is_installed());
            self.broken -= i64::from(state.is_broken());
        }
    }
}

/// Records one report: de-duplicates it, then applies it or decides that the agent must resync.
pub(super) fn ingest_report(
    transaction: &Transaction<'_>,
    report: &Report,
    received_at_unix_s: i64,
) -> rusqlite::Result<IngestOutcome> {
    let state = match read_applied_state(transaction, report.agent_id.as_str())? {
        Some(state) => state,
        None => {
            let agent_key =
                insert_agent(transaction, report.agent_id.as_str(), received_at_unix_s)?;
            AppliedState {
                agent_key,
                report: None,
                counts: PackageCounts::default(),
            }
        }
    };

    let agent_key = state.agent_key;
    let inserted = transaction
        .prepare_cached(
            "INSERT INTO reports_seen (agent_key, boot_id, seq, received_at_unix_s)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            agent_key,
            &report.boot_id.0[..],
            report.seq as i64,
            received_at_unix_s
        ])?;
    if inserted == 0 {
        transaction
            .prepare_cached(
                "UPDATE agents SET duplicate_reports = duplicate_reports + 1 WHERE agent_key = ?1",
            )?
            .execute([agent_key])?;
        return Ok(IngestOutcome::Duplicate);
    }

    let counts = match &report.body {
        ReportBody::Full(inventory) => {
            replace_inventory(transaction, agent_key, inventory, received_at_unix_s)?
        }
        ReportBody::Delta { base_seq, delta } => {
            if let Some(reason) = resync_reason(state.report, report.boot_id, *base_seq) {
                transaction
                    .prepare_cached(
                        "UPDATE agents SET
                             last_seen_unix_s = max(last_seen_unix_s, ?2),
                             reports_received = reports_received + 1,
                             outbox_dropped = ?3
                         WHERE agent_key = ?1",
                    )?
                    .execute(params![
                        agent_key,
                        received_at_unix_s,
                        report.outbox_dropped as i64
                    ])?;
                return Ok(IngestOutcome::NeedsResync {
                    agent_id: report.agent_id.clone(),
                    reason,
                });
            }
            apply_delta(
                transaction,
                agent_key,
                delta,
                state.counts,
                received_at_unix_s,
            )?
        }
    };

    transaction
        .prepare_cached(
            "UPDATE agents SET
                 last_seen_unix_s = max(last_seen_unix_s, ?2),
                 reports_received = reports_received + 1,
                 outbox_dropped = ?3,
                 applied_boot_id = ?4,
                 applied_seq = ?5,
                 last_report_unix_s = ?6,
                 package_count = ?7,
                 broken_package_count = ?8
             WHERE agent_key = ?1",
        )?
        .execute(params![
            agent_key,
            received_at_unix_s,
            report.outbox_dropped as i64,
            &report.boot_id.0[..],
            report.seq as i64,
            report.collected_at_unix_s,
            counts.installed,
            counts.broken,
        ])?;
    Ok(IngestOutcome::Stored)
}

/// Records one status unless the stored one is newer by the agent's clock. A status with the same
/// `at_unix_s` as the stored one arrived later, so it wins. Any status, even an ignored one, moves
/// the agent's `last_seen_unix_s` forward.
pub(super) fn ingest_status(
    transaction: &Transaction<'_>,
    status: &Status,
    received_at_unix_s: i64,
) -> rusqlite::Result<IngestOutcome> {
    let agent_id = status.agent_id.as_str();
    let stored: Option<(i64, Option<i64>)> = transaction
        .prepare_cached("SELECT agent_key, status_at_unix_s FROM agents WHERE agent_id = ?1")?
        .query_row([agent_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (agent_key, stored_at) = match stored {
        Some(stored) => stored,
        None => (
            insert_agent(transaction, agent_id, received_at_unix_s)?,
            None,
        ),
    };

    if stored_at.is_some_and(|stored_at| status.at_unix_s < stored_at) {
        transaction
            .prepare_cached(
                "UPDATE agents SET last_seen_unix_s = max(last_seen_unix_s, ?2) WHERE agent_key = ?1",
            )?
            .execute(params![agent_key, received_at_unix_s])?;
        return Ok(IngestOutcome::StatusRecorded);
    }

    transaction
        .prepare_cached(
            "UPDATE agents SET
                 last_seen_unix_s = max(last_seen_unix_s, ?2),
                 online = ?3,
                 agent_version = ?4,
                 status_at_unix_s = ?5
             WHERE agent_key = ?1",
        )?
        .execute(params![
            agent_key,
            received_at_unix_s,
            status.state == StatusState::Online,
            status.agent_version,
            status.at_unix_s,
        ])?;
    Ok(IngestOutcome::StatusRecorded)
}

fn read_applied_state(
    transaction: &Transaction<'_>,
    agent_id: &str,
) -> rusqlite::Result<Option<AppliedState>> {
    transaction
        .prepare_cached(
            "SELECT agent_key, applied_boot_id, applied_seq, package_count, broken_package_count
             FROM agents WHERE agent_id = ?1",
        )?
        .query_row([agent_id], |row| {
            let boot_id: Option<Vec<u8>> = row.get(1)?;
            let seq: Option<i64> = row.get(2)?;
            let report = match (boot_id, seq) {
                (Some(boot_id), Some(seq)) => <[u8; 16]>::try_from(boot_id.as_slice())
                    .ok()
                    .map(|bytes| (BootId(bytes), seq as u64)),
                _ => None,
            };
            Ok(AppliedState {
                agent_key: row.get(0)?,
                report,
                counts: PackageCounts {
                    installed: row.get(3)?,
                    broken: row.get(4)?,
                },
            })
        })
        .optional()
}

/// Inserts a new agent row and returns its `agent_key`.
fn insert_agent(
    transaction: &Transaction<'_>,
    agent_id: &str,
    received_at_unix_s: i64,
) -> rusqlite::Result<i64> {
    transaction
        .prepare_cached(
            "INSERT INTO agents (agent_id, first_seen_unix_s, last_seen_unix_s) VALUES (?1, ?2, ?2)",
        )?
        .execute(params![agent_id, received_at_unix_s])?;
    Ok(transaction.last_insert_rowid())
}

/// Returns why a delta on `base_seq` of `boot_id` cannot be applied, or `None` when it can.
fn resync_reason(applied: Option<(BootId, u64)>, boot_id: BootId, base_seq: u64) -> Option<String> {
    match applied {
        None => Some(format!(
            "received a delta on report {base_seq} of boot {boot_id}, but no report of this agent \
             has been applied yet"
        )),
        Some((applied_boot, _)) if applied_boot != boot_id => Some(format!(
            "received a delta on report {base_seq} of boot {boot_id}, but the last applied report \
             is from boot {applied_boot}"
        )),
        Some((_, applied_seq)) if applied_seq != base_seq => Some(format!(
            "received a delta on report {base_seq} of boot {boot_id}, but the last applied report \
             is {applied_seq}"
        )),
        Some(_) => None,
    }
}

/// A package row as stored: everything but the key, with `provides` as its JSON text.
#[derive(PartialEq)]
struct StoredPackage {
    version: String,
    state: String,
    selection: String,
    provides: String,
}

impl StoredPackage {
    fn from_package(package: &Package) -> rusqlite::Result<Self> {
        Ok(Self {
            version: package.version.clone(),
            state: package.state.as_str().to_owned(),
            selection: package.selection.as_str().to_owned(),
            provides: provides_json(&package.provides)?,
        })
    }
}

/// Replaces everything the store has from the agent's earlier reports with `inventory`.
///
/// Package rows are compared with the stored ones and only the differences are written, because
/// a full report after a restart or a resync usually matches the stored rows almost entirely.
fn replace_inventory(
    transaction: &Transaction<'_>,
    agent_key: i64,
    inventory: &Inventory,
    received_at_unix_s: i64,
) -> rusqlite::Result<PackageCounts> {
    let mut stored: BTreeMap<(String, String, String), StoredPackage> = transaction
        .prepare_cached(
            "SELECT ecosystem, name, arch, version, state, selection, provides
             FROM packages WHERE agent_key = ?1",
        )?
        .query_map([agent_key], |row| {
            let key = (row.get(0)?, row.get(1)?, row.get(2)?);
            let package = StoredPackage {
                version: row.get(3)?,
                state: row.get(4)?,
                selection: row.get(5)?,
                provides: row.get(6)?,
            };
            Ok((key, package))
        })?
        .collect::<rusqlite::Result<_>>()?;

    let mut counts = PackageCounts::default();
    for package in normalized_packages(&inventory.packages).iter() {
        counts.add(package.state);
        let key = (
            package.ecosystem.as_str().to_owned(),
            package.name.clone(),
            package.arch.clone(),
        );
        let unchanged = match stored.remove(&key) {
            Some(old) => old == StoredPackage::from_package(package)?,
            None => false,
        };
        if !unchanged {
            upsert_package(transaction, agent_key, package)?;
        }
    }
    for (ecosystem, name, arch) in stored.keys() {
        transaction
            .prepare_cached(
                "DELETE FROM packages
                 WHERE agent_key = ?1 AND ecosystem = ?2 AND name = ?3 AND arch = ?4",
            )?
            .execute(params![agent_key, ecosystem, name, arch])?;
    }

    update_facts(transaction, agent_key, &inventory.facts)?;
    replace_pending_updates(transaction, agent_key, &inventory.pending_updates)?;
    update_package_lists_time(
        transaction,
        agent_key,
        inventory.package_lists_updated_unix_s,
    )?;
    replace_reboot(transaction, agent_key, &inventory.reboot)?;
    replace_warnings(transaction, agent_key, &inventory.warnings)?;
    update_tier(transaction, agent_key, &inventory.tier)?;
    update_trust_root_version(transaction, agent_key, inventory.trust_root_version)?;
    update_schedule_version(transaction, agent_key, inventory.schedule_version)?;
    replace_bundles(
        transaction,
        agent_key,
        &inventory.bundles,
        received_at_unix_s,
    )?;
    Ok(counts)
}

/// Applies a delta the same way [`Inventory::apply`] does: removals first, then upserts, then the
/// parts that are replaced whole when they changed.
fn apply_delta(
    transaction: &Transaction<'_>,
    agent_key: i64,
    delta: &InventoryDelta,
    mut counts: PackageCounts,
    received_at_unix_s: i64,
) -> rusqlite::Result<PackageCounts> {
    for key in &delta.removed {
        let removed_state: Option<String> = transaction
            .prepare_cached(
                "DELETE FROM packages
                 WHERE agent_key = ?1 AND ecosystem = ?2 AND name = ?3 AND arch = ?4
                 RETURNING state",
            )?
            .query_row(
                params![agent_key, key.ecosystem.as_str(), key.name, key.arch],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(state) = removed_state {
            counts.remove_stored(&state);
        }
    }

    for package in &delta.upserted {
        let old_state: Option<String> = transaction
            .prepare_cached(
                "SELECT state FROM packages
                 WHERE agent_key = ?1 AND ecosystem = ?2 AND name = ?3 AND arch = ?4",
            )?
            .query_row(
                params![
                    agent_key,
                    package.ecosystem.as_str(),
                    package.name,
                    package.arch
                ],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(state) = old_state {
            counts.remove_stored(&state);
        }
        upsert_package(transaction, agent_key, package)?;
        counts.add(package.state);
    }

    if let Some(facts) = &delta.facts {
        update_facts(transaction, agent_key, facts)?;
    }
    if let Some(pending_updates) = &delta.pending_updates {
        replace_pending_updates(transaction, agent_key, pending_updates)?;
    }
    if let Some(updated) = delta.package_lists_updated_unix_s {
        update_package_lists_time(transaction, agent_key, updated)?;
    }
    if let Some(reboot) = &delta.reboot {
        replace_reboot(transaction, agent_key, reboot)?;
    }
    if let Some(warnings) = &delta.warnings {
        replace_warnings(transaction, agent_key, warnings)?;
    }
    if let Some(tier) = &delta.tier {
        update_tier(transaction, agent_key, tier)?;
    }
    if let Some(version) = delta.trust_root_version {
        update_trust_root_version(transaction, agent_key, version)?;
    }
    if let Some(version) = delta.schedule_version {
        update_schedule_version(transaction, agent_key, version)?;
    }
    if let Some(bundles) = &delta.bundles {
        replace_bundles(transaction, agent_key, bundles, received_at_unix_s)?;
    }
    Ok(counts)
}

fn update_tier(transaction: &Transaction<'_>, agent_key: i64, tier: &str) -> rusqlite::Result<()> {
    transaction
        .prepare_cached("UPDATE agents SET tier = ?2 WHERE agent_key = ?1")?
        .execute(params![agent_key, tier])?;
    Ok(())
}

fn update_trust_root_version(
    transaction: &Transaction<'_>,
    agent_key: i64,
    version: Option<u64>,
) -> rusqlite::Result<()> {
    let version = version.map(|version| i64::try_from(version).unwrap_or(i64::MAX));
    transaction
        .prepare_cached("UPDATE agents SET trust_root_version = ?2 WHERE agent_key = ?1")?
        .execute(params![agent_key, version])?;
    Ok(())
}

fn update_schedule_version(
    transaction: &Transaction<'_>,
    agent_key: i64,
    version: Option<u64>,
) -> rusqlite::Result<()> {
    let version = version.map(|version| i64::try_from(version).unwrap_or(i64::MAX));
    transaction
        .prepare_cached("UPDATE agents SET schedule_version = ?2 WHERE agent_key = ?1")?
        .execute(params![agent_key, version])?;
    Ok(())
}

/// Replaces the agent's bundle records and audits the ones it did not have before.
fn replace_bundles(
    transaction: &Transaction<'_>,
    agent_key: i64,
    bundles: &[BundleRecord],
    received_at_unix_s: i64,
) -> rusqlite::Result<()> {
    let (agent_id, stored): (String, String) = transaction
        .prepare_cached("SELECT agent_id, bundles FROM agents WHERE agent_key = ?1")?
        .query_row([agent_key], |row| Ok((row.get(0)?, row.get(1)?)))?;
    // Stored lists come from this function, so they parse; an unreadable one counts as empty and
    // its records are audited again rather than lost.
    let known: Vec<BundleRecord> = serde_json::from_str(&stored).unwrap_or_default();
    for record in bundles.iter().filter(|record| !known.contains(record)) {
        let detail = serde_json::to_value(record)
            .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
        audit::append(
            transaction,
            received_at_unix_s,
            &AuditEntry::new(
                audit::agent_actor(&agent_id),
                format!("agent.bundle.{}", record.outcome.as_str()),
                record.bundle_id.clone(),
                detail,
            ),
        )?;
    }

    let json = serde_json::to_string(bundles)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
    transaction
        .prepare_cached("UPDATE agents SET bundles = ?2 WHERE agent_key = ?1")?
        .execute(params![agent_key, json])?;
    // Records are oldest first, so the newest record of a hash is written last and wins.
    for record in bundles {
        upsert_bundle_state(transaction, agent_key, record)?;
    }
    Ok(())
}

fn upsert_bundle_state(
    transaction: &Transaction<'_>,
    agent_key: i64,
    record: &tidegate_protocol::BundleRecord,
) -> rusqlite::Result<()> {
    let steps = serde_json::to_string(&record.steps)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
    let (step, detail) = match record.outcome.failure() {
        Some((step, detail)) => (step, detail.to_owned()),
        None => (None, String::new()),
    };
    transaction
        .prepare_cached(
            "INSERT INTO bundle_states (agent_key, bundle_hash, bundle_id, stream, sequence,
                 outcome, step, detail, needs_person, steps, updated_at_unix_s)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (agent_key, bundle_hash) DO UPDATE SET
                 bundle_id = excluded.bundle_id,
                 stream = excluded.stream,
                 sequence = excluded.sequence,
                 outcome = excluded.outcome,
                 step = excluded.step,
                 detail = excluded.detail,
                 needs_person = excluded.needs_person,
                 steps = excluded.steps,
                 updated_at_unix_s = excluded.updated_at_unix_s",
        )?
        .execute(params![
            agent_key,
            record.bundle_hash,
            record.bundle_id,
            record.stream,
            i64::try_from(record.sequence).unwrap_or(i64::MAX),
            record.outcome.as_str(),
            step,
            detail,
            record.outcome.needs_person(),
            steps,
            record.decided_at_unix_s,
        ])?;
    Ok(())
}

/// Returns the packages with one row per key, the last one winning as in
/// [`Inventory::normalize`]. An agent sends them sorted and unique, so this rarely copies.
fn normalized_packages(packages: &[Package]) -> Cow<'_, [Package]> {
    let sorted_and_unique = packages.windows(2).all(|pair| {
        (pair[0].ecosystem, &pair[0].name, &pair[0].arch)
            < (pair[1].ecosystem, &pair[1].name, &pair[1].arch)
    });
    if sorted_and_unique {
        return Cow::Borrowed(packages);
    }
    let by_key: BTreeMap<PackageKey, &Package> = packages
        .iter()
        .map(|package| (package.key(), package))
        .collect();
    Cow::Owned(by_key.into_values().cloned().collect())
}

/// Encodes `provides` as the JSON array the `provides` column stores.
fn provides_json(provides: &[String]) -> rusqlite::Result<String> {
    if provides.is_empty() {
        return Ok("[]".to_owned());
    }
    serde_json::to_string(provides)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))
}

fn upsert_package(
    transaction: &Transaction<'_>,
    agent_key: i64,
    package: &Package,
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached(
            "INSERT INTO packages (agent_key, ecosystem, name, arch, version, state, selection, provides)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (agent_key, ecosystem, name, arch) DO UPDATE SET
                 version = excluded.version,
                 state = excluded.state,
                 selection = excluded.selection,
                 provides = excluded.provides",
        )?
        .execute(params![
            agent_key,
            package.ecosystem.as_str(),
            package.name,
            package.arch,
            package.version,
            package.state.as_str(),
            package.selection.as_str(),
            provides_json(&package.provides)?,
        ])?;
    Ok(())
}

fn update_facts(
    transaction: &Transaction<'_>,
    agent_key: i64,
    facts: &HostFacts,
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached(
            "UPDATE agents SET
                 hostname = ?2,
                 os_name = ?3,
                 os_version = ?4,
                 kernel_version = ?5,
                 arch = ?6,
                 boot_time_unix_s = ?7,
                 cpu_count = ?8,
                 memory_total_bytes = ?9
             WHERE agent_key = ?1",
        )?
        .execute(params![
            agent_key,
            facts.hostname,
            facts.os_name,
            facts.os_version,
            facts.kernel_version,
            facts.arch,
            facts.boot_time_unix_s,
            facts.cpu_count,
            facts.memory_total_bytes as i64,
        ])?;
    Ok(())
}

/// Replaces the agent's pending updates. Updates with the same key keep the last one, the same
/// way packages do.
fn replace_pending_updates(
    transaction: &Transaction<'_>,
    agent_key: i64,
    pending_updates: &[PendingUpdate],
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached("DELETE FROM pending_updates WHERE agent_key = ?1")?
        .execute([agent_key])?;
    let by_key: BTreeMap<(&str, &str, &str), &PendingUpdate> = pending_updates
        .iter()
        .map(|update| {
            let key = (
                update.ecosystem.as_str(),
                update.name.as_str(),
                update.arch.as_str(),
            );
            (key, update)
        })
        .collect();
    let mut security_count: i64 = 0;
    for update in by_key.values() {
        transaction
            .prepare_cached(
                "INSERT INTO pending_updates
                     (agent_key, ecosystem, name, arch, installed_version, candidate_version, held, security)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                agent_key,
                update.ecosystem.as_str(),
                update.name,
                update.arch,
                update.installed_version,
                update.candidate_version,
                update.held,
                update.security,
            ])?;
        security_count += i64::from(update.security);
    }
    transaction
        .prepare_cached(
            "UPDATE agents SET pending_update_count = ?2, security_update_count = ?3
             WHERE agent_key = ?1",
        )?
        .execute(params![agent_key, by_key.len() as i64, security_count])?;
    Ok(())
}

fn update_package_lists_time(
    transaction: &Transaction<'_>,
    agent_key: i64,
    updated_unix_s: Option<i64>,
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached("UPDATE agents SET package_lists_updated_unix_s = ?2 WHERE agent_key = ?1")?
        .execute(params![agent_key, updated_unix_s])?;
    Ok(())
}

fn replace_reboot(
    transaction: &Transaction<'_>,
    agent_key: i64,
    reboot: &RebootRequired,
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached("UPDATE agents SET reboot_required = ?2 WHERE agent_key = ?1")?
        .execute(params![agent_key, reboot.required])?;
    transaction
        .prepare_cached("DELETE FROM reboot_packages WHERE agent_key = ?1")?
        .execute([agent_key])?;
    for (position, name) in reboot.packages.iter().enumerate() {
        transaction
            .prepare_cached(
                "INSERT INTO reboot_packages (agent_key, position, name) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![agent_key, position as i64, name])?;
    }
    Ok(())
}

fn replace_warnings(
    transaction: &Transaction<'_>,
    agent_key: i64,
    warnings: &[Warning],
) -> rusqlite::Result<()> {
    transaction
        .prepare_cached("DELETE FROM warnings WHERE agent_key = ?1")?
        .execute([agent_key])?;
    for (position, warning) in warnings.iter().enumerate() {
        transaction
            .prepare_cached(
                "INSERT INTO warnings (agent_key, position, source, message) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![agent_key, position as i64, warning.source, warning.message])?;
    }
    Ok(())
}
