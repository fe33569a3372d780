//! Queries of the read side: the fleet list and one agent's detail.

use rusqlite::{Connection, OptionalExtension, Row};

use super::{AgentDetail, AgentSummary, BundleStateRow, PackageRow, PendingUpdateRow, WarningRow};

const SUMMARY_COLUMNS: &str = "
    agent_id, hostname, os_name, os_version, kernel_version, arch, cpu_count, memory_total_bytes,
    online, agent_version, first_seen_unix_s, last_seen_unix_s, last_report_unix_s,
    boot_time_unix_s, package_count, broken_package_count, pending_update_count,
    security_update_count, reboot_required, package_lists_updated_unix_s, reports_received,
    duplicate_reports, outbox_dropped, tier, trust_root_version, owner, schedule_version,
    (SELECT count(*) FROM bundle_states
     WHERE bundle_states.agent_key = agents.agent_key AND outcome = 'waiting'),
    (SELECT count(*) FROM bundle_states
     WHERE bundle_states.agent_key = agents.agent_key AND needs_person = 1)";

pub(super) fn fleet(connection: &Connection) -> rusqlite::Result<Vec<AgentSummary>> {
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM agents ORDER BY hostname, agent_id");
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map([], summary_from_row)?;
    rows.collect()
}

/// Reads one agent inside one read transaction, so the summary and the rows come from the same
/// committed batch.
pub(super) fn agent(
    connection: &Connection,
    agent_id: &str,
) -> rusqlite::Result<Option<AgentDetail>> {
    let snapshot = connection.unchecked_transaction()?;
    let detail = agent_in_snapshot(&snapshot, agent_id)?;
    snapshot.finish()?;
    Ok(detail)
}

fn agent_in_snapshot(
    connection: &Connection,
    agent_id: &str,
) -> rusqlite::Result<Option<AgentDetail>> {
    let sql = format!("SELECT agent_key, {SUMMARY_COLUMNS} FROM agents WHERE agent_id = ?1");
    let Some((agent_key, summary)) = connection
        .prepare_cached(&sql)?
        .query_row([agent_id], |row| {
            let agent_key: i64 = row.get(0)?;
            Ok((agent_key, summary_from_row_at(row, 1)?))
        })
        .optional()?
    else {
        return Ok(None);
    };

    let packages = connection
        .prepare_cached(
            "SELECT ecosystem, name, arch, version, state, selection, provides FROM packages
             WHERE agent_key = ?1 ORDER BY ecosystem, name, arch",
        )?
        .query_map([agent_key], |row| {
            let provides: String = row.get(6)?;
            let provides = serde_json::from_str(&provides).map_err(|error| {
                rusqlite::Error::FromSqlConversionFailure(
                    6,
                    rusqlite::types::Type::Text,
                    Box::new(error),
                )
            })?;
            Ok(PackageRow {
                ecosystem: row.get(0)?,
                name: row.get(1)?,
                arch: row.get(2)?,
                version: row.get(3)?,
                state: row.get(4)?,
                selection: row.get(5)?,
                provides,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let pending_updates = connection
        .prepare_cached(
            "SELECT ecosystem, name, arch, installed_version, candidate_version, held, security
             FROM pending_updates WHERE agent_key = ?1 ORDER BY ecosystem, name, arch",
        )?
        .query_map([agent_key], |row| {
            Ok(PendingUpdateRow {
                ecosystem: row.get(0)?,
                name: row.get(1)?,
                arch: row.get(2)?,
                installed_version: row.get(3)?,
                candidate_version: row.get(4)?,
                held: row.get(5)?,
                security: row.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let reboot_packages = connection
        .prepare_cached("SELECT name FROM reboot_packages WHERE agent_key = ?1 ORDER BY position")?
        .query_map([agent_key], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;

    let warnings = connection
        .prepare_cached(
            "SELECT source, message FROM warnings WHERE agent_key = ?1 ORDER BY position",
        )?
        .query_map([agent_key], |row| {
            Ok(WarningRow {
                source: row.get(0)?,
                message: row.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let bundles_json: String = connection
        .prepare_cached("SELECT bundles FROM agents WHERE agent_key = ?1")?
        .query_row([agent_key], |row| row.get(0))?;
    // The column holds what this build wrote; a value it cannot read shows as no bundles rather
    // than hiding the rest of the agent.
    let bundles = serde_json::from_str(&bundles_json).unwrap_or_else(|error| {
        tracing::warn!(agent.key = agent_key, %error, "invalid bundle records in the store");
        Vec::new()
    });

    let bundle_states = connection
        .prepare_cached(
            "SELECT bundle_hash, bundle_id, stream, sequence, outcome, step, detail, needs_person,
                    steps, updated_at_unix_s
             FROM bundle_states WHERE agent_key = ?1
             ORDER BY updated_at_unix_s DESC, bundle_hash",
        )?
        .query_map([agent_key], |row| {
            let steps_json: String = row.get(8)?;
            Ok(BundleStateRow {
                bundle_hash: row.get(0)?,
                bundle_id: row.get(1)?,
                stream: row.get(2)?,
                sequence: row.get::<_, i64>(3)?.max(0) as u64,
                outcome: row.get(4)?,
                step: row.get(5)?,
                detail: row.get(6)?,
                needs_person: row.get(7)?,
                steps: serde_json::from_str(&steps_json).unwrap_or_default(),
                updated_at_unix_s: row.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    Ok(Some(AgentDetail {
        summary,
        packages,
        pending_updates,
        reboot_packages,
        warnings,
        bundles,
        bundle_states,
    }))
}

fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<AgentSummary> {
    summary_from_row_at(row, 0)
}

/// Reads the [`SUMMARY_COLUMNS`] of a row in which they start at column `first`.
fn summary_from_row_at(row: &Row<'_>, first: usize) -> rusqlite::Result<AgentSummary> {
    let column = |index: usize| first + index;
    let last_report_unix_s: Option<i64> = row.get(column(12))?;
    let boot_time_unix_s: Option<i64> = row.get(column(13))?;
    let uptime_seconds = match (last_report_unix_s, boot_time_unix_s) {
        (Some(collected_at), Some(boot_time)) => Some(collected_at.saturating_sub(boot_time)),
        _ => None,
    };
    Ok(AgentSummary {
        agent_id: row.get(column(0))?,
        hostname: row.get(column(1))?,
        os_name: row.get(column(2))?,
        os_version: row.get(column(3))?,
        kernel_version: row.get(column(4))?,
        arch: row.get(column(5))?,
        cpu_count: row.get(column(6))?,
        memory_total_bytes: row.get::<_, i64>(column(7))? as u64,
        online: row.get(column(8))?,
        agent_version: row.get(column(9))?,
        first_seen_unix_s: row.get(column(10))?,
        last_seen_unix_s: row.get(column(11))?,
        last_report_unix_s,
        uptime_seconds,
        package_count: row.get::<_, i64>(column(14))? as u64,
        broken_package_count: row.get::<_, i64>(column(15))? as u64,
        pending_updates: row.get::<_, i64>(column(16))? as u64,
        security_updates: row.get::<_, i64>(column(17))? as u64,
        reboot_required: row.get(column(18))?,
        package_lists_updated_unix_s: row.get(column(19))?,
        reports_received: row.get::<_, i64>(column(20))? as u64,
        duplicate_reports: row.get::<_, i64>(column(21))? as u64,
        outbox_dropped: row.get::<_, i64>(column(22))? as u64,
        tier: row.get(column(23))?,
        trust_root_version: row
            .get::<_, Option<i64>>(column(24))?
            .map(|version| version as u64),
        owner: row.get(column(25))?,
        bundles_waiting: row.get::<_, i64>(column(27))? as u64,
        bundles_needing_person: row.get::<_, i64>(column(28))? as u64,
        schedule_version: row
            .get::<_, Option<i64>>(column(26))?
            .map(|version| version as u64),
    })
}
