//! The rollout routes of the HTTP API. They change nothing themselves: each one sends a command
//! to the driver task through a [`RolloutHandle`].
//!
//! - `POST /api/v1/rollouts` with a [`RolloutRequest`]: `201` with the [`RolloutView`].
//!   Errors: `400` for an invalid setting or no bundle named, `404` for an unknown bundle, `409`
//!   when an active rollout already takes that bundle, `422` when the bundle targets no agent.
//! - `GET /api/v1/rollouts`: `{"rollouts": [RolloutSummary, ...]}`, oldest first.
//! - `GET /api/v1/rollouts/{id}`: the [`RolloutView`] with its waves and every agent's state.
//! - `POST /api/v1/rollouts/{id}/pause`, `/resume`, `/stop`: `200` with the [`RolloutSummary`],
//!   `409` when the rollout's status does not allow it.
//! - `POST /api/v1/rollouts/stop-all`: stops every active rollout, `{"stopped": [id, ...]}`.
//! - `GET /api/v1/agents/{agent_id}/delivery`: the agent's [`DesiredState`]: desired version and
//!   content, and the version its reports last acknowledged; `404` when nothing was ever desired
//!   of it.
//!
//! Every error body is `{"error": "..."}`. The write routes belong to the `it` role. Each
//! change they make is recorded in the audit log with the caller's token as the actor:
//! `rollout.started`, `rollout.paused`, `rollout.resumed`, `rollout.stopped` and
//! `rollout.stop_all`. The driver records its own decisions with the actor `server`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::delivery::DesiredState;
use super::handle::{RolloutError, RolloutHandle, RolloutRequest};
use super::machine::{BundleRef, Rollout, RolloutAgent, RolloutSpec, RolloutStatus, StateCounts};
use crate::audit::{AuditEntry, AuditLog};
use crate::auth::Principal;
use crate::http::ErrorResponse;

/// The state of the rollout routes: the driver's handle and the audit log.
#[derive(Clone)]
pub struct RolloutApi {
    pub handle: RolloutHandle,
    pub audit: AuditLog,
}

/// Returns the audit subject of a rollout: `rollout:ID`.
pub fn rollout_subject(id: u64) -> String {
    format!("rollout:{id}")
}

impl RolloutApi {
    async fn record(&self, principal: &Principal, action: &str, rollout: &Rollout) {
        let detail = serde_json::json!({
            "bundle_id": rollout.bundle.bundle_id,
            "bundle_hash": rollout.bundle.bundle_hash,
            "status": rollout.status.name(),
        });
        self.audit
            .record(AuditEntry::new(
                principal.actor(),
                action,
                rollout_subject(rollout.id),
                detail,
            ))
            .await;
    }
}

/// One rollout without its per-agent list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSummary {
    pub id: u64,
    pub bundle: BundleRef,
    pub status: RolloutStatus,
    pub spec: RolloutSpec,
    pub created_at_unix_s: i64,
    pub created_by: String,
    /// The wave being delivered, counted from 1.
    pub current_wave: usize,
    pub wave_count: usize,
    pub targets: usize,
    pub counts: StateCounts,
}

/// One wave's size and where its agents stand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveView {
    /// Counted from 1.
    pub wave: usize,
    pub agents: usize,
    pub counts: StateCounts,
}

/// One rollout with its waves and every agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    #[serde(flatten)]
    pub summary: RolloutSummary,
    pub waves: Vec<WaveView>,
    pub agents: Vec<RolloutAgent>,
}

/// The body of `GET /api/v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutList {
    pub rollouts: Vec<RolloutSummary>,
}

/// The body of `POST /api/v1/rollouts/stop-all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopAllResponse {
    pub stopped: Vec<u64>,
}

impl RolloutSummary {
    pub fn of(rollout: &Rollout) -> Self {
        Self {
            id: rollout.id,
            bundle: rollout.bundle.clone(),
            status: rollout.status.clone(),
            spec: rollout.spec.clone(),
            created_at_unix_s: rollout.created_at_unix_s,
            created_by: rollout.created_by.clone(),
            current_wave: rollout.current_wave + 1,
            wave_count: rollout.wave_count(),
            targets: rollout.agents.len(),
            counts: StateCounts::of(&rollout.agents),
        }
    }
}

impl RolloutView {
    pub fn of(rollout: &Rollout) -> Self {
        let waves = (0..rollout.wave_count())
            .map(|wave| {
                let agents: Vec<&RolloutAgent> = rollout
                    .agents
                    .iter()
                    .filter(|agent| agent.wave == wave)
                    .collect();
                WaveView {
                    wave: wave + 1,
                    agents: agents.len(),
                    counts: StateCounts::of(agents),
                }
            })
            .collect();
        Self {
            summary: RolloutSummary::of(rollout),
            waves,
            agents: rollout.agents.clone(),
        }
    }
}

/// Builds the rollout routes over the driver's handle.
pub fn routes(api: RolloutApi) -> Router {
    Router::new()
        .route("/api/v1/rollouts", get(list).post(start))
        .route("/api/v1/rollouts/stop-all", post(stop_all))
        .route("/api/v1/rollouts/{id}", get(show))
        .route("/api/v1/rollouts/{id}/pause", post(pause))
        .route("/api/v1/rollouts/{id}/resume", post(resume))
        .route("/api/v1/rollouts/{id}/stop", post(stop))
        .route("/api/v1/agents/{agent_id}/delivery", get(delivery))
        .with_state(api)
}

async fn start(
    State(api): State<RolloutApi>,
    principal: Principal,
    Json(request): Json<RolloutRequest>,
) -> Result<Response, ApiError> {
    let rollout = api.handle.start(request).await?;
    let detail = serde_json::json!({
        "bundle_id": rollout.bundle.bundle_id,
        "stream": rollout.bundle.stream,
        "sequence": rollout.bundle.sequence,
        "bundle_hash": rollout.bundle.bundle_hash,
        "requested_by": rollout.created_by,
        "targets": rollout.agents.len(),
        "waves": rollout.wave_count(),
        "spec": rollout.spec,
    });
    api.audit
        .record(AuditEntry::new(
            principal.actor(),
            "rollout.started",
            rollout_subject(rollout.id),
            detail,
        ))
        .await;
    Ok((StatusCode::CREATED, Json(RolloutView::of(&rollout))).into_response())
}

async fn list(State(api): State<RolloutApi>) -> Result<Json<RolloutList>, ApiError> {
    let rollouts = api.handle.list().await?;
    Ok(Json(RolloutList {
        rollouts: rollouts.iter().map(RolloutSummary::of).collect(),
    }))
}

async fn show(
    State(api): State<RolloutApi>,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    let rollout = api.handle.get(parse_id(&id)?).await?;
    Ok(Json(RolloutView::of(&rollout)))
}

async fn pause(
    State(api): State<RolloutApi>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<RolloutSummary>, ApiError> {
    let rollout = api.handle.pause(parse_id(&id)?).await?;
    api.record(&principal, "rollout.paused", &rollout).await;
    Ok(Json(RolloutSummary::of(&rollout)))
}

async fn resume(
    State(api): State<RolloutApi>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<RolloutSummary>, ApiError> {
    let rollout = api.handle.resume(parse_id(&id)?).await?;
    api.record(&principal, "rollout.resumed", &rollout).await;
    Ok(Json(RolloutSummary::of(&rollout)))
}

async fn stop(
    State(api): State<RolloutApi>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<RolloutSummary>, ApiError> {
    let rollout = api.handle.stop(parse_id(&id)?).await?;
    api.record(&principal, "rollout.stopped", &rollout).await;
    Ok(Json(RolloutSummary::of(&rollout)))
}

async fn stop_all(
    State(api): State<RolloutApi>,
    principal: Principal,
) -> Result<Json<StopAllResponse>, ApiError> {
    let stopped = api.handle.stop_all().await?;
    api.audit
        .record(AuditEntry::new(
            principal.actor(),
            "rollout.stop_all",
            "rollouts",
            serde_json::json!({ "stopped": stopped }),
        ))
        .await;
    Ok(Json(StopAllResponse { stopped }))
}

async fn delivery(
    State(api): State<RolloutApi>,
    Path(agent_id): Path<String>,
) -> Result<Json<DesiredState>, ApiError> {
    api.handle
        .delivery(&agent_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no delivery state for agent {agent_id:?}"),
        })
}

fn parse_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("invalid rollout id {text:?}: expected a number"),
    })
}

/// A failed request, turned into a status code and a JSON error body.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl From<RolloutError> for ApiError {
    fn from(error: RolloutError) -> Self {
        let status = match &error {
            RolloutError::NotFound(_) | RolloutError::BundleNotFound(_) => StatusCode::NOT_FOUND,
            RolloutError::NoBundle | RolloutError::Invalid(_) => StatusCode::BAD_REQUEST,
            RolloutError::NoTargets(_) | RolloutError::StoredBundle { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            RolloutError::AlreadyRunning { .. } | RolloutError::Transition(_) => {
                StatusCode::CONFLICT
            }
            RolloutError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RolloutError::DriverStopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status.is_server_error() {
            tracing::error!(%error, "a rollout request failed");
        }
        Self {
            status,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorResponse {
                error: self.message,
            }),
        )
            .into_response()
    }
}
