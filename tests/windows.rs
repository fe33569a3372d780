//! Maintenance windows end to end, with a real server and a real agent process. OT publishes a
//! signed schedule whose only window opens a few seconds from now. A bundle delivered before that
//! waits in the agent's queue and is reported as waiting with the window's start. It runs once
//! the window opens, not before.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use tidegate_protocol::trust::{
    BundleFile, BundleId, BundleManifest, Payload, PayloadRef, Role, ScheduleDocument,
    SignedSchedule, SignedTrustRoot, SigningKey, Step, StreamName, TargetSelector, Thresholds,
    TrustRoot,
};
use tidegate_protocol::window::{CalendarSpec, WindowRule};
use tidegate_tests::{
    fixture_root, prepare_agent_id, wait_for, workspace_binary, AgentSettings, Process, Server,
};

const TIER: &str = "plant-floor";
/// How far ahead the window opens: long enough for the agent to start, report and receive the
/// bundle on a loaded machine, short enough for a test.
const WINDOW_LEAD_S: i64 = 15;

struct Keys {
    root: SigningKey,
    security: SigningKey,
    ot: SigningKey,
}

fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn write_root(keys: &Keys, path: &std::path::Path) {
    let root = TrustRoot {
        version: 1,
        keys: vec![
            keys.root.public_key().clone(),
            keys.security.public_key().clone(),
            keys.ot.public_key().clone(),
        ],
        thresholds: Thresholds {
            root: 1,
            security: 1,
            ot: 1,
        },
        tier_overrides: BTreeMap::new(),
        command_tiers: Default::default(),
    };
    let mut signed = SignedTrustRoot::new(&root).unwrap();
    signed.sign(&keys.root).unwrap();
    std::fs::write(path, signed.encode().unwrap()).unwrap();
}

/// Builds a schedule with one window `[start, start + 1 h)` for the tier, valid from a minute ago
/// for a day.
fn schedule(keys: &Keys, now: i64, start: i64) -> Vec<u8> {
    let document = ScheduleDocument {
        tier: TIER.into(),
        site: None,
        version: 1,
        calendar: CalendarSpec {
            zone: "Europe/Berlin".into(),
            not_before_unix_s: now - 60,
            expires_unix_s: now + 86_400,
            windows: vec![WindowRule::Once {
                start_unix_s: start,
                end_unix_s: start + 3600,
                cutoff_s: None,
            }],
            freezes: Vec::new(),
        },
    };
    let mut signed = SignedSchedule::new(&document).unwrap();
    signed.sign(&keys.ot).unwrap();
    signed.encode().unwrap()
}

fn motd_bundle(keys: &Keys, now: i64) -> Vec<u8> {
    let content = b"managed by tidegate\n";
    let manifest = BundleManifest {
        bundle_id: BundleId::parse("motd").unwrap(),
        stream: StreamName::parse("motd").unwrap(),
        sequence: 1,
        not_before_unix_s: now - 3600,
        expires_unix_s: now + 86_400,
        target: TargetSelector {
            tiers: vec![TIER.into()],
            ..TargetSelector::default()
        },
        steps: vec![Step::WriteFile {
            path: "etc/motd".into(),
            payload: "motd".into(),
            mode: 0o644,
            owner: "0".into(),
            group: "0".into(),
        }],
        payloads: vec![PayloadRef::of_content("motd", content)],
        execution: Default::default(),
    };
    let mut file = BundleFile::new(
        &manifest,
        vec![Payload {
            name: "motd".into(),
            content: content.to_vec(),
        }],
    )
    .unwrap();
    file.sign(&keys.security).unwrap();
    file.encode().unwrap()
}

/// Returns the newest record of bundle `motd` in the API: the outcome name and the whole record.
fn motd_record(server: &Server, agent_id: &str) -> Option<(String, serde_json::Value)> {
    let detail = server.get_json(&format!("/api/v1/agents/{agent_id}"))?;
    let record = detail["bundles"]
        .as_array()?
        .iter()
        .rev()
        .find(|record| record["bundle_id"] == "motd")?
        .clone();
    let outcome = match &record["outcome"] {
        serde_json::Value::String(name) => name.clone(),
        serde_json::Value::Object(map) => map.keys().next()?.clone(),
        _ => return None,
    };
    Some((outcome, record))
}

#[test]
fn bundle_waits_then_runs_in_window() {
    let random = SystemRandom::new();
    let keys = Keys {
        root: SigningKey::generate(Role::Root, &random).unwrap(),
        security: SigningKey::generate(Role::Security, &random).unwrap(),
        ot: SigningKey::generate(Role::Ot, &random).unwrap(),
    };
    let data = tempfile::tempdir().unwrap();
    let trust_root = data.path().join("root.tgrt");
    write_root(&keys, &trust_root);
    let server = Server::start_with_trust_root(&data.path().join("tidegate.db"), &trust_root);

    let root = fixture_root(3, 0);
    std::fs::write(root.path().join("etc/motd"), "old motd\n").unwrap();
    let state_dir = data.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);
    let mut settings = AgentSettings::new(root.path(), &state_dir, server.broker_url());
    settings.trust_root_file = Some(trust_root.clone());
    settings.tier = TIER.into();
    settings.require_schedule = true;
    let config = data.path().join("agent.toml");
    settings.write(&config);
    let _agent = Process::spawn(
        "tidegate-agent",
        Command::new(workspace_binary("tidegate-agent"))
            .arg("run")
            .arg("--config")
            .arg(&config),
    );
    wait_for("the agent's first report", Duration::from_secs(30), || {
        server
            .agent(&agent_id)
            .filter(|agent| !agent["last_report_unix_s"].is_null())
    });

    let now = now_unix_s();
    let window_start = now + WINDOW_LEAD_S;
    let (status, body) = server.post_octets(
        "/api/v1/schedules",
        &server.token,
        &[("X-Tidegate-Publisher", "ot@plant")],
        &schedule(&keys, now, window_start),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.post_octets(
        "/api/v1/bundles?delivery=immediate",
        &server.token,
        &[("X-Tidegate-Publisher", "security@ci")],
        &motd_bundle(&keys, now),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["delivered_to"], 1, "{body}");

    // The agent keeps the bundle and reports when it expects to start it: at the window's start.
    let (_, waiting) = wait_for(
        "the agent to report the bundle waiting",
        Duration::from_secs(20),
        || motd_record(&server, &agent_id).filter(|(outcome, _)| outcome == "Waiting"),
    );
    assert!(
        now_unix_s() < window_start,
        "the test machine was too slow to see the wait"
    );
    assert_eq!(
        waiting["outcome"]["Waiting"]["expected_start_unix_s"], window_start,
        "{waiting}"
    );
    assert_eq!(waiting["outcome"]["Waiting"]["code"], "outside-windows");
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/motd")).unwrap(),
        "old motd\n",
        "the bundle ran before its window"
    );

    // Once the window opens the bundle runs, and its step started no earlier than the window.
    let (_, applied) = wait_for(
        "the agent to apply the bundle in its window",
        Duration::from_secs(WINDOW_LEAD_S as u64 + 30),
        || motd_record(&server, &agent_id).filter(|(outcome, _)| outcome == "Applied"),
    );
    let started = applied["steps"][0]["started_at_unix_s"].as_i64().unwrap();
    assert!(
        started >= window_start,
        "step started at {started}, before the window at {window_start}"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/motd")).unwrap(),
        "managed by tidegate\n"
    );
}
