//! What agents rely on from the embedded broker: retained status, last will, QoS 1, persistent
//! sessions and the packet size limit. Each test starts its own broker on a free port and talks to
//! it with rumqttc clients.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, Publish, QoS};
use tidegate_protocol::topics::{topic, TopicKind};
use tidegate_protocol::AgentId;
use tidegate_server::broker::{self, BrokerConfig, EmbeddedBroker};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(5);

/// How long a test waits to show that a message does not arrive.
const QUIET: Duration = Duration::from_millis(500);

/// A port that was free a moment ago, below the ephemeral range. rumqttd binds its own listener,
/// so the broker can only take a port that is free a moment before; with port 0 it would pick one
/// in the ephemeral range, where an outgoing connection of a parallel test can take it in between.
fn free_port() -> SocketAddr {
    for _ in 0..200 {
        let port = 20_000 + fastrand::u16(..12_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return ([127, 0, 0, 1], port).into();
        }
    }
    panic!("no free port found between 20000 and 32000");
}

async fn start_broker(max_packet_bytes: usize) -> EmbeddedBroker {
    broker::start(BrokerConfig {
        listen: free_port(),
        listen_v5: None,
        max_packet_bytes,
        max_connections: 100,
    })
    .await
    .expect("embedded broker starts")
}

/// A rumqttc client whose event loop runs in a task and does not reconnect, so a test sees every
/// connection error.
struct TestClient {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: JoinHandle<()>,
    session_present: bool,
}

impl TestClient {
    async fn connect(options: MqttOptions) -> TestClient {
        let mut options = options;
        options.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (sender, mut events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await.map_err(|error| error.to_string());
                let failed = event.is_err();
                if sender.send(event).is_err() || failed {
                    return;
                }
            }
        });
        let first = timeout(WAIT, events.recv()).await.expect("CONNACK in time");
        let session_present = match first {
            Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => ack.session_present,
            other => panic!("expected CONNACK, got {other:?}"),
        };
        TestClient {
            client,
            events,
            task,
            session_present,
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_event(deadline).await {
                Some(Event::Incoming(Packet::SubAck(_))) => return,
                Some(_) => continue,
                None => panic!("no SUBACK for {filter}"),
            }
        }
    }

    async fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }

    /// Waits for the PUBACK of one publish.
    async fn expect_puback(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_event(deadline).await {
                Some(Event::Incoming(Packet::PubAck(_))) => return,
                Some(_) => continue,
                None => panic!("no PUBACK"),
            }
        }
    }

    async fn next_event(&mut self, deadline: Instant) -> Option<Event> {
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some(Ok(event))) => Some(event),
            Ok(Some(Err(error))) => panic!("connection failed: {error}"),
            Ok(None) | Err(_) => None,
        }
    }

    /// The next incoming publish before `deadline`, or `None`.
    async fn next_publish(&mut self, deadline: Instant) -> Option<Publish> {
        loop {
            match self.next_event(deadline).await? {
                Event::Incoming(Packet::Publish(publish)) => return Some(publish),
                _ => continue,
            }
        }
    }

    /// Waits until the connection fails, and returns the error.
    async fn expect_connection_error(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(error))) => return error,
                Ok(None) => panic!("event loop ended without an error"),
                Err(_) => panic!("connection still up after {WAIT:?}"),
            }
        }
    }

    async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)))) => break,
                Ok(Some(Ok(_))) => continue,
                _ => break,
            }
        }
        self.task.abort();
    }

    /// Ends the connection without DISCONNECT: the event loop and its socket are dropped.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn options(broker: &EmbeddedBroker, client_id: &str) -> MqttOptions {
    let addr = broker.connect_addr();
    MqttOptions::new(client_id, addr.ip().to_string(), addr.port())
}

fn status_topic(agent: &str) -> String {
    topic(&AgentId::parse(agent).unwrap(), TopicKind::Status)
}

#[tokio::test]
async fn retained_status_reaches_new_subscriber() {
    let broker = start_broker(broker::DEFAULT_MAX_PACKET_BYTES).await;
    let status = status_topic("agent-1");

    let mut agent = TestClient::connect(options(&broker, "agent-1")).await;
    agent.publish(&status, true, b"online".to_vec()).await;
    agent.expect_puback().await;

    let mut viewer = TestClient::connect(options(&broker, "viewer")).await;
    viewer.subscribe(&status).await;
    let publish = viewer
        .next_publish(Instant::now() + WAIT)
        .await
        .expect("retained status delivered");
    assert_eq!(publish.topic, status);
    assert_eq!(&publish.payload[..], b"online");
    assert!(publish.retain, "retained message is marked retained");
    assert_eq!(publish.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn empty_retained_payload_clears_status() {
    let broker = start_broker(broker::DEFAULT_MAX_PACKET_BYTES).await;
    let status = status_topic("agent-1");

    let mut agent = TestClient::connect(options(&broker, "agent-1")).await;
    agent.publish(&status, true, b"online".to_vec()).await;
    agent.expect_puback().await;
    agent.publish(&status, true, Vec::new()).await;
    agent.expect_puback().await;

    let mut viewer = TestClient::connect(options(&broker, "viewer")).await;
    viewer.subscribe(&status).await;
    assert!(viewer.next_publish(Instant::now() + QUIET).await.is_none());
}

/// rumqttd 0.20 sends a new subscription at most as many retained messages as it has free QoS 1
/// in-flight slots (100) and drops the rest. This test pins that limit down, so an upgrade that
/// lifts it shows up here.
#[tokio::test]
async fn retained_delivery_stops_at_100_per_subscription() {
    let broker = start_broker(broker::DEFAULT_MAX_PACKET_BYTES).await;
    let mut publisher = TestClient::connect(options(&broker, "fleet")).await;
    for n in 0..150 {
        publisher
            .publish(
                &status_topic(&format!("agent-{n}")),
                true,
                b"online".to_vec(),
            )
            .await;
        publisher.expect_puback().await;
    }

    let mut viewer = TestClient::connect(options(&broker, "viewer")).await;
    viewer
        .subscribe(&TopicKind::Status.all_agents_filter())
        .await;
    let mut received = 0;
    while viewer.next_publish(Instant::now() + QUIET).await.is_some() {
        received += 1;
    }
    assert_eq!(received, 100, "150 retained statuses, 100 delivered");
}

#[tokio::test]
async fn last_will_marks_killed_client_offline() {
    let broker = start_broker(broker::DEFAULT_MAX_PACKET_BYTES).await;
    let status = status_topic("agent-1");

    let mut agent_options = options(&broker, "agent-1");
    agent_options.set_clean_session(false);
    agent_options.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
    let mut agent = TestClient::connect(agent_options).await;
    agent.publish(&status, true, b"online".to_vec()).await;
    agent.expect_puback().await;

    let mut watcher = TestClient::connect(options(&broker, "watcher")).await;
    watcher.subscribe(&status).await;
    let retained = watcher.next_publish(Instant::now() + WAIT).await.unwrap();
    assert_eq!(&retained.payload[..], b"online");

    agent.kill().await;
    let will = watcher
        .next_publish(Instant::now() + WAIT)
        .await
        .expect("last will delivered to a subscriber");
    assert_eq!(&will.payload[..], b"offline");

    let mut late = TestClient::connect(options(&broker, "late")).await;
    late.subscribe(&status).await;
    let seen = late.next_publish(Instant::now() + WAIT).await.unwrap();
    assert_eq!(
        &seen.payload[..],
        b"offline",
        "new subscriber sees the will"
    );
    assert!(seen.retain);
}

#[tokio::test]
async fn disconnect_discards_last_will() {
    let broker = start_broker(broker::DEFAULT_MAX_PACKET_BYTES).await;
    let status = status_topic("agent-1");

    let mut agent_options = options(&broker, "agent-1");
    agent_options.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
    let mut agent = TestClient::connect(agent_options).await;
    agent.publish(&status, true, b"online".to_vec()).await;
    agent.expect_puback().await;

    let mut watcher = TestClient::connect(options(&broker, "watcher")).await;
    watcher.subscribe(&status).await;
    let retained = watcher.next_publish(Instant::now() + WAIT).await.unwrap();
    assert_eq!(&retained.payload[..], b"online");

    agent.disconnect().await;
    assert!(
        watcher.next_publish(Instant::now() + QUIET).await.is_none(),
        "no will after DISCONNECT"
    );
}

#[tokio::test]
async fn persistent_session_receives_messages_sent_while_away() {
    let broker = start_broker(broker::DEFAULT_MAX_PACKET_BYTES).await;
    let order = topic(&AgentId::parse("agent-1").unwrap(), TopicKind::Order);
    let persistent = || {
        let mut options = options(&broker, "agent-1");
        options.set_clean_session(false);
        options
    };

    let mut agent = TestClient::connect(persistent()).await;
    assert!(!agent.session_present, "first connection has no session");
    agent.subscribe(&order).await;
    agent.disconnect().await;

    let mut server = TestClient::connect(options(&broker, "server")).await;
    server.publish(&order, false, b"resync".to_vec()).await;
    server.expect_puback().await;

    let mut agent = TestClient::connect(persistent()).await;
    assert!(agent.session_present, "broker kept the session");
    let publish = agent
        .next_publish(Instant::now() + WAIT)
        .await
        .expect("message sent while away is delivered without subscribing again");
    assert_eq!(&publish.payload[..], b"resync");
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert!(!publish.retain);
}

#[tokio::test]
async fn clean_session_starts_without_subscriptions() {
    let broker = start_broker(broker::DEFAULT_MAX_PACKET_BYTES).await;
    let order = topic(&AgentId::parse("agent-1").unwrap(), TopicKind::Order);

    let mut agent = TestClient::connect(options(&broker, "agent-1")).await;
    agent.subscribe(&order).await;
    agent.disconnect().await;

    let mut server = TestClient::connect(options(&broker, "server")).await;
    server.publish(&order, false, b"resync".to_vec()).await;
    server.expect_puback().await;

    let mut agent = TestClient::connect(options(&broker, "agent-1")).await;
    assert!(!agent.session_present);
    assert!(agent.next_publish(Instant::now() + QUIET).await.is_none());
}

#[tokio::test]
async fn oversized_packet_disconnects_publisher() {
    let limit = 4096;
    let broker = start_broker(limit).await;
    let report = topic(&AgentId::parse("agent-1").unwrap(), TopicKind::Report);

    let mut server = TestClient::connect(options(&broker, "server")).await;
    server.subscribe(&report).await;

    let mut agent = TestClient::connect(options(&broker, "agent-1")).await;
    agent.publish(&report, false, vec![7; limit + 1]).await;
    let error = agent.expect_connection_error().await;
    assert!(!error.is_empty());
    assert!(
        server.next_publish(Instant::now() + QUIET).await.is_none(),
        "oversized packet is not forwarded"
    );

    // The remaining length is the payload plus the topic (2 + topic length) and packet id (2).
    let fits = limit - 4 - report.len();
    let mut agent = TestClient::connect(options(&broker, "agent-1")).await;
    agent.publish(&report, false, vec![7; fits]).await;
    agent.expect_puback().await;
    let publish = server.next_publish(Instant::now() + WAIT).await.unwrap();
    assert_eq!(publish.payload.len(), fits);
}

#[tokio::test]
async fn mqtt5_listener_shares_topics_with_mqtt311() {
    use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    let broker = broker::start(BrokerConfig {
        listen: free_port(),
        listen_v5: Some(free_port()),
        max_packet_bytes: broker::DEFAULT_MAX_PACKET_BYTES,
        max_connections: 100,
    })
    .await
    .unwrap();
    let v5_addr = broker.listen_v5().expect("MQTT 5 listener");
    assert_ne!(v5_addr.port(), 0);
    let report = topic(&AgentId::parse("agent-5").unwrap(), TopicKind::Report);

    let mut server = TestClient::connect(options(&broker, "server")).await;
    server.subscribe(&report).await;

    let (agent, mut eventloop) = Client5::new(
        Options5::new("agent-5", v5_addr.ip().to_string(), v5_addr.port()),
        10,
    );
    agent
        .publish(report.clone(), QoS5::AtLeastOnce, false, b"v5".to_vec())
        .await
        .unwrap();
    let acked = timeout(WAIT, async {
        loop {
            if let Event5::Incoming(Packet5::PubAck(_)) = eventloop.poll().await.unwrap() {
                return;
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "MQTT 5 publish acknowledged");

    let publish = server.next_publish(Instant::now() + WAIT).await.unwrap();
    assert_eq!(&publish.payload[..], b"v5");
}
