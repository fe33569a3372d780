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
//! Paths that leave the root through `..` or through a symbolic link that points outside it are
//! rejected with [`StepError::OutsideRoot`].
//!
//! Limits, in plain words:
//! - a symbolic link inside the root that is absolute (such as `etc/ssh -> /srv/ssh`) is read as
//!   the running system reads it, so on a root other than `/` it points outside and is rejected;
//! - `systemctl disable` leaves the emptied `*.wants` directory behind, so a reverted enablement
//!   is exact in the unit's links and state, not in empty directories;
//! - a package revert that rebuilds the old package from the installed files (when the old
//!   package file is not in `var/cache/apt/archives`) carries the files as they are on disk,
//!   changed configuration files included, as `dpkg-repack` does.

mod account;
mod command;
mod config_line;
mod deb;
mod file;
mod rootfs;
mod sysctl;
mod systemd;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::Step;

pub use account::{AccountPrior, AccountRemovalPrior};
pub use deb::{DebPrior, InstalledPackage};
pub use rootfs::{FilePrior, FileSnapshot};
pub use sysctl::SysctlPrior;
pub use systemd::SystemdPrior;

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

/// Runs programs with [`std::process::Command`]: `argv[0]` is looked up in `PATH`, no shell is
/// involved, and the output is collected in memory.
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, argv: &[String]) -> io::Result<CommandOutput> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let output = Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()?;
        Ok(CommandOutput {
            status: output.status.code(),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
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
/// Each step type owns one variant. File contents are not in it: [`backup`] keeps them in the
/// backup directory and the state records their SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PriorState {
    /// [`Step::WriteFile`]: the file before it was written.
    WriteFile(FilePrior),
    /// [`Step::EnsureConfigLine`]: the configuration file before the edit.
    ConfigLine(FilePrior),
    /// [`Step::InstallDeb`], [`Step::UpgradeDeb`] and [`Step::RemoveDeb`].
    Deb(DebPrior),
    Sysctl(SysctlPrior),
    Systemd(SystemdPrior),
    /// [`Step::LockAccount`], [`Step::UnlockAccount`] and [`Step::ExpireAccount`].
    Account(AccountPrior),
    /// [`Step::RemoveAuthorizedKey`]: the user's `authorized_keys` file before the edit.
    AuthorizedKeys(FilePrior),
    /// [`Step::RemoveAccount`]: the account's lines, kept for a person since nothing reverts it.
    AccountRemoval(AccountRemovalPrior),
    /// [`Step::RunCommand`]: nothing is read; the revert command carries the undoing.
    Command,
}

/// What a step would change, for `plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChange {
    /// One line, such as `upgrade hello 1.0-1 -> 1.0-2` or `write etc/motd (0644 root:root)`.
    pub summary: String,
    /// A unified diff for files, empty when there is nothing more to show.
    pub detail: String,
    /// False when the host already is in the state the step requests.
    pub changes: bool,
}

/// A step that could not probe, back up, apply, verify or revert. Each variant names the step
/// type (its [`Step::kind`]) and what it was working on.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{kind} step: failed to {operation} {path}: {source}")]
    Io {
        kind: &'static str,
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{kind} step: path {path:?} is outside the root {root}: {reason}")]
    OutsideRoot {
        kind: &'static str,
        path: String,
        root: PathBuf,
        reason: String,
    },
    #[error("{kind} step: payload {name:?} is missing from the bundle")]
    MissingPayload { kind: &'static str, name: String },
    #[error("{kind} step: {what} {name:?} is not in {path}")]
    NotFound {
        kind: &'static str,
        what: &'static str,
        name: String,
        path: PathBuf,
    },
    #[error("{kind} step: {path} is malformed: {reason}")]
    Malformed {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{kind} step: invalid step: {reason}")]
    Invalid { kind: &'static str, reason: String },
    #[error("{kind} step: failed to run {program}: {source}")]
    Spawn {
        kind: &'static str,
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{kind} step: `{command}` failed with {status}{}", output_suffix(.stderr))]
    CommandFailed {
        kind: &'static str,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{kind} step: verify failed for {target}: expected {expected}, found {actual}")]
    Verify {
        kind: &'static str,
        target: String,
        expected: String,
        actual: String,
    },
    #[error("{kind} step: the backup {path} is unusable: {reason}")]
    Backup {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{kind} step: the journaled prior state is a {found} state, which this step does not use"
    )]
    PriorMismatch {
        kind: &'static str,
        found: &'static str,
    },
    #[error("{kind} step cannot be reverted")]
    Irreversible { kind: &'static str },
}

/// Formats a program's standard error for the end of a message: empty, or `: ` and the text.
fn output_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl PriorState {
    fn name(&self) -> &'static str {
        match self {
            Self::WriteFile(_) => "write-file",
            Self::ConfigLine(_) => "config-line",
            Self::Deb(_) => "deb",
            Self::Sysctl(_) => "sysctl",
            Self::Systemd(_) => "systemd",
            Self::Account(_) => "account",
            Self::AuthorizedKeys(_) => "authorized-keys",
            Self::AccountRemoval(_) => "account-removal",
            Self::Command => "command",
        }
    }
}

fn mismatch(step: &Step, prior: &PriorState) -> StepError {
    StepError::PriorMismatch {
        kind: step.kind(),
        found: prior.name(),
    }
}

pub fn reversibility(step: &Step) -> Reversibility {
    match step {
        Step::RunCommand {
            revert_argv: None, ..
        }
        | Step::RemoveAccount { .. } => Reversibility::Irreversible,
        _ => Reversibility::Reversible,
    }
}

/// Whether a step interrupted during `apply` may be completed by running `apply` again, instead
/// of reverting the bundle.
///
/// Every step type whose apply reads the host afresh and ends in the same state however often it
/// runs is resumable. A command is not, because the effect of running it twice is unknown.
pub fn resumable(step: &Step) -> bool {
    !matches!(step, Step::RunCommand { .. })
}

pub fn probe(step: &Step, cx: &StepContext<'_>) -> Result<PriorState, StepError> {
    match step {
        Step::WriteFile { .. } => file::probe(step, cx).map(PriorState::WriteFile),
        Step::EnsureConfigLine { .. } => config_line::probe(step, cx).map(PriorState::ConfigLine),
        Step::InstallDeb { .. } | Step::UpgradeDeb { .. } | Step::RemoveDeb { .. } => {
            deb::probe(step, cx).map(PriorState::Deb)
        }
        Step::Sysctl { .. } => sysctl::probe(step, cx).map(PriorState::Sysctl),
        Step::SystemdUnit { .. } => systemd::probe(step, cx).map(PriorState::Systemd),
        Step::LockAccount { .. } | Step::UnlockAccount { .. } | Step::ExpireAccount { .. } => {
            account::probe(step, cx).map(PriorState::Account)
        }
        Step::RemoveAuthorizedKey { .. } => {
            account::probe_keys(step, cx).map(PriorState::AuthorizedKeys)
        }
        Step::RemoveAccount { .. } => {
            account::probe_removal(step, cx).map(PriorState::AccountRemoval)
        }
        Step::RunCommand { .. } => Ok(PriorState::Command),
    }
}

pub fn plan(
    step: &Step,
    cx: &StepContext<'_>,
    prior: &PriorState,
) -> Result<PlannedChange, StepError> {
    match (step, prior) {
        (Step::WriteFile { .. }, PriorState::WriteFile(p)) => file::plan(step, cx, p),
        (Step::EnsureConfigLine { .. }, PriorState::ConfigLine(p)) => {
            config_line::plan(step, cx, p)
        }
        (_, PriorState::Deb(p)) => deb::plan(step, p),
        (Step::Sysctl { .. }, PriorState::Sysctl(p)) => sysctl::plan(step, cx, p),
        (Step::SystemdUnit { .. }, PriorState::Systemd(p)) => systemd::plan(step, cx, p),
        (_, PriorState::Account(p)) => account::plan(step, p),
        (Step::RemoveAuthorizedKey { .. }, PriorState::AuthorizedKeys(p)) => {
            account::plan_keys(step, cx, p)
        }
        (Step::RemoveAccount { .. }, PriorState::AccountRemoval(p)) => {
            Ok(account::plan_removal(step, p))
        }
        (Step::RunCommand { .. }, PriorState::Command) => Ok(command::plan(step)),
        _ => Err(mismatch(step, prior)),
    }
}

pub fn backup(step: &Step, cx: &StepContext<'_>, prior: &PriorState) -> Result<(), StepError> {
    rootfs::create_backup_dir(step.kind(), cx.backup_dir)?;
    match (step, prior) {
        (Step::WriteFile { .. }, PriorState::WriteFile(p))
        | (Step::EnsureConfigLine { .. }, PriorState::ConfigLine(p))
        | (Step::RemoveAuthorizedKey { .. }, PriorState::AuthorizedKeys(p)) => {
            rootfs::backup_file(step.kind(), cx, p)
        }
        (Step::Sysctl { .. }, PriorState::Sysctl(p)) => {
            rootfs::backup_file(step.kind(), cx, &p.file)
        }
        (_, PriorState::Deb(p)) => deb::backup(step, cx, p),
        (Step::RemoveAccount { .. }, PriorState::AccountRemoval(p)) => {
            account::backup_removal(step, cx, p)
        }
        (Step::SystemdUnit { .. }, PriorState::Systemd(_))
        | (_, PriorState::Account(_))
        | (Step::RunCommand { .. }, PriorState::Command) => Ok(()),
        _ => Err(mismatch(step, prior)),
    }
}

pub fn apply(step: &Step, cx: &StepContext<'_>, prior: &PriorState) -> Result<(), StepError> {
    match (step, prior) {
        (Step::WriteFile { .. }, PriorState::WriteFile(_)) => file::apply(step, cx),
        (Step::EnsureConfigLine { .. }, PriorState::ConfigLine(_)) => config_line::apply(step, cx),
        (_, PriorState::Deb(_)) => deb::apply(step, cx),
        (Step::Sysctl { .. }, PriorState::Sysctl(_)) => sysctl::apply(step, cx),
        (Step::SystemdUnit { .. }, PriorState::Systemd(_)) => systemd::apply(step, cx),
        (_, PriorState::Account(_)) => account::apply(step, cx),
        (Step::RemoveAuthorizedKey { .. }, PriorState::AuthorizedKeys(_)) => {
            account::apply_keys(step, cx)
        }
        (Step::RemoveAccount { .. }, PriorState::AccountRemoval(_)) => {
            account::apply_removal(step, cx)
        }
        (Step::RunCommand { .. }, PriorState::Command) => command::apply(step, cx),
        _ => Err(mismatch(step, prior)),
    }
}

pub fn verify(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    match step {
        Step::WriteFile { .. } => file::verify(step, cx),
        Step::EnsureConfigLine { .. } => config_line::verify(step, cx),
        Step::InstallDeb { .. } | Step::UpgradeDeb { .. } | Step::RemoveDeb { .. } => {
            deb::verify(step, cx)
        }
        Step::Sysctl { .. } => sysctl::verify(step, cx),
        Step::SystemdUnit { .. } => systemd::verify(step, cx),
        Step::LockAccount { .. } | Step::UnlockAccount { .. } | Step::ExpireAccount { .. } => {
            account::verify(step, cx)
        }
        Step::RemoveAuthorizedKey { .. } => account::verify_keys(step, cx),
        Step::RemoveAccount { .. } => account::verify_removal(step, cx),
        // A command's exit status is its only check, and apply has already looked at it.
        Step::RunCommand { .. } => Ok(()),
    }
}

pub fn revert(step: &Step, cx: &StepContext<'_>, prior: &PriorState) -> Result<(), StepError> {
    if reversibility(step) == Reversibility::Irreversible {
        return Err(StepError::Irreversible { kind: step.kind() });
    }
    match (step, prior) {
        (Step::WriteFile { path, .. }, PriorState::WriteFile(p))
        | (Step::EnsureConfigLine { path, .. }, PriorState::ConfigLine(p)) => {
            let target = rootfs::resolve(step.kind(), cx.root, path)?;
            rootfs::restore_file(step.kind(), cx, &target, p)
        }
        (Step::RemoveAuthorizedKey { .. }, PriorState::AuthorizedKeys(p)) => {
            account::revert_keys(step, cx, p)
        }
        (_, PriorState::Deb(p)) => deb::revert(step, cx, p),
        (Step::Sysctl { .. }, PriorState::Sysctl(p)) => sysctl::revert(step, cx, p),
        (Step::SystemdUnit { .. }, PriorState::Systemd(p)) => systemd::revert(step, cx, p),
        (_, PriorState::Account(p)) => account::revert(step, cx, p),
        (Step::RunCommand { .. }, PriorState::Command) => command::revert(step, cx),
        _ => Err(mismatch(step, prior)),
    }
}

/// Runs `argv` through the context's runner and returns its standard output, or an error naming
/// the command and its standard error when it does not exit with 0.
pub(crate) fn run_checked(
    kind: &'static str,
    cx: &StepContext<'_>,
    argv: &[String],
) -> Result<Vec<u8>, StepError> {
    let output = run(kind, cx, argv)?;
    if output.status != Some(0) {
        return Err(command_failed(kind, argv, &output));
    }
    Ok(output.stdout)
}

pub(crate) fn run(
    kind: &'static str,
    cx: &StepContext<'_>,
    argv: &[String],
) -> Result<CommandOutput, StepError> {
    cx.runner.run(argv).map_err(|source| StepError::Spawn {
        kind,
        program: argv.first().cloned().unwrap_or_default(),
        source,
    })
}

pub(crate) fn command_failed(
    kind: &'static str,
    argv: &[String],
    output: &CommandOutput,
) -> StepError {
    StepError::CommandFailed {
        kind,
        command: argv.join(" "),
        status: match output.status {
            Some(code) => format!("exit status {code}"),
            None => "a signal".to_owned(),
        },
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
}

/// Builds the error of a step module called with a step of another type, which the dispatch in
/// this module never does.
pub(crate) fn wrong_step(kind: &'static str, step: &Step) -> StepError {
    StepError::Invalid {
        kind,
        reason: format!("called with a {} step", step.kind()),
    }
}

/// Builds an argument vector from string slices.
pub(crate) fn argv<I, S>(parts: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    parts.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use tidegate_protocol::trust::{Step, UnitAction};

    use super::testkit::{self, DebFile, Harness};

    #[test]
    fn probe_and_plan_change_nothing() {
        let mut harness = Harness::new();
        testkit::write_accounts(harness.root());
        testkit::init_dpkg_root(harness.root());
        let scratch = harness.scratch();
        let file = |content: &'static [u8]| DebFile {
            path: "/usr/share/tool/data",
            content,
            mode: 0o644,
            conffile: false,
        };
        let old = testkit::build_deb(&scratch, "tool", "1.0-1", &[file(b"one\n")]);
        let new = testkit::build_deb(&scratch, "tool", "1.0-2", &[file(b"two\n")]);
        testkit::dpkg_install(harness.root(), &old);
        harness.add_payload("tool.deb", &fs::read(new).unwrap());
        harness.add_payload("motd", b"hello\n");
        fs::create_dir_all(harness.root().join("etc/ssh")).unwrap();
        fs::write(
            harness.root().join("etc/ssh/sshd_config"),
            "PermitRootLogin yes\n",
        )
        .unwrap();
        fs::create_dir_all(harness.root().join("usr/lib/systemd/system")).unwrap();
        fs::write(
            harness.root().join("usr/lib/systemd/system/demo.service"),
            "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        let steps = [
            Step::WriteFile {
                path: "etc/motd".into(),
                payload: "motd".into(),
                mode: 0o644,
                owner: "root".into(),
                group: "root".into(),
            },
            Step::EnsureConfigLine {
                path: "etc/ssh/sshd_config".into(),
                match_prefix: "PermitRootLogin".into(),
                line: "PermitRootLogin no".into(),
            },
            Step::UpgradeDeb {
                package: "tool".into(),
                version: "1.0-2".into(),
                payload: "tool.deb".into(),
            },
            Step::Sysctl {
                key: "kernel.kptr_restrict".into(),
                value: "2".into(),
            },
            Step::SystemdUnit {
                unit: "demo.service".into(),
                action: UnitAction::Enable,
            },
            Step::LockAccount {
                user: "alice".into(),
            },
            Step::RemoveAccount { user: "bob".into() },
        ];
        fs::create_dir_all(harness.root().join("etc/sysctl.d")).unwrap();
        let before = testkit::tree_snapshot(harness.root());

        let mut summaries = Vec::new();
        for step in &steps {
            let prior = super::probe(step, &harness.cx()).unwrap();
            let planned = super::plan(step, &harness.cx(), &prior).unwrap();
            assert!(planned.changes, "{}", planned.summary);
            summaries.push(planned.summary);
        }

        assert_eq!(testkit::tree_snapshot(harness.root()), before);
        assert_eq!(
            summaries,
            [
                "write etc/motd (0644 root:root)",
                "set etc/ssh/sshd_config: PermitRootLogin no",
                "upgrade tool 1.0-1 -> 1.0-2",
                "set kernel.kptr_restrict = 2 in etc/sysctl.d/99-tidegate-kernel.kptr_restrict.conf",
                "enable demo.service (now disabled)",
                "lock account alice",
                "remove account bob (irreversible)",
            ]
        );
    }
}
