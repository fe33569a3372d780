//! `tidegate rollout`: start, watch, pause, resume and stop rollouts through the server's API.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::format::{relative_time, render_fields, render_table};
use super::{ApiClient, CliError, Context};
use crate::rollout::http::{RolloutList, RolloutSummary, RolloutView, StopAllResponse};
use crate::rollout::machine::{AgentState, RolloutStatus, StateCounts};
use crate::rollout::plan::{parse_duration_seconds, parse_waves, FailureAction, FailureThreshold};
use crate::rollout::RolloutRequest;

/// How often `status --watch` redraws.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start taking a published bundle to the agents it targets, in waves
    Start(StartArgs),
    /// Show every rollout, or one rollout's waves and failed agents
    Status(StatusArgs),
    /// Send the bundle to no further agent until `resume`
    Pause(IdArgs),
    /// Continue a paused rollout; the failures so far no longer count toward the threshold
    Resume(IdArgs),
    /// End a rollout for good, or every active rollout with --all
    Stop(StopArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The bundle: its id, or STREAM:SEQUENCE
    #[arg(value_name = "BUNDLE")]
    pub bundle: String,

    /// Agents in the first (canary) wave; 0 for none
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub canary: u32,

    /// Cumulative wave sizes after the canary, as counts or shares of the targets
    #[arg(long, default_value = "100%", value_name = "LIST", value_parser = check_waves)]
    pub waves: String,

    /// Maximum number of agents of one tier changing at once [default: no limit]
    #[arg(long, value_name = "N")]
    pub max_concurrent_per_tier: Option<u32>,

    /// Failures that trigger --on-failure: a count such as 2 or a share of the agents sent the
    /// bundle so far, such as 10%
    #[arg(long, default_value = "1", value_name = "N|N%", value_parser = check_threshold)]
    pub failure_threshold: String,

    /// Action when the threshold is reached: pause, or revert every agent that applied the bundle
    #[arg(long, default_value = "pause", value_name = "ACTION", value_parser = check_action)]
    pub on_failure: String,

    /// How long after its window's end an agent may take to report an outcome before it counts
    /// as failed (s, m, h or d)
    #[arg(long, default_value = "30m", value_name = "DURATION", value_parser = parse_grace)]
    pub grace: u64,

    /// Name of the person starting the rollout, for the record [default: $USER@hostname]
    #[arg(long, value_name = "NAME")]
    pub requested_by: Option<String>,

    /// Print the server's JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The rollout id; every rollout when omitted
    #[arg(value_name = "ID")]
    pub id: Option<u64>,

    /// Redraw every second until the rollout stops changing (Ctrl-C to leave earlier)
    #[arg(long)]
    pub watch: bool,

    /// Print the server's JSON instead of text
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[arg(value_name = "ID")]
    pub id: u64,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The rollout id
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub id: Option<u64>,

    /// Stop every active rollout at once (fleet-wide stop)
    #[arg(long)]
    pub all: bool,
}

fn check_waves(text: &str) -> Result<String, String> {
    parse_waves(text).map_err(|error| error.to_string())?;
    Ok(text.to_owned())
}

fn check_threshold(text: &str) -> Result<String, String> {
    text.parse::<FailureThreshold>()
        .map_err(|error| error.to_string())?;
    Ok(text.to_owned())
}

fn check_action(text: &str) -> Result<String, String> {
    text.parse::<FailureAction>()
        .map_err(|error| error.to_string())?;
    Ok(text.to_owned())
}

fn parse_grace(text: &str) -> Result<u64, String> {
    parse_duration_seconds(text).map_err(|error| error.to_string())
}

pub fn run(
    command: RolloutCommand,
    client: &ApiClient,
    context: &Context,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        RolloutCommand::Start(args) => start(&args, client, out),
        RolloutCommand::Status(args) => status(&args, client, context, out),
        RolloutCommand::Pause(args) => change(client, args.id, "pause", out),
        RolloutCommand::Resume(args) => change(client, args.id, "resume", out),
        RolloutCommand::Stop(StopArgs { id: Some(id), .. }) => change(client, id, "stop", out),
        RolloutCommand::Stop(StopArgs { id: None, .. }) => {
            let response: StopAllResponse =
                client.post_json("/api/v1/rollouts/stop-all", &serde_json::json!({}))?;
            if response.stopped.is_empty() {
                writeln!(out, "no active rollout to stop")?;
            } else {
                let ids: Vec<String> = response.stopped.iter().map(u64::to_string).collect();
                let noun = if ids.len() == 1 {
                    "rollout"
                } else {
                    "rollouts"
                };
                writeln!(out, "stopped {noun} {}", ids.join(", "))?;
            }
            Ok(())
        }
    }
}

fn start(args: &StartArgs, client: &ApiClient, out: &mut dyn Write) -> Result<(), CliError> {
    let (bundle_id, stream, sequence) = match args.bundle.rsplit_once(':') {
        Some((stream, sequence)) => match sequence.parse::<u64>() {
            Ok(sequence) => (None, Some(stream.to_owned()), Some(sequence)),
            Err(_) => (Some(args.bundle.clone()), None, None),
        },
        None => (Some(args.bundle.clone()), None, None),
    };
    let request = RolloutRequest {
        bundle_id,
        stream,
        sequence,
        canary: args.canary,
        waves: args.waves.clone(),
        max_concurrent_per_tier: args.max_concurrent_per_tier,
        failure_threshold: args.failure_threshold.clone(),
        on_failure: args.on_failure.clone(),
        grace_seconds: args.grace,
        requested_by: Some(
            args.requested_by
                .clone()
                .unwrap_or_else(super::bundle::default_publisher),
        ),
    };
    let view: RolloutView = client.post_json("/api/v1/rollouts", &request)?;
    if args.json {
        writeln!(out, "{}", to_json(&view))?;
        return Ok(());
    }
    let summary = &view.summary;
    let sizes: Vec<String> = view
        .waves
        .iter()
        .map(|wave| wave.agents.to_string())
        .collect();
    writeln!(
        out,
        "started rollout {} of bundle {} to {} in {} ({})",
        summary.id,
        summary.bundle.bundle_id,
        agents(summary.targets),
        if summary.wave_count == 1 {
            "1 wave".to_owned()
        } else {
            format!("{} waves", summary.wave_count)
        },
        sizes.join(", ")
    )?;
    writeln!(
        out,
        "watch it with: tidegate rollout status {} --watch",
        summary.id
    )?;
    Ok(())
}

fn change(client: &ApiClient, id: u64, action: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let summary: RolloutSummary = client.post_json(
        &format!("/api/v1/rollouts/{id}/{action}"),
        &serde_json::json!({}),
    )?;
    writeln!(
        out,
        "rollout {} is {}",
        summary.id,
        status_text(&summary.status)
    )?;
    Ok(())
}

fn status(
    args: &StatusArgs,
    client: &ApiClient,
    context: &Context,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut now = context.now_unix_s;
    loop {
        let (text, active) = match args.id {
            Some(id) => {
                let path = format!("/api/v1/rollouts/{id}");
                let view: RolloutView = client.get(&path)?.ok_or_else(|| CliError::Api {
                    url: format!("{}{path}", client.base_url()),
                    status: 404,
                    message: format!("rollout {id} not found"),
                })?;
                if args.json {
                    writeln!(out, "{}", to_json(&view))?;
                    return Ok(());
                }
                (rollout_text(&view, now), view.summary.status.is_active())
            }
            None => {
                let list: RolloutList = client.get("/api/v1/rollouts")?.unwrap_or(RolloutList {
                    rollouts: Vec::new(),
                });
                if args.json {
                    writeln!(out, "{}", to_json(&list))?;
                    return Ok(());
                }
                let active = list
                    .rollouts
                    .iter()
                    .any(|rollout| rollout.status.is_active());
                (list_text(&list), active)
            }
        };
        if args.watch {
            // Clear the screen and move the cursor home, so each redraw replaces the last.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if !args.watch || !active {
            return Ok(());
        }
        std::thread::sleep(WATCH_INTERVAL);
        now += WATCH_INTERVAL.as_secs() as i64;
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("an API response encodes as JSON")
}

fn agents(count: usize) -> String {
    if count == 1 {
        "1 agent".to_owned()
    } else {
        format!("{count} agents")
    }
}

fn status_text(status: &RolloutStatus) -> String {
    match status {
        RolloutStatus::Paused { reason }
        | RolloutStatus::Reverting { reason }
        | RolloutStatus::RolledBack { reason }
        | RolloutStatus::Stopped { reason } => format!("{} ({reason})", status.name()),
        RolloutStatus::Running | RolloutStatus::Completed => status.name().to_owned(),
    }
}

fn count_cells(counts: &StateCounts) -> Vec<String> {
    [
        counts.pending,
        counts.delivered,
        counts.running,
        counts.applied,
        counts.failed,
        counts.rolling_back + counts.rolled_back + counts.rollback_failed,
    ]
    .iter()
    .map(usize::to_string)
    .collect()
}

const COUNT_HEADERS: [&str; 6] = [
    "PENDING",
    "DELIVERED",
    "RUNNING",
    "APPLIED",
    "FAILED",
    "ROLLBACK",
];

/// Renders the list of rollouts.
pub fn list_text(list: &RolloutList) -> String {
    if list.rollouts.is_empty() {
        return "no rollouts\n".to_owned();
    }
    let mut headers = vec!["ID", "BUNDLE", "STATUS", "WAVE", "TARGETS"];
    headers.extend(COUNT_HEADERS);
    let rows: Vec<Vec<String>> = list
        .rollouts
        .iter()
        .map(|rollout| {
            let mut row = vec![
                rollout.id.to_string(),
                rollout.bundle.bundle_id.clone(),
                rollout.status.name().to_owned(),
                format!("{}/{}", rollout.current_wave, rollout.wave_count),
                rollout.targets.to_string(),
            ];
            row.extend(count_cells(&rollout.counts));
            row
        })
        .collect();
    render_table(&headers, &rows)
}

/// Renders one rollout: its settings, a table of counts per wave, and the failed agents.
pub fn rollout_text(view: &RolloutView, now_unix_s: i64) -> String {
    let summary = &view.summary;
    let spec = &summary.spec;
    let waves: Vec<String> = spec.waves.iter().map(ToString::to_string).collect();
    let mut out = render_fields(&[
        ("Rollout", summary.id.to_string()),
        (
            "Bundle",
            format!(
                "{} (stream {}, sequence {})",
                summary.bundle.bundle_id, summary.bundle.stream, summary.bundle.sequence
            ),
        ),
        ("Status", status_text(&summary.status)),
        (
            "Started",
            format!(
                "{} by {}",
                relative_time(now_unix_s, summary.created_at_unix_s),
                summary.created_by
            ),
        ),
        (
            "Waves",
            format!(
                "canary {}, then {}; wave {} of {}",
                spec.canary,
                if waves.is_empty() {
                    "all".to_owned()
                } else {
                    waves.join(",")
                },
                summary.current_wave,
                summary.wave_count
            ),
        ),
        (
            "Limits",
            format!(
                "{} per tier at once; failure threshold {}, then {}; grace {} s",
                spec.max_concurrent_per_tier
                    .map_or("no limit".to_owned(), |cap| cap.to_string()),
                spec.failure_threshold,
                match spec.on_failure {
                    FailureAction::Pause => "pause",
                    FailureAction::Revert => "revert",
                },
                spec.grace_seconds
            ),
        ),
    ]);
    out.push('\n');
    let mut headers = vec!["WAVE", "AGENTS"];
    headers.extend(COUNT_HEADERS);
    let mut rows: Vec<Vec<String>> = view
        .waves
        .iter()
        .map(|wave| {
            let mut row = vec![wave.wave.to_string(), wave.agents.to_string()];
            row.extend(count_cells(&wave.counts));
            row
        })
        .collect();
    let mut total = vec!["all".to_owned(), summary.targets.to_string()];
    total.extend(count_cells(&summary.counts));
    rows.push(total);
    out.push_str(&render_table(&headers, &rows));

    let failed: Vec<Vec<String>> = view
        .agents
        .iter()
        .filter_map(|agent| match &agent.state {
            AgentState::Failed { reason, .. } => Some(vec![
                agent.agent_id.clone(),
                agent.tier.clone(),
                (agent.wave + 1).to_string(),
                reason.clone(),
            ]),
            AgentState::RollbackFailed { detail } => Some(vec![
                agent.agent_id.clone(),
                agent.tier.clone(),
                (agent.wave + 1).to_string(),
                format!("rollback failed: {detail}"),
            ]),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        out.push_str("\nFailed agents:\n");
        out.push_str(&render_table(&["AGENT", "TIER", "WAVE", "REASON"], &failed));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::rollout::machine::{BundleRef, RolloutAgent, RolloutSpec};
    use crate::rollout::plan::WaveSize;

    fn agent(id: &str, wave: usize, state: AgentState) -> RolloutAgent {
        RolloutAgent {
            agent_id: id.into(),
            tier: "office".into(),
            wave,
            state,
            sent_at_unix_s: None,
            deadline_unix_s: None,
            earlier_record_unix_s: None,
            changed_at_unix_s: 0,
        }
    }

    #[test]
    fn start_arguments_parse() {
        let cli = crate::cli::Cli::try_parse_from([
            "tidegate",
            "rollout",
            "start",
            "baseline:7",
            "--canary",
            "2",
            "--waves",
            "2,10%,50%,100%",
            "--max-concurrent-per-tier",
            "4",
            "--failure-threshold",
            "10%",
            "--on-failure",
            "revert",
            "--grace",
            "30m",
        ])
        .unwrap();
        let crate::cli::Command::Rollout(RolloutCommand::Start(args)) = cli.command else {
            panic!("expected rollout start, got {:?}", cli.command);
        };
        assert_eq!(args.bundle, "baseline:7");
        assert_eq!(args.canary, 2);
        assert_eq!(args.waves, "2,10%,50%,100%");
        assert_eq!(args.max_concurrent_per_tier, Some(4));
        assert_eq!(args.failure_threshold, "10%");
        assert_eq!(args.on_failure, "revert");
        assert_eq!(args.grace, 1800);
    }

    #[test]
    fn invalid_settings_are_usage_errors() {
        for arguments in [
            ["tidegate", "rollout", "start", "b", "--waves", "2,x"],
            [
                "tidegate",
                "rollout",
                "start",
                "b",
                "--failure-threshold",
                "0",
            ],
            ["tidegate", "rollout", "start", "b", "--on-failure", "retry"],
            ["tidegate", "rollout", "start", "b", "--grace", "3w"],
        ] {
            let error = crate::cli::Cli::try_parse_from(arguments).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{arguments:?}");
        }
    }

    #[test]
    fn stop_takes_an_id_or_all() {
        let stop = |arguments: &[&str]| {
            let mut full = vec!["tidegate", "rollout", "stop"];
            full.extend(arguments);
            crate::cli::Cli::try_parse_from(full)
        };
        assert!(stop(&["3"]).is_ok());
        assert!(stop(&["--all"]).is_ok());
        assert!(stop(&[]).is_err(), "an id or --all is required");
        assert!(stop(&["3", "--all"]).is_err());
    }

    #[test]
    fn rollout_text_counts_per_wave() {
        let agents = vec![
            agent("a1", 0, AgentState::Applied),
            agent(
                "a2",
                0,
                AgentState::Failed {
                    reason: "rejected (expired): too old".into(),
                    timed_out: false,
                },
            ),
            agent("a3", 1, AgentState::Delivered),
            agent("a4", 1, AgentState::Running { step: 1 }),
            agent("a5", 1, AgentState::Pending),
        ];
        let rollout = crate::rollout::Rollout {
            id: 3,
            bundle: BundleRef {
                bundle_id: "fix-1".into(),
                stream: "baseline".into(),
                sequence: 7,
                bundle_hash: "ab".into(),
            },
            spec: RolloutSpec {
                canary: 2,
                waves: vec![WaveSize::Percent(100)],
                max_concurrent_per_tier: Some(2),
                failure_threshold: FailureThreshold::Count(2),
                on_failure: FailureAction::Pause,
                grace_seconds: 60,
            },
            status: RolloutStatus::Running,
            created_at_unix_s: 1000,
            created_by: "it@desk".into(),
            wave_ends: vec![2, 5],
            current_wave: 1,
            failures_accepted: 0,
            agents,
        };
        let text = rollout_text(&RolloutView::of(&rollout), 1120);
        let expected = "\
Rollout:  3
Bundle:   fix-1 (stream baseline, sequence 7)
Status:   running
Started:  2m ago by it@desk
Waves:    canary 2, then 100%; wave 2 of 2
Limits:   2 per tier at once; failure threshold 2, then pause; grace 60 s

WAVE  AGENTS  PENDING  DELIVERED  RUNNING  APPLIED  FAILED  ROLLBACK
1     2       0        0          0        1        1       0
2     3       1        1          1        0        0       0
all   5       1        1          1        1        1       0

Failed agents:
AGENT  TIER    WAVE  REASON
a2     office  1     rejected (expired): too old
";
        assert_eq!(text, expected);
    }
}
