//! The step types of a bundle: for each [`Step`] of the manifest, its `probe`, `backup`, `apply`,
//! `verify` and `revert`, all working below a root directory.
//!
//! This module owns what one step does to the host. It does not own ordering, the journal or
//! recovery: the executor calls these functions in this order for each step,
//!
//! 1. [`probe`] reads the current state and changes nothing (also used by `plan`);
//! 2. [`backup`] writes into the step's backup directory everything [`revert`] needs (the old
//!    file, the old package file), flushed to stable storage; nothing below the root changes;
//! 3. the executor journals the step, the [`PriorState`] and the backup's location, and flushes;
//! 4. [`apply`] makes the change; 5. [`verify`] checks it.
//!
//! [`revert`] brings the host back to the [`PriorState`] from the backup. It must be idempotent:
//! a revert interrupted by a crash is run again from the start and must still end in the prior
//! state, whether the step's apply had finished, had half-finished or had not started.
//!
//! Every path is resolved below [`StepContext::root`]; a step never touches anything outside it,
//! and runs external programs only through [`StepContext::runner`], so tests control both.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::Step;

/// Runs an external program without a shell. Tests replace it to record or refuse commands.
pub trait CommandRunner: Send + Sync {
    fn run(&self, argv: &[String]) -> io::Result<CommandOutput>;
}

/// What a finished program left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code, or `None` when a signal ended the program.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Everything a step may use.
pub struct StepContext<'a> {
    /// Every path a step names is below this directory.
    pub root: &'a Path,
    /// Whether `root` is the running system's `/`: only then do steps change run-time state
    /// (`sysctl -w`, starting and stopping units).
    pub live: bool,
    pub runner: &'a dyn CommandRunner,
    /// The bundle's payload files by name, already checked against the manifest's hashes.
    pub payloads: &'a BTreeMap<String, Vec<u8>>,
    /// A directory of this step's own, outside the root, for the files `revert` needs.
    pub backup_dir: &'a Path,
    /// Called with a name such as `apply-mid` at points inside a step where a crash leaves the
    /// change half made, so tests can kill the process exactly there. Does nothing in production.
    pub checkpoint: &'a dyn Fn(&str),
}

/// Whether a step can be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reversibility {
    Reversible,
    /// The step cannot be undone; it runs only when the bundle accepts that explicitly.
    Irreversible,
}

/// The state a step's probe read before the change, as the journal keeps it.
///
/// Each step type owns one variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PriorState {
    Placeholder,
}

/// What a step would change, for `plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChange {
    /// One line, such as `upgrade hello 1.0-1 -> 1.0-2` or `write etc/motd (0644 root:root)`.
    pub summary: String,
    /// A unified diff for files, empty when there is nothing more to show.
    pub detail: String,
    /// False when the host already is in the state the step asks for.
    pub changes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("placeholder")]
    Placeholder,
}

pub fn reversibility(step: &Step) -> Reversibility {
    let _ = step;
    Reversibility::Reversible
}

/// Whether a step interrupted during `apply` may be completed by running `apply` again, instead
/// of reverting the bundle.
pub fn resumable(step: &Step) -> bool {
    let _ = step;
    false
}

pub fn probe(step: &Step, cx: &StepContext<'_>) -> Result<PriorState, StepError> {
    let _ = (step, cx);
    Err(StepError::Placeholder)
}

pub fn plan(
    step: &Step,
    cx: &StepContext<'_>,
    prior: &PriorState,
) -> Result<PlannedChange, StepError> {
    let _ = (step, cx, prior);
    Err(StepError::Placeholder)
}

pub fn backup(step: &Step, cx: &StepContext<'_>, prior: &PriorState) -> Result<(), StepError> {
    let _ = (step, cx, prior);
    Err(StepError::Placeholder)
}

pub fn apply(step: &Step, cx: &StepContext<'_>, prior: &PriorState) -> Result<(), StepError> {
    let _ = (step, cx, prior);
    Err(StepError::Placeholder)
}

pub fn verify(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let _ = (step, cx);
    Err(StepError::Placeholder)
}

pub fn revert(step: &Step, cx: &StepContext<'_>, prior: &PriorState) -> Result<(), StepError> {
    let _ = (step, cx, prior);
    Err(StepError::Placeholder)
}
