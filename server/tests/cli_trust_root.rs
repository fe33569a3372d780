//! `tidegate root`: building, signing, verifying and rotating trust roots with the real binary on
//! temporary files.
//!
//! Root v1 lists root keys K1, K2, K3, security keys S1, S2 and OT key O1, and needs 2 root
//! signatures, 1 security signature (2 for tier `critical`) and 1 OT signature. Every role needs
//! at least one key, because a root's thresholds must each be at least 1.

use std::fs;
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

/// Runs tidegate and fails the test unless it succeeds. Returns stdout.
fn run_ok(dir: &Path, args: &[&str]) -> String {
    let output = tidegate(dir, args);
    assert!(
        output.status.success(),
        "tidegate {args:?} failed\nstdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Generates `NAME.key` with `role` and returns its key id.
fn generate(dir: &Path, name: &str, role: &str) -> String {
    let file = format!("{name}.key");
    run_ok(dir, &["keys", "generate", "--role", role, "--out", &file]);
    let line = run_ok(dir, &["keys", "show", "--public", &file]);
    line.split(' ').nth(1).unwrap().to_owned()
}

/// Key ids of the keys that [`build_v1`] generates.
struct Keys {
    k1: String,
    k2: String,
    k4: String,
    k5: String,
}

/// Generates the keys and writes the unsigned draft `v1.json` described in the file header.
fn build_v1(dir: &Path) -> Keys {
    let k1 = generate(dir, "k1", "root");
    let k2 = generate(dir, "k2", "root");
    generate(dir, "k3", "root");
    let k4 = generate(dir, "k4", "root");
    let k5 = generate(dir, "k5", "root");
    generate(dir, "s1", "security");
    generate(dir, "s2", "security");
    generate(dir, "o1", "ot");

    run_ok(dir, &["root", "new", "--out", "v1.json"]);
    run_ok(
        dir,
        &[
            "root", "add-key", "v1.json", "--key", "k1.key", "--key", "k2.key", "--key", "k3.key",
        ],
    );
    // The public key line, as a key holder at another desk would send it.
    let s1_line = run_ok(dir, &["keys", "show", "--public", "s1.key"]);
    run_ok(
        dir,
        &["root", "add-key", "v1.json", "--key", s1_line.trim()],
    );
    fs::write(
        dir.join("s2.pub"),
        run_ok(dir, &["keys", "show", "--public", "s2.key"]),
    )
    .unwrap();
    run_ok(
        dir,
        &[
            "root", "add-key", "v1.json", "--key", "s2.pub", "--key", "o1.key",
        ],
    );
    for (role, count) in [("root", "2"), ("security", "1"), ("ot", "1")] {
        run_ok(
            dir,
            &[
                "root",
                "set-threshold",
                "v1.json",
                "--role",
                role,
                "--count",
                count,
            ],
        );
    }
    run_ok(
        dir,
        &[
            "root",
            "set-threshold",
            "v1.json",
            "--role",
            "security",
            "--count",
            "2",
            "--tier",
            "critical",
        ],
    );
    Keys { k1, k2, k4, k5 }
}

fn signature_count(draft: &Path) -> usize {
    let text = fs::read_to_string(draft).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["signatures"].as_array().unwrap().len()
}

#[test]
fn root_signed_at_two_desks_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let keys = build_v1(dir.path());

    let desk_1 = run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k1.key"]);
    let desk_2 = run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k2.key"]);
    let output = tidegate(dir.path(), &["root", "verify", "v1.json"]);

    assert!(desk_1.contains("it now has 1 signature:"), "{desk_1}");
    assert!(
        desk_2.contains(&format!(
            "it now has 2 signatures: {}, {}",
            keys.k1, keys.k2
        )),
        "{desk_2}"
    );
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(
        text.contains("root threshold of v1:  met (2 of 2 required signatures)"),
        "{text}"
    );
    assert!(text.contains("trust root v1 in v1.json is valid for enrolment"));
}

#[test]
fn root_with_one_signature_fails_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let keys = build_v1(dir.path());
    run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k1.key"]);

    let output = tidegate(dir.path(), &["root", "verify", "v1.json"]);

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("root threshold of v1:  not met (1 of 2 required signatures)"),
        "{}",
        stdout(&output)
    );
    let error = stderr(&output);
    assert!(error.contains("trust root v1.json is not valid"), "{error}");
    assert!(error.contains(&format!("({})", keys.k1)), "{error}");
    assert!(error.contains("v1 requires 2"), "{error}");
}

#[test]
fn signing_twice_with_one_key_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    build_v1(dir.path());
    run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k1.key"]);

    let again = run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k1.key"]);

    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(signature_count(&dir.path().join("v1.json")), 1);
}

#[test]
fn edit_drops_signatures() {
    let dir = tempfile::tempdir().unwrap();
    build_v1(dir.path());
    run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k1.key"]);
    run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k2.key"]);

    let edit = run_ok(
        dir.path(),
        &["root", "add-key", "v1.json", "--key", "k4.key"],
    );

    assert!(
        edit.contains("signatures removed: the document changed"),
        "{edit}"
    );
    assert_eq!(signature_count(&dir.path().join("v1.json")), 0);
    assert_eq!(
        tidegate(dir.path(), &["root", "verify", "v1.json"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn unchanged_threshold_keeps_signatures() {
    let dir = tempfile::tempdir().unwrap();
    build_v1(dir.path());
    run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k1.key"]);

    let same = run_ok(
        dir.path(),
        &[
            "root",
            "set-threshold",
            "v1.json",
            "--role",
            "root",
            "--count",
            "2",
        ],
    );

    assert!(
        same.contains("the root threshold by default of trust root v1 draft v1.json is already 2"),
        "{same}"
    );
    assert_eq!(signature_count(&dir.path().join("v1.json")), 1);
}

#[test]
fn non_root_key_cannot_sign_root() {
    let dir = tempfile::tempdir().unwrap();
    build_v1(dir.path());

    let output = tidegate(dir.path(), &["root", "sign", "v1.json", "--key", "s1.key"]);

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("has role security; only a root key can sign a trust root"),
        "{}",
        stderr(&output)
    );
    assert_eq!(signature_count(&dir.path().join("v1.json")), 0);
}

#[test]
fn rotation_signed_by_old_and_new_keys_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let keys = build_v1(dir.path());
    run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k1.key"]);
    run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k2.key"]);

    let started = run_ok(
        dir.path(),
        &["root", "new", "--from", "v1.json", "--out", "v2.json"],
    );
    run_ok(
        dir.path(),
        &[
            "root",
            "remove-key",
            "v2.json",
            "--key",
            "k1.key",
            "--key",
            "k3.key",
        ],
    );
    run_ok(
        dir.path(),
        &[
            "root", "add-key", "v2.json", "--key", "k4.key", "--key", "k5.key",
        ],
    );
    for signer in ["k1.key", "k2.key", "k4.key", "k5.key"] {
        run_ok(dir.path(), &["root", "sign", "v2.json", "--key", signer]);
    }
    let output = tidegate(
        dir.path(),
        &["root", "verify", "v2.json", "--previous", "v1.json"],
    );

    assert!(started.contains("started trust root v2 draft v2.json from v1"));
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    // K1 is only in v1, K2 in both, K4 and K5 only in v2.
    assert!(
        text.contains("root threshold of v1:  met (2 of 2 required signatures)"),
        "{text}"
    );
    assert!(
        text.contains("root threshold of v2:  met (3 of 2 required signatures)"),
        "{text}"
    );
    assert!(text.contains(&format!("{}  valid, root key of v1\n", keys.k1)));
    assert!(text.contains(&format!("{}  valid, root key of v1 and v2\n", keys.k2)));
    assert!(text.contains(&format!("{}  valid, root key of v2\n", keys.k4)));
    assert!(text.contains("trust root v2 in v2.json is valid as the successor of v1"));
}

#[test]
fn rotation_signed_by_new_keys_only_fails() {
    let dir = tempfile::tempdir().unwrap();
    let keys = build_v1(dir.path());
    run_ok(
        dir.path(),
        &["root", "new", "--from", "v1.json", "--out", "v2.json"],
    );
    run_ok(
        dir.path(),
        &[
            "root",
            "remove-key",
            "v2.json",
            "--key",
            &keys.k1,
            "--key",
            "k3.key",
        ],
    );
    run_ok(
        dir.path(),
        &[
            "root", "add-key", "v2.json", "--key", "k4.key", "--key", "k5.key",
        ],
    );
    run_ok(dir.path(), &["root", "sign", "v2.json", "--key", "k4.key"]);
    run_ok(dir.path(), &["root", "sign", "v2.json", "--key", "k5.key"]);

    let output = tidegate(
        dir.path(),
        &["root", "verify", "v2.json", "--previous", "v1.json"],
    );

    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("root threshold of v1:  not met (0 of 2 required signatures)"),
        "{text}"
    );
    assert!(
        text.contains("root threshold of v2:  met (2 of 2 required signatures)"),
        "{text}"
    );
    let error = stderr(&output);
    assert!(
        error.contains("has valid signatures from 0 root keys of v1 (none), but v1 requires 2"),
        "{error}"
    );
    assert!(text.contains(&format!("{}  valid, root key of v2\n", keys.k5)));
}

#[test]
fn rotation_without_previous_hints_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = build_v1(dir.path());
    run_ok(
        dir.path(),
        &["root", "new", "--from", "v1.json", "--out", "v2.json"],
    );
    run_ok(
        dir.path(),
        &["root", "remove-key", "v2.json", "--key", "k1.key"],
    );
    run_ok(dir.path(), &["root", "sign", "v2.json", "--key", "k1.key"]);
    run_ok(dir.path(), &["root", "sign", "v2.json", "--key", "k2.key"]);

    let output = tidegate(dir.path(), &["root", "verify", "v2.json"]);

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains(&format!(
            "{}  not counted: not listed in v2 (a key of v1? pass --previous)",
            keys.k1
        )),
        "{}",
        stdout(&output)
    );
    assert!(stderr(&output).contains("to check it as the successor of v1, pass --previous"));
}

#[test]
fn export_writes_signed_root_file() {
    let dir = tempfile::tempdir().unwrap();
    build_v1(dir.path());
    run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k1.key"]);

    let exported = run_ok(
        dir.path(),
        &["root", "export", "v1.json", "--out", "v1.tgrt"],
    );
    // The second signature is added to the signed root file itself.
    let signed = run_ok(dir.path(), &["root", "sign", "v1.tgrt", "--key", "k2.key"]);
    let output = tidegate(dir.path(), &["root", "verify", "v1.tgrt"]);

    assert!(exported.contains("wrote signed root file v1.tgrt: trust root v1, 1 signature:"));
    assert!(signed.contains("it now has 2 signatures"), "{signed}");
    let bytes = fs::read(dir.path().join("v1.tgrt")).unwrap();
    assert_eq!(&bytes[..5], b"TGRT\x01");
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let edit = tidegate(
        dir.path(),
        &["root", "add-key", "v1.tgrt", "--key", "k4.key"],
    );
    assert_eq!(edit.status.code(), Some(1));
    assert!(stderr(&edit).contains("only drafts can be edited"));
}

#[test]
fn show_lists_keys_thresholds_and_signers() {
    let dir = tempfile::tempdir().unwrap();
    let keys = build_v1(dir.path());
    run_ok(dir.path(), &["root", "sign", "v1.json", "--key", "k2.key"]);

    let text = run_ok(dir.path(), &["root", "show", "v1.json"]);

    assert!(text.contains("trust root:  v1\n"), "{text}");
    assert!(text.contains("document:    complete\n"), "{text}");
    assert!(text.contains("  root:      2 of 3 root keys\n"), "{text}");
    assert!(
        text.contains("  security:  1 of 2 security keys\n"),
        "{text}"
    );
    assert!(text.contains("  ot:        1 of 1 ot key\n"), "{text}");
    assert!(
        text.contains("  TIER      SECURITY  OT\n  critical  2 of 2    default\n"),
        "{text}"
    );
    assert!(text.contains(&format!("root      {}", keys.k1)), "{text}");
    assert!(
        text.contains(&format!("{}  valid, root key of v1", keys.k2)),
        "{text}"
    );
    assert!(
        text.contains("root threshold of v1:  not met (1 of 2 required signatures)"),
        "{text}"
    );
}

#[test]
fn incomplete_draft_cannot_be_signed() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "k1", "root");
    run_ok(dir.path(), &["root", "new", "--out", "v1.json"]);
    run_ok(
        dir.path(),
        &["root", "add-key", "v1.json", "--key", "k1.key"],
    );

    let output = tidegate(dir.path(), &["root", "sign", "v1.json", "--key", "k1.key"]);
    let show = run_ok(dir.path(), &["root", "show", "v1.json"]);

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("the root, security and ot thresholds are not set"),
        "{}",
        stderr(&output)
    );
    assert!(
        show.contains("document:    incomplete: the root, security and ot thresholds are not set")
    );
}

#[test]
fn root_tier_override_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(dir.path(), &["root", "new", "--out", "v1.json"]);

    let output = tidegate(
        dir.path(),
        &[
            "root",
            "set-threshold",
            "v1.json",
            "--role",
            "root",
            "--count",
            "2",
            "--tier",
            "critical",
        ],
    );

    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--tier only works with --role security or ot"));
}

#[test]
fn duplicate_key_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = generate(dir.path(), "k1", "root");
    run_ok(dir.path(), &["root", "new", "--out", "v1.json"]);
    run_ok(
        dir.path(),
        &["root", "add-key", "v1.json", "--key", "k1.key"],
    );

    let output = tidegate(
        dir.path(),
        &["root", "add-key", "v1.json", "--key", "k1.key"],
    );

    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&format!(
        "key {k1} is already listed in v1.json as a root key"
    )));
}

#[test]
fn new_refuses_existing_file_and_version_zero() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(dir.path(), &["root", "new", "--out", "v1.json"]);

    let again = tidegate(dir.path(), &["root", "new", "--out", "v1.json"]);
    let zero = tidegate(
        dir.path(),
        &["root", "new", "--out", "v0.json", "--version", "0"],
    );

    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("v1.json already exists"));
    assert_eq!(zero.status.code(), Some(2));
    assert!(!dir.path().join("v0.json").exists());
}

#[test]
fn set_commands_reaches_exported_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    build_v1(path);
    run_ok(path, &["root", "sign", "v1.json", "--key", "k1.key"]);
    assert_eq!(signature_count(&path.join("v1.json")), 1);

    let set = run_ok(
        path,
        &[
            "root",
            "set-commands",
            "v1.json",
            "--tier",
            "plant-floor",
            "--allow",
            "true",
        ],
    );
    assert!(
        set.contains("agents of tier plant-floor now may run bundle commands"),
        "{set}"
    );
    // The edit changes the document, so the signature over the old one is dropped.
    assert_eq!(signature_count(&path.join("v1.json")), 0);

    let shown = run_ok(path, &["root", "show", "v1.json"]);
    assert!(
        shown.contains("tiers that may run bundle commands: plant-floor\n"),
        "{shown}"
    );

    run_ok(path, &["root", "sign", "v1.json", "--key", "k1.key"]);
    run_ok(path, &["root", "sign", "v1.json", "--key", "k2.key"]);
    run_ok(path, &["root", "export", "v1.json", "--out", "v1.tgrt"]);
    let signed =
        tidegate_protocol::trust::SignedTrustRoot::decode(&fs::read(path.join("v1.tgrt")).unwrap())
            .unwrap();
    let document = signed.document().unwrap();
    assert!(document.allows_commands("plant-floor"));
    assert!(!document.allows_commands("critical"));

    let again = run_ok(
        path,
        &[
            "root",
            "set-commands",
            "v1.json",
            "--tier",
            "plant-floor",
            "--allow",
            "true",
        ],
    );
    assert!(again.contains("nothing changed"), "{again}");
    let rejected = tidegate(
        path,
        &[
            "root",
            "set-commands",
            "v1.json",
            "--tier",
            "Plant Floor",
            "--allow",
            "true",
        ],
    );
    assert!(!rejected.status.success());
    assert!(
        stderr(&rejected).contains("invalid tier"),
        "{}",
        stderr(&rejected)
    );
}
