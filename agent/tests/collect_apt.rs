//! Pending updates from APT's package lists end to end: a fixture status file and fixture lists in
//! a temporary root, read through `Collector::collect`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tempfile::TempDir;
use tidegate_agent::collect::{apt, dpkg, Collector};
use tidegate_protocol::{Ecosystem, PendingUpdate, Warning};

const MAIN_AMD64: &str = "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages";
const MAIN_I386: &str = "deb.debian.org_debian_dists_bookworm_main_binary-i386_Packages";
const UPDATES: &str = "deb.debian.org_debian_dists_bookworm-updates_main_binary-amd64_Packages";
const SECURITY: &str =
    "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages";
const XZ_COMPRESSED: &str = "deb.debian.org_debian_dists_bookworm_contrib_binary-amd64_Packages.xz";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/apt")
        .join(name)
}

fn set_mtime(path: &Path, unix_s: u64) {
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(unix_s))
        .unwrap();
}

/// Builds a root with the fixture status file and the given fixture lists, each with its
/// modification time in Unix seconds.
fn root_with_lists(lists: &[(&str, u64)]) -> TempDir {
    let root = tempfile::tempdir().unwrap();
    let status = root.path().join(dpkg::STATUS_PATH);
    fs::create_dir_all(status.parent().unwrap()).unwrap();
    fs::copy(fixture("status"), status).unwrap();

    let directory = root.path().join(apt::LISTS_PATH);
    fs::create_dir_all(directory.join("partial")).unwrap();
    for (name, mtime) in lists {
        let target = directory.join(name);
        fs::copy(fixture("lists").join(name), &target).unwrap();
        set_mtime(&target, *mtime);
    }
    root
}

fn update(
    name: &str,
    arch: &str,
    installed: &str,
    candidate: &str,
    held: bool,
    security: bool,
) -> PendingUpdate {
    PendingUpdate {
        ecosystem: Ecosystem::Deb,
        name: name.into(),
        arch: arch.into(),
        installed_version: installed.into(),
        candidate_version: candidate.into(),
        held,
        security,
    }
}

fn apt_warnings(warnings: &[Warning]) -> Vec<&str> {
    warnings
        .iter()
        .filter(|warning| warning.source == apt::SOURCE)
        .map(|warning| warning.message.as_str())
        .collect()
}

#[test]
fn candidates_from_all_lists() {
    let root = root_with_lists(&[
        (MAIN_AMD64, 1_700_000_000),
        (MAIN_I386, 1_699_999_000),
        (UPDATES, 1_700_000_500),
        (SECURITY, 1_700_001_000),
        (
            "deb.debian.org_debian_dists_bookworm_non-free_binary-amd64_Packages.diff_Index",
            1_800_000_000,
        ),
        (
            "deb.debian.org_debian_dists_bookworm_InRelease",
            1_800_000_000,
        ),
    ]);

    let inventory = Collector::new(root.path()).collect();

    // bash: the list has a lower version. libssl3 i386: the list has the installed version.
    // nginx: only arm64 is offered. oldconf: only its configuration files are installed.
    // dnsutils: 9.99-1 has epoch 0, below the installed epoch 1.
    let expected = vec![
        update(
            "curl",
            "amd64",
            "7.88.1-10+deb12u4",
            "7.88.1-10+deb12u8",
            false,
            true,
        ),
        update(
            "dnsutils",
            "all",
            "1:9.18.19-1~deb12u1",
            "1:9.18.28-1~deb12u2",
            false,
            false,
        ),
        update(
            "libssl3",
            "amd64",
            "3.0.11-1~deb12u2",
            "3.0.15-1~deb12u1",
            false,
            true,
        ),
        update(
            "tzdata",
            "all",
            "2024a-0+deb12u1",
            "2025a-0+deb12u1",
            true,
            false,
        ),
    ];
    assert_eq!(inventory.pending_updates, expected);
    assert_eq!(inventory.package_lists_updated_unix_s, Some(1_700_001_000));
    assert_eq!(apt_warnings(&inventory.warnings), Vec::<&str>::new());
    assert_eq!(inventory.packages.len(), 8);
}

#[test]
fn no_lists_directory_means_no_updates() {
    let root = root_with_lists(&[]);
    fs::remove_dir_all(root.path().join(apt::LISTS_PATH)).unwrap();

    let inventory = Collector::new(root.path()).collect();

    assert_eq!(inventory.pending_updates, vec![]);
    assert_eq!(inventory.package_lists_updated_unix_s, None);
    assert_eq!(apt_warnings(&inventory.warnings), Vec::<&str>::new());
}

#[test]
fn xz_lists_give_a_warning() {
    let root = root_with_lists(&[(XZ_COMPRESSED, 1_700_000_000)]);

    let inventory = Collector::new(root.path()).collect();

    assert_eq!(inventory.pending_updates, vec![]);
    assert_eq!(inventory.package_lists_updated_unix_s, None);
    let expected = format!(
        "{} contains package lists compressed other than with LZ4 or gzip, which are not read; \
         pending updates may be missing (set Acquire::GzipIndexes \"false\" in APT's \
         configuration to keep plain lists)",
        root.path().join(apt::LISTS_PATH).display()
    );
    assert_eq!(apt_warnings(&inventory.warnings), vec![expected.as_str()]);
}

/// Writes `plain` compressed into `path`: LZ4 frame format for `.lz4`, gzip for `.gz`, as APT
/// keeps lists with `Acquire::GzipIndexes`.
fn write_compressed(plain: &[u8], path: &Path) {
    use std::io::Write;
    let file = File::create(path).unwrap();
    if path.extension().is_some_and(|ext| ext == "lz4") {
        let mut encoder = lz4_flex::frame::FrameEncoder::new(file);
        encoder.write_all(plain).unwrap();
        encoder.finish().unwrap();
    } else {
        let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        encoder.write_all(plain).unwrap();
        encoder.finish().unwrap();
    }
}

#[test]
fn lz4_and_gzip_lists_give_the_same_updates() {
    let lists = [
        (MAIN_AMD64, 1_700_000_000),
        (MAIN_I386, 1_699_999_000),
        (UPDATES, 1_700_000_500),
        (SECURITY, 1_700_001_000),
    ];
    let plain_root = root_with_lists(&lists);
    let compressed_root = root_with_lists(&[]);
    let directory = compressed_root.path().join(apt::LISTS_PATH);
    for (index, (name, mtime)) in lists.iter().enumerate() {
        let suffix = if index % 2 == 0 { "lz4" } else { "gz" };
        let path = directory.join(format!("{name}.{suffix}"));
        write_compressed(&fs::read(fixture("lists").join(name)).unwrap(), &path);
        set_mtime(&path, *mtime);
    }

    let plain = Collector::new(plain_root.path()).collect();
    let compressed = Collector::new(compressed_root.path()).collect();

    assert_eq!(compressed.pending_updates.len(), 4);
    assert_eq!(compressed.pending_updates, plain.pending_updates);
    assert_eq!(compressed.package_lists_updated_unix_s, Some(1_700_001_000));
    assert_eq!(apt_warnings(&compressed.warnings), Vec::<&str>::new());
}

#[test]
fn corrupt_lz4_list_is_a_warning_naming_the_file() {
    let root = root_with_lists(&[(MAIN_AMD64, 1_700_000_000)]);
    let path = root
        .path()
        .join(apt::LISTS_PATH)
        .join(format!("{SECURITY}.lz4"));
    fs::write(&path, b"this is not an LZ4 frame").unwrap();

    let inventory = Collector::new(root.path()).collect();

    let warnings = apt_warnings(&inventory.warnings);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&path.display().to_string()),
        "{warnings:?}"
    );
}

#[test]
fn lists_without_dpkg_are_not_read() {
    let root = root_with_lists(&[(MAIN_AMD64, 1_700_000_000)]);
    fs::remove_file(root.path().join(dpkg::STATUS_PATH)).unwrap();

    let inventory = Collector::new(root.path()).collect();

    assert_eq!(inventory.packages, vec![]);
    assert_eq!(inventory.pending_updates, vec![]);
    assert_eq!(inventory.package_lists_updated_unix_s, None);
}

#[test]
fn list_directory_entries_are_skipped() {
    let root = root_with_lists(&[(SECURITY, 1_700_000_000)]);
    // A directory with a list's name is not a list.
    fs::create_dir(root.path().join(apt::LISTS_PATH).join(MAIN_AMD64)).unwrap();

    let inventory = Collector::new(root.path()).collect();

    assert_eq!(inventory.pending_updates.len(), 2);
    assert_eq!(inventory.package_lists_updated_unix_s, Some(1_700_000_000));
    assert_eq!(apt_warnings(&inventory.warnings), Vec::<&str>::new());
}

#[test]
fn repeated_collection_sees_changes() {
    let root = root_with_lists(&[(MAIN_AMD64, 1_700_000_000), (SECURITY, 1_700_001_000)]);
    let lists = root.path().join(apt::LISTS_PATH);
    let mut collector = Collector::new(root.path());
    let curl = |inventory: &tidegate_protocol::Inventory| {
        inventory
            .pending_updates
            .iter()
            .find(|update| update.name == "curl")
            .map(|update| update.candidate_version.clone())
    };

    let first = collector.collect();
    assert_eq!(curl(&first), Some("7.88.1-10+deb12u8".to_owned()));
    assert_eq!(collector.collect(), first);

    // APT replaces a list by renaming a new file over it; this one has the same modification time.
    let replacement = lists.join("partial/new_Packages");
    fs::write(
        &replacement,
        "Package: curl\nArchitecture: amd64\nVersion: 7.88.1-10+deb12u9\n",
    )
    .unwrap();
    set_mtime(&replacement, 1_700_001_000);
    fs::rename(&replacement, lists.join(SECURITY)).unwrap();
    let second = collector.collect();
    assert_eq!(curl(&second), Some("7.88.1-10+deb12u9".to_owned()));
    assert_eq!(second.package_lists_updated_unix_s, Some(1_700_001_000));

    // Upgrading curl to the candidate removes its pending update.
    let status_path = root.path().join(dpkg::STATUS_PATH);
    let status = fs::read_to_string(&status_path).unwrap();
    fs::write(
        &status_path,
        status.replace("Version: 7.88.1-10+deb12u4", "Version: 7.88.1-10+deb12u9"),
    )
    .unwrap();
    let third = collector.collect();
    assert_eq!(curl(&third), None);
}

/// This host's real lists, read only: the agent must find exactly the upgrades APT itself lists.
#[test]
fn host_pending_updates_match_apt() {
    let Ok(output) = std::process::Command::new("apt")
        .args(["list", "--upgradable"])
        .env("LC_ALL", "C")
        .output()
    else {
        println!("skipped: apt is not installed");
        return;
    };
    let listing = String::from_utf8_lossy(&output.stdout);
    let mut expected: Vec<String> = listing
        .lines()
        .filter(|line| line.contains("[upgradable from:"))
        .filter_map(|line| line.split('/').next())
        .map(str::to_owned)
        .collect();
    expected.sort();

    let inventory = Collector::new("/").collect();
    let mut found: Vec<String> = inventory
        .pending_updates
        .iter()
        .map(|update| update.name.clone())
        .collect();
    found.sort();
    assert_eq!(found, expected);
}
