//! The server's fleet store: the last known state of every agent, in one SQLite file.
//!
//! [`Store`] is the write side. Each process opens one and uses it from one thread (the ingest
//! thread), and it writes each batch of incoming reports and statuses in one transaction.
//! [`StoreReader`] is the read side for the HTTP handlers: read-only connections to the same file,
//! which WAL mode lets run beside the writer. This module never talks to the broker and never sends orders: when a delta
//! cannot be applied it returns [`IngestOutcome::NeedsResync`] and the caller asks the agent for a
//! full report.

pub mod owners;
pub mod publications;
mod read;
pub mod schedules;
mod schema;
mod write;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use serde::{Deserialize, Serialize};
use tidegate_protocol::{AgentId, Report, Status};

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

/// A failed store operation, with the file or agent it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the store {path} is unusable: {reason}")]
    Schema { path: PathBuf, reason: String },
    #[error("failed to migrate the store {path} to schema version {version}: {source}")]
    Migrate {
        path: PathBuf,
        version: u32,
        source: rusqlite::Error,
    },
    /// Starting or committing the batch transaction failed, so none of the batch is stored.
    #[error("failed to ingest a batch of {count} messages into the store {path}: {source}")]
    IngestBatch {
        path: PathBuf,
        count: usize,
        source: rusqlite::Error,
    },
    /// One message of a batch failed, so the whole batch was rolled back.
    #[error(
        "failed to ingest the {kind} of agent {agent_id} into the store {path}, so none of its \
         batch is stored: {source}"
    )]
    Ingest {
        path: PathBuf,
        kind: MessageKind,
        agent_id: AgentId,
        source: rusqlite::Error,
    },
    #[error("failed to prune the report de-duplication table of the store {path}: {source}")]
    Prune {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("failed to read the fleet from the store {path}: {source}")]
    ReadFleet {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("failed to read agent {agent_id} from the store {path}: {source}")]
    ReadAgent {
        path: PathBuf,
        agent_id: String,
        source: rusqlite::Error,
    },
}

/// The kind of message a [`StoreError::Ingest`] concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Report,
    Status,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Report => "report",
            Self::Status => "status",
        })
    }
}

/// One message from an agent, with the time the server received it.
// A report is several hundred bytes and a status far less, but boxing the report would only add
// an allocation per message: batches are short-lived and mostly reports.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Incoming {
    Report {
        report: Report,
        received_at_unix_s: i64,
    },
    Status {
        status: Status,
        received_at_unix_s: i64,
    },
}

/// The result of [`Store::ingest`] for one [`Incoming`] message.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    /// A new report, applied to the agent's inventory.
    Stored,
    /// A report whose `(agent_id, boot_id, seq)` was seen before. Only the agent's duplicate
    /// counter changed.
    Duplicate,
    /// A delta whose base is not the last report applied for this agent. The report is recorded as
    /// received, but its content is not applied: the caller should order the agent to resync.
    NeedsResync { agent_id: AgentId, reason: String },
    /// A status. It replaces the stored status unless that one is newer by the agent's clock
    /// (`at_unix_s`). An older status only moves the agent's `last_seen_unix_s` forward.
    StatusRecorded,
}

/// The write side of the store. Use one per process: SQLite lets one writer in at a time, and the
/// batch transactions of two writers would only wait on each other.
pub struct Store {
    path: PathBuf,
    connection: Connection,
}

/// The writer's page cache, as SQLite's `cache_size` pragma reads it: a negative number is KiB,
/// so this is 64 MiB. Deltas of many agents touch pages all over the package table, and a cache
/// larger than SQLite's default of 2 MiB keeps more of those pages in memory between batches.
const WRITER_CACHE_SIZE: i64 = -64 * 1024;

impl Store {
    /// Opens or creates the store at `path`, switches it to WAL mode and migrates its schema to
    /// the latest version this build supports. A store from a newer build is rejected.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut connection = Connection::open(path).map_err(open_error)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        schema::configure(&connection).map_err(open_error)?;
        connection
            .pragma_update(None, "cache_size", WRITER_CACHE_SIZE)
            .map_err(open_error)?;
        schema::migrate(&mut connection, path)?;
        Ok(Store {
            path: path.to_owned(),
            connection,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies a batch of messages in one transaction and returns one outcome per message, in
    /// order. When any message fails, the whole batch is rolled back and nothing of it is stored.
    ///
    /// NOTE: a full report replaces the agent's inventory even when it is older than the last
    /// applied report (a late redelivery). The agent's next delta then fails its base check and
    /// the agent resyncs, but until its new full report arrives the store shows the older state.
    pub fn ingest(&mut self, batch: Vec<Incoming>) -> Result<Vec<IngestOutcome>, StoreError> {
        let count = batch.len();
        let batch_error = |source| StoreError::IngestBatch {
            path: self.path.clone(),
            count,
            source,
        };
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(batch_error)?;

        let mut outcomes = Vec::with_capacity(count);
        for incoming in &batch {
            let outcome = match incoming {
                Incoming::Report {
                    report,
                    received_at_unix_s,
                } => write::ingest_report(&transaction, report, *received_at_unix_s).map_err(
                    |source| StoreError::Ingest {
                        path: self.path.clone(),
                        kind: MessageKind::Report,
                        agent_id: report.agent_id.clone(),
                        source,
                    },
                )?,
                Incoming::Status {
                    status,
                    received_at_unix_s,
                } => write::ingest_status(&transaction, status, *received_at_unix_s).map_err(
                    |source| StoreError::Ingest {
                        path: self.path.clone(),
                        kind: MessageKind::Status,
                        agent_id: status.agent_id.clone(),
                        source,
                    },
                )?,
            };
            outcomes.push(outcome);
        }

        transaction.commit().map_err(batch_error)?;
        Ok(outcomes)
    }

    /// Deletes the de-duplication records of reports received before `received_before_unix_s`
    /// and returns how many it deleted. A report redelivered after its record is gone counts as
    /// new, so keep records for longer than any agent's outbox can hold a report.
    pub fn prune_seen_reports(&mut self, received_before_unix_s: i64) -> Result<usize, StoreError> {
        self.connection
            .execute(
                "DELETE FROM reports_seen WHERE received_at_unix_s < ?1",
                [received_before_unix_s],
            )
            .map_err(|source| StoreError::Prune {
                path: self.path.clone(),
                source,
            })
    }
}

/// One agent's facts, state and counters, as the fleet list shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub agent_id: String,
    pub hostname: String,
    pub os_name: String,
    pub os_version: String,
    pub kernel_version: String,
    pub arch: String,
    pub cpu_count: u32,
    pub memory_total_bytes: u64,
    pub online: bool,
    /// The version from the agent's last status, `None` before its first status.
    pub agent_version: Option<String>,
    pub first_seen_unix_s: i64,
    pub last_seen_unix_s: i64,
    /// The `collected_at` of the last applied report, `None` before the first one.
    pub last_report_unix_s: Option<i64>,
    /// The last applied report's `collected_at` minus the host's boot time.
    pub uptime_seconds: Option<i64>,
    /// Package rows whose state counts as installed.
    pub package_count: u64,
    pub broken_package_count: u64,
    pub pending_updates: u64,
    pub security_updates: u64,
    pub reboot_required: bool,
    pub package_lists_updated_unix_s: Option<i64>,
    pub reports_received: u64,
    pub duplicate_reports: u64,
    pub outbox_dropped: u64,
    /// The tier the agent is configured for, empty until its first report arrives.
    #[serde(default)]
    pub tier: String,
    /// The version of the trust root the agent has pinned.
    #[serde(default)]
    pub trust_root_version: Option<u64>,
    /// The owner team IT assigned, empty until one is assigned.
    #[serde(default)]
    pub owner: String,
    /// Bundles whose stored state is `waiting`: verified and queued for a maintenance window.
    #[serde(default)]
    pub bundles_waiting: u64,
    /// Bundles whose revert or rollback failed, so a person must look at the host.
    #[serde(default)]
    pub bundles_needing_person: u64,
    /// The version of the window schedule that governs the agent, as it last reported it.
    #[serde(default)]
    pub schedule_version: Option<u64>,
}

/// One package row of an agent's inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRow {
    pub ecosystem: String,
    pub name: String,
    pub arch: String,
    pub version: String,
    pub state: String,
    pub selection: String,
    pub provides: Vec<String>,
}

/// One pending update of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingUpdateRow {
    pub ecosystem: String,
    pub name: String,
    pub arch: String,
    pub installed_version: String,
    pub candidate_version: String,
    pub held: bool,
    pub security: bool,
}

/// One warning from an agent's collectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarningRow {
    pub source: String,
    pub message: String,
}

/// The store's full record of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDetail {
    pub summary: AgentSummary,
    pub packages: Vec<PackageRow>,
    pub pending_updates: Vec<PendingUpdateRow>,
    pub reboot_packages: Vec<String>,
    pub warnings: Vec<WarningRow>,
    /// The agent's latest bundle decisions, oldest first.
    #[serde(default)]
    pub bundles: Vec<tidegate_protocol::BundleRecord>,
    /// The stored state of every bundle the agent reported, newest first, also those that have
    /// left the agent's own list of recent records.
    #[serde(default)]
    pub bundle_states: Vec<BundleStateRow>,
}

/// One agent's stored state of one bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleStateRow {
    pub bundle_hash: String,
    pub bundle_id: String,
    pub stream: String,
    pub sequence: u64,
    /// The outcome's kebab-case name, such as `applied` or `revert-failed`.
    pub outcome: String,
    /// The step the outcome names, for failures.
    pub step: Option<u32>,
    pub detail: String,
    /// A revert or rollback failed: the host is in neither state.
    pub needs_person: bool,
    pub steps: Vec<tidegate_protocol::StepRecord>,
    pub updated_at_unix_s: i64,
}

/// The read side of the store, shared by the HTTP handlers. Clones share a pool of read-only
/// connections, so concurrent requests each get their own connection. Every call blocks on SQLite:
/// call it from a blocking thread, not from an async task.
#[derive(Clone)]
pub struct StoreReader {
    inner: Arc<ReaderPool>,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Idle read connections kept open for reuse. Beyond this, a burst of requests opens extra
/// connections and closes them afterwards.
const MAX_IDLE_READERS: usize = 8;

impl StoreReader {
    /// Opens read-only access to an existing store, whose schema must be the latest version this
    /// build supports (open it with [`Store::open`] first to create or migrate it).
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
        let connection = open_read_only(path)?;
        schema::check_current(&connection, path)?;
        Ok(StoreReader {
            inner: Arc::new(ReaderPool {
                path: path.to_owned(),
                idle: Mutex::new(vec![connection]),
            }),
        })
    }

    /// Returns every agent, sorted by hostname and then agent id.
    pub fn fleet(&self) -> Result<Vec<AgentSummary>, StoreError> {
        self.with_connection(|connection| {
            read::fleet(connection).map_err(|source| StoreError::ReadFleet {
                path: self.inner.path.clone(),
                source,
            })
        })
    }

    /// Returns one agent by its exact id, or `None` when the store has no such agent.
    pub fn agent(&self, id: &str) -> Result<Option<AgentDetail>, StoreError> {
        self.with_connection(|connection| {
            read::agent(connection, id).map_err(|source| StoreError::ReadAgent {
                path: self.inner.path.clone(),
                agent_id: id.to_owned(),
                source,
            })
        })
    }

    fn with_connection<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => open_read_only(&self.inner.path)?,
        };

        let result = read(&connection);

        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        result
    }
}

fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let open_error = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(open_error)?;
    schema::configure(&connection).map_err(open_error)?;
    Ok(connection)
}
