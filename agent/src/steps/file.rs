//! The write-file step: replaces a file below the root with a payload's content, mode and owner,
//! keeping the previous file (or the fact that there was none) for revert.
//!
//! The parent directory must exist; the step creates no directories, so that revert has only
//! the one file to restore.

use tidegate_protocol::trust::Step;

use super::rootfs::{self, FilePrior, FileSnapshot};
use super::{PlannedChange, StepContext, StepError};

const KIND: &str = "write-file";

/// The file the step writes, with the owner and group resolved to ids.
struct Wanted<'a> {
    path: &'a str,
    content: &'a [u8],
    mode: u32,
    uid: u32,
    gid: u32,
    owner: &'a str,
    group: &'a str,
}

fn wanted<'a>(step: &'a Step, cx: &StepContext<'a>) -> Result<Wanted<'a>, StepError> {
    let Step::WriteFile {
        path,
        payload,
        mode,
        owner,
        group,
    } = step
    else {
        return Err(super::wrong_step(KIND, step));
    };
    let content = cx
        .payloads
        .get(payload)
        .ok_or_else(|| StepError::MissingPayload {
            kind: KIND,
            name: payload.clone(),
        })?;
    if *mode > 0o7777 {
        return Err(StepError::Invalid {
            kind: KIND,
            reason: format!("mode {mode:o} has bits beyond the permission bits 7777"),
        });
    }
    Ok(Wanted {
        path,
        content,
        mode: *mode,
        uid: rootfs::lookup_id(KIND, cx, "etc/passwd", "user", owner)?,
        gid: rootfs::lookup_id(KIND, cx, "etc/group", "group", group)?,
        owner,
        group,
    })
}

impl Wanted<'_> {
    fn snapshot(&self) -> FileSnapshot {
        FileSnapshot {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.content.len() as u64,
            sha256: rootfs::sha256_hex(self.content),
        }
    }
}

pub(super) fn probe(step: &Step, cx: &StepContext<'_>) -> Result<FilePrior, StepError> {
    let wanted = wanted(step, cx)?;
    let target = rootfs::resolve(KIND, cx.root, wanted.path)?;
    if !target.parent().is_some_and(|dir| dir.is_dir()) {
        return Err(StepError::Invalid {
            kind: KIND,
            reason: format!(
                "the directory of {} does not exist below {}; the step creates no directories",
                wanted.path,
                cx.root.display()
            ),
        });
    }
    rootfs::probe_file(KIND, cx, wanted.path)
}

pub(super) fn plan(
    step: &Step,
    cx: &StepContext<'_>,
    prior: &FilePrior,
) -> Result<PlannedChange, StepError> {
    let wanted = wanted(step, cx)?;
    let target = rootfs::resolve(KIND, cx.root, wanted.path)?;
    let summary = format!(
        "write {} ({:04o} {}:{})",
        wanted.path, wanted.mode, wanted.owner, wanted.group
    );
    let changes = prior.previous.as_ref() != Some(&wanted.snapshot());
    let old = match &prior.previous {
        Some(_) => rootfs::read_file(KIND, &target)?
            .map(|(_, content)| content)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let old_name = match prior.previous {
        Some(_) => format!("a/{}", wanted.path),
        None => "/dev/null".to_owned(),
    };
    let detail = match (
        std::str::from_utf8(&old),
        std::str::from_utf8(wanted.content),
    ) {
        (Ok(old), Ok(new)) => {
            rootfs::unified_diff(&old_name, &format!("b/{}", wanted.path), old, new)
        }
        _ if old != wanted.content => {
            format!("binary content changes ({} bytes)\n", wanted.content.len())
        }
        _ => String::new(),
    };
    Ok(PlannedChange {
        summary,
        detail,
        changes,
    })
}

pub(super) fn apply(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let wanted = wanted(step, cx)?;
    let target = rootfs::resolve(KIND, cx.root, wanted.path)?;
    let current = rootfs::read_file(KIND, &target)?.map(|(snapshot, _)| snapshot);
    if current == Some(wanted.snapshot()) {
        return rootfs::remove_stale_temp(KIND, &target);
    }
    rootfs::replace_file(
        KIND,
        &target,
        wanted.content,
        wanted.mode,
        wanted.uid,
        wanted.gid,
        &|| (cx.checkpoint)("apply-mid"),
    )
}

pub(super) fn verify(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let wanted = wanted(step, cx)?;
    let target = rootfs::resolve(KIND, cx.root, wanted.path)?;
    let current = rootfs::read_file(KIND, &target)?.map(|(snapshot, _)| snapshot);
    let expected = wanted.snapshot();
    if current.as_ref() != Some(&expected) {
        return Err(StepError::Verify {
            kind: KIND,
            target: wanted.path.to_owned(),
            expected: describe(Some(&expected)),
            actual: describe(current.as_ref()),
        });
    }
    Ok(())
}

fn describe(snapshot: Option<&FileSnapshot>) -> String {
    match snapshot {
        Some(s) => format!(
            "{} bytes with SHA-256 {}, mode {:04o}, owner {}:{}",
            s.size, s.sha256, s.mode, s.uid, s.gid
        ),
        None => "no file".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::super::testkit::{self, Harness};
    use super::super::{self as steps, StepError};
    use tidegate_protocol::trust::Step;

    fn motd_step(mode: u32, owner: &str) -> Step {
        Step::WriteFile {
            path: "etc/motd".into(),
            payload: "motd".into(),
            mode,
            owner: owner.into(),
            group: "adm".into(),
        }
    }

    fn harness() -> Harness {
        let mut harness = Harness::new();
        testkit::write_accounts(harness.root());
        harness.add_payload("motd", b"welcome\nauthorised use only\n");
        harness
    }

    #[test]
    fn write_file_round_trip_over_existing_file() {
        let harness = harness();
        let motd = harness.root().join("etc/motd");
        fs::write(&motd, "welcome\n").unwrap();
        std::os::unix::fs::chown(&motd, Some(0), Some(0)).unwrap();
        fs::set_permissions(&motd, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let step = motd_step(0o640, "alice");

        harness.round_trip(&step);

        let metadata = fs::metadata(&motd).unwrap();
        assert_eq!(fs::read(&motd).unwrap(), b"welcome\n");
        assert_eq!(metadata.mode() & 0o7777, 0o644);
        assert_eq!((metadata.uid(), metadata.gid()), (0, 0));
    }

    #[test]
    fn write_file_applies_content_mode_owner() {
        let harness = harness();
        let step = motd_step(0o640, "alice");
        let prior = harness.probe_and_backup(&step);
        steps::apply(&step, &harness.cx(), &prior).unwrap();
        steps::verify(&step, &harness.cx()).unwrap();

        let metadata = fs::metadata(harness.root().join("etc/motd")).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o640);
        // alice is uid 1000 and adm is gid 4 in the test account files.
        assert_eq!((metadata.uid(), metadata.gid()), (1000, 4));
    }

    #[test]
    fn write_file_round_trip_without_previous_file() {
        let harness = harness();
        harness.round_trip(&motd_step(0o600, "1234"));
        assert!(!harness.root().join("etc/motd").exists());
    }

    #[test]
    fn write_file_plan_is_unified_diff() {
        let harness = harness();
        fs::write(harness.root().join("etc/motd"), "welcome\n").unwrap();
        let step = motd_step(0o644, "root");
        let prior = steps::probe(&step, &harness.cx()).unwrap();

        let planned = steps::plan(&step, &harness.cx(), &prior).unwrap();

        assert_eq!(planned.summary, "write etc/motd (0644 root:adm)");
        assert_eq!(
            planned.detail,
            "--- a/etc/motd\n+++ b/etc/motd\n@@ -1 +1,2 @@\n welcome\n+authorised use only\n"
        );
        assert!(planned.changes);
    }

    #[test]
    fn write_file_bad_input_is_clear_error() {
        let harness = harness();
        let missing_payload = Step::WriteFile {
            path: "etc/motd".into(),
            payload: "absent".into(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
        };
        let error = steps::probe(&missing_payload, &harness.cx()).unwrap_err();
        assert!(matches!(error, StepError::MissingPayload { .. }), "{error}");

        let error = steps::probe(&motd_step(0o644, "mallory"), &harness.cx()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "write-file step: user \"mallory\" is not in {}",
                harness.root().join("etc/passwd").display()
            )
        );

        std::os::unix::fs::symlink("/tmp", harness.root().join("var/out")).unwrap();
        let escaping = Step::WriteFile {
            path: "var/out/motd".into(),
            payload: "motd".into(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
        };
        let error = steps::probe(&escaping, &harness.cx()).unwrap_err();
        assert!(matches!(error, StepError::OutsideRoot { .. }), "{error}");

        let no_directory = Step::WriteFile {
            path: "etc/absent/motd".into(),
            payload: "motd".into(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
        };
        let error = steps::probe(&no_directory, &harness.cx()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "write-file step: invalid step: the directory of etc/absent/motd does not exist \
                 below {}; the step creates no directories",
                harness.root().display()
            )
        );
    }
}
