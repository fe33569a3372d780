//! The agent's MQTT transport against a real Mosquitto broker: re-subscription after a broker
//! restart, retained orders, the last will, and reports that survive a network cut and a broker
//! restart on their way to a real server.

use std::time::{Duration, Instant};

use tidegate_protocol::topics::{topic, TopicKind};
use tidegate_protocol::{
    decode, encode, AgentId, Message, Order, OrderBody, OrderId, ReportBody, StatusState,
};
use tidegate_tests::proxy::Proxy;
use tidegate_tests::{
    fixture_root, prepare_agent_id, wait_for, AgentSettings, Mosquitto, Server, TestClient,
};

fn agent_topic(agent_id: &str, kind: TopicKind) -> String {
    topic(&AgentId::parse(agent_id).unwrap(), kind)
}

fn resync_order(seed: u8) -> Vec<u8> {
    encode(&Message::Order(Order {
        order_id: OrderId([seed; 16]),
        body: OrderBody::Resync {
            reason: "test".into(),
        },
    }))
    .unwrap()
}

/// Returns `(seq, is_full)` of a report payload, or `None` for anything else.
fn report_kind(payload: &[u8]) -> Option<(u64, bool)> {
    match decode(payload).ok()? {
        Message::Report(report) => Some((report.seq, matches!(report.body, ReportBody::Full(_)))),
        _ => None,
    }
}

fn status_of(payload: &[u8]) -> Option<(StatusState, bool)> {
    match decode(payload).ok()? {
        Message::Status(status) => Some((status.state, status.session_present)),
        _ => None,
    }
}

#[test]
fn order_arrives_after_broker_restart_without_session() {
    let mut broker = Mosquitto::start();
    let root = fixture_root(5, 1);
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);
    let status_topic = agent_topic(&agent_id, TopicKind::Status);

    let watcher = TestClient::connect(broker.port, "watcher-1");
    watcher.subscribe(&status_topic);
    let _agent = AgentSettings::new(root.path(), &state_dir, broker.url()).start();
    watcher.wait_for("the agent online", Duration::from_secs(15), |publish| {
        (status_of(&publish.payload)?.0 == StatusState::Online).then_some(())
    });

    broker.restart();
    let watcher = TestClient::connect(broker.port, "watcher-2");
    watcher.subscribe(&status_topic);
    watcher.subscribe(&agent_topic(&agent_id, TopicKind::Report));
    let session_present = watcher.wait_for(
        "the agent online again",
        Duration::from_secs(20),
        |publish| {
            let (state, session_present) = status_of(&publish.payload)?;
            (state == StatusState::Online).then_some(session_present)
        },
    );
    assert!(
        !session_present,
        "a restarted broker without persistence has no session"
    );

    std::thread::sleep(Duration::from_secs(3));
    watcher.drain();
    watcher.publish(
        &agent_topic(&agent_id, TopicKind::Order),
        resync_order(1),
        false,
    );

    let seq = watcher.wait_for(
        "a full report answering the order",
        Duration::from_secs(10),
        |publish| {
            let (seq, full) = report_kind(&publish.payload)?;
            full.then_some(seq)
        },
    );
    assert!(
        seq > 1,
        "the full report at start is seq 1; the answer must be a later one, got {seq}"
    );
}

#[test]
fn retained_order_is_ignored() {
    let broker = Mosquitto::start();
    let root = fixture_root(5, 0);
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);

    let watcher = TestClient::connect(broker.port, "watcher");
    watcher.subscribe(&agent_topic(&agent_id, TopicKind::Report));
    watcher.publish(
        &agent_topic(&agent_id, TopicKind::Order),
        resync_order(2),
        true,
    );
    std::thread::sleep(Duration::from_millis(500));

    let _agent = AgentSettings::new(root.path(), &state_dir, broker.url()).start();
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let kind = watcher.wait_for("reports 1 to 4", Duration::from_secs(20), |publish| {
            report_kind(&publish.payload)
        });
        if !kinds.iter().any(|(seq, _)| *seq == kind.0) {
            kinds.push(kind);
        }
    }
    kinds.sort();
    assert_eq!(kinds, vec![(1, true), (2, false), (3, false), (4, false)]);
}

#[test]
fn killed_agent_shows_offline_to_new_subscriber() {
    let broker = Mosquitto::start();
    let root = fixture_root(3, 0);
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);
    let status_topic = agent_topic(&agent_id, TopicKind::Status);

    let watcher = TestClient::connect(broker.port, "watcher");
    watcher.subscribe(&status_topic);
    let mut agent = AgentSettings::new(root.path(), &state_dir, broker.url()).start();
    watcher.wait_for("the agent online", Duration::from_secs(15), |publish| {
        (status_of(&publish.payload)?.0 == StatusState::Online).then_some(())
    });

    agent.kill();
    let killed_at = Instant::now();
    // Keep-alive is 5 s, so the broker gives up on the agent after 7.5 s at most.
    let mut attempt = 0;
    wait_for(
        "a new subscriber to see the agent offline",
        Duration::from_secs(20),
        || {
            attempt += 1;
            let late = TestClient::connect(broker.port, &format!("late-{attempt}"));
            late.subscribe(&status_topic);
            let publish = late.messages.recv_timeout(Duration::from_secs(2)).ok()?;
            assert!(
                publish.retain,
                "the status a new subscriber gets is the retained one"
            );
            (status_of(&publish.payload)?.0 == StatusState::Offline).then_some(())
        },
    );
    println!("offline seen {:?} after the kill", killed_at.elapsed());
}

/// 120 reports, one a second, through a network cut of 30 s and a broker restart: the server ends
/// with exactly 120 distinct reports, and the agent's outbox empties because the acknowledgements
/// reach it again after the restart.
#[test]
fn reports_survive_network_cut_and_broker_restart() {
    let mut broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_external(&data.path().join("tidegate.db"), &broker.url());

    let root = fixture_root(20, 2);
    let state_dir = data.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);
    let mut settings = AgentSettings::new(root.path(), &state_dir, proxy.url());
    settings.max_reports = 120;
    let _agent = settings.start();
    let started = Instant::now();

    let sleep_until = |seconds: u64| {
        let target = started + Duration::from_secs(seconds);
        std::thread::sleep(target.saturating_duration_since(Instant::now()));
    };
    let received = |server: &Server| {
        server
            .agent(&agent_id)
            .and_then(|agent| agent["reports_received"].as_u64())
    };
    sleep_until(20);
    proxy.cut();
    // The agent notices the cut within 1.5 keep-alive intervals (7.5 s); from then on nothing
    // may arrive until the link is back.
    sleep_until(30);
    let after_cut_noticed = received(&server).unwrap_or(0);
    sleep_until(50);
    let at_end_of_cut = received(&server).unwrap_or(0);
    assert!(
        at_end_of_cut <= after_cut_noticed + 1,
        "reports kept arriving through the cut: {after_cut_noticed} at 30 s, {at_end_of_cut} at 50 s"
    );
    proxy.restore();
    sleep_until(70);
    broker.restart();

    wait_for(
        "120 reports in the server",
        Duration::from_secs(150),
        || (received(&server)? >= 120).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(3));
    let agent = server.agent(&agent_id).unwrap();
    assert_eq!(agent["reports_received"], 120, "{agent}");
    println!(
        "duplicates counted by the server: {}",
        agent["duplicate_reports"]
    );

    let outbox = state_dir.join("outbox");
    wait_for(
        "the outbox to empty as acknowledgements arrive",
        Duration::from_secs(30),
        || {
            let queued = std::fs::read_dir(&outbox)
                .unwrap()
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().ends_with(".msg"))
                .count();
            (queued == 0).then_some(())
        },
    );
}
