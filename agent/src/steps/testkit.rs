//! Helpers for tests of steps and of the executor: a temporary root with a backup directory
//! ([`Harness`]), a minimal dpkg root ([`init_dpkg_root`]), small `.deb` packages built with
//! `dpkg-deb --build` ([`build_deb`]), test account databases ([`write_accounts`]), a hash of a
//! whole tree ([`tree_snapshot`]) and a command runner that records commands and returns canned
//! outputs ([`RecordingRunner`]).
//!
//! Compiled for this crate's unit tests and, with the `testkit` feature, for other crates' tests.
//! Everything here writes only below directories the caller created, and runs only `dpkg-deb`,
//! `dpkg --root` and `dpkg-query --admindir` on them. The tests that use it run as root, because
//! they give files owners and install packages with `dpkg --root`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use tidegate_protocol::trust::Step;

use super::{CommandOutput, CommandRunner, PriorState, StepContext, SystemRunner};

/// A temporary directory with a root below `root/` and a step backup directory `backup/`.
pub struct Harness {
    dir: tempfile::TempDir,
    root: PathBuf,
    backup: PathBuf,
    payloads: BTreeMap<String, Vec<u8>>,
    runner: Box<dyn CommandRunner>,
    live: bool,
    /// Path prefixes below the root that [`Harness::round_trip`] leaves out of its comparison.
    skip: Vec<String>,
    /// Further state that [`Harness::round_trip`] compares, by name.
    readers: Vec<(String, StateReader)>,
}

/// Reads some state of a root as text, such as `dpkg-query` output.
type StateReader = Box<dyn Fn(&Path) -> String>;

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// The panic payload a checkpoint raises to stop a step in the middle.
struct Interrupted;

impl Harness {
    /// Creates a root with empty `etc` and `var` directories, run by [`SystemRunner`], not live.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let root = dir.path().join("root");
        for sub in ["etc", "var"] {
            fs::create_dir_all(root.join(sub)).expect("create the root");
        }
        let backup = dir.path().join("backup");
        Self {
            dir,
            root,
            backup,
            payloads: BTreeMap::new(),
            runner: Box::new(SystemRunner),
            live: false,
            skip: Vec::new(),
            readers: Vec::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates and returns a directory outside the root for the test's own files, such as built
    /// packages.
    pub fn scratch(&self) -> PathBuf {
        let path = self.dir.path().join("scratch");
        fs::create_dir_all(&path).expect("create the scratch directory");
        path
    }

    pub fn backup_dir(&self) -> &Path {
        &self.backup
    }

    pub fn add_payload(&mut self, name: &str, content: &[u8]) {
        self.payloads.insert(name.to_owned(), content.to_vec());
    }

    pub fn set_runner(&mut self, runner: Box<dyn CommandRunner>) {
        self.runner = runner;
    }

    pub fn set_live(&mut self, live: bool) {
        self.live = live;
    }

    /// Leaves paths below the root starting with `prefix` out of [`Harness::round_trip`]'s
    /// comparison, such as dpkg's own database, whose backup files change with every run.
    pub fn skip_in_comparison(&mut self, prefix: &str) {
        self.skip.push(prefix.to_owned());
    }

    /// Adds state that [`Harness::round_trip`] compares besides the files, such as
    /// [`dpkg_query_all`]. It appears in snapshots under the key `@NAME`.
    pub fn also_compare(&mut self, name: &str, read: impl Fn(&Path) -> String + 'static) {
        self.readers.push((name.to_owned(), Box::new(read)));
    }

    /// Returns a context whose checkpoints do nothing.
    pub fn cx(&self) -> StepContext<'_> {
        self.cx_with(&|_| {})
    }

    pub fn cx_with<'a>(&'a self, checkpoint: &'a dyn Fn(&str)) -> StepContext<'a> {
        StepContext {
            root: &self.root,
            live: self.live,
            runner: self.runner.as_ref(),
            payloads: &self.payloads,
            backup_dir: &self.backup,
            checkpoint,
        }
    }

    pub fn probe_and_backup(&self, step: &Step) -> PriorState {
        let prior = super::probe(step, &self.cx()).expect("probe");
        super::backup(step, &self.cx(), &prior).expect("backup");
        prior
    }

    /// Hashes the tree below the root, without the skipped prefixes.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut tree = tree_snapshot(&self.root);
        tree.retain(|path, _| {
            !self
                .skip
                .iter()
                .any(|prefix| path.starts_with(prefix.as_str()))
        });
        tree
    }

    /// Runs the step's function `run` with a checkpoint that stops it at `name`, as a crash
    /// there would. Returns whether the checkpoint was reached.
    pub fn interrupt_at(&self, name: &str, run: impl FnOnce(&StepContext<'_>)) -> bool {
        let stop = |reached: &str| {
            if reached == name {
                panic::panic_any(Interrupted);
            }
        };
        let cx = self.cx_with(&stop);
        let previous_hook = panic::take_hook();
        panic::set_hook(Box::new(|info| {
            if info.payload().downcast_ref::<Interrupted>().is_none() {
                eprintln!("{info}");
            }
        }));
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(&cx)));
        panic::set_hook(previous_hook);
        match outcome {
            Ok(()) => false,
            Err(payload) if payload.is::<Interrupted>() => true,
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// Checks the whole life of a reversible step on this root, asserting after each revert that
    /// the tree is exactly as before (content, mode, owner and link targets of every entry):
    ///
    /// 1. probe, backup, apply, verify, apply again (harmless), verify, revert, revert again;
    /// 2. apply stopped at its `apply-mid` checkpoint, then revert;
    /// 3. apply, then revert stopped at its `revert-mid` checkpoint, then revert again.
    pub fn round_trip(&self, step: &Step) {
        let before = self.snapshot();
        let cx = self.cx();

        let prior = super::probe(step, &cx).expect("probe");
        super::backup(step, &cx, &prior).expect("backup");
        assert_eq!(self.snapshot(), before, "backup changed the root");
        super::apply(step, &cx, &prior).expect("apply");
        super::verify(step, &cx).expect("verify after apply");
        super::apply(step, &cx, &prior).expect("second apply");
        super::verify(step, &cx).expect("verify after the second apply");
        super::revert(step, &cx, &prior).expect("revert");
        assert_eq!(self.snapshot(), before, "revert did not restore the tree");
        super::revert(step, &cx, &prior).expect("second revert");
        assert_eq!(self.snapshot(), before, "a second revert changed the tree");

        let prior = super::probe(step, &cx).expect("probe after revert");
        super::backup(step, &cx, &prior).expect("backup after revert");
        let reached = self.interrupt_at("apply-mid", |cx| {
            let _ = super::apply(step, cx, &prior);
        });
        assert!(reached, "apply of {} never reached apply-mid", step.kind());
        super::revert(step, &cx, &prior).expect("revert after a half apply");
        assert_eq!(self.snapshot(), before, "revert after a half apply");

        super::apply(step, &cx, &prior).expect("apply before an interrupted revert");
        let reached = self.interrupt_at("revert-mid", |cx| {
            let _ = super::revert(step, cx, &prior);
        });
        assert!(
            reached,
            "revert of {} never reached revert-mid",
            step.kind()
        );
        super::revert(step, &cx, &prior).expect("revert after an interrupted revert");
        assert_eq!(
            self.snapshot(),
            before,
            "revert after an interrupted revert"
        );
    }
}

/// Describes every entry below `root` by its relative path: type, permission bits, owner, and
/// the SHA-256 of a file's content or a symbolic link's target.
pub fn tree_snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(metadata) = fs::symlink_metadata(&path) else {
                continue;
            };
            let relative = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let owner = format!(
                "{:04o} {}:{}",
                metadata.mode() & 0o7777,
                metadata.uid(),
                metadata.gid()
            );
            let description = if metadata.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap_or_default();
                format!("link -> {}", target.display())
            } else if metadata.is_dir() {
                pending.push(path.clone());
                format!("dir {owner}")
            } else {
                let content = fs::read(&path).unwrap_or_default();
                format!("file {owner} {}", super::rootfs::sha256_hex(&content))
            };
            out.insert(relative, description);
        }
    }
    out
}

/// Writes test account databases below `root`: `root` (uid 0), `alice` (uid 1000, group
/// `alice` 1000, member of `adm` 4, home `/home/alice` with an empty `.ssh`), `bob` (uid 1001,
/// locked) and `nopass` (uid 1002, locked without a password). `etc/shadow` and `etc/gshadow`
/// have mode 0640 and group `shadow` (42).
pub fn write_accounts(root: &Path) {
    let write = |relative: &str, text: &str, mode: u32, gid: u32| {
        let path = root.join(relative);
        fs::create_dir_all(path.parent().expect("a parent")).expect("create etc");
        fs::write(&path, text).expect("write an account database");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("set the mode");
        std::os::unix::fs::chown(&path, Some(0), Some(gid)).expect("set the owner");
    };
    write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n\
         alice:x:1000:1000:Alice:/home/alice:/bin/bash\n\
         bob:x:1001:1001::/home/bob:/bin/sh\n\
         nopass:x:1002:1001::/home/nopass:/bin/sh\n",
        0o644,
        0,
    );
    write(
        "etc/group",
        "root:x:0:\nadm:x:4:alice\nalice:x:1000:\nbob:x:1001:\nshadow:x:42:\n",
        0o644,
        0,
    );
    write(
        "etc/shadow",
        "root:*:19000:0:99999:7:::\n\
         alice:$y$j9T$salt$hash:19800:0:99999:7:::\n\
         bob:!$6$salt$hash:19000:0:99999:7:::\n\
         nopass:!:19000:0:99999:7:::\n",
        0o640,
        42,
    );
    write(
        "etc/gshadow",
        "root:*::\nadm:*::alice\nalice:!::\nbob:!::\nshadow:*::\n",
        0o640,
        42,
    );
    let ssh = root.join("home/alice/.ssh");
    fs::create_dir_all(&ssh).expect("create .ssh");
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).expect("set the mode");
    std::os::unix::fs::chown(&ssh, Some(1000), Some(1000)).expect("set the owner");
}

/// Creates the directories and files dpkg needs to install into `root` with `dpkg --root`:
/// an empty status database, `available`, `info`, `updates` and `triggers`, and an empty
/// `var/cache/apt/archives`.
pub fn init_dpkg_root(root: &Path) {
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(dir)).expect("create the dpkg database");
    }
    for file in ["status", "available"] {
        fs::write(admin.join(file), "").expect("create the dpkg database");
    }
    fs::create_dir_all(root.join("var/cache/apt/archives")).expect("create the apt cache");
    fs::create_dir_all(root.join("usr/share")).expect("create usr/share");
}

/// A file a test package installs.
pub struct DebFile<'a> {
    /// Absolute path on the target, such as `/usr/share/hello/greeting`.
    pub path: &'a str,
    pub content: &'a [u8],
    pub mode: u32,
    /// Whether the file is a configuration file dpkg keeps on removal.
    pub conffile: bool,
}

/// Builds `PACKAGE_VERSION_all.deb` in `out_dir` with `dpkg-deb --build --root-owner-group`,
/// containing `files` and no maintainer scripts, and returns its path.
pub fn build_deb(out_dir: &Path, package: &str, version: &str, files: &[DebFile<'_>]) -> PathBuf {
    build_deb_with_scripts(out_dir, package, version, files, &[])
}

/// Builds a package as [`build_deb`] does, with maintainer scripts given as (name, content) pairs
/// such as `("preinst", "#!/bin/sh\nexit 0\n")`. dpkg runs them inside the root, which then
/// needs [`install_shell`].
pub fn build_deb_with_scripts(
    out_dir: &Path,
    package: &str,
    version: &str,
    files: &[DebFile<'_>],
    scripts: &[(&str, &str)],
) -> PathBuf {
    let tree = out_dir.join(format!("{package}-{version}-tree"));
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(tree.join("DEBIAN")).expect("create DEBIAN");
    fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {package}\nVersion: {version}\nArchitecture: all\n\
             Maintainer: tidegate tests <tests@example.org>\n\
             Description: test package {package} {version}\n"
        ),
    )
    .expect("write the control file");
    let mut conffiles = String::new();
    for file in files {
        let path = tree.join(file.path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().expect("a parent")).expect("create a package directory");
        fs::write(&path, file.content).expect("write a package file");
        fs::set_permissions(&path, fs::Permissions::from_mode(file.mode)).expect("set the mode");
        if file.conffile {
            conffiles.push_str(file.path);
            conffiles.push('\n');
        }
    }
    if !conffiles.is_empty() {
        fs::write(tree.join("DEBIAN/conffiles"), conffiles).expect("write conffiles");
    }
    for (name, content) in scripts {
        let path = tree.join("DEBIAN").join(name);
        fs::write(&path, content).expect("write a maintainer script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("set the mode");
    }

    let deb = out_dir.join(format!("{package}_{version}_all.deb"));
    let output = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zgzip"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .expect("run dpkg-deb");
    assert!(
        output.status.success(),
        "dpkg-deb --build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    deb
}

/// Copies the host's `/bin/sh` and the shared libraries `ldd` lists for it to the same paths
/// below `root`, so that dpkg can run maintainer scripts there with `chroot`.
pub fn install_shell(root: &Path) {
    let shell = fs::canonicalize("/bin/sh").expect("resolve /bin/sh");
    let output = Command::new("ldd").arg(&shell).output().expect("run ldd");
    let listing = String::from_utf8_lossy(&output.stdout);
    let libraries = listing
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from);
    for (source, target) in std::iter::once((shell, PathBuf::from("bin/sh")))
        .chain(libraries.map(|l| (l.clone(), l.strip_prefix("/").unwrap_or(&l).to_path_buf())))
    {
        let target = root.join(target);
        fs::create_dir_all(target.parent().expect("a parent")).expect("create a directory");
        fs::copy(&source, &target).expect("copy the shell");
    }
}

/// Installs a package file into `root` with `dpkg --root --install`, logging below `root`, and
/// panics with dpkg's message when that fails.
pub fn dpkg_install(root: &Path, deb: &Path) {
    let output = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()))
        .arg("--install")
        .arg(deb)
        .output()
        .expect("run dpkg");
    assert!(
        output.status.success(),
        "dpkg --install {} failed: {}",
        deb.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns one line per package in dpkg's database in `root`: name, version, architecture and status.
pub fn dpkg_query_all(root: &Path) -> String {
    let output = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            "-f",
            "${Package} ${Version} ${Architecture} ${Status}\n",
        ])
        .output()
        .expect("run dpkg-query");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Returns what `dpkg-query -W` reports for `package` in `root`: version, architecture and the
/// status words, or `None` when dpkg has no record of it.
pub fn dpkg_query(root: &Path, package: &str) -> Option<String> {
    let output = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            "-f",
            "${Version} ${Architecture} ${Status}\n",
            package,
        ])
        .output()
        .expect("run dpkg-query");
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Records every command and returns a canned output for it: that of the first rule whose prefix
/// the command starts with, or exit status 0 with no output.
#[derive(Default)]
pub struct RecordingRunner {
    pub commands: Mutex<Vec<Vec<String>>>,
    rules: Vec<(Vec<String>, CommandOutput)>,
}

impl RecordingRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule: commands starting with `prefix` return `status` and `stdout`.
    pub fn answer(mut self, prefix: &[&str], status: i32, stdout: &str) -> Self {
        self.rules.push((
            prefix.iter().map(|s| s.to_string()).collect(),
            CommandOutput {
                status: Some(status),
                stdout: stdout.as_bytes().to_vec(),
                stderr: Vec::new(),
            },
        ));
        self
    }

    pub fn commands(&self) -> Vec<Vec<String>> {
        self.commands.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl CommandRunner for RecordingRunner {
    fn run(&self, argv: &[String]) -> std::io::Result<CommandOutput> {
        if let Ok(mut commands) = self.commands.lock() {
            commands.push(argv.to_vec());
        }
        let answer = self
            .rules
            .iter()
            .find(|(prefix, _)| argv.starts_with(prefix))
            .map(|(_, output)| output.clone());
        Ok(answer.unwrap_or(CommandOutput {
            status: Some(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }))
    }
}

/// A shared recording runner, so a test can keep a handle while the harness owns the runner.
impl CommandRunner for std::sync::Arc<RecordingRunner> {
    fn run(&self, argv: &[String]) -> std::io::Result<CommandOutput> {
        self.as_ref().run(argv)
    }
}
