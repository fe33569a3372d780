//! `tidegate bundle new`, `sign`, `verify` and `inspect` with the real binary on temporary files.
//!
//! The trust root lists root keys K1, K2, security keys S1, S2 and OT key O1; it needs one
//! security signature by default and two for tier `critical`. The bundle is valid from
//! 2026-05-01T00:00:00Z (1,777,593,600) until 2026-06-01T00:00:00Z (1,780,272,000) and carries
//! the payload `motd`, the 6 bytes "hello\n".

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

/// SHA-256 of "hello\n".
const MOTD_SHA256: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

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

fn generate(dir: &Path, name: &str, role: &str) -> String {
    let file = format!("{name}.key");
    run_ok(dir, &["keys", "generate", "--role", role, "--out", &file]);
    let line = run_ok(dir, &["keys", "show", "--public", &file]);
    line.split(' ').nth(1).unwrap().to_owned()
}

struct Fixture {
    dir: tempfile::TempDir,
    s1: String,
    s2: String,
}

impl Fixture {
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Writes the keys, the signed root file `root.tgrt`, and the unsigned bundle `b.tgb`.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    generate(path, "k1", "root");
    generate(path, "k2", "root");
    let s1 = generate(path, "s1", "security");
    let s2 = generate(path, "s2", "security");
    generate(path, "o1", "ot");

    run_ok(path, &["root", "new", "--out", "root.json"]);
    run_ok(
        path,
        &[
            "root",
            "add-key",
            "root.json",
            "--key",
            "k1.key",
            "--key",
            "k2.key",
            "--key",
            "s1.key",
            "--key",
            "s2.key",
            "--key",
            "o1.key",
        ],
    );
    for (role, count) in [("root", "2"), ("security", "1"), ("ot", "1")] {
        run_ok(
            path,
            &[
                "root",
                "set-threshold",
                "root.json",
                "--role",
                role,
                "--count",
                count,
            ],
        );
    }
    run_ok(
        path,
        &[
            "root",
            "set-threshold",
            "root.json",
            "--role",
            "security",
            "--count",
            "2",
            "--tier",
            "critical",
        ],
    );
    run_ok(path, &["root", "sign", "root.json", "--key", "k1.key"]);
    run_ok(path, &["root", "sign", "root.json", "--key", "k2.key"]);
    run_ok(path, &["root", "export", "root.json", "--out", "root.tgrt"]);

    fs::write(path.join("motd"), "hello\n").unwrap();
    fs::write(
        path.join("steps.json"),
        r#"[
            {"WriteFile": {"path": "etc/motd", "payload": "motd", "mode": 420, "owner": "root", "group": "root"}},
            {"Sysctl": {"key": "net.ipv4.ip_forward", "value": "0"}}
        ]"#,
    )
    .unwrap();
    run_ok(
        path,
        &[
            "bundle",
            "new",
            "--out",
            "b.tgb",
            "--id",
            "motd-2026-05",
            "--stream",
            "motd",
            "--sequence",
            "7",
            "--not-before",
            "2026-05-01T00:00:00Z",
            "--expires",
            "2026-06-01T00:00:00Z",
            "--os",
            "debian",
            "--tag",
            "dmz",
            "--payload",
            "motd=motd",
            "--steps",
            "steps.json",
        ],
    );
    Fixture { dir, s1, s2 }
}

fn verify(fixture: &Fixture, file: &str, tier: &str, at: &str) -> Output {
    tidegate(
        fixture.path(),
        &[
            "bundle",
            "verify",
            file,
            "--root",
            "root.tgrt",
            "--tier",
            tier,
            "--at",
            at,
        ],
    )
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
fn bundle_accepted_until_one_second_before_expiry() {
    let fixture = fixture();
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s1.key"],
    );

    let output = verify(&fixture, "b.tgb", "default", "2026-05-31T23:59:59Z");

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(field(&text, "verdict"), "accepted");
    assert_eq!(
        field(&text, "bundle"),
        "motd-2026-05 (stream motd, sequence 7)"
    );
    assert_eq!(
        field(&text, "valid"),
        "from 2026-05-01T00:00:00Z until 2026-06-01T00:00:00Z"
    );
    assert_eq!(field(&text, "signed by"), fixture.s1);
    assert_eq!(field(&text, "checked at"), "2026-05-31T23:59:59Z");
}

#[test]
fn bundle_rejected_at_expiry() {
    let fixture = fixture();
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s1.key"],
    );

    let output = verify(&fixture, "b.tgb", "default", "2026-06-01T00:00:00Z");

    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert_eq!(field(&text, "verdict"), "rejected");
    assert_eq!(field(&text, "rule"), "expired");
    assert!(
        field(&text, "detail").contains("expired at 2026-06-01T00:00:00Z (1780272000)"),
        "{text}"
    );
    assert!(stderr(&output).contains("is rejected by rule expired"));
}

#[test]
fn bundle_rejected_before_not_before() {
    let fixture = fixture();
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s1.key"],
    );

    // 02:00 at +03:00 is 2026-04-30T23:00:00Z, one hour before the bundle becomes valid.
    let output = verify(&fixture, "b.tgb", "default", "2026-05-01T02:00:00+03:00");

    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert_eq!(field(&text, "rule"), "not-yet-valid");
    assert_eq!(field(&text, "checked at"), "2026-04-30T23:00:00Z");
}

#[test]
fn critical_tier_needs_second_signature() {
    let fixture = fixture();
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s1.key"],
    );

    let one = verify(&fixture, "b.tgb", "critical", "2026-05-15T12:00:00Z");
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s2.key"],
    );
    let two = verify(&fixture, "b.tgb", "critical", "2026-05-15T12:00:00Z");

    assert_eq!(one.status.code(), Some(1));
    let text = stdout(&one);
    assert_eq!(field(&text, "rule"), "threshold");
    assert!(
        field(&text, "tier")
            .starts_with("critical (needs 2 security signatures under trust root v1)"),
        "{text}"
    );
    assert_eq!(two.status.code(), Some(0), "stderr: {}", stderr(&two));
    assert_eq!(
        field(&stdout(&two), "signed by"),
        format!("{}, {}", fixture.s1, fixture.s2)
    );
}

#[test]
fn root_key_cannot_sign_bundle() {
    let fixture = fixture();
    let before = fs::read(fixture.path().join("b.tgb")).unwrap();

    let output = tidegate(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "k1.key"],
    );

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("has role root; only a security key can sign a bundle"),
        "{}",
        stderr(&output)
    );
    assert_eq!(fs::read(fixture.path().join("b.tgb")).unwrap(), before);
}

#[test]
fn signing_twice_with_one_key_changes_nothing() {
    let fixture = fixture();
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s1.key"],
    );
    let before = fs::read(fixture.path().join("b.tgb")).unwrap();

    let again = run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s1.key"],
    );

    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(fs::read(fixture.path().join("b.tgb")).unwrap(), before);
}

#[test]
fn inspect_json_shows_manifest_payloads_and_signers() {
    let fixture = fixture();
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s1.key"],
    );
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s2.key"],
    );

    let text = run_ok(fixture.path(), &["bundle", "inspect", "b.tgb", "--json"]);

    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["bundle_id"], "motd-2026-05");
    assert_eq!(json["stream"], "motd");
    assert_eq!(json["sequence"], 7);
    assert_eq!(json["not_before"], "2026-05-01T00:00:00Z");
    assert_eq!(json["not_before_unix_s"], 1_777_593_600);
    assert_eq!(json["expires"], "2026-06-01T00:00:00Z");
    assert_eq!(json["expires_unix_s"], 1_780_272_000);
    assert_eq!(json["target"]["os"], serde_json::json!(["debian"]));
    assert_eq!(json["target"]["tags"], serde_json::json!(["dmz"]));
    assert_eq!(json["target"]["tiers"], serde_json::json!([]));
    assert_eq!(
        json["steps"][1],
        serde_json::json!({"Sysctl": {"key": "net.ipv4.ip_forward", "value": "0"}})
    );
    assert_eq!(
        json["payloads"],
        serde_json::json!([{"name": "motd", "size": 6, "sha256": MOTD_SHA256}])
    );
    assert_eq!(
        json["signers"],
        serde_json::json!([fixture.s1.clone(), fixture.s2.clone()])
    );
}

#[test]
fn inspect_text_lists_steps_and_payloads() {
    let fixture = fixture();

    let text = run_ok(fixture.path(), &["bundle", "inspect", "b.tgb"]);

    assert_eq!(field(&text, "expires"), "2026-06-01T00:00:00Z");
    assert_eq!(field(&text, "signers"), "none");
    assert_eq!(field(&text, "target tiers"), "any");
    assert!(
        text.contains(
            "  0. write-file: write payload motd to etc/motd with mode 0644, owned by root:root\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  1. sysctl: set net.ipv4.ip_forward to \"0\"\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("  motd  6     {MOTD_SHA256}\n")),
        "{text}"
    );
}

#[test]
fn flipped_signature_byte_is_rejected() {
    let fixture = fixture();
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s1.key"],
    );
    let mut bytes = fs::read(fixture.path().join("b.tgb")).unwrap();
    // The file ends with the 64 signature bytes, so the last byte belongs to the signature.
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(fixture.path().join("flipped.tgb"), &bytes).unwrap();

    let output = verify(&fixture, "flipped.tgb", "default", "2026-05-15T12:00:00Z");

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(field(&stdout(&output), "rule"), "bad-signature");
}

#[test]
fn flipped_payload_byte_is_rejected() {
    let fixture = fixture();
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s1.key"],
    );
    let mut bytes = fs::read(fixture.path().join("b.tgb")).unwrap();
    let start = bytes
        .windows(6)
        .position(|window| window == b"hello\n")
        .expect("the payload is stored as is");
    bytes[start] = b'j';
    fs::write(fixture.path().join("flipped.tgb"), &bytes).unwrap();

    let output = verify(&fixture, "flipped.tgb", "default", "2026-05-15T12:00:00Z");

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(field(&stdout(&output), "rule"), "payload-hash");
}

#[test]
fn verify_against_root_draft_matches_signed_file() {
    let fixture = fixture();
    run_ok(
        fixture.path(),
        &["bundle", "sign", "b.tgb", "--key", "s1.key"],
    );

    let output = tidegate(
        fixture.path(),
        &[
            "bundle",
            "verify",
            "b.tgb",
            "--root",
            "root.json",
            "--at",
            "2026-05-15T12:00:00Z",
        ],
    );

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(
        field(&stdout(&output), "tier").starts_with("default (needs 1 security signature under")
    );
}

#[test]
fn new_rejects_expiry_before_start() {
    let fixture = fixture();

    let output = tidegate(
        fixture.path(),
        &[
            "bundle",
            "new",
            "--out",
            "bad.tgb",
            "--id",
            "bad",
            "--stream",
            "motd",
            "--sequence",
            "1",
            "--not-before",
            "2026-06-01T00:00:00Z",
            "--expires",
            "2026-06-01T00:00:00Z",
            "--steps",
            "steps.json",
            "--payload",
            "motd=motd",
        ],
    );

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("must be later than not_before"),
        "{}",
        stderr(&output)
    );
    assert!(!fixture.path().join("bad.tgb").exists());
}

#[test]
fn new_rejects_invalid_timestamp_as_usage_error() {
    let fixture = fixture();

    let output = tidegate(
        fixture.path(),
        &[
            "bundle",
            "new",
            "--out",
            "bad.tgb",
            "--id",
            "bad",
            "--stream",
            "motd",
            "--sequence",
            "1",
            "--not-before",
            "2026-02-29T00:00:00Z",
            "--expires",
            "2026-06-01T00:00:00Z",
            "--steps",
            "steps.json",
        ],
    );

    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("2026-02 has no day 29"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn new_rejects_empty_steps_and_unlisted_payload() {
    let fixture = fixture();
    fs::write(fixture.path().join("none.json"), "[]").unwrap();

    let empty = tidegate(
        fixture.path(),
        &[
            "bundle",
            "new",
            "--out",
            "bad.tgb",
            "--id",
            "bad",
            "--stream",
            "motd",
            "--sequence",
            "1",
            "--not-before",
            "2026-05-01T00:00:00Z",
            "--expires",
            "2026-06-01T00:00:00Z",
            "--steps",
            "none.json",
        ],
    );
    let unlisted = tidegate(
        fixture.path(),
        &[
            "bundle",
            "new",
            "--out",
            "bad.tgb",
            "--id",
            "bad",
            "--stream",
            "motd",
            "--sequence",
            "1",
            "--not-before",
            "2026-05-01T00:00:00Z",
            "--expires",
            "2026-06-01T00:00:00Z",
            "--steps",
            "steps.json",
        ],
    );

    assert_eq!(empty.status.code(), Some(1));
    assert!(
        stderr(&empty).contains("it has no steps"),
        "{}",
        stderr(&empty)
    );
    assert_eq!(unlisted.status.code(), Some(1));
    assert!(
        stderr(&unlisted).contains("reads payload \"motd\", which the manifest does not list"),
        "{}",
        stderr(&unlisted)
    );
}

#[test]
fn new_refuses_existing_file() {
    let fixture = fixture();
    let before = fs::read(fixture.path().join("b.tgb")).unwrap();

    let output = tidegate(
        fixture.path(),
        &[
            "bundle",
            "new",
            "--out",
            "b.tgb",
            "--id",
            "other",
            "--stream",
            "motd",
            "--sequence",
            "8",
            "--not-before",
            "2026-05-01T00:00:00Z",
            "--expires",
            "2026-06-01T00:00:00Z",
            "--steps",
            "steps.json",
            "--payload",
            "motd=motd",
        ],
    );

    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("b.tgb already exists"));
    assert_eq!(fs::read(fixture.path().join("b.tgb")).unwrap(), before);
}

#[test]
fn execution_policy_is_signed_into_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    fs::write(
        path.join("steps.json"),
        r#"[{"RunCommand": {"argv": ["/usr/bin/update-ca-certificates"], "revert_argv": null}}]"#,
    )
    .unwrap();
    fs::write(
        path.join("checks.json"),
        r#"[{"TcpListening": {"port": 22}}, {"CommandSucceeds": {"argv": ["/usr/bin/true"]}}]"#,
    )
    .unwrap();
    let base = [
        "bundle",
        "new",
        "--id",
        "ca-refresh",
        "--stream",
        "ca",
        "--sequence",
        "1",
        "--not-before",
        "2026-05-01T00:00:00Z",
        "--expires",
        "2026-06-01T00:00:00Z",
        "--steps",
        "steps.json",
        "--health-checks",
        "checks.json",
    ];

    let undeclared = tidegate(path, &[&base[..], &["--out", "a.tgbd"]].concat());
    assert!(!undeclared.status.success());
    assert!(
        stderr(&undeclared).contains("does not declare runs_commands"),
        "{}",
        stderr(&undeclared)
    );

    run_ok(
        path,
        &[
            &base[..],
            &[
                "--out",
                "b.tgbd",
                "--runs-commands",
                "--accept-irreversible",
            ],
        ]
        .concat(),
    );
    let text = run_ok(path, &["bundle", "inspect", "b.tgbd"]);
    assert_eq!(field(&text, "irreversible"), "accepted");
    assert_eq!(field(&text, "commands"), "accepted");
    assert!(
        text.contains(
            "health checks:\n  - TCP port 22 listening on 127.0.0.1\n  - command [\"/usr/bin/true\"] exits 0\n"
        ),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(path, &["bundle", "inspect", "--json", "b.tgbd"])).unwrap();
    assert_eq!(json["execution"]["runs_commands"], true);
    assert_eq!(json["execution"]["accepts_irreversible"], true);
    assert_eq!(
        json["execution"]["health_checks"][0]["TcpListening"]["port"],
        22
    );
}
