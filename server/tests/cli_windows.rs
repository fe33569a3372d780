//! `tidegate windows new`, `add`, `add-once`, `freeze`, `preview`, `sign`, `verify`, `show` and
//! `export` with the real binary on temporary files.
//!
//! The trust root lists root key K1, security key S1 and OT keys O1 and O2; tier `critical`
//! needs two OT signatures and every other tier one. Schedules are for tier `plant` in
//! Europe/Berlin, valid from 2026-06-01T00:00:00Z until 2026-09-01T00:00:00Z. Berlin is on CEST
//! (+02) all summer, so 02:00 local is 00:00Z.

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

/// Runs a command that must fail with exit code 1 and returns its stderr.
fn run_err(dir: &Path, args: &[&str]) -> String {
    let output = tidegate(dir, args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "tidegate {args:?} did not fail with 1\nstdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    stderr(&output)
}

fn generate(dir: &Path, name: &str, role: &str) {
    let file = format!("{name}.key");
    run_ok(dir, &["keys", "generate", "--role", role, "--out", &file]);
}

/// Writes the keys and the signed root file `root.tgrt`.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    generate(path, "k1", "root");
    generate(path, "s1", "security");
    generate(path, "o1", "ot");
    generate(path, "o2", "ot");
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
            "s1.key",
            "--key",
            "o1.key",
            "--key",
            "o2.key",
        ],
    );
    for role in ["root", "security", "ot"] {
        run_ok(
            path,
            &[
                "root",
                "set-threshold",
                "root.json",
                "--role",
                role,
                "--count",
                "1",
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
            "ot",
            "--count",
            "2",
            "--tier",
            "critical",
        ],
    );
    run_ok(path, &["root", "sign", "root.json", "--key", "k1.key"]);
    run_ok(path, &["root", "export", "root.json", "--out", "root.tgrt"]);
    dir
}

fn new_schedule(path: &Path, file: &str, tier: &str) {
    run_ok(
        path,
        &[
            "windows",
            "new",
            "--out",
            file,
            "--tier",
            tier,
            "--zone",
            "Europe/Berlin",
            "--not-before",
            "2026-06-01T00:00:00Z",
            "--expires",
            "2026-09-01T00:00:00Z",
        ],
    );
}

#[test]
fn weekly_window_freeze_sign_verify() {
    let dir = fixture();
    let path = dir.path();
    new_schedule(path, "plant.json", "plant");
    let added = run_ok(
        path,
        &[
            "windows",
            "add",
            "plant.json",
            "--cron",
            "0 2 * * SUN",
            "--duration",
            "4h",
            "--cutoff",
            "30m",
        ],
    );
    assert!(
        added.contains("added window 0 to plant.json: every `0 2 * * SUN` for 4h, no new starts in the last 30m"),
        "{added}"
    );
    assert!(!added.contains("warning"), "{added}");

    // Freeze the Sunday 2026-06-14 by local times.
    let frozen = run_ok(
        path,
        &[
            "windows",
            "freeze",
            "plant.json",
            "--start",
            "2026-06-13 00:00",
            "--end",
            "2026-06-15 00:00",
            "--reason",
            "line changeover",
        ],
    );
    assert!(
        frozen.contains("(2026-06-12T22:00:00Z to 2026-06-14T22:00:00Z): line changeover"),
        "{frozen}"
    );

    let preview = run_ok(
        path,
        &[
            "windows",
            "preview",
            "plant.json",
            "--from",
            "2026-06-01T00:00:00Z",
            "--count",
            "3",
        ],
    );
    // 2026-06-07 is the first Sunday of June 2026.
    for expected in [
        "next 3 windows from 2026-06-01T00:00:00Z:",
        "2026-06-07 02:00:00 CEST (+02)  2026-06-07 06:00:00 CEST (+02)  2026-06-07T00:00:00Z  2026-06-07T04:00:00Z  2026-06-07T03:30:00Z",
        "2026-06-21T00:00:00Z",
        "earliest allowed start from 2026-06-01T00:00:00Z: 2026-06-07T00:00:00Z",
    ] {
        assert!(preview.contains(expected), "missing {expected:?} in\n{preview}");
    }
    let frozen_line = preview
        .lines()
        .find(|line| line.contains("2026-06-14T00:00:00Z  2026-06-14T04:00:00Z"))
        .unwrap_or_else(|| panic!("no window on 2026-06-14 in\n{preview}"));
    assert!(
        frozen_line.ends_with("frozen: line changeover"),
        "{frozen_line}"
    );
    assert!(!preview.contains("warning"), "{preview}");

    run_ok(path, &["windows", "sign", "plant.json", "--key", "o1.key"]);
    let verified = run_ok(
        path,
        &[
            "windows",
            "verify",
            "plant.json",
            "--root",
            "root.tgrt",
            "--at",
            "2026-06-02T00:00:00Z",
        ],
    );
    assert!(verified.contains("verdict:        accepted"), "{verified}");
    assert!(
        verified.contains("tier plant (needs 1 OT signature under trust root v1)"),
        "{verified}"
    );

    let exported = run_ok(
        path,
        &["windows", "export", "plant.json", "--out", "plant.tgws"],
    );
    assert!(
        exported.contains("wrote signed schedule file plant.tgws"),
        "{exported}"
    );
    let bytes = fs::read(path.join("plant.tgws")).unwrap();
    assert_eq!(&bytes[..5], b"TGWS\x01");
    let shown = run_ok(path, &["windows", "show", "plant.tgws"]);
    assert!(
        shown.contains("plant.tgws (signed schedule file)"),
        "{shown}"
    );
    assert!(
        shown.contains("0: every `0 2 * * SUN` for 4h, no new starts in the last 30m"),
        "{shown}"
    );
    assert!(
        shown.contains("0: 2026-06-12T22:00:00Z to 2026-06-14T22:00:00Z: line changeover"),
        "{shown}"
    );
}

#[test]
fn preview_warns_on_day_or_rule() {
    let dir = fixture();
    let path = dir.path();
    new_schedule(path, "plant.json", "plant");
    let added = run_ok(
        path,
        &[
            "windows",
            "add",
            "plant.json",
            "--cron",
            "0 2 1-7 * SUN",
            "--duration",
            "1h",
        ],
    );
    assert!(added.contains("warning: window 0"), "{added}");
    let preview = run_ok(
        path,
        &[
            "windows",
            "preview",
            "plant.json",
            "--from",
            "2026-06-01T00:00:00Z",
            "--count",
            "10",
        ],
    );
    assert!(
        preview.contains("restricts both day of month and day of week"),
        "{preview}"
    );
    // June 1-7 and the Sundays 14, 21 and 28: ten windows, all in June.
    for day in [1, 2, 3, 4, 5, 6, 7, 14, 21, 28] {
        let start = format!("2026-06-{day:02}T00:00:00Z  2026-06-{day:02}T01:00:00Z");
        assert!(preview.contains(&start), "missing {start} in\n{preview}");
    }
    assert!(!preview.contains("2026-07-"), "{preview}");
}

#[test]
fn invalid_input_names_field_and_value() {
    let dir = fixture();
    let path = dir.path();
    let error = run_err(
        path,
        &[
            "windows", "new", "--out", "x.json", "--tier", "plant", "--zone", "+01:00",
        ],
    );
    assert!(error.contains("invalid --zone \"+01:00\""), "{error}");
    assert!(error.contains("IANA time zone name"), "{error}");
    assert!(!path.join("x.json").exists());

    new_schedule(path, "plant.json", "plant");
    for (args, expected) in [
        (
            vec!["--cron", "0 2 30 2 *", "--duration", "1h"],
            "invalid --cron \"0 2 30 2 *\": cron expression \"0 2 30 2 *\" never fires",
        ),
        (
            vec!["--cron", "0 0 31 4 *", "--duration", "1h"],
            "never fires",
        ),
        (
            vec!["--cron", "0 25 * * *", "--duration", "1h"],
            "the hour field \"25\" is invalid: 25 is out of range 0-23",
        ),
        (
            vec!["--cron", "0 2 * * *", "--duration", "2 hours"],
            "invalid --duration \"2 hours\"",
        ),
        (
            vec!["--cron", "0 2 * * *", "--duration", "8d"],
            "invalid --duration \"8d\": a window lasts at least 1s and at most 7d",
        ),
        (
            vec!["--cron", "0 2 * * *", "--duration", "1h", "--cutoff", "2h"],
            "invalid --cutoff \"2h\": it must be at least 1s and shorter than the window (1h)",
        ),
    ] {
        let mut command = vec!["windows", "add", "plant.json"];
        command.extend(args);
        let error = run_err(path, &command);
        assert!(error.contains(expected), "{command:?}: {error}");
    }
    assert!(run_ok(path, &["windows", "show", "plant.json"]).contains("windows: none yet"));

    let error = run_err(
        path,
        &[
            "windows",
            "freeze",
            "plant.json",
            "--start",
            "tomorrow",
            "--end",
            "2026-06-02 00:00",
            "--reason",
            "audit",
        ],
    );
    assert!(error.contains("invalid --start \"tomorrow\""), "{error}");
    assert!(error.contains("Europe/Berlin"), "{error}");

    // A schedule without windows cannot be signed or exported.
    let error = run_err(path, &["windows", "sign", "plant.json", "--key", "o1.key"]);
    assert!(error.contains("it has no window yet"), "{error}");
}

#[test]
fn signing_needs_ot_key_and_threshold() {
    let dir = fixture();
    let path = dir.path();
    new_schedule(path, "critical.json", "critical");
    run_ok(
        path,
        &[
            "windows",
            "add",
            "critical.json",
            "--cron",
            "0 23 * * MON-FRI",
            "--duration",
            "3h",
        ],
    );
    let error = run_err(
        path,
        &["windows", "sign", "critical.json", "--key", "s1.key"],
    );
    assert!(
        error.contains("has role security; only an OT key can sign a schedule"),
        "{error}"
    );

    run_ok(
        path,
        &["windows", "sign", "critical.json", "--key", "o1.key"],
    );
    let verify = [
        "windows",
        "verify",
        "critical.json",
        "--root",
        "root.tgrt",
        "--at",
        "2026-06-02T00:00:00Z",
    ];
    let output = tidegate(path, &verify);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("rule:        threshold"),
        "{}",
        stdout(&output)
    );

    run_ok(
        path,
        &["windows", "sign", "critical.json", "--key", "o2.key"],
    );
    run_ok(path, &verify);

    // Adding a window drops both signatures, because they covered the old document.
    let added = run_ok(
        path,
        &[
            "windows",
            "add-once",
            "critical.json",
            "--start",
            "2026-07-04 22:00",
            "--end",
            "2026-07-05 02:00",
        ],
    );
    assert!(added.contains("signatures removed"), "{added}");
    assert!(
        added.contains("once from 2026-07-04T20:00:00Z until 2026-07-05T00:00:00Z"),
        "{added}"
    );
}

#[test]
fn next_version_and_replay() {
    let dir = fixture();
    let path = dir.path();
    new_schedule(path, "v1.json", "plant");
    run_ok(
        path,
        &[
            "windows",
            "add",
            "v1.json",
            "--cron",
            "0 2 * * *",
            "--duration",
            "1h",
        ],
    );
    run_ok(path, &["windows", "sign", "v1.json", "--key", "o1.key"]);
    run_ok(path, &["windows", "export", "v1.json", "--out", "v1.tgws"]);

    let error = run_err(
        path,
        &[
            "windows",
            "add",
            "v1.tgws",
            "--cron",
            "0 3 * * *",
            "--duration",
            "1h",
        ],
    );
    assert!(error.contains("only drafts can be edited"), "{error}");

    let started = run_ok(
        path,
        &[
            "windows",
            "new",
            "--from",
            "v1.tgws",
            "--out",
            "v2.json",
            "--not-before",
            "2026-06-01T00:00:00Z",
            "--expires",
            "2026-09-01T00:00:00Z",
        ],
    );
    assert!(started.contains("tier plant, version 2"), "{started}");
    let shown = run_ok(path, &["windows", "show", "v2.json"]);
    assert!(shown.contains("0: every `0 2 * * *` for 1h"), "{shown}");
    assert!(shown.contains("signed by:      nobody yet"), "{shown}");

    // An agent holding version 2 rejects version 1 as a replay.
    let output = tidegate(
        path,
        &[
            "windows",
            "verify",
            "v1.tgws",
            "--root",
            "root.tgrt",
            "--at",
            "2026-06-02T00:00:00Z",
            "--current-version",
            "2",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("rule:        rollback"),
        "{}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("schedule v1.tgws is rejected for tier plant by rule rollback"),
        "{}",
        stderr(&output)
    );

    // The signed file can be signed again in place by a second OT key.
    run_ok(path, &["windows", "sign", "v1.tgws", "--key", "o2.key"]);
    let shown = run_ok(path, &["windows", "show", "v1.tgws"]);
    let signed_by = shown
        .lines()
        .find(|line| line.starts_with("signed by:"))
        .unwrap();
    assert_eq!(signed_by.split(", ").count(), 2, "{shown}");
}
