//! Opening store files: creation, reopening, schema versions and readers beside the writer.

mod store_support;

use rusqlite::Connection;
use store_support::*;
use tidegate_server::store::{IngestOutcome, Store, StoreError, StoreReader, SCHEMA_VERSION};

fn schema_version(path: &std::path::Path) -> u32 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn new_store_has_current_schema() {
    let (_dir, path, store) = temp_store();
    drop(store);

    assert_eq!(schema_version(&path), SCHEMA_VERSION);
    let journal_mode: String = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(journal_mode, "wal");
}

#[test]
fn reopening_keeps_everything() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![
            report_in(full_report(AGENT, BOOT_1, 1, inventory()), COLLECTED_AT),
            report_in(
                delta_report(AGENT, BOOT_1, 2, 1, openssl_upgrade()),
                COLLECTED_AT + 60,
            ),
        ])
        .unwrap();
    let before = StoreReader::open(&path)
        .unwrap()
        .agent(AGENT)
        .unwrap()
        .unwrap();
    drop(store);

    let mut store = Store::open(&path).unwrap();
    let after = StoreReader::open(&path)
        .unwrap()
        .agent(AGENT)
        .unwrap()
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(after.summary.package_count, 4);
    assert_eq!(schema_version(&path), SCHEMA_VERSION);

    // The de-duplication records and the last applied report survive too.
    let outcomes = store
        .ingest(vec![
            report_in(
                full_report(AGENT, BOOT_1, 1, inventory()),
                COLLECTED_AT + 120,
            ),
            report_in(
                delta_report(AGENT, BOOT_1, 3, 2, Default::default()),
                COLLECTED_AT + 120,
            ),
        ])
        .unwrap();
    assert_eq!(
        outcomes,
        vec![IngestOutcome::Duplicate, IngestOutcome::Stored]
    );
}

#[test]
fn newer_schema_rejected() {
    let (_dir, path, store) = temp_store();
    drop(store);
    let newer = SCHEMA_VERSION + 1;
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE schema_version SET version = ?1", [newer])
        .unwrap();

    let error = Store::open(&path)
        .err()
        .expect("a newer schema must be rejected");
    assert!(matches!(error, StoreError::Schema { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!(
            "schema version {newer} is newer than version {SCHEMA_VERSION}"
        )),
        "{message}"
    );

    let error = StoreReader::open(&path)
        .err()
        .expect("a reader must reject it too");
    assert!(
        error
            .to_string()
            .contains(&format!("schema version {newer} is newer")),
        "{error}"
    );
    assert_eq!(
        schema_version(&path),
        newer,
        "a rejected store must be left as it was"
    );
}

#[test]
fn reader_rejects_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");

    let error = StoreReader::open(&path)
        .err()
        .expect("a missing file must be rejected");

    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.db"), "{error}");
    assert!(!path.exists(), "a reader must not create the file");
}

#[test]
fn reader_rejects_file_without_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE unrelated (x INTEGER)")
        .unwrap();

    let error = StoreReader::open(&path)
        .err()
        .expect("a file without schema must be rejected");

    assert!(
        error.to_string().contains("no schema_version table"),
        "{error}"
    );
}

#[test]
fn open_rejects_unwritable_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("fleet.db");

    let error = Store::open(&path)
        .err()
        .expect("a path in a missing directory must fail");

    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("no-such-dir"), "{error}");
}

#[test]
fn reader_sees_commits_while_writer_open() {
    let (_dir, path, mut store) = temp_store();
    let reader = StoreReader::open(&path).unwrap();
    assert!(reader.fleet().unwrap().is_empty());

    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory()),
            COLLECTED_AT,
        )])
        .unwrap();
    assert_eq!(reader.fleet().unwrap().len(), 1);

    store
        .ingest(vec![report_in(
            full_report(OTHER_AGENT, BOOT_1, 1, inventory()),
            COLLECTED_AT,
        )])
        .unwrap();
    let fleet = reader.fleet().unwrap();
    let ids: Vec<&str> = fleet.iter().map(|agent| agent.agent_id.as_str()).collect();
    // Both are named gw-01, so the id decides the order.
    assert_eq!(ids, vec![AGENT, OTHER_AGENT]);
}

#[test]
fn reader_clones_work_across_threads() {
    let (_dir, path, mut store) = temp_store();
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory()),
            COLLECTED_AT,
        )])
        .unwrap();
    let reader = StoreReader::open(&path).unwrap();

    let handles: Vec<_> = (0..12)
        .map(|_| {
            let reader = reader.clone();
            std::thread::spawn(move || reader.agent(AGENT).unwrap().unwrap().packages.len())
        })
        .collect();

    for handle in handles {
        assert_eq!(handle.join().unwrap(), 6);
    }
}
