//! The audit log in a real store file: the hash chain as written, and `tidegate audit verify`
//! naming each entry that was edited, deleted, moved or replaced behind the server's back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ring::digest::{digest, SHA256};
use rusqlite::Connection;
use serde_json::json;
use tidegate_server::audit::{self, AuditEntry, Problem, GENESIS_HASH};
use tidegate_server::store::Store;

/// Creates a store with five entries and returns its directory and path. Entry `n` has actor
/// `token:alice/security` for odd `n` and `server` for even `n`, action `test.step`, subject
/// `step-n` and detail `{"n": n, "note": "alice"}`, at time 1_780_000_000 + n.
fn store_with_five_entries() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidegate.db");
    drop(Store::open(&path).unwrap());
    let connection = Connection::open(&path).unwrap();
    for n in 1..=5u64 {
        let actor = if n % 2 == 1 {
            "token:alice/security"
        } else {
            "server"
        };
        let entry = AuditEntry::new(
            actor,
            "test.step",
            format!("step-{n}"),
            json!({"n": n, "note": "alice"}),
        );
        audit::append(&connection, 1_780_000_000 + n as i64, &entry).unwrap();
    }
    (dir, path)
}

/// Opens the file as someone with write access to it would, without the append-only triggers.
fn tamper(path: &Path) -> Connection {
    let connection = Connection::open(path).unwrap();
    connection
        .execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .unwrap();
    connection
}

fn verify_file(path: &Path) -> audit::VerifyReport {
    audit::verify(&audit::read_file(path).unwrap())
}

fn tidegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .env_remove("TIDEGATE_SERVER")
        .env_remove("TIDEGATE_TOKEN")
        .output()
        .expect("run tidegate")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).unwrap())
        .collect()
}

#[test]
fn first_entry_hash_matches_hand_built_encoding() {
    let (_dir, path) = store_with_five_entries();
    let records = audit::read_file(&path).unwrap();
    assert_eq!(records.len(), 5);

    // Entry 1, encoded by hand as the module documents it.
    let mut bytes = b"tidegate-audit-v1\0".to_vec();
    bytes.extend_from_slice(&1u64.to_be_bytes());
    bytes.extend_from_slice(&1_780_000_001i64.to_be_bytes());
    for field in [
        "token:alice/security",
        "test.step",
        "step-1",
        r#"{"n":1,"note":"alice"}"#,
    ] {
        bytes.extend_from_slice(&(field.len() as u32).to_be_bytes());
        bytes.extend_from_slice(field.as_bytes());
    }
    bytes.extend_from_slice(&[0u8; 32]);

    assert_eq!(records[0].prev_hash, GENESIS_HASH);
    assert_eq!(records[0].hash, hex(digest(&SHA256, &bytes).as_ref()));
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "entry {}", pair[1].seq);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
}

#[test]
fn intact_log_verifies() {
    let (_dir, path) = store_with_five_entries();
    let report = verify_file(&path);
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.entries, 5);

    let output = tidegate(&["audit", "verify", "--db", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let head = &report.head.unwrap().1;
    assert_eq!(
        stdout,
        format!("audit log intact: 5 entries; the newest is entry 5 with hash {head}\n")
    );
}

#[test]
fn triggers_reject_update_and_delete() {
    let (_dir, path) = store_with_five_entries();
    let connection = Connection::open(&path).unwrap();
    let error = connection
        .execute("UPDATE audit_log SET detail = '{}' WHERE seq = 3", [])
        .unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");
    let error = connection
        .execute("DELETE FROM audit_log WHERE seq = 3", [])
        .unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");
}

#[test]
fn edited_byte_is_named() {
    let (_dir, path) = store_with_five_entries();
    // "alice" becomes "alicf" in entry 3's detail: one byte.
    let changed = tamper(&path)
        .execute(
            "UPDATE audit_log SET detail = replace(detail, 'alice', 'alicf') WHERE seq = 3",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);

    assert_eq!(
        verify_file(&path).problems,
        vec![Problem::Altered { seq: 3 }]
    );

    let output = tidegate(&["audit", "verify", "--db", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "entry 3 was altered: its content does not match its hash\n"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the audit log is not intact: 1 problems found"),
        "{stderr}"
    );
}

#[test]
fn edited_actor_and_time_are_named() {
    let (_dir, path) = store_with_five_entries();
    let connection = tamper(&path);
    connection
        .execute("UPDATE audit_log SET actor = 'server' WHERE seq = 1", [])
        .unwrap();
    connection
        .execute(
            "UPDATE audit_log SET at_unix_s = at_unix_s + 1 WHERE seq = 5",
            [],
        )
        .unwrap();

    assert_eq!(
        verify_file(&path).problems,
        vec![Problem::Altered { seq: 1 }, Problem::Altered { seq: 5 }]
    );
}

#[test]
fn whitespace_in_detail_is_named() {
    let (_dir, path) = store_with_five_entries();
    tamper(&path)
        .execute(
            r#"UPDATE audit_log SET detail = replace(detail, '"n":', '"n": ') WHERE seq = 2"#,
            [],
        )
        .unwrap();
    assert_eq!(
        verify_file(&path).problems,
        vec![Problem::Altered { seq: 2 }]
    );
}

#[test]
fn deleted_entry_is_named() {
    let (_dir, path) = store_with_five_entries();
    tamper(&path)
        .execute("DELETE FROM audit_log WHERE seq = 3", [])
        .unwrap();

    assert_eq!(
        verify_file(&path).problems,
        vec![Problem::Missing { first: 3, last: 3 }]
    );
    let output = tidegate(&["audit", "verify", "--db", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "entry 3 is missing (deleted)\n"
    );
}

#[test]
fn deleted_first_entry_is_named() {
    let (_dir, path) = store_with_five_entries();
    tamper(&path)
        .execute("DELETE FROM audit_log WHERE seq = 1", [])
        .unwrap();
    assert_eq!(
        verify_file(&path).problems,
        vec![Problem::Missing { first: 1, last: 1 }]
    );
}

#[test]
fn swapped_entries_are_named() {
    let (_dir, path) = store_with_five_entries();
    let connection = tamper(&path);
    connection
        .execute_batch(
            "UPDATE audit_log SET seq = -1 WHERE seq = 2;
             UPDATE audit_log SET seq = 2 WHERE seq = 4;
             UPDATE audit_log SET seq = 4 WHERE seq = -1;",
        )
        .unwrap();

    assert_eq!(
        verify_file(&path).problems,
        vec![
            Problem::Moved {
                seq: 2,
                written_as: 4
            },
            Problem::Moved {
                seq: 4,
                written_as: 2
            },
        ]
    );
    let output = tidegate(&["audit", "verify", "--db", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "entry 2 is out of order: it was written as entry 4 (reordered)\n\
         entry 4 is out of order: it was written as entry 2 (reordered)\n"
    );
}

#[test]
fn replaced_entry_with_recomputed_hash_is_named() {
    let (_dir, path) = store_with_five_entries();
    // Rewrite entry 3 and give it the hash its new content should have, as a careful forger would.
    let records = audit::read_file(&path).unwrap();
    let forged_detail = r#"{"n":3,"note":"mallory"}"#;
    let mut prev = [0u8; 32];
    prev.copy_from_slice(&unhex(&records[2].prev_hash));
    let forged_hash = hex(digest(
        &SHA256,
        &audit::canonical_bytes(
            3,
            records[2].at_unix_s,
            &records[2].actor,
            &records[2].action,
            &records[2].subject,
            forged_detail,
            &prev,
        ),
    )
    .as_ref());
    tamper(&path)
        .execute(
            "UPDATE audit_log SET detail = ?1, hash = ?2 WHERE seq = 3",
            [forged_detail, forged_hash.as_str()],
        )
        .unwrap();

    assert_eq!(
        verify_file(&path).problems,
        vec![Problem::BrokenLink {
            seq: 4,
            previous_seq: 3
        }]
    );
}

#[test]
fn export_writes_json_lines() {
    let (dir, path) = store_with_five_entries();
    let out = dir.path().join("audit.jsonl");
    let output = tidegate(&[
        "audit",
        "export",
        "--db",
        path.to_str().unwrap(),
        "--after",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["seq"], 4);
    assert_eq!(lines[0]["actor"], "server");
    assert_eq!(lines[0]["subject"], "step-4");
    assert_eq!(lines[0]["detail"], json!({"n": 4, "note": "alice"}));
    assert_eq!(lines[1]["seq"], 5);
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);
}

#[test]
fn entry_rolls_back_with_its_transaction() {
    let (_dir, path) = store_with_five_entries();
    let mut connection = Connection::open(&path).unwrap();
    let transaction = connection.transaction().unwrap();
    audit::append(
        &transaction,
        1_780_000_100,
        &AuditEntry::new("server", "test.undone", "x", json!({})),
    )
    .unwrap();
    drop(transaction);

    let records = audit::read_file(&path).unwrap();
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|record| record.action == "test.step"));
}

#[test]
fn empty_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidegate.db");
    drop(Store::open(&path).unwrap());

    let report = verify_file(&path);
    assert!(report.is_intact());
    assert_eq!(report.entries, 0);
    assert_eq!(report.head, None);
    let output = tidegate(&["audit", "verify", "--db", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "audit log intact: it has no entries yet\n"
    );
}

#[test]
fn missing_database_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let output = tidegate(&["audit", "verify", "--db", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains(&format!("cannot open the audit log in {}", path.display())),
        "{message}"
    );
    assert!(!path.exists(), "verify creates no database");
}
