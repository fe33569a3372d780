//! Published bundles: the files as received, who published them, and each stream's highest
//! sequence. Publication runs beside ingest, so it has its own connection to the same file.
//! Each recorded publication appends its audit entry in the same transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::json;
use tidegate_protocol::trust::{BundleHash, HighWater, StreamName};

use crate::audit::{self, AuditEntry};
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

/// One published bundle as `GET /api/v1/bundles` lists it, without its file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedBundle {
    pub stream: String,
    pub sequence: u64,
    pub bundle_id: String,
    pub bundle_hash: String,
    /// The key ids of the signatures that met the threshold.
    pub signers: Vec<String>,
    pub publisher: String,
    pub published_at_unix_s: i64,
    pub size_bytes: u64,
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

    /// Stores a trust root file of `version` with its publication time and records
    /// `trust_root.published` by `actor` in the audit log at `now_unix_s`. Storing the same
    /// version again keeps the first file and the latest publication time, so a root first given
    /// at start (publication time 0) and then published through the API counts as published; a
    /// store that changes nothing records nothing. The audit entry always carries the real time,
    /// because the audit log orders events by when they happened.
    pub fn record_trust_root(
        &self,
        version: u64,
        file: &[u8],
        published_at_unix_s: i64,
        now_unix_s: i64,
        actor: &str,
    ) -> Result<(), PublicationError> {
        let write_error = |source| PublicationError::Write {
            bundle_id: format!("trust root v{version}"),
            source,
        };
        let mut connection = self.connection.lock().expect("publication connection lock");
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(write_error)?;
        let inserted = transaction
            .prepare_cached(
                "INSERT INTO trust_roots (version, file, published_at_unix_s) VALUES (?1, ?2, ?3)
                 ON CONFLICT (version) DO UPDATE SET published_at_unix_s =
                 excluded.published_at_unix_s
                 WHERE excluded.published_at_unix_s > trust_roots.published_at_unix_s",
            )
            .and_then(|mut statement| {
                statement.execute(params![version as i64, file, published_at_unix_s])
            })
            .map_err(write_error)?;
        if inserted > 0 {
            let digest = ring::digest::digest(&ring::digest::SHA256, file);
            audit::append(
                &transaction,
                now_unix_s,
                &AuditEntry::new(
                    actor,
                    "trust_root.published",
                    format!("trust root v{version}"),
                    json!({
                        "version": version,
                        "file_sha256": audit::to_hex(digest.as_ref()),
                    }),
                ),
            )
            .map_err(write_error)?;
        }
        transaction.commit().map_err(write_error)?;
        Ok(())
    }

    /// Lists every published bundle, newest publication first.
    pub fn list(&self) -> Result<Vec<PublishedBundle>, PublicationError> {
        let connection = self.connection.lock().expect("publication connection lock");
        let mut statement = connection
            .prepare_cached(
                "SELECT stream, sequence, bundle_id, bundle_hash, signers, publisher,
                        published_at_unix_s, length(file)
                 FROM published_bundles
                 ORDER BY published_at_unix_s DESC, stream, sequence DESC",
            )
            .map_err(PublicationError::Read)?;
        let rows = statement
            .query_map([], |row| {
                let signers: String = row.get(4)?;
                Ok(PublishedBundle {
                    stream: row.get(0)?,
                    sequence: row.get::<_, i64>(1)? as u64,
                    bundle_id: row.get(2)?,
                    bundle_hash: row.get(3)?,
                    // Rows come only from `record`, which writes a JSON array of strings.
                    signers: serde_json::from_str(&signers).unwrap_or_default(),
                    publisher: row.get(5)?,
                    published_at_unix_s: row.get(6)?,
                    size_bytes: row.get::<_, i64>(7)? as u64,
                })
            })
            .map_err(PublicationError::Read)?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(PublicationError::Read)
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

    /// Records a checked bundle, and `bundle.published` (or `bundle.republished`) with its
    /// signers by `actor`. Publishing the same file again is not an error and keeps the first
    /// record.
    pub fn record(
        &self,
        bundle: &CheckedBundle,
        file: &[u8],
        publisher: &str,
        now_unix_s: i64,
        actor: &str,
    ) -> Result<(), PublicationError> {
        let write_error = |source| PublicationError::Write {
            bundle_id: bundle.bundle_id.clone(),
            source,
        };
        let mut connection = self.connection.lock().expect("publication connection lock");
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(write_error)?;
        let existing: Option<String> = transaction
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
        let entry = |action: &str| {
            AuditEntry::new(
                actor,
                action,
                bundle.bundle_id.clone(),
                json!({
                    "stream": bundle.stream,
                    "sequence": bundle.sequence,
                    "bundle_hash": bundle.bundle_hash,
                    "signers": bundle.signers,
                    "publisher": publisher,
                }),
            )
        };
        match existing {
            Some(hash) if hash == bundle.bundle_hash => {
                audit::append(&transaction, now_unix_s, &entry("bundle.republished"))
                    .map_err(write_error)?;
                transaction.commit().map_err(write_error)?;
                return Ok(());
            }
            Some(_) => {
                return Err(PublicationError::Conflict {
                    stream: bundle.stream.clone(),
                    sequence: bundle.sequence,
                })
            }
            None => {}
        }
        let signers = serde_json::to_string(&bundle.signers).expect("strings always encode");
        transaction
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
        audit::append(&transaction, now_unix_s, &entry("bundle.published")).map_err(write_error)?;
        transaction.commit().map_err(write_error)?;
        Ok(())
    }
}
