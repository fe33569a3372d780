//! The rollout state machine. It does no IO and reads no clock: [`Rollout::advance`] takes the
//! time and each agent's latest outcome for the bundle, updates the rollout, and returns the
//! orders to send and what changed. The driver (`driver.rs`) does the sending and the storing.
//!
//! Rules:
//!
//! - The targets are split into waves at the start (`plan.rs`). A wave starts only when every
//!   agent of the wave before has an outcome, success or failure.
//! - Within the current wave, agents are sent the bundle as long as fewer than
//!   `max_concurrent_per_tier` agents of their tier are changing (sent the bundle, no outcome yet).
//! - Success is `Applied` or `AlreadyApplied`; failure is `Rejected`, `Reverted` or
//!   `RevertFailed`; every other outcome is pending. An agent with no outcome by the end of its
//!   tier's window plus the grace period counts as failed. A later outcome still replaces that.
//! - When the failures since the start (or the last resume) reach the threshold, the rollout
//!   pauses or reverts. Reverting sends a rollback order to every agent that applied the bundle,
//!   and to every one that applies it later. The rollout ends when none is left changing.
//! - A stopped, completed or rolled-back rollout sends nothing more, but still records the
//!   outcomes agents report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tidegate_protocol::BundleOutcome;

use super::plan::{cumulative_wave_sizes, FailureAction, FailureThreshold, WaveSize};

/// The settings of one rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// Agents in the first wave; 0 for no canary wave.
    pub canary: u32,
    /// Cumulative sizes of the waves after the canary.
    pub waves: Vec<WaveSize>,
    /// Maximum number of agents of one tier changing at once; `None` for no limit.
    pub max_concurrent_per_tier: Option<u32>,
    pub failure_threshold: FailureThreshold,
    pub on_failure: FailureAction,
    /// How long after the end of its window an agent may take to report an outcome.
    pub grace_seconds: u64,
}

/// The published bundle a rollout delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub bundle_id: String,
    pub stream: String,
    pub sequence: u64,
    pub bundle_hash: String,
}

/// One agent the bundle's selector matched when the rollout started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub agent_id: String,
    pub tier: String,
}

/// Gives the end of the window in which an agent of `tier` may apply a bundle sent at
/// `sent_at_unix_s`. The deadline of the agent is that end plus the grace period.
pub trait WindowSource: Send + Sync {
    /// Returns the end of the window of `tier` that allows the first start at or after
    /// `sent_at_unix_s`, in seconds since the Unix epoch. `None` means no such window is known,
    /// which makes the deadline the time the bundle was sent plus the grace period.
    fn window_end_for(&self, tier: &str, sent_at_unix_s: i64) -> Option<i64>;
}

/// The window source of a server without window schedules: every deadline is the time the bundle
/// was sent plus the grace period.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWindows;

impl WindowSource for NoWindows {
    fn window_end_for(&self, _tier: &str, sent_at_unix_s: i64) -> Option<i64> {
        Some(sent_at_unix_s)
    }
}

/// The state of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RolloutStatus {
    Running,
    Paused {
        reason: String,
    },
    /// Sending rollback orders after the failure threshold was reached.
    Reverting {
        reason: String,
    },
    /// Every agent that applied the bundle reported the outcome of its rollback order.
    RolledBack {
        reason: String,
    },
    Stopped {
        reason: String,
    },
    /// Every target has an outcome.
    Completed,
}

impl RolloutStatus {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused { .. } => "paused",
            Self::Reverting { .. } => "reverting",
            Self::RolledBack { .. } => "rolled-back",
            Self::Stopped { .. } => "stopped",
            Self::Completed => "completed",
        }
    }

    /// Returns whether the rollout can still send orders (after a resume, for a paused one).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            Self::Running | Self::Paused { .. } | Self::Reverting { .. }
        )
    }
}

/// The state of one agent in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum AgentState {
    /// Not sent the bundle yet.
    Pending,
    /// Sent the bundle; no outcome yet.
    Delivered,
    /// Reported that it applies step `step`.
    Running {
        step: u32,
    },
    Applied,
    Failed {
        reason: String,
        /// Whether the failure is a missed deadline rather than a reported outcome.
        timed_out: bool,
    },
    /// Sent a rollback order; no outcome yet.
    RollingBack,
    RolledBack,
    RollbackFailed {
        detail: String,
    },
}

impl AgentState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Running { .. } => "running",
            Self::Applied => "applied",
            Self::Failed { .. } => "failed",
            Self::RollingBack => "rolling-back",
            Self::RolledBack => "rolled-back",
            Self::RollbackFailed { .. } => "rollback-failed",
        }
    }

    /// Sent the bundle and still without an outcome.
    fn is_changing(&self) -> bool {
        matches!(self, Self::Delivered | Self::Running { .. })
    }

    /// Waits for an outcome from the agent: sent the bundle or a rollback order, or failed only
    /// by its deadline, which a later outcome replaces.
    pub fn awaits_outcome(&self) -> bool {
        matches!(
            self,
            Self::Delivered
                | Self::Running { .. }
                | Self::RollingBack
                | Self::Failed {
                    timed_out: true,
                    ..
                }
        )
    }

    /// Has an outcome, success or failure, so it no longer holds back the next wave.
    fn is_settled(&self) -> bool {
        !matches!(self, Self::Pending | Self::Delivered | Self::Running { .. })
    }
}

/// One target agent of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutAgent {
    pub agent_id: String,
    pub tier: String,
    /// Index of its wave, 0 for the first.
    pub wave: usize,
    pub state: AgentState,
    pub sent_at_unix_s: Option<i64>,
    /// When it counts as failed without an outcome: its window's end plus the grace period.
    pub deadline_unix_s: Option<i64>,
    /// When the agent decided the record of this bundle it held as the rollout sent the bundle
    /// (an earlier run's failure, say), so that record is not taken for this rollout's outcome.
    #[serde(default)]
    pub earlier_record_unix_s: Option<i64>,
    /// When its state last changed.
    pub changed_at_unix_s: i64,
}

/// An order the driver must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutOrder {
    SendBundle { agent_id: String },
    SendRollback { agent_id: String },
}

/// The orders and changes of one call of [`Rollout::advance`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advance {
    pub orders: Vec<RolloutOrder>,
    /// One line per change, such as "agent a1: delivered -> applied" or "wave 2 of 3 started".
    pub events: Vec<String>,
}

impl Advance {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty() && self.events.is_empty()
    }
}

/// A request the rollout's current status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rollout {id} is {status}, so it cannot be {action}")]
pub struct TransitionError {
    pub id: u64,
    pub status: &'static str,
    pub action: &'static str,
}

/// A rollout: its settings, its waves and the state of every target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: u64,
    pub bundle: BundleRef,
    pub spec: RolloutSpec,
    pub status: RolloutStatus,
    pub created_at_unix_s: i64,
    pub created_by: String,
    /// Cumulative number of agents at the end of each wave.
    pub wave_ends: Vec<usize>,
    /// Index of the wave being delivered.
    pub current_wave: usize,
    /// Failures the operator accepted by resuming: the threshold counts only failures beyond them.
    pub failures_accepted: usize,
    /// The targets in wave order.
    pub agents: Vec<RolloutAgent>,
}

impl Rollout {
    /// Plans a rollout over `targets`, which are put in agent id order and split into waves.
    /// Returns `None` when there is no target.
    pub fn plan(
        id: u64,
        bundle: BundleRef,
        spec: RolloutSpec,
        mut targets: Vec<Target>,
        created_by: String,
        now_unix_s: i64,
    ) -> Option<Self> {
        targets.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        targets.dedup_by(|a, b| a.agent_id == b.agent_id);
        let wave_ends = cumulative_wave_sizes(targets.len(), spec.canary, &spec.waves);
        if wave_ends.is_empty() {
            return None;
        }
        let agents = targets
            .into_iter()
            .enumerate()
            .map(|(index, target)| RolloutAgent {
                agent_id: target.agent_id,
                tier: target.tier,
                wave: wave_ends.iter().position(|end| index < *end).unwrap_or(0),
                state: AgentState::Pending,
                sent_at_unix_s: None,
                deadline_unix_s: None,
                earlier_record_unix_s: None,
                changed_at_unix_s: now_unix_s,
            })
            .collect();
        Some(Self {
            id,
            bundle,
            spec,
            status: RolloutStatus::Running,
            created_at_unix_s: now_unix_s,
            created_by,
            wave_ends,
            current_wave: 0,
            failures_accepted: 0,
            agents,
        })
    }

    /// Applies what agents reported and what time it is, and returns the orders to send.
    /// `outcome_of` returns an agent's latest outcome for this rollout's bundle.
    pub fn advance(
        &mut self,
        now_unix_s: i64,
        outcome_of: &dyn Fn(&str) -> Option<BundleOutcome>,
        windows: &dyn WindowSource,
    ) -> Advance {
        let mut advance = Advance::default();
        self.record_outcomes(now_unix_s, outcome_of, &mut advance);
        self.record_missed_deadlines(now_unix_s, &mut advance);
        if self.status == RolloutStatus::Running {
            self.check_failure_threshold(&mut advance);
        }
        match self.status {
            RolloutStatus::Running => self.deliver(now_unix_s, windows, &mut advance),
            RolloutStatus::Reverting { .. } => self.revert(now_unix_s, &mut advance),
            _ => {}
        }
        advance
    }

    /// Stops sending the bundle to further agents until [`Rollout::resume`].
    pub fn pause(&mut self, reason: &str) -> Result<(), TransitionError> {
        if matches!(self.status, RolloutStatus::Paused { .. }) {
            return Err(TransitionError {
                id: self.id,
                status: "already paused",
                action: "paused again",
            });
        }
        if self.status != RolloutStatus::Running {
            return Err(self.transition_error("paused"));
        }
        self.status = RolloutStatus::Paused {
            reason: reason.to_owned(),
        };
        Ok(())
    }

    /// Continues a paused rollout. The failures so far are accepted: the threshold counts from
    /// here, so a rollout paused by its threshold does not pause again at once.
    pub fn resume(&mut self) -> Result<(), TransitionError> {
        if !matches!(self.status, RolloutStatus::Paused { .. }) {
            return Err(self.transition_error("resumed"));
        }
        self.failures_accepted = self.failed_count();
        self.status = RolloutStatus::Running;
        Ok(())
    }

    /// Ends the rollout for good: it sends no more orders of any kind.
    pub fn stop(&mut self, reason: &str) -> Result<(), TransitionError> {
        if !self.status.is_active() {
            return Err(self.transition_error("stopped"));
        }
        self.status = RolloutStatus::Stopped {
            reason: reason.to_owned(),
        };
        Ok(())
    }

    pub fn failed_count(&self) -> usize {
        self.agents
            .iter()
            .filter(|agent| matches!(agent.state, AgentState::Failed { .. }))
            .count()
    }

    /// Agents that were sent the bundle.
    pub fn sent_count(&self) -> usize {
        self.agents
            .iter()
            .filter(|agent| agent.sent_at_unix_s.is_some())
            .count()
    }

    /// Returns the number of waves.
    pub fn wave_count(&self) -> usize {
        self.wave_ends.len()
    }

    fn transition_error(&self, action: &'static str) -> TransitionError {
        TransitionError {
            id: self.id,
            status: self.status.name(),
            action,
        }
    }

    fn record_outcomes(
        &mut self,
        now_unix_s: i64,
        outcome_of: &dyn Fn(&str) -> Option<BundleOutcome>,
        advance: &mut Advance,
    ) {
        for agent in &mut self.agents {
            if agent.sent_at_unix_s.is_none() {
                // An outcome from before this rollout sent anything is not this rollout's.
                continue;
            }
            let Some(outcome) = outcome_of(&agent.agent_id) else {
                continue;
            };
            let next = match (&agent.state, outcome) {
                (
                    AgentState::Delivered
                    | AgentState::Running { .. }
                    | AgentState::Failed {
                        timed_out: true, ..
                    },
                    BundleOutcome::Applied | BundleOutcome::AlreadyApplied,
                ) => Some(AgentState::Applied),
                (
                    AgentState::Delivered
                    | AgentState::Running { .. }
                    | AgentState::Failed {
                        timed_out: true, ..
                    },
                    BundleOutcome::Rejected { rule, detail },
                ) => Some(AgentState::Failed {
                    reason: format!("rejected ({rule}): {detail}"),
                    timed_out: false,
                }),
                (
                    AgentState::Delivered
                    | AgentState::Running { .. }
                    | AgentState::Failed {
                        timed_out: true, ..
                    },
                    BundleOutcome::Reverted { step, detail },
                ) => Some(AgentState::Failed {
                    reason: match step {
                        Some(step) => format!("step {step} failed and was reverted: {detail}"),
                        None => format!("failed before its first step: {detail}"),
                    },
                    timed_out: false,
                }),
                (
                    AgentState::Delivered
                    | AgentState::Running { .. }
                    | AgentState::Failed {
                        timed_out: true, ..
                    },
                    BundleOutcome::RevertFailed { step, detail },
                ) => Some(AgentState::Failed {
                    reason: format!("step {step} failed and reverting it failed: {detail}"),
                    timed_out: false,
                }),
                (AgentState::Delivered, BundleOutcome::Running { step }) => {
                    Some(AgentState::Running { step })
                }
                (AgentState::Running { step: current }, BundleOutcome::Running { step })
                    if *current != step =>
                {
                    Some(AgentState::Running { step })
                }
                (AgentState::RollingBack | AgentState::Applied, BundleOutcome::RolledBack) => {
                    Some(AgentState::RolledBack)
                }
                (
                    AgentState::RollingBack | AgentState::Applied,
                    BundleOutcome::RollbackFailed { step, detail },
                ) => Some(AgentState::RollbackFailed {
                    detail: format!("step {step}: {detail}"),
                }),
                _ => None,
            };
            if let Some(next) = next {
                advance.events.push(format!(
                    "agent {}: {} -> {}",
                    agent.agent_id,
                    agent.state.name(),
                    describe(&next)
                ));
                agent.state = next;
                agent.changed_at_unix_s = now_unix_s;
            }
        }
    }

    fn record_missed_deadlines(&mut self, now_unix_s: i64, advance: &mut Advance) {
        for agent in &mut self.agents {
            let Some(deadline) = agent.deadline_unix_s else {
                continue;
            };
            if agent.state.is_changing() && now_unix_s >= deadline {
                let reason = format!(
                    "no outcome reported by its deadline (window end plus {} s grace, {})",
                    self.spec.grace_seconds, deadline
                );
                advance
                    .events
                    .push(format!("agent {} failed: {reason}", agent.agent_id));
                agent.state = AgentState::Failed {
                    reason,
                    timed_out: true,
                };
                agent.changed_at_unix_s = now_unix_s;
            }
        }
    }

    fn check_failure_threshold(&mut self, advance: &mut Advance) {
        let failures = self.failed_count().saturating_sub(self.failures_accepted);
        let limit = self.spec.failure_threshold.failure_limit(self.sent_count());
        if failures < limit {
            return;
        }
        let noun = if failures == 1 { "agent" } else { "agents" };
        let reason = format!(
            "{failures} failed {noun} reached the failure threshold of {}",
            self.spec.failure_threshold
        );
        advance.events.push(match self.spec.on_failure {
            FailureAction::Pause => format!("paused: {reason}"),
            FailureAction::Revert => format!("reverting: {reason}"),
        });
        self.status = match self.spec.on_failure {
            FailureAction::Pause => RolloutStatus::Paused { reason },
            FailureAction::Revert => RolloutStatus::Reverting { reason },
        };
    }

    fn deliver(&mut self, now_unix_s: i64, windows: &dyn WindowSource, advance: &mut Advance) {
        loop {
            let wave = self.current_wave;
            let settled = self
                .agents
                .iter()
                .filter(|agent| agent.wave == wave)
                .all(|agent| agent.state.is_settled());
            if !settled {
                break;
            }
            if wave + 1 >= self.wave_count() {
                self.status = RolloutStatus::Completed;
                advance
                    .events
                    .push("completed: every agent has an outcome".into());
                return;
            }
            self.current_wave += 1;
            advance.events.push(format!(
                "wave {} of {} started",
                self.current_wave + 1,
                self.wave_count()
            ));
        }

        let mut changing_per_tier: BTreeMap<String, u32> = BTreeMap::new();
        for agent in self.agents.iter().filter(|agent| agent.state.is_changing()) {
            *changing_per_tier.entry(agent.tier.clone()).or_default() += 1;
        }
        let grace = i64::try_from(self.spec.grace_seconds).unwrap_or(i64::MAX);
        for agent in &mut self.agents {
            if agent.wave != self.current_wave || agent.state != AgentState::Pending {
                continue;
            }
            let changing = changing_per_tier.entry(agent.tier.clone()).or_default();
            if self
                .spec
                .max_concurrent_per_tier
                .is_some_and(|cap| *changing >= cap)
            {
                continue;
            }
            *changing += 1;
            let window_end = windows
                .window_end_for(&agent.tier, now_unix_s)
                .unwrap_or(now_unix_s)
                .max(now_unix_s);
            agent.state = AgentState::Delivered;
            agent.sent_at_unix_s = Some(now_unix_s);
            agent.deadline_unix_s = Some(window_end.saturating_add(grace));
            agent.changed_at_unix_s = now_unix_s;
            advance.orders.push(RolloutOrder::SendBundle {
                agent_id: agent.agent_id.clone(),
            });
        }
    }

    fn revert(&mut self, now_unix_s: i64, advance: &mut Advance) {
        for agent in &mut self.agents {
            if agent.state == AgentState::Applied {
                agent.state = AgentState::RollingBack;
                agent.changed_at_unix_s = now_unix_s;
                advance.orders.push(RolloutOrder::SendRollback {
                    agent_id: agent.agent_id.clone(),
                });
            }
        }
        let open = self
            .agents
            .iter()
            .any(|agent| agent.state.is_changing() || agent.state == AgentState::RollingBack);
        if !open {
            let RolloutStatus::Reverting { reason } = &self.status else {
                return;
            };
            self.status = RolloutStatus::RolledBack {
                reason: reason.clone(),
            };
            advance.events.push(
                "rolled back: every agent that applied the bundle reported its rollback".into(),
            );
        }
    }
}

fn describe(state: &AgentState) -> String {
    match state {
        AgentState::Running { step } => format!("running step {step}"),
        AgentState::Failed { reason, .. } => format!("failed: {reason}"),
        AgentState::RollbackFailed { detail } => format!("rollback-failed: {detail}"),
        other => other.name().to_owned(),
    }
}

/// Counts of agents per state, for one wave or a whole rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub pending: usize,
    pub delivered: usize,
    pub running: usize,
    pub applied: usize,
    pub failed: usize,
    pub rolling_back: usize,
    pub rolled_back: usize,
    pub rollback_failed: usize,
}

impl StateCounts {
    pub fn of<'a>(agents: impl IntoIterator<Item = &'a RolloutAgent>) -> Self {
        let mut counts = Self::default();
        for agent in agents {
            let slot = match agent.state {
                AgentState::Pending => &mut counts.pending,
                AgentState::Delivered => &mut counts.delivered,
                AgentState::Running { .. } => &mut counts.running,
                AgentState::Applied => &mut counts.applied,
                AgentState::Failed { .. } => &mut counts.failed,
                AgentState::RollingBack => &mut counts.rolling_back,
                AgentState::RolledBack => &mut counts.rolled_back,
                AgentState::RollbackFailed { .. } => &mut counts.rollback_failed,
            };
            *slot += 1;
        }
        counts
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
