//! The HTTP routes of maintenance-window schedules.
//!
//! - `POST /api/v1/schedules`: publishes a signed schedule file, sent as the body
//!   (`application/octet-stream`) with the publisher's name in `X-Tidegate-Publisher`. The file
//!   is checked against the server's trust root as an agent of its tier and site would check it
//!   ([`crate::schedules::check_schedule`]), stored byte for byte, and sent in a
//!   [`OrderBody::Schedule`] order, not retained, to every known agent of its tier. Responses:
//!   - `201` with a [`SchedulePublishResponse`];
//!   - `200` with the same body when the file is already the current schedule of its target,
//!     which is sent again;
//!   - `409` with `{"error", "rule": "not-newer"}` when the target already has this version or a
//!     higher one;
//!   - `422` with `{"error", "rule"}` naming the check that failed (`bad-signature`,
//!     `wrong-role`, `threshold`, ...);
//!   - `503` when the server has no trust root.
//!
//!   Callers need the role `ot`. The audit log records `schedule.published` (in the transaction
//!   that stores the file) or `schedule.republished` with the signers and the publisher, and
//!   `schedule.rejected` with the reason, each with the caller's token as the actor.
//! - `GET /api/v1/windows?days=14[&tier=T]`: the windows and freezes of every current schedule
//!   (or of tier `T`'s) in the next `days` days (1 to 62, 14 by default) from the server's
//!   clock, as a [`WindowsResponse`]; `400` for another `days`. At most 1,000 windows per
//!   schedule are listed.
//! - `GET /api/v1/bundles/earliest`: for each published bundle that has not expired, the
//!   earliest instant it can start on each tier it targets, as an [`EarliestResponse`].
//!
//! Agents report no site yet, so a site's schedule is sent to every agent of its tier. Each agent
//! keeps only the schedules of its own tier and site. Orders that do not reach the agent are not
//! retried here: the rollout driver sends the tier's current schedule again to an agent that
//! comes online without it (see [`crate::rollout::delivery`]).

use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::TrustRoot;
use tidegate_protocol::{AgentId, Order, OrderBody, OrderId};

use crate::audit::{AuditEntry, AuditLog};
use crate::auth::Principal;
use crate::ingest::{Clock, OrderSender};
use crate::schedules::{
    bundles_earliest, check_schedule, parse_window_days, schedule_target, stored_calendar,
    tier_windows, EarliestResponse, ScheduleCheckError, WindowsResponse,
    MAX_PUBLISHED_SCHEDULE_BYTES,
};
use crate::store::schedules::{ScheduleStoreError, Schedules, StoredSchedule};
use crate::store::StoreReader;

/// The state of the schedule routes: the trust root publications are checked against (shared
/// with trust root rotation), the schedule store, the fleet, the order sender and the clock.
#[derive(Clone)]
pub struct ScheduleState {
    pub root: Arc<RwLock<Option<TrustRoot>>>,
    pub schedules: Schedules,
    pub reader: StoreReader,
    pub orders: OrderSender,
    pub clock: Arc<dyn Clock>,
    pub audit: AuditLog,
}

/// The body of a successful schedule publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulePublishResponse {
    pub tier: String,
    pub site: Option<String>,
    pub version: u64,
    pub schedule_hash: String,
    pub signers: Vec<String>,
    /// How many agents the schedule order was sent to.
    pub delivered_to: usize,
    pub republished: bool,
}

/// The body of every error response of these routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleErrorResponse {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

pub fn router(state: ScheduleState) -> Router {
    Router::new()
        .route(
            "/api/v1/schedules",
            post(publish).layer(DefaultBodyLimit::max(MAX_PUBLISHED_SCHEDULE_BYTES + 1)),
        )
        .route("/api/v1/windows", get(list_windows))
        .route("/api/v1/bundles/earliest", get(list_earliest))
        .with_state(state)
}

fn error_response(status: StatusCode, error: String, rule: Option<&str>) -> Response {
    let body = ScheduleErrorResponse {
        error,
        rule: rule.map(str::to_owned),
    };
    (status, Json(body)).into_response()
}

fn internal_error(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "a schedule request failed");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), None)
}

async fn publish(
    State(state): State<ScheduleState>,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let publisher = headers
        .get("x-tidegate-publisher")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.chars().take(200).collect::<String>())
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "unknown".into());
    let now = state.clock.now_unix_s();
    let root = state
        .root
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();

    let schedules = state.schedules.clone();
    let file = body.clone();
    let publisher_name = publisher.clone();
    let actor = principal.actor();
    let outcome = tokio::task::spawn_blocking(move || {
        check_and_record(
            &schedules,
            &file,
            root.as_ref(),
            now,
            &publisher_name,
            &actor,
        )
    })
    .await;
    let checked = match outcome {
        Ok(Ok(checked)) => checked,
        Ok(Err(PublishFailure::Check(error))) => {
            tracing::warn!(%publisher, %error, "rejected a schedule publication");
            let (status, rule) = match &error {
                ScheduleCheckError::NoTrustRoot => (StatusCode::SERVICE_UNAVAILABLE, None),
                ScheduleCheckError::NotNewer { .. } => (StatusCode::CONFLICT, Some("not-newer")),
                ScheduleCheckError::Rejected { rule, .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, Some(rule.code()))
                }
            };
            let detail = serde_json::json!({
                "publisher": publisher,
                "rule": rule,
                "error": error.to_string(),
                "schedule_sha256": crate::audit::to_hex(
                    ring::digest::digest(&ring::digest::SHA256, &body).as_ref()
                ),
            });
            state
                .audit
                .record(AuditEntry::new(
                    principal.actor(),
                    "schedule.rejected",
                    "/api/v1/schedules",
                    detail,
                ))
                .await;
            return error_response(status, error.to_string(), rule);
        }
        Ok(Err(PublishFailure::Store(error))) => return internal_error(error),
        Err(error) => return internal_error(error),
    };

    let reader = state.reader.clone();
    let fleet = match tokio::task::spawn_blocking(move || reader.fleet()).await {
        Ok(Ok(fleet)) => fleet,
        Ok(Err(error)) => return internal_error(error),
        Err(error) => return internal_error(error),
    };
    let mut delivered_to = 0;
    let mut batch = state.orders.batch();
    for agent in fleet.iter().filter(|agent| agent.tier == checked.tier) {
        let Ok(agent_id) = AgentId::parse(&agent.agent_id) else {
            continue;
        };
        let order = Order {
            order_id: OrderId(fastrand::u128(..).to_le_bytes()),
            body: OrderBody::Schedule {
                file: body.to_vec(),
            },
        };
        let mut detail = serde_json::Map::new();
        detail.insert("schedule_target".into(), checked.target().into());
        detail.insert("schedule_version".into(), checked.version.into());
        if batch.send(&agent_id, order, detail).await {
            delivered_to += 1;
        }
    }
    batch.finish().await;
    tracing::info!(
        tier = %checked.tier,
        site = checked.site.as_deref().unwrap_or(""),
        version = checked.version,
        %publisher,
        signers = ?checked.signers,
        delivered_to,
        republished = checked.republished,
        "published a schedule"
    );

    if checked.republished {
        let detail = serde_json::json!({
            "tier": checked.tier,
            "site": checked.site,
            "version": checked.version,
            "schedule_hash": checked.schedule_hash,
            "signers": checked.signers,
            "publisher": publisher,
        });
        state
            .audit
            .record(AuditEntry::new(
                principal.actor(),
                "schedule.republished",
                checked.target(),
                detail,
            ))
            .await;
    }

    let status = if checked.republished {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let response = SchedulePublishResponse {
        tier: checked.tier,
        site: checked.site,
        version: checked.version,
        schedule_hash: checked.schedule_hash,
        signers: checked.signers,
        delivered_to,
        republished: checked.republished,
    };
    (status, Json(response)).into_response()
}

enum PublishFailure {
    Check(ScheduleCheckError),
    Store(ScheduleStoreError),
}

/// Checks a schedule file against the target's current version and stores it.
fn check_and_record(
    schedules: &Schedules,
    file: &[u8],
    root: Option<&TrustRoot>,
    now_unix_s: i64,
    publisher: &str,
    actor: &str,
) -> Result<crate::schedules::CheckedSchedule, PublishFailure> {
    if root.is_none() {
        return Err(PublishFailure::Check(ScheduleCheckError::NoTrustRoot));
    }
    let (tier, site) = schedule_target(file).map_err(PublishFailure::Check)?;
    let current = schedules
        .current(&tier, site.as_deref())
        .map_err(PublishFailure::Store)?;
    let checked =
        check_schedule(file, root, now_unix_s, current.as_ref()).map_err(PublishFailure::Check)?;
    if checked.republished {
        return Ok(checked);
    }
    let stored = StoredSchedule {
        tier: checked.tier.clone(),
        site: checked.site.clone(),
        version: checked.version,
        schedule_hash: checked.schedule_hash.clone(),
        file: file.to_vec(),
        signers: checked.signers.clone(),
        publisher: publisher.to_owned(),
        published_at_unix_s: now_unix_s,
    };
    match schedules.record(&stored, actor) {
        Ok(()) => Ok(checked),
        // Another publication of this target won between the check and the write.
        Err(ScheduleStoreError::NotNewer {
            target,
            offered,
            stored,
        }) => Err(PublishFailure::Check(ScheduleCheckError::NotNewer {
            target,
            offered,
            stored,
        })),
        Err(error) => Err(PublishFailure::Store(error)),
    }
}

#[derive(Debug, Deserialize)]
struct WindowsQuery {
    days: Option<String>,
    tier: Option<String>,
}

async fn list_windows(
    State(state): State<ScheduleState>,
    Query(query): Query<WindowsQuery>,
) -> Response {
    let days = match parse_window_days(query.days.as_deref()) {
        Ok(days) => days,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message, None),
    };
    let now = state.clock.now_unix_s();
    let schedules = state.schedules.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let stored = schedules.current_all().map_err(|error| error.to_string())?;
        let mut tiers = Vec::new();
        for schedule in stored.iter().filter(|schedule| {
            query
                .tier
                .as_ref()
                .is_none_or(|tier| &schedule.tier == tier)
        }) {
            tiers.push(tier_windows(schedule, now, days).map_err(|error| error.to_string())?);
        }
        Ok::<_, String>(WindowsResponse { tiers })
    })
    .await;
    match listed {
        Ok(Ok(response)) => Json(response).into_response(),
        Ok(Err(error)) => internal_error(error),
        Err(error) => internal_error(error),
    }
}

async fn list_earliest(State(state): State<ScheduleState>) -> Response {
    let now = state.clock.now_unix_s();
    let schedules = state.schedules.clone();
    let reader = state.reader.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let stored = schedules.current_all().map_err(|error| error.to_string())?;
        let mut calendars = Vec::with_capacity(stored.len());
        for schedule in stored {
            let calendar = stored_calendar(&schedule).map_err(|error| error.to_string())?;
            calendars.push((schedule, calendar));
        }
        let bundle_files = schedules
            .published_bundle_files()
            .map_err(|error| error.to_string())?;
        let fleet = reader.fleet().map_err(|error| error.to_string())?;
        let mut known_tiers: Vec<String> = calendars
            .iter()
            .map(|(schedule, _)| schedule.tier.clone())
            .chain(
                fleet
                    .into_iter()
                    .map(|agent| agent.tier)
                    .filter(|tier| !tier.is_empty()),
            )
            .collect();
        known_tiers.sort();
        known_tiers.dedup();
        Ok::<_, String>(EarliestResponse {
            now_unix_s: now,
            bundles: bundles_earliest(&bundle_files, &calendars, &known_tiers, now),
        })
    })
    .await;
    match listed {
        Ok(Ok(response)) => Json(response).into_response(),
        Ok(Err(error)) => internal_error(error),
        Err(error) => internal_error(error),
    }
}
