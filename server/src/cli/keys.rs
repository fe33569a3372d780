//! `tidegate keys generate` and `tidegate keys show`, and the file handling that the trust commands
//! (`keys`, `root`, `bundle`) share.
//!
//! A private key only ever lives in a file on the operator's machine: `generate` creates it with
//! mode 0600 and never overwrites an existing file, and no command prints it or sends it anywhere.
//! Files that the trust commands change in place (root drafts, bundle files) are replaced
//! atomically, so an interrupted command leaves the old or the new content, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use clap::{Args, Subcommand};
use ring::rand::SystemRandom;
use tidegate_protocol::trust::{KeyError, KeyId, PublicKey, Role, SigningKey};

use super::format::render_fields;

/// The first line of a signing-key file, which distinguishes a key file from a public key line.
const KEY_FILE_BEGIN: &str = "-----BEGIN TIDEGATE SIGNING KEY-----";

/// The largest file the trust commands read as text: a key file is under 1 KiB and a public key
/// line under 100 bytes, so anything larger is the wrong file.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate an Ed25519 signing key and write it to a new file with mode 0600
    Generate(GenerateArgs),
    /// Show a key file's role, key id and public key line (never the private key)
    Show(KeyShowArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Role of the key: root signs trust roots, security signs bundles, ot signs window schedules
    #[arg(long, value_name = "ROLE")]
    pub role: Role,

    /// The key file to create; an existing file is never overwritten
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeyShowArgs {
    /// A signing-key file, or a file holding a public key line
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Print only the public key line `ROLE KEY-ID HEX`, to send to the person who builds the
    /// trust root
    #[arg(long)]
    pub public: bool,
}

/// A failure to read, write or create a file of the trust commands.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is {size} bytes, larger than the {max} bytes a {file_kind} can be; is it the right file?")]
    TooLarge {
        path: PathBuf,
        file_kind: &'static str,
        size: u64,
        max: u64,
    },
    #[error("{path} already exists; choose another --out or move the existing file away")]
    Exists { path: PathBuf },
    #[error("failed to write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// A failed `keys` command, or a key argument of a `root` or `bundle` command that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysCommandError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("failed to generate a {role} key: {source}")]
    Generate { role: Role, source: KeyError },
    #[error("invalid signing key file {path}: {source}")]
    InvalidKeyFile { path: PathBuf, source: KeyError },
    #[error("{path} is not a signing-key file: it holds a public key line, and signing needs the private key file")]
    PublicKeyOnly { path: PathBuf },
    #[error("invalid public key in {path}: {source}; expected a signing-key file or one line `ROLE KEY-ID HEX`")]
    InvalidPublicKeyFile { path: PathBuf, source: KeyError },
    #[error("{value:?} is not a file, a public key line `ROLE KEY-ID HEX` or a key id: {source}")]
    InvalidKeyArgument { value: String, source: KeyError },
}

/// A key as given on the command line: either a signing-key file (of which only the public key is
/// used) or a public key.
pub(super) struct ResolvedPublicKey {
    pub key: PublicKey,
    /// Whether the key came from a file that also contains the private key.
    pub from_private_key_file: bool,
}

pub fn run(command: KeysCommand, out: &mut dyn Write) -> Result<(), super::CliError> {
    match command {
        KeysCommand::Generate(args) => generate(&args, out),
        KeysCommand::Show(args) => show(&args, out),
    }
}

fn generate(args: &GenerateArgs, out: &mut dyn Write) -> Result<(), super::CliError> {
    let key = SigningKey::generate(args.role, &SystemRandom::new()).map_err(|source| {
        KeysCommandError::Generate {
            role: args.role,
            source,
        }
    })?;
    write_new_file(&args.out, key.to_key_file().as_bytes(), 0o600)
        .map_err(KeysCommandError::from)?;

    let fields = [
        ("role", key.role().to_string()),
        ("key id", key.key_id().to_string()),
        (
            "key file",
            format!(
                "{} (mode 0600; it contains the private key, so keep it off the server)",
                args.out.display()
            ),
        ),
        ("public key", key.public_key().to_string()),
    ];
    out.write_all(render_fields(&fields).as_bytes())?;
    Ok(())
}

fn show(args: &KeyShowArgs, out: &mut dyn Write) -> Result<(), super::CliError> {
    let resolved = read_public_key_file(&args.file)?;
    let key = &resolved.key;
    if args.public {
        writeln!(out, "{key}")?;
        return Ok(());
    }

    let contents = if resolved.from_private_key_file {
        "signing key: the private key and its public key"
    } else {
        "public key line only"
    };
    let fields = [
        ("file", args.file.display().to_string()),
        ("contents", contents.to_owned()),
        ("role", key.role.to_string()),
        ("key id", key.key_id.to_string()),
        ("public key", key.to_string()),
    ];
    out.write_all(render_fields(&fields).as_bytes())?;
    if resolved.from_private_key_file {
        write_permission_warning(&args.file, out)?;
    }
    Ok(())
}

/// Loads the signing key in `path`, for the commands that sign.
pub(super) fn load_signing_key(path: &Path) -> Result<SigningKey, KeysCommandError> {
    let text = read_text_file(path, "signing-key file")?;
    if !text.trim_start().starts_with(KEY_FILE_BEGIN) && PublicKey::parse(text.trim()).is_ok() {
        return Err(KeysCommandError::PublicKeyOnly {
            path: path.to_owned(),
        });
    }
    SigningKey::from_key_file(&text).map_err(|source| KeysCommandError::InvalidKeyFile {
        path: path.to_owned(),
        source,
    })
}

/// Resolves a `--key` argument that names a public key: a path to a signing-key file, a path to
/// a file holding a public key line, or the line itself.
pub(super) fn resolve_public_key(value: &str) -> Result<ResolvedPublicKey, KeysCommandError> {
    let path = Path::new(value);
    if path.is_file() {
        return read_public_key_file(path);
    }
    PublicKey::parse(value)
        .map(|key| ResolvedPublicKey {
            key,
            from_private_key_file: false,
        })
        .map_err(|source| KeysCommandError::InvalidKeyArgument {
            value: value.chars().take(200).collect(),
            source,
        })
}

/// Resolves a `--key` argument that names a listed key: anything [`resolve_public_key`] takes,
/// or a bare 16-digit key id.
pub(super) fn resolve_key_id(value: &str) -> Result<KeyId, KeysCommandError> {
    if !Path::new(value).exists() {
        if let Ok(key_id) = KeyId::parse(value) {
            return Ok(key_id);
        }
    }
    resolve_public_key(value).map(|resolved| resolved.key.key_id)
}

fn read_public_key_file(path: &Path) -> Result<ResolvedPublicKey, KeysCommandError> {
    let text = read_text_file(path, "key file")?;
    if text.trim_start().starts_with(KEY_FILE_BEGIN) {
        let key = SigningKey::from_key_file(&text).map_err(|source| {
            KeysCommandError::InvalidKeyFile {
                path: path.to_owned(),
                source,
            }
        })?;
        return Ok(ResolvedPublicKey {
            key: key.public_key().clone(),
            from_private_key_file: true,
        });
    }
    let key =
        PublicKey::parse(text.trim()).map_err(|source| KeysCommandError::InvalidPublicKeyFile {
            path: path.to_owned(),
            source,
        })?;
    Ok(ResolvedPublicKey {
        key,
        from_private_key_file: false,
    })
}

/// Writes a warning when a signing-key file can be read by users other than its owner.
pub(super) fn write_permission_warning(path: &Path, out: &mut dyn Write) -> io::Result<()> {
    #[cfg(unix)]
    if let Ok(metadata) = fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            writeln!(
                out,
                "warning: {} has mode {mode:04o}, so other users can read the private key; run \
                 `chmod 600 {}`",
                path.display(),
                path.display()
            )?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, out);
    Ok(())
}

fn read_text_file(path: &Path, file_kind: &'static str) -> Result<String, FileError> {
    let bytes = read_file(path, file_kind, MAX_KEY_FILE_BYTES)?;
    String::from_utf8(bytes).map_err(|_| FileError::Read {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"),
    })
}

/// Reads a whole file of at most `max_bytes`, checking the size before reading.
pub(super) fn read_file(
    path: &Path,
    file_kind: &'static str,
    max_bytes: u64,
) -> Result<Vec<u8>, FileError> {
    let read_error = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let size = fs::metadata(path).map_err(read_error)?.len();
    if size > max_bytes {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            file_kind,
            size,
            max: max_bytes,
        });
    }
    fs::read(path).map_err(read_error)
}

/// Creates `path` with permission bits `mode` and writes `bytes` to it. An existing file is an
/// error and is left unchanged; a file this call created is removed again if writing fails.
pub(super) fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(mode);
    #[cfg(not(unix))]
    let _ = mode;

    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            FileError::Exists {
                path: path.to_owned(),
            }
        } else {
            FileError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(source) = written {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(FileError::Write {
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

/// Replaces the content of the existing file `path` atomically: a temporary file in the same
/// directory with the old file's permission bits, flushed, renamed over `path`, then the
/// directory flushed.
pub(super) fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let write_error = |source| FileError::Write {
        path: path.to_owned(),
        source,
    };
    let permissions = fs::metadata(path).map_err(write_error)?.permissions();
    let dir = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        write_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(temp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.set_permissions(permissions)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&temp);
        return Err(write_error(source));
    }
    Ok(())
}

/// Flushes a directory so that a rename in it survives a power loss.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Formats a count with its noun, such as `1 signature` or `2 signatures`. The plural adds an "s".
pub(super) fn count_noun(count: impl Into<u64>, noun: &str) -> String {
    let count = count.into();
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// Lowercase hexadecimal of `bytes`.
pub(super) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Parses hexadecimal digits into bytes, or returns `None` for an odd length or a non-hex digit.
pub(super) fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security_key() -> SigningKey {
        SigningKey::generate(Role::Security, &SystemRandom::new()).unwrap()
    }

    #[test]
    fn public_key_resolves_from_three_forms() {
        let dir = tempfile::tempdir().unwrap();
        let key = security_key();
        let key_path = dir.path().join("s1.key");
        let line_path = dir.path().join("s1.pub");
        fs::write(&key_path, key.to_key_file()).unwrap();
        fs::write(&line_path, format!("{}\n", key.public_key())).unwrap();

        let from_line = resolve_public_key(&key.public_key().to_string()).unwrap();
        assert_eq!(from_line.key, *key.public_key());
        assert!(!from_line.from_private_key_file);

        let from_key_file = resolve_public_key(key_path.to_str().unwrap()).unwrap();
        assert_eq!(from_key_file.key, *key.public_key());
        assert!(from_key_file.from_private_key_file);

        let from_line_file = resolve_public_key(line_path.to_str().unwrap()).unwrap();
        assert_eq!(from_line_file.key, *key.public_key());
        assert!(!from_line_file.from_private_key_file);
    }

    #[test]
    fn key_id_resolves_from_bare_id() {
        let key = security_key();
        let resolved = resolve_key_id(&key.key_id().to_string()).unwrap();
        assert_eq!(resolved, key.key_id());
    }

    #[test]
    fn missing_key_file_is_invalid_argument() {
        let error = resolve_public_key("/nonexistent/s1.key").err().unwrap();
        assert!(matches!(error, KeysCommandError::InvalidKeyArgument { .. }));
    }

    #[test]
    fn public_key_line_cannot_sign() {
        let dir = tempfile::tempdir().unwrap();
        let key = security_key();
        let line_path = dir.path().join("s1.pub");
        fs::write(&line_path, format!("{}\n", key.public_key())).unwrap();
        let error = load_signing_key(&line_path).unwrap_err();
        assert!(matches!(error, KeysCommandError::PublicKeyOnly { .. }));
    }

    #[test]
    fn new_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        write_new_file(&path, b"first", 0o600).unwrap();
        let error = write_new_file(&path, b"second", 0o600).unwrap_err();
        assert!(matches!(error, FileError::Exists { .. }));
        assert_eq!(fs::read(&path).unwrap(), b"first");
    }

    #[cfg(unix)]
    #[test]
    fn replace_keeps_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("draft.json");
        write_new_file(&path, b"one", 0o640).unwrap();
        replace_file(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o600, 0o600);
        assert_eq!(mode & 0o007, 0);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn count_noun_pluralizes() {
        assert_eq!(count_noun(0u32, "key"), "0 keys");
        assert_eq!(count_noun(1u32, "key"), "1 key");
        assert_eq!(count_noun(2u64, "security key"), "2 security keys");
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(to_hex(&[0x00, 0xab, 0x0f]), "00ab0f");
        assert_eq!(from_hex("00AB0f"), Some(vec![0x00, 0xab, 0x0f]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
