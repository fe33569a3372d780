//! Whether the host needs a reboot, from the flag files that Debian and Ubuntu package scripts
//! write (`reboot-required`, with the requesting packages in `reboot-required.pkgs`).
//!
//! Both `/var/run` and `/run` are checked: on current systems `/var/run` is a symbolic link to
//! `/run`, but a fixture root or an older system may have two separate directories.

use std::path::Path;

use tidegate_protocol::{RebootRequired, Warning};

use super::{error_chain, read_optional, ReadError};

/// The warning source for this collector.
pub const SOURCE: &str = "reboot";

/// The directories that may hold the flag, relative to the root.
pub const FLAG_DIRECTORIES: [&str; 2] = ["var/run", "run"];

/// Appends the package names of a `reboot-required.pkgs` file (one per line) to `packages`,
/// skipping blank lines and names already present.
pub fn parse_package_list(text: &str, packages: &mut Vec<String>) {
    for line in text.lines() {
        let name = line.trim();
        if !name.is_empty() && !packages.iter().any(|known| known == name) {
            packages.push(name.to_owned());
        }
    }
}

/// Reads the reboot flag below `root`. Unreadable files become warnings.
pub(crate) fn collect(root: &Path, warnings: &mut Vec<Warning>) -> RebootRequired {
    let mut reboot = RebootRequired::default();
    let mut warn = |error: ReadError| {
        warnings.push(Warning {
            source: SOURCE.into(),
            message: error_chain(&error),
        })
    };

    for directory in FLAG_DIRECTORIES {
        let flag = root.join(directory).join("reboot-required");
        match std::fs::metadata(&flag) {
            Ok(_) => reboot.required = true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                warn(ReadError { path: flag, source });
                continue;
            }
        }
        match read_optional(&root.join(directory).join("reboot-required.pkgs")) {
            Ok(Some(bytes)) => {
                parse_package_list(&String::from_utf8_lossy(&bytes), &mut reboot.packages)
            }
            Ok(None) => {}
            Err(error) => warn(error),
        }
    }
    reboot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_list_dedupes_in_order() {
        let mut packages = Vec::new();
        parse_package_list(
            "linux-image-6.1.0-18-amd64\r\nlibc6\n\n  \nlinux-image-6.1.0-18-amd64\n",
            &mut packages,
        );
        parse_package_list("dbus\nlibc6", &mut packages);
        assert_eq!(
            packages,
            vec!["linux-image-6.1.0-18-amd64", "libc6", "dbus"]
        );
    }
}
