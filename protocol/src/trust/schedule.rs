//! Signed maintenance-window schedules: the document OT engineers sign for a tier (or for one
//! site of a tier), its file format, and [`verify_schedule`], which decides whether an agent
//! takes a schedule.
//!
//! A schedule document names its tier and optionally a site, carries a version, and holds the
//! window part ([`CalendarSpec`]: zone, validity, windows, freezes) that [`crate::window`]
//! evaluates. A site schedule replaces its tier's schedule for the agents of that site. Versions
//! count separately for a tier's own schedule and for each site's, so an agent keeps one current
//! version per (tier, site) pair and passes it to [`verify_schedule`] as `current_version`.
//!
//! # Schedule file
//!
//! | bytes | content |
//! | --- | --- |
//! | 4 | magic `TGWS` |
//! | 1 | format, 1 |
//! | varint + n | the document: canonical postcard of [`ScheduleDocument`], at most [`MAX_SCHEDULE_DOCUMENT_BYTES`] |
//! | varint | number of signatures, at most [`MAX_SIGNATURES`] |
//! | 72 each | signatures: 8-byte key id, 64-byte Ed25519 signature |
//!
//! The whole file is at most [`MAX_SCHEDULE_FILE_BYTES`]. Signatures are by OT keys of the trust
//! root and cover the document bytes in the [`SigningContext::WindowSchedule`] context. The
//! [`ScheduleHash`] is the SHA-256 of the document bytes.
//!
//! # Checks of [`verify_schedule`], in order
//!
//! 1. format and size limits ([`RejectRule::Format`], [`RejectRule::SizeLimit`]);
//! 2. every signature is by a key the root lists ([`RejectRule::UnknownKey`]) with the OT role
//!    ([`RejectRule::WrongRole`]: a security or root key does not count), and verifies
//!    ([`RejectRule::BadSignature`]);
//! 3. the distinct valid signers meet the tier's OT threshold ([`RejectRule::Threshold`]);
//! 4. the document decodes and is valid ([`RejectRule::InvalidSchedule`]);
//! 5. it is for the agent's tier, and for no site or the agent's site
//!    ([`RejectRule::WrongTarget`]);
//! 6. its version against the agent's current one: lower is a replay ([`RejectRule::Rollback`]),
//!    equal is [`ScheduleVerdict::AlreadyHave`]. An equal version with other content is also
//!    `AlreadyHave`, so the agent keeps what it has: the caller passes only the version;
//! 7. with an untrusted clock the verdict is [`ScheduleVerdict::Deferred`];
//! 8. `not_before <= now < expires` ([`RejectRule::NotYetValid`], [`RejectRule::Expired`]).
//!
//! The document is decoded only after its signatures verified, as for bundles.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::codec::{self, FormatError, Framing};
use super::keys::{add_signature, KeyId, Role, SignOutcome, Signature, SigningContext, SigningKey};
use super::root::TrustRoot;
use super::verify::{verify_signatures, ClockTrust, RejectRule};
use super::{format_unix_s, sha256, to_hex, validate_name, MAX_SIGNATURES};
use crate::window::{Calendar, CalendarSpec, WindowError};
use crate::InvalidId;

/// Maximum size of an encoded schedule document. [`crate::window::MAX_WINDOW_RULES`] rules
/// with 200-byte cron expressions and [`crate::window::MAX_FREEZES`] freezes with 200-byte
/// reasons take about 70 KiB.
pub const MAX_SCHEDULE_DOCUMENT_BYTES: usize = 96 * 1024;

/// Maximum size of a schedule file: the document, [`MAX_SIGNATURES`] signatures and framing.
pub const MAX_SCHEDULE_FILE_BYTES: usize = 100 * 1024;

const SCHEDULE_FRAMING: Framing = Framing {
    what: "schedule file",
    magic: b"TGWS",
    format: 1,
    max_bytes: MAX_SCHEDULE_FILE_BYTES,
};

/// The signed part of a schedule. postcard encodes the fields in order, so fields are never
/// reordered; a new field needs a new schedule file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleDocument {
    /// The tier the schedule is for: 1 to 64 characters of `[a-z0-9_-]`.
    pub tier: String,
    /// The site within the tier, with the same rules, or `None` for the whole tier.
    pub site: Option<String>,
    /// Starts at 1 and only grows; an agent never takes a lower version after a higher one.
    pub version: u64,
    pub calendar: CalendarSpec,
}

impl ScheduleDocument {
    /// Checks the document and returns its calendar, ready for queries: valid tier and site
    /// names, a version of at least 1 and a valid window part.
    pub fn validate(&self) -> Result<Calendar, ScheduleError> {
        validate_name("tier", &self.tier)?;
        if let Some(site) = &self.site {
            validate_name("site", site)?;
        }
        if self.version == 0 {
            return Err(ScheduleError::InvalidVersion);
        }
        Calendar::new(&self.calendar).map_err(|source| ScheduleError::Invalid {
            target: self.target(),
            version: self.version,
            source: Box::new(source),
        })
    }

    /// Describes the target for messages: `tier plant` or `tier plant, site hamburg`.
    pub fn target(&self) -> String {
        match &self.site {
            Some(site) => format!("tier {}, site {site}", self.tier),
            None => format!("tier {}", self.tier),
        }
    }

    /// Validates the document and returns its canonical encoding, the bytes that are signed.
    pub fn encode(&self) -> Result<Vec<u8>, ScheduleError> {
        self.validate()?;
        let bytes = codec::encode_document("schedule document", self)?;
        if bytes.len() > MAX_SCHEDULE_DOCUMENT_BYTES {
            return Err(FormatError::TooLarge {
                what: "schedule document",
                actual: bytes.len() as u64,
                max: MAX_SCHEDULE_DOCUMENT_BYTES as u64,
            }
            .into());
        }
        Ok(bytes)
    }

    /// Decodes document bytes, which must be canonical, and validates the document.
    pub fn decode(bytes: &[u8]) -> Result<(Self, Calendar), ScheduleError> {
        let document: Self = codec::decode_document("schedule file", "document", bytes)?;
        let calendar = document.validate()?;
        Ok((document, calendar))
    }
}

/// The SHA-256 of a schedule's document bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScheduleHash(pub [u8; 32]);

impl fmt::Display for ScheduleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for ScheduleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScheduleHash({self})")
    }
}

/// A schedule file, decoded but not verified. The fields are public so that tools can inspect
/// it; verification reads them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedSchedule {
    /// The canonical postcard encoding of the [`ScheduleDocument`]; the bytes that are signed.
    pub document_bytes: Vec<u8>,
    pub signatures: Vec<Signature>,
}

impl SignedSchedule {
    /// Encodes a document, without signatures yet.
    pub fn new(document: &ScheduleDocument) -> Result<Self, ScheduleError> {
        Ok(Self {
            document_bytes: document.encode()?,
            signatures: Vec::new(),
        })
    }

    /// Decodes and validates the document. Nothing about the signatures is checked.
    pub fn document(&self) -> Result<(ScheduleDocument, Calendar), ScheduleError> {
        ScheduleDocument::decode(&self.document_bytes)
    }

    pub fn schedule_hash(&self) -> ScheduleHash {
        ScheduleHash(sha256(&self.document_bytes))
    }

    /// Adds `key`'s signature over the document. Only OT keys sign schedules.
    pub fn sign(&mut self, key: &SigningKey) -> Result<SignOutcome, ScheduleError> {
        if key.role() != Role::Ot {
            return Err(ScheduleError::NotOtKey {
                key_id: key.key_id(),
                role: key.role(),
            });
        }
        let signature = key.sign(SigningContext::WindowSchedule, &self.document_bytes);
        add_signature(&mut self.signatures, signature, SCHEDULE_FRAMING.what).map_err(Into::into)
    }

    /// Returns the key ids of the signatures, in file order, for display. Nothing is verified.
    pub fn signers(&self) -> Vec<KeyId> {
        self.signatures.iter().map(|s| s.key_id).collect()
    }

    /// Writes the schedule file format described in this module's documentation.
    pub fn encode(&self) -> Result<Vec<u8>, ScheduleError> {
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(FormatError::TooMany {
                what: SCHEDULE_FRAMING.what,
                items: "signatures",
                count: self.signatures.len() as u64,
                max: MAX_SIGNATURES as u64,
            }
            .into());
        }
        let mut out = SCHEDULE_FRAMING.start();
        codec::write_bytes(&mut out, &self.document_bytes);
        codec::write_value(&mut out, &(self.signatures.len() as u64));
        for signature in &self.signatures {
            codec::write_value(&mut out, signature);
        }
        SCHEDULE_FRAMING.check_size(&out)?;
        Ok(out)
    }

    /// Reads a schedule file and checks its format and size limits. Neither the document nor
    /// the signatures are checked here.
    pub fn decode(input: &[u8]) -> Result<Self, ScheduleError> {
        let mut reader = SCHEDULE_FRAMING.open(input)?;
        let document_bytes = reader
            .bytes("schedule document", MAX_SCHEDULE_DOCUMENT_BYTES)?
            .to_vec();
        let count = reader.count("signature count", "signatures", MAX_SIGNATURES)?;
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            signatures.push(reader.value::<Signature>("signature")?);
        }
        reader.finish("signatures")?;
        Ok(Self {
            document_bytes,
            signatures,
        })
    }
}

/// A schedule document or file that is invalid, or a signing request that cannot be met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("invalid schedule: {0}")]
    InvalidName(#[from] InvalidId),
    #[error("invalid schedule: the version is 0, and versions start at 1")]
    InvalidVersion,
    #[error("invalid schedule for {target}, version {version}: {source}")]
    Invalid {
        target: String,
        version: u64,
        source: Box<WindowError>,
    },
    #[error("key {key_id} has role {role}; only an OT key can sign a schedule")]
    NotOtKey { key_id: KeyId, role: Role },
}

impl ScheduleError {
    /// Returns the rule a file with this error breaks.
    pub fn rule(&self) -> RejectRule {
        match self {
            Self::Format(error) if error.is_size_limit() => RejectRule::SizeLimit,
            Self::Format(_) => RejectRule::Format,
            _ => RejectRule::InvalidSchedule,
        }
    }
}

/// The outcome of [`verify_schedule`].
#[derive(Debug, Clone)]
pub enum ScheduleVerdict {
    /// Every check passed; the schedule replaces the current one for its (tier, site).
    Accepted {
        document: ScheduleDocument,
        calendar: Calendar,
        schedule_hash: ScheduleHash,
    },
    /// The version equals the current one: nothing to do.
    AlreadyHave { version: u64 },
    /// Signatures, document, target and version are good, but the clock is not trusted, so
    /// validity in time is unknown. The caller keeps the file and verifies it again once the
    /// clock is trusted.
    Deferred {
        document: ScheduleDocument,
        schedule_hash: ScheduleHash,
        reason: String,
    },
    /// The schedule must not be used. `detail` names the part that broke `rule`.
    Rejected { rule: RejectRule, detail: String },
}

impl ScheduleVerdict {
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

/// Decides whether an agent of `tier` (and `site`, if it has one) takes a schedule file, by the
/// checks listed in this module's documentation. `now_unix_s` is the caller's one clock
/// reading, `clock` whether it is trusted, and `current_version` the version of the schedule
/// the agent holds for the file's (tier, site), if any.
pub fn verify_schedule(
    file_bytes: &[u8],
    root: &TrustRoot,
    tier: &str,
    site: Option<&str>,
    now_unix_s: i64,
    clock: &ClockTrust,
    current_version: Option<u64>,
) -> ScheduleVerdict {
    // 1. Format and size limits.
    let file = match SignedSchedule::decode(file_bytes) {
        Ok(file) => file,
        Err(error) => return ScheduleVerdict::rejected(error.rule(), error.to_string()),
    };

    // 2. Every signer known, with the OT role, and every signature valid.
    let signers = match verify_signatures(
        root,
        Role::Ot,
        SigningContext::WindowSchedule,
        &file.document_bytes,
        &file.signatures,
    ) {
        Ok(signers) => signers,
        Err(error) => return ScheduleVerdict::rejected(error.rule(), error.to_string()),
    };

    // 3. The tier's OT threshold of distinct keys.
    let required = root.threshold(Role::Ot, tier);
    if (signers.len() as u64) < u64::from(required) {
        let names: Vec<String> = signers.iter().map(KeyId::to_string).collect();
        return ScheduleVerdict::rejected(
            RejectRule::Threshold,
            format!(
                "the schedule has valid signatures from {} distinct OT keys ({}), but tier \
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

    // 4. The document.
    let (document, calendar) = match file.document() {
        Ok(decoded) => decoded,
        Err(error) => return ScheduleVerdict::rejected(error.rule(), error.to_string()),
    };
    let schedule_hash = file.schedule_hash();

    // 5. The target.
    let site_matches = match (&document.site, site) {
        (None, _) => true,
        (Some(wanted), Some(actual)) => wanted == actual,
        (Some(_), None) => false,
    };
    if document.tier != tier || !site_matches {
        return ScheduleVerdict::rejected(
            RejectRule::WrongTarget,
            format!(
                "schedule version {} is for {}, but this agent is in tier {tier}{}",
                document.version,
                document.target(),
                site.map(|site| format!(", site {site}"))
                    .unwrap_or_default()
            ),
        );
    }

    // 6. The version against the current one.
    if let Some(current) = current_version {
        if document.version == current {
            return ScheduleVerdict::AlreadyHave { version: current };
        }
        if document.version < current {
            return ScheduleVerdict::rejected(
                RejectRule::Rollback,
                format!(
                    "schedule version {} for {} is older than the current version {current}; an \
                     older schedule is a replay",
                    document.version,
                    document.target()
                ),
            );
        }
    }

    // 7. and 8. Time, from the caller's single reading.
    if let ClockTrust::Untrusted { reason } = clock {
        return ScheduleVerdict::Deferred {
            document,
            schedule_hash,
            reason: format!(
                "the clock is not trusted ({reason}); the schedule is kept and checked again once \
                 it is"
            ),
        };
    }
    let (not_before, expires) = (
        document.calendar.not_before_unix_s,
        document.calendar.expires_unix_s,
    );
    if now_unix_s < not_before {
        return ScheduleVerdict::rejected(
            RejectRule::NotYetValid,
            format!(
                "schedule version {} for {} is not valid before {}; the clock reads {}",
                document.version,
                document.target(),
                format_unix_s(not_before),
                format_unix_s(now_unix_s)
            ),
        );
    }
    if expires <= now_unix_s {
        return ScheduleVerdict::rejected(
            RejectRule::Expired,
            format!(
                "schedule version {} for {} expired at {}; the clock reads {}",
                document.version,
                document.target(),
                format_unix_s(expires),
                format_unix_s(now_unix_s)
            ),
        );
    }

    ScheduleVerdict::Accepted {
        document,
        calendar,
        schedule_hash,
    }
}
