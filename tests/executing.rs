//! The executor end to end, with the real agent binary and the real step types on a sandbox
//! root: SIGKILL at every step boundary and in the middle of every step, a failing step with the
//! same bundle delivered again, a package upgrade rolled back from the kept package file, and a
//! plan that changes nothing.
//!
//! The agent is killed through `TIDEGATE_CRASH_AT=STEP:POINT`, which makes it send itself SIGKILL
//! at that point. `tidegate-agent recover` then plays the daemon's start-up: it finishes or
//! reverts the bundle and prints which.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ring::rand::SystemRandom;
use std::time::Duration;
use tidegate_protocol::trust::{
    BundleFile, BundleId, BundleManifest, Payload, PayloadRef, Role, ScheduleDocument,
    SignedSchedule, SignedTrustRoot, SigningKey, Step, StreamName, TargetSelector, Thresholds,
    TrustRoot,
};
use tidegate_protocol::window::{CalendarSpec, WindowRule};
use tidegate_tests::exec_kit::{
    build_deb, dpkg_packages, init_dpkg_root, install_deb, tree_snapshot, write_accounts,
};

use tidegate_tests::{
    fixture_root, prepare_agent_id, wait_for, workspace_binary, AgentSettings, Process, Server,
};

/// Paths the comparison leaves out: dpkg's own bookkeeping (locks, `status-old`) changes with
/// every dpkg run, and `dpkg-query` output stands for it.
const NOT_COMPARED: &[&str] = &["var/lib/dpkg", "var/cache", "var/log"];

const SSHD_CONFIG: &str = "Port 22\nPasswordAuthentication yes\nUsePAM yes\n";

struct Keys {
    root: SigningKey,
    security: SigningKey,
    ot: SigningKey,
}

fn keys() -> Keys {
    let random = SystemRandom::new();
    Keys {
        root: SigningKey::generate(Role::Root, &random).unwrap(),
        security: SigningKey::generate(Role::Security, &random).unwrap(),
        ot: SigningKey::generate(Role::Ot, &random).unwrap(),
    }
}

fn write_trust_root(keys: &Keys, path: &Path) {
    let ot = &keys.ot;
    let root = TrustRoot {
        version: 1,
        keys: vec![
            keys.root.public_key().clone(),
            keys.security.public_key().clone(),
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
    signed.sign(&keys.root).unwrap();
    std::fs::write(path, signed.encode().unwrap()).unwrap();
}

/// Decodes steps from the JSON form `tidegate bundle new --steps` reads, so fields that a step
/// type adds later (such as a file's owner) are set where this build has them.
fn steps(json: serde_json::Value) -> Vec<Step> {
    serde_json::from_value(json).expect("steps in the manifest's JSON form")
}

fn signed_bundle(
    keys: &Keys,
    id: &str,
    steps: Vec<Step>,
    payloads: Vec<(String, Vec<u8>)>,
) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let manifest = BundleManifest {
        bundle_id: BundleId::parse(id).unwrap(),
        stream: StreamName::parse(id).unwrap(),
        sequence: 1,
        not_before_unix_s: now - 3600,
        expires_unix_s: now + 86_400,
        target: TargetSelector::default(),
        steps,
        payloads: payloads
            .iter()
            .map(|(name, content)| PayloadRef::of_content(name, content))
            .collect(),
        execution: Default::default(),
    };
    let payloads = payloads
        .into_iter()
        .map(|(name, content)| Payload { name, content })
        .collect();
    let mut file = BundleFile::new(&manifest, payloads).unwrap();
    file.sign(&keys.security).unwrap();
    file.encode().unwrap()
}

/// One sandbox: a root with accounts, an sshd_config and hello-tg 1.0-1 installed, an agent
/// state directory, and the bundle file of the four-step bundle.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    trust_root: PathBuf,
    bundle: PathBuf,
}

fn sandbox(keys: &Keys, bundle_file: &[u8], old_deb: &Path) -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    write_accounts(&root);
    std::fs::write(root.join("etc/ssh/sshd_config"), SSHD_CONFIG).unwrap();
    std::fs::write(root.join("etc/motd"), "old motd\n").unwrap();
    init_dpkg_root(&root);
    install_deb(&root, old_deb);
    let trust_root = dir.path().join("root.tgrt");
    write_trust_root(keys, &trust_root);
    let bundle = dir.path().join("bundle.tgbd");
    std::fs::write(&bundle, bundle_file).unwrap();
    Sandbox {
        state: dir.path().join("state"),
        root,
        trust_root,
        bundle,
        _dir: dir,
    }
}

/// Builds the four-step bundle: a file, a configuration line, an upgrade of hello-tg from 1.0-1 to
/// 1.0-2 and an account lock. Returns the bundle file and the 1.0-1 package file.
fn four_step_bundle(keys: &Keys, debs: &Path) -> (Vec<u8>, PathBuf) {
    let old = build_deb(
        debs,
        "hello-tg",
        "1.0-1",
        &[("/usr/share/hello-tg/greeting", b"one\n")],
    );
    let new = build_deb(
        debs,
        "hello-tg",
        "1.0-2",
        &[("/usr/share/hello-tg/greeting", b"two\n")],
    );
    let steps = steps(serde_json::json!([
        {"WriteFile": {"path": "etc/motd", "payload": "motd", "mode": 0o644,
                       "owner": "root", "group": "root"}},
        {"EnsureConfigLine": {"path": "etc/ssh/sshd_config",
                              "match_prefix": "PasswordAuthentication",
                              "line": "PasswordAuthentication no"}},
        {"UpgradeDeb": {"package": "hello-tg", "version": "1.0-2",
                        "payload": "hello-tg_1.0-2_all.deb"}},
        {"LockAccount": {"user": "alice"}},
    ]));
    let payloads = vec![
        ("motd".to_owned(), b"managed by tidegate\n".to_vec()),
        (
            "hello-tg_1.0-2_all.deb".to_owned(),
            std::fs::read(&new).unwrap(),
        ),
    ];
    (signed_bundle(keys, "four-steps", steps, payloads), old)
}

fn agent(args: &[&str], crash_at: Option<&str>) -> Output {
    let mut command = Command::new(workspace_binary("tidegate-agent"));
    command.args(args).env("RUST_LOG", "warn");
    match crash_at {
        Some(point) => command.env("TIDEGATE_CRASH_AT", point),
        None => command.env_remove("TIDEGATE_CRASH_AT"),
    };
    command.output().expect("run tidegate-agent")
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn apply(sandbox: &Sandbox, crash_at: Option<&str>) -> Output {
    agent(
        &[
            "apply",
            path_arg(&sandbox.bundle),
            "--root",
            path_arg(&sandbox.root),
            "--state-dir",
            path_arg(&sandbox.state),
            "--trust-root",
            path_arg(&sandbox.trust_root),
        ],
        crash_at,
    )
}

/// What must be exactly as before or exactly as after: every compared file with content, mode
/// and owner (the shadow file among them), and the packages as dpkg reports them.
fn state(root: &Path) -> (BTreeMap<String, String>, String) {
    (tree_snapshot(root, NOT_COMPARED), dpkg_packages(root))
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn sigkill_anywhere_leaves_before_or_after() {
    let keys = keys();
    let debs = tempfile::tempdir().unwrap();
    let (bundle, old_deb) = four_step_bundle(&keys, debs.path());

    // The two states a crash may end in, from undisturbed sandboxes.
    let untouched = sandbox(&keys, &bundle, &old_deb);
    let before = state(&untouched.root);
    let applied = sandbox(&keys, &bundle, &old_deb);
    let output = apply(&applied, None);
    assert!(output.status.success(), "{}", text(&output));
    let after = state(&applied.root);
    assert_ne!(before, after, "the bundle changed nothing");
    assert!(
        after.1.contains("hello-tg 1.0-2 install ok installed"),
        "{}",
        after.1
    );

    let mut points = Vec::new();
    for step in 0..4 {
        points.push(format!("{step}:before"));
        points.push(format!("{step}:begun"));
        points.push(format!("{step}:apply-mid"));
    }
    points.push("3:verified".to_owned());

    for point in &points {
        let sandbox = sandbox(&keys, &bundle, &old_deb);
        let crashed = apply(&sandbox, Some(point));
        assert_eq!(
            crashed.status.signal(),
            Some(9),
            "{point}: the agent was not killed there\n{}",
            text(&crashed)
        );

        let recovered = agent(
            &[
                "recover",
                "--root",
                path_arg(&sandbox.root),
                "--state-dir",
                path_arg(&sandbox.state),
            ],
            None,
        );
        let report = String::from_utf8_lossy(&recovered.stdout).into_owned();
        assert!(recovered.status.success(), "{point}: {}", text(&recovered));
        let now = state(&sandbox.root);
        if report.contains("four-steps") && report.contains(": applied") {
            assert_eq!(now, after, "{point}: reported applied\n{report}");
        } else if report.contains(": reverted") || report.is_empty() {
            // Nothing to recover means the crash came before the journal knew the bundle.
            assert_eq!(now, before, "{point}: reported reverted\n{report}");
        } else {
            panic!("{point}: recovery reported neither applied nor reverted\n{report}");
        }

        // Reported once: a second start finds nothing to do.
        let again = agent(
            &[
                "recover",
                "--root",
                path_arg(&sandbox.root),
                "--state-dir",
                path_arg(&sandbox.state),
            ],
            None,
        );
        assert_eq!(String::from_utf8_lossy(&again.stdout), "", "{point}");
    }
}

#[test]
fn failed_step_reverts_and_same_bundle_runs_again() {
    let keys = keys();
    let debs = tempfile::tempdir().unwrap();
    let old_deb = build_deb(
        debs.path(),
        "hello-tg",
        "1.0-1",
        &[("/usr/share/hello-tg/greeting", b"one\n")],
    );
    // Step 1 locks an account that does not exist yet, so it fails; step 0 must be reverted.
    let steps = steps(serde_json::json!([
        {"WriteFile": {"path": "etc/motd", "payload": "motd", "mode": 0o644,
                       "owner": "root", "group": "root"}},
        {"LockAccount": {"user": "bob"}},
        {"EnsureConfigLine": {"path": "etc/ssh/sshd_config",
                              "match_prefix": "PasswordAuthentication",
                              "line": "PasswordAuthentication no"}},
    ]));
    let bundle = signed_bundle(
        &keys,
        "three-steps",
        steps,
        vec![("motd".to_owned(), b"managed\n".to_vec())],
    );
    let sandbox = sandbox(&keys, &bundle, &old_deb);
    let before = state(&sandbox.root);

    let first = apply(&sandbox, None);
    let report = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(!first.status.success(), "{}", text(&first));
    assert!(report.contains("reverted at step 1"), "{report}");
    assert!(report.contains("step 0 write-file reverted"), "{report}");
    assert_eq!(state(&sandbox.root), before);

    // Add bob, then deliver the same bundle again: it runs every step again and applies.
    let mut passwd = std::fs::read_to_string(sandbox.root.join("etc/passwd")).unwrap();
    passwd.push_str("bob:x:1001:1001::/home/bob:/bin/sh\n");
    std::fs::write(sandbox.root.join("etc/passwd"), passwd).unwrap();
    let mut shadow = std::fs::read_to_string(sandbox.root.join("etc/shadow")).unwrap();
    shadow.push_str("bob:$6$salt$hash:19000:0:99999:7:::\n");
    std::fs::write(sandbox.root.join("etc/shadow"), shadow).unwrap();

    let second = apply(&sandbox, None);
    let report = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{}", text(&second));
    assert!(report.contains("three-steps"), "{report}");
    assert!(report.contains(": applied"), "{report}");
    assert!(report.contains("step 0 write-file applied"), "{report}");
    assert_eq!(
        std::fs::read_to_string(sandbox.root.join("etc/motd")).unwrap(),
        "managed\n"
    );

    // A third delivery is a no-op: now a success record exists.
    let third = apply(&sandbox, None);
    let report = String::from_utf8_lossy(&third.stdout).into_owned();
    assert!(report.contains("already-applied"), "{report}");
}

#[test]
fn upgrade_rolled_back_from_kept_package() {
    let keys = keys();
    let debs = tempfile::tempdir().unwrap();
    let (bundle, old_deb) = four_step_bundle(&keys, debs.path());
    let sandbox = sandbox(&keys, &bundle, &old_deb);
    let before = state(&sandbox.root);
    // The package files are gone after the bundle is built: revert must use its own copy.
    drop(debs);

    let output = apply(&sandbox, None);
    assert!(output.status.success(), "{}", text(&output));
    assert!(dpkg_packages(&sandbox.root).contains("hello-tg 1.0-2 install ok installed"));
    let hash = BundleFile::decode(&bundle)
        .unwrap()
        .bundle_hash()
        .to_string();

    let rolled = agent(
        &[
            "rollback",
            &hash,
            "--root",
            path_arg(&sandbox.root),
            "--state-dir",
            path_arg(&sandbox.state),
        ],
        None,
    );
    let report = String::from_utf8_lossy(&rolled.stdout).into_owned();
    assert!(rolled.status.success(), "{}", text(&rolled));
    assert!(report.contains(": rolled-back"), "{report}");
    assert!(dpkg_packages(&sandbox.root).contains("hello-tg 1.0-1 install ok installed"));
    assert_eq!(state(&sandbox.root), before);
}

#[test]
fn plan_changes_nothing() {
    let keys = keys();
    let debs = tempfile::tempdir().unwrap();
    let (bundle, old_deb) = four_step_bundle(&keys, debs.path());
    let sandbox = sandbox(&keys, &bundle, &old_deb);
    let before = tree_snapshot(&sandbox.root, &[]);

    let output = agent(
        &[
            "plan",
            path_arg(&sandbox.bundle),
            "--root",
            path_arg(&sandbox.root),
        ],
        None,
    );
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", text(&output));
    assert!(report.contains("step 2 upgrade-deb: change"), "{report}");

    assert_eq!(tree_snapshot(&sandbox.root, &[]), before);
    assert!(!sandbox.state.exists(), "plan created the state directory");
}

/// Returns the outcome name and the step outcomes of `bundle_id`'s newest record in the API.
fn api_outcome(server: &Server, agent_id: &str, bundle_id: &str) -> Option<(String, Vec<String>)> {
    let detail = server.get_json(&format!("/api/v1/agents/{agent_id}"))?;
    let bundle = detail["bundles"]
        .as_array()?
        .iter()
        .rev()
        .find(|bundle| bundle["bundle_id"] == bundle_id)?
        .clone();
    let outcome = match &bundle["outcome"] {
        serde_json::Value::String(name) => name.clone(),
        serde_json::Value::Object(map) => map.keys().next()?.clone(),
        _ => return None,
    };
    let steps = bundle["steps"]
        .as_array()?
        .iter()
        .map(|step| step["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    Some((outcome, steps))
}

#[test]
fn rollback_order_from_server() {
    let keys = keys();
    let data = tempfile::tempdir().unwrap();
    let trust_root = data.path().join("root.tgrt");
    write_trust_root(&keys, &trust_root);
    let server = Server::start_with_trust_root(&data.path().join("tidegate.db"), &trust_root);

    let root = fixture_root(3, 0);
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/motd"), "old motd\n").unwrap();
    let state_dir = data.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);
    let mut settings = AgentSettings::new(root.path(), &state_dir, server.broker_url());
    settings.trust_root_file = Some(trust_root.clone());
    let _agent = settings.start();
    wait_for("the agent's first report", Duration::from_secs(30), || {
        server
            .agent(&agent_id)
            .filter(|agent| !agent["last_report_unix_s"].is_null())
    });

    // The fixture root has no account databases, so the owner is given by number.
    let steps = steps(serde_json::json!([
        {"WriteFile": {"path": "etc/motd", "payload": "motd", "mode": 0o644,
                       "owner": "0", "group": "0"}},
    ]));
    let bundle = signed_bundle(
        &keys,
        "motd",
        steps,
        vec![("motd".to_owned(), b"managed by tidegate\n".to_vec())],
    );
    let hash = BundleFile::decode(&bundle)
        .unwrap()
        .bundle_hash()
        .to_string();
    let bundle_path = data.path().join("motd.tgbd");
    std::fs::write(&bundle_path, &bundle).unwrap();
    let tidegate = |args: &[&str]| {
        Command::new(workspace_binary("tidegate"))
            .arg("--server")
            .arg(server.url())
            .env("TIDEGATE_TOKEN", &server.token)
            .args(args)
            .output()
            .expect("run tidegate")
    };
    let published = tidegate(&["bundle", "publish", path_arg(&bundle_path), "--immediate"]);
    assert!(published.status.success(), "{}", text(&published));

    let (outcome, steps) = wait_for("the agent to apply motd", Duration::from_secs(30), || {
        api_outcome(&server, &agent_id, "motd")
            .filter(|(outcome, _)| outcome != "Accepted" && outcome != "Running")
    });
    assert_eq!(outcome, "Applied");
    assert_eq!(steps, vec!["Applied"]);
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/motd")).unwrap(),
        "managed by tidegate\n"
    );

    let ordered = tidegate(&["bundle", "rollback", &hash, "--agent", &agent_id]);
    assert!(ordered.status.success(), "{}", text(&ordered));
    let (outcome, steps) = wait_for(
        "the agent to roll motd back",
        Duration::from_secs(30),
        || api_outcome(&server, &agent_id, "motd").filter(|(outcome, _)| outcome == "RolledBack"),
    );
    assert_eq!(outcome, "RolledBack");
    assert_eq!(steps, vec!["Reverted"]);
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/motd")).unwrap(),
        "old motd\n"
    );

    let shown = tidegate(&["fleet", "show", &agent_id]);
    let shown_text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown_text.contains("motd (stream motd, sequence 1) rolled-back"),
        "{shown_text}"
    );
    assert!(
        shown_text.contains("step 0 write-file reverted"),
        "{shown_text}"
    );
    let detail = server
        .get_json(&format!("/api/v1/agents/{agent_id}"))
        .unwrap();
    assert_eq!(
        detail["bundle_states"][0]["outcome"], "rolled-back",
        "{detail}"
    );
}

#[test]
fn rollback_endpoint_checks_its_input() {
    let keys = keys();
    let data = tempfile::tempdir().unwrap();
    let trust_root = data.path().join("root.tgrt");
    write_trust_root(&keys, &trust_root);
    let server = Server::start_with_trust_root(&data.path().join("tidegate.db"), &trust_root);
    let post = |agent: &str, body: &str| {
        ureq::post(&format!("{}/api/v1/agents/{agent}/rollback", server.url()))
            .header("Authorization", format!("Bearer {}", server.token))
            .header("Content-Type", "application/json")
            .config()
            .http_status_as_error(false)
            .build()
            .send(body)
            .unwrap()
            .status()
            .as_u16()
    };
    let hash = "ab".repeat(32);
    assert_eq!(
        post("Not_An_Agent", &format!(r#"{{"bundle_hash":"{hash}"}}"#)),
        400
    );
    assert_eq!(
        post(
            "3f2a0c9d11e4b5a6c7d8e9f0a1b2c3d4",
            r#"{"bundle_hash":"xyz"}"#
        ),
        400
    );
    assert_eq!(
        post(
            "3f2a0c9d11e4b5a6c7d8e9f0a1b2c3d4",
            &format!(r#"{{"bundle_hash":"{hash}"}}"#)
        ),
        404
    );
}

#[test]
fn daemon_recovers_and_reports_after_sigkill() {
    let keys = keys();
    let data = tempfile::tempdir().unwrap();
    let trust_root = data.path().join("root.tgrt");
    write_trust_root(&keys, &trust_root);
    let server = Server::start_with_trust_root(&data.path().join("tidegate.db"), &trust_root);

    let root = fixture_root(3, 0);
    std::fs::create_dir_all(root.path().join("etc/ssh")).unwrap();
    std::fs::write(root.path().join("etc/motd"), "old motd\n").unwrap();
    std::fs::write(root.path().join("etc/ssh/sshd_config"), SSHD_CONFIG).unwrap();
    let before = tree_snapshot(root.path(), NOT_COMPARED);
    let state_dir = data.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);
    let mut settings = AgentSettings::new(root.path(), &state_dir, server.broker_url());
    settings.trust_root_file = Some(trust_root.clone());
    let config = data.path().join("agent.toml");
    settings.write(&config);
    let start_agent = |crash_at: Option<&str>| {
        let mut command = Command::new(workspace_binary("tidegate-agent"));
        command.arg("run").arg("--config").arg(&config);
        if let Some(point) = crash_at {
            command.env("TIDEGATE_CRASH_AT", point);
        }
        Process::spawn("tidegate-agent", &mut command)
    };

    // The first agent process dies in the middle of the second step.
    let mut first = start_agent(Some("1:apply-mid"));
    wait_for("the agent's first report", Duration::from_secs(30), || {
        server
            .agent(&agent_id)
            .filter(|agent| !agent["last_report_unix_s"].is_null())
    });
    let steps = steps(serde_json::json!([
        {"WriteFile": {"path": "etc/motd", "payload": "motd", "mode": 0o644,
                       "owner": "0", "group": "0"}},
        {"EnsureConfigLine": {"path": "etc/ssh/sshd_config",
                              "match_prefix": "PasswordAuthentication",
                              "line": "PasswordAuthentication no"}},
    ]));
    let bundle = signed_bundle(
        &keys,
        "hardening",
        steps,
        vec![("motd".to_owned(), b"managed by tidegate\n".to_vec())],
    );
    let bundle_path = data.path().join("hardening.tgbd");
    std::fs::write(&bundle_path, &bundle).unwrap();
    let published = Command::new(workspace_binary("tidegate"))
        .arg("--server")
        .arg(server.url())
        .env("TIDEGATE_TOKEN", &server.token)
        .args(["bundle", "publish", path_arg(&bundle_path), "--immediate"])
        .output()
        .unwrap();
    assert!(published.status.success(), "{}", text(&published));
    let status = wait_for("the agent to be killed", Duration::from_secs(30), || {
        first.child.try_wait().unwrap()
    });
    assert_eq!(status.signal(), Some(9), "{status:?}");

    // The restarted agent finishes or reverts the bundle and reports which.
    let _second = start_agent(None);
    let (outcome, _) = wait_for(
        "the restarted agent to report the bundle",
        Duration::from_secs(30),
        || {
            api_outcome(&server, &agent_id, "hardening")
                .filter(|(outcome, _)| outcome == "Applied" || outcome == "Reverted")
        },
    );
    let motd = std::fs::read_to_string(root.path().join("etc/motd")).unwrap();
    let sshd = std::fs::read_to_string(root.path().join("etc/ssh/sshd_config")).unwrap();
    if outcome == "Applied" {
        assert_eq!(motd, "managed by tidegate\n");
        assert!(sshd.contains("PasswordAuthentication no\n"), "{sshd}");
        assert!(!sshd.contains("PasswordAuthentication yes"), "{sshd}");
    } else {
        assert_eq!(tree_snapshot(root.path(), NOT_COMPARED), before);
    }
}

#[test]
fn interrupted_rollback_ends_before() {
    let keys = keys();
    let debs = tempfile::tempdir().unwrap();
    let (bundle, old_deb) = four_step_bundle(&keys, debs.path());
    let hash = BundleFile::decode(&bundle)
        .unwrap()
        .bundle_hash()
        .to_string();

    let mut points = vec!["2:revert-mid".to_owned()];
    for step in 0..4 {
        points.push(format!("{step}:revert-begun"));
        points.push(format!("{step}:reverted"));
    }
    for point in &points {
        let sandbox = sandbox(&keys, &bundle, &old_deb);
        let before = state(&sandbox.root);
        let applied = apply(&sandbox, None);
        assert!(applied.status.success(), "{point}: {}", text(&applied));

        let rollback_args = [
            "rollback",
            hash.as_str(),
            "--root",
            path_arg(&sandbox.root),
            "--state-dir",
            path_arg(&sandbox.state),
        ];
        let crashed = agent(&rollback_args, Some(point));
        assert_eq!(
            crashed.status.signal(),
            Some(9),
            "{point}: the agent was not killed there\n{}",
            text(&crashed)
        );

        let recovered = agent(
            &[
                "recover",
                "--root",
                path_arg(&sandbox.root),
                "--state-dir",
                path_arg(&sandbox.state),
            ],
            None,
        );
        let report = String::from_utf8_lossy(&recovered.stdout).into_owned();
        assert!(recovered.status.success(), "{point}: {}", text(&recovered));
        assert!(report.contains(": rolled-back"), "{point}: {report}");
        assert_eq!(state(&sandbox.root), before, "{point}");
    }
}

#[test]
fn restarted_agent_receives_schedule_published_while_down() {
    let keys = keys();
    let data = tempfile::tempdir().unwrap();
    let trust_root = data.path().join("root.tgrt");
    write_trust_root(&keys, &trust_root);
    let db = data.path().join("tidegate.db");
    let mut first_server = Server::start_with_trust_root(&db, &trust_root);

    let root = fixture_root(3, 0);
    let state_dir = data.path().join("agent");
    let agent_id = prepare_agent_id(&state_dir);
    let mut settings = AgentSettings::new(root.path(), &state_dir, first_server.broker_url());
    settings.trust_root_file = Some(trust_root.clone());
    let mut agent = settings.start();
    wait_for("the agent's first report", Duration::from_secs(30), || {
        first_server
            .agent(&agent_id)
            .filter(|agent| !agent["last_report_unix_s"].is_null())
    });
    agent.terminate();
    wait_for("the agent to be offline", Duration::from_secs(20), || {
        first_server
            .agent(&agent_id)
            .filter(|agent| agent["online"] == false)
    });
    // The agent keeps a persistent session, in which the embedded broker would queue the
    // schedule order. A new server process starts with a new broker, without that session, so
    // nothing but the server's resend can bring the schedule.
    first_server.process.terminate();
    let server = Server::start_with_trust_root(&db, &trust_root);
    settings.broker_url = server.broker_url();

    // Tier default's schedule version 2: a window every day at 03:00 UTC for an hour.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let document = ScheduleDocument {
        tier: "default".into(),
        site: None,
        version: 2,
        calendar: CalendarSpec {
            zone: "UTC".into(),
            not_before_unix_s: now - 86_400,
            expires_unix_s: now + 30 * 86_400,
            windows: vec![WindowRule::Recurring {
                cron: "0 3 * * *".into(),
                duration_s: 3600,
                cutoff_s: None,
            }],
            freezes: vec![],
        },
    };
    let mut schedule = SignedSchedule::new(&document).unwrap();
    schedule.sign(&keys.ot).unwrap();
    let (status, body) = server.post_octets(
        "/api/v1/schedules",
        &server.token,
        &[("X-Tidegate-Publisher", "ot@desk")],
        &schedule.encode().unwrap(),
    );
    assert_eq!(status, 201, "{body}");

    let _agent = settings.start();
    let delivery = wait_for(
        "the agent to report schedule version 2",
        Duration::from_secs(30),
        || {
            server
                .get_json(&format!("/api/v1/agents/{agent_id}/delivery"))
                .filter(|delivery| delivery["acknowledged_schedule_version"] == 2)
        },
    );
    assert_eq!(delivery["schedule_version"], 2, "{delivery}");
    assert_eq!(
        delivery["acknowledged_version"], delivery["version"],
        "{delivery}"
    );
    assert_eq!(server.agent(&agent_id).unwrap()["schedule_version"], 2);
}
