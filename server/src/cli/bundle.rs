//! `tidegate bundle`: build a bundle file, sign it with security keys, check it against a trust
//! root as an agent would, show what it contains, and publish it to the server.
//!
//! Only `bundle publish` talks to the server. `bundle verify` runs the agent's own verification
//! (`tidegate_protocol::trust::verify_bundle`) with a trusted clock reading and no high-water
//! marks, so it checks signatures, thresholds, payloads and validity in time, but not whether an
//! agent has already applied a later bundle of the stream.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::bundle::{MAX_BUNDLE_FILE_BYTES, MAX_MANIFEST_BYTES};
use tidegate_protocol::trust::{
    inspect_bundle, verify_bundle, BundleError, BundleFile, BundleHash, BundleId, BundleInspection,
    BundleManifest, BundleVerdict, ClockTrust, ExecutionPolicy, HealthCheck, KeyId, Payload,
    PayloadRef, Role, SignOutcome, Step, StreamName, TargetSelector,
};

use super::client::ApiClient;
use super::format::{self, render_fields, render_table};
use super::keys::{self, count_noun, load_signing_key, to_hex, FileError, KeysCommandError};
use super::root::{load_trust_root, RootCommandError};
use super::{CliError, Context};

/// The API path that accepts bundle files.
const PUBLISH_PATH: &str = "/api/v1/bundles";

/// The header that names who published a bundle, for the server's audit log.
const PUBLISHER_HEADER: &str = "X-Tidegate-Publisher";

/// Maximum length in bytes of a publisher name.
const MAX_PUBLISHER_LEN: usize = 128;

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Build an unsigned bundle file from a steps file and payload files
    New(NewArgs),
    /// Add a security key's signature to a bundle file
    Sign(SignArgs),
    /// Check a bundle file against a trust root as an agent of a tier would
    Verify(VerifyArgs),
    /// Show a bundle's manifest, payloads and signers without verifying anything
    Inspect(InspectArgs),
    /// Send a signed bundle file to the server, which keeps it for a rollout (or, with
    /// --immediate, delivers it to every targeted agent at once)
    Publish(PublishArgs),
    /// Order an agent to revert an applied bundle from its journal
    Rollback(RollbackArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The bundle file to create; an existing file is never overwritten
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// The bundle id, 1 to 64 characters of [a-z0-9_-], such as openssl-2026-05
    #[arg(long, value_name = "ID", value_parser = parse_bundle_id)]
    pub id: BundleId,

    /// The stream whose sequence numbers only grow, such as openssl
    #[arg(long, value_name = "STREAM", value_parser = parse_stream)]
    pub stream: StreamName,

    /// The bundle's position in its stream; it must be higher than every earlier bundle's
    #[arg(long, value_name = "N")]
    pub sequence: u64,

    /// The instant from which agents may apply the bundle, in RFC 3339, such as
    /// 2026-05-01T00:00:00Z
    #[arg(long, value_name = "RFC3339", value_parser = timestamp::parse_rfc3339)]
    pub not_before: i64,

    /// The instant from which the bundle is expired, in RFC 3339
    #[arg(long, value_name = "RFC3339", value_parser = timestamp::parse_rfc3339)]
    pub expires: i64,

    /// A tier the bundle targets; repeat for several (none: every tier)
    #[arg(long = "tier", value_name = "TIER")]
    pub tiers: Vec<String>,

    /// An OS the bundle targets, such as debian; repeat for several (none: every OS)
    #[arg(long = "os", value_name = "OS")]
    pub os: Vec<String>,

    /// A host tag the bundle targets; repeat for several (none: every host)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// A payload file that steps refer to by NAME; repeat for several
    #[arg(long = "payload", value_name = "NAME=PATH", value_parser = parse_payload_arg)]
    pub payloads: Vec<(String, PathBuf)>,

    /// A JSON file with the list of steps, each in the form `bundle inspect --json` prints, such
    /// as [{"Sysctl": {"key": "net.ipv4.ip_forward", "value": "0"}}]; a bundle needs at least one
    #[arg(long, value_name = "STEPS_JSON")]
    pub steps: PathBuf,

    /// Accept steps that cannot be reverted; without it an agent rejects a bundle that has one
    #[arg(long)]
    pub accept_irreversible: bool,

    /// Declare that the bundle runs commands (run-command steps, command health checks); agents
    /// run them only where the trust root allows commands for their tier
    #[arg(long)]
    pub runs_commands: bool,

    /// A JSON file with the health checks run after all steps, such as
    /// [{"TcpListening": {"port": 22}}, {"UnitActive": {"unit": "ssh.service"}}]
    #[arg(long, value_name = "CHECKS_JSON")]
    pub health_checks: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The bundle file; it is updated in place
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The signing-key file of a security key
    #[arg(long, value_name = "KEY_FILE")]
    pub key: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The trust root to check against: a signed root file or a draft. Its own signatures are
    /// not checked here (`tidegate root verify` does that)
    #[arg(long, value_name = "ROOT_FILE")]
    pub root: PathBuf,

    /// The agent tier whose signature threshold applies
    #[arg(long, value_name = "TIER", default_value = "default")]
    pub tier: String,

    /// The instant to check validity at, in RFC 3339 [default: now]
    #[arg(long, value_name = "RFC3339", value_parser = timestamp::parse_rfc3339)]
    pub at: Option<i64>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The signed bundle file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Name of the person publishing, recorded in the server's audit log [default:
    /// $USER@hostname]
    #[arg(long, value_name = "NAME")]
    pub publisher: Option<String>,

    /// Send the bundle at once to every agent it targets, instead of keeping it for
    /// `tidegate rollout start`
    #[arg(long)]
    pub immediate: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The bundle: its hash (64 hex digits, as `tidegate fleet show` prints it) or a signed
    /// bundle file
    #[arg(value_name = "BUNDLE")]
    pub bundle: String,

    /// The agent that applied it
    #[arg(long, value_name = "AGENT_ID")]
    pub agent: String,
}

/// A failed `bundle` command.
#[derive(Debug, thiserror::Error)]
pub enum BundleCommandError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Key(#[from] KeysCommandError),
    #[error(transparent)]
    Root(#[from] RootCommandError),
    #[error("failed to read the steps file {path}: {source}")]
    InvalidSteps {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{value:?} is neither a bundle hash (64 hex digits) nor an existing bundle file")]
    NotABundle { value: String },
    #[error("{url} rejected the rollback order (HTTP {status}): {message}")]
    RollbackRejected {
        url: String,
        status: u16,
        message: String,
    },
    #[error("failed to read the health checks file {path}: {source}")]
    InvalidHealthChecks {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("failed to build bundle {bundle_id}: {source}")]
    Build {
        bundle_id: BundleId,
        source: BundleError,
    },
    #[error("payload {name:?} is given twice with --payload")]
    DuplicatePayload { name: String },
    #[error("invalid bundle file {path}: {source}")]
    InvalidFile { path: PathBuf, source: BundleError },
    #[error("key {key_id} in {path} has role {role}; only a security key can sign a bundle")]
    NotSecurityKey {
        path: PathBuf,
        key_id: KeyId,
        role: Role,
    },
    #[error("failed to sign {path}: {source}")]
    Sign { path: PathBuf, source: BundleError },
    #[error("invalid tier {tier:?}: {reason}")]
    InvalidTier { tier: String, reason: &'static str },
    #[error("bundle {path} is rejected by rule {rule} for tier {tier}")]
    Rejected {
        path: PathBuf,
        rule: &'static str,
        tier: String,
    },
    #[error("bundle {path} is not accepted for tier {tier}: {verdict}")]
    NotAccepted {
        path: PathBuf,
        tier: String,
        verdict: &'static str,
    },
    #[error(
        "invalid publisher name {name:?}: it must be 1 to {MAX_PUBLISHER_LEN} printable ASCII \
         characters; set it with --publisher"
    )]
    InvalidPublisher { name: String },
    #[error("the server at {url} rejected bundle {path} with status {status}: {message}{}",
            .rule.as_ref().map(|rule| format!(" (rule {rule})")).unwrap_or_default())]
    PublishRejected {
        url: String,
        path: PathBuf,
        status: u16,
        message: String,
        rule: Option<String>,
    },
}

/// The server's response to a published bundle.
#[derive(Debug, Deserialize)]
struct PublishResponse {
    bundle_id: String,
    stream: String,
    sequence: u64,
    bundle_hash: String,
    signers: Vec<String>,
    delivered_to: u64,
    /// Whether the server had this exact bundle already; with immediate delivery it sends it
    /// again all the same.
    #[serde(default)]
    republished: bool,
    #[serde(default)]
    immediate: bool,
}

/// The server's response to a rejected bundle. `rule` is the verification rule that failed, when
/// the rejection comes from verification.
#[derive(Debug, Deserialize)]
struct PublishErrorResponse {
    error: String,
    #[serde(default)]
    rule: Option<String>,
}

/// The JSON that `bundle inspect --json` prints.
#[derive(Debug, Serialize)]
struct InspectionJson<'a> {
    bundle_id: &'a str,
    stream: &'a str,
    sequence: u64,
    not_before: String,
    not_before_unix_s: i64,
    expires: String,
    expires_unix_s: i64,
    target: &'a TargetSelector,
    steps: &'a [Step],
    execution: &'a ExecutionPolicy,
    payloads: Vec<PayloadJson>,
    bundle_hash: String,
    signers: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PayloadJson {
    name: String,
    size: u64,
    sha256: String,
}

pub fn run(
    command: BundleCommand,
    client: &ApiClient,
    context: &Context,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        BundleCommand::New(args) => new(&args, out),
        BundleCommand::Sign(args) => sign(&args, out),
        BundleCommand::Verify(args) => verify(&args, context, out),
        BundleCommand::Inspect(args) => inspect(&args, out),
        BundleCommand::Publish(args) => publish(&args, client, out),
        BundleCommand::Rollback(args) => rollback(&args, client, out),
    }
}

fn new(args: &NewArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let steps_bytes = keys::read_file(&args.steps, "steps file", MAX_MANIFEST_BYTES as u64)
        .map_err(BundleCommandError::from)?;
    let steps: Vec<Step> = serde_json::from_slice(&steps_bytes).map_err(|source| {
        BundleCommandError::InvalidSteps {
            path: args.steps.clone(),
            source,
        }
    })?;
    let health_checks: Vec<HealthCheck> = match &args.health_checks {
        Some(path) => {
            let bytes = keys::read_file(path, "health checks file", MAX_MANIFEST_BYTES as u64)
                .map_err(BundleCommandError::from)?;
            serde_json::from_slice(&bytes).map_err(|source| {
                BundleCommandError::InvalidHealthChecks {
                    path: path.clone(),
                    source,
                }
            })?
        }
        None => Vec::new(),
    };

    let mut payloads: Vec<Payload> = Vec::new();
    for (name, path) in &args.payloads {
        if payloads.iter().any(|payload| payload.name == *name) {
            return Err(BundleCommandError::DuplicatePayload { name: name.clone() }.into());
        }
        let content = keys::read_file(path, "payload", MAX_BUNDLE_FILE_BYTES as u64)
            .map_err(BundleCommandError::from)?;
        payloads.push(Payload {
            name: name.clone(),
            content,
        });
    }

    let manifest = BundleManifest {
        bundle_id: args.id.clone(),
        stream: args.stream.clone(),
        sequence: args.sequence,
        not_before_unix_s: args.not_before,
        expires_unix_s: args.expires,
        target: TargetSelector {
            tiers: args.tiers.clone(),
            os: args.os.clone(),
            tags: args.tags.clone(),
        },
        steps,
        payloads: payloads
            .iter()
            .map(|payload| PayloadRef::of_content(&payload.name, &payload.content))
            .collect(),
        execution: ExecutionPolicy {
            accepts_irreversible: args.accept_irreversible,
            runs_commands: args.runs_commands,
            health_checks,
        },
    };
    let build_error = |source| BundleCommandError::Build {
        bundle_id: args.id.clone(),
        source,
    };
    let file = BundleFile::new(&manifest, payloads).map_err(build_error)?;
    let bytes = file.encode().map_err(build_error)?;
    keys::write_new_file(&args.out, &bytes, 0o644).map_err(BundleCommandError::from)?;

    writeln!(
        out,
        "wrote unsigned bundle {} (stream {}, sequence {}) to {}: {}, {}, {}, \
         valid from {} until {}",
        manifest.bundle_id,
        manifest.stream,
        manifest.sequence,
        args.out.display(),
        count_noun(manifest.steps.len() as u64, "step"),
        count_noun(manifest.payloads.len() as u64, "payload"),
        format::bytes(bytes.len() as u64),
        timestamp::format_rfc3339(manifest.not_before_unix_s),
        timestamp::format_rfc3339(manifest.expires_unix_s),
    )?;
    writeln!(out, "bundle hash: {}", file.bundle_hash())?;
    writeln!(
        out,
        "sign it with `tidegate bundle sign {} --key SECURITY_KEY_FILE`",
        args.out.display()
    )?;
    Ok(())
}

fn sign(args: &SignArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut file = read_bundle_file(&args.file)?;
    let manifest = file
        .manifest()
        .map_err(|source| BundleCommandError::InvalidFile {
            path: args.file.clone(),
            source,
        })?;
    let key = load_signing_key(&args.key).map_err(BundleCommandError::from)?;
    if key.role() != Role::Security {
        return Err(BundleCommandError::NotSecurityKey {
            path: args.key.clone(),
            key_id: key.key_id(),
            role: key.role(),
        }
        .into());
    }
    let outcome = file.sign(&key).map_err(|source| BundleCommandError::Sign {
        path: args.file.clone(),
        source,
    })?;

    if outcome == SignOutcome::AlreadySigned {
        writeln!(
            out,
            "bundle {} in {} already carries a signature by key {}; nothing changed",
            manifest.bundle_id,
            args.file.display(),
            key.key_id()
        )?;
        return Ok(());
    }
    let bytes = file.encode().map_err(|source| BundleCommandError::Sign {
        path: args.file.clone(),
        source,
    })?;
    keys::replace_file(&args.file, &bytes).map_err(BundleCommandError::from)?;

    let action = if outcome == SignOutcome::Replaced {
        "replaced the earlier, non-matching signature by"
    } else {
        "added the signature of"
    };
    writeln!(
        out,
        "{action} security key {} to bundle {} ({}); it now has {}: {}",
        key.key_id(),
        manifest.bundle_id,
        args.file.display(),
        count_noun(file.signatures.len() as u64, "signature"),
        join_key_ids(&file.signers())
    )?;
    keys::write_permission_warning(&args.key, out)?;
    Ok(())
}

fn verify(args: &VerifyArgs, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    // Tier names follow the same rules as stream names: 1 to 64 characters of [a-z0-9_-].
    StreamName::parse(&args.tier).map_err(|error| BundleCommandError::InvalidTier {
        tier: args.tier.clone(),
        reason: error.reason,
    })?;
    let bytes = keys::read_file(&args.file, "bundle file", MAX_BUNDLE_FILE_BYTES as u64)
        .map_err(BundleCommandError::from)?;
    let root = load_trust_root(&args.root).map_err(BundleCommandError::from)?;
    let now_unix_s = args.at.unwrap_or(context.now_unix_s);

    let verdict = verify_bundle(
        &bytes,
        &root,
        &args.tier,
        now_unix_s,
        &ClockTrust::Trusted,
        &BTreeMap::new(),
    );
    let required = root.threshold(Role::Security, &args.tier);
    let context_fields = [
        (
            "tier",
            format!(
                "{} (needs {} under trust root v{})",
                args.tier,
                count_noun(required, "security signature"),
                root.version
            ),
        ),
        ("checked at", timestamp::format_rfc3339(now_unix_s)),
    ];

    match verdict {
        BundleVerdict::Accepted {
            manifest,
            bundle_hash,
            ..
        } => {
            // The verdict lists no signers, so they are read from the file, which verified.
            let signers = BundleFile::decode(&bytes)
                .map(|file| join_key_ids(&file.signers()))
                .unwrap_or_default();
            let mut fields = vec![
                ("verdict", "accepted".to_owned()),
                (
                    "bundle",
                    format!(
                        "{} (stream {}, sequence {})",
                        manifest.bundle_id, manifest.stream, manifest.sequence
                    ),
                ),
                ("bundle hash", bundle_hash.to_string()),
                (
                    "valid",
                    format!(
                        "from {} until {}",
                        timestamp::format_rfc3339(manifest.not_before_unix_s),
                        timestamp::format_rfc3339(manifest.expires_unix_s)
                    ),
                ),
                ("signed by", signers),
            ];
            fields.extend(context_fields);
            out.write_all(render_fields(&fields).as_bytes())?;
            writeln!(
                out,
                "note: the sequence is not compared with any agent's last applied bundle"
            )?;
            Ok(())
        }
        BundleVerdict::Rejected { rule, detail } => {
            let mut fields = vec![
                ("verdict", "rejected".to_owned()),
                ("rule", rule.code().to_owned()),
                ("detail", detail),
            ];
            fields.extend(context_fields);
            out.write_all(render_fields(&fields).as_bytes())?;
            Err(BundleCommandError::Rejected {
                path: args.file.clone(),
                rule: rule.code(),
                tier: args.tier.clone(),
            }
            .into())
        }
        // Neither happens with a trusted clock and no high-water marks, but a verdict that is not
        // an acceptance must never exit 0.
        BundleVerdict::Deferred { reason, .. } => {
            writeln!(out, "verdict: deferred ({reason})")?;
            Err(not_accepted(args, "deferred"))
        }
        BundleVerdict::AlreadyApplied { .. } => {
            writeln!(out, "verdict: already applied")?;
            Err(not_accepted(args, "already applied"))
        }
    }
}

fn not_accepted(args: &VerifyArgs, verdict: &'static str) -> CliError {
    BundleCommandError::NotAccepted {
        path: args.file.clone(),
        tier: args.tier.clone(),
        verdict,
    }
    .into()
}

fn inspect(args: &InspectArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let bytes = keys::read_file(&args.file, "bundle file", MAX_BUNDLE_FILE_BYTES as u64)
        .map_err(BundleCommandError::from)?;
    let inspection = inspect_bundle(&bytes).map_err(|source| BundleCommandError::InvalidFile {
        path: args.file.clone(),
        source,
    })?;
    if args.json {
        let json = inspection_json(&inspection);
        let text = serde_json::to_string_pretty(&json).expect("an inspection encodes as JSON");
        writeln!(out, "{text}")?;
        return Ok(());
    }
    out.write_all(inspection_text(&inspection).as_bytes())?;
    Ok(())
}

fn rollback(args: &RollbackArgs, client: &ApiClient, out: &mut dyn Write) -> Result<(), CliError> {
    let hash = match BundleHash::parse(args.bundle.trim()) {
        Ok(hash) => hash,
        Err(_) => {
            let path = PathBuf::from(&args.bundle);
            if !path.exists() {
                return Err(BundleCommandError::NotABundle {
                    value: args.bundle.clone(),
                }
                .into());
            }
            let bytes = keys::read_file(&path, "bundle file", MAX_BUNDLE_FILE_BYTES as u64)
                .map_err(BundleCommandError::from)?;
            inspect_bundle(&bytes)
                .map_err(|source| BundleCommandError::InvalidFile {
                    path: path.clone(),
                    source,
                })?
                .bundle_hash
        }
    };
    // A whole agent id (32 hex digits, derived from the agent's key) goes to the server as it is;
    // anything else is looked up as `fleet show` does: a unique id prefix or a hostname.
    let whole_id = args.agent.len() == 32 && args.agent.bytes().all(|b| b.is_ascii_hexdigit());
    let agent_id = if whole_id {
        args.agent.clone()
    } else {
        super::fleet::find_agent(client, &args.agent)?
            .summary
            .agent_id
    };
    let path = format!("/api/v1/agents/{agent_id}/rollback");
    let url = format!("{}{path}", client.base_url());
    let request = serde_json::json!({ "bundle_hash": hash.to_string() });
    let (status, body) = client.post_json_bytes(&path, request.to_string().as_bytes())?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|value| value.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(200).collect());
        return Err(BundleCommandError::RollbackRejected {
            url,
            status,
            message,
        }
        .into());
    }
    writeln!(
        out,
        "sent a rollback order for bundle {hash} to agent {}; `tidegate fleet show {}` shows \
         rolled-back or rollback-failed once the agent reports",
        agent_id, agent_id
    )?;
    Ok(())
}

fn publish(args: &PublishArgs, client: &ApiClient, out: &mut dyn Write) -> Result<(), CliError> {
    let publisher = match &args.publisher {
        Some(name) => name.clone(),
        None => default_publisher(),
    };
    let publisher_is_valid = !publisher.is_empty()
        && publisher.len() <= MAX_PUBLISHER_LEN
        && publisher.bytes().all(|byte| (0x20..0x7f).contains(&byte));
    if !publisher_is_valid {
        return Err(BundleCommandError::InvalidPublisher { name: publisher }.into());
    }

    let bytes = keys::read_file(&args.file, "bundle file", MAX_BUNDLE_FILE_BYTES as u64)
        .map_err(BundleCommandError::from)?;
    // A file that does not even decode is the wrong file; the server would reject it anyway.
    inspect_bundle(&bytes).map_err(|source| BundleCommandError::InvalidFile {
        path: args.file.clone(),
        source,
    })?;

    let path = if args.immediate {
        format!("{PUBLISH_PATH}?delivery=immediate")
    } else {
        PUBLISH_PATH.to_owned()
    };
    let url = format!("{}{path}", client.base_url());
    let (status, body) = client.post_octets(&path, &[(PUBLISHER_HEADER, &publisher)], &bytes)?;
    if !(200..300).contains(&status) {
        let (message, rule) = match serde_json::from_str::<PublishErrorResponse>(&body) {
            Ok(response) => (response.error, response.rule),
            Err(_) => (body.chars().take(200).collect(), None),
        };
        return Err(BundleCommandError::PublishRejected {
            url,
            path: args.file.clone(),
            status,
            message,
            rule,
        }
        .into());
    }

    let response: PublishResponse =
        serde_json::from_str(&body).map_err(|source| CliError::InvalidJson { url, source })?;
    let signed_by = if response.signers.is_empty() {
        "no one".to_owned()
    } else {
        response.signers.join(", ")
    };
    let delivery = if response.immediate {
        format!("sent to {}", count_noun(response.delivered_to, "agent"))
    } else {
        format!(
            "held for a rollout (tidegate rollout start {})",
            response.bundle_id
        )
    };
    writeln!(
        out,
        "published bundle {} (stream {}, sequence {}) signed by {signed_by}; {delivery}",
        response.bundle_id, response.stream, response.sequence,
    )?;
    writeln!(out, "bundle hash: {}", response.bundle_hash)?;
    writeln!(out, "publisher: {publisher}")?;
    if response.republished && response.immediate {
        writeln!(
            out,
            "note: the server already had this bundle, and sent it again to the agents it targets"
        )?;
    }
    Ok(())
}

fn read_bundle_file(path: &Path) -> Result<BundleFile, BundleCommandError> {
    let bytes = keys::read_file(path, "bundle file", MAX_BUNDLE_FILE_BYTES as u64)?;
    BundleFile::decode(&bytes).map_err(|source| BundleCommandError::InvalidFile {
        path: path.to_owned(),
        source,
    })
}

fn inspection_json(inspection: &BundleInspection) -> InspectionJson<'_> {
    let manifest = &inspection.manifest;
    InspectionJson {
        bundle_id: manifest.bundle_id.as_str(),
        stream: manifest.stream.as_str(),
        sequence: manifest.sequence,
        not_before: timestamp::format_rfc3339(manifest.not_before_unix_s),
        not_before_unix_s: manifest.not_before_unix_s,
        expires: timestamp::format_rfc3339(manifest.expires_unix_s),
        expires_unix_s: manifest.expires_unix_s,
        target: &manifest.target,
        steps: &manifest.steps,
        execution: &manifest.execution,
        payloads: inspection
            .payloads
            .iter()
            .map(|payload| PayloadJson {
                name: payload.name.clone(),
                size: payload.size,
                sha256: to_hex(&payload.sha256),
            })
            .collect(),
        bundle_hash: inspection.bundle_hash.to_string(),
        signers: inspection.signers.iter().map(KeyId::to_string).collect(),
    }
}

fn accepted_or_not(accepted: bool) -> String {
    if accepted { "accepted" } else { "not accepted" }.to_owned()
}

fn inspection_text(inspection: &BundleInspection) -> String {
    let manifest = &inspection.manifest;
    let any_or_list = |list: &[String]| {
        if list.is_empty() {
            "any".to_owned()
        } else {
            list.join(", ")
        }
    };
    let fields = [
        ("bundle", manifest.bundle_id.to_string()),
        ("stream", manifest.stream.to_string()),
        ("sequence", manifest.sequence.to_string()),
        (
            "not before",
            timestamp::format_rfc3339(manifest.not_before_unix_s),
        ),
        (
            "expires",
            timestamp::format_rfc3339(manifest.expires_unix_s),
        ),
        ("target tiers", any_or_list(&manifest.target.tiers)),
        ("target os", any_or_list(&manifest.target.os)),
        ("target tags", any_or_list(&manifest.target.tags)),
        (
            "irreversible",
            accepted_or_not(manifest.execution.accepts_irreversible),
        ),
        (
            "commands",
            accepted_or_not(manifest.execution.runs_commands),
        ),
        ("bundle hash", inspection.bundle_hash.to_string()),
        ("signers", join_key_ids(&inspection.signers)),
    ];
    let mut text = render_fields(&fields);

    text.push_str("\nsteps:\n");
    for (index, step) in manifest.steps.iter().enumerate() {
        text.push_str(&format!("  {index}. {}\n", describe_step(step)));
    }

    if !manifest.execution.health_checks.is_empty() {
        text.push_str("\nhealth checks:\n");
        for check in &manifest.execution.health_checks {
            text.push_str(&format!("  - {}\n", check.describe()));
        }
    }

    text.push_str("\npayloads:\n");
    if inspection.payloads.is_empty() {
        text.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = inspection
            .payloads
            .iter()
            .map(|payload| {
                vec![
                    payload.name.clone(),
                    payload.size.to_string(),
                    to_hex(&payload.sha256),
                ]
            })
            .collect();
        for line in render_table(&["NAME", "SIZE", "SHA256"], &rows).lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    text.push_str("\nnothing above is verified; `tidegate bundle verify` checks the bundle\n");
    text
}

fn describe_step(step: &Step) -> String {
    let detail = match step {
        Step::WriteFile {
            path,
            payload,
            mode,
            owner,
            group,
        } => format!(
            "write payload {payload} to {path} with mode {mode:04o}, owned by {owner}:{group}"
        ),
        Step::EnsureConfigLine {
            path,
            match_prefix,
            line,
        } => format!(
            "make {path} contain {line:?}, replacing the first line that starts with \
             {match_prefix:?}"
        ),
        Step::InstallDeb {
            package,
            version,
            payload,
        } => format!("install {package} {version} from payload {payload}"),
        Step::UpgradeDeb {
            package,
            version,
            payload,
        } => format!("upgrade {package} to {version} from payload {payload}"),
        Step::RemoveDeb { package } => format!("remove package {package}"),
        Step::Sysctl { key, value } => format!("set {key} to {value:?}"),
        Step::SystemdUnit { unit, action } => {
            format!("{} unit {unit}", format!("{action:?}").to_lowercase())
        }
        Step::LockAccount { user } => format!("lock account {user}"),
        Step::UnlockAccount { user } => format!("unlock account {user}"),
        Step::ExpireAccount { user } => format!("expire account {user}"),
        Step::RemoveAuthorizedKey {
            user,
            key_fingerprint,
        } => format!("remove the authorized SSH key {key_fingerprint} of {user}"),
        Step::RemoveAccount { user } => format!("remove account {user} (irreversible)"),
        Step::RunCommand { argv, revert_argv } => match revert_argv {
            Some(revert) => format!("run {argv:?}, reverted by {revert:?}"),
            None => format!("run {argv:?} (irreversible)"),
        },
    };
    format!("{}: {detail}", step.kind())
}

fn join_key_ids(key_ids: &[KeyId]) -> String {
    if key_ids.is_empty() {
        return "none".to_owned();
    }
    key_ids
        .iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Returns `$USER@hostname`, with `unknown` for a part that cannot be read.
pub(super) fn default_publisher() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let hostname = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{user}@{hostname}")
}

fn parse_bundle_id(value: &str) -> Result<BundleId, String> {
    BundleId::parse(value).map_err(|error| error.to_string())
}

fn parse_stream(value: &str) -> Result<StreamName, String> {
    StreamName::parse(value).map_err(|error| error.to_string())
}

/// Parses `NAME=PATH` of `--payload`.
fn parse_payload_arg(value: &str) -> Result<(String, PathBuf), String> {
    match value.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(path)))
        }
        _ => Err(format!(
            "expected NAME=PATH, such as openssl.deb=./openssl_3.0.15-1_amd64.deb, got {value:?}"
        )),
    }
}

/// RFC 3339 timestamps in whole seconds, converted with the proleptic Gregorian calendar.
mod timestamp {
    const EXAMPLE: &str =
        "expected RFC 3339 such as 2026-06-01T00:00:00Z or 2026-06-01T02:00:00+02:00";

    /// Parses `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DDTHH:MM:SS+HH:MM` (or `-HH:MM`) into seconds since
    /// the Unix epoch. Fractional seconds and leap seconds (`:60`) are rejected, because bundle
    /// times are whole seconds of Unix time.
    pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
        let invalid = |reason: &str| format!("invalid timestamp {text:?}: {reason}; {EXAMPLE}");
        if !text.is_ascii() {
            return Err(invalid("it contains a character that is not ASCII"));
        }
        let bytes = text.as_bytes();
        if bytes.len() < 20 {
            return Err(invalid("it is too short"));
        }
        let separators_valid = bytes[4] == b'-'
            && bytes[7] == b'-'
            && matches!(bytes[10], b'T' | b't')
            && bytes[13] == b':'
            && bytes[16] == b':';
        if !separators_valid {
            return Err(invalid(
                "the date or time is not in the form YYYY-MM-DDTHH:MM:SS",
            ));
        }
        let number = |start: usize, len: usize| -> Result<i64, String> {
            let digits = &text[start..start + len];
            if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(invalid(&format!("{digits:?} is not a number")));
            }
            Ok(digits.parse().expect("ASCII digits parse"))
        };
        let year = number(0, 4)?;
        let month = number(5, 2)?;
        let day = number(8, 2)?;
        let hour = number(11, 2)?;
        let minute = number(14, 2)?;
        let second = number(17, 2)?;

        if !(1..=12).contains(&month) {
            return Err(invalid("the month must be 01 to 12"));
        }
        if day < 1 || day > days_in_month(year, month) {
            return Err(invalid(&format!(
                "{year:04}-{month:02} has no day {day:02}"
            )));
        }
        if hour > 23 || minute > 59 {
            return Err(invalid("the time must be 00:00 to 23:59"));
        }
        if second > 59 {
            return Err(invalid("the seconds must be 00 to 59"));
        }

        let offset_s = match &text[19..] {
            "Z" | "z" => 0,
            rest if rest.starts_with('.') => {
                return Err(invalid("fractional seconds are not supported"))
            }
            rest if rest.len() == 6
                && matches!(rest.as_bytes()[0], b'+' | b'-')
                && rest.as_bytes()[3] == b':' =>
            {
                let offset_hours = number(20, 2)?;
                let offset_minutes = number(23, 2)?;
                if offset_hours > 23 || offset_minutes > 59 {
                    return Err(invalid("the offset must be -23:59 to +23:59"));
                }
                let magnitude = offset_hours * 3600 + offset_minutes * 60;
                if rest.starts_with('-') {
                    -magnitude
                } else {
                    magnitude
                }
            }
            _ => return Err(invalid("it must end with Z or an offset such as +02:00")),
        };

        let days = days_from_civil(year, month, day);
        let local_s = days * 86_400 + hour * 3600 + minute * 60 + second;
        // The local time is ahead of UTC by the offset, so UTC = local - offset.
        Ok(local_s - offset_s)
    }

    /// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn format_rfc3339(unix_s: i64) -> String {
        let days = unix_s.div_euclid(86_400);
        let second_of_day = unix_s.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            second_of_day / 3600,
            second_of_day % 3600 / 60,
            second_of_day % 60
        )
    }

    fn is_leap_year(year: i64) -> bool {
        (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    }

    fn days_in_month(year: i64, month: i64) -> i64 {
        match month {
            2 if is_leap_year(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Counts the days from 1970-01-01 to a date. Years are shifted to start on 1 March, so the
    /// leap day is the last day of a shifted year and every 400-year era has the same days. This
    /// is the `days_from_civil` algorithm of Howard Hinnant's "chrono-Compatible Low-Level Date
    /// Algorithms" (<https://howardhinnant.github.io/date_algorithms.html>).
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let shifted_year = if month <= 2 { year - 1 } else { year };
        let era = shifted_year.div_euclid(400);
        let year_of_era = shifted_year - era * 400;
        let month_from_march = (month + 9) % 12;
        let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        // 719,468 days lie between 0000-03-01, the start of era 0, and 1970-01-01.
        era * 146_097 + day_of_era - 719_468
    }

    /// Converts days since 1970-01-01 back into (year, month, day), the inverse of
    /// [`days_from_civil`].
    fn civil_from_days(days: i64) -> (i64, i64, i64) {
        let days_since_era_0 = days + 719_468;
        let era = days_since_era_0.div_euclid(146_097);
        let day_of_era = days_since_era_0 - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn utc_timestamps_parse() {
            // 20,605 days from 1970-01-01 to 2026-06-01: 56 years of 365 days, 14 leap days
            // (1972 to 2024), and 151 days of January to May 2026.
            assert_eq!(parse_rfc3339("2026-06-01T00:00:00Z"), Ok(1_780_272_000));
            assert_eq!(parse_rfc3339("2026-05-31T23:59:59Z"), Ok(1_780_271_999));
            assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
            assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-1));
            assert_eq!(parse_rfc3339("2026-06-01t00:00:00z"), Ok(1_780_272_000));
        }

        #[test]
        fn leap_days_parse() {
            // 2000-01-01 is 946,684,800; March 1st is 60 days later because 2000 is a leap year.
            assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Ok(951_868_800));
            assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Ok(951_782_400));
            // 19,782 days: 54 years, 13 leap days (1972 to 2020), 59 days of 2024.
            assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Ok(1_709_164_800));
        }

        #[test]
        fn offsets_convert_to_utc() {
            assert_eq!(
                parse_rfc3339("2026-06-01T02:00:00+02:00"),
                Ok(1_780_272_000)
            );
            assert_eq!(
                parse_rfc3339("2026-05-31T19:00:00-05:00"),
                Ok(1_780_272_000)
            );
            assert_eq!(
                parse_rfc3339("2026-06-01T05:30:00+05:30"),
                Ok(1_780_272_000)
            );
            assert_eq!(
                parse_rfc3339("2026-06-01T00:00:00-00:00"),
                Ok(1_780_272_000)
            );
        }

        #[test]
        fn invalid_timestamps_are_rejected() {
            for text in [
                "2026-02-29T00:00:00Z",
                "1900-02-29T00:00:00Z",
                "2026-13-01T00:00:00Z",
                "2026-00-01T00:00:00Z",
                "2026-04-31T00:00:00Z",
                "2026-06-01T24:00:00Z",
                "2026-06-01T00:60:00Z",
                "2026-06-01T00:00:60Z",
                "2026-06-01T00:00:00",
                "2026-06-01T00:00:00.5Z",
                "2026-06-01 00:00:00Z",
                "2026-06-01T00:00:00+2:00",
                "2026-06-01T00:00:00+24:00",
                "2026-6-1T00:00:00Z",
                "+026-06-01T00:00:00Z",
                "2026-06-01T00:00:00ZZ",
                "2026-06-01T00:00:0\u{e9}Z",
                "",
            ] {
                assert!(parse_rfc3339(text).is_err(), "{text:?} was accepted");
            }
        }

        #[test]
        fn error_names_the_problem() {
            let error = parse_rfc3339("2026-02-29T00:00:00Z").unwrap_err();
            assert!(error.contains("2026-02 has no day 29"), "{error}");
            let error = parse_rfc3339("2026-06-01T00:00:00.5Z").unwrap_err();
            assert!(error.contains("fractional seconds"), "{error}");
        }

        #[test]
        fn timestamps_format_as_utc() {
            assert_eq!(format_rfc3339(1_780_272_000), "2026-06-01T00:00:00Z");
            assert_eq!(format_rfc3339(1_780_271_999), "2026-05-31T23:59:59Z");
            assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
            assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        }

        #[test]
        fn every_day_of_four_centuries_round_trips() {
            // 1900-01-01 to 2300-01-01 covers century years that are (2000) and are not (1900,
            // 2100, 2200) leap years.
            let start = days_from_civil(1900, 1, 1);
            let end = days_from_civil(2300, 1, 1);
            assert_eq!(end - start, 146_097);
            let mut expected = (1900, 1, 1);
            for days in start..end {
                assert_eq!(civil_from_days(days), expected);
                assert_eq!(days_from_civil(expected.0, expected.1, expected.2), days);
                let (year, month, day) = expected;
                expected = if day < days_in_month(year, month) {
                    (year, month, day + 1)
                } else if month < 12 {
                    (year, month + 1, 1)
                } else {
                    (year + 1, 1, 1)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_argument_splits_at_first_equals() {
        assert_eq!(
            parse_payload_arg("a.deb=./dir/x=y.deb"),
            Ok(("a.deb".to_owned(), PathBuf::from("./dir/x=y.deb")))
        );
        assert!(parse_payload_arg("a.deb").is_err());
        assert!(parse_payload_arg("=path").is_err());
        assert!(parse_payload_arg("name=").is_err());
    }

    #[test]
    fn step_descriptions_name_kind_and_target() {
        let step = Step::WriteFile {
            path: "etc/motd".into(),
            payload: "motd".into(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
        };
        assert_eq!(
            describe_step(&step),
            "write-file: write payload motd to etc/motd with mode 0644, owned by root:root"
        );
        let step = Step::RunCommand {
            argv: vec!["true".into()],
            revert_argv: None,
        };
        assert_eq!(
            describe_step(&step),
            "run-command: run [\"true\"] (irreversible)"
        );
    }

    #[test]
    fn steps_json_uses_serde_shape_of_step() {
        let steps: Vec<Step> = serde_json::from_str(
            r#"[{"Sysctl": {"key": "net.ipv4.ip_forward", "value": "0"}},
                {"SystemdUnit": {"unit": "telnet.socket", "action": "Mask"}}]"#,
        )
        .unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Sysctl {
                    key: "net.ipv4.ip_forward".into(),
                    value: "0".into()
                },
                Step::SystemdUnit {
                    unit: "telnet.socket".into(),
                    action: tidegate_protocol::trust::UnitAction::Mask
                },
            ]
        );
    }
}
