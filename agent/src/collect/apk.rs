//! Alpine's installed-package database (`/lib/apk/db/installed`).
//!
//! The database is a series of stanzas separated by blank lines. Each line is `X:value`, where the
//! one-letter key `X` is case-sensitive: `P` is the name, `V` the version, `A` the architecture
//! and `p` the space-separated provides (`so:libc.musl-x86_64.so.1=1`). Every package in the
//! database is installed, so rows have state Installed and selection Install. The file is parsed
//! as bytes because file names in `R:` lines need not be UTF-8.

use std::path::Path;

use tidegate_protocol::{Ecosystem, InstallState, Package, Selection, Warning};

use super::{error_chain, lossy_string, numbered_lines, read_optional, RecordError};

/// The warning source for this collector.
pub const SOURCE: &str = "apk";

/// The installed database, relative to the root.
pub const INSTALLED_PATH: &str = "lib/apk/db/installed";

/// The problem that made a stanza of the installed database be skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StanzaErrorKind {
    #[error("no P: (package name) line")]
    MissingPackage,
    #[error("no V: (version) line")]
    MissingVersion,
    #[error("line is not of the form `X:value` with a one-letter key")]
    InvalidLine,
}

pub type StanzaError = RecordError<StanzaErrorKind>;

/// The result of parsing the installed database: the package rows and the stanzas that were
/// skipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ParsedInstalled {
    pub packages: Vec<Package>,
    pub errors: Vec<StanzaError>,
}

/// Parses the contents of `/lib/apk/db/installed`. Never panics, whatever the input.
pub fn parse_installed(bytes: &[u8]) -> ParsedInstalled {
    let mut parsed = ParsedInstalled::default();
    let mut stanza = Stanza::default();
    for (number, line) in numbered_lines(bytes) {
        if line.is_empty() {
            stanza.finish(&mut parsed);
        } else {
            stanza.add_line(number, line);
        }
    }
    stanza.finish(&mut parsed);
    parsed
}

#[derive(Default)]
struct Stanza<'a> {
    /// The line of the first line, or 0 while the stanza is empty.
    first_line: usize,
    name: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    arch: Option<&'a [u8]>,
    provides: Option<&'a [u8]>,
    invalid_line: Option<usize>,
}

impl<'a> Stanza<'a> {
    fn add_line(&mut self, number: usize, line: &'a [u8]) {
        if self.first_line == 0 {
            self.first_line = number;
        }
        let [key, b':', value @ ..] = line else {
            self.invalid_line.get_or_insert(number);
            return;
        };
        match key {
            b'P' => self.name = Some(value),
            b'V' => self.version = Some(value),
            b'A' => self.arch = Some(value),
            b'p' => self.provides = Some(value),
            _ => {}
        }
    }

    fn finish(&mut self, parsed: &mut ParsedInstalled) {
        if self.first_line != 0 {
            match self.to_package() {
                Ok(package) => parsed.packages.push(package),
                Err(error) => parsed.errors.push(error),
            }
        }
        *self = Stanza::default();
    }

    fn to_package(&self) -> Result<Package, StanzaError> {
        let name = self.name.filter(|name| !name.is_empty());
        let error = |line, kind| StanzaError {
            line,
            package: name.map(lossy_string),
            kind,
        };
        if let Some(line) = self.invalid_line {
            return Err(error(line, StanzaErrorKind::InvalidLine));
        }
        let Some(name) = name else {
            return Err(error(self.first_line, StanzaErrorKind::MissingPackage));
        };
        let Some(version) = self.version.filter(|version| !version.is_empty()) else {
            return Err(error(self.first_line, StanzaErrorKind::MissingVersion));
        };

        Ok(Package {
            ecosystem: Ecosystem::Apk,
            name: lossy_string(name),
            arch: lossy_string(self.arch.unwrap_or(b"")),
            version: lossy_string(version),
            state: InstallState::Installed,
            selection: Selection::Install,
            provides: self.provides.map(parse_provides).unwrap_or_default(),
        })
    }
}

/// Splits a `p:` value into names, without their `=version` suffix.
fn parse_provides(value: &[u8]) -> Vec<String> {
    value
        .split(|b| b.is_ascii_whitespace())
        .map(|entry| entry.split(|b| *b == b'=').next().unwrap_or(entry))
        .filter(|name| !name.is_empty())
        .map(lossy_string)
        .collect()
}

/// Reads `<root>/lib/apk/db/installed` and appends its rows to `packages`. A missing database
/// adds nothing; problems become warnings.
pub(crate) fn collect(root: &Path, packages: &mut Vec<Package>, warnings: &mut Vec<Warning>) {
    let path = root.join(INSTALLED_PATH);
    let bytes = match read_optional(&path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return,
        Err(error) => {
            warnings.push(Warning {
                source: SOURCE.into(),
                message: error_chain(&error),
            });
            return;
        }
    };
    let parsed = parse_installed(&bytes);
    packages.extend(parsed.packages);
    for error in parsed.errors {
        warnings.push(Warning {
            source: SOURCE.into(),
            message: format!("{} {error}; stanza skipped", path.display()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MUSL: &str = "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nS:383152\nI:622592\n\
                        T:the musl c library (libc) implementation\nU:https://musl.libc.org/\nL:MIT\n\
                        o:musl\nm:Natanael Copa <ncopa@alpinelinux.org>\nt:1705340700\n\
                        c:7a1d5d9b1f8ea8c3e1f4\np:so:libc.musl-x86_64.so.1=1\nF:lib\n\
                        R:ld-musl-x86_64.so.1\na:0:0:755\nZ:Q1zzz=\nR:libc.musl-x86_64.so.1\n";

    #[test]
    fn musl_stanza_is_row() {
        let parsed = parse_installed(MUSL.as_bytes());
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(
            parsed.packages,
            vec![Package {
                ecosystem: Ecosystem::Apk,
                name: "musl".into(),
                arch: "x86_64".into(),
                version: "1.2.4_git20230717-r4".into(),
                state: InstallState::Installed,
                selection: Selection::Install,
                provides: vec!["so:libc.musl-x86_64.so.1".into()],
            }]
        );
    }

    #[test]
    fn provides_drop_versions() {
        let text =
            "P:busybox-binsh\nV:1.36.1-r15\nA:x86_64\np:/bin/sh cmd:sh=1.36.1-r15  cmd:ash=1\n";
        let parsed = parse_installed(text.as_bytes());
        assert_eq!(
            parsed.packages[0].provides,
            vec!["/bin/sh", "cmd:sh", "cmd:ash"]
        );
    }

    #[test]
    fn malformed_stanzas_name_line() {
        let text = "P:good\nV:1-r0\nA:x86_64\n\n\
                    V:1-r0\nA:x86_64\n\n\
                    P:noversion\nA:x86_64\n\n\
                    P:badline\nV:1-r0\nnot a field\n\n\
                    P:keylong\nVV:1\nV:1-r0\n";
        let parsed = parse_installed(text.as_bytes());
        let names: Vec<&str> = parsed.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["good"]);
        assert_eq!(
            parsed.errors,
            vec![
                StanzaError {
                    line: 5,
                    package: None,
                    kind: StanzaErrorKind::MissingPackage
                },
                StanzaError {
                    line: 8,
                    package: Some("noversion".into()),
                    kind: StanzaErrorKind::MissingVersion
                },
                StanzaError {
                    line: 13,
                    package: Some("badline".into()),
                    kind: StanzaErrorKind::InvalidLine
                },
                StanzaError {
                    line: 16,
                    package: Some("keylong".into()),
                    kind: StanzaErrorKind::InvalidLine
                },
            ]
        );
    }

    #[test]
    fn crlf_and_missing_final_newline_parse() {
        let text = "P:a\r\nV:1-r0\r\nA:aarch64\r\n\r\nP:b\r\nV:2-r1\r\nA:noarch";
        let parsed = parse_installed(text.as_bytes());
        assert_eq!(parsed.errors, vec![]);
        let rows: Vec<(&str, &str, &str)> = parsed
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.arch.as_str()))
            .collect();
        assert_eq!(
            rows,
            vec![("a", "1-r0", "aarch64"), ("b", "2-r1", "noarch")]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC*") {
            let _ = parse_installed(text.as_bytes());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_installed(&bytes);
        }

        #[test]
        fn key_like_lines_never_panic(
            lines in prop::collection::vec("[PVApC]?:?[a-z0-9:= .-]{0,12}\r?", 0..40)
        ) {
            let _ = parse_installed(lines.join("\n").as_bytes());
        }
    }
}
