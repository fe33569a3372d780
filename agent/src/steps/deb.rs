//! The Debian package steps: install, upgrade and remove a package with the real `dpkg --root`,
//! keeping the previous version's package file so that revert reinstalls exactly that version
//! without a network.
//!
//! - Probe and verify read the package's version and status as `dpkg-query --admindir` reports
//!   them, so they read dpkg's own view, the entries of its `updates` journal included.
//! - Backup takes the previous version's package file from `var/cache/apt/archives` below the root
//!   when the file of that exact version is there, and otherwise rebuilds it from the installed
//!   files, the control fields and the maintainer scripts in dpkg's database, as `dpkg-repack`
//!   does ([`repack`]). The kept file is `previous.deb` in the step's backup directory.
//! - Apply runs `dpkg --unpack`, then the checkpoint `apply-mid`, then `dpkg --configure`.
//!   Revert does the same with the kept file (checkpoint `revert-mid`), or purges a package that
//!   was not installed, or removes one that had only its configuration files left. dpkg itself
//!   handles a package a crash left half-installed or unpacked, so a revert run again after a
//!   crash still ends in the prior version and state.
//!
//! dpkg logs to `var/log/dpkg.log` below the root; when that directory is missing it warns and
//! logs nothing.
//! dpkg runs a package's maintainer scripts inside the root with `chroot`, so a root other than
//! `/` needs its own shell and tools for packages that have scripts (the test packages have none).
//! Configuration files changed on the host are kept (`--force-confold`), because dpkg cannot ask
//! anyone here. A package installed for several architectures is read for the first one
//! `dpkg-query` lists; the steps do not name an architecture.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::Step;

use super::rootfs::{self, io_error};
use super::{argv, PlannedChange, StepContext, StepError};
use crate::fsutil;

/// The kept package file of the previous version, in the step's backup directory.
const KEPT_DEB: &str = "previous.deb";
/// The payload written out for dpkg, in the step's backup directory.
const NEW_DEB: &str = "new.deb";

/// A package as `dpkg-query` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub version: String,
    pub architecture: String,
    /// The status words `want flag state`, such as `install ok installed`.
    pub status: String,
}

impl InstalledPackage {
    /// Returns the last status word: `installed`, `config-files`, `unpacked`, ...
    pub fn state(&self) -> &str {
        self.status.split_whitespace().nth(2).unwrap_or("")
    }

    fn is_installed(&self) -> bool {
        self.state() == "installed"
    }
}

/// A package as a deb step found it. When `previous` is installed, the backup contains its
/// package file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebPrior {
    pub package: String,
    /// `None` when dpkg knew nothing of the package.
    pub previous: Option<InstalledPackage>,
}

impl DebPrior {
    fn installed(&self) -> Option<&InstalledPackage> {
        self.previous.as_ref().filter(|p| p.is_installed())
    }
}

fn package_of(step: &Step) -> &str {
    match step {
        Step::InstallDeb { package, .. }
        | Step::UpgradeDeb { package, .. }
        | Step::RemoveDeb { package } => package,
        _ => "",
    }
}

fn admindir(cx: &StepContext<'_>) -> String {
    format!("--admindir={}", cx.root.join("var/lib/dpkg").display())
}

fn dpkg(cx: &StepContext<'_>, action: &[&str]) -> Vec<String> {
    let mut command = argv([
        "dpkg".to_owned(),
        format!("--root={}", cx.root.display()),
        // dpkg 1.21 logs to the host's /var/log/dpkg.log even with --root.
        format!("--log={}", cx.root.join("var/log/dpkg.log").display()),
        "--force-confdef".to_owned(),
        "--force-confold".to_owned(),
    ]);
    command.extend(action.iter().map(|s| s.to_string()));
    command
}

/// Returns what dpkg reports for `package`, or `None` when dpkg has no record of it.
pub(crate) fn query(
    kind: &'static str,
    cx: &StepContext<'_>,
    package: &str,
) -> Result<Option<InstalledPackage>, StepError> {
    let command = argv([
        "dpkg-query".to_owned(),
        admindir(cx),
        "-W".to_owned(),
        "-f".to_owned(),
        "${Version}\t${Architecture}\t${Status}\n".to_owned(),
        package.to_owned(),
    ]);
    let output = super::run(kind, cx, &command)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find(|l| !l.trim().is_empty()) else {
        // dpkg-query exits with 1 and prints nothing for a package it does not know.
        if output.status == Some(1) || output.status == Some(0) {
            return Ok(None);
        }
        return Err(super::command_failed(kind, &command, &output));
    };
    let mut fields = line.split('\t');
    let (Some(version), Some(architecture), Some(status)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(StepError::Malformed {
            kind,
            path: cx.root.join("var/lib/dpkg/status"),
            reason: format!("dpkg-query printed {line:?} for {package}"),
        });
    };
    let package = InstalledPackage {
        version: version.to_owned(),
        architecture: architecture.to_owned(),
        status: status.to_owned(),
    };
    if package.state() == "not-installed" {
        return Ok(None);
    }
    Ok(Some(package))
}

fn describe(package: Option<&InstalledPackage>) -> String {
    match package {
        Some(p) => format!("{} ({})", p.version, p.status),
        None => "not installed".to_owned(),
    }
}

pub(super) fn probe(step: &Step, cx: &StepContext<'_>) -> Result<DebPrior, StepError> {
    let kind = step.kind();
    let package = package_of(step);
    if let Some(payload) = step.payload() {
        if !cx.payloads.contains_key(payload) {
            return Err(StepError::MissingPayload {
                kind,
                name: payload.to_owned(),
            });
        }
    }
    let previous = query(kind, cx, package)?;
    if let Some(found) = &previous {
        if !matches!(found.state(), "installed" | "config-files") {
            return Err(StepError::Invalid {
                kind,
                reason: format!(
                    "package {package} is in dpkg state {:?}; repair it with \
                     `dpkg --configure -a` before a bundle changes it",
                    found.state()
                ),
            });
        }
    }
    if let Step::UpgradeDeb { .. } = step {
        if !previous
            .as_ref()
            .is_some_and(InstalledPackage::is_installed)
        {
            return Err(StepError::Invalid {
                kind,
                reason: format!("package {package} is not installed, so it cannot be upgraded"),
            });
        }
    }
    Ok(DebPrior {
        package: package.to_owned(),
        previous,
    })
}

pub(super) fn plan(step: &Step, prior: &DebPrior) -> Result<PlannedChange, StepError> {
    let package = &prior.package;
    let installed = prior.installed();
    let (summary, changes) = match step {
        Step::InstallDeb { version, .. } | Step::UpgradeDeb { version, .. } => {
            let verb = if matches!(step, Step::UpgradeDeb { .. }) {
                "upgrade"
            } else {
                "install"
            };
            match installed {
                Some(p) if &p.version == version => {
                    (format!("{package} {version} is already installed"), false)
                }
                Some(p) => (format!("{verb} {package} {} -> {version}", p.version), true),
                None => (format!("{verb} {package} {version}"), true),
            }
        }
        Step::RemoveDeb { .. } => match installed {
            Some(p) => (format!("remove {package} {}", p.version), true),
            None => (format!("{package} is not installed"), false),
        },
        _ => return Err(super::wrong_step(step.kind(), step)),
    };
    Ok(PlannedChange {
        summary,
        detail: String::new(),
        changes,
    })
}

/// Reads `Package`, `Version` and `Architecture` of a package file with `dpkg-deb -f`.
fn deb_fields(
    kind: &'static str,
    cx: &StepContext<'_>,
    deb: &Path,
) -> Result<(String, String, String), StepError> {
    let command = argv([
        "dpkg-deb".to_owned(),
        "-f".to_owned(),
        deb.display().to_string(),
        "Package".to_owned(),
        "Version".to_owned(),
        "Architecture".to_owned(),
    ]);
    let stdout = super::run_checked(kind, cx, &command)?;
    let text = String::from_utf8_lossy(&stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
            .unwrap_or_default()
    };
    Ok((field("Package"), field("Version"), field("Architecture")))
}

pub(super) fn backup(step: &Step, cx: &StepContext<'_>, prior: &DebPrior) -> Result<(), StepError> {
    let kind = step.kind();
    let Some(installed) = prior.installed() else {
        return Ok(());
    };
    let kept = cx.backup_dir.join(KEPT_DEB);
    let wanted = (
        prior.package.clone(),
        installed.version.clone(),
        installed.architecture.clone(),
    );
    if kept.exists() && deb_fields(kind, cx, &kept)? == wanted {
        return Ok(());
    }
    let cached = cx.root.join("var/cache/apt/archives").join(format!(
        "{}_{}_{}.deb",
        prior.package,
        installed.version.replace(':', "%3a"),
        installed.architecture
    ));
    let from_cache = cached.is_file() && deb_fields(kind, cx, &cached)? == wanted;
    if from_cache {
        let content = fs::read(&cached).map_err(io_error(kind, "read", &cached))?;
        fsutil::write_atomic(&kept, &content, 0o600).map_err(io_error(
            kind,
            "write the backup",
            &kept,
        ))?;
    } else {
        repack(kind, cx, &prior.package, &kept)?;
    }
    let found = deb_fields(kind, cx, &kept)?;
    if found != wanted {
        return Err(StepError::Backup {
            kind,
            path: kept,
            reason: format!(
                "it holds {} {} ({}), not {} {} ({})",
                found.0, found.1, found.2, wanted.0, wanted.1, wanted.2
            ),
        });
    }
    Ok(())
}

/// Rebuilds the installed package `package` into `out` from the files below the root and dpkg's
/// database: the control fields without the status fields, the configuration file list, the
/// maintainer scripts and other control files from `var/lib/dpkg/info`, and every listed file,
/// directory and symbolic link with its mode and owner.
fn repack(
    kind: &'static str,
    cx: &StepContext<'_>,
    package: &str,
    out: &Path,
) -> Result<(), StepError> {
    let staging = cx.backup_dir.join("repack");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error(kind, "remove", &staging))?;
    }
    let control_dir = staging.join("DEBIAN");
    fs::create_dir_all(&control_dir).map_err(io_error(kind, "create", &control_dir))?;

    let status = super::run_checked(
        kind,
        cx,
        &argv([
            "dpkg-query".to_owned(),
            admindir(cx),
            "-s".to_owned(),
            package.to_owned(),
        ]),
    )?;
    let (control, conffiles) = split_status(&String::from_utf8_lossy(&status));
    let architecture = control
        .lines()
        .find_map(|l| l.strip_prefix("Architecture:"))
        .map(|a| a.trim().to_owned())
        .unwrap_or_default();
    write_new(
        kind,
        &control_dir.join("control"),
        control.as_bytes(),
        0o644,
    )?;
    if !conffiles.is_empty() {
        write_new(
            kind,
            &control_dir.join("conffiles"),
            conffiles.as_bytes(),
            0o644,
        )?;
    }

    let info = cx.root.join("var/lib/dpkg/info");
    for name in [
        "preinst",
        "postinst",
        "prerm",
        "postrm",
        "config",
        "templates",
        "triggers",
        "shlibs",
        "symbols",
        "md5sums",
    ] {
        for stem in [package.to_owned(), format!("{package}:{architecture}")] {
            let source = info.join(format!("{stem}.{name}"));
            if let Ok(content) = fs::read(&source) {
                let mode = fs::metadata(&source)
                    .map(|m| m.mode() & 0o7777)
                    .unwrap_or(0o644);
                write_new(kind, &control_dir.join(name), &content, mode)?;
                break;
            }
        }
    }

    let listing = super::run_checked(
        kind,
        cx,
        &argv([
            "dpkg-query".to_owned(),
            admindir(cx),
            "-L".to_owned(),
            package.to_owned(),
        ]),
    )?;
    let real_root =
        fs::canonicalize(cx.root).map_err(io_error(kind, "resolve the root", cx.root))?;
    for line in String::from_utf8_lossy(&listing).lines() {
        // Other lines are notes such as "diverted by ..." or "package diverts others to ...".
        let Some(relative) = line.strip_prefix('/') else {
            continue;
        };
        if relative.is_empty() || relative == "." {
            continue;
        }
        copy_entry(kind, &real_root, relative, &staging)?;
    }

    let command = argv([
        "dpkg-deb".to_owned(),
        "--build".to_owned(),
        "-Zgzip".to_owned(),
        "-z1".to_owned(),
        staging.display().to_string(),
        out.display().to_string(),
    ]);
    super::run_checked(kind, cx, &command)?;
    let file = fs::File::open(out).map_err(io_error(kind, "open", out))?;
    file.sync_all().map_err(io_error(kind, "flush", out))?;
    fsutil::sync_dir(cx.backup_dir).map_err(io_error(
        kind,
        "flush the directory",
        cx.backup_dir,
    ))?;
    fs::remove_dir_all(&staging).map_err(io_error(kind, "remove", &staging))
}

/// Splits `dpkg-query -s` output into the control file (without `Status`, `Config-Version` and
/// `Conffiles`) and the `conffiles` list (without obsolete entries).
fn split_status(status: &str) -> (String, String) {
    let mut control = String::new();
    let mut conffiles = String::new();
    let mut field = String::new();
    for line in status.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            field = line.split(':').next().unwrap_or_default().to_owned();
        }
        match field.as_str() {
            "Status" | "Config-Version" => {}
            "Conffiles" => {
                if line.starts_with([' ', '\t']) {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    if !words.contains(&"obsolete") && !words.contains(&"remove-on-upgrade") {
                        if let Some(path) = words.first() {
                            conffiles.push_str(path);
                            conffiles.push('\n');
                        }
                    }
                }
            }
            _ => {
                control.push_str(line);
                control.push('\n');
            }
        }
    }
    (control, conffiles)
}

fn write_new(kind: &'static str, path: &Path, content: &[u8], mode: u32) -> Result<(), StepError> {
    fs::write(path, content).map_err(io_error(kind, "write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error(
        kind,
        "change the mode of",
        path,
    ))
}

/// Copies one listed entry of an installed package from below the root into the staging tree,
/// with its mode and owner. The entry's directory must resolve inside the root.
fn copy_entry(
    kind: &'static str,
    real_root: &Path,
    relative: &str,
    staging: &Path,
) -> Result<(), StepError> {
    let source = real_root.join(relative);
    if let Some(parent) = source.parent() {
        let real_parent = fs::canonicalize(parent).map_err(io_error(kind, "resolve", parent))?;
        if !real_parent.starts_with(real_root) {
            return Err(StepError::OutsideRoot {
                kind,
                path: relative.to_owned(),
                root: real_root.to_path_buf(),
                reason: format!("its directory resolves to {}", real_parent.display()),
            });
        }
    }
    let metadata = fs::symlink_metadata(&source).map_err(io_error(
        kind,
        "read a file of the installed package to rebuild it from",
        &source,
    ))?;
    let target: PathBuf = staging.join(relative);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_error(kind, "create", parent))?;
    }
    let file_type = metadata.file_type();
    if file_type.is_symlink() {
        let link = fs::read_link(&source).map_err(io_error(kind, "read the link", &source))?;
        std::os::unix::fs::symlink(&link, &target).map_err(io_error(
            kind,
            "create the link",
            &target,
        ))?;
        std::os::unix::fs::lchown(&target, Some(metadata.uid()), Some(metadata.gid()))
            .map_err(io_error(kind, "change the owner of", &target))?;
        return Ok(());
    }
    if file_type.is_dir() {
        fs::create_dir_all(&target).map_err(io_error(kind, "create", &target))?;
    } else if file_type.is_file() {
        fs::copy(&source, &target).map_err(io_error(kind, "copy", &source))?;
    } else {
        return Err(StepError::Invalid {
            kind,
            reason: format!(
                "{} is neither a file, a directory nor a symbolic link, so the package cannot \
                 be rebuilt",
                source.display()
            ),
        });
    }
    std::os::unix::fs::chown(&target, Some(metadata.uid()), Some(metadata.gid()))
        .map_err(io_error(kind, "change the owner of", &target))?;
    fs::set_permissions(
        &target,
        fs::Permissions::from_mode(metadata.mode() & 0o7777),
    )
    .map_err(io_error(kind, "change the mode of", &target))
}

/// Installs the package file `deb` as `dpkg --unpack` and `dpkg --configure`, with the
/// checkpoint `checkpoint` between them.
fn install_file(
    kind: &'static str,
    cx: &StepContext<'_>,
    package: &str,
    deb: &Path,
    checkpoint: &str,
) -> Result<(), StepError> {
    let deb = deb.display().to_string();
    super::run_checked(kind, cx, &dpkg(cx, &["--unpack", &deb]))?;
    (cx.checkpoint)(checkpoint);
    super::run_checked(kind, cx, &dpkg(cx, &["--configure", package]))?;
    Ok(())
}

pub(super) fn apply(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let kind = step.kind();
    let package = package_of(step);
    let current = query(kind, cx, package)?;
    match step {
        Step::InstallDeb {
            version, payload, ..
        }
        | Step::UpgradeDeb {
            version, payload, ..
        } => {
            if current
                .as_ref()
                .is_some_and(|p| p.is_installed() && &p.version == version)
            {
                return Ok(());
            }
            let content = cx
                .payloads
                .get(payload)
                .ok_or_else(|| StepError::MissingPayload {
                    kind,
                    name: payload.clone(),
                })?;
            rootfs::create_backup_dir(kind, cx.backup_dir)?;
            let deb = cx.backup_dir.join(NEW_DEB);
            fsutil::write_atomic(&deb, content, 0o600).map_err(io_error(
                kind,
                "write the package file",
                &deb,
            ))?;
            let (found_package, found_version, _) = deb_fields(kind, cx, &deb)?;
            if found_package != package || &found_version != version {
                return Err(StepError::Invalid {
                    kind,
                    reason: format!(
                        "payload {payload} holds {found_package} {found_version}, but the step \
                         names {package} {version}"
                    ),
                });
            }
            install_file(kind, cx, package, &deb, "apply-mid")?;
            // Only a resumed apply needs the written-out payload, and it writes it again.
            fs::remove_file(&deb).map_err(io_error(kind, "remove", &deb))
        }
        Step::RemoveDeb { .. } => {
            if current.as_ref().is_none_or(|p| p.state() == "config-files") {
                return Ok(());
            }
            super::run_checked(kind, cx, &dpkg(cx, &["--remove", package]))?;
            (cx.checkpoint)("apply-mid");
            Ok(())
        }
        _ => Err(super::wrong_step(kind, step)),
    }
}

pub(super) fn verify(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let kind = step.kind();
    let package = package_of(step);
    let current = query(kind, cx, package)?;
    let (ok, expected) = match step {
        Step::InstallDeb { version, .. } | Step::UpgradeDeb { version, .. } => (
            current
                .as_ref()
                .is_some_and(|p| p.is_installed() && &p.version == version),
            format!("{version} (install ok installed)"),
        ),
        _ => (
            current.as_ref().is_none_or(|p| p.state() == "config-files"),
            "not installed".to_owned(),
        ),
    };
    if !ok {
        return Err(StepError::Verify {
            kind,
            target: format!("package {package}"),
            expected,
            actual: describe(current.as_ref()),
        });
    }
    Ok(())
}

pub(super) fn revert(step: &Step, cx: &StepContext<'_>, prior: &DebPrior) -> Result<(), StepError> {
    let kind = step.kind();
    let package = &prior.package;
    let current = query(kind, cx, package)?;
    match &prior.previous {
        Some(previous) if previous.is_installed() => {
            if current
                .as_ref()
                .is_some_and(|p| p.is_installed() && p.version == previous.version)
            {
                return Ok(());
            }
            let kept = cx.backup_dir.join(KEPT_DEB);
            if !kept.is_file() {
                return Err(StepError::Backup {
                    kind,
                    path: kept,
                    reason: format!(
                        "the kept package file of {package} {} is missing",
                        previous.version
                    ),
                });
            }
            install_file(kind, cx, package, &kept, "revert-mid")
        }
        Some(_) => {
            // Only configuration files were left: remove what the step installed, keeping them.
            if current.as_ref().is_none_or(|p| p.state() == "config-files") {
                return Ok(());
            }
            super::run_checked(kind, cx, &dpkg(cx, &["--remove", package]))?;
            (cx.checkpoint)("revert-mid");
            Ok(())
        }
        None => {
            if current.is_none() {
                return Ok(());
            }
            super::run_checked(kind, cx, &dpkg(cx, &["--purge", package]))?;
            (cx.checkpoint)("revert-mid");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::testkit::{self, DebFile, Harness};
    use super::super::{self as steps, StepError};
    use super::split_status;
    use tidegate_protocol::trust::Step;

    fn files(greeting: &'static [u8]) -> Vec<DebFile<'static>> {
        vec![
            DebFile {
                path: "/usr/share/hello/greeting",
                content: greeting,
                mode: 0o644,
                conffile: false,
            },
            DebFile {
                path: "/usr/bin/hello",
                content: b"#!/bin/sh\necho hello\n",
                mode: 0o755,
                conffile: false,
            },
            DebFile {
                path: "/etc/hello.conf",
                content: b"volume = 3\n",
                mode: 0o644,
                conffile: true,
            },
        ]
    }

    /// Builds a dpkg root with hello 1.0-1 installed, and the payload `hello_1.0-2_all.deb`.
    /// With `cached`, the 1.0-1 package file is also in `var/cache/apt/archives`.
    fn harness(cached: bool) -> Harness {
        let mut harness = Harness::new();
        testkit::init_dpkg_root(harness.root());
        harness.skip_in_comparison("var/lib/dpkg");
        let scratch = harness.scratch();
        let old = testkit::build_deb(&scratch, "hello", "1.0-1", &files(b"hello one\n"));
        let new = testkit::build_deb(&scratch, "hello", "1.0-2", &files(b"hello two\n"));
        testkit::dpkg_install(harness.root(), &old);
        harness.also_compare("dpkg-query", testkit::dpkg_query_all);
        if cached {
            fs::copy(
                &old,
                harness
                    .root()
                    .join("var/cache/apt/archives/hello_1.0-1_all.deb"),
            )
            .unwrap();
        }
        harness.add_payload("hello_1.0-2_all.deb", &fs::read(new).unwrap());
        harness
    }

    fn upgrade() -> Step {
        Step::UpgradeDeb {
            package: "hello".into(),
            version: "1.0-2".into(),
            payload: "hello_1.0-2_all.deb".into(),
        }
    }

    fn installed(harness: &Harness) -> Option<String> {
        testkit::dpkg_query(harness.root(), "hello")
    }

    #[test]
    fn upgrade_then_revert_reinstalls_kept_version() {
        let harness = harness(false);
        let prior = harness.probe_and_backup(&upgrade());
        steps::apply(&upgrade(), &harness.cx(), &prior).unwrap();
        steps::verify(&upgrade(), &harness.cx()).unwrap();
        assert_eq!(
            installed(&harness).as_deref(),
            Some("1.0-2 all install ok installed")
        );
        assert_eq!(
            fs::read(harness.root().join("usr/share/hello/greeting")).unwrap(),
            b"hello two\n"
        );

        steps::revert(&upgrade(), &harness.cx(), &prior).unwrap();

        assert_eq!(
            installed(&harness).as_deref(),
            Some("1.0-1 all install ok installed")
        );
        assert_eq!(
            fs::read(harness.root().join("usr/share/hello/greeting")).unwrap(),
            b"hello one\n"
        );
    }

    #[test]
    fn upgrade_round_trip_from_rebuilt_package() {
        let harness = harness(false);
        harness.round_trip(&upgrade());
        assert_eq!(
            installed(&harness).as_deref(),
            Some("1.0-1 all install ok installed")
        );
    }

    /// Lists a package file's data entries as `dpkg-deb --contents` prints them, without the
    /// modification times: permissions, owner, size and path.
    fn contents(deb: &std::path::Path) -> Vec<String> {
        let output = std::process::Command::new("dpkg-deb")
            .arg("--contents")
            .arg(deb)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                format!(
                    "{} {} {} {}",
                    words[0],
                    words[1],
                    words[2],
                    words[5..].join(" ")
                )
            })
            .collect()
    }

    #[test]
    fn rebuilt_package_matches_original() {
        let harness = harness(false);
        let original = harness.scratch().join("hello_1.0-1_all.deb");
        harness.probe_and_backup(&upgrade());
        let kept = harness.backup_dir().join("previous.deb");

        assert_eq!(contents(&kept), contents(&original));
        let conffiles = std::process::Command::new("dpkg-deb")
            .arg("--info")
            .arg(&kept)
            .arg("conffiles")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&conffiles.stdout),
            "/etc/hello.conf\n"
        );
        assert!(!harness.backup_dir().join("repack").exists());
    }

    #[test]
    fn upgrade_round_trip_from_apt_cache() {
        let harness = harness(true);
        let prior = harness.probe_and_backup(&upgrade());
        let _ = prior;
        assert_eq!(
            fs::read(harness.backup_dir().join("previous.deb")).unwrap(),
            fs::read(
                harness
                    .root()
                    .join("var/cache/apt/archives/hello_1.0-1_all.deb")
            )
            .unwrap()
        );
        harness.round_trip(&upgrade());
    }

    #[test]
    fn revert_after_crash_mid_dpkg() {
        let harness = harness(false);
        let prior = harness.probe_and_backup(&upgrade());
        let reached = harness.interrupt_at("apply-mid", |cx| {
            let _ = steps::apply(&upgrade(), cx, &prior);
        });
        assert!(reached);
        assert_eq!(
            installed(&harness).as_deref(),
            Some("1.0-2 all install ok unpacked")
        );

        // The revert is interrupted too, with 1.0-1 unpacked over the unpacked 1.0-2.
        let reached = harness.interrupt_at("revert-mid", |cx| {
            let _ = steps::revert(&upgrade(), cx, &prior);
        });
        assert!(reached);
        assert_eq!(
            installed(&harness).as_deref(),
            Some("1.0-1 all install ok unpacked")
        );

        steps::revert(&upgrade(), &harness.cx(), &prior).unwrap();
        assert_eq!(
            installed(&harness).as_deref(),
            Some("1.0-1 all install ok installed")
        );
    }

    /// Kills dpkg, the parent of the maintainer script, as a power loss or SIGKILL would.
    const KILL_DPKG: &str = "#!/bin/sh\nkill -9 $PPID\n";

    #[test]
    fn revert_after_dpkg_killed() {
        // dpkg killed while unpacking (in the new preinst) leaves the package half-installed,
        // and killed while configuring (in the new postinst) leaves it half-configured.
        for (script, state_after_kill) in [
            ("preinst", "1.0-1 all install reinstreq half-installed"),
            ("postinst", "1.0-2 all install ok half-configured"),
        ] {
            let mut harness = harness(false);
            testkit::install_shell(harness.root());
            let scratch = harness.scratch();
            let killing = testkit::build_deb_with_scripts(
                &scratch,
                "hello",
                "1.0-2",
                &files(b"hello two\n"),
                &[(script, KILL_DPKG)],
            );
            harness.add_payload("hello_1.0-2_all.deb", &fs::read(killing).unwrap());
            let before = harness.snapshot();

            let prior = harness.probe_and_backup(&upgrade());
            let error = steps::apply(&upgrade(), &harness.cx(), &prior).unwrap_err();
            assert!(
                error.to_string().contains("failed with a signal"),
                "{script}: {error}"
            );
            assert_eq!(
                installed(&harness).as_deref(),
                Some(state_after_kill),
                "{script}"
            );

            steps::revert(&upgrade(), &harness.cx(), &prior).unwrap();

            assert_eq!(
                installed(&harness).as_deref(),
                Some("1.0-1 all install ok installed"),
                "{script}"
            );
            assert_eq!(harness.snapshot(), before, "{script}");
        }
    }

    #[test]
    fn install_round_trip_purges_new_package() {
        let mut harness = harness(false);
        let scratch = harness.scratch();
        let tool = testkit::build_deb(
            &scratch,
            "tool",
            "2.0-1",
            &[DebFile {
                path: "/usr/bin/tool",
                content: b"tool\n",
                mode: 0o755,
                conffile: false,
            }],
        );
        harness.add_payload("tool.deb", &fs::read(tool).unwrap());
        let step = Step::InstallDeb {
            package: "tool".into(),
            version: "2.0-1".into(),
            payload: "tool.deb".into(),
        };
        harness.round_trip(&step);
        assert_eq!(testkit::dpkg_query(harness.root(), "tool"), None);
    }

    #[test]
    fn remove_round_trip_reinstalls() {
        let harness = harness(false);
        let step = Step::RemoveDeb {
            package: "hello".into(),
        };
        harness.round_trip(&step);
        assert_eq!(
            installed(&harness).as_deref(),
            Some("1.0-1 all install ok installed")
        );
    }

    #[test]
    fn plan_shows_version_change() {
        let harness = harness(false);
        let prior = steps::probe(&upgrade(), &harness.cx()).unwrap();
        let planned = steps::plan(&upgrade(), &harness.cx(), &prior).unwrap();
        assert_eq!(planned.summary, "upgrade hello 1.0-1 -> 1.0-2");
        assert!(planned.changes);
    }

    #[test]
    fn payload_of_other_version_is_rejected() {
        let harness = harness(false);
        let step = Step::UpgradeDeb {
            package: "hello".into(),
            version: "1.0-3".into(),
            payload: "hello_1.0-2_all.deb".into(),
        };
        let prior = steps::probe(&step, &harness.cx()).unwrap();
        let error = steps::apply(&step, &harness.cx(), &prior).unwrap_err();
        assert_eq!(
            error.to_string(),
            "upgrade-deb step: invalid step: payload hello_1.0-2_all.deb holds hello 1.0-2, but \
             the step names hello 1.0-3"
        );
        assert_eq!(
            installed(&harness).as_deref(),
            Some("1.0-1 all install ok installed")
        );
    }

    #[test]
    fn upgrade_of_absent_package_is_error() {
        let harness = harness(false);
        let step = Step::UpgradeDeb {
            package: "absent".into(),
            version: "1.0-2".into(),
            payload: "hello_1.0-2_all.deb".into(),
        };
        let error = steps::probe(&step, &harness.cx()).unwrap_err();
        assert!(matches!(error, StepError::Invalid { .. }), "{error}");
    }

    #[test]
    fn status_split_drops_status_fields() {
        let (control, conffiles) = split_status(
            "Package: hello\nStatus: install ok installed\nVersion: 1.0-1\nConffiles:\n \
             /etc/hello.conf 0123abcd\n /etc/old.conf 4567 obsolete\nDescription: test\n more\n",
        );
        assert_eq!(
            control,
            "Package: hello\nVersion: 1.0-1\nDescription: test\n more\n"
        );
        assert_eq!(conffiles, "/etc/hello.conf\n");
    }
}
