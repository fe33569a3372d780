mod ingest_support;
use ingest_support::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tidegate_protocol::topics::{topic, TopicKind};
use tidegate_protocol::{encode, AgentId, Message};
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput() {
    let server = TestServer::embedded().await;
    let broker = server.mqtt.unwrap();
    let agents = 20u64;
    let per_agent = 1000u64;
    let mut tasks = Vec::new();
    let start = Instant::now();
    for a in 0..agents {
        tasks.push(tokio::spawn(async move {
            let id = AgentId::parse(&format!("agent-{a}")).unwrap();
            let mut options = MqttOptions::new(id.as_str(), broker.ip().to_string(), broker.port());
            options.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            let t = topic(&id, TopicKind::Report);
            let c2 = client.clone();
            let id2 = id.clone();
            tokio::spawn(async move {
                let full = encode(&Message::Report(full_report(&id2, boot(1), 1, &["bash"]))).unwrap();
                c2.publish(&t, QoS::AtLeastOnce, false, full).await.unwrap();
                for seq in 2..=per_agent {
                    let d = delta_report(&id2, boot(1), seq, seq - 1, &[&format!("p{seq}")], &[]);
                    c2.publish(&t, QoS::AtLeastOnce, false, encode(&Message::Report(d)).unwrap()).await.unwrap();
                }
            });
            let mut acks = 0;
            while acks < per_agent {
                if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await.unwrap() { acks += 1; }
            }
            // keep polling
            loop { if eventloop.poll().await.is_err() { break; } }
        }));
    }
    let total = agents * per_agent;
    wait_until("all stored", || async { server.stats().reports_stored >= total }).await;
    let elapsed = start.elapsed();
    eprintln!("{total} reports in {elapsed:?}: {:.0}/s, stats {:?}", total as f64 / elapsed.as_secs_f64(), server.stats());
    let agents_list = server.agents().await;
    assert_eq!(agents_list.len(), agents as usize);
    assert!(agents_list.iter().all(|a| a.package_count == per_agent));
}
