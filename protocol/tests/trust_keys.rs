//! Signing keys: the key file format and its errors, PKCS#8 input, public key lines.

mod trust_support;

use tidegate_protocol::trust::{KeyError, PublicKey, Role, SigningContext, SigningKey};
use trust_support::*;

/// Replaces the key-id header of a key file with `key_id`, keeping the key itself.
fn with_key_id(text: &str, key_id: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("Key-Id: ") {
                format!("Key-Id: {key_id}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn key_file_error(text: &str) -> String {
    SigningKey::from_key_file(text).unwrap_err().to_string()
}

#[test]
fn key_file_keeps_role_and_key() {
    for role in Role::ALL {
        let original = key(role);

        let loaded = SigningKey::from_key_file(&original.to_key_file()).unwrap();

        assert_eq!(loaded.role(), role);
        assert_eq!(loaded.public_key(), original.public_key());
        let signature = loaded.sign(SigningContext::BundleManifest, b"m");
        assert!(original.public_key().verify(
            SigningContext::BundleManifest,
            b"m",
            &signature.bytes
        ));
    }
}

#[test]
fn key_file_layout() {
    let security = key(Role::Security);

    let text = security.to_key_file();

    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "-----BEGIN TIDEGATE SIGNING KEY-----");
    assert_eq!(lines[1], "Format: 1");
    assert_eq!(lines[2], "Role: security");
    assert_eq!(lines[3], format!("Key-Id: {}", security.key_id()));
    assert_eq!(lines[4], "");
    assert_eq!(*lines.last().unwrap(), "-----END TIDEGATE SIGNING KEY-----");
    for body_line in &lines[5..lines.len() - 1] {
        assert!(body_line.len() <= 64, "{body_line}");
        assert!(
            body_line.bytes().all(|b| b.is_ascii_hexdigit()),
            "{body_line}"
        );
    }
}

#[test]
fn key_file_with_wrong_key_id_is_rejected() {
    let text = with_key_id(&key(Role::Root).to_key_file(), "0123456789abcdef");

    let error = SigningKey::from_key_file(&text).unwrap_err();

    assert!(matches!(error, KeyError::KeyIdMismatch { .. }), "{error:?}");
}

#[test]
fn key_file_errors_name_the_line() {
    let text = key(Role::Ot).to_key_file();
    let cases = [
        (String::new(), "invalid signing key file, line 1: the file is empty"),
        (
            text.replace("BEGIN TIDEGATE", "BEGIN OPENSSH"),
            "invalid signing key file, line 1: expected \"-----BEGIN TIDEGATE SIGNING KEY-----\"",
        ),
        (
            text.replace("Format: 1", "Format: 2"),
            "invalid signing key file, line 2: unknown key file format \"2\": this build reads \
             format 1",
        ),
        (
            text.replace("Role: ot", "Role: admin"),
            "invalid signing key file, line 3: invalid role \"admin\": expected root, security or ot",
        ),
        (
            text.replace("Role: ot", "Owner: me"),
            "invalid signing key file, line 3: unknown header \"Owner\"; expected Format, Role and \
             Key-Id",
        ),
        (
            text.replace("Role: ot\n", ""),
            "invalid signing key file, line 4: missing header Role",
        ),
        (
            text.replace("Role: ot\n", "Role: ot\nRole: ot\n"),
            "invalid signing key file, line 4: header Role appears twice",
        ),
        (
            text.replace("-----END TIDEGATE SIGNING KEY-----\n", ""),
            "invalid signing key file, line",
        ),
        (
            format!("{text}extra\n"),
            "invalid signing key file, line 10: unexpected text after",
        ),
    ];

    for (input, expected) in cases {
        let message = key_file_error(&input);
        assert!(
            message.starts_with(expected),
            "expected {expected:?}, got {message:?}"
        );
    }
}

#[test]
fn key_file_with_damaged_body_is_rejected() {
    let text = key(Role::Security).to_key_file();
    let body_line = text.lines().nth(5).unwrap().to_owned();
    let not_hex = text.replacen(&body_line, &format!("zz{}", &body_line[2..]), 1);
    let odd = text.replacen(&body_line, &body_line[1..], 1);
    let not_pkcs8 = text.replacen(&body_line, &"00".repeat(32), 1);

    assert_eq!(
        key_file_error(&not_hex),
        "invalid signing key file, line 6: the key body must be hexadecimal digits"
    );
    assert!(key_file_error(&odd).contains("odd number of hex digits"));
    assert!(matches!(
        SigningKey::from_key_file(&not_pkcs8),
        Err(KeyError::Pkcs8 { .. })
    ));
}

#[test]
fn openssl_pkcs8_v1_key_is_read() {
    // `openssl genpkey -algorithm ed25519 -outform DER` writes this PKCS#8 v1 layout: the
    // 16-byte prefix below, then the 32-byte seed. Seed 0x01..0x20 is an arbitrary value.
    let mut v1 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    v1.extend(1..=32u8);

    let loaded = SigningKey::from_pkcs8(Role::Security, &v1).unwrap();
    let signature = loaded.sign(SigningContext::TrustRoot, b"doc");

    assert!(loaded
        .public_key()
        .verify(SigningContext::TrustRoot, b"doc", &signature.bytes));
    let reloaded = SigningKey::from_key_file(&loaded.to_key_file()).unwrap();
    assert_eq!(reloaded.key_id(), loaded.key_id());
}

#[test]
fn public_key_line_checks_its_key_id() {
    let public = key(Role::Root).public_key().clone();
    let line = public.to_string();
    let (_, rest) = line.split_once(' ').unwrap();
    let (_, key_hex) = rest.split_once(' ').unwrap();

    assert_eq!(PublicKey::parse(&line), Ok(public.clone()));
    assert!(matches!(
        PublicKey::parse(&format!("root 0000000000000000 {key_hex}")),
        Err(KeyError::KeyIdMismatch { .. })
    ));
    assert!(matches!(
        PublicKey::parse("root"),
        Err(KeyError::InvalidPublicKey { .. })
    ));
    assert!(matches!(
        PublicKey::parse(&format!("admin {} {key_hex}", public.key_id)),
        Err(KeyError::InvalidPublicKey { .. })
    ));
}
