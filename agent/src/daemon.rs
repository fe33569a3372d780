//! The agent daemon: collects the inventory on a timer, turns it into reports in the outbox, runs
//! the MQTT session, and acts on orders: server acknowledgements, resync requests, bundles,
//! rollbacks and trust root versions.
//!
//! An accepted bundle waits in the [`Gate`] until a signed maintenance window allows it to
//! start, the clock being trusted; then it runs through [`Work`] handed to the executor on a
//! blocking thread. The gate is looked at every second by the wall clock, so a window opens on
//! time whatever the report interval, and a clock that jumps causes one look, not a burst. At
//! start-up the executor first finishes or reverts what the journal shows interrupted, and
//! bundles that were accepted but never started go back into the queue. Bundle outcomes travel in the bundle records of the
//! reports: the outbox keeps them until the server acknowledges, and a record is a state, so a
//! repeated one changes nothing on the server. Each time a step begins, a small delta report with
//! the bundle's `Running` state goes out, so the server shows the step under way.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;
use tidegate_protocol::topics::{topic, TopicKind};
use tidegate_protocol::{
    encode, AgentId, BootId, Message, Order, OrderBody, OrderId, Status, StatusState,
};
use tokio::sync::{mpsc, watch, Notify};

use crate::clock::{Clock, OsClockSync};
use crate::collect::Collector;
use crate::config::Config;
use crate::executor::{
    crash_hook_from_env, AcceptedBundle, Executor, ExecutorError, ExecutorSettings, RealSteps,
    RunResult, SystemRunner,
};
use crate::gate::{Gate, GateError};
use crate::identity::{Identity, IdentityError};
use crate::outbox::{Outbox, OutboxError};
use crate::reporter::Reporter;
use crate::session::{self, SessionLinks, SessionSettings, StatusKind};
use crate::trust::{TrustError, TrustStore};

/// How many recent order ids the agent remembers to drop duplicates.
const REMEMBERED_ORDERS: usize = 256;

/// How far the agent's clock may lag the server's before the server's time makes it untrusted.
const SERVER_TIME_TOLERANCE_S: i64 = 300;

/// How often the agent looks whether a waiting bundle may start.
const GATE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("root_dir {path} is not a directory; set root_dir to \"/\" for this host")]
    RootDir { path: PathBuf },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("cannot draw a random boot id: the system random source failed")]
    Random,
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    crate::fsutil::create_private_dir(&config.state_dir).map_err(|source| {
        DaemonError::StateDir {
            path: config.state_dir.clone(),
            source,
        }
    })?;
    if !config.root_dir.is_dir() {
        return Err(DaemonError::RootDir {
            path: config.root_dir.clone(),
        });
    }
    let identity = Identity::load_or_create(&config.state_dir)?;
    let agent_id = identity.agent_id.clone();
    let mut boot = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut boot)
        .map_err(|_| DaemonError::Random)?;
    let boot_id = BootId(boot);
    let enrolment_root = (!config.trust_root_file.as_os_str().is_empty())
        .then_some(config.trust_root_file.as_path());
    let mut trust = TrustStore::open(
        &config.state_dir,
        enrolment_root,
        crate::trust::EARLIEST_TRUSTED_UNIX_S,
    )?;
    let mut executor = Executor::open(
        &config.state_dir,
        ExecutorSettings {
            root: config.root_dir.clone(),
            runner: Arc::new(SystemRunner),
            driver: Arc::new(RealSteps),
            clock: clock.clone(),
            crash_hook: crash_hook_from_env(),
        },
    )?;
    for result in executor.recover() {
        record_result(&mut trust, &result, clock.now_unix_s());
    }
    let mut gate = Gate::open(
        &config.state_dir,
        &config.tier,
        config.site(),
        config.windows.require_schedule,
    )?;
    for file in accepted_never_started(&trust, &executor) {
        gate.enqueue(&file)?;
    }
    let mut executor = Some(executor);
    let outbox = Arc::new(Mutex::new(Outbox::open(
        &config.state_dir.join("outbox"),
        config.outbox.max_messages,
    )?));
    tracing::info!(agent_id = %agent_id, boot_id = %boot_id, root = %config.root_dir.display(), broker = %config.mqtt.broker_url, "agent starting");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (orders_tx, mut orders_rx) = mpsc::channel::<Order>(64);
    let outbox_ready = Arc::new(Notify::new());

    let broker = config.broker_address();
    let settings = SessionSettings {
        client_id: format!("tidegate-agent-{agent_id}"),
        host: broker.host,
        port: broker.port,
        keep_alive: Duration::from_secs(config.mqtt.keep_alive_seconds),
        max_incoming_packet_bytes: config.mqtt.max_incoming_packet_size_bytes,
        max_outgoing_packet_bytes: config.mqtt.max_packet_size_bytes,
        connect_timeout: Duration::from_secs(config.mqtt.connect_timeout_seconds),
        reconnect_initial_delay: Duration::from_secs_f64(
            config.mqtt.reconnect_initial_delay_seconds,
        ),
        reconnect_max_delay: Duration::from_secs_f64(config.mqtt.reconnect_max_delay_seconds),
        stable_connection: Duration::from_secs(config.mqtt.stable_connection_seconds),
        ack_timeout: Duration::from_secs_f64(config.reports.ack_timeout_seconds),
        status_topic: topic(&agent_id, TopicKind::Status),
        order_topic: topic(&agent_id, TopicKind::Order),
        will_payload: status_payload(
            &agent_id,
            boot_id,
            StatusState::Offline,
            false,
            clock.now_unix_s(),
        ),
    };
    let status_clock = clock.clone();
    let status_agent = agent_id.clone();
    let status_builder: session::StatusPayload = Box::new(move |kind, session_present| {
        let state = match kind {
            StatusKind::Online => StatusState::Online,
            StatusKind::Offline => StatusState::Offline,
        };
        status_payload(
            &status_agent,
            boot_id,
            state,
            session_present,
            status_clock.now_unix_s(),
        )
    });
    let links = SessionLinks {
        outbox: outbox.clone(),
        outbox_ready: outbox_ready.clone(),
        orders: orders_tx,
        shutdown: shutdown_rx,
    };
    let session_task = tokio::spawn(session::run(settings, status_builder, links));

    let mut reporter = Reporter::new(agent_id.clone(), boot_id);
    let mut collector = Some(Collector::new(config.root_dir.clone()));
    let mut recent_orders: VecDeque<OrderId> = VecDeque::with_capacity(REMEMBERED_ORDERS);
    let full_interval = Duration::from_secs(config.reports.full_report_interval_seconds.max(1));
    let mut last_full: Option<Instant> = None;
    let mut full_requested = true;
    let mut reports_made: u64 = 0;
    let mut ticker = tokio::time::interval(config.report_interval());
    // After a stall (a suspended VM, a clock jump), one catch-up report, never a burst.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut gate_ticker = tokio::time::interval(GATE_INTERVAL);
    gate_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if config.reports.max_reports > 0 && reports_made >= config.reports.max_reports {
                    continue;
                }
                let full = full_requested || last_full.is_none_or(|at| at.elapsed() >= full_interval);
                let Some(mut taken) = collector.take() else { continue };
                let (returned, inventory) = match tokio::task::spawn_blocking(move || {
                    let inventory = taken.collect();
                    (taken, inventory)
                }).await {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::error!(%error, "inventory collection failed; recreating the collector");
                        collector = Some(Collector::new(config.root_dir.clone()));
                        continue;
                    }
                };
                collector = Some(returned);
                let mut inventory = inventory;
                let now = clock.now_unix_s();
                trust.set_os_sync(os_sync(&config, clock.as_ref()));
                let retried = {
                    let applied = |hash: &tidegate_protocol::trust::BundleHash| {
                        executor.as_ref().is_some_and(|executor| executor.is_applied(hash))
                    };
                    trust.retry_deferred(&config.tier, now, &applied)
                };
                match retried {
                    Ok(records) => {
                        if !records.is_empty() {
                            tracing::info!(count = records.len(), "verified kept bundles again");
                        }
                        for (record, file) in records {
                            if record.outcome == tidegate_protocol::BundleOutcome::Accepted {
                                if let Err(error) = gate.enqueue(&file) {
                                    tracing::error!(%error, bundle.id = %record.bundle_id, "cannot queue an accepted bundle");
                                }
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot verify kept bundles again"),
                }
                inventory.tier = config.tier.clone();
                inventory.trust_root_version = trust.root_version();
                inventory.schedule_version = gate.governing_schedule_version();
                inventory.bundles = trust.records().to_vec();
                let mut outbox = outbox.lock().expect("outbox lock");
                let report = reporter.next_report(inventory, full, clock.now_unix_s(), outbox.dropped());
                match reporter.to_outbox_messages(&report, config.mqtt.max_packet_size_bytes) {
                    Ok(messages) => {
                        let parts = messages.len();
                        let mut queued = true;
                        for message in &messages {
                            if let Err(error) = outbox.push(message) {
                                tracing::error!(%error, seq = report.seq, "cannot queue report: it is lost");
                                queued = false;
                                break;
                            }
                        }
                        if queued {
                            reports_made += 1;
                            tracing::debug!(seq = report.seq, kind = report.body.kind(), parts, "report queued");
                            if full {
                                full_requested = false;
                                last_full = Some(Instant::now());
                            }
                        } else {
                            full_requested = true;
                        }
                        outbox_ready.notify_one();
                    }
                    Err(error) => {
                        tracing::error!(%error, seq = report.seq, "cannot encode report: it is lost");
                        full_requested = true;
                    }
                }
            }
            Some(order) = orders_rx.recv() => {
                if recent_orders.contains(&order.order_id) {
                    tracing::debug!(order_id = %order.order_id, "ignoring a duplicate order");
                    continue;
                }
                if recent_orders.len() == REMEMBERED_ORDERS {
                    recent_orders.pop_front();
                }
                recent_orders.push_back(order.order_id);
                trust.set_os_sync(os_sync(&config, clock.as_ref()));
                let applied = |hash: &tidegate_protocol::trust::BundleHash| {
                    executor.as_ref().is_some_and(|executor| executor.is_applied(hash))
                };
                let work = handle_order(order, &outbox, &mut trust, &mut gate, &config.tier, clock.as_ref(), &applied, &mut full_requested, &mut ticker);
                if let Some(work) = work {
                    let result = {
                        let mut progress = |state: RunResult| report_progress(&state, &mut trust, &mut reporter, &outbox, &outbox_ready, config.mqtt.max_packet_size_bytes, clock.now_unix_s());
                        execute(&mut executor, work, &mut progress).await
                    };
                    if let Some(result) = result {
                        record_result(&mut trust, &result, clock.now_unix_s());
                    }
                    // The outcome, and what the bundle changed, travel in the next report.
                    ticker.reset_immediately();
                }
            }
            _ = gate_ticker.tick() => {
                trust.set_os_sync(os_sync(&config, clock.as_ref()));
                let poll = match gate.poll(&mut trust, clock.now_unix_s()) {
                    Ok(poll) => poll,
                    Err(error) => {
                        tracing::warn!(%error, "cannot look at the queue of waiting bundles");
                        continue;
                    }
                };
                if poll.records_changed {
                    ticker.reset_immediately();
                }
                let Some(bundle) = poll.start else { continue };
                let work = Work::Run {
                    bundle: Box::new(bundle),
                    root_allows_commands: trust.allows_commands(&config.tier),
                };
                let result = {
                    let mut progress = |state: RunResult| report_progress(&state, &mut trust, &mut reporter, &outbox, &outbox_ready, config.mqtt.max_packet_size_bytes, clock.now_unix_s());
                    execute(&mut executor, work, &mut progress).await
                };
                if let Some(result) = result {
                    record_result(&mut trust, &result, clock.now_unix_s());
                }
                // The outcome, and what the bundle changed, travel in the next report.
                ticker.reset_immediately();
            }
            _ = &mut shutdown => break,
        }
    }

    tracing::info!("agent stopping");
    let _ = shutdown_tx.send(true);
    let _ = session_task.await;
    Ok(())
}

/// Work for the executor: a bundle the gate let through, or a rollback order.
pub enum Work {
    Run {
        bundle: Box<AcceptedBundle>,
        root_allows_commands: bool,
    },
    Rollback {
        bundle_hash: tidegate_protocol::trust::BundleHash,
    },
}

/// Runs `work` on a blocking thread, because steps call dpkg and wait on files, and returns the
/// result to record. The executor is taken out of `slot` meanwhile and put back after.
/// `on_progress` receives the bundle's state each time a step begins.
pub async fn execute(
    slot: &mut Option<Executor>,
    work: Work,
    on_progress: &mut dyn FnMut(RunResult),
) -> Option<RunResult> {
    let mut executor = slot.take()?;
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    executor.set_progress(Some(Arc::new(move |state| {
        let _ = progress_tx.send(state);
    })));
    let mut task = tokio::task::spawn_blocking(move || {
        let result = match work {
            Work::Run {
                bundle,
                root_allows_commands,
            } => Some(executor.run(&bundle, root_allows_commands)),
            Work::Rollback { bundle_hash } => match executor.rollback(&bundle_hash) {
                Ok(result) => Some(result),
                Err(error) => {
                    tracing::warn!(%error, "rollback order not carried out");
                    None
                }
            },
        };
        executor.set_progress(None);
        (executor, result)
    });
    let joined = loop {
        tokio::select! {
            joined = &mut task => break joined,
            Some(state) = progress_rx.recv() => on_progress(state),
        }
    };
    match joined {
        Ok((executor, result)) => {
            *slot = Some(executor);
            result
        }
        Err(error) => {
            // A panic in a step leaves the journal as a crash would; the next start recovers it.
            tracing::error!(%error, "the executor stopped unexpectedly; bundles wait for a restart");
            None
        }
    }
}

/// Records a running bundle's state and queues a delta report with it, so the server shows which
/// step is under way. Before the first report there is no base for a delta, and nothing is sent.
fn report_progress(
    state: &RunResult,
    trust: &mut TrustStore,
    reporter: &mut Reporter,
    outbox: &Mutex<Outbox>,
    outbox_ready: &Notify,
    max_packet_bytes: usize,
    now_unix_s: i64,
) {
    record_result(trust, state, now_unix_s);
    let Some(mut inventory) = reporter.last_inventory().cloned() else {
        return;
    };
    inventory.bundles = trust.records().to_vec();
    let mut outbox = outbox.lock().expect("outbox lock");
    let report = reporter.next_report(inventory, false, now_unix_s, outbox.dropped());
    match reporter.to_outbox_messages(&report, max_packet_bytes) {
        Ok(messages) => {
            for message in &messages {
                if let Err(error) = outbox.push(message) {
                    tracing::warn!(%error, seq = report.seq, "cannot queue a progress report");
                    return;
                }
            }
            outbox_ready.notify_one();
        }
        Err(error) => tracing::warn!(%error, seq = report.seq, "cannot encode a progress report"),
    }
}

fn record_result(trust: &mut TrustStore, result: &RunResult, now_unix_s: i64) {
    if let Err(error) = trust.update_record(
        &result.bundle_hash,
        &result.bundle_id,
        result.outcome.clone(),
        result.steps.clone(),
        now_unix_s,
    ) {
        tracing::error!(%error, bundle.id = %result.bundle_id, "cannot record a bundle outcome");
    }
}

/// Returns the bundles whose newest record is `Accepted` but which the journal never started:
/// the agent stopped between acceptance and the start of the run.
fn accepted_never_started(trust: &TrustStore, executor: &Executor) -> Vec<Vec<u8>> {
    let mut newest: Vec<&tidegate_protocol::BundleRecord> = Vec::new();
    for record in trust.records().iter().rev() {
        if !newest
            .iter()
            .any(|seen| seen.bundle_hash == record.bundle_hash)
        {
            newest.push(record);
        }
    }
    newest
        .into_iter()
        .rev()
        .filter(|record| record.outcome == tidegate_protocol::BundleOutcome::Accepted)
        .filter_map(|record| {
            let hash = tidegate_protocol::trust::BundleHash::parse(&record.bundle_hash).ok()?;
            let started_later = executor
                .journal()
                .run(&hash)
                .is_some_and(|run| run.started_at_unix_s >= record.decided_at_unix_s);
            if started_later {
                return None;
            }
            trust.accepted_file(&record.bundle_id)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn handle_order(
    order: Order,
    outbox: &Mutex<Outbox>,
    trust: &mut TrustStore,
    gate: &mut Gate,
    tier: &str,
    clock: &dyn Clock,
    is_applied: &dyn Fn(&tidegate_protocol::trust::BundleHash) -> bool,
    full_requested: &mut bool,
    ticker: &mut tokio::time::Interval,
) -> Option<Work> {
    match order.body {
        OrderBody::ReportAck {
            boot_id,
            seqs,
            server_time_unix_s,
        } => {
            // The server's clock, less a tolerance for ordinary skew, is a time this agent has
            // seen: a local clock set back further behind it is caught. A wrong server can
            // only delay changes this way, never start one.
            if let Err(error) = trust
                .observe_vouched_time(server_time_unix_s.saturating_sub(SERVER_TIME_TOLERANCE_S))
            {
                tracing::warn!(%error, "cannot persist the server's time as the latest time seen");
            }
            match outbox
                .lock()
                .expect("outbox lock")
                .acknowledge(boot_id, &seqs)
            {
                Ok(removed) => tracing::debug!(removed, "server acknowledged reports"),
                Err(error) => {
                    tracing::warn!(%error, "cannot remove acknowledged reports from the outbox")
                }
            }
        }
        OrderBody::Resync { reason } => {
            tracing::info!(order_id = %order.order_id, %reason, "server requested a full report");
            *full_requested = true;
            ticker.reset_immediately();
        }
        OrderBody::Bundle { file } => {
            // The decision travels in the next report, so send it now.
            ticker.reset_immediately();
            match trust.receive_bundle(&file, tier, clock.now_unix_s(), is_applied) {
                Ok(record) => {
                    tracing::debug!(bundle.id = %record.bundle_id, outcome = record.outcome.as_str(), "bundle decided");
                    if record.outcome == tidegate_protocol::BundleOutcome::Accepted {
                        if let Err(error) = gate.enqueue(&file) {
                            tracing::error!(%error, bundle.id = %record.bundle_id, "cannot queue an accepted bundle");
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot record a bundle decision; the server will see none")
                }
            }
        }
        OrderBody::Rollback { bundle_hash } => {
            match tidegate_protocol::trust::BundleHash::parse(&bundle_hash) {
                Ok(bundle_hash) => {
                    tracing::info!(order_id = %order.order_id, %bundle_hash, "server ordered a rollback");
                    return Some(Work::Rollback { bundle_hash });
                }
                Err(error) => {
                    tracing::warn!(%error, "ignoring a rollback order with an invalid bundle hash")
                }
            }
        }
        OrderBody::TrustRoot { file } => {
            match trust.receive_root(&file) {
                Ok(Ok(_)) => {}
                Ok(Err(reason)) => tracing::warn!(%reason, "kept the pinned trust root"),
                Err(error) => tracing::error!(%error, "cannot store the new trust root"),
            }
            ticker.reset_immediately();
        }
        OrderBody::Schedule { file } => {
            match gate.receive_schedule(&file, trust, clock.now_unix_s()) {
                Ok(decision) => {
                    tracing::info!(order_id = %order.order_id, ?decision, "window schedule decided")
                }
                Err(error) => tracing::error!(%error, "cannot store a window schedule"),
            }
            // The next report carries the schedule version the agent now keeps.
            ticker.reset_immediately();
        }
    }
    None
}

/// Returns the operating system's report on the clock, or `Unknown` when the configuration turns
/// the check off.
fn os_sync(config: &Config, clock: &dyn Clock) -> OsClockSync {
    if config.clock.require_os_synchronised {
        clock.os_sync()
    } else {
        OsClockSync::Unknown
    }
}

fn status_payload(
    agent_id: &AgentId,
    boot_id: BootId,
    state: StatusState,
    session_present: bool,
    at_unix_s: i64,
) -> Vec<u8> {
    let status = Status {
        agent_id: agent_id.clone(),
        boot_id,
        state,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        session_present,
        at_unix_s,
    };
    encode(&Message::Status(status)).expect("a status always encodes")
}
