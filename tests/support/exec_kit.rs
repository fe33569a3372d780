//! Small helpers for the executor's end-to-end tests: a dpkg database below a root, test `.deb`
//! packages built with `dpkg-deb`, account databases, and a snapshot of a tree.
//!
//! The agent's `steps::testkit` (behind its `testkit` feature) offers the same for the step
//! types' own tests; these few functions keep the end-to-end tests free of that feature.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Creates the files `dpkg --root` needs: an empty status database and its directories.
pub fn init_dpkg_root(root: &Path) {
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(dir)).expect("create the dpkg database");
    }
    for file in ["status", "available"] {
        fs::write(admin.join(file), "").expect("create the dpkg database");
    }
    fs::create_dir_all(root.join("var/cache/apt/archives")).expect("create the apt cache");
}

/// Builds `PACKAGE_VERSION_all.deb` in `out_dir` holding `files` (absolute target path,
/// content), without maintainer scripts, and returns its path.
pub fn build_deb(out_dir: &Path, package: &str, version: &str, files: &[(&str, &[u8])]) -> PathBuf {
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
    for (path, content) in files {
        let path = tree.join(path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().expect("a parent")).expect("create a package directory");
        fs::write(&path, content).expect("write a package file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("set the mode");
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

/// Installs a package file into `root` with `dpkg --root`.
pub fn install_deb(root: &Path, deb: &Path) {
    let output = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-not-root", "--force-script-chrootless", "-i"])
        .arg(deb)
        .output()
        .expect("run dpkg");
    assert!(
        output.status.success(),
        "dpkg -i {} failed: {}",
        deb.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns every package line `dpkg-query -W` prints for `root`: name, version and status.
pub fn dpkg_packages(root: &Path) -> String {
    let output = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${Version} ${Status}\n"])
        .output()
        .expect("run dpkg-query");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes `etc/passwd`, `etc/group` and `etc/shadow` with the accounts `root` and `alice`.
/// `etc/shadow` has mode 0640 and group 42, as on Debian.
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
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
        0o644,
        0,
    );
    write(
        "etc/group",
        "root:x:0:\nalice:x:1000:\nshadow:x:42:\n",
        0o644,
        0,
    );
    write(
        "etc/shadow",
        "root:*:19000:0:99999:7:::\nalice:$y$j9T$salt$hash:19800:0:99999:7:::\n",
        0o640,
        42,
    );
}

/// Describes every entry below `root` by relative path: type, permission bits, owner and the
/// SHA-256 of a file's content. Paths starting with one of `skip` are left out.
pub fn tree_snapshot(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if skip.iter().any(|prefix| relative.starts_with(prefix)) {
                continue;
            }
            let Ok(metadata) = fs::symlink_metadata(&path) else {
                continue;
            };
            let owner = format!(
                "{:04o} {}:{}",
                metadata.mode() & 0o7777,
                metadata.uid(),
                metadata.gid()
            );
            let description = if metadata.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    fs::read_link(&path).unwrap_or_default().display()
                )
            } else if metadata.is_dir() {
                pending.push(path.clone());
                format!("dir {owner}")
            } else {
                let content = fs::read(&path).unwrap_or_default();
                let digest = ring::digest::digest(&ring::digest::SHA256, &content);
                let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                format!("file {owner} {hex}")
            };
            out.insert(relative, description);
        }
    }
    out
}
