//! The RPM collector end to end with a canned command runner, because `rpm` is not installed on
//! every machine that runs the tests.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::sync::{Arc, Mutex};

use tidegate_agent::collect::rpm::{self, QUERY_FORMAT};
use tidegate_agent::collect::{Collector, CommandOutput, CommandRunner};
use tidegate_protocol::{Ecosystem, InstallState, Package, Selection};

/// Returns fixed output and records every command it was asked to run.
#[derive(Clone)]
struct CannedRunner {
    stdout: &'static str,
    calls: Arc<Mutex<Vec<(String, Vec<OsString>)>>>,
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
    let runner = CannedRunner {
        stdout: "(none)\tbash\t5.2.26\t3.fc40\tx86_64\n",
        calls: Arc::default(),
    };

    let inventory = Collector::new(root.path())
        .with_command_runner(runner)
        .collect();

    assert_eq!(
        inventory.packages,
        vec![rpm_row("bash", "5.2.26-3.fc40", &[])]
    );
}

#[test]
fn no_database_runs_nothing() {
    let root = tempfile::tempdir().unwrap();
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
