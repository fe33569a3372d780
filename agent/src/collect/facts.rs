//! Host facts: hostname, kernel, architecture, boot time, CPU count and memory from the running host
//! through `sysinfo`, and the operating system's name and version from `os-release` below the root.
//!
//! Only the OS name and version follow the root, because they describe the installed system that
//! the root contains. Everything else describes the running kernel and hardware, so a collector
//! pointed at a fixture root still reports the machine it runs on.

use std::path::Path;

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, System};
use tidegate_protocol::{HostFacts, Warning};

use super::{error_chain, read_optional};

/// The warning source for this collector.
pub const SOURCE: &str = "facts";

/// The `os-release` files in the order os-release(5) gives: the first that exists is read.
pub const OS_RELEASE_PATHS: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];

/// The fields of an `os-release` file that the facts use, unquoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub name: Option<String>,
    pub pretty_name: Option<String>,
    pub version_id: Option<String>,
    pub version: Option<String>,
}

impl OsRelease {
    /// Returns the OS name: `NAME`, else `PRETTY_NAME`, else `Linux`, the default os-release(5) gives for
    /// `NAME`.
    pub fn os_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.pretty_name.clone())
            .unwrap_or_else(|| "Linux".into())
    }

    /// Returns the OS version: `VERSION_ID`, else `VERSION`, else empty (rolling releases such as Debian
    /// testing set neither).
    pub fn os_version(&self) -> String {
        self.version_id
            .clone()
            .or_else(|| self.version.clone())
            .unwrap_or_default()
    }
}

/// Parses an `os-release` file: `KEY=value` lines, where the value may be in single or double
/// quotes and may use shell backslash escapes. Comments, blank lines and lines without `=` are
/// skipped.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut release = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let slot = match key.trim() {
            "NAME" => &mut release.name,
            "PRETTY_NAME" => &mut release.pretty_name,
            "VERSION_ID" => &mut release.version_id,
            "VERSION" => &mut release.version,
            _ => continue,
        };
        let value = unquote(value.trim());
        *slot = (!value.is_empty()).then_some(value);
    }
    release
}

/// Removes shell quoting from an assignment's value: `"a \"b\""` is `a "b"`, `'a b'` is `a b`.
fn unquote(value: &str) -> String {
    let mut result = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        // Inside double quotes a backslash escapes only these characters.
                        '\\' => match chars.next() {
                            Some(next @ ('"' | '\\' | '$' | '`')) => result.push(next),
                            Some(next) => {
                                result.push('\\');
                                result.push(next);
                            }
                            None => result.push('\\'),
                        },
                        _ => result.push(c),
                    }
                }
            }
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    result.push(c);
                }
            }
            '\\' => {
                if let Some(next) = chars.next() {
                    result.push(next);
                }
            }
            _ => result.push(c),
        }
    }
    result
}

/// Reads the first `os-release` file that exists below `root`. Returns `None` when there is none.
fn read_os_release(root: &Path, warnings: &mut Vec<Warning>) -> Option<OsRelease> {
    for relative in OS_RELEASE_PATHS {
        match read_optional(&root.join(relative)) {
            Ok(Some(bytes)) => return Some(parse_os_release(&String::from_utf8_lossy(&bytes))),
            Ok(None) => continue,
            Err(error) => {
                warnings.push(Warning {
                    source: SOURCE.into(),
                    message: error_chain(&error),
                });
                return None;
            }
        }
    }
    None
}

/// Collects the host facts. A value that cannot be read stays empty or zero, with a warning.
pub(crate) fn collect(
    root: &Path,
    system: Option<&mut System>,
    warnings: &mut Vec<Warning>,
) -> HostFacts {
    let mut warn = |what: &str, error: &dyn std::error::Error| {
        warnings.push(Warning {
            source: SOURCE.into(),
            message: format!("failed to read {what}: {error}"),
        });
    };
    let mut facts = HostFacts {
        hostname: System::host_name().unwrap_or_else(|error| {
            warn("hostname", &error);
            String::new()
        }),
        kernel_version: System::kernel_version().unwrap_or_else(|error| {
            warn("kernel version", &error);
            String::new()
        }),
        arch: System::cpu_arch(),
        boot_time_unix_s: match System::boot_time() {
            Ok(seconds) => i64::try_from(seconds).unwrap_or(i64::MAX),
            Err(error) => {
                warn("boot time", &error);
                0
            }
        },
        ..HostFacts::default()
    };

    if let Some(system) = system {
        system.refresh_cpu_list(CpuRefreshKind::nothing());
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        facts.cpu_count = u32::try_from(system.cpus().len()).unwrap_or(u32::MAX);
        facts.memory_total_bytes = system.total_memory();
    }

    match read_os_release(root, warnings) {
        Some(release) => {
            facts.os_name = release.os_name();
            facts.os_version = release.os_version();
        }
        None => {
            // Without an os-release file below the root, describe the running system instead.
            facts.os_name = System::name().unwrap_or_default();
            facts.os_version = System::os_version().unwrap_or_default();
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_of_debian() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                    VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n";
        let release = parse_os_release(text);
        assert_eq!(release.os_name(), "Debian GNU/Linux");
        assert_eq!(release.os_version(), "12");
        assert_eq!(
            release.pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn os_release_quoting() {
        let text = "# comment\n\nNAME='Alpine Linux'\nVERSION_ID=3.19.1\n\
                    PRETTY_NAME=\"Say \\\"hi\\\" \\$HOME \\n\"\nnot an assignment\n";
        let release = parse_os_release(text);
        assert_eq!(release.name.as_deref(), Some("Alpine Linux"));
        assert_eq!(release.version_id.as_deref(), Some("3.19.1"));
        assert_eq!(release.pretty_name.as_deref(), Some("Say \"hi\" $HOME \\n"));
    }

    #[test]
    fn os_release_fallbacks() {
        let release = parse_os_release("PRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\n");
        assert_eq!(release.os_name(), "Debian GNU/Linux trixie/sid");
        assert_eq!(release.os_version(), "");

        let release = parse_os_release("VERSION=\"22.04.4 LTS (Jammy Jellyfish)\"\n");
        assert_eq!(release.os_name(), "Linux");
        assert_eq!(release.os_version(), "22.04.4 LTS (Jammy Jellyfish)");
    }

    #[test]
    fn unterminated_quote_keeps_the_rest() {
        assert_eq!(
            parse_os_release("NAME=\"Open").name.as_deref(),
            Some("Open")
        );
        assert_eq!(parse_os_release("NAME=").name, None);
    }
}
