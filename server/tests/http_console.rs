//! The web console's files and API endpoints over a real store, through real 127.0.0.1 listeners:
//! every page and asset with its status and content type, the bundle list, and owner teams
//! through the API and the `tidegate fleet assign` command.

mod store_support;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use store_support::*;
use tidegate_server::http::FleetResponse;
use tidegate_server::http_console::{BundlesResponse, ConsoleState};
use tidegate_server::publish::CheckedBundle;
use tidegate_server::store::owners::OwnerAssignments;
use tidegate_server::store::publications::Publications;
use tidegate_server::store::{AgentDetail, StoreReader};

/// A response's status, content type, content security policy and body.
struct Reply {
    status: u16,
    content_type: String,
    policy: String,
    body: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

fn reply(mut response: ureq::http::Response<ureq::Body>) -> Reply {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let status = response.status().as_u16();
    let content_type = header("content-type");
    let policy = header("content-security-policy");
    let body = response.body_mut().read_to_string().expect("read the body");
    Reply {
        status,
        content_type,
        policy,
        body,
    }
}

fn get(url: &str) -> Reply {
    reply(agent().get(url).call().expect("send the request"))
}

fn get_with_token(url: &str, token: &str) -> Reply {
    reply(
        agent()
            .get(url)
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .expect("send the request"),
    )
}

fn post_json(url: &str, body: &str) -> Reply {
    reply(
        agent()
            .post(url)
            .header("Content-Type", "application/json")
            .send(body)
            .expect("send the request"),
    )
}

/// Serves the fleet API and the console over a store with the agent `gw-01`, and returns the
/// store's directory, its path and the base URL.
fn console_server() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let (dir, path, mut store) = temp_store();
    store
        .ingest(vec![report_in(
            full_report(AGENT, BOOT_1, 1, inventory()),
            COLLECTED_AT,
        )])
        .unwrap();
    let state = ConsoleState {
        publications: Publications::open(&path).unwrap(),
        owners: OwnerAssignments::open(&path).unwrap(),
    };
    let app = tidegate_server::http::router(StoreReader::open(&path).unwrap())
        .merge(tidegate_server::http_console::router(state))
        .merge(tidegate_server::http_console::pages());
    let base = spawn_app(app);
    (dir, path, base)
}

/// A `tidegate-server` process on a temporary store, stopped when dropped.
struct ServerProcess {
    child: Child,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the real server binary with its embedded broker on a port between 20000 and 32000,
/// retrying on another port when the broker's port was taken in between.
fn start_server_binary() -> ServerProcess {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let mqtt_port = 20_000 + fastrand::u16(..12_000);
        let child = Command::new(env!("CARGO_BIN_EXE_tidegate-server"))
            .arg("--db")
            .arg(dir.path().join("tidegate.db"))
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}")])
            .arg("--admin-token-file")
            .arg(dir.path().join("admin.token"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tidegate-server");
        let mut server = ServerProcess {
            child,
            base: format!("http://127.0.0.1:{http_port}"),
            token: String::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", http_port)).is_ok() {
                server.token = std::fs::read_to_string(server._dir.path().join("admin.token"))
                    .expect("the first start wrote admin.token")
                    .trim()
                    .to_owned();
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("tidegate-server did not start on any of 5 port pairs");
}

#[test]
fn console_pages_and_assets_served() {
    let server = start_server_binary();

    let cases = [
        (
            "/",
            "text/html; charset=utf-8",
            "<title>tidegate console</title>",
        ),
        (
            "/ui",
            "text/html; charset=utf-8",
            "<title>tidegate console</title>",
        ),
        (
            "/ui/",
            "text/html; charset=utf-8",
            "<title>tidegate console</title>",
        ),
        (
            "/ui/index.html",
            "text/html; charset=utf-8",
            "<title>tidegate console</title>",
        ),
        ("/ui/style.css", "text/css; charset=utf-8", ".calendar"),
        (
            "/ui/app.js",
            "text/javascript; charset=utf-8",
            "function fleetPage()",
        ),
        ("/ui/favicon.svg", "image/svg+xml", "<svg"),
    ];
    for (path, content_type, marker) in cases {
        let reply = get(&format!("{}{path}", server.base));
        assert_eq!(reply.status, 200, "GET {path}");
        assert_eq!(reply.content_type, content_type, "GET {path}");
        assert!(reply.body.contains(marker), "GET {path} lacks {marker:?}");
        assert!(
            reply.policy.starts_with("default-src 'self';"),
            "GET {path} has the policy {:?}",
            reply.policy
        );
    }

    let missing = get(&format!("{}/ui/missing.js", server.base));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.content_type, "application/json");
    assert_eq!(
        missing.body,
        r#"{"error":"the console has no file \"missing.js\""}"#
    );
}

#[test]
fn console_routes_keep_publish_route() {
    let server = start_server_binary();

    let listed = get_with_token(&format!("{}/api/v1/bundles", server.base), &server.token);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.content_type, "application/json");
    assert_eq!(listed.body, r#"{"bundles":[]}"#);

    // The server started without a trust root, so publishing is refused with 503, which shows
    // the POST route beside the console's GET route on the same path.
    let published = reply(
        agent()
            .post(&format!("{}/api/v1/bundles", server.base))
            .header("Authorization", format!("Bearer {}", server.token))
            .header("Content-Type", "application/octet-stream")
            .send(&b"not a bundle"[..])
            .unwrap(),
    );
    assert_eq!(published.status, 503, "{}", published.body);

    let fleet = get_with_token(&format!("{}/api/v1/agents", server.base), &server.token);
    assert_eq!(fleet.status, 200);
    assert_eq!(fleet.body, r#"{"agents":[]}"#);
}

#[test]
fn console_loads_nothing_from_elsewhere() {
    let (_dir, _path, base) = console_server();
    let index = get(&format!("{base}/")).body;

    let references: Vec<&str> = index
        .split(['"', '\''])
        .enumerate()
        .filter(|(index, _)| index % 2 == 1)
        .map(|(_, value)| value)
        .filter(|value| value.starts_with('/') || value.contains("://"))
        .collect();
    assert_eq!(
        references,
        vec![
            "/ui/favicon.svg",
            "/ui/style.css",
            "/ui/app.js",
            "/ui/favicon.svg"
        ]
    );
    for asset in ["/ui/app.js", "/ui/style.css"] {
        let body = get(&format!("{base}{asset}")).body;
        assert!(!body.contains("http://"), "{asset} names an http URL");
        assert!(!body.contains("https://"), "{asset} names an https URL");
        assert!(!body.contains("@import"), "{asset} imports a style sheet");
    }
}

#[test]
fn owner_assignment_shows_in_fleet() {
    let (_dir, _path, base) = console_server();
    let url = format!("{base}/api/v1/agents/{AGENT}/owner");

    let assigned = post_json(&url, r#"{"owner": "plant-ops"}"#);
    assert_eq!(assigned.status, 200, "{}", assigned.body);
    assert_eq!(
        assigned.body,
        format!(r#"{{"agent_id":"{AGENT}","owner":"plant-ops"}}"#)
    );

    let fleet: FleetResponse =
        serde_json::from_str(&get(&format!("{base}/api/v1/agents")).body).unwrap();
    assert_eq!(fleet.agents[0].owner, "plant-ops");
    let detail: AgentDetail =
        serde_json::from_str(&get(&format!("{base}/api/v1/agents/{AGENT}")).body).unwrap();
    assert_eq!(detail.summary.owner, "plant-ops");

    let cleared = post_json(&url, r#"{"owner": ""}"#);
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    let detail: AgentDetail =
        serde_json::from_str(&get(&format!("{base}/api/v1/agents/{AGENT}")).body).unwrap();
    assert_eq!(detail.summary.owner, "");
}

#[test]
fn owner_assignment_rejects_bad_input() {
    let (_dir, _path, base) = console_server();
    let owner_url = |agent: &str| format!("{base}/api/v1/agents/{agent}/owner");

    let unknown = post_json(&owner_url(OTHER_AGENT), r#"{"owner": "ops"}"#);
    assert_eq!(unknown.status, 404);
    assert!(
        unknown
            .body
            .contains(&format!("agent \\\"{OTHER_AGENT}\\\" not found")),
        "{}",
        unknown.body
    );

    let invalid_id = post_json(&owner_url("GW-01"), r#"{"owner": "ops"}"#);
    assert_eq!(invalid_id.status, 400, "{}", invalid_id.body);

    let long_name = format!(r#"{{"owner": "{}"}}"#, "x".repeat(65));
    let too_long = post_json(&owner_url(AGENT), &long_name);
    assert_eq!(too_long.status, 400);
    assert!(
        too_long.body.contains("longer than 64 characters"),
        "{}",
        too_long.body
    );

    let padded = post_json(&owner_url(AGENT), r#"{"owner": " ops"}"#);
    assert_eq!(padded.status, 400);

    let malformed = post_json(&owner_url(AGENT), r#"{"team": "ops"}"#);
    assert_eq!(malformed.status, 400);
    assert!(
        malformed
            .body
            .contains("expected {\\\"owner\\\": \\\"TEAM\\\"}"),
        "{}",
        malformed.body
    );

    let detail: AgentDetail =
        serde_json::from_str(&get(&format!("{base}/api/v1/agents/{AGENT}")).body).unwrap();
    assert_eq!(
        detail.summary.owner, "",
        "a rejected request changed the owner"
    );
}

#[test]
fn bundle_list_newest_first() {
    let (_dir, path, base) = console_server();
    let publications = Publications::open(&path).unwrap();
    let bundle = |id: &str, sequence: u64, hash: char| CheckedBundle {
        bundle_id: id.into(),
        stream: "openssl".into(),
        sequence,
        bundle_hash: hash.to_string().repeat(64),
        signers: vec!["sec-a".into(), "sec-b".into()],
        target_tiers: vec![],
        target_os: vec![],
        target_tags: vec![],
        republished: false,
    };
    publications
        .record(
            &bundle("openssl-41", 41, 'a'),
            b"file of 19 bytes...",
            "alice",
            1_700_000_000,
            "token:alice/security",
        )
        .unwrap();
    publications
        .record(
            &bundle("openssl-42", 42, 'b'),
            b"seven b",
            "bob",
            1_700_000_600,
            "token:bob/security",
        )
        .unwrap();

    let reply = get(&format!("{base}/api/v1/bundles"));

    assert_eq!(reply.status, 200);
    let listed: BundlesResponse = serde_json::from_str(&reply.body).unwrap();
    let ids: Vec<&str> = listed
        .bundles
        .iter()
        .map(|bundle| bundle.bundle_id.as_str())
        .collect();
    assert_eq!(ids, vec!["openssl-42", "openssl-41"]);
    let newest = &listed.bundles[0];
    assert_eq!(newest.stream, "openssl");
    assert_eq!(newest.sequence, 42);
    assert_eq!(newest.bundle_hash, "b".repeat(64));
    assert_eq!(newest.signers, vec!["sec-a", "sec-b"]);
    assert_eq!(newest.publisher, "bob");
    assert_eq!(newest.published_at_unix_s, 1_700_000_600);
    assert_eq!(newest.size_bytes, 7);
    assert_eq!(listed.bundles[1].size_bytes, 19);
}

fn tidegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .env_remove("TIDEGATE_SERVER")
        .output()
        .expect("run tidegate")
}

#[test]
fn fleet_assign_sets_owner() {
    let (_dir, _path, base) = console_server();

    let output = tidegate(&[
        "--server",
        &base,
        "fleet",
        "assign",
        "gw-01",
        "--owner",
        "plant ops",
    ]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("assigned gw-01 ({AGENT}) to owner team plant ops\n")
    );
    let list = tidegate(&["--server", &base, "fleet", "list"]);
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(
        table.contains("gw-01     -     plant ops  Debian GNU/Linux 12"),
        "{table}"
    );

    let rejected = tidegate(&[
        "--server", &base, "fleet", "assign", "gw-01", "--owner", " padded",
    ]);
    assert_eq!(rejected.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("the server returned 400 for "));
}
