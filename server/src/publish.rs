//! Bundle publication: checks a bundle file against the trust root the server was given, records
//! it, and sends it to the agents its selector matches.
//!
//! The server never modifies a bundle: the bytes it stores and sends are the bytes it received,
//! and every agent verifies them again against its own pinned root. This check only spares the
//! fleet a bundle that no agent would accept. The server has no signing key.

use std::collections::BTreeMap;

use tidegate_protocol::trust::{
    inspect_bundle, verify_bundle, BundleVerdict, ClockTrust, HighWater, StreamName, TrustRoot,
};

/// The largest bundle file the server delivers: orders travel as one MQTT packet, and the
/// agent's default limit for incoming packets is 1 MiB. Larger bundles need fetch-by-hash, which
/// does not exist yet.
pub const MAX_DELIVERED_BUNDLE_BYTES: usize = 1024 * 1024 - 4096;

/// A bundle that passed the publication check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedBundle {
    pub bundle_id: String,
    pub stream: String,
    pub sequence: u64,
    pub bundle_hash: String,
    pub signers: Vec<String>,
    pub target_tiers: Vec<String>,
    pub target_os: Vec<String>,
    pub target_tags: Vec<String>,
    /// Whether this exact bundle (same stream, sequence and hash) was published before.
    pub republished: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the server has no trust root to check bundles against; start tidegate-server with --trust-root FILE")]
    NoTrustRoot,
    #[error("bundle rejected ({rule}): {detail}")]
    Rejected { rule: &'static str, detail: String },
    #[error(
        "bundle file is {bytes} bytes, above the {limit} bytes that can be delivered over MQTT"
    )]
    TooLarge { bytes: usize, limit: usize },
}

impl PublishError {
    /// Returns the rule code of a rejection, for the API's JSON.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            Self::Rejected { rule, .. } => Some(rule),
            Self::TooLarge { .. } => Some("size-limit"),
            Self::NoTrustRoot => None,
        }
    }
}

/// Checks a bundle file as the strictest agent it targets would: against every tier it names, or
/// against the default thresholds and every tier override when it names none. `published` holds
/// the high-water mark of every stream the server has published, so a lower sequence is
/// rejected as a rollback here already.
pub fn check_bundle(
    file: &[u8],
    root: Option<&TrustRoot>,
    now_unix_s: i64,
    published: &BTreeMap<StreamName, HighWater>,
) -> Result<CheckedBundle, PublishError> {
    let root = root.ok_or(PublishError::NoTrustRoot)?;
    if file.len() > MAX_DELIVERED_BUNDLE_BYTES {
        return Err(PublishError::TooLarge {
            bytes: file.len(),
            limit: MAX_DELIVERED_BUNDLE_BYTES,
        });
    }
    let inspection = inspect_bundle(file).map_err(|error| PublishError::Rejected {
        rule: error.rule().code(),
        detail: error.to_string(),
    })?;
    let manifest = &inspection.manifest;
    let mut tiers: Vec<String> = manifest.target.tiers.clone();
    if tiers.is_empty() {
        tiers.push("default".into());
        tiers.extend(root.tier_overrides.keys().cloned());
    }

    let mut republished = false;
    for tier in &tiers {
        match verify_bundle(
            file,
            root,
            tier,
            now_unix_s,
            &ClockTrust::Trusted,
            published,
        ) {
            BundleVerdict::Accepted { .. } => {}
            BundleVerdict::AlreadyApplied { .. } => republished = true,
            BundleVerdict::Deferred { reason, .. } => {
                // The server passes a trusted clock, so this cannot happen. Reject rather than guess.
                return Err(PublishError::Rejected {
                    rule: "clock",
                    detail: reason,
                });
            }
            BundleVerdict::Rejected { rule, detail } => {
                return Err(PublishError::Rejected {
                    rule: rule.code(),
                    detail: format!("for tier {tier}: {detail}"),
                });
            }
        }
    }

    Ok(CheckedBundle {
        bundle_id: manifest.bundle_id.to_string(),
        stream: manifest.stream.to_string(),
        sequence: manifest.sequence,
        bundle_hash: inspection.bundle_hash.to_string(),
        signers: inspection.signers.iter().map(ToString::to_string).collect(),
        target_tiers: manifest.target.tiers.clone(),
        target_os: manifest.target.os.clone(),
        target_tags: manifest.target.tags.clone(),
        republished,
    })
}

/// Returns whether an agent with this tier and OS is a target. An empty list matches anything. An
/// OS entry matches when it equals one word of the agent's OS name, ignoring case (`debian`
/// matches "Debian GNU/Linux"). Agents carry no tags yet, so a selector with tags matches no agent.
pub fn targets_agent(bundle: &CheckedBundle, tier: &str, os_name: &str) -> bool {
    let tier_matches =
        bundle.target_tiers.is_empty() || bundle.target_tiers.iter().any(|t| t == tier);
    let os = os_name.to_ascii_lowercase();
    let os_matches = bundle.target_os.is_empty()
        || bundle.target_os.iter().any(|wanted| {
            os.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|word| word == wanted.to_ascii_lowercase())
        });
    tier_matches && os_matches && bundle.target_tags.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(tiers: &[&str], os: &[&str], tags: &[&str]) -> CheckedBundle {
        CheckedBundle {
            bundle_id: "b".into(),
            stream: "s".into(),
            sequence: 1,
            bundle_hash: String::new(),
            signers: vec![],
            target_tiers: tiers.iter().map(|s| s.to_string()).collect(),
            target_os: os.iter().map(|s| s.to_string()).collect(),
            target_tags: tags.iter().map(|s| s.to_string()).collect(),
            republished: false,
        }
    }

    #[test]
    fn empty_selector_targets_everyone() {
        assert!(targets_agent(
            &bundle(&[], &[], &[]),
            "office",
            "Debian GNU/Linux"
        ));
    }

    #[test]
    fn tier_and_os_must_both_match() {
        let selector = bundle(&["plant-floor"], &["debian"], &[]);
        assert!(targets_agent(&selector, "plant-floor", "Debian GNU/Linux"));
        assert!(!targets_agent(&selector, "office", "Debian GNU/Linux"));
        assert!(!targets_agent(&selector, "plant-floor", "Ubuntu"));
    }

    #[test]
    fn tags_match_no_agent_yet() {
        assert!(!targets_agent(
            &bundle(&[], &[], &["line-3"]),
            "office",
            "Debian GNU/Linux"
        ));
    }

    #[test]
    fn no_trust_root_is_an_error() {
        assert!(matches!(
            check_bundle(b"x", None, 0, &BTreeMap::new()),
            Err(PublishError::NoTrustRoot)
        ));
    }
}
