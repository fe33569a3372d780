//! The agent daemon: collects the inventory on a timer, turns it into reports in the outbox, runs
//! the MQTT session, and acts on orders: server acknowledgements, resync requests, bundles and
//! trust root versions.

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
use crate::identity::{Identity, IdentityError};
use crate::outbox::{Outbox, OutboxError};
use crate::reporter::Reporter;
use crate::session::{self, SessionLinks, SessionSettings, StatusKind};
use crate::trust::{TrustError, TrustStore};

/// How many recent order ids the agent remembers to drop duplicates.
const REMEMBERED_ORDERS: usize = 256;

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
                match trust.retry_deferred(&config.tier, now) {
                    Ok(records) if !records.is_empty() => tracing::info!(count = records.len(), "verified kept bundles again"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "cannot verify kept bundles again"),
                }
                inventory.tier = config.tier.clone();
                inventory.trust_root_version = trust.root_version();
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
                handle_order(order, &outbox, &mut trust, &config.tier, clock.as_ref(), &mut full_requested, &mut ticker);
            }
            _ = &mut shutdown => break,
        }
    }

    tracing::info!("agent stopping");
    let _ = shutdown_tx.send(true);
    let _ = session_task.await;
    Ok(())
}

fn handle_order(
    order: Order,
    outbox: &Mutex<Outbox>,
    trust: &mut TrustStore,
    tier: &str,
    clock: &dyn Clock,
    full_requested: &mut bool,
    ticker: &mut tokio::time::Interval,
) {
    match order.body {
        OrderBody::ReportAck { boot_id, seqs } => {
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
            match trust.receive_bundle(&file, tier, clock.now_unix_s()) {
                Ok(record) => {
                    tracing::debug!(bundle.id = %record.bundle_id, outcome = record.outcome.as_str(), "bundle decided")
                }
                Err(error) => {
                    tracing::error!(%error, "cannot record a bundle decision; the server will see none")
                }
            }
            // The decision travels in the next report, so send it now.
            ticker.reset_immediately();
        }
        OrderBody::Rollback { bundle_hash } => {
            // This agent records bundle decisions but does not apply steps yet, so it has
            // nothing to revert.
            tracing::warn!(order_id = %order.order_id, %bundle_hash, "ignored a rollback order: this agent does not apply bundles yet");
        }
        OrderBody::TrustRoot { file } => {
            match trust.receive_root(&file) {
                Ok(Ok(_)) => {}
                Ok(Err(reason)) => tracing::warn!(%reason, "kept the pinned trust root"),
                Err(error) => tracing::error!(%error, "cannot store the new trust root"),
            }
            ticker.reset_immediately();
        }
        OrderBody::Schedule { .. } => {
            // Window enforcement is not part of this agent build, so a schedule changes nothing.
            tracing::warn!(order_id = %order.order_id, "ignored a window schedule: this agent does not enforce windows");
        }
    }
}

/// The operating system's word on the clock, unless the configuration says not to ask.
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
