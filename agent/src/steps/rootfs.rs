//! Files below a step's root: resolving a step's relative path without leaving the root, taking a
//! file's content and metadata, replacing a file atomically with a given mode and owner, and
//! keeping and restoring a file through the step's backup directory.
//!
//! A replacement goes through a temporary file `.NAME.tidegate-new` in the same directory: it is
//! written, given its owner and mode, flushed, renamed over the target, and the directory is
//! flushed, so a crash leaves the old or the new file and at most a stale temporary file, which
//! the next write or restore of the same path removes.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::bundle::validate_step_path;

use super::{StepContext, StepError};
use crate::fsutil;

/// The name of the kept copy of a file in a step's backup directory.
pub(crate) const BACKUP_FILE: &str = "previous";

/// A regular file's metadata and the SHA-256 of its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSnapshot {
    /// Permission bits, including setuid, setgid and sticky (`0o7777` at most).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Lowercase hexadecimal SHA-256 of the content.
    pub sha256: String,
}

/// A file as a step found it: `previous` is `None` when the file did not exist. The content is
/// kept in the backup directory as [`BACKUP_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePrior {
    /// The path below the root, as the step names it.
    pub path: String,
    pub previous: Option<FileSnapshot>,
}

pub(crate) fn io_error(
    kind: &'static str,
    operation: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> StepError {
    let path = path.to_path_buf();
    move |source| StepError::Io {
        kind,
        operation,
        path,
        source,
    }
}

/// Resolves `relative` below `root`.
///
/// Rejects a path that is absolute or has `.`, `..` or empty components. Rejects an existing
/// directory on the way whose real location is outside the root (a symbolic link pointing out).
/// Rejects a last component that is a symbolic link or a directory, because steps replace
/// regular files only.
/// Components that do not exist yet are accepted as they are.
pub(crate) fn resolve(
    kind: &'static str,
    root: &Path,
    relative: &str,
) -> Result<PathBuf, StepError> {
    let outside = |reason: String| StepError::OutsideRoot {
        kind,
        path: relative.to_owned(),
        root: root.to_path_buf(),
        reason,
    };
    validate_step_path(relative).map_err(outside)?;
    let real_root = fs::canonicalize(root).map_err(io_error(kind, "resolve the root", root))?;

    let components: Vec<&str> = relative.split('/').collect();
    let (last, parents) = components
        .split_last()
        .ok_or_else(|| outside("the path is empty".into()))?;
    let mut current = real_root.clone();
    for component in parents {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                let target = fs::canonicalize(&current).map_err(io_error(
                    kind,
                    "resolve the symbolic link",
                    &current,
                ))?;
                if !target.starts_with(&real_root) {
                    return Err(outside(format!(
                        "{} is a symbolic link to {}",
                        current.display(),
                        target.display()
                    )));
                }
                current = target;
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(kind, "inspect", &current)(error)),
        }
    }
    current.push(last);
    match fs::symlink_metadata(&current) {
        Ok(metadata) if metadata.file_type().is_symlink() => Err(outside(format!(
            "{} is a symbolic link, and steps replace only regular files",
            current.display()
        ))),
        Ok(metadata) if metadata.is_dir() => Err(StepError::Invalid {
            kind,
            reason: format!("{} is a directory, not a file", current.display()),
        }),
        _ => Ok(current),
    }
}

/// Resolves an absolute path read from the root's own files (a home directory in `etc/passwd`)
/// below the root, with the checks of [`resolve`].
pub(crate) fn resolve_absolute(
    kind: &'static str,
    root: &Path,
    absolute: &str,
) -> Result<PathBuf, StepError> {
    let relative: Vec<&str> = Path::new(absolute)
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => name.to_str(),
            _ => None,
        })
        .collect();
    let is_clean = Path::new(absolute)
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !absolute.starts_with('/') || !is_clean || relative.is_empty() {
        return Err(StepError::OutsideRoot {
            kind,
            path: absolute.to_owned(),
            root: root.to_path_buf(),
            reason: "expected an absolute path without \".\" or \"..\" components".into(),
        });
    }
    resolve(kind, root, &relative.join("/"))
}

/// Reads a file's content and metadata, or `None` when it does not exist.
pub(crate) fn read_file(
    kind: &'static str,
    path: &Path,
) -> Result<Option<(FileSnapshot, Vec<u8>)>, StepError> {
    let content = match fs::read(path) {
        Ok(content) => content,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(kind, "read", path)(error)),
    };
    let metadata = fs::metadata(path).map_err(io_error(kind, "inspect", path))?;
    Ok(Some((snapshot_of(&metadata, &content), content)))
}

pub(crate) fn snapshot_of(metadata: &fs::Metadata, content: &[u8]) -> FileSnapshot {
    FileSnapshot {
        mode: metadata.mode() & 0o7777,
        uid: metadata.uid(),
        gid: metadata.gid(),
        size: content.len() as u64,
        sha256: sha256_hex(content),
    }
}

pub(crate) fn sha256_hex(content: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tidegate-new"))
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// Replaces `path` with `content`, owned by `uid:gid` with permission bits `mode`, through a
/// temporary file and a rename. `checkpoint` is called when the temporary file is complete and
/// the target not yet replaced.
pub(crate) fn replace_file(
    kind: &'static str,
    path: &Path,
    content: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
    checkpoint: &dyn Fn(),
) -> Result<(), StepError> {
    let temp = temp_path(path);
    // A stale temporary file is removed rather than opened, and the new one is created with
    // O_EXCL, so a symbolic link planted at the temporary path is never followed.
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(kind, "remove", &temp)(error)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io_error(kind, "create", &temp))?;
    file.write_all(content)
        .map_err(io_error(kind, "write", &temp))?;
    let metadata = file.metadata().map_err(io_error(kind, "inspect", &temp))?;
    if metadata.uid() != uid || metadata.gid() != gid {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(io_error(
            kind,
            "change the owner of",
            &temp,
        ))?;
    }
    // After the owner: chown clears the setuid and setgid bits.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_error(kind, "change the mode of", &temp))?;
    file.sync_all().map_err(io_error(kind, "flush", &temp))?;
    drop(file);

    checkpoint();
    fs::rename(&temp, path).map_err(io_error(kind, "rename into place", path))?;
    let dir = parent_of(path);
    fsutil::sync_dir(dir).map_err(io_error(kind, "flush the directory", dir))
}

/// Removes `path` and a stale temporary file of it, if they exist, and flushes the directory.
pub(crate) fn remove_file(kind: &'static str, path: &Path) -> Result<(), StepError> {
    let mut removed = false;
    for candidate in [temp_path(path), path.to_path_buf()] {
        match fs::remove_file(&candidate) {
            Ok(()) => removed = true,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(kind, "remove", &candidate)(error)),
        }
    }
    if removed {
        let dir = parent_of(path);
        fsutil::sync_dir(dir).map_err(io_error(kind, "flush the directory", dir))?;
    }
    Ok(())
}

/// Removes a stale temporary file of `path` left by a crash, if there is one.
pub(crate) fn remove_stale_temp(kind: &'static str, path: &Path) -> Result<(), StepError> {
    let temp = temp_path(path);
    match fs::remove_file(&temp) {
        Ok(()) => {
            let dir = parent_of(path);
            fsutil::sync_dir(dir).map_err(io_error(kind, "flush the directory", dir))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error(kind, "remove", &temp)(error)),
    }
}

pub(crate) fn create_backup_dir(kind: &'static str, dir: &Path) -> Result<(), StepError> {
    fsutil::create_private_dir(dir).map_err(io_error(kind, "create the backup directory", dir))
}

/// Probes the file at `relative` below the root.
pub(crate) fn probe_file(
    kind: &'static str,
    cx: &StepContext<'_>,
    relative: &str,
) -> Result<FilePrior, StepError> {
    let path = resolve(kind, cx.root, relative)?;
    Ok(FilePrior {
        path: relative.to_owned(),
        previous: read_file(kind, &path)?.map(|(snapshot, _)| snapshot),
    })
}

/// Copies the file a [`FilePrior`] describes into the backup directory, checking that it still
/// is what the probe read.
pub(crate) fn backup_file(
    kind: &'static str,
    cx: &StepContext<'_>,
    prior: &FilePrior,
) -> Result<(), StepError> {
    let Some(expected) = &prior.previous else {
        return Ok(());
    };
    let path = resolve(kind, cx.root, &prior.path)?;
    let current = read_file(kind, &path)?;
    let content = match current {
        Some((snapshot, content)) if &snapshot == expected => content,
        _ => {
            return Err(StepError::Backup {
                kind,
                path,
                reason: "the file changed between probe and backup".into(),
            })
        }
    };
    let target = cx.backup_dir.join(BACKUP_FILE);
    fsutil::write_atomic(&target, &content, 0o600).map_err(io_error(
        kind,
        "write the backup",
        &target,
    ))
}

/// Reads the kept copy of a file from the backup directory and checks it against the snapshot.
pub(crate) fn read_backup(
    kind: &'static str,
    cx: &StepContext<'_>,
    expected: &FileSnapshot,
) -> Result<Vec<u8>, StepError> {
    let path = cx.backup_dir.join(BACKUP_FILE);
    let content = fs::read(&path).map_err(io_error(kind, "read the backup", &path))?;
    if sha256_hex(&content) != expected.sha256 {
        return Err(StepError::Backup {
            kind,
            path,
            reason: format!("its SHA-256 is not {}", expected.sha256),
        });
    }
    Ok(content)
}

/// Brings the file at `path` back to what `prior` describes: the kept content, mode and owner,
/// or no file at all. Does nothing more than remove a stale temporary file when the file already
/// is in that state, so running it twice is harmless.
pub(crate) fn restore_file(
    kind: &'static str,
    cx: &StepContext<'_>,
    path: &Path,
    prior: &FilePrior,
) -> Result<(), StepError> {
    match &prior.previous {
        None => {
            remove_stale_temp(kind, path)?;
            if path.exists() {
                (cx.checkpoint)("revert-mid");
            }
            remove_file(kind, path)
        }
        Some(expected) => {
            let current = read_file(kind, path)?.map(|(snapshot, _)| snapshot);
            if current.as_ref() == Some(expected) {
                return remove_stale_temp(kind, path);
            }
            let content = read_backup(kind, cx, expected)?;
            replace_file(
                kind,
                path,
                &content,
                expected.mode,
                expected.uid,
                expected.gid,
                &|| (cx.checkpoint)("revert-mid"),
            )
        }
    }
}

/// Writes a unified diff of two texts, with three lines of context, in the form `diff -u` prints.
pub(crate) fn unified_diff(old_name: &str, new_name: &str, old: &str, new: &str) -> String {
    let old_lines: Vec<&str> = old.split_inclusive('\n').collect();
    let new_lines: Vec<&str> = new.split_inclusive('\n').collect();
    let edits = diff_lines(&old_lines, &new_lines);
    if edits.iter().all(|e| matches!(e, Edit::Same(..))) {
        return String::new();
    }

    const CONTEXT: usize = 3;
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let changed: Vec<usize> = edits
        .iter()
        .enumerate()
        .filter(|(_, e)| !matches!(e, Edit::Same(..)))
        .map(|(i, _)| i)
        .collect();
    let mut hunk_start = 0;
    while hunk_start < changed.len() {
        let mut hunk_end = hunk_start;
        while hunk_end + 1 < changed.len()
            && changed[hunk_end + 1] - changed[hunk_end] <= 2 * CONTEXT + 1
        {
            hunk_end += 1;
        }
        let first = changed[hunk_start].saturating_sub(CONTEXT);
        let last = (changed[hunk_end] + CONTEXT + 1).min(edits.len());
        let (mut old_start, mut new_start) = (1, 1);
        for edit in &edits[..first] {
            match edit {
                Edit::Same(..) => {
                    old_start += 1;
                    new_start += 1;
                }
                Edit::Delete(_) => old_start += 1,
                Edit::Insert(_) => new_start += 1,
            }
        }
        let old_count = edits[first..last]
            .iter()
            .filter(|e| !matches!(e, Edit::Insert(_)))
            .count();
        let new_count = edits[first..last]
            .iter()
            .filter(|e| !matches!(e, Edit::Delete(_)))
            .count();
        let range = |start: usize, count: usize| match count {
            0 => format!("{},0", start - 1),
            1 => start.to_string(),
            _ => format!("{start},{count}"),
        };
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(old_start, old_count),
            range(new_start, new_count)
        ));
        for edit in &edits[first..last] {
            let (sign, line) = match edit {
                Edit::Same(line) => (' ', *line),
                Edit::Delete(line) => ('-', *line),
                Edit::Insert(line) => ('+', *line),
            };
            out.push(sign);
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
        hunk_start = hunk_end + 1;
    }
    out
}

enum Edit<'a> {
    Same(&'a str),
    Delete(&'a str),
    Insert(&'a str),
}

/// Computes a longest-common-subsequence line diff. Configuration files are small, so its
/// quadratic table is cheap. Above a million cells it falls back to deleting and inserting
/// everything.
fn diff_lines<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<Edit<'a>> {
    if old.len().saturating_mul(new.len()) > 1_000_000 {
        return old
            .iter()
            .map(|l| Edit::Delete(l))
            .chain(new.iter().map(|l| Edit::Insert(l)))
            .collect();
    }
    let width = new.len() + 1;
    let mut table = vec![0u32; (old.len() + 1) * width];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            table[i * width + j] = if old[i] == new[j] {
                table[(i + 1) * width + j + 1] + 1
            } else {
                table[(i + 1) * width + j].max(table[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut edits = Vec::new();
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            edits.push(Edit::Same(old[i]));
            i += 1;
            j += 1;
        } else if i < old.len()
            && (j == new.len() || table[(i + 1) * width + j] >= table[i * width + j + 1])
        {
            edits.push(Edit::Delete(old[i]));
            i += 1;
        } else {
            edits.push(Edit::Insert(new[j]));
            j += 1;
        }
    }
    edits
}

/// Looks up a user or group name in a file of the `etc/passwd` form (name first, id third) below
/// the root. A decimal value is taken as the id itself.
pub(crate) fn lookup_id(
    kind: &'static str,
    cx: &StepContext<'_>,
    database: &'static str,
    what: &'static str,
    name: &str,
) -> Result<u32, StepError> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let path = resolve(kind, cx.root, database)?;
    let content = fs::read_to_string(&path).map_err(io_error(kind, "read", &path))?;
    for line in content.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&name) {
            return fields.get(2).and_then(|id| id.parse().ok()).ok_or_else(|| {
                StepError::Malformed {
                    kind,
                    path: path.clone(),
                    reason: format!("the entry of {name:?} has no numeric id in field 3"),
                }
            });
        }
    }
    Err(StepError::NotFound {
        kind,
        what,
        name: name.to_owned(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_shows_changed_line_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        assert_eq!(
            unified_diff("a/x", "b/x", old, new),
            "--- a/x\n+++ b/x\n@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
        );
    }

    #[test]
    fn unified_diff_of_new_file_and_equal_texts() {
        assert_eq!(
            unified_diff("/dev/null", "b/x", "", "one\n"),
            "--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+one\n"
        );
        assert_eq!(unified_diff("a", "b", "same\n", "same\n"), "");
    }

    #[test]
    fn replace_file_ignores_planted_temp_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "untouched").unwrap();
        let target = dir.path().join("motd");
        std::os::unix::fs::symlink(&outside, dir.path().join(".motd.tidegate-new")).unwrap();

        replace_file("write-file", &target, b"new\n", 0o644, 0, 0, &|| {}).unwrap();

        assert_eq!(fs::read(&outside).unwrap(), b"untouched");
        assert_eq!(fs::read(&target).unwrap(), b"new\n");
        assert!(fs::symlink_metadata(dir.path().join(".motd.tidegate-new")).is_err());
    }

    #[test]
    fn resolve_rejects_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/tmp", root.join("out")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("etc/link")).unwrap();

        for (path, expected) in [
            ("../x", "has an empty, \".\" or \"..\" component"),
            ("etc/../../x", "has an empty, \".\" or \"..\" component"),
            ("/etc/motd", "is absolute"),
            ("out/motd", "is a symbolic link to /tmp"),
            (
                "etc/link",
                "is a symbolic link, and steps replace only regular files",
            ),
        ] {
            let error = resolve("write-file", &root, path).unwrap_err();
            assert!(
                matches!(error, StepError::OutsideRoot { .. }),
                "{path}: {error}"
            );
            assert!(error.to_string().contains(expected), "{path}: {error}");
        }
        assert_eq!(
            resolve("write-file", &root, "etc/motd").unwrap(),
            fs::canonicalize(&root).unwrap().join("etc/motd")
        );
    }
}
