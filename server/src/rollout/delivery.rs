//! Delivery state: what each agent should hold, with a version that grows on every change, and
//! the version the agent last acknowledged.
//!
//! The desired state of an agent lists the bundles it should hold and the bundles it should have
//! rolled back. It also names the trust root version it should pin, which is the newest one
//! published through the API, and the version of its tier's current window schedule.
//! The agent acknowledges nothing explicitly: the server derives the acknowledgement from its
//! reports. A bundle counts as received when any record of its hash is among the agent's bundle
//! records. A rollback counts as done when the latest record of the hash is `RolledBack` or
//! `RollbackFailed`. The trust root and the schedule count when the agent reports that version
//! or a newer one. When all of it is there, the acknowledged version becomes the desired version.
//!
//! Limits: agents report no site, so the desired schedule is the whole tier's, and the agent's
//! reported version is that of the schedule governing it. An agent governed by a site schedule
//! with a lower version than its tier's is sent the tier's schedule again after each reconnect,
//! and the agent keeps the schedule it has. An agent keeps only its latest 50 bundle records, so
//! a bundle whose record scrolled out counts as missing and is sent again after the next
//! reconnect; the agent then answers with `AlreadyApplied`, which costs one order. Bundles stay
//! in the desired state until they are rolled back; nothing prunes superseded ones yet.

use serde::{Deserialize, Serialize};
use tidegate_protocol::{BundleOutcome, BundleRecord};

/// One agent's desired state and acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Grows by one on every change of the desired state.
    pub version: u64,
    /// Hashes of the bundles the agent should hold, oldest first.
    pub bundles: Vec<String>,
    /// Hashes of the bundles the agent should have rolled back.
    pub rollbacks: Vec<String>,
    pub trust_root_version: Option<u64>,
    /// The version of the tier's current whole-tier schedule.
    pub schedule_version: Option<u64>,
    /// The desired version the agent's reports last showed in full.
    pub acknowledged_version: u64,
    /// The trust root version the agent last reported.
    pub acknowledged_trust_root_version: Option<u64>,
    /// The version of the schedule governing the agent, as it last reported it.
    pub acknowledged_schedule_version: Option<u64>,
}

/// The agent's reported trust root version, schedule version and bundle records.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    pub trust_root_version: Option<u64>,
    pub schedule_version: Option<u64>,
    pub bundles: &'a [BundleRecord],
}

/// The part of the desired state that the agent's reports do not show yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    pub bundles: Vec<String>,
    pub rollbacks: Vec<String>,
    /// The agent's trust root version is below the desired one: send each version above this.
    pub trust_root_above: Option<u64>,
    /// The agent has no schedule, or one below the desired version, so the current one is sent.
    pub schedule: bool,
}

impl Missing {
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
            && self.rollbacks.is_empty()
            && self.trust_root_above.is_none()
            && !self.schedule
    }
}

impl DesiredState {
    /// Adds a bundle to hold. Returns whether the desired state changed.
    pub fn add_bundle(&mut self, bundle_hash: &str) -> bool {
        if self.bundles.iter().any(|hash| hash == bundle_hash) {
            return false;
        }
        self.rollbacks.retain(|hash| hash != bundle_hash);
        self.bundles.push(bundle_hash.to_owned());
        self.version += 1;
        true
    }

    /// Replaces a bundle to hold by its rollback. Returns whether the desired state changed.
    pub fn add_rollback(&mut self, bundle_hash: &str) -> bool {
        if self.rollbacks.iter().any(|hash| hash == bundle_hash) {
            return false;
        }
        self.bundles.retain(|hash| hash != bundle_hash);
        self.rollbacks.push(bundle_hash.to_owned());
        self.version += 1;
        true
    }

    /// Sets the trust root version to pin. Returns whether the desired state changed.
    pub fn set_trust_root_version(&mut self, version: u64) -> bool {
        if self.trust_root_version == Some(version) {
            return false;
        }
        self.trust_root_version = Some(version);
        self.version += 1;
        true
    }

    /// Sets the schedule version to follow. Returns whether the desired state changed.
    pub fn set_schedule_version(&mut self, version: u64) -> bool {
        if self.schedule_version == Some(version) {
            return false;
        }
        self.schedule_version = Some(version);
        self.version += 1;
        true
    }

    /// Lists what the agent's reports do not show yet.
    pub fn missing(&self, reported: Reported<'_>) -> Missing {
        let latest = |hash: &str| {
            reported
                .bundles
                .iter()
                .rev()
                .find(|record| record.bundle_hash == hash)
        };
        let bundles = self
            .bundles
            .iter()
            .filter(|hash| latest(hash).is_none())
            .cloned()
            .collect();
        let rollbacks = self
            .rollbacks
            .iter()
            .filter(|hash| {
                !latest(hash).is_some_and(|record| {
                    matches!(
                        record.outcome,
                        BundleOutcome::RolledBack | BundleOutcome::RollbackFailed { .. }
                    )
                })
            })
            .cloned()
            .collect();
        let trust_root_above = match (self.trust_root_version, reported.trust_root_version) {
            (Some(desired), Some(held)) if held < desired => Some(held),
            (Some(_), None) => Some(0),
            _ => None,
        };
        let schedule = match (self.schedule_version, reported.schedule_version) {
            (Some(desired), Some(held)) => held < desired,
            (Some(_), None) => true,
            (None, _) => false,
        };
        Missing {
            bundles,
            rollbacks,
            trust_root_above,
            schedule,
        }
    }

    /// Records what the agent reported. Returns whether the acknowledgement changed.
    pub fn acknowledge(&mut self, reported: Reported<'_>) -> bool {
        let before = (
            self.acknowledged_version,
            self.acknowledged_trust_root_version,
            self.acknowledged_schedule_version,
        );
        self.acknowledged_trust_root_version = reported.trust_root_version;
        self.acknowledged_schedule_version = reported.schedule_version;
        if self.missing(reported).is_empty() {
            self.acknowledged_version = self.version;
        }
        before
            != (
                self.acknowledged_version,
                self.acknowledged_trust_root_version,
                self.acknowledged_schedule_version,
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hash: &str, outcome: BundleOutcome) -> BundleRecord {
        BundleRecord {
            bundle_id: "b".into(),
            stream: "s".into(),
            sequence: 1,
            bundle_hash: hash.into(),
            outcome,
            decided_at_unix_s: 0,
            steps: Vec::new(),
        }
    }

    #[test]
    fn version_grows_on_each_change_only() {
        let mut desired = DesiredState::default();
        assert!(desired.add_bundle("h1"));
        assert!(!desired.add_bundle("h1"));
        assert!(desired.set_trust_root_version(2));
        assert!(!desired.set_trust_root_version(2));
        assert!(desired.add_rollback("h1"));
        assert_eq!(desired.version, 3);
        assert!(desired.bundles.is_empty());
        assert_eq!(desired.rollbacks, vec!["h1"]);
    }

    #[test]
    fn missing_lists_what_reports_lack() {
        let mut desired = DesiredState::default();
        desired.add_bundle("h1");
        desired.add_bundle("h2");
        desired.add_rollback("h3");
        desired.set_trust_root_version(3);
        let records = vec![
            record(
                "h1",
                BundleOutcome::Deferred {
                    reason: "clock".into(),
                },
            ),
            record("h3", BundleOutcome::Applied),
        ];
        let reported = Reported {
            trust_root_version: Some(2),
            schedule_version: None,
            bundles: &records,
        };
        assert_eq!(
            desired.missing(reported),
            Missing {
                bundles: vec!["h2".into()],
                rollbacks: vec!["h3".into()],
                trust_root_above: Some(2),
                schedule: false,
            }
        );
        assert!(desired.acknowledge(reported));
        assert_eq!(desired.acknowledged_version, 0);
        assert_eq!(desired.acknowledged_trust_root_version, Some(2));
    }

    #[test]
    fn full_report_acknowledges_the_version() {
        let mut desired = DesiredState::default();
        desired.add_bundle("h1");
        desired.add_rollback("h3");
        desired.set_trust_root_version(2);
        let records = vec![
            record("h3", BundleOutcome::Applied),
            record(
                "h1",
                BundleOutcome::Rejected {
                    rule: "expired".into(),
                    detail: "x".into(),
                },
            ),
            record("h3", BundleOutcome::RolledBack),
        ];
        let reported = Reported {
            trust_root_version: Some(3),
            schedule_version: None,
            bundles: &records,
        };
        assert!(desired.missing(reported).is_empty());
        assert!(desired.acknowledge(reported));
        assert_eq!(desired.acknowledged_version, 3);
        assert!(
            !desired.acknowledge(reported),
            "nothing changed the second time"
        );
    }

    #[test]
    fn schedule_counts_at_desired_version_or_newer() {
        let mut desired = DesiredState::default();
        assert!(desired.set_schedule_version(4));
        assert!(!desired.set_schedule_version(4));
        assert_eq!(desired.version, 1);
        let reported = |schedule_version| Reported {
            trust_root_version: None,
            schedule_version,
            bundles: &[],
        };

        assert!(desired.missing(reported(None)).schedule);
        assert!(desired.missing(reported(Some(3))).schedule);
        assert!(desired.acknowledge(reported(Some(3))));
        assert_eq!(desired.acknowledged_version, 0);
        assert_eq!(desired.acknowledged_schedule_version, Some(3));

        assert!(desired.missing(reported(Some(4))).is_empty());
        assert!(desired.missing(reported(Some(5))).is_empty());
        assert!(desired.acknowledge(reported(Some(4))));
        assert_eq!(desired.acknowledged_version, 1);
        assert_eq!(desired.acknowledged_schedule_version, Some(4));
    }
}
