//! The inventory model: what an agent reports about its host, and the delta between two
//! inventories.
//!
//! A full report carries an [`Inventory`]; a delta report carries an [`InventoryDelta`] against the
//! previous report of the same boot. `base.apply(&base.diff(&next))` gives back `next`, which the
//! property tests check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The package manager a package belongs to. Each has its own version ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Ecosystem {
    Deb,
    Rpm,
    Apk,
}

impl Ecosystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deb => "deb",
            Self::Rpm => "rpm",
            Self::Apk => "apk",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "deb" => Some(Self::Deb),
            "rpm" => Some(Self::Rpm),
            "apk" => Some(Self::Apk),
            _ => None,
        }
    }
}

/// The install state of a package, as the package manager records it. For dpkg this is the third
/// word of the `Status:` field; RPM and APK only record installed packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstallState {
    Installed,
    /// Installed, with triggers that are still to run (dpkg `triggers-awaited`).
    TriggersAwaited,
    /// Installed, with triggers that are still to run (dpkg `triggers-pending`).
    TriggersPending,
    /// Removed, with its configuration files left behind (dpkg `config-files`).
    ConfigFiles,
    /// Broken: unpacking started and did not finish (dpkg `half-installed`).
    HalfInstalled,
    /// Broken: unpacked but not configured (dpkg `unpacked`).
    Unpacked,
    /// Broken: configuration started and did not finish (dpkg `half-configured`).
    HalfConfigured,
}

impl InstallState {
    /// Whether the package counts as installed: its files are in place and configured.
    pub fn is_installed(self) -> bool {
        matches!(
            self,
            Self::Installed | Self::TriggersAwaited | Self::TriggersPending
        )
    }

    /// Whether the package is in a state a failed or interrupted operation left behind.
    pub fn is_broken(self) -> bool {
        matches!(
            self,
            Self::HalfInstalled | Self::Unpacked | Self::HalfConfigured
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Installed => "installed",
            Self::TriggersAwaited => "triggers-awaited",
            Self::TriggersPending => "triggers-pending",
            Self::ConfigFiles => "config-files",
            Self::HalfInstalled => "half-installed",
            Self::Unpacked => "unpacked",
            Self::HalfConfigured => "half-configured",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "installed" => Self::Installed,
            "triggers-awaited" => Self::TriggersAwaited,
            "triggers-pending" => Self::TriggersPending,
            "config-files" => Self::ConfigFiles,
            "half-installed" => Self::HalfInstalled,
            "unpacked" => Self::Unpacked,
            "half-configured" => Self::HalfConfigured,
            _ => return None,
        })
    }
}

/// What the administrator asked the package manager to do with a package (dpkg's "want" word).
/// RPM and APK have no such field and report [`Selection::Install`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Selection {
    Unknown,
    Install,
    Hold,
    Deinstall,
    Purge,
}

impl Selection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Install => "install",
            Self::Hold => "hold",
            Self::Deinstall => "deinstall",
            Self::Purge => "purge",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "unknown" => Self::Unknown,
            "install" => Self::Install,
            "hold" => Self::Hold,
            "deinstall" => Self::Deinstall,
            "purge" => Self::Purge,
            _ => return None,
        })
    }
}

/// The key of one package row. Packages of several architectures are separate rows, and `name`
/// never carries an `:arch` suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PackageKey {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub arch: String,
}

/// One package row of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub arch: String,
    /// The full version as the package manager writes it, with the epoch where there is one
    /// (`1:2.0-1` for dpkg and RPM).
    pub version: String,
    pub state: InstallState,
    pub selection: Selection,
    /// Virtual packages and capabilities this package provides, as written in its metadata.
    pub provides: Vec<String>,
}

impl Package {
    pub fn key(&self) -> PackageKey {
        PackageKey {
            ecosystem: self.ecosystem,
            name: self.name.clone(),
            arch: self.arch.clone(),
        }
    }
}

/// An installed package for which the local package lists hold a higher version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PendingUpdate {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub arch: String,
    pub installed_version: String,
    /// The highest version above the installed one that the lists offer.
    pub candidate_version: String,
    /// Whether the package is on hold, so a plain upgrade will not take the candidate.
    pub held: bool,
    /// Whether the candidate comes from a security archive (a list whose suite ends in `-security`).
    pub security: bool,
}

/// Whether the host needs a reboot to finish applying updates, and which packages asked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RebootRequired {
    pub required: bool,
    pub packages: Vec<String>,
}

/// Facts about the host. Deliberately no uptime: it changes on every report, so the server derives
/// it from `boot_time_unix_s` and the report time, and a delta carries facts only when they change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    pub os_name: String,
    pub os_version: String,
    pub kernel_version: String,
    pub arch: String,
    pub boot_time_unix_s: i64,
    pub cpu_count: u32,
    pub memory_total_bytes: u64,
}

/// A problem a collector met and worked around, for example a malformed stanza it skipped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Warning {
    /// The collector or file it concerns, such as `dpkg` or `apt-lists`.
    pub source: String,
    pub message: String,
}

/// What became of one bundle the agent received, as the server shows it on the agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BundleRecord {
    pub bundle_id: String,
    pub stream: String,
    pub sequence: u64,
    /// SHA-256 of the bundle's manifest, in lowercase hex.
    pub bundle_hash: String,
    pub outcome: BundleOutcome,
    /// When the agent decided, or when the outcome last changed, by its own clock.
    pub decided_at_unix_s: i64,
    /// The outcome of each step the agent started, in step order. Empty until the bundle runs.
    /// (`default` lets JSON written before this field existed still read.)
    #[serde(default)]
    pub steps: Vec<StepRecord>,
}

/// The outcome of one step of a bundle, with the agent's clock readings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's position in the manifest, from 0.
    pub index: u32,
    /// The step type, such as `write-file` (the manifest's `Step::kind`).
    pub kind: String,
    pub outcome: StepOutcome,
    pub started_at_unix_s: i64,
    /// When the outcome was reached; `None` while the step is still running.
    pub finished_at_unix_s: Option<i64>,
    /// The reason a step failed or could not be reverted; empty otherwise.
    pub detail: String,
}

/// The state of one step. Variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepOutcome {
    /// Started and not finished.
    Running,
    /// Applied and verified.
    Applied,
    /// Its apply or verify failed.
    Failed,
    /// Undone: back in the state its probe read.
    Reverted,
    /// Its revert failed; a person must look at the host.
    RevertFailed,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::Reverted => "reverted",
            Self::RevertFailed => "revert-failed",
        }
    }
}

/// The agent's decision on a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BundleOutcome {
    /// Verified and recorded; applying its steps comes next.
    Accepted,
    /// A bundle with the same hash was applied successfully before, so it is not run again.
    AlreadyApplied,
    /// Kept, waiting for a trusted clock.
    Deferred { reason: String },
    /// Rejected: `rule` is the code of the rule that failed (such as `expired` or `unknown-key`)
    /// and `detail` names the part.
    Rejected { rule: String, detail: String },
    /// The agent is applying the bundle; `step` is the index of the step under way.
    Running { step: u32 },
    /// Every step applied and verified, and every health check passed.
    Applied,
    /// The bundle failed and every completed step was reverted. `step` is the step that failed,
    /// or `None` when a health check failed after all steps applied.
    Reverted { step: Option<u32>, detail: String },
    /// Reverting failed at `step`: the host is in neither state and a person must look at it.
    /// Never reported as success or as rolled back.
    RevertFailed { step: u32, detail: String },
    /// A rollback order reverted the applied bundle.
    RolledBack,
    /// A rollback order failed at `step`; a person must look at the host.
    RollbackFailed { step: u32, detail: String },
    /// Verified and waiting in the agent's queue for a maintenance window. `code` names why
    /// (`outside-windows`, `frozen`, `past-cutoff`, `clock-untrusted`, `no-schedule`, ...),
    /// and `expected_start_unix_s` is when the agent expects to start it, if it can tell.
    Waiting {
        code: String,
        reason: String,
        expected_start_unix_s: Option<i64>,
    },
}

impl BundleOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::AlreadyApplied => "already-applied",
            Self::Deferred { .. } => "deferred",
            Self::Rejected { .. } => "rejected",
            Self::Running { .. } => "running",
            Self::Applied => "applied",
            Self::Reverted { .. } => "reverted",
            Self::RevertFailed { .. } => "revert-failed",
            Self::RolledBack => "rolled-back",
            Self::RollbackFailed { .. } => "rollback-failed",
            Self::Waiting { .. } => "waiting",
        }
    }

    /// Returns whether the host needs a person: a revert or rollback left it in neither state.
    pub fn needs_person(&self) -> bool {
        matches!(
            self,
            Self::RevertFailed { .. } | Self::RollbackFailed { .. }
        )
    }

    /// Returns the failed step and its detail, for outcomes that carry them.
    pub fn failure(&self) -> Option<(Option<u32>, &str)> {
        match self {
            Self::Reverted { step, detail } => Some((*step, detail)),
            Self::RevertFailed { step, detail } | Self::RollbackFailed { step, detail } => {
                Some((Some(*step), detail))
            }
            Self::Rejected { detail, .. } | Self::Deferred { reason: detail } => {
                Some((None, detail))
            }
            _ => None,
        }
    }
}

/// Everything a full report carries about the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub facts: HostFacts,
    /// Package rows, sorted by key, one row per key.
    pub packages: Vec<Package>,
    /// Pending updates, sorted by ecosystem, name and arch.
    pub pending_updates: Vec<PendingUpdate>,
    /// When the local package lists were last refreshed (the newest list file's modification time),
    /// or `None` where the host has no lists.
    pub package_lists_updated_unix_s: Option<i64>,
    pub reboot: RebootRequired,
    pub warnings: Vec<Warning>,
    /// The tier the agent is configured for; it picks the signature thresholds the agent applies.
    pub tier: String,
    /// The version of the trust root the agent has pinned, if it has one.
    pub trust_root_version: Option<u64>,
    /// The version of the window schedule that governs the agent (its site's when it has one,
    /// else its tier's), if it has one.
    pub schedule_version: Option<u64>,
    /// The latest bundles the agent received, newest last, at most [`MAX_BUNDLE_RECORDS`].
    pub bundles: Vec<BundleRecord>,
}

/// How many bundle records an agent keeps and reports.
pub const MAX_BUNDLE_RECORDS: usize = 50;

/// The changes from one inventory to the next. Fields that did not change are `None` or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryDelta {
    pub facts: Option<HostFacts>,
    /// Rows that are new or changed.
    pub upserted: Vec<Package>,
    /// Keys of rows that are gone.
    pub removed: Vec<PackageKey>,
    /// The whole new list, when it changed.
    pub pending_updates: Option<Vec<PendingUpdate>>,
    /// The new value, when it changed.
    pub package_lists_updated_unix_s: Option<Option<i64>>,
    pub reboot: Option<RebootRequired>,
    /// The whole new list, when it changed.
    pub warnings: Option<Vec<Warning>>,
    pub tier: Option<String>,
    pub trust_root_version: Option<Option<u64>>,
    pub schedule_version: Option<Option<u64>>,
    /// The whole new list, when it changed.
    pub bundles: Option<Vec<BundleRecord>>,
}

impl InventoryDelta {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Inventory {
    /// Sorts the package rows and pending updates into their canonical order and keeps only the
    /// last row of each key, so that two inventories of the same host compare equal.
    pub fn normalize(&mut self) {
        let mut by_key: BTreeMap<PackageKey, Package> = BTreeMap::new();
        for package in self.packages.drain(..) {
            by_key.insert(package.key(), package);
        }
        self.packages = by_key.into_values().collect();
        self.pending_updates
            .sort_by(|a, b| (a.ecosystem, &a.name, &a.arch).cmp(&(b.ecosystem, &b.name, &b.arch)));
    }

    /// Computes the delta that turns `self` into `next`. Both must be normalized.
    pub fn diff(&self, next: &Inventory) -> InventoryDelta {
        let old: BTreeMap<PackageKey, &Package> =
            self.packages.iter().map(|p| (p.key(), p)).collect();
        let new: BTreeMap<PackageKey, &Package> =
            next.packages.iter().map(|p| (p.key(), p)).collect();

        let upserted = new
            .iter()
            .filter(|(key, package)| old.get(*key) != Some(*package))
            .map(|(_, package)| (*package).clone())
            .collect();
        let removed = old
            .keys()
            .filter(|key| !new.contains_key(*key))
            .cloned()
            .collect();

        InventoryDelta {
            facts: changed(&self.facts, &next.facts),
            upserted,
            removed,
            pending_updates: changed(&self.pending_updates, &next.pending_updates),
            package_lists_updated_unix_s: changed(
                &self.package_lists_updated_unix_s,
                &next.package_lists_updated_unix_s,
            ),
            reboot: changed(&self.reboot, &next.reboot),
            warnings: changed(&self.warnings, &next.warnings),
            tier: changed(&self.tier, &next.tier),
            trust_root_version: changed(&self.trust_root_version, &next.trust_root_version),
            schedule_version: changed(&self.schedule_version, &next.schedule_version),
            bundles: changed(&self.bundles, &next.bundles),
        }
    }

    /// Applies a delta computed by [`Inventory::diff`]. The result is normalized.
    pub fn apply(&mut self, delta: &InventoryDelta) {
        if let Some(facts) = &delta.facts {
            self.facts = facts.clone();
        }
        let mut rows: BTreeMap<PackageKey, Package> =
            self.packages.drain(..).map(|p| (p.key(), p)).collect();
        for key in &delta.removed {
            rows.remove(key);
        }
        for package in &delta.upserted {
            rows.insert(package.key(), package.clone());
        }
        self.packages = rows.into_values().collect();
        if let Some(pending) = &delta.pending_updates {
            self.pending_updates = pending.clone();
        }
        if let Some(updated) = delta.package_lists_updated_unix_s {
            self.package_lists_updated_unix_s = updated;
        }
        if let Some(reboot) = &delta.reboot {
            self.reboot = reboot.clone();
        }
        if let Some(warnings) = &delta.warnings {
            self.warnings = warnings.clone();
        }
        if let Some(tier) = &delta.tier {
            self.tier = tier.clone();
        }
        if let Some(version) = delta.trust_root_version {
            self.trust_root_version = version;
        }
        if let Some(version) = delta.schedule_version {
            self.schedule_version = version;
        }
        if let Some(bundles) = &delta.bundles {
            self.bundles = bundles.clone();
        }
        self.normalize();
    }
}

fn changed<T: PartialEq + Clone>(old: &T, new: &T) -> Option<T> {
    (old != new).then(|| new.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn package(name: &str, arch: &str, version: &str) -> Package {
        Package {
            ecosystem: Ecosystem::Deb,
            name: name.into(),
            arch: arch.into(),
            version: version.into(),
            state: InstallState::Installed,
            selection: Selection::Install,
            provides: vec![],
        }
    }

    #[test]
    fn diff_of_one_upgrade_carries_one_row() {
        let mut old = Inventory {
            packages: vec![
                package("openssl", "amd64", "3.0.11-1"),
                package("curl", "amd64", "7.88.1-10"),
            ],
            ..Default::default()
        };
        old.normalize();
        let mut new = old.clone();
        new.packages[1].version = "3.0.13-1".into();

        let delta = old.diff(&new);

        assert_eq!(
            delta.upserted,
            vec![package("openssl", "amd64", "3.0.13-1")]
        );
        assert!(delta.removed.is_empty());
        assert!(delta.facts.is_none());
        assert!(delta.pending_updates.is_none());
    }

    #[test]
    fn architectures_are_separate_rows() {
        let mut inventory = Inventory {
            packages: vec![
                package("libssl3", "amd64", "3.0.11-1"),
                package("libssl3", "i386", "3.0.11-1"),
                package("dnsutils", "all", "1:9.18.19-1"),
            ],
            ..Default::default()
        };
        inventory.normalize();
        assert_eq!(inventory.packages.len(), 3);
    }

    fn arb_package() -> impl Strategy<Value = Package> {
        (
            "[a-d]{1,2}",
            prop::sample::select(vec!["amd64", "i386", "all"]),
            "[0-9]\\.[0-9]",
        )
            .prop_map(|(name, arch, version)| package(&name, arch, &version))
    }

    fn arb_inventory() -> impl Strategy<Value = Inventory> {
        (
            prop::collection::vec(arb_package(), 0..12),
            any::<Option<i64>>(),
            any::<bool>(),
            "[a-z]{0,3}",
            any::<Option<u64>>(),
            any::<Option<u64>>(),
        )
            .prop_map(
                |(packages, lists, reboot, hostname, trust_root, schedule)| {
                    let mut inventory = Inventory {
                        packages,
                        package_lists_updated_unix_s: lists,
                        reboot: RebootRequired {
                            required: reboot,
                            packages: vec![],
                        },
                        facts: HostFacts {
                            hostname,
                            ..Default::default()
                        },
                        trust_root_version: trust_root,
                        schedule_version: schedule,
                        ..Default::default()
                    };
                    inventory.normalize();
                    inventory
                },
            )
    }

    #[test]
    fn diff_carries_schedule_version() {
        let old = Inventory {
            schedule_version: Some(3),
            ..Default::default()
        };
        let new = Inventory {
            schedule_version: Some(4),
            ..Default::default()
        };
        let delta = old.diff(&new);
        assert_eq!(delta.schedule_version, Some(Some(4)));
        assert_eq!(delta.trust_root_version, None);
        let mut rebuilt = old.clone();
        rebuilt.apply(&delta);
        assert_eq!(rebuilt.schedule_version, Some(4));
        assert!(new.diff(&new).is_empty());
    }

    proptest! {
        #[test]
        fn apply_of_diff_reaches_next(old in arb_inventory(), new in arb_inventory()) {
            let delta = old.diff(&new);
            let mut rebuilt = old.clone();
            rebuilt.apply(&delta);
            prop_assert_eq!(rebuilt, new);
        }

        #[test]
        fn diff_with_itself_is_empty(inventory in arb_inventory()) {
            prop_assert!(inventory.diff(&inventory).is_empty());
        }
    }
}
