//! Published bundles: the files as received, who published them, and each stream's highest
//! sequence. Publication runs beside ingest, so it has its own connection to the same file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tidegate_protocol::trust::{BundleHash, HighWater, StreamName};

use crate::publish::CheckedBundle;

#[derive(Debug, thiserror::Error)]
pub enum PublicationError {
    #[error("cannot open the store {path} for publications: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot read published bundles: {0}")]
    Read(rusqlite::Error),
    #[error("cannot record bundle {bundle_id}: {source}")]
    Write {
        bundle_id: String,
        source: rusqlite::Error,
    },
    #[error("stream {stream} already has a different bundle at sequence {sequence}")]
    Conflict { stream: String, sequence: u64 },
}

/// A cheap, cloneable handle; the connection is used by one request at a time.
#[derive(Clone)]
pub struct Publications {
    connection: Arc<Mutex<Connection>>,
}

impl Publications {
    /// Opens the store file, which [`super::Store::open`] has migrated.
    pub fn open(path: &Path) -> Result<Self, PublicationError> {
        let open_error = |source| PublicationError::Open {
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

    /// Every stored trust root file with its version, oldest first.
    pub fn trust_roots(&self) -> Result<Vec<(u64, Vec<u8>)>, PublicationError> {
        let connection = self.connection.lock().expect("publication connection lock");
        let mut statement = connection
            .prepare_cached("SELECT version, file FROM trust_roots ORDER BY version")
            .map_err(PublicationError::Read)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(PublicationError::Read)?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(PublicationError::Read)
    }

    /// Stores a trust root file of `version`. Storing the same version again keeps the first file
    /// and the latest publication time, so a root first given at start (time 0) and then
    /// published through the API counts as published.
    pub fn record_trust_root(
        &self,
        version: u64,
        file: &[u8],
        now_unix_s: i64,
    ) -> Result<(), PublicationError> {
        let connection = self.connection.lock().expect("publication connection lock");
        connection
            .prepare_cached(
                "INSERT INTO trust_roots (version, file, published_at_unix_s) VALUES (?1, ?2, ?3)
                 ON CONFLICT (version) DO UPDATE SET published_at_unix_s =
                 max(published_at_unix_s, excluded.published_at_unix_s)",
            )
            .and_then(|mut statement| statement.execute(params![version as i64, file, now_unix_s]))
            .map_err(|source| PublicationError::Write {
                bundle_id: format!("trust root v{version}"),
                source,
            })?;
        Ok(())
    }

    /// The highest published sequence of every stream, with its hash.
    pub fn high_water(&self) -> Result<BTreeMap<StreamName, HighWater>, PublicationError> {
        let connection = self.connection.lock().expect("publication connection lock");
        let mut statement = connection
            .prepare_cached(
                "SELECT stream, max(sequence), bundle_hash FROM published_bundles GROUP BY stream",
            )
            .map_err(PublicationError::Read)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(PublicationError::Read)?;
        let mut marks = BTreeMap::new();
        for row in rows {
            let (stream, sequence, hash) = row.map_err(PublicationError::Read)?;
            // Rows come only from checked bundles, so both always parse.
            if let (Ok(stream), Ok(bundle_hash)) =
                (StreamName::parse(&stream), BundleHash::parse(&hash))
            {
                marks.insert(
                    stream,
                    HighWater {
                        sequence: sequence as u64,
                        bundle_hash,
                    },
                );
            }
        }
        Ok(marks)
    }

    /// Records a checked bundle. Publishing the same file again is not an error and keeps the
    /// first record.
    pub fn record(
        &self,
        bundle: &CheckedBundle,
        file: &[u8],
        publisher: &str,
        now_unix_s: i64,
    ) -> Result<(), PublicationError> {
        let connection = self.connection.lock().expect("publication connection lock");
        let write_error = |source| PublicationError::Write {
            bundle_id: bundle.bundle_id.clone(),
            source,
        };
        let existing: Option<String> = connection
            .prepare_cached(
                "SELECT bundle_hash FROM published_bundles WHERE stream = ?1 AND sequence = ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![bundle.stream, bundle.sequence as i64], |row| {
                        row.get(0)
                    })
                    .optional()
            })
            .map_err(write_error)?;
        match existing {
            Some(hash) if hash == bundle.bundle_hash => return Ok(()),
            Some(_) => {
                return Err(PublicationError::Conflict {
                    stream: bundle.stream.clone(),
                    sequence: bundle.sequence,
                })
            }
            None => {}
        }
        let signers = serde_json::to_string(&bundle.signers).expect("strings always encode");
        connection
            .prepare_cached(
                "INSERT INTO published_bundles
                 (stream, sequence, bundle_id, bundle_hash, file, signers, publisher, published_at_unix_s)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    bundle.stream,
                    bundle.sequence as i64,
                    bundle.bundle_id,
                    bundle.bundle_hash,
                    file,
                    signers,
                    publisher,
                    now_unix_s
                ])
            })
            .map_err(write_error)?;
        Ok(())
    }
}
