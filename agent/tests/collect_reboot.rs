//! The reboot-required flag end to end, in temporary roots read through `Collector::collect`.

use std::fs;
use std::path::Path;

use tidegate_agent::collect::Collector;
use tidegate_protocol::RebootRequired;

fn write(root: &Path, relative: &str, contents: &str) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

fn reboot_of(root: &Path) -> RebootRequired {
    Collector::new(root).collect().reboot
}

#[test]
fn no_flag_means_no_reboot() {
    let root = tempfile::tempdir().unwrap();
    // A package list without the flag itself does not ask for a reboot.
    write(root.path(), "run/reboot-required.pkgs", "libc6\n");

    assert_eq!(reboot_of(root.path()), RebootRequired::default());
}

#[test]
fn flag_in_var_run_with_packages() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "var/run/reboot-required",
        "*** System restart required ***\n",
    );
    write(
        root.path(),
        "var/run/reboot-required.pkgs",
        "linux-image-6.1.0-18-amd64\nlibc6\nlinux-image-6.1.0-18-amd64\n",
    );

    assert_eq!(
        reboot_of(root.path()),
        RebootRequired {
            required: true,
            packages: vec!["linux-image-6.1.0-18-amd64".into(), "libc6".into()],
        }
    );
}

#[test]
fn flag_in_run_without_package_list() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "run/reboot-required", "");

    assert_eq!(
        reboot_of(root.path()),
        RebootRequired {
            required: true,
            packages: vec![]
        }
    );
}

#[test]
fn both_directories_merge_packages() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "var/run/reboot-required", "");
    write(root.path(), "var/run/reboot-required.pkgs", "dbus\nlibc6\n");
    write(root.path(), "run/reboot-required", "");
    write(
        root.path(),
        "run/reboot-required.pkgs",
        "libc6\r\nsystemd\r\n",
    );

    assert_eq!(
        reboot_of(root.path()),
        RebootRequired {
            required: true,
            packages: vec!["dbus".into(), "libc6".into(), "systemd".into()]
        }
    );
}

#[test]
fn var_run_linked_to_run_counts_once() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "run/reboot-required", "");
    write(
        root.path(),
        "run/reboot-required.pkgs",
        "linux-image-amd64\n",
    );
    fs::create_dir_all(root.path().join("var")).unwrap();
    std::os::unix::fs::symlink("../run", root.path().join("var/run")).unwrap();

    assert_eq!(
        reboot_of(root.path()),
        RebootRequired {
            required: true,
            packages: vec!["linux-image-amd64".into()]
        }
    );
}
