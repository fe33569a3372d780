//! Which role may call which route, and the middleware that enforces it on every `/api/v1` route.
//!
//! [`ROUTE_ROLES`] is the one place that grants roles. A `GET` or `HEAD` route it does not list is
//! open to every role, because reads are for everyone, viewers included. Any other route it does
//! not list is open to `admin` alone, so a new write route is closed until someone adds its line. `admin` may
//! call every route and is never listed.
//!
//! [`authorize`] runs as a route layer, after routing, so it sees the route's path template
//! (`/api/v1/agents/{agent_id}`) and unknown paths still answer `404`. It answers `401` with
//! `WWW-Authenticate: Bearer` when the `Authorization: Bearer TOKEN` header is missing, malformed,
//! or names an unknown or revoked token, and `403` when the token's role may not call the route.
//! It records every request that is not a read in the audit log (`api.request`, with the status
//! the handler returned, or `api.denied` for a `403`), and hands the handler the caller as a
//! [`Principal`] extension, which handlers take as an argument.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{Principal, Role, Tokens};
use crate::audit::{AuditEntry, AuditLog};
use crate::http::ErrorResponse;

/// The roles, besides `admin`, that may call one route.
#[derive(Debug, Clone, Copy)]
pub struct RouteRoles {
    pub method: &'static str,
    /// The path as the route was registered, with `{name}` for each parameter.
    pub path: &'static str,
    pub roles: &'static [Role],
}

const READERS: &[Role] = &[Role::It, Role::Ot, Role::Security, Role::Viewer];
const ADMIN_ONLY: &[Role] = &[];

/// Every route of the API with the roles that may call it; `admin` may call them all.
pub const ROUTE_ROLES: &[RouteRoles] = &[
    RouteRoles {
        method: "GET",
        path: "/api/v1/agents",
        roles: READERS,
    },
    RouteRoles {
        method: "GET",
        path: "/api/v1/agents/{agent_id}",
        roles: READERS,
    },
    RouteRoles {
        method: "GET",
        path: "/api/v1/audit",
        roles: READERS,
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/bundles",
        roles: &[Role::Security],
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/trust-root",
        roles: &[Role::Security],
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/agents/{agent_id}/owner",
        roles: &[Role::It],
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/agents/{agent_id}/rollback",
        roles: &[Role::It],
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/schedules",
        roles: &[Role::Ot],
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/rollouts",
        roles: &[Role::It],
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/rollouts/stop-all",
        roles: &[Role::It],
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/rollouts/{id}/pause",
        roles: &[Role::It],
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/rollouts/{id}/resume",
        roles: &[Role::It],
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/rollouts/{id}/stop",
        roles: &[Role::It],
    },
    RouteRoles {
        method: "GET",
        path: "/api/v1/tokens",
        roles: ADMIN_ONLY,
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/tokens",
        roles: ADMIN_ONLY,
    },
    RouteRoles {
        method: "POST",
        path: "/api/v1/tokens/{name}/revoke",
        roles: ADMIN_ONLY,
    },
];

/// Returns whether a request with `method` reads only.
pub fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Returns the roles besides `admin` that may call `method` on the route `path`.
pub fn allowed_roles(method: &Method, path: &str) -> &'static [Role] {
    let listed = ROUTE_ROLES
        .iter()
        .find(|rule| rule.path == path && rule.method == method.as_str());
    match listed {
        Some(rule) => rule.roles,
        None if is_read(method) => READERS,
        None => ADMIN_ONLY,
    }
}

/// Returns whether `role` may call `method` on the route `path`.
pub fn permits(role: Role, method: &Method, path: &str) -> bool {
    role == Role::Admin || allowed_roles(method, path).contains(&role)
}

/// The state of the middleware: the tokens to check and the log to record in.
#[derive(Clone)]
pub struct AuthState {
    pub tokens: Tokens,
    pub audit: AuditLog,
}

/// Checks the caller's token and role, runs the handler, and records what was not a read.
pub async fn authorize(
    State(state): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();

    let token = match bearer_token(request.headers()) {
        Ok(token) => token.to_owned(),
        Err(reason) => return unauthorized(reason),
    };
    let tokens = state.tokens.clone();
    let principal = match tokio::task::spawn_blocking(move || tokens.authenticate(&token)).await {
        Ok(Ok(Some(principal))) => principal,
        Ok(Ok(None)) => return unauthorized("the token is unknown or revoked"),
        Ok(Err(error)) => {
            tracing::error!(%error, "failed to check an API token");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string());
        }
        Err(error) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the token check task failed: {error}"),
            )
        }
    };

    if !permits(principal.role, &method, &route) {
        let mut allowed: Vec<&str> = allowed_roles(&method, &route)
            .iter()
            .map(|role| role.as_str())
            .collect();
        allowed.push("admin");
        let message = format!(
            "role {} may not {method} {route}; it needs one of: {}",
            principal.role,
            allowed.join(", ")
        );
        tracing::warn!(token = %principal.name, role = %principal.role, %method, %route, "denied an API request");
        if !is_read(&method) {
            state
                .audit
                .record(AuditEntry::new(
                    principal.actor(),
                    "api.denied",
                    route.clone(),
                    json!({"method": method.as_str(), "path": path, "status": 403}),
                ))
                .await;
        }
        return error_response(StatusCode::FORBIDDEN, message);
    }

    let actor = principal.actor();
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    if !is_read(&method) {
        state
            .audit
            .record(AuditEntry::new(
                actor,
                "api.request",
                route,
                json!({
                    "method": method.as_str(),
                    "path": path,
                    "status": response.status().as_u16(),
                }),
            ))
            .await;
    }
    response
}

/// Returns the token of an `Authorization: Bearer TOKEN` header, or why there is none.
fn bearer_token(headers: &HeaderMap) -> Result<&str, &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("missing Authorization header; send Authorization: Bearer TOKEN")?;
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not ASCII")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("the Authorization header is not of the form Bearer TOKEN")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("the Authorization header is not of the form Bearer TOKEN");
    }
    Ok(token.trim())
}

fn unauthorized(reason: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, reason.to_owned());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn error_response(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorResponse { error })).into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    /// Takes the caller that [`authorize`] stored. A handler outside the middleware gets `401`,
    /// so a route that was merged without it fails closed.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| unauthorized("the route is not behind the token check"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_routes_follow_the_table() {
        let post = Method::POST;
        assert!(permits(Role::Security, &post, "/api/v1/bundles"));
        assert!(!permits(Role::It, &post, "/api/v1/bundles"));
        assert!(!permits(Role::Viewer, &post, "/api/v1/bundles"));
        assert!(permits(Role::Admin, &post, "/api/v1/bundles"));
        assert!(!permits(Role::Security, &post, "/api/v1/tokens"));
        assert!(!permits(Role::Viewer, &Method::GET, "/api/v1/tokens"));
        assert!(permits(
            Role::Viewer,
            &Method::GET,
            "/api/v1/agents/{agent_id}"
        ));
    }

    #[test]
    fn unlisted_routes_are_read_only_for_non_admins() {
        for role in [Role::It, Role::Ot, Role::Security, Role::Viewer] {
            assert!(permits(role, &Method::GET, "/api/v1/somewhere-new"));
            assert!(!permits(role, &Method::POST, "/api/v1/somewhere-new"));
            assert!(!permits(role, &Method::DELETE, "/api/v1/somewhere-new"));
        }
        assert!(permits(Role::Admin, &Method::POST, "/api/v1/somewhere-new"));
    }

    #[test]
    fn bearer_header_forms() {
        let mut headers = HeaderMap::new();
        assert!(bearer_token(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer tg_abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Ok("tg_abc"));
        headers.insert(header::AUTHORIZATION, "bearer  tg_abc ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Ok("tg_abc"));
        headers.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert!(bearer_token(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer".parse().unwrap());
        assert!(bearer_token(&headers).is_err());
    }
}
