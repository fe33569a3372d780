//! Ingest through an external Mosquitto broker that each test starts on a free port: the report
//! path, reconnecting after the broker restarts, the persistent session across a server restart, and
//! the `tidegate-server --broker` binary.

mod ingest_support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ingest_support::*;
use tidegate_protocol::topics::TopicKind;
use tidegate_protocol::Message;
use tidegate_server::ingest::{BrokerUrl, IngestDeps};
use tidegate_server::serve::BrokerChoice;
use tokio::time::Instant;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto process listening on 127.0.0.1 only, without persistence. Killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port, tempfile::tempdir().unwrap())
    }

    fn start_on(port: u16, dir: tempfile::TempDir) -> Mosquitto {
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let deadline = std::time::Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto { child, port, dir }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> BrokerUrl {
        format!("mqtt://127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Stops this process and starts a new one on the same port; sessions are lost.
    fn restart(mut self) -> Mosquitto {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let port = self.port;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_on(port, dir)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn external(mosquitto: &Mosquitto) -> BrokerChoice {
    BrokerChoice::External {
        url: mosquitto.url(),
    }
}

#[tokio::test]
async fn report_reaches_store_through_mosquitto() {
    let mosquitto = Mosquitto::start();
    let server = TestServer::start(external(&mosquitto), IngestDeps::default()).await;
    assert_eq!(server.mqtt, None);
    server.wait_subscribed(1).await;

    let mut agent = TestAgent::connect(mosquitto.addr(), "agent-1").await;
    let full = full_report(&agent.id, boot(1), 1, &["bash", "coreutils", "curl"]);
    agent.send(TopicKind::Report, &Message::Report(full)).await;
    let stored = server
        .wait_for_agent("agent-1", |a| a.reports_received == 1)
        .await;
    assert_eq!(stored.package_count, 3);
    server.stop().await;
}

#[tokio::test]
async fn ingest_subscribes_again_after_broker_restart() {
    let mosquitto = Mosquitto::start();
    let server = TestServer::start(external(&mosquitto), IngestDeps::default()).await;
    server.wait_subscribed(1).await;

    // The new Mosquitto has no session for ingest, so ingest must subscribe again.
    let mosquitto = mosquitto.restart();
    server.wait_subscribed(2).await;
    assert_eq!(server.stats().connections, 2);

    let mut agent = TestAgent::connect(mosquitto.addr(), "agent-1").await;
    let full = full_report(&agent.id, boot(1), 1, &["bash", "curl"]);
    agent.send(TopicKind::Report, &Message::Report(full)).await;
    let stored = server
        .wait_for_agent("agent-1", |a| a.reports_received == 1)
        .await;
    assert_eq!(stored.package_count, 2);
    server.stop().await;
}

#[tokio::test]
async fn report_sent_while_server_down_arrives() {
    let mosquitto = Mosquitto::start();
    let server = TestServer::start(external(&mosquitto), IngestDeps::default()).await;
    server.wait_subscribed(1).await;
    let dir = server.stop().await;

    // The broker keeps ingest's persistent session and queues QoS 1 messages for it.
    let mut agent = TestAgent::connect(mosquitto.addr(), "agent-1").await;
    let full = full_report(&agent.id, boot(1), 1, &["bash", "curl", "git", "vim"]);
    agent.send(TopicKind::Report, &Message::Report(full)).await;

    let server = TestServer::start_in(dir, external(&mosquitto), IngestDeps::default()).await;
    let stored = server
        .wait_for_agent("agent-1", |a| a.reports_received == 1)
        .await;
    assert_eq!(stored.package_count, 4);
    // A new process cannot know whether its predecessor's SUBACK arrived, so it subscribes once
    // more; that keeps the messages the broker queued in the session.
    server.wait_subscribed(1).await;
    assert_eq!(server.stats().subscriptions_granted, 1);
    server.stop().await;
}

#[tokio::test]
async fn report_is_not_acknowledged_until_stored() {
    let mosquitto = Mosquitto::start();
    let server = TestServer::start(external(&mosquitto), IngestDeps::default()).await;
    server.wait_subscribed(1).await;

    // Another connection holds the store's write lock, so ingest cannot commit.
    let db = server.dir.path().join("tidegate.db");
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut agent = TestAgent::connect(mosquitto.addr(), "agent-1").await;
    let full = full_report(&agent.id, boot(1), 1, &["bash", "curl"]);
    agent.send(TopicKind::Report, &Message::Report(full)).await;
    wait_until("a store transaction failed", || async {
        server.stats().store_failures >= 1
    })
    .await;
    assert_eq!(server.stats().reports_stored, 0);
    let dir = server.stop().await;
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    // The broker sends the unacknowledged report again to the restarted server.
    let server = TestServer::start_in(dir, external(&mosquitto), IngestDeps::default()).await;
    let stored = server
        .wait_for_agent("agent-1", |a| a.reports_received == 1)
        .await;
    assert_eq!(stored.package_count, 2);
    server.stop().await;
}

#[tokio::test]
async fn oversized_packet_discards_session() {
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let server =
        TestServer::start_limited(dir, external(&mosquitto), IngestDeps::default(), limit).await;
    server.wait_subscribed(1).await;

    // Mosquitto accepts the packet (its default limit is far higher) and forwards it to ingest,
    // which cannot read it and would get it again on every reconnect without the discard.
    let mut agent = TestAgent::connect(mosquitto.addr(), "agent-1").await;
    let report_topic = agent.topic(TopicKind::Report);
    agent.send_raw(&report_topic, vec![1; limit + 1]).await;
    wait_until("session discarded and subscribed again", || async {
        let stats = server.stats();
        stats.sessions_discarded == 1 && stats.subscriptions_granted == 2
    })
    .await;

    let full = full_report(&agent.id, boot(1), 1, &["bash", "curl"]);
    agent.send(TopicKind::Report, &Message::Report(full)).await;
    let stored = server
        .wait_for_agent("agent-1", |a| a.reports_received == 1)
        .await;
    assert_eq!(stored.package_count, 2);
    assert_eq!(
        server.stats().connections,
        2,
        "the discarding connection is not counted"
    );
    assert_eq!(server.stats().sessions_discarded, 1);
    server.stop().await;
}

/// Reads the server's log on stderr until it names the HTTP address.
fn http_addr_from_log(stderr: std::process::ChildStderr) -> SocketAddr {
    let mut lines = BufReader::new(stderr).lines();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in lines.by_ref().map_while(Result::ok) {
            if !sent && line.contains("HTTP API listening") {
                let addr = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("http_addr="))
                    .map(|addr| addr.parse::<SocketAddr>().unwrap());
                let _ = sender.send(addr);
                sent = true;
            }
        }
    });
    receiver
        .recv_timeout(WAIT)
        .expect("server logs its HTTP address")
        .expect("log line has http_addr=")
}

#[tokio::test]
async fn server_binary_with_broker_flag() {
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("tidegate.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidegate-server"))
        .arg("--db")
        .arg(&db)
        .args(["--http-listen", "127.0.0.1:0"])
        .args(["--broker", &mosquitto.url().to_string()])
        .arg("--admin-token-file")
        .arg(dir.path().join("admin.token"))
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("tidegate-server starts");
    let http = http_addr_from_log(child.stderr.take().unwrap());

    let mut agent = TestAgent::connect(mosquitto.addr(), "agent-1").await;
    let full = Message::Report(full_report(
        &agent.id,
        boot(1),
        1,
        &["bash", "coreutils", "curl"],
    ));
    // The server may not have subscribed yet; send until the report shows up.
    let url = format!("http://{http}/api/v1/agents");
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let authorization = format!("Bearer {}", token.trim());
    let deadline = Instant::now() + WAIT;
    let package_count = loop {
        agent.send(TopicKind::Report, &full).await;
        let url = url.clone();
        let authorization = authorization.clone();
        let body: serde_json::Value = tokio::task::spawn_blocking(move || {
            ureq::get(&url)
                .header("Authorization", &authorization)
                .call()
                .unwrap()
                .body_mut()
                .read_json()
                .unwrap()
        })
        .await
        .unwrap();
        if let Some(count) = body["agents"][0]["package_count"].as_u64() {
            break count;
        }
        assert!(
            Instant::now() < deadline,
            "report not stored; last response {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(package_count, 3);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + WAIT;
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "server exit status {exit}");
}
