//! `GET /api/v1/audit?after=SEQ&limit=N`: a page of the audit log, oldest first.
//!
//! Returns a JSON array of [`AuditRecord`] with a sequence number above `after` (default 0), at
//! most `limit` of them (default [`DEFAULT_PAGE_LIMIT`], at most [`MAX_PAGE_LIMIT`]). An empty
//! array means there is nothing newer. `400` with `{"error"}` for a limit of 0 or above the
//! maximum.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{AuditLog, AuditRecord};
use crate::http::ErrorResponse;

pub const AUDIT_PATH: &str = "/api/v1/audit";
pub const DEFAULT_PAGE_LIMIT: usize = 1000;
/// The largest page, which bounds the memory one request takes: entries are a few hundred bytes.
pub const MAX_PAGE_LIMIT: usize = 10_000;

/// The body of `GET /api/v1/audit`.
pub type AuditPage = Vec<AuditRecord>;

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

/// Builds the audit log's read route.
pub fn routes(log: AuditLog) -> Router {
    Router::new()
        .route(AUDIT_PATH, get(read_page))
        .with_state(log)
}

async fn read_page(State(log): State<AuditLog>, Query(query): Query<PageQuery>) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        let error = format!("invalid limit {limit}: expected 1 to {MAX_PAGE_LIMIT}");
        return (StatusCode::BAD_REQUEST, Json(ErrorResponse { error })).into_response();
    }
    match tokio::task::spawn_blocking(move || log.read_after(query.after, limit)).await {
        Ok(Ok(page)) => Json(page).into_response(),
        Ok(Err(error)) => {
            tracing::error!(%error, "failed to read the audit log");
            let error = error.to_string();
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(ErrorResponse { error }),
            )
                .into_response()
        }
        Err(error) => {
            let error = format!("the audit read task failed: {error}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(ErrorResponse { error }),
            )
                .into_response()
        }
    }
}
