//! The requests the rollout driver takes, and the handle the HTTP API sends them through. Every
//! request goes to the driver task as a `Command` with a reply channel, so the task changes
//! rollouts one request at a time.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::delivery::DesiredState;
use super::machine::{Rollout, TransitionError};
use super::plan::InvalidSetting;
use super::store::RolloutStoreError;

/// A request to start a rollout, as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRequest {
    /// The bundle by its id; the highest sequence when several bundles share the id.
    #[serde(default)]
    pub bundle_id: Option<String>,
    /// The bundle by its stream and sequence, instead of `bundle_id`.
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub sequence: Option<u64>,
    #[serde(default)]
    pub canary: u32,
    /// Cumulative wave sizes such as `10%,50%,100%`; every agent when empty.
    #[serde(default)]
    pub waves: String,
    #[serde(default)]
    pub max_concurrent_per_tier: Option<u32>,
    /// A count such as `2` or a share such as `10%`.
    pub failure_threshold: String,
    pub on_failure: String,
    pub grace_seconds: u64,
    /// Name of the person who started the rollout, for the record.
    #[serde(default)]
    pub requested_by: Option<String>,
}

/// A failed rollout request.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout {0} not found")]
    NotFound(u64),
    #[error("no published bundle {0}; publish it first with `tidegate bundle publish`")]
    BundleNotFound(String),
    #[error("name the bundle by bundle_id, or by stream and sequence")]
    NoBundle,
    #[error("bundle {0} targets no agent that has reported")]
    NoTargets(String),
    #[error("rollout {existing} already takes bundle {bundle_id} to the fleet; stop it first")]
    AlreadyRunning { existing: u64, bundle_id: String },
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Store(#[from] RolloutStoreError),
    #[error("the stored bundle {bundle_id} does not decode: {detail}")]
    StoredBundle { bundle_id: String, detail: String },
    #[error("the rollout driver has stopped")]
    DriverStopped,
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, RolloutError>>;

pub(super) enum Command {
    Start(RolloutRequest, Reply<Rollout>),
    List(Reply<Vec<Rollout>>),
    Get(u64, Reply<Rollout>),
    Pause(u64, Reply<Rollout>),
    Resume(u64, Reply<Rollout>),
    Stop(u64, Reply<Rollout>),
    StopAll(Reply<Vec<u64>>),
    Delivery(String, Reply<Option<DesiredState>>),
}

/// A cloneable handle to the driver task, for the HTTP API.
#[derive(Clone)]
pub struct RolloutHandle {
    commands: mpsc::Sender<Command>,
}

impl RolloutHandle {
    pub(super) fn new(commands: mpsc::Sender<Command>) -> Self {
        Self { commands }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, RolloutError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| RolloutError::DriverStopped)?;
        answer.await.map_err(|_| RolloutError::DriverStopped)?
    }

    /// Starts a rollout and returns it after its first pass planned the waves.
    pub async fn start(&self, request: RolloutRequest) -> Result<Rollout, RolloutError> {
        self.ask(|reply| Command::Start(request, reply)).await
    }

    /// Returns every rollout, oldest first.
    pub async fn list(&self) -> Result<Vec<Rollout>, RolloutError> {
        self.ask(Command::List).await
    }

    pub async fn get(&self, id: u64) -> Result<Rollout, RolloutError> {
        self.ask(|reply| Command::Get(id, reply)).await
    }

    pub async fn pause(&self, id: u64) -> Result<Rollout, RolloutError> {
        self.ask(|reply| Command::Pause(id, reply)).await
    }

    pub async fn resume(&self, id: u64) -> Result<Rollout, RolloutError> {
        self.ask(|reply| Command::Resume(id, reply)).await
    }

    pub async fn stop(&self, id: u64) -> Result<Rollout, RolloutError> {
        self.ask(|reply| Command::Stop(id, reply)).await
    }

    /// Returns one agent's delivery state, or `None` when nothing was ever desired of it.
    pub async fn delivery(&self, agent_id: &str) -> Result<Option<DesiredState>, RolloutError> {
        let agent_id = agent_id.to_owned();
        self.ask(|reply| Command::Delivery(agent_id, reply)).await
    }

    /// Stops every rollout that can still send orders, and returns their ids.
    pub async fn stop_all(&self) -> Result<Vec<u64>, RolloutError> {
        self.ask(Command::StopAll).await
    }
}
