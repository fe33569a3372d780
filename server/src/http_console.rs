//! The web console and the API reads and writes only it needed so far.
//!
//! The console is three static files (`console/index.html`, `console/style.css`,
//! `console/app.js`) compiled into the binary, so the server works with no internet access and
//! nothing to build but the Rust code. It is one page whose JavaScript switches views by the URL
//! fragment (`#/fleet`, `#/agent/ID`, ...) and reads the JSON API with the token the user signs in
//! with.
//!
//! Routes:
//! - `GET /` and `GET /ui/`: the console page. `GET /ui/{file}`: its style sheet, script and icon.
//!   Every response carries a content security policy that only allows this server as a source,
//!   so the page cannot load anything from elsewhere even by mistake.
//! - `GET /api/v1/bundles`: `{"bundles": [PublishedBundle, ...]}`, newest publication first.
//! - `POST /api/v1/agents/{agent_id}/owner` with `{"owner": "TEAM"}`: sets the agent's owner
//!   team (the empty string clears it). `200` with `{"agent_id", "owner"}`, `400` for an invalid
//!   id or name, `404` when the store has no such agent.
//!
//! Every error body is `{"error": "..."}`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tidegate_protocol::AgentId;

use crate::http::ErrorResponse;
use crate::store::owners::{check_owner, OwnerAssignments, OwnerError};
use crate::store::publications::{PublicationError, Publications, PublishedBundle};

/// The state the console routes need.
#[derive(Clone)]
pub struct ConsoleState {
    pub publications: Publications,
    pub owners: OwnerAssignments,
}

/// The body of `GET /api/v1/bundles`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundlesResponse {
    pub bundles: Vec<PublishedBundle>,
}

/// The body of `POST /api/v1/agents/{agent_id}/owner`, and of its response with `agent_id` set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerAssignment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub owner: String,
}

/// One static file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("console/index.html"),
};

const ASSETS: &[Asset] = &[
    INDEX,
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("console/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/app.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("console/favicon.svg"),
    },
];

/// Allows scripts, styles, images and API calls from this server only, and no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// Builds the console's routes: the static files and the console's API endpoints.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/api/v1/bundles", get(list_bundles))
        .route("/api/v1/agents/{agent_id}/owner", post(assign_owner))
        .with_state(state)
}

/// The console's own files. They are served without a token, because the page must load before
/// the user can paste one; everything it shows comes from the API, which checks the token.
pub fn pages() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(asset))
}

async fn index() -> Response {
    serve_asset(&INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == file) {
        Some(asset) => serve_asset(asset),
        None => error_response(
            StatusCode::NOT_FOUND,
            format!("the console has no file {file:?}"),
        ),
    }
}

fn serve_asset(asset: &Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // The files change with the binary; revalidating keeps a browser from running an old script
    // against a new API after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn list_bundles(State(state): State<ConsoleState>) -> Response {
    let publications = state.publications.clone();
    match tokio::task::spawn_blocking(move || publications.list()).await {
        Ok(Ok(bundles)) => Json(BundlesResponse { bundles }).into_response(),
        Ok(Err(error)) => {
            tracing::error!(%error, "failed to read the published bundles");
            publication_error(error)
        }
        Err(error) => task_failed(error),
    }
}

async fn assign_owner(
    State(state): State<ConsoleState>,
    Path(agent_id): Path<String>,
    body: Result<Json<OwnerAssignment>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let agent_id = match AgentId::parse(&agent_id) {
        Ok(agent_id) => agent_id,
        Err(error) => return error_response(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let Json(assignment) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid owner assignment: {}; expected {{\"owner\": \"TEAM\"}}",
                    rejection.body_text()
                ),
            )
        }
    };
    let owner = assignment.owner;
    if let Err(invalid) = check_owner(&owner) {
        return error_response(StatusCode::BAD_REQUEST, format!("{invalid}: {owner:?}"));
    }

    let owners = state.owners.clone();
    let id = agent_id.to_string();
    let name = owner.clone();
    match tokio::task::spawn_blocking(move || owners.assign(&id, &name)).await {
        Ok(Ok(true)) => {
            tracing::info!(agent.id = %agent_id, owner = %owner, "assigned an owner team");
            Json(OwnerAssignment {
                agent_id: Some(agent_id.to_string()),
                owner,
            })
            .into_response()
        }
        Ok(Ok(false)) => error_response(
            StatusCode::NOT_FOUND,
            format!("agent \"{agent_id}\" not found; an agent appears once it has reported"),
        ),
        Ok(Err(error)) => {
            tracing::error!(%error, "failed to assign an owner team");
            owner_error(error)
        }
        Err(error) => task_failed(error),
    }
}

fn error_response(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorResponse { error })).into_response()
}

fn publication_error(error: PublicationError) -> Response {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

fn owner_error(error: OwnerError) -> Response {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

fn task_failed(error: tokio::task::JoinError) -> Response {
    tracing::error!(%error, "a store task failed");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the store task failed: {error}"),
    )
}
