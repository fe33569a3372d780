//! Ingest: the server's MQTT client, which moves agent reports and statuses from the broker into the
//! store and orders agents to resync when the store cannot apply their deltas.
//!
//! It owns one MQTT session (client id [`CLIENT_ID`], `clean_session = false`) with the embedded or
//! an external broker, a store thread that owns the [`Store`], and a task that sends
//! acknowledgements and orders. It subscribes at QoS 1 to the report, status and event topics of
//! every agent, after every CONNACK without a session. It publishes only on agents' order topics,
//! and never retains anything.
//!
//! The path of one publish:
//!
//! 1. The session task classifies it (`classify.rs`): topic, envelope, message kind, agent id, and
//!    reassembly of chunked reports (`chunks.rs`). What fails a check is dropped with a warning.
//! 2. It goes in arrival order through a bounded channel to the store thread (`writer.rs`), which
//!    stores up to 1000 messages per transaction.
//! 3. Only after the transaction committed does the acknowledgement task send its PUBACK, so a crash
//!    loses no acknowledged report or status (report parts are the exception, see below). The
//!    broker sends unacknowledged messages again to the persistent session. Dropped messages,
//!    report parts and events are acknowledged in the same order, because rumqttd disconnects a
//!    client that acknowledges out of order.
//! 4. After the commit, each agent whose reports were in the batch gets a `ReportAck` order naming
//!    them, so it can remove them from its outbox. For a delta the store could not apply, the agent
//!    also gets a resync order, at most once per agent per minute until a full report of it is
//!    stored.
//!
//! Orders are published at QoS 1 and never retained. An order that cannot be sent (ingest is
//! between connections) is dropped, because the agent sends unacknowledged reports again and the
//! next delta the store cannot apply triggers another resync order.
//!
//! Limits:
//!
//! - A report part is acknowledged to the broker once it is kept in memory. When the server stops
//!   before the report is complete, its parts are lost; the agent sends the report again because
//!   no `ReportAck` named it.
//! - The embedded broker keeps at most 100 QoS 1 messages in flight to ingest, so with it one
//!   transaction contains at most about 100 messages.
//! - A message the store rejects on its own while the rest of its batch is stored is dropped with
//!   an error and acknowledged, so that it cannot stop ingest (see `writer.rs`).
//! - A packet larger than `max_packet_bytes` from the broker ends the connection. Ingest then
//!   discards its broker session to get past it, losing the messages queued in the session until
//!   agents send them again. The embedded broker never forwards such a packet. With an external
//!   broker, set the broker's own size limit to at most this one.

mod backoff;
mod chunks;
mod classify;
mod clock;
mod connection;
mod writer;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::MqttOptions;
use tidegate_protocol::{AgentId, Order};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use backoff::Backoff;
pub use chunks::{ChunkAssembler, ChunkError, ChunkOutcome};
pub use classify::{Classified, Classifier};
pub use clock::{Clock, RandomSource, SystemClock, SystemRandom};
pub use writer::{MAX_BATCH, RESYNC_INTERVAL};

use crate::store::Store;

/// The client id of the server's MQTT session. Two servers with the same id take the session from
/// each other, so a second server needs another id (and then receives every message as well).
pub const CLIENT_ID: &str = "tidegate-server";

/// The port of an `mqtt://` URL without one.
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// Capacity of the channel to the store thread: enough for a full batch to wait while the
/// previous one commits.
const ITEM_CAPACITY: usize = 2 * MAX_BATCH;

/// The address of an MQTT broker, from an `mqtt://HOST[:PORT]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    #[error("invalid broker URL {url:?}: expected mqtt://HOST:PORT")]
    MissingScheme { url: String },
    #[error(
        "unsupported scheme {scheme:?} in broker URL {url:?}: only mqtt:// (MQTT over TCP, \
         without TLS) is supported"
    )]
    UnsupportedScheme { url: String, scheme: String },
    #[error("invalid broker URL {url:?}: the host is missing")]
    MissingHost { url: String },
    #[error("invalid port {port:?} in broker URL {url:?}: expected a number from 1 to 65535")]
    InvalidPort { url: String, port: String },
    #[error(
        "invalid broker URL {url:?}: user names, paths, queries and fragments are not supported"
    )]
    UnsupportedPart { url: String },
}

impl FromStr for BrokerUrl {
    type Err = BrokerUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let owned = || url.to_owned();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| BrokerUrlError::MissingScheme { url: owned() })?;
        if !scheme.eq_ignore_ascii_case("mqtt") {
            return Err(BrokerUrlError::UnsupportedScheme {
                url: owned(),
                scheme: scheme.to_owned(),
            });
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(BrokerUrlError::UnsupportedPart { url: owned() });
        }

        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            // An IPv6 address: [::1]:1883.
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| BrokerUrlError::MissingHost { url: owned() })?;
            let port =
                match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':').ok_or_else(|| {
                        BrokerUrlError::InvalidPort {
                            url: owned(),
                            port: after.to_owned(),
                        }
                    })?),
                };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(BrokerUrlError::MissingHost { url: owned() });
        }
        let port = match port {
            None => DEFAULT_MQTT_PORT,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => {
                    return Err(BrokerUrlError::InvalidPort {
                        url: owned(),
                        port: text.to_owned(),
                    })
                }
            },
        };
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "mqtt://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "mqtt://{}:{}", self.host, self.port)
        }
    }
}

/// Settings of the ingest client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    pub broker: BrokerUrl,
    pub client_id: String,
    /// The largest packet ingest accepts from the broker and sends to it, in bytes. Keep it at
    /// least as large as the broker's own limit.
    pub max_packet_bytes: usize,
    pub keep_alive: Duration,
}

impl IngestConfig {
    pub fn new(broker: BrokerUrl) -> Self {
        Self {
            broker,
            client_id: CLIENT_ID.to_owned(),
            max_packet_bytes: crate::broker::DEFAULT_MAX_PACKET_BYTES,
            keep_alive: Duration::from_secs(30),
        }
    }

    fn mqtt_options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(&self.client_id, &self.broker.host, self.broker.port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes)
            .set_keep_alive(self.keep_alive);
        options
    }
}

/// The clock and random source ingest uses.
#[derive(Clone)]
pub struct IngestDeps {
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn RandomSource>,
}

impl Default for IngestDeps {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock::new()),
            random: Arc::new(SystemRandom),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("failed to start the store thread: {0}")]
    SpawnWriter(std::io::Error),
    #[error("the store thread stopped unexpectedly")]
    WriterStopped,
    #[error("the store thread panicked")]
    WriterPanicked,
    #[error("the MQTT session task failed: {0}")]
    SessionTask(tokio::task::JoinError),
}

/// Running totals of ingest, for logs and tests.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub connections: AtomicU64,
    /// SUBACKs that granted every filter ingest asked for.
    pub subscriptions_granted: AtomicU64,
    /// Broker sessions discarded to skip a packet larger than the limit.
    pub sessions_discarded: AtomicU64,
    pub publishes_received: AtomicU64,
    pub reports_stored: AtomicU64,
    pub duplicate_reports: AtomicU64,
    pub reports_needing_resync: AtomicU64,
    pub statuses_recorded: AtomicU64,
    pub messages_dropped: AtomicU64,
    /// Store transactions that failed and were retried.
    pub store_failures: AtomicU64,
    pub resync_orders_sent: AtomicU64,
    pub report_acks_sent: AtomicU64,
    pub bundle_orders_sent: AtomicU64,
    pub trust_root_orders_sent: AtomicU64,
    pub rollback_orders_sent: AtomicU64,
    /// Orders not sent because ingest was not connected to the broker.
    pub orders_not_sent: AtomicU64,
    /// MQTT acknowledgements not sent because their connection had closed.
    pub acks_not_sent: AtomicU64,
}

impl IngestCounters {
    fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// A copy of the current values.
    pub fn snapshot(&self) -> IngestStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        IngestStats {
            connections: read(&self.connections),
            subscriptions_granted: read(&self.subscriptions_granted),
            sessions_discarded: read(&self.sessions_discarded),
            publishes_received: read(&self.publishes_received),
            reports_stored: read(&self.reports_stored),
            duplicate_reports: read(&self.duplicate_reports),
            reports_needing_resync: read(&self.reports_needing_resync),
            statuses_recorded: read(&self.statuses_recorded),
            messages_dropped: read(&self.messages_dropped),
            store_failures: read(&self.store_failures),
            resync_orders_sent: read(&self.resync_orders_sent),
            report_acks_sent: read(&self.report_acks_sent),
            orders_not_sent: read(&self.orders_not_sent),
            acks_not_sent: read(&self.acks_not_sent),
        }
    }
}

/// The values of [`IngestCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub connections: u64,
    pub subscriptions_granted: u64,
    pub sessions_discarded: u64,
    pub publishes_received: u64,
    pub reports_stored: u64,
    pub duplicate_reports: u64,
    pub reports_needing_resync: u64,
    pub statuses_recorded: u64,
    pub messages_dropped: u64,
    pub store_failures: u64,
    pub resync_orders_sent: u64,
    pub report_acks_sent: u64,
    pub orders_not_sent: u64,
    pub acks_not_sent: u64,
}

/// Running ingest. Call [`IngestHandle::shutdown`] to stop it; dropping the handle stops the
/// session without waiting for the store thread.
pub struct IngestHandle {
    orders: OrderSender,
    stop: watch::Sender<bool>,
    stopping: Arc<AtomicBool>,
    session: Option<JoinHandle<Result<(), IngestError>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    counters: Arc<IngestCounters>,
}

/// Starts ingest in the current tokio runtime: the store thread, the acknowledgement task and the
/// MQTT session, which connects in the background and reconnects until stopped.
pub fn start(
    config: IngestConfig,
    store: Store,
    deps: IngestDeps,
) -> Result<IngestHandle, IngestError> {
    let counters = Arc::new(IngestCounters::default());
    let stopping = Arc::new(AtomicBool::new(false));
    let (items_tx, items_rx) = mpsc::channel(ITEM_CAPACITY);
    // Unbounded, but its length is bounded by the messages the broker has in flight to ingest,
    // because nothing is acknowledged before it passed through here.
    let (committed_tx, committed_rx) = mpsc::unbounded_channel();
    let (current_client_tx, current_client_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);

    let writer = writer::Writer {
        store,
        items: items_rx,
        after_commit: committed_tx,
        clock: deps.clock.clone(),
        random: deps.random.clone(),
        counters: counters.clone(),
        stopping: stopping.clone(),
    };
    let writer = std::thread::Builder::new()
        .name("ingest-store".into())
        .spawn(move || writer.run())
        .map_err(IngestError::SpawnWriter)?;

    let orders = OrderSender {
        client: current_client_rx.clone(),
        counters: counters.clone(),
    };
    let acknowledger = tokio::spawn(connection::acknowledge(
        committed_rx,
        current_client_rx,
        counters.clone(),
    ));
    let session = connection::Session {
        options: config.mqtt_options(),
        items: items_tx,
        current_client: current_client_tx,
        stop: stop_rx,
        acknowledger,
        clock: deps.clock,
        random: deps.random,
        counters: counters.clone(),
    };
    let session = tokio::spawn(session.run());

    Ok(IngestHandle {
        orders,
        stop: stop_tx,
        stopping,
        session: Some(session),
        writer: Some(writer),
        counters,
    })
}

/// Sends orders to agents over ingest's broker connection, for parts of the server other than
/// ingest (bundle publication). Orders are never retained.
#[derive(Clone)]
pub struct OrderSender {
    client: watch::Receiver<Option<rumqttc::AsyncClient>>,
    counters: Arc<IngestCounters>,
}

impl OrderSender {
    /// Publishes one order; returns whether it reached the broker's outgoing queue. An order is
    /// lost while ingest is not connected, and the caller decides whether to send it again.
    pub async fn send(&self, agent_id: &AgentId, order: Order) -> bool {
        let client = self.client.borrow().clone();
        let connected = client.is_some();
        connection::publish_order(client, agent_id, order, &self.counters).await;
        connected
    }
}

impl IngestHandle {
    /// A sender of orders over this ingest's connection.
    pub fn order_sender(&self) -> OrderSender {
        self.orders.clone()
    }

    pub fn stats(&self) -> IngestStats {
        self.counters.snapshot()
    }

    /// The live counters, which stay readable after the handle is consumed.
    pub fn counters(&self) -> Arc<IngestCounters> {
        self.counters.clone()
    }

    /// Waits until ingest stops by itself, which only happens when its store thread failed.
    /// Cancel-safe: use it in `select!` beside a shutdown signal.
    pub async fn failed(&mut self) -> IngestError {
        let Some(session) = self.session.as_mut() else {
            return std::future::pending().await;
        };
        let result = session.await;
        self.session = None;
        match result {
            Ok(Ok(())) => IngestError::WriterStopped,
            Ok(Err(error)) => error,
            Err(error) => IngestError::SessionTask(error),
        }
    }

    /// Stops ingest: stores what was received, sends the acknowledgements, disconnects, and waits
    /// for the store thread to end.
    pub async fn shutdown(mut self) -> Result<(), IngestError> {
        self.stopping.store(true, Ordering::Relaxed);
        self.stop.send_replace(true);
        let session_result = match self.session.take() {
            Some(session) => match session.await {
                Ok(result) => result,
                Err(error) => Err(IngestError::SessionTask(error)),
            },
            None => Ok(()),
        };
        if let Some(writer) = self.writer.take() {
            let joined = tokio::task::spawn_blocking(move || writer.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                return Err(IngestError::WriterPanicked);
            }
        }
        match session_result {
            // The store thread ended during shutdown, which is the expected way for it to end.
            Err(IngestError::WriterStopped) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<BrokerUrl, BrokerUrlError> {
        url.parse()
    }

    fn broker(host: &str, port: u16) -> BrokerUrl {
        BrokerUrl {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn broker_url_accepts_host_and_port() {
        assert_eq!(
            parse("mqtt://127.0.0.1:1884"),
            Ok(broker("127.0.0.1", 1884))
        );
        assert_eq!(
            parse("MQTT://broker.example:8883/"),
            Ok(broker("broker.example", 8883))
        );
        assert_eq!(parse("mqtt://[::1]:1884"), Ok(broker("::1", 1884)));
    }

    #[test]
    fn broker_url_port_defaults_to_1883() {
        assert_eq!(
            parse("mqtt://broker.example"),
            Ok(broker("broker.example", 1883))
        );
        assert_eq!(parse("mqtt://[::1]"), Ok(broker("::1", 1883)));
    }

    #[test]
    fn broker_url_rejects_other_schemes() {
        for url in ["mqtts://h:8883", "tcp://h:1883", "ws://h:80"] {
            let error = parse(url).unwrap_err();
            assert!(
                matches!(error, BrokerUrlError::UnsupportedScheme { .. }),
                "{url}: {error}"
            );
        }
        let error = parse("localhost:1883").unwrap_err();
        assert!(
            matches!(error, BrokerUrlError::MissingScheme { .. }),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "invalid broker URL \"localhost:1883\": expected mqtt://HOST:PORT"
        );
    }

    #[test]
    fn broker_url_rejects_bad_ports() {
        for (url, port) in [
            ("mqtt://h:0", "0"),
            ("mqtt://h:65536", "65536"),
            ("mqtt://h:abc", "abc"),
            ("mqtt://h:", ""),
            ("mqtt://[::1]x", "x"),
            ("mqtt://a:b:c", "b:c"),
        ] {
            assert_eq!(
                parse(url),
                Err(BrokerUrlError::InvalidPort {
                    url: url.into(),
                    port: port.into()
                }),
                "{url}"
            );
        }
    }

    #[test]
    fn broker_url_rejects_missing_host_and_extra_parts() {
        for url in ["mqtt://", "mqtt://:1883", "mqtt://[]:1883"] {
            assert!(
                matches!(parse(url), Err(BrokerUrlError::MissingHost { .. })),
                "{url}"
            );
        }
        for url in [
            "mqtt://user@h:1883",
            "mqtt://h:1883/topic",
            "mqtt://h:1883?x=1",
        ] {
            assert!(
                matches!(parse(url), Err(BrokerUrlError::UnsupportedPart { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn broker_url_display_round_trips() {
        for url in [
            "mqtt://127.0.0.1:1884",
            "mqtt://[::1]:1883",
            "mqtt://broker.example:1883",
        ] {
            assert_eq!(parse(url).unwrap().to_string(), url);
        }
    }
}
