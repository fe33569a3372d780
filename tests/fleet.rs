//! The whole reporting path on one machine: `tidegate-server` with its embedded broker, a real
//! agent on a fixture root, the HTTP API and the `tidegate` CLI.

use std::time::Duration;

use tidegate_tests::{fixture_root, prepare_agent_id, wait_for, AgentSettings, Server};

#[test]
fn fleet_list_shows_agent_via_embedded_broker() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_embedded(&data.path().join("tidegate.db"));
    let root = fixture_root(40, 3);
    let state_dir = data.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);
    let _agent = AgentSettings::new(root.path(), &state_dir, server.broker_url()).start();

    let agent = wait_for("the agent's first report", Duration::from_secs(30), || {
        server
            .agent(&agent_id)
            .filter(|agent| !agent["last_report_unix_s"].is_null())
    });
    assert_eq!(agent["package_count"], 40, "{agent}");
    assert_eq!(agent["pending_updates"], 3, "{agent}");
    assert_eq!(agent["os_name"], "Fixture Linux", "{agent}");
    assert_eq!(agent["reboot_required"], false, "{agent}");

    let output = server.tidegate().args(["fleet", "list"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&agent_id[..12]), "{stdout}");
    assert!(stdout.contains("Fixture Linux"), "{stdout}");

    let output = server
        .tidegate()
        .args(["fleet", "show", &agent_id[..8]])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("pkg-0000"),
        "pending update of pkg-0000 listed: {stdout}"
    );
    assert!(
        stdout.contains("1.0-2"),
        "candidate version listed: {stdout}"
    );
}

#[test]
fn large_report_is_split_and_rebuilt() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_embedded(&data.path().join("tidegate.db"));
    let root = fixture_root(600, 0);
    let state_dir = data.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);
    let mut settings = AgentSettings::new(root.path(), &state_dir, server.broker_url());
    settings.max_packet_size_bytes = 1024;
    let _agent = settings.start();

    let agent = wait_for("the agent's first report", Duration::from_secs(30), || {
        server
            .agent(&agent_id)
            .filter(|agent| !agent["last_report_unix_s"].is_null())
    });
    assert_eq!(agent["package_count"], 600, "{agent}");
    let detail = server
        .get_json(&format!("/api/v1/agents/{agent_id}"))
        .unwrap();
    let packages = detail["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 600);
    assert_eq!(packages[599]["name"], "pkg-0599");
    assert_eq!(packages[599]["version"], "1.599-1");
}
