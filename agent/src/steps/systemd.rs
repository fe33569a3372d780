//! The systemd unit step: enables, disables, masks or unmasks a unit with
//! `systemctl --root=ROOT`, which edits the unit links below the root without talking to a
//! running systemd, and starts, stops or restarts it through the runner on the live root only.
//!
//! The probe records `systemctl --root=ROOT is-enabled` (and `is-active` on the live root), and
//! revert runs what brings the unit back to that: `mask` or `unmask`, then `enable` or `disable`,
//! and `start` or `stop`. A restart has nothing to undo. Off the live root, start, stop and
//! restart change nothing and say so in the plan.

use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::{Step, UnitAction};

use super::{argv, PlannedChange, StepContext, StepError};

const KIND: &str = "systemd-unit";

/// A unit's state as the step found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemdPrior {
    /// The output of `systemctl is-enabled`: `enabled`, `disabled`, `masked`, `static`, ...
    pub enablement: String,
    /// The output of `systemctl is-active`, read only on the live root.
    pub activity: Option<String>,
}

fn fields(step: &Step) -> Result<(&str, UnitAction), StepError> {
    match step {
        Step::SystemdUnit { unit, action } => Ok((unit, *action)),
        _ => Err(super::wrong_step(KIND, step)),
    }
}

fn systemctl(cx: &StepContext<'_>, verb: &str, unit: &str) -> Vec<String> {
    argv([
        "systemctl".to_owned(),
        format!("--root={}", cx.root.display()),
        verb.to_owned(),
        "--".to_owned(),
        unit.to_owned(),
    ])
}

/// Runs a query verb such as `is-enabled`, whose exit status is not 0 for a negative result,
/// and returns its first line of output.
fn query(
    cx: &StepContext<'_>,
    verb: &str,
    unit: &str,
    live_query: bool,
) -> Result<String, StepError> {
    let command = if live_query {
        argv(["systemctl", verb, "--", unit])
    } else {
        systemctl(cx, verb, unit)
    };
    let output = super::run(KIND, cx, &command)?;
    let answer = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if answer.is_empty() {
        return Err(super::command_failed(KIND, &command, &output));
    }
    Ok(answer)
}

fn enablement(cx: &StepContext<'_>, unit: &str) -> Result<String, StepError> {
    query(cx, "is-enabled", unit, false)
}

fn activity(cx: &StepContext<'_>, unit: &str) -> Result<String, StepError> {
    query(cx, "is-active", unit, true)
}

fn run_live(cx: &StepContext<'_>, verb: &str, unit: &str) -> Result<(), StepError> {
    super::run_checked(KIND, cx, &argv(["systemctl", verb, "--", unit])).map(|_| ())
}

fn run_root(cx: &StepContext<'_>, verb: &str, unit: &str) -> Result<(), StepError> {
    super::run_checked(KIND, cx, &systemctl(cx, verb, unit)).map(|_| ())
}

pub(super) fn probe(step: &Step, cx: &StepContext<'_>) -> Result<SystemdPrior, StepError> {
    let (unit, _) = fields(step)?;
    let enablement = enablement(cx, unit)?;
    if enablement == "not-found" {
        return Err(StepError::NotFound {
            kind: KIND,
            what: "unit",
            name: unit.to_owned(),
            path: cx.root.join("etc/systemd/system"),
        });
    }
    Ok(SystemdPrior {
        enablement,
        activity: if cx.live {
            Some(activity(cx, unit)?)
        } else {
            None
        },
    })
}

/// Whether the unit already is in the state `action` requests, or `None` when that is unknown
/// because the root is not live.
fn satisfied(action: UnitAction, prior: &SystemdPrior) -> Option<bool> {
    let enablement = prior.enablement.as_str();
    let active = prior.activity.as_deref().map(|a| a == "active");
    match action {
        UnitAction::Enable => Some(enablement == "enabled"),
        UnitAction::Disable => Some(enablement != "enabled"),
        UnitAction::Mask => Some(enablement == "masked"),
        UnitAction::Unmask => Some(enablement != "masked"),
        UnitAction::Start => active,
        UnitAction::Stop => active.map(|a| !a),
        UnitAction::Restart => active.map(|_| false),
    }
}

fn verb(action: UnitAction) -> &'static str {
    match action {
        UnitAction::Enable => "enable",
        UnitAction::Disable => "disable",
        UnitAction::Mask => "mask",
        UnitAction::Unmask => "unmask",
        UnitAction::Start => "start",
        UnitAction::Stop => "stop",
        UnitAction::Restart => "restart",
    }
}

fn past_tense(action: UnitAction) -> &'static str {
    match action {
        UnitAction::Enable => "enabled",
        UnitAction::Disable => "disabled",
        UnitAction::Mask => "masked",
        UnitAction::Unmask => "unmasked",
        UnitAction::Start | UnitAction::Restart => "active",
        UnitAction::Stop => "inactive",
    }
}

pub(super) fn plan(
    step: &Step,
    cx: &StepContext<'_>,
    prior: &SystemdPrior,
) -> Result<PlannedChange, StepError> {
    let (unit, action) = fields(step)?;
    let _ = cx;
    let state = match &prior.activity {
        Some(activity) => format!("{}, {activity}", prior.enablement),
        None => prior.enablement.clone(),
    };
    let (summary, changes) = match satisfied(action, prior) {
        Some(done) => (format!("{} {unit} (now {state})", verb(action)), !done),
        None => (
            format!(
                "{} {unit}: skipped, the root is not the live system",
                verb(action)
            ),
            false,
        ),
    };
    Ok(PlannedChange {
        summary,
        detail: String::new(),
        changes,
    })
}

pub(super) fn apply(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let (unit, action) = fields(step)?;
    match action {
        UnitAction::Enable | UnitAction::Disable | UnitAction::Mask | UnitAction::Unmask => {
            run_root(cx, verb(action), unit)?;
        }
        UnitAction::Start | UnitAction::Stop | UnitAction::Restart => {
            if cx.live {
                run_live(cx, verb(action), unit)?;
            }
        }
    }
    (cx.checkpoint)("apply-mid");
    Ok(())
}

pub(super) fn verify(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let (unit, action) = fields(step)?;
    let current = SystemdPrior {
        enablement: enablement(cx, unit)?,
        activity: if cx.live {
            Some(activity(cx, unit)?)
        } else {
            None
        },
    };
    // A restarted unit has to be active afterwards; the other actions name their end state.
    let satisfied = match action {
        UnitAction::Restart => current.activity.as_deref().map(|a| a == "active"),
        _ => satisfied(action, &current),
    };
    if satisfied == Some(false) {
        return Err(StepError::Verify {
            kind: KIND,
            target: unit.to_owned(),
            expected: format!("the unit to be {}", past_tense(action)),
            actual: match &current.activity {
                Some(activity) => format!("{}, {activity}", current.enablement),
                None => current.enablement,
            },
        });
    }
    Ok(())
}

pub(super) fn revert(
    step: &Step,
    cx: &StepContext<'_>,
    prior: &SystemdPrior,
) -> Result<(), StepError> {
    let (unit, action) = fields(step)?;
    match action {
        UnitAction::Enable | UnitAction::Disable | UnitAction::Mask | UnitAction::Unmask => {
            let current = enablement(cx, unit)?;
            if current == prior.enablement {
                return Ok(());
            }
            if prior.enablement == "masked" {
                return run_root(cx, "mask", unit);
            }
            if current == "masked" {
                run_root(cx, "unmask", unit)?;
                (cx.checkpoint)("revert-mid");
            }
            match prior.enablement.as_str() {
                "enabled" => run_root(cx, "enable", unit)?,
                "disabled" => run_root(cx, "disable", unit)?,
                _ => {}
            }
            (cx.checkpoint)("revert-mid");
        }
        UnitAction::Start | UnitAction::Stop | UnitAction::Restart => {
            if let (true, Some(activity)) = (cx.live, &prior.activity) {
                let was_active = activity == "active";
                match action {
                    UnitAction::Start if !was_active => run_live(cx, "stop", unit)?,
                    UnitAction::Stop if was_active => run_live(cx, "start", unit)?,
                    _ => {}
                }
            }
            (cx.checkpoint)("revert-mid");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use super::super::testkit::{Harness, RecordingRunner};
    use super::super::{self as steps, StepError};
    use tidegate_protocol::trust::{Step, UnitAction};

    /// Builds a root with `demo.service`, wanted by `multi-user.target`, enabled when `enabled` is set.
    fn harness(enabled: bool) -> Harness {
        let mut harness = Harness::new();
        let units = harness.root().join("usr/lib/systemd/system");
        fs::create_dir_all(&units).unwrap();
        fs::create_dir_all(harness.root().join("etc/systemd/system")).unwrap();
        fs::write(
            units.join("demo.service"),
            "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        if enabled {
            let wants = harness
                .root()
                .join("etc/systemd/system/multi-user.target.wants");
            fs::create_dir_all(&wants).unwrap();
            std::os::unix::fs::symlink(
                "/usr/lib/systemd/system/demo.service",
                wants.join("demo.service"),
            )
            .unwrap();
        } else {
            // systemctl disable leaves an emptied .wants directory behind; see the module doc.
            harness.skip_in_comparison("etc/systemd/system/multi-user.target.wants");
        }
        harness
    }

    fn step(action: UnitAction) -> Step {
        Step::SystemdUnit {
            unit: "demo.service".into(),
            action,
        }
    }

    fn is_enabled(harness: &Harness) -> String {
        let cx = harness.cx();
        super::enablement(&cx, "demo.service").unwrap()
    }

    #[test]
    fn systemd_enable_round_trip() {
        let harness = harness(false);
        let prior = harness.probe_and_backup(&step(UnitAction::Enable));
        steps::apply(&step(UnitAction::Enable), &harness.cx(), &prior).unwrap();
        assert_eq!(is_enabled(&harness), "enabled");
        steps::revert(&step(UnitAction::Enable), &harness.cx(), &prior).unwrap();
        assert_eq!(is_enabled(&harness), "disabled");
        harness.round_trip(&step(UnitAction::Enable));
    }

    #[test]
    fn systemd_mask_round_trip_keeps_enablement() {
        let harness = harness(true);
        harness.round_trip(&step(UnitAction::Mask));
        assert_eq!(is_enabled(&harness), "enabled");
    }

    #[test]
    fn systemd_disable_round_trip() {
        let harness = harness(true);
        harness.round_trip(&step(UnitAction::Disable));
        assert_eq!(is_enabled(&harness), "enabled");
    }

    #[test]
    fn systemd_unknown_unit_is_error() {
        let harness = harness(false);
        let step = Step::SystemdUnit {
            unit: "absent.service".into(),
            action: UnitAction::Enable,
        };
        let error = steps::probe(&step, &harness.cx()).unwrap_err();
        assert!(!matches!(error, StepError::Verify { .. }), "{error}");
        assert!(error.to_string().contains("absent.service"), "{error}");
    }

    #[test]
    fn systemd_stop_live_runs_runner() {
        let runner = Arc::new(
            RecordingRunner::new()
                .answer(&["systemctl", "is-active"], 0, "active\n")
                .answer(&["systemctl"], 0, "enabled\n"),
        );
        let mut harness = Harness::new();
        harness.set_runner(Box::new(runner.clone()));
        harness.set_live(true);
        let step = step(UnitAction::Stop);

        let prior = harness.probe_and_backup(&step);
        steps::apply(&step, &harness.cx(), &prior).unwrap();
        steps::revert(&step, &harness.cx(), &prior).unwrap();

        let root = format!("--root={}", harness.root().display());
        assert_eq!(
            runner.commands(),
            vec![
                vec![
                    "systemctl",
                    root.as_str(),
                    "is-enabled",
                    "--",
                    "demo.service"
                ],
                vec!["systemctl", "is-active", "--", "demo.service"],
                vec!["systemctl", "stop", "--", "demo.service"],
                vec!["systemctl", "start", "--", "demo.service"],
            ]
        );
    }

    #[test]
    fn systemd_stop_offline_changes_nothing() {
        let runner = Arc::new(RecordingRunner::new().answer(&["systemctl"], 0, "enabled\n"));
        let mut harness = Harness::new();
        harness.set_runner(Box::new(runner.clone()));
        let step = step(UnitAction::Stop);

        let prior = harness.probe_and_backup(&step);
        let planned = steps::plan(&step, &harness.cx(), &prior).unwrap();
        steps::apply(&step, &harness.cx(), &prior).unwrap();

        assert_eq!(
            planned.summary,
            "stop demo.service: skipped, the root is not the live system"
        );
        assert!(!planned.changes);
        assert_eq!(runner.commands().len(), 1, "only the is-enabled probe runs");
    }
}
