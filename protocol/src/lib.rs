//! Wire types shared by the tidegate agent and server.
//!
//! This crate owns the message formats (the versioned envelope and the messages inside it), the MQTT
//! topic names, the inventory model with its delta arithmetic, version ordering for the Debian,
//! RPM and APK package ecosystems, and trust: signing keys, the rotating trust root, signed bundles
//! and their verification. It is pure: no async runtime, no MQTT client, no file system and no
//! clock reads. Callers pass in every instant and every byte, and act on what comes back.

pub mod envelope;
pub mod ids;
pub mod inventory;
pub mod message;
pub mod topics;
pub mod trust;
pub mod version;
pub mod window;

pub use envelope::{decode, encode, DecodeError, EncodeError};
pub use ids::{AgentId, BootId, InvalidId, OrderId};
pub use inventory::{
    BundleOutcome, BundleRecord, Ecosystem, HostFacts, InstallState, Inventory, InventoryDelta,
    Package, PackageKey, PendingUpdate, RebootRequired, Selection, StepOutcome, StepRecord,
    Warning,
};
pub use message::{
    Message, Order, OrderBody, Report, ReportBody, ReportChunk, Status, StatusState,
};
