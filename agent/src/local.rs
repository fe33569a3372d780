//! The agent's local bundle commands: `plan`, `apply`, `rollback` and `journal`, for a person at
//! the host, for demonstrations and for tests. They use the same trust store, executor and
//! journal as the daemon, in the state directory they are given, and send nothing anywhere.
//!
//! `plan` only probes and changes nothing. `apply` verifies the bundle against the pinned trust
//! root first, exactly as a bundle from the server is verified, and records the decision and the
//! outcome where the daemon's next report would pick them up.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidegate_protocol::trust::BundleHash;
use tidegate_protocol::BundleOutcome;

use crate::clock::{Clock, SystemClock};
use crate::executor::{
    crash_hook_from_env, plan_bundle, AcceptedBundle, Executor, ExecutorError, ExecutorSettings,
    RealSteps, RunResult, SystemRunner,
};
use crate::trust::{TrustError, TrustStore, EARLIEST_TRUSTED_UNIX_S};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot read bundle file {path}: {source}")]
    ReadBundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bundle file {path} does not decode: {reason}")]
    InvalidBundle { path: PathBuf, reason: String },
    #[error("root {path} is not a directory; give --root / for this host")]
    RootDir { path: PathBuf },
    #[error("invalid bundle hash {value:?}: expected 64 hexadecimal digits")]
    InvalidHash { value: String },
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Executor(#[from] ExecutorError),
}

/// The text a local command prints, and whether it succeeded.
#[derive(Debug)]
pub struct Report {
    pub text: String,
    pub success: bool,
}

fn read_bundle(path: &Path) -> Result<(Vec<u8>, AcceptedBundle), LocalError> {
    let file = std::fs::read(path).map_err(|source| LocalError::ReadBundle {
        path: path.to_owned(),
        source,
    })?;
    let bundle =
        AcceptedBundle::from_verified_file(&file).map_err(|reason| LocalError::InvalidBundle {
            path: path.to_owned(),
            reason,
        })?;
    Ok((file, bundle))
}

fn check_root(root: &Path) -> Result<(), LocalError> {
    if root.is_dir() {
        Ok(())
    } else {
        Err(LocalError::RootDir {
            path: root.to_owned(),
        })
    }
}

/// Prints what each step would change below `root`.
pub fn plan(bundle_path: &Path, root: &Path) -> Result<Report, LocalError> {
    check_root(root)?;
    let (_, bundle) = read_bundle(bundle_path)?;
    let mut text = format!(
        "plan for bundle {} ({}) below {}; signatures not checked, nothing changed\n",
        bundle.manifest.bundle_id,
        bundle.bundle_hash,
        root.display()
    );
    let mut success = true;
    for (index, kind, planned) in plan_bundle(&bundle, root, &SystemRunner, &RealSteps) {
        match planned {
            Ok(change) => {
                let marker = if change.changes {
                    "change"
                } else {
                    "no change"
                };
                let _ = writeln!(text, "step {index} {kind}: {marker}: {}", change.summary);
                for line in change.detail.lines() {
                    let _ = writeln!(text, "    {line}");
                }
            }
            Err(error) => {
                success = false;
                let _ = writeln!(text, "step {index} {kind}: cannot plan: {error}");
            }
        }
    }
    Ok(Report { text, success })
}

fn open_executor(root: &Path, state_dir: &Path) -> Result<Executor, LocalError> {
    Ok(Executor::open(
        state_dir,
        ExecutorSettings {
            root: root.to_owned(),
            runner: Arc::new(SystemRunner),
            driver: Arc::new(RealSteps),
            clock: Arc::new(SystemClock),
            crash_hook: crash_hook_from_env(),
        },
    )?)
}

fn describe(result: &RunResult) -> String {
    let mut text = format!(
        "bundle {} ({}): {}",
        result.bundle_id,
        result.bundle_hash,
        result.outcome.as_str()
    );
    match result.outcome.failure() {
        Some((Some(step), detail)) => {
            let _ = write!(text, " at step {step}: {detail}");
        }
        Some((None, detail)) => {
            let _ = write!(text, ": {detail}");
        }
        None => {}
    }
    if result.outcome.needs_person() {
        text.push_str(" [needs a person]");
    }
    text.push('\n');
    for step in &result.steps {
        let _ = write!(
            text,
            "  step {} {} {}",
            step.index,
            step.kind,
            step.outcome.as_str()
        );
        if !step.detail.is_empty() {
            let _ = write!(text, ": {}", step.detail);
        }
        text.push('\n');
    }
    text
}

/// Verifies and applies a bundle, after recovering what an earlier run left interrupted.
pub fn apply(
    bundle_path: &Path,
    root: &Path,
    state_dir: &Path,
    trust_root: Option<&Path>,
    tier: &str,
) -> Result<Report, LocalError> {
    check_root(root)?;
    let (file, _) = read_bundle(bundle_path)?;
    crate::fsutil::create_private_dir(state_dir).map_err(|source| TrustError::Write {
        path: state_dir.to_owned(),
        source,
    })?;
    let mut trust = TrustStore::open(state_dir, trust_root, EARLIEST_TRUSTED_UNIX_S)?;
    let mut executor = open_executor(root, state_dir)?;
    let clock = SystemClock;
    let mut text = String::new();
    for result in executor.recover() {
        let _ = write!(text, "recovered: {}", describe(&result));
        record(&mut trust, &result, clock.now_unix_s())?;
    }

    let applied = |hash: &BundleHash| executor.is_applied(hash);
    let record_of_decision = trust.receive_bundle(&file, tier, clock.now_unix_s(), &applied)?;
    if record_of_decision.outcome != BundleOutcome::Accepted {
        let detail = record_of_decision
            .outcome
            .failure()
            .map(|(_, detail)| format!(": {detail}"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "bundle {}: {}{detail}",
            record_of_decision.bundle_id,
            record_of_decision.outcome.as_str()
        );
        let success = record_of_decision.outcome == BundleOutcome::AlreadyApplied;
        return Ok(Report { text, success });
    }
    let (_, bundle) = read_bundle(bundle_path)?;
    let result = executor.run(&bundle, trust.allows_commands(tier));
    record(&mut trust, &result, clock.now_unix_s())?;
    text.push_str(&describe(&result));
    Ok(Report {
        success: result.outcome == BundleOutcome::Applied,
        text,
    })
}

fn record(trust: &mut TrustStore, result: &RunResult, now: i64) -> Result<(), LocalError> {
    trust.update_record(
        &result.bundle_hash,
        &result.bundle_id,
        result.outcome.clone(),
        result.steps.clone(),
        now,
    )?;
    Ok(())
}

/// Reverts an applied bundle from the journal.
pub fn rollback(bundle_hash: &str, root: &Path, state_dir: &Path) -> Result<Report, LocalError> {
    check_root(root)?;
    let hash = BundleHash::parse(bundle_hash.trim()).map_err(|_| LocalError::InvalidHash {
        value: bundle_hash.chars().take(80).collect(),
    })?;
    let mut trust = TrustStore::open(state_dir, None, EARLIEST_TRUSTED_UNIX_S)?;
    let mut executor = open_executor(root, state_dir)?;
    let mut text = String::new();
    for result in executor.recover() {
        let _ = write!(text, "recovered: {}", describe(&result));
        record(&mut trust, &result, SystemClock.now_unix_s())?;
    }
    let result = executor.rollback(&hash)?;
    record(&mut trust, &result, SystemClock.now_unix_s())?;
    text.push_str(&describe(&result));
    Ok(Report {
        success: result.outcome == BundleOutcome::RolledBack,
        text,
    })
}

/// Finishes or reverts what the journal shows interrupted and prints each outcome, one line per
/// bundle starting with `recovered:`. It prints nothing when no run is unfinished.
pub fn recover(root: &Path, state_dir: &Path) -> Result<Report, LocalError> {
    check_root(root)?;
    let mut trust = TrustStore::open(state_dir, None, EARLIEST_TRUSTED_UNIX_S)?;
    let mut executor = open_executor(root, state_dir)?;
    let mut text = String::new();
    let mut success = true;
    for result in executor.recover() {
        let _ = write!(text, "recovered: {}", describe(&result));
        success &= !result.outcome.needs_person();
        record(&mut trust, &result, SystemClock.now_unix_s())?;
    }
    Ok(Report { text, success })
}

/// Prints every bundle run the journal records, with its steps. Nothing is written, so this is
/// safe while the daemon runs.
pub fn journal(state_dir: &Path) -> Result<Report, LocalError> {
    let runs = crate::journal::Journal::read_runs(state_dir).map_err(ExecutorError::from)?;
    let mut text = format!("journal {}\n", state_dir.join("journal").display());
    for run in &runs {
        let _ = writeln!(
            text,
            "run {} of bundle {} ({}), started at {}{}",
            run.run,
            run.bundle_id,
            run.bundle_hash,
            tidegate_protocol::trust::format_unix_s(run.started_at_unix_s),
            if run.rollback_begun {
                ", rollback begun"
            } else {
                ""
            }
        );
        text.push_str(&describe(&crate::executor::run_result(run)));
    }
    Ok(Report {
        text,
        success: true,
    })
}
