//! The APK collector end to end: a fixture installed database in a temporary root, read through
//! `Collector::collect`.

use std::fs;
use std::path::Path;

use tidegate_agent::collect::{apk, Collector};
use tidegate_protocol::{Ecosystem, InstallState, Package, Selection};

fn apk_row(name: &str, version: &str, provides: &[&str]) -> Package {
    Package {
        ecosystem: Ecosystem::Apk,
        name: name.into(),
        arch: "x86_64".into(),
        version: version.into(),
        state: InstallState::Installed,
        selection: Selection::Install,
        provides: provides.iter().map(|name| name.to_string()).collect(),
    }
}

#[test]
fn installed_database_gives_rows_and_warning() {
    let root = tempfile::tempdir().unwrap();
    let database = root.path().join(apk::INSTALLED_PATH);
    fs::create_dir_all(database.parent().unwrap()).unwrap();
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/apk/installed"),
        &database,
    )
    .unwrap();

    let inventory = Collector::new(root.path()).collect();

    assert_eq!(
        inventory.packages,
        vec![
            apk_row("alpine-baselayout-data", "3.4.3-r2", &[]),
            apk_row("busybox-binsh", "1.36.1-r15", &["/bin/sh", "cmd:sh"]),
            apk_row(
                "musl",
                "1.2.4_git20230717-r4",
                &["so:libc.musl-x86_64.so.1"]
            ),
        ]
    );
    let messages: Vec<&str> = inventory
        .warnings
        .iter()
        .filter(|warning| warning.source == apk::SOURCE)
        .map(|warning| warning.message.as_str())
        .collect();
    let expected = format!(
        "{} line 44: no P: (package name) line; stanza skipped",
        database.display()
    );
    assert_eq!(messages, vec![expected.as_str()]);
    assert_eq!(inventory.pending_updates, vec![]);
}

#[test]
fn apk_and_dpkg_rows_coexist() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("lib/apk/db")).unwrap();
    fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
    fs::write(
        root.path().join(apk::INSTALLED_PATH),
        "P:curl\nV:8.5.0-r0\nA:x86_64\n",
    )
    .unwrap();
    fs::write(
        root.path().join("var/lib/dpkg/status"),
        "Package: curl\nStatus: install ok installed\nArchitecture: x86_64\nVersion: 7.88.1-10\n",
    )
    .unwrap();

    let inventory = Collector::new(root.path()).collect();

    let keys: Vec<(Ecosystem, &str, &str)> = inventory
        .packages
        .iter()
        .map(|package| {
            (
                package.ecosystem,
                package.name.as_str(),
                package.version.as_str(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            (Ecosystem::Deb, "curl", "7.88.1-10"),
            (Ecosystem::Apk, "curl", "8.5.0-r0")
        ]
    );
}
