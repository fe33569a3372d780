//! `tidegate keys generate` and `tidegate keys show`, run as the real binary on temporary files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn tidegate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .current_dir(dir)
        .env_remove("TIDEGATE_SERVER")
        .output()
        .expect("run tidegate")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Returns the value after `label:` in `label:  value` output lines.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    let prefix = format!("{label}:");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
        .trim()
}

#[test]
fn generate_writes_private_file_and_prints_public_key() {
    let dir = tempfile::tempdir().unwrap();

    let output = tidegate(
        dir.path(),
        &["keys", "generate", "--role", "security", "--out", "s1.key"],
    );

    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let path = dir.path().join("s1.key");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key_file = fs::read_to_string(&path).unwrap();
    assert!(
        key_file.starts_with("-----BEGIN TIDEGATE SIGNING KEY-----\nFormat: 1\nRole: security\n")
    );

    let text = stdout(&output);
    let key_id = field(&text, "key id");
    assert_eq!(key_id.len(), 16);
    assert!(key_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(field(&text, "role"), "security");
    let public_key = field(&text, "public key");
    let parts: Vec<&str> = public_key.split(' ').collect();
    assert_eq!(parts.len(), 3, "{public_key}");
    assert_eq!(parts[0], "security");
    assert_eq!(parts[1], key_id);
    assert_eq!(parts[2].len(), 64);
    assert!(key_file.contains(&format!("Key-Id: {key_id}\n")));
}

#[test]
fn generate_over_existing_file_fails_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k1.key");
    fs::write(&path, "an older key that must survive\n").unwrap();

    let output = tidegate(
        dir.path(),
        &["keys", "generate", "--role", "root", "--out", "k1.key"],
    );

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("k1.key already exists"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "an older key that must survive\n"
    );
    assert_eq!(stdout(&output), "");
}

#[test]
fn show_prints_role_id_and_public_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let generated = tidegate(
        dir.path(),
        &["keys", "generate", "--role", "ot", "--out", "o1.key"],
    );
    assert!(generated.status.success());
    let generated_text = stdout(&generated);

    let output = tidegate(dir.path(), &["keys", "show", "o1.key"]);

    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(field(&text, "role"), "ot");
    assert_eq!(field(&text, "key id"), field(&generated_text, "key id"));
    assert_eq!(
        field(&text, "public key"),
        field(&generated_text, "public key")
    );
    // The key file's body is a PKCS#8 v2 document in hex: a 16-byte header, the 32-byte private
    // seed, then the public key. Neither the seed nor either half of it may be printed.
    let key_file = fs::read_to_string(dir.path().join("o1.key")).unwrap();
    let body: String = key_file
        .lines()
        .skip_while(|line| !line.is_empty())
        .filter(|line| !line.is_empty() && !line.starts_with("-----"))
        .collect();
    assert!(
        body.starts_with("3051020101300506032b657004220420"),
        "{body}"
    );
    let seed = &body[32..96];
    for secret in [seed, &seed[..32], &seed[32..]] {
        assert!(
            !text.contains(secret),
            "the private key was printed:\n{text}"
        );
    }
}

#[test]
fn show_public_prints_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let generated = tidegate(
        dir.path(),
        &["keys", "generate", "--role", "root", "--out", "k1.key"],
    );
    let public_key = field(&stdout(&generated), "public key").to_owned();

    let output = tidegate(dir.path(), &["keys", "show", "--public", "k1.key"]);

    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), format!("{public_key}\n"));
}

#[test]
fn show_reads_public_key_line_file() {
    let dir = tempfile::tempdir().unwrap();
    let generated = tidegate(
        dir.path(),
        &["keys", "generate", "--role", "root", "--out", "k1.key"],
    );
    let public_key = field(&stdout(&generated), "public key").to_owned();
    fs::write(dir.path().join("k1.pub"), format!("{public_key}\n")).unwrap();

    let output = tidegate(dir.path(), &["keys", "show", "k1.pub"]);

    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(field(&text, "contents"), "public key line only");
    assert_eq!(field(&text, "public key"), public_key);
}

#[test]
fn show_warns_about_readable_key_file() {
    let dir = tempfile::tempdir().unwrap();
    tidegate(
        dir.path(),
        &["keys", "generate", "--role", "root", "--out", "k1.key"],
    );
    let path = dir.path().join("k1.key");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

    let output = tidegate(dir.path(), &["keys", "show", "k1.key"]);

    assert!(output.status.success());
    assert!(
        stdout(&output).contains("warning: k1.key has mode 0644"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn generate_with_unknown_role_is_usage_error() {
    let dir = tempfile::tempdir().unwrap();

    let output = tidegate(
        dir.path(),
        &["keys", "generate", "--role", "admin", "--out", "a.key"],
    );

    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("expected root, security or ot"));
    assert!(!dir.path().join("a.key").exists());
}
