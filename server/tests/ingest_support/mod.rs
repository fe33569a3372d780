//! Shared pieces of the ingest tests: an in-process server on free ports with a temporary store, an
//! agent-side MQTT client, report builders, a controllable clock, and HTTP reads.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tidegate_protocol::topics::{topic, TopicKind};
use tidegate_protocol::{
    encode, AgentId, BootId, Ecosystem, HostFacts, InstallState, Inventory, InventoryDelta,
    Message, Package, PackageKey, Report, ReportBody, Selection,
};
use tidegate_server::ingest::{Clock, IngestCounters, IngestDeps, IngestStats, RandomSource};
use tidegate_server::serve::{self, BrokerChoice, ServeError, ServerConfig};
use tidegate_server::store::AgentSummary;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a test waits for something that should happen. Ample, because CI machines have two
/// cores and run two test processes that each start a broker, a server and clients.
pub const WAIT: Duration = Duration::from_secs(30);

/// How long a test waits to show that a message does not arrive.
pub const QUIET: Duration = Duration::from_millis(500);

pub const COLLECTED_AT_UNIX_S: i64 = 1_780_000_000;

/// A clock that only moves when the test moves it.
pub struct ManualClock {
    monotonic_ms: AtomicU64,
    unix_s: AtomicI64,
}

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            monotonic_ms: AtomicU64::new(1_000_000),
            unix_s: AtomicI64::new(COLLECTED_AT_UNIX_S + 60),
        })
    }

    pub fn advance(&self, by: Duration) {
        self.monotonic_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        self.unix_s.fetch_add(by.as_secs() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_s(&self) -> i64 {
        self.unix_s.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.monotonic_ms.load(Ordering::SeqCst))
    }
}

/// Random numbers that count up from 1, so order ids are predictable.
#[derive(Default)]
pub struct CountingRandom(AtomicU64);

impl RandomSource for CountingRandom {
    fn next_u64(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// A server running in this process on free ports, with its store in a temporary directory.
pub struct TestServer {
    pub http: SocketAddr,
    /// The embedded broker's address, or `None` with an external broker.
    pub mqtt: Option<SocketAddr>,
    pub counters: Arc<IngestCounters>,
    /// The admin token, created on the store's first start and kept in `admin.token` of `dir`.
    pub token: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with the embedded broker and the system clock.
    pub async fn embedded() -> TestServer {
        Self::embedded_with(IngestDeps::default()).await
    }

    /// Starts a server with the embedded broker and returns once ingest is subscribed.
    pub async fn embedded_with(deps: IngestDeps) -> TestServer {
        let server = Self::start(embedded_broker(), deps).await;
        server.wait_subscribed(1).await;
        server
    }

    pub async fn start(broker: BrokerChoice, deps: IngestDeps) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, broker, deps).await
    }

    /// Starts a server whose store is `tidegate.db` in `dir`.
    pub async fn start_in(
        dir: tempfile::TempDir,
        broker: BrokerChoice,
        deps: IngestDeps,
    ) -> TestServer {
        let max_packet_bytes = ServerConfig::default().mqtt_max_packet_bytes;
        Self::start_limited(dir, broker, deps, max_packet_bytes).await
    }

    /// Starts a server that accepts MQTT packets of at most `max_packet_bytes`.
    pub async fn start_limited(
        dir: tempfile::TempDir,
        broker: BrokerChoice,
        deps: IngestDeps,
        max_packet_bytes: usize,
    ) -> TestServer {
        // Logs show in a failing test's output; RUST_LOG=debug shows more.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,rumqttd=warn".into()),
            )
            .with_test_writer()
            .try_init();
        let config = ServerConfig {
            db_path: dir.path().join("tidegate.db"),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            broker,
            mqtt_max_packet_bytes: max_packet_bytes,
            trust_root: None,
            admin_token_file: Some(dir.path().join("admin.token")),
        };
        let running = serve::start(config, deps).await.expect("server starts");
        // A restart on the same directory creates no token; the first start's file has it.
        let token = std::fs::read_to_string(dir.path().join("admin.token"))
            .expect("the first start wrote admin.token")
            .trim()
            .to_owned();
        let http = running.http_addr();
        let mqtt = running.mqtt_addr();
        let counters = running.ingest_counters();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(running.run_until(async {
            let _ = stopped.await;
        }));
        TestServer {
            http,
            mqtt,
            counters,
            token,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    pub fn stats(&self) -> IngestStats {
        self.counters.snapshot()
    }

    /// Waits until the broker granted ingest's subscriptions `count` times in total, so that
    /// messages published from now on reach ingest.
    pub async fn wait_subscribed(&self, count: u64) {
        wait_until("ingest subscribed", || async {
            self.stats().subscriptions_granted >= count
        })
        .await;
    }

    /// Stops the server and checks that it stopped cleanly; returns the store's directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .expect("server stops in time")
            .expect("server task does not panic");
        result.expect("server stops without error");
        self.dir
    }

    pub async fn agents(&self) -> Vec<AgentSummary> {
        let url = format!("http://{}/api/v1/agents", self.http);
        let authorization = format!("Bearer {}", self.token);
        tokio::task::spawn_blocking(move || {
            let body: serde_json::Value = ureq::get(&url)
                .header("Authorization", &authorization)
                .call()
                .expect("GET /api/v1/agents")
                .body_mut()
                .read_json()
                .expect("JSON body");
            serde_json::from_value::<Vec<AgentSummary>>(body["agents"].clone()).expect("agent list")
        })
        .await
        .unwrap()
    }

    /// Waits until the store lists an agent for which `condition` holds, and returns it.
    pub async fn wait_for_agent(
        &self,
        agent: &str,
        condition: impl Fn(&AgentSummary) -> bool,
    ) -> AgentSummary {
        let deadline = Instant::now() + WAIT;
        loop {
            let agents = self.agents().await;
            if let Some(found) = agents.iter().find(|a| a.agent_id == agent && condition(a)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "agent {agent} not as expected within {WAIT:?}; the store lists {agents:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An embedded broker on a free port below Linux's ephemeral range (32768-60999). rumqttd binds
/// its own listener, so the server can only pick a port that is free a moment before; a port in
/// the ephemeral range can be taken in between by an outgoing connection of a parallel test.
pub fn embedded_broker() -> BrokerChoice {
    BrokerChoice::Embedded {
        listen: ([127, 0, 0, 1], free_port_below_ephemeral_range()).into(),
        listen_v5: None,
    }
}

fn free_port_below_ephemeral_range() -> u16 {
    for _ in 0..200 {
        let port = 20_000 + fastrand::u16(..12_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found between 20000 and 32000");
}

/// Polls `condition` every 20 ms until it holds, failing the test after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An agent's MQTT connection; its event loop runs in a task and does not reconnect.
pub struct TestAgent {
    pub id: AgentId,
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: JoinHandle<()>,
}

impl TestAgent {
    pub async fn connect(broker: SocketAddr, id: &str) -> TestAgent {
        let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
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
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(Ok(Event::Incoming(Packet::ConnAck(_))))) => {}
            other => panic!("agent {id}: expected CONNACK, got {other:?}"),
        }
        TestAgent {
            id: AgentId::parse(id).unwrap(),
            client,
            events,
            task,
        }
    }

    pub fn topic(&self, kind: TopicKind) -> String {
        topic(&self.id, kind)
    }

    /// Subscribes to this agent's order topic and waits for the SUBACK.
    pub async fn subscribe_orders(&mut self) {
        let id = self.id.clone();
        self.subscribe_orders_of(&id).await;
    }

    /// Subscribes to the order topic of `agent` and waits for the SUBACK.
    pub async fn subscribe_orders_of(&mut self, agent: &AgentId) {
        self.client
            .subscribe(topic(agent, TopicKind::Order), QoS::AtLeastOnce)
            .await
            .unwrap();
        self.wait_for("SUBACK", |event| {
            matches!(event, Event::Incoming(Packet::SubAck(_)))
        })
        .await;
    }

    /// Publishes `message` on this agent's topic of `kind` at QoS 1 and waits for the PUBACK.
    pub async fn send(&mut self, kind: TopicKind, message: &Message) {
        let payload = encode(message).unwrap();
        self.send_raw(&self.topic(kind), payload).await;
    }

    pub async fn send_raw(&mut self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.wait_for("PUBACK", |event| {
            matches!(event, Event::Incoming(Packet::PubAck(_)))
        })
        .await;
    }

    async fn wait_for(&mut self, what: &str, matches: impl Fn(&Event) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(event))) if matches(&event) => return,
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(error))) => panic!("agent {}: connection failed: {error}", self.id),
                Ok(None) | Err(_) => panic!("agent {}: no {what} within {WAIT:?}", self.id),
            }
        }
    }

    /// The next publish this agent receives before `deadline`, or `None`.
    pub async fn next_publish(&mut self, deadline: Instant) -> Option<Publish> {
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(Event::Incoming(Packet::Publish(publish))))) => return Some(publish),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(error))) => panic!("agent {}: connection failed: {error}", self.id),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn boot(n: u8) -> BootId {
    BootId([n; 16])
}

pub fn package(name: &str) -> Package {
    Package {
        ecosystem: Ecosystem::Deb,
        name: name.into(),
        arch: "amd64".into(),
        version: "1.0-1".into(),
        state: InstallState::Installed,
        selection: Selection::Install,
        provides: Vec::new(),
    }
}

pub fn package_key(name: &str) -> PackageKey {
    package(name).key()
}

/// A full report of installed packages `names`.
pub fn full_report(agent: &AgentId, boot_id: BootId, seq: u64, names: &[&str]) -> Report {
    let mut inventory = Inventory {
        facts: HostFacts {
            hostname: format!("host-{agent}"),
            os_name: "Debian GNU/Linux".into(),
            os_version: "12".into(),
            kernel_version: "6.1.0".into(),
            arch: "x86_64".into(),
            boot_time_unix_s: COLLECTED_AT_UNIX_S - 3600,
            cpu_count: 2,
            memory_total_bytes: 4 << 30,
        },
        packages: names.iter().map(|name| package(name)).collect(),
        ..Inventory::default()
    };
    inventory.normalize();
    Report {
        agent_id: agent.clone(),
        boot_id,
        seq,
        collected_at_unix_s: COLLECTED_AT_UNIX_S + seq as i64,
        outbox_dropped: 0,
        body: ReportBody::Full(inventory),
    }
}

/// A delta against report `base_seq` that installs `added` and removes `removed`.
pub fn delta_report(
    agent: &AgentId,
    boot_id: BootId,
    seq: u64,
    base_seq: u64,
    added: &[&str],
    removed: &[&str],
) -> Report {
    Report {
        agent_id: agent.clone(),
        boot_id,
        seq,
        collected_at_unix_s: COLLECTED_AT_UNIX_S + seq as i64,
        outbox_dropped: 0,
        body: ReportBody::Delta {
            base_seq,
            delta: InventoryDelta {
                upserted: added.iter().map(|name| package(name)).collect(),
                removed: removed.iter().map(|name| package_key(name)).collect(),
                ..InventoryDelta::default()
            },
        },
    }
}
