//! The MQTT session of ingest: connecting, subscribing, receiving, acknowledging and reconnecting.
//!
//! Every connection attempt gets a fresh rumqttc client and event loop, so nothing queued for an
//! earlier connection (acknowledgements with that connection's packet ids, in-flight publishes) is
//! replayed on a later one. Each acknowledgement carries the client of the connection its publish
//! arrived on. Once that connection is gone, sending the acknowledgement fails harmlessly, and the
//! broker sends the publish again to the persistent session.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, MqttOptions, Outgoing, Packet, Publish, QoS,
    StateError, SubscribeFilter, SubscribeReasonCode,
};
use tidegate_protocol::topics::{topic, TopicKind};
use tidegate_protocol::{encode, AgentId, Message, Order, OrderBody};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::backoff::{self, Backoff};
use super::classify::{Classified, Classifier};
use super::clock::{Clock, RandomSource};
use super::writer::{AfterCommit, Item};
use super::{IngestCounters, IngestError};

/// The topics ingest subscribes to, for every agent.
pub const SUBSCRIBED: [TopicKind; 3] = [TopicKind::Report, TopicKind::Status, TopicKind::Event];

/// Capacity of the channel from the application to rumqttc's event loop, which carries
/// acknowledgements and orders.
const REQUEST_CAPACITY: usize = 1024;

/// How long shutdown keeps the connection up so that acknowledgements of stored messages go out.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Acknowledges one publish on the connection it arrived on.
pub struct AckToken {
    client: AsyncClient,
    pkid: u16,
    qos: QoS,
}

impl AckToken {
    async fn send(self) -> Result<(), ClientError> {
        let mut publish = Publish::new("", self.qos, Vec::new());
        publish.pkid = self.pkid;
        self.client.ack(&publish).await
    }
}

pub struct Session {
    pub options: MqttOptions,
    pub items: mpsc::Sender<Item<AckToken>>,
    pub current_client: watch::Sender<Option<AsyncClient>>,
    pub stop: watch::Receiver<bool>,
    pub acknowledger: JoinHandle<()>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn RandomSource>,
    pub counters: Arc<IngestCounters>,
}

/// The reason one connection ended.
enum Ended {
    Stop,
    WriterGone,
    Failed(ConnectionError),
    /// A clean-session connection that discarded the broker's session (see [`Session::run`]).
    SessionDiscarded,
}

impl Session {
    /// Connects and reconnects until stopped. Returns an error only when the store thread stopped
    /// without being asked to.
    ///
    /// A packet larger than the incoming limit ends the connection before it can be acknowledged,
    /// so the broker would send it again to the persistent session after every reconnect, and
    /// ingest would never get past it. After such a failure the next connection uses a clean
    /// session, which makes the broker discard the session with everything queued in it, and is
    /// closed at once. Agents send the reports lost with it again, because no `ReportAck` named
    /// them.
    pub async fn run(mut self) -> Result<(), IngestError> {
        let (broker_host, broker_port) = self.options.broker_address();
        let mut backoff = Backoff::default();
        let mut classifier = Classifier::new();
        // Whether the broker confirmed the subscriptions of the current session. A session can
        // survive a connection that closed before its SUBACK, and the broker then reports the
        // session as present without the subscriptions, so "session present" alone is not enough.
        let mut subscribed = false;
        let mut discard_session = false;
        loop {
            if self.stop_requested() {
                return self.finish(None).await;
            }
            let mut options = self.options.clone();
            if discard_session {
                options.set_clean_session(true);
            }
            let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
            // Acknowledgements are small packets sent while the broker waits for them before it
            // sends more. With Nagle's algorithm each batch of them would wait for the broker's
            // delayed TCP acknowledgement (about 40 ms on Linux).
            let mut network_options = rumqttc::NetworkOptions::new();
            network_options.set_tcp_nodelay(true);
            eventloop.set_network_options(network_options);
            let mut connected_at = None;

            let ended = loop {
                tokio::select! {
                    biased;
                    _ = self.stop.changed() => break Ended::Stop,
                    _ = self.items.closed() => break Ended::WriterGone,
                    event = eventloop.poll() => match event {
                        Ok(Event::Incoming(Packet::ConnAck(_))) if discard_session => {
                            break Ended::SessionDiscarded;
                        }
                        Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                            connected_at = Some(self.clock.monotonic());
                            IngestCounters::add(&self.counters.connections, 1);
                            info!(
                                broker = %format_args!("{broker_host}:{broker_port}"),
                                session_present = connack.session_present,
                                "connected to the MQTT broker"
                            );
                            if !connack.session_present {
                                subscribed = false;
                            }
                            if !subscribed {
                                subscribe(&client);
                            }
                            self.current_client.send_replace(Some(client.clone()));
                        }
                        Ok(Event::Incoming(Packet::SubAck(suback))) => {
                            if check_suback(&suback.return_codes) {
                                subscribed = true;
                                IngestCounters::add(&self.counters.subscriptions_granted, 1);
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            let item = self.receive(&mut classifier, &client, publish);
                            if self.items.send(item).await.is_err() {
                                break Ended::WriterGone;
                            }
                        }
                        Ok(_) => {}
                        Err(error) => break Ended::Failed(error),
                    },
                }
            };
            self.current_client.send_replace(None);

            match ended {
                // rumqttc's poll is not cancel-safe while it connects: polling again after a
                // cancelled connection attempt would open a second connection.
                Ended::Stop if connected_at.is_none() => return self.finish(None).await,
                Ended::Stop => return self.finish(Some((client, eventloop))).await,
                Ended::WriterGone => {
                    error!("the store thread stopped; ingest stops");
                    return Err(IngestError::WriterStopped);
                }
                Ended::SessionDiscarded => {
                    drop(eventloop);
                    discard_session = false;
                    IngestCounters::add(&self.counters.sessions_discarded, 1);
                    warn!(
                        broker = %format_args!("{broker_host}:{broker_port}"),
                        "discarded the broker session to skip an oversized packet; messages queued \
                         in it are lost, and agents send their unacknowledged reports again"
                    );
                }
                Ended::Failed(error) => {
                    drop(eventloop);
                    if is_oversized_packet(&error) {
                        discard_session = true;
                    }
                    let stayed_up = connected_at.is_some_and(|at| {
                        self.clock.monotonic().saturating_sub(at) >= backoff::STABLE_AFTER
                    });
                    if stayed_up {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay(self.random.next_u64());
                    log_connection_error(
                        &error,
                        &broker_host,
                        broker_port,
                        backoff.attempt(),
                        delay,
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.changed() => {}
                    }
                }
            }
        }
    }

    /// Returns whether the handle requested a stop or was dropped.
    fn stop_requested(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    fn receive(
        &mut self,
        classifier: &mut Classifier,
        client: &AsyncClient,
        publish: Publish,
    ) -> Item<AckToken> {
        IngestCounters::add(&self.counters.publishes_received, 1);
        let ack = match publish.qos {
            QoS::AtMostOnce => None,
            qos => Some(AckToken {
                client: client.clone(),
                pkid: publish.pkid,
                qos,
            }),
        };
        let classified = classifier.classify(
            &publish.topic,
            &publish.payload,
            self.clock.monotonic(),
            self.clock.now_unix_s(),
        );
        let incoming = match classified {
            Classified::Store(incoming) => Some(incoming),
            Classified::ChunkKept | Classified::EventLogged => None,
            Classified::Dropped => {
                IngestCounters::add(&self.counters.messages_dropped, 1);
                None
            }
        };
        Item { incoming, ack }
    }

    /// Lets the store thread finish, keeps the connection up until the acknowledgements of what it
    /// stored went out, and disconnects.
    async fn finish(
        self,
        connection: Option<(AsyncClient, rumqttc::EventLoop)>,
    ) -> Result<(), IngestError> {
        let Session {
            items,
            mut acknowledger,
            ..
        } = self;
        drop(items);

        let Some((client, mut eventloop)) = connection else {
            let _ = acknowledger.await;
            return Ok(());
        };
        let keep_polling = async {
            // Publishes that arrive now are not acknowledged; the broker sends them again.
            while eventloop.poll().await.is_ok() {}
        };
        let mut connection_lost = false;
        tokio::select! {
            _ = &mut acknowledger => {}
            _ = keep_polling => connection_lost = true,
            _ = tokio::time::sleep(SHUTDOWN_DRAIN) => {
                warn!("acknowledgements still pending after {SHUTDOWN_DRAIN:?}; disconnecting anyway");
            }
        }

        // After a lost connection the next poll would connect again, only to disconnect.
        if !connection_lost && client.try_disconnect().is_ok() {
            let disconnected = async {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), disconnected).await;
        }
        info!("disconnected from the MQTT broker");
        Ok(())
    }
}

fn subscribe(client: &AsyncClient) {
    let filters = SUBSCRIBED
        .iter()
        .map(|kind| SubscribeFilter::new(kind.all_agents_filter(), QoS::AtLeastOnce));
    // Nothing has used this client yet (the acknowledgement task gets it only after this call),
    // so its request channel is empty and has room for this request.
    if let Err(error) = client.try_subscribe_many(filters) {
        error!(%error, "failed to queue the subscription request");
    }
}

/// Logs each filter's result and returns whether the broker granted all of them.
fn check_suback(return_codes: &[SubscribeReasonCode]) -> bool {
    let mut granted = return_codes.len() == SUBSCRIBED.len();
    for (kind, code) in SUBSCRIBED.iter().zip(return_codes) {
        match code {
            SubscribeReasonCode::Success(qos) => {
                debug!(filter = kind.all_agents_filter(), ?qos, "subscribed")
            }
            SubscribeReasonCode::Failure => {
                granted = false;
                error!(
                    filter = kind.all_agents_filter(),
                    "the broker rejected the subscription; check its access control list"
                );
            }
        }
    }
    granted
}

fn is_oversized_packet(error: &ConnectionError) -> bool {
    matches!(
        error,
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(_)
        ))
    )
}

fn log_connection_error(
    error: &ConnectionError,
    host: &str,
    port: u16,
    attempt: u32,
    delay: Duration,
) {
    let broker = format!("{host}:{port}");
    if let ConnectionError::MqttState(StateError::Deserialization(
        rumqttc::Error::PayloadSizeLimitExceeded(size),
    )) = error
    {
        // ERROR because the messages queued in the session are about to be discarded.
        error!(
            broker,
            packet_bytes = size,
            "the broker sent a packet larger than the ingest limit, so its session will be \
             discarded; set the broker's message size limit (mosquitto: message_size_limit) to at \
             most the server's --mqtt-max-packet-bytes"
        );
    }
    warn!(
        broker,
        %error,
        attempt,
        retry_in = ?delay,
        "MQTT connection failed; reconnecting"
    );
}

/// Sends acknowledgements and orders after their batch was stored, until the store thread stops.
pub async fn acknowledge(
    mut committed: mpsc::UnboundedReceiver<AfterCommit<AckToken>>,
    current_client: watch::Receiver<Option<AsyncClient>>,
    counters: Arc<IngestCounters>,
) {
    while let Some(AfterCommit { acks, orders }) = committed.recv().await {
        for (agent_id, order) in orders {
            let client = current_client.borrow().clone();
            publish_order(client, &agent_id, order, &counters).await;
        }
        for ack in acks {
            if ack.send().await.is_err() {
                // The connection this publish arrived on is gone.
                IngestCounters::add(&counters.acks_not_sent, 1);
            }
        }
    }
}

pub(crate) async fn publish_order(
    client: Option<AsyncClient>,
    agent_id: &AgentId,
    order: Order,
    counters: &IngestCounters,
) {
    let order_id = order.order_id;
    let (kind, counter) = match &order.body {
        OrderBody::Resync { .. } => ("resync", &counters.resync_orders_sent),
        OrderBody::ReportAck { .. } => ("report acknowledgement", &counters.report_acks_sent),
        OrderBody::Bundle { .. } => ("bundle", &counters.bundle_orders_sent),
        OrderBody::TrustRoot { .. } => ("trust root", &counters.trust_root_orders_sent),
        OrderBody::Rollback { .. } => ("rollback", &counters.rollback_orders_sent),
    };
    let Some(client) = client else {
        // The agent keeps unacknowledged reports and sends them again, and the next gap triggers
        // another resync order, so a lost order costs a repetition, not data.
        debug!(agent.id = %agent_id, order.id = %order_id, kind, "not connected to the broker; dropped an order");
        IngestCounters::add(&counters.orders_not_sent, 1);
        return;
    };
    let payload = match encode(&Message::Order(order)) {
        Ok(payload) => payload,
        Err(error) => {
            error!(agent.id = %agent_id, order.id = %order_id, kind, %error, "failed to encode an order");
            return;
        }
    };
    // Orders are never retained: an agent must not act on an old order when it subscribes.
    let order_topic = topic(agent_id, TopicKind::Order);
    match client
        .publish(order_topic, QoS::AtLeastOnce, false, payload)
        .await
    {
        Ok(()) => IngestCounters::add(counter, 1),
        Err(error) => {
            IngestCounters::add(&counters.orders_not_sent, 1);
            debug!(agent.id = %agent_id, order.id = %order_id, kind, %error, "connection closed; dropped an order")
        }
    }
}
