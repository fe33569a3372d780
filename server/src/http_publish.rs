//! The HTTP route that publishes a bundle: `POST /api/v1/bundles` with the bundle file as the
//! body (`application/octet-stream`) and the publisher's name in `X-Tidegate-Publisher`.
//!
//! `POST /api/v1/trust-root` takes the next trust root version (a signed root file). It must be
//! signed by a threshold of the current version's root keys and of its own; then it is stored,
//! replaces the root publications are checked against, and every agent that reports an older
//! version is sent each newer version in order, because agents never skip a version. `201` with
//! `{"version", "delivered_to"}`, `422` with `{"error"}` when the check fails. The current
//! version, byte for byte, is accepted with `200` and sent again to the agents behind it.
//!
//! Both routes need the `security` role (see [`crate::auth::policy`]). Each publication is
//! recorded in the audit log with its signers and the caller's token, and each order sent with it.
//! A rejected publication is recorded as `bundle.rejected` or `trust_root.rejected`.
//!
//! A published bundle is stored and not sent to any agent: a rollout (`POST /api/v1/rollouts`) takes it
//! to the fleet in waves. With `?delivery=immediate` it is also sent at once to every agent it
//! targets, as before rollouts existed.
//!
//! `201` with a [`PublishResponse`] when the bundle passed the check and was stored (and, with
//! immediate delivery, sent); `200` with the same body when this exact bundle was published before
//! (with immediate delivery it is sent again, so re-publishing reaches agents that were offline);
//! `400` for a `delivery` other than `immediate` or `held`; `422` with `{"error", "rule"}` when
//! the check rejected it; `409` when its stream already has another bundle at that sequence;
//! `503` when the server has no trust root.

use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::{verify_root_update, SignedTrustRoot, TrustRoot};
use tidegate_protocol::{AgentId, Order, OrderBody, OrderId};

use crate::audit::{AuditEntry, AuditLog};
use crate::auth::Principal;
use crate::ingest::OrderSender;
use crate::publish::{check_bundle, targets_agent, PublishError, MAX_DELIVERED_BUNDLE_BYTES};
use crate::store::publications::{PublicationError, Publications};
use crate::store::StoreReader;

/// The state publication needs: the trust root to check against, where to record, whom to send to.
#[derive(Clone)]
pub struct PublishState {
    pub root: Arc<RwLock<Option<TrustRoot>>>,
    pub publications: Publications,
    pub reader: StoreReader,
    pub orders: OrderSender,
    /// The log of rejected publications. Accepted ones are recorded with the bundle itself.
    pub audit: AuditLog,
}

/// The body of a successful publication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishResponse {
    pub bundle_id: String,
    pub stream: String,
    pub sequence: u64,
    pub bundle_hash: String,
    pub signers: Vec<String>,
    /// How many agents the bundle order was sent to: 0 unless delivery was immediate.
    pub delivered_to: usize,
    pub republished: bool,
    /// Whether the bundle was sent at once to every agent it targets, rather than held for a
    /// rollout.
    #[serde(default)]
    pub immediate: bool,
}

/// The query of `POST /api/v1/bundles`.
#[derive(Debug, Default, Deserialize)]
pub struct PublishQuery {
    /// `immediate` to send the bundle to every agent it targets at once; `held` (the default)
    /// to store it for a rollout.
    pub delivery: Option<String>,
}

#[derive(Debug, Serialize)]
struct PublishErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'static str>,
}

pub fn router(state: PublishState) -> Router {
    Router::new()
        .route("/api/v1/bundles", post(publish))
        .route("/api/v1/trust-root", post(publish_trust_root))
        .layer(DefaultBodyLimit::max(MAX_DELIVERED_BUNDLE_BYTES + 1))
        .with_state(state)
}

fn error_response(status: StatusCode, error: String, rule: Option<&'static str>) -> Response {
    (status, Json(PublishErrorBody { error, rule })).into_response()
}

async fn publish(
    State(state): State<PublishState>,
    principal: Principal,
    Query(query): Query<PublishQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let immediate = match query.delivery.as_deref() {
        None | Some("held") => false,
        Some("immediate") => true,
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("invalid delivery {other:?}: expected immediate or held"),
                None,
            )
        }
    };
    let publisher = headers
        .get("x-tidegate-publisher")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.chars().take(200).collect::<String>())
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "unknown".into());
    let now = now_unix_s();

    let publications = state.publications.clone();
    let root = state.root.read().expect("trust root lock").clone();
    let file = body.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let marks = publications.high_water()?;
        let checked = check_bundle(&file, root.as_ref(), now, &marks);
        Ok::<_, PublicationError>(checked.map(|checked| (checked, publications)))
    })
    .await;
    let (checked, publications) = match checked {
        Ok(Ok(Ok(pair))) => pair,
        Ok(Ok(Err(error))) => {
            tracing::warn!(%publisher, %error, "rejected a bundle publication");
            let detail = serde_json::json!({
                "publisher": publisher,
                "rule": error.rule(),
                "error": error.to_string(),
                "bundle_sha256": crate::audit::to_hex(
                    ring::digest::digest(&ring::digest::SHA256, &body).as_ref()
                ),
            });
            state
                .audit
                .record(AuditEntry::new(
                    principal.actor(),
                    "bundle.rejected",
                    "/api/v1/bundles",
                    detail,
                ))
                .await;
            let status = match error {
                PublishError::NoTrustRoot => StatusCode::SERVICE_UNAVAILABLE,
                PublishError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                PublishError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            };
            return error_response(status, error.to_string(), error.rule());
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot read published bundles");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None);
        }
        Err(error) => {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
        }
    };

    let record = {
        let checked = checked.clone();
        let file = body.clone();
        let publisher = publisher.clone();
        let actor = principal.actor();
        tokio::task::spawn_blocking(move || {
            publications.record(&checked, &file, &publisher, now, &actor)
        })
        .await
    };
    match record {
        Ok(Ok(())) => {}
        Ok(Err(error @ PublicationError::Conflict { .. })) => {
            return error_response(
                StatusCode::CONFLICT,
                error.to_string(),
                Some("sequence-reused"),
            );
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot record a bundle publication");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None);
        }
        Err(error) => {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
        }
    }

    let reader = state.reader.clone();
    let fleet = if immediate {
        match tokio::task::spawn_blocking(move || reader.fleet()).await {
            Ok(Ok(fleet)) => fleet,
            Ok(Err(error)) => {
                return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
            }
            Err(error) => {
                return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
            }
        }
    } else {
        Vec::new()
    };
    let mut delivered_to = 0;
    let mut batch = state.orders.batch();
    for agent in fleet
        .iter()
        .filter(|agent| targets_agent(&checked, &agent.tier, &agent.os_name))
    {
        let Ok(agent_id) = AgentId::parse(&agent.agent_id) else {
            continue;
        };
        let order = Order {
            order_id: OrderId(fastrand::u128(..).to_le_bytes()),
            body: OrderBody::Bundle {
                file: body.to_vec(),
            },
        };
        let detail = serde_json::Map::from_iter([
            ("bundle_id".to_owned(), checked.bundle_id.clone().into()),
            ("bundle_hash".to_owned(), checked.bundle_hash.clone().into()),
        ]);
        if batch.send(&agent_id, order, detail).await {
            delivered_to += 1;
        }
    }
    batch.finish().await;
    tracing::info!(
        bundle.id = %checked.bundle_id,
        stream = %checked.stream,
        sequence = checked.sequence,
        %publisher,
        signers = ?checked.signers,
        immediate,
        delivered_to,
        "published a bundle"
    );

    let status = if checked.republished {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let response = PublishResponse {
        bundle_id: checked.bundle_id,
        stream: checked.stream,
        sequence: checked.sequence,
        bundle_hash: checked.bundle_hash,
        signers: checked.signers,
        delivered_to,
        republished: checked.republished,
        immediate,
    };
    (status, Json(response)).into_response()
}

/// The body of a successful trust root publication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustRootResponse {
    pub version: u64,
    /// How many agents were sent at least one root version.
    pub delivered_to: usize,
}

async fn publish_trust_root(
    State(state): State<PublishState>,
    principal: Principal,
    body: Bytes,
) -> Response {
    let offered = match SignedTrustRoot::decode(&body) {
        Ok(offered) => offered,
        Err(error) => {
            tracing::warn!(%error, "rejected a trust root that does not decode");
            record_root_rejection(&state, &principal, error.to_string()).await;
            return error_response(StatusCode::UNPROCESSABLE_ENTITY, error.to_string(), None);
        }
    };
    let current = state.root.read().expect("trust root lock").clone();
    let Some(current) = current else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            PublishError::NoTrustRoot.to_string(),
            None,
        );
    };
    // The current version, byte for byte, is sent again to the agents behind it.
    let republished = offered
        .document()
        .is_ok_and(|document| document.version == current.version)
        && state.publications.trust_roots().is_ok_and(|roots| {
            roots
                .iter()
                .any(|(version, file)| *version == current.version && file[..] == body[..])
        });
    let root = if republished {
        current
    } else {
        match verify_root_update(&current, &offered) {
            Ok(root) => root,
            Err(error) => {
                tracing::warn!(%error, "rejected a trust root");
                record_root_rejection(&state, &principal, error.to_string()).await;
                return error_response(StatusCode::UNPROCESSABLE_ENTITY, error.to_string(), None);
            }
        }
    };
    let version = root.version;

    let publications = state.publications.clone();
    let file = body.to_vec();
    let actor = principal.actor();
    let stored = tokio::task::spawn_blocking(move || {
        let now = now_unix_s();
        publications.record_trust_root(version, &file, now, now, &actor)?;
        publications.trust_roots()
    })
    .await;
    let roots = match stored {
        Ok(Ok(roots)) => roots,
        Ok(Err(error)) => {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
        }
        Err(error) => {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
        }
    };
    *state.root.write().expect("trust root lock") = Some(root);
    tracing::info!(version, "moved to a new trust root version");

    let reader = state.reader.clone();
    let fleet = match tokio::task::spawn_blocking(move || reader.fleet()).await {
        Ok(Ok(fleet)) => fleet,
        Ok(Err(error)) => {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
        }
        Err(error) => {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
        }
    };
    let mut delivered_to = 0;
    let mut batch = state.orders.batch();
    for agent in &fleet {
        let Ok(agent_id) = AgentId::parse(&agent.agent_id) else {
            continue;
        };
        let held = agent.trust_root_version.unwrap_or(0);
        let mut sent_any = false;
        for (root_version, file) in roots
            .iter()
            .filter(|(root_version, _)| *root_version > held)
        {
            let order = Order {
                order_id: OrderId(fastrand::u128(..).to_le_bytes()),
                body: OrderBody::TrustRoot { file: file.clone() },
            };
            tracing::debug!(agent.id = %agent_id, version = root_version, "sending a trust root");
            let detail = serde_json::Map::from_iter([(
                "trust_root_version".to_owned(),
                (*root_version).into(),
            )]);
            sent_any |= batch.send(&agent_id, order, detail).await;
        }
        if sent_any {
            delivered_to += 1;
        }
    }
    batch.finish().await;
    let status = if republished {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (
        status,
        Json(TrustRootResponse {
            version,
            delivered_to,
        }),
    )
        .into_response()
}

async fn record_root_rejection(state: &PublishState, principal: &Principal, error: String) {
    let entry = AuditEntry::new(
        principal.actor(),
        "trust_root.rejected",
        "/api/v1/trust-root",
        serde_json::json!({ "error": error }),
    );
    state.audit.record(entry).await;
}

fn now_unix_s() -> i64 {
    crate::ingest::Clock::now_unix_s(&crate::ingest::SystemClock::new())
}
