//! Maintenance-window schedules on the server: the check a schedule file passes before it is
//! published, each tier's next windows and freezes, and the earliest instant at which each
//! waiting bundle can start on each tier.
//!
//! The server has no OT key and never changes a schedule file. It checks a file as an agent of
//! the file's tier and site would, with [`verify_schedule`] against the server's trust root, so
//! the fleet is spared a file no agent would take. Every agent verifies the same bytes again
//! against its own pinned root, and decides from them alone when a bundle may start; the instants
//! computed here are a forecast by the same arithmetic ([`Calendar`]), not a command.
//!
//! This module is pure: the caller passes `now` and the stored files, and does the IO.

use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::{
    inspect_bundle, verify_schedule, ClockTrust, RejectRule, ScheduleVerdict, SignedSchedule,
    TrustRoot, MAX_SCHEDULE_FILE_BYTES,
};
use tidegate_protocol::window::{Calendar, Decision, MAX_QUERY_WINDOWS};

use crate::store::schedules::{describe_target, StoredSchedule};

/// The number of days `GET /api/v1/windows` looks ahead when the request gives no `days`.
pub const DEFAULT_WINDOW_DAYS: u32 = 14;

/// The maximum look-ahead of `GET /api/v1/windows`, in days: two months, enough to plan a
/// rollout. A schedule with more than [`MAX_QUERY_WINDOWS`] windows in that time (more than 16
/// a day) is listed up to its first [`MAX_QUERY_WINDOWS`].
pub const MAX_WINDOW_DAYS: u32 = 62;

/// A schedule file that passed the publication check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSchedule {
    pub tier: String,
    pub site: Option<String>,
    pub version: u64,
    /// SHA-256 of the signed document bytes, in lowercase hex.
    pub schedule_hash: String,
    /// Key ids of the signatures, all of which verified.
    pub signers: Vec<String>,
    /// Whether this exact file is already the target's current schedule.
    pub republished: bool,
}

impl CheckedSchedule {
    pub fn target(&self) -> String {
        describe_target(&self.tier, self.site.as_deref())
    }
}

/// A reason a schedule file is not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleCheckError {
    #[error(
        "the server has no trust root to check schedules against; start tidegate-server with \
         --trust-root FILE"
    )]
    NoTrustRoot,
    #[error("schedule rejected ({}): {detail}", .rule.code())]
    Rejected { rule: RejectRule, detail: String },
    #[error(
        "schedule version {offered} for {target} is not newer than the stored version \
         {stored}; publish a higher version"
    )]
    NotNewer {
        target: String,
        offered: u64,
        stored: u64,
    },
}

/// Reads the tier and site a schedule file names, before anything in it is verified, so the
/// caller can look up the target's current version for [`check_schedule`].
pub fn schedule_target(file: &[u8]) -> Result<(String, Option<String>), ScheduleCheckError> {
    let rejected = |error: tidegate_protocol::trust::ScheduleError| ScheduleCheckError::Rejected {
        rule: error.rule(),
        detail: error.to_string(),
    };
    let signed = SignedSchedule::decode(file).map_err(rejected)?;
    let (document, _) = signed.document().map_err(rejected)?;
    Ok((document.tier, document.site))
}

/// Checks a schedule file as an agent of the file's tier and site would, against `root` at
/// `now_unix_s` with a trusted clock. `current` is the target's stored current schedule: a file
/// with a lower or equal version is [`ScheduleCheckError::NotNewer`], except the current file
/// itself byte for byte, which passes as republished.
pub fn check_schedule(
    file: &[u8],
    root: Option<&TrustRoot>,
    now_unix_s: i64,
    current: Option<&StoredSchedule>,
) -> Result<CheckedSchedule, ScheduleCheckError> {
    let root = root.ok_or(ScheduleCheckError::NoTrustRoot)?;
    let (tier, site) = schedule_target(file)?;
    let republished = current.is_some_and(|current| current.file == file);
    // The current file is checked as if it were new, so a root rotation that dropped its
    // signers makes republishing it fail.
    let current_version = if republished {
        None
    } else {
        current.map(|current| current.version)
    };
    let verdict = verify_schedule(
        file,
        root,
        &tier,
        site.as_deref(),
        now_unix_s,
        &ClockTrust::Trusted,
        current_version,
    );
    let (document, schedule_hash) = match verdict {
        ScheduleVerdict::Accepted {
            document,
            schedule_hash,
            ..
        } => (document, schedule_hash),
        ScheduleVerdict::AlreadyHave { version } => {
            return Err(ScheduleCheckError::NotNewer {
                target: describe_target(&tier, site.as_deref()),
                offered: version,
                stored: version,
            })
        }
        ScheduleVerdict::Rejected {
            rule: RejectRule::Rollback,
            ..
        } => {
            let offered = SignedSchedule::decode(file)
                .and_then(|signed| signed.document())
                .map(|(document, _)| document.version)
                .unwrap_or(0);
            return Err(ScheduleCheckError::NotNewer {
                target: describe_target(&tier, site.as_deref()),
                offered,
                stored: current_version.unwrap_or(0),
            });
        }
        ScheduleVerdict::Rejected { rule, detail } => {
            return Err(ScheduleCheckError::Rejected { rule, detail })
        }
        ScheduleVerdict::Deferred { reason, .. } => {
            // The check passes a trusted clock, so this cannot happen. Reject rather than guess.
            return Err(ScheduleCheckError::Rejected {
                rule: RejectRule::NotYetValid,
                detail: reason,
            });
        }
    };
    // Every signature verified, or verify_schedule would have rejected the file.
    let signers = SignedSchedule::decode(file)
        .map(|signed| signed.signers().iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    Ok(CheckedSchedule {
        tier: document.tier,
        site: document.site,
        version: document.version,
        schedule_hash: schedule_hash.to_string(),
        signers,
        republished,
    })
}

/// Checks the `days` of a windows query: [`DEFAULT_WINDOW_DAYS`] when absent, else a whole
/// number from 1 to [`MAX_WINDOW_DAYS`].
pub fn parse_window_days(days: Option<&str>) -> Result<u32, String> {
    let Some(text) = days else {
        return Ok(DEFAULT_WINDOW_DAYS);
    };
    match text.trim().parse::<u32>() {
        Ok(days) if (1..=MAX_WINDOW_DAYS).contains(&days) => Ok(days),
        _ => Err(format!(
            "invalid days {:?}: give a whole number of days from 1 to {MAX_WINDOW_DAYS}",
            text.chars().take(40).collect::<String>()
        )),
    }
}

/// The body of `GET /api/v1/windows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsResponse {
    pub tiers: Vec<TierWindows>,
}

/// The windows and freezes of one target's current schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierWindows {
    pub tier: String,
    /// `None` (JSON `null`) for the schedule of the whole tier.
    pub site: Option<String>,
    pub schedule_version: u64,
    /// The IANA time zone of the schedule's recurring windows.
    pub zone: String,
    pub windows: Vec<WindowSpan>,
    pub freezes: Vec<FreezeSpan>,
}

/// One window, in seconds since the Unix epoch: starts are allowed in `[start, cutoff)`, and the
/// window ends at `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpan {
    pub start_unix_s: i64,
    pub cutoff_unix_s: i64,
    pub end_unix_s: i64,
}

/// One freeze, `[start, end)`, in seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeSpan {
    pub start_unix_s: i64,
    pub end_unix_s: i64,
    pub reason: String,
}

/// A stored schedule that no longer decodes: the store file was changed outside the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored schedule version {version} for {target} is invalid: {reason}")]
pub struct StoredScheduleError {
    pub target: String,
    pub version: u64,
    pub reason: String,
}

/// Decodes a stored schedule file into its calendar.
pub fn stored_calendar(schedule: &StoredSchedule) -> Result<Calendar, StoredScheduleError> {
    SignedSchedule::decode(&schedule.file)
        .and_then(|signed| signed.document())
        .map(|(_, calendar)| calendar)
        .map_err(|error| StoredScheduleError {
            target: describe_target(&schedule.tier, schedule.site.as_deref()),
            version: schedule.version,
            reason: error.to_string(),
        })
}

/// Lists the windows of `schedule` that are open at `now_unix_s` or start within `days` days
/// of it (at most [`MAX_QUERY_WINDOWS`]), and the freezes that have not ended by then and start
/// within the same days. Windows inside a freeze are listed too: the freezes show which starts
/// they deny.
pub fn tier_windows(
    schedule: &StoredSchedule,
    now_unix_s: i64,
    days: u32,
) -> Result<TierWindows, StoredScheduleError> {
    let calendar = stored_calendar(schedule)?;
    let horizon = now_unix_s.saturating_add(i64::from(days) * 86_400);
    let windows = calendar
        .windows_from(now_unix_s, MAX_QUERY_WINDOWS)
        .into_iter()
        .take_while(|window| window.start_unix_s < horizon)
        .map(|window| WindowSpan {
            start_unix_s: window.start_unix_s,
            cutoff_unix_s: window.cutoff_unix_s,
            end_unix_s: window.end_unix_s,
        })
        .collect();
    let freezes = calendar
        .freezes_from(now_unix_s)
        .into_iter()
        .filter(|freeze| freeze.start_unix_s < horizon)
        .map(|freeze| FreezeSpan {
            start_unix_s: freeze.start_unix_s,
            end_unix_s: freeze.end_unix_s,
            reason: freeze.reason,
        })
        .collect();
    Ok(TierWindows {
        tier: schedule.tier.clone(),
        site: schedule.site.clone(),
        schedule_version: schedule.version,
        zone: calendar.zone().name().to_owned(),
        windows,
        freezes,
    })
}

/// The body of `GET /api/v1/bundles/earliest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarliestResponse {
    /// The server's clock reading the instants were computed from.
    pub now_unix_s: i64,
    pub bundles: Vec<BundleEarliest>,
}

/// A published bundle that has not expired, with its earliest start per tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEarliest {
    pub bundle_id: String,
    pub stream: String,
    pub sequence: u64,
    pub not_before_unix_s: i64,
    pub expires_unix_s: i64,
    /// One entry per targeted tier for its whole-tier schedule, and one per site schedule of it.
    pub tiers: Vec<TierEarliest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierEarliest {
    pub tier: String,
    /// `None` for the agents of the tier that follow the whole tier's schedule.
    pub site: Option<String>,
    /// The schedule the instant comes from, `None` when the target has none.
    pub schedule_version: Option<u64>,
    /// The earliest instant at which the bundle can start, `None` when it cannot start before
    /// it expires.
    pub earliest_start_unix_s: Option<i64>,
    pub status: EarliestStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EarliestStatus {
    /// `earliest_start_unix_s` contains the instant.
    Scheduled,
    /// No window allows a start between now (or the bundle's `not_before`) and its expiry.
    NoneBeforeExpiry,
    /// The target has no schedule, and an agent starts nothing without a window.
    NoSchedule,
}

/// Returns the earliest instant a bundle valid in `[not_before, expires)` can start under
/// `calendar`: the first allowed start at or after `max(now, not_before)`, if it comes before
/// the bundle expires.
pub fn earliest_start(
    calendar: &Calendar,
    now_unix_s: i64,
    not_before_unix_s: i64,
    expires_unix_s: i64,
) -> Option<i64> {
    let from = now_unix_s.max(not_before_unix_s);
    if from >= expires_unix_s {
        return None;
    }
    calendar
        .next_allowed(from)
        .filter(|start| *start < expires_unix_s)
}

/// Returns the end of the window in which a bundle sent at `sent_at_unix_s` can start under
/// `calendar`: the window that allows the first start at or after `sent_at_unix_s`, which skips
/// windows that are frozen or past their cutoff. `None` when no window allows a start before the
/// schedule expires.
pub fn window_end_after(calendar: &Calendar, sent_at_unix_s: i64) -> Option<i64> {
    let start = calendar.next_allowed(sent_at_unix_s)?;
    match calendar.decide(start) {
        Decision::Allowed { window } => Some(window.end_unix_s),
        Decision::Denied { .. } => None,
    }
}

/// Computes the earliest start of every published bundle that has not expired at `now_unix_s`,
/// on each tier it targets. A bundle that names no tier targets every tier in `known_tiers`
/// (the tiers of schedules and agents). Bundle files that do not decode are skipped: they were
/// checked at publication.
pub fn bundles_earliest(
    bundle_files: &[Vec<u8>],
    schedules: &[(StoredSchedule, Calendar)],
    known_tiers: &[String],
    now_unix_s: i64,
) -> Vec<BundleEarliest> {
    let mut bundles = Vec::new();
    for file in bundle_files {
        let Ok(inspection) = inspect_bundle(file) else {
            continue;
        };
        let manifest = inspection.manifest;
        if manifest.expires_unix_s <= now_unix_s {
            continue;
        }
        let tiers: Vec<String> = if manifest.target.tiers.is_empty() {
            known_tiers.to_vec()
        } else {
            manifest.target.tiers.clone()
        };
        let mut entries = Vec::new();
        for tier in &tiers {
            let of_tier: Vec<&(StoredSchedule, Calendar)> = schedules
                .iter()
                .filter(|(schedule, _)| &schedule.tier == tier)
                .collect();
            if !of_tier.iter().any(|(schedule, _)| schedule.site.is_none()) {
                entries.push(TierEarliest {
                    tier: tier.clone(),
                    site: None,
                    schedule_version: None,
                    earliest_start_unix_s: None,
                    status: EarliestStatus::NoSchedule,
                });
            }
            for (schedule, calendar) in of_tier {
                let start = earliest_start(
                    calendar,
                    now_unix_s,
                    manifest.not_before_unix_s,
                    manifest.expires_unix_s,
                );
                entries.push(TierEarliest {
                    tier: tier.clone(),
                    site: schedule.site.clone(),
                    schedule_version: Some(schedule.version),
                    earliest_start_unix_s: start,
                    status: if start.is_some() {
                        EarliestStatus::Scheduled
                    } else {
                        EarliestStatus::NoneBeforeExpiry
                    },
                });
            }
        }
        bundles.push(BundleEarliest {
            bundle_id: manifest.bundle_id.to_string(),
            stream: manifest.stream.to_string(),
            sequence: manifest.sequence,
            not_before_unix_s: manifest.not_before_unix_s,
            expires_unix_s: manifest.expires_unix_s,
            tiers: entries,
        });
    }
    bundles
}

/// The largest schedule file `POST /api/v1/schedules` reads.
pub const MAX_PUBLISHED_SCHEDULE_BYTES: usize = MAX_SCHEDULE_FILE_BYTES;

#[cfg(test)]
mod tests {
    use tidegate_protocol::trust::ScheduleDocument;
    use tidegate_protocol::window::{CalendarSpec, Freeze, WindowRule};

    use super::*;

    /// 2026-10-20T12:00:00Z, a Tuesday. Berlin leaves summer time on Sunday 2026-10-25.
    const NOW: i64 = 1_792_497_600;
    /// Saturday 2026-10-24T00:00:00Z, 02:00 CEST.
    const SAT_24: i64 = 1_792_800_000;
    /// Saturday 2026-10-31T01:00:00Z, 02:00 CET.
    const SAT_31: i64 = 1_793_408_400;
    /// 2026-10-23T00:00:00Z to 2026-10-26T00:00:00Z.
    const FREEZE: (i64, i64) = (1_792_713_600, 1_792_972_800);

    /// Version 3 of `plant-floor`'s schedule: Saturdays 02:00 Berlin for 4 hours, the last
    /// 30 minutes without new starts, and a freeze over the weekend of 2026-10-24.
    fn stored(freezes: Vec<Freeze>) -> StoredSchedule {
        let document = ScheduleDocument {
            tier: "plant-floor".into(),
            site: None,
            version: 3,
            calendar: CalendarSpec {
                zone: "Europe/Berlin".into(),
                // 2026-10-01T00:00:00Z to 2027-01-01T00:00:00Z.
                not_before_unix_s: 1_790_812_800,
                expires_unix_s: 1_798_761_600,
                windows: vec![WindowRule::Recurring {
                    cron: "0 2 * * SAT".into(),
                    duration_s: 4 * 3600,
                    cutoff_s: Some(1800),
                }],
                freezes,
            },
        };
        let file = SignedSchedule::new(&document).unwrap().encode().unwrap();
        StoredSchedule {
            tier: "plant-floor".into(),
            site: None,
            version: 3,
            schedule_hash: String::new(),
            file,
            signers: vec![],
            publisher: "ot@desk".into(),
            published_at_unix_s: NOW,
        }
    }

    fn audit() -> Freeze {
        Freeze {
            start_unix_s: FREEZE.0,
            end_unix_s: FREEZE.1,
            reason: "plant audit".into(),
        }
    }

    #[test]
    fn windows_cross_the_dst_change() {
        let listed = tier_windows(&stored(vec![audit()]), NOW, 14).unwrap();
        assert_eq!(listed.zone, "Europe/Berlin");
        assert_eq!(listed.schedule_version, 3);
        assert_eq!(
            listed.windows,
            vec![
                WindowSpan {
                    start_unix_s: SAT_24,
                    cutoff_unix_s: SAT_24 + 3 * 3600 + 1800,
                    end_unix_s: SAT_24 + 4 * 3600,
                },
                WindowSpan {
                    start_unix_s: SAT_31,
                    cutoff_unix_s: SAT_31 + 3 * 3600 + 1800,
                    end_unix_s: SAT_31 + 4 * 3600,
                },
            ]
        );
        assert_eq!(
            listed.freezes,
            vec![FreezeSpan {
                start_unix_s: FREEZE.0,
                end_unix_s: FREEZE.1,
                reason: "plant audit".into(),
            }]
        );
    }

    #[test]
    fn window_days_bound_the_list() {
        // Four days from Tuesday noon end on Saturday noon: only 2026-10-24 starts before.
        let listed = tier_windows(&stored(vec![]), NOW, 4).unwrap();
        assert_eq!(listed.windows.len(), 1);
        assert_eq!(listed.windows[0].start_unix_s, SAT_24);
        // A window still open at now is listed.
        let listed = tier_windows(&stored(vec![]), SAT_24 + 3600, 1).unwrap();
        assert_eq!(listed.windows[0].start_unix_s, SAT_24);
        // A freeze that starts after the horizon is left out.
        let listed = tier_windows(&stored(vec![audit()]), NOW, 2).unwrap();
        assert!(listed.freezes.is_empty());
    }

    #[test]
    fn window_days_are_checked() {
        assert_eq!(parse_window_days(None), Ok(14));
        assert_eq!(parse_window_days(Some("1")), Ok(1));
        assert_eq!(parse_window_days(Some("62")), Ok(62));
        for bad in ["0", "63", "-1", "two", ""] {
            let error = parse_window_days(Some(bad)).unwrap_err();
            assert!(error.contains("from 1 to 62"), "{bad:?}: {error}");
        }
    }

    /// An unsigned bundle file for `tiers`, valid in `[not_before, expires)`.
    fn bundle(id: &str, tiers: &[&str], not_before: i64, expires: i64) -> Vec<u8> {
        use tidegate_protocol::trust::{
            BundleFile, BundleId, BundleManifest, Step, StreamName, TargetSelector,
        };
        let manifest = BundleManifest {
            bundle_id: BundleId::parse(id).unwrap(),
            stream: StreamName::parse("baseline").unwrap(),
            sequence: 1,
            not_before_unix_s: not_before,
            expires_unix_s: expires,
            target: TargetSelector {
                tiers: tiers.iter().map(|tier| tier.to_string()).collect(),
                ..TargetSelector::default()
            },
            steps: vec![Step::Sysctl {
                key: "net.ipv4.tcp_syncookies".into(),
                value: "1".into(),
            }],
            payloads: vec![],
            execution: Default::default(),
        };
        BundleFile::new(&manifest, vec![])
            .unwrap()
            .encode()
            .unwrap()
    }

    #[test]
    fn bundle_without_tiers_targets_known_tiers() {
        let tier = stored(vec![audit()]);
        let mut site = stored(vec![]);
        site.site = Some("hamburg".into());
        site.version = 1;
        let mut lab_site = stored(vec![]);
        lab_site.tier = "lab".into();
        lab_site.site = Some("bremen".into());
        let schedules: Vec<(StoredSchedule, Calendar)> = [tier, site, lab_site]
            .into_iter()
            .map(|schedule| {
                let calendar = stored_calendar(&schedule).unwrap();
                (schedule, calendar)
            })
            .collect();
        let known = vec!["lab".to_owned(), "plant-floor".to_owned()];
        let files = vec![
            bundle("everywhere", &[], NOW - 60, 1_795_996_800),
            // Expired at now: left out.
            bundle("old", &["plant-floor"], NOW - 7200, NOW),
        ];

        let listed = bundles_earliest(&files, &schedules, &known, NOW);

        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].bundle_id, "everywhere");
        let entry = |tier: &str, site: Option<&str>, version, start, status| TierEarliest {
            tier: tier.into(),
            site: site.map(str::to_owned),
            schedule_version: version,
            earliest_start_unix_s: start,
            status,
        };
        assert_eq!(
            listed[0].tiers,
            vec![
                // The lab tier has only a site schedule, so agents without that site wait forever.
                entry("lab", None, None, None, EarliestStatus::NoSchedule),
                entry(
                    "lab",
                    Some("bremen"),
                    Some(3),
                    Some(SAT_24),
                    EarliestStatus::Scheduled
                ),
                // The tier's own schedule freezes 2026-10-24; its site's schedule does not.
                entry(
                    "plant-floor",
                    None,
                    Some(3),
                    Some(SAT_31),
                    EarliestStatus::Scheduled
                ),
                entry(
                    "plant-floor",
                    Some("hamburg"),
                    Some(1),
                    Some(SAT_24),
                    EarliestStatus::Scheduled
                ),
            ]
        );
    }

    #[test]
    fn earliest_start_skips_the_freeze() {
        let calendar = stored_calendar(&stored(vec![audit()])).unwrap();
        // 2026-10-24T01:00Z is inside the window of the 24th and inside the freeze.
        let not_before = SAT_24 + 3600;
        let expires = 1_795_996_800; // 2026-11-30T00:00:00Z
        assert_eq!(
            earliest_start(&calendar, NOW, not_before, expires),
            Some(SAT_31)
        );
        // Without the freeze it starts at its not_before, inside the window.
        let open = stored_calendar(&stored(vec![])).unwrap();
        assert_eq!(
            earliest_start(&open, NOW, not_before, expires),
            Some(not_before)
        );
        // Now inside a window and past not_before: now.
        assert_eq!(
            earliest_start(&open, SAT_24 + 60, SAT_24 - 86_400, expires),
            Some(SAT_24 + 60)
        );
        // Expiring on 2026-10-30, before the next window after the freeze.
        assert_eq!(
            earliest_start(&calendar, NOW, not_before, 1_793_318_400),
            None
        );
        // Expiring exactly at the window's start: expires <= start means expired.
        assert_eq!(earliest_start(&calendar, NOW, not_before, SAT_31), None);
        assert_eq!(
            earliest_start(&calendar, NOW, not_before, SAT_31 + 1),
            Some(SAT_31)
        );
    }
}
