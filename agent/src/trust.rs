//! The agent's trust state: the pinned trust root, the high-water mark of every bundle stream,
//! the bundles it accepted or keeps waiting, and its record of each decision.
//!
//! Everything lives below `state_dir/trust` and is written through [`fsutil::write_atomic`]. A
//! high-water mark is on stable storage before the acceptance that raised it is recorded or
//! reported, so a crash can never let an older bundle of the stream through. The verification
//! itself is the protocol crate's; this module reads the clock's verdict from the caller and does
//! the IO around it. It never applies a bundle's steps, but it keeps the outcome the executor
//! reports for each bundle in the same records.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tidegate_protocol::inventory::MAX_BUNDLE_RECORDS;
use tidegate_protocol::trust::{
    verify_bundle, verify_initial_root, verify_root_update, BundleHash, BundleVerdict, ClockTrust,
    HighWater, SignedTrustRoot, StreamName, TrustRoot,
};
use tidegate_protocol::{BundleOutcome, BundleRecord};

use crate::clock::OsClockSync;
use crate::fsutil;

const ROOT_FILE: &str = "root.tgrt";
const HIGH_WATER_FILE: &str = "high-water";
const RECORDS_FILE: &str = "bundles";
const ACCEPTED_DIR: &str = "accepted";
const DEFERRED_DIR: &str = "deferred";
const LATEST_TIME_FILE: &str = "latest-time";

/// The latest time seen is written to disk at most this often, so a clock read every report
/// interval does not mean a disk write every report interval.
const LATEST_TIME_WRITE_INTERVAL_S: i64 = 60;

/// The earliest instant a trustworthy clock can show: the release date of this source, 2026-12-01
/// 00:00:00 UTC. A clock before it has been reset (a dead RTC battery reads 1970), so expiry and
/// validity checks cannot be decided and bundles wait.
pub const EARLIEST_TRUSTED_UNIX_S: i64 = 1_796_083_200;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("invalid trust root {path}: {reason}")]
    InvalidRoot { path: PathBuf, reason: String },
    #[error("invalid agent state file {path}: {reason}; move it away to start that state afresh")]
    InvalidState { path: PathBuf, reason: String },
}

/// The high-water marks as stored: stream name, sequence, manifest hash.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredHighWater {
    streams: Vec<(String, u64, [u8; 32])>,
}

pub struct TrustStore {
    dir: PathBuf,
    root: Option<TrustRoot>,
    high_water: BTreeMap<StreamName, HighWater>,
    records: Vec<BundleRecord>,
    earliest_trusted_unix_s: i64,
    /// The latest clock reading the agent has seen, kept on disk across restarts.
    latest_seen_unix_s: i64,
    latest_written_unix_s: i64,
    /// The operating system's latest report on the clock, or `Unknown` when the configuration
    /// turns the check off.
    os_sync: OsClockSync,
}

/// Decides whether the clock is trustworthy: not before `earliest_trusted_unix_s` (the release
/// date), not before `latest_seen_unix_s` (the latest time the agent has seen and persisted), and
/// not reported unsynchronised by the operating system (`os_sync`).
pub fn clock_trust(
    now_unix_s: i64,
    earliest_trusted_unix_s: i64,
    latest_seen_unix_s: i64,
    os_sync: OsClockSync,
) -> ClockTrust {
    if now_unix_s < earliest_trusted_unix_s {
        ClockTrust::Untrusted {
            reason: format!(
                "the clock reads {now_unix_s} s since the epoch, before the earliest trusted instant {earliest_trusted_unix_s}"
            ),
        }
    } else if now_unix_s < latest_seen_unix_s {
        ClockTrust::Untrusted {
            reason: format!(
                "the clock reads {now_unix_s} s since the epoch, behind the latest time this agent has seen ({latest_seen_unix_s})"
            ),
        }
    } else if os_sync == OsClockSync::Unsynchronised {
        ClockTrust::Untrusted {
            reason: "the operating system reports the clock as not synchronised to a time source"
                .into(),
        }
    } else {
        ClockTrust::Trusted
    }
}

impl TrustStore {
    /// Opens the trust state in `state_dir/trust`. When no root is pinned yet and `enrolment_root`
    /// names a file, that root is checked (it must carry its own root threshold) and pinned.
    pub fn open(
        state_dir: &Path,
        enrolment_root: Option<&Path>,
        earliest_trusted_unix_s: i64,
    ) -> Result<Self, TrustError> {
        let dir = state_dir.join("trust");
        fsutil::create_private_dir(&dir).map_err(|source| TrustError::Write {
            path: dir.clone(),
            source,
        })?;
        let mut store = Self {
            dir,
            root: None,
            high_water: BTreeMap::new(),
            records: Vec::new(),
            earliest_trusted_unix_s,
            latest_seen_unix_s: i64::MIN,
            latest_written_unix_s: i64::MIN,
            os_sync: OsClockSync::Unknown,
        };
        if let Some(latest) = read_state::<i64>(&store.dir.join(LATEST_TIME_FILE))? {
            store.latest_seen_unix_s = latest;
            store.latest_written_unix_s = latest;
        }

        let pinned = store.dir.join(ROOT_FILE);
        match std::fs::read(&pinned) {
            Ok(bytes) => store.root = Some(read_root(&pinned, &bytes)?),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if let Some(path) = enrolment_root {
                    let bytes = std::fs::read(path).map_err(|source| TrustError::Read {
                        path: path.to_owned(),
                        source,
                    })?;
                    let root = read_root(path, &bytes)?;
                    fsutil::write_atomic(&pinned, &bytes, 0o600).map_err(|source| {
                        TrustError::Write {
                            path: pinned.clone(),
                            source,
                        }
                    })?;
                    tracing::info!(version = root.version, path = %path.display(), "pinned the enrolment trust root");
                    store.root = Some(root);
                }
            }
            Err(source) => {
                return Err(TrustError::Read {
                    path: pinned,
                    source,
                })
            }
        }

        let high_water_path = store.dir.join(HIGH_WATER_FILE);
        if let Some(stored) = read_state::<StoredHighWater>(&high_water_path)? {
            for (stream, sequence, hash) in stored.streams {
                let stream =
                    StreamName::parse(&stream).map_err(|error| TrustError::InvalidState {
                        path: high_water_path.clone(),
                        reason: error.to_string(),
                    })?;
                store.high_water.insert(
                    stream,
                    HighWater {
                        sequence,
                        bundle_hash: BundleHash(hash),
                    },
                );
            }
        }
        if let Some(records) = read_state::<Vec<BundleRecord>>(&store.dir.join(RECORDS_FILE))? {
            store.records = records;
        }
        Ok(store)
    }

    /// Records the operating system's report on the clock, read by the caller before each use.
    pub fn set_os_sync(&mut self, os_sync: OsClockSync) {
        self.os_sync = os_sync;
    }

    /// Raises the latest time seen to an instant a trusted source vouches for (the server's
    /// clock, a signed document's issue time), so a clock set back behind it is caught.
    pub fn observe_vouched_time(&mut self, vouched_unix_s: i64) -> Result<(), TrustError> {
        if vouched_unix_s > self.latest_seen_unix_s {
            self.latest_seen_unix_s = vouched_unix_s;
            self.persist_latest_time()?;
        }
        Ok(())
    }

    /// Returns the pinned trust root, if any.
    pub fn root(&self) -> Option<&TrustRoot> {
        self.root.as_ref()
    }

    pub fn root_version(&self) -> Option<u64> {
        self.root.as_ref().map(|root| root.version)
    }

    /// Returns the latest decisions, oldest first.
    pub fn records(&self) -> &[BundleRecord] {
        &self.records
    }

    /// Verifies a bundle file and records the decision. `now_unix_s` is read once by the caller.
    /// `is_applied` returns whether a success record of a bundle hash exists: only then is a bundle
    /// equal to the stream's high-water mark "already applied"; otherwise (it failed and was
    /// reverted, or was rolled back) it is accepted again and runs again.
    pub fn receive_bundle(
        &mut self,
        file: &[u8],
        tier: &str,
        now_unix_s: i64,
        is_applied: &dyn Fn(&BundleHash) -> bool,
    ) -> Result<BundleRecord, TrustError> {
        let clock = self.observe_clock(now_unix_s)?;
        let Some(root) = &self.root else {
            let record = rejected_record(
                file,
                "no-trust-root",
                "the agent has no trust root pinned; set trust_root_file and restart it",
                now_unix_s,
            );
            tracing::warn!(bundle.id = %record.bundle_id, "rejected a bundle: no trust root is pinned");
            self.push_record(record.clone())?;
            return Ok(record);
        };
        let verdict = verify_bundle(file, root, tier, now_unix_s, &clock, &self.high_water);
        let record = match verdict {
            BundleVerdict::Accepted {
                manifest,
                bundle_hash,
                ..
            } => {
                // The mark goes to stable storage before anything reports the acceptance.
                self.high_water.insert(
                    manifest.stream.clone(),
                    HighWater {
                        sequence: manifest.sequence,
                        bundle_hash,
                    },
                );
                self.persist_high_water()?;
                let path = self
                    .dir
                    .join(ACCEPTED_DIR)
                    .join(format!("{}.tgbd", manifest.bundle_id));
                self.save_file(&path, file)?;
                tracing::info!(bundle.id = %manifest.bundle_id, stream = %manifest.stream, sequence = manifest.sequence, "accepted a bundle");
                record(&manifest, bundle_hash, BundleOutcome::Accepted, now_unix_s)
            }
            BundleVerdict::AlreadyApplied {
                manifest,
                bundle_hash,
            } if !is_applied(&bundle_hash) => {
                let path = self
                    .dir
                    .join(ACCEPTED_DIR)
                    .join(format!("{}.tgbd", manifest.bundle_id));
                self.save_file(&path, file)?;
                tracing::info!(bundle.id = %manifest.bundle_id, "accepted a bundle again: it has no success record");
                record(&manifest, bundle_hash, BundleOutcome::Accepted, now_unix_s)
            }
            BundleVerdict::AlreadyApplied {
                manifest,
                bundle_hash,
            } => {
                tracing::info!(bundle.id = %manifest.bundle_id, "bundle already accepted before");
                record(
                    &manifest,
                    bundle_hash,
                    BundleOutcome::AlreadyApplied,
                    now_unix_s,
                )
            }
            BundleVerdict::Deferred {
                manifest,
                bundle_hash,
                reason,
            } => {
                let path = self
                    .dir
                    .join(DEFERRED_DIR)
                    .join(format!("{bundle_hash}.tgbd"));
                self.save_file(&path, file)?;
                tracing::warn!(bundle.id = %manifest.bundle_id, %reason, "keeping a bundle until the clock is trusted");
                record(
                    &manifest,
                    bundle_hash,
                    BundleOutcome::Deferred { reason },
                    now_unix_s,
                )
            }
            BundleVerdict::Rejected { rule, detail } => {
                let record = rejected_record(file, rule.code(), &detail, now_unix_s);
                tracing::warn!(bundle.id = %record.bundle_id, rule = rule.code(), %detail, "rejected a bundle");
                record
            }
        };
        self.push_record(record.clone())?;
        Ok(record)
    }

    /// Verifies the kept bundles again, for when the clock has become trustworthy. Returns the new
    /// records.
    pub fn retry_deferred(
        &mut self,
        tier: &str,
        now_unix_s: i64,
        is_applied: &dyn Fn(&BundleHash) -> bool,
    ) -> Result<Vec<(BundleRecord, Vec<u8>)>, TrustError> {
        if matches!(
            self.observe_clock(now_unix_s)?,
            ClockTrust::Untrusted { .. }
        ) {
            return Ok(Vec::new());
        }
        let dir = self.dir.join(DEFERRED_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "tgbd"))
            .collect();
        paths.sort();
        let mut records = Vec::new();
        for path in paths {
            let file = std::fs::read(&path).map_err(|source| TrustError::Read {
                path: path.clone(),
                source,
            })?;
            let record = self.receive_bundle(&file, tier, now_unix_s, is_applied)?;
            records.push((record, file));
            let _ = std::fs::remove_file(&path);
        }
        Ok(records)
    }

    /// Moves to the next trust root version. Returns the new version, or the reason it was
    /// rejected; a rejected root leaves the pinned one in place.
    pub fn receive_root(&mut self, file: &[u8]) -> Result<Result<u64, String>, TrustError> {
        let offered = match SignedTrustRoot::decode(file) {
            Ok(offered) => offered,
            Err(error) => return Ok(Err(error.to_string())),
        };
        let verified = match &self.root {
            Some(current) => verify_root_update(current, &offered),
            None => verify_initial_root(&offered),
        };
        match verified {
            Ok(root) => {
                let path = self.dir.join(ROOT_FILE);
                fsutil::write_atomic(&path, file, 0o600)
                    .map_err(|source| TrustError::Write { path, source })?;
                let version = root.version;
                tracing::info!(version, "moved to a new trust root version");
                self.root = Some(root);
                Ok(Ok(version))
            }
            Err(error) => {
                tracing::warn!(%error, "rejected a trust root");
                Ok(Err(error.to_string()))
            }
        }
    }

    /// Judges a clock reading and, when it is trusted, records it as the latest time seen. A
    /// reading behind the latest one is untrusted and leaves the record alone.
    pub fn observe_clock(&mut self, now_unix_s: i64) -> Result<ClockTrust, TrustError> {
        let trust = clock_trust(
            now_unix_s,
            self.earliest_trusted_unix_s,
            self.latest_seen_unix_s,
            self.os_sync,
        );
        if matches!(trust, ClockTrust::Trusted) {
            self.latest_seen_unix_s = self.latest_seen_unix_s.max(now_unix_s);
            if self.latest_seen_unix_s
                >= self
                    .latest_written_unix_s
                    .saturating_add(LATEST_TIME_WRITE_INTERVAL_S)
            {
                self.persist_latest_time()?;
            }
        }
        Ok(trust)
    }

    fn persist_latest_time(&mut self) -> Result<(), TrustError> {
        let bytes = postcard::to_allocvec(&self.latest_seen_unix_s).expect("an i64 always encodes");
        let path = self.dir.join(LATEST_TIME_FILE);
        fsutil::write_atomic(&path, &bytes, 0o600)
            .map_err(|source| TrustError::Write { path, source })?;
        self.latest_written_unix_s = self.latest_seen_unix_s;
        Ok(())
    }

    /// Sets the outcome and step records of the newest record of `bundle_hash`, or adds a record
    /// when there is none. Setting the same state twice changes nothing, so a restart may
    /// repeat it.
    pub fn update_record(
        &mut self,
        bundle_hash: &BundleHash,
        fallback_id: &str,
        outcome: BundleOutcome,
        steps: Vec<tidegate_protocol::StepRecord>,
        now_unix_s: i64,
    ) -> Result<(), TrustError> {
        let hash = bundle_hash.to_string();
        match self
            .records
            .iter_mut()
            .rev()
            .find(|record| record.bundle_hash == hash)
        {
            Some(record) => {
                if record.outcome == outcome && record.steps == steps {
                    return Ok(());
                }
                record.outcome = outcome;
                record.steps = steps;
                record.decided_at_unix_s = now_unix_s;
                self.persist_records()
            }
            None => self.push_record(BundleRecord {
                bundle_id: fallback_id.to_owned(),
                stream: String::new(),
                sequence: 0,
                bundle_hash: hash,
                outcome,
                decided_at_unix_s: now_unix_s,
                steps,
            }),
        }
    }

    /// Reads the kept file of an accepted bundle, if it is still there.
    pub fn accepted_file(&self, bundle_id: &str) -> Option<Vec<u8>> {
        std::fs::read(
            self.dir
                .join(ACCEPTED_DIR)
                .join(format!("{bundle_id}.tgbd")),
        )
        .ok()
    }

    /// Returns whether the root pinned now allows commands that bundles supply for `tier`.
    pub fn allows_commands(&self, tier: &str) -> bool {
        self.root
            .as_ref()
            .is_some_and(|root| root.allows_commands(tier))
    }

    fn persist_records(&self) -> Result<(), TrustError> {
        let bytes = postcard::to_allocvec(&self.records).expect("records always encode");
        let path = self.dir.join(RECORDS_FILE);
        fsutil::write_atomic(&path, &bytes, 0o600)
            .map_err(|source| TrustError::Write { path, source })
    }

    fn push_record(&mut self, record: BundleRecord) -> Result<(), TrustError> {
        self.records.push(record);
        if self.records.len() > MAX_BUNDLE_RECORDS {
            let excess = self.records.len() - MAX_BUNDLE_RECORDS;
            self.records.drain(..excess);
        }
        self.persist_records()
    }

    fn persist_high_water(&self) -> Result<(), TrustError> {
        let stored = StoredHighWater {
            streams: self
                .high_water
                .iter()
                .map(|(stream, mark)| (stream.to_string(), mark.sequence, mark.bundle_hash.0))
                .collect(),
        };
        let bytes = postcard::to_allocvec(&stored).expect("high-water marks always encode");
        let path = self.dir.join(HIGH_WATER_FILE);
        fsutil::write_atomic(&path, &bytes, 0o600)
            .map_err(|source| TrustError::Write { path, source })
    }

    fn save_file(&self, path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
        if let Some(parent) = path.parent() {
            fsutil::create_private_dir(parent).map_err(|source| TrustError::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        fsutil::write_atomic(path, bytes, 0o600).map_err(|source| TrustError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

fn read_root(path: &Path, bytes: &[u8]) -> Result<TrustRoot, TrustError> {
    let invalid = |reason: String| TrustError::InvalidRoot {
        path: path.to_owned(),
        reason,
    };
    let signed = SignedTrustRoot::decode(bytes).map_err(|error| invalid(error.to_string()))?;
    verify_initial_root(&signed).map_err(|error| invalid(error.to_string()))
}

fn read_state<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, TrustError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|error| TrustError::InvalidState {
                    path: path.to_owned(),
                    reason: error.to_string(),
                })
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TrustError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn record(
    manifest: &tidegate_protocol::trust::BundleManifest,
    hash: BundleHash,
    outcome: BundleOutcome,
    now_unix_s: i64,
) -> BundleRecord {
    BundleRecord {
        bundle_id: manifest.bundle_id.to_string(),
        stream: manifest.stream.to_string(),
        sequence: manifest.sequence,
        bundle_hash: hash.to_string(),
        outcome,
        decided_at_unix_s: now_unix_s,
        steps: Vec::new(),
    }
}

/// Builds the record of a rejected bundle. The file is untrusted, so its manifest is read only to name the
/// bundle in the record, and a file whose manifest does not decode is named by its content hash.
fn rejected_record(file: &[u8], rule: &str, detail: &str, now_unix_s: i64) -> BundleRecord {
    let (bundle_id, stream, sequence, bundle_hash) =
        match tidegate_protocol::trust::inspect_bundle(file) {
            Ok(inspection) => (
                inspection.manifest.bundle_id.to_string(),
                inspection.manifest.stream.to_string(),
                inspection.manifest.sequence,
                inspection.bundle_hash.to_string(),
            ),
            Err(_) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, file);
                let hash: String = digest
                    .as_ref()
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect();
                ("unknown".into(), String::new(), 0, hash)
            }
        };
    BundleRecord {
        bundle_id,
        stream,
        sequence,
        bundle_hash,
        outcome: BundleOutcome::Rejected {
            rule: rule.to_owned(),
            detail: detail.to_owned(),
        },
        decided_at_unix_s: now_unix_s,
        steps: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: i64 = EARLIEST_TRUSTED_UNIX_S;

    #[test]
    fn clock_is_trusted_from_the_release_date_on() {
        let trust = |now| clock_trust(now, RELEASE, i64::MIN, OsClockSync::Unknown);
        assert!(matches!(trust(RELEASE - 1), ClockTrust::Untrusted { .. }));
        assert_eq!(trust(RELEASE), ClockTrust::Trusted);
    }

    #[test]
    fn clock_behind_the_latest_time_seen_is_untrusted() {
        let latest = RELEASE + 86_400;
        let trust = |now| clock_trust(now, RELEASE, latest, OsClockSync::Synchronised);
        assert!(matches!(trust(latest - 1), ClockTrust::Untrusted { .. }));
        assert_eq!(trust(latest), ClockTrust::Trusted);
    }

    #[test]
    fn clock_the_kernel_calls_unsynchronised_is_untrusted() {
        let ClockTrust::Untrusted { reason } =
            clock_trust(RELEASE + 10, RELEASE, RELEASE, OsClockSync::Unsynchronised)
        else {
            panic!("an unsynchronised clock was trusted");
        };
        assert!(reason.contains("not synchronised"), "{reason}");
    }

    #[test]
    fn vouched_time_survives_restart() {
        let state = tempfile::tempdir().unwrap();
        let vouched = RELEASE + 30 * 86_400;
        {
            let mut store = TrustStore::open(state.path(), None, RELEASE).unwrap();
            store.observe_vouched_time(vouched).unwrap();
        }
        let mut store = TrustStore::open(state.path(), None, RELEASE).unwrap();
        assert!(matches!(
            store.observe_clock(vouched - 60).unwrap(),
            ClockTrust::Untrusted { .. }
        ));
        assert_eq!(store.observe_clock(vouched).unwrap(), ClockTrust::Trusted);
    }
}
