//! Host facts end to end: `os-release` from a temporary root, everything else from the machine
//! that runs the test.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use tidegate_agent::collect::Collector;
use tidegate_protocol::HostFacts;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/os-release")
        .join(name)
}

fn facts_with_os_release(relative: &str, fixture_name: &str) -> HostFacts {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::copy(fixture(fixture_name), path).unwrap();
    let inventory = Collector::new(root.path()).collect();
    assert_eq!(inventory.warnings, vec![]);
    inventory.facts
}

#[test]
fn os_release_in_etc() {
    let facts = facts_with_os_release("etc/os-release", "debian");
    assert_eq!(facts.os_name, "Debian GNU/Linux");
    assert_eq!(facts.os_version, "12");
}

#[test]
fn os_release_in_usr_lib() {
    let facts = facts_with_os_release("usr/lib/os-release", "alpine");
    assert_eq!(facts.os_name, "Alpine Linux");
    assert_eq!(facts.os_version, "3.19.1");
}

#[test]
fn etc_os_release_wins_over_usr_lib() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::create_dir_all(root.path().join("usr/lib")).unwrap();
    fs::copy(fixture("debian"), root.path().join("etc/os-release")).unwrap();
    fs::copy(fixture("alpine"), root.path().join("usr/lib/os-release")).unwrap();

    let facts = Collector::new(root.path()).collect().facts;

    assert_eq!(facts.os_name, "Debian GNU/Linux");
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

#[test]
fn running_host_facts() {
    let root = tempfile::tempdir().unwrap();
    let mut collector = Collector::new(root.path());

    let facts = collector.collect().facts;

    if let Some(hostname) = read_trimmed("/proc/sys/kernel/hostname") {
        assert_eq!(facts.hostname, hostname);
    }
    if let Some(kernel) = read_trimmed("/proc/sys/kernel/osrelease") {
        assert_eq!(facts.kernel_version, kernel);
    }
    if let Ok(output) = Command::new("uname").arg("-m").output() {
        assert_eq!(facts.arch, String::from_utf8_lossy(&output.stdout).trim());
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        facts.boot_time_unix_s > 1_000_000_000,
        "boot time {}",
        facts.boot_time_unix_s
    );
    assert!(
        facts.boot_time_unix_s <= now,
        "boot time {} is after now {now}",
        facts.boot_time_unix_s
    );
    assert!(facts.cpu_count >= 1);
    assert!(facts.memory_total_bytes > 0);
    // Without an os-release file in the root, the running system's name is reported.
    assert!(!facts.os_name.is_empty());

    // A second collection reuses the same sysinfo state and gives the same facts.
    assert_eq!(collector.collect().facts, facts);
}
