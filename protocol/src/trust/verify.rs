//! Whether an agent may apply a bundle, decided from the bundle file, the pinned trust root, the
//! agent's tier, one reading of its clock and its per-stream high-water marks.
//!
//! [`verify_bundle`] checks in this order and stops at the first failure:
//!
//! 1. format and size limits of the file ([`RejectRule::Format`], [`RejectRule::SizeLimit`]);
//! 2. every signature is by a key the root lists ([`RejectRule::UnknownKey`]) with the security
//!    role ([`RejectRule::WrongRole`]), and verifies over the manifest bytes
//!    ([`RejectRule::BadSignature`]);
//! 3. the distinct valid signers meet the tier's security threshold ([`RejectRule::Threshold`]);
//! 4. the manifest decodes and is valid ([`RejectRule::Format`], [`RejectRule::InvalidManifest`]),
//!    and every payload matches its entry in the manifest, with none missing or extra;
//! 5. time: with an untrusted clock the verdict is [`BundleVerdict::Deferred`], never a rejection;
//!    otherwise `not_before <= now < expires`;
//! 6. the sequence is above the stream's high-water mark: an equal sequence with an equal hash is
//!    [`BundleVerdict::AlreadyApplied`], an equal sequence with another hash or a lower sequence
//!    is rejected.
//!
//! The manifest is decoded only after its signatures verified (between steps 3 and 4), so
//! unsigned input never reaches the manifest parser. A damaged manifest therefore fails as a bad
//! signature.
//!
//! Every rejection names its rule and the part that broke it (signature index and key id, payload
//! name, instants), in a detail message meant for the journal and the server.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::bundle::{check_payloads, BundleFile, BundleHash, BundleManifest, Payload, StreamName};
use super::format_unix_s;
use super::keys::{KeyId, Role, Signature, SigningContext};
use super::root::TrustRoot;

/// Whether the caller's clock reading can be relied on. An agent's clock is untrusted while it
/// is earlier than the agent's build time or than the latest time the agent has persisted, or
/// while the OS reports it as not synchronised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockTrust {
    Trusted,
    /// The time checks cannot be made. `reason` is the cause, shown in the deferral message.
    Untrusted {
        reason: String,
    },
}

/// The last bundle applied from one stream, as the agent persists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighWater {
    pub sequence: u64,
    pub bundle_hash: BundleHash,
}

/// The outcome of [`verify_bundle`].
// A verdict is produced and consumed once per bundle, so the size of the accepted variant costs
// little.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleVerdict {
    /// Every check passed; the bundle may be applied within a window.
    Accepted {
        manifest: BundleManifest,
        bundle_hash: BundleHash,
        payloads: Vec<Payload>,
    },
    /// The stream's high-water mark is this very bundle (same sequence, same hash): nothing to do.
    AlreadyApplied {
        manifest: BundleManifest,
        bundle_hash: BundleHash,
    },
    /// Signatures and payloads are good, but the clock is not trusted, so validity in time is
    /// unknown. The caller keeps the bundle file and verifies it again once the clock is trusted;
    /// the sequence has not been checked yet.
    Deferred {
        manifest: BundleManifest,
        bundle_hash: BundleHash,
        reason: String,
    },
    /// The bundle must not be applied. `detail` names the part that broke `rule`.
    Rejected { rule: RejectRule, detail: String },
}

impl BundleVerdict {
    /// Returns the rule of a rejection, or `None` for any other verdict.
    pub fn rejection_rule(&self) -> Option<RejectRule> {
        match self {
            Self::Rejected { rule, .. } => Some(*rule),
            _ => None,
        }
    }

    fn rejected(rule: RejectRule, detail: impl Into<String>) -> Self {
        Self::Rejected {
            rule,
            detail: detail.into(),
        }
    }
}

/// The rule a rejected bundle broke. Agents report it to the server, so postcard encodes it by
/// variant index and rules are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectRule {
    /// Not a bundle file of a format this build reads, or a part that does not decode.
    Format,
    /// The file, or a count or length inside it, exceeds its limit.
    SizeLimit,
    /// A signature is by a key that the trust root does not list.
    UnknownKey,
    /// A signature is by a listed key whose role may not sign this kind of document.
    WrongRole,
    /// A signature does not verify over the signed bytes.
    BadSignature,
    /// Too few distinct keys signed for the tier.
    Threshold,
    /// The manifest decodes but breaks a rule of its own, such as `expires` before `not_before`.
    InvalidManifest,
    /// A payload listed in the manifest is not in the file.
    PayloadMissing,
    /// The file contains a payload the manifest does not list, or one payload twice.
    PayloadExtra,
    /// A payload's size differs from the manifest.
    PayloadSize,
    /// A payload's SHA-256 differs from the manifest.
    PayloadHash,
    /// `now < not_before`.
    NotYetValid,
    /// `expires <= now`.
    Expired,
    /// The sequence is below the stream's high-water mark.
    Rollback,
    /// The sequence equals the stream's high-water mark, but the bundle hash differs.
    SequenceReused,
    /// A schedule decodes but breaks a rule of its own, such as a cron expression that never
    /// fires.
    InvalidSchedule,
    /// A schedule is for another tier or site than the agent's.
    WrongTarget,
}

impl RejectRule {
    /// Returns a stable, kebab-case name of the rule, for logs, events and the server's reports.
    pub fn code(self) -> &'static str {
        match self {
            Self::Format => "format",
            Self::SizeLimit => "size-limit",
            Self::UnknownKey => "unknown-key",
            Self::WrongRole => "wrong-role",
            Self::BadSignature => "bad-signature",
            Self::Threshold => "threshold",
            Self::InvalidManifest => "invalid-manifest",
            Self::PayloadMissing => "payload-missing",
            Self::PayloadExtra => "payload-extra",
            Self::PayloadSize => "payload-size",
            Self::PayloadHash => "payload-hash",
            Self::NotYetValid => "not-yet-valid",
            Self::Expired => "expired",
            Self::Rollback => "rollback",
            Self::SequenceReused => "sequence-reused",
            Self::InvalidSchedule => "invalid-schedule",
            Self::WrongTarget => "wrong-target",
        }
    }
}

impl fmt::Display for RejectRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A signature that does not count, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature {index}: unknown key {key_id}, not listed in trust root v{root_version}")]
    UnknownKey {
        index: usize,
        key_id: KeyId,
        root_version: u64,
    },
    #[error(
        "signature {index}: key {key_id} has role {role}, but this document needs {expected} keys"
    )]
    WrongRole {
        index: usize,
        key_id: KeyId,
        role: Role,
        expected: Role,
    },
    #[error("signature {index} by key {key_id} does not verify over the signed bytes")]
    BadSignature { index: usize, key_id: KeyId },
}

impl SignatureError {
    pub fn rule(&self) -> RejectRule {
        match self {
            Self::UnknownKey { .. } => RejectRule::UnknownKey,
            Self::WrongRole { .. } => RejectRule::WrongRole,
            Self::BadSignature { .. } => RejectRule::BadSignature,
        }
    }
}

/// Verifies every signature over `document` in `context` against `root`, requiring each signer
/// to be listed with `role`, and returns the distinct key ids that signed. The first signature
/// that is unknown, of the wrong role or invalid fails the whole check, so a damaged signature
/// is reported even when the others would meet the threshold. Comparing the count with a
/// threshold is left to the caller, which has the tier.
pub fn verify_signatures(
    root: &TrustRoot,
    role: Role,
    context: SigningContext,
    document: &[u8],
    signatures: &[Signature],
) -> Result<BTreeSet<KeyId>, SignatureError> {
    let mut signers = BTreeSet::new();
    for (index, signature) in signatures.iter().enumerate() {
        let key_id = signature.key_id;
        let key = root.key(&key_id).ok_or(SignatureError::UnknownKey {
            index,
            key_id,
            root_version: root.version,
        })?;
        if key.role != role {
            return Err(SignatureError::WrongRole {
                index,
                key_id,
                role: key.role,
                expected: role,
            });
        }
        if !key.verify(context, document, &signature.bytes) {
            return Err(SignatureError::BadSignature { index, key_id });
        }
        signers.insert(key_id);
    }
    Ok(signers)
}

/// Decides whether a bundle may be applied, by the checks listed in this module's documentation.
///
/// `now_unix_s` is the caller's one clock reading for this decision, and `clock` states whether
/// it can be trusted. `high_water` maps each stream to the last bundle the agent applied from it; a
/// stream without an entry has never applied one.
pub fn verify_bundle(
    file_bytes: &[u8],
    root: &TrustRoot,
    tier: &str,
    now_unix_s: i64,
    clock: &ClockTrust,
    high_water: &BTreeMap<StreamName, HighWater>,
) -> BundleVerdict {
    // 1. Format and size limits.
    let file = match BundleFile::decode(file_bytes) {
        Ok(file) => file,
        Err(error) => return BundleVerdict::rejected(error.rule(), error.to_string()),
    };

    // 2. Every signer known, with the security role, and every signature valid.
    let signers = match verify_signatures(
        root,
        Role::Security,
        SigningContext::BundleManifest,
        &file.manifest_bytes,
        &file.signatures,
    ) {
        Ok(signers) => signers,
        Err(error) => return BundleVerdict::rejected(error.rule(), error.to_string()),
    };

    // 3. The tier's threshold of distinct keys.
    let required = root.threshold(Role::Security, tier);
    if (signers.len() as u64) < u64::from(required) {
        let names: Vec<String> = signers.iter().map(KeyId::to_string).collect();
        return BundleVerdict::rejected(
            RejectRule::Threshold,
            format!(
                "the bundle has valid signatures from {} distinct security keys ({}), but tier \
                 {tier} requires {required} under trust root v{}",
                signers.len(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                },
                root.version
            ),
        );
    }

    // 4. The manifest, then every payload against it.
    let manifest = match file.manifest() {
        Ok(manifest) => manifest,
        Err(error) => return BundleVerdict::rejected(error.rule(), error.to_string()),
    };
    if let Err(error) = check_payloads(&manifest.payloads, &file.payloads) {
        return BundleVerdict::rejected(
            error.rule(),
            format!("bundle {}: {error}", manifest.bundle_id),
        );
    }
    let bundle_hash = file.bundle_hash();

    // 5. Time, from the caller's single reading.
    if let ClockTrust::Untrusted { reason } = clock {
        return BundleVerdict::Deferred {
            manifest,
            bundle_hash,
            reason: format!(
                "the clock is not trusted ({reason}); the bundle is kept and checked again once it is"
            ),
        };
    }
    if now_unix_s < manifest.not_before_unix_s {
        return BundleVerdict::rejected(
            RejectRule::NotYetValid,
            format!(
                "bundle {} is not valid before {} ({}); the clock reads {} ({now_unix_s})",
                manifest.bundle_id,
                format_unix_s(manifest.not_before_unix_s),
                manifest.not_before_unix_s,
                format_unix_s(now_unix_s),
            ),
        );
    }
    if manifest.expires_unix_s <= now_unix_s {
        return BundleVerdict::rejected(
            RejectRule::Expired,
            format!(
                "bundle {} expired at {} ({}); the clock reads {} ({now_unix_s})",
                manifest.bundle_id,
                format_unix_s(manifest.expires_unix_s),
                manifest.expires_unix_s,
                format_unix_s(now_unix_s),
            ),
        );
    }

    // 6. The sequence against the stream's high-water mark.
    if let Some(mark) = high_water.get(&manifest.stream) {
        if manifest.sequence == mark.sequence {
            if bundle_hash == mark.bundle_hash {
                return BundleVerdict::AlreadyApplied {
                    manifest,
                    bundle_hash,
                };
            }
            return BundleVerdict::rejected(
                RejectRule::SequenceReused,
                format!(
                    "bundle {} reuses sequence {} of stream {}, which was applied with bundle hash \
                     {}; this bundle's hash is {bundle_hash}",
                    manifest.bundle_id, manifest.sequence, manifest.stream, mark.bundle_hash
                ),
            );
        }
        if manifest.sequence < mark.sequence {
            return BundleVerdict::rejected(
                RejectRule::Rollback,
                format!(
                    "bundle {} has sequence {} of stream {}, below the applied sequence {}; a \
                     lower sequence is a rollback attempt",
                    manifest.bundle_id, manifest.sequence, manifest.stream, mark.sequence
                ),
            );
        }
    }

    BundleVerdict::Accepted {
        manifest,
        bundle_hash,
        payloads: file.payloads,
    }
}
