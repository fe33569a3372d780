//! The `tidegate` binary against a real HTTP server on 127.0.0.1, fed by a real store.

mod store_support;

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use store_support::*;
use tidegate_protocol::StatusState;
use tidegate_server::http::FleetResponse;
use tidegate_server::store::AgentDetail;

const THIRD_AGENT: &str = "3f2b0000000000000000000000000000";

fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Serves three agents: `gw-01` (online, last seen 5 minutes ago), `historian` (offline, last
/// seen 2 hours ago, nothing pending) and a third one known only from a status 3 days ago, whose
/// id shares the prefix `3f2` with `gw-01`.
fn fleet_server() -> (tempfile::TempDir, String, String) {
    let (dir, path, mut store) = temp_store();
    let now = now_unix_s();
    let mut historian = inventory();
    historian.facts.hostname = "historian".into();
    historian.facts.os_version = "11".into();
    historian.pending_updates.clear();
    historian.reboot = Default::default();
    store
        .ingest(vec![
            report_in(full_report(AGENT, BOOT_1, 1, inventory()), now - 300),
            status_in(
                status(AGENT, StatusState::Online, now - 300, "0.2.0"),
                now - 300,
            ),
            report_in(full_report(OTHER_AGENT, BOOT_1, 1, historian), now - 7_200),
            status_in(
                status(OTHER_AGENT, StatusState::Offline, now - 7_200, "0.1.0"),
                now - 7_200,
            ),
            status_in(
                status(THIRD_AGENT, StatusState::Online, now - 3 * 86_400, "0.1.0"),
                now - 3 * 86_400,
            ),
        ])
        .unwrap();
    let api = spawn_api(&path);
    (dir, api.base, api.token)
}

/// Runs `tidegate` with `token` in TIDEGATE_TOKEN.
fn tidegate(token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .env_remove("TIDEGATE_SERVER")
        .env("TIDEGATE_TOKEN", token)
        .output()
        .expect("run tidegate")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn fleet_list_prints_table() {
    let (_dir, base, token) = fleet_server();

    let output = tidegate(&token, &["--server", &base, "fleet", "list"]);

    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let expected = "\
AGENT         HOSTNAME   TIER  OWNER  OS                   PACKAGES  PENDING    REBOOT  ONLINE  LAST SEEN
3f2b00000000  -          -     -      -                    0         0          no      yes     3d ago
3f2a0c9d11e4  gw-01      -     -      Debian GNU/Linux 12  4         2 (1 sec)  yes     yes     5m ago
9c00aa11bb22  historian  -     -      Debian GNU/Linux 11  4         0          no      no      2h ago
";
    assert_eq!(stdout(&output), expected);
}

#[test]
fn fleet_list_json_round_trips() {
    let (_dir, base, token) = fleet_server();

    let output = tidegate(&token, &["fleet", "list", "--json", "--server", &base]);

    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let fleet: FleetResponse = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(fleet.agents.len(), 3);
    assert_eq!(fleet.agents[1].hostname, "gw-01");
}

#[test]
fn server_from_environment() {
    let (_dir, base, token) = fleet_server();

    let output = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["fleet", "list", "--json"])
        .env("TIDEGATE_SERVER", &base)
        .env("TIDEGATE_TOKEN", &token)
        .output()
        .unwrap();

    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert!(stdout(&output).contains("\"historian\""));
}

#[test]
fn fleet_show_by_id_prefix_and_hostname() {
    let (_dir, base, token) = fleet_server();

    for query in [AGENT, "3f2a", "gw-01"] {
        let output = tidegate(
            &token,
            &["--server", &base, "fleet", "show", query, "--json"],
        );
        assert!(output.status.success(), "{query}: {}", stderr(&output));
        let detail: AgentDetail = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(detail.summary.agent_id, AGENT, "query {query}");
    }
}

#[test]
fn fleet_show_prints_text() {
    let (_dir, base, token) = fleet_server();

    let output = tidegate(&token, &["--server", &base, "fleet", "show", "historian"]);

    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with(&format!("Agent:                  {OTHER_AGENT}\n")),
        "{text}"
    );
    assert!(
        text.contains("Hostname:               historian\n"),
        "{text}"
    );
    assert!(
        text.contains("OS:                     Debian GNU/Linux 11\n"),
        "{text}"
    );
    assert!(text.contains("Online:                 no\n"), "{text}");
    assert!(text.contains("Last seen:              2h ago\n"), "{text}");
    assert!(text.contains("Reports received:       1\n"), "{text}");
    assert!(text.contains("Reboot required: no\n"), "{text}");
    assert!(
        text.contains("Warnings (1):\n  dpkg: skipped a stanza without a Package field\n"),
        "{text}"
    );
    assert!(text.contains("Pending updates: none\n"), "{text}");
    assert!(
        text.ends_with("Packages: 4 installed, 1 broken, 6 rows (list them with --packages)\n"),
        "{text}"
    );

    let output = tidegate(
        &token,
        &[
            "--server",
            &base,
            "fleet",
            "show",
            "historian",
            "--packages",
        ],
    );
    let text = stdout(&output);
    // The VERSION column is as wide as curl's 17-character version.
    assert!(
        text.contains("deb        libssl3    i386   3.0.11-1~deb12u2   installed        install\n"),
        "{text}"
    );
}

#[test]
fn fleet_show_ambiguous_prefix_lists_matches() {
    let (_dir, base, token) = fleet_server();

    let output = tidegate(&token, &["--server", &base, "fleet", "show", "3f2"]);

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("\"3f2\" matches 2 agents"), "{message}");
    assert!(message.contains(&format!("{AGENT} (gw-01)")), "{message}");
    assert!(message.contains(&format!("{THIRD_AGENT} (-)")), "{message}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn fleet_show_unknown_agent_fails() {
    let (_dir, base, token) = fleet_server();

    let output = tidegate(&token, &["--server", &base, "fleet", "show", "plc-7"]);

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("no agent matches \"plc-7\""), "{message}");
}

#[test]
fn unreachable_server_explains() {
    // Bind and release a port, so nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");

    let output = tidegate("", &["--server", &url, "fleet", "list"]);

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("cannot reach tidegate server at {url}: ")),
        "{message}"
    );
    assert!(
        message.contains("(is tidegate-server running? set --server or TIDEGATE_SERVER)"),
        "{message}"
    );
}

#[test]
fn usage_error_exits_2() {
    let output = tidegate("", &["fleet", "list", "--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--no-such-flag"));

    let output = tidegate("", &["fleet"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn token_file_is_read() {
    let (dir, base, token) = fleet_server();
    let file = dir.path().join("viewer.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();

    let output = tidegate(
        "",
        &[
            "--server",
            &base,
            "--token-file",
            file.to_str().unwrap(),
            "fleet",
            "list",
            "--json",
        ],
    );

    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert!(stdout(&output).contains("\"historian\""));
}

#[test]
fn missing_token_explains() {
    let (_dir, base, _token) = fleet_server();

    let output = tidegate("", &["--server", &base, "fleet", "list"]);

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("did not accept the API token: missing Authorization header"),
        "{message}"
    );
    assert!(
        message.contains("--token-file PATH or TIDEGATE_TOKEN"),
        "{message}"
    );
}

#[test]
fn unreadable_token_file_names_it() {
    let output = tidegate(
        "",
        &[
            "--token-file",
            "/nonexistent/tidegate.token",
            "fleet",
            "list",
        ],
    );

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("cannot read the token file /nonexistent/tidegate.token"),
        "{message}"
    );
}
