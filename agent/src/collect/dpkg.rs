//! dpkg's status database (`/var/lib/dpkg/status`): one row per installed or partly installed
//! package, keyed by name and architecture.
//!
//! The file is a series of deb822 stanzas. Only the fields an inventory needs are read: `Package`,
//! `Status`, `Architecture`, `Version`, `Config-Version` and `Provides`. Every other field is
//! skipped without being copied, so parsing allocates little beyond the rows it returns. The file
//! is parsed as bytes because descriptions of old packages are not always valid UTF-8.
//!
//! A malformed stanza is skipped and reported as a [`StanzaError`] with its line number, and all
//! other stanzas are still returned.
//!
//! dpkg records each change in a journal file below `/var/lib/dpkg/updates/` before it rewrites the
//! status file, so an interrupted or running dpkg leaves the newest states there, the broken ones
//! included. The reader applies these journal entries over the status file in file-name order, as
//! dpkg does when it loads its database.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use tidegate_protocol::{Ecosystem, InstallState, Package, PackageKey, Selection, Warning};

use super::{
    error_chain, is_blank, lossy_string, numbered_lines, read_optional, trim_blanks, ReadError,
    RecordError,
};

/// The warning source for this collector.
pub const SOURCE: &str = "dpkg";

/// The status database, relative to the root.
pub const STATUS_PATH: &str = "var/lib/dpkg/status";

/// The directory of journal entries not yet merged into the status file, relative to the root.
pub const UPDATES_PATH: &str = "var/lib/dpkg/updates";

/// The problem that made a stanza of the status file be skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StanzaErrorKind {
    #[error("no Package field")]
    MissingPackage,
    #[error("no Status field")]
    MissingStatus,
    #[error("invalid Status `{value}`: expected three words `want flag state`, such as `install ok installed`")]
    InvalidStatus { value: String },
    #[error("no Version field, which state `{state}` requires")]
    MissingVersion { state: &'static str },
    #[error("field {field} appears twice")]
    DuplicateField { field: &'static str },
    #[error("line is neither `Field: value` nor a continuation line starting with a space or tab")]
    InvalidLine,
}

pub type StanzaError = RecordError<StanzaErrorKind>;

/// The result of parsing a status file: the package rows and the stanzas that were skipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ParsedStatus {
    pub packages: Vec<Package>,
    /// Keys of the stanzas in state `not-installed`, which are not rows. In a journal entry, such a
    /// stanza removes the row that the status file has for its key.
    pub not_installed: Vec<PackageKey>,
    pub errors: Vec<StanzaError>,
}

/// Reads `<root>/var/lib/dpkg/status` with the journal entries in `<root>/var/lib/dpkg/updates/`
/// and appends the rows to `packages`. Returns whether the database exists; problems become
/// warnings.
pub(crate) fn collect(
    root: &Path,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<Warning>,
) -> bool {
    let path = root.join(STATUS_PATH);
    let bytes = match read_optional(&path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return false,
        Err(error) => {
            warnings.push(Warning {
                source: SOURCE.into(),
                message: error_chain(&error),
            });
            return true;
        }
    };
    let parsed = parse_status(&bytes);
    push_warnings(&path, &parsed.errors, warnings);

    let journal = match journal_entries(&root.join(UPDATES_PATH)) {
        Ok(journal) => journal,
        Err(error) => {
            warnings.push(Warning {
                source: SOURCE.into(),
                message: error_chain(&error),
            });
            Vec::new()
        }
    };
    if journal.is_empty() {
        packages.extend(parsed.packages);
        return true;
    }

    let mut rows: BTreeMap<PackageKey, Package> = parsed
        .packages
        .into_iter()
        .map(|package| (package.key(), package))
        .collect();
    for entry_path in journal {
        let bytes = match read_optional(&entry_path) {
            Ok(Some(bytes)) => bytes,
            // dpkg removed the entry after merging it, which is a normal race with a running dpkg.
            Ok(None) => continue,
            Err(error) => {
                warnings.push(Warning {
                    source: SOURCE.into(),
                    message: error_chain(&error),
                });
                continue;
            }
        };
        let entry = parse_status(&bytes);
        push_warnings(&entry_path, &entry.errors, warnings);
        for key in entry.not_installed {
            rows.remove(&key);
        }
        for package in entry.packages {
            rows.insert(package.key(), package);
        }
    }
    packages.extend(rows.into_values());
    true
}

/// Lists the journal entries in `directory` in the order dpkg applies them. dpkg names them with
/// digits only (`0000`, `0001`, ...); other files, such as its temporary `tmp.i`, are skipped.
fn journal_entries(directory: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let read_error = |source| ReadError {
        path: directory.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(read_error(error)),
    };
    let mut numbered = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_error)?;
        let name = entry.file_name();
        let Some(digits) = name
            .to_str()
            .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // Sorted by number, so the order stays right even where the names differ in width.
        let Ok(number) = digits.parse::<u64>() else {
            continue;
        };
        numbered.push((number, entry.path()));
    }
    numbered.sort();
    Ok(numbered.into_iter().map(|(_, path)| path).collect())
}

fn push_warnings(path: &Path, errors: &[StanzaError], warnings: &mut Vec<Warning>) {
    for error in errors {
        warnings.push(Warning {
            source: SOURCE.into(),
            message: format!("{} {error}; stanza skipped", path.display()),
        });
    }
}

/// Parses the contents of a dpkg status file. Packages in state `not-installed` are not rows.
/// Never panics, whatever the input.
pub fn parse_status(bytes: &[u8]) -> ParsedStatus {
    let mut parsed = ParsedStatus::default();
    let mut stanza = Stanza::default();

    for (number, line) in numbered_lines(bytes) {
        if line.is_empty() {
            stanza.finish(&mut parsed);
            continue;
        }
        if is_blank(line[0]) {
            stanza.continue_field(number, line);
            continue;
        }
        stanza.add_field(number, line);
    }
    stanza.finish(&mut parsed);
    parsed
}

/// The fields of the stanza being parsed, as slices of the input. Reused from stanza to stanza so
/// that the `Provides` buffer is allocated once.
#[derive(Default)]
struct Stanza<'a> {
    /// The line of the first field, or 0 while the stanza is empty.
    first_line: usize,
    package: Option<&'a [u8]>,
    status: Option<(usize, &'a [u8])>,
    architecture: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    config_version: Option<&'a [u8]>,
    /// The value of `Provides` followed by its continuation lines, if the field is folded.
    provides: Vec<&'a [u8]>,
    has_provides: bool,
    /// Whether the field read last is `Provides`, so a continuation line belongs to it.
    in_provides: bool,
    error: Option<(usize, StanzaErrorKind)>,
}

impl<'a> Stanza<'a> {
    fn add_field(&mut self, number: usize, line: &'a [u8]) {
        if self.first_line == 0 {
            self.first_line = number;
        }
        self.in_provides = false;

        let Some(colon) = line.iter().position(|b| *b == b':') else {
            self.set_error(number, StanzaErrorKind::InvalidLine);
            return;
        };
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|b| is_blank(*b)) {
            self.set_error(number, StanzaErrorKind::InvalidLine);
            return;
        }
        let value = &line[colon + 1..];

        let (slot, field) = if name.eq_ignore_ascii_case(b"Package") {
            (&mut self.package, "Package")
        } else if name.eq_ignore_ascii_case(b"Architecture") {
            (&mut self.architecture, "Architecture")
        } else if name.eq_ignore_ascii_case(b"Version") {
            (&mut self.version, "Version")
        } else if name.eq_ignore_ascii_case(b"Config-Version") {
            (&mut self.config_version, "Config-Version")
        } else if name.eq_ignore_ascii_case(b"Status") {
            if self.status.is_some() {
                self.set_error(number, StanzaErrorKind::DuplicateField { field: "Status" });
            }
            self.status = Some((number, trim_blanks(value)));
            return;
        } else if name.eq_ignore_ascii_case(b"Provides") {
            if self.has_provides {
                self.set_error(
                    number,
                    StanzaErrorKind::DuplicateField { field: "Provides" },
                );
            }
            self.has_provides = true;
            self.in_provides = true;
            self.provides.push(trim_blanks(value));
            return;
        } else {
            return;
        };
        let duplicate = slot.is_some();
        *slot = Some(trim_blanks(value));
        if duplicate {
            self.set_error(number, StanzaErrorKind::DuplicateField { field });
        }
    }

    fn continue_field(&mut self, number: usize, line: &'a [u8]) {
        if self.in_provides {
            self.provides.push(trim_blanks(line));
        } else if self.first_line == 0 && !trim_blanks(line).is_empty() {
            // A continuation line with nothing to continue. Lines of only blanks between stanzas
            // are tolerated.
            self.first_line = number;
            self.set_error(number, StanzaErrorKind::InvalidLine);
        }
    }

    /// Keeps the first problem of the stanza, which is the one a reader fixes first.
    fn set_error(&mut self, number: usize, kind: StanzaErrorKind) {
        if self.error.is_none() {
            self.error = Some((number, kind));
        }
    }

    fn finish(&mut self, parsed: &mut ParsedStatus) {
        if self.first_line != 0 {
            match self.to_row() {
                Ok(Row::Package(package)) => parsed.packages.push(package),
                Ok(Row::NotInstalled(key)) => parsed.not_installed.push(key),
                Err(error) => parsed.errors.push(error),
            }
        }
        let mut provides = std::mem::take(&mut self.provides);
        provides.clear();
        *self = Stanza {
            provides,
            ..Stanza::default()
        };
    }

    fn to_row(&self) -> Result<Row, StanzaError> {
        let raw_name = self.package.filter(|name| !name.is_empty());
        // The name as written may carry an `:arch` qualifier, which is never part of the row's name.
        let (name, qualifier) = match raw_name {
            Some(raw) => match raw.iter().position(|b| *b == b':') {
                Some(colon) => (Some(&raw[..colon]), Some(&raw[colon + 1..])),
                None => (Some(raw), None),
            },
            None => (None, None),
        };
        let error = |line: usize, kind: StanzaErrorKind| StanzaError {
            line,
            package: name.filter(|name| !name.is_empty()).map(lossy_string),
            kind,
        };

        if let Some((line, kind)) = &self.error {
            return Err(error(*line, kind.clone()));
        }
        let Some(name) = name.filter(|name| !name.is_empty()) else {
            return Err(error(self.first_line, StanzaErrorKind::MissingPackage));
        };
        let Some((status_line, status)) = self.status else {
            return Err(error(self.first_line, StanzaErrorKind::MissingStatus));
        };
        let invalid_status = || {
            error(
                status_line,
                StanzaErrorKind::InvalidStatus {
                    value: lossy_string(status),
                },
            )
        };
        let Some((selection, state)) = parse_status_field(status) else {
            return Err(invalid_status());
        };
        let arch = self.architecture.or(qualifier).unwrap_or(b"");
        let Some(state) = state else {
            return Ok(Row::NotInstalled(PackageKey {
                ecosystem: Ecosystem::Deb,
                name: lossy_string(name),
                arch: lossy_string(arch),
            }));
        };

        let version = match (self.version, self.config_version, state) {
            (Some(version), _, _) if !version.is_empty() => version,
            // dpkg may keep only `Config-Version` for a package whose configuration files are
            // all that is left of it.
            (_, Some(version), InstallState::ConfigFiles) => version,
            (_, _, InstallState::ConfigFiles) => b"",
            _ => {
                return Err(error(
                    self.first_line,
                    StanzaErrorKind::MissingVersion {
                        state: state.as_str(),
                    },
                ))
            }
        };

        Ok(Row::Package(Package {
            ecosystem: Ecosystem::Deb,
            name: lossy_string(name),
            arch: lossy_string(arch),
            version: lossy_string(version),
            state,
            selection,
            provides: parse_provides(&self.provides),
        }))
    }
}

enum Row {
    Package(Package),
    NotInstalled(PackageKey),
}

/// Parses a `Status` value of three words, `want flag state`. Returns the selection and the
/// install state, where `None` is `not-installed`. Returns `None` for a value that is not valid.
fn parse_status_field(value: &[u8]) -> Option<(Selection, Option<InstallState>)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut words = text.split_ascii_whitespace();
    let (want, flag, state) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() {
        return None;
    }
    let selection = Selection::parse(want)?;
    if flag != "ok" && flag != "reinstreq" {
        return None;
    }
    if state == "not-installed" {
        return Some((selection, None));
    }
    Some((selection, Some(InstallState::parse(state)?)))
}

/// Splits a `Provides` value such as `mail-transport-agent, libfoo (= 1.0)` into names, without
/// the version constraints.
fn parse_provides(parts: &[&[u8]]) -> Vec<String> {
    let mut names = Vec::new();
    for part in parts {
        for entry in part.split(|b| *b == b',') {
            let entry = trim_blanks(entry);
            let end = entry
                .iter()
                .position(|b| *b == b'(' || is_blank(*b))
                .unwrap_or(entry.len());
            let name = &entry[..end];
            if !name.is_empty() {
                names.push(lossy_string(name));
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stanza(name: &str, status: &str) -> String {
        format!("Package: {name}\nStatus: {status}\nArchitecture: amd64\nVersion: 1.0-1\n\n")
    }

    fn only_package(text: &str) -> Package {
        let parsed = parse_status(text.as_bytes());
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(parsed.packages.len(), 1);
        parsed.packages.into_iter().next().unwrap()
    }

    #[test]
    fn config_files_is_row_not_installed() {
        let package = only_package(&stanza("oldpkg", "deinstall ok config-files"));
        assert_eq!(package.state, InstallState::ConfigFiles);
        assert_eq!(package.selection, Selection::Deinstall);
        assert!(!package.state.is_installed());
        assert!(!package.state.is_broken());
    }

    #[test]
    fn not_installed_is_no_row() {
        let parsed = parse_status(stanza("gone", "install ok not-installed").as_bytes());
        assert_eq!(parsed.packages, vec![]);
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(
            parsed.not_installed,
            vec![PackageKey {
                ecosystem: Ecosystem::Deb,
                name: "gone".into(),
                arch: "amd64".into()
            }]
        );
    }

    #[test]
    fn installed_states_keep_selection() {
        let cases = [
            (
                "deinstall ok installed",
                Selection::Deinstall,
                InstallState::Installed,
            ),
            (
                "purge ok installed",
                Selection::Purge,
                InstallState::Installed,
            ),
            (
                "install ok triggers-pending",
                Selection::Install,
                InstallState::TriggersPending,
            ),
            (
                "hold ok installed",
                Selection::Hold,
                InstallState::Installed,
            ),
        ];
        for (status, selection, state) in cases {
            let package = only_package(&stanza("pkg", status));
            assert_eq!(package.selection, selection, "{status}");
            assert_eq!(package.state, state, "{status}");
            assert!(package.state.is_installed(), "{status}");
        }
    }

    #[test]
    fn half_states_are_broken() {
        let cases = [
            ("install ok half-configured", InstallState::HalfConfigured),
            (
                "install reinstreq half-installed",
                InstallState::HalfInstalled,
            ),
            ("install ok unpacked", InstallState::Unpacked),
        ];
        for (status, state) in cases {
            let package = only_package(&stanza("pkg", status));
            assert_eq!(package.state, state, "{status}");
            assert!(!package.state.is_installed(), "{status}");
            assert!(package.state.is_broken(), "{status}");
        }
    }

    #[test]
    fn status_inside_description_is_ignored() {
        let text = "Package: tricky\nStatus: install ok installed\nVersion: 2\nArchitecture: all\n\
                    Description: short\n Status: deinstall ok config-files\n\tVersion: 9\n";
        let package = only_package(text);
        assert_eq!(package.state, InstallState::Installed);
        assert_eq!(package.selection, Selection::Install);
        assert_eq!(package.version, "2");
    }

    #[test]
    fn name_qualifier_is_stripped() {
        let text =
            "Package: libfoo:i386\nStatus: install ok installed\nArchitecture: armhf\nVersion: 1\n";
        let package = only_package(text);
        assert_eq!(package.name, "libfoo");
        assert_eq!(package.arch, "armhf");

        let text = "Package: libfoo:i386\nStatus: install ok installed\nVersion: 1\n";
        assert_eq!(only_package(text).arch, "i386");
    }

    #[test]
    fn provides_keep_names_only() {
        let text = "Package: exim4-daemon-light\nStatus: install ok installed\nVersion: 4.96-15\n\
                    Architecture: amd64\nProvides: mail-transport-agent, libfoo (= 1.0),default-mta\n";
        let package = only_package(text);
        assert_eq!(
            package.provides,
            vec!["mail-transport-agent", "libfoo", "default-mta"]
        );
    }

    #[test]
    fn folded_provides_are_joined() {
        let text = "Package: p\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\
                    Provides: a (= 1),\n b,\n\tc\nDescription: x\n more\n";
        assert_eq!(only_package(text).provides, vec!["a", "b", "c"]);
    }

    #[test]
    fn field_names_ignore_case() {
        let text = "package: p\nstatus: install ok installed\nversion: 1\narchitecture: all\n";
        assert_eq!(only_package(text).name, "p");
    }

    #[test]
    fn config_version_stands_in_for_version() {
        let text = "Package: old\nStatus: deinstall ok config-files\nArchitecture: amd64\nConfig-Version: 3.1-2\n";
        assert_eq!(only_package(text).version, "3.1-2");
    }

    #[test]
    fn malformed_stanzas_name_line_and_package() {
        let text = "Package: good\nStatus: install ok installed\nVersion: 1\n\n\
                    Status: install ok installed\nVersion: 1\n\n\
                    Package: nostatus\nVersion: 1\n\n\
                    Package: badstatus\nVersion: 1\nStatus: install ok\n\n\
                    Package: noversion\nStatus: install ok installed\n\n\
                    Package: badline\nStatus: install ok installed\nthis is not a field\nVersion: 1\n\n\
                    Package: twice\nStatus: install ok installed\nVersion: 1\nVersion: 2\n\n\
                    Package: wantless\nStatus: maybe ok installed\nVersion: 1\n";
        let parsed = parse_status(text.as_bytes());

        let names: Vec<&str> = parsed.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["good"]);
        let expected = vec![
            StanzaError {
                line: 5,
                package: None,
                kind: StanzaErrorKind::MissingPackage,
            },
            StanzaError {
                line: 8,
                package: Some("nostatus".into()),
                kind: StanzaErrorKind::MissingStatus,
            },
            StanzaError {
                line: 13,
                package: Some("badstatus".into()),
                kind: StanzaErrorKind::InvalidStatus {
                    value: "install ok".into(),
                },
            },
            StanzaError {
                line: 15,
                package: Some("noversion".into()),
                kind: StanzaErrorKind::MissingVersion { state: "installed" },
            },
            StanzaError {
                line: 20,
                package: Some("badline".into()),
                kind: StanzaErrorKind::InvalidLine,
            },
            StanzaError {
                line: 26,
                package: Some("twice".into()),
                kind: StanzaErrorKind::DuplicateField { field: "Version" },
            },
            StanzaError {
                line: 29,
                package: Some("wantless".into()),
                kind: StanzaErrorKind::InvalidStatus {
                    value: "maybe ok installed".into(),
                },
            },
        ];
        assert_eq!(parsed.errors, expected);
    }

    #[test]
    fn stray_continuation_line_is_malformed() {
        let text = " Description continued\nPackage: p\nStatus: install ok installed\nVersion: 1\n";
        let parsed = parse_status(text.as_bytes());
        assert_eq!(parsed.packages, vec![]);
        assert_eq!(
            parsed.errors,
            vec![StanzaError {
                line: 1,
                package: Some("p".into()),
                kind: StanzaErrorKind::InvalidLine
            }]
        );
    }

    #[test]
    fn blank_only_lines_between_stanzas_are_tolerated() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1\n\n \t\n\nPackage: b\n\
                    Status: install ok installed\nVersion: 1\n";
        let parsed = parse_status(text.as_bytes());
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(parsed.packages.len(), 2);
    }

    #[test]
    fn invalid_utf8_in_other_fields_is_skipped() {
        let mut bytes =
            b"Package: p\nStatus: install ok installed\nVersion: 1\nMaintainer: J\xf6rg\n".to_vec();
        bytes.extend_from_slice(b"Description: caf\xe9\n \xff\xfe\n");
        let parsed = parse_status(&bytes);
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(parsed.packages.len(), 1);
    }

    #[test]
    fn crlf_without_final_newline() {
        let text = "Package: a\r\nStatus: install ok installed\r\nVersion: 1\r\n\r\nPackage: b\r\n\
                    Status: install ok installed\r\nVersion: 2\r\nProvides: x (= 2)";
        let parsed = parse_status(text.as_bytes());
        assert_eq!(parsed.errors, vec![]);
        let rows: Vec<(&str, &str)> = parsed
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(rows, vec![("a", "1"), ("b", "2")]);
        assert_eq!(parsed.packages[1].provides, vec!["x"]);
    }

    #[test]
    fn empty_input_has_no_rows() {
        assert_eq!(parse_status(b""), ParsedStatus::default());
        assert_eq!(parse_status(b"\n\n\r\n"), ParsedStatus::default());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC*") {
            let _ = parse_status(text.as_bytes());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_status(&bytes);
        }

        #[test]
        fn field_like_lines_never_panic(
            lines in prop::collection::vec(
                "(Package|Status|Version|Architecture|Provides|Config-Version| |\t)?:? ?[a-z0-9:,() =.-]{0,12}\r?",
                0..40,
            )
        ) {
            let _ = parse_status(lines.join("\n").as_bytes());
        }
    }
}
