//! Turns successive inventories into reports: sequence numbers, full or delta bodies, and the
//! split of an encoded report into parts that each fit one MQTT packet. No IO.

use tidegate_protocol::topics::{topic, TopicKind};
use tidegate_protocol::{
    encode, AgentId, BootId, EncodeError, Inventory, Message, Report, ReportBody, ReportChunk,
};

use crate::outbox::OutboxMessage;

/// Bytes of an MQTT PUBLISH packet besides the topic and the payload: fixed header (at most 5),
/// topic length (2) and packet id (2), rounded up.
const PUBLISH_OVERHEAD_BYTES: usize = 16;

/// Bytes of an encoded [`ReportChunk`] besides its data: format byte, variant, agent id (at most
/// 64 + 1), boot id (16), and four varints (at most 10 each), rounded up.
const CHUNK_OVERHEAD_BYTES: usize = 160;

pub struct Reporter {
    agent_id: AgentId,
    boot_id: BootId,
    next_seq: u64,
    /// The inventory of the previous report and its sequence number: the base of the next delta.
    last: Option<(u64, Inventory)>,
}

impl Reporter {
    pub fn new(agent_id: AgentId, boot_id: BootId) -> Self {
        Self {
            agent_id,
            boot_id,
            next_seq: 1,
            last: None,
        }
    }

    pub fn boot_id(&self) -> BootId {
        self.boot_id
    }

    /// Returns the inventory of the previous report, the base a progress report changes.
    pub fn last_inventory(&self) -> Option<&Inventory> {
        self.last.as_ref().map(|(_, inventory)| inventory)
    }

    /// Builds the next report: full when `full` is set or there is no previous report, otherwise
    /// a delta against the previous report.
    pub fn next_report(
        &mut self,
        inventory: Inventory,
        full: bool,
        now_unix_s: i64,
        outbox_dropped: u64,
    ) -> Report {
        let seq = self.next_seq;
        self.next_seq += 1;
        let body = match &self.last {
            Some((base_seq, base)) if !full => ReportBody::Delta {
                base_seq: *base_seq,
                delta: base.diff(&inventory),
            },
            _ => ReportBody::Full(inventory.clone()),
        };
        self.last = Some((seq, inventory));
        Report {
            agent_id: self.agent_id.clone(),
            boot_id: self.boot_id,
            seq,
            collected_at_unix_s: now_unix_s,
            outbox_dropped,
            body,
        }
    }

    /// Encodes a report into outbox messages: one when it fits `max_packet_bytes`, otherwise
    /// [`ReportChunk`] parts that each fit.
    pub fn to_outbox_messages(
        &self,
        report: &Report,
        max_packet_bytes: usize,
    ) -> Result<Vec<OutboxMessage>, EncodeError> {
        let report_topic = topic(&report.agent_id, TopicKind::Report);
        let encoded = encode(&Message::Report(report.clone()))?;
        let budget = max_packet_bytes.saturating_sub(PUBLISH_OVERHEAD_BYTES + report_topic.len());
        let message = |payload| OutboxMessage {
            boot_id: report.boot_id,
            seq: report.seq,
            topic: report_topic.clone(),
            payload,
        };
        if encoded.len() <= budget {
            return Ok(vec![message(encoded)]);
        }

        let part_size = budget.saturating_sub(CHUNK_OVERHEAD_BYTES).max(1);
        let count = encoded.len().div_ceil(part_size) as u32;
        encoded
            .chunks(part_size)
            .enumerate()
            .map(|(index, bytes)| {
                let chunk = ReportChunk {
                    agent_id: report.agent_id.clone(),
                    boot_id: report.boot_id,
                    seq: report.seq,
                    index: index as u32,
                    count,
                    bytes: bytes.to_vec(),
                };
                encode(&Message::ReportChunk(chunk)).map(message)
            })
            .collect()
    }
}

/// Returns the encoded sizes of a full report of the inventory below `root` and of a delta in
/// which one package changed version, for the benchmark script.
pub fn wire_sizes(root: &std::path::Path) -> Result<(usize, usize), EncodeError> {
    let inventory = crate::collect::Collector::new(root).collect();
    let mut changed = inventory.clone();
    if let Some(package) = changed.packages.first_mut() {
        package.version.push_str("+bench1");
    }
    let mut reporter = Reporter::new(
        AgentId::parse("0123456789abcdef0123456789abcdef").expect("valid id"),
        BootId([0; 16]),
    );
    let full = reporter.next_report(inventory, true, 1_780_000_000, 0);
    let delta = reporter.next_report(changed, false, 1_780_000_060, 0);
    let full_bytes = encode(&Message::Report(full))?.len();
    let delta_bytes = encode(&Message::Report(delta))?.len();
    Ok((full_bytes, delta_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tidegate_protocol::{decode, Ecosystem, InstallState, Package, Selection};

    fn inventory(count: usize, seed: u32) -> Inventory {
        let mut inventory = Inventory::default();
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        for i in 0..count {
            // A small xorshift makes names that DEFLATE cannot shrink to nothing.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            inventory.packages.push(Package {
                ecosystem: Ecosystem::Deb,
                name: format!("pkg-{i}-{state:x}"),
                arch: "amd64".into(),
                version: format!("{}.{}-{}", state % 10, state % 97, i),
                state: InstallState::Installed,
                selection: Selection::Install,
                provides: vec![],
            });
        }
        inventory.normalize();
        inventory
    }

    fn reporter() -> Reporter {
        Reporter::new(AgentId::parse("a1").unwrap(), BootId([5; 16]))
    }

    #[test]
    fn first_report_is_full_then_deltas() {
        let mut reporter = reporter();
        let first = reporter.next_report(inventory(3, 1), false, 100, 0);
        let second = reporter.next_report(inventory(3, 1), false, 160, 0);
        assert_eq!(first.seq, 1);
        assert!(matches!(first.body, ReportBody::Full(_)));
        assert_eq!(second.seq, 2);
        match second.body {
            ReportBody::Delta { base_seq, delta } => {
                assert_eq!(base_seq, 1);
                assert!(delta.is_empty());
            }
            other => panic!("expected a delta, got {}", other.kind()),
        }
        let third = reporter.next_report(inventory(3, 1), true, 200, 0);
        assert!(matches!(third.body, ReportBody::Full(_)));
    }

    #[test]
    fn small_report_is_one_message() {
        let mut reporter = reporter();
        let report = reporter.next_report(inventory(2, 1), false, 0, 0);
        let messages = reporter.to_outbox_messages(&report, 64 * 1024).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(
            decode(&messages[0].payload).unwrap(),
            Message::Report(report)
        );
    }

    fn reassemble(messages: &[OutboxMessage]) -> Message {
        let mut joined = vec![];
        for (i, message) in messages.iter().enumerate() {
            match decode(&message.payload).unwrap() {
                Message::ReportChunk(chunk) => {
                    assert_eq!(chunk.index as usize, i);
                    assert_eq!(chunk.count as usize, messages.len());
                    joined.extend(chunk.bytes);
                }
                other => panic!("expected a chunk, got {}", other.kind()),
            }
        }
        decode(&joined).unwrap()
    }

    proptest! {
        #[test]
        fn every_part_fits_and_parts_rebuild_the_report(count in 0usize..1500, limit in 1024usize..20_000) {
            let mut reporter = reporter();
            let report = reporter.next_report(inventory(count, count as u32), false, 0, 0);
            let messages = reporter.to_outbox_messages(&report, limit).unwrap();
            for message in &messages {
                prop_assert!(message.payload.len() + message.topic.len() + PUBLISH_OVERHEAD_BYTES <= limit);
                prop_assert_eq!(message.seq, report.seq);
            }
            if messages.len() > 1 {
                prop_assert_eq!(reassemble(&messages), Message::Report(report));
            }
        }
    }
}
