//! The tidegate agent: collects the host's patch state below a root directory and reports it over
//! MQTT through a durable outbox.

pub mod backoff;
pub mod clock;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod executor;
pub mod fsutil;
pub mod gate;
pub mod identity;
pub mod journal;
pub mod local;
pub mod outbox;
pub mod queue;
pub mod reporter;
pub mod schedule;
pub mod session;
pub mod steps;
pub mod trust;
