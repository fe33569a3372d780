//! Reports and statuses published by an agent through the embedded broker end up in the store and
//! in the HTTP API.

mod ingest_support;

use ingest_support::*;
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};
use tidegate_protocol::topics::TopicKind;
use tidegate_protocol::{decode, encode, AgentId, Message, OrderBody, Status, StatusState};

#[tokio::test]
async fn full_report_then_delta_updates_inventory() {
    let server = TestServer::embedded().await;
    let mut agent = TestAgent::connect(server.mqtt.unwrap(), "agent-1").await;

    let full = full_report(&agent.id, boot(1), 1, &["bash", "coreutils", "curl"]);
    agent.send(TopicKind::Report, &Message::Report(full)).await;
    let stored = server
        .wait_for_agent("agent-1", |a| a.reports_received == 1)
        .await;
    assert_eq!(stored.package_count, 3);
    assert_eq!(stored.hostname, "host-agent-1");
    assert_eq!(stored.last_report_unix_s, Some(COLLECTED_AT_UNIX_S + 1));

    // Removes curl and adds git and vim: bash, coreutils, git, vim.
    let delta = delta_report(&agent.id, boot(1), 2, 1, &["git", "vim"], &["curl"]);
    agent.send(TopicKind::Report, &Message::Report(delta)).await;
    let updated = server
        .wait_for_agent("agent-1", |a| a.reports_received == 2)
        .await;
    assert_eq!(updated.package_count, 4);
    assert_eq!(updated.duplicate_reports, 0);
    assert_eq!(updated.last_report_unix_s, Some(COLLECTED_AT_UNIX_S + 2));

    let stats = server.stats();
    assert_eq!(stats.reports_stored, 2);
    assert_eq!(stats.messages_dropped, 0);
    server.stop().await;
}

#[tokio::test]
async fn repeated_report_is_stored_once() {
    let server = TestServer::embedded().await;
    let mut agent = TestAgent::connect(server.mqtt.unwrap(), "agent-1").await;

    let report = Message::Report(full_report(&agent.id, boot(1), 1, &["bash", "curl"]));
    agent.send(TopicKind::Report, &report).await;
    agent.send(TopicKind::Report, &report).await;

    let stored = server
        .wait_for_agent("agent-1", |a| a.duplicate_reports == 1)
        .await;
    assert_eq!(stored.reports_received, 1);
    assert_eq!(stored.package_count, 2);
    assert_eq!(server.stats().reports_stored, 1);
    assert_eq!(server.stats().duplicate_reports, 1);
    server.stop().await;
}

#[tokio::test]
async fn stored_and_repeated_reports_are_acknowledged() {
    let server = TestServer::embedded().await;
    let mut agent = TestAgent::connect(server.mqtt.unwrap(), "agent-1").await;
    agent.subscribe_orders().await;

    let report = Message::Report(full_report(&agent.id, boot(1), 1, &["bash"]));
    for attempt in ["first", "repeated"] {
        agent.send(TopicKind::Report, &report).await;
        let publish = agent
            .next_publish(tokio::time::Instant::now() + WAIT)
            .await
            .unwrap_or_else(|| panic!("no acknowledgement of the {attempt} report"));
        assert!(!publish.retain);
        match decode(&publish.payload).unwrap() {
            Message::Order(order) => match order.body {
                OrderBody::ReportAck {
                    boot_id,
                    seqs,
                    server_time_unix_s,
                } => {
                    assert_eq!(boot_id, boot(1), "{attempt} report");
                    assert_eq!(seqs, vec![1], "{attempt} report");
                    assert!(server_time_unix_s > 1_700_000_000, "{attempt} report");
                }
                other => panic!("expected a report acknowledgement, got {other:?}"),
            },
            other => panic!("expected an order, got {other:?}"),
        }
    }
    assert_eq!(server.stats().report_acks_sent, 2);
    server.stop().await;
}

fn status(agent: &AgentId, state: StatusState, at_unix_s: i64) -> Message {
    Message::Status(Status {
        agent_id: agent.clone(),
        boot_id: boot(1),
        state,
        agent_version: "0.1.0".into(),
        session_present: false,
        at_unix_s,
    })
}

#[tokio::test]
async fn status_and_last_will_set_online_state() {
    let server = TestServer::embedded().await;
    let broker = server.mqtt.unwrap();
    let agent_id = AgentId::parse("agent-1").unwrap();
    let status_topic = tidegate_protocol::topics::topic(&agent_id, TopicKind::Status);

    // The agent's last will is its offline status, retained, as the agent sets it up.
    let offline = encode(&status(
        &agent_id,
        StatusState::Offline,
        COLLECTED_AT_UNIX_S,
    ))
    .unwrap();
    let mut options = MqttOptions::new("agent-1", broker.ip().to_string(), broker.port());
    options.set_last_will(LastWill::new(
        &status_topic,
        offline,
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let online = encode(&status(&agent_id, StatusState::Online, COLLECTED_AT_UNIX_S)).unwrap();
    client
        .publish(&status_topic, QoS::AtLeastOnce, true, online)
        .await
        .unwrap();
    let connection = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });

    let agent = server.wait_for_agent("agent-1", |a| a.online).await;
    assert_eq!(agent.agent_version.as_deref(), Some("0.1.0"));

    // Killing the connection without DISCONNECT makes the broker publish the will.
    connection.abort();
    let agent = server.wait_for_agent("agent-1", |a| !a.online).await;
    assert_eq!(agent.agent_version.as_deref(), Some("0.1.0"));
    assert_eq!(server.stats().statuses_recorded, 2);
    server.stop().await;
}
