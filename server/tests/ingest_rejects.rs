//! Payloads that fail a check are dropped without harm: nothing is stored, and the server goes on
//! ingesting valid reports.

mod ingest_support;

use ingest_support::*;
use tidegate_protocol::topics::TopicKind;
use tidegate_protocol::{encode, AgentId, Message, Status, StatusState};

#[tokio::test]
async fn invalid_payloads_are_dropped() {
    let server = TestServer::embedded().await;
    let mut agent = TestAgent::connect(server.mqtt.unwrap(), "agent-1").await;
    let report_topic = agent.topic(TopicKind::Report);
    let other = AgentId::parse("agent-2").unwrap();

    // An unknown format byte.
    let mut unknown_format = encode(&Message::Report(full_report(
        &agent.id,
        boot(1),
        1,
        &["bash"],
    )))
    .unwrap();
    unknown_format[0] = 9;
    agent.send_raw(&report_topic, unknown_format).await;
    // Format 1 with a message kind that does not exist.
    agent.send_raw(&report_topic, vec![1, 200, 7]).await;
    // An empty payload.
    agent.send_raw(&report_topic, Vec::new()).await;
    // agent-2's report on agent-1's topic.
    let foreign = Message::Report(full_report(&other, boot(1), 1, &["bash"]));
    agent.send(TopicKind::Report, &foreign).await;
    // agent-2's status on agent-1's status topic.
    let foreign_status = Message::Status(Status {
        agent_id: other.clone(),
        boot_id: boot(1),
        state: StatusState::Online,
        agent_version: "0.1.0".into(),
        session_present: false,
        at_unix_s: COLLECTED_AT_UNIX_S,
    });
    agent.send(TopicKind::Status, &foreign_status).await;
    // A status on the report topic.
    let own_status = Message::Status(Status {
        agent_id: agent.id.clone(),
        ..match &foreign_status {
            Message::Status(status) => status.clone(),
            _ => unreachable!(),
        }
    });
    agent.send(TopicKind::Report, &own_status).await;
    // A topic with an invalid agent id.
    agent
        .send_raw("tidegate/v1/agent/AGENT-1/report", vec![1, 0])
        .await;

    wait_until("all 7 messages dropped", || async {
        server.stats().messages_dropped == 7
    })
    .await;
    assert_eq!(server.stats().publishes_received, 7);
    assert!(server.agents().await.is_empty(), "nothing stored");

    // The server still ingests a valid report.
    let valid = Message::Report(full_report(&agent.id, boot(1), 1, &["bash", "curl"]));
    agent.send(TopicKind::Report, &valid).await;
    let stored = server
        .wait_for_agent("agent-1", |a| a.reports_received == 1)
        .await;
    assert_eq!(stored.package_count, 2);
    assert_eq!(server.agents().await.len(), 1);
    server.stop().await;
}
