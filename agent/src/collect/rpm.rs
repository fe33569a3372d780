//! The RPM database, read through the `rpm` command, because its on-disk format (SQLite, Berkeley
//! DB or NDB, depending on the distribution) is private to librpm.
//!
//! The database is queried only when `<root>/var/lib/rpm` or `<root>/usr/lib/sysimage/rpm`
//! contains a database file (`rpmdb.sqlite`, `Packages` or `Packages.db`), and only if `rpm` is on
//! `PATH`. An empty directory is not queried, because `rpm -qa` would create an empty SQLite
//! database in it. The query passes the directory it found as `--dbpath`, so it reads that
//! database whatever default the installed `rpm` is configured with (Debian's `rpm` package, for
//! one, defaults to `~/.rpmdb`). The command runs through a [`CommandRunner`], so tests feed
//! canned output.
//!
//! Versions are written as `[epoch:]version-release`, with the epoch only when the database
//! records one. `%{EPOCH}` prints `(none)` for an unset epoch, and then no epoch is added.
//!
//! Limits of the rows:
//! - Provides omit the package's own name and every capability with parentheses (sonames such as
//!   `libc.so.6()(64bit)`, `config(bash)`, `bash(x86-64)`), which RPM generates automatically and
//!   which would make the report many times larger. Plain names and paths (`webserver`,
//!   `/bin/sh`) are kept.
//! - `gpg-pubkey` entries are skipped: they are imported signing keys, not software.
//! - Rows are keyed by name and architecture, so of several versions installed side by side (the
//!   usual case for `kernel`), only the highest is reported.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tidegate_protocol::version::rpm as rpm_version;
use tidegate_protocol::{Ecosystem, InstallState, Package, Selection, Warning};

use super::{error_chain, FileStamp, RecordError};

/// The warning source for this collector.
pub const SOURCE: &str = "rpm";

/// Database directories, relative to the root: the classic one and the one of newer Fedora and
/// openSUSE releases.
pub const DATABASE_PATHS: [&str; 2] = ["var/lib/rpm", "usr/lib/sysimage/rpm"];

/// The files of rpm's database backends: SQLite (rpm 4.16 and later), Berkeley DB and NDB.
pub const DATABASE_FILES: [&str; 3] = ["rpmdb.sqlite", "Packages", "Packages.db"];

/// One line per package: epoch, name, version, release, arch, then each provided name, all
/// separated by tabs.
pub const QUERY_FORMAT: &str =
    "%{EPOCH}\\t%{NAME}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}[\\t%{PROVIDENAME}]\\n";

/// The exit status and output of a finished command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Whether the command exited with status 0.
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs external commands for the collectors.
pub trait CommandRunner: Send + Sync {
    /// Runs `program` with `args` and waits for it. An error of kind `NotFound` means the program
    /// is not installed.
    fn run(&self, program: &str, args: &[OsString]) -> io::Result<CommandOutput>;
}

/// Runs commands as child processes, looked up on `PATH`, and kills one that runs longer than
/// `timeout`.
#[derive(Debug, Clone)]
pub struct SystemCommandRunner {
    pub timeout: Duration,
}

impl Default for SystemCommandRunner {
    /// Returns a runner with a 60-second timeout. It only bounds a query that hangs on a locked or
    /// damaged database, because a query of a few thousand packages is expected to take seconds
    /// at most (an estimate, not a measurement).
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
        }
    }
}

impl CommandRunner for SystemCommandRunner {
    fn run(&self, program: &str, args: &[OsString]) -> io::Result<CommandOutput> {
        let mut child = Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;

        // Both pipes are drained on threads, so a child that writes more than a pipe buffer holds
        // does not block while this thread waits for it to exit.
        let stdout = child.stdout.take().map(drain_on_thread);
        let stderr = child.stderr.take().map(drain_on_thread);

        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                // The child may have exited since try_wait; then kill fails, which changes nothing.
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{program} did not finish within {} s and was killed",
                        self.timeout.as_secs()
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        };

        let join = |handle: Option<thread::JoinHandle<io::Result<Vec<u8>>>>| match handle {
            Some(handle) => handle.join().unwrap_or_else(|_| Ok(Vec::new())),
            None => Ok(Vec::new()),
        };
        Ok(CommandOutput {
            success: status.success(),
            stdout: join(stdout)?,
            stderr: join(stderr)?,
        })
    }
}

fn drain_on_thread(
    mut pipe: impl Read + Send + 'static,
) -> thread::JoinHandle<io::Result<Vec<u8>>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes)?;
        Ok(bytes)
    })
}

/// An error that stopped the query of the RPM database.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("failed to run rpm --root {root}")]
    Run {
        root: String,
        #[source]
        source: io::Error,
    },
    #[error("rpm --root {root} failed: {stderr}")]
    Failed { root: String, stderr: String },
}

/// The problem that made a line of the query output be skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineErrorKind {
    #[error("expected at least 5 tab-separated fields (epoch, name, version, release, arch), found {found}")]
    MissingFields { found: usize },
    #[error("invalid epoch `{value}`: expected digits or `(none)`")]
    InvalidEpoch { value: String },
    #[error("empty {field}")]
    EmptyField { field: &'static str },
}

pub type LineError = RecordError<LineErrorKind>;

/// The result of parsing the query output: the package rows and the lines that were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedQuery {
    pub packages: Vec<Package>,
    pub errors: Vec<LineError>,
}

/// Parses the output of `rpm -qa --queryformat` with [`QUERY_FORMAT`]. Never panics, whatever the
/// input.
pub fn parse_query_output(text: &str) -> ParsedQuery {
    let mut parsed = ParsedQuery::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(Some(package)) => parsed.packages.push(package),
            Ok(None) => {}
            Err((package, kind)) => parsed.errors.push(LineError {
                line: index + 1,
                package,
                kind,
            }),
        }
    }
    keep_highest_versions(&mut parsed.packages);
    parsed
}

type LineResult = Result<Option<Package>, (Option<String>, LineErrorKind)>;

fn parse_line(line: &str) -> LineResult {
    let mut fields = line.split('\t');
    let (Some(epoch), Some(name), Some(version), Some(release), Some(arch)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        let found = line.split('\t').count();
        return Err((None, LineErrorKind::MissingFields { found }));
    };
    if name.is_empty() {
        return Err((None, LineErrorKind::EmptyField { field: "name" }));
    }
    let fail = |kind| Err((Some(name.to_owned()), kind));
    if name == "gpg-pubkey" {
        return Ok(None);
    }
    if version.is_empty() {
        return fail(LineErrorKind::EmptyField { field: "version" });
    }
    if release.is_empty() {
        return fail(LineErrorKind::EmptyField { field: "release" });
    }

    let full_version = match epoch {
        "(none)" => format!("{version}-{release}"),
        digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{digits}:{version}-{release}")
        }
        other => {
            return fail(LineErrorKind::InvalidEpoch {
                value: other.to_owned(),
            })
        }
    };
    // `(none)` is how rpm prints an unset tag; a package without an architecture has none.
    let arch = if arch == "(none)" { "" } else { arch };

    let mut provides: Vec<String> = Vec::new();
    for provided in fields {
        if provided.is_empty() || provided == name || provided.contains('(') {
            continue;
        }
        if !provides.iter().any(|known| known == provided) {
            provides.push(provided.to_owned());
        }
    }

    Ok(Some(Package {
        ecosystem: Ecosystem::Rpm,
        name: name.to_owned(),
        arch: arch.to_owned(),
        version: full_version,
        state: InstallState::Installed,
        selection: Selection::Install,
        provides,
    }))
}

/// Keeps one row per name and architecture, the one with the highest version.
fn keep_highest_versions(packages: &mut Vec<Package>) {
    packages.sort_by(|a, b| {
        (&a.name, &a.arch)
            .cmp(&(&b.name, &b.arch))
            .then_with(|| rpm_version::compare(&a.version, &b.version))
    });
    // After sorting, the highest version of each key is the last of its run.
    let mut kept: Vec<Package> = Vec::with_capacity(packages.len());
    for package in packages.drain(..) {
        match kept.last_mut() {
            Some(last) if last.name == package.name && last.arch == package.arch => *last = package,
            _ => kept.push(package),
        }
    }
    *packages = kept;
}

/// Returns the database directory below `root`, relative to it, or `None` when there is none.
fn find_database(root: &Path) -> Option<&'static str> {
    DATABASE_PATHS.into_iter().find(|relative| {
        let directory = root.join(relative);
        DATABASE_FILES
            .iter()
            .any(|file| directory.join(file).is_file())
    })
}

/// Queries the RPM database below `root` with `runner`. Returns `Ok(None)` when there is no
/// database or `rpm` is not installed.
pub fn query(root: &Path, runner: &dyn CommandRunner) -> Result<Option<ParsedQuery>, QueryError> {
    match find_database(root) {
        Some(database) => run_query(root, database, runner),
        None => Ok(None),
    }
}

fn run_query(
    root: &Path,
    database: &str,
    runner: &dyn CommandRunner,
) -> Result<Option<ParsedQuery>, QueryError> {
    let root_text = root.display().to_string();
    // rpm resolves `--dbpath` below `--root`.
    let args: Vec<OsString> = vec![
        "--root".into(),
        root.as_os_str().to_owned(),
        "--dbpath".into(),
        format!("/{database}").into(),
        "-qa".into(),
        "--queryformat".into(),
        QUERY_FORMAT.into(),
    ];
    let output = match runner.run("rpm", &args) {
        Ok(output) => output,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(QueryError::Run {
                root: root_text,
                source,
            })
        }
    };
    if !output.success {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.is_empty() {
            stderr = "no error output".to_owned();
        }
        return Err(QueryError::Failed {
            root: root_text,
            stderr,
        });
    }
    Ok(Some(parse_query_output(&String::from_utf8_lossy(
        &output.stdout,
    ))))
}

/// The result of the last query, reused while no file of the database changes, because each query
/// starts `rpm` and reads the whole database.
#[derive(Default)]
pub(crate) struct QueryCache {
    last: Option<(Vec<FileStamp>, ParsedQuery)>,
}

/// Stamps the files of a database directory, or returns `None` when it cannot be listed. Files
/// that a reading `rpm` changes are left out: SQLite's `-shm` index and Berkeley DB's `__db.*`
/// environment files.
fn stamp_database(directory: &Path) -> Option<Vec<FileStamp>> {
    let mut stamps = Vec::new();
    for entry in std::fs::read_dir(directory).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with("-shm") || name.starts_with("__db.") {
            continue;
        }
        stamps.push(FileStamp::of(&entry.path()));
    }
    stamps.sort_by(|a, b| a.path().cmp(b.path()));
    Some(stamps)
}

/// Queries the RPM database below `root`, or reuses the result in `cache` when the database did
/// not change, and appends its rows to `packages`. Problems become warnings.
pub(crate) fn collect(
    root: &Path,
    runner: &dyn CommandRunner,
    cache: &mut QueryCache,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<Warning>,
) {
    let Some(database) = find_database(root) else {
        cache.last = None;
        return;
    };
    let stamps = stamp_database(&root.join(database));
    if let (Some(stamps), Some((cached_stamps, cached))) = (&stamps, &cache.last) {
        if stamps == cached_stamps {
            add_rows(cached.clone(), packages, warnings);
            return;
        }
    }

    cache.last = None;
    match run_query(root, database, runner) {
        Ok(Some(parsed)) => {
            if let Some(stamps) = stamps {
                cache.last = Some((stamps, parsed.clone()));
            }
            add_rows(parsed, packages, warnings);
        }
        Ok(None) => {}
        Err(error) => warnings.push(Warning {
            source: SOURCE.into(),
            message: error_chain(&error),
        }),
    }
}

fn add_rows(parsed: ParsedQuery, packages: &mut Vec<Package>, warnings: &mut Vec<Warning>) {
    packages.extend(parsed.packages);
    for error in parsed.errors {
        warnings.push(Warning {
            source: SOURCE.into(),
            message: format!("rpm query output {error}; line skipped"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, arch: &str, version: &str, provides: &[&str]) -> Package {
        Package {
            ecosystem: Ecosystem::Rpm,
            name: name.into(),
            arch: arch.into(),
            version: version.into(),
            state: InstallState::Installed,
            selection: Selection::Install,
            provides: provides.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn epochs_come_from_database() {
        let output = "(none)\tbash\t5.1.8\t9.el9\tx86_64\tbash\tbash(x86-64)\tconfig(bash)\t/bin/sh\t/bin/bash\n\
                      1\topenssl\t3.0.7\t27.el9\tx86_64\topenssl\topenssl(x86-64)\n\
                      0\tzero\t1.0\t1\tnoarch\n";
        let parsed = parse_query_output(output);
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(
            parsed.packages,
            vec![
                row("bash", "x86_64", "5.1.8-9.el9", &["/bin/sh", "/bin/bash"]),
                row("openssl", "x86_64", "1:3.0.7-27.el9", &[]),
                row("zero", "noarch", "0:1.0-1", &[]),
            ]
        );
    }

    #[test]
    fn keys_and_bad_lines() {
        let output = "(none)\tgpg-pubkey\tfd431d51\t4ae0493b\t(none)\n\
                      (none)\tkernel\t5.14.0\t362.8.1.el9_3\tx86_64\n\
                      (none)\tkernel\t5.14.0\t427.13.1.el9_4\tx86_64\n\
                      x\tbroken\t1\t1\tx86_64\n\
                      only\ttwo\n\
                      (none)\tnorelease\t1\t\tx86_64\n";
        let parsed = parse_query_output(output);
        assert_eq!(
            parsed.packages,
            vec![row("kernel", "x86_64", "5.14.0-427.13.1.el9_4", &[])]
        );
        assert_eq!(
            parsed.errors,
            vec![
                LineError {
                    line: 4,
                    package: Some("broken".into()),
                    kind: LineErrorKind::InvalidEpoch { value: "x".into() },
                },
                LineError {
                    line: 5,
                    package: None,
                    kind: LineErrorKind::MissingFields { found: 2 }
                },
                LineError {
                    line: 6,
                    package: Some("norelease".into()),
                    kind: LineErrorKind::EmptyField { field: "release" },
                },
            ]
        );
    }

    struct CannedRunner(io::Result<CommandOutput>);

    impl CommandRunner for CannedRunner {
        fn run(&self, _program: &str, _args: &[OsString]) -> io::Result<CommandOutput> {
            match &self.0 {
                Ok(output) => Ok(output.clone()),
                Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
            }
        }
    }

    #[test]
    fn query_without_database_does_not_run() {
        let root = tempfile::tempdir().unwrap();
        let runner = CannedRunner(Err(io::Error::other("must not run")));
        assert!(query(root.path(), &runner).unwrap().is_none());
    }

    #[test]
    fn empty_database_directory_does_not_run() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/rpm")).unwrap();
        std::fs::create_dir_all(root.path().join("usr/lib/sysimage/rpm")).unwrap();
        let runner = CannedRunner(Err(io::Error::other("must not run")));
        assert!(query(root.path(), &runner).unwrap().is_none());
    }

    #[test]
    fn query_without_rpm_is_absent() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/rpm")).unwrap();
        std::fs::write(root.path().join("var/lib/rpm/rpmdb.sqlite"), b"").unwrap();
        let runner = CannedRunner(Err(io::Error::from(io::ErrorKind::NotFound)));
        assert!(query(root.path(), &runner).unwrap().is_none());
    }

    #[test]
    fn failed_query_names_root_and_stderr() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/lib/sysimage/rpm")).unwrap();
        std::fs::write(root.path().join("usr/lib/sysimage/rpm/Packages.db"), b"").unwrap();
        let runner = CannedRunner(Ok(CommandOutput {
            success: false,
            stdout: vec![],
            stderr: b"error: cannot open Packages database\n".to_vec(),
        }));
        let error = query(root.path(), &runner).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "rpm --root {} failed: error: cannot open Packages database",
                root.path().display()
            )
        );
    }

    #[test]
    fn system_runner_reports_missing_program() {
        let runner = SystemCommandRunner::default();
        let error = runner.run("tidegate-no-such-program", &[]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn system_runner_captures_output() {
        let runner = SystemCommandRunner::default();
        let args: Vec<OsString> = vec![
            "-c".into(),
            "printf 'a\\tb\\n'; printf oops >&2; exit 3".into(),
        ];
        let output = runner.run("sh", &args).unwrap();
        assert!(!output.success);
        assert_eq!(output.stdout, b"a\tb\n");
        assert_eq!(output.stderr, b"oops");
    }

    #[test]
    fn system_runner_kills_on_timeout() {
        let runner = SystemCommandRunner {
            timeout: Duration::from_millis(200),
        };
        let started = Instant::now();
        let error = runner.run("sleep", &["5".into()]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_output_never_panics(text in "\\PC*") {
            let _ = parse_query_output(&text);
        }

        #[test]
        fn field_like_lines_never_panic(
            lines in proptest::collection::vec("(\\(none\\)|[0-9]{0,3}|x)(\t[a-z0-9.()]{0,4}){0,7}", 0..20)
        ) {
            let _ = parse_query_output(&lines.join("\n"));
        }
    }
}
