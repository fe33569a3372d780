//! `tidegate root`: put a trust root version together, sign it at several desks, check it and
//! export the signed root file that agents pin.
//!
//! A root is edited as a draft: a JSON file with the version, the public key lines, the
//! thresholds, the tier overrides and the signatures collected so far. A draft may be incomplete
//! (no keys yet, a threshold not set), which the signed root file format cannot express, because
//! its decoder only accepts valid roots. Every edit drops the signatures, because they cover the
//! exact document. `root export` writes the signed root file (magic `TGRT`, see
//! `tidegate_protocol::trust::root`). Every command that reads a root accepts either form, and
//! `root sign` writes back the form it read.
//!
//! Signatures in a draft cover the canonical postcard encoding of the document the draft
//! describes, so they carry over unchanged into the exported file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::{
    verify_initial_root, verify_root_update, KeyId, PublicKey, Role, RootError, SignOutcome,
    Signature, SignedTrustRoot, SigningContext, StreamName, Thresholds, TierThresholds, TrustRoot,
};

use super::format::{render_fields, render_table};
use super::keys::{
    self, count_noun, from_hex, load_signing_key, resolve_key_id, resolve_public_key, to_hex,
    FileError, KeysCommandError,
};
use super::CliError;

/// The `format` field of every draft, which distinguishes a draft from other JSON files.
const DRAFT_FORMAT: &str = "tidegate trust root draft";

/// The draft layout this build reads and writes.
const DRAFT_FORMAT_VERSION: u32 = 1;

/// The magic that starts a signed root file.
const SIGNED_ROOT_MAGIC: &[u8; 4] = b"TGRT";

/// The largest root file read: a signed root file is at most 64 KiB, and a draft of the same root
/// in JSON with hex is under four times that.
const MAX_ROOT_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Start a trust root draft: empty, or the next version of an existing root
    New(NewArgs),
    /// Add public keys to a draft (drops its signatures)
    AddKey(AddKeyArgs),
    /// Remove keys from a draft (drops its signatures)
    RemoveKey(RemoveKeyArgs),
    /// Set how many signatures a role needs, by default or for one tier (drops the signatures)
    SetThreshold(SetThresholdArgs),
    /// Allow or forbid the commands that bundles supply, for the agents of one tier (drops the
    /// signatures)
    SetCommands(SetCommandsArgs),
    /// Add a root key's signature to a draft or a signed root file
    Sign(SignArgs),
    /// Check a root's signatures: for enrolment, or as the successor of --previous
    Verify(VerifyArgs),
    /// Show a root's version, keys, thresholds and signatures
    Show(ShowArgs),
    /// Write the signed root file that agents pin and the server loads
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The draft file to create; an existing file is never overwritten
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// The version of the new root; versions start at 1
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "from",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub version: u64,

    /// Start version N+1 from version N's root file, with the same keys and thresholds
    #[arg(long, value_name = "PREVIOUS_FILE")]
    pub from: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AddKeyArgs {
    /// The draft file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// A public key line `ROLE KEY-ID HEX`, a file holding one, or a signing-key file (only its
    /// public key is used); repeat to add several
    #[arg(long = "key", value_name = "KEY", required = true)]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RemoveKeyArgs {
    /// The draft file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// A key id, a public key line, or a file holding a public or signing key; repeat to remove
    /// several
    #[arg(long = "key", value_name = "KEY", required = true)]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SetThresholdArgs {
    /// The draft file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The role whose signatures are counted: root, security or ot
    #[arg(long, value_name = "ROLE")]
    pub role: Role,

    /// The number of distinct signatures required, at least 1
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,

    /// Set the threshold for this tier only (security and ot roles); without it, the default
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,
}

#[derive(Debug, Args)]
pub struct SetCommandsArgs {
    /// The draft file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The tier whose agents the setting is for
    #[arg(long, value_name = "TIER")]
    pub tier: String,

    /// Whether agents of the tier may run run-command steps and command health checks
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub allow: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The draft or signed root file; it is updated in place
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The signing-key file of a root key
    #[arg(long, value_name = "KEY_FILE")]
    pub key: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The draft or signed root file to check
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The root that agents have pinned now (version N-1); FILE must then be signed by a
    /// threshold of both versions' root keys
    #[arg(long, value_name = "PREVIOUS_FILE")]
    pub previous: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The draft or signed root file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Also count the signatures against this previous version's root threshold
    #[arg(long, value_name = "PREVIOUS_FILE")]
    pub previous: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The draft file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The signed root file to create; an existing file is never overwritten
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// A failed `root` command, or a root file that a `bundle` command cannot use.
#[derive(Debug, thiserror::Error)]
pub enum RootCommandError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Key(#[from] KeysCommandError),
    #[error("{path} is neither a signed root file nor a trust root draft: {reason}")]
    UnreadableFile { path: PathBuf, reason: String },
    #[error("invalid signed root file {path}: {source}")]
    InvalidSignedFile { path: PathBuf, source: RootError },
    #[error("invalid trust root draft {path}: {reason}")]
    InvalidDraft { path: PathBuf, reason: String },
    #[error(
        "{path} is a signed root file, and only drafts can be edited; start the next version \
         with `tidegate root new --from {path} --out DRAFT`"
    )]
    NotDraft { path: PathBuf },
    #[error("trust root {path} is not complete: {reason}")]
    Incomplete { path: PathBuf, reason: String },
    #[error("key {key_id} is already listed in {path} as a {role} key")]
    DuplicateKey {
        path: PathBuf,
        key_id: KeyId,
        role: Role,
    },
    #[error("key {key_id} is not listed in {path}; `tidegate root show {path}` lists its keys")]
    KeyNotListed { path: PathBuf, key_id: KeyId },
    #[error("invalid tier {tier:?}: {reason}")]
    InvalidTier { tier: String, reason: &'static str },
    #[error("root thresholds apply to every tier; --tier only works with --role security or ot")]
    RootTierOverride,
    #[error("key {key_id} in {path} has role {role}; only a root key can sign a trust root")]
    NotRootKey {
        path: PathBuf,
        key_id: KeyId,
        role: Role,
    },
    #[error("trust root v{version} in {path} cannot have a next version: the version is the largest possible")]
    VersionOverflow { path: PathBuf, version: u64 },
    #[error("failed to sign {path}: {source}")]
    Sign { path: PathBuf, source: RootError },
    #[error("failed to encode {path}: {source}")]
    Encode { path: PathBuf, source: RootError },
    #[error("trust root {path} is not valid{hint}: {source}")]
    Rejected {
        path: PathBuf,
        source: RootError,
        hint: String,
    },
}

/// Whether a root file is a draft or a signed root file. `root sign` writes back the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootFileForm {
    Draft,
    Signed,
}

/// Thresholds of a draft, each unset until `root set-threshold` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftThresholds {
    root: Option<u32>,
    security: Option<u32>,
    ot: Option<u32>,
}

/// One signature as a draft stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftSignature {
    key_id: String,
    /// The 64-byte Ed25519 signature in hex.
    signature: String,
}

/// The JSON layout of a draft file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftFile {
    format: String,
    format_version: u32,
    version: u64,
    /// Public key lines `ROLE KEY-ID HEX`, in document order.
    keys: Vec<String>,
    thresholds: DraftThresholds,
    #[serde(default)]
    tier_overrides: BTreeMap<String, TierThresholds>,
    /// Tiers whose agents may run commands that bundles supply.
    #[serde(default)]
    command_tiers: BTreeSet<String>,
    #[serde(default)]
    signatures: Vec<DraftSignature>,
}

/// A trust root as the commands work on it, read from either form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RootDraft {
    version: u64,
    keys: Vec<PublicKey>,
    thresholds: DraftThresholds,
    tier_overrides: BTreeMap<String, TierThresholds>,
    command_tiers: BTreeSet<String>,
    signatures: Vec<Signature>,
}

impl RootDraft {
    fn empty(version: u64) -> Self {
        Self {
            version,
            keys: Vec::new(),
            thresholds: DraftThresholds::default(),
            tier_overrides: BTreeMap::new(),
            command_tiers: BTreeSet::new(),
            signatures: Vec::new(),
        }
    }

    fn from_signed(signed: &SignedTrustRoot, root: &TrustRoot) -> Self {
        Self {
            version: root.version,
            keys: root.keys.clone(),
            thresholds: DraftThresholds {
                root: Some(root.thresholds.root),
                security: Some(root.thresholds.security),
                ot: Some(root.thresholds.ot),
            },
            tier_overrides: root.tier_overrides.clone(),
            command_tiers: root.command_tiers.clone(),
            signatures: signed.signatures.clone(),
        }
    }

    /// Builds the root document, or explains what is still missing or invalid.
    fn trust_root(&self) -> Result<TrustRoot, String> {
        let missing: Vec<&str> = [
            ("root", self.thresholds.root),
            ("security", self.thresholds.security),
            ("ot", self.thresholds.ot),
        ]
        .into_iter()
        .filter(|(_, threshold)| threshold.is_none())
        .map(|(role, _)| role)
        .collect();
        if let Some(first) = missing.first() {
            let unset = if missing.len() == 1 {
                format!("the {first} threshold is not set")
            } else {
                let (last, others) = missing.split_last().expect("two or more are missing");
                format!(
                    "the {} and {last} thresholds are not set",
                    others.join(", ")
                )
            };
            return Err(format!(
                "{unset}; set each with `tidegate root set-threshold FILE --role {first} --count N`"
            ));
        }
        let root = TrustRoot {
            version: self.version,
            keys: self.keys.clone(),
            thresholds: Thresholds {
                root: self.thresholds.root.unwrap_or_default(),
                security: self.thresholds.security.unwrap_or_default(),
                ot: self.thresholds.ot.unwrap_or_default(),
            },
            tier_overrides: self.tier_overrides.clone(),
            command_tiers: self.command_tiers.clone(),
        };
        root.validate().map_err(|error| error.to_string())?;
        Ok(root)
    }

    /// Builds the signed form: the canonical document bytes and the draft's signatures.
    fn signed(&self, path: &Path) -> Result<(TrustRoot, SignedTrustRoot), RootCommandError> {
        let root = self
            .trust_root()
            .map_err(|reason| RootCommandError::Incomplete {
                path: path.to_owned(),
                reason,
            })?;
        let mut signed =
            SignedTrustRoot::new(&root).map_err(|source| RootCommandError::Encode {
                path: path.to_owned(),
                source,
            })?;
        signed.signatures = self.signatures.clone();
        Ok((root, signed))
    }

    fn to_file(&self) -> DraftFile {
        DraftFile {
            format: DRAFT_FORMAT.to_owned(),
            format_version: DRAFT_FORMAT_VERSION,
            version: self.version,
            keys: self.keys.iter().map(PublicKey::to_string).collect(),
            thresholds: self.thresholds,
            tier_overrides: self.tier_overrides.clone(),
            command_tiers: self.command_tiers.clone(),
            signatures: self
                .signatures
                .iter()
                .map(|signature| DraftSignature {
                    key_id: signature.key_id.to_string(),
                    signature: to_hex(&signature.bytes),
                })
                .collect(),
        }
    }

    fn from_file(file: DraftFile) -> Result<Self, String> {
        if file.format != DRAFT_FORMAT {
            return Err(format!(
                "the format field is {:?}, expected {DRAFT_FORMAT:?}",
                file.format
            ));
        }
        if file.format_version != DRAFT_FORMAT_VERSION {
            return Err(format!(
                "draft format version {} is not supported; this build reads version \
                 {DRAFT_FORMAT_VERSION}",
                file.format_version
            ));
        }
        let keys = file
            .keys
            .iter()
            .map(|line| PublicKey::parse(line).map_err(|error| format!("key {line:?}: {error}")))
            .collect::<Result<Vec<_>, _>>()?;
        let signatures = file
            .signatures
            .iter()
            .map(|signature| {
                let key_id = KeyId::parse(&signature.key_id).map_err(|error| error.to_string())?;
                let bytes: [u8; 64] = from_hex(&signature.signature)
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| {
                        format!("the signature by {key_id} must be 128 hexadecimal digits")
                    })?;
                Ok(Signature { key_id, bytes })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            version: file.version,
            keys,
            thresholds: file.thresholds,
            tier_overrides: file.tier_overrides,
            command_tiers: file.command_tiers,
            signatures,
        })
    }

    /// Drops the signatures after an edit and writes a notice to `out`, because they covered the
    /// old document.
    fn drop_signatures(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.signatures.is_empty() {
            return Ok(());
        }
        let signers: Vec<String> = self
            .signatures
            .iter()
            .map(|signature| signature.key_id.to_string())
            .collect();
        writeln!(
            out,
            "signatures removed: the document changed, so these signatures no longer apply: {}; \
             collect them again",
            signers.join(", ")
        )?;
        self.signatures.clear();
        Ok(())
    }
}

/// A root file as read from disk.
struct LoadedRoot {
    form: RootFileForm,
    draft: RootDraft,
}

pub fn run(command: RootCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        RootCommand::New(args) => new(&args, out),
        RootCommand::AddKey(args) => add_key(&args, out),
        RootCommand::RemoveKey(args) => remove_key(&args, out),
        RootCommand::SetThreshold(args) => set_threshold(&args, out),
        RootCommand::SetCommands(args) => set_commands(&args, out),
        RootCommand::Sign(args) => sign(&args, out),
        RootCommand::Verify(args) => verify(&args, out),
        RootCommand::Show(args) => show(&args, out),
        RootCommand::Export(args) => export(&args, out),
    }
}

fn new(args: &NewArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let draft = match &args.from {
        None => RootDraft::empty(args.version),
        Some(previous_path) => {
            let previous = load_root_file(previous_path)?.draft;
            let version = previous.version.checked_add(1).ok_or_else(|| {
                RootCommandError::VersionOverflow {
                    path: previous_path.clone(),
                    version: previous.version,
                }
            })?;
            RootDraft {
                version,
                signatures: Vec::new(),
                ..previous
            }
        }
    };
    keys::write_new_file(&args.out, draft_json(&draft).as_bytes(), 0o644)
        .map_err(RootCommandError::from)?;

    match &args.from {
        None => writeln!(
            out,
            "started trust root v{} draft {}; add keys with `tidegate root add-key` and set the \
             thresholds with `tidegate root set-threshold`",
            draft.version,
            args.out.display()
        )?,
        Some(previous_path) => writeln!(
            out,
            "started trust root v{} draft {} from v{} ({}): {}, same thresholds; v{} needs \
             signatures from a root threshold of v{} and of v{}",
            draft.version,
            args.out.display(),
            draft.version - 1,
            previous_path.display(),
            count_noun(draft.keys.len() as u64, "key"),
            draft.version,
            draft.version - 1,
            draft.version
        )?,
    }
    Ok(())
}

fn add_key(args: &AddKeyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut draft = load_draft_for_edit(&args.file)?;
    let mut added = Vec::new();
    for value in &args.keys {
        let key = resolve_public_key(value)
            .map_err(RootCommandError::from)?
            .key;
        if let Some(listed) = draft.keys.iter().find(|listed| listed.key_id == key.key_id) {
            return Err(RootCommandError::DuplicateKey {
                path: args.file.clone(),
                key_id: key.key_id,
                role: listed.role,
            }
            .into());
        }
        added.push(format!("{} key {}", key.role, key.key_id));
        draft.keys.push(key);
    }
    draft.drop_signatures(out)?;
    save_draft(&args.file, &draft)?;
    writeln!(
        out,
        "added {} to trust root v{} draft {}",
        added.join(", "),
        draft.version,
        args.file.display()
    )?;
    Ok(())
}

fn remove_key(args: &RemoveKeyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut draft = load_draft_for_edit(&args.file)?;
    let mut removed = Vec::new();
    for value in &args.keys {
        let key_id = resolve_key_id(value).map_err(RootCommandError::from)?;
        let Some(index) = draft.keys.iter().position(|key| key.key_id == key_id) else {
            return Err(RootCommandError::KeyNotListed {
                path: args.file.clone(),
                key_id,
            }
            .into());
        };
        let key = draft.keys.remove(index);
        removed.push(format!("{} key {}", key.role, key.key_id));
    }
    draft.drop_signatures(out)?;
    save_draft(&args.file, &draft)?;
    writeln!(
        out,
        "removed {} from trust root v{} draft {}",
        removed.join(", "),
        draft.version,
        args.file.display()
    )?;
    Ok(())
}

fn set_commands(args: &SetCommandsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    // Tier names follow the same rules as stream names: 1 to 64 characters of [a-z0-9_-].
    StreamName::parse(&args.tier).map_err(|error| RootCommandError::InvalidTier {
        tier: args.tier.clone(),
        reason: error.reason,
    })?;
    let mut draft = load_draft_for_edit(&args.file)?;
    let changed = if args.allow {
        draft.command_tiers.insert(args.tier.clone())
    } else {
        draft.command_tiers.remove(&args.tier)
    };
    let verb = if args.allow { "may" } else { "may not" };
    if !changed {
        writeln!(
            out,
            "agents of tier {} already {verb} run bundle commands under trust root v{} draft {}; \
             nothing changed",
            args.tier,
            draft.version,
            args.file.display()
        )?;
        return Ok(());
    }
    draft.drop_signatures(out)?;
    save_draft(&args.file, &draft)?;
    writeln!(
        out,
        "agents of tier {} now {verb} run bundle commands under trust root v{} draft {}",
        args.tier,
        draft.version,
        args.file.display()
    )?;
    Ok(())
}

fn set_threshold(args: &SetThresholdArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if let Some(tier) = &args.tier {
        if args.role == Role::Root {
            return Err(RootCommandError::RootTierOverride.into());
        }
        // Tier names follow the same rules as stream names: 1 to 64 characters of [a-z0-9_-].
        StreamName::parse(tier).map_err(|error| RootCommandError::InvalidTier {
            tier: tier.clone(),
            reason: error.reason,
        })?;
    }
    let mut draft = load_draft_for_edit(&args.file)?;
    let before = draft.clone();
    let count = Some(args.count);
    match (&args.tier, args.role) {
        (None, Role::Root) => draft.thresholds.root = count,
        (None, Role::Security) => draft.thresholds.security = count,
        (None, Role::Ot) => draft.thresholds.ot = count,
        (Some(tier), role) => {
            let entry = draft
                .tier_overrides
                .entry(tier.clone())
                .or_insert(TierThresholds {
                    security: None,
                    ot: None,
                });
            if role == Role::Security {
                entry.security = count;
            } else {
                entry.ot = count;
            }
        }
    }
    let scope = match &args.tier {
        Some(tier) => format!("for tier {tier}"),
        None => "by default".to_owned(),
    };
    if draft == before {
        writeln!(
            out,
            "the {} threshold {scope} of trust root v{} draft {} is already {}; nothing changed",
            args.role,
            draft.version,
            args.file.display(),
            args.count
        )?;
        return Ok(());
    }
    draft.drop_signatures(out)?;
    save_draft(&args.file, &draft)?;

    let keys = draft
        .keys
        .iter()
        .filter(|key| key.role == args.role)
        .count() as u64;
    writeln!(
        out,
        "set the {} threshold {scope} of trust root v{} draft {} to {}: {} now need {} ({} \
         listed)",
        args.role,
        draft.version,
        args.file.display(),
        args.count,
        document_kind(args.role),
        count_noun(args.count, &format!("{} signature", args.role)),
        count_noun(keys, &format!("{} key", args.role))
    )?;
    Ok(())
}

fn sign(args: &SignArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let loaded = load_root_file(&args.file)?;
    let key = load_signing_key(&args.key).map_err(RootCommandError::from)?;
    if key.role() != Role::Root {
        return Err(RootCommandError::NotRootKey {
            path: args.key.clone(),
            key_id: key.key_id(),
            role: key.role(),
        }
        .into());
    }
    let (root, mut signed) = loaded.draft.signed(&args.file)?;
    let outcome = signed.sign(&key).map_err(|source| RootCommandError::Sign {
        path: args.file.clone(),
        source,
    })?;

    let version = root.version;
    if outcome == SignOutcome::AlreadySigned {
        writeln!(
            out,
            "trust root v{version} in {} already carries a signature by key {}; nothing changed",
            args.file.display(),
            key.key_id()
        )?;
        return Ok(());
    }

    match loaded.form {
        RootFileForm::Draft => {
            let draft = RootDraft {
                signatures: signed.signatures.clone(),
                ..loaded.draft
            };
            save_draft(&args.file, &draft)?;
        }
        RootFileForm::Signed => {
            let bytes = signed.encode().map_err(|source| RootCommandError::Encode {
                path: args.file.clone(),
                source,
            })?;
            keys::replace_file(&args.file, &bytes).map_err(RootCommandError::from)?;
        }
    }

    let action = if outcome == SignOutcome::Replaced {
        "replaced the earlier, non-matching signature by"
    } else {
        "added the signature of"
    };
    let signers: Vec<String> = signed.signers().iter().map(KeyId::to_string).collect();
    writeln!(
        out,
        "{action} root key {} to trust root v{version} ({}); it now has {}: {}",
        key.key_id(),
        args.file.display(),
        count_noun(signers.len() as u64, "signature"),
        signers.join(", ")
    )?;
    let listed_as_root = root
        .keys_with_role(Role::Root)
        .any(|listed| listed.key_id == key.key_id());
    if !listed_as_root {
        writeln!(
            out,
            "note: key {} is not a root key of v{version}, so its signature counts only toward \
             the previous version's root threshold",
            key.key_id()
        )?;
    }
    keys::write_permission_warning(&args.key, out)?;
    Ok(())
}

fn verify(args: &VerifyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let loaded = load_root_file(&args.file)?;
    let (offered, signed) = loaded.draft.signed(&args.file)?;
    let previous = match &args.previous {
        Some(path) => Some(load_trust_root(path)?),
        None => None,
    };

    out.write_all(signature_report(&signed, &offered, previous.as_ref()).as_bytes())?;
    let result = match &previous {
        Some(previous) => verify_root_update(previous, &signed),
        None => verify_initial_root(&signed),
    };
    match result {
        Ok(root) => {
            let meaning = match &previous {
                Some(previous) => format!("as the successor of v{}", previous.version),
                None => "for enrolment".to_owned(),
            };
            writeln!(
                out,
                "trust root v{} in {} is valid {meaning}",
                root.version,
                args.file.display()
            )?;
            Ok(())
        }
        Err(source) => {
            let hint = if previous.is_none() && offered.version > 1 {
                format!(
                    " for enrolment (to check it as the successor of v{}, pass --previous)",
                    offered.version - 1
                )
            } else {
                String::new()
            };
            Err(RootCommandError::Rejected {
                path: args.file.clone(),
                source,
                hint,
            }
            .into())
        }
    }
}

fn show(args: &ShowArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let loaded = load_root_file(&args.file)?;
    let previous = match &args.previous {
        Some(path) => Some(load_trust_root(path)?),
        None => None,
    };
    let draft = &loaded.draft;

    let form = match loaded.form {
        RootFileForm::Draft => "draft",
        RootFileForm::Signed => "signed root file",
    };
    let status = match draft.trust_root() {
        Ok(_) => "complete".to_owned(),
        Err(reason) => format!("incomplete: {reason}"),
    };
    let fields = [
        ("trust root", format!("v{}", draft.version)),
        ("file", format!("{} ({form})", args.file.display())),
        ("document", status),
    ];
    out.write_all(render_fields(&fields).as_bytes())?;

    writeln!(out, "\nkeys:")?;
    if draft.keys.is_empty() {
        writeln!(out, "  none")?;
    } else {
        let mut rows = Vec::new();
        for role in Role::ALL {
            for key in draft.keys.iter().filter(|key| key.role == role) {
                rows.push(vec![
                    role.to_string(),
                    key.key_id.to_string(),
                    to_hex(&key.bytes),
                ]);
            }
        }
        write_indented(out, &render_table(&["ROLE", "KEY ID", "PUBLIC KEY"], &rows))?;
    }

    writeln!(out, "\nthresholds:")?;
    let threshold_rows: Vec<(&str, String)> = [
        ("root", Role::Root, draft.thresholds.root),
        ("security", Role::Security, draft.thresholds.security),
        ("ot", Role::Ot, draft.thresholds.ot),
    ]
    .into_iter()
    .map(|(label, role, threshold)| (label, describe_threshold(draft, role, threshold)))
    .collect();
    write_indented(out, &render_fields(&threshold_rows))?;

    writeln!(out, "\ntier overrides:")?;
    if draft.tier_overrides.is_empty() {
        writeln!(out, "  none")?;
    } else {
        let rows: Vec<Vec<String>> = draft
            .tier_overrides
            .iter()
            .map(|(tier, overrides)| {
                vec![
                    tier.clone(),
                    describe_override(draft, Role::Security, overrides.security),
                    describe_override(draft, Role::Ot, overrides.ot),
                ]
            })
            .collect();
        write_indented(out, &render_table(&["TIER", "SECURITY", "OT"], &rows))?;
    }
    if !draft.command_tiers.is_empty() {
        let tiers: Vec<&str> = draft.command_tiers.iter().map(String::as_str).collect();
        writeln!(
            out,
            "\ntiers that may run bundle commands: {}",
            tiers.join(", ")
        )?;
    }

    writeln!(out)?;
    match draft.signed(&args.file) {
        Ok((root, signed)) => {
            out.write_all(signature_report(&signed, &root, previous.as_ref()).as_bytes())?
        }
        Err(_) => {
            let signers: Vec<String> = draft
                .signatures
                .iter()
                .map(|signature| signature.key_id.to_string())
                .collect();
            let listed = if signers.is_empty() {
                "none".to_owned()
            } else {
                format!(
                    "{} (not checked: the document is incomplete)",
                    signers.join(", ")
                )
            };
            writeln!(out, "signatures:  {listed}")?;
        }
    }
    Ok(())
}

fn export(args: &ExportArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let loaded = load_root_file(&args.file)?;
    let (root, signed) = loaded.draft.signed(&args.file)?;
    let bytes = signed.encode().map_err(|source| RootCommandError::Encode {
        path: args.file.clone(),
        source,
    })?;
    keys::write_new_file(&args.out, &bytes, 0o644).map_err(RootCommandError::from)?;
    let signers: Vec<String> = signed.signers().iter().map(KeyId::to_string).collect();
    let signed_by = if signers.is_empty() {
        "no signatures yet".to_owned()
    } else {
        format!(
            "{}: {}",
            count_noun(signers.len() as u64, "signature"),
            signers.join(", ")
        )
    };
    writeln!(
        out,
        "wrote signed root file {}: trust root v{}, {signed_by}; check it with `tidegate root \
         verify {}`",
        args.out.display(),
        root.version,
        args.out.display()
    )?;
    Ok(())
}

/// Reads a root file in either form and returns its document, which must be complete. The file's
/// own signatures are not checked: callers use it as the root that agents already trust.
pub(super) fn load_trust_root(path: &Path) -> Result<TrustRoot, RootCommandError> {
    let loaded = load_root_file(path)?;
    loaded
        .draft
        .trust_root()
        .map_err(|reason| RootCommandError::Incomplete {
            path: path.to_owned(),
            reason,
        })
}

fn load_root_file(path: &Path) -> Result<LoadedRoot, RootCommandError> {
    let bytes = keys::read_file(path, "root file", MAX_ROOT_FILE_BYTES)?;
    if bytes.starts_with(SIGNED_ROOT_MAGIC) {
        let signed = SignedTrustRoot::decode(&bytes).map_err(|source| {
            RootCommandError::InvalidSignedFile {
                path: path.to_owned(),
                source,
            }
        })?;
        let root = signed
            .document()
            .map_err(|source| RootCommandError::InvalidSignedFile {
                path: path.to_owned(),
                source,
            })?;
        return Ok(LoadedRoot {
            form: RootFileForm::Signed,
            draft: RootDraft::from_signed(&signed, &root),
        });
    }

    let file: DraftFile =
        serde_json::from_slice(&bytes).map_err(|error| RootCommandError::UnreadableFile {
            path: path.to_owned(),
            reason: format!(
                "it does not start with {:?}, and it is not a draft: {error}",
                String::from_utf8_lossy(SIGNED_ROOT_MAGIC)
            ),
        })?;
    let draft = RootDraft::from_file(file).map_err(|reason| RootCommandError::InvalidDraft {
        path: path.to_owned(),
        reason,
    })?;
    Ok(LoadedRoot {
        form: RootFileForm::Draft,
        draft,
    })
}

fn load_draft_for_edit(path: &Path) -> Result<RootDraft, RootCommandError> {
    let loaded = load_root_file(path)?;
    if loaded.form != RootFileForm::Draft {
        return Err(RootCommandError::NotDraft {
            path: path.to_owned(),
        });
    }
    Ok(loaded.draft)
}

fn save_draft(path: &Path, draft: &RootDraft) -> Result<(), RootCommandError> {
    keys::replace_file(path, draft_json(draft).as_bytes()).map_err(RootCommandError::from)
}

fn draft_json(draft: &RootDraft) -> String {
    let mut text =
        serde_json::to_string_pretty(&draft.to_file()).expect("a draft always encodes as JSON");
    text.push('\n');
    text
}

/// Describes each signature and whether the root thresholds are met, for `root show` and
/// `root verify`. The verdict itself comes from the protocol crate's verification.
fn signature_report(
    signed: &SignedTrustRoot,
    offered: &TrustRoot,
    previous: Option<&TrustRoot>,
) -> String {
    let mut valid_for_offered = Vec::new();
    let mut valid_for_previous = Vec::new();
    let mut rows = Vec::new();
    for signature in &signed.signatures {
        let key_id = signature.key_id;
        let mut roles = Vec::new();
        let mut problem = None;
        for (root, valid) in [
            (Some(offered), &mut valid_for_offered),
            (previous, &mut valid_for_previous),
        ] {
            let Some(root) = root else { continue };
            let Some(key) = root.key(&key_id) else {
                continue;
            };
            if key.role != Role::Root {
                problem = Some(format!(
                    "not counted: a {} key in v{}",
                    key.role, root.version
                ));
                continue;
            }
            if key.verify(
                SigningContext::TrustRoot,
                &signed.document_bytes,
                &signature.bytes,
            ) {
                valid.push(key_id);
                roles.push(format!("v{}", root.version));
            } else {
                problem = Some("invalid: does not verify over this document".to_owned());
            }
        }
        let status = if !roles.is_empty() {
            roles.sort();
            format!("valid, root key of {}", roles.join(" and "))
        } else if let Some(problem) = problem {
            problem
        } else if previous.is_none() && offered.version > 1 {
            format!(
                "not counted: not listed in v{} (a key of v{}? pass --previous)",
                offered.version,
                offered.version - 1
            )
        } else {
            "not counted: not listed in this root".to_owned()
        };
        rows.push(vec![key_id.to_string(), status]);
    }

    let mut report = String::from("signatures:\n");
    if rows.is_empty() {
        report.push_str("  none\n");
    } else {
        for line in render_table(&["KEY ID", "STATUS"], &rows).lines() {
            report.push_str(&format!("  {line}\n"));
        }
    }

    let mut thresholds = Vec::new();
    if let Some(previous) = previous {
        thresholds.push((
            format!("root threshold of v{}", previous.version),
            threshold_status(valid_for_previous.len(), previous.thresholds.root),
        ));
    }
    thresholds.push((
        format!("root threshold of v{}", offered.version),
        threshold_status(valid_for_offered.len(), offered.thresholds.root),
    ));
    let fields: Vec<(&str, String)> = thresholds
        .iter()
        .map(|(label, status)| (label.as_str(), status.clone()))
        .collect();
    report.push_str(&render_fields(&fields));
    report
}

fn threshold_status(valid: usize, required: u32) -> String {
    let met = if valid as u64 >= u64::from(required) {
        "met"
    } else {
        "not met"
    };
    format!("{met} ({valid} of {required} required signatures)")
}

fn describe_threshold(draft: &RootDraft, role: Role, threshold: Option<u32>) -> String {
    let keys = draft.keys.iter().filter(|key| key.role == role).count();
    match threshold {
        Some(count) => format!(
            "{count} of {}",
            count_noun(keys as u64, &format!("{role} key"))
        ),
        None => format!(
            "not set ({} listed)",
            count_noun(keys as u64, &format!("{role} key"))
        ),
    }
}

fn describe_override(draft: &RootDraft, role: Role, threshold: Option<u32>) -> String {
    let keys = draft.keys.iter().filter(|key| key.role == role).count();
    match threshold {
        Some(count) => format!("{count} of {keys}"),
        None => "default".to_owned(),
    }
}

/// Names the documents that signatures of `role` approve, for messages.
fn document_kind(role: Role) -> &'static str {
    match role {
        Role::Root => "new trust root versions",
        Role::Security => "bundles",
        Role::Ot => "window schedules",
    }
}

fn write_indented(out: &mut dyn Write, text: &str) -> std::io::Result<()> {
    for line in text.lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use tidegate_protocol::trust::SigningKey;

    fn key(role: Role) -> SigningKey {
        SigningKey::generate(role, &SystemRandom::new()).unwrap()
    }

    fn complete_draft() -> (RootDraft, SigningKey) {
        let root_key = key(Role::Root);
        let draft = RootDraft {
            version: 3,
            keys: vec![
                root_key.public_key().clone(),
                key(Role::Security).public_key().clone(),
                key(Role::Security).public_key().clone(),
                key(Role::Ot).public_key().clone(),
            ],
            thresholds: DraftThresholds {
                root: Some(1),
                security: Some(1),
                ot: Some(1),
            },
            tier_overrides: BTreeMap::from([(
                "critical".to_owned(),
                TierThresholds {
                    security: Some(2),
                    ot: None,
                },
            )]),
            command_tiers: BTreeSet::from(["plant-floor".to_owned()]),
            signatures: Vec::new(),
        };
        (draft, root_key)
    }

    #[test]
    fn draft_json_round_trip_keeps_signatures() {
        let (mut draft, root_key) = complete_draft();
        let (_, mut signed) = draft.signed(Path::new("draft.json")).unwrap();
        signed.sign(&root_key).unwrap();
        draft.signatures = signed.signatures.clone();

        let file: DraftFile = serde_json::from_str(&draft_json(&draft)).unwrap();
        let read_back = RootDraft::from_file(file).unwrap();
        assert_eq!(read_back, draft);
        let (root, signed_again) = read_back.signed(Path::new("draft.json")).unwrap();
        assert_eq!(signed_again, signed);
        assert!(verify_initial_root(&signed_again).is_ok());
        assert_eq!(root.threshold(Role::Security, "critical"), 2);
    }

    #[test]
    fn draft_and_signed_file_describe_the_same_root() {
        let (draft, _) = complete_draft();
        let (_, signed) = draft.signed(Path::new("draft.json")).unwrap();
        let decoded = SignedTrustRoot::decode(&signed.encode().unwrap()).unwrap();
        let from_signed = RootDraft::from_signed(&decoded, &decoded.document().unwrap());
        assert_eq!(from_signed, draft);
    }

    #[test]
    fn incomplete_draft_names_unset_thresholds() {
        let mut draft = RootDraft::empty(1);
        draft.thresholds.security = Some(1);
        let reason = draft.trust_root().unwrap_err();
        assert!(
            reason.starts_with("the root and ot thresholds are not set"),
            "{reason}"
        );
    }

    #[test]
    fn draft_with_unknown_format_is_rejected() {
        let (draft, _) = complete_draft();
        let mut file = draft.to_file();
        file.format = "something else".to_owned();
        assert!(RootDraft::from_file(file).is_err());

        let mut file = draft.to_file();
        file.format_version = 2;
        assert!(RootDraft::from_file(file).is_err());
    }

    #[test]
    fn threshold_status_counts_valid_signatures() {
        assert_eq!(
            threshold_status(1, 2),
            "not met (1 of 2 required signatures)"
        );
        assert_eq!(threshold_status(2, 2), "met (2 of 2 required signatures)");
    }
}
