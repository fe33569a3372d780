//! Executor tests with a fake step driver that writes files below a temporary root, so ordering,
//! journaling, reverts and recovery are tested without the real step types.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tidegate_protocol::trust::{
    BundleId, ExecutionPolicy, HealthCheck, PayloadRef, StreamName, TargetSelector,
};

use super::*;
use crate::steps::CommandOutput;

/// Handles `LockAccount` only, as a file write: step `LockAccount { user }` writes payload `user`
/// to the file `user` below the root. The backup keeps the old content (or notes its absence).
/// The user name asks for behaviour: `bad…` fails verify, `stuck` fails revert, `irreversible`
/// cannot be reverted and `resumable…` may be resumed. A step type whose fields stay fixed keeps
/// these tests independent of the real step types.
struct FakeSteps {
    /// While set, `bad…` steps fail their verify.
    bad_steps_fail: AtomicBool,
}

impl FakeSteps {
    fn new() -> Self {
        Self {
            bad_steps_fail: AtomicBool::new(true),
        }
    }
}

fn target(step: &Step, cx: &StepContext<'_>) -> (PathBuf, String) {
    match step {
        Step::LockAccount { user } => (cx.root.join(user), user.clone()),
        other => panic!("the fake handles lock-account only, not {}", other.kind()),
    }
}

/// A step error for the fake; the variants belong to the step types.
fn fake_error(message: &str) -> StepError {
    StepError::Invalid {
        kind: "fake",
        reason: message.to_owned(),
    }
}

impl StepDriver for FakeSteps {
    fn reversibility(&self, step: &Step) -> Reversibility {
        match step {
            Step::LockAccount { user } if user == "irreversible" => Reversibility::Irreversible,
            _ => Reversibility::Reversible,
        }
    }
    fn resumable(&self, step: &Step) -> bool {
        matches!(step, Step::LockAccount { user } if user.starts_with("resumable"))
    }
    fn probe(&self, _step: &Step, _cx: &StepContext<'_>) -> Result<PriorState, StepError> {
        Ok(crate::journal::test_prior_state())
    }
    fn plan(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        _prior: &PriorState,
    ) -> Result<PlannedChange, StepError> {
        let (path, _) = target(step, cx);
        Ok(PlannedChange {
            summary: format!("write {}", path.display()),
            detail: String::new(),
            changes: true,
        })
    }
    fn backup(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        _prior: &PriorState,
    ) -> Result<(), StepError> {
        let (path, _) = target(step, cx);
        match fs::read(&path) {
            Ok(old) => fs::write(cx.backup_dir.join("old"), old).unwrap(),
            Err(_) => fs::write(cx.backup_dir.join("absent"), b"").unwrap(),
        }
        Ok(())
    }
    fn apply(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        _prior: &PriorState,
    ) -> Result<(), StepError> {
        let (path, payload) = target(step, cx);
        let content = &cx.payloads[&payload];
        fs::write(&path, &content[..content.len() / 2]).unwrap();
        (cx.checkpoint)("apply-mid");
        fs::write(&path, content).unwrap();
        Ok(())
    }
    fn verify(&self, step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
        let (_, payload) = target(step, cx);
        if payload.starts_with("bad") && self.bad_steps_fail.load(Ordering::SeqCst) {
            return Err(fake_error("verify"));
        }
        Ok(())
    }
    fn revert(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        _prior: &PriorState,
    ) -> Result<(), StepError> {
        let (path, _) = target(step, cx);
        if path.ends_with("stuck") {
            return Err(fake_error("revert"));
        }
        if cx.backup_dir.join("absent").exists() {
            let _ = fs::remove_file(&path);
        } else {
            fs::write(&path, fs::read(cx.backup_dir.join("old")).unwrap()).unwrap();
        }
        Ok(())
    }
}

struct FixedClock;
impl Clock for FixedClock {
    fn now_unix_s(&self) -> i64 {
        1_800_000_000
    }
}

/// Records the commands it is given and answers with `status`.
struct FakeRunner {
    status: i32,
    seen: Mutex<Vec<Vec<String>>>,
}

impl CommandRunner for FakeRunner {
    fn run(&self, argv: &[String]) -> std::io::Result<CommandOutput> {
        self.seen.lock().unwrap().push(argv.to_vec());
        Ok(CommandOutput {
            status: Some(self.status),
            stdout: vec![],
            stderr: vec![],
        })
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    fs::create_dir_all(&root).unwrap();
    Setup {
        _dir: dir,
        root,
        state,
    }
}

fn executor(setup: &Setup, driver: Arc<FakeSteps>, crash_hook: CrashHook) -> Executor {
    Executor::open(
        &setup.state,
        ExecutorSettings {
            root: setup.root.clone(),
            runner: Arc::new(FakeRunner {
                status: 0,
                seen: Mutex::new(vec![]),
            }),
            driver,
            clock: Arc::new(FixedClock),
            crash_hook,
        },
    )
    .unwrap()
}

fn no_crash() -> CrashHook {
    Arc::new(|_: &str| {})
}

/// Builds a bundle of fake steps from `(file name, content)`.
fn bundle(files: &[(&str, &str)], execution: ExecutionPolicy) -> AcceptedBundle {
    let mut payloads = BTreeMap::new();
    let mut refs = Vec::new();
    let mut steps = Vec::new();
    for (name, content) in files {
        refs.push(PayloadRef::of_content(name, content.as_bytes()));
        payloads.insert(name.to_string(), content.as_bytes().to_vec());
        steps.push(Step::LockAccount {
            user: name.to_string(),
        });
    }
    let manifest = BundleManifest {
        bundle_id: BundleId::parse("test").unwrap(),
        stream: StreamName::parse("test").unwrap(),
        sequence: 1,
        not_before_unix_s: 0,
        expires_unix_s: i64::MAX,
        target: TargetSelector::default(),
        steps,
        payloads: refs,
        execution,
    };
    let file = BundleFile::new(
        &manifest,
        payloads
            .iter()
            .map(|(name, content)| tidegate_protocol::trust::Payload {
                name: name.clone(),
                content: content.clone(),
            })
            .collect(),
    )
    .unwrap();
    AcceptedBundle {
        bundle_hash: file.bundle_hash(),
        manifest,
        payloads,
        file: file.encode().unwrap(),
    }
}

fn read(root: &Path, name: &str) -> Option<String> {
    fs::read_to_string(root.join(name)).ok()
}

#[test]
fn applied_bundle_records_each_step() {
    let setup = setup();
    let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
    let bundle = bundle(
        &[("a", "first"), ("b", "second")],
        ExecutionPolicy::default(),
    );
    let result = executor.run(&bundle, false);
    assert_eq!(result.outcome, BundleOutcome::Applied);
    assert_eq!(result.steps.len(), 2);
    assert!(result
        .steps
        .iter()
        .all(|step| step.outcome == StepOutcome::Applied));
    assert_eq!(read(&setup.root, "a").as_deref(), Some("first"));
    assert_eq!(read(&setup.root, "b").as_deref(), Some("second"));

    let again = executor.run(&bundle, false);
    assert_eq!(again.outcome, BundleOutcome::AlreadyApplied);
}

#[test]
fn failed_second_step_reverts_first_and_runs_again() {
    let setup = setup();
    fs::write(setup.root.join("a"), "old a").unwrap();
    let driver = Arc::new(FakeSteps::new());
    let mut executor = executor(&setup, driver.clone(), no_crash());
    let bundle = bundle(
        &[("a", "new a"), ("bad-b", "new b"), ("c", "c")],
        ExecutionPolicy::default(),
    );

    let result = executor.run(&bundle, false);
    let BundleOutcome::Reverted { step, .. } = &result.outcome else {
        panic!("expected reverted, got {:?}", result.outcome);
    };
    assert_eq!(*step, Some(1));
    assert_eq!(read(&setup.root, "a").as_deref(), Some("old a"));
    assert_eq!(read(&setup.root, "bad-b"), None);
    assert_eq!(read(&setup.root, "c"), None);
    assert_eq!(result.steps[0].outcome, StepOutcome::Reverted);
    assert_eq!(result.steps[1].outcome, StepOutcome::Reverted);
    assert!(!executor.is_applied(&bundle.bundle_hash));

    // Delivered again, the same bundle runs every step again rather than being a no-op; this
    // time the second step verifies.
    driver.bad_steps_fail.store(false, Ordering::SeqCst);
    let again = executor.run(&bundle, false);
    assert_eq!(again.outcome, BundleOutcome::Applied);
    assert_eq!(executor.journal().run(&bundle.bundle_hash).unwrap().run, 2);
    assert_eq!(read(&setup.root, "a").as_deref(), Some("new a"));
    assert_eq!(read(&setup.root, "bad-b").as_deref(), Some("new b"));
    assert_eq!(read(&setup.root, "c").as_deref(), Some("c"));
}

#[test]
fn failed_revert_is_reported_for_a_person() {
    let setup = setup();
    let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
    let bundle = bundle(
        &[("stuck", "x"), ("bad-b", "y")],
        ExecutionPolicy::default(),
    );
    let result = executor.run(&bundle, false);
    let BundleOutcome::RevertFailed { step, .. } = &result.outcome else {
        panic!("expected revert-failed, got {:?}", result.outcome);
    };
    assert_eq!(*step, 0);
    assert!(result.outcome.needs_person());
    assert_eq!(result.steps[0].outcome, StepOutcome::RevertFailed);
    assert_eq!(result.steps[1].outcome, StepOutcome::Reverted);
}

#[test]
fn failed_health_check_reverts_all_steps() {
    let setup = setup();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
    let bundle = bundle(
        &[("a", "x")],
        ExecutionPolicy {
            health_checks: vec![HealthCheck::TcpListening { port }],
            ..Default::default()
        },
    );
    let result = executor.run(&bundle, false);
    assert!(
        matches!(result.outcome, BundleOutcome::Reverted { step: None, .. }),
        "{:?}",
        result.outcome
    );
    assert_eq!(read(&setup.root, "a"), None);
}

#[test]
fn passing_health_check_keeps_bundle_applied() {
    let setup = setup();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
    let bundle = bundle(
        &[("a", "x")],
        ExecutionPolicy {
            health_checks: vec![HealthCheck::TcpListening { port }],
            ..Default::default()
        },
    );
    assert_eq!(executor.run(&bundle, false).outcome, BundleOutcome::Applied);
    assert_eq!(read(&setup.root, "a").as_deref(), Some("x"));
    drop(listener);
}

#[test]
fn unit_check_fails_below_sandbox_root() {
    let setup = setup();
    let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
    let bundle = bundle(
        &[("a", "x")],
        ExecutionPolicy {
            health_checks: vec![HealthCheck::UnitActive {
                unit: "ssh.service".into(),
            }],
            ..Default::default()
        },
    );
    let result = executor.run(&bundle, false);
    let BundleOutcome::Reverted { step, detail } = &result.outcome else {
        panic!("expected reverted, got {:?}", result.outcome);
    };
    assert_eq!(*step, None);
    assert!(
        detail.contains("unit checks need the live root"),
        "{detail}"
    );
    assert_eq!(read(&setup.root, "a"), None);
}

#[test]
fn irreversible_and_commands_need_permission() {
    let setup = setup();
    let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
    let irreversible = bundle(&[("irreversible", "x")], ExecutionPolicy::default());
    let result = executor.run(&irreversible, true);
    assert!(
        matches!(&result.outcome, BundleOutcome::Rejected { rule, .. } if rule == "irreversible-not-accepted")
    );
    assert_eq!(read(&setup.root, "irreversible"), None);

    let checked = bundle(
        &[("a", "x")],
        ExecutionPolicy {
            runs_commands: true,
            health_checks: vec![HealthCheck::CommandSucceeds {
                argv: vec!["true".into()],
            }],
            ..Default::default()
        },
    );
    let refused = executor.run(&checked, false);
    assert!(
        matches!(&refused.outcome, BundleOutcome::Rejected { rule, .. } if rule == "commands-not-allowed")
    );
    assert_eq!(read(&setup.root, "a"), None);
    assert_eq!(executor.run(&checked, true).outcome, BundleOutcome::Applied);
}

#[test]
fn rollback_restores_and_allows_running_again() {
    let setup = setup();
    fs::write(setup.root.join("a"), "old").unwrap();
    let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
    let bundle = bundle(&[("a", "new"), ("b", "b")], ExecutionPolicy::default());
    assert_eq!(executor.run(&bundle, false).outcome, BundleOutcome::Applied);

    let rolled = executor.rollback(&bundle.bundle_hash).unwrap();
    assert_eq!(rolled.outcome, BundleOutcome::RolledBack);
    assert_eq!(read(&setup.root, "a").as_deref(), Some("old"));
    assert_eq!(read(&setup.root, "b"), None);
    assert!(!executor.is_applied(&bundle.bundle_hash));
    assert_eq!(executor.run(&bundle, false).outcome, BundleOutcome::Applied);
}

#[test]
fn rollback_of_unknown_bundle_is_refused() {
    let setup = setup();
    let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
    let error = executor.rollback(&BundleHash([9; 32])).err().unwrap();
    assert!(matches!(error, ExecutorError::RollbackRefused { .. }));
}

/// Simulates a crash by unwinding out of the executor at the named point; the journal on disk
/// is what a killed process leaves.
fn run_until_crash(setup: &Setup, bundle: &AcceptedBundle, point: &'static str) {
    let hook: CrashHook = Arc::new(move |at: &str| {
        if at == point {
            std::panic::resume_unwind(Box::new("crash point"));
        }
    });
    let state = setup.state.clone();
    let root = setup.root.clone();
    let bundle = bundle.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let setup = Setup {
            _dir: tempfile::tempdir().unwrap(),
            root,
            state,
        };
        let mut executor = executor(&setup, Arc::new(FakeSteps::new()), hook);
        executor.run(&bundle, false)
    }));
    assert!(
        outcome.is_err(),
        "the run did not reach crash point {point}"
    );
}

#[test]
fn recovery_reverts_at_every_crash_point() {
    for point in [
        "0:before",
        "0:begun",
        "0:apply-mid",
        "0:applied",
        "0:verified",
        "1:before",
        "1:begun",
        "1:apply-mid",
        "1:applied",
    ] {
        let setup = setup();
        fs::write(setup.root.join("a"), "old").unwrap();
        let bundle = bundle(&[("a", "new"), ("b", "bee")], ExecutionPolicy::default());
        run_until_crash(&setup, &bundle, point);

        let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
        let recovered = executor.recover();
        assert_eq!(recovered.len(), 1, "{point}");
        assert!(
            matches!(recovered[0].outcome, BundleOutcome::Reverted { .. }),
            "{point}: {:?}",
            recovered[0].outcome
        );
        assert_eq!(read(&setup.root, "a").as_deref(), Some("old"), "{point}");
        assert_eq!(read(&setup.root, "b"), None, "{point}");
        // Reported once: a second recovery finds nothing to do.
        assert!(executor.recover().is_empty(), "{point}");
    }
}

#[test]
fn recovery_finishes_resumable_steps() {
    let setup = setup();
    let bundle = bundle(
        &[("resumable-a", "new"), ("resumable-b", "bee")],
        ExecutionPolicy::default(),
    );
    run_until_crash(&setup, &bundle, "1:apply-mid");
    let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
    let recovered = executor.recover();
    assert_eq!(recovered[0].outcome, BundleOutcome::Applied);
    assert_eq!(read(&setup.root, "resumable-b").as_deref(), Some("bee"));
    assert!(executor.is_applied(&bundle.bundle_hash));
}

#[test]
fn interrupted_rollback_resumes_to_original_state() {
    for point in ["1:revert-begun", "1:reverted", "0:revert-begun"] {
        let setup = setup();
        fs::write(setup.root.join("a"), "old").unwrap();
        let bundle = bundle(&[("a", "new"), ("b", "bee")], ExecutionPolicy::default());
        executor(&setup, Arc::new(FakeSteps::new()), no_crash()).run(&bundle, false);

        let hook: CrashHook = Arc::new(move |at: &str| {
            if at == point {
                std::panic::resume_unwind(Box::new("crash point"));
            }
        });
        let mut crashing = executor(&setup, Arc::new(FakeSteps::new()), hook);
        let hash = bundle.bundle_hash;
        let crashed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crashing.rollback(&hash)));
        assert!(crashed.is_err(), "{point}");
        drop(crashing);

        let mut executor = executor(&setup, Arc::new(FakeSteps::new()), no_crash());
        let recovered = executor.recover();
        assert_eq!(recovered.len(), 1, "{point}");
        assert_eq!(recovered[0].outcome, BundleOutcome::RolledBack, "{point}");
        assert_eq!(read(&setup.root, "a").as_deref(), Some("old"), "{point}");
        assert_eq!(read(&setup.root, "b"), None, "{point}");
    }
}

#[test]
fn plan_changes_nothing() {
    let setup = setup();
    fs::write(setup.root.join("a"), "old").unwrap();
    let bundle = bundle(&[("a", "new")], ExecutionPolicy::default());
    let planned = plan_bundle(
        &bundle,
        &setup.root,
        &FakeRunner {
            status: 0,
            seen: Mutex::new(vec![]),
        },
        &FakeSteps::new(),
    );
    assert_eq!(planned.len(), 1);
    assert!(planned[0].2.as_ref().unwrap().changes);
    assert_eq!(read(&setup.root, "a").as_deref(), Some("old"));
}
