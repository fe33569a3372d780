//! The trust root: the versioned list of keys and signature thresholds that every other signature
//! is checked against, and the rules for moving from one version to the next.
//!
//! An agent pins the first root it receives at enrollment ([`verify_initial_root`]) and then only
//! moves forward one version at a time ([`verify_root_update`]). Version N+1 is valid only with a
//! threshold of signatures from version N's root keys and a threshold from its own root keys.
//! Neither the old key holders alone nor a set of new keys alone can take over the root.
//!
//! # Signed root file
//!
//! | bytes | content |
//! | --- | --- |
//! | 4 | magic `TGRT` |
//! | 1 | format, 1 |
//! | varint + n | the root document: canonical postcard of [`TrustRoot`] |
//! | varint | number of signatures, at most [`MAX_SIGNATURES`] |
//! | 72 each | signatures: 8-byte key id, 64-byte Ed25519 signature |
//!
//! The whole file is at most [`MAX_ROOT_FILE_BYTES`]. Each signature covers the document bytes in
//! the [`SigningContext::TrustRoot`] context. Signers add their signatures one after another
//! ([`SignedTrustRoot::sign`]), each on their own machine: decode, sign, encode.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::codec::{self, FormatError, Framing};
use super::keys::{KeyId, PublicKey, Role, SignOutcome, Signature, SigningContext, SigningKey};
use super::{validate_name, MAX_SIGNATURES};
use crate::InvalidId;

/// Maximum size of a signed root file. A root with [`MAX_ROOT_KEYS`] keys,
/// [`MAX_TIER_OVERRIDES`] tier overrides and [`MAX_SIGNATURES`] signatures takes about 24 KiB,
/// so this leaves room while keeping an agent's memory for a hostile file small.
pub const MAX_ROOT_FILE_BYTES: usize = 64 * 1024;

/// Maximum number of keys in one root, over all roles. Beyond this, a root is more likely a
/// mistake than a real organisation.
pub const MAX_ROOT_KEYS: usize = 64;

/// Maximum number of tiers with their own thresholds.
pub const MAX_TIER_OVERRIDES: usize = 256;

const ROOT_FRAMING: Framing = Framing {
    what: "signed trust root",
    magic: b"TGRT",
    format: 1,
    max_bytes: MAX_ROOT_FILE_BYTES,
};

/// The number of distinct valid signatures each role needs, for tiers without an override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Signatures by root keys on the next root version (and on this one, at enrollment).
    pub root: u32,
    /// Signatures by security keys on a bundle.
    pub security: u32,
    /// Signatures by OT keys on a window schedule.
    pub ot: u32,
}

/// Thresholds of one tier that differ from the root's defaults. `None` keeps the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierThresholds {
    pub security: Option<u32>,
    pub ot: Option<u32>,
}

/// One version of the trust root. postcard encodes the fields in order, so fields are never
/// reordered; a new field needs a new root file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRoot {
    /// Starts at 1 and grows by exactly one per rotation.
    pub version: u64,
    /// Every key of every role. A key has exactly one role.
    pub keys: Vec<PublicKey>,
    pub thresholds: Thresholds,
    /// Per-tier thresholds, for example two security signatures for `critical`. The keys are tier
    /// names with the rules of [`crate::trust::BundleId`].
    pub tier_overrides: BTreeMap<String, TierThresholds>,
    /// Tiers whose agents may run the commands a bundle supplies (run-command steps and command
    /// health checks). A tier not listed runs none, whatever the bundle declares.
    pub command_tiers: BTreeSet<String>,
}

impl TrustRoot {
    /// Checks that the document is usable: version at least 1, every key id derived from its key,
    /// no key listed twice, and every threshold at least 1 and no larger than the number of keys
    /// of its role.
    pub fn validate(&self) -> Result<(), RootError> {
        let version = self.version;
        if version == 0 {
            return Err(RootError::InvalidVersion);
        }
        if self.keys.len() > MAX_ROOT_KEYS {
            return Err(FormatError::TooMany {
                what: "trust root",
                items: "keys",
                count: self.keys.len() as u64,
                max: MAX_ROOT_KEYS as u64,
            }
            .into());
        }
        if self.tier_overrides.len() > MAX_TIER_OVERRIDES {
            return Err(FormatError::TooMany {
                what: "trust root",
                items: "tier overrides",
                count: self.tier_overrides.len() as u64,
                max: MAX_TIER_OVERRIDES as u64,
            }
            .into());
        }

        if self.command_tiers.len() > MAX_TIER_OVERRIDES {
            return Err(FormatError::TooMany {
                what: "trust root",
                items: "command tiers",
                count: self.command_tiers.len() as u64,
                max: MAX_TIER_OVERRIDES as u64,
            }
            .into());
        }
        for tier in &self.command_tiers {
            validate_name("tier", tier)
                .map_err(|source| RootError::InvalidTier { version, source })?;
        }

        let mut seen = BTreeSet::new();
        for key in &self.keys {
            let actual = KeyId::of_public_key(&key.bytes);
            if key.key_id != actual {
                return Err(RootError::KeyIdMismatch {
                    version,
                    listed: key.key_id,
                    actual,
                });
            }
            if !seen.insert(key.key_id) {
                return Err(RootError::DuplicateKey {
                    version,
                    key_id: key.key_id,
                });
            }
        }

        self.check_threshold(Role::Root, None, self.thresholds.root)?;
        self.check_threshold(Role::Security, None, self.thresholds.security)?;
        self.check_threshold(Role::Ot, None, self.thresholds.ot)?;
        for (tier, overrides) in &self.tier_overrides {
            validate_name("tier", tier)
                .map_err(|source| RootError::InvalidTier { version, source })?;
            if overrides.security.is_none() && overrides.ot.is_none() {
                return Err(RootError::EmptyTierOverride {
                    version,
                    tier: tier.clone(),
                });
            }
            if let Some(threshold) = overrides.security {
                self.check_threshold(Role::Security, Some(tier), threshold)?;
            }
            if let Some(threshold) = overrides.ot {
                self.check_threshold(Role::Ot, Some(tier), threshold)?;
            }
        }
        Ok(())
    }

    fn check_threshold(
        &self,
        role: Role,
        tier: Option<&str>,
        threshold: u32,
    ) -> Result<(), RootError> {
        let keys = self.keys_with_role(role).count();
        if threshold == 0 || threshold as usize > keys {
            return Err(RootError::UnsatisfiableThreshold {
                version: self.version,
                role,
                tier: tier.map(str::to_owned),
                threshold,
                keys,
            });
        }
        Ok(())
    }

    /// Returns whether agents of `tier` may run commands that bundles supply.
    pub fn allows_commands(&self, tier: &str) -> bool {
        self.command_tiers.contains(tier)
    }

    /// Returns the key listed under `key_id`, whatever its role.
    pub fn key(&self, key_id: &KeyId) -> Option<&PublicKey> {
        self.keys.iter().find(|key| key.key_id == *key_id)
    }

    /// Returns the keys that have `role`.
    pub fn keys_with_role(&self, role: Role) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter().filter(move |key| key.role == role)
    }

    /// Returns the number of distinct valid signatures by keys of `role` that a document for
    /// `tier` needs. That is the tier's override if it has one, else the root's default. Root
    /// signatures have no per-tier override.
    pub fn threshold(&self, role: Role, tier: &str) -> u32 {
        let overrides = self.tier_overrides.get(tier);
        match role {
            Role::Root => self.thresholds.root,
            Role::Security => overrides
                .and_then(|o| o.security)
                .unwrap_or(self.thresholds.security),
            Role::Ot => overrides.and_then(|o| o.ot).unwrap_or(self.thresholds.ot),
        }
    }
}

/// A root document as it travels and is stored: the signed bytes and the signatures over them.
///
/// The fields are public so that tools can inspect and rearrange a file. Every check reads them
/// again, so a changed field can make verification fail but never pass wrongly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTrustRoot {
    /// The canonical postcard encoding of the [`TrustRoot`]; these are the bytes that are signed.
    pub document_bytes: Vec<u8>,
    pub signatures: Vec<Signature>,
}

impl SignedTrustRoot {
    /// Encodes a root document, without signatures yet.
    pub fn new(root: &TrustRoot) -> Result<Self, RootError> {
        root.validate()?;
        Ok(Self {
            document_bytes: codec::encode_document("trust root", root)?,
            signatures: Vec::new(),
        })
    }

    /// Decodes and validates the root document. This checks the document alone, not its
    /// signatures: use [`verify_initial_root`] or [`verify_root_update`] for that.
    pub fn document(&self) -> Result<TrustRoot, RootError> {
        let root: TrustRoot =
            codec::decode_document("signed trust root", "root document", &self.document_bytes)?;
        root.validate()?;
        Ok(root)
    }

    /// Adds `key`'s signature. Only root keys sign roots. Whether the key counts is decided at
    /// verification, because it must be a root key of this version or of the one before.
    pub fn sign(&mut self, key: &SigningKey) -> Result<SignOutcome, RootError> {
        if key.role() != Role::Root {
            return Err(RootError::NotRootKey {
                key_id: key.key_id(),
                role: key.role(),
            });
        }
        let signature = key.sign(SigningContext::TrustRoot, &self.document_bytes);
        super::keys::add_signature(&mut self.signatures, signature, "signed trust root")
            .map_err(RootError::from)
    }

    /// Returns the key ids of the signatures, in file order, for display. Nothing is verified.
    pub fn signers(&self) -> Vec<KeyId> {
        self.signatures.iter().map(|s| s.key_id).collect()
    }

    /// Writes the signed root file format described in this module's documentation.
    pub fn encode(&self) -> Result<Vec<u8>, RootError> {
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(FormatError::TooMany {
                what: ROOT_FRAMING.what,
                items: "signatures",
                count: self.signatures.len() as u64,
                max: MAX_SIGNATURES as u64,
            }
            .into());
        }
        let mut out = ROOT_FRAMING.start();
        codec::write_bytes(&mut out, &self.document_bytes);
        codec::write_value(&mut out, &(self.signatures.len() as u64));
        for signature in &self.signatures {
            codec::write_value(&mut out, signature);
        }
        ROOT_FRAMING.check_size(&out)?;
        Ok(out)
    }

    /// Reads a signed root file and checks its format, its size limits and its document. The
    /// signatures are not verified here.
    pub fn decode(input: &[u8]) -> Result<Self, RootError> {
        let mut reader = ROOT_FRAMING.open(input)?;
        let document_bytes = reader.bytes("root document", MAX_ROOT_FILE_BYTES)?.to_vec();
        let count = reader.count("signature count", "signatures", MAX_SIGNATURES)?;
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            signatures.push(reader.value::<Signature>("signature")?);
        }
        reader.finish("signatures")?;

        let signed = Self {
            document_bytes,
            signatures,
        };
        signed.document()?;
        Ok(signed)
    }
}

/// Checks the first root an agent receives, at enrollment. Nothing older vouches for it, so it is
/// trusted as given, but it must be valid and carry a threshold of signatures from its own root
/// keys. Every signature by a key it lists must be by a root key and must verify; signatures by
/// keys it does not list (those of the version before, on a rotated root) are set aside.
pub fn verify_initial_root(signed: &SignedTrustRoot) -> Result<TrustRoot, RootError> {
    let offered = signed.document()?;
    check_root_signatures(signed, &offered, None)?;
    Ok(offered)
}

/// Checks `offered` as the successor of the pinned root `current` and returns its document.
///
/// The checks, in this order:
///
/// 1. the document is valid;
/// 2. its version is exactly `current.version + 1`. An equal version is rejected with
///    [`RootError::AlreadyCurrent`] or [`RootError::ConflictingVersion`], a lower one with
///    [`RootError::Older`] and a higher one with [`RootError::VersionGap`];
/// 3. every signature is by a root key of `current` or `offered`, and verifies;
/// 4. the distinct valid signers include `current`'s root threshold of `current`'s root keys,
///    and `offered`'s root threshold of `offered`'s root keys.
pub fn verify_root_update(
    current: &TrustRoot,
    offered: &SignedTrustRoot,
) -> Result<TrustRoot, RootError> {
    let document = offered.document()?;
    let (pinned, next) = (current.version, document.version);
    if next == pinned {
        return Err(if document == *current {
            RootError::AlreadyCurrent { version: next }
        } else {
            RootError::ConflictingVersion { version: next }
        });
    }
    if next < pinned {
        return Err(RootError::Older {
            current: pinned,
            offered: next,
        });
    }
    if next - pinned > 1 {
        return Err(RootError::VersionGap {
            current: pinned,
            offered: next,
        });
    }
    check_root_signatures(offered, &document, Some(current))?;
    Ok(document)
}

/// Verifies every signature on `signed` and checks the root thresholds of `offered` and, for an
/// update, of `previous`.
fn check_root_signatures(
    signed: &SignedTrustRoot,
    offered: &TrustRoot,
    previous: Option<&TrustRoot>,
) -> Result<(), RootError> {
    let mut valid_for_previous = BTreeSet::new();
    let mut valid_for_offered = BTreeSet::new();

    for (index, signature) in signed.signatures.iter().enumerate() {
        let key_id = signature.key_id;
        let in_previous = previous.and_then(|root| root.key(&key_id));
        let in_offered = offered.key(&key_id);
        let previous_root_key = in_previous.filter(|key| key.role == Role::Root);
        let offered_root_key = in_offered.filter(|key| key.role == Role::Root);

        if previous_root_key.is_none() && offered_root_key.is_none() {
            if previous.is_none() && in_offered.is_none() {
                // A rotated root carries signatures by the version before it, which is not at hand
                // at enrolment, so a signature by a key this root does not list is set aside:
                // neither counted nor rejected.
                continue;
            }
            return Err(match in_offered.or(in_previous) {
                Some(key) => RootError::SignerRole {
                    index,
                    key_id,
                    role: key.role,
                },
                None => RootError::UnknownSigner {
                    index,
                    key_id,
                    previous: previous.map(|root| root.version),
                    offered: offered.version,
                },
            });
        }

        let verifies = |key: &PublicKey| {
            key.verify(
                SigningContext::TrustRoot,
                &signed.document_bytes,
                &signature.bytes,
            )
        };
        for (key, valid_set) in [
            (previous_root_key, &mut valid_for_previous),
            (offered_root_key, &mut valid_for_offered),
        ] {
            let Some(key) = key else { continue };
            if !verifies(key) {
                return Err(RootError::BadSignature {
                    index,
                    key_id,
                    offered: offered.version,
                });
            }
            valid_set.insert(key_id);
        }
    }

    if let Some(previous) = previous {
        check_root_threshold(previous, offered.version, &valid_for_previous)?;
    }
    check_root_threshold(offered, offered.version, &valid_for_offered)
}

fn check_root_threshold(
    signing_root: &TrustRoot,
    offered: u64,
    valid_signers: &BTreeSet<KeyId>,
) -> Result<(), RootError> {
    let required = signing_root.thresholds.root;
    if (valid_signers.len() as u64) < u64::from(required) {
        return Err(RootError::Threshold {
            offered,
            signing_version: signing_root.version,
            valid: valid_signers.len(),
            required,
            signers: join_key_ids(valid_signers),
        });
    }
    Ok(())
}

fn join_key_ids(key_ids: &BTreeSet<KeyId>) -> String {
    if key_ids.is_empty() {
        return "none".to_owned();
    }
    key_ids
        .iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_tier(tier: &Option<String>) -> String {
    match tier {
        Some(tier) => format!(" of tier {tier}"),
        None => String::new(),
    }
}

fn describe_versions(previous: &Option<u64>, offered: &u64) -> String {
    match previous {
        Some(previous) => format!("v{previous} or v{offered}"),
        None => format!("v{offered}"),
    }
}

/// Rejection of a root document or signed root file, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("invalid trust root: the version is 0, and versions start at 1")]
    InvalidVersion,
    #[error("invalid trust root v{version}: key {listed} is listed under a wrong key id; the key's id is {actual}")]
    KeyIdMismatch {
        version: u64,
        listed: KeyId,
        actual: KeyId,
    },
    #[error(
        "invalid trust root v{version}: key {key_id} is listed twice; a key has exactly one role"
    )]
    DuplicateKey { version: u64, key_id: KeyId },
    #[error(
        "invalid trust root v{version}: the {role} threshold{} is {threshold}, but it must be at \
         least 1 and at most the {keys} {role} keys listed",
        describe_tier(.tier)
    )]
    UnsatisfiableThreshold {
        version: u64,
        role: Role,
        tier: Option<String>,
        threshold: u32,
        keys: usize,
    },
    #[error("invalid trust root v{version}: {source}")]
    InvalidTier { version: u64, source: InvalidId },
    #[error("invalid trust root v{version}: the override of tier {tier} sets neither a security nor an OT threshold")]
    EmptyTierOverride { version: u64, tier: String },
    #[error("key {key_id} has role {role}; only a root key can sign a trust root")]
    NotRootKey { key_id: KeyId, role: Role },
    #[error(
        "signature {index}: key {key_id} is not listed in trust root {}",
        describe_versions(.previous, .offered)
    )]
    UnknownSigner {
        index: usize,
        key_id: KeyId,
        previous: Option<u64>,
        offered: u64,
    },
    #[error("signature {index}: key {key_id} has role {role}; only root keys sign a trust root")]
    SignerRole {
        index: usize,
        key_id: KeyId,
        role: Role,
    },
    #[error("signature {index} by key {key_id} does not verify over trust root v{offered}")]
    BadSignature {
        index: usize,
        key_id: KeyId,
        offered: u64,
    },
    #[error(
        "trust root v{offered} has valid signatures from {valid} root keys of v{signing_version} \
         ({signers}), but v{signing_version} requires {required}"
    )]
    Threshold {
        offered: u64,
        signing_version: u64,
        valid: usize,
        required: u32,
        signers: String,
    },
    #[error(
        "trust root v{offered} cannot follow the pinned v{current}: roots are applied one version \
         at a time, so v{} must come first",
        .current + 1
    )]
    VersionGap { current: u64, offered: u64 },
    #[error("trust root v{version} is already the pinned root")]
    AlreadyCurrent { version: u64 },
    #[error(
        "trust root v{version} differs from the pinned root of the same version; one version \
         must never be issued with two different contents"
    )]
    ConflictingVersion { version: u64 },
    #[error("trust root v{offered} is older than the pinned v{current}")]
    Older { current: u64, offered: u64 },
}
