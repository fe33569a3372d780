//! Pending updates on Debian and Ubuntu, from APT's local package lists in `/var/lib/apt/lists`.
//!
//! For each installed deb package, the candidate is the highest version above the installed one that
//! any list offers for the same name, with the same architecture or `all`. Nothing is fetched: the
//! result is only as fresh as the last `apt update`, which `package_lists_updated_unix_s` reports.
//!
//! Plain `*_Packages` files are read, and so are the LZ4 and gzip compressed forms
//! (`*_Packages.lz4`, `*_Packages.gz`) that APT keeps when `Acquire::GzipIndexes` is set, as in
//! Debian's container images. Other compressions (`.xz`, `.bz2`) are skipped with one warning, and
//! `*.diff_Index` files are never lists.
//!
//! Lists can be larger than 50 MB on Ubuntu, so each is streamed line by line, only the
//! `Package`, `Architecture` and `Version` fields are looked at, and a version is kept only for a
//! name that is installed. The result is cached and the lists are read again only when a list file
//! or an installed package changes.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use tidegate_protocol::version::deb;
use tidegate_protocol::{Ecosystem, Package, PendingUpdate, Selection, Warning};

use super::{error_chain, is_blank, strip_carriage_return, trim_blanks, FileStamp, ReadError};

/// The warning source for this collector.
pub const SOURCE: &str = "apt-lists";

/// APT's list directory, relative to the root.
pub const LISTS_PATH: &str = "var/lib/apt/lists";

/// The pending updates found in the lists and the lists' age.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListsResult {
    pub pending_updates: Vec<PendingUpdate>,
    /// The newest modification time among the plain lists, or `None` when there is none.
    ///
    /// NOTE: APT gives a downloaded list the archive's `Last-Modified` time, not the time of the
    /// download, so this is when the newest list was published. It can be older than the last
    /// `apt update` that found nothing new.
    pub updated_unix_s: Option<i64>,
}

/// Returns whether a list file comes from a security archive, by APT's file naming: the suite
/// (`bookworm-security`, `jammy-security`) or the archive (`debian-security`) is part of the name.
pub fn is_security_list(file_name: &str) -> bool {
    file_name.contains("-security_") || file_name.contains("_security_")
}

/// An installed package and the best candidate found for it so far.
struct Installed<'a> {
    package: &'a Package,
    candidate: Option<Candidate>,
}

struct Candidate {
    version: String,
    security: bool,
}

/// Finds pending updates for installed packages in any number of lists.
pub struct UpdateFinder<'a> {
    by_name: HashMap<&'a str, Vec<Installed<'a>>>,
}

impl<'a> UpdateFinder<'a> {
    /// Indexes the installed deb packages among `packages`; all other rows are ignored.
    pub fn new(packages: &'a [Package]) -> Self {
        let mut by_name: HashMap<&str, Vec<Installed>> = HashMap::new();
        for package in packages {
            if package.ecosystem == Ecosystem::Deb && package.state.is_installed() {
                by_name
                    .entry(package.name.as_str())
                    .or_default()
                    .push(Installed {
                        package,
                        candidate: None,
                    });
            }
        }
        Self { by_name }
    }

    /// Reads one `Packages` list. `security` marks a list from a security archive.
    /// Stanzas without a name or version, and lines that are not fields, are skipped.
    pub fn scan_list(&mut self, mut reader: impl BufRead, security: bool) -> io::Result<()> {
        let mut line = Vec::new();
        let mut name = Vec::new();
        let mut arch = Vec::new();
        let mut version = Vec::new();
        loop {
            line.clear();
            let end_of_file = reader.read_until(b'\n', &mut line)? == 0;
            let content = strip_carriage_return(line.strip_suffix(b"\n").unwrap_or(&line));
            if end_of_file || content.is_empty() {
                self.offer(&name, &arch, &version, security);
                name.clear();
                arch.clear();
                version.clear();
                if end_of_file {
                    return Ok(());
                }
                continue;
            }
            if is_blank(content[0]) {
                continue;
            }
            let Some(colon) = content.iter().position(|b| *b == b':') else {
                continue;
            };
            let field = &content[..colon];
            let target = if field.eq_ignore_ascii_case(b"Package") {
                &mut name
            } else if field.eq_ignore_ascii_case(b"Architecture") {
                &mut arch
            } else if field.eq_ignore_ascii_case(b"Version") {
                &mut version
            } else {
                continue;
            };
            target.clear();
            target.extend_from_slice(trim_blanks(&content[colon + 1..]));
        }
    }

    fn offer(&mut self, name: &[u8], arch: &[u8], version: &[u8], security: bool) {
        let (Ok(name), Ok(arch), Ok(version)) = (
            std::str::from_utf8(name),
            std::str::from_utf8(arch),
            std::str::from_utf8(version),
        ) else {
            return;
        };
        if version.is_empty() {
            return;
        }
        let Some(installed) = self.by_name.get_mut(name) else {
            return;
        };
        for slot in installed {
            if arch != slot.package.arch && arch != "all" {
                continue;
            }
            if deb::compare(version, &slot.package.version).is_le() {
                continue;
            }
            match &mut slot.candidate {
                Some(best) => match deb::compare(version, &best.version) {
                    std::cmp::Ordering::Greater => {
                        *best = Candidate {
                            version: version.to_owned(),
                            security,
                        };
                    }
                    // The same version in a security list and a regular one is a security update.
                    std::cmp::Ordering::Equal => best.security |= security,
                    std::cmp::Ordering::Less => {}
                },
                None => {
                    slot.candidate = Some(Candidate {
                        version: version.to_owned(),
                        security,
                    })
                }
            }
        }
    }

    /// Returns the pending updates, sorted by name and architecture.
    pub fn into_pending_updates(self) -> Vec<PendingUpdate> {
        let mut updates: Vec<PendingUpdate> = self
            .by_name
            .into_values()
            .flatten()
            .filter_map(|slot| {
                let candidate = slot.candidate?;
                Some(PendingUpdate {
                    ecosystem: Ecosystem::Deb,
                    name: slot.package.name.clone(),
                    arch: slot.package.arch.clone(),
                    installed_version: slot.package.version.clone(),
                    candidate_version: candidate.version,
                    held: slot.package.selection == Selection::Hold,
                    security: candidate.security,
                })
            })
            .collect();
        updates.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
        updates
    }
}

/// How a list file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListEncoding {
    Plain,
    Lz4,
    Gzip,
}

impl ListEncoding {
    /// Returns the encoding of a list file by its name, or `None` for a file that is not a list
    /// this collector reads.
    fn of(file_name: &str) -> Option<Self> {
        if file_name.ends_with("_Packages") {
            Some(Self::Plain)
        } else if file_name.ends_with("_Packages.lz4") {
            Some(Self::Lz4)
        } else if file_name.ends_with("_Packages.gz") {
            Some(Self::Gzip)
        } else {
            None
        }
    }

    /// Wraps an open list file in the matching decoder.
    fn reader(self, file: File) -> Box<dyn BufRead> {
        const BUFFER_BYTES: usize = 64 * 1024;
        match self {
            Self::Plain => Box::new(BufReader::with_capacity(BUFFER_BYTES, file)),
            Self::Lz4 => Box::new(BufReader::with_capacity(
                BUFFER_BYTES,
                lz4_flex::frame::FrameDecoder::new(file),
            )),
            Self::Gzip => Box::new(BufReader::with_capacity(
                BUFFER_BYTES,
                flate2::read::MultiGzDecoder::new(file),
            )),
        }
    }
}

/// Lists the package list files in `directory` that this collector reads, sorted by name, and
/// whether a list in a compression it does not read was skipped. A missing directory has no lists.
fn find_lists(directory: &Path) -> Result<(Vec<PathBuf>, bool), ReadError> {
    let read_error = |source| ReadError {
        path: directory.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(error) => return Err(read_error(error)),
    };

    let mut lists = Vec::new();
    let mut unreadable_found = false;
    for entry in entries {
        let entry = entry.map_err(read_error)?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if ListEncoding::of(file_name).is_some() {
            // Follows symbolic links, so a linked list counts when it points to a regular file.
            if entry
                .path()
                .metadata()
                .is_ok_and(|metadata| metadata.is_file())
            {
                lists.push(entry.path());
            }
        } else if file_name.contains("_Packages.") && !file_name.ends_with(".diff_Index") {
            unreadable_found = true;
        }
    }
    lists.sort();
    Ok((lists, unreadable_found))
}

/// The result of the last scan of the lists, reused while neither the lists nor the installed
/// packages change, because a scan of Ubuntu's lists reads more than 50 MB.
#[derive(Default)]
pub(crate) struct ListsCache {
    scan: Option<CachedScan>,
}

struct CachedScan {
    lists: Vec<FileStamp>,
    installed: u64,
    result: ListsResult,
    warnings: Vec<Warning>,
}

/// Hashes what the candidates depend on: each installed deb package's name, architecture,
/// version and hold.
fn installed_fingerprint(packages: &[Package]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for package in packages {
        if package.ecosystem == Ecosystem::Deb && package.state.is_installed() {
            (&package.name, &package.arch, &package.version).hash(&mut hasher);
            (package.selection == Selection::Hold).hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// Reads the lists below `root` and finds the pending updates of the deb rows in `packages`, or
/// reuses the result in `cache` when nothing it depends on changed.
pub(crate) fn collect(
    root: &Path,
    packages: &[Package],
    cache: &mut ListsCache,
    warnings: &mut Vec<Warning>,
) -> ListsResult {
    let directory = root.join(LISTS_PATH);
    let warning = |message: String| Warning {
        source: SOURCE.into(),
        message,
    };

    let (lists, unreadable_found) = match find_lists(&directory) {
        Ok(found) => found,
        Err(error) => {
            warnings.push(warning(error_chain(&error)));
            return ListsResult::default();
        }
    };
    if unreadable_found {
        warnings.push(warning(format!(
            "{} contains package lists compressed other than with LZ4 or gzip, which are not read; \
             pending updates may be missing (set Acquire::GzipIndexes \"false\" in APT's \
             configuration to keep plain lists)",
            directory.display()
        )));
    }

    // APT replaces a list by renaming a new file over it, so the inode in the stamp distinguishes
    // a replaced list even where its size and modification time are equal.
    let stamps: Vec<FileStamp> = lists.iter().map(|path| FileStamp::of(path)).collect();
    let installed = installed_fingerprint(packages);
    if let Some(scan) = &cache.scan {
        if scan.lists == stamps && scan.installed == installed {
            warnings.extend(scan.warnings.iter().cloned());
            return scan.result.clone();
        }
    }

    let mut scan_warnings = Vec::new();
    let mut finder = UpdateFinder::new(packages);
    let mut updated_unix_s = None;
    for path in lists {
        let file_name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        let security = is_security_list(file_name);
        let encoding = ListEncoding::of(file_name).unwrap_or(ListEncoding::Plain);
        let result = File::open(&path).and_then(|file| {
            let modified = file.metadata()?.modified()?;
            finder.scan_list(encoding.reader(file), security)?;
            Ok(modified)
        });
        match result {
            Ok(modified) => {
                let seconds = match modified.duration_since(UNIX_EPOCH) {
                    Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
                    Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
                };
                updated_unix_s = updated_unix_s.max(Some(seconds));
            }
            Err(source) => scan_warnings.push(warning(error_chain(&ReadError { path, source }))),
        }
    }

    let result = ListsResult {
        pending_updates: finder.into_pending_updates(),
        updated_unix_s,
    };
    warnings.extend(scan_warnings.iter().cloned());
    cache.scan = Some(CachedScan {
        lists: stamps,
        installed,
        result: result.clone(),
        warnings: scan_warnings,
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_protocol::InstallState;

    fn installed(name: &str, arch: &str, version: &str, selection: Selection) -> Package {
        Package {
            ecosystem: Ecosystem::Deb,
            name: name.into(),
            arch: arch.into(),
            version: version.into(),
            state: InstallState::Installed,
            selection,
            provides: vec![],
        }
    }

    #[test]
    fn security_list_names() {
        assert!(is_security_list(
            "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages"
        ));
        assert!(is_security_list(
            "security.ubuntu.com_ubuntu_dists_jammy-security_main_binary-amd64_Packages"
        ));
        assert!(is_security_list(
            "mirror_security_dists_x_main_binary-amd64_Packages"
        ));
        assert!(!is_security_list(
            "deb.debian.org_debian_dists_bookworm-updates_main_binary-amd64_Packages"
        ));
    }

    #[test]
    fn highest_matching_candidate_wins() {
        let packages = vec![
            installed("curl", "amd64", "7.88.1-10", Selection::Install),
            installed("tzdata", "all", "2024a-0", Selection::Hold),
            installed("libc6", "i386", "2.36-9", Selection::Install),
        ];
        let main = "Package: curl\nArchitecture: amd64\nVersion: 7.88.1-10+deb12u5\n\n\
                    Package: curl\nArchitecture: i386\nVersion: 9.0-1\n\n\
                    Package: tzdata\nArchitecture: all\nVersion: 2024a-0+deb12u1\n\n\
                    Package: libc6\r\nArchitecture: amd64\r\nVersion: 2.36-9+deb12u4\r\n";
        let security = "Package: curl\nVersion: 7.88.1-10+deb12u6\nArchitecture: amd64\n\
                        Description: x\n Version: 99\n";
        let mut finder = UpdateFinder::new(&packages);
        finder.scan_list(main.as_bytes(), false).unwrap();
        finder.scan_list(security.as_bytes(), true).unwrap();

        let updates = finder.into_pending_updates();
        let expected = vec![
            PendingUpdate {
                ecosystem: Ecosystem::Deb,
                name: "curl".into(),
                arch: "amd64".into(),
                installed_version: "7.88.1-10".into(),
                candidate_version: "7.88.1-10+deb12u6".into(),
                held: false,
                security: true,
            },
            PendingUpdate {
                ecosystem: Ecosystem::Deb,
                name: "tzdata".into(),
                arch: "all".into(),
                installed_version: "2024a-0".into(),
                candidate_version: "2024a-0+deb12u1".into(),
                held: true,
                security: false,
            },
        ];
        assert_eq!(updates, expected);
    }

    #[test]
    fn lower_or_equal_versions_are_no_update() {
        let packages = vec![installed(
            "bash",
            "amd64",
            "5.2.15-2+b2",
            Selection::Install,
        )];
        let list = "Package: bash\nArchitecture: amd64\nVersion: 5.2.15-2+b2\n\n\
                    Package: bash\nArchitecture: amd64\nVersion: 5.2.15-2\n";
        let mut finder = UpdateFinder::new(&packages);
        finder.scan_list(list.as_bytes(), false).unwrap();
        assert_eq!(finder.into_pending_updates(), vec![]);
    }

    #[test]
    fn epoch_outranks_upstream_version() {
        // 1:9.18 is above 9.20 because the epoch is compared first.
        let packages = vec![installed(
            "bind9-host",
            "amd64",
            "1:9.18.19-1~deb12u1",
            Selection::Install,
        )];
        let list = "Package: bind9-host\nArchitecture: amd64\nVersion: 9.20.0-1\n\n\
                    Package: bind9-host\nArchitecture: amd64\nVersion: 1:9.18.24-1\n";
        let mut finder = UpdateFinder::new(&packages);
        finder.scan_list(list.as_bytes(), false).unwrap();
        let updates = finder.into_pending_updates();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].candidate_version, "1:9.18.24-1");
    }

    #[test]
    fn same_candidate_in_security_list_is_security() {
        let packages = vec![installed(
            "openssl",
            "amd64",
            "3.0.11-1~deb12u1",
            Selection::Install,
        )];
        let list = "Package: openssl\nArchitecture: amd64\nVersion: 3.0.13-1~deb12u1\n";
        let mut finder = UpdateFinder::new(&packages);
        finder.scan_list(list.as_bytes(), true).unwrap();
        finder.scan_list(list.as_bytes(), false).unwrap();
        let updates = finder.into_pending_updates();
        assert_eq!(updates.len(), 1);
        assert!(updates[0].security);
    }

    #[test]
    fn config_files_rows_get_no_update() {
        let mut package = installed("oldpkg", "amd64", "1.0-1", Selection::Deinstall);
        package.state = InstallState::ConfigFiles;
        let packages = vec![package];
        let mut finder = UpdateFinder::new(&packages);
        finder
            .scan_list(
                "Package: oldpkg\nArchitecture: amd64\nVersion: 2.0-1\n".as_bytes(),
                false,
            )
            .unwrap();
        assert_eq!(finder.into_pending_updates(), vec![]);
    }
}
