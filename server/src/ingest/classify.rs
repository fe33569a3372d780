//! Turning one received MQTT publish into something to store, or into a logged drop.
//!
//! Nothing here panics on what an agent sends: an unknown topic, an invalid envelope, a message of
//! the wrong kind for its topic or a payload whose agent id differs from the topic's is dropped with
//! a warning. Warnings are rate-limited per kind of problem, because one broken or hostile client
//! could otherwise fill the log.

use std::time::Duration;

use tidegate_protocol::topics::{parse_topic, TopicKind};
use tidegate_protocol::{decode, AgentId, Message};
use tracing::{debug, warn};

use super::chunks::{ChunkAssembler, ChunkOutcome};
use crate::store::Incoming;

/// The decision for one publish.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a value lives only until its message is queued; boxing would allocate per message"
)]
pub enum Classified {
    /// Store this message.
    Store(Incoming),
    /// A report part was kept for reassembly, or repeated one already kept.
    ChunkKept,
    /// An event, logged only.
    EventLogged,
    /// The message was dropped, and a warning was logged unless rate-limited.
    Dropped,
}

/// Warnings allowed per kind of problem and [`LOG_WINDOW`]; the rest are counted, and the count
/// is logged with the next warning that is let through.
const LOG_BUDGET: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// A rate limit for one kind of log line.
#[derive(Debug, Default)]
pub struct LogBudget {
    window_start: Option<Duration>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    /// Returns `Some(suppressed)` when a line may be logged now, with the number of lines
    /// suppressed since the last one, or `None` when this line must be suppressed.
    pub fn take(&mut self, now: Duration) -> Option<u64> {
        let window_over = match self.window_start {
            Some(start) => now.saturating_sub(start) >= LOG_WINDOW,
            None => true,
        };
        if window_over {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used >= LOG_BUDGET {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Classifies publishes and reassembles chunked reports. Used by one task.
#[derive(Default)]
pub struct Classifier {
    assembler: ChunkAssembler,
    unknown_topic: LogBudget,
    invalid_payload: LogBudget,
    wrong_sender: LogBudget,
    invalid_chunk: LogBudget,
}

impl Classifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Classifies one publish. `now` is monotonic time and `now_unix_s` the wall-clock time that is
    /// stored as the time of receipt.
    pub fn classify(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Duration,
        now_unix_s: i64,
    ) -> Classified {
        let Some((topic_agent, kind)) = parse_topic(topic) else {
            if let Some(suppressed) = self.unknown_topic.take(now) {
                warn!(topic, suppressed, "dropped a message on an unknown topic");
            }
            return Classified::Dropped;
        };

        match kind {
            TopicKind::Event => {
                // The protocol has no event message yet; events are only counted in the log.
                debug!(agent.id = %topic_agent, bytes = payload.len(), "received an event");
                return Classified::EventLogged;
            }
            TopicKind::Order => {
                debug!(agent.id = %topic_agent, topic, "ignored a message on an order topic");
                return Classified::Dropped;
            }
            TopicKind::Report | TopicKind::Status => {}
        }

        let message = match decode(payload) {
            Ok(message) => message,
            Err(error) => {
                if let Some(suppressed) = self.invalid_payload.take(now) {
                    warn!(
                        agent.id = %topic_agent,
                        topic,
                        %error,
                        suppressed,
                        "dropped an invalid payload"
                    );
                }
                return Classified::Dropped;
            }
        };

        let payload_agent = match (&message, kind) {
            (Message::Report(report), TopicKind::Report) => &report.agent_id,
            (Message::ReportChunk(chunk), TopicKind::Report) => &chunk.agent_id,
            (Message::Status(status), TopicKind::Status) => &status.agent_id,
            (message, _) => {
                if let Some(suppressed) = self.invalid_payload.take(now) {
                    warn!(
                        agent.id = %topic_agent,
                        topic,
                        kind = message.kind(),
                        suppressed,
                        "dropped a message of the wrong kind for its topic"
                    );
                }
                return Classified::Dropped;
            }
        };
        if *payload_agent != topic_agent {
            self.warn_wrong_sender(&topic_agent, payload_agent, topic, now);
            return Classified::Dropped;
        }

        match message {
            Message::Report(report) => Classified::Store(Incoming::Report {
                report,
                received_at_unix_s: now_unix_s,
            }),
            Message::Status(status) => Classified::Store(Incoming::Status {
                status,
                received_at_unix_s: now_unix_s,
            }),
            Message::ReportChunk(chunk) => {
                let (boot_id, seq, index, count) =
                    (chunk.boot_id, chunk.seq, chunk.index, chunk.count);
                match self.assembler.add(chunk, now) {
                    ChunkOutcome::Incomplete | ChunkOutcome::DuplicatePart => Classified::ChunkKept,
                    ChunkOutcome::Complete(report) => Classified::Store(Incoming::Report {
                        report: *report,
                        received_at_unix_s: now_unix_s,
                    }),
                    ChunkOutcome::Rejected(error) => {
                        if let Some(suppressed) = self.invalid_chunk.take(now) {
                            warn!(
                                agent.id = %topic_agent,
                                boot.id = %boot_id,
                                seq,
                                index,
                                count,
                                %error,
                                suppressed,
                                "dropped a chunked report"
                            );
                        }
                        Classified::Dropped
                    }
                }
            }
            Message::Order(_) => unreachable!("orders are dropped above"),
        }
    }

    fn warn_wrong_sender(
        &mut self,
        topic_agent: &AgentId,
        payload_agent: &AgentId,
        topic: &str,
        now: Duration,
    ) {
        if let Some(suppressed) = self.wrong_sender.take(now) {
            warn!(
                agent.id = %topic_agent,
                payload_agent_id = %payload_agent,
                topic,
                suppressed,
                "dropped a message whose agent id differs from its topic's"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_protocol::topics::topic;
    use tidegate_protocol::{
        encode, BootId, Inventory, Order, OrderBody, OrderId, Report, ReportBody, ReportChunk,
        Status, StatusState,
    };

    const NOW: Duration = Duration::from_secs(5);
    const NOW_UNIX_S: i64 = 1_780_000_000;

    fn agent(id: &str) -> AgentId {
        AgentId::parse(id).unwrap()
    }

    fn report(agent_id: &str) -> Report {
        Report {
            agent_id: agent(agent_id),
            boot_id: BootId([1; 16]),
            seq: 1,
            collected_at_unix_s: NOW_UNIX_S - 10,
            outbox_dropped: 0,
            body: ReportBody::Full(Inventory::default()),
        }
    }

    fn status(agent_id: &str) -> Status {
        Status {
            agent_id: agent(agent_id),
            boot_id: BootId([1; 16]),
            state: StatusState::Online,
            agent_version: "0.1.0".into(),
            session_present: false,
            at_unix_s: NOW_UNIX_S,
        }
    }

    fn classify(topic: &str, message: &Message) -> Classified {
        Classifier::new().classify(topic, &encode(message).unwrap(), NOW, NOW_UNIX_S)
    }

    #[test]
    fn report_on_own_topic_is_stored() {
        let message = Message::Report(report("a1"));
        let outcome = classify(&topic(&agent("a1"), TopicKind::Report), &message);
        match outcome {
            Classified::Store(Incoming::Report {
                report: stored,
                received_at_unix_s,
            }) => {
                assert_eq!(stored, report("a1"));
                assert_eq!(received_at_unix_s, NOW_UNIX_S);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_on_own_topic_is_stored() {
        let outcome = classify(
            &topic(&agent("a1"), TopicKind::Status),
            &Message::Status(status("a1")),
        );
        assert!(
            matches!(outcome, Classified::Store(Incoming::Status { .. })),
            "{outcome:?}"
        );
    }

    #[test]
    fn agent_id_mismatch_is_dropped() {
        let report_topic = topic(&agent("a1"), TopicKind::Report);
        let status_topic = topic(&agent("a1"), TopicKind::Status);
        let outcome = classify(&report_topic, &Message::Report(report("a2")));
        assert!(matches!(outcome, Classified::Dropped), "{outcome:?}");
        let outcome = classify(&status_topic, &Message::Status(status("a2")));
        assert!(matches!(outcome, Classified::Dropped), "{outcome:?}");
    }

    #[test]
    fn wrong_kind_for_topic_is_dropped() {
        let status_topic = topic(&agent("a1"), TopicKind::Status);
        let report_topic = topic(&agent("a1"), TopicKind::Report);
        let order = Message::Order(Order {
            order_id: OrderId([0; 16]),
            body: OrderBody::Resync { reason: "x".into() },
        });
        assert!(matches!(
            classify(&status_topic, &Message::Report(report("a1"))),
            Classified::Dropped
        ));
        assert!(matches!(
            classify(&report_topic, &Message::Status(status("a1"))),
            Classified::Dropped
        ));
        assert!(matches!(
            classify(&report_topic, &order),
            Classified::Dropped
        ));
    }

    #[test]
    fn invalid_payloads_and_topics_are_dropped() {
        let mut classifier = Classifier::new();
        let report_topic = topic(&agent("a1"), TopicKind::Report);
        let cases: [(&str, &[u8]); 5] = [
            (&report_topic, &[]),
            (&report_topic, &[9, 0, 0]),
            (&report_topic, &[1, 200]),
            ("tidegate/v1/agent/UPPER/report", &[1]),
            ("other/topic", &[1]),
        ];
        for (topic, payload) in cases {
            let outcome = classifier.classify(topic, payload, NOW, NOW_UNIX_S);
            assert!(
                matches!(outcome, Classified::Dropped),
                "{topic} {payload:?}: {outcome:?}"
            );
        }
    }

    #[test]
    fn event_is_logged_only() {
        let outcome = Classifier::new().classify(
            &topic(&agent("a1"), TopicKind::Event),
            b"anything",
            NOW,
            NOW_UNIX_S,
        );
        assert!(matches!(outcome, Classified::EventLogged));
    }

    #[test]
    fn chunks_are_reassembled_into_a_report() {
        let expected = report("a1");
        let bytes = encode(&Message::Report(expected.clone())).unwrap();
        let (first, second) = bytes.split_at(bytes.len() / 2);
        let chunk = |index: u32, part: &[u8]| {
            Message::ReportChunk(ReportChunk {
                agent_id: agent("a1"),
                boot_id: expected.boot_id,
                seq: expected.seq,
                index,
                count: 2,
                bytes: part.to_vec(),
            })
        };
        let report_topic = topic(&agent("a1"), TopicKind::Report);
        let mut classifier = Classifier::new();
        let outcome = classifier.classify(
            &report_topic,
            &encode(&chunk(0, first)).unwrap(),
            NOW,
            NOW_UNIX_S,
        );
        assert!(matches!(outcome, Classified::ChunkKept), "{outcome:?}");
        let outcome = classifier.classify(
            &report_topic,
            &encode(&chunk(1, second)).unwrap(),
            NOW,
            NOW_UNIX_S,
        );
        match outcome {
            Classified::Store(Incoming::Report { report, .. }) => assert_eq!(report, expected),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn log_budget_allows_ten_lines_per_window() {
        let mut budget = LogBudget::default();
        for _ in 0..10 {
            assert_eq!(budget.take(NOW), Some(0));
        }
        assert_eq!(budget.take(NOW), None);
        assert_eq!(budget.take(NOW + Duration::from_secs(59)), None);
        // A new window starts 60 s after the first line and reports the two suppressed lines.
        assert_eq!(budget.take(NOW + LOG_WINDOW), Some(2));
        assert_eq!(budget.take(NOW + LOG_WINDOW), Some(0));
    }
}
