//! The sysctl step: sets a kernel parameter persistently in its own file
//! `etc/sysctl.d/99-tidegate-KEY.conf` below the root, and at run time with `sysctl -w` through
//! the runner when the root is the live system.
//!
//! One file per key keeps revert exact: it restores or removes that file and nothing else. The
//! `99-` prefix sorts it after the distribution's files, so it wins over them at boot. A file
//! read after it, such as `/etc/sysctl.conf` with procps' `sysctl --system`, can still override
//! it.

use tidegate_protocol::trust::Step;

use super::rootfs::{self, FilePrior};
use super::{argv, PlannedChange, StepContext, StepError};

const KIND: &str = "sysctl";

/// A kernel parameter as the step found it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SysctlPrior {
    /// The step's own persistent file; its content is kept in the backup directory.
    pub file: FilePrior,
    /// The run-time value `sysctl -n` printed, read only on the live root.
    pub runtime: Option<String>,
}

fn fields(step: &Step) -> Result<(&str, &str), StepError> {
    match step {
        Step::Sysctl { key, value } => Ok((key, value)),
        _ => Err(super::wrong_step(KIND, step)),
    }
}

/// Returns the persistent file of `key` below the root. Slashes in a key (`net/ipv4/ip_forward`, which
/// `sysctl` also accepts) become dots, so the file name is one component.
pub(crate) fn conf_path(key: &str) -> String {
    format!("etc/sysctl.d/99-tidegate-{}.conf", key.replace('/', "."))
}

fn conf_content(key: &str, value: &str) -> String {
    format!("# Set by tidegate.\n{key} = {value}\n")
}

fn read_runtime(cx: &StepContext<'_>, key: &str) -> Result<String, StepError> {
    let stdout = super::run_checked(KIND, cx, &argv(["sysctl", "-n", key]))?;
    Ok(String::from_utf8_lossy(&stdout).trim().to_owned())
}

fn write_runtime(cx: &StepContext<'_>, key: &str, value: &str) -> Result<(), StepError> {
    super::run_checked(
        KIND,
        cx,
        &argv([
            "sysctl".to_owned(),
            "-w".to_owned(),
            format!("{key}={value}"),
        ]),
    )
    .map(|_| ())
}

pub(super) fn probe(step: &Step, cx: &StepContext<'_>) -> Result<SysctlPrior, StepError> {
    let (key, _) = fields(step)?;
    Ok(SysctlPrior {
        file: rootfs::probe_file(KIND, cx, &conf_path(key))?,
        runtime: if cx.live {
            Some(read_runtime(cx, key)?)
        } else {
            None
        },
    })
}

pub(super) fn plan(
    step: &Step,
    cx: &StepContext<'_>,
    prior: &SysctlPrior,
) -> Result<PlannedChange, StepError> {
    let (key, value) = fields(step)?;
    let path = conf_path(key);
    let target = rootfs::resolve(KIND, cx.root, &path)?;
    let old = rootfs::read_file(KIND, &target)?
        .map(|(_, content)| String::from_utf8_lossy(&content).into_owned())
        .unwrap_or_default();
    let new = conf_content(key, value);
    let old_name = match prior.file.previous {
        Some(_) => format!("a/{path}"),
        None => "/dev/null".to_owned(),
    };
    let runtime_changes = prior
        .runtime
        .as_ref()
        .is_some_and(|current| current != value);
    let mut summary = format!("set {key} = {value} in {path}");
    if let Some(current) = &prior.runtime {
        summary.push_str(&format!(" and at run time (now {current})"));
    }
    Ok(PlannedChange {
        summary,
        detail: rootfs::unified_diff(&old_name, &format!("b/{path}"), &old, &new),
        changes: old != new || prior.file.previous.is_none() || runtime_changes,
    })
}

pub(super) fn apply(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let (key, value) = fields(step)?;
    let target = rootfs::resolve(KIND, cx.root, &conf_path(key))?;
    let content = conf_content(key, value);
    let current = rootfs::read_file(KIND, &target)?;
    if current.as_ref().map(|(_, c)| c.as_slice()) != Some(content.as_bytes()) {
        rootfs::replace_file(KIND, &target, content.as_bytes(), 0o644, 0, 0, &|| {})?;
    } else {
        rootfs::remove_stale_temp(KIND, &target)?;
    }
    (cx.checkpoint)("apply-mid");
    if cx.live {
        write_runtime(cx, key, value)?;
    }
    Ok(())
}

pub(super) fn verify(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let (key, value) = fields(step)?;
    let path = conf_path(key);
    let target = rootfs::resolve(KIND, cx.root, &path)?;
    let content = rootfs::read_file(KIND, &target)?.map(|(_, c)| c);
    let expected = conf_content(key, value);
    if content.as_deref() != Some(expected.as_bytes()) {
        return Err(StepError::Verify {
            kind: KIND,
            target: path,
            expected: format!("{key} = {value}"),
            actual: match content {
                Some(c) => format!("{:?}", String::from_utf8_lossy(&c)),
                None => "no file".into(),
            },
        });
    }
    if cx.live {
        let runtime = read_runtime(cx, key)?;
        // The kernel prints vectors with tabs where the request may have had spaces.
        let normalise = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        if normalise(&runtime) != normalise(value) {
            return Err(StepError::Verify {
                kind: KIND,
                target: format!("run-time {key}"),
                expected: value.to_owned(),
                actual: runtime,
            });
        }
    }
    Ok(())
}

pub(super) fn revert(
    step: &Step,
    cx: &StepContext<'_>,
    prior: &SysctlPrior,
) -> Result<(), StepError> {
    let (key, _) = fields(step)?;
    let target = rootfs::resolve(KIND, cx.root, &conf_path(key))?;
    rootfs::restore_file(KIND, cx, &target, &prior.file)?;
    if cx.live {
        if let Some(runtime) = &prior.runtime {
            write_runtime(cx, key, runtime)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use super::super::testkit::{Harness, RecordingRunner};
    use super::super::{self as steps};
    use tidegate_protocol::trust::Step;

    fn step() -> Step {
        Step::Sysctl {
            key: "net.ipv4.ip_forward".into(),
            value: "0".into(),
        }
    }

    #[test]
    fn sysctl_round_trip_without_previous_file() {
        let harness = Harness::new();
        fs::create_dir_all(harness.root().join("etc/sysctl.d")).unwrap();
        harness.round_trip(&step());
    }

    #[test]
    fn sysctl_round_trip_over_previous_file() {
        let harness = Harness::new();
        let dir = harness.root().join("etc/sysctl.d");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("99-tidegate-net.ipv4.ip_forward.conf"),
            "net.ipv4.ip_forward=1\n",
        )
        .unwrap();
        harness.round_trip(&step());
    }

    #[test]
    fn sysctl_writes_file_and_not_runtime_offline() {
        let runner = Arc::new(RecordingRunner::new());
        let mut harness = Harness::new();
        harness.set_runner(Box::new(runner.clone()));
        fs::create_dir_all(harness.root().join("etc/sysctl.d")).unwrap();

        let prior = harness.probe_and_backup(&step());
        steps::apply(&step(), &harness.cx(), &prior).unwrap();

        assert_eq!(
            fs::read_to_string(
                harness
                    .root()
                    .join("etc/sysctl.d/99-tidegate-net.ipv4.ip_forward.conf")
            )
            .unwrap(),
            "# Set by tidegate.\nnet.ipv4.ip_forward = 0\n"
        );
        assert!(runner.commands().is_empty());
    }

    #[test]
    fn sysctl_live_sets_and_restores_runtime() {
        let runner = Arc::new(RecordingRunner::new().answer(&["sysctl", "-n"], 0, "1\n"));
        let mut harness = Harness::new();
        harness.set_runner(Box::new(runner.clone()));
        harness.set_live(true);
        fs::create_dir_all(harness.root().join("etc/sysctl.d")).unwrap();

        let prior = harness.probe_and_backup(&step());
        steps::apply(&step(), &harness.cx(), &prior).unwrap();
        steps::revert(&step(), &harness.cx(), &prior).unwrap();

        assert_eq!(
            runner.commands(),
            vec![
                vec!["sysctl", "-n", "net.ipv4.ip_forward"],
                vec!["sysctl", "-w", "net.ipv4.ip_forward=0"],
                vec!["sysctl", "-w", "net.ipv4.ip_forward=1"],
            ]
        );
    }
}
