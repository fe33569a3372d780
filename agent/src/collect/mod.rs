//! Collectors: read the host's package databases and facts below a root directory.
//!
//! [`Collector`] owns the root directory (`/` on a real host, a temporary directory in tests) and
//! reads everything below it. That is dpkg's status database, APT's package lists, APK's installed
//! database, the RPM database through the `rpm` command, the reboot-required flag and
//! `/etc/os-release`. Facts about the running kernel and hardware (hostname, kernel, CPU count,
//! memory, boot time) always come from the running host through `sysinfo`, whatever the root.
//!
//! The collectors only read. They never take a package manager's lock and never use the network.
//! Nothing below the root is written, with one exception: an `rpm` query on a SQLite database
//! creates SQLite's `-shm` and `-wal` files next to it when they are missing, as every rpm query
//! does.
//!
//! Collection never fails as a whole. A missing database means that ecosystem is absent from the
//! host, and a malformed record or an unreadable file becomes a [`Warning`] in the inventory while
//! everything else is still reported.
//!
//! Each submodule has a parser over bytes or text that tests call directly, and a thin reader over
//! `root.join(...)`.

pub mod apk;
pub mod apt;
pub mod dpkg;
pub mod facts;
pub mod reboot;
pub mod rpm;

use std::error::Error;
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sysinfo::System;
use tidegate_protocol::{Inventory, Warning};

pub use rpm::{CommandOutput, CommandRunner, SystemCommandRunner};

/// Collects the host's inventory below a root directory.
///
/// Keep one `Collector` for the life of the agent. It keeps a `sysinfo::System`, the result of the
/// last scan of APT's lists and the last RPM query between calls, so repeated collection does not
/// redo that work while nothing changed.
pub struct Collector {
    root: PathBuf,
    system: Option<System>,
    command_runner: Box<dyn CommandRunner>,
    apt_cache: apt::ListsCache,
    rpm_cache: rpm::QueryCache,
    /// The warnings of the previous collection, so that a warning is logged once when it appears
    /// and not again every minute while it persists.
    previous_warnings: Vec<Warning>,
}

impl Collector {
    /// Creates a collector that reads below `root` and runs commands with [`SystemCommandRunner`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            system: None,
            command_runner: Box::new(SystemCommandRunner::default()),
            apt_cache: apt::ListsCache::default(),
            rpm_cache: rpm::QueryCache::default(),
            previous_warnings: Vec::new(),
        }
    }

    /// Replaces the runner of external commands (only `rpm` today), so tests can feed canned output.
    pub fn with_command_runner(mut self, runner: impl CommandRunner + 'static) -> Self {
        self.command_runner = Box::new(runner);
        self
    }

    /// Returns the directory everything is read below.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Collects the whole inventory, normalized. It never fails as a whole. A missing database
    /// means that ecosystem is absent, and a malformed part becomes a [`Warning`] in the inventory
    /// while everything else is still reported.
    pub fn collect(&mut self) -> Inventory {
        let _span = tracing::debug_span!("collect", root = %self.root.display()).entered();
        let mut inventory = Inventory::default();
        let warnings = &mut inventory.warnings;

        if self.system.is_none() {
            match System::new() {
                Ok(system) => self.system = Some(system),
                Err(error) => warnings.push(Warning {
                    source: facts::SOURCE.into(),
                    message: format!("failed to set up sysinfo: {error}"),
                }),
            }
        }
        inventory.facts = facts::collect(&self.root, self.system.as_mut(), warnings);

        let dpkg_found = dpkg::collect(&self.root, &mut inventory.packages, warnings);
        if dpkg_found {
            let lists = apt::collect(
                &self.root,
                &inventory.packages,
                &mut self.apt_cache,
                warnings,
            );
            inventory.pending_updates = lists.pending_updates;
            inventory.package_lists_updated_unix_s = lists.updated_unix_s;
        }
        apk::collect(&self.root, &mut inventory.packages, warnings);
        rpm::collect(
            &self.root,
            self.command_runner.as_ref(),
            &mut self.rpm_cache,
            &mut inventory.packages,
            warnings,
        );
        inventory.reboot = reboot::collect(&self.root, warnings);

        inventory.normalize();
        self.log_new_warnings(&inventory.warnings);
        tracing::debug!(
            packages = inventory.packages.len(),
            pending_updates = inventory.pending_updates.len(),
            warnings = inventory.warnings.len(),
            "collected inventory"
        );
        inventory
    }

    fn log_new_warnings(&mut self, warnings: &[Warning]) {
        for warning in warnings {
            if !self.previous_warnings.contains(warning) {
                tracing::warn!(source = %warning.source, message = %warning.message, "collector warning");
            }
        }
        self.previous_warnings = warnings.to_vec();
    }
}

/// A file below the root that exists but could not be read.
#[derive(Debug, thiserror::Error)]
#[error("failed to read {}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The identity of one version of a file, to tell whether it changed since a cached result: its
/// modification time, size and inode, or `None` when it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    path: PathBuf,
    metadata: Option<(SystemTime, u64, u64)>,
}

impl FileStamp {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn of(path: &Path) -> Self {
        let metadata = std::fs::metadata(path)
            .and_then(|metadata| Ok((metadata.modified()?, metadata.len(), metadata.ino())))
            .ok();
        Self {
            path: path.to_owned(),
            metadata,
        }
    }
}

/// Reads a whole file, or returns `Ok(None)` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ReadError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReadError {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A record of a package database (a stanza, or one line of `rpm` output) that was skipped
/// because it is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError<K> {
    /// The 1-based line number in the file or output where the problem is.
    pub line: usize,
    /// The package name, when the record names one.
    pub package: Option<String>,
    pub kind: K,
}

impl<K: fmt::Display> fmt::Display for RecordError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(package) = &self.package {
            write!(f, ", package {package}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl<K: fmt::Display + fmt::Debug> Error for RecordError<K> {}

/// Formats an error with all its sources, for a warning that leaves the host.
pub(crate) fn error_chain(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Splits `bytes` into lines numbered from 1, without their `\n` or `\r\n` ending. A missing
/// final line ending is accepted.
pub(crate) fn numbered_lines(bytes: &[u8]) -> NumberedLines<'_> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    NumberedLines {
        rest: Some(body),
        number: 0,
    }
}

pub(crate) struct NumberedLines<'a> {
    /// The text after the last line returned, or `None` once the last line was returned.
    rest: Option<&'a [u8]>,
    number: usize,
}

impl<'a> Iterator for NumberedLines<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let line = match find_newline(rest) {
            Some(end) => {
                self.rest = Some(&rest[end + 1..]);
                &rest[..end]
            }
            None => {
                self.rest = None;
                rest
            }
        };
        self.number += 1;
        Some((self.number, strip_carriage_return(line)))
    }
}

/// Returns the index of the first `\n` in `bytes`. Tests eight bytes at a time, which makes
/// parsing a status file about twice as fast as a byte-by-byte search.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);

    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        // Bytes equal to `\n` become zero, and the lowest set high bit of `found` marks the first
        // zero byte. Bits above a zero byte can be set falsely, so only the lowest one is used.
        let word = u64::from_le_bytes(word) ^ NEWLINES;
        let found = word.wrapping_sub(ONES) & !word & HIGH_BITS;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|byte| *byte == b'\n')
        .map(|index| offset + index)
}

pub(crate) fn strip_carriage_return(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Trims ASCII spaces and tabs from both ends.
pub(crate) fn trim_blanks(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !is_blank(*b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_blank(*b))
        .map_or(start, |last| last + 1);
    &bytes[start..end]
}

pub(crate) fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// Converts to a `String`, replacing invalid UTF-8 with U+FFFD.
pub(crate) fn lossy_string(bytes: &[u8]) -> String {
    // Checking first is faster than `from_utf8_lossy` for the short, valid values parsed here.
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_lines_strips_endings() {
        let lines: Vec<(usize, &[u8])> = numbered_lines(b"a\r\nb\n\nc").collect();
        assert_eq!(
            lines,
            vec![
                (1, &b"a"[..]),
                (2, &b"b"[..]),
                (3, &b""[..]),
                (4, &b"c"[..])
            ]
        );
    }

    #[test]
    fn numbered_lines_ignores_final_newline() {
        let lines: Vec<(usize, &[u8])> = numbered_lines(b"a\n").collect();
        assert_eq!(lines, vec![(1, &b"a"[..])]);
    }

    #[test]
    fn numbered_lines_of_empty_input() {
        let lines: Vec<(usize, &[u8])> = numbered_lines(b"").collect();
        assert_eq!(lines, vec![(1, &b""[..])]);
    }

    #[test]
    fn find_newline_matches_position() {
        let text = b"0123456789abcdef\n0123456\n\n";
        for start in 0..text.len() {
            let expected = text[start..].iter().position(|byte| *byte == b'\n');
            assert_eq!(find_newline(&text[start..]), expected, "from {start}");
        }
        // Bytes next to `\n` in value (0x0b, 0x09, 0x8a) must not match.
        assert_eq!(
            find_newline(b"\x0b\x09\x8a\x0b\x09\x8a\x0b\x09\x8a\n"),
            Some(9)
        );
        assert_eq!(find_newline(b"\x0b\x09\x8a"), None);
    }

    proptest::proptest! {
        #[test]
        fn find_newline_agrees_with_position(bytes in proptest::collection::vec(
            proptest::sample::select(vec![b'\n', b'\r', 0x0b, 0x09, 0x8a, 0x00, 0xff, b'a']), 0..64)
        ) {
            proptest::prop_assert_eq!(
                find_newline(&bytes),
                bytes.iter().position(|byte| *byte == b'\n')
            );
        }
    }

    #[test]
    fn trim_blanks_of_only_blanks_is_empty() {
        assert_eq!(trim_blanks(b" \t "), b"");
        assert_eq!(trim_blanks(b"\t a b "), b"a b");
    }

    #[test]
    fn record_error_names_line_and_package() {
        let error = RecordError {
            line: 7,
            package: Some("curl".to_string()),
            kind: "bad",
        };
        assert_eq!(error.to_string(), "line 7, package curl: bad");
        let error = RecordError {
            line: 3,
            package: None,
            kind: "bad",
        };
        assert_eq!(error.to_string(), "line 3: bad");
    }
}
