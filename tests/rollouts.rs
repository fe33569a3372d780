//! Rollouts end to end: the real server with its embedded broker, and simulated agents.
//!
//! The simulated agents are MQTT peers that speak the agent protocol. They publish an online
//! status and a full report. They reply to each bundle order with a report whose bundle record
//! carries the outcome the test chose: `Applied`, or `Reverted` for an agent set to fail. They
//! reply to each rollback order with a `RolledBack` record. Real
//! agents record bundle decisions but do not apply steps yet, so they would never report
//! `Applied`. The simulated agents connect with a clean session, as real agents do, so an order
//! sent while one is offline is lost unless the server sends it again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ring::rand::SystemRandom;
use tidegate_protocol::inventory::{HostFacts, Inventory};
use tidegate_protocol::topics::{topic, TopicKind};
use tidegate_protocol::trust::{
    inspect_bundle, BundleFile, BundleId, BundleManifest, Role, ScheduleDocument, SignedSchedule,
    SignedTrustRoot, SigningKey, Step, StreamName, TargetSelector, Thresholds, TrustRoot,
};
use tidegate_protocol::window::{CalendarSpec, WindowRule};
use tidegate_protocol::{
    decode, encode, AgentId, BootId, BundleOutcome, BundleRecord, Message, OrderBody, Report,
    ReportBody, Status, StatusState,
};
use tidegate_tests::{wait_for, workspace_binary, Server, TestClient};

fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Writes a root of `version` over the three keys with every threshold at 1, signed by
/// `root_key`.
fn write_root(
    path: &Path,
    version: u64,
    root_key: &SigningKey,
    security: &SigningKey,
    ot: &SigningKey,
) {
    let root = TrustRoot {
        version,
        keys: vec![
            root_key.public_key().clone(),
            security.public_key().clone(),
            ot.public_key().clone(),
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
    signed.sign(root_key).unwrap();
    std::fs::write(path, signed.encode().unwrap()).unwrap();
}

/// Builds a bundle of one sysctl step for every tier, valid for a day around now.
fn bundle(id: &str, sequence: u64, signer: &SigningKey) -> Vec<u8> {
    let now = now_unix_s();
    let manifest = BundleManifest {
        bundle_id: BundleId::parse(id).unwrap(),
        stream: StreamName::parse("baseline").unwrap(),
        sequence,
        not_before_unix_s: now - 3600,
        expires_unix_s: now + 86_400,
        target: TargetSelector::default(),
        steps: vec![Step::Sysctl {
            key: "net.ipv4.tcp_syncookies".into(),
            value: "1".into(),
        }],
        payloads: vec![],
        execution: Default::default(),
    };
    let mut file = BundleFile::new(&manifest, vec![]).unwrap();
    file.sign(signer).unwrap();
    file.encode().unwrap()
}

/// Starts a server with a fresh root and publishes one bundle, held for a rollout.
fn server_with_bundle(dir: &Path, bundle_id: &str) -> Server {
    server_and_keys(dir, bundle_id).0
}

/// Like [`server_with_bundle`], and returns the root, security and OT keys too.
fn server_and_keys(dir: &Path, bundle_id: &str) -> (Server, [SigningKey; 3]) {
    let root_key = SigningKey::generate(Role::Root, &SystemRandom::new()).unwrap();
    let security = SigningKey::generate(Role::Security, &SystemRandom::new()).unwrap();
    let ot = SigningKey::generate(Role::Ot, &SystemRandom::new()).unwrap();
    let root = dir.join("root.tgrt");
    write_root(&root, 1, &root_key, &security, &ot);
    let server = Server::start_with_trust_root(&dir.join("tidegate.db"), &root);
    let response = ureq::post(&format!("{}/api/v1/bundles", server.url()))
        .header("Authorization", format!("Bearer {}", server.token))
        .header("Content-Type", "application/octet-stream")
        .header("X-Tidegate-Publisher", "security@ci")
        .send(&bundle(bundle_id, 1, &security)[..])
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let body: serde_json::Value = response.into_body().read_json().unwrap();
    assert_eq!(body["delivered_to"], 0, "held for a rollout: {body}");
    assert_eq!(body["immediate"], false, "{body}");
    (server, [root_key, security, ot])
}

/// Builds tier `office`'s schedule of `version`, a window every day at 02:00 UTC for an hour,
/// valid from a day ago for 30 days, signed by `ot`.
fn office_schedule(version: u64, ot: &SigningKey) -> Vec<u8> {
    let daily = WindowRule::Recurring {
        cron: "0 2 * * *".into(),
        duration_s: 3600,
        cutoff_s: None,
    };
    office_schedule_of(version, vec![daily], ot)
}

/// Builds tier `office`'s schedule of `version` with `windows`, valid from a day ago for 30 days,
/// signed by `ot`.
fn office_schedule_of(version: u64, windows: Vec<WindowRule>, ot: &SigningKey) -> Vec<u8> {
    let now = now_unix_s();
    let document = ScheduleDocument {
        tier: "office".into(),
        site: None,
        version,
        calendar: CalendarSpec {
            zone: "UTC".into(),
            not_before_unix_s: now - 86_400,
            expires_unix_s: now + 30 * 86_400,
            windows,
            freezes: vec![],
        },
    };
    let mut signed = SignedSchedule::new(&document).unwrap();
    signed.sign(ot).unwrap();
    signed.encode().unwrap()
}

fn post_json(server: &Server, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    post_json_as(server, &server.token, path, body)
}

fn post_json_as(
    server: &Server,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = ureq::post(&format!("{}{path}", server.url()))
        .header("Authorization", format!("Bearer {token}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(body)
        .unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().read_json().unwrap())
}

/// What a simulated agent does with a bundle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Apply,
    Fail,
}

/// A simulated agent: an MQTT peer on its own thread that reports and replies to bundle orders.
struct SimAgent {
    id: String,
    /// Every bundle id it was sent, in order.
    received: Arc<Mutex<Vec<String>>>,
    /// Every bundle id it was ordered to roll back, in order.
    rollbacks: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The state a simulated agent keeps across reconnects, as a real agent keeps its state directory.
struct SimState {
    agent_id: AgentId,
    boot_id: BootId,
    seq: AtomicU64,
    records: Mutex<Vec<BundleRecord>>,
    trust_root_version: AtomicU64,
    /// The version of every schedule order it received, in order.
    schedules: Mutex<Vec<u64>>,
}

impl SimState {
    fn new(id: &str) -> Arc<Self> {
        let mut boot = [0u8; 16];
        boot[..id.len().min(16)].copy_from_slice(&id.as_bytes()[..id.len().min(16)]);
        Arc::new(Self {
            agent_id: AgentId::parse(id).unwrap(),
            boot_id: BootId(boot),
            seq: AtomicU64::new(0),
            records: Mutex::new(Vec::new()),
            trust_root_version: AtomicU64::new(1),
            schedules: Mutex::new(Vec::new()),
        })
    }

    /// Returns the next number for reports and statuses, so a later status is newer by the
    /// agent's clock.
    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn status(&self, state: StatusState) -> Vec<u8> {
        let at = now_unix_s() + self.next() as i64;
        encode(&Message::Status(Status {
            agent_id: self.agent_id.clone(),
            boot_id: self.boot_id,
            state,
            agent_version: "simulated".into(),
            session_present: false,
            at_unix_s: at,
        }))
        .unwrap()
    }

    fn report(&self) -> Vec<u8> {
        let inventory = Inventory {
            facts: HostFacts {
                hostname: self.agent_id.to_string(),
                os_name: "Debian GNU/Linux".into(),
                ..HostFacts::default()
            },
            tier: "office".into(),
            trust_root_version: Some(self.trust_root_version.load(Ordering::SeqCst)),
            schedule_version: self.schedules.lock().unwrap().iter().max().copied(),
            bundles: self.records.lock().unwrap().clone(),
            ..Inventory::default()
        };
        encode(&Message::Report(Report {
            agent_id: self.agent_id.clone(),
            boot_id: self.boot_id,
            seq: self.next(),
            collected_at_unix_s: now_unix_s(),
            outbox_dropped: 0,
            body: ReportBody::Full(inventory),
        }))
        .unwrap()
    }
}

impl SimAgent {
    /// Connects, subscribes to the order topic, and publishes an online status and a report.
    fn start(port: u16, state: Arc<SimState>, answer: Answer) -> Self {
        let id = state.agent_id.to_string();
        // A client id of its own per connection, so a reconnect never takes over the session of
        // the connection before it.
        static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
        let connection = CONNECTIONS.fetch_add(1, Ordering::SeqCst);
        let client = TestClient::connect(port, &format!("sim-{id}-{connection}"));
        client.subscribe(&topic(&state.agent_id, TopicKind::Order));
        let status_topic = topic(&state.agent_id, TopicKind::Status);
        let report_topic = topic(&state.agent_id, TopicKind::Report);
        client.publish(&status_topic, state.status(StatusState::Online), true);
        client.publish(&report_topic, state.report(), false);

        let received = Arc::new(Mutex::new(Vec::new()));
        let rollbacks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = received.clone();
            let rollbacks = rollbacks.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(publish) = client.messages.recv_timeout(Duration::from_millis(100))
                    else {
                        continue;
                    };
                    let Ok(Message::Order(order)) = decode(&publish.payload) else {
                        continue;
                    };
                    let file = match order.body {
                        OrderBody::Bundle { file } => file,
                        OrderBody::Rollback { bundle_hash } => {
                            let mut records = state.records.lock().unwrap();
                            let Some(applied) = records
                                .iter()
                                .rev()
                                .find(|record| record.bundle_hash == bundle_hash)
                                .cloned()
                            else {
                                continue;
                            };
                            rollbacks.lock().unwrap().push(applied.bundle_id.clone());
                            records.push(BundleRecord {
                                outcome: BundleOutcome::RolledBack,
                                decided_at_unix_s: now_unix_s(),
                                ..applied
                            });
                            drop(records);
                            client.publish(&report_topic, state.report(), false);
                            continue;
                        }
                        OrderBody::TrustRoot { file } => {
                            // Pin the version without checking it: the agent's own checks are
                            // tested elsewhere, and this test is about delivery.
                            let version = SignedTrustRoot::decode(&file)
                                .and_then(|signed| signed.document())
                                .unwrap()
                                .version;
                            state
                                .trust_root_version
                                .fetch_max(version, Ordering::SeqCst);
                            client.publish(&report_topic, state.report(), false);
                            continue;
                        }
                        OrderBody::Schedule { file } => {
                            // Keep the version without checking the signatures, as for the
                            // trust root above.
                            let version = SignedSchedule::decode(&file)
                                .and_then(|signed| signed.document())
                                .unwrap()
                                .0
                                .version;
                            state.schedules.lock().unwrap().push(version);
                            client.publish(&report_topic, state.report(), false);
                            continue;
                        }
                        _ => continue,
                    };
                    let inspection = inspect_bundle(&file).unwrap();
                    let bundle_id = inspection.manifest.bundle_id.to_string();
                    received.lock().unwrap().push(bundle_id.clone());
                    let outcome = match answer {
                        Answer::Apply => BundleOutcome::Applied,
                        Answer::Fail => BundleOutcome::Reverted {
                            step: Some(0),
                            detail: "simulated failure".into(),
                        },
                    };
                    state.records.lock().unwrap().push(BundleRecord {
                        bundle_id,
                        stream: inspection.manifest.stream.to_string(),
                        sequence: inspection.manifest.sequence,
                        bundle_hash: inspection.bundle_hash.to_string(),
                        outcome,
                        decided_at_unix_s: now_unix_s(),
                        steps: Vec::new(),
                    });
                    client.publish(&report_topic, state.report(), false);
                }
                // Leave as an agent that shuts down does: the offline status, then disconnect.
                client.publish(&status_topic, state.status(StatusState::Offline), true);
                std::thread::sleep(Duration::from_millis(200));
                let _ = client.client.disconnect();
            })
        };
        Self {
            id,
            received,
            rollbacks,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    fn rollbacks(&self) -> Vec<String> {
        self.rollbacks.lock().unwrap().clone()
    }

    /// Goes offline: publishes the offline status and disconnects.
    fn disconnect(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Waits until the server has applied a report of every one of `count` agents.
fn wait_for_reports(server: &Server, count: usize) {
    wait_for(
        "every agent's first report",
        Duration::from_secs(30),
        || {
            let fleet = server.get_json("/api/v1/agents")?;
            let reported = fleet["agents"]
                .as_array()?
                .iter()
                .filter(|agent| !agent["last_report_unix_s"].is_null())
                .count();
            (reported == count).then_some(())
        },
    );
}

/// Runs the operator CLI against the server and returns its output; fails on a non-zero exit.
fn tidegate(server: &Server, arguments: &[&str]) -> String {
    let output = std::process::Command::new(workspace_binary("tidegate"))
        .arg("--server")
        .arg(server.url())
        .env("TIDEGATE_TOKEN", &server.token)
        .args(arguments)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "tidegate {arguments:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn rollout(server: &Server, id: u64) -> serde_json::Value {
    server
        .get_json(&format!("/api/v1/rollouts/{id}"))
        .expect("the rollout exists")
}

fn agent_state(view: &serde_json::Value, agent_id: &str) -> String {
    view["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|agent| agent["agent_id"] == agent_id)
        .map(|agent| agent["state"]["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn twenty_agents_pause_at_second_failure() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_bundle(dir.path(), "fix-20");
    let port = server.mqtt_port.unwrap();

    // Agents sort by id: sim-00 and sim-01 are the canaries, sim-02 to sim-09 wave 2, sim-10 to
    // sim-19 wave 3. sim-01 fails in the canary wave and sim-02 in wave 2; sim-12 would fail too.
    let failing = ["sim-01", "sim-02", "sim-12"];
    let agents: Vec<SimAgent> = (0..20)
        .map(|n| {
            let id = format!("sim-{n:02}");
            let answer = if failing.contains(&id.as_str()) {
                Answer::Fail
            } else {
                Answer::Apply
            };
            SimAgent::start(port, SimState::new(&id), answer)
        })
        .collect();
    wait_for_reports(&server, 20);

    // Started through the operator CLI, as IT would.
    let output = tidegate(
        &server,
        &[
            "rollout",
            "start",
            "fix-20",
            "--canary",
            "2",
            "--waves",
            "2,10%,50%,100%",
            "--max-concurrent-per-tier",
            "3",
            "--failure-threshold",
            "2",
            "--on-failure",
            "pause",
            "--grace",
            "10m",
            "--requested-by",
            "it@ci",
        ],
    );
    assert_eq!(
        output,
        "started rollout 1 of bundle fix-20 to 20 agents in 3 waves (2, 8, 10)\n\
         watch it with: tidegate rollout status 1 --watch\n"
    );
    let started = rollout(&server, 1);
    assert_eq!(started["created_by"], "it@ci", "{started}");
    assert_eq!(started["spec"]["grace_seconds"], 600, "{started}");
    assert_eq!(started["spec"]["max_concurrent_per_tier"], 3, "{started}");

    let paused = wait_for("the rollout to pause", Duration::from_secs(30), || {
        let view = rollout(&server, 1);
        (view["status"]["state"] == "paused").then_some(view)
    });
    assert_eq!(
        paused["status"]["reason"], "2 failed agents reached the failure threshold of 2",
        "{paused}"
    );
    assert_eq!(paused["current_wave"], 2, "{paused}");
    assert_eq!(agent_state(&paused, "sim-01"), "failed");
    assert_eq!(agent_state(&paused, "sim-02"), "failed");

    // Give a wrongly running rollout time to reach wave 3, then check that none of it did.
    std::thread::sleep(Duration::from_secs(3));
    let view = rollout(&server, 1);
    assert_eq!(view["status"]["state"], "paused", "{view}");
    assert_eq!(view["waves"][2]["counts"]["pending"], 10, "{view}");
    assert_eq!(view["counts"]["failed"], 2, "{view}");
    for agent in &agents {
        let wave = agent.id[4..].parse::<u32>().unwrap();
        if wave >= 10 {
            assert!(
                agent.received().is_empty(),
                "{} is in wave 3 and received {:?}",
                agent.id,
                agent.received()
            );
        }
    }
    for canary in &agents[..2] {
        assert_eq!(canary.received(), vec!["fix-20"], "{}", canary.id);
    }

    // A paused rollout cannot be paused again; a fleet-wide stop ends it.
    // Invalid settings and a second rollout of the same bundle are rejected with the reason.
    let request = |changes: serde_json::Value| {
        let mut body = serde_json::json!({
            "bundle_id": "fix-20",
            "failure_threshold": "2",
            "on_failure": "pause",
            "grace_seconds": 60,
        });
        for (key, value) in changes.as_object().unwrap() {
            body[key] = value.clone();
        }
        post_json(&server, "/api/v1/rollouts", body)
    };
    let (status, body) = request(serde_json::json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"],
        "rollout 1 already takes bundle fix-20 to the fleet; stop it first"
    );
    let (status, body) = request(serde_json::json!({"max_concurrent_per_tier": 0}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = request(serde_json::json!({"waves": "2,150%"}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "invalid wave size \"150%\": a share must be from 1% to 100%"
    );
    let (status, body) = request(serde_json::json!({"bundle_id": "no-such-bundle"}));
    assert_eq!(status, 404, "{body}");

    let (status, body) = post_json(&server, "/api/v1/rollouts/1/pause", serde_json::json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        tidegate(&server, &["rollout", "stop", "--all"]),
        "stopped rollout 1\n"
    );
    assert_eq!(rollout(&server, 1)["status"]["state"], "stopped");
    let (status, body) = post_json(&server, "/api/v1/rollouts/1/resume", serde_json::json!({}));
    assert_eq!(status, 409, "{body}");

    // The audit log has the operator's steps under the admin token and the driver's decisions
    // under `server`; the requests answered 409 changed nothing and are not among them.
    let entries = rollout_audit(&server);
    let steps: Vec<(&str, &str)> = entries
        .iter()
        .map(|entry| {
            (
                entry["action"].as_str().unwrap(),
                entry["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("rollout.started", "token:admin/admin"),
            ("rollout.wave_started", "server"),
            ("rollout.paused", "server"),
            ("rollout.stop_all", "token:admin/admin"),
        ]
    );
    assert_eq!(entries[1]["detail"]["wave"], 2);
    assert_eq!(entries[1]["detail"]["wave_count"], 3);
    assert_eq!(
        entries[2]["detail"]["reason"],
        "2 failed agents reached the failure threshold of 2"
    );
    assert_eq!(entries[3]["detail"]["stopped"], serde_json::json!([1]));
}

/// Returns the audit entries of rollouts, oldest first.
fn rollout_audit(server: &Server) -> Vec<serde_json::Value> {
    server
        .audit_entries()
        .into_iter()
        .filter(|entry| {
            entry["action"]
                .as_str()
                .is_some_and(|action| action.starts_with("rollout."))
        })
        .collect()
}

#[test]
fn offline_agent_receives_bundle_on_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (server, [root_key, security, ot]) = server_and_keys(dir.path(), "fix-late");
    let port = server.mqtt_port.unwrap();

    let online = SimAgent::start(port, SimState::new("sim-a"), Answer::Apply);
    let away_state = SimState::new("sim-b");
    let away = SimAgent::start(port, away_state.clone(), Answer::Apply);
    wait_for_reports(&server, 2);
    away.disconnect();
    wait_for("sim-b to be offline", Duration::from_secs(20), || {
        (server.agent("sim-b")?["online"] == false).then_some(())
    });

    // Root version 2 is published while sim-b is offline, so only sim-a gets it now.
    let root_v2 = dir.path().join("root-v2.tgrt");
    write_root(&root_v2, 2, &root_key, &security, &ot);
    let response = ureq::post(&format!("{}/api/v1/trust-root", server.url()))
        .header("Authorization", format!("Bearer {}", server.token))
        .header("Content-Type", "application/octet-stream")
        .send(&std::fs::read(&root_v2).unwrap()[..])
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);

    // One wave of both agents; sim-b is offline when it starts, so its order is lost.
    let (status, body) = post_json(
        &server,
        "/api/v1/rollouts",
        serde_json::json!({
            "bundle_id": "fix-late",
            "canary": 0,
            "waves": "100%",
            "failure_threshold": "1",
            "on_failure": "pause",
            "grace_seconds": 600,
        }),
    );
    assert_eq!(status, 201, "{body}");
    wait_for("sim-a to apply", Duration::from_secs(20), || {
        (agent_state(&rollout(&server, 1), "sim-a") == "applied").then_some(())
    });
    assert_eq!(agent_state(&rollout(&server, 1), "sim-b"), "delivered");
    let delivery = server
        .get_json("/api/v1/agents/sim-b/delivery")
        .expect("sim-b has a delivery state");
    assert_eq!(
        delivery["bundles"].as_array().unwrap().len(),
        1,
        "{delivery}"
    );
    assert!(
        delivery["acknowledged_version"].as_u64() < delivery["version"].as_u64(),
        "sim-b has not acknowledged the bundle: {delivery}"
    );

    // Back online with a clean session: only a resend by the server can reach it.
    let back = SimAgent::start(port, away_state, Answer::Apply);
    wait_for("the rollout to complete", Duration::from_secs(20), || {
        let view = rollout(&server, 1);
        (view["status"]["state"] == "completed").then_some(())
    });
    assert_eq!(back.received(), vec!["fix-late"]);
    assert_eq!(online.received(), vec!["fix-late"]);
    let delivery = wait_for(
        "sim-b to acknowledge its desired state",
        Duration::from_secs(20),
        || {
            let delivery = server.get_json("/api/v1/agents/sim-b/delivery")?;
            (delivery["acknowledged_version"] == delivery["version"]).then_some(delivery)
        },
    );
    assert_eq!(delivery["trust_root_version"], 2, "{delivery}");
    assert_eq!(delivery["acknowledged_trust_root_version"], 2, "{delivery}");
    assert_eq!(server.agent("sim-b").unwrap()["trust_root_version"], 2);

    // The operator CLI shows the same through the API. The live view of a rollout that has
    // ended draws it once and returns.
    let list = tidegate(&server, &["rollout", "status"]);
    assert_eq!(
        list,
        "ID  BUNDLE    STATUS     WAVE  TARGETS  PENDING  DELIVERED  RUNNING  APPLIED  FAILED  ROLLBACK\n\
         1   fix-late  completed  1/1   2        0        0          0        2        0       0\n"
    );
    let watched = tidegate(&server, &["rollout", "status", "1", "--watch"]);
    assert!(watched.starts_with("\x1b[2J\x1b[H"), "{watched}");
    let text = tidegate(&server, &["rollout", "status", "1"]);
    // The "Started: 5s ago" line may differ by a second between the two runs.
    let without_age = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| !line.starts_with("Started:"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        without_age(&watched["\x1b[2J\x1b[H".len()..]),
        without_age(&text)
    );
    assert!(text.contains("Status:   completed\n"), "{text}");
    assert!(
        text.contains(
            "WAVE  AGENTS  PENDING  DELIVERED  RUNNING  APPLIED  FAILED  ROLLBACK\n\
             1     2       0        0          0        2        0       0\n"
        ),
        "{text}"
    );
}

#[test]
fn silent_agent_fails_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_bundle(dir.path(), "fix-silent");
    let port = server.mqtt_port.unwrap();
    let silent = SimAgent::start(port, SimState::new("sim-s"), Answer::Apply);
    wait_for_reports(&server, 1);
    silent.disconnect();

    // Without window schedules the window ends when the bundle is sent, so the deadline is
    // 2 s after that.
    let (status, body) = post_json(
        &server,
        "/api/v1/rollouts",
        serde_json::json!({
            "bundle_id": "fix-silent",
            "canary": 0,
            "failure_threshold": "1",
            "on_failure": "pause",
            "grace_seconds": 2,
        }),
    );
    assert_eq!(status, 201, "{body}");
    let sent_at = body["agents"][0]["sent_at_unix_s"].as_i64();
    let view = wait_for("sim-s to count as failed", Duration::from_secs(20), || {
        let view = rollout(&server, 1);
        (agent_state(&view, "sim-s") == "failed").then_some(view)
    });
    let agent = &view["agents"][0];
    assert_eq!(agent["state"]["timed_out"], true, "{view}");
    let sent_at = sent_at.or(agent["sent_at_unix_s"].as_i64()).unwrap();
    assert_eq!(
        agent["deadline_unix_s"].as_i64(),
        Some(sent_at + 2),
        "{view}"
    );
    assert!(
        agent["changed_at_unix_s"].as_i64().unwrap() >= sent_at + 2,
        "{view}"
    );
    assert_eq!(view["status"]["state"], "paused", "{view}");

    let entries = rollout_audit(&server);
    let actions: Vec<&str> = entries
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "rollout.started",
            "rollout.agent_timed_out",
            "rollout.paused"
        ]
    );
    assert_eq!(entries[1]["actor"], "server");
    assert_eq!(entries[1]["detail"]["agent_id"], "sim-s");
    assert_eq!(entries[1]["detail"]["deadline_unix_s"], sent_at + 2);
}

#[test]
fn revert_rolls_back_every_applied_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_bundle(dir.path(), "fix-revert");
    let port = server.mqtt_port.unwrap();
    let agents: Vec<SimAgent> = ["sim-r0", "sim-r1", "sim-r2", "sim-r3"]
        .iter()
        .map(|id| {
            let answer = if *id == "sim-r2" {
                Answer::Fail
            } else {
                Answer::Apply
            };
            SimAgent::start(port, SimState::new(id), answer)
        })
        .collect();
    wait_for_reports(&server, 4);

    let (status, body) = post_json(
        &server,
        "/api/v1/rollouts",
        serde_json::json!({
            "bundle_id": "fix-revert",
            "canary": 0,
            "waves": "100%",
            "failure_threshold": "1",
            "on_failure": "revert",
            "grace_seconds": 600,
        }),
    );
    assert_eq!(status, 201, "{body}");
    let view = wait_for("the rollout to roll back", Duration::from_secs(30), || {
        let view = rollout(&server, 1);
        (view["status"]["state"] == "rolled-back").then_some(view)
    });
    assert_eq!(
        view["status"]["reason"], "1 failed agent reached the failure threshold of 1",
        "{view}"
    );
    assert_eq!(view["counts"]["rolled_back"], 3, "{view}");
    assert_eq!(view["counts"]["failed"], 1, "{view}");
    for agent in &agents {
        let expected: Vec<String> = if agent.id == "sim-r2" {
            vec![]
        } else {
            vec!["fix-revert".into()]
        };
        assert_eq!(agent.rollbacks(), expected, "{}", agent.id);
    }

    // The desired state of an agent that rolled back lists the rollback, and the agent
    // acknowledged it.
    let delivery = wait_for("sim-r0 to acknowledge", Duration::from_secs(20), || {
        let delivery = server.get_json("/api/v1/agents/sim-r0/delivery")?;
        (delivery["acknowledged_version"] == delivery["version"]).then_some(delivery)
    });
    assert_eq!(delivery["bundles"], serde_json::json!([]), "{delivery}");
    assert_eq!(
        delivery["rollbacks"].as_array().unwrap().len(),
        1,
        "{delivery}"
    );

    let actions: Vec<(String, String)> = rollout_audit(&server)
        .iter()
        .map(|entry| {
            (
                entry["action"].as_str().unwrap().to_owned(),
                entry["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let step = |action: &str, actor: &str| (action.to_owned(), actor.to_owned());
    assert_eq!(
        actions,
        vec![
            step("rollout.started", "token:admin/admin"),
            step("rollout.reverting", "server"),
            step("rollout.reverted", "server"),
        ]
    );
}

#[test]
fn offline_agent_receives_schedule_on_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (server, [_, _, ot]) = server_and_keys(dir.path(), "fix-unused");
    let port = server.mqtt_port.unwrap();

    let online_state = SimState::new("sim-on");
    let _online = SimAgent::start(port, online_state.clone(), Answer::Apply);
    let away_state = SimState::new("sim-away");
    let away = SimAgent::start(port, away_state.clone(), Answer::Apply);
    wait_for_reports(&server, 2);
    away.disconnect();
    wait_for("sim-away to be offline", Duration::from_secs(20), || {
        (server.agent("sim-away")?["online"] == false).then_some(())
    });

    // Version 1 reaches sim-on only: the order to sim-away is lost with its clean session.
    let ot_token = server.create_token("ot-desk", "ot");
    let file = office_schedule(1, &ot);
    let (status, body) = server.post_octets(
        "/api/v1/schedules",
        &ot_token,
        &[("X-Tidegate-Publisher", "ot@desk")],
        &file,
    );
    assert_eq!(status, 201, "{body}");
    wait_for(
        "sim-on to receive the schedule",
        Duration::from_secs(20),
        || (*online_state.schedules.lock().unwrap() == [1]).then_some(()),
    );
    assert!(away_state.schedules.lock().unwrap().is_empty());
    let delivery = wait_for(
        "sim-away to be missing the schedule",
        Duration::from_secs(20),
        || {
            let delivery = server.get_json("/api/v1/agents/sim-away/delivery")?;
            (delivery["schedule_version"] == 1).then_some(delivery)
        },
    );
    assert!(
        delivery["acknowledged_schedule_version"].is_null(),
        "{delivery}"
    );
    assert!(
        delivery["acknowledged_version"].as_u64() < delivery["version"].as_u64(),
        "{delivery}"
    );

    // Back online with a clean session: only a resend by the server can reach it.
    let _back = SimAgent::start(port, away_state.clone(), Answer::Apply);
    wait_for(
        "sim-away to receive the schedule",
        Duration::from_secs(20),
        || (*away_state.schedules.lock().unwrap() == [1]).then_some(()),
    );
    let delivery = wait_for(
        "sim-away to acknowledge its desired state",
        Duration::from_secs(20),
        || {
            let delivery = server.get_json("/api/v1/agents/sim-away/delivery")?;
            (delivery["acknowledged_version"] == delivery["version"]).then_some(delivery)
        },
    );
    assert_eq!(delivery["acknowledged_schedule_version"], 1, "{delivery}");
    let on = wait_for("sim-on to acknowledge", Duration::from_secs(20), || {
        let delivery = server.get_json("/api/v1/agents/sim-on/delivery")?;
        (delivery["acknowledged_schedule_version"] == 1).then_some(delivery)
    });
    assert_eq!(on["acknowledged_version"], on["version"], "{on}");
    assert_eq!(
        *online_state.schedules.lock().unwrap(),
        [1],
        "an agent that had the schedule is not sent it again"
    );

    // The publication is in the audit log with the OT token, the signer and the publisher.
    let signer = SignedSchedule::decode(&file).unwrap().signers()[0].to_string();
    let entries = server.audit_entries();
    let published: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|entry| entry["action"] == "schedule.published")
        .collect();
    assert_eq!(published.len(), 1, "{entries:?}");
    assert_eq!(published[0]["actor"], "token:ot-desk/ot");
    assert_eq!(published[0]["subject"], "tier office");
    assert_eq!(published[0]["detail"]["version"], 1);
    assert_eq!(published[0]["detail"]["publisher"], "ot@desk");
    assert_eq!(
        published[0]["detail"]["signers"],
        serde_json::json!([signer])
    );

    // Another schedule with the same version is rejected, and that is recorded too. (The same
    // file again would be a re-send, so this one differs in its window.)
    let other_window = WindowRule::Recurring {
        cron: "0 3 * * *".into(),
        duration_s: 3600,
        cutoff_s: None,
    };
    let (status, _) = server.post_octets(
        "/api/v1/schedules",
        &ot_token,
        &[("X-Tidegate-Publisher", "ot@desk")],
        &office_schedule_of(1, vec![other_window], &ot),
    );
    assert_eq!(status, 409);
    let entries = server.audit_entries();
    let rejected = entries
        .iter()
        .find(|entry| entry["action"] == "schedule.rejected")
        .expect("a schedule.rejected entry");
    assert_eq!(rejected["actor"], "token:ot-desk/ot");
    assert_eq!(rejected["detail"]["rule"], "not-newer");

    // Each schedule order is recorded: one to each agent at publication, and the resend.
    let schedule_orders: Vec<(String, bool)> = entries
        .iter()
        .filter(|entry| entry["action"] == "order.sent" && entry["detail"]["kind"] == "schedule")
        .map(|entry| {
            (
                entry["subject"].as_str().unwrap().to_owned(),
                entry["detail"]["resend"] == true,
            )
        })
        .collect();
    assert_eq!(
        schedule_orders,
        vec![
            ("sim-away".to_owned(), false),
            ("sim-on".to_owned(), false),
            ("sim-away".to_owned(), true),
        ]
    );
}

#[test]
fn rollout_steps_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_bundle(dir.path(), "fix-audit");
    let port = server.mqtt_port.unwrap();
    let _agent = SimAgent::start(port, SimState::new("sim-x"), Answer::Apply);
    wait_for_reports(&server, 1);

    let it_token = server.create_token("it-desk", "it");
    let (status, body) = post_json_as(
        &server,
        &it_token,
        "/api/v1/rollouts",
        serde_json::json!({
            "bundle_id": "fix-audit",
            "canary": 0,
            "failure_threshold": "1",
            "on_failure": "pause",
            "grace_seconds": 600,
        }),
    );
    assert_eq!(status, 201, "{body}");
    wait_for("the rollout to complete", Duration::from_secs(20), || {
        (rollout(&server, 1)["status"]["state"] == "completed").then_some(())
    });
    let (status, body) = post_json_as(
        &server,
        &it_token,
        "/api/v1/rollouts/stop-all",
        serde_json::json!({}),
    );
    assert_eq!(status, 200, "{body}");

    let entries = wait_for("the completion entry", Duration::from_secs(10), || {
        let entries = server.audit_entries();
        entries
            .iter()
            .any(|entry| entry["action"] == "rollout.completed")
            .then_some(entries)
    });
    let rollout_entries: Vec<(String, String, String)> = entries
        .iter()
        .filter(|entry| entry["action"].as_str().unwrap().starts_with("rollout."))
        .map(|entry| {
            (
                entry["action"].as_str().unwrap().to_owned(),
                entry["actor"].as_str().unwrap().to_owned(),
                entry["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = |action: &str, actor: &str, subject: &str| {
        (action.to_owned(), actor.to_owned(), subject.to_owned())
    };
    assert_eq!(
        rollout_entries,
        vec![
            expected("rollout.started", "token:it-desk/it", "rollout:1"),
            expected("rollout.completed", "server", "rollout:1"),
            expected("rollout.stop_all", "token:it-desk/it", "rollouts"),
        ]
    );
    let started = entries
        .iter()
        .find(|entry| entry["action"] == "rollout.started")
        .unwrap();
    assert_eq!(started["detail"]["bundle_id"], "fix-audit");
    assert_eq!(started["detail"]["targets"], 1);

    let bundle_orders: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|entry| entry["action"] == "order.sent" && entry["detail"]["kind"] == "bundle")
        .collect();
    assert_eq!(bundle_orders.len(), 1, "{bundle_orders:?}");
    assert_eq!(bundle_orders[0]["subject"], "sim-x");
    assert_eq!(bundle_orders[0]["actor"], "server");
    assert_eq!(bundle_orders[0]["detail"]["rollout"], 1);
    assert_eq!(
        bundle_orders[0]["detail"]["bundle_hash"],
        started["detail"]["bundle_hash"]
    );
}

#[test]
fn silent_agent_fails_after_window_and_grace() {
    let dir = tempfile::tempdir().unwrap();
    let (server, [_, _, ot]) = server_and_keys(dir.path(), "fix-window");
    let port = server.mqtt_port.unwrap();
    let silent = SimAgent::start(port, SimState::new("sim-w"), Answer::Apply);
    wait_for_reports(&server, 1);
    silent.disconnect();

    // A one-off window that opened a minute ago and ends 6 s from now.
    let window_end = now_unix_s() + 6;
    let window = WindowRule::Once {
        start_unix_s: window_end - 66,
        end_unix_s: window_end,
        cutoff_s: None,
    };
    let (status, body) = server.post_octets(
        "/api/v1/schedules",
        &server.token,
        &[],
        &office_schedule_of(1, vec![window], &ot),
    );
    assert_eq!(status, 201, "{body}");

    let (status, body) = post_json(
        &server,
        "/api/v1/rollouts",
        serde_json::json!({
            "bundle_id": "fix-window",
            "canary": 0,
            "failure_threshold": "1",
            "on_failure": "pause",
            "grace_seconds": 2,
        }),
    );
    assert_eq!(status, 201, "{body}");
    let view = wait_for(
        "sim-w to be sent the bundle",
        Duration::from_secs(10),
        || {
            let view = rollout(&server, 1);
            (agent_state(&view, "sim-w") == "delivered").then_some(view)
        },
    );
    let agent = &view["agents"][0];
    let sent_at = agent["sent_at_unix_s"].as_i64().unwrap();
    assert!(
        sent_at < window_end,
        "sent at {sent_at}, window ends {window_end}"
    );
    assert_eq!(
        agent["deadline_unix_s"].as_i64(),
        Some(window_end + 2),
        "{view}"
    );

    // Past the send time plus grace, but inside the window: still delivered.
    while now_unix_s() < sent_at + 3 {
        std::thread::sleep(Duration::from_millis(200));
    }
    if now_unix_s() < window_end {
        let view = rollout(&server, 1);
        assert_eq!(agent_state(&view, "sim-w"), "delivered", "{view}");
    }

    let view = wait_for("sim-w to count as failed", Duration::from_secs(20), || {
        let view = rollout(&server, 1);
        (agent_state(&view, "sim-w") == "failed").then_some(view)
    });
    let agent = &view["agents"][0];
    assert_eq!(agent["state"]["timed_out"], true, "{view}");
    assert!(
        agent["changed_at_unix_s"].as_i64().unwrap() >= window_end + 2,
        "{view}"
    );
    assert_eq!(view["status"]["state"], "paused", "{view}");
}

#[test]
fn earlier_failure_of_the_bundle_is_not_this_rollouts_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_bundle(dir.path(), "fix-retry");
    let port = server.mqtt_port.unwrap();
    let bundles = server.get_json("/api/v1/bundles").unwrap();
    let hash = bundles["bundles"][0]["bundle_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    // The agent failed this bundle ten minutes ago, before someone fixed the cause; it still
    // reports that record when the new rollout starts.
    let state = SimState::new("sim-retry");
    state.records.lock().unwrap().push(BundleRecord {
        bundle_id: "fix-retry".into(),
        stream: "baseline".into(),
        sequence: 1,
        bundle_hash: hash,
        outcome: BundleOutcome::Reverted {
            step: Some(0),
            detail: "user \"svc\" is not in etc/passwd".into(),
        },
        decided_at_unix_s: now_unix_s() - 600,
        steps: Vec::new(),
    });
    let _agent = SimAgent::start(port, state, Answer::Apply);
    wait_for_reports(&server, 1);

    let (status, body) = post_json(
        &server,
        "/api/v1/rollouts",
        serde_json::json!({
            "bundle_id": "fix-retry",
            "canary": 0,
            "failure_threshold": "1",
            "on_failure": "pause",
            "grace_seconds": 600,
        }),
    );
    assert_eq!(status, 201, "{body}");
    let view = wait_for("the rollout to finish", Duration::from_secs(20), || {
        let view = rollout(&server, 1);
        (view["status"]["state"] != "running").then_some(view)
    });
    assert_eq!(view["status"]["state"], "completed", "{view}");
    assert_eq!(view["agents"][0]["state"]["state"], "applied", "{view}");
}
