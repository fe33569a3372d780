//! The store thread: batches received messages into store transactions, and decides which orders
//! follow from them: a report acknowledgement for every stored report, and resync orders.
//!
//! This thread is the only user of the [`Store`]. It takes messages in the order they were
//! received, up to [`MAX_BATCH`] at a time, stores them in one transaction, and only then hands
//! their acknowledgements on, in the same order (rumqttd disconnects a client that acknowledges
//! out of order). A message whose transaction did not commit is never acknowledged here.
//!
//! When the store fails a batch, the thread stores its messages one by one: when some succeed, the
//! ones that fail alone are dropped with an error and acknowledged, so one message the store always
//! rejects cannot stop ingest. When all fail, the store itself is failing (disk full, file
//! removed): the thread waits with growing delays and retries, adding newly received messages to
//! the batch, and nothing is acknowledged until it succeeds.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidegate_protocol::{AgentId, BootId, Order, OrderBody, OrderId, ReportBody};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::clock::{Clock, RandomSource};
use super::IngestCounters;
use crate::store::{Incoming, IngestOutcome, Store};

/// The maximum number of messages stored in one transaction. Larger batches commit less often per
/// message, and this many keeps one transaction short (about 2 ms per 100 small deltas, measured
/// once on a development machine).
pub const MAX_BATCH: usize = 1000;

/// The shortest time between two resync orders to one agent. A delta that cannot be applied
/// usually comes with more deltas behind it, and each would otherwise ask again.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(60);

const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// One received message on its way to the store. `A` is what acknowledges it to the broker.
pub struct Item<A> {
    /// The message to store, or `None` for a message that is only acknowledged (a dropped
    /// message, a report part, an event).
    pub incoming: Option<Incoming>,
    /// `None` for a QoS 0 message.
    pub ack: Option<A>,
}

/// The result of one committed batch: acknowledgements in the order the messages were received,
/// and orders to publish.
pub struct AfterCommit<A> {
    pub acks: Vec<A>,
    pub orders: Vec<(AgentId, Order)>,
}

/// Remembers when each agent was last ordered to resync.
#[derive(Debug, Default)]
pub struct ResyncLimiter {
    sent_at: HashMap<AgentId, Duration>,
    prune_above: usize,
}

impl ResyncLimiter {
    /// Returns whether to order `agent` to resync at monotonic time `now`, and if so records it.
    pub fn should_send(&mut self, agent: &AgentId, now: Duration) -> bool {
        if let Some(sent) = self.sent_at.get(agent) {
            if now.saturating_sub(*sent) < RESYNC_INTERVAL {
                return false;
            }
        }
        self.sent_at.insert(agent.clone(), now);
        self.prune(now);
        true
    }

    /// Forgets `agent` after a full report of it was stored, so the next gap is reported at once.
    pub fn full_report_stored(&mut self, agent: &AgentId) {
        self.sent_at.remove(agent);
    }

    /// Drops entries older than the interval, which no longer limit anything. Pruning only when
    /// the map doubled keeps its cost constant per entry.
    fn prune(&mut self, now: Duration) {
        if self.sent_at.len() <= self.prune_above {
            return;
        }
        self.sent_at
            .retain(|_, sent| now.saturating_sub(*sent) < RESYNC_INTERVAL);
        self.prune_above = (self.sent_at.len() * 2).max(1024);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sent_at.len()
    }
}

pub struct Writer<A> {
    pub store: Store,
    pub events: Arc<super::IngestEvents>,
    pub items: mpsc::Receiver<Item<A>>,
    pub after_commit: mpsc::UnboundedSender<AfterCommit<A>>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn RandomSource>,
    pub counters: Arc<IngestCounters>,
    /// Set when the server stops, so a failing store is not retried for ever.
    pub stopping: Arc<AtomicBool>,
}

impl<A: Send> Writer<A> {
    /// Runs until the item channel is closed and drained.
    pub fn run(mut self) {
        let mut resync = ResyncLimiter::default();
        while let Some(first) = self.items.blocking_recv() {
            let mut batch = vec![first];
            self.fill(&mut batch);

            let Some(outcomes) = self.commit(&mut batch) else {
                let unstored = batch.iter().filter(|item| item.incoming.is_some()).count();
                error!(
                    messages = unstored,
                    "stopping with messages that could not be stored; they were not acknowledged"
                );
                return;
            };

            let orders = self.plan_orders(&batch, &outcomes, &mut resync);
            self.events.committed(came_online(&batch, &outcomes));
            let acks = batch.into_iter().filter_map(|item| item.ack).collect();
            if self
                .after_commit
                .send(AfterCommit { acks, orders })
                .is_err()
            {
                debug!("acknowledgement task is gone; stopping the store thread");
                return;
            }
        }
        debug!("store thread stopped: no more messages");
    }

    fn fill(&mut self, batch: &mut Vec<Item<A>>) {
        while batch.len() < MAX_BATCH {
            match self.items.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
    }

    /// Stores the batch and returns one outcome per item (`None` for items with nothing to store
    /// or dropped after the store rejected them alone), or `None` when the server stops first.
    fn commit(&mut self, batch: &mut Vec<Item<A>>) -> Option<Vec<Option<IngestOutcome>>> {
        let mut delay = RETRY_BASE;
        let mut attempt = 1u32;
        loop {
            let incoming: Vec<Incoming> = batch
                .iter()
                .filter_map(|item| item.incoming.clone())
                .collect();
            if incoming.is_empty() {
                return Some(batch.iter().map(|_| None).collect());
            }
            let count = incoming.len();
            let error = match self.store.ingest(incoming) {
                Ok(outcomes) => return Some(spread(batch, outcomes)),
                Err(error) => error,
            };
            IngestCounters::add(&self.counters.store_failures, 1);

            if count > 1 {
                if let Some(outcomes) = self.commit_one_by_one(batch) {
                    return Some(outcomes);
                }
            }

            if self.stopping.load(Ordering::Relaxed) {
                return None;
            }
            error!(
                %error,
                messages = count,
                attempt,
                retry_in = ?delay,
                "failed to store a batch; nothing of it is acknowledged until it is stored"
            );
            self.sleep_unless_stopping(delay);
            delay = (delay * 2).min(RETRY_CAP);
            attempt += 1;
            self.fill(batch);
        }
    }

    /// Stores each item in its own transaction. Returns `None` when every item failed, which
    /// points at the store rather than at the messages.
    fn commit_one_by_one(&mut self, batch: &[Item<A>]) -> Option<Vec<Option<IngestOutcome>>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut failures = Vec::new();
        let mut stored_any = false;
        for item in batch {
            let Some(incoming) = &item.incoming else {
                outcomes.push(None);
                continue;
            };
            match self.store.ingest(vec![incoming.clone()]) {
                Ok(mut single) => {
                    stored_any = true;
                    outcomes.push(single.pop());
                }
                Err(error) => {
                    failures.push((incoming, error));
                    outcomes.push(None);
                }
            }
        }
        if !stored_any {
            return None;
        }
        for (incoming, error) in failures {
            let (kind, agent_id) = describe(incoming);
            error!(
                agent.id = %agent_id,
                kind,
                %error,
                "dropped a message that the store rejected while others in its batch were stored"
            );
            IngestCounters::add(&self.counters.messages_dropped, 1);
        }
        Some(outcomes)
    }

    fn sleep_unless_stopping(&self, delay: Duration) {
        let step = Duration::from_millis(50);
        let mut slept = Duration::ZERO;
        while slept < delay && !self.stopping.load(Ordering::Relaxed) {
            std::thread::sleep(step.min(delay - slept));
            slept += step;
        }
    }

    /// Counts the outcomes and returns the orders to send: resync orders, and one report
    /// acknowledgement per agent and boot id for the reports of this batch.
    fn plan_orders(
        &self,
        batch: &[Item<A>],
        outcomes: &[Option<IngestOutcome>],
        resync: &mut ResyncLimiter,
    ) -> Vec<(AgentId, Order)> {
        let now = self.clock.monotonic();
        let mut orders = Vec::new();
        let mut stored_reports: BTreeMap<(AgentId, BootId), Vec<u64>> = BTreeMap::new();
        for (item, outcome) in batch.iter().zip(outcomes) {
            let (Some(incoming), Some(outcome)) = (&item.incoming, outcome) else {
                continue;
            };
            if let Incoming::Report { report, .. } = incoming {
                // Every outcome of a report means the store recorded it, a delta that needs a
                // resync included: sending it again would only make it a duplicate.
                stored_reports
                    .entry((report.agent_id.clone(), report.boot_id))
                    .or_default()
                    .push(report.seq);
            }
            match outcome {
                IngestOutcome::Stored => {
                    IngestCounters::add(&self.counters.reports_stored, 1);
                    if let Incoming::Report { report, .. } = incoming {
                        if matches!(report.body, ReportBody::Full(_)) {
                            resync.full_report_stored(&report.agent_id);
                        }
                    }
                }
                IngestOutcome::Duplicate => {
                    IngestCounters::add(&self.counters.duplicate_reports, 1);
                }
                IngestOutcome::StatusRecorded => {
                    IngestCounters::add(&self.counters.statuses_recorded, 1);
                }
                IngestOutcome::NeedsResync { agent_id, reason } => {
                    IngestCounters::add(&self.counters.reports_needing_resync, 1);
                    if resync.should_send(agent_id, now) {
                        info!(agent.id = %agent_id, reason, "ordering agent to resync");
                        orders.push((agent_id.clone(), self.resync_order(reason)));
                    } else {
                        debug!(
                            agent.id = %agent_id,
                            reason,
                            "agent was ordered to resync less than {RESYNC_INTERVAL:?} ago"
                        );
                    }
                }
            }
        }
        let server_time_unix_s = self.clock.now_unix_s();
        for ((agent_id, boot_id), mut seqs) in stored_reports {
            seqs.sort_unstable();
            seqs.dedup();
            let ack = OrderBody::ReportAck {
                boot_id,
                seqs,
                server_time_unix_s,
            };
            orders.push((agent_id, self.order(ack)));
        }
        orders
    }

    fn resync_order(&self, reason: &str) -> Order {
        self.order(OrderBody::Resync {
            reason: reason.to_owned(),
        })
    }

    fn order(&self, body: OrderBody) -> Order {
        let mut order_id = [0u8; 16];
        order_id[..8].copy_from_slice(&self.random.next_u64().to_le_bytes());
        order_id[8..].copy_from_slice(&self.random.next_u64().to_le_bytes());
        Order {
            order_id: OrderId(order_id),
            body,
        }
    }
}

/// Places the store's outcomes, which cover only the items with something to store, beside
/// their items.
fn spread<A>(batch: &[Item<A>], outcomes: Vec<IngestOutcome>) -> Vec<Option<IngestOutcome>> {
    let mut outcomes = outcomes.into_iter();
    let spread = batch
        .iter()
        .map(|item| item.incoming.as_ref().and_then(|_| outcomes.next()))
        .collect();
    if outcomes.next().is_some() {
        warn!("the store returned more outcomes than messages; the extra ones are ignored");
    }
    spread
}

/// Lists the agents whose online status was recorded in this batch.
fn came_online<A>(batch: &[Item<A>], outcomes: &[Option<IngestOutcome>]) -> Vec<AgentId> {
    batch
        .iter()
        .zip(outcomes)
        .filter_map(|(item, outcome)| match (&item.incoming, outcome) {
            (Some(Incoming::Status { status, .. }), Some(IngestOutcome::StatusRecorded))
                if status.state == tidegate_protocol::StatusState::Online =>
            {
                Some(status.agent_id.clone())
            }
            _ => None,
        })
        .collect()
}

fn describe(incoming: &Incoming) -> (&'static str, &AgentId) {
    match incoming {
        Incoming::Report { report, .. } => ("report", &report.agent_id),
        Incoming::Status { status, .. } => ("status", &status.agent_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> AgentId {
        AgentId::parse(id).unwrap()
    }

    #[test]
    fn resync_is_limited_per_agent() {
        let mut limiter = ResyncLimiter::default();
        let t0 = Duration::from_secs(1000);
        assert!(limiter.should_send(&agent("a1"), t0));
        assert!(
            limiter.should_send(&agent("a2"), t0),
            "other agents are not limited"
        );
        assert!(!limiter.should_send(&agent("a1"), t0 + Duration::from_secs(59)));
        assert!(limiter.should_send(&agent("a1"), t0 + Duration::from_secs(60)));
    }

    #[test]
    fn full_report_lifts_the_limit() {
        let mut limiter = ResyncLimiter::default();
        let t0 = Duration::from_secs(1000);
        assert!(limiter.should_send(&agent("a1"), t0));
        limiter.full_report_stored(&agent("a1"));
        assert!(limiter.should_send(&agent("a1"), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn old_entries_are_pruned() {
        let mut limiter = ResyncLimiter::default();
        let t0 = Duration::from_secs(1000);
        // The map is pruned when it grows past 1024 entries, and then past twice the entries that
        // survived: all 1025 are recent at t0, so the next pruning waits for entry 2051.
        for n in 0..2050 {
            limiter.should_send(&agent(&format!("a{n}")), t0);
        }
        assert_eq!(limiter.len(), 2050);
        limiter.should_send(&agent("late"), t0 + RESYNC_INTERVAL);
        assert_eq!(limiter.len(), 1, "entries 60 s old are dropped");
    }
}
