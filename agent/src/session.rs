//! The MQTT session: one connection at a time to the broker, re-established with back-off for as
//! long as the agent runs.
//!
//! This module owns the rumqttc client. It sends the outbox oldest first, one message in flight at
//! a time, and publishes the retained online status (the offline status is the last will). It
//! subscribes to the agent's order topic on every CONNACK until a SUBACK confirms the subscription,
//! and passes orders to the caller. It never removes a message from the outbox: only the server's acknowledgement does,
//! handled by the caller. Each connection gets a new rumqttc event loop, so nothing that rumqttc
//! keeps in memory from an earlier connection is replayed behind the outbox's back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tidegate_protocol::{decode, Message, Order};
use tokio::sync::{mpsc, watch, Notify};

use crate::backoff::Backoff;
use crate::outbox::Outbox;

/// How long a graceful shutdown waits for the offline status and DISCONNECT to go out.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

pub struct SessionSettings {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    pub max_incoming_packet_bytes: usize,
    pub max_outgoing_packet_bytes: usize,
    pub connect_timeout: Duration,
    pub reconnect_initial_delay: Duration,
    pub reconnect_max_delay: Duration,
    /// A connection must stay up this long before the back-off starts again from its initial delay.
    pub stable_connection: Duration,
    /// Sent messages without a server acknowledgement after this long are sent again.
    pub ack_timeout: Duration,
    pub status_topic: String,
    pub order_topic: String,
    /// The retained status the broker publishes when the agent disappears.
    pub will_payload: Vec<u8>,
}

/// Builds the retained online (or, at shutdown, offline) status payload. The second argument is
/// whether the broker kept the session.
pub type StatusPayload = Box<dyn Fn(StatusKind, bool) -> Vec<u8> + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Online,
    Offline,
}

/// The channels and state the session shares with the rest of the agent.
pub struct SessionLinks {
    pub outbox: Arc<Mutex<Outbox>>,
    /// Notified when the outbox has a new message.
    pub outbox_ready: Arc<Notify>,
    pub orders: mpsc::Sender<Order>,
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Debug, Clone, Copy)]
enum Sent {
    Status,
    Outbox(u64),
}

/// Runs connections until shutdown is signalled.
pub async fn run(
    settings: SessionSettings,
    status_payload: StatusPayload,
    mut links: SessionLinks,
) {
    let mut backoff = Backoff::new(
        settings.reconnect_initial_delay,
        settings.reconnect_max_delay,
    );
    // Whether the broker confirmed the order subscription of the current session. A session can
    // survive a connection that closed before its SUBACK, and the broker then reports the session
    // as present without the subscription, so "session present" alone is not enough.
    let mut subscribed = false;
    loop {
        if *links.shutdown.borrow() {
            return;
        }
        let connected_at =
            run_connection(&settings, &status_payload, &mut links, &mut subscribed).await;
        if *links.shutdown.borrow() {
            return;
        }
        if connected_at.is_some_and(|at| at.elapsed() >= settings.stable_connection) {
            backoff.reset();
        }
        let delay = backoff.next_delay(fastrand::f64());
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting to the broker after a delay"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = links.shutdown.changed() => return,
        }
    }
}

/// Runs one connection until it fails or shutdown is signalled. Returns when the connection was
/// accepted, if it was.
async fn run_connection(
    settings: &SessionSettings,
    status_payload: &StatusPayload,
    links: &mut SessionLinks,
    subscribed: &mut bool,
) -> Option<Instant> {
    let mut options = MqttOptions::new(
        settings.client_id.clone(),
        settings.host.clone(),
        settings.port,
    );
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(
            settings.max_incoming_packet_bytes,
            settings.max_outgoing_packet_bytes,
        )
        .set_last_will(LastWill::new(
            settings.status_topic.clone(),
            settings.will_payload.clone(),
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(settings.connect_timeout.as_secs().max(1));
    eventloop.set_network_options(network);

    // Whatever was sent on an earlier connection and not acknowledged by the server goes again.
    links.outbox.lock().expect("outbox lock").resend_all();

    // rumqttc's poll is not cancel-safe while it connects: dropping it between the TCP connect and
    // the CONNACK drops the connection, and the next poll opens another one under the same client
    // id. So the connection is awaited on its own, with only shutdown able to interrupt it.
    let session_present = tokio::select! {
        event = eventloop.poll() => match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => ack.session_present,
            Ok(other) => {
                tracing::warn!(event = ?other, "unexpected first event from the broker connection");
                return None;
            }
            Err(error) => {
                log_connection_error(&error, false);
                return None;
            }
        },
        _ = links.shutdown.changed() => return None,
    };
    let connected_at = Some(Instant::now());
    tracing::info!(session_present, host = %settings.host, port = settings.port, "connected to the broker");
    if !session_present {
        *subscribed = false;
    }
    if !*subscribed {
        if let Err(error) = client.try_subscribe(settings.order_topic.clone(), QoS::AtLeastOnce) {
            tracing::warn!(%error, "cannot subscribe to the order topic");
        }
    }

    let mut in_flight: Option<u64> = None;
    let mut requested: VecDeque<Sent> = VecDeque::new();
    let mut by_packet_id: HashMap<u16, Sent> = HashMap::new();
    let payload = status_payload(StatusKind::Online, session_present);
    if client
        .try_publish(
            settings.status_topic.clone(),
            QoS::AtLeastOnce,
            true,
            payload,
        )
        .is_ok()
    {
        requested.push_back(Sent::Status);
    }
    let mut ack_check = tokio::time::interval(
        settings
            .ack_timeout
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(100)),
    );
    ack_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    loop {
        if in_flight.is_none() {
            let next = links.outbox.lock().expect("outbox lock").next_unsent();
            if let Some((id, message)) = next {
                match client.try_publish(message.topic, QoS::AtLeastOnce, false, message.payload) {
                    Ok(()) => {
                        in_flight = Some(id);
                        requested.push_back(Sent::Outbox(id));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot queue an outbox message for publishing")
                    }
                }
            }
        }

        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Outgoing(Outgoing::Publish(packet_id))) => {
                    if let Some(sent) = requested.pop_front() {
                        by_packet_id.insert(packet_id, sent);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(Sent::Outbox(id)) = by_packet_id.remove(&ack.pkid) {
                        links.outbox.lock().expect("outbox lock").mark_sent(id, Instant::now());
                        if in_flight == Some(id) {
                            in_flight = None;
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let granted = ack
                        .return_codes
                        .iter()
                        .all(|code| !matches!(code, rumqttc::SubscribeReasonCode::Failure));
                    if granted {
                        *subscribed = true;
                    } else {
                        tracing::warn!(topic = %settings.order_topic, "the broker rejected the order subscription");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    handle_incoming(settings, &publish, &links.orders).await;
                }
                Ok(_) => {}
                Err(error) => {
                    log_connection_error(&error, true);
                    return connected_at;
                }
            },
            _ = links.outbox_ready.notified(), if in_flight.is_none() => {}
            _ = ack_check.tick() => {
                let mut outbox = links.outbox.lock().expect("outbox lock");
                if in_flight.is_none() && outbox.oldest_sent_at().is_some_and(|at| at.elapsed() >= settings.ack_timeout) {
                    tracing::info!(queued = outbox.len(), "server acknowledgement overdue: sending unacknowledged reports again");
                    outbox.resend_all();
                }
            }
            _ = links.shutdown.changed() => {
                let payload = status_payload(StatusKind::Offline, false);
                let _ = client.try_publish(settings.status_topic.clone(), QoS::AtLeastOnce, true, payload);
                let _ = client.try_disconnect();
                let flush = async {
                    while let Ok(event) = eventloop.poll().await {
                        if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, flush).await;
                return connected_at;
            }
        }
    }
}

async fn handle_incoming(
    settings: &SessionSettings,
    publish: &rumqttc::Publish,
    orders: &mpsc::Sender<Order>,
) {
    if publish.topic != settings.order_topic {
        tracing::debug!(topic = %publish.topic, "ignoring a message on a topic the agent does not read");
        return;
    }
    if publish.retain {
        // Orders are never retained; a retained one is stale or planted, so it is not acted on.
        tracing::warn!(topic = %publish.topic, "ignoring a retained order");
        return;
    }
    match decode(&publish.payload) {
        Ok(Message::Order(order)) => {
            if orders.send(order).await.is_err() {
                tracing::debug!("order dropped: the agent is shutting down");
            }
        }
        Ok(other) => tracing::warn!(
            kind = other.kind(),
            "ignoring a message that is not an order on the order topic"
        ),
        Err(error) => tracing::warn!(%error, "ignoring an invalid order payload"),
    }
}

fn log_connection_error(error: &ConnectionError, was_connected: bool) {
    if was_connected {
        tracing::warn!(%error, "connection to the broker lost");
    } else {
        tracing::warn!(%error, "cannot connect to the broker");
    }
}
