//! The rollout driver: the one task that owns every rollout and every agent's delivery state.
//!
//! It keeps the rollouts in memory, and runs a pass every second and after every ingest batch
//! (at most every 250 ms). A pass reads every agent's tier, online state, trust root version and
//! bundle records from the store. It advances each rollout's state machine and sends the orders
//! it returns. Then it sends again what an agent that came online lacks of its desired state,
//! derives each agent's acknowledged version, and stores what changed. The HTTP API talks to it
//! through a [`RolloutHandle`], so every change of a rollout happens on this task, one at a time.
//!
//! Orders go out through ingest's [`OrderSender`], at QoS 1 and never retained. The audit log
//! records each order (`order.sent`, in one transaction per pass) and each decision the driver
//! takes on its own, with the actor `server`: `rollout.agent_timed_out`,
//! `rollout.wave_started`, `rollout.paused`, `rollout.reverting`, `rollout.reverted` and
//! `rollout.completed`.
//!
//! An order to an offline agent waits in its broker session, and is lost when the agent connects
//! with a clean session or the broker loses the session (an embedded broker does on a restart).
//! The agent's next online status makes the driver send again what its reports do not show of
//! its desired state: bundles, rollbacks, trust roots and the tier's schedule.
//!
//! A pass reads only the agents it needs: those a rollout waits on, those that came online, and
//! those whose reports do not show their desired state yet. It reads the whole agents table when
//! more than `MAX_AGENT_LOOKUPS` agents are needed, when the trust root version or a tier's
//! schedule version changed, and every `FULL_READ_INTERVAL`, which gives agents that reported
//! since a desired trust root and schedule.
//!
//! Limits: a full read of 100,000 agents costs a noticeable share of a core (an estimate; not
//! measured). Each rollout is stored whole as JSON after every
//! change, which grows with its number of targets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tidegate_protocol::trust::inspect_bundle;
use tidegate_protocol::{AgentId, BundleOutcome, Order, OrderBody, OrderId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::delivery::{DesiredState, Reported};
use super::handle::Command;
pub use super::handle::{RolloutError, RolloutHandle, RolloutRequest};
use super::machine::{
    Advance, AgentState, BundleRef, Rollout, RolloutOrder, RolloutSpec, Target, TransitionError,
    WindowSource,
};
use super::plan::{parse_waves, FailureAction, FailureThreshold, InvalidSetting};
use super::store::{AgentView, BundleSelector, RolloutStore};
use crate::audit::{AuditEntry, AuditLog, SERVER_ACTOR};
use crate::ingest::{Clock, IngestEvents, OrderBatch, OrderSender};
use crate::publish::{targets_agent, CheckedBundle};

/// Maximum time between two passes.
const TICK: Duration = Duration::from_secs(1);

/// Maximum time between two reads of the whole agents table.
const FULL_READ_INTERVAL: Duration = Duration::from_secs(60);

/// Maximum number of agents a pass reads one by one; above this it reads the whole table.
const MAX_AGENT_LOOKUPS: usize = 2000;

/// Minimum time between two passes, so that a burst of ingest batches causes one read of
/// the agents table, not one per batch.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(250);

/// The parts of the server the driver uses.
pub struct DriverDeps {
    pub store: RolloutStore,
    pub orders: OrderSender,
    pub events: Arc<IngestEvents>,
    pub windows: Arc<dyn WindowSource>,
    pub clock: Arc<dyn Clock>,
    /// Receives the driver's own decisions, with the actor `server`.
    pub audit: AuditLog,
}

struct Driver {
    deps: DriverDeps,
    rollouts: BTreeMap<u64, Rollout>,
    delivery: BTreeMap<String, DesiredState>,
    /// Delivery states changed since they were last stored.
    dirty: BTreeSet<String>,
    /// Bundle files by hash, read once from the store.
    files: HashMap<String, Vec<u8>>,
    /// Agents that came online and were not yet sent what they lack, kept across a failed pass.
    came_online: BTreeSet<AgentId>,
    /// When the last pass read the whole agents table, and the trust root version and tier
    /// schedule versions it applied.
    last_full_read: Option<FullRead>,
}

/// The last read of the whole agents table, and the versions it applied to every agent's
/// desired state.
struct FullRead {
    at: tokio::time::Instant,
    root_version: Option<u64>,
    schedule_versions: BTreeMap<String, u64>,
}

/// Loads the rollouts and delivery states and starts the driver task.
pub async fn start(deps: DriverDeps) -> Result<(RolloutHandle, JoinHandle<()>), RolloutError> {
    let store = deps.store.clone();
    let (rollouts, delivery) =
        blocking(move || Ok((store.rollouts()?, store.delivery_states()?))).await?;
    let (commands_tx, commands) = mpsc::channel(64);
    let driver = Driver {
        deps,
        rollouts: rollouts
            .into_iter()
            .map(|rollout| (rollout.id, rollout))
            .collect(),
        delivery,
        dirty: BTreeSet::new(),
        files: HashMap::new(),
        came_online: BTreeSet::new(),
        last_full_read: None,
    };
    let task = tokio::spawn(driver.run(commands));
    Ok((RolloutHandle::new(commands_tx), task))
}

/// Runs a store call on the blocking thread pool.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, RolloutError> + Send + 'static,
) -> Result<T, RolloutError> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or(Err(RolloutError::DriverStopped))
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let events = self.deps.events.clone();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_pass = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = events.changed() => {
                    let next = last_pass + MIN_PASS_INTERVAL;
                    tokio::time::sleep_until(next).await;
                }
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
            }
            if let Err(error) = self.pass().await {
                error!(%error, "a rollout pass failed; the next one tries again");
            }
            last_pass = tokio::time::Instant::now();
        }
        debug!("rollout driver stopped");
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Start(request, reply) => {
                let _ = reply.send(self.start_rollout(request).await);
            }
            Command::List(reply) => {
                let _ = reply.send(Ok(self.rollouts.values().cloned().collect()));
            }
            Command::Get(id, reply) => {
                let found = self.rollouts.get(&id).cloned();
                let _ = reply.send(found.ok_or(RolloutError::NotFound(id)));
            }
            Command::Pause(id, reply) => {
                let _ = reply.send(
                    self.change(id, |rollout| rollout.pause("paused by an operator"))
                        .await,
                );
            }
            Command::Resume(id, reply) => {
                let _ = reply.send(self.change(id, Rollout::resume).await);
            }
            Command::Stop(id, reply) => {
                let _ = reply.send(
                    self.change(id, |rollout| rollout.stop("stopped by an operator"))
                        .await,
                );
            }
            Command::StopAll(reply) => {
                let _ = reply.send(self.stop_all().await);
            }
            Command::Delivery(agent_id, reply) => {
                let _ = reply.send(Ok(self.delivery.get(&agent_id).cloned()));
            }
        }
    }

    async fn change(
        &mut self,
        id: u64,
        transition: impl FnOnce(&mut Rollout) -> Result<(), TransitionError>,
    ) -> Result<Rollout, RolloutError> {
        let rollout = self
            .rollouts
            .get_mut(&id)
            .ok_or(RolloutError::NotFound(id))?;
        transition(rollout)?;
        info!(
            rollout.id = id,
            status = rollout.status.name(),
            "rollout changed by an operator"
        );
        let rollout = rollout.clone();
        self.save_rollout(&rollout).await?;
        Ok(rollout)
    }

    async fn stop_all(&mut self) -> Result<Vec<u64>, RolloutError> {
        let mut stopped = Vec::new();
        for rollout in self.rollouts.values_mut() {
            if rollout.stop("fleet-wide stop").is_ok() {
                stopped.push(rollout.clone());
            }
        }
        warn!(rollouts = ?stopped.iter().map(|r| r.id).collect::<Vec<_>>(), "fleet-wide stop");
        for rollout in &stopped {
            self.save_rollout(rollout).await?;
        }
        Ok(stopped.iter().map(|rollout| rollout.id).collect())
    }

    async fn save_rollout(&self, rollout: &Rollout) -> Result<(), RolloutError> {
        let store = self.deps.store.clone();
        let rollout = rollout.clone();
        let now = self.deps.clock.now_unix_s();
        blocking(move || Ok(store.save_rollout(&rollout, now)?)).await
    }

    async fn start_rollout(&mut self, request: RolloutRequest) -> Result<Rollout, RolloutError> {
        let selector = match (&request.bundle_id, &request.stream, request.sequence) {
            (Some(id), None, None) => BundleSelector::Id(id.clone()),
            (None, Some(stream), Some(sequence)) => BundleSelector::StreamSequence {
                stream: stream.clone(),
                sequence,
            },
            _ => return Err(RolloutError::NoBundle),
        };
        let spec = RolloutSpec {
            canary: request.canary,
            waves: if request.waves.trim().is_empty() {
                Vec::new()
            } else {
                parse_waves(&request.waves)?
            },
            max_concurrent_per_tier: match request.max_concurrent_per_tier {
                Some(0) => {
                    return Err(RolloutError::Invalid(InvalidSetting {
                        setting: "max_concurrent_per_tier",
                        value: "0".into(),
                        reason: "it must be at least 1, or left out for no limit",
                    }))
                }
                cap => cap,
            },
            failure_threshold: request.failure_threshold.parse::<FailureThreshold>()?,
            on_failure: request.on_failure.parse::<FailureAction>()?,
            grace_seconds: request.grace_seconds,
        };

        let store = self.deps.store.clone();
        let lookup = selector.clone();
        let (published, agents) =
            blocking(move || Ok((store.published_bundle(&lookup)?, store.agents()?))).await?;
        let described = match &selector {
            BundleSelector::Id(id) => id.clone(),
            BundleSelector::StreamSequence { stream, sequence } => format!("{stream}:{sequence}"),
        };
        let published = published.ok_or(RolloutError::BundleNotFound(described))?;
        if let Some(existing) = self.rollouts.values().find(|rollout| {
            rollout.status.is_active() && rollout.bundle.bundle_hash == published.bundle.bundle_hash
        }) {
            return Err(RolloutError::AlreadyRunning {
                existing: existing.id,
                bundle_id: published.bundle.bundle_id.clone(),
            });
        }
        let selector = selector_of(&published.bundle, &published.file)?;
        let targets: Vec<Target> = agents
            .iter()
            .filter(|agent| {
                agent.has_reported && targets_agent(&selector, &agent.tier, &agent.os_name)
            })
            .map(|agent| Target {
                agent_id: agent.agent_id.clone(),
                tier: agent.tier.clone(),
            })
            .collect();

        let id = self.rollouts.keys().next_back().map_or(1, |last| last + 1);
        let requested_by = request
            .requested_by
            .map(|name| name.chars().take(200).collect())
            .unwrap_or_else(|| "unknown".into());
        let now = self.deps.clock.now_unix_s();
        let rollout = Rollout::plan(
            id,
            published.bundle.clone(),
            spec,
            targets,
            requested_by,
            now,
        )
        .ok_or_else(|| RolloutError::NoTargets(published.bundle.bundle_id.clone()))?;
        self.files
            .insert(published.bundle.bundle_hash.clone(), published.file);
        self.save_rollout(&rollout).await?;
        info!(
            rollout.id = id,
            bundle.id = %rollout.bundle.bundle_id,
            targets = rollout.agents.len(),
            waves = rollout.wave_count(),
            created_by = %rollout.created_by,
            "rollout started"
        );
        self.rollouts.insert(id, rollout.clone());
        Ok(rollout)
    }

    /// Runs one pass: rollouts, resends after reconnects, acknowledgements. The audit entries
    /// of the orders it sent are recorded together at the end, also when the pass fails.
    async fn pass(&mut self) -> Result<(), RolloutError> {
        let orders = self.deps.orders.clone();
        let mut batch = orders.batch();
        let result = self.pass_sending(&mut batch).await;
        batch.finish().await;
        result
    }

    async fn pass_sending(&mut self, batch: &mut OrderBatch<'_>) -> Result<(), RolloutError> {
        self.came_online.extend(self.deps.events.take_came_online());
        let store = self.deps.store.clone();
        let (root_version, schedule_versions) = blocking(move || {
            Ok((
                store.published_trust_root_version()?,
                store.tier_schedule_versions()?,
            ))
        })
        .await?;
        let wanted = self.agents_to_read(root_version, &schedule_versions);
        let store = self.deps.store.clone();
        let full_read = wanted.is_none();
        let agents = blocking(move || {
            Ok(match wanted {
                None => store.agents()?,
                Some(ids) if ids.is_empty() => Vec::new(),
                Some(ids) => store.agents_by_id(&ids)?,
            })
        })
        .await?;
        let agents: BTreeMap<String, AgentView> = agents
            .into_iter()
            .map(|agent| (agent.agent_id.clone(), agent))
            .collect();
        let now = self.deps.clock.now_unix_s();
        for agent in agents.values().filter(|agent| agent.has_reported) {
            let Some(version) = schedule_versions.get(&agent.tier) else {
                continue;
            };
            let desired = self.delivery.entry(agent.agent_id.clone()).or_default();
            if desired.set_schedule_version(*version) {
                self.dirty.insert(agent.agent_id.clone());
            }
        }
        if full_read {
            self.last_full_read = Some(FullRead {
                at: tokio::time::Instant::now(),
                root_version,
                schedule_versions,
            });
        }

        if let Some(version) = root_version {
            for agent in agents.values().filter(|agent| agent.has_reported) {
                let desired = self.delivery.entry(agent.agent_id.clone()).or_default();
                if desired.set_trust_root_version(version) {
                    self.dirty.insert(agent.agent_id.clone());
                }
            }
        }

        let mut sent: BTreeSet<(String, String)> = BTreeSet::new();
        let ids: Vec<u64> = self.rollouts.keys().copied().collect();
        for id in ids {
            self.advance_rollout(id, &agents, now, &mut sent, batch)
                .await?;
        }

        let came_online: Vec<AgentId> = std::mem::take(&mut self.came_online).into_iter().collect();
        for (index, agent_id) in came_online.iter().enumerate() {
            let Some(agent) = agents.get(agent_id.as_str()) else {
                continue;
            };
            if let Err(error) = self.send_missing(agent_id, agent, &sent, batch).await {
                self.came_online
                    .extend(came_online[index..].iter().cloned());
                return Err(error);
            }
        }

        for agent in agents.values() {
            let Some(desired) = self.delivery.get_mut(&agent.agent_id) else {
                continue;
            };
            let reported = Reported {
                trust_root_version: agent.trust_root_version,
                schedule_version: agent.schedule_version,
                bundles: &agent.bundles,
            };
            if desired.acknowledge(reported) {
                self.dirty.insert(agent.agent_id.clone());
            }
        }
        self.save_delivery().await
    }

    /// Returns the agents this pass must read, or `None` to read the whole table.
    fn agents_to_read(
        &self,
        root_version: Option<u64>,
        schedule_versions: &BTreeMap<String, u64>,
    ) -> Option<Vec<String>> {
        let due = match &self.last_full_read {
            None => true,
            Some(last) => {
                last.at.elapsed() >= FULL_READ_INTERVAL
                    || last.root_version != root_version
                    || last.schedule_versions != *schedule_versions
            }
        };
        if due {
            return None;
        }
        let mut wanted: BTreeSet<&str> = self.came_online.iter().map(AgentId::as_str).collect();
        for rollout in self.rollouts.values() {
            // Agents about to be sent the bundle are read too, for the record of it they hold
            // before this rollout (see `earlier_record_unix_s`).
            let active = rollout.status.is_active();
            wanted.extend(
                rollout
                    .agents
                    .iter()
                    .filter(|agent| {
                        agent.state.awaits_outcome()
                            || (active && agent.state == AgentState::Pending)
                    })
                    .map(|agent| agent.agent_id.as_str()),
            );
        }
        wanted.extend(
            self.delivery
                .iter()
                .filter(|(_, desired)| desired.acknowledged_version < desired.version)
                .map(|(agent_id, _)| agent_id.as_str()),
        );
        if wanted.len() > MAX_AGENT_LOOKUPS {
            return None;
        }
        Some(wanted.into_iter().map(str::to_owned).collect())
    }

    async fn advance_rollout(
        &mut self,
        id: u64,
        agents: &BTreeMap<String, AgentView>,
        now: i64,
        sent: &mut BTreeSet<(String, String)>,
        batch: &mut OrderBatch<'_>,
    ) -> Result<(), RolloutError> {
        let Some(rollout) = self.rollouts.get_mut(&id) else {
            return Ok(());
        };
        let open = rollout
            .agents
            .iter()
            .any(|agent| agent.state.awaits_outcome());
        if !rollout.status.is_active() && !open {
            return Ok(());
        }
        let hash = rollout.bundle.bundle_hash.clone();
        let newest_record = |agent_id: &str| {
            agents.get(agent_id).and_then(|agent| {
                agent
                    .bundles
                    .iter()
                    .rev()
                    .find(|record| record.bundle_hash == hash)
                    .cloned()
            })
        };
        // A record the agent already held when this rollout sent the bundle belongs to an
        // earlier run (a failure before its cause was fixed, say), not to this rollout.
        let earlier: BTreeMap<String, Option<i64>> = rollout
            .agents
            .iter()
            .map(|agent| (agent.agent_id.clone(), agent.earlier_record_unix_s))
            .collect();
        let outcome_of = |agent_id: &str| -> Option<BundleOutcome> {
            let record = newest_record(agent_id)?;
            let earlier = earlier.get(agent_id).copied().flatten();
            (earlier != Some(record.decided_at_unix_s)).then_some(record.outcome)
        };
        let before = Before {
            status: rollout.status.clone(),
            wave: rollout.current_wave,
            timed_out: timed_out_agents(rollout),
        };
        let advance: Advance = rollout.advance(now, &outcome_of, self.deps.windows.as_ref());
        if advance.is_empty() {
            return Ok(());
        }
        for order in &advance.orders {
            if let RolloutOrder::SendBundle { agent_id } = order {
                let held = newest_record(agent_id).map(|record| record.decided_at_unix_s);
                if let Some(target) = rollout
                    .agents
                    .iter_mut()
                    .find(|target| &target.agent_id == agent_id)
                {
                    target.earlier_record_unix_s = held;
                }
            }
        }
        for event in &advance.events {
            info!(rollout.id = id, bundle.id = %rollout.bundle.bundle_id, "{event}");
        }
        let snapshot = rollout.clone();
        self.save_rollout(&snapshot).await?;
        let decisions = decision_entries(&before, &snapshot);
        self.deps.audit.record_all(decisions).await;

        for order in advance.orders {
            match order {
                RolloutOrder::SendBundle { agent_id } => {
                    if self
                        .delivery
                        .entry(agent_id.clone())
                        .or_default()
                        .add_bundle(&hash)
                    {
                        self.dirty.insert(agent_id.clone());
                    }
                    self.send_bundle(&agent_id, &hash, Cause::Rollout(id), batch)
                        .await?;
                    sent.insert((agent_id, hash.clone()));
                }
                RolloutOrder::SendRollback { agent_id } => {
                    if self
                        .delivery
                        .entry(agent_id.clone())
                        .or_default()
                        .add_rollback(&hash)
                    {
                        self.dirty.insert(agent_id.clone());
                    }
                    let body = OrderBody::Rollback {
                        bundle_hash: hash.clone(),
                    };
                    send_order(batch, &agent_id, body, Cause::Rollout(id), Some(&hash)).await;
                    sent.insert((agent_id, hash.clone()));
                }
            }
        }
        Ok(())
    }

    /// Sends an agent that came online what its reports do not show of its desired state.
    async fn send_missing(
        &mut self,
        agent_id: &AgentId,
        agent: &AgentView,
        sent: &BTreeSet<(String, String)>,
        batch: &mut OrderBatch<'_>,
    ) -> Result<(), RolloutError> {
        let Some(desired) = self.delivery.get(agent_id.as_str()) else {
            return Ok(());
        };
        let missing = desired.missing(Reported {
            trust_root_version: agent.trust_root_version,
            schedule_version: agent.schedule_version,
            bundles: &agent.bundles,
        });
        if missing.is_empty() {
            return Ok(());
        }
        info!(
            agent.id = %agent_id,
            bundles = missing.bundles.len(),
            rollbacks = missing.rollbacks.len(),
            trust_root_above = ?missing.trust_root_above,
            schedule = missing.schedule,
            "sending again what an agent that came online lacks"
        );
        let unsent = |hash: &String| !sent.contains(&(agent_id.to_string(), hash.clone()));
        for hash in missing.bundles.iter().filter(|hash| unsent(hash)) {
            self.send_bundle(agent_id.as_str(), hash, Cause::Resend, batch)
                .await?;
        }
        for hash in missing.rollbacks.iter().filter(|hash| unsent(hash)) {
            let body = OrderBody::Rollback {
                bundle_hash: hash.clone(),
            };
            send_order(batch, agent_id.as_str(), body, Cause::Resend, Some(hash)).await;
        }
        if let Some(held) = missing.trust_root_above {
            let store = self.deps.store.clone();
            let roots = blocking(move || Ok(store.trust_roots_above(held)?)).await?;
            for (_, file) in roots {
                let body = OrderBody::TrustRoot { file };
                send_order(batch, agent_id.as_str(), body, Cause::Resend, None).await;
            }
        }
        if missing.schedule {
            let store = self.deps.store.clone();
            let tier = agent.tier.clone();
            let files = blocking(move || Ok(store.tier_schedule_files(&tier)?)).await?;
            for file in files {
                let body = OrderBody::Schedule { file };
                send_order(batch, agent_id.as_str(), body, Cause::Resend, None).await;
            }
        }
        Ok(())
    }

    async fn send_bundle(
        &mut self,
        agent_id: &str,
        hash: &str,
        cause: Cause,
        batch: &mut OrderBatch<'_>,
    ) -> Result<(), RolloutError> {
        if !self.files.contains_key(hash) {
            let store = self.deps.store.clone();
            let lookup = hash.to_owned();
            match blocking(move || Ok(store.bundle_file(&lookup)?)).await? {
                Some(file) => {
                    self.files.insert(hash.to_owned(), file);
                }
                None => {
                    warn!(
                        agent.id = agent_id,
                        bundle.hash = hash,
                        "no published bundle has this hash; not sent"
                    );
                    return Ok(());
                }
            }
        }
        let file = self.files[hash].clone();
        send_order(
            batch,
            agent_id,
            OrderBody::Bundle { file },
            cause,
            Some(hash),
        )
        .await;
        Ok(())
    }

    async fn save_delivery(&mut self) -> Result<(), RolloutError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let changed: Vec<(String, DesiredState)> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|agent_id| {
                let state = self.delivery.get(&agent_id)?.clone();
                Some((agent_id, state))
            })
            .collect();
        let store = self.deps.store.clone();
        let now = self.deps.clock.now_unix_s();
        blocking(move || Ok(store.save_delivery_states(&changed, now)?)).await
    }
}

/// Why the driver sends an order, for its audit entry.
#[derive(Debug, Clone, Copy)]
enum Cause {
    /// A step of this rollout.
    Rollout(u64),
    /// The agent came online without this part of its desired state.
    Resend,
}

/// Sends one order through `batch`, which keeps its `order.sent` audit entry with the cause and
/// the bundle hash of a bundle or rollback order.
async fn send_order(
    batch: &mut OrderBatch<'_>,
    agent_id: &str,
    body: OrderBody,
    cause: Cause,
    bundle_hash: Option<&str>,
) {
    let Ok(agent) = AgentId::parse(agent_id) else {
        warn!(agent.id = agent_id, "not an agent id; order not sent");
        return;
    };
    let mut detail = serde_json::Map::new();
    match cause {
        Cause::Rollout(id) => {
            detail.insert("rollout".into(), id.into());
        }
        Cause::Resend => {
            detail.insert("resend".into(), true.into());
        }
    }
    if let Some(hash) = bundle_hash {
        detail.insert("bundle_hash".into(), hash.into());
    }
    let order = Order {
        order_id: OrderId(fastrand::u128(..).to_le_bytes()),
        body,
    };
    if !batch.send(&agent, order, detail).await {
        debug!(
            agent.id = agent_id,
            "ingest is not connected; the order goes out again when the agent comes online"
        );
    }
}

/// A rollout's status, wave and timed-out agents before an advance.
struct Before {
    status: super::machine::RolloutStatus,
    wave: usize,
    timed_out: BTreeSet<String>,
}

/// Returns the agents of `rollout` that count as failed because they missed their deadline.
fn timed_out_agents(rollout: &Rollout) -> BTreeSet<String> {
    rollout
        .agents
        .iter()
        .filter(|agent| {
            matches!(
                agent.state,
                super::machine::AgentState::Failed {
                    timed_out: true,
                    ..
                }
            )
        })
        .map(|agent| agent.agent_id.clone())
        .collect()
}

/// Builds the audit entries of the driver's own decisions in one advance: each agent it counted
/// as failed for a missed deadline, each wave it started, and the change of status (paused,
/// reverting, rolled back or completed) with its reason.
fn decision_entries(before: &Before, rollout: &Rollout) -> Vec<AuditEntry> {
    use super::machine::RolloutStatus;

    let subject = super::http::rollout_subject(rollout.id);
    let mut entries = Vec::new();
    for agent_id in timed_out_agents(rollout).difference(&before.timed_out) {
        let deadline = rollout
            .agents
            .iter()
            .find(|agent| &agent.agent_id == agent_id)
            .and_then(|agent| agent.deadline_unix_s);
        entries.push(AuditEntry::new(
            SERVER_ACTOR,
            "rollout.agent_timed_out",
            subject.clone(),
            serde_json::json!({
                "bundle_id": rollout.bundle.bundle_id,
                "agent_id": agent_id,
                "deadline_unix_s": deadline,
            }),
        ));
    }
    for wave in before.wave + 1..=rollout.current_wave {
        entries.push(AuditEntry::new(
            SERVER_ACTOR,
            "rollout.wave_started",
            subject.clone(),
            serde_json::json!({
                "bundle_id": rollout.bundle.bundle_id,
                "wave": wave + 1,
                "wave_count": rollout.wave_count(),
            }),
        ));
    }
    if before.status != rollout.status {
        let (action, reason) = match &rollout.status {
            RolloutStatus::Paused { reason } => ("rollout.paused", Some(reason)),
            RolloutStatus::Reverting { reason } => ("rollout.reverting", Some(reason)),
            RolloutStatus::RolledBack { reason } => ("rollout.reverted", Some(reason)),
            RolloutStatus::Stopped { reason } => ("rollout.stopped", Some(reason)),
            RolloutStatus::Completed => ("rollout.completed", None),
            RolloutStatus::Running => ("rollout.resumed", None),
        };
        entries.push(AuditEntry::new(
            SERVER_ACTOR,
            action,
            subject,
            serde_json::json!({
                "bundle_id": rollout.bundle.bundle_id,
                "reason": reason,
                "counts": super::machine::StateCounts::of(&rollout.agents),
            }),
        ));
    }
    entries
}

/// Reads the target selector of a stored bundle, in the form [`targets_agent`] takes.
fn selector_of(bundle: &BundleRef, file: &[u8]) -> Result<CheckedBundle, RolloutError> {
    let inspection = inspect_bundle(file).map_err(|error| RolloutError::StoredBundle {
        bundle_id: bundle.bundle_id.clone(),
        detail: error.to_string(),
    })?;
    let target = inspection.manifest.target;
    Ok(CheckedBundle {
        bundle_id: bundle.bundle_id.clone(),
        stream: bundle.stream.clone(),
        sequence: bundle.sequence,
        bundle_hash: bundle.bundle_hash.clone(),
        signers: Vec::new(),
        target_tiers: target.tiers,
        target_os: target.os,
        target_tags: target.tags,
        republished: false,
    })
}
