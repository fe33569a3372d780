//! The rollout driver's access to the store file: it writes the `rollouts` and `delivery_state`
//! tables, and reads agents, published bundles and trust roots. It has its own connection, like
//! publication, and never writes the tables ingest owns.
//!
//! Every call blocks on SQLite: call it from a blocking thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tidegate_protocol::BundleRecord;

use super::delivery::DesiredState;
use super::machine::{BundleRef, Rollout};

#[derive(Debug, thiserror::Error)]
pub enum RolloutStoreError {
    #[error("cannot open the store {path} for rollouts: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot read {what} from the store: {source}")]
    Read {
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("cannot write {what} to the store: {source}")]
    Write {
        what: String,
        source: rusqlite::Error,
    },
    #[error("stored rollout {rollout_id} is not valid JSON of this version: {source}")]
    Decode {
        rollout_id: i64,
        source: serde_json::Error,
    },
}

/// The columns of one agent that the driver reads.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    pub agent_id: String,
    pub tier: String,
    pub os_name: String,
    pub online: bool,
    /// Whether a report of the agent was applied; agents without one have no tier yet.
    pub has_reported: bool,
    pub trust_root_version: Option<u64>,
    /// The version of the schedule that governs the agent, as it last reported it.
    pub schedule_version: Option<u64>,
    pub bundles: Vec<BundleRecord>,
}

/// A published bundle as a rollout starts from it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedBundle {
    pub bundle: BundleRef,
    pub file: Vec<u8>,
}

/// A cheap, cloneable handle; the connection is used by one call at a time.
#[derive(Clone)]
pub struct RolloutStore {
    connection: Arc<Mutex<Connection>>,
}

fn read_error(what: &'static str) -> impl Fn(rusqlite::Error) -> RolloutStoreError {
    move |source| RolloutStoreError::Read { what, source }
}

impl RolloutStore {
    /// Opens the store file, which [`crate::store::Store::open`] has migrated.
    pub fn open(path: &Path) -> Result<Self, RolloutStoreError> {
        let open_error = |source| RolloutStoreError::Open {
            path: path.to_owned(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads every stored rollout, oldest first.
    pub fn rollouts(&self) -> Result<Vec<Rollout>, RolloutStoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached("SELECT rollout_id, state FROM rollouts ORDER BY rollout_id")
            .map_err(read_error("rollouts"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(read_error("rollouts"))?;
        let mut rollouts = Vec::new();
        for row in rows {
            let (rollout_id, state) = row.map_err(read_error("rollouts"))?;
            let rollout = serde_json::from_str(&state)
                .map_err(|source| RolloutStoreError::Decode { rollout_id, source })?;
            rollouts.push(rollout);
        }
        Ok(rollouts)
    }

    /// Writes one rollout whole, replacing its earlier row.
    pub fn save_rollout(
        &self,
        rollout: &Rollout,
        now_unix_s: i64,
    ) -> Result<(), RolloutStoreError> {
        let state = serde_json::to_string(rollout).expect("a rollout always encodes as JSON");
        self.connection()
            .prepare_cached(
                "INSERT INTO rollouts
                 (rollout_id, bundle_hash, status, created_at_unix_s, updated_at_unix_s, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (rollout_id) DO UPDATE SET
                 status = excluded.status, updated_at_unix_s = excluded.updated_at_unix_s,
                 state = excluded.state",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    rollout.id as i64,
                    rollout.bundle.bundle_hash,
                    rollout.status.name(),
                    rollout.created_at_unix_s,
                    now_unix_s,
                    state
                ])
            })
            .map_err(|source| RolloutStoreError::Write {
                what: format!("rollout {}", rollout.id),
                source,
            })?;
        Ok(())
    }

    /// Reads every agent's delivery state.
    pub fn delivery_states(&self) -> Result<BTreeMap<String, DesiredState>, RolloutStoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached(
                "SELECT agent_id, version, bundles, rollbacks, trust_root_version,
                 schedule_version, acknowledged_version, acknowledged_trust_root_version,
                 acknowledged_schedule_version FROM delivery_state",
            )
            .map_err(read_error("delivery states"))?;
        let rows = statement
            .query_map([], |row| {
                let hashes = |index: usize| -> rusqlite::Result<Vec<String>> {
                    let text: String = row.get(index)?;
                    serde_json::from_str(&text).map_err(|error| {
                        rusqlite::Error::FromSqlConversionFailure(
                            index,
                            rusqlite::types::Type::Text,
                            Box::new(error),
                        )
                    })
                };
                let optional = |index: usize| -> rusqlite::Result<Option<u64>> {
                    Ok(row.get::<_, Option<i64>>(index)?.map(|value| value as u64))
                };
                Ok((
                    row.get::<_, String>(0)?,
                    DesiredState {
                        version: row.get::<_, i64>(1)? as u64,
                        bundles: hashes(2)?,
                        rollbacks: hashes(3)?,
                        trust_root_version: optional(4)?,
                        schedule_version: optional(5)?,
                        acknowledged_version: row.get::<_, i64>(6)? as u64,
                        acknowledged_trust_root_version: optional(7)?,
                        acknowledged_schedule_version: optional(8)?,
                    },
                ))
            })
            .map_err(read_error("delivery states"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(read_error("delivery states"))
    }

    /// Writes agents' delivery states in one transaction.
    pub fn save_delivery_states(
        &self,
        states: &[(String, DesiredState)],
        now_unix_s: i64,
    ) -> Result<(), RolloutStoreError> {
        let mut connection = self.connection();
        let write_error = |source| RolloutStoreError::Write {
            what: format!("the delivery states of {} agents", states.len()),
            source,
        };
        let transaction = connection.transaction().map_err(write_error)?;
        for (agent_id, state) in states {
            save_delivery_state(&transaction, agent_id, state, now_unix_s)?;
        }
        transaction.commit().map_err(write_error)
    }

    /// Reads every agent's tier, OS, online state, trust root version and bundle records. A bundle list that does not decode counts
    /// as empty, because ingest wrote it from a decoded report.
    pub fn agents(&self) -> Result<Vec<AgentView>, RolloutStoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached(&format!("{AGENT_VIEW_QUERY} ORDER BY agent_id"))
            .map_err(read_error("agents"))?;
        let rows = statement
            .query_map([], agent_view)
            .map_err(read_error("agents"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(read_error("agents"))
    }

    /// Reads the agents with these ids, in one read transaction; unknown ids are skipped.
    pub fn agents_by_id(&self, agent_ids: &[String]) -> Result<Vec<AgentView>, RolloutStoreError> {
        let connection = self.connection();
        let snapshot = connection
            .unchecked_transaction()
            .map_err(read_error("agents"))?;
        let mut statement = snapshot
            .prepare_cached(&format!("{AGENT_VIEW_QUERY} WHERE agent_id = ?1"))
            .map_err(read_error("agents"))?;
        let mut agents = Vec::with_capacity(agent_ids.len());
        for agent_id in agent_ids {
            if let Some(agent) = statement
                .query_row([agent_id], agent_view)
                .optional()
                .map_err(read_error("agents"))?
            {
                agents.push(agent);
            }
        }
        drop(statement);
        snapshot.finish().map_err(read_error("agents"))?;
        Ok(agents)
    }

    /// The published bundle with this id (the highest sequence, should several share it), or
    /// the one at `sequence` of a stream.
    pub fn published_bundle(
        &self,
        selector: &BundleSelector,
    ) -> Result<Option<PublishedBundle>, RolloutStoreError> {
        let connection = self.connection();
        let row = |row: &rusqlite::Row<'_>| {
            Ok(PublishedBundle {
                bundle: BundleRef {
                    stream: row.get(0)?,
                    sequence: row.get::<_, i64>(1)? as u64,
                    bundle_id: row.get(2)?,
                    bundle_hash: row.get(3)?,
                },
                file: row.get(4)?,
            })
        };
        let found = match selector {
            BundleSelector::Id(bundle_id) => connection
                .prepare_cached(
                    "SELECT stream, sequence, bundle_id, bundle_hash, file FROM published_bundles
                     WHERE bundle_id = ?1 ORDER BY sequence DESC LIMIT 1",
                )
                .and_then(|mut statement| statement.query_row([bundle_id], row).optional()),
            BundleSelector::StreamSequence { stream, sequence } => connection
                .prepare_cached(
                    "SELECT stream, sequence, bundle_id, bundle_hash, file FROM published_bundles
                     WHERE stream = ?1 AND sequence = ?2",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row(params![stream, *sequence as i64], row)
                        .optional()
                }),
        };
        found.map_err(read_error("published bundles"))
    }

    /// Reads the file of the published bundle with this hash.
    pub fn bundle_file(&self, bundle_hash: &str) -> Result<Option<Vec<u8>>, RolloutStoreError> {
        self.connection()
            .prepare_cached("SELECT file FROM published_bundles WHERE bundle_hash = ?1 LIMIT 1")
            .and_then(|mut statement| {
                statement
                    .query_row([bundle_hash], |row| row.get(0))
                    .optional()
            })
            .map_err(read_error("published bundles"))
    }

    /// Reads the highest trust root version published through the API, which every agent should
    /// pin. The root the server was given at start is stored with a publication time of 0 and
    /// does not count, because agents enrol with their own root and move on only by publication.
    pub fn published_trust_root_version(&self) -> Result<Option<u64>, RolloutStoreError> {
        self.connection()
            .prepare_cached("SELECT max(version) FROM trust_roots WHERE published_at_unix_s > 0")
            .and_then(|mut statement| statement.query_row([], |row| row.get::<_, Option<i64>>(0)))
            .map(|version| version.map(|version| version as u64))
            .map_err(read_error("trust roots"))
    }

    /// Reads the current version of every tier's whole-tier schedule. Site schedules are left
    /// out, because agents report no site.
    pub fn tier_schedule_versions(&self) -> Result<BTreeMap<String, u64>, RolloutStoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached(
                "SELECT tier, max(version) FROM schedules WHERE site IS NULL GROUP BY tier",
            )
            .map_err(read_error("schedules"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
            })
            .map_err(read_error("schedules"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(read_error("schedules"))
    }

    /// Reads the current whole-tier schedule file of `tier`, byte for byte as published.
    pub fn tier_schedule_files(&self, tier: &str) -> Result<Vec<Vec<u8>>, RolloutStoreError> {
        let connection = self.connection();
        crate::store::schedules::latest_schedule_files_for(&connection, tier, None)
            .map(|schedules| {
                schedules
                    .into_iter()
                    .map(|schedule| schedule.file)
                    .collect()
            })
            .map_err(read_error("schedules"))
    }

    /// Reads every stored trust root file above `version`, oldest first.
    pub fn trust_roots_above(
        &self,
        version: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, RolloutStoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached(
                "SELECT version, file FROM trust_roots WHERE version > ?1 ORDER BY version",
            )
            .map_err(read_error("trust roots"))?;
        let rows = statement
            .query_map([version as i64], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(read_error("trust roots"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(read_error("trust roots"))
    }
}

const AGENT_VIEW_QUERY: &str = "SELECT agent_id, tier, os_name, online,
    last_report_unix_s IS NOT NULL, trust_root_version, bundles, schedule_version FROM agents";

fn agent_view(row: &rusqlite::Row<'_>) -> rusqlite::Result<AgentView> {
    let bundles: String = row.get(6)?;
    Ok(AgentView {
        agent_id: row.get(0)?,
        tier: row.get(1)?,
        os_name: row.get(2)?,
        online: row.get(3)?,
        has_reported: row.get(4)?,
        trust_root_version: row.get::<_, Option<i64>>(5)?.map(|version| version as u64),
        bundles: serde_json::from_str(&bundles).unwrap_or_default(),
        schedule_version: row.get::<_, Option<i64>>(7)?.map(|version| version as u64),
    })
}

/// The reference to a published bundle that a rollout request gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSelector {
    Id(String),
    StreamSequence { stream: String, sequence: u64 },
}

fn save_delivery_state(
    connection: &Connection,
    agent_id: &str,
    state: &DesiredState,
    now_unix_s: i64,
) -> Result<(), RolloutStoreError> {
    let bundles = serde_json::to_string(&state.bundles).expect("strings always encode");
    let rollbacks = serde_json::to_string(&state.rollbacks).expect("strings always encode");
    let optional = |value: Option<u64>| value.map(|value| value as i64);
    connection
        .prepare_cached(
            "INSERT INTO delivery_state
                 (agent_id, version, bundles, rollbacks, trust_root_version, schedule_version,
                  acknowledged_version, acknowledged_trust_root_version,
                  acknowledged_schedule_version, updated_at_unix_s)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (agent_id) DO UPDATE SET
                 version = excluded.version, bundles = excluded.bundles,
                 rollbacks = excluded.rollbacks, trust_root_version = excluded.trust_root_version,
                 schedule_version = excluded.schedule_version,
                 acknowledged_version = excluded.acknowledged_version,
                 acknowledged_trust_root_version = excluded.acknowledged_trust_root_version,
                 acknowledged_schedule_version = excluded.acknowledged_schedule_version,
                 updated_at_unix_s = excluded.updated_at_unix_s",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                agent_id,
                state.version as i64,
                bundles,
                rollbacks,
                optional(state.trust_root_version),
                optional(state.schedule_version),
                state.acknowledged_version as i64,
                optional(state.acknowledged_trust_root_version),
                optional(state.acknowledged_schedule_version),
                now_unix_s
            ])
        })
        .map_err(|source| RolloutStoreError::Write {
            what: format!("the delivery state of agent {agent_id}"),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::machine::{NoWindows, RolloutSpec, Target};
    use crate::rollout::plan::{FailureAction, FailureThreshold, WaveSize};

    #[test]
    fn rollouts_and_delivery_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tidegate.db");
        crate::store::Store::open(&path).unwrap();
        let store = RolloutStore::open(&path).unwrap();

        let spec = RolloutSpec {
            canary: 1,
            waves: vec![WaveSize::Percent(100)],
            max_concurrent_per_tier: Some(3),
            failure_threshold: FailureThreshold::Percent(10),
            on_failure: FailureAction::Revert,
            grace_seconds: 60,
        };
        let bundle = BundleRef {
            bundle_id: "fix-1".into(),
            stream: "baseline".into(),
            sequence: 4,
            bundle_hash: "cd".repeat(32),
        };
        let targets = vec![
            Target {
                agent_id: "a1".into(),
                tier: "office".into(),
            },
            Target {
                agent_id: "a2".into(),
                tier: "office".into(),
            },
        ];
        let mut rollout = Rollout::plan(7, bundle, spec, targets, "it".into(), 100).unwrap();
        rollout.advance(100, &|_| None, &NoWindows);
        store.save_rollout(&rollout, 100).unwrap();
        rollout.pause("paused by an operator").unwrap();
        store.save_rollout(&rollout, 101).unwrap();

        let mut desired = DesiredState::default();
        desired.add_bundle(&"cd".repeat(32));
        desired.set_trust_root_version(2);
        store
            .save_delivery_states(&[("a1".into(), desired.clone())], 100)
            .unwrap();

        drop(store);
        let reopened = RolloutStore::open(&path).unwrap();
        assert_eq!(reopened.rollouts().unwrap(), vec![rollout]);
        let states = reopened.delivery_states().unwrap();
        assert_eq!(states.len(), 1);
        assert_eq!(states["a1"], desired);
        assert_eq!(states["a1"].version, 2);
    }
}
