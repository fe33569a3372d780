//! The HTTP API: read-only JSON views of the fleet store, and [`app`], which puts the token check
//! in front of every route of the API.
//!
//! Routes:
//! - `GET /healthz`: `200 ok`, the one route that needs no token.
//! - `GET /api/v1/agents`: `{"agents": [AgentSummary, ...]}`, sorted by hostname, then agent id.
//! - `GET /api/v1/agents/{agent_id}`: one [`AgentDetail`], `404` when the store has no such agent,
//!   `400` when the id is not a valid agent id.
//!
//! Every error body is `{"error": "..."}`. Handlers run the blocking SQLite reads on tokio's
//! blocking thread pool. This module never writes to the store.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tidegate_protocol::AgentId;

use crate::auth::{authorize, AuthState};
use crate::store::{AgentDetail, AgentSummary, StoreError, StoreReader};

/// The body of `GET /api/v1/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetResponse {
    pub agents: Vec<AgentSummary>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
}

/// Builds the fleet's read routes over `reader`.
pub fn router(reader: StoreReader) -> Router {
    Router::new()
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/agents/{agent_id}", get(show_agent))
        .with_state(reader)
}

/// Puts the token and role check of [`crate::auth::policy`] in front of every route of `api`, and
/// adds `GET /healthz` without it. Merge every module's routes into `api` before calling this:
/// the check covers only the routes `api` has at this point.
pub fn app(api: Router, auth: AuthState) -> Router {
    api.route_layer(middleware::from_fn_with_state(auth, authorize))
        .route("/healthz", get(healthz))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn list_agents(State(reader): State<StoreReader>) -> Result<Json<FleetResponse>, ApiError> {
    let agents = tokio::task::spawn_blocking(move || reader.fleet())
        .await
        .map_err(ApiError::Task)?
        .map_err(|error| {
            tracing::error!(error = %error, "failed to read the fleet");
            ApiError::Store(error)
        })?;
    Ok(Json(FleetResponse { agents }))
}

async fn show_agent(
    State(reader): State<StoreReader>,
    Path(agent_id): Path<String>,
) -> Result<Json<AgentDetail>, ApiError> {
    let agent_id =
        AgentId::parse(&agent_id).map_err(|error| ApiError::BadRequest(error.to_string()))?;
    let id = agent_id.clone();
    let detail = tokio::task::spawn_blocking(move || reader.agent(id.as_str()))
        .await
        .map_err(ApiError::Task)?
        .map_err(|error| {
            tracing::error!(agent.id = %agent_id, error = %error, "failed to read an agent");
            ApiError::Store(error)
        })?;
    detail
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("agent \"{agent_id}\" not found")))
}

/// A failed request, turned into a status code and a JSON error body.
enum ApiError {
    BadRequest(String),
    NotFound(String),
    Store(StoreError),
    Task(tokio::task::JoinError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::NotFound(message) => (StatusCode::NOT_FOUND, message),
            Self::Store(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
            Self::Task(error) => {
                tracing::error!(error = %error, "a store read task failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the store read failed: {error}"),
                )
            }
        };
        (status, Json(ErrorResponse { error: message })).into_response()
    }
}
