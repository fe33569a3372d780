//! The RPM collector end to end with a canned command runner, because `rpm` is not installed on
//! every machine that runs the tests.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use tidegate_agent::collect::rpm::{self, QUERY_FORMAT};
use tidegate_agent::collect::{Collector, CommandOutput, CommandRunner};
use tidegate_protocol::{Ecosystem, InstallState, Package, Selection};

/// A program and its arguments.
type Call = (String, Vec<OsString>);

/// Returns fixed output and records every command it runs.
#[derive(Clone)]
struct CannedRunner {
    stdout: &'static str,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl CommandRunner for CannedRunner {
    fn run(&self, program: &str, args: &[OsString]) -> io::Result<CommandOutput> {
        self.calls
            .lock()
            .unwrap()
            .push((program.to_owned(), args.to_vec()));
        Ok(CommandOutput {
            success: true,
            stdout: self.stdout.as_bytes().to_vec(),
            stderr: vec![],
        })
    }
}

const OUTPUT: &str = "(none)\tbash\t5.1.8\t9.el9\tx86_64\tbash\tbash(x86-64)\tconfig(bash)\t/bin/sh\t/bin/bash\n\
                      1\topenssl-libs\t3.0.7\t27.el9\tx86_64\topenssl-libs\tlibcrypto.so.3()(64bit)\n\
                      (none)\tgpg-pubkey\tfd431d51\t4ae0493b\t(none)\n\
                      2\tvim-minimal\t8.2.2637\t20.el9_1\tx86_64\tvi\t/usr/bin/vi\n\
                      (none)\tkernel-core\t5.14.0\t362.8.1.el9_3\tx86_64\n\
                      (none)\tkernel-core\t5.14.0\t427.13.1.el9_4\tx86_64\n\
                      1:\tbroken\t1\t1\tx86_64\n";

fn rpm_row(name: &str, version: &str, provides: &[&str]) -> Package {
    Package {
        ecosystem: Ecosystem::Rpm,
        name: name.into(),
        arch: "x86_64".into(),
        version: version.into(),
        state: InstallState::Installed,
        selection: Selection::Install,
        provides: provides.iter().map(|name| name.to_string()).collect(),
    }
}

#[test]
fn canned_query_gives_rows() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("var/lib/rpm")).unwrap();
    // Berkeley DB's file name; the canned runner never opens it.
    fs::write(root.path().join("var/lib/rpm/Packages"), b"").unwrap();
    let runner = CannedRunner {
        stdout: OUTPUT,
        calls: Arc::default(),
    };

    let inventory = Collector::new(root.path())
        .with_command_runner(runner.clone())
        .collect();

    assert_eq!(
        inventory.packages,
        vec![
            rpm_row("bash", "5.1.8-9.el9", &["/bin/sh", "/bin/bash"]),
            rpm_row("kernel-core", "5.14.0-427.13.1.el9_4", &[]),
            rpm_row("openssl-libs", "1:3.0.7-27.el9", &[]),
            rpm_row("vim-minimal", "2:8.2.2637-20.el9_1", &["vi", "/usr/bin/vi"]),
        ]
    );
    let messages: Vec<&str> = inventory
        .warnings
        .iter()
        .filter(|warning| warning.source == rpm::SOURCE)
        .map(|warning| warning.message.as_str())
        .collect();
    assert_eq!(
        messages,
        vec!["rpm query output line 7, package broken: invalid epoch `1:`: expected digits or `(none)`; line skipped"]
    );

    let calls = runner.calls.lock().unwrap();
    let expected_args: Vec<OsString> = vec![
        "--root".into(),
        root.path().as_os_str().to_owned(),
        "--dbpath".into(),
        "/var/lib/rpm".into(),
        "-qa".into(),
        "--queryformat".into(),
        QUERY_FORMAT.into(),
    ];
    assert_eq!(*calls, vec![("rpm".to_owned(), expected_args)]);
}

#[test]
fn sysimage_database_is_found() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("usr/lib/sysimage/rpm")).unwrap();
    fs::write(root.path().join("usr/lib/sysimage/rpm/rpmdb.sqlite"), b"").unwrap();
    let runner = CannedRunner {
        stdout: "(none)\tbash\t5.2.26\t3.fc40\tx86_64\n",
        calls: Arc::default(),
    };

    let inventory = Collector::new(root.path())
        .with_command_runner(runner.clone())
        .collect();

    assert_eq!(
        inventory.packages,
        vec![rpm_row("bash", "5.2.26-3.fc40", &[])]
    );
    let calls = runner.calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    let database: [OsString; 2] = ["--dbpath".into(), "/usr/lib/sysimage/rpm".into()];
    assert_eq!(calls[0].1[2..4], database);
}

#[test]
fn no_database_runs_nothing() {
    let root = tempfile::tempdir().unwrap();
    // An empty database directory, as the `rpm` package on Debian leaves it, is no database.
    fs::create_dir_all(root.path().join("var/lib/rpm")).unwrap();
    let runner = CannedRunner {
        stdout: OUTPUT,
        calls: Arc::default(),
    };

    let inventory = Collector::new(root.path())
        .with_command_runner(runner.clone())
        .collect();

    assert_eq!(inventory.packages, vec![]);
    assert!(runner.calls.lock().unwrap().is_empty());
}

fn command_exists(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs a setup command and returns its error output when it fails.
fn run_setup(program: &str, args: &[&OsStr]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

const EPOCH_SPEC: &str = "Name: tidegate-epoch\nVersion: 2.4\nRelease: 3.el9\nEpoch: 1\n\
                          Summary: test package\nLicense: MIT\nBuildArch: noarch\n\
                          Provides: webserver\nProvides: demo-capability = 2.4\n\
                          %description\ntest package\n%files\n";
const PLAIN_SPEC: &str = "Name: tidegate-plain\nVersion: 0.9\nRelease: 1\nSummary: test package\n\
                          License: MIT\nBuildArch: noarch\n%description\ntest package\n%files\n";

/// Builds the two test packages with rpmbuild below `work` and installs them into a database at
/// `<root>/var/lib/rpm`.
fn install_test_packages(work: &Path, root: &Path) -> Result<(), String> {
    let top = work.join("build");
    fs::create_dir_all(top.join("SPECS")).map_err(|error| error.to_string())?;
    let topdir = format!("_topdir {}", top.display());
    let tmppath = format!("_tmppath {}", work.display());
    // Keeps rpmbuild away from the host's database, which it would open to check build
    // dependencies.
    let dbpath = format!("_dbpath {}", work.join("build-database").display());
    for (name, spec) in [("epoch.spec", EPOCH_SPEC), ("plain.spec", PLAIN_SPEC)] {
        let path = top.join("SPECS").join(name);
        fs::write(&path, spec).map_err(|error| error.to_string())?;
        let define: &OsStr = "--define".as_ref();
        run_setup(
            "rpmbuild",
            &[
                define,
                topdir.as_ref(),
                define,
                tmppath.as_ref(),
                define,
                dbpath.as_ref(),
                "--nodeps".as_ref(),
                "-bb".as_ref(),
                path.as_os_str(),
            ],
        )?;
    }

    let database: [&OsStr; 4] = [
        "--root".as_ref(),
        root.as_os_str(),
        "--dbpath".as_ref(),
        "/var/lib/rpm".as_ref(),
    ];
    let mut init = database.to_vec();
    init.push("--initdb".as_ref());
    run_setup("rpm", &init)?;

    let packages: Vec<PathBuf> = fs::read_dir(top.join("RPMS/noarch"))
        .map_err(|error| error.to_string())?
        .map(|entry| {
            entry
                .map(|entry| entry.path())
                .map_err(|error| error.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut install = database.to_vec();
    install.extend::<[&OsStr; 3]>(["-i".as_ref(), "--nodeps".as_ref(), "--noscripts".as_ref()]);
    install.extend(packages.iter().map(|path| path.as_os_str()));
    run_setup("rpm", &install)
}

#[test]
fn real_rpm_database_in_temporary_root() {
    if !command_exists("rpm") || !command_exists("rpmbuild") {
        eprintln!("skipped: rpm or rpmbuild is not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    fs::create_dir_all(&root).unwrap();
    if let Err(message) = install_test_packages(work.path(), &root) {
        eprintln!("skipped: building or installing the test packages failed: {message}");
        return;
    }

    let mut inventory = Collector::new(&root).collect();

    // rpm stores provides in its own order, so compare them sorted.
    for package in &mut inventory.packages {
        package.provides.sort();
    }
    let epoch = Package {
        arch: "noarch".into(),
        ..rpm_row(
            "tidegate-epoch",
            "1:2.4-3.el9",
            &["demo-capability", "webserver"],
        )
    };
    let plain = Package {
        arch: "noarch".into(),
        ..rpm_row("tidegate-plain", "0.9-1", &[])
    };
    assert_eq!(inventory.packages, vec![epoch, plain]);
    assert_eq!(inventory.warnings, vec![]);
}

#[test]
fn unchanged_database_is_queried_once() {
    let root = tempfile::tempdir().unwrap();
    let database = root.path().join("var/lib/rpm");
    fs::create_dir_all(&database).unwrap();
    fs::write(database.join("rpmdb.sqlite"), b"version 1").unwrap();
    let runner = CannedRunner {
        stdout: "(none)\tbash\t5.1.8\t9.el9\tx86_64\n",
        calls: Arc::default(),
    };
    let mut collector = Collector::new(root.path()).with_command_runner(runner.clone());

    let first = collector.collect();
    let second = collector.collect();
    assert_eq!(second, first);
    assert_eq!(runner.calls.lock().unwrap().len(), 1);

    // A reading rpm updates SQLite's -shm file and Berkeley DB's environment files.
    fs::write(database.join("rpmdb.sqlite-shm"), b"reader marks").unwrap();
    fs::write(database.join("__db.001"), b"environment").unwrap();
    collector.collect();
    assert_eq!(runner.calls.lock().unwrap().len(), 1);

    fs::write(
        database.join("rpmdb.sqlite"),
        b"version 2, after a transaction",
    )
    .unwrap();
    let third = collector.collect();
    assert_eq!(runner.calls.lock().unwrap().len(), 2);
    assert_eq!(third.packages, first.packages);
}
