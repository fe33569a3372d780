//! The tidegate server and the operator CLI.
//!
//! `tidegate-server` runs an MQTT broker (embedded, or an external one), ingests agent reports into
//! the store and serves the HTTP API. `tidegate` is the operator CLI that reads the API.

pub mod broker;
pub mod cli;
pub mod http;
pub mod http_publish;
pub mod http_rollback;
pub mod ingest;
pub mod publish;
pub mod serve;
pub mod store;
