//! Rollouts: taking one published bundle to the agents its selector matches, in waves, and
//! keeping each agent's desired state so that what it missed while offline is sent again.
//!
//! - `plan.rs`: the settings and the split into waves.
//! - `machine.rs`: the state machine, without IO.
//! - `delivery.rs`: each agent's desired state and the part of it the agent acknowledged.
//! - `store.rs`: the rollout and delivery tables.
//! - `driver.rs`: the task that runs the machines on a timer and after every ingest batch,
//!   sends the orders and stores the results.
//! - `handle.rs`: the requests the driver takes and the handle that sends them.
//! - `http.rs`: the API routes.
//! - `windows.rs`: the window ends that deadlines count from, read from the stored schedules.

pub mod delivery;
pub mod driver;
pub mod handle;
pub mod http;
pub mod machine;
pub mod plan;
pub mod store;
pub mod windows;

pub use handle::{RolloutError, RolloutHandle, RolloutRequest};
pub use machine::{NoWindows, Rollout, RolloutSpec, WindowSource};
pub use windows::StoredWindows;
