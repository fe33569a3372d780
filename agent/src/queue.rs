//! Verified bundles waiting for a maintenance window, and the decision of when one may start.
//!
//! This module owns `state_dir/queue`: one file per waiting bundle, byte for byte as security
//! signed it, named by the order of arrival. A bundle enters when the trust store accepts it and
//! leaves just before the executor starts it, or when it expires while waiting. The
//! decision itself ([`decide_start`]) is pure: it takes the clock reading, the clock's trust and
//! the governing calendar, so the agent decides offline from the signed schedule alone. A bundle
//! already running is never stopped by the queue, because the cutoff and the window's end only
//! stop new starts.

use std::io;
use std::path::{Path, PathBuf};

use tidegate_protocol::trust::{BundleFile, BundleHash, BundleManifest, ClockTrust};
use tidegate_protocol::window::{Calendar, Decision};

use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

/// One bundle waiting to start.
#[derive(Debug, Clone)]
pub struct WaitingBundle {
    pub file: Vec<u8>,
    pub manifest: BundleManifest,
    pub hash: BundleHash,
    path: PathBuf,
}

/// Whether a waiting bundle may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartDecision {
    Start,
    Wait {
        /// Short kebab-case code, such as `clock-untrusted` or `outside-windows`.
        code: &'static str,
        reason: String,
        /// When the agent expects to start it, if it can tell.
        expected_start_unix_s: Option<i64>,
    },
    /// The bundle expired while it waited; it is dropped and reported.
    Expired,
}

/// Decides whether a bundle may start at `now_unix_s`: the clock trusted, the bundle within its
/// validity, and a start allowed by the calendar (inside a window, before its cutoff, outside
/// every freeze). Without a calendar nothing starts: windows are OT's to give.
pub fn decide_start(
    manifest: &BundleManifest,
    now_unix_s: i64,
    clock: &ClockTrust,
    calendar: Option<&Calendar>,
) -> StartDecision {
    if let ClockTrust::Untrusted { reason } = clock {
        return StartDecision::Wait {
            code: "clock-untrusted",
            reason: format!("clock untrusted: {reason}"),
            expected_start_unix_s: None,
        };
    }
    if manifest.expires_unix_s <= now_unix_s {
        return StartDecision::Expired;
    }
    let Some(calendar) = calendar else {
        return StartDecision::Wait {
            code: "no-schedule",
            reason: "no maintenance window schedule for this tier has been received".into(),
            expected_start_unix_s: None,
        };
    };
    let before_expiry = |at: Option<i64>| at.filter(|at| *at < manifest.expires_unix_s);
    if now_unix_s < manifest.not_before_unix_s {
        return StartDecision::Wait {
            code: "bundle-not-yet-valid",
            reason: format!(
                "the bundle is not valid before {}",
                tidegate_protocol::trust::format_unix_s(manifest.not_before_unix_s)
            ),
            expected_start_unix_s: before_expiry(calendar.next_allowed(manifest.not_before_unix_s)),
        };
    }
    match calendar.decide(now_unix_s) {
        Decision::Allowed { .. } => StartDecision::Start,
        Decision::Denied {
            reason,
            next_allowed_unix_s,
        } => StartDecision::Wait {
            code: reason.code(),
            reason: reason.to_string(),
            expected_start_unix_s: before_expiry(next_allowed_unix_s),
        },
    }
}

pub struct Queue {
    dir: PathBuf,
    waiting: Vec<WaitingBundle>,
    next_number: u64,
}

impl Queue {
    /// Opens `state_dir/queue`. A file that no longer decodes is set aside with a warning: it
    /// was verified when it arrived, so this means the disk damaged it, and the server resends.
    pub fn open(state_dir: &Path) -> Result<Self, QueueError> {
        let dir = state_dir.join("queue");
        fsutil::create_private_dir(&dir).map_err(|source| QueueError::Write {
            path: dir.clone(),
            source,
        })?;
        let entries = std::fs::read_dir(&dir).map_err(|source| QueueError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut paths: Vec<(u64, PathBuf)> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "tgbd"))
            .filter_map(|path| {
                let number = path
                    .file_stem()?
                    .to_str()?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()?;
                Some((number, path))
            })
            .collect();
        paths.sort();
        let mut queue = Self {
            dir,
            waiting: Vec::new(),
            next_number: paths.last().map_or(1, |(number, _)| number + 1),
        };
        for (_, path) in paths {
            let file = std::fs::read(&path).map_err(|source| QueueError::Read {
                path: path.clone(),
                source,
            })?;
            let decoded = BundleFile::decode(&file)
                .and_then(|bundle| Ok((bundle.manifest()?, bundle.bundle_hash())));
            match decoded {
                Ok((manifest, hash)) => {
                    queue.waiting.push(WaitingBundle {
                        file,
                        manifest,
                        hash,
                        path,
                    });
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "setting aside a damaged queued bundle");
                    let _ = std::fs::rename(&path, path.with_extension("damaged"));
                }
            }
        }
        Ok(queue)
    }

    /// Returns the waiting bundles, oldest first.
    pub fn waiting(&self) -> &[WaitingBundle] {
        &self.waiting
    }

    /// Adds a verified bundle. A bundle with the same hash already waiting is not added twice.
    pub fn push(
        &mut self,
        file: &[u8],
        manifest: BundleManifest,
        hash: BundleHash,
    ) -> Result<(), QueueError> {
        if self.waiting.iter().any(|waiting| waiting.hash == hash) {
            return Ok(());
        }
        let path = self.dir.join(format!(
            "{:08}-{}.tgbd",
            self.next_number, manifest.bundle_id
        ));
        fsutil::write_atomic(&path, file, 0o600).map_err(|source| QueueError::Write {
            path: path.clone(),
            source,
        })?;
        self.next_number += 1;
        self.waiting.push(WaitingBundle {
            file: file.to_vec(),
            manifest,
            hash,
            path,
        });
        Ok(())
    }

    /// Removes a bundle that is about to start or has expired.
    pub fn remove(&mut self, hash: &BundleHash) -> Result<(), QueueError> {
        let Some(index) = self
            .waiting
            .iter()
            .position(|waiting| &waiting.hash == hash)
        else {
            return Ok(());
        };
        let waiting = self.waiting.remove(index);
        match std::fs::remove_file(&waiting.path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(QueueError::Remove {
                    path: waiting.path,
                    source,
                })
            }
        }
        fsutil::sync_dir(&self.dir).map_err(|source| QueueError::Write {
            path: self.dir.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use tidegate_protocol::trust::{BundleId, Step, StreamName, TargetSelector};
    use tidegate_protocol::window::{CalendarSpec, Freeze, WindowRule};

    use super::*;

    const MAY_1: i64 = 1_777_593_600; // 2026-05-01T00:00:00Z
    const JUNE_1: i64 = 1_780_272_000; // 2026-06-01T00:00:00Z
    const MAY_10_0030: i64 = 1_778_373_000; // 2026-05-10T00:30:00Z
    const MAY_10_0200: i64 = 1_778_378_400; // 2026-05-10T02:00:00Z

    fn manifest() -> BundleManifest {
        BundleManifest {
            bundle_id: BundleId::parse("motd-fix").unwrap(),
            stream: StreamName::parse("baseline").unwrap(),
            sequence: 1,
            not_before_unix_s: MAY_1,
            expires_unix_s: JUNE_1,
            target: TargetSelector::default(),
            steps: vec![Step::Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "0".into(),
            }],
            payloads: Vec::new(),
            execution: Default::default(),
        }
    }

    /// Builds a daily window at 02:00 UTC of one hour, valid all of 2026.
    fn daily_two_am(freezes: Vec<Freeze>) -> Calendar {
        Calendar::new(&CalendarSpec {
            zone: "UTC".into(),
            not_before_unix_s: 1_767_225_600, // 2026-01-01T00:00:00Z
            expires_unix_s: 1_798_761_600,    // 2027-01-01T00:00:00Z
            windows: vec![WindowRule::Recurring {
                cron: "0 2 * * *".into(),
                duration_s: 3600,
                cutoff_s: Some(900),
            }],
            freezes,
        })
        .unwrap()
    }

    #[test]
    fn decide_with_untrusted_clock_waits() {
        let untrusted = ClockTrust::Untrusted {
            reason: "the clock reads 10 s since the epoch".into(),
        };
        let decision = decide_start(&manifest(), 10, &untrusted, Some(&daily_two_am(vec![])));
        assert!(
            matches!(
                decision,
                StartDecision::Wait {
                    code: "clock-untrusted",
                    expected_start_unix_s: None,
                    ..
                }
            ),
            "{decision:?}"
        );
    }

    #[test]
    fn decide_before_window_waits_for_two_am() {
        let calendar = daily_two_am(vec![]);
        let wait = decide_start(
            &manifest(),
            MAY_10_0030,
            &ClockTrust::Trusted,
            Some(&calendar),
        );
        assert_eq!(
            wait,
            StartDecision::Wait {
                code: "outside-windows",
                reason: "no window is open".into(),
                expected_start_unix_s: Some(MAY_10_0200),
            }
        );
        let just_before = decide_start(
            &manifest(),
            MAY_10_0200 - 1,
            &ClockTrust::Trusted,
            Some(&calendar),
        );
        assert!(matches!(just_before, StartDecision::Wait { .. }));
        assert_eq!(
            decide_start(
                &manifest(),
                MAY_10_0200,
                &ClockTrust::Trusted,
                Some(&calendar)
            ),
            StartDecision::Start
        );
    }

    #[test]
    fn decide_after_cutoff_expects_next_day() {
        let calendar = daily_two_am(vec![]);
        // The window runs 02:00-03:00 with a 15-minute cutoff: 02:45 is too late to start.
        let decision = decide_start(
            &manifest(),
            MAY_10_0200 + 45 * 60,
            &ClockTrust::Trusted,
            Some(&calendar),
        );
        assert!(
            matches!(decision, StartDecision::Wait { code: "past-cutoff", expected_start_unix_s: Some(at), .. } if at == MAY_10_0200 + 86_400),
            "{decision:?}"
        );
    }

    #[test]
    fn decide_in_freeze_waits_past_window() {
        let freeze = Freeze {
            start_unix_s: MAY_10_0030,
            end_unix_s: MAY_10_0200 + 2 * 86_400,
            reason: "line changeover".into(),
        };
        let calendar = daily_two_am(vec![freeze]);
        let decision = decide_start(
            &manifest(),
            MAY_10_0200,
            &ClockTrust::Trusted,
            Some(&calendar),
        );
        assert!(
            matches!(decision, StartDecision::Wait { code: "frozen", expected_start_unix_s: Some(at), .. } if at == MAY_10_0200 + 2 * 86_400),
            "{decision:?}"
        );
    }

    #[test]
    fn decide_not_yet_valid_names_instant() {
        let decision = decide_start(
            &manifest(),
            MAY_1 - 3600,
            &ClockTrust::Trusted,
            Some(&daily_two_am(vec![])),
        );
        let StartDecision::Wait { reason, .. } = decision else {
            panic!("expected a wait, got {decision:?}");
        };
        assert_eq!(
            reason,
            "the bundle is not valid before 2026-05-01T00:00:00Z"
        );
    }

    #[test]
    fn decide_before_not_before_expects_next_window() {
        let decision = decide_start(
            &manifest(),
            MAY_1 - 3600,
            &ClockTrust::Trusted,
            Some(&daily_two_am(vec![])),
        );
        assert!(
            matches!(decision, StartDecision::Wait { code: "bundle-not-yet-valid", expected_start_unix_s: Some(at), .. } if at == MAY_1 + 2 * 3600),
            "{decision:?}"
        );
    }

    #[test]
    fn decide_without_schedule_or_after_expiry() {
        assert!(matches!(
            decide_start(&manifest(), MAY_10_0200, &ClockTrust::Trusted, None),
            StartDecision::Wait {
                code: "no-schedule",
                ..
            }
        ));
        assert_eq!(
            decide_start(
                &manifest(),
                JUNE_1,
                &ClockTrust::Trusted,
                Some(&daily_two_am(vec![]))
            ),
            StartDecision::Expired
        );
    }

    #[test]
    fn decide_ignores_window_after_expiry() {
        let mut short = manifest();
        short.expires_unix_s = MAY_10_0200; // expires the instant the window opens
        let decision = decide_start(
            &short,
            MAY_10_0030,
            &ClockTrust::Trusted,
            Some(&daily_two_am(vec![])),
        );
        assert!(
            matches!(
                decision,
                StartDecision::Wait {
                    expected_start_unix_s: None,
                    ..
                }
            ),
            "{decision:?}"
        );
    }
}
