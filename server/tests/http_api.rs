//! The HTTP API over a real store, through a real 127.0.0.1 listener.

mod store_support;

use store_support::*;
use tidegate_protocol::StatusState;
use tidegate_server::http::{ErrorResponse, FleetResponse};
use tidegate_server::store::AgentDetail;

/// Sends a GET request for `path` with the admin token and returns the status, the content type
/// and the body.
fn get(api: &TestApi, path: &str) -> (u16, String, String) {
    get_as(api, path, Some(&api.token))
}

/// Sends a GET request for `path` with `token`, or without an Authorization header.
fn get_as(api: &TestApi, path: &str, token: Option<&str>) -> (u16, String, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut request = agent.get(format!("{}{path}", api.base));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().expect("send the request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.body_mut().read_to_string().expect("read the body");
    (status, content_type, body)
}

/// Serves a store with two agents: `gw-01` with the sample inventory and online, and `historian` known
/// only from one status.
fn api_with_two_agents() -> (tempfile::TempDir, TestApi) {
    let (dir, path, mut store) = temp_store();
    store
        .ingest(vec![
            status_in(
                status(OTHER_AGENT, StatusState::Online, 1_000, "0.1.0"),
                1_001,
            ),
            report_in(full_report(AGENT, BOOT_1, 1, inventory()), COLLECTED_AT),
            status_in(
                status(AGENT, StatusState::Online, COLLECTED_AT, "0.2.0"),
                COLLECTED_AT,
            ),
        ])
        .unwrap();
    let api = spawn_api(&path);
    (dir, api)
}

#[test]
fn healthz_returns_ok() {
    let (_dir, api) = api_with_two_agents();
    let (status, _, body) = get_as(&api, "/healthz", None);
    assert_eq!(status, 200, "healthz needs no token");
    assert_eq!(body, "ok");
}

#[test]
fn reads_need_a_known_token() {
    let (_dir, api) = api_with_two_agents();

    let (status, content_type, body) = get_as(&api, "/api/v1/agents", None);
    assert_eq!(status, 401);
    assert_eq!(content_type, "application/json");
    let error: ErrorResponse = serde_json::from_str(&body).unwrap();
    assert!(
        error.error.contains("missing Authorization header"),
        "{}",
        error.error
    );

    let unknown = format!("tg_{}", "0".repeat(64));
    let (status, _, body) = get_as(&api, "/api/v1/agents", Some(&unknown));
    assert_eq!(status, 401);
    assert!(body.contains("unknown or revoked"), "{body}");

    let (status, _, _) = get_as(&api, "/api/v1/agents", Some("not-a-token"));
    assert_eq!(status, 401);
}

#[test]
fn agents_list_sorted_by_hostname() {
    let (_dir, api) = api_with_two_agents();

    let (status, content_type, body) = get(&api, "/api/v1/agents");

    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let fleet: FleetResponse = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = fleet
        .agents
        .iter()
        .map(|agent| agent.agent_id.as_str())
        .collect();
    // The agent known only from its status has no hostname yet, so it sorts first.
    assert_eq!(ids, vec![OTHER_AGENT, AGENT]);
    let gateway = &fleet.agents[1];
    assert_eq!(gateway.hostname, "gw-01");
    assert_eq!(gateway.package_count, 4);
    assert_eq!(gateway.pending_updates, 2);
    assert_eq!(gateway.security_updates, 1);
    assert!(gateway.online);
    assert_eq!(gateway.agent_version.as_deref(), Some("0.2.0"));

    let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(raw["agents"][1]["hostname"], "gw-01");
    assert_eq!(raw["agents"][1]["reboot_required"], true);
    assert_eq!(
        raw["agents"][0]["last_report_unix_s"],
        serde_json::Value::Null
    );
}

#[test]
fn agent_show_returns_detail() {
    let (_dir, api) = api_with_two_agents();

    let (status, _, body) = get(&api, &format!("/api/v1/agents/{AGENT}"));

    assert_eq!(status, 200);
    let detail: AgentDetail = serde_json::from_str(&body).unwrap();
    assert_eq!(detail.summary.agent_id, AGENT);
    assert_eq!(detail.packages.len(), 6);
    assert_eq!(detail.pending_updates.len(), 2);
    assert_eq!(detail.reboot_packages, vec!["linux-image-6.1.0-18-amd64"]);
    assert_eq!(detail.warnings.len(), 1);
}

#[test]
fn agent_show_unknown_is_404() {
    let (_dir, api) = api_with_two_agents();
    let unknown = "0123456789abcdef0123456789abcdef";

    let (status, content_type, body) = get(&api, &format!("/api/v1/agents/{unknown}"));

    assert_eq!(status, 404);
    assert_eq!(content_type, "application/json");
    let error: ErrorResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(error.error, format!("agent \"{unknown}\" not found"));
}

#[test]
fn agent_show_invalid_id_is_400() {
    let (_dir, api) = api_with_two_agents();

    let (status, _, body) = get(&api, "/api/v1/agents/GW-01");

    assert_eq!(status, 400);
    let error: ErrorResponse = serde_json::from_str(&body).unwrap();
    assert!(
        error.error.contains("invalid agent id \"GW-01\""),
        "{}",
        error.error
    );
    assert!(error.error.contains("lowercase"), "{}", error.error);
}

#[test]
fn store_error_is_500_json() {
    let (dir, path, store) = temp_store();
    drop(store);
    let api = spawn_api(&path);
    // Break the file under the reader: the agents table is gone.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE reports_seen; DROP TABLE packages; DROP TABLE pending_updates; DROP TABLE reboot_packages; DROP TABLE warnings; DROP TABLE agents;")
        .unwrap();

    let (status, content_type, body) = get(&api, "/api/v1/agents");

    assert_eq!(status, 500);
    assert_eq!(content_type, "application/json");
    let error: ErrorResponse = serde_json::from_str(&body).unwrap();
    assert!(
        error.error.contains("failed to read the fleet"),
        "{}",
        error.error
    );
    drop(dir);
}

#[test]
fn unknown_route_is_404() {
    let (_dir, api) = api_with_two_agents();
    let (status, _, _) = get(&api, "/api/v2/agents");
    assert_eq!(status, 404);
}
