//! `tidegate windows publish` and `tidegate windows list`: the parts of `tidegate windows` that
//! talk to the server.
//!
//! `publish` sends a signed schedule file, byte for byte, to `POST /api/v1/schedules`. The server
//! checks it against its trust root, stores it and sends it to the agents of its tier. `list`
//! reads `GET /api/v1/windows` and `GET /api/v1/bundles/earliest` and prints each tier's next
//! windows in the zone's local time and in UTC, its freezes, and for each bundle that waits the
//! earliest instant it can start on each tier. Both instants come from the server's clock.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use tidegate_protocol::trust::{format_unix_s, SignedSchedule, MAX_SCHEDULE_FILE_BYTES};
use tidegate_protocol::window::Zone;

use super::format::render_table;
use super::keys::{self, count_noun, FileError};
use super::{ApiClient, CliError};
use crate::http_schedules::{ScheduleErrorResponse, SchedulePublishResponse};
use crate::schedules::{
    EarliestResponse, EarliestStatus, TierWindows, WindowsResponse, DEFAULT_WINDOW_DAYS,
    MAX_WINDOW_DAYS,
};

const PUBLISH_PATH: &str = "/api/v1/schedules";

/// The header that names who published a schedule, as for bundles.
const PUBLISHER_HEADER: &str = "X-Tidegate-Publisher";

/// Maximum length in bytes of a publisher name.
const MAX_PUBLISHER_LEN: usize = 128;

/// The magic of a signed schedule file.
const SIGNED_SCHEDULE_MAGIC: &[u8; 4] = b"TGWS";

#[derive(Debug, Subcommand)]
pub enum WindowsServerCommand {
    /// Send a signed schedule file to the server, which checks, stores and delivers it
    Publish(PublishArgs),
    /// List each tier's next windows and freezes, and when each waiting bundle can start
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The signed schedule file (from `tidegate windows export`)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Name of the publisher, recorded by the server [default: $USER@hostname]
    #[arg(long, value_name = "NAME")]
    pub publisher: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tier
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,

    /// How many days ahead to list windows and freezes, 1 to 62
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WINDOW_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_WINDOW_DAYS)))]
    pub days: u32,

    /// Print the server's JSON (`{"windows": ..., "earliest": ...}`) instead of text
    #[arg(long)]
    pub json: bool,
}

/// A failed `windows publish` or `windows list`.
#[derive(Debug, thiserror::Error)]
pub enum WindowsServerError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(
        "{path} is not a signed schedule file: {reason}; a draft is exported with `tidegate \
         windows export DRAFT --out FILE` after it is signed"
    )]
    NotSignedFile { path: PathBuf, reason: String },
    #[error(
        "invalid publisher name {name:?}: it must be 1 to {MAX_PUBLISHER_LEN} printable ASCII \
         characters; set it with --publisher"
    )]
    InvalidPublisher { name: String },
    #[error("the server at {url} did not publish {path} ({status}{}): {message}",
            .rule.as_deref().map(|rule| format!(", rule {rule}")).unwrap_or_default())]
    PublishRejected {
        url: String,
        path: PathBuf,
        status: u16,
        message: String,
        rule: Option<String>,
    },
}

/// Runs `windows publish` or `windows list`.
pub fn run(
    command: WindowsServerCommand,
    client: &ApiClient,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        WindowsServerCommand::Publish(args) => publish(&args, client, out),
        WindowsServerCommand::List(args) => list(&args, client, out),
    }
}

fn publish(args: &PublishArgs, client: &ApiClient, out: &mut dyn Write) -> Result<(), CliError> {
    let publisher = args
        .publisher
        .clone()
        .unwrap_or_else(super::bundle::default_publisher);
    let publisher_is_valid = !publisher.is_empty()
        && publisher.len() <= MAX_PUBLISHER_LEN
        && publisher.bytes().all(|byte| (0x20..0x7f).contains(&byte));
    if !publisher_is_valid {
        return Err(WindowsServerError::InvalidPublisher { name: publisher }.into());
    }

    let bytes = keys::read_file(&args.file, "schedule file", MAX_SCHEDULE_FILE_BYTES as u64)
        .map_err(WindowsServerError::from)?;
    let not_signed = |reason: String| WindowsServerError::NotSignedFile {
        path: args.file.clone(),
        reason,
    };
    if !bytes.starts_with(SIGNED_SCHEDULE_MAGIC) {
        return Err(not_signed("it does not start with the magic TGWS".into()).into());
    }
    // A file that does not decode is the wrong file; the server would reject it anyway.
    SignedSchedule::decode(&bytes)
        .and_then(|signed| signed.document())
        .map_err(|error| not_signed(error.to_string()))?;

    let url = format!("{}{PUBLISH_PATH}", client.base_url());
    let (status, body) =
        client.post_octets(PUBLISH_PATH, &[(PUBLISHER_HEADER, &publisher)], &bytes)?;
    if !(200..300).contains(&status) {
        let (message, rule) = match serde_json::from_str::<ScheduleErrorResponse>(&body) {
            Ok(response) => (response.error, response.rule),
            Err(_) => (body.chars().take(200).collect(), None),
        };
        return Err(WindowsServerError::PublishRejected {
            url,
            path: args.file.clone(),
            status,
            message,
            rule,
        }
        .into());
    }

    let response: SchedulePublishResponse =
        serde_json::from_str(&body).map_err(|source| CliError::InvalidJson { url, source })?;
    writeln!(
        out,
        "published schedule version {} for tier {}, site {}",
        response.version,
        response.tier,
        response.site.as_deref().unwrap_or("(whole tier)")
    )?;
    writeln!(
        out,
        "signed by: {}",
        if response.signers.is_empty() {
            "no one".to_owned()
        } else {
            response.signers.join(", ")
        }
    )?;
    writeln!(
        out,
        "sent to {} of the tier",
        count_noun(response.delivered_to as u64, "agent")
    )?;
    writeln!(out, "schedule hash: {}", response.schedule_hash)?;
    writeln!(out, "publisher: {publisher}")?;
    if response.republished {
        writeln!(
            out,
            "note: this file already was the current schedule; the server sent it again"
        )?;
    }
    Ok(())
}

fn list(args: &ListArgs, client: &ApiClient, out: &mut dyn Write) -> Result<(), CliError> {
    let mut windows_path = format!("/api/v1/windows?days={}", args.days);
    if let Some(tier) = &args.tier {
        windows_path.push_str(&format!("&tier={}", encode_query_value(tier)));
    }
    let windows: WindowsResponse = client
        .get(&windows_path)?
        .ok_or_else(|| missing_api(client, &windows_path))?;
    let earliest_path = "/api/v1/bundles/earliest";
    let mut earliest: EarliestResponse = client
        .get(earliest_path)?
        .ok_or_else(|| missing_api(client, earliest_path))?;
    if let Some(tier) = &args.tier {
        for bundle in &mut earliest.bundles {
            bundle.tiers.retain(|entry| &entry.tier == tier);
        }
        earliest.bundles.retain(|bundle| !bundle.tiers.is_empty());
    }

    if args.json {
        let json = serde_json::json!({ "windows": windows, "earliest": earliest });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values always encode")
        )?;
        return Ok(());
    }

    if windows.tiers.is_empty() {
        match &args.tier {
            Some(tier) => writeln!(out, "tier {tier} has no schedule")?,
            None => writeln!(out, "no schedule has been published")?,
        }
    }
    for (index, tier) in windows.tiers.iter().enumerate() {
        if index > 0 {
            writeln!(out)?;
        }
        write_tier(tier, args.days, out)?;
    }

    writeln!(out)?;
    write_earliest(&earliest, out)?;
    Ok(())
}

fn write_tier(tier: &TierWindows, days: u32, out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(
        out,
        "tier {}, site {}: schedule version {}, zone {}",
        tier.tier,
        tier.site.as_deref().unwrap_or("(whole tier)"),
        tier.schedule_version,
        tier.zone
    )?;
    // The server names only zones it could parse, and both sides embed the same tz database.
    let zone = Zone::parse(&tier.zone).ok();
    let local = |unix_s: i64| match &zone {
        Some(zone) => zone.format_local(unix_s),
        None => "-".to_owned(),
    };
    if tier.windows.is_empty() {
        writeln!(out, "no window in the next {}", count_noun(days, "day"))?;
    } else {
        writeln!(
            out,
            "{} in the next {}:",
            count_noun(tier.windows.len() as u64, "window"),
            count_noun(days, "day")
        )?;
        let rows: Vec<Vec<String>> = tier
            .windows
            .iter()
            .map(|window| {
                vec![
                    local(window.start_unix_s),
                    local(window.end_unix_s),
                    format_unix_s(window.start_unix_s),
                    format_unix_s(window.end_unix_s),
                    if window.cutoff_unix_s < window.end_unix_s {
                        format_unix_s(window.cutoff_unix_s)
                    } else {
                        "-".to_owned()
                    },
                ]
            })
            .collect();
        let headers = [
            "START (LOCAL)",
            "END (LOCAL)",
            "START (UTC)",
            "END (UTC)",
            "NO NEW STARTS FROM (UTC)",
        ];
        out.write_all(render_table(&headers, &rows).as_bytes())?;
    }
    if tier.freezes.is_empty() {
        writeln!(out, "no freeze")?;
    } else {
        writeln!(out, "{}:", count_noun(tier.freezes.len() as u64, "freeze"))?;
        let rows: Vec<Vec<String>> = tier
            .freezes
            .iter()
            .map(|freeze| {
                vec![
                    format_unix_s(freeze.start_unix_s),
                    format_unix_s(freeze.end_unix_s),
                    freeze.reason.clone(),
                ]
            })
            .collect();
        out.write_all(render_table(&["START (UTC)", "END (UTC)", "REASON"], &rows).as_bytes())?;
    }
    Ok(())
}

fn write_earliest(earliest: &EarliestResponse, out: &mut dyn Write) -> Result<(), CliError> {
    if earliest.bundles.is_empty() {
        writeln!(out, "no published bundle waits")?;
        return Ok(());
    }
    writeln!(
        out,
        "earliest start of each bundle that has not expired (server time {}):",
        format_unix_s(earliest.now_unix_s)
    )?;
    let mut rows = Vec::new();
    for bundle in &earliest.bundles {
        for entry in &bundle.tiers {
            let target = match &entry.site {
                Some(site) => format!("{}/{site}", entry.tier),
                None => entry.tier.clone(),
            };
            let start = match (entry.status, entry.earliest_start_unix_s) {
                (EarliestStatus::Scheduled, Some(start)) if start <= earliest.now_unix_s => {
                    "now".to_owned()
                }
                (EarliestStatus::Scheduled, Some(start)) => format!(
                    "{} ({})",
                    format_unix_s(start),
                    super::format::relative_time(earliest.now_unix_s, start)
                ),
                (EarliestStatus::NoSchedule, _) => "never: the tier has no schedule".to_owned(),
                _ => format!(
                    "none before it expires at {}",
                    format_unix_s(bundle.expires_unix_s)
                ),
            };
            rows.push(vec![
                bundle.bundle_id.clone(),
                format!("{} #{}", bundle.stream, bundle.sequence),
                target,
                entry
                    .schedule_version
                    .map(|version| version.to_string())
                    .unwrap_or_else(|| "-".to_owned()),
                start,
            ]);
        }
    }
    let headers = ["BUNDLE", "STREAM", "TIER", "SCHEDULE", "EARLIEST START"];
    out.write_all(render_table(&headers, &rows).as_bytes())?;
    Ok(())
}

fn missing_api(client: &ApiClient, path: &str) -> CliError {
    CliError::Api {
        url: format!("{}{path}", client.base_url()),
        status: 404,
        message: "the server has no maintenance-window API; is it a tidegate server of this \
                  version?"
            .to_owned(),
    }
}

/// Percent-encodes a query value. Tier names are `[a-z0-9_-]`, so only a mistyped name needs it.
fn encode_query_value(value: &str) -> String {
    let mut encoded = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_days_are_bounded() {
        use clap::Parser;

        let parse = |days: &str| {
            super::super::Cli::try_parse_from(["tidegate", "windows", "list", "--days", days])
        };
        for days in ["1", "62"] {
            assert!(parse(days).is_ok(), "--days {days} was rejected");
        }
        for days in ["0", "63", "x"] {
            let error = parse(days).unwrap_err();
            assert_eq!(error.exit_code(), 2, "--days {days}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("plant-floor_2"), "plant-floor_2");
        assert_eq!(encode_query_value("a b&c"), "a%20b%26c");
    }
}
