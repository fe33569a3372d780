//! Token management routes, for `admin` only (see [`super::policy::ROUTE_ROLES`]).
//!
//! - `GET /api/v1/tokens`: `{"tokens": [TokenInfo, ...]}` by name, revoked ones included.
//! - `POST /api/v1/tokens` with `{"name", "role"}`: `201` with `{"name", "role", "token"}`. This
//!   is the only time the token text is shown. `400` for an invalid name or role, `409` when the
//!   name is taken.
//! - `POST /api/v1/tokens/{name}/revoke`: `200` with the revoked `TokenInfo`; `404` for an
//!   unknown name, `409` when it was revoked already or is the last admin token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{Principal, Role, TokenError, TokenInfo, Tokens};
use crate::http::ErrorResponse;

pub const TOKENS_PATH: &str = "/api/v1/tokens";

/// The body of `GET /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// The body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub name: String,
    pub role: String,
}

/// The response to `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    pub token: String,
}

/// Builds the token management routes.
pub fn routes(tokens: Tokens) -> Router {
    Router::new()
        .route(TOKENS_PATH, get(list).post(create))
        .route("/api/v1/tokens/{name}/revoke", post(revoke))
        .with_state(tokens)
}

async fn list(State(tokens): State<Tokens>) -> Response {
    match tokio::task::spawn_blocking(move || tokens.list()).await {
        Ok(Ok(tokens)) => Json(TokenList { tokens }).into_response(),
        Ok(Err(error)) => token_error(error),
        Err(error) => task_failed(error),
    }
}

async fn create(
    State(tokens): State<Tokens>,
    principal: Principal,
    Json(request): Json<CreateTokenRequest>,
) -> Response {
    let role: Role = match request.role.parse() {
        Ok(role) => role,
        Err(error) => return token_error(error),
    };
    let actor = principal.actor();
    let now = now_unix_s();
    let created =
        tokio::task::spawn_blocking(move || tokens.create(&request.name, role, &actor, now)).await;
    match created {
        Ok(Ok((info, token))) => {
            tracing::info!(token = %info.name, role = %info.role, by = %principal.name, "created an API token");
            let body = CreatedToken {
                name: info.name,
                role: info.role,
                token,
            };
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Ok(Err(error)) => token_error(error),
        Err(error) => task_failed(error),
    }
}

async fn revoke(
    State(tokens): State<Tokens>,
    principal: Principal,
    Path(name): Path<String>,
) -> Response {
    let actor = principal.actor();
    let now = now_unix_s();
    match tokio::task::spawn_blocking(move || tokens.revoke(&name, &actor, now)).await {
        Ok(Ok(info)) => {
            tracing::info!(token = %info.name, by = %principal.name, "revoked an API token");
            Json(info).into_response()
        }
        Ok(Err(error)) => token_error(error),
        Err(error) => task_failed(error),
    }
}

fn token_error(error: TokenError) -> Response {
    let status = match &error {
        TokenError::InvalidRole { .. } | TokenError::InvalidName { .. } => StatusCode::BAD_REQUEST,
        TokenError::NameTaken { .. }
        | TokenError::AlreadyRevoked { .. }
        | TokenError::LastAdmin { .. } => StatusCode::CONFLICT,
        TokenError::NotFound { .. } => StatusCode::NOT_FOUND,
        TokenError::Open { .. }
        | TokenError::Store { .. }
        | TokenError::Random
        | TokenError::Deliver(_) => {
            tracing::error!(%error, "token management failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let error = error.to_string();
    (status, Json(ErrorResponse { error })).into_response()
}

fn task_failed(error: tokio::task::JoinError) -> Response {
    let error = format!("the token task failed: {error}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(ErrorResponse { error }),
    )
        .into_response()
}

fn now_unix_s() -> i64 {
    crate::ingest::Clock::now_unix_s(&crate::ingest::SystemClock::new())
}
