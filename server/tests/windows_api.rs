//! Maintenance-window schedules through the server: publication checked against the server's
//! trust root, delivery to the agents of the schedule's tier, the windows listing, the earliest
//! start of waiting bundles, and `tidegate windows publish` and `list` against it.
//!
//! The server's clock is fixed at Tuesday 2026-10-20T12:00:00Z, four days before the last
//! Saturday of Berlin summer time, so a weekly window crosses the change to winter time.

mod ingest_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ingest_support::*;
use ring::rand::SystemRandom;
use serde_json::{json, Value};
use tidegate_protocol::topics::TopicKind;
use tidegate_protocol::trust::{
    inspect_bundle, BundleFile, BundleId, BundleManifest, Role, ScheduleDocument, SignedSchedule,
    SignedTrustRoot, SigningContext, SigningKey, Step, StreamName, TargetSelector, Thresholds,
    TrustRoot,
};
use tidegate_protocol::window::{CalendarSpec, Freeze, WindowRule};
use tidegate_protocol::{decode, Message, OrderBody, ReportBody};
use tidegate_server::ingest::{Clock, IngestDeps};
use tidegate_server::publish::CheckedBundle;
use tidegate_server::serve::{self, ServeError, ServerConfig};
use tidegate_server::store::publications::Publications;
use tidegate_server::store::schedules::Schedules;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Tuesday 2026-10-20T12:00:00Z, 14:00 in Berlin (CEST, +02:00).
const NOW: i64 = 1_792_497_600;
/// Saturday 2026-10-24T00:00:00Z: 02:00 CEST, the next `0 2 * * SAT` start.
const SAT_24: i64 = 1_792_800_000;
/// Saturday 2026-10-31T01:00:00Z: 02:00 CET, a week later but an hour later in UTC, because
/// Berlin went back to +01:00 on Sunday 2026-10-25.
const SAT_31: i64 = 1_793_408_400;
const FOUR_HOURS: i64 = 4 * 3600;
/// 2026-10-01T00:00:00Z and 2027-01-01T00:00:00Z, the schedules' validity.
const VALID_FROM: i64 = 1_790_812_800;
const VALID_UNTIL: i64 = 1_798_761_600;
/// 2026-10-23T00:00:00Z to 2026-10-26T00:00:00Z: a freeze over the first Saturday.
const AUDIT: (i64, i64) = (1_792_713_600, 1_792_972_800);
/// 2026-11-30T00:00:00Z and 2026-10-30T00:00:00Z, bundle expiries.
const NOV_30: i64 = 1_795_996_800;
const OCT_30: i64 = 1_793_318_400;

/// A wall clock that stays where the test put it, with a real monotonic clock for ingest.
struct FixedClock {
    unix_s: AtomicI64,
    started: std::time::Instant,
}

impl Clock for FixedClock {
    fn now_unix_s(&self) -> i64 {
        self.unix_s.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        self.started.elapsed()
    }
}

struct Keys {
    root: SigningKey,
    security: SigningKey,
    ot1: SigningKey,
    ot2: SigningKey,
}

impl Keys {
    fn generate() -> Self {
        let random = SystemRandom::new();
        let key = |role| SigningKey::generate(role, &random).unwrap();
        Self {
            root: key(Role::Root),
            security: key(Role::Security),
            ot1: key(Role::Ot),
            ot2: key(Role::Ot),
        }
    }

    /// Writes a trust root of every key with threshold 1 for each role.
    fn write_root(&self, path: &Path) {
        let root = TrustRoot {
            version: 1,
            keys: [&self.root, &self.security, &self.ot1, &self.ot2]
                .iter()
                .map(|key| key.public_key().clone())
                .collect(),
            thresholds: Thresholds {
                root: 1,
                security: 1,
                ot: 1,
            },
            tier_overrides: Default::default(),
            command_tiers: Default::default(),
        };
        let mut signed = SignedTrustRoot::new(&root).unwrap();
        signed.sign(&self.root).unwrap();
        std::fs::write(path, signed.encode().unwrap()).unwrap();
    }
}

/// `plant-floor`'s schedule of `version`: Saturdays 02:00 in Berlin for 4 hours, with
/// `freezes`, signed by `signers`.
fn schedule(version: u64, freezes: Vec<Freeze>, signers: &[&SigningKey]) -> Vec<u8> {
    let mut signed = SignedSchedule::new(&document(version, freezes)).unwrap();
    for signer in signers {
        signed.sign(signer).unwrap();
    }
    signed.encode().unwrap()
}

fn document(version: u64, freezes: Vec<Freeze>) -> ScheduleDocument {
    ScheduleDocument {
        tier: "plant-floor".into(),
        site: None,
        version,
        calendar: CalendarSpec {
            zone: "Europe/Berlin".into(),
            not_before_unix_s: VALID_FROM,
            expires_unix_s: VALID_UNTIL,
            windows: vec![WindowRule::Recurring {
                cron: "0 2 * * SAT".into(),
                duration_s: FOUR_HOURS as u32,
                cutoff_s: None,
            }],
            freezes,
        },
    }
}

fn audit() -> Freeze {
    Freeze {
        start_unix_s: AUDIT.0,
        end_unix_s: AUDIT.1,
        reason: "plant audit".into(),
    }
}

/// A server in this process with the trust root and the fixed clock.
struct WindowsServer {
    http: SocketAddr,
    mqtt: SocketAddr,
    db: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
    /// The admin token the server created on its first start.
    token: String,
    _dir: tempfile::TempDir,
}

impl WindowsServer {
    async fn start(keys: &Keys) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root.tgr");
        keys.write_root(&root_path);
        let db = dir.path().join("tidegate.db");
        let config = ServerConfig {
            db_path: db.clone(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            broker: embedded_broker(),
            trust_root: Some(root_path),
            admin_token_file: Some(dir.path().join("admin.token")),
            ..ServerConfig::default()
        };
        let deps = IngestDeps {
            clock: Arc::new(FixedClock {
                unix_s: AtomicI64::new(NOW),
                started: std::time::Instant::now(),
            }),
            ..IngestDeps::default()
        };
        let running = serve::start(config, deps).await.expect("server starts");
        let http = running.http_addr();
        let mqtt = running.mqtt_addr().unwrap();
        let counters = running.ingest_counters();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(running.run_until(async {
            let _ = stopped.await;
        }));
        wait_until("ingest subscribed", || async {
            counters.snapshot().subscriptions_granted >= 1
        })
        .await;
        let token = std::fs::read_to_string(dir.path().join("admin.token"))
            .expect("the first start wrote admin.token")
            .trim()
            .to_owned();
        Self {
            http,
            mqtt,
            db,
            stop: Some(stop),
            task: Some(task),
            token,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    async fn post_schedule(&self, file: &[u8]) -> (u16, Value) {
        let url = self.url("/api/v1/schedules");
        let file = file.to_vec();
        let authorization = format!("Bearer {}", self.token);
        tokio::task::spawn_blocking(move || {
            let response = ureq::post(&url)
                .header("Authorization", authorization)
                .header("Content-Type", "application/octet-stream")
                .header("X-Tidegate-Publisher", "ot@plant")
                .config()
                .http_status_as_error(false)
                .build()
                .send(&file[..])
                .unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().read_json().unwrap_or(Value::Null);
            (status, body)
        })
        .await
        .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let url = self.url(path);
        let authorization = format!("Bearer {}", self.token);
        tokio::task::spawn_blocking(move || {
            let response = ureq::get(&url)
                .header("Authorization", authorization)
                .config()
                .http_status_as_error(false)
                .build()
                .call()
                .unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().read_json().unwrap_or(Value::Null);
            (status, body)
        })
        .await
        .unwrap()
    }

    /// Connects an agent of `tier`, subscribes it to its orders, and waits until the server
    /// lists it with that tier.
    async fn agent(&self, id: &str, tier: &str) -> TestAgent {
        let mut agent = TestAgent::connect(self.mqtt, id).await;
        agent.subscribe_orders().await;
        let mut report = full_report(&agent.id, boot(1), 1, &["bash"]);
        if let ReportBody::Full(inventory) = &mut report.body {
            inventory.tier = tier.into();
        }
        agent
            .send(TopicKind::Report, &Message::Report(report))
            .await;
        wait_until("the agent is listed with its tier", || async {
            let (_, fleet) = self.get("/api/v1/agents").await;
            fleet["agents"].as_array().is_some_and(|agents| {
                agents
                    .iter()
                    .any(|a| a["agent_id"] == id && a["tier"] == tier)
            })
        })
        .await;
        agent
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .expect("server stops in time")
            .expect("server task does not panic");
        result.expect("server stops without error");
    }
}

/// Collects the schedule files among the publishes `agent` receives until `deadline`, or until
/// the first one with `stop_at_first`.
async fn schedule_orders(
    agent: &mut TestAgent,
    deadline: Instant,
    stop_at_first: bool,
) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    while let Some(publish) = agent.next_publish(deadline).await {
        assert!(!publish.retain, "orders are not retained");
        if let Ok(Message::Order(order)) = decode(&publish.payload) {
            if let OrderBody::Schedule { file } = order.body {
                files.push(file);
                if stop_at_first {
                    break;
                }
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_publication_reaches_its_tier() {
    let keys = Keys::generate();
    let server = WindowsServer::start(&keys).await;
    let mut plant = server.agent("plant-gw-1", "plant-floor").await;
    let mut office = server.agent("office-pc-1", "office").await;

    // Version 2, signed by both OT keys.
    let v2 = schedule(2, vec![], &[&keys.ot1, &keys.ot2]);
    let (status, body) = server.post_schedule(&v2).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["tier"], "plant-floor");
    assert_eq!(body["site"], Value::Null);
    assert_eq!(body["version"], 2);
    assert_eq!(
        body["signers"],
        json!([keys.ot1.key_id().to_string(), keys.ot2.key_id().to_string()])
    );
    assert_eq!(body["delivered_to"], 1);
    assert_eq!(body["republished"], false);

    let received = schedule_orders(&mut plant, Instant::now() + WAIT, true).await;
    assert_eq!(received, vec![v2.clone()], "the file arrives byte for byte");
    let elsewhere = schedule_orders(&mut office, Instant::now() + QUIET, false).await;
    assert!(
        elsewhere.is_empty(),
        "an office agent got a plant-floor schedule"
    );

    // The windows a person works out: Saturdays 02:00-06:00 Berlin time, 00:00Z-04:00Z in
    // summer time and 01:00Z-05:00Z after 2026-10-25.
    let (status, windows) = server.get("/api/v1/windows?days=14").await;
    assert_eq!(status, 200);
    assert_eq!(
        windows,
        json!({"tiers": [{
            "tier": "plant-floor",
            "site": null,
            "schedule_version": 2,
            "zone": "Europe/Berlin",
            "windows": [
                {"start_unix_s": SAT_24, "cutoff_unix_s": SAT_24 + FOUR_HOURS, "end_unix_s": SAT_24 + FOUR_HOURS},
                {"start_unix_s": SAT_31, "cutoff_unix_s": SAT_31 + FOUR_HOURS, "end_unix_s": SAT_31 + FOUR_HOURS},
            ],
            "freezes": [],
        }]})
    );
    let (_, only_office) = server.get("/api/v1/windows?tier=office").await;
    assert_eq!(only_office, json!({"tiers": []}));
    let (_, one_week) = server.get("/api/v1/windows?days=7&tier=plant-floor").await;
    assert_eq!(one_week["tiers"][0]["windows"].as_array().unwrap().len(), 1);
    for bad in ["0", "63", "two"] {
        let (status, body) = server.get(&format!("/api/v1/windows?days={bad}")).await;
        assert_eq!(status, 400, "days={bad}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("from 1 to 62"), "{error}");
    }

    // An older version, and another file with the stored version, are refused.
    let (status, body) = server
        .post_schedule(&schedule(1, vec![], &[&keys.ot1]))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["rule"], "not-newer");
    assert_eq!(
        body["error"],
        "schedule version 1 for tier plant-floor is not newer than the stored version 2; \
         publish a higher version"
    );
    let (status, body) = server
        .post_schedule(&schedule(2, vec![audit()], &[&keys.ot1]))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("version 2"),
        "{body}"
    );

    // The stored file itself is accepted again and sent again.
    let (status, body) = server.post_schedule(&v2).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["republished"], true);
    let received = schedule_orders(&mut plant, Instant::now() + WAIT, true).await;
    assert_eq!(received, vec![v2.clone()]);

    // A security key cannot sign a schedule; the library refuses, so sign as a forger would.
    let mut forged = SignedSchedule::new(&document(3, vec![])).unwrap();
    forged.signatures.push(
        keys.security
            .sign(SigningContext::WindowSchedule, &forged.document_bytes),
    );
    let (status, body) = server.post_schedule(&forged.encode().unwrap()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["rule"], "wrong-role");
    // Nor can a schedule go out without any signature.
    let (status, body) = server.post_schedule(&schedule(3, vec![], &[])).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["rule"], "threshold");
    let (status, body) = server.post_schedule(b"TGWS\x01 not a schedule").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["rule"], "format");

    // Version 3 replaces version 2; both stay stored.
    let v3 = schedule(3, vec![audit()], &[&keys.ot2]);
    let (status, body) = server.post_schedule(&v3).await;
    assert_eq!(status, 201, "{body}");
    let received = schedule_orders(&mut plant, Instant::now() + WAIT, true).await;
    assert_eq!(received, vec![v3.clone()]);
    let schedules = Schedules::open(&server.db).unwrap();
    let latest = schedules
        .latest_schedule_files_for("plant-floor", None)
        .unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].version, 3);
    assert_eq!(latest[0].file, v3);
    assert_eq!(latest[0].publisher, "ot@plant");
    assert_eq!(latest[0].published_at_unix_s, NOW);
    assert_eq!(latest[0].signers, vec![keys.ot2.key_id().to_string()]);
    assert!(schedules
        .latest_schedule_files_for("office", None)
        .unwrap()
        .is_empty());

    let (_, windows) = server.get("/api/v1/windows").await;
    assert_eq!(windows["tiers"][0]["schedule_version"], 3);
    assert_eq!(
        windows["tiers"][0]["freezes"],
        json!([{"start_unix_s": AUDIT.0, "end_unix_s": AUDIT.1, "reason": "plant audit"}])
    );
    server.stop().await;
}

/// Records in the store, as if published, a bundle of one sysctl step for `tiers`, valid in
/// `[not_before, expires)` and signed by `signer`.
fn record_bundle(
    publications: &Publications,
    signer: &SigningKey,
    (id, stream, sequence): (&str, &str, u64),
    tiers: &[&str],
    not_before: i64,
    expires: i64,
) {
    let manifest = BundleManifest {
        bundle_id: BundleId::parse(id).unwrap(),
        stream: StreamName::parse(stream).unwrap(),
        sequence,
        not_before_unix_s: not_before,
        expires_unix_s: expires,
        target: TargetSelector {
            tiers: tiers.iter().map(|tier| tier.to_string()).collect(),
            ..TargetSelector::default()
        },
        steps: vec![Step::Sysctl {
            key: "net.ipv4.tcp_syncookies".into(),
            value: "1".into(),
        }],
        payloads: vec![],
        execution: Default::default(),
    };
    let mut file = BundleFile::new(&manifest, vec![]).unwrap();
    file.sign(signer).unwrap();
    let bytes = file.encode().unwrap();
    let inspection = inspect_bundle(&bytes).unwrap();
    let checked = CheckedBundle {
        bundle_id: id.into(),
        stream: stream.into(),
        sequence,
        bundle_hash: inspection.bundle_hash.to_string(),
        signers: vec![signer.key_id().to_string()],
        target_tiers: manifest.target.tiers.clone(),
        target_os: vec![],
        target_tags: vec![],
        republished: false,
    };
    publications
        .record(
            &checked,
            &bytes,
            "security@desk",
            NOW,
            "token:test/security",
        )
        .unwrap();
}

fn tidegate(dir: &Path, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .current_dir(dir)
        .env_remove("TIDEGATE_SERVER")
        .env("TIDEGATE_TOKEN", token)
        .output()
        .expect("run tidegate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earliest_start_waits_for_window_after_freeze() {
    let keys = Keys::generate();
    let server = WindowsServer::start(&keys).await;
    let work = tempfile::tempdir().unwrap();

    // Published with the CLI.
    std::fs::write(
        work.path().join("plant.tgws"),
        schedule(3, vec![audit()], &[&keys.ot1]),
    )
    .unwrap();
    let base = format!("http://{}", server.http);
    let dir = work.path().to_owned();
    let base_for_publish = base.clone();
    let token = server.token.clone();
    let output = tokio::task::spawn_blocking(move || {
        tidegate(
            &dir,
            &token,
            &[
                "--server",
                &base_for_publish,
                "windows",
                "publish",
                "plant.tgws",
                "--publisher",
                "alice@plant",
            ],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "publish failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().take(3).collect::<Vec<_>>(),
        vec![
            "published schedule version 3 for tier plant-floor, site (whole tier)",
            &format!("signed by: {}", keys.ot1.key_id()),
            "sent to 0 agents of the tier",
        ]
    );
    assert!(stdout.contains("publisher: alice@plant"), "{stdout}");

    // An older version, and a draft that was never exported, fail with the reason.
    std::fs::write(
        work.path().join("old.tgws"),
        schedule(2, vec![], &[&keys.ot1]),
    )
    .unwrap();
    std::fs::write(work.path().join("draft.json"), "{}").unwrap();
    let dir = work.path().to_owned();
    let base_for_errors = base.clone();
    let token = server.token.clone();
    let (old, draft) = tokio::task::spawn_blocking(move || {
        let server = ["--server", base_for_errors.as_str()];
        let old = tidegate(
            &dir,
            &token,
            &[&server[..], &["windows", "publish", "old.tgws"]].concat(),
        );
        let draft = tidegate(
            &dir,
            &token,
            &[&server[..], &["windows", "publish", "draft.json"]].concat(),
        );
        (old, draft)
    })
    .await
    .unwrap();
    assert_eq!(old.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert!(
        stderr.contains("(409, rule not-newer): schedule version 2 for tier plant-floor is not newer than the stored version 3"),
        "{stderr}"
    );
    assert_eq!(draft.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&draft.stderr);
    assert!(
        stderr.contains("draft.json is not a signed schedule file"),
        "{stderr}"
    );

    let publications = Publications::open(&server.db).unwrap();
    // Its not_before, Saturday 2026-10-24T01:00Z, is inside a window but also inside the freeze,
    // so it waits for the next window after the freeze: 2026-10-31T01:00Z.
    record_bundle(
        &publications,
        &keys.security,
        ("after-audit", "baseline", 1),
        &["plant-floor"],
        SAT_24 + 3600,
        NOV_30,
    );
    // It expires on 2026-10-30, between the frozen window and the next one.
    record_bundle(
        &publications,
        &keys.security,
        ("short-lived", "baseline", 2),
        &["plant-floor"],
        NOW - 3600,
        OCT_30,
    );
    // The office tier has no schedule.
    record_bundle(
        &publications,
        &keys.security,
        ("office-only", "office", 1),
        &["office"],
        NOW - 3600,
        NOV_30,
    );
    // It expired before now, so nothing waits for it.
    record_bundle(
        &publications,
        &keys.security,
        ("expired", "old", 1),
        &["plant-floor"],
        NOW - 7200,
        NOW,
    );

    let (status, earliest) = server.get("/api/v1/bundles/earliest").await;
    assert_eq!(status, 200);
    assert_eq!(
        earliest,
        json!({
            "now_unix_s": NOW,
            "bundles": [
                {
                    "bundle_id": "after-audit", "stream": "baseline", "sequence": 1,
                    "not_before_unix_s": SAT_24 + 3600, "expires_unix_s": NOV_30,
                    "tiers": [{"tier": "plant-floor", "site": null, "schedule_version": 3,
                               "earliest_start_unix_s": SAT_31, "status": "scheduled"}],
                },
                {
                    "bundle_id": "short-lived", "stream": "baseline", "sequence": 2,
                    "not_before_unix_s": NOW - 3600, "expires_unix_s": OCT_30,
                    "tiers": [{"tier": "plant-floor", "site": null, "schedule_version": 3,
                               "earliest_start_unix_s": null, "status": "none-before-expiry"}],
                },
                {
                    "bundle_id": "office-only", "stream": "office", "sequence": 1,
                    "not_before_unix_s": NOW - 3600, "expires_unix_s": NOV_30,
                    "tiers": [{"tier": "office", "site": null, "schedule_version": null,
                               "earliest_start_unix_s": null, "status": "no-schedule"}],
                },
            ],
        })
    );

    let dir = work.path().to_owned();
    let token = server.token.clone();
    let output = tokio::task::spawn_blocking(move || {
        tidegate(
            &dir,
            &token,
            &[
                "--server",
                &base,
                "windows",
                "list",
                "--tier",
                "plant-floor",
            ],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "list failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "tier plant-floor, site (whole tier): schedule version 3, zone Europe/Berlin"
    );
    assert_eq!(lines[1], "2 windows in the next 14 days:");
    let first = lines[3].split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        first,
        "2026-10-24 02:00:00 CEST (+02) 2026-10-24 06:00:00 CEST (+02) 2026-10-24T00:00:00Z \
         2026-10-24T04:00:00Z -"
    );
    let second = lines[4].split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        second,
        "2026-10-31 02:00:00 CET (+01) 2026-10-31 06:00:00 CET (+01) 2026-10-31T01:00:00Z \
         2026-10-31T05:00:00Z -"
    );
    assert_eq!(lines[5], "1 freeze:");
    let freeze = lines[7].split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        freeze,
        "2026-10-23T00:00:00Z 2026-10-26T00:00:00Z plant audit"
    );
    let after_audit = lines
        .iter()
        .find(|line| line.starts_with("after-audit"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "));
    assert_eq!(
        after_audit.as_deref(),
        Some("after-audit baseline #1 plant-floor 3 2026-10-31T01:00:00Z (in 10d)")
    );
    let short_lived = lines
        .iter()
        .find(|line| line.starts_with("short-lived"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "));
    assert_eq!(
        short_lived.as_deref(),
        Some(
            "short-lived baseline #2 plant-floor 3 none before it expires at 2026-10-30T00:00:00Z"
        )
    );
    assert!(
        !stdout.contains("office-only"),
        "--tier plant-floor leaves other tiers out: {stdout}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_without_trust_root_is_unavailable() {
    let keys = Keys::generate();
    let server = TestServer::embedded().await;
    let url = format!("http://{}/api/v1/schedules", server.http);
    let file = schedule(1, vec![], &[&keys.ot1]);
    let authorization = format!("Bearer {}", server.token);
    let (status, body) = tokio::task::spawn_blocking(move || {
        let response = ureq::post(&url)
            .header("Authorization", authorization)
            .header("Content-Type", "application/octet-stream")
            .config()
            .http_status_as_error(false)
            .build()
            .send(&file[..])
            .unwrap();
        let status = response.status().as_u16();
        (status, response.into_body().read_json::<Value>().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--trust-root FILE"),
        "{body}"
    );
    server.stop().await;
}

/// The trust root given at start is audited at the server's clock, not at the publication time 0
/// that marks it as not yet published through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_root_at_start_audited_at_clock_time() {
    let keys = Keys::generate();
    let server = WindowsServer::start(&keys).await;
    let (status, page) = server.get("/api/v1/audit?after=0&limit=10").await;
    assert_eq!(status, 200, "{page}");
    let entries = page.as_array().expect("a JSON array of entries");
    let root_entry = entries
        .iter()
        .find(|entry| entry["action"] == "trust_root.published")
        .expect("an entry for the trust root given at start");
    assert_eq!(root_entry["at_unix_s"], NOW);
    assert_eq!(root_entry["actor"], "server");
    assert_eq!(root_entry["subject"], "trust root v1");

    // The publication time stays 0, so rollouts do not move agents to the root given at start.
    let connection = rusqlite::Connection::open(&server.db).unwrap();
    let published: i64 = connection
        .query_row(
            "SELECT published_at_unix_s FROM trust_roots WHERE version = 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(published, 0);
    server.stop().await;
}
