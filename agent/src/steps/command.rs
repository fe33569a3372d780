//! The run-command step: runs the bundle's command through the runner, without a shell, and its
//! revert command on revert. Whether a command may run at all is the executor's decision (the
//! trust root's policy for the tier); this module only runs it.
//!
//! Nothing is probed, because a command's effect is unknown here. The checkpoint `apply-mid` is
//! called after the command returned and before its exit status is looked at, the last point
//! where a crash leaves the command run but its step not finished.

use tidegate_protocol::trust::Step;

use super::{PlannedChange, StepContext, StepError};

const KIND: &str = "run-command";

pub(super) fn plan(step: &Step) -> PlannedChange {
    let summary = match step {
        Step::RunCommand {
            argv,
            revert_argv: Some(revert),
        } => format!(
            "run `{}`, reverted by `{}`",
            argv.join(" "),
            revert.join(" ")
        ),
        Step::RunCommand { argv, .. } => format!("run `{}` (irreversible)", argv.join(" ")),
        _ => String::new(),
    };
    PlannedChange {
        summary,
        detail: String::new(),
        changes: true,
    }
}

fn run_step_command(
    cx: &StepContext<'_>,
    argv: &[String],
    checkpoint: &str,
) -> Result<(), StepError> {
    if argv.is_empty() {
        return Err(StepError::Invalid {
            kind: KIND,
            reason: "the command is empty".into(),
        });
    }
    let output = super::run(KIND, cx, argv)?;
    (cx.checkpoint)(checkpoint);
    if output.status != Some(0) {
        return Err(super::command_failed(KIND, argv, &output));
    }
    Ok(())
}

pub(super) fn apply(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    match step {
        Step::RunCommand { argv, .. } => run_step_command(cx, argv, "apply-mid"),
        _ => Err(super::wrong_step(KIND, step)),
    }
}

pub(super) fn revert(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    match step {
        Step::RunCommand {
            revert_argv: Some(revert),
            ..
        } => run_step_command(cx, revert, "revert-mid"),
        Step::RunCommand { .. } => Err(StepError::Irreversible { kind: KIND }),
        _ => Err(super::wrong_step(KIND, step)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testkit::{Harness, RecordingRunner};
    use super::super::{self as steps, Reversibility, StepError};
    use tidegate_protocol::trust::Step;

    fn step(revert: Option<&[&str]>) -> Step {
        Step::RunCommand {
            argv: vec!["/usr/sbin/update-ca-certificates".into(), "--fresh".into()],
            revert_argv: revert.map(|r| r.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn command_runs_argv_and_revert_argv() {
        let runner = Arc::new(RecordingRunner::new());
        let mut harness = Harness::new();
        harness.set_runner(Box::new(runner.clone()));
        let step = step(Some(&["/usr/local/bin/restore-ca", "--from", "backup"]));

        let prior = harness.probe_and_backup(&step);
        steps::apply(&step, &harness.cx(), &prior).unwrap();
        steps::revert(&step, &harness.cx(), &prior).unwrap();

        assert_eq!(
            runner.commands(),
            vec![
                vec!["/usr/sbin/update-ca-certificates", "--fresh"],
                vec!["/usr/local/bin/restore-ca", "--from", "backup"],
            ]
        );
        assert_eq!(steps::reversibility(&step), Reversibility::Reversible);
    }

    #[test]
    fn command_without_revert_is_irreversible() {
        let harness = Harness::new();
        let step = step(None);
        assert_eq!(steps::reversibility(&step), Reversibility::Irreversible);
        assert!(!steps::resumable(&step));
        let error = steps::revert(&step, &harness.cx(), &steps::PriorState::Command).unwrap_err();
        assert!(matches!(error, StepError::Irreversible { .. }), "{error}");
    }

    #[test]
    fn command_failure_names_command() {
        let runner = RecordingRunner::new().answer(&["/usr/sbin/update-ca-certificates"], 3, "");
        let mut harness = Harness::new();
        harness.set_runner(Box::new(runner));
        let step = step(Some(&["true"]));
        let error = steps::apply(&step, &harness.cx(), &steps::PriorState::Command).unwrap_err();
        assert_eq!(
            error.to_string(),
            "run-command step: `/usr/sbin/update-ca-certificates --fresh` failed with exit status 3"
        );
    }
}
