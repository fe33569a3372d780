//! Published maintenance-window schedules: every version of every (tier, site) target, byte for
//! byte as the OT key holders signed it, with its signers, publisher and time of publication.
//!
//! The version with the highest number of a target is its current schedule. Older versions are
//! kept for the record and are never sent again. This module checks no signature: the caller
//! verifies a file before it records it (see [`crate::schedules`]), and [`Schedules::record`]
//! only guarantees that versions of one target grow. Like [`super::publications`], it has its
//! own connection to the store file, used by one request at a time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::audit::{self, AuditEntry};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleStoreError {
    #[error("failed to open the store {path} for schedules: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("failed to read the stored schedules: {0}")]
    Read(rusqlite::Error),
    #[error("failed to record schedule version {version} for {target}: {source}")]
    Write {
        target: String,
        version: u64,
        source: rusqlite::Error,
    },
    /// The target already has this version or a higher one.
    #[error(
        "schedule version {offered} for {target} is not newer than the stored version {stored}; \
         publish a higher version"
    )]
    NotNewer {
        target: String,
        offered: u64,
        stored: u64,
    },
}

/// A schedule as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    pub tier: String,
    /// `None` for the schedule of the whole tier.
    pub site: Option<String>,
    pub version: u64,
    /// SHA-256 of the signed document bytes, in lowercase hex.
    pub schedule_hash: String,
    /// The schedule file, byte for byte as published.
    pub file: Vec<u8>,
    /// Key ids of the signers, as verified at publication.
    pub signers: Vec<String>,
    pub publisher: String,
    pub published_at_unix_s: i64,
}

/// Describes a target for messages: `tier plant` or `tier plant, site hamburg`.
pub fn describe_target(tier: &str, site: Option<&str>) -> String {
    match site {
        Some(site) => format!("tier {tier}, site {site}"),
        None => format!("tier {tier}"),
    }
}

/// A cheap, cloneable handle; the connection is used by one request at a time.
#[derive(Clone)]
pub struct Schedules {
    connection: Arc<Mutex<Connection>>,
}

const COLUMNS: &str =
    "tier, site, version, schedule_hash, file, signers, publisher, published_at_unix_s";

impl Schedules {
    /// Opens the store file, which [`super::Store::open`] has migrated.
    pub fn open(path: &Path) -> Result<Self, ScheduleStoreError> {
        let open_error = |source| ScheduleStoreError::Open {
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

    /// Returns the current schedule of the target, if it has one.
    pub fn current(
        &self,
        tier: &str,
        site: Option<&str>,
    ) -> Result<Option<StoredSchedule>, ScheduleStoreError> {
        let connection = self.lock();
        current_schedule(&connection, tier, site).map_err(ScheduleStoreError::Read)
    }

    /// Returns the current schedule of every target, sorted by tier and then site, with the
    /// whole tier's schedule before its sites'.
    pub fn current_all(&self) -> Result<Vec<StoredSchedule>, ScheduleStoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM schedules AS s
                 WHERE version = (SELECT max(version) FROM schedules
                                  WHERE tier = s.tier AND coalesce(site, '') = coalesce(s.site, ''))
                 ORDER BY tier, coalesce(site, '')"
            ))
            .map_err(ScheduleStoreError::Read)?;
        let rows = statement
            .query_map([], read_row)
            .map_err(ScheduleStoreError::Read)?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(ScheduleStoreError::Read)
    }

    /// Returns the files an agent of `tier` (and `site`, when it has one) should hold: the
    /// current schedule of the whole tier, then the current schedule of its site. See
    /// [`latest_schedule_files_for`].
    pub fn latest_schedule_files_for(
        &self,
        tier: &str,
        site: Option<&str>,
    ) -> Result<Vec<StoredSchedule>, ScheduleStoreError> {
        let connection = self.lock();
        latest_schedule_files_for(&connection, tier, site).map_err(ScheduleStoreError::Read)
    }

    /// Records a verified schedule as the target's newest version, and `schedule.published`
    /// with its signers and publisher by `actor` in the audit log. When the target already has
    /// this version or a higher one, nothing is written and [`ScheduleStoreError::NotNewer`]
    /// names the stored one. The check, the insert and the audit entry run in one write
    /// transaction, so two publications of one version cannot both succeed, and no schedule is
    /// stored without its entry.
    pub fn record(&self, schedule: &StoredSchedule, actor: &str) -> Result<(), ScheduleStoreError> {
        let target = describe_target(&schedule.tier, schedule.site.as_deref());
        let write_error = |source| ScheduleStoreError::Write {
            target: target.clone(),
            version: schedule.version,
            source,
        };
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(write_error)?;
        let stored = current_version(&transaction, &schedule.tier, schedule.site.as_deref())
            .map_err(write_error)?;
        if let Some(stored) = stored {
            if stored >= schedule.version {
                return Err(ScheduleStoreError::NotNewer {
                    target,
                    offered: schedule.version,
                    stored,
                });
            }
        }
        let signers = serde_json::to_string(&schedule.signers).expect("strings always encode");
        transaction
            .execute(
                &format!(
                    "INSERT INTO schedules ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    schedule.tier,
                    schedule.site,
                    schedule.version as i64,
                    schedule.schedule_hash,
                    schedule.file,
                    signers,
                    schedule.publisher,
                    schedule.published_at_unix_s
                ],
            )
            .map_err(write_error)?;
        let entry = AuditEntry::new(
            actor,
            "schedule.published",
            target.clone(),
            serde_json::json!({
                "tier": schedule.tier,
                "site": schedule.site,
                "version": schedule.version,
                "schedule_hash": schedule.schedule_hash,
                "signers": schedule.signers,
                "publisher": schedule.publisher,
            }),
        );
        audit::append(&transaction, schedule.published_at_unix_s, &entry).map_err(write_error)?;
        transaction.commit().map_err(write_error)?;
        Ok(())
    }

    /// Returns every published bundle file, oldest publication first.
    pub fn published_bundle_files(&self) -> Result<Vec<Vec<u8>>, ScheduleStoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT file FROM published_bundles ORDER BY published_at_unix_s, stream, sequence",
            )
            .map_err(ScheduleStoreError::Read)?;
        let rows = statement
            .query_map([], |row| row.get::<_, Vec<u8>>(0))
            .map_err(ScheduleStoreError::Read)?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(ScheduleStoreError::Read)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while the lock was held cannot leave the connection half-used: every
        // statement either ran or did not, and an open transaction rolls back when dropped.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Returns the current schedules an agent of `tier` (and `site`, when it has one) should hold:
/// the whole tier's first, then the site's. Each is the file with the highest version of its
/// target, byte for byte as published. Code that sends schedules again, for example to an agent
/// that reconnected without its session, calls this with its own connection to the store.
pub fn latest_schedule_files_for(
    connection: &Connection,
    tier: &str,
    site: Option<&str>,
) -> rusqlite::Result<Vec<StoredSchedule>> {
    let mut files = Vec::new();
    if let Some(schedule) = current_schedule(connection, tier, None)? {
        files.push(schedule);
    }
    if let Some(site) = site {
        if let Some(schedule) = current_schedule(connection, tier, Some(site))? {
            files.push(schedule);
        }
    }
    Ok(files)
}

fn current_schedule(
    connection: &Connection,
    tier: &str,
    site: Option<&str>,
) -> rusqlite::Result<Option<StoredSchedule>> {
    connection
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE tier = ?1 AND coalesce(site, '') = ?2
             ORDER BY version DESC LIMIT 1"
        ))?
        .query_row(params![tier, site.unwrap_or("")], read_row)
        .optional()
}

fn current_version(
    connection: &Connection,
    tier: &str,
    site: Option<&str>,
) -> rusqlite::Result<Option<u64>> {
    let version: Option<i64> = connection
        .prepare_cached(
            "SELECT max(version) FROM schedules WHERE tier = ?1 AND coalesce(site, '') = ?2",
        )?
        .query_row(params![tier, site.unwrap_or("")], |row| row.get(0))?;
    Ok(version.map(|version| version as u64))
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSchedule> {
    let signers: String = row.get(5)?;
    Ok(StoredSchedule {
        tier: row.get(0)?,
        site: row.get(1)?,
        version: row.get::<_, i64>(2)? as u64,
        schedule_hash: row.get(3)?,
        file: row.get(4)?,
        // Rows come only from record(), which writes a JSON array of strings.
        signers: serde_json::from_str(&signers).unwrap_or_default(),
        publisher: row.get(6)?,
        published_at_unix_s: row.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(tier: &str, site: Option<&str>, version: u64) -> StoredSchedule {
        StoredSchedule {
            tier: tier.into(),
            site: site.map(str::to_owned),
            version,
            schedule_hash: format!("hash-{version}"),
            file: vec![version as u8; 3],
            signers: vec!["0011223344556677".into()],
            publisher: "ot@desk".into(),
            published_at_unix_s: 1_000 + version as i64,
        }
    }

    fn open() -> (tempfile::TempDir, Schedules) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tidegate.db");
        crate::store::Store::open(&path).unwrap();
        let schedules = Schedules::open(&path).unwrap();
        (dir, schedules)
    }

    #[test]
    fn versions_grow_per_target() {
        let (_dir, schedules) = open();
        schedules
            .record(&schedule("plant", None, 1), "token:ot/ot")
            .unwrap();
        schedules
            .record(&schedule("plant", Some("hamburg"), 1), "token:ot/ot")
            .unwrap();
        schedules
            .record(&schedule("plant", None, 3), "token:ot/ot")
            .unwrap();

        let error = schedules
            .record(&schedule("plant", None, 2), "token:ot/ot")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "schedule version 2 for tier plant is not newer than the stored version 3; publish \
             a higher version"
        );
        let error = schedules
            .record(&schedule("plant", None, 3), "token:ot/ot")
            .unwrap_err();
        assert!(matches!(
            error,
            ScheduleStoreError::NotNewer {
                offered: 3,
                stored: 3,
                ..
            }
        ));

        let current = schedules.current("plant", None).unwrap().unwrap();
        assert_eq!(current, schedule("plant", None, 3));
    }

    #[test]
    fn latest_files_are_tier_then_site() {
        let (_dir, schedules) = open();
        schedules
            .record(&schedule("plant", None, 1), "token:ot/ot")
            .unwrap();
        schedules
            .record(&schedule("plant", None, 2), "token:ot/ot")
            .unwrap();
        schedules
            .record(&schedule("plant", Some("hamburg"), 5), "token:ot/ot")
            .unwrap();
        schedules
            .record(&schedule("office", None, 7), "token:ot/ot")
            .unwrap();

        let versions = |site: Option<&str>| -> Vec<(Option<String>, u64)> {
            schedules
                .latest_schedule_files_for("plant", site)
                .unwrap()
                .into_iter()
                .map(|schedule| (schedule.site, schedule.version))
                .collect()
        };
        assert_eq!(versions(None), vec![(None, 2)]);
        assert_eq!(
            versions(Some("hamburg")),
            vec![(None, 2), (Some("hamburg".to_owned()), 5)]
        );
        assert_eq!(versions(Some("bremen")), vec![(None, 2)]);
        assert!(schedules
            .latest_schedule_files_for("lab", None)
            .unwrap()
            .is_empty());

        let all: Vec<(String, Option<String>, u64)> = schedules
            .current_all()
            .unwrap()
            .into_iter()
            .map(|schedule| (schedule.tier, schedule.site, schedule.version))
            .collect();
        assert_eq!(
            all,
            vec![
                ("office".to_owned(), None, 7),
                ("plant".to_owned(), None, 2),
                ("plant".to_owned(), Some("hamburg".to_owned()), 5),
            ]
        );
    }
}
