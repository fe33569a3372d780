//! `tidegate fleet list`, `tidegate fleet show` and `tidegate fleet assign`.

use std::io::Write;

use tidegate_protocol::AgentId;

use super::client::ApiClient;
use super::format::{self, relative_time, render_fields, render_table, yes_no};
use super::{AssignArgs, CliError, Context, ListArgs, ShowArgs};
use crate::http::{ErrorResponse, FleetResponse};
use crate::http_console::OwnerAssignment;
use crate::store::{AgentDetail, AgentSummary};

/// How many characters of the agent id the fleet table shows.
const SHORT_ID_LEN: usize = 12;

pub fn list(
    client: &ApiClient,
    args: &ListArgs,
    context: &Context,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let agents = client.fleet()?;
    if args.json {
        write_json(out, &FleetResponse { agents })?;
        return Ok(());
    }
    if agents.is_empty() {
        writeln!(out, "no agents have reported to {} yet", client.base_url())?;
        return Ok(());
    }
    out.write_all(fleet_table(&agents, context.now_unix_s).as_bytes())?;
    Ok(())
}

pub fn show(
    client: &ApiClient,
    args: &ShowArgs,
    context: &Context,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let detail = find_agent(client, &args.agent)?;
    if args.json {
        write_json(out, &detail)?;
        return Ok(());
    }
    out.write_all(agent_text(&detail, args.packages, context.now_unix_s).as_bytes())?;
    Ok(())
}

/// Assigns the agent that `args.agent` names to the owner team `args.owner`.
pub fn assign(client: &ApiClient, args: &AssignArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let detail = find_agent(client, &args.agent)?;
    let agent = &detail.summary;
    let path = format!("/api/v1/agents/{}/owner", agent.agent_id);
    let (status, body) = client.post_json_status(
        &path,
        &OwnerAssignment {
            agent_id: None,
            owner: args.owner.clone(),
        },
    )?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<ErrorResponse>(&body)
            .map(|response| response.error)
            .unwrap_or_else(|_| body.chars().take(200).collect());
        return Err(CliError::Api {
            url: format!("{}{path}", client.base_url()),
            status,
            message,
        });
    }
    let name = or_dash(&agent.hostname);
    if args.owner.is_empty() {
        writeln!(out, "removed the owner team of {name} ({})", agent.agent_id)?;
    } else {
        writeln!(
            out,
            "assigned {name} ({}) to owner team {}",
            agent.agent_id, args.owner
        )?;
    }
    Ok(())
}

/// Finds the one agent that `query` names: an exact id first, then a unique id prefix or an
/// exact hostname.
pub(super) fn find_agent(client: &ApiClient, query: &str) -> Result<AgentDetail, CliError> {
    if AgentId::parse(query).is_ok() {
        if let Some(detail) = client.agent(query)? {
            return Ok(detail);
        }
    }

    let fleet = client.fleet()?;
    let matches = matching_agents(&fleet, query);
    match matches.as_slice() {
        [] => Err(CliError::AgentNotFound {
            query: query.to_owned(),
        }),
        [agent] => client
            .agent(&agent.agent_id)?
            .ok_or_else(|| CliError::AgentNotFound {
                query: query.to_owned(),
            }),
        several => Err(CliError::AmbiguousAgent {
            query: query.to_owned(),
            matches: several
                .iter()
                .map(|agent| format!("{} ({})", agent.agent_id, or_dash(&agent.hostname)))
                .collect(),
        }),
    }
}

/// Returns the agents whose id starts with `query` or whose hostname is `query`, in fleet order.
fn matching_agents<'a>(fleet: &'a [AgentSummary], query: &str) -> Vec<&'a AgentSummary> {
    fleet
        .iter()
        .filter(|agent| agent.agent_id.starts_with(query) || agent.hostname == query)
        .collect()
}

/// Renders the `fleet list` table.
pub fn fleet_table(agents: &[AgentSummary], now_unix_s: i64) -> String {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|agent| {
            vec![
                agent.agent_id.chars().take(SHORT_ID_LEN).collect(),
                or_dash(&agent.hostname).to_owned(),
                or_dash(&agent.tier).to_owned(),
                or_dash(&agent.owner).to_owned(),
                os_label(agent),
                agent.package_count.to_string(),
                format::pending(agent.pending_updates, agent.security_updates),
                yes_no(agent.reboot_required).to_owned(),
                yes_no(agent.online).to_owned(),
                relative_time(now_unix_s, agent.last_seen_unix_s),
            ]
        })
        .collect();
    render_table(
        &[
            "AGENT",
            "HOSTNAME",
            "TIER",
            "OWNER",
            "OS",
            "PACKAGES",
            "PENDING",
            "REBOOT",
            "ONLINE",
            "LAST SEEN",
        ],
        &rows,
    )
}

/// Renders `fleet show`: facts, counters, reboot state, warnings, pending updates and, with
/// `list_packages`, every package.
pub fn agent_text(detail: &AgentDetail, list_packages: bool, now_unix_s: i64) -> String {
    let agent = &detail.summary;
    let when = |unix_s: Option<i64>| match unix_s {
        Some(unix_s) => relative_time(now_unix_s, unix_s),
        None => "never".to_owned(),
    };

    let mut out = render_fields(&[
        ("Agent", agent.agent_id.clone()),
        ("Hostname", or_dash(&agent.hostname).to_owned()),
        ("OS", os_label(agent)),
        ("Kernel", or_dash(&agent.kernel_version).to_owned()),
        ("Architecture", or_dash(&agent.arch).to_owned()),
        ("Tier", or_dash(&agent.tier).to_owned()),
        ("Owner team", or_dash(&agent.owner).to_owned()),
        (
            "Trust root",
            agent.trust_root_version.map_or_else(
                || "none pinned".to_owned(),
                |version| format!("version {version}"),
            ),
        ),
        ("CPUs", agent.cpu_count.to_string()),
        ("Memory", format::bytes(agent.memory_total_bytes)),
        (
            "Uptime",
            agent
                .uptime_seconds
                .map_or_else(|| "-".to_owned(), format::duration),
        ),
        (
            "Agent version",
            agent
                .agent_version
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
        ),
        ("Online", yes_no(agent.online).to_owned()),
        (
            "First seen",
            relative_time(now_unix_s, agent.first_seen_unix_s),
        ),
        (
            "Last seen",
            relative_time(now_unix_s, agent.last_seen_unix_s),
        ),
        ("Last report", when(agent.last_report_unix_s)),
        (
            "Package lists updated",
            when(agent.package_lists_updated_unix_s),
        ),
        ("Reports received", agent.reports_received.to_string()),
        ("Duplicate reports", agent.duplicate_reports.to_string()),
        ("Outbox dropped", agent.outbox_dropped.to_string()),
    ]);

    out.push('\n');
    if agent.reboot_required {
        if detail.reboot_packages.is_empty() {
            out.push_str("Reboot required: yes\n");
        } else {
            out.push_str(&format!(
                "Reboot required: yes, for {}\n",
                detail.reboot_packages.join(", ")
            ));
        }
    } else {
        out.push_str("Reboot required: no\n");
    }

    if !detail.bundles.is_empty() {
        out.push_str(&format!(
            "\nBundles ({}, newest last):\n",
            detail.bundles.len()
        ));
        for bundle in &detail.bundles {
            let outcome = match &bundle.outcome {
                tidegate_protocol::BundleOutcome::Rejected { rule, detail } => {
                    format!("rejected ({rule}): {detail}")
                }
                tidegate_protocol::BundleOutcome::Deferred { reason } => {
                    format!("deferred: {reason}")
                }
                tidegate_protocol::BundleOutcome::Running { step } => {
                    format!("running (step {step})")
                }
                tidegate_protocol::BundleOutcome::Waiting {
                    code,
                    reason,
                    expected_start_unix_s,
                } => match expected_start_unix_s {
                    Some(at) => format!(
                        "waiting ({code}): {reason}; expected to start at {} ({})",
                        tidegate_protocol::trust::format_unix_s(*at),
                        relative_time(now_unix_s, *at)
                    ),
                    None => format!("waiting ({code}): {reason}"),
                },
                other => match other.failure() {
                    Some((Some(step), detail)) => {
                        format!("{} at step {step}: {detail}", other.as_str())
                    }
                    Some((None, detail)) => format!("{}: {detail}", other.as_str()),
                    None => other.as_str().to_owned(),
                },
            };
            let person = if bundle.outcome.needs_person() {
                " [needs a person]"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {} (stream {}, sequence {}) {}{person}, {}\n",
                bundle.bundle_id,
                or_dash(&bundle.stream),
                bundle.sequence,
                outcome,
                relative_time(now_unix_s, bundle.decided_at_unix_s)
            ));
            if !bundle.steps.is_empty() {
                out.push_str(&format!("    hash {}\n", bundle.bundle_hash));
            }
            for step in &bundle.steps {
                let finished = match step.finished_at_unix_s {
                    Some(at) => format!(", finished {}", relative_time(now_unix_s, at)),
                    None => String::new(),
                };
                let detail = if step.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", step.detail)
                };
                out.push_str(&format!(
                    "    step {} {} {}, started {}{finished}{detail}\n",
                    step.index,
                    step.kind,
                    step.outcome.as_str(),
                    relative_time(now_unix_s, step.started_at_unix_s),
                ));
            }
        }
    }

    if !detail.warnings.is_empty() {
        out.push_str(&format!("\nWarnings ({}):\n", detail.warnings.len()));
        for warning in &detail.warnings {
            out.push_str(&format!("  {}: {}\n", warning.source, warning.message));
        }
    }

    out.push('\n');
    if detail.pending_updates.is_empty() {
        out.push_str("Pending updates: none\n");
    } else {
        out.push_str(&format!(
            "Pending updates: {}\n",
            format::pending(agent.pending_updates, agent.security_updates)
        ));
        let rows: Vec<Vec<String>> = detail
            .pending_updates
            .iter()
            .map(|update| {
                vec![
                    update.name.clone(),
                    update.arch.clone(),
                    update.installed_version.clone(),
                    update.candidate_version.clone(),
                    yes_no(update.security).to_owned(),
                    yes_no(update.held).to_owned(),
                ]
            })
            .collect();
        out.push_str(&render_table(
            &["NAME", "ARCH", "INSTALLED", "CANDIDATE", "SECURITY", "HELD"],
            &rows,
        ));
    }

    out.push('\n');
    out.push_str(&format!(
        "Packages: {} installed, {} broken, {} rows",
        agent.package_count,
        agent.broken_package_count,
        detail.packages.len()
    ));
    if !list_packages {
        out.push_str(" (list them with --packages)\n");
        return out;
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = detail
        .packages
        .iter()
        .map(|package| {
            vec![
                package.ecosystem.clone(),
                package.name.clone(),
                package.arch.clone(),
                package.version.clone(),
                package.state.clone(),
                package.selection.clone(),
            ]
        })
        .collect();
    out.push_str(&render_table(
        &["ECOSYSTEM", "NAME", "ARCH", "VERSION", "STATE", "SELECTION"],
        &rows,
    ));
    out
}

fn os_label(agent: &AgentSummary) -> String {
    let label = format!("{} {}", agent.os_name, agent.os_version);
    let label = label.trim();
    or_dash(label).to_owned()
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

fn write_json<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PackageRow, PendingUpdateRow, WarningRow};

    const NOW: i64 = 1_700_000_000;

    fn summary(agent_id: &str, hostname: &str) -> AgentSummary {
        AgentSummary {
            agent_id: agent_id.into(),
            hostname: hostname.into(),
            os_name: "Debian GNU/Linux".into(),
            os_version: "12".into(),
            kernel_version: "6.1.0-18-amd64".into(),
            arch: "x86_64".into(),
            cpu_count: 4,
            memory_total_bytes: 8 * 1024 * 1024 * 1024,
            online: true,
            agent_version: Some("0.1.0".into()),
            first_seen_unix_s: NOW - 2 * 86_400,
            last_seen_unix_s: NOW - 5,
            last_report_unix_s: Some(NOW - 180),
            uptime_seconds: Some(86_400 + 2 * 3_600),
            package_count: 1_234,
            broken_package_count: 1,
            pending_updates: 12,
            security_updates: 3,
            reboot_required: true,
            package_lists_updated_unix_s: None,
            reports_received: 40,
            duplicate_reports: 2,
            outbox_dropped: 0,
            tier: "plant-floor".into(),
            trust_root_version: Some(2),
            owner: "plant-ops".into(),
            bundles_waiting: 0,
            bundles_needing_person: 0,
            schedule_version: Some(3),
        }
    }

    #[test]
    fn fleet_table_columns() {
        let mut quiet = summary("b71c00aa", "db");
        quiet.os_name = String::new();
        quiet.os_version = String::new();
        quiet.package_count = 7;
        quiet.pending_updates = 0;
        quiet.security_updates = 0;
        quiet.reboot_required = false;
        quiet.online = false;
        quiet.last_seen_unix_s = NOW - 3 * 60;
        quiet.tier = String::new();
        quiet.owner = String::new();
        let agents = vec![
            summary("3f2a0c9d11e4b5a6c7d8e9f0a1b2c3d4", "gateway-7"),
            quiet,
        ];

        let expected = "\
AGENT         HOSTNAME   TIER         OWNER      OS                   PACKAGES  PENDING     REBOOT  ONLINE  LAST SEEN
3f2a0c9d11e4  gateway-7  plant-floor  plant-ops  Debian GNU/Linux 12  1234      12 (3 sec)  yes     yes     5s ago
b71c00aa      db         -            -          -                    7         0           no      no      3m ago
";
        assert_eq!(fleet_table(&agents, NOW), expected);
    }

    fn detail() -> AgentDetail {
        AgentDetail {
            summary: summary("3f2a0c9d11e4b5a6c7d8e9f0a1b2c3d4", "gateway-7"),
            packages: vec![PackageRow {
                ecosystem: "deb".into(),
                name: "openssl".into(),
                arch: "amd64".into(),
                version: "3.0.11-1~deb12u2".into(),
                state: "installed".into(),
                selection: "install".into(),
                provides: vec![],
            }],
            pending_updates: vec![PendingUpdateRow {
                ecosystem: "deb".into(),
                name: "openssl".into(),
                arch: "amd64".into(),
                installed_version: "3.0.11-1~deb12u2".into(),
                candidate_version: "3.0.13-1~deb12u1".into(),
                held: false,
                security: true,
            }],
            reboot_packages: vec!["linux-image-6.1.0-18-amd64".into()],
            warnings: vec![WarningRow {
                source: "dpkg".into(),
                message: "skipped a stanza without Package".into(),
            }],
            bundles: vec![tidegate_protocol::BundleRecord {
                bundle_id: "openssl-fix".into(),
                stream: "openssl".into(),
                sequence: 40,
                bundle_hash: "ab".repeat(32),
                outcome: tidegate_protocol::BundleOutcome::Rejected {
                    rule: "rollback".into(),
                    detail: "sequence 40 is below 42".into(),
                },
                decided_at_unix_s: NOW - 60,
                steps: vec![],
            }],
            bundle_states: vec![],
        }
    }

    #[test]
    fn agent_text_shows_why_a_bundle_waits_and_when_it_starts() {
        let mut detail = detail();
        detail.bundles[0].outcome = tidegate_protocol::BundleOutcome::Waiting {
            code: "outside-windows".into(),
            reason: "no window is open".into(),
            expected_start_unix_s: Some(NOW + 7200),
        };
        let text = agent_text(&detail, false, NOW);
        let expected_at = tidegate_protocol::trust::format_unix_s(NOW + 7200);
        assert!(
            text.contains(&format!(
                "openssl-fix (stream openssl, sequence 40) waiting (outside-windows): no window is open; expected to start at {expected_at} (in 2h), 1m ago\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn agent_text_shows_trust_and_bundles() {
        let text = agent_text(&detail(), false, NOW);

        assert!(
            text.contains("Tier:                   plant-floor\n"),
            "{text}"
        );
        assert!(
            text.contains("Trust root:             version 2\n"),
            "{text}"
        );
        assert!(
            text.contains("Owner team:             plant-ops\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Bundles (1, newest last):\n  openssl-fix (stream openssl, sequence 40) rejected (rollback): sequence 40 is below 42, 1m ago\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn agent_text_shows_steps_of_a_failed_revert() {
        let mut detail = detail();
        detail.bundles = vec![tidegate_protocol::BundleRecord {
            bundle_id: "sshd-hardening".into(),
            stream: "sshd".into(),
            sequence: 7,
            bundle_hash: "cd".repeat(32),
            outcome: tidegate_protocol::BundleOutcome::RevertFailed {
                step: 0,
                detail: "revert of step 0 failed".into(),
            },
            decided_at_unix_s: NOW - 120,
            steps: vec![
                tidegate_protocol::StepRecord {
                    index: 0,
                    kind: "write-file".into(),
                    outcome: tidegate_protocol::StepOutcome::RevertFailed,
                    started_at_unix_s: NOW - 300,
                    finished_at_unix_s: Some(NOW - 120),
                    detail: "revert of step 0 failed".into(),
                },
                tidegate_protocol::StepRecord {
                    index: 1,
                    kind: "lock-account".into(),
                    outcome: tidegate_protocol::StepOutcome::Reverted,
                    started_at_unix_s: NOW - 240,
                    finished_at_unix_s: Some(NOW - 180),
                    detail: "verify failed".into(),
                },
            ],
        }];

        let text = agent_text(&detail, false, NOW);

        assert!(
            text.contains(
                "  sshd-hardening (stream sshd, sequence 7) revert-failed at step 0: revert of \
                 step 0 failed [needs a person], 2m ago\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "    step 0 write-file revert-failed, started 5m ago, finished 2m ago: revert of \
                 step 0 failed\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "    step 1 lock-account reverted, started 4m ago, finished 3m ago: verify failed\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn agent_text_sections() {
        let text = agent_text(&detail(), false, NOW);

        assert!(
            text.contains("Agent:                  3f2a0c9d11e4b5a6c7d8e9f0a1b2c3d4\n"),
            "{text}"
        );
        assert!(text.contains("Uptime:                 1d 2h\n"), "{text}");
        assert!(text.contains("Memory:                 8.0 GiB\n"), "{text}");
        assert!(text.contains("Last report:            3m ago\n"), "{text}");
        assert!(text.contains("Package lists updated:  never\n"), "{text}");
        assert!(text.contains("Duplicate reports:      2\n"), "{text}");
        assert!(
            text.contains("Reboot required: yes, for linux-image-6.1.0-18-amd64\n"),
            "{text}"
        );
        assert!(
            text.contains("Warnings (1):\n  dpkg: skipped a stanza without Package\n"),
            "{text}"
        );
        assert!(text.contains("Pending updates: 12 (3 sec)\n"), "{text}");
        assert!(
            text.contains("openssl  amd64  3.0.11-1~deb12u2  3.0.13-1~deb12u1  yes       no\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "Packages: 1234 installed, 1 broken, 1 rows (list them with --packages)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn agent_text_lists_packages_on_request() {
        let text = agent_text(&detail(), true, NOW);
        assert!(
            text.ends_with(
                "ECOSYSTEM  NAME     ARCH   VERSION           STATE      SELECTION\n\
                 deb        openssl  amd64  3.0.11-1~deb12u2  installed  install\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn matching_agents_by_prefix_and_hostname() {
        let fleet = vec![
            summary("3f2a01", "gw-1"),
            summary("3f2b02", "gw-2"),
            summary("9c0003", "3f2a"),
        ];
        let ids = |query: &str| -> Vec<String> {
            matching_agents(&fleet, query)
                .iter()
                .map(|agent| agent.agent_id.clone())
                .collect()
        };

        assert_eq!(ids("3f2b"), vec!["3f2b02"]);
        assert_eq!(ids("gw-2"), vec!["3f2b02"]);
        assert_eq!(ids("3f2"), vec!["3f2a01", "3f2b02"]);
        assert_eq!(ids("3f2a"), vec!["3f2a01", "9c0003"]);
        assert!(ids("gw").is_empty());
    }
}
