//! Bundles from publication to the agent's decision: the server checks a bundle against its
//! trust root and sends it; the agent verifies it again against the root it pinned at enrolment
//! and reports what it decided, which the API shows on the agent.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ring::rand::SystemRandom;
use tidegate_protocol::trust::{
    BundleFile, BundleId, BundleManifest, Role, SignedTrustRoot, SigningKey, Step, StreamName,
    TargetSelector, Thresholds, TrustRoot,
};
use tidegate_tests::{fixture_root, prepare_agent_id, wait_for, AgentSettings, Server};

fn key(role: Role) -> SigningKey {
    SigningKey::generate(role, &SystemRandom::new()).unwrap()
}

/// Writes a root of `version` over `keys` (root threshold 1), signed by each of `signers`.
fn write_root(path: &Path, version: u64, keys: &[&SigningKey], signers: &[&SigningKey]) {
    let root = TrustRoot {
        version,
        keys: keys.iter().map(|key| key.public_key().clone()).collect(),
        thresholds: Thresholds {
            root: 1,
            security: 1,
            ot: 1,
        },
        tier_overrides: BTreeMap::new(),
        command_tiers: Default::default(),
    };
    let mut signed = SignedTrustRoot::new(&root).unwrap();
    for signer in signers {
        signed.sign(signer).unwrap();
    }
    std::fs::write(path, signed.encode().unwrap()).unwrap();
}

/// A bundle of one sysctl step, valid for a day around now, signed by `signer`.
fn bundle(id: &str, sequence: u64, signer: &SigningKey) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
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

/// POSTs a bundle file with a `security` token for immediate delivery to every agent it targets;
/// returns the status code and the JSON body.
fn publish(server: &Server, token: &str, file: &[u8]) -> (u16, serde_json::Value) {
    server.post_octets(
        "/api/v1/bundles?delivery=immediate",
        token,
        &[("X-Tidegate-Publisher", "test@ci")],
        file,
    )
}

fn bundle_outcomes(server: &Server, agent_id: &str) -> Vec<(String, String)> {
    let detail = server
        .get_json(&format!("/api/v1/agents/{agent_id}"))
        .unwrap_or_default();
    detail["bundles"]
        .as_array()
        .map(|bundles| {
            bundles
                .iter()
                .map(|bundle| {
                    let outcome = match &bundle["outcome"] {
                        serde_json::Value::String(name) => name.clone(),
                        serde_json::Value::Object(map) => {
                            let (kind, fields) = map.iter().next().unwrap();
                            match fields.get("rule") {
                                Some(rule) => format!("{kind}:{}", rule.as_str().unwrap()),
                                None => kind.clone(),
                            }
                        }
                        other => other.to_string(),
                    };
                    (
                        bundle["bundle_id"].as_str().unwrap_or_default().to_owned(),
                        outcome,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn published_bundle_is_verified_by_the_agent() {
    let data = tempfile::tempdir().unwrap();
    let k1 = key(Role::Root);
    let k2 = key(Role::Root);
    let s1 = key(Role::Security);
    let s4 = key(Role::Security);
    let ot = key(Role::Ot);
    // The agent enrols with v1; the server already checks against v2, which adds S4.
    let v1 = data.path().join("root-v1.tgrt");
    write_root(&v1, 1, &[&k1, &s1, &ot], &[&k1]);
    let v2 = data.path().join("root-v2.tgrt");
    write_root(&v2, 2, &[&k1, &k2, &s1, &s4, &ot], &[&k1, &k2]);

    let server = Server::start_with_trust_root(&data.path().join("tidegate.db"), &v2);
    let root = fixture_root(5, 0);
    // The bundles' sysctl step writes below etc/sysctl.d, which the fixture lacks.
    std::fs::create_dir_all(root.path().join("etc/sysctl.d")).unwrap();
    let state_dir = data.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);
    let mut settings = AgentSettings::new(root.path(), &state_dir, server.broker_url());
    settings.tier = "plant-floor".into();
    settings.trust_root_file = Some(v1.clone());
    let _agent = settings.start();
    let agent = wait_for("the agent's first report", Duration::from_secs(30), || {
        server
            .agent(&agent_id)
            .filter(|agent| !agent["last_report_unix_s"].is_null())
    });
    assert_eq!(agent["tier"], "plant-floor", "{agent}");
    assert_eq!(agent["trust_root_version"], 1, "{agent}");
    let security = server.create_token("sec-publisher", "security");

    let (status, body) = publish(&server, &security, &bundle("baseline-5", 5, &s1));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["delivered_to"], 1, "{body}");
    wait_for(
        "the agent to accept and apply baseline-5",
        Duration::from_secs(20),
        || {
            bundle_outcomes(&server, &agent_id)
                .contains(&("baseline-5".into(), "Applied".into()))
                .then_some(())
        },
    );

    // Signed by a key only root v2 lists: the server takes it, the agent on v1 does not.
    let (status, body) = publish(&server, &security, &bundle("baseline-6", 6, &s4));
    assert_eq!(status, 201, "{body}");
    wait_for(
        "the agent to reject baseline-6",
        Duration::from_secs(20),
        || {
            bundle_outcomes(&server, &agent_id)
                .contains(&("baseline-6".into(), "Rejected:unknown-key".into()))
                .then_some(())
        },
    );

    // Once the agent has root v2, the same kind of bundle is accepted.
    let (status, body) = server.post_octets(
        "/api/v1/trust-root",
        &security,
        &[],
        &std::fs::read(&v2).unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    wait_for(
        "the agent to move to root v2",
        Duration::from_secs(20),
        || (server.agent(&agent_id)?["trust_root_version"] == 2).then_some(()),
    );
    let (status, body) = publish(&server, &security, &bundle("baseline-8", 8, &s4));
    assert_eq!(status, 201, "{body}");
    wait_for(
        "the agent to accept and apply baseline-8",
        Duration::from_secs(20),
        || {
            bundle_outcomes(&server, &agent_id)
                .contains(&("baseline-8".into(), "Applied".into()))
                .then_some(())
        },
    );

    // An older sequence of the stream never leaves the server.
    let (status, body) = publish(&server, &security, &bundle("baseline-4", 4, &s1));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["rule"], "rollback", "{body}");

    // Publishing the same file again is accepted and sends it again: once the agent has applied
    // it, the second delivery is a no-op. (A delivery that arrives while the first still waits in
    // the agent's queue is the same queued bundle.) This agent needs no window schedule, so an
    // accepted bundle runs at once and its record shows the run's outcome.
    let file = bundle("baseline-9", 9, &s1);
    assert_eq!(publish(&server, &security, &file).0, 201);
    wait_for(
        "the agent to apply baseline-9",
        Duration::from_secs(20),
        || {
            bundle_outcomes(&server, &agent_id)
                .contains(&("baseline-9".into(), "Applied".into()))
                .then_some(())
        },
    );
    assert_eq!(publish(&server, &security, &file).0, 200);
    wait_for(
        "the agent to see baseline-9 twice",
        Duration::from_secs(20),
        || {
            let outcomes = bundle_outcomes(&server, &agent_id);
            (outcomes.contains(&("baseline-9".into(), "Applied".into()))
                && outcomes.contains(&("baseline-9".into(), "AlreadyApplied".into())))
            .then_some(())
        },
    );

    // The audit log contains the publications with their signers, the orders and the outcomes.
    let entries = server.audit_entries();
    let find = |action: &str, subject: &str| {
        entries
            .iter()
            .find(|entry| entry["action"] == action && entry["subject"] == subject)
            .unwrap_or_else(|| panic!("no {action} of {subject} in {entries:#?}"))
            .clone()
    };
    let published = find("bundle.published", "baseline-5");
    assert_eq!(published["actor"], "token:sec-publisher/security");
    assert_eq!(published["detail"]["stream"], "baseline");
    assert_eq!(published["detail"]["sequence"], 5);
    assert_eq!(published["detail"]["publisher"], "test@ci");
    assert_eq!(
        published["detail"]["signers"],
        serde_json::json!([s1.key_id().to_string()])
    );
    let published = find("bundle.published", "baseline-6");
    assert_eq!(
        published["detail"]["signers"],
        serde_json::json!([s4.key_id().to_string()])
    );
    find("bundle.republished", "baseline-9");

    let order = find("order.sent", &agent_id);
    assert_eq!(order["actor"], "server");
    assert_eq!(order["detail"]["kind"], "bundle");
    assert_eq!(order["detail"]["bundle_id"], "baseline-5");
    assert_eq!(order["detail"]["queued"], true);
    assert!(entries.iter().any(|entry| entry["action"] == "order.sent"
        && entry["detail"]["kind"] == "trust-root"
        && entry["detail"]["trust_root_version"] == 2));

    let agent_actor = format!("agent:{agent_id}");
    let accepted = find("agent.bundle.accepted", "baseline-5");
    assert_eq!(accepted["actor"], agent_actor.as_str());
    assert_eq!(accepted["detail"]["sequence"], 5);
    let rejected = find("agent.bundle.rejected", "baseline-6");
    assert_eq!(rejected["actor"], agent_actor.as_str());
    assert_eq!(
        rejected["detail"]["outcome"]["Rejected"]["rule"],
        "unknown-key"
    );
    let refused = entries
        .iter()
        .find(|entry| entry["action"] == "api.request" && entry["detail"]["status"] == 422)
        .expect("the refused baseline-4 publication");
    assert_eq!(refused["subject"], "/api/v1/bundles");
    assert_eq!(refused["actor"], "token:sec-publisher/security");
    let rejected = find("bundle.rejected", "/api/v1/bundles");
    assert_eq!(rejected["detail"]["rule"], "rollback");
    assert_eq!(rejected["detail"]["publisher"], "test@ci");

    let output = server
        .tidegate()
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.starts_with("audit log intact: "), "{stdout}");
}

#[test]
fn publication_without_trust_root_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_embedded(&data.path().join("tidegate.db"));
    let s1 = key(Role::Security);
    let (status, body) = publish(&server, &server.token, &bundle("baseline-1", 1, &s1));
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--trust-root"),
        "{body}"
    );
}
