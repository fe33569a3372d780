//! `tidegate windows`: put a tier's maintenance-window schedule together, preview it, sign it
//! with OT keys, check it as an agent would, and export the signed schedule file.
//!
//! A schedule is edited as a draft: a JSON file with the tier, the optional site, the version,
//! the time zone, the validity, the windows, the freezes and the signatures collected so far.
//! Instants in a draft are RFC 3339 UTC and durations are written like `2h` or `45m`. Every
//! edit checks the new entry at once (a cron expression that never fires, a cutoff longer than
//! its window) and drops the signatures, because they cover the exact document. `windows
//! export` writes the signed schedule file (magic `TGWS`, see
//! `tidegate_protocol::trust::schedule`). Every command that reads a schedule accepts either
//! form, and `windows sign` writes back the form it read.
//!
//! Times given on the command line are either RFC 3339 with an offset (`2026-12-20T00:00:00Z`),
//! or a local date and time in the schedule's zone (`2026-12-20 06:00`). A local time in a DST
//! gap moves to the end of the gap and one in a repeated hour takes its first occurrence, the
//! same rule the agents apply to window starts.
//!
//! Nothing here talks to the server: publishing a schedule is a separate step.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::schedule::MAX_SCHEDULE_FILE_BYTES;
use tidegate_protocol::trust::{
    format_unix_s, verify_schedule, ClockTrust, KeyId, Role, ScheduleDocument, ScheduleError,
    ScheduleVerdict, SignOutcome, Signature, SignedSchedule, StreamName,
};
use tidegate_protocol::window::{
    format_duration, parse_duration, Calendar, CalendarSpec, CronExpr, Freeze, Window, WindowRule,
    Zone, MAX_QUERY_WINDOWS, MAX_REASON_LEN, MAX_WINDOW_DURATION,
};

use super::format::{render_fields, render_table};
use super::keys::{
    self, count_noun, from_hex, load_signing_key, to_hex, FileError, KeysCommandError,
};
use super::root::{load_trust_root, RootCommandError};
use super::{CliError, Context};

/// The `format` field of every draft, which distinguishes a draft from other JSON files.
const DRAFT_FORMAT: &str = "tidegate window schedule draft";

/// The draft layout this build reads and writes.
const DRAFT_FORMAT_VERSION: u32 = 1;

/// The magic that starts a signed schedule file.
const SIGNED_SCHEDULE_MAGIC: &[u8; 4] = b"TGWS";

/// The largest schedule file read: a signed file is at most 100 KiB, and a draft of the same
/// schedule in JSON with hex signatures is under four times that.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// How long a new schedule stays valid when `--expires` is not given.
const DEFAULT_VALIDITY: &str = "90d";

#[derive(Debug, Subcommand)]
pub enum WindowsCommand {
    /// Start a schedule draft for a tier (or one site of it), or the next version of one
    New(NewArgs),
    /// Add a recurring window: a cron expression in the schedule's zone and a duration
    Add(AddArgs),
    /// Add a one-off window
    AddOnce(AddOnceArgs),
    /// Add a freeze: no bundle starts between its start and end, whatever the windows allow
    Freeze(FreezeArgs),
    /// List the next windows in the zone's local time and in UTC, and the freezes
    Preview(PreviewArgs),
    /// Add an OT key's signature to a draft or a signed schedule file
    Sign(SignArgs),
    /// Check a schedule against a trust root as an agent of its tier would
    Verify(VerifyArgs),
    /// Show a schedule's target, version, validity, windows, freezes and signatures
    Show(FileArgs),
    /// Write the signed schedule file that is published to the agents
    Export(ExportArgs),
    #[command(flatten)]
    Server(super::windows_server::WindowsServerCommand),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The draft file to create; an existing file is never overwritten
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// The tier the schedule is for, 1 to 64 characters of [a-z0-9_-]
    #[arg(long, value_name = "TIER", required_unless_present = "from")]
    pub tier: Option<String>,

    /// The site within the tier, for a schedule that replaces the tier's own at that site
    #[arg(long, value_name = "SITE")]
    pub site: Option<String>,

    /// The schedule's version; it must be higher than every version agents already have
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub version: Option<u64>,

    /// The IANA time zone of the recurring windows, such as Europe/Berlin
    #[arg(long, value_name = "ZONE", required_unless_present = "from")]
    pub zone: Option<String>,

    /// Start the next version of this schedule file, with its target, zone, windows and freezes
    #[arg(long, value_name = "SCHEDULE_FILE", conflicts_with_all = ["tier", "site", "zone"])]
    pub from: Option<PathBuf>,

    /// The instant from which agents use the schedule, in RFC 3339 [default: now]
    #[arg(long, value_name = "RFC3339")]
    pub not_before: Option<String>,

    /// The instant from which the schedule is expired and allows nothing, in RFC 3339
    /// [default: 90 days after --not-before]
    #[arg(long, value_name = "RFC3339")]
    pub expires: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The draft file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Five-field cron expression of the window starts, such as "0 2 * * SUN"
    #[arg(long, value_name = "EXPR")]
    pub cron: String,

    /// How long each window lasts, elapsed time, such as 2h or 45m (at most 7d)
    #[arg(long, value_name = "DURATION")]
    pub duration: String,

    /// The last part of each window in which no bundle starts, such as 30m
    #[arg(long, value_name = "DURATION")]
    pub cutoff: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddOnceArgs {
    /// The draft file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The window's start: RFC 3339, or a local time in the schedule's zone such as
    /// "2026-07-04 22:00"
    #[arg(long, value_name = "TIME")]
    pub start: String,

    /// The window's end, in the same forms as --start
    #[arg(long, value_name = "TIME")]
    pub end: String,

    /// The last part of the window in which no bundle starts, such as 30m
    #[arg(long, value_name = "DURATION")]
    pub cutoff: Option<String>,
}

#[derive(Debug, Args)]
pub struct FreezeArgs {
    /// The draft file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The freeze's start: RFC 3339, or a local time in the schedule's zone
    #[arg(long, value_name = "TIME")]
    pub start: String,

    /// The freeze's end (the first instant that is no longer frozen), in the same forms
    #[arg(long, value_name = "TIME")]
    pub end: String,

    /// The reason for the freeze, shown in previews and in the agents' reports
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The draft or signed schedule file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// How many windows to list
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub count: usize,

    /// List windows from this instant on: RFC 3339, or a local time in the schedule's zone
    /// [default: now]
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The draft or signed schedule file; it is updated in place
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The signing-key file of an OT key
    #[arg(long, value_name = "KEY_FILE")]
    pub key: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The draft or signed schedule file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The trust root to check against: a signed root file or a draft. Its own signatures are
    /// not checked here (`tidegate root verify` does that)
    #[arg(long, value_name = "ROOT_FILE")]
    pub root: PathBuf,

    /// The agent's tier [default: the schedule's tier]
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,

    /// The agent's site [default: the schedule's site]
    #[arg(long, value_name = "SITE")]
    pub site: Option<String>,

    /// The instant to check validity at, in RFC 3339 [default: now]
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,

    /// The schedule version the agent has now; a lower or equal version is not accepted
    #[arg(long, value_name = "N")]
    pub current_version: Option<u64>,
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// The draft or signed schedule file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The draft file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The signed schedule file to create; an existing file is never overwritten
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// A failed `windows` command.
#[derive(Debug, thiserror::Error)]
pub enum WindowsCommandError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Key(#[from] KeysCommandError),
    #[error(transparent)]
    Root(#[from] RootCommandError),
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidArgument {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("{path} is neither a signed schedule file nor a schedule draft: {reason}")]
    UnreadableFile { path: PathBuf, reason: String },
    #[error("invalid schedule draft {path}: {reason}")]
    InvalidDraft { path: PathBuf, reason: String },
    #[error("invalid signed schedule file {path}: {source}")]
    InvalidSignedFile {
        path: PathBuf,
        source: ScheduleError,
    },
    #[error(
        "{path} is a signed schedule file, and only drafts can be edited; start the next \
         version with `tidegate windows new --from {path} --out DRAFT`"
    )]
    NotDraft { path: PathBuf },
    #[error("the change would make schedule {path} invalid, so it was not saved: {reason}")]
    InvalidEdit { path: PathBuf, reason: String },
    #[error("schedule {path} is not complete: {reason}")]
    Incomplete { path: PathBuf, reason: String },
    #[error("schedule {path} is not valid: {source}")]
    Invalid {
        path: PathBuf,
        source: ScheduleError,
    },
    #[error("key {key_id} in {path} has role {role}; only an OT key can sign a schedule")]
    NotOtKey {
        path: PathBuf,
        key_id: KeyId,
        role: Role,
    },
    #[error("schedule version {version} in {path} cannot have a next version: the version is the largest possible")]
    VersionOverflow { path: PathBuf, version: u64 },
    #[error("schedule {path} is rejected for {target} by rule {rule}")]
    Rejected {
        path: PathBuf,
        rule: &'static str,
        target: String,
    },
    #[error("schedule {path} is not accepted for {target}: {verdict}")]
    NotAccepted {
        path: PathBuf,
        target: String,
        verdict: String,
    },
}

/// Whether a schedule file is a draft or a signed file. `windows sign` writes back the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileForm {
    Draft,
    Signed,
}

/// One window as a draft stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum DraftWindow {
    Recurring {
        cron: String,
        duration: String,
        #[serde(default)]
        cutoff: Option<String>,
    },
    Once {
        start: String,
        end: String,
        #[serde(default)]
        cutoff: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftFreeze {
    start: String,
    end: String,
    reason: String,
}

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
    tier: String,
    #[serde(default)]
    site: Option<String>,
    version: u64,
    zone: String,
    /// RFC 3339 UTC.
    not_before: String,
    /// RFC 3339 UTC.
    expires: String,
    #[serde(default)]
    windows: Vec<DraftWindow>,
    #[serde(default)]
    freezes: Vec<DraftFreeze>,
    #[serde(default)]
    signatures: Vec<DraftSignature>,
}

/// A schedule as the commands work on it, read from either form. It may have no windows yet,
/// which the signed format cannot express.
#[derive(Debug, Clone)]
struct ScheduleDraft {
    document: ScheduleDocument,
    signatures: Vec<Signature>,
}

impl ScheduleDraft {
    fn zone(&self) -> Result<Zone, String> {
        Zone::parse(&self.document.calendar.zone).map_err(|error| error.to_string())
    }

    /// Builds the signed form, or explains what is missing or invalid.
    fn signed(&self, path: &Path) -> Result<(SignedSchedule, Calendar), WindowsCommandError> {
        if self.document.calendar.windows.is_empty() {
            return Err(WindowsCommandError::Incomplete {
                path: path.to_owned(),
                reason: format!(
                    "it has no window yet; add one with `tidegate windows add {} --cron EXPR \
                     --duration DURATION`",
                    path.display()
                ),
            });
        }
        let invalid = |source| WindowsCommandError::Invalid {
            path: path.to_owned(),
            source,
        };
        let calendar = self.document.validate().map_err(invalid)?;
        let mut signed = SignedSchedule::new(&self.document).map_err(invalid)?;
        signed.signatures = self.signatures.clone();
        Ok((signed, calendar))
    }

    fn to_file(&self) -> DraftFile {
        let document = &self.document;
        let calendar = &document.calendar;
        DraftFile {
            format: DRAFT_FORMAT.to_owned(),
            format_version: DRAFT_FORMAT_VERSION,
            tier: document.tier.clone(),
            site: document.site.clone(),
            version: document.version,
            zone: calendar.zone.clone(),
            not_before: format_unix_s(calendar.not_before_unix_s),
            expires: format_unix_s(calendar.expires_unix_s),
            windows: calendar.windows.iter().map(draft_window).collect(),
            freezes: calendar
                .freezes
                .iter()
                .map(|freeze| DraftFreeze {
                    start: format_unix_s(freeze.start_unix_s),
                    end: format_unix_s(freeze.end_unix_s),
                    reason: freeze.reason.clone(),
                })
                .collect(),
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
        let instant = |field: &str, value: &str| {
            parse_rfc3339(value).map_err(|reason| format!("{field} {value:?}: {reason}"))
        };
        let mut windows = Vec::new();
        for (index, window) in file.windows.iter().enumerate() {
            let field = |name: &str| format!("window {index} {name}");
            let rule = match window {
                DraftWindow::Recurring {
                    cron,
                    duration,
                    cutoff,
                } => WindowRule::Recurring {
                    cron: cron.clone(),
                    duration_s: parse_seconds(duration).map_err(|reason| {
                        format!("{} {duration:?}: {reason}", field("duration"))
                    })?,
                    cutoff_s: parse_optional_seconds(cutoff.as_deref())
                        .map_err(|reason| format!("{}: {reason}", field("cutoff")))?,
                },
                DraftWindow::Once { start, end, cutoff } => WindowRule::Once {
                    start_unix_s: instant(&field("start"), start)?,
                    end_unix_s: instant(&field("end"), end)?,
                    cutoff_s: parse_optional_seconds(cutoff.as_deref())
                        .map_err(|reason| format!("{}: {reason}", field("cutoff")))?,
                },
            };
            windows.push(rule);
        }
        let mut freezes = Vec::new();
        for (index, freeze) in file.freezes.iter().enumerate() {
            freezes.push(Freeze {
                start_unix_s: instant(&format!("freeze {index} start"), &freeze.start)?,
                end_unix_s: instant(&format!("freeze {index} end"), &freeze.end)?,
                reason: freeze.reason.clone(),
            });
        }
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
            document: ScheduleDocument {
                tier: file.tier,
                site: file.site,
                version: file.version,
                calendar: CalendarSpec {
                    zone: file.zone,
                    not_before_unix_s: instant("not_before", &file.not_before)?,
                    expires_unix_s: instant("expires", &file.expires)?,
                    windows,
                    freezes,
                },
            },
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
            "signatures removed: the schedule changed, so these signatures no longer apply: {}; \
             collect them again",
            signers.join(", ")
        )?;
        self.signatures.clear();
        Ok(())
    }
}

fn draft_window(rule: &WindowRule) -> DraftWindow {
    let cutoff = |cutoff_s: &Option<u32>| cutoff_s.map(|s| format_duration(i64::from(s)));
    match rule {
        WindowRule::Recurring {
            cron,
            duration_s,
            cutoff_s,
        } => DraftWindow::Recurring {
            cron: cron.clone(),
            duration: format_duration(i64::from(*duration_s)),
            cutoff: cutoff(cutoff_s),
        },
        WindowRule::Once {
            start_unix_s,
            end_unix_s,
            cutoff_s,
        } => DraftWindow::Once {
            start: format_unix_s(*start_unix_s),
            end: format_unix_s(*end_unix_s),
            cutoff: cutoff(cutoff_s),
        },
    }
}

struct LoadedSchedule {
    form: FileForm,
    draft: ScheduleDraft,
}

pub fn run(
    command: WindowsCommand,
    client: &super::client::ApiClient,
    context: &Context,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        WindowsCommand::New(args) => new(&args, context, out),
        WindowsCommand::Add(args) => add(&args, out),
        WindowsCommand::AddOnce(args) => add_once(&args, out),
        WindowsCommand::Freeze(args) => freeze(&args, out),
        WindowsCommand::Preview(args) => preview(&args, context, out),
        WindowsCommand::Sign(args) => sign(&args, out),
        WindowsCommand::Verify(args) => verify(&args, context, out),
        WindowsCommand::Show(args) => show(&args, out),
        WindowsCommand::Export(args) => export(&args, out),
        WindowsCommand::Server(command) => super::windows_server::run(command, client, out),
    }
}

fn invalid_argument(field: &'static str, value: &str, reason: impl Into<String>) -> CliError {
    WindowsCommandError::InvalidArgument {
        field,
        value: value.to_owned(),
        reason: reason.into(),
    }
    .into()
}

fn new(args: &NewArgs, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let not_before = match &args.not_before {
        Some(text) => {
            parse_rfc3339(text).map_err(|reason| invalid_argument("--not-before", text, reason))?
        }
        None => context.now_unix_s,
    };
    let expires = match &args.expires {
        Some(text) => {
            parse_rfc3339(text).map_err(|reason| invalid_argument("--expires", text, reason))?
        }
        None => {
            let validity = parse_duration(DEFAULT_VALIDITY)
                .unwrap_or_default()
                .as_secs() as i64;
            not_before.saturating_add(validity)
        }
    };
    if expires <= not_before {
        return Err(invalid_argument(
            "--expires",
            &format_unix_s(expires),
            format!(
                "it must be later than --not-before ({})",
                format_unix_s(not_before)
            ),
        ));
    }

    let document = match &args.from {
        Some(previous_path) => {
            let previous = load_schedule_file(previous_path)?.draft.document;
            let next_version = previous.version.checked_add(1).ok_or_else(|| {
                WindowsCommandError::VersionOverflow {
                    path: previous_path.clone(),
                    version: previous.version,
                }
            })?;
            let version = args.version.unwrap_or(next_version);
            if version <= previous.version {
                return Err(invalid_argument(
                    "--version",
                    &version.to_string(),
                    format!(
                        "it must be higher than version {} of {}",
                        previous.version,
                        previous_path.display()
                    ),
                ));
            }
            ScheduleDocument {
                version,
                calendar: CalendarSpec {
                    not_before_unix_s: not_before,
                    expires_unix_s: expires,
                    ..previous.calendar
                },
                ..previous
            }
        }
        None => {
            let tier = args.tier.clone().unwrap_or_default();
            check_name("--tier", &tier)?;
            if let Some(site) = &args.site {
                check_name("--site", site)?;
            }
            let zone_text = args.zone.clone().unwrap_or_default();
            let zone = Zone::parse(&zone_text)
                .map_err(|error| invalid_argument("--zone", &zone_text, error.to_string()))?;
            ScheduleDocument {
                tier,
                site: args.site.clone(),
                version: args.version.unwrap_or(1),
                calendar: CalendarSpec {
                    zone: zone.name().to_owned(),
                    not_before_unix_s: not_before,
                    expires_unix_s: expires,
                    windows: Vec::new(),
                    freezes: Vec::new(),
                },
            }
        }
    };
    let draft = ScheduleDraft {
        document,
        signatures: Vec::new(),
    };
    keys::write_new_file(&args.out, draft_json(&draft).as_bytes(), 0o644)
        .map_err(WindowsCommandError::from)?;
    let document = &draft.document;
    writeln!(
        out,
        "started schedule draft {} for {}, version {}, zone {}, valid from {} until {}; add \
         windows with `tidegate windows add`",
        args.out.display(),
        document.target(),
        document.version,
        document.calendar.zone,
        format_unix_s(document.calendar.not_before_unix_s),
        format_unix_s(document.calendar.expires_unix_s)
    )?;
    Ok(())
}

fn add(args: &AddArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut draft = load_draft_for_edit(&args.file)?;
    let cron = CronExpr::parse(&args.cron)
        .map_err(|error| invalid_argument("--cron", &args.cron, error.to_string()))?;
    let duration_s = parse_seconds(&args.duration)
        .map_err(|reason| invalid_argument("--duration", &args.duration, reason))?;
    if duration_s == 0 || u64::from(duration_s) > MAX_WINDOW_DURATION.as_secs() {
        return Err(invalid_argument(
            "--duration",
            &args.duration,
            format!(
                "a window lasts at least 1s and at most {}",
                format_duration(MAX_WINDOW_DURATION.as_secs() as i64)
            ),
        ));
    }
    let cutoff_s = parse_cutoff(args.cutoff.as_deref(), i64::from(duration_s))?;
    let rule = WindowRule::Recurring {
        cron: cron.as_str().to_owned(),
        duration_s,
        cutoff_s,
    };
    let index = push_window(&mut draft, rule, &args.file, out)?;
    writeln!(
        out,
        "added window {index} to {}: {}",
        args.file.display(),
        describe_rule(&draft.document.calendar.windows[index])
    )?;
    if cron.uses_or_rule() {
        writeln!(out, "warning: {}", or_rule_warning(index, cron.as_str()))?;
    }
    Ok(())
}

fn add_once(args: &AddOnceArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut draft = load_draft_for_edit(&args.file)?;
    let zone = draft_zone(&draft, &args.file)?;
    let start = parse_time(&args.start, &zone)
        .map_err(|reason| invalid_argument("--start", &args.start, reason))?;
    let end = parse_time(&args.end, &zone)
        .map_err(|reason| invalid_argument("--end", &args.end, reason))?;
    if end <= start {
        return Err(invalid_argument(
            "--end",
            &args.end,
            format!("it must be later than --start ({})", format_unix_s(start)),
        ));
    }
    let cutoff_s = parse_cutoff(args.cutoff.as_deref(), end - start)?;
    let rule = WindowRule::Once {
        start_unix_s: start,
        end_unix_s: end,
        cutoff_s,
    };
    let index = push_window(&mut draft, rule, &args.file, out)?;
    writeln!(
        out,
        "added window {index} to {}: {}",
        args.file.display(),
        describe_rule(&draft.document.calendar.windows[index])
    )?;
    Ok(())
}

fn freeze(args: &FreezeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut draft = load_draft_for_edit(&args.file)?;
    let zone = draft_zone(&draft, &args.file)?;
    let start = parse_time(&args.start, &zone)
        .map_err(|reason| invalid_argument("--start", &args.start, reason))?;
    let end = parse_time(&args.end, &zone)
        .map_err(|reason| invalid_argument("--end", &args.end, reason))?;
    if end <= start {
        return Err(invalid_argument(
            "--end",
            &args.end,
            format!("it must be later than --start ({})", format_unix_s(start)),
        ));
    }
    let reason = args.reason.trim();
    if reason.is_empty() || reason.len() > MAX_REASON_LEN {
        return Err(invalid_argument(
            "--reason",
            &args.reason,
            format!("say why changes are frozen, in 1 to {MAX_REASON_LEN} bytes"),
        ));
    }
    draft.document.calendar.freezes.push(Freeze {
        start_unix_s: start,
        end_unix_s: end,
        reason: reason.to_owned(),
    });
    // The whole calendar is checked, so that a limit such as the number of freezes fails here
    // and not at signing.
    if let Err(error) = Calendar::new(&with_placeholder_window(&draft.document.calendar)) {
        return Err(WindowsCommandError::InvalidEdit {
            path: args.file.clone(),
            reason: error.to_string(),
        }
        .into());
    }
    draft.drop_signatures(out)?;
    save_draft(&args.file, &draft)?;
    writeln!(
        out,
        "added freeze {} to {}: {} to {} ({} to {}): {}",
        draft.document.calendar.freezes.len() - 1,
        args.file.display(),
        zone.format_local(start),
        zone.format_local(end),
        format_unix_s(start),
        format_unix_s(end),
        args.reason.trim()
    )?;
    Ok(())
}

/// Appends a window rule, checks the schedule with it, and saves the draft. Returns its index.
fn push_window(
    draft: &mut ScheduleDraft,
    rule: WindowRule,
    path: &Path,
    out: &mut dyn Write,
) -> Result<usize, CliError> {
    draft.document.calendar.windows.push(rule);
    draft
        .document
        .validate()
        .map_err(|source| WindowsCommandError::Invalid {
            path: path.to_owned(),
            source,
        })?;
    draft.drop_signatures(out)?;
    save_draft(path, draft)?;
    Ok(draft.document.calendar.windows.len() - 1)
}

/// Returns the calendar with one window added when it has none, so that a draft's freezes can be
/// checked before its first window exists.
fn with_placeholder_window(calendar: &CalendarSpec) -> CalendarSpec {
    let mut calendar = calendar.clone();
    if calendar.windows.is_empty() {
        calendar.windows.push(WindowRule::Recurring {
            cron: "0 0 * * *".into(),
            duration_s: 60,
            cutoff_s: None,
        });
    }
    calendar
}

fn preview(args: &PreviewArgs, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let loaded = load_schedule_file(&args.file)?;
    let (_, calendar) = loaded.draft.signed(&args.file)?;
    let document = &loaded.draft.document;
    let zone = calendar.zone();
    let from = match &args.from {
        Some(text) => {
            parse_time(text, zone).map_err(|reason| invalid_argument("--from", text, reason))?
        }
        None => context.now_unix_s,
    };
    if args.count == 0 || args.count > MAX_QUERY_WINDOWS {
        return Err(invalid_argument(
            "--count",
            &args.count.to_string(),
            format!("list between 1 and {MAX_QUERY_WINDOWS} windows"),
        ));
    }

    let fields = [
        (
            "schedule",
            format!("{}, version {}", document.target(), document.version),
        ),
        ("zone", zone.name().to_owned()),
        (
            "valid",
            format!(
                "from {} until {}",
                format_unix_s(calendar.not_before_unix_s()),
                format_unix_s(calendar.expires_unix_s())
            ),
        ),
    ];
    out.write_all(render_fields(&fields).as_bytes())?;
    for index in calendar.or_rule_windows() {
        if let WindowRule::Recurring { cron, .. } = &document.calendar.windows[index] {
            writeln!(out, "warning: {}", or_rule_warning(index, cron))?;
        }
    }

    let windows = calendar.windows_from(from, args.count);
    writeln!(out)?;
    if windows.is_empty() {
        writeln!(
            out,
            "no window opens from {} until the schedule expires",
            format_unix_s(from)
        )?;
    } else {
        writeln!(
            out,
            "next {} from {}:",
            count_noun(windows.len() as u64, "window"),
            format_unix_s(from)
        )?;
        let headers = [
            "WINDOW",
            "START (LOCAL)",
            "END (LOCAL)",
            "START (UTC)",
            "END (UTC)",
            "NO NEW STARTS FROM (UTC)",
            "NOTE",
        ];
        let rows: Vec<Vec<String>> = windows
            .iter()
            .map(|window| {
                vec![
                    window.rule.to_string(),
                    zone.format_local(window.start_unix_s),
                    zone.format_local(window.end_unix_s),
                    format_unix_s(window.start_unix_s),
                    format_unix_s(window.end_unix_s),
                    if window.cutoff_unix_s < window.end_unix_s {
                        format_unix_s(window.cutoff_unix_s)
                    } else {
                        "-".to_owned()
                    },
                    freeze_note(&calendar, window),
                ]
            })
            .collect();
        out.write_all(render_table(&headers, &rows).as_bytes())?;
    }

    let freezes = calendar.freezes_from(from);
    writeln!(out)?;
    if freezes.is_empty() {
        writeln!(out, "no freezes from {}", format_unix_s(from))?;
    } else {
        writeln!(out, "freezes:")?;
        write_freezes(out, zone, &freezes)?;
    }
    match calendar.next_allowed(from) {
        Some(next) => writeln!(
            out,
            "\nearliest allowed start from {}: {} ({})",
            format_unix_s(from),
            format_unix_s(next),
            zone.format_local(next)
        )?,
        None => writeln!(
            out,
            "\nno start is allowed from {} until the schedule expires",
            format_unix_s(from)
        )?,
    }
    Ok(())
}

/// Describes how freezes affect a window's start period `[start, cutoff)`.
fn freeze_note(calendar: &Calendar, window: &Window) -> String {
    let overlapping: Vec<Freeze> = calendar
        .freezes_from(window.start_unix_s)
        .into_iter()
        .filter(|freeze| freeze.start_unix_s < window.cutoff_unix_s)
        .collect();
    if overlapping.is_empty() {
        return String::new();
    }
    let allowed = calendar
        .next_allowed(window.start_unix_s)
        .is_some_and(|next| next < window.cutoff_unix_s);
    let reasons: Vec<&str> = overlapping
        .iter()
        .map(|freeze| freeze.reason.as_str())
        .collect();
    let extent = if allowed { "partly frozen" } else { "frozen" };
    format!("{extent}: {}", reasons.join("; "))
}

fn write_freezes(out: &mut dyn Write, zone: &Zone, freezes: &[Freeze]) -> std::io::Result<()> {
    let headers = [
        "START (LOCAL)",
        "END (LOCAL)",
        "START (UTC)",
        "END (UTC)",
        "REASON",
    ];
    let rows: Vec<Vec<String>> = freezes
        .iter()
        .map(|freeze| {
            vec![
                zone.format_local(freeze.start_unix_s),
                zone.format_local(freeze.end_unix_s),
                format_unix_s(freeze.start_unix_s),
                format_unix_s(freeze.end_unix_s),
                freeze.reason.clone(),
            ]
        })
        .collect();
    out.write_all(render_table(&headers, &rows).as_bytes())
}

fn or_rule_warning(index: usize, cron: &str) -> String {
    format!(
        "window {index} ({cron}) restricts both day of month and day of week, so, as in cron, \
         it opens on every day that matches either field, not only on days that match both"
    )
}

fn sign(args: &SignArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let loaded = load_schedule_file(&args.file)?;
    let key = load_signing_key(&args.key).map_err(WindowsCommandError::from)?;
    if key.role() != Role::Ot {
        return Err(WindowsCommandError::NotOtKey {
            path: args.key.clone(),
            key_id: key.key_id(),
            role: key.role(),
        }
        .into());
    }
    let (mut signed, _) = loaded.draft.signed(&args.file)?;
    let outcome = signed
        .sign(&key)
        .map_err(|source| WindowsCommandError::Invalid {
            path: args.file.clone(),
            source,
        })?;
    let document = &loaded.draft.document;
    if outcome == SignOutcome::AlreadySigned {
        writeln!(
            out,
            "schedule version {} in {} already carries a signature by key {}; nothing changed",
            document.version,
            args.file.display(),
            key.key_id()
        )?;
        return Ok(());
    }

    match loaded.form {
        FileForm::Draft => {
            let draft = ScheduleDraft {
                signatures: signed.signatures.clone(),
                document: document.clone(),
            };
            save_draft(&args.file, &draft)?;
        }
        FileForm::Signed => {
            let bytes = signed
                .encode()
                .map_err(|source| WindowsCommandError::Invalid {
                    path: args.file.clone(),
                    source,
                })?;
            keys::replace_file(&args.file, &bytes).map_err(WindowsCommandError::from)?;
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
        "{action} OT key {} to schedule version {} for {} ({}); it now has {}: {}",
        key.key_id(),
        document.version,
        document.target(),
        args.file.display(),
        count_noun(signers.len() as u64, "signature"),
        signers.join(", ")
    )?;
    keys::write_permission_warning(&args.key, out)?;
    Ok(())
}

fn verify(args: &VerifyArgs, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let loaded = load_schedule_file(&args.file)?;
    let (signed, _) = loaded.draft.signed(&args.file)?;
    let bytes = signed
        .encode()
        .map_err(|source| WindowsCommandError::Invalid {
            path: args.file.clone(),
            source,
        })?;
    let root = load_trust_root(&args.root).map_err(WindowsCommandError::from)?;
    let document = &loaded.draft.document;
    let tier = args.tier.clone().unwrap_or_else(|| document.tier.clone());
    check_name("--tier", &tier)?;
    let site = args.site.clone().or_else(|| document.site.clone());
    if let Some(site) = &site {
        check_name("--site", site)?;
    }
    let now_unix_s = match &args.at {
        Some(text) => {
            parse_rfc3339(text).map_err(|reason| invalid_argument("--at", text, reason))?
        }
        None => context.now_unix_s,
    };
    let target = match &site {
        Some(site) => format!("tier {tier}, site {site}"),
        None => format!("tier {tier}"),
    };

    let verdict = verify_schedule(
        &bytes,
        &root,
        &tier,
        site.as_deref(),
        now_unix_s,
        &ClockTrust::Trusted,
        args.current_version,
    );
    let required = root.threshold(Role::Ot, &tier);
    let context_fields = [
        (
            "agent",
            format!(
                "{target} (needs {} under trust root v{})",
                count_noun(required, "OT signature"),
                root.version
            ),
        ),
        ("checked at", format_unix_s(now_unix_s)),
    ];

    match verdict {
        ScheduleVerdict::Accepted {
            document,
            schedule_hash,
            ..
        } => {
            let mut fields = vec![
                ("verdict", "accepted".to_owned()),
                (
                    "schedule",
                    format!("{}, version {}", document.target(), document.version),
                ),
                ("schedule hash", schedule_hash.to_string()),
                (
                    "valid",
                    format!(
                        "from {} until {}",
                        format_unix_s(document.calendar.not_before_unix_s),
                        format_unix_s(document.calendar.expires_unix_s)
                    ),
                ),
                ("signed by", join_key_ids(&signed.signers())),
            ];
            fields.extend(context_fields);
            out.write_all(render_fields(&fields).as_bytes())?;
            Ok(())
        }
        ScheduleVerdict::Rejected { rule, detail } => {
            let mut fields = vec![
                ("verdict", "rejected".to_owned()),
                ("rule", rule.code().to_owned()),
                ("detail", detail),
            ];
            fields.extend(context_fields);
            out.write_all(render_fields(&fields).as_bytes())?;
            Err(WindowsCommandError::Rejected {
                path: args.file.clone(),
                rule: rule.code(),
                target,
            }
            .into())
        }
        ScheduleVerdict::AlreadyHave { version } => {
            writeln!(out, "verdict: already current (version {version})")?;
            Err(WindowsCommandError::NotAccepted {
                path: args.file.clone(),
                target,
                verdict: format!("the agent already holds version {version}"),
            }
            .into())
        }
        // Not produced with a trusted clock, but a verdict that is not an acceptance must never
        // exit 0.
        ScheduleVerdict::Deferred { reason, .. } => {
            writeln!(out, "verdict: deferred ({reason})")?;
            Err(WindowsCommandError::NotAccepted {
                path: args.file.clone(),
                target,
                verdict: "deferred".to_owned(),
            }
            .into())
        }
    }
}

fn show(args: &FileArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let loaded = load_schedule_file(&args.file)?;
    let draft = &loaded.draft;
    let document = &draft.document;
    let calendar = &document.calendar;
    let form = match loaded.form {
        FileForm::Draft => "draft",
        FileForm::Signed => "signed schedule file",
    };
    let mut fields = vec![
        ("file", format!("{} ({form})", args.file.display())),
        (
            "schedule",
            format!("{}, version {}", document.target(), document.version),
        ),
        ("zone", calendar.zone.clone()),
        (
            "valid",
            format!(
                "from {} until {}",
                format_unix_s(calendar.not_before_unix_s),
                format_unix_s(calendar.expires_unix_s)
            ),
        ),
    ];
    if let Ok((signed, _)) = draft.signed(&args.file) {
        fields.push(("schedule hash", signed.schedule_hash().to_string()));
    }
    fields.push((
        "signed by",
        if draft.signatures.is_empty() {
            "nobody yet".to_owned()
        } else {
            join_key_ids(
                &draft
                    .signatures
                    .iter()
                    .map(|s| s.key_id)
                    .collect::<Vec<_>>(),
            )
        },
    ));
    out.write_all(render_fields(&fields).as_bytes())?;

    writeln!(out)?;
    if calendar.windows.is_empty() {
        writeln!(out, "windows: none yet")?;
    } else {
        writeln!(out, "windows:")?;
        for (index, rule) in calendar.windows.iter().enumerate() {
            writeln!(out, "  {index}: {}", describe_rule(rule))?;
        }
    }
    if calendar.freezes.is_empty() {
        writeln!(out, "freezes: none")?;
    } else {
        writeln!(out, "freezes:")?;
        for (index, freeze) in calendar.freezes.iter().enumerate() {
            writeln!(
                out,
                "  {index}: {} to {}: {}",
                format_unix_s(freeze.start_unix_s),
                format_unix_s(freeze.end_unix_s),
                freeze.reason
            )?;
        }
    }
    Ok(())
}

fn export(args: &ExportArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let loaded = load_schedule_file(&args.file)?;
    let (signed, _) = loaded.draft.signed(&args.file)?;
    let bytes = signed
        .encode()
        .map_err(|source| WindowsCommandError::Invalid {
            path: args.file.clone(),
            source,
        })?;
    keys::write_new_file(&args.out, &bytes, 0o644).map_err(WindowsCommandError::from)?;
    let document = &loaded.draft.document;
    let signed_by = if signed.signatures.is_empty() {
        "unsigned".to_owned()
    } else {
        format!("signed by {}", join_key_ids(&signed.signers()))
    };
    writeln!(
        out,
        "wrote signed schedule file {}: {}, version {}, {signed_by}; check it with `tidegate \
         windows verify {} --root ROOT_FILE`",
        args.out.display(),
        document.target(),
        document.version,
        args.out.display()
    )?;
    Ok(())
}

fn describe_rule(rule: &WindowRule) -> String {
    let cutoff = |cutoff_s: &Option<u32>| match cutoff_s {
        Some(seconds) => format!(
            ", no new starts in the last {}",
            format_duration(i64::from(*seconds))
        ),
        None => String::new(),
    };
    match rule {
        WindowRule::Recurring {
            cron,
            duration_s,
            cutoff_s,
        } => format!(
            "every `{cron}` for {}{}",
            format_duration(i64::from(*duration_s)),
            cutoff(cutoff_s)
        ),
        WindowRule::Once {
            start_unix_s,
            end_unix_s,
            cutoff_s,
        } => format!(
            "once from {} until {}{}",
            format_unix_s(*start_unix_s),
            format_unix_s(*end_unix_s),
            cutoff(cutoff_s)
        ),
    }
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

/// Checks a tier or site name: 1 to 64 characters of `[a-z0-9_-]`, the rules of stream names.
fn check_name(field: &'static str, value: &str) -> Result<(), CliError> {
    StreamName::parse(value)
        .map(|_| ())
        .map_err(|error| invalid_argument(field, value, error.reason))
}

fn draft_zone(draft: &ScheduleDraft, path: &Path) -> Result<Zone, CliError> {
    draft.zone().map_err(|reason| {
        WindowsCommandError::InvalidDraft {
            path: path.to_owned(),
            reason: format!("zone: {reason}"),
        }
        .into()
    })
}

/// Parses a duration such as `2h` into whole seconds that fit a schedule.
fn parse_seconds(text: &str) -> Result<u32, String> {
    let duration = parse_duration(text)?;
    u32::try_from(duration.as_secs()).map_err(|_| format!("{text:?} is too long"))
}

fn parse_optional_seconds(text: Option<&str>) -> Result<Option<u32>, String> {
    text.map(parse_seconds).transpose()
}

fn parse_cutoff(text: Option<&str>, window_s: i64) -> Result<Option<u32>, CliError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let cutoff_s =
        parse_seconds(text).map_err(|reason| invalid_argument("--cutoff", text, reason))?;
    if cutoff_s == 0 || i64::from(cutoff_s) >= window_s {
        return Err(invalid_argument(
            "--cutoff",
            text,
            format!(
                "it must be at least 1s and shorter than the window ({})",
                format_duration(window_s)
            ),
        ));
    }
    Ok(Some(cutoff_s))
}

/// Parses an RFC 3339 instant with an offset, such as `2026-06-01T00:00:00Z`.
fn parse_rfc3339(text: &str) -> Result<i64, String> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(|timestamp| timestamp.as_second())
        .map_err(|_| {
            "expected an RFC 3339 instant with an offset, such as 2026-06-01T00:00:00Z".to_owned()
        })
}

/// Parses an RFC 3339 instant, or else a local date and time in `zone`.
fn parse_time(text: &str, zone: &Zone) -> Result<i64, String> {
    if let Ok(unix_s) = parse_rfc3339(text) {
        return Ok(unix_s);
    }
    zone.parse_local(text).map_err(|_| {
        format!(
            "expected an RFC 3339 instant such as 2026-06-01T00:00:00Z, or a local date and \
             time in {} such as 2026-06-01 02:00",
            zone.name()
        )
    })
}

fn load_schedule_file(path: &Path) -> Result<LoadedSchedule, WindowsCommandError> {
    let bytes = keys::read_file(path, "schedule file", MAX_FILE_BYTES)?;
    if bytes.starts_with(SIGNED_SCHEDULE_MAGIC) {
        let invalid = |source| WindowsCommandError::InvalidSignedFile {
            path: path.to_owned(),
            source,
        };
        if bytes.len() > MAX_SCHEDULE_FILE_BYTES {
            return Err(WindowsCommandError::UnreadableFile {
                path: path.to_owned(),
                reason: format!(
                    "it is {} bytes, larger than the {MAX_SCHEDULE_FILE_BYTES} bytes of a signed schedule file",
                    bytes.len()
                ),
            });
        }
        let signed = SignedSchedule::decode(&bytes).map_err(invalid)?;
        let (document, _) = signed.document().map_err(invalid)?;
        return Ok(LoadedSchedule {
            form: FileForm::Signed,
            draft: ScheduleDraft {
                document,
                signatures: signed.signatures,
            },
        });
    }

    let file: DraftFile =
        serde_json::from_slice(&bytes).map_err(|error| WindowsCommandError::UnreadableFile {
            path: path.to_owned(),
            reason: format!(
                "it does not start with {:?}, and it is not a draft: {error}",
                String::from_utf8_lossy(SIGNED_SCHEDULE_MAGIC)
            ),
        })?;
    let draft =
        ScheduleDraft::from_file(file).map_err(|reason| WindowsCommandError::InvalidDraft {
            path: path.to_owned(),
            reason,
        })?;
    Ok(LoadedSchedule {
        form: FileForm::Draft,
        draft,
    })
}

fn load_draft_for_edit(path: &Path) -> Result<ScheduleDraft, WindowsCommandError> {
    let loaded = load_schedule_file(path)?;
    if loaded.form != FileForm::Draft {
        return Err(WindowsCommandError::NotDraft {
            path: path.to_owned(),
        });
    }
    Ok(loaded.draft)
}

fn save_draft(path: &Path, draft: &ScheduleDraft) -> Result<(), WindowsCommandError> {
    keys::replace_file(path, draft_json(draft).as_bytes()).map_err(WindowsCommandError::from)
}

fn draft_json(draft: &ScheduleDraft) -> String {
    let mut text =
        serde_json::to_string_pretty(&draft.to_file()).expect("a draft always encodes as JSON");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc_or_local() {
        let zone = Zone::parse("America/New_York").unwrap();
        // 2026-03-08 02:30 falls in the DST gap and moves to 03:00 EDT = 07:00Z.
        assert_eq!(
            parse_time("2026-03-08 02:30", &zone).map(format_unix_s),
            Ok("2026-03-08T07:00:00Z".to_owned())
        );
        assert_eq!(
            parse_time("2026-03-08T12:00:00+01:00", &zone).map(format_unix_s),
            Ok("2026-03-08T11:00:00Z".to_owned())
        );
        let error = parse_time("tomorrow", &zone).unwrap_err();
        assert!(error.contains("America/New_York"), "{error}");
    }

    #[test]
    fn draft_round_trips_through_json() {
        let draft = ScheduleDraft {
            document: ScheduleDocument {
                tier: "plant".into(),
                site: Some("hamburg".into()),
                version: 4,
                calendar: CalendarSpec {
                    zone: "Europe/Berlin".into(),
                    not_before_unix_s: 1_780_272_000,
                    expires_unix_s: 1_788_220_800,
                    windows: vec![
                        WindowRule::Recurring {
                            cron: "0 2 * * SUN".into(),
                            duration_s: 4 * 3600,
                            cutoff_s: Some(1800),
                        },
                        WindowRule::Once {
                            start_unix_s: 1_780_300_000,
                            end_unix_s: 1_780_303_600,
                            cutoff_s: None,
                        },
                    ],
                    freezes: vec![Freeze {
                        start_unix_s: 1_780_400_000,
                        end_unix_s: 1_780_500_000,
                        reason: "line changeover".into(),
                    }],
                },
            },
            signatures: vec![],
        };
        let json = draft_json(&draft);
        assert!(json.contains("\"duration\": \"4h\""), "{json}");
        assert!(json.contains("\"cutoff\": \"30m\""), "{json}");
        assert!(
            json.contains("\"not_before\": \"2026-06-01T00:00:00Z\""),
            "{json}"
        );
        let file: DraftFile = serde_json::from_str(&json).unwrap();
        let again = ScheduleDraft::from_file(file).unwrap();
        assert_eq!(again.document, draft.document);
    }
}
