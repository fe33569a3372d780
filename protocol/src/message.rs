//! The messages of the wire protocol. Every payload on a tidegate topic is one [`Message`] inside
//! the envelope of [`crate::envelope`].
//!
//! postcard encodes an enum variant as its index, so new message kinds are only ever appended to
//! [`Message`] and [`OrderBody`]; a decoder that meets an index it does not know rejects the
//! payload instead of guessing.

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, BootId, OrderId};
use crate::inventory::{Inventory, InventoryDelta};

/// One payload on a tidegate topic.
// A message is decoded once and handled once, so the size of the report variant costs little.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Agent to server, on the report topic.
    Report(Report),
    /// Agent to server, on the report topic: one part of a report too large for one packet.
    ReportChunk(ReportChunk),
    /// Agent to server, on the status topic, retained.
    Status(Status),
    /// Server to agent, on the order topic.
    Order(Order),
}

impl Message {
    /// A short name of the message kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Report(_) => "report",
            Self::ReportChunk(_) => "report chunk",
            Self::Status(_) => "status",
            Self::Order(_) => "order",
        }
    }
}

/// A report of the host's state. Receivers de-duplicate on `(agent_id, boot_id, seq)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub agent_id: AgentId,
    pub boot_id: BootId,
    /// Starts at 1 for every boot id and grows by one per report.
    pub seq: u64,
    /// When the agent collected the state, in seconds since the Unix epoch by its own clock.
    pub collected_at_unix_s: i64,
    /// How many queued messages the agent's outbox dropped, in total, because it was full.
    pub outbox_dropped: u64,
    pub body: ReportBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReportBody {
    Full(Inventory),
    /// The changes since report `base_seq` of the same boot id.
    Delta {
        base_seq: u64,
        delta: InventoryDelta,
    },
}

impl ReportBody {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Full(_) => "full",
            Self::Delta { .. } => "delta",
        }
    }
}

/// One part of an encoded report that did not fit into one MQTT packet. The receiver joins the
/// `bytes` of parts `0..count` in order and decodes the result as an envelope holding a
/// [`Message::Report`] with the same agent id, boot id and sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportChunk {
    pub agent_id: AgentId,
    pub boot_id: BootId,
    pub seq: u64,
    pub index: u32,
    pub count: u32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusState {
    Online,
    Offline,
}

/// An agent's retained status. The agent sets `Offline` as its last will, so the broker publishes
/// it when the agent disappears without disconnecting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub agent_id: AgentId,
    pub boot_id: BootId,
    pub state: StatusState,
    pub agent_version: String,
    /// Whether the broker kept the agent's session over the last reconnect. When it did not,
    /// orders sent while the agent was away may be lost, so the server sends them again.
    pub session_present: bool,
    /// When the agent wrote this status, by its own clock.
    pub at_unix_s: i64,
}

/// An order from the server. Agents de-duplicate on `order_id` and ignore retained orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: OrderId,
    pub body: OrderBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderBody {
    /// Send a full report: the server lost track of this agent's inventory, for example because
    /// a delta arrived whose base it does not have.
    Resync { reason: String },
    /// The server has stored these reports of the given boot id. The agent keeps every report in
    /// its outbox until this arrives, because a broker's PUBACK only confirms that the broker has it: a
    /// broker that restarts, or a server not subscribed at that moment, loses it.
    ReportAck {
        boot_id: BootId,
        seqs: Vec<u64>,
        /// The server's clock when it sent this, in seconds since the Unix epoch. The agent
        /// takes it, less a tolerance, as a time it has seen, so a clock set back far behind the
        /// server's is caught.
        server_time_unix_s: i64,
    },
    /// A signed bundle file, exactly as security signed it. The agent verifies it against its own
    /// pinned trust root; the server's word counts for nothing.
    Bundle { file: Vec<u8> },
    /// A signed trust root of the next version, exactly as the root key holders signed it.
    TrustRoot { file: Vec<u8> },
    /// Revert the applied bundle whose manifest hash is `bundle_hash` (64 lowercase hex digits,
    /// as in `BundleRecord::bundle_hash`), from the agent's journal and the backups it kept.
    Rollback { bundle_hash: String },
    /// A signed maintenance-window schedule file, exactly as the OT key holders signed it. The
    /// agent verifies it against its pinned trust root.
    Schedule { file: Vec<u8> },
}
