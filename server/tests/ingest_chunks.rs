//! Reports split into chunks are reassembled before they are stored.

mod ingest_support;

use ingest_support::*;
use tidegate_protocol::topics::TopicKind;
use tidegate_protocol::{encode, Message, Report, ReportChunk};

/// Splits the envelope of `report` into `count` chunks of nearly equal size.
fn chunks(report: &Report, count: u32) -> Vec<Message> {
    let bytes = encode(&Message::Report(report.clone())).unwrap();
    let size = bytes.len().div_ceil(count as usize);
    let parts: Vec<&[u8]> = bytes.chunks(size).collect();
    assert_eq!(parts.len(), count as usize);
    parts
        .into_iter()
        .enumerate()
        .map(|(index, part)| {
            Message::ReportChunk(ReportChunk {
                agent_id: report.agent_id.clone(),
                boot_id: report.boot_id,
                seq: report.seq,
                index: index as u32,
                count,
                bytes: part.to_vec(),
            })
        })
        .collect()
}

fn fifty_packages() -> Vec<String> {
    (0..50).map(|n| format!("package-{n:02}")).collect()
}

#[tokio::test]
async fn three_chunks_reassemble_into_report() {
    let server = TestServer::embedded().await;
    let mut agent = TestAgent::connect(server.mqtt.unwrap(), "agent-1").await;

    let names = fifty_packages();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let report = full_report(&agent.id, boot(1), 1, &names);
    for chunk in chunks(&report, 3) {
        agent.send(TopicKind::Report, &chunk).await;
    }

    let stored = server
        .wait_for_agent("agent-1", |a| a.reports_received == 1)
        .await;
    assert_eq!(stored.package_count, 50);
    assert_eq!(server.stats().reports_stored, 1);
    assert_eq!(server.stats().messages_dropped, 0);
    server.stop().await;
}

#[tokio::test]
async fn chunks_out_of_order_reassemble() {
    let server = TestServer::embedded().await;
    let mut agent = TestAgent::connect(server.mqtt.unwrap(), "agent-1").await;

    let names = fifty_packages();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let report = full_report(&agent.id, boot(1), 1, &names);
    let parts = chunks(&report, 3);
    for index in [2, 0, 1] {
        agent.send(TopicKind::Report, &parts[index]).await;
    }

    let stored = server
        .wait_for_agent("agent-1", |a| a.reports_received == 1)
        .await;
    assert_eq!(stored.package_count, 50);
    server.stop().await;
}

#[tokio::test]
async fn chunks_of_another_agent_are_dropped() {
    let server = TestServer::embedded().await;
    let mut agent = TestAgent::connect(server.mqtt.unwrap(), "agent-1").await;
    let other = tidegate_protocol::AgentId::parse("agent-2").unwrap();

    // agent-1 sends chunks of agent-2's report on its own topic: each chunk is dropped.
    let report = full_report(&other, boot(1), 1, &["bash", "curl"]);
    for chunk in chunks(&report, 2) {
        agent.send(TopicKind::Report, &chunk).await;
    }
    wait_until("both chunks dropped", || async {
        server.stats().messages_dropped == 2
    })
    .await;
    assert!(server.agents().await.is_empty());
    server.stop().await;
}
