//! The store's schema and its migrations.
//!
//! `schema_version` contains one row: the number of migrations applied. Migration `n` (1-based) turns
//! version `n - 1` into version `n` and runs in its own transaction together with the version bump,
//! so a crash leaves the file at one version or the next, never between. A file whose version is
//! higher than [`MIGRATIONS`]`.len()` was written by a newer build and is rejected, because this
//! build cannot know what the newer tables mean.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::StoreError;

/// The migrations, in order. Never edit or reorder one that has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    V1_FLEET,
    V2_BUNDLES,
    V3_OWNERS,
    V4_SCHEDULES,
    V5_AUDIT,
    V6_TOKENS,
    V7_ROLLOUTS,
    V8_BUNDLE_STATES,
    V9_SCHEDULE_VERSIONS,
];

/// The schema version this build writes and reads.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

const V3_OWNERS: &str = "
-- The team IT assigned the agent to, empty until someone assigns one. Reports never change it.
ALTER TABLE agents ADD COLUMN owner TEXT NOT NULL DEFAULT '';
";

const V6_TOKENS: &str = "
-- API tokens. Only the SHA-256 of each token is kept, so the file cannot give a token away.
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    -- SHA-256 of the whole token text, in lowercase hex.
    token_hash TEXT NOT NULL UNIQUE,
    created_at_unix_s INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at_unix_s INTEGER
);
";

const V5_AUDIT: &str = "
-- The hash-chained audit log; see server/src/audit. seq runs 1, 2, 3, ... without gaps.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at_unix_s INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- A JSON object in canonical form: no whitespace, keys sorted.
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- These stop the server's own code from changing history. Anyone who can write the file can drop
-- them; the hash chain is what shows such edits.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
";

const V9_SCHEDULE_VERSIONS: &str = "
-- The version of the window schedule that governs each agent, as its reports give it.
ALTER TABLE agents ADD COLUMN schedule_version INTEGER;
";

const V8_BUNDLE_STATES: &str = "
-- The state of every bundle each agent ran or decided on, one row per agent and bundle hash, kept
-- after the agent's own list of recent records has moved on. outcome is the BundleOutcome's
-- kebab-case name, step the failed step where the outcome names one, steps a JSON array of the
-- protocol's StepRecord (index, kind, outcome, times, detail).
CREATE TABLE bundle_states (
    agent_key INTEGER NOT NULL REFERENCES agents (agent_key),
    bundle_hash TEXT NOT NULL,
    bundle_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    step INTEGER,
    detail TEXT NOT NULL,
    needs_person INTEGER NOT NULL,
    steps TEXT NOT NULL,
    updated_at_unix_s INTEGER NOT NULL,
    PRIMARY KEY (agent_key, bundle_hash)
);
CREATE INDEX bundle_states_needing_a_person ON bundle_states (needs_person) WHERE needs_person = 1;
";

const V2_BUNDLES: &str = "
-- What each agent reports about trust: its configured tier, its pinned trust root version, and
-- its latest bundle decisions as a JSON array of the protocol's BundleRecord.
ALTER TABLE agents ADD COLUMN tier TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN trust_root_version INTEGER;
ALTER TABLE agents ADD COLUMN bundles TEXT NOT NULL DEFAULT '[]';

-- Every trust root version the server was given, byte for byte as the root key holders signed it.
CREATE TABLE trust_roots (
    version INTEGER PRIMARY KEY,
    file BLOB NOT NULL,
    published_at_unix_s INTEGER NOT NULL
);

-- Published bundle files, byte for byte as security signed them.
CREATE TABLE published_bundles (
    stream TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    bundle_id TEXT NOT NULL,
    bundle_hash TEXT NOT NULL,
    file BLOB NOT NULL,
    -- A JSON array of the signers' key ids.
    signers TEXT NOT NULL,
    publisher TEXT NOT NULL,
    published_at_unix_s INTEGER NOT NULL,
    PRIMARY KEY (stream, sequence)
);
";

const V4_SCHEDULES: &str = "
-- Every published maintenance-window schedule version, byte for byte as the OT key holders signed
-- it. The row with the highest version of a (tier, site) is that target's current schedule.
CREATE TABLE schedules (
    tier TEXT NOT NULL,
    -- NULL for the schedule of the whole tier.
    site TEXT,
    version INTEGER NOT NULL,
    -- SHA-256 of the signed document bytes, in lowercase hex.
    schedule_hash TEXT NOT NULL,
    file BLOB NOT NULL,
    -- A JSON array of the signers' key ids.
    signers TEXT NOT NULL,
    publisher TEXT NOT NULL,
    published_at_unix_s INTEGER NOT NULL
);

-- Site names are never empty, so '' stands for the whole tier without colliding with a site.
CREATE UNIQUE INDEX schedules_by_target ON schedules (tier, coalesce(site, ''), version);
";

const V7_ROLLOUTS: &str = "
-- Rollouts. The driver keeps them in memory and writes each one whole after every change, so
-- the row holds the settings, waves and every target's state as one JSON document.
CREATE TABLE rollouts (
    rollout_id INTEGER PRIMARY KEY,
    bundle_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at_unix_s INTEGER NOT NULL,
    updated_at_unix_s INTEGER NOT NULL,
    state TEXT NOT NULL
);

-- Each agent's desired state, with a version that grows on every change, and the version the
-- agent's reports last showed in full.
CREATE TABLE delivery_state (
    agent_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    -- JSON arrays of bundle hashes.
    bundles TEXT NOT NULL,
    rollbacks TEXT NOT NULL,
    trust_root_version INTEGER,
    -- The whole tier's current schedule version, and the governing version the agent reported.
    schedule_version INTEGER,
    acknowledged_version INTEGER NOT NULL,
    acknowledged_trust_root_version INTEGER,
    acknowledged_schedule_version INTEGER,
    updated_at_unix_s INTEGER NOT NULL
);
";

const V1_FLEET: &str = "
-- Child tables refer to an agent by its integer agent_key rather than its text agent id, which
-- keeps their keys short: an agent has hundreds to thousands of package rows.
CREATE TABLE agents (
    agent_key INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL UNIQUE,
    first_seen_unix_s INTEGER NOT NULL,
    last_seen_unix_s INTEGER NOT NULL,

    -- The last applied report. A delta applies only on top of exactly this (boot id, seq).
    applied_boot_id BLOB,
    applied_seq INTEGER,
    last_report_unix_s INTEGER,

    hostname TEXT NOT NULL DEFAULT '',
    os_name TEXT NOT NULL DEFAULT '',
    os_version TEXT NOT NULL DEFAULT '',
    kernel_version TEXT NOT NULL DEFAULT '',
    arch TEXT NOT NULL DEFAULT '',
    boot_time_unix_s INTEGER,
    cpu_count INTEGER NOT NULL DEFAULT 0,
    memory_total_bytes INTEGER NOT NULL DEFAULT 0,
    package_lists_updated_unix_s INTEGER,
    reboot_required INTEGER NOT NULL DEFAULT 0,

    -- Kept up to date on every write, so the fleet list never counts package rows.
    package_count INTEGER NOT NULL DEFAULT 0,
    broken_package_count INTEGER NOT NULL DEFAULT 0,
    pending_update_count INTEGER NOT NULL DEFAULT 0,
    security_update_count INTEGER NOT NULL DEFAULT 0,

    -- The newest status, by the agent's clock and then by arrival.
    online INTEGER NOT NULL DEFAULT 0,
    agent_version TEXT,
    status_at_unix_s INTEGER,

    reports_received INTEGER NOT NULL DEFAULT 0,
    duplicate_reports INTEGER NOT NULL DEFAULT 0,
    outbox_dropped INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX agents_by_hostname ON agents (hostname, agent_id);

CREATE TABLE packages (
    agent_key INTEGER NOT NULL REFERENCES agents (agent_key) ON DELETE CASCADE,
    ecosystem TEXT NOT NULL,
    name TEXT NOT NULL,
    arch TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    selection TEXT NOT NULL,
    -- A JSON array of strings.
    provides TEXT NOT NULL,
    PRIMARY KEY (agent_key, ecosystem, name, arch)
) WITHOUT ROWID;

CREATE TABLE pending_updates (
    agent_key INTEGER NOT NULL REFERENCES agents (agent_key) ON DELETE CASCADE,
    ecosystem TEXT NOT NULL,
    name TEXT NOT NULL,
    arch TEXT NOT NULL,
    installed_version TEXT NOT NULL,
    candidate_version TEXT NOT NULL,
    held INTEGER NOT NULL,
    security INTEGER NOT NULL,
    PRIMARY KEY (agent_key, ecosystem, name, arch)
) WITHOUT ROWID;

CREATE TABLE reboot_packages (
    agent_key INTEGER NOT NULL REFERENCES agents (agent_key) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (agent_key, position)
) WITHOUT ROWID;

CREATE TABLE warnings (
    agent_key INTEGER NOT NULL REFERENCES agents (agent_key) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (agent_key, position)
) WITHOUT ROWID;

-- Every report received, for de-duplication on (agent_id, boot_id, seq).
CREATE TABLE reports_seen (
    agent_key INTEGER NOT NULL REFERENCES agents (agent_key) ON DELETE CASCADE,
    boot_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    received_at_unix_s INTEGER NOT NULL,
    PRIMARY KEY (agent_key, boot_id, seq)
) WITHOUT ROWID;
";

/// Sets the connection options every connection to the store uses.
pub fn configure(connection: &Connection) -> rusqlite::Result<()> {
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

/// Reads the schema version, or `None` when the file has no `schema_version` table yet.
pub fn read_version(connection: &Connection) -> rusqlite::Result<Option<u32>> {
    let has_table: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(None);
    }
    connection
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .optional()
}

/// Rejects a store whose schema is not [`CURRENT_VERSION`]. Readers call this because they never
/// migrate.
pub fn check_current(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let version = read_version(connection).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    match version {
        Some(version) if version == CURRENT_VERSION => Ok(()),
        Some(version) if version > CURRENT_VERSION => Err(newer_schema(path, version)),
        Some(version) => Err(StoreError::Schema {
            path: path.to_owned(),
            reason: format!(
                "its schema version {version} is older than version {CURRENT_VERSION} of this \
                 build; start tidegate-server on it once to migrate it"
            ),
        }),
        None => Err(StoreError::Schema {
            path: path.to_owned(),
            reason: "it has no schema_version table; start tidegate-server on it once to create \
                     the schema"
                .to_owned(),
        }),
    }
}

/// Runs every migration the file has not had yet, each in its own transaction.
///
/// Each step reads the version inside an immediate (write-locked) transaction, so two processes
/// that open the same new file at once cannot both run the same migration.
pub fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let migrate_error = |version: u32| {
        move |source| StoreError::Migrate {
            path: path.to_owned(),
            version,
            source,
        }
    };

    connection
        .execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(migrate_error(1))?;
    loop {
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(migrate_error(1))?;
        let found = read_version(&transaction)
            .map_err(migrate_error(1))?
            .unwrap_or(0);
        if found > CURRENT_VERSION {
            return Err(newer_schema(path, found));
        }
        if found == CURRENT_VERSION {
            return Ok(());
        }

        let version = found + 1;
        transaction
            .execute_batch(MIGRATIONS[found as usize])
            .map_err(migrate_error(version))?;
        transaction
            .execute("DELETE FROM schema_version", [])
            .map_err(migrate_error(version))?;
        transaction
            .execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [version],
            )
            .map_err(migrate_error(version))?;
        transaction.commit().map_err(migrate_error(version))?;
        tracing::info!(path = %path.display(), version, "migrated the store schema");
    }
}

fn newer_schema(path: &Path, version: u32) -> StoreError {
    StoreError::Schema {
        path: path.to_owned(),
        reason: format!(
            "its schema version {version} is newer than version {CURRENT_VERSION} of this build; \
             run a tidegate-server at least as new as the one that last wrote it"
        ),
    }
}
