//! The bundle file format, its size limits, manifest validation, signing and inspection.

mod trust_support;

use tidegate_protocol::trust::bundle::{
    MAX_BUNDLE_FILE_BYTES, MAX_MANIFEST_BYTES, MAX_PAYLOADS, MAX_STEPS,
};
use tidegate_protocol::trust::{
    inspect_bundle, BundleError, BundleFile, BundleHash, BundleManifest, FormatError, Payload,
    PayloadRef, RejectRule, Role, SignOutcome, Step, MAX_SIGNATURES,
};
use trust_support::*;

/// Builds a bundle file in the documented layout without the library's encoder.
fn handmade_file(
    manifest_bytes: &[u8],
    payloads: &[(&str, &[u8])],
    signature_count: u64,
) -> Vec<u8> {
    let mut out = b"TGBD\x01".to_vec();
    push_varint(&mut out, manifest_bytes.len() as u64);
    out.extend_from_slice(manifest_bytes);
    push_varint(&mut out, payloads.len() as u64);
    for (name, content) in payloads {
        push_varint(&mut out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
        push_varint(&mut out, content.len() as u64);
        out.extend_from_slice(content);
    }
    push_varint(&mut out, signature_count);
    out
}

fn decode_rule(bytes: &[u8]) -> RejectRule {
    BundleFile::decode(bytes).unwrap_err().rule()
}

#[test]
fn encoded_file_matches_documented_layout() {
    let security = key(Role::Security);
    let file = bundle_file(&manifest(1), &[&security]);

    let encoded = file.encode().unwrap();

    let mut expected = handmade_file(&file.manifest_bytes, &[(PAYLOAD_NAME, PAYLOAD_CONTENT)], 1);
    expected.extend_from_slice(security.key_id().as_bytes());
    expected.extend_from_slice(&file.signatures[0].bytes);
    assert_eq!(encoded, expected);
    assert_eq!(BundleFile::decode(&encoded).unwrap(), file);
}

#[test]
fn bundle_hash_is_sha256_of_manifest() {
    let file = bundle_file(&manifest(1), &[]);
    let digest = ring::digest::digest(&ring::digest::SHA256, &file.manifest_bytes);

    assert_eq!(file.bundle_hash().0.as_slice(), digest.as_ref());
    assert_eq!(
        BundleHash::parse(&file.bundle_hash().to_string()),
        Ok(file.bundle_hash())
    );
}

#[test]
fn signatures_do_not_change_bundle_hash() {
    let unsigned = bundle_file(&manifest(1), &[]);
    let signed = bundle_file(&manifest(1), &[&key(Role::Security)]);

    assert_eq!(unsigned.bundle_hash(), signed.bundle_hash());
}

#[test]
fn signing_twice_adds_one_signature() {
    let security = key(Role::Security);
    let mut file = bundle_file(&manifest(1), &[]);

    let first = file.sign(&security).unwrap();
    let second = file.sign(&security).unwrap();

    assert_eq!(first, SignOutcome::Added);
    assert_eq!(second, SignOutcome::AlreadySigned);
    assert_eq!(file.signers(), vec![security.key_id()]);
}

#[test]
fn signing_beyond_limit_is_rejected() {
    let mut file = bundle_file(&manifest(1), &[]);
    for _ in 0..MAX_SIGNATURES {
        file.sign(&key(Role::Security)).unwrap();
    }

    let error = file.sign(&key(Role::Security)).unwrap_err();

    assert_eq!(error.rule(), RejectRule::SizeLimit);
    assert_eq!(file.signatures.len(), MAX_SIGNATURES);
}

#[test]
fn wrong_magic_and_format_are_rejected() {
    let encoded = bundle_bytes(&manifest(1), &[]);
    let mut wrong_magic = encoded.clone();
    wrong_magic[..4].copy_from_slice(b"TGRT");
    let mut wrong_format = encoded.clone();
    wrong_format[4] = 7;

    assert_eq!(
        BundleFile::decode(&wrong_magic).unwrap_err().to_string(),
        "not a bundle file: the input does not start with the magic \"TGBD\""
    );
    assert_eq!(
        BundleFile::decode(&wrong_format).unwrap_err().to_string(),
        "unknown bundle file format 7: this build reads format 1"
    );
    assert_eq!(decode_rule(&[]), RejectRule::Format);
    assert_eq!(decode_rule(b"TGBD"), RejectRule::Format);
}

#[test]
fn file_above_limit_is_rejected_unread() {
    let mut oversized = b"TGBD\x01".to_vec();
    oversized.resize(MAX_BUNDLE_FILE_BYTES + 1, 0);

    let error = BundleFile::decode(&oversized).unwrap_err();

    assert_eq!(error.rule(), RejectRule::SizeLimit);
    assert_eq!(
        error.to_string(),
        "bundle file is 67108865 bytes, larger than the limit of 67108864 bytes"
    );
}

#[test]
fn counts_and_lengths_above_limits_are_rejected() {
    let manifest_bytes = manifest(1).encode().unwrap();
    let big_manifest = vec![0u8; MAX_MANIFEST_BYTES + 1];
    let many_payloads: Vec<(String, Vec<u8>)> = (0..=MAX_PAYLOADS)
        .map(|i| (format!("p{i}"), vec![]))
        .collect();
    let many_payloads: Vec<(&str, &[u8])> = many_payloads
        .iter()
        .map(|(name, content)| (name.as_str(), content.as_slice()))
        .collect();
    let long_name = "n".repeat(129);

    let cases: [(&str, Vec<u8>); 4] = [
        ("manifest", handmade_file(&big_manifest, &[], 0)),
        (
            "payload count",
            handmade_file(&manifest_bytes, &many_payloads, 0),
        ),
        (
            "payload name",
            handmade_file(&manifest_bytes, &[(&long_name, b"")], 0),
        ),
        (
            "signature count",
            handmade_file(&manifest_bytes, &[], MAX_SIGNATURES as u64 + 1),
        ),
    ];

    for (case, bytes) in cases {
        let error = BundleFile::decode(&bytes).unwrap_err();
        assert_eq!(error.rule(), RejectRule::SizeLimit, "{case}: {error}");
    }
}

#[test]
fn truncated_and_trailing_input_is_rejected() {
    let encoded = bundle_bytes(&manifest(1), &[&key(Role::Security)]);
    let mut trailing = encoded.clone();
    trailing.push(0);

    for length in 0..encoded.len() {
        assert_eq!(
            decode_rule(&encoded[..length]),
            RejectRule::Format,
            "truncated to {length} bytes"
        );
    }
    assert!(matches!(
        BundleFile::decode(&trailing),
        Err(BundleError::Format(FormatError::TrailingBytes {
            count: 1,
            ..
        }))
    ));
}

#[test]
fn invalid_utf8_payload_name_is_rejected() {
    let manifest_bytes = manifest(1).encode().unwrap();
    let mut bytes = handmade_file(&manifest_bytes, &[("motd", b"")], 0);
    // The name starts after the header, the manifest, the payload count and the name length.
    let name_start = 5 + varint_len(manifest_bytes.len() as u64) + manifest_bytes.len() + 2;
    bytes[name_start] = 0xff;

    let error = BundleFile::decode(&bytes).unwrap_err();

    assert_eq!(
        error.to_string(),
        "invalid bundle file: the payload name is not valid UTF-8"
    );
}

#[test]
fn manifest_rules_are_enforced() {
    let mut expires_first = manifest(1);
    expires_first.expires_unix_s = expires_first.not_before_unix_s;
    let mut no_steps = manifest(1);
    no_steps.steps.clear();
    let mut unlisted_payload = manifest(1);
    unlisted_payload.payloads.clear();
    let mut listed_twice = manifest(1);
    listed_twice.payloads.push(listed_twice.payloads[0].clone());
    let mut bad_payload_name = manifest(1);
    bad_payload_name.payloads[0].name = "../etc/passwd".into();
    let mut empty_command = manifest(1);
    empty_command.steps.push(Step::RunCommand {
        argv: vec![],
        revert_argv: None,
    });
    let mut bad_tier = manifest(1);
    bad_tier.target.tiers = vec!["Plant Floor".into()];
    let mut too_many_steps = manifest(1);
    too_many_steps.steps = vec![Step::LockAccount { user: "x".into() }; MAX_STEPS + 1];

    let cases: [(BundleManifest, &str); 8] = [
        (
            expires_first,
            "expires (1777593600) must be later than not_before (1777593600)",
        ),
        (no_steps, "it has no steps"),
        (
            unlisted_payload,
            "step 0 (write-file) reads payload \"motd\", which the manifest does not list",
        ),
        (listed_twice, "payload \"motd\" is listed twice"),
        (
            bad_payload_name,
            "payload name \"../etc/passwd\" may contain only",
        ),
        (empty_command, "step 1 (run-command) has an empty command"),
        (bad_tier, "target tiers: invalid tier \"Plant Floor\""),
        (
            too_many_steps,
            "it has 1025 steps, more than the limit of 1024",
        ),
    ];

    for (invalid, expected) in cases.into_iter().chain(invalid_step_cases()) {
        let error = invalid.encode().unwrap_err();
        let message = error.to_string();
        assert_eq!(error.rule(), RejectRule::InvalidManifest, "{message}");
        assert!(
            message.starts_with(&format!(
                "invalid manifest of bundle openssl-fix: {expected}"
            )),
            "{message}"
        );
    }
}

/// Returns manifests whose one step names something that would escape the root or be read as
/// an option, each with the start of the reason the manifest is rejected for.
fn invalid_step_cases() -> Vec<(BundleManifest, &'static str)> {
    let write_file = |path: &str, mode: u32, owner: &str| Step::WriteFile {
        path: path.into(),
        payload: PAYLOAD_NAME.into(),
        mode,
        owner: owner.into(),
        group: "root".into(),
    };
    let cases = [
        (
            write_file("/etc/motd", 0o644, "root"),
            "step 0 (write-file): path \"/etc/motd\" is absolute",
        ),
        (
            write_file("etc/../../motd", 0o644, "root"),
            "step 0 (write-file): path \"etc/../../motd\" has an empty, \".\" or \"..\" component",
        ),
        (
            write_file("etc//motd", 0o644, "root"),
            "step 0 (write-file): path \"etc//motd\" has an empty",
        ),
        (
            write_file("etc/motd", 0o10644, "root"),
            "step 0 (write-file): mode 10644 has bits beyond the permission bits 7777",
        ),
        (
            write_file("etc/motd", 0o644, "Root"),
            "step 0 (write-file): owner \"Root\" is not a valid account name",
        ),
        (
            write_file("etc/motd", 0o644, "4294967296"),
            "step 0 (write-file): owner id 4294967296 is larger than 4294967295",
        ),
        (
            Step::EnsureConfigLine {
                path: "etc/ssh/sshd_config".into(),
                match_prefix: "PermitRootLogin".into(),
                line: "PasswordAuthentication no".into(),
            },
            "step 0 (ensure-config-line): line \"PasswordAuthentication no\" does not start with",
        ),
        (
            Step::EnsureConfigLine {
                path: "etc/ssh/sshd_config".into(),
                match_prefix: "PermitRootLogin".into(),
                line: "PermitRootLogin no\nPort 2".into(),
            },
            "step 0 (ensure-config-line): line \"PermitRootLogin no\\nPort 2\" contains a line break",
        ),
        (
            Step::RemoveDeb {
                package: "-rf".into(),
            },
            "step 0 (remove-deb): package name \"-rf\" is not valid",
        ),
        (
            Step::Sysctl {
                key: "net/../../etc".into(),
                value: "1".into(),
            },
            "step 0 (sysctl): sysctl key \"net/../../etc\" is not valid",
        ),
        (
            Step::SystemdUnit {
                unit: "--root=/".into(),
                action: tidegate_protocol::trust::UnitAction::Enable,
            },
            "step 0 (systemd-unit): unit name \"--root=/\" is not valid",
        ),
        (
            Step::LockAccount {
                user: "../root".into(),
            },
            "step 0 (lock-account): user \"../root\" is not a valid account name",
        ),
        (
            Step::RemoveAuthorizedKey {
                user: "guest".into(),
                key_fingerprint: "MD5:16:27:ac".into(),
            },
            "step 0 (remove-authorized-key): key fingerprint \"MD5:16:27:ac\" is not valid",
        ),
    ];
    cases
        .into_iter()
        .map(|(step, expected)| {
            let mut manifest = manifest(1);
            manifest.steps = vec![step];
            (manifest, expected)
        })
        .collect()
}

#[test]
fn new_bundle_requires_matching_payloads() {
    let wrong_content = vec![Payload {
        name: PAYLOAD_NAME.into(),
        content: b"bye\n\n\n".to_vec(),
    }];

    let error = BundleFile::new(&manifest(1), wrong_content).unwrap_err();

    assert_eq!(error.rule(), RejectRule::PayloadHash);
}

#[test]
fn manifest_round_trips_with_every_step_type() {
    let mut all_steps = manifest(9);
    all_steps
        .payloads
        .push(PayloadRef::of_content("tool.deb", b"deb"));
    all_steps.steps = vec![
        Step::WriteFile {
            path: "etc/motd".into(),
            payload: PAYLOAD_NAME.into(),
            mode: 0o600,
            owner: "root".into(),
            group: "root".into(),
        },
        Step::EnsureConfigLine {
            path: "etc/ssh/sshd_config".into(),
            match_prefix: "PasswordAuthentication".into(),
            line: "PasswordAuthentication no".into(),
        },
        Step::InstallDeb {
            package: "tool".into(),
            version: "1.0-1".into(),
            payload: "tool.deb".into(),
        },
        Step::UpgradeDeb {
            package: "tool".into(),
            version: "1.0-2".into(),
            payload: "tool.deb".into(),
        },
        Step::RemoveDeb {
            package: "telnetd".into(),
        },
        Step::Sysctl {
            key: "kernel.kptr_restrict".into(),
            value: "2".into(),
        },
        Step::SystemdUnit {
            unit: "cups.service".into(),
            action: tidegate_protocol::trust::UnitAction::Mask,
        },
        Step::LockAccount {
            user: "guest".into(),
        },
        Step::RunCommand {
            argv: vec!["/usr/bin/true".into()],
            revert_argv: Some(vec!["/usr/bin/false".into(), "--undo".into()]),
        },
        Step::UnlockAccount {
            user: "guest".into(),
        },
        Step::ExpireAccount {
            user: "guest".into(),
        },
        Step::RemoveAuthorizedKey {
            user: "guest".into(),
            key_fingerprint: "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8".into(),
        },
        Step::RemoveAccount {
            user: "guest".into(),
        },
    ];
    all_steps.execution.runs_commands = true;
    all_steps.execution.health_checks = vec![
        tidegate_protocol::trust::HealthCheck::UnitActive {
            unit: "ssh.service".into(),
        },
        tidegate_protocol::trust::HealthCheck::TcpListening { port: 22 },
        tidegate_protocol::trust::HealthCheck::CommandSucceeds {
            argv: vec!["/usr/bin/true".into()],
        },
    ];

    let bytes = all_steps.encode().unwrap();

    assert_eq!(BundleManifest::decode(&bytes), Ok(all_steps));
}

#[test]
fn inspect_lists_manifest_payloads_and_signers() {
    let first = key(Role::Security);
    let second = key(Role::Security);
    let file = bundle_file(&manifest(3), &[&first, &second]);

    let inspection = inspect_bundle(&file.encode().unwrap()).unwrap();

    assert_eq!(inspection.manifest, manifest(3));
    assert_eq!(inspection.bundle_hash, file.bundle_hash());
    assert_eq!(inspection.signers, vec![first.key_id(), second.key_id()]);
    assert_eq!(inspection.payloads.len(), 1);
    assert_eq!(inspection.payloads[0].name, "motd");
    assert_eq!(inspection.payloads[0].size, 6);
    assert_eq!(
        inspection.payloads[0].sha256,
        PayloadRef::of_content("motd", b"hello\n").sha256
    );
}

#[test]
fn inspect_shows_unverified_signatures() {
    // A signature by a key no root lists still shows; inspection verifies nothing.
    let mut file = bundle_file(&manifest(1), &[&key(Role::Security)]);
    file.signatures[0].bytes = [0; 64];

    let inspection = inspect_bundle(&file.encode().unwrap()).unwrap();

    assert_eq!(inspection.signers, vec![file.signatures[0].key_id]);
}

#[test]
fn command_step_needs_runs_commands() {
    let mut undeclared = manifest(3);
    undeclared.steps = vec![Step::RunCommand {
        argv: vec!["/usr/bin/true".into()],
        revert_argv: None,
    }];
    let error = undeclared.encode().unwrap_err().to_string();
    assert!(error.contains("runs_commands"), "{error}");

    undeclared.execution.runs_commands = true;
    assert!(undeclared.encode().is_ok());
}

#[test]
fn command_health_check_needs_runs_commands() {
    let mut checked = manifest(3);
    checked.execution.health_checks =
        vec![tidegate_protocol::trust::HealthCheck::CommandSucceeds {
            argv: vec!["/usr/bin/true".into()],
        }];
    let error = checked.encode().unwrap_err().to_string();
    assert!(error.contains("health check 0"), "{error}");
}
