//! The audit log: the server's append-only, hash-chained record of every decision and outcome.
//!
//! It owns the `audit_log` table of the store. Each entry contains:
//!
//! - its sequence number: 1, 2, 3, … without gaps;
//! - the time;
//! - the actor: `token:NAME/ROLE` for an API caller, `agent:ID` for what an agent reported, or
//!   `server` for the server's own decisions;
//! - an action such as `bundle.published`, and the subject it concerns;
//! - a JSON object of details;
//! - the hash of the entry before it, and its own hash.
//!
//! The hash is SHA-256 over [`canonical_bytes`] of the entry, which includes the previous
//! hash, so editing, deleting or moving one entry breaks the chain at that entry.
//!
//! [`append`] is the only writer. It takes a connection that may be inside the caller's
//! transaction, so an entry commits or rolls back together with the change it records. Triggers
//! reject `UPDATE` and `DELETE` on the table, which stops mistakes in the server's own code; someone
//! with write access to the file can drop them, and the hash chain is what exposes their edits.
//!
//! Limits: removing the newest entries leaves a chain that is still whole. `tidegate audit verify`
//! prints the newest sequence number and hash, so an operator who keeps them elsewhere can tell.
//! Verification reads the whole log into memory.

mod http;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ring::digest::{digest, SHA256};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use http::{routes, AuditPage, AUDIT_PATH, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
pub use verify::{verify, Problem, VerifyReport};

/// The actor of entries the server records on its own account.
pub const SERVER_ACTOR: &str = "server";

/// The `prev_hash` of the first entry: 32 zero bytes in hex.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Separates this hash input from any other SHA-256 input, and names its format version.
const HASH_DOMAIN: &[u8] = b"tidegate-audit-v1\0";

/// Returns the actor of an entry that an agent's report caused.
pub fn agent_actor(agent_id: &str) -> String {
    format!("agent:{agent_id}")
}

/// An entry as a caller records it. [`append`] adds the sequence number, the time and the hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: Map<String, Value>,
}

impl AuditEntry {
    /// Builds an entry whose detail is `detail` when it is a JSON object, or `{"value": detail}`
    /// otherwise.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        subject: impl Into<String>,
        detail: Value,
    ) -> Self {
        let detail = match detail {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => Map::from_iter([("value".to_owned(), other)]),
        };
        Self {
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            detail,
        }
    }
}

/// One stored entry, as `GET /api/v1/audit` returns it and `tidegate audit export` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_unix_s: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    /// A JSON object. A stored detail that is not a JSON object in canonical form is shown as
    /// the JSON string of its stored text, which never matches the entry's hash.
    pub detail: Value,
    /// The previous entry's hash, in lowercase hex.
    pub prev_hash: String,
    /// SHA-256 of [`canonical_bytes`] of this entry, in lowercase hex.
    pub hash: String,
}

impl AuditRecord {
    /// Computes what this entry's hash should be, from its fields and its `prev_hash`. Returns
    /// `None` when the detail is not a JSON object or `prev_hash` is not 64 hex digits.
    pub fn computed_hash(&self) -> Option<String> {
        self.computed_hash_at(self.seq)
    }

    /// Computes the hash this entry would have at sequence number `seq`.
    fn computed_hash_at(&self, seq: u64) -> Option<String> {
        let Value::Object(detail) = &self.detail else {
            return None;
        };
        let prev_hash = parse_hash(&self.prev_hash)?;
        let bytes = canonical_bytes(
            seq,
            self.at_unix_s,
            &self.actor,
            &self.action,
            &self.subject,
            &canonical_json(detail),
            &prev_hash,
        );
        Some(to_hex(digest(&SHA256, &bytes).as_ref()))
    }
}

/// Encodes an entry for hashing, in this order:
///
/// 1. the domain string `tidegate-audit-v1` and a zero byte;
/// 2. the sequence number and the time, each as an 8-byte big-endian integer;
/// 3. actor, action, subject and the canonical detail JSON, each as a 4-byte big-endian length
///    followed by its UTF-8 bytes;
/// 4. the 32 bytes of the previous hash.
///
/// The lengths make the encoding unambiguous, so no two entries encode to the same bytes.
pub fn canonical_bytes(
    seq: u64,
    at_unix_s: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail_json: &str,
    prev_hash: &[u8; 32],
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(
        HASH_DOMAIN.len()
            + 16
            + 16
            + actor.len()
            + action.len()
            + subject.len()
            + detail_json.len()
            + 32,
    );
    bytes.extend_from_slice(HASH_DOMAIN);
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes.extend_from_slice(&at_unix_s.to_be_bytes());
    for field in [actor, action, subject, detail_json] {
        // Fields longer than 4 GiB cannot reach the store: SQLite's text limit is 1 GB.
        let length = u32::try_from(field.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(field.as_bytes());
    }
    bytes.extend_from_slice(prev_hash);
    bytes
}

/// Writes `detail` as JSON without whitespace, with the keys of every object sorted by their
/// UTF-8 bytes, so the same content always gives the same text whatever map type built it.
pub fn canonical_json(detail: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_canonical_object(detail, &mut out);
    out
}

fn write_canonical_object(map: &Map<String, Value>, out: &mut String) {
    let mut fields: Vec<(&String, &Value)> = map.iter().collect();
    fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (index, (key, value)) in fields.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        write_canonical(value, out);
    }
    out.push('}');
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars have one compact form in serde_json's writer.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Appends `entry` at time `at_unix_s` and returns it as stored.
///
/// Inside a transaction, the entry becomes part of it. Start that transaction with `BEGIN
/// IMMEDIATE` (rusqlite's `TransactionBehavior::Immediate`), so no other connection appends between
/// reading the newest entry and writing this one. Outside a transaction, `append` opens an
/// immediate transaction of its own. Two appends that still collide fail on the primary key of
/// `seq`, never fork the chain.
pub fn append(
    connection: &Connection,
    at_unix_s: i64,
    entry: &AuditEntry,
) -> rusqlite::Result<AuditRecord> {
    if !connection.is_autocommit() {
        return append_in_transaction(connection, at_unix_s, entry);
    }
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let appended = append_in_transaction(connection, at_unix_s, entry)
        .and_then(|record| connection.execute_batch("COMMIT").map(|()| record));
    if appended.is_err() {
        // The error of the append is the one worth returning; a failed rollback leaves nothing
        // committed either.
        let _ = connection.execute_batch("ROLLBACK");
    }
    appended
}

fn append_in_transaction(
    connection: &Connection,
    at_unix_s: i64,
    entry: &AuditEntry,
) -> rusqlite::Result<AuditRecord> {
    let newest: Option<(i64, String)> = connection
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (seq, prev_hash) = match newest {
        Some((seq, hash)) => (seq as u64 + 1, hash),
        None => (1, GENESIS_HASH.to_owned()),
    };
    // A stored hash that is not hex can only come from an edit of the file. Chaining on zeros
    // then keeps the log writable, and verification names the edited entry.
    let prev_bytes = parse_hash(&prev_hash).unwrap_or([0; 32]);
    let detail = canonical_json(&entry.detail);
    let hash = to_hex(
        digest(
            &SHA256,
            &canonical_bytes(
                seq,
                at_unix_s,
                &entry.actor,
                &entry.action,
                &entry.subject,
                &detail,
                &prev_bytes,
            ),
        )
        .as_ref(),
    );
    connection
        .prepare_cached(
            "INSERT INTO audit_log (seq, at_unix_s, actor, action, subject, detail, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            seq as i64,
            at_unix_s,
            entry.actor,
            entry.action,
            entry.subject,
            detail,
            prev_hash,
            hash
        ])?;
    Ok(AuditRecord {
        seq,
        at_unix_s,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        subject: entry.subject.clone(),
        detail: Value::Object(entry.detail.clone()),
        prev_hash,
        hash,
    })
}

/// Reads up to `limit` entries with a sequence number above `after`, oldest first.
pub fn read_after(
    connection: &Connection,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<AuditRecord>> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    connection
        .prepare_cached(
            "SELECT seq, at_unix_s, actor, action, subject, detail, prev_hash, hash
             FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![after, limit], record_from_row)?
        .collect()
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let seq: i64 = row.get(0)?;
    let detail: String = row.get(5)?;
    Ok(AuditRecord {
        // A negative seq can only come from an edit; it shows as a gap at the start.
        seq: u64::try_from(seq).unwrap_or(0),
        at_unix_s: row.get(1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        subject: row.get(4)?,
        detail: detail_value(&detail),
        prev_hash: row.get(6)?,
        hash: row.get(7)?,
    })
}

/// Returns the stored detail as JSON when it is an object in canonical form, and otherwise the
/// stored text as a JSON string, so any change to the stored bytes shows in the hash.
fn detail_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) if canonical_json(&map) == text => Value::Object(map),
        _ => Value::String(text.to_owned()),
    }
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// Encodes bytes as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A failed audit log operation, with the store file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log in {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot append {action} to the audit log in {path}: {source}")]
    Append {
        path: PathBuf,
        action: String,
        source: rusqlite::Error,
    },
    #[error("cannot read the audit log in {path}: {source}")]
    Read {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// A handle on the audit log of one store file, for callers that record an entry on its own
/// rather than inside a transaction of theirs. Clones share one connection.
#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
}

impl AuditLog {
    /// Opens the log of a store that [`crate::store::Store::open`] has migrated.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let open_error = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        Ok(Self {
            path: path.to_owned(),
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Appends `entry` with the current time. Blocks on SQLite.
    pub fn append(&self, entry: &AuditEntry) -> Result<AuditRecord, AuditError> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        append(&connection, now_unix_s(), entry).map_err(|source| AuditError::Append {
            path: self.path.clone(),
            action: entry.action.clone(),
            source,
        })
    }

    /// Appends `entry` from async code, on tokio's blocking pool, and logs a failure instead of
    /// returning it: the caller's change is already done and cannot be taken back.
    pub async fn record(&self, entry: AuditEntry) {
        let log = self.clone();
        let action = entry.action.clone();
        match tokio::task::spawn_blocking(move || log.append(&entry)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "failed to record an audit entry"),
            Err(error) => tracing::error!(%error, action, "the audit append task failed"),
        }
    }

    /// Appends `entries` in order, in one transaction, with the current time. Blocks on SQLite.
    pub fn append_all(&self, entries: &[AuditEntry]) -> Result<(), AuditError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let append_error = |source| AuditError::Append {
            path: self.path.clone(),
            action: first.action.clone(),
            source,
        };
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let transaction = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(append_error)?;
        let now = now_unix_s();
        for entry in entries {
            append(&transaction, now, entry).map_err(append_error)?;
        }
        transaction.commit().map_err(append_error)
    }

    /// Appends `entries` like [`AuditLog::append_all`] from async code, and logs a failure as
    /// [`AuditLog::record`] does.
    pub async fn record_all(&self, entries: Vec<AuditEntry>) {
        if entries.is_empty() {
            return;
        }
        let log = self.clone();
        let count = entries.len();
        match tokio::task::spawn_blocking(move || log.append_all(&entries)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, entries = count, "failed to record audit entries")
            }
            Err(error) => tracing::error!(%error, entries = count, "the audit append task failed"),
        }
    }

    /// Reads up to `limit` entries after `after`. Blocks on SQLite.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        read_after(&connection, after, limit).map_err(|source| AuditError::Read {
            path: self.path.clone(),
            source,
        })
    }
}

/// Reads every entry of the store file at `path` without writing to it, for `tidegate audit`.
pub fn read_file(path: &Path) -> Result<Vec<AuditRecord>, AuditError> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection =
        Connection::open_with_flags(path, flags).map_err(|source| AuditError::Open {
            path: path.to_owned(),
            source,
        })?;
    read_after(&connection, 0, usize::MAX).map_err(|source| AuditError::Read {
        path: path.to_owned(),
        source,
    })
}

fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let detail = json!({"b": 1, "a": {"z": [true, null], "y": "x"}});
        let Value::Object(map) = detail else {
            unreachable!()
        };
        assert_eq!(
            canonical_json(&map),
            r#"{"a":{"y":"x","z":[true,null]},"b":1}"#
        );
    }

    #[test]
    fn canonical_bytes_prefix_lengths() {
        let bytes = canonical_bytes(1, 2, "ab", "c", "", "{}", &[7; 32]);
        let mut expected = b"tidegate-audit-v1\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 1, b'c']);
        expected.extend_from_slice(&[0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'{', b'}']);
        expected.extend_from_slice(&[7; 32]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn non_canonical_detail_reads_as_string() {
        assert_eq!(detail_value(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(detail_value(r#"{"a": 1}"#), json!(r#"{"a": 1}"#));
        assert_eq!(detail_value("not json"), json!("not json"));
        assert_eq!(detail_value("[1]"), json!("[1]"));
    }

    #[test]
    fn parse_hash_needs_64_hex_digits() {
        assert_eq!(parse_hash(GENESIS_HASH), Some([0; 32]));
        assert_eq!(parse_hash(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_hash(&"ab".repeat(31)), None);
        assert_eq!(parse_hash(&"zz".repeat(32)), None);
    }
}
