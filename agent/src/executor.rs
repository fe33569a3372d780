//! The executor: runs an accepted bundle's steps below the agent's root directory, with the
//! journal written ahead of every change, and undoes them when something fails, when the agent
//! restarts in the middle, or on a rollback order.
//!
//! It owns the order of the work and the [`Journal`]. It does not own what a step does (that is
//! [`crate::steps`], reached through [`StepDriver`]), nor whether a bundle is trusted (the trust
//! store decided that before) or when it may run: the daemon calls [`Executor::run`] at once
//! after acceptance. A window queue in front of that call is the place for maintenance windows.
//!
//! # One run
//!
//! Before any step, two checks run. A step that cannot be reverted needs the manifest's
//! `accepts_irreversible`. A command (run-command step or command health check) needs the
//! manifest's `runs_commands` and the trust root's permission for the agent's tier. Otherwise the
//! bundle is rejected and nothing changes. Then, for each step: probe, backup, a `StepBegun` journal entry flushed to
//! disk, apply, verify. After all steps the health checks run. A failed apply, verify or health
//! check reverts every begun step in reverse order; a failed revert stops there and the outcome
//! is `RevertFailed` naming the step, for a person to look at.
//!
//! # Recovery
//!
//! [`Executor::recover`] runs at start-up. An unfinished run is completed when every step still
//! to do declares itself resumable, and reverted otherwise; an unfinished revert or rollback is
//! continued. Reverts are idempotent, so a step whose revert began before the crash is reverted
//! again from the start.
//!
//! # Crash points
//!
//! Tests kill the agent at named points through a crash hook, called with `STEP:POINT`, where
//! POINT is `before` (the boundary before the step), `begun` (after its journal entry), a step's
//! own checkpoint such as `apply-mid` or `revert-mid`, `applied`, `verified` (the boundary after
//! it), `revert-begun` or `reverted`. The binary sets the hook from `TIDEGATE_CRASH_AT`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidegate_protocol::trust::{BundleFile, BundleHash, BundleManifest, HealthCheck, Step};
use tidegate_protocol::{BundleOutcome, StepOutcome, StepRecord};

use crate::clock::Clock;
use crate::journal::{BundleRun, Journal, JournalEntry, JournalError, StepState};
use crate::steps::{
    self, CommandRunner, PlannedChange, PriorState, Reversibility, StepContext, StepError,
};

/// How long a TCP health check waits for a connection.
const TCP_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The step functions the executor calls. [`RealSteps`] forwards to [`crate::steps`]; tests put
/// a fake in its place.
pub trait StepDriver: Send + Sync {
    fn reversibility(&self, step: &Step) -> Reversibility;
    fn resumable(&self, step: &Step) -> bool;
    fn probe(&self, step: &Step, cx: &StepContext<'_>) -> Result<PriorState, StepError>;
    fn plan(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        prior: &PriorState,
    ) -> Result<PlannedChange, StepError>;
    fn backup(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        prior: &PriorState,
    ) -> Result<(), StepError>;
    fn apply(&self, step: &Step, cx: &StepContext<'_>, prior: &PriorState)
        -> Result<(), StepError>;
    fn verify(&self, step: &Step, cx: &StepContext<'_>) -> Result<(), StepError>;
    fn revert(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        prior: &PriorState,
    ) -> Result<(), StepError>;
}

/// The step types of [`crate::steps`].
pub struct RealSteps;

impl StepDriver for RealSteps {
    fn reversibility(&self, step: &Step) -> Reversibility {
        steps::reversibility(step)
    }
    fn resumable(&self, step: &Step) -> bool {
        steps::resumable(step)
    }
    fn probe(&self, step: &Step, cx: &StepContext<'_>) -> Result<PriorState, StepError> {
        steps::probe(step, cx)
    }
    fn plan(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        prior: &PriorState,
    ) -> Result<PlannedChange, StepError> {
        steps::plan(step, cx, prior)
    }
    fn backup(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        prior: &PriorState,
    ) -> Result<(), StepError> {
        steps::backup(step, cx, prior)
    }
    fn apply(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        prior: &PriorState,
    ) -> Result<(), StepError> {
        steps::apply(step, cx, prior)
    }
    fn verify(&self, step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
        steps::verify(step, cx)
    }
    fn revert(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        prior: &PriorState,
    ) -> Result<(), StepError> {
        steps::revert(step, cx, prior)
    }
}

/// Called with `STEP:POINT` at every crash point; does nothing in production.
pub type CrashHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Returns the crash hook the binary installs: when `TIDEGATE_CRASH_AT` (test use only) equals
/// the point, the process sends itself SIGKILL, so nothing after that point runs, not even
/// destructors or buffered writes.
pub fn crash_hook_from_env() -> CrashHook {
    match std::env::var("TIDEGATE_CRASH_AT") {
        Ok(target) if !target.is_empty() => Arc::new(move |point: &str| {
            if point == target {
                tracing::warn!(point, "TIDEGATE_CRASH_AT reached: killing the agent");
                let pid = std::process::id().to_string();
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .status();
                // SIGKILL may take a moment to arrive; nothing may run meanwhile.
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }),
        _ => Arc::new(|_: &str| {}),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("bundle file {bundle_hash} kept in the journal does not decode: {reason}")]
    KeptBundle {
        bundle_hash: BundleHash,
        reason: String,
    },
    #[error("cannot roll back bundle {bundle_hash}: {reason}")]
    RollbackRefused {
        bundle_hash: BundleHash,
        reason: String,
    },
}

/// A bundle the trust store accepted, ready to run.
#[derive(Debug, Clone)]
pub struct AcceptedBundle {
    pub manifest: BundleManifest,
    pub bundle_hash: BundleHash,
    pub payloads: BTreeMap<String, Vec<u8>>,
    /// The bundle file as received, kept in the journal for recovery.
    pub file: Vec<u8>,
}

impl AcceptedBundle {
    /// Decodes a bundle file that has already been verified. Nothing is checked again here.
    pub fn from_verified_file(file: &[u8]) -> Result<Self, String> {
        let decoded = BundleFile::decode(file).map_err(|error| error.to_string())?;
        let manifest = decoded.manifest().map_err(|error| error.to_string())?;
        Ok(Self {
            bundle_hash: decoded.bundle_hash(),
            manifest,
            payloads: decoded
                .payloads
                .into_iter()
                .map(|payload| (payload.name, payload.content))
                .collect(),
            file: file.to_vec(),
        })
    }
}

/// The state of one bundle after a run, a rollback or a recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    pub bundle_hash: BundleHash,
    pub bundle_id: String,
    pub outcome: BundleOutcome,
    pub steps: Vec<StepRecord>,
}

/// The root, runner, step driver, clock and crash hook the steps run with.
pub struct ExecutorSettings {
    /// The directory every step works below; `/` on a real host.
    pub root: PathBuf,
    pub runner: Arc<dyn CommandRunner>,
    pub driver: Arc<dyn StepDriver>,
    pub clock: Arc<dyn Clock>,
    pub crash_hook: CrashHook,
}

/// Called with the bundle's state each time a step begins, for progress reports.
pub type ProgressHook = Arc<dyn Fn(RunResult) + Send + Sync>;

pub struct Executor {
    journal: Journal,
    settings: ExecutorSettings,
    live: bool,
    progress: Option<ProgressHook>,
}

/// The failure of a run: the step that failed (`None` for a health check) and the reason.
struct Failure {
    step: Option<u32>,
    detail: String,
}

impl Executor {
    /// Opens the journal in `state_dir`. Call [`Executor::recover`] before the first run.
    pub fn open(state_dir: &Path, settings: ExecutorSettings) -> Result<Self, ExecutorError> {
        let journal = Journal::open(state_dir)?;
        let live = settings.root == Path::new("/");
        Ok(Self {
            journal,
            settings,
            live,
            progress: None,
        })
    }

    /// Sets the hook called each time a step begins, replacing an earlier one.
    pub fn set_progress(&mut self, hook: Option<ProgressHook>) {
        self.progress = hook;
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Returns whether a success record with this hash exists (and no rollback since).
    pub fn is_applied(&self, bundle_hash: &BundleHash) -> bool {
        self.journal.is_applied(bundle_hash)
    }

    /// Returns the journal's current state of every bundle it ran.
    pub fn states(&self) -> Vec<RunResult> {
        self.journal.runs().map(run_result).collect()
    }

    fn now(&self) -> i64 {
        self.settings.clock.now_unix_s()
    }

    fn crash_point(&self, index: u32, point: &str) {
        (self.settings.crash_hook)(&format!("{index}:{point}"));
    }

    fn context<'a>(
        &'a self,
        payloads: &'a BTreeMap<String, Vec<u8>>,
        backup_dir: &'a Path,
        checkpoint: &'a dyn Fn(&str),
    ) -> StepContext<'a> {
        StepContext {
            root: &self.settings.root,
            live: self.live,
            runner: self.settings.runner.as_ref(),
            payloads,
            backup_dir,
            checkpoint,
        }
    }

    /// Checks what the bundle must be allowed before any step starts. Returns the rejection
    /// outcome, or `None` when it may run.
    pub fn precheck(
        &self,
        manifest: &BundleManifest,
        root_allows_commands: bool,
    ) -> Option<BundleOutcome> {
        for (index, step) in manifest.steps.iter().enumerate() {
            if self.settings.driver.reversibility(step) == Reversibility::Irreversible
                && !manifest.execution.accepts_irreversible
            {
                return Some(BundleOutcome::Rejected {
                    rule: "irreversible-not-accepted".into(),
                    detail: format!(
                        "step {index} ({}) cannot be reverted, and the bundle does not accept \
                         irreversible steps",
                        step.kind()
                    ),
                });
            }
        }
        let command_step = manifest.steps.iter().position(Step::runs_command);
        let command_check = manifest
            .execution
            .health_checks
            .iter()
            .any(|check| matches!(check, HealthCheck::CommandSucceeds { .. }));
        if command_step.is_some() || command_check {
            let command_source = match command_step {
                Some(index) => format!("step {index} runs a command"),
                None => "a health check runs a command".to_owned(),
            };
            if !manifest.execution.runs_commands {
                return Some(BundleOutcome::Rejected {
                    rule: "commands-not-declared".into(),
                    detail: format!(
                        "{command_source}, but the bundle does not declare runs_commands"
                    ),
                });
            }
            if !root_allows_commands {
                return Some(BundleOutcome::Rejected {
                    rule: "commands-not-allowed".into(),
                    detail: format!(
                        "{command_source}, and the trust root does not allow commands for this agent's tier"
                    ),
                });
            }
        }
        None
    }

    /// Runs a bundle. A bundle applied before (a success record with the same hash) is not run
    /// again. One that failed and was reverted runs again from the start.
    pub fn run(&mut self, bundle: &AcceptedBundle, root_allows_commands: bool) -> RunResult {
        let hash = bundle.bundle_hash;
        let span = tracing::info_span!("bundle", bundle.id = %bundle.manifest.bundle_id);
        let _entered = span.enter();
        if self.journal.is_applied(&hash) {
            tracing::info!("bundle applied before; nothing to do");
            let mut result = self
                .journal
                .run(&hash)
                .map(run_result)
                .unwrap_or_else(|| empty_result(bundle));
            result.outcome = BundleOutcome::AlreadyApplied;
            return result;
        }
        if let Some(rejection) = self.precheck(&bundle.manifest, root_allows_commands) {
            tracing::warn!(outcome = ?rejection, "bundle not started");
            let mut result = empty_result(bundle);
            result.outcome = rejection;
            return result;
        }
        if let Err(error) = self.journal.keep_bundle_file(&hash, &bundle.file) {
            return self.unstarted_failure(bundle, error);
        }
        let start = JournalEntry::BundleStarted {
            bundle_hash: hash,
            run: self.journal.next_run_number(&hash),
            bundle_id: bundle.manifest.bundle_id.to_string(),
            steps: bundle.manifest.steps.clone(),
            at_unix_s: self.now(),
        };
        if let Err(error) = self.journal.append(&start) {
            return self.unstarted_failure(bundle, error);
        }
        tracing::info!(steps = bundle.manifest.steps.len(), "bundle started");
        self.continue_run(bundle, 0)
    }

    fn unstarted_failure(&self, bundle: &AcceptedBundle, error: JournalError) -> RunResult {
        tracing::error!(%error, "cannot journal a bundle; it did not start");
        let mut result = empty_result(bundle);
        result.outcome = BundleOutcome::Reverted {
            step: None,
            detail: format!("the journal could not be written, so no step started: {error}"),
        };
        result
    }

    /// Runs the steps from `first` on, then the health checks, and ends the run.
    fn continue_run(&mut self, bundle: &AcceptedBundle, first: u32) -> RunResult {
        let hash = bundle.bundle_hash;
        let failure = self
            .run_steps(bundle, first)
            .err()
            .or_else(|| self.run_health_checks(&bundle.manifest).err());
        let outcome = match failure {
            None => BundleOutcome::Applied,
            Some(failure) => self.revert_run(&hash, failure),
        };
        self.finish(&hash, outcome.clone(), false);
        self.result_or(&hash, bundle, outcome)
    }

    fn run_steps(&mut self, bundle: &AcceptedBundle, first: u32) -> Result<(), Failure> {
        let hash = bundle.bundle_hash;
        let run = self.journal.run(&hash).map_or(1, |run| run.run);
        for (index, step) in bundle
            .manifest
            .steps
            .iter()
            .enumerate()
            .skip(first as usize)
        {
            let index = index as u32;
            let _step_span =
                tracing::info_span!("step", step = index, kind = step.kind()).entered();
            self.crash_point(index, "before");
            let fail = |detail: String| Failure {
                step: Some(index),
                detail,
            };

            // A step begun before a restart keeps the prior state its first probe read: probing
            // again now would read the half-changed state.
            let resumed = self
                .journal
                .run(&hash)
                .and_then(|run| run.begun.iter().find(|state| state.index == index))
                .map(|state| (state.prior.clone(), state.backup_dir.clone()));
            let (prior, backup_dir) = match resumed {
                Some(resumed) => resumed,
                None => {
                    let backup_dir = self
                        .journal
                        .make_backup_dir(&hash, run, index)
                        .map_err(|error| fail(format!("cannot prepare the backup: {error}")))?;
                    let no_checkpoint = |_: &str| {};
                    let cx = self.context(&bundle.payloads, &backup_dir, &no_checkpoint);
                    let prior = self
                        .settings
                        .driver
                        .probe(step, &cx)
                        .map_err(|error| fail(format!("probe failed: {error}")))?;
                    self.settings
                        .driver
                        .backup(step, &cx, &prior)
                        .map_err(|error| fail(format!("backup failed: {error}")))?;
                    self.append(JournalEntry::StepBegun {
                        bundle_hash: hash,
                        index,
                        step: step.clone(),
                        prior: prior.clone(),
                        backup_dir: backup_dir.clone(),
                        at_unix_s: self.now(),
                    })
                    .map_err(|error| fail(format!("cannot journal the step: {error}")))?;
                    (prior, backup_dir)
                }
            };
            self.crash_point(index, "begun");
            if let (Some(progress), Some(run)) = (&self.progress, self.journal.run(&hash)) {
                progress(run_result(run));
            }

            let hook = self.settings.crash_hook.clone();
            let checkpoint = move |point: &str| hook(&format!("{index}:{point}"));
            let cx = self.context(&bundle.payloads, &backup_dir, &checkpoint);
            let applied = self
                .settings
                .driver
                .apply(step, &cx, &prior)
                .map_err(|error| format!("apply failed: {error}"))
                .and_then(|()| {
                    self.crash_point(index, "applied");
                    self.settings
                        .driver
                        .verify(step, &cx)
                        .map_err(|error| format!("verify failed: {error}"))
                });
            if let Err(detail) = applied {
                tracing::warn!(%detail, "step failed");
                let _ = self.append(JournalEntry::StepFailed {
                    bundle_hash: hash,
                    index,
                    detail: detail.clone(),
                    at_unix_s: self.now(),
                });
                return Err(fail(detail));
            }
            self.append(JournalEntry::StepApplied {
                bundle_hash: hash,
                index,
                at_unix_s: self.now(),
            })
            .and_then(|()| {
                self.append(JournalEntry::StepVerified {
                    bundle_hash: hash,
                    index,
                    at_unix_s: self.now(),
                })
            })
            .map_err(|error| fail(format!("cannot journal the step: {error}")))?;
            tracing::info!("step applied and verified");
            self.crash_point(index, "verified");
        }
        Ok(())
    }

    fn run_health_checks(&self, manifest: &BundleManifest) -> Result<(), Failure> {
        for check in &manifest.execution.health_checks {
            let passed = match check {
                // systemctl reports the running system's units, which a sandbox root does not
                // have, so the check cannot pass there.
                HealthCheck::UnitActive { .. } if !self.live => Err(format!(
                    "unit checks need the live root /, and the steps ran below {}",
                    self.settings.root.display()
                )),
                HealthCheck::UnitActive { unit } => {
                    let argv = ["systemctl", "is-active", "--quiet", unit.as_str()]
                        .map(str::to_owned)
                        .to_vec();
                    self.command_succeeds(&argv)
                }
                HealthCheck::TcpListening { port } => {
                    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
                    TcpStream::connect_timeout(&address, TCP_CHECK_TIMEOUT)
                        .map(drop)
                        .map_err(|error| error.to_string())
                }
                HealthCheck::CommandSucceeds { argv } => self.command_succeeds(argv),
            };
            if let Err(reason) = passed {
                let detail = format!("health check failed: {}: {reason}", check.describe());
                tracing::warn!(%detail, "bundle unhealthy");
                return Err(Failure { step: None, detail });
            }
        }
        Ok(())
    }

    fn command_succeeds(&self, argv: &[String]) -> Result<(), String> {
        match self.settings.runner.run(argv) {
            Ok(output) if output.status == Some(0) => Ok(()),
            Ok(output) => Err(format!(
                "exit status {:?}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(error) => Err(format!("cannot run it: {error}")),
        }
    }

    /// Reverts every begun step of the run that is not reverted yet, in reverse order, and
    /// returns the outcome: `Reverted` with the original failure, or `RevertFailed`.
    fn revert_run(&mut self, hash: &BundleHash, failure: Failure) -> BundleOutcome {
        match self.revert_begun_steps(hash) {
            Ok(()) => BundleOutcome::Reverted {
                step: failure.step,
                detail: failure.detail,
            },
            Err((step, detail)) => BundleOutcome::RevertFailed {
                step,
                detail: format!("{detail} (after: {})", failure.detail),
            },
        }
    }

    fn revert_begun_steps(&mut self, hash: &BundleHash) -> Result<(), (u32, String)> {
        let Some(run) = self.journal.run(hash) else {
            return Ok(());
        };
        let to_revert: Vec<StepState> = run
            .begun
            .iter()
            .rev()
            .filter(|state| !state.reverted)
            .cloned()
            .collect();
        let payloads = self.kept_payloads(hash);
        for state in to_revert {
            let index = state.index;
            let _step_span =
                tracing::info_span!("revert", step = index, kind = state.step.kind()).entered();
            let _ = self.append(JournalEntry::RevertBegun {
                bundle_hash: *hash,
                index,
                at_unix_s: self.now(),
            });
            self.crash_point(index, "revert-begun");
            let hook = self.settings.crash_hook.clone();
            let checkpoint = move |point: &str| hook(&format!("{index}:{point}"));
            let cx = self.context(&payloads, &state.backup_dir, &checkpoint);
            let result =
                if self.settings.driver.reversibility(&state.step) == Reversibility::Irreversible {
                    Err(format!(
                        "step {index} ({}) cannot be reverted",
                        state.step.kind()
                    ))
                } else {
                    self.settings
                        .driver
                        .revert(&state.step, &cx, &state.prior)
                        .map_err(|error| format!("revert of step {index} failed: {error}"))
                };
            match result {
                Ok(()) => {
                    let _ = self.append(JournalEntry::RevertDone {
                        bundle_hash: *hash,
                        index,
                        at_unix_s: self.now(),
                    });
                    tracing::info!("step reverted");
                    self.crash_point(index, "reverted");
                }
                Err(detail) => {
                    tracing::error!(%detail, "revert failed; the host needs a person");
                    let _ = self.append(JournalEntry::RevertFailed {
                        bundle_hash: *hash,
                        index,
                        detail: detail.clone(),
                        at_unix_s: self.now(),
                    });
                    return Err((index, detail));
                }
            }
        }
        Ok(())
    }

    fn kept_payloads(&self, hash: &BundleHash) -> BTreeMap<String, Vec<u8>> {
        self.journal
            .bundle_file(hash)
            .ok()
            .and_then(|file| AcceptedBundle::from_verified_file(&file).ok())
            .map(|bundle| bundle.payloads)
            .unwrap_or_default()
    }

    fn finish(&mut self, hash: &BundleHash, outcome: BundleOutcome, rollback: bool) {
        let at_unix_s = self.now();
        let entry = if rollback {
            JournalEntry::RollbackFinished {
                bundle_hash: *hash,
                outcome: outcome.clone(),
                at_unix_s,
            }
        } else {
            JournalEntry::BundleFinished {
                bundle_hash: *hash,
                outcome: outcome.clone(),
                at_unix_s,
            }
        };
        match self.append(entry) {
            Ok(()) => tracing::info!(outcome = outcome.as_str(), "bundle finished"),
            Err(error) => {
                tracing::error!(%error, outcome = outcome.as_str(), "cannot journal the outcome of a bundle")
            }
        }
    }

    fn append(&mut self, entry: JournalEntry) -> Result<(), JournalError> {
        self.journal.append(&entry)
    }

    fn result_or(
        &self,
        hash: &BundleHash,
        bundle: &AcceptedBundle,
        outcome: BundleOutcome,
    ) -> RunResult {
        let mut result = self
            .journal
            .run(hash)
            .map(run_result)
            .unwrap_or_else(|| empty_result(bundle));
        result.outcome = outcome;
        result
    }

    /// Reverts an applied bundle from the journal, while its backups are kept.
    pub fn rollback(&mut self, hash: &BundleHash) -> Result<RunResult, ExecutorError> {
        let rejected = |reason: String| ExecutorError::RollbackRefused {
            bundle_hash: *hash,
            reason,
        };
        let Some(run) = self.journal.run(hash) else {
            return Err(rejected("the journal has no run of this bundle".into()));
        };
        if run.rollback_finished == Some(BundleOutcome::RolledBack) {
            return Ok(run_result(run));
        }
        if !run.rollback_begun && run.finished != Some(BundleOutcome::Applied) {
            return Err(rejected(format!(
                "it is not applied (its state is {})",
                run.current_outcome().as_str()
            )));
        }
        if let Some(state) = run.begun.iter().find(|state| {
            self.settings.driver.reversibility(&state.step) == Reversibility::Irreversible
        }) {
            return Err(rejected(format!(
                "step {} ({}) cannot be reverted; nothing was changed",
                state.index,
                state.step.kind()
            )));
        }
        let _span = tracing::info_span!("rollback", bundle.id = %run.bundle_id).entered();
        if !run.rollback_begun {
            self.append(JournalEntry::RollbackBegun {
                bundle_hash: *hash,
                at_unix_s: self.now(),
            })?;
        }
        Ok(self.continue_rollback(hash))
    }

    fn continue_rollback(&mut self, hash: &BundleHash) -> RunResult {
        let outcome = match self.revert_begun_steps(hash) {
            Ok(()) => BundleOutcome::RolledBack,
            Err((step, detail)) => BundleOutcome::RollbackFailed { step, detail },
        };
        self.finish(hash, outcome.clone(), true);
        let mut result = run_result(self.journal.run(hash).expect("the run was journaled"));
        result.outcome = outcome;
        result
    }

    /// Finishes what a crash interrupted: unfinished runs are completed (when every step still
    /// to do is resumable) or reverted, unfinished reverts and rollbacks continue. Returns the
    /// outcome of each bundle it touched, once.
    pub fn recover(&mut self) -> Vec<RunResult> {
        let pending: Vec<BundleRun> = self
            .journal
            .runs()
            .filter(|run| {
                run.finished.is_none() || (run.rollback_begun && run.rollback_finished.is_none())
            })
            .cloned()
            .collect();
        let mut results = Vec::new();
        for run in pending {
            let hash = run.bundle_hash;
            let _span = tracing::info_span!("recover", bundle.id = %run.bundle_id).entered();
            if run.finished.is_some() {
                tracing::warn!("continuing a rollback the agent stopped in");
                results.push(self.continue_rollback(&hash));
                continue;
            }
            let revert_started = run.begun.iter().any(|state| state.revert_begun);
            let failed_step = run.begun.iter().find(|state| state.failed.is_some());
            if revert_started || failed_step.is_some() {
                tracing::warn!("continuing a revert the agent stopped in");
                let failure = Failure {
                    step: failed_step.map(|state| state.index),
                    detail: failed_step
                        .and_then(|state| state.failed.clone())
                        .unwrap_or_else(|| "a health check failed".into()),
                };
                let outcome = self.revert_run(&hash, failure);
                self.finish(&hash, outcome.clone(), false);
                let mut result = run_result(self.journal.run(&hash).expect("journaled"));
                result.outcome = outcome;
                results.push(result);
                continue;
            }

            let first_undone = run
                .begun
                .iter()
                .find(|state| !state.verified)
                .map(|state| state.index)
                .unwrap_or(run.begun.len() as u32);
            let resumable = run.steps[first_undone as usize..]
                .iter()
                .all(|step| self.settings.driver.resumable(step));
            let bundle = self
                .journal
                .bundle_file(&hash)
                .ok()
                .and_then(|file| AcceptedBundle::from_verified_file(&file).ok());
            match bundle {
                Some(bundle) if resumable => {
                    tracing::warn!(
                        step = first_undone,
                        "finishing a bundle the agent stopped in"
                    );
                    results.push(self.continue_run(&bundle, first_undone));
                }
                _ => {
                    tracing::warn!(
                        step = first_undone,
                        "reverting a bundle the agent stopped in"
                    );
                    let failure = Failure {
                        step: Some(first_undone.min(run.steps.len().saturating_sub(1) as u32)),
                        detail: "the agent stopped while applying this bundle".into(),
                    };
                    let outcome = self.revert_run(&hash, failure);
                    self.finish(&hash, outcome.clone(), false);
                    let mut result = run_result(self.journal.run(&hash).expect("journaled"));
                    result.outcome = outcome;
                    results.push(result);
                }
            }
        }
        results
    }
}

fn empty_result(bundle: &AcceptedBundle) -> RunResult {
    RunResult {
        bundle_hash: bundle.bundle_hash,
        bundle_id: bundle.manifest.bundle_id.to_string(),
        outcome: BundleOutcome::Accepted,
        steps: Vec::new(),
    }
}

/// Builds the per-step records the server shows from a journal run.
pub fn run_result(run: &BundleRun) -> RunResult {
    let steps = run
        .begun
        .iter()
        .map(|state| {
            let (outcome, detail) = if let Some(detail) = &state.revert_failed {
                (StepOutcome::RevertFailed, detail.clone())
            } else if state.reverted {
                (
                    StepOutcome::Reverted,
                    state.failed.clone().unwrap_or_default(),
                )
            } else if let Some(detail) = &state.failed {
                (StepOutcome::Failed, detail.clone())
            } else if state.verified {
                (StepOutcome::Applied, String::new())
            } else {
                (StepOutcome::Running, String::new())
            };
            StepRecord {
                index: state.index,
                kind: state.step.kind().to_owned(),
                outcome,
                started_at_unix_s: state.begun_at_unix_s,
                finished_at_unix_s: (outcome != StepOutcome::Running)
                    .then_some(state.last_at_unix_s),
                detail,
            }
        })
        .collect();
    RunResult {
        bundle_hash: run.bundle_hash,
        bundle_id: run.bundle_id.clone(),
        outcome: run.current_outcome(),
        steps,
    }
}

/// Describes what each step of a bundle would change below `root`, changing nothing. Steps run
/// their probe and plan only, and the backup directory they are given is never created.
pub fn plan_bundle(
    bundle: &AcceptedBundle,
    root: &Path,
    runner: &dyn CommandRunner,
    driver: &dyn StepDriver,
) -> Vec<(u32, String, Result<PlannedChange, String>)> {
    let scratch = std::env::temp_dir().join(format!(
        "tidegate-plan-{}-{}",
        std::process::id(),
        bundle.bundle_hash
    ));
    let no_checkpoint = |_: &str| {};
    let cx = StepContext {
        root,
        live: root == Path::new("/"),
        runner,
        payloads: &bundle.payloads,
        backup_dir: &scratch,
        checkpoint: &no_checkpoint,
    };
    bundle
        .manifest
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let planned = driver
                .probe(step, &cx)
                .and_then(|prior| driver.plan(step, &cx, &prior))
                .map_err(|error| error.to_string());
            (index as u32, step.kind().to_owned(), planned)
        })
        .collect()
}

/// Runs programs with `std::process::Command`, without a shell.
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, argv: &[String]) -> std::io::Result<steps::CommandOutput> {
        let Some((program, args)) = argv.split_first() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty command",
            ));
        };
        let output = std::process::Command::new(program).args(args).output()?;
        Ok(steps::CommandOutput {
            status: output.status.code(),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
}

#[cfg(test)]
mod tests;
