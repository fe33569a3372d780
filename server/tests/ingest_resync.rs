//! After storing reports the server acknowledges them to the agent. A delta the store cannot apply
//! makes it order the agent to resync, at most once a minute until a full report of the agent is
//! stored. Both orders travel on the agent's order topic and are not retained.

mod ingest_support;

use std::sync::Arc;
use std::time::Duration;

use ingest_support::*;
use tidegate_protocol::topics::TopicKind;
use tidegate_protocol::{decode, BootId, Message, Order, OrderBody, OrderId};
use tidegate_server::ingest::IngestDeps;
use tokio::time::Instant;

/// The order id made of the counting random numbers `first` and `first + 1`, little-endian.
fn order_id(first: u8) -> OrderId {
    let mut id = [0u8; 16];
    id[0] = first;
    id[8] = first + 1;
    OrderId(id)
}

async fn next_order(agent: &mut TestAgent) -> Order {
    let publish = agent
        .next_publish(Instant::now() + WAIT)
        .await
        .expect("order delivered");
    assert_eq!(publish.topic, agent.topic(TopicKind::Order));
    assert!(!publish.retain, "orders are not retained");
    match decode(&publish.payload).expect("order decodes") {
        Message::Order(order) => order,
        other => panic!("expected an order, got {other:?}"),
    }
}

async fn expect_resync(agent: &mut TestAgent, expected_id: OrderId) {
    let order = next_order(agent).await;
    assert_eq!(order.order_id, expected_id);
    match order.body {
        OrderBody::Resync { reason } => assert!(!reason.is_empty(), "the order says why"),
        other => panic!("expected a resync order, got {other:?}"),
    }
}

async fn expect_report_ack(
    agent: &mut TestAgent,
    expected_id: OrderId,
    boot_id: BootId,
    seqs: &[u64],
) {
    let order = next_order(agent).await;
    assert_eq!(order.order_id, expected_id);
    match order.body {
        OrderBody::ReportAck {
            boot_id: acknowledged_boot,
            seqs: acknowledged,
            server_time_unix_s,
        } => {
            assert_eq!(acknowledged_boot, boot_id);
            assert_eq!(acknowledged, seqs.to_vec());
            assert!(server_time_unix_s > 1_700_000_000);
        }
        other => panic!("expected a report acknowledgement, got {other:?}"),
    }
}

/// Each step sends one report and waits for its effect, so every report is a batch of its own.
/// Per batch the server draws two random numbers per order: first for a resync order, then for
/// the report acknowledgement.
#[tokio::test]
async fn delta_without_base_orders_resync() {
    let clock = ManualClock::new();
    let deps = IngestDeps {
        clock: clock.clone(),
        random: Arc::new(CountingRandom::default()),
    };
    let server = TestServer::embedded_with(deps).await;
    let broker = server.mqtt.unwrap();
    let mut agent = TestAgent::connect(broker, "agent-1").await;
    agent.subscribe_orders().await;
    let id = agent.id.clone();

    // The server has no report of this agent, so a delta against report 4 cannot be applied.
    let delta = delta_report(&id, boot(1), 5, 4, &["git"], &[]);
    agent.send(TopicKind::Report, &Message::Report(delta)).await;
    expect_resync(&mut agent, order_id(1)).await;
    expect_report_ack(&mut agent, order_id(3), boot(1), &[5]).await;

    // A new subscriber to the order topic gets nothing: no order was retained.
    let mut late = TestAgent::connect(broker, "agent-1-viewer").await;
    late.subscribe_orders_of(&id).await;
    assert!(late.next_publish(Instant::now() + QUIET).await.is_none());

    // Another gap within a minute is recorded and acknowledged, but not ordered again.
    let delta = delta_report(&id, boot(1), 6, 5, &["vim"], &[]);
    agent.send(TopicKind::Report, &Message::Report(delta)).await;
    expect_report_ack(&mut agent, order_id(5), boot(1), &[6]).await;
    assert_eq!(server.stats().reports_needing_resync, 2);
    assert_eq!(server.stats().resync_orders_sent, 1);
    assert!(agent.next_publish(Instant::now() + QUIET).await.is_none());

    // A minute later the next gap is ordered again.
    clock.advance(Duration::from_secs(60));
    let delta = delta_report(&id, boot(1), 7, 6, &["vim"], &[]);
    agent.send(TopicKind::Report, &Message::Report(delta)).await;
    expect_resync(&mut agent, order_id(7)).await;
    expect_report_ack(&mut agent, order_id(9), boot(1), &[7]).await;

    // A stored full report lifts the limit at once.
    let full = full_report(&id, boot(1), 8, &["bash"]);
    agent.send(TopicKind::Report, &Message::Report(full)).await;
    expect_report_ack(&mut agent, order_id(11), boot(1), &[8]).await;
    let delta = delta_report(&id, boot(1), 10, 9, &["vim"], &[]);
    agent.send(TopicKind::Report, &Message::Report(delta)).await;
    expect_resync(&mut agent, order_id(13)).await;
    expect_report_ack(&mut agent, order_id(15), boot(1), &[10]).await;

    let stats = server.stats();
    assert_eq!(stats.resync_orders_sent, 3);
    assert_eq!(stats.reports_needing_resync, 4);
    assert_eq!(stats.report_acks_sent, 5);
    server.stop().await;
}
