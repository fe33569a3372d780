//! The rollback endpoint: `POST /api/v1/agents/{agent_id}/rollback` with
//! `{"bundle_hash": "<64 lowercase hex digits>"}` sends the agent a rollback order for that
//! applied bundle. The agent reverts it from its journal and reports `rolled-back` or
//! `rollback-failed` in its next report.
//!
//! Responses: `202` with [`RollbackResponse`] when the order went to the broker, `400` for an
//! invalid agent id or hash, `404` when the store has no such agent, `503` when the server is not
//! connected to the broker. This module never writes to the store.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::BundleHash;
use tidegate_protocol::{AgentId, Order, OrderBody, OrderId};

use crate::http_publish::PublishState;

/// The body of a rollback request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub bundle_hash: String,
}

/// The body of an accepted rollback request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackResponse {
    pub agent_id: String,
    pub bundle_hash: String,
    /// The id of the order sent, in hex.
    pub order_id: String,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

pub fn routes(state: PublishState) -> Router {
    Router::new()
        .route("/api/v1/agents/{agent_id}/rollback", post(rollback))
        .with_state(state)
}

fn error(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorBody { error })).into_response()
}

async fn rollback(
    State(state): State<PublishState>,
    Path(agent_id): Path<String>,
    Json(request): Json<RollbackRequest>,
) -> Response {
    let agent_id = match AgentId::parse(&agent_id) {
        Ok(agent_id) => agent_id,
        Err(invalid) => return error(StatusCode::BAD_REQUEST, invalid.to_string()),
    };
    let hash = match BundleHash::parse(request.bundle_hash.trim()) {
        Ok(hash) => hash,
        Err(invalid) => return error(StatusCode::BAD_REQUEST, invalid.to_string()),
    };
    let reader = state.reader.clone();
    let id = agent_id.clone();
    match tokio::task::spawn_blocking(move || reader.agent(id.as_str())).await {
        Ok(Ok(Some(_))) => {}
        Ok(Ok(None)) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("agent \"{agent_id}\" not found"),
            )
        }
        Ok(Err(store_error)) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, store_error.to_string())
        }
        Err(join_error) => return error(StatusCode::INTERNAL_SERVER_ERROR, join_error.to_string()),
    }
    let order_id = OrderId(fastrand::u128(..).to_le_bytes());
    let order = Order {
        order_id,
        body: OrderBody::Rollback {
            bundle_hash: hash.to_string(),
        },
    };
    if !state.orders.send(&agent_id, order).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is not connected to the broker; try again".into(),
        );
    }
    tracing::info!(agent.id = %agent_id, bundle_hash = %hash, order.id = %order_id, "sent a rollback order");
    (
        StatusCode::ACCEPTED,
        Json(RollbackResponse {
            agent_id: agent_id.to_string(),
            bundle_hash: hash.to_string(),
            order_id: order_id.to_string(),
        }),
    )
        .into_response()
}
