//! The agent's maintenance-window schedules: the signed schedule of its tier and, when the agent
//! has a site, the one of its site, which takes precedence.
//!
//! This module owns the files below `state_dir/schedules`: the current schedule of each target
//! byte for byte as OT signed it, and schedules kept while the clock is untrusted. It verifies
//! every schedule against the pinned trust root before keeping it, and never takes a version
//! lower than or equal to the one it holds. A stored schedule was verified when it arrived, so
//! at start-up it is only decoded: an untrusted clock at boot must not cost the agent its
//! windows. It decides nothing about bundles: the gate reads the governing calendar from it.

use std::io;
use std::path::{Path, PathBuf};

use tidegate_protocol::trust::{
    verify_schedule, ClockTrust, ScheduleDocument, ScheduleHash, ScheduleVerdict, SignedSchedule,
    TrustRoot,
};
use tidegate_protocol::window::Calendar;

use crate::fsutil;

const TIER_FILE: &str = "tier.tgws";
const DEFERRED_DIR: &str = "deferred";

#[derive(Debug, thiserror::Error)]
pub enum ScheduleStoreError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "invalid stored schedule {path}: {reason}; move it away and publish the schedule again"
    )]
    InvalidState { path: PathBuf, reason: String },
}

/// A schedule the agent holds.
#[derive(Debug, Clone)]
pub struct HeldSchedule {
    pub document: ScheduleDocument,
    pub calendar: Calendar,
    pub hash: ScheduleHash,
}

/// The decision on one schedule file the agent received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleDecision {
    Accepted {
        target: String,
        version: u64,
    },
    AlreadyHave {
        version: u64,
    },
    /// Kept until the clock is trusted.
    Deferred {
        target: String,
        version: u64,
        reason: String,
    },
    Rejected {
        rule: &'static str,
        detail: String,
    },
}

pub struct ScheduleStore {
    dir: PathBuf,
    tier: String,
    site: Option<String>,
    tier_schedule: Option<HeldSchedule>,
    site_schedule: Option<HeldSchedule>,
}

impl ScheduleStore {
    /// Opens `state_dir/schedules` for an agent of `tier` and, optionally, `site`.
    pub fn open(
        state_dir: &Path,
        tier: &str,
        site: Option<&str>,
    ) -> Result<Self, ScheduleStoreError> {
        let dir = state_dir.join("schedules");
        fsutil::create_private_dir(&dir).map_err(|source| ScheduleStoreError::Write {
            path: dir.clone(),
            source,
        })?;
        let mut store = Self {
            dir,
            tier: tier.to_owned(),
            site: site.map(str::to_owned),
            tier_schedule: None,
            site_schedule: None,
        };
        store.tier_schedule = store.load(&store.tier_path())?;
        if let Some(path) = store.site_path() {
            store.site_schedule = store.load(&path)?;
        }
        Ok(store)
    }

    /// Returns the calendar that governs this agent: the site's when it has one, else the tier's.
    pub fn governing(&self) -> Option<&HeldSchedule> {
        self.site_schedule.as_ref().or(self.tier_schedule.as_ref())
    }

    /// Verifies a schedule file and keeps it when it is newer than the one held for its target.
    pub fn receive(
        &mut self,
        file: &[u8],
        root: Option<&TrustRoot>,
        now_unix_s: i64,
        clock: &ClockTrust,
    ) -> Result<ScheduleDecision, ScheduleStoreError> {
        let Some(root) = root else {
            return Ok(ScheduleDecision::Rejected {
                rule: "no-trust-root",
                detail: "the agent has no trust root pinned; set trust_root_file and restart it"
                    .into(),
            });
        };
        // The file names its own site, and its version is compared with the one kept for that
        // target. So a tier-wide schedule never competes with the site's.
        let current_version = match SignedSchedule::decode(file).and_then(|s| s.document()) {
            Ok((document, _)) if document.site.is_some() => self
                .site_schedule
                .as_ref()
                .map(|held| held.document.version),
            _ => self
                .tier_schedule
                .as_ref()
                .map(|held| held.document.version),
        };
        let verdict = verify_schedule(
            file,
            root,
            &self.tier,
            self.site.as_deref(),
            now_unix_s,
            clock,
            current_version,
        );
        Ok(match verdict {
            ScheduleVerdict::Accepted {
                document,
                calendar,
                schedule_hash,
            } => {
                let target = document.target();
                let version = document.version;
                let (path, slot) = if document.site.is_some() {
                    let path = self.site_path().expect("verify checked the site");
                    (path, &mut self.site_schedule)
                } else {
                    (self.dir.join(TIER_FILE), &mut self.tier_schedule)
                };
                fsutil::write_atomic(&path, file, 0o600).map_err(|source| {
                    ScheduleStoreError::Write {
                        path: path.clone(),
                        source,
                    }
                })?;
                *slot = Some(HeldSchedule {
                    document,
                    calendar,
                    hash: schedule_hash,
                });
                tracing::info!(%target, version, "accepted a window schedule");
                ScheduleDecision::Accepted { target, version }
            }
            ScheduleVerdict::AlreadyHave { version } => ScheduleDecision::AlreadyHave { version },
            ScheduleVerdict::Deferred {
                document,
                schedule_hash,
                reason,
            } => {
                let dir = self.dir.join(DEFERRED_DIR);
                fsutil::create_private_dir(&dir).map_err(|source| ScheduleStoreError::Write {
                    path: dir.clone(),
                    source,
                })?;
                let path = dir.join(format!("{schedule_hash}.tgws"));
                fsutil::write_atomic(&path, file, 0o600)
                    .map_err(|source| ScheduleStoreError::Write { path, source })?;
                tracing::warn!(target = %document.target(), version = document.version, %reason, "keeping a window schedule until the clock is trusted");
                ScheduleDecision::Deferred {
                    target: document.target(),
                    version: document.version,
                    reason,
                }
            }
            ScheduleVerdict::Rejected { rule, detail } => {
                tracing::warn!(rule = rule.code(), %detail, "rejected a window schedule");
                ScheduleDecision::Rejected {
                    rule: rule.code(),
                    detail,
                }
            }
        })
    }

    /// Verifies the kept schedules again once the clock is trusted, oldest version first.
    pub fn retry_deferred(
        &mut self,
        root: Option<&TrustRoot>,
        now_unix_s: i64,
        clock: &ClockTrust,
    ) -> Result<Vec<ScheduleDecision>, ScheduleStoreError> {
        if matches!(clock, ClockTrust::Untrusted { .. }) {
            return Ok(Vec::new());
        }
        let dir = self.dir.join(DEFERRED_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        for path in entries.flatten().map(|entry| entry.path()) {
            if path.extension().is_none_or(|ext| ext != "tgws") {
                continue;
            }
            let file = std::fs::read(&path).map_err(|source| ScheduleStoreError::Read {
                path: path.clone(),
                source,
            })?;
            let version = SignedSchedule::decode(&file)
                .and_then(|s| s.document())
                .map(|(document, _)| document.version)
                .unwrap_or(0);
            files.push((version, path, file));
        }
        files.sort_by_key(|(version, _, _)| *version);
        let mut decisions = Vec::new();
        for (_, path, file) in files {
            decisions.push(self.receive(&file, root, now_unix_s, clock)?);
            let _ = std::fs::remove_file(&path);
        }
        Ok(decisions)
    }

    fn tier_path(&self) -> PathBuf {
        self.dir.join(TIER_FILE)
    }

    fn site_path(&self) -> Option<PathBuf> {
        self.site
            .as_ref()
            .map(|site| self.dir.join(format!("site-{site}.tgws")))
    }

    fn load(&self, path: &Path) -> Result<Option<HeldSchedule>, ScheduleStoreError> {
        let file = match std::fs::read(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ScheduleStoreError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let invalid = |reason: String| ScheduleStoreError::InvalidState {
            path: path.to_owned(),
            reason,
        };
        let signed = SignedSchedule::decode(&file).map_err(|error| invalid(error.to_string()))?;
        let (document, calendar) = signed
            .document()
            .map_err(|error| invalid(error.to_string()))?;
        Ok(Some(HeldSchedule {
            document,
            calendar,
            hash: signed.schedule_hash(),
        }))
    }
}
