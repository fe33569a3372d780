//! The tidegate server and the operator CLI.
//!
//! `tidegate-server` runs an MQTT broker (embedded, or an external one), ingests agent reports into
//! the store, runs rollouts and serves the HTTP API. `tidegate` is the operator CLI that reads the API.

pub mod audit;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod http;
pub mod http_console;
pub mod http_publish;
pub mod http_rollback;
pub mod http_schedules;
pub mod ingest;
pub mod publish;
pub mod rollout;
pub mod schedules;
pub mod serve;
pub mod store;
