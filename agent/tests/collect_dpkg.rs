//! The dpkg collector end to end: fixture status files in a temporary root, read through
//! `Collector::collect`, and this machine's own status database, read only.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tidegate_agent::collect::dpkg::{self, parse_status};
use tidegate_agent::collect::Collector;
use tidegate_protocol::{Ecosystem, InstallState, Inventory, Package, Selection, Warning};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dpkg")
        .join(name)
}

/// Builds a root whose dpkg status file is a copy of the fixture `name`.
fn root_with_status(name: &str) -> TempDir {
    let root = tempfile::tempdir().unwrap();
    let status = root.path().join(dpkg::STATUS_PATH);
    fs::create_dir_all(status.parent().unwrap()).unwrap();
    fs::copy(fixture(name), status).unwrap();
    root
}

fn collect(root: &Path) -> Inventory {
    Collector::new(root).collect()
}

fn deb(
    name: &str,
    arch: &str,
    version: &str,
    state: InstallState,
    selection: Selection,
) -> Package {
    Package {
        ecosystem: Ecosystem::Deb,
        name: name.into(),
        arch: arch.into(),
        version: version.into(),
        state,
        selection,
        provides: vec![],
    }
}

fn installed(name: &str, arch: &str, version: &str) -> Package {
    deb(
        name,
        arch,
        version,
        InstallState::Installed,
        Selection::Install,
    )
}

fn dpkg_warnings(inventory: &Inventory) -> Vec<&Warning> {
    inventory
        .warnings
        .iter()
        .filter(|warning| warning.source == dpkg::SOURCE)
        .collect()
}

#[test]
fn multiarch_rows_stay_separate() {
    let root = root_with_status("multiarch.status");

    let inventory = collect(root.path());

    assert_eq!(
        inventory.packages,
        vec![
            installed("dnsutils", "all", "1:9.18.19-1~deb12u1"),
            installed("libssl3", "amd64", "3.0.11-1~deb12u2"),
            installed("libssl3", "i386", "3.0.11-1~deb12u2"),
        ]
    );
    assert_eq!(dpkg_warnings(&inventory), Vec::<&Warning>::new());
    assert_eq!(inventory.pending_updates, vec![]);
    assert_eq!(inventory.package_lists_updated_unix_s, None);
}

#[test]
fn status_words_give_state_and_selection() {
    let root = root_with_status("states.status");

    let inventory = collect(root.path());

    let mut exim = installed("exim4-daemon-light", "amd64", "4.96-15+deb12u4");
    exim.provides = vec![
        "mail-transport-agent".into(),
        "exim4-localscanapi-6.0".into(),
    ];
    let expected = vec![
        exim,
        deb(
            "halfconf",
            "amd64",
            "3.3-1",
            InstallState::HalfConfigured,
            Selection::Install,
        ),
        deb(
            "halfinst",
            "amd64",
            "4.4-1",
            InstallState::HalfInstalled,
            Selection::Install,
        ),
        deb(
            "leaving",
            "amd64",
            "1.0-1",
            InstallState::Installed,
            Selection::Deinstall,
        ),
        deb(
            "oldconf",
            "amd64",
            "2.1-4",
            InstallState::ConfigFiles,
            Selection::Deinstall,
        ),
        deb(
            "pinned",
            "all",
            "2024a-0+deb12u1",
            InstallState::Installed,
            Selection::Hold,
        ),
        deb(
            "purging",
            "amd64",
            "1.0-2",
            InstallState::Installed,
            Selection::Purge,
        ),
        deb(
            "trig",
            "amd64",
            "252.22-1~deb12u1",
            InstallState::TriggersPending,
            Selection::Install,
        ),
    ];
    assert_eq!(inventory.packages, expected);
    assert_eq!(dpkg_warnings(&inventory), Vec::<&Warning>::new());

    let installed: Vec<&str> = inventory
        .packages
        .iter()
        .filter(|package| package.state.is_installed())
        .map(|package| package.name.as_str())
        .collect();
    assert_eq!(
        installed,
        vec!["exim4-daemon-light", "leaving", "pinned", "purging", "trig"]
    );
    let broken: Vec<&str> = inventory
        .packages
        .iter()
        .filter(|package| package.state.is_broken())
        .map(|package| package.name.as_str())
        .collect();
    assert_eq!(broken, vec!["halfconf", "halfinst"]);
}

#[test]
fn crlf_status_without_final_newline() {
    let bytes = fs::read(fixture("crlf.status")).unwrap();
    assert!(
        bytes.windows(2).any(|pair| pair == b"\r\n"),
        "fixture lost its CRLF endings"
    );
    assert!(
        bytes.ends_with(b"wget-ssl\r\n"),
        "fixture must end without a blank line"
    );
    let root = root_with_status("crlf.status");

    let inventory = collect(root.path());

    let mut wget = installed("wget", "amd64", "1.21.3-1+b2");
    wget.provides = vec!["wget-ssl".into()];
    assert_eq!(
        inventory.packages,
        vec![installed("curl", "amd64", "7.88.1-10+deb12u5"), wget]
    );
    assert_eq!(dpkg_warnings(&inventory), Vec::<&Warning>::new());
}

#[test]
fn malformed_stanzas_become_warnings() {
    let root = root_with_status("malformed.status");
    let path = root.path().join(dpkg::STATUS_PATH).display().to_string();

    let inventory = collect(root.path());

    assert_eq!(
        inventory.packages,
        vec![
            installed("good-one", "amd64", "1.0-1"),
            installed("good-two", "arm64", "5.0-1")
        ]
    );
    let messages: Vec<&str> = dpkg_warnings(&inventory)
        .iter()
        .map(|warning| warning.message.as_str())
        .collect();
    let expected = [
        format!("{path} line 6: no Package field; stanza skipped"),
        format!(
            "{path} line 14, package stray-line: line is neither `Field: value` nor a continuation \
             line starting with a space or tab; stanza skipped"
        ),
        format!(
            "{path} line 16, package no-version: no Version field, which state `installed` \
             requires; stanza skipped"
        ),
        format!(
            "{path} line 21, package bad-state: invalid Status `install ok configured-maybe`: \
             expected three words `want flag state`, such as `install ok installed`; stanza skipped"
        ),
    ];
    assert_eq!(messages, expected);
}

#[test]
fn journal_entries_override_status() {
    let root = tempfile::tempdir().unwrap();
    let dpkg_dir = root.path().join("var/lib/dpkg");
    fs::create_dir_all(dpkg_dir.join("updates")).unwrap();
    fs::write(
        dpkg_dir.join("status"),
        "Package: curl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 7.88.1-10\n\n\
         Package: libfoo\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\n\n\
         Package: bar\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n",
    )
    .unwrap();
    // dpkg writes one journal entry per change; the later entry wins.
    fs::write(
        dpkg_dir.join("updates/0000"),
        "Package: curl\nStatus: install reinstreq half-installed\nArchitecture: amd64\nVersion: 7.88.1-11\n",
    )
    .unwrap();
    fs::write(
        dpkg_dir.join("updates/0001"),
        "Package: curl\nStatus: install ok half-configured\nArchitecture: amd64\nVersion: 7.88.1-11\n",
    )
    .unwrap();
    fs::write(
        dpkg_dir.join("updates/0002"),
        "Package: libfoo\nStatus: purge ok not-installed\nArchitecture: amd64\n",
    )
    .unwrap();
    fs::write(
        dpkg_dir.join("updates/tmp.i"),
        "Package: bar\nStatus: garbage\n",
    )
    .unwrap();

    let inventory = collect(root.path());

    assert_eq!(
        inventory.packages,
        vec![
            installed("bar", "all", "1"),
            deb(
                "curl",
                "amd64",
                "7.88.1-11",
                InstallState::HalfConfigured,
                Selection::Install
            ),
        ]
    );
    assert_eq!(dpkg_warnings(&inventory), Vec::<&Warning>::new());
}

#[test]
fn missing_status_means_no_deb_rows() {
    let root = tempfile::tempdir().unwrap();

    let inventory = collect(root.path());

    assert_eq!(inventory.packages, vec![]);
    assert_eq!(inventory.pending_updates, vec![]);
    assert_eq!(inventory.package_lists_updated_unix_s, None);
    assert_eq!(inventory.warnings, vec![]);
}

#[test]
fn unreadable_status_is_a_warning() {
    let root = tempfile::tempdir().unwrap();
    // A directory where the file belongs fails to read even for root, unlike a permission change.
    fs::create_dir_all(root.path().join(dpkg::STATUS_PATH)).unwrap();

    let inventory = collect(root.path());

    assert_eq!(inventory.packages, vec![]);
    let warnings = dpkg_warnings(&inventory);
    assert_eq!(warnings.len(), 1);
    let prefix = format!(
        "failed to read {}: ",
        root.path().join(dpkg::STATUS_PATH).display()
    );
    assert!(
        warnings[0].message.starts_with(&prefix),
        "{}",
        warnings[0].message
    );
}

/// Counts the packages that dpkg itself reports in a state other than `not-installed`.
fn dpkg_query_row_count() -> Option<usize> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}\n"])
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "dpkg-query failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    Some(
        text.lines()
            .filter(|state| *state != "not-installed")
            .count(),
    )
}

#[test]
fn host_status_matches_dpkg_query() {
    if !Path::new("/var/lib/dpkg/status").is_file() {
        eprintln!("skipped: this host has no /var/lib/dpkg/status");
        return;
    }
    let Some(expected) = dpkg_query_row_count() else {
        eprintln!("skipped: dpkg-query is not installed");
        return;
    };

    // Only reads below `/`: the collectors never write.
    let mut collector = Collector::new("/");
    let started = Instant::now();
    let inventory = collector.collect();
    let first = started.elapsed();
    let started = Instant::now();
    collector.collect();
    eprintln!(
        "collected this host's inventory in {first:?}, then again in {:?}",
        started.elapsed()
    );

    let deb_rows = inventory
        .packages
        .iter()
        .filter(|package| package.ecosystem == Ecosystem::Deb)
        .count();
    assert_eq!(deb_rows, expected);
    assert_eq!(dpkg_warnings(&inventory), Vec::<&Warning>::new());

    let bytes = fs::read("/var/lib/dpkg/status").unwrap();
    let started = Instant::now();
    let parsed = parse_status(&bytes);
    eprintln!(
        "parsed this host's status file ({} bytes, {} rows) in {:?}",
        bytes.len(),
        parsed.packages.len(),
        started.elapsed()
    );
    assert_eq!(parsed.errors, vec![]);
}

/// Generates a status file of `count` installed packages, each stanza shaped like a real one
/// (about 20 lines with a long description, dependencies and conffiles).
fn generate_status(count: usize) -> String {
    let mut text = String::new();
    for index in 0..count {
        let arch = if index % 10 == 0 { "all" } else { "amd64" };
        write!(
            text,
            "Package: package-{index}\n\
             Status: install ok installed\n\
             Priority: optional\n\
             Section: libs\n\
             Installed-Size: {size}\n\
             Maintainer: Debian Example Team <team+example@tracker.debian.org>\n\
             Architecture: {arch}\n\
             Multi-Arch: same\n\
             Source: source-{source}\n\
             Version: 1:{index}.2.3-4+deb12u{patch}\n\
             Replaces: old-package-{index} (<< 1.0)\n\
             Provides: virtual-{index}, libvirtual{index} (= 1.0)\n\
             Depends: libc6 (>= 2.34), libssl3 (>= 3.0.0), zlib1g (>= 1:1.2.0)\n\
             Conffiles:\n /etc/package-{index}/main.conf 0123456789abcdef0123456789abcdef\n\
             Description: example library number {index}\n\
             \x20This is an example package, generated for measuring how fast the\n\
             \x20dpkg status parser runs on a database of realistic size.\n\
             \x20.\n\
             \x20It has a multi-line description, like most packages do.\n\
             Homepage: https://example.org/package-{index}\n\n",
            size = index * 7 % 9000,
            source = index / 3,
            patch = index % 9,
        )
        .unwrap();
    }
    text
}

#[test]
fn generated_status_of_2000_packages() {
    let text = generate_status(2000);

    // The best of several runs, so that a busy machine does not decide the result.
    let mut fastest = Duration::MAX;
    let mut parsed = parse_status(text.as_bytes());
    for _ in 0..5 {
        let started = Instant::now();
        parsed = parse_status(text.as_bytes());
        fastest = fastest.min(started.elapsed());
    }

    assert_eq!(parsed.errors, vec![]);
    assert_eq!(parsed.packages.len(), 2000);
    assert_eq!(parsed.packages[10].arch, "all");
    assert_eq!(parsed.packages[1999].version, "1:1999.2.3-4+deb12u1");
    assert_eq!(
        parsed.packages[7].provides,
        vec!["virtual-7", "libvirtual7"]
    );
    eprintln!("parsed {} bytes, 2000 packages, in {fastest:?}", text.len());
    // The budget holds for optimized code only; debug builds are several times slower.
    if !cfg!(debug_assertions) {
        assert!(
            fastest < Duration::from_millis(20),
            "parse took {fastest:?}"
        );
    }
}
