//! The ensure-config-line step: makes a configuration file such as `etc/ssh/sshd_config` contain
//! a line, replacing the first line that starts with the step's prefix, or appending the line
//! when none does. The file keeps its mode and owner; revert restores it byte for byte.
//!
//! The file must exist. The line is appended at the end of the file. In an `sshd_config` that
//! ends in a `Match` block, an appended line would belong to that block, so such a file should
//! already contain the setting for the step to replace it in place.

use tidegate_protocol::trust::Step;

use super::rootfs::{self, FilePrior};
use super::{PlannedChange, StepContext, StepError};

const KIND: &str = "ensure-config-line";

fn fields(step: &Step) -> Result<(&str, &str, &str), StepError> {
    match step {
        Step::EnsureConfigLine {
            path,
            match_prefix,
            line,
        } => Ok((path, match_prefix, line)),
        _ => Err(super::wrong_step(KIND, step)),
    }
}

/// Returns `content` with the first line starting with `prefix` replaced by `line`, or with
/// `line` appended when no line starts with `prefix`.
pub(crate) fn edited(content: &str, prefix: &str, line: &str) -> String {
    let mut out = String::with_capacity(content.len() + line.len() + 1);
    let mut replaced = false;
    for existing in content.split_inclusive('\n') {
        if !replaced && existing.starts_with(prefix) {
            out.push_str(line);
            out.push('\n');
            replaced = true;
        } else {
            out.push_str(existing);
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Reads the file as text, or fails when it is missing or not UTF-8.
fn read_text(
    cx: &StepContext<'_>,
    path: &str,
) -> Result<(std::path::PathBuf, rootfs::FileSnapshot, String), StepError> {
    let target = rootfs::resolve(KIND, cx.root, path)?;
    let Some((snapshot, content)) = rootfs::read_file(KIND, &target)? else {
        return Err(StepError::Io {
            kind: KIND,
            operation: "read",
            path: target,
            source: std::io::ErrorKind::NotFound.into(),
        });
    };
    let text = String::from_utf8(content).map_err(|_| StepError::Malformed {
        kind: KIND,
        path: target.clone(),
        reason: "it is not UTF-8 text".into(),
    })?;
    Ok((target, snapshot, text))
}

pub(super) fn probe(step: &Step, cx: &StepContext<'_>) -> Result<FilePrior, StepError> {
    let (path, _, _) = fields(step)?;
    read_text(cx, path)?;
    rootfs::probe_file(KIND, cx, path)
}

pub(super) fn plan(
    step: &Step,
    cx: &StepContext<'_>,
    _prior: &FilePrior,
) -> Result<PlannedChange, StepError> {
    let (path, prefix, line) = fields(step)?;
    let (_, _, text) = read_text(cx, path)?;
    let new = edited(&text, prefix, line);
    Ok(PlannedChange {
        summary: format!("set {path}: {line}"),
        detail: rootfs::unified_diff(&format!("a/{path}"), &format!("b/{path}"), &text, &new),
        changes: new != text,
    })
}

pub(super) fn apply(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let (path, prefix, line) = fields(step)?;
    let (target, snapshot, text) = read_text(cx, path)?;
    let new = edited(&text, prefix, line);
    if new == text {
        return rootfs::remove_stale_temp(KIND, &target);
    }
    rootfs::replace_file(
        KIND,
        &target,
        new.as_bytes(),
        snapshot.mode,
        snapshot.uid,
        snapshot.gid,
        &|| (cx.checkpoint)("apply-mid"),
    )
}

pub(super) fn verify(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let (path, prefix, line) = fields(step)?;
    let (_, _, text) = read_text(cx, path)?;
    let found = text.lines().find(|l| l.starts_with(prefix));
    if found != Some(line) {
        return Err(StepError::Verify {
            kind: KIND,
            target: path.to_owned(),
            expected: format!("the first line starting with {prefix:?} to be {line:?}"),
            actual: match found {
                Some(other) => format!("{other:?}"),
                None => "no such line".to_owned(),
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::testkit::Harness;
    use super::super::{self as steps, StepError};
    use super::edited;
    use tidegate_protocol::trust::Step;

    const SSHD: &str = "# sshd\nPort 22\nPermitRootLogin yes\nPermitRootLogin prohibit-password\n";

    fn step() -> Step {
        Step::EnsureConfigLine {
            path: "etc/ssh/sshd_config".into(),
            match_prefix: "PermitRootLogin".into(),
            line: "PermitRootLogin no".into(),
        }
    }

    #[test]
    fn edited_replaces_first_match_or_appends() {
        assert_eq!(
            edited(SSHD, "PermitRootLogin", "PermitRootLogin no"),
            "# sshd\nPort 22\nPermitRootLogin no\nPermitRootLogin prohibit-password\n"
        );
        assert_eq!(
            edited("Port 22", "X11", "X11Forwarding no"),
            "Port 22\nX11Forwarding no\n"
        );
        assert_eq!(edited("", "X11", "X11Forwarding no"), "X11Forwarding no\n");
    }

    #[test]
    fn config_line_round_trip_is_byte_exact() {
        let harness = Harness::new();
        let path = harness.root().join("etc/ssh/sshd_config");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // No final newline, so that a revert that rewrote the text would show.
        fs::write(&path, "Port 22\r\nPermitRootLogin yes").unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

        harness.round_trip(&step());

        assert_eq!(fs::read(&path).unwrap(), b"Port 22\r\nPermitRootLogin yes");
    }

    #[test]
    fn config_line_plan_shows_diff() {
        let harness = Harness::new();
        let path = harness.root().join("etc/ssh/sshd_config");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, SSHD).unwrap();
        let prior = steps::probe(&step(), &harness.cx()).unwrap();

        let planned = steps::plan(&step(), &harness.cx(), &prior).unwrap();

        assert_eq!(
            planned.summary,
            "set etc/ssh/sshd_config: PermitRootLogin no"
        );
        assert_eq!(
            planned.detail,
            "--- a/etc/ssh/sshd_config\n+++ b/etc/ssh/sshd_config\n@@ -1,4 +1,4 @@\n # sshd\n \
             Port 22\n-PermitRootLogin yes\n+PermitRootLogin no\n PermitRootLogin prohibit-password\n"
        );
        assert!(planned.changes);
    }

    #[test]
    fn config_line_missing_file_is_error() {
        let harness = Harness::new();
        let error = steps::probe(&step(), &harness.cx()).unwrap_err();
        assert!(
            matches!(
                error,
                StepError::Io {
                    operation: "read",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("etc/ssh/sshd_config"), "{error}");
    }
}
