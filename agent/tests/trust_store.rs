//! The agent's trust state on disk: the pinned enrolment root, high-water marks that survive a
//! restart, and bundles kept while the clock is untrusted.

use std::collections::BTreeMap;
use std::path::Path;

use ring::rand::SystemRandom;
use tidegate_agent::trust::TrustStore;
use tidegate_protocol::trust::{
    BundleFile, BundleHash, BundleId, BundleManifest, Payload, PayloadRef, Role, SignedTrustRoot,
    SigningKey, Step, StreamName, TargetSelector, Thresholds, TrustRoot,
};
use tidegate_protocol::BundleOutcome;

/// The executor's answer when no bundle has a success record.
fn nothing_applied(_: &BundleHash) -> bool {
    false
}
const NOTHING_APPLIED: fn(&BundleHash) -> bool = nothing_applied;

/// 2026-05-01T00:00:00Z, the floor the tests give the store: their clocks run in May 2026.
const EARLIEST_TRUSTED: i64 = 1_777_593_600;
/// 2026-05-10T00:30:00Z.
const MAY_10: i64 = 1_778_373_000;
/// 2026-06-01T00:00:00Z.
const EXPIRES: i64 = 1_780_272_000;

struct Keys {
    root: SigningKey,
    security: SigningKey,
    ot: SigningKey,
}

fn keys() -> Keys {
    let rng = SystemRandom::new();
    Keys {
        root: SigningKey::generate(Role::Root, &rng).unwrap(),
        security: SigningKey::generate(Role::Security, &rng).unwrap(),
        ot: SigningKey::generate(Role::Ot, &rng).unwrap(),
    }
}

fn write_root(keys: &Keys, path: &Path) {
    let root = TrustRoot {
        version: 1,
        keys: vec![
            keys.root.public_key().clone(),
            keys.security.public_key().clone(),
            keys.ot.public_key().clone(),
        ],
        thresholds: Thresholds {
            root: 1,
            security: 1,
            ot: 1,
        },
        tier_overrides: BTreeMap::new(),
        command_tiers: Default::default(),
    };
    let mut signed = SignedTrustRoot::new(&root).unwrap();
    signed.sign(&keys.root).unwrap();
    std::fs::write(path, signed.encode().unwrap()).unwrap();
}

fn bundle(keys: &Keys, sequence: u64, content: &[u8]) -> Vec<u8> {
    let manifest = BundleManifest {
        bundle_id: BundleId::parse(&format!("fix-{sequence}")).unwrap(),
        stream: StreamName::parse("openssl").unwrap(),
        sequence,
        not_before_unix_s: EARLIEST_TRUSTED,
        expires_unix_s: EXPIRES,
        target: TargetSelector::default(),
        steps: vec![Step::WriteFile {
            path: "etc/motd".into(),
            payload: "motd".into(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
        }],
        payloads: vec![PayloadRef::of_content("motd", content)],
        execution: Default::default(),
    };
    let payloads = vec![Payload {
        name: "motd".into(),
        content: content.to_vec(),
    }];
    let mut file = BundleFile::new(&manifest, payloads).unwrap();
    file.sign(&keys.security).unwrap();
    file.encode().unwrap()
}

fn rejected_rule(outcome: &BundleOutcome) -> &str {
    match outcome {
        BundleOutcome::Rejected { rule, .. } => rule,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn rollback_is_rejected_after_restart() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let root_file = dir.path().join("root.tgrt");
    write_root(&keys, &root_file);
    let state = dir.path().join("state");

    let mut store = TrustStore::open(&state, Some(&root_file), EARLIEST_TRUSTED).unwrap();
    assert_eq!(store.root_version(), Some(1));
    let applied = store
        .receive_bundle(
            &bundle(&keys, 42, b"v42"),
            "default",
            MAY_10,
            &NOTHING_APPLIED,
        )
        .unwrap();
    assert_eq!(applied.outcome, BundleOutcome::Accepted);
    drop(store);

    // The enrolment file is gone after the restart: the pinned copy is what counts.
    std::fs::remove_file(&root_file).unwrap();
    let mut store = TrustStore::open(&state, None, EARLIEST_TRUSTED).unwrap();
    assert_eq!(store.root_version(), Some(1));

    let older = store
        .receive_bundle(
            &bundle(&keys, 40, b"v40"),
            "default",
            MAY_10,
            &NOTHING_APPLIED,
        )
        .unwrap();
    assert_eq!(rejected_rule(&older.outcome), "rollback");

    // Equal sequence and hash without a success record (it failed and was reverted, say):
    // accepted again, so it runs again. With a success record: already applied.
    let again = store
        .receive_bundle(
            &bundle(&keys, 42, b"v42"),
            "default",
            MAY_10,
            &NOTHING_APPLIED,
        )
        .unwrap();
    assert_eq!(again.outcome, BundleOutcome::Accepted);
    let applied_hash = again.bundle_hash.clone();
    let applied_before = |hash: &BundleHash| hash.to_string() == applied_hash;
    let again = store
        .receive_bundle(
            &bundle(&keys, 42, b"v42"),
            "default",
            MAY_10,
            &applied_before,
        )
        .unwrap();
    assert_eq!(again.outcome, BundleOutcome::AlreadyApplied);

    let reused = store
        .receive_bundle(
            &bundle(&keys, 42, b"other"),
            "default",
            MAY_10,
            &NOTHING_APPLIED,
        )
        .unwrap();
    assert_eq!(rejected_rule(&reused.outcome), "sequence-reused");

    let records: Vec<&str> = store
        .records()
        .iter()
        .map(|record| record.outcome.as_str())
        .collect();
    assert_eq!(
        records,
        vec![
            "accepted",
            "rejected",
            "accepted",
            "already-applied",
            "rejected"
        ]
    );
}

#[test]
fn bundle_waits_for_a_trusted_clock() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let root_file = dir.path().join("root.tgrt");
    write_root(&keys, &root_file);
    let state = dir.path().join("state");
    let mut store = TrustStore::open(&state, Some(&root_file), EARLIEST_TRUSTED).unwrap();

    // 1970-01-01T00:00:10Z: a clock whose battery died.
    let record = store
        .receive_bundle(&bundle(&keys, 1, b"v1"), "default", 10, &NOTHING_APPLIED)
        .unwrap();
    assert!(
        matches!(record.outcome, BundleOutcome::Deferred { .. }),
        "{record:?}"
    );
    assert!(store
        .retry_deferred("default", 20, &NOTHING_APPLIED)
        .unwrap()
        .is_empty());

    let retried = store
        .retry_deferred("default", MAY_10, &NOTHING_APPLIED)
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].0.outcome, BundleOutcome::Accepted);
    assert!(
        store
            .retry_deferred("default", MAY_10, &NOTHING_APPLIED)
            .unwrap()
            .is_empty(),
        "kept only once"
    );
}

#[test]
fn without_a_root_every_bundle_is_rejected() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let mut store = TrustStore::open(&dir.path().join("state"), None, EARLIEST_TRUSTED).unwrap();
    let record = store
        .receive_bundle(
            &bundle(&keys, 1, b"v1"),
            "default",
            MAY_10,
            &NOTHING_APPLIED,
        )
        .unwrap();
    assert_eq!(rejected_rule(&record.outcome), "no-trust-root");
    assert_eq!(record.bundle_id, "fix-1");
}

#[test]
fn enrolment_root_must_carry_its_own_signatures() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let root = TrustRoot {
        version: 1,
        keys: vec![
            keys.root.public_key().clone(),
            keys.security.public_key().clone(),
            keys.ot.public_key().clone(),
        ],
        thresholds: Thresholds {
            root: 1,
            security: 1,
            ot: 1,
        },
        tier_overrides: BTreeMap::new(),
        command_tiers: Default::default(),
    };
    let unsigned = SignedTrustRoot::new(&root).unwrap();
    let path = dir.path().join("root.tgrt");
    std::fs::write(&path, unsigned.encode().unwrap()).unwrap();

    let error = TrustStore::open(&dir.path().join("state"), Some(&path), EARLIEST_TRUSTED)
        .err()
        .expect("an unsigned root is not pinned")
        .to_string();
    assert!(error.contains("root.tgrt"), "{error}");
}

#[test]
fn rotated_root_survives_restart() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let root_file = dir.path().join("root.tgrt");
    write_root(&keys, &root_file);
    let state = dir.path().join("state");
    let mut store = TrustStore::open(&state, Some(&root_file), EARLIEST_TRUSTED).unwrap();

    // v2 retires the v1 root key: v1's key signs for the old threshold, the new one for its own.
    let new_root_key = SigningKey::generate(Role::Root, &SystemRandom::new()).unwrap();
    let v2 = TrustRoot {
        version: 2,
        keys: vec![
            new_root_key.public_key().clone(),
            keys.security.public_key().clone(),
            keys.ot.public_key().clone(),
        ],
        thresholds: Thresholds {
            root: 1,
            security: 1,
            ot: 1,
        },
        tier_overrides: BTreeMap::new(),
        command_tiers: Default::default(),
    };
    let mut signed = SignedTrustRoot::new(&v2).unwrap();
    signed.sign(&keys.root).unwrap();
    signed.sign(&new_root_key).unwrap();
    assert_eq!(
        store.receive_root(&signed.encode().unwrap()).unwrap(),
        Ok(2)
    );
    drop(store);

    let store = TrustStore::open(&state, None, EARLIEST_TRUSTED).unwrap();
    assert_eq!(store.root_version(), Some(2));
}

#[test]
fn clock_behind_latest_seen_defers_after_restart() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let root_file = dir.path().join("root.tgrt");
    write_root(&keys, &root_file);
    let state = dir.path().join("state");
    let mut store = TrustStore::open(&state, Some(&root_file), EARLIEST_TRUSTED).unwrap();
    let first = store
        .receive_bundle(
            &bundle(&keys, 1, b"v1"),
            "default",
            MAY_10,
            &NOTHING_APPLIED,
        )
        .unwrap();
    assert_eq!(first.outcome, BundleOutcome::Accepted);
    drop(store);

    // After a restart the clock reads one day earlier than the agent has already seen.
    let mut store = TrustStore::open(&state, None, EARLIEST_TRUSTED).unwrap();
    let behind = store
        .receive_bundle(
            &bundle(&keys, 2, b"v2"),
            "default",
            MAY_10 - 86_400,
            &NOTHING_APPLIED,
        )
        .unwrap();
    match &behind.outcome {
        BundleOutcome::Deferred { reason } => {
            assert!(reason.contains("behind the latest time"), "{reason}")
        }
        other => panic!("expected the bundle to be kept, got {other:?}"),
    }

    let retried = store
        .retry_deferred("default", MAY_10 + 60, &NOTHING_APPLIED)
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].0.outcome, BundleOutcome::Accepted);
}
