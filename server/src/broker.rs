//! The embedded MQTT broker, so that one `tidegate-server` process is a working installation.
//!
//! This module owns the configuration and start-up of an in-process rumqttd 0.20 broker. It serves
//! MQTT 3.1.1 on one TCP listener and, optionally, MQTT 5 on a second one (rumqttd runs one protocol
//! per listener). It does not authenticate clients, does not speak TLS and does not persist anything:
//! retained messages and sessions live in memory and are gone when the process exits. A fleet that
//! needs any of these runs an external broker and passes `--broker` instead.
//!
//! What agents rely on, and what rumqttd 0.20 does with it (each is checked in `tests/broker_*.rs`):
//!
//! - Retained messages: kept per topic and sent to a new subscriber of a matching filter. A new
//!   subscription receives at most as many retained messages as it has free QoS 1 in-flight slots
//!   (100, a constant in rumqttd), and rumqttd drops the rest instead of sending them later. A
//!   wildcard subscriber to the status of more than 100 agents therefore sees only 100 of them.
//! - Last will: published when a client's connection ends without DISCONNECT, including the retain
//!   flag, so a new subscriber of an agent's status topic sees `Offline`.
//! - QoS 1 in both directions. Outgoing QoS 1 messages to one subscriber are limited to 100 in flight,
//!   and rumqttd disconnects a client that acknowledges them out of order.
//! - Persistent sessions (`clean_session = false`): subscriptions and the read position are kept, and
//!   messages published while the client was away are delivered after it reconnects, as long as they
//!   are still in the in-memory log of the subscription (see [`SEGMENT_BYTES`]). Sessions never
//!   expire.
//! - Packet size: a client that sends a packet whose remaining length (topic, packet id and payload)
//!   exceeds [`BrokerConfig::max_packet_bytes`] is disconnected, and the packet is not forwarded.
//!
//! rumqttd has no shutdown: once started, the broker runs until the process exits.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{debug, info};

/// The default listen address. 1883 is usually taken by a system Mosquitto, so the embedded broker
/// uses the next port; a fleet deployment listens on `0.0.0.0:1884`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1884);

/// The default limit on one MQTT packet, in bytes. A report too large for one packet travels as
/// report chunks of at most the agent's packet limit (128 KiB by default). 1 MiB leaves room for
/// agents configured with a larger limit, and still stops a misbehaving client from making the
/// broker buffer arbitrarily large packets.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1024 * 1024;

/// The default limit on concurrent client connections: one server machine serves a fleet of
/// 100,000 agents, plus room for the server's own client and operators' tools.
///
/// NOTE: every connection is a file descriptor, and the server does not raise its own limit
/// (`ulimit -n`, often 1024). A deployment of this size has to raise it, and no test has run it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 101_000;

/// The size of one segment of a subscription's in-memory message log. rumqttd appends every publish
/// to the log of each matching subscription filter and keeps [`SEGMENT_COUNT`] full segments besides
/// the one being written, so one busy filter keeps at most about 80 MiB in memory. This is also how far a
/// disconnected persistent session can fall behind before it misses messages.
pub const SEGMENT_BYTES: usize = 16 * 1024 * 1024;

/// The number of full segments kept per subscription filter; see [`SEGMENT_BYTES`].
pub const SEGMENT_COUNT: usize = 4;

/// How long a new TCP connection may take to send its CONNECT packet before the broker closes it, so
/// idle sockets cannot use up the connection limit.
const CONNECT_TIMEOUT_MS: u16 = 10_000;

/// How many packets the broker reads from one connection in one batch, and how many QoS 0 messages
/// it forwards to one subscriber in one batch.
const PACKET_BATCH: usize = 100;

/// How long [`start`] waits for the broker to accept an MQTT connection.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the embedded broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// The MQTT 3.1.1 listener. Port 0 picks a free port; [`EmbeddedBroker::listen`] returns it.
    pub listen: SocketAddr,
    /// An optional MQTT 5 listener on another address.
    pub listen_v5: Option<SocketAddr>,
    /// The largest remaining length (topic, packet id and payload) of one incoming packet.
    pub max_packet_bytes: usize,
    pub max_connections: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            listen_v5: None,
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("failed to listen for MQTT connections on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("failed to start the broker thread: {0}")]
    Spawn(std::io::Error),
    #[error(
        "the embedded broker stopped during start-up; run with RUST_LOG=rumqttd=debug to see why"
    )]
    Stopped,
    #[error("the embedded broker did not accept an MQTT connection on {addr} within {timeout:?}")]
    NotReady { addr: SocketAddr, timeout: Duration },
}

/// A running embedded broker. Dropping it does not stop the broker (see the module documentation).
#[derive(Debug)]
pub struct EmbeddedBroker {
    listen: SocketAddr,
    listen_v5: Option<SocketAddr>,
}

impl EmbeddedBroker {
    /// The bound address of the MQTT 3.1.1 listener.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The bound address of the MQTT 5 listener, when there is one.
    pub fn listen_v5(&self) -> Option<SocketAddr> {
        self.listen_v5
    }

    /// An address a local client can connect to: the listen address, with an unspecified IP
    /// (`0.0.0.0` or `::`) replaced by the loopback address of the same family.
    pub fn connect_addr(&self) -> SocketAddr {
        connect_addr(self.listen)
    }
}

/// Starts the broker on its own threads and returns once it accepts MQTT connections.
///
/// rumqttd binds its listeners itself and does not report the bound address or a bind failure, so
/// this function first binds each address once to report errors and resolve port 0, then releases
/// it for rumqttd. Another process could take the port in between; [`BrokerError::Stopped`] or
/// [`BrokerError::NotReady`] is returned then.
pub async fn start(config: BrokerConfig) -> Result<EmbeddedBroker, BrokerError> {
    let listen = reserve(config.listen)?;
    let listen_v5 = config.listen_v5.map(reserve).transpose()?;

    let rumqttd_config = rumqttd_config(&config, listen, listen_v5);
    let broker_thread = thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(rumqttd_config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded MQTT broker failed");
            }
        })
        .map_err(BrokerError::Spawn)?;

    for addr in std::iter::once(listen).chain(listen_v5) {
        let v5 = Some(addr) == listen_v5;
        wait_until_ready(connect_addr(addr), v5, || broker_thread.is_finished()).await?;
    }
    info!(%listen, listen_v5 = ?listen_v5, "MQTT broker listening");
    Ok(EmbeddedBroker { listen, listen_v5 })
}

/// Binds `addr` once to check that it is free and to resolve port 0, then releases it.
fn reserve(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let listener = TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    listener
        .local_addr()
        .map_err(|source| BrokerError::Bind { addr, source })
}

fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

fn rumqttd_config(
    config: &BrokerConfig,
    listen: SocketAddr,
    listen_v5: Option<SocketAddr>,
) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: CONNECT_TIMEOUT_MS,
        max_payload_size: config.max_packet_bytes,
        // rumqttd names this "inflight", but it only bounds how many packets it reads from one
        // connection in one batch.
        max_inflight_count: PACKET_BATCH,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = |name: &str, listen: SocketAddr| ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        // rumqttd can sleep between two accepts. Agents spread their reconnects with jittered
        // back-off already, and a delay of 1 ms would keep 100,000 agents waiting over 100 s.
        next_connection_delay_ms: 0,
        connections: connections.clone(),
    };

    Config {
        id: 0,
        router: RouterConfig {
            max_connections: config.max_connections,
            max_outgoing_packet_count: PACKET_BATCH as u64,
            max_segment_size: SEGMENT_BYTES,
            max_segment_count: SEGMENT_COUNT,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([(
            "tidegate-v4".to_owned(),
            server("mqtt-v4", listen),
        )])),
        v5: listen_v5
            .map(|addr| HashMap::from([("tidegate-v5".to_owned(), server("mqtt-v5", addr))])),
        ..Config::default()
    }
}

/// Connects to the broker with an MQTT client until it sends a CONNACK, so callers can connect as
/// soon as [`start`] returns.
async fn wait_until_ready(
    addr: SocketAddr,
    v5: bool,
    broker_stopped: impl Fn() -> bool,
) -> Result<(), BrokerError> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if broker_stopped() {
            return Err(BrokerError::Stopped);
        }
        let connected = if v5 {
            probe_v5(addr).await
        } else {
            probe_v4(addr).await
        };
        match connected {
            Ok(()) => return Ok(()),
            Err(error) => debug!(%addr, %error, "broker not ready yet"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::NotReady {
                addr,
                timeout: READY_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const PROBE_CLIENT_ID: &str = "tidegate-broker-probe";

async fn probe_v4(addr: SocketAddr) -> Result<(), String> {
    let options = MqttOptions::new(PROBE_CLIENT_ID, addr.ip().to_string(), addr.port());
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    let connack = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    match connack {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {}
        Ok(Ok(other)) => return Err(format!("unexpected first event {other:?}")),
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err("no CONNACK within 1 s".into()),
    }
    // Send DISCONNECT so the broker ends the session cleanly; a failure here does not matter.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    Ok(())
}

async fn probe_v5(addr: SocketAddr) -> Result<(), String> {
    use rumqttc::v5::{mqttbytes::v5::Packet as Packet5, AsyncClient as Client5, Event as Event5};
    let options =
        rumqttc::v5::MqttOptions::new(PROBE_CLIENT_ID, addr.ip().to_string(), addr.port());
    let (client, mut eventloop) = Client5::new(options, 4);
    let connack = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    match connack {
        Ok(Ok(Event5::Incoming(Packet5::ConnAck(_)))) => {}
        Ok(Ok(other)) => return Err(format!("unexpected first event {other:?}")),
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err("no CONNACK within 1 s".into()),
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_addr_replaces_unspecified_ip() {
        let any_v4: SocketAddr = "0.0.0.0:1884".parse().unwrap();
        let any_v6: SocketAddr = "[::]:1884".parse().unwrap();
        let fixed: SocketAddr = "192.0.2.7:1884".parse().unwrap();
        assert_eq!(connect_addr(any_v4), "127.0.0.1:1884".parse().unwrap());
        assert_eq!(connect_addr(any_v6), "[::1]:1884".parse().unwrap());
        assert_eq!(connect_addr(fixed), fixed);
    }

    #[test]
    fn reserve_resolves_port_zero() {
        let addr = reserve("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
    }

    #[test]
    fn reserve_reports_address_in_use() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = reserve(addr).unwrap_err();
        assert!(matches!(error, BrokerError::Bind { .. }), "{error}");
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
