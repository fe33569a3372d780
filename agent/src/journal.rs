//! The write-ahead journal: the agent's record of every bundle step it starts and finishes, kept
//! below `state_dir/journal`.
//!
//! The journal owns three things. The record file is `journal.log`. The bundle files of the bundles
//! it ran are kept as `bundles/HASH.tgbd`, so an interrupted bundle can be finished or reverted
//! after a restart. Each step gets a backup directory `backups/HASH/RUN-STEP`, where its `backup`
//! puts what its `revert` needs. It does not decide anything: the executor appends entries and
//! reads back [`BundleRun`]s.
//!
//! # Record file
//!
//! The file is append-only. Each record is a 4-byte little-endian length `n`, 8 bytes of the
//! SHA-256 of the body, and an `n`-byte body: postcard of [`JournalEntry`]. Every append is
//! flushed with `fsync` before [`Journal::append`] returns, so an entry the executor wrote before a
//! step's `apply` is on stable storage when the change starts. A crash while appending leaves a
//! torn last record (short, or with a checksum that does not match); [`Journal::open`] logs a
//! warning, ignores it and cuts the file back to the last whole record. A damaged record before
//! the last one is an error: the journal no longer says what happened, and a person must look.
//!
//! # Limits
//!
//! The record file and the backups grow with every bundle run; nothing compacts or removes them,
//! so a rollback can reach every bundle ever applied. The file is read whole at start-up.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::{BundleHash, Step};
use tidegate_protocol::BundleOutcome;

use crate::fsutil;
use crate::steps::PriorState;

const LOG_FILE: &str = "journal.log";
const BUNDLES_DIR: &str = "bundles";
const BACKUPS_DIR: &str = "backups";
const HEADER_BYTES: usize = 12;

/// Maximum size of one record body. A record contains one step and its prior state, which are
/// bounded by the manifest limits, so anything larger is damage, not data.
const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create journal directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read journal {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write journal {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "journal {path} is damaged at byte {offset}, before its last record: {reason}; the \
         agent cannot tell what it did, so a person must compare the host with the journal and \
         move the file away"
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "journal {path} is in use by another agent process; stop it (or wait for it) and try again"
    )]
    InUse { path: PathBuf },
    #[error("cannot encode a journal entry: {0}")]
    Encode(postcard::Error),
}

/// One journal record. Variants are only ever appended, because old journals must stay readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JournalEntry {
    /// A run of a bundle starts; its bundle file is already under `bundles/`. A bundle that runs
    /// again (after it failed and was reverted) starts a new run with a higher `run`.
    BundleStarted {
        bundle_hash: BundleHash,
        run: u32,
        bundle_id: String,
        steps: Vec<Step>,
        at_unix_s: i64,
    },
    /// Written and flushed before the step's `apply`: everything `revert` needs.
    StepBegun {
        bundle_hash: BundleHash,
        index: u32,
        step: Step,
        prior: PriorState,
        backup_dir: PathBuf,
        at_unix_s: i64,
    },
    StepApplied {
        bundle_hash: BundleHash,
        index: u32,
        at_unix_s: i64,
    },
    StepVerified {
        bundle_hash: BundleHash,
        index: u32,
        at_unix_s: i64,
    },
    StepFailed {
        bundle_hash: BundleHash,
        index: u32,
        detail: String,
        at_unix_s: i64,
    },
    RevertBegun {
        bundle_hash: BundleHash,
        index: u32,
        at_unix_s: i64,
    },
    RevertDone {
        bundle_hash: BundleHash,
        index: u32,
        at_unix_s: i64,
    },
    RevertFailed {
        bundle_hash: BundleHash,
        index: u32,
        detail: String,
        at_unix_s: i64,
    },
    /// The run ended with `outcome` (applied, reverted or revert failed).
    BundleFinished {
        bundle_hash: BundleHash,
        outcome: BundleOutcome,
        at_unix_s: i64,
    },
    RollbackBegun {
        bundle_hash: BundleHash,
        at_unix_s: i64,
    },
    /// The rollback ended with `outcome` (rolled back or rollback failed).
    RollbackFinished {
        bundle_hash: BundleHash,
        outcome: BundleOutcome,
        at_unix_s: i64,
    },
}

impl JournalEntry {
    fn bundle_hash(&self) -> BundleHash {
        match self {
            Self::BundleStarted { bundle_hash, .. }
            | Self::StepBegun { bundle_hash, .. }
            | Self::StepApplied { bundle_hash, .. }
            | Self::StepVerified { bundle_hash, .. }
            | Self::StepFailed { bundle_hash, .. }
            | Self::RevertBegun { bundle_hash, .. }
            | Self::RevertDone { bundle_hash, .. }
            | Self::RevertFailed { bundle_hash, .. }
            | Self::BundleFinished { bundle_hash, .. }
            | Self::RollbackBegun { bundle_hash, .. }
            | Self::RollbackFinished { bundle_hash, .. } => *bundle_hash,
        }
    }
}

/// The journal's record of one step of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    pub index: u32,
    pub step: Step,
    pub prior: PriorState,
    pub backup_dir: PathBuf,
    pub begun_at_unix_s: i64,
    pub applied: bool,
    pub verified: bool,
    /// The reason apply or verify failed.
    pub failed: Option<String>,
    pub revert_begun: bool,
    pub reverted: bool,
    pub revert_failed: Option<String>,
    /// When the step reached its latest state.
    pub last_at_unix_s: i64,
}

/// The latest run of one bundle, folded from its journal entries.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleRun {
    pub bundle_hash: BundleHash,
    pub run: u32,
    pub bundle_id: String,
    pub steps: Vec<Step>,
    pub started_at_unix_s: i64,
    /// The steps that got as far as their `StepBegun` entry, in step order.
    pub begun: Vec<StepState>,
    /// `None` while the run is unfinished (the agent stopped during it).
    pub finished: Option<BundleOutcome>,
    pub rollback_begun: bool,
    pub rollback_finished: Option<BundleOutcome>,
}

impl BundleRun {
    fn new(
        bundle_hash: BundleHash,
        run: u32,
        bundle_id: String,
        steps: Vec<Step>,
        at: i64,
    ) -> Self {
        Self {
            bundle_hash,
            run,
            bundle_id,
            steps,
            started_at_unix_s: at,
            begun: Vec::new(),
            finished: None,
            rollback_begun: false,
            rollback_finished: None,
        }
    }

    fn step_mut(&mut self, index: u32) -> Option<&mut StepState> {
        self.begun.iter_mut().find(|state| state.index == index)
    }

    /// The outcome the server should see now: the rollback's if one began, else the run's.
    pub fn current_outcome(&self) -> BundleOutcome {
        if let Some(outcome) = &self.rollback_finished {
            return outcome.clone();
        }
        if let Some(outcome) = &self.finished {
            return outcome.clone();
        }
        let step = self.begun.last().map_or(0, |state| state.index);
        BundleOutcome::Running { step }
    }

    fn fold(&mut self, entry: &JournalEntry) {
        match entry {
            JournalEntry::BundleStarted { .. } => {}
            JournalEntry::StepBegun {
                index,
                step,
                prior,
                backup_dir,
                at_unix_s,
                ..
            } => {
                self.begun.retain(|state| state.index != *index);
                self.begun.push(StepState {
                    index: *index,
                    step: step.clone(),
                    prior: prior.clone(),
                    backup_dir: backup_dir.clone(),
                    begun_at_unix_s: *at_unix_s,
                    applied: false,
                    verified: false,
                    failed: None,
                    revert_begun: false,
                    reverted: false,
                    revert_failed: None,
                    last_at_unix_s: *at_unix_s,
                });
                self.begun.sort_by_key(|state| state.index);
            }
            JournalEntry::StepApplied {
                index, at_unix_s, ..
            } => {
                if let Some(state) = self.step_mut(*index) {
                    state.applied = true;
                    state.last_at_unix_s = *at_unix_s;
                }
            }
            JournalEntry::StepVerified {
                index, at_unix_s, ..
            } => {
                if let Some(state) = self.step_mut(*index) {
                    state.verified = true;
                    state.last_at_unix_s = *at_unix_s;
                }
            }
            JournalEntry::StepFailed {
                index,
                detail,
                at_unix_s,
                ..
            } => {
                if let Some(state) = self.step_mut(*index) {
                    state.failed = Some(detail.clone());
                    state.last_at_unix_s = *at_unix_s;
                }
            }
            JournalEntry::RevertBegun {
                index, at_unix_s, ..
            } => {
                if let Some(state) = self.step_mut(*index) {
                    state.revert_begun = true;
                    state.reverted = false;
                    state.revert_failed = None;
                    state.last_at_unix_s = *at_unix_s;
                }
            }
            JournalEntry::RevertDone {
                index, at_unix_s, ..
            } => {
                if let Some(state) = self.step_mut(*index) {
                    state.reverted = true;
                    state.last_at_unix_s = *at_unix_s;
                }
            }
            JournalEntry::RevertFailed {
                index,
                detail,
                at_unix_s,
                ..
            } => {
                if let Some(state) = self.step_mut(*index) {
                    state.revert_failed = Some(detail.clone());
                    state.last_at_unix_s = *at_unix_s;
                }
            }
            JournalEntry::BundleFinished { outcome, .. } => self.finished = Some(outcome.clone()),
            JournalEntry::RollbackBegun { .. } => {
                self.rollback_begun = true;
                self.rollback_finished = None;
            }
            JournalEntry::RollbackFinished { outcome, .. } => {
                self.rollback_finished = Some(outcome.clone())
            }
        }
    }
}

/// The open journal: the record file, kept open for appends, and the runs folded from it.
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// Held for as long as the journal is open, so that a second process (the daemon and a
    /// local `apply`, say) cannot write the same journal at once. The OS releases it when the
    /// process ends, also after SIGKILL.
    _lock: File,
    runs: BTreeMap<BundleHash, BundleRun>,
}

impl Journal {
    /// Opens `state_dir/journal`, creating it when missing, and reads every record. A torn last
    /// record is cut off with a warning.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let dir = state_dir.join("journal");
        for path in [dir.clone(), dir.join(BUNDLES_DIR), dir.join(BACKUPS_DIR)] {
            fsutil::create_private_dir(&path)
                .map_err(|source| JournalError::CreateDir { path, source })?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| JournalError::Write {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::InUse { path: dir.clone() })
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(JournalError::Write {
                    path: lock_path,
                    source,
                })
            }
        }

        let path = dir.join(LOG_FILE);
        let read_error = |source| JournalError::Read {
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut file) => {
                file.read_to_end(&mut bytes).map_err(read_error)?;
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(read_error(error)),
        }
        let (entries, whole_len) = parse_records(&path, &bytes)?;

        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(|source| JournalError::Write {
            path: path.clone(),
            source,
        })?;
        if whole_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                torn_bytes = bytes.len() - whole_len,
                "ignoring a torn last journal record: the agent stopped while writing it"
            );
            file.set_len(whole_len as u64)
                .and_then(|()| file.sync_all())
                .map_err(|source| JournalError::Write {
                    path: path.clone(),
                    source,
                })?;
        }
        fsutil::sync_dir(&dir).map_err(|source| JournalError::Write {
            path: dir.clone(),
            source,
        })?;

        let mut journal = Self {
            dir,
            file,
            _lock: lock,
            runs: BTreeMap::new(),
        };
        for entry in &entries {
            journal.fold(entry);
        }
        Ok(journal)
    }

    /// Reads the runs of the journal in `state_dir` without changing anything: no directory is
    /// created and a torn last record is left in place, so this is safe while the daemon writes.
    pub fn read_runs(state_dir: &Path) -> Result<Vec<BundleRun>, JournalError> {
        let path = state_dir.join("journal").join(LOG_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(JournalError::Read { path, source }),
        };
        let (entries, _) = parse_records(&path, &bytes)?;
        let mut runs = BTreeMap::new();
        for entry in &entries {
            fold_into(&mut runs, entry);
        }
        Ok(runs.into_values().collect())
    }

    fn fold(&mut self, entry: &JournalEntry) {
        fold_into(&mut self.runs, entry);
    }

    /// Appends `entry` and flushes it to stable storage before returning.
    pub fn append(&mut self, entry: &JournalEntry) -> Result<(), JournalError> {
        let body = postcard::to_allocvec(entry).map_err(JournalError::Encode)?;
        let mut record = Vec::with_capacity(HEADER_BYTES + body.len());
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(&body));
        record.extend_from_slice(&body);
        let path = self.dir.join(LOG_FILE);
        self.file
            .write_all(&record)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalError::Write { path, source })?;
        self.fold(entry);
        Ok(())
    }

    /// Returns the latest run of a bundle.
    pub fn run(&self, bundle_hash: &BundleHash) -> Option<&BundleRun> {
        self.runs.get(bundle_hash)
    }

    /// Returns the latest run of every bundle in the journal.
    pub fn runs(&self) -> impl Iterator<Item = &BundleRun> {
        self.runs.values()
    }

    /// Returns whether the latest run of the bundle applied successfully and has not been rolled
    /// back. Only this makes a second delivery of the same bundle a no-op.
    pub fn is_applied(&self, bundle_hash: &BundleHash) -> bool {
        self.runs
            .get(bundle_hash)
            .is_some_and(|run| run.finished == Some(BundleOutcome::Applied) && !run.rollback_begun)
    }

    /// Returns the run number the next run of the bundle gets.
    pub fn next_run_number(&self, bundle_hash: &BundleHash) -> u32 {
        self.runs
            .get(bundle_hash)
            .map_or(1, |run| run.run.saturating_add(1))
    }

    /// Stores the bundle file so an interrupted run can be finished or reverted after a restart.
    pub fn keep_bundle_file(
        &self,
        bundle_hash: &BundleHash,
        file: &[u8],
    ) -> Result<(), JournalError> {
        let path = self.bundle_file_path(bundle_hash);
        fsutil::write_atomic(&path, file, 0o600)
            .map_err(|source| JournalError::Write { path, source })
    }

    /// Reads a bundle file kept by [`Journal::keep_bundle_file`].
    pub fn bundle_file(&self, bundle_hash: &BundleHash) -> Result<Vec<u8>, JournalError> {
        let path = self.bundle_file_path(bundle_hash);
        fs::read(&path).map_err(|source| JournalError::Read { path, source })
    }

    fn bundle_file_path(&self, bundle_hash: &BundleHash) -> PathBuf {
        self.dir
            .join(BUNDLES_DIR)
            .join(format!("{bundle_hash}.tgbd"))
    }

    /// Creates an empty backup directory for one step of one run, removing what an earlier,
    /// interrupted attempt at the same step left there.
    pub fn make_backup_dir(
        &self,
        bundle_hash: &BundleHash,
        run: u32,
        index: u32,
    ) -> Result<PathBuf, JournalError> {
        let path = self
            .dir
            .join(BACKUPS_DIR)
            .join(bundle_hash.to_string())
            .join(format!("{run}-{index}"));
        if path.exists() {
            fs::remove_dir_all(&path).map_err(|source| JournalError::Write {
                path: path.clone(),
                source,
            })?;
        }
        fsutil::create_private_dir(&path).map_err(|source| JournalError::CreateDir {
            path: path.clone(),
            source,
        })?;
        if let Some(parent) = path.parent() {
            fsutil::sync_dir(parent).map_err(|source| JournalError::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        Ok(path)
    }

    /// Returns the journal directory, for display.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Folds one entry into the runs: a `BundleStarted` starts a new run of its bundle, and every
/// other entry updates the latest run of its bundle.
fn fold_into(runs: &mut BTreeMap<BundleHash, BundleRun>, entry: &JournalEntry) {
    if let JournalEntry::BundleStarted {
        bundle_hash,
        run,
        bundle_id,
        steps,
        at_unix_s,
    } = entry
    {
        runs.insert(
            *bundle_hash,
            BundleRun::new(
                *bundle_hash,
                *run,
                bundle_id.clone(),
                steps.clone(),
                *at_unix_s,
            ),
        );
        return;
    }
    if let Some(run) = runs.get_mut(&entry.bundle_hash()) {
        run.fold(entry);
    }
}

fn checksum(body: &[u8]) -> [u8; 8] {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest.as_ref()[..8]);
    out
}

/// Parses the records of a journal file. Returns the entries and the length of the whole records;
/// a torn last record lies beyond that length. Damage before the last record is an error.
fn parse_records(path: &Path, bytes: &[u8]) -> Result<(Vec<JournalEntry>, usize), JournalError> {
    let mut entries = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let torn = |reason: &str| -> Result<(Vec<JournalEntry>, usize), JournalError> {
            Err(JournalError::Damaged {
                path: path.to_owned(),
                offset: offset as u64,
                reason: reason.to_owned(),
            })
        };
        if rest.len() < HEADER_BYTES {
            // A header cut short can only be the last record.
            break;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let end = HEADER_BYTES.saturating_add(len);
        if len > MAX_RECORD_BYTES {
            // A length beyond the limit at the very end is a torn header; anywhere else, damage.
            if is_last_possible(rest, end) {
                break;
            }
            return torn("a record length beyond the limit");
        }
        if rest.len() < end {
            break;
        }
        let body = &rest[HEADER_BYTES..end];
        if checksum(body) != rest[4..HEADER_BYTES] {
            if end == rest.len() {
                break;
            }
            return torn("a record checksum does not match");
        }
        match postcard::from_bytes::<JournalEntry>(body) {
            Ok(entry) => entries.push(entry),
            Err(error) => return torn(&format!("a record does not decode: {error}")),
        }
        offset += end;
    }
    Ok((entries, offset))
}

fn is_last_possible(rest: &[u8], end: usize) -> bool {
    end >= rest.len()
}

/// Returns a prior state for tests of the journal and the executor, kept in one place because the step
/// types define the variants.
#[cfg(test)]
pub(crate) fn test_prior_state() -> PriorState {
    PriorState::Command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(byte: u8) -> BundleHash {
        BundleHash([byte; 32])
    }

    fn started(byte: u8) -> JournalEntry {
        JournalEntry::BundleStarted {
            bundle_hash: hash(byte),
            run: 1,
            bundle_id: "motd".into(),
            steps: vec![Step::LockAccount { user: "bob".into() }],
            at_unix_s: 100,
        }
    }

    fn begun(byte: u8, index: u32) -> JournalEntry {
        JournalEntry::StepBegun {
            bundle_hash: hash(byte),
            index,
            step: Step::LockAccount { user: "bob".into() },
            prior: test_prior_state(),
            backup_dir: PathBuf::from("/backup"),
            at_unix_s: 101,
        }
    }

    #[test]
    fn entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.append(&started(1)).unwrap();
            journal.append(&begun(1, 0)).unwrap();
            journal
                .append(&JournalEntry::BundleFinished {
                    bundle_hash: hash(1),
                    outcome: BundleOutcome::Applied,
                    at_unix_s: 102,
                })
                .unwrap();
        }
        let journal = Journal::open(dir.path()).unwrap();
        let run = journal.run(&hash(1)).unwrap();
        assert_eq!(run.begun.len(), 1);
        assert_eq!(run.finished, Some(BundleOutcome::Applied));
        assert!(journal.is_applied(&hash(1)));
        assert_eq!(journal.next_run_number(&hash(1)), 2);
    }

    #[test]
    fn torn_last_record_is_ignored_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.append(&started(1)).unwrap();
            journal.append(&begun(1, 0)).unwrap();
        }
        let path = dir.path().join("journal").join(LOG_FILE);
        let whole = fs::read(&path).unwrap();
        // Cut the second record in the middle of its body, as a crash during the write would.
        let first_len = HEADER_BYTES + u32::from_le_bytes(whole[..4].try_into().unwrap()) as usize;
        let cut = first_len + HEADER_BYTES + 3;
        fs::write(&path, &whole[..cut]).unwrap();

        let mut journal = Journal::open(dir.path()).unwrap();
        let run = journal.run(&hash(1)).unwrap();
        assert!(run.begun.is_empty());
        assert_eq!(fs::metadata(&path).unwrap().len(), first_len as u64);

        // Appending after the cut gives a readable journal again.
        journal.append(&begun(1, 0)).unwrap();
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.run(&hash(1)).unwrap().begun.len(), 1);
    }

    #[test]
    fn read_runs_leaves_torn_record_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.append(&started(1)).unwrap();
        }
        let path = dir.path().join("journal").join(LOG_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[7, 0, 0]).unwrap();
        drop(file);
        let length = fs::metadata(&path).unwrap().len();

        let runs = Journal::read_runs(dir.path()).unwrap();

        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].bundle_id, "motd");
        assert_eq!(fs::metadata(&path).unwrap().len(), length);
        let missing = tempfile::tempdir().unwrap();
        assert!(Journal::read_runs(missing.path()).unwrap().is_empty());
        assert!(!missing.path().join("journal").exists());
    }

    #[test]
    fn second_open_is_rejected_while_first_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let first = Journal::open(dir.path()).unwrap();
        let error = Journal::open(dir.path()).err().unwrap();
        assert!(matches!(error, JournalError::InUse { .. }), "{error}");
        drop(first);
        assert!(Journal::open(dir.path()).is_ok());
    }

    #[test]
    fn damaged_middle_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.append(&started(1)).unwrap();
            journal.append(&begun(1, 0)).unwrap();
        }
        let path = dir.path().join("journal").join(LOG_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 1] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let error = Journal::open(dir.path()).err().unwrap();
        assert!(
            matches!(error, JournalError::Damaged { offset: 0, .. }),
            "{error}"
        );
    }

    #[test]
    fn torn_header_alone_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.append(&started(1)).unwrap();
        }
        let path = dir.path().join("journal").join(LOG_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0xff, 0xff, 0xff]).unwrap();
        drop(file);
        let journal = Journal::open(dir.path()).unwrap();
        assert!(journal.run(&hash(1)).is_some());
    }

    #[test]
    fn rollback_clears_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.append(&started(2)).unwrap();
        journal
            .append(&JournalEntry::BundleFinished {
                bundle_hash: hash(2),
                outcome: BundleOutcome::Applied,
                at_unix_s: 5,
            })
            .unwrap();
        assert!(journal.is_applied(&hash(2)));
        journal
            .append(&JournalEntry::RollbackBegun {
                bundle_hash: hash(2),
                at_unix_s: 6,
            })
            .unwrap();
        assert!(!journal.is_applied(&hash(2)));
        assert_eq!(
            journal.run(&hash(2)).unwrap().current_outcome(),
            BundleOutcome::Applied
        );
    }
}
