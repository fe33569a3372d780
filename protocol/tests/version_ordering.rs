//! Version ordering checked against the package managers themselves, and the properties every
//! comparator must have for sorting: reflexivity, antisymmetry and transitivity.
//!
//! The oracle tests run `dpkg --compare-versions` and `rpm --eval` as subprocesses. Each one
//! prints a notice and passes without checking anything when its tool is not installed. No apk
//! oracle runs here, because Debian 12 has no apk-tools package. The apk unit tests carry cases
//! from apk-tools' own test data instead.

use std::cmp::Ordering;
use std::io::ErrorKind;
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tidegate_protocol::version::{apk, deb, rpm};
use tidegate_protocol::Ecosystem;

/// Debian versions that dpkg accepts, built from few characters so that independent versions
/// still share prefixes now and then.
const DEB_VERSION: &str =
    "([0-2]:)?(0|1|1\\.0|1\\.2|2|10)[0-9abzA~.+]{0,5}(-[0-9abA~.+]{1,4}){0,2}";

/// RPM `[epoch:]version[-release]` strings, including empty releases and the `~` and `^`
/// operators.
const RPM_VERSION: &str =
    "([0-2]:)?(0|1|1\\.0|1\\.2|2|10|a)[0-9abzA~^._+]{0,5}(-[0-9abA~^._+]{0,4}){0,2}";

/// Pairs of Debian versions that dpkg accepts and that share their epoch and the start of their
/// upstream version, so the comparison reaches the characters after it. Each may have a revision,
/// and two revisions share their start too.
fn deb_version_pair() -> impl Strategy<Value = (String, String)> {
    let tail = "[01aAz~.+]{0,3}";
    let shared = (
        "([01]:)?[0-9][0-9a~.+]{0,4}",
        prop::option::of("[01a~.+]{1,2}"),
    );
    let different = (tail, tail, any::<bool>(), any::<bool>());
    (shared, different).prop_map(
        |((upstream, revision), (tail_a, tail_b, with_revision_a, with_revision_b))| {
            let build = |tail: &str, with_revision: bool| match &revision {
                Some(revision) if with_revision => format!("{upstream}-{revision}{tail}"),
                _ => format!("{upstream}{tail}"),
            };
            (
                build(&tail_a, with_revision_a),
                build(&tail_b, with_revision_b),
            )
        },
    )
}

/// Pairs of RPM versions that share their epoch and the start of their version, so the
/// comparison reaches the characters after it. Each may have a release, which may be empty.
fn rpm_version_pair() -> impl Strategy<Value = (String, String)> {
    let tail = "[01aAz~^._+]{0,3}";
    let shared = ("([01]:)?[0-9a][0-9a~^._]{0,4}", "[01a~^._]{0,2}");
    let different = (tail, tail, 0..3u8, 0..3u8);
    (shared, different).prop_map(|((version, release), (tail_a, tail_b, kind_a, kind_b))| {
        // 0: no release, 1: the shared release start with the tail, 2: the tail in the version.
        let build = |tail: &str, kind: u8| match kind {
            0 => version.clone(),
            1 => format!("{version}-{release}{tail}"),
            _ => format!("{version}{tail}"),
        };
        (build(&tail_a, kind_a), build(&tail_b, kind_b))
    })
}

/// Alpine-like versions, valid and invalid, over the characters that apk's grammar uses.
const APK_VERSION: &str =
    "(0|1|1\\.0|1\\.2|2|10|01)(\\.[0-9]{1,2}|[a-c]){0,2}(_alpha|_rc|_p|_git|_foo)?[0-9]{0,2}(~[0-9a-f]{1,2})?(-r[0-9]{1,2}|-x)?";

/// Runs `check` on `cases` generated values and panics with the smallest failing value.
fn run_cases<S: Strategy>(
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = Config {
        cases,
        source_file: Some(file!()),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(error) = runner.run(&strategy, check) {
        panic!("{error}");
    }
}

/// Returns whether `program` can be started, printing a notice that the test is skipped if not.
fn tool_available(program: &str, version_flag: &str) -> bool {
    match Command::new(program).arg(version_flag).output() {
        Ok(_) => true,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            eprintln!("skipped: `{program}` is not on PATH, so nothing was compared against it");
            false
        }
        Err(error) => panic!("failed to run `{program} {version_flag}`: {error}"),
    }
}

/// Asks `dpkg --compare-versions` for the ordering of `a` and `b`.
fn dpkg_order(a: &str, b: &str) -> Ordering {
    let relation_is_true = |relation: &str| {
        let output = Command::new("dpkg")
            .args(["--compare-versions", a, relation, b])
            .output()
            .expect("failed to run dpkg --compare-versions");
        match output.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!(
                "dpkg --compare-versions {a:?} {relation} {b:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    };

    if relation_is_true("lt") {
        Ordering::Less
    } else if relation_is_true("eq") {
        Ordering::Equal
    } else {
        Ordering::Greater
    }
}

/// Asks rpm's Lua `rpm.vercmp` for the ordering of `a` and `b`. Long brackets quote the versions,
/// so they must not contain `]==]`.
fn rpm_order(a: &str, b: &str) -> Ordering {
    assert!(
        !a.contains("]==]") && !b.contains("]==]"),
        "cannot quote {a:?} or {b:?}"
    );
    let script = format!("%{{lua: print(rpm.vercmp([==[{a}]==], [==[{b}]==]))}}");
    let output = Command::new("rpm")
        .args(["--eval", &script])
        .output()
        .expect("failed to run rpm --eval");
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.trim() {
        "-1" => Ordering::Less,
        "0" => Ordering::Equal,
        "1" => Ordering::Greater,
        other => panic!(
            "rpm.vercmp({a:?}, {b:?}) returned {other:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[test]
fn deb_known_cases_match_dpkg() {
    if !tool_available("dpkg", "--version") {
        return;
    }
    let cases = [
        ("1.2.3-1~deb7u1", "1.2.3-1"),
        ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12"),
        ("2:9.0.0", "8.3.2"),
        ("1:2.0~rc1-3", "1:2.0-1"),
        ("1.0~~", "1.0~"),
        ("1.0~", "1.0"),
        ("1.0-0", "1.0"),
        ("1.0", "0:1.0"),
        ("1.0a", "1.0+"),
        ("1.0Z", "1.0a"),
        ("1.0-1-2", "1.0-3"),
        ("1:1:0", "1:2"),
        ("+1:2.0", "1:2.0"),
        (" 1.0\t", "1.0"),
        ("abc", "1.0"),
        ("1.0é", "1.0+"),
        ("1.0é", "1.0z"),
        ("", "0"),
        ("", ""),
        (&"9".repeat(40), &format!("1{}", "0".repeat(40))),
    ];
    for (a, b) in cases {
        assert_eq!(
            deb::compare(a, b),
            dpkg_order(a, b),
            "compare({a:?}, {b:?})"
        );
    }
}

#[test]
fn deb_generated_pairs_match_dpkg() {
    if !tool_available("dpkg", "--version") {
        return;
    }
    let pairs = prop_oneof![(DEB_VERSION, DEB_VERSION), deb_version_pair()];
    run_cases(400, pairs, |(a, b)| {
        prop_assert_eq!(
            deb::compare(&a, &b),
            dpkg_order(&a, &b),
            "{:?} vs {:?}",
            a,
            b
        );
        Ok(())
    });
}

/// Returns whether `rpm` is installed and its Lua `rpm.vercmp` compares epochs, as rpm 4.18's does.
/// Without that it is no oracle for `rpm::compare`.
fn rpm_vercmp_compares_epochs() -> bool {
    if !tool_available("rpm", "--version") {
        return false;
    }
    if rpm_order("1:1.0", "2.0") != Ordering::Greater {
        eprintln!("skipped: this rpm's rpm.vercmp() ignores epochs, so it is no oracle here");
        return false;
    }
    true
}

#[test]
fn rpm_generated_pairs_match_rpm() {
    if !rpm_vercmp_compares_epochs() {
        return;
    }
    let pairs = prop_oneof![(RPM_VERSION, RPM_VERSION), rpm_version_pair()];
    run_cases(300, pairs, |(a, b)| {
        prop_assert_eq!(
            rpm::compare(&a, &b),
            rpm_order(&a, &b),
            "{:?} vs {:?}",
            a,
            b
        );
        Ok(())
    });
}

#[test]
fn rpm_separator_soup_matches_rpm() {
    if !rpm_vercmp_compares_epochs() {
        return;
    }
    run_cases(
        200,
        ("[0-9a~^._+:-]{1,6}", "[0-9a~^._+:-]{1,6}"),
        |(a, b)| {
            prop_assert_eq!(
                rpm::compare(&a, &b),
                rpm_order(&a, &b),
                "{:?} vs {:?}",
                a,
                b
            );
            Ok(())
        },
    );
}

/// A version comparator, as each ecosystem module exports it.
type Comparator = fn(&str, &str) -> Ordering;

const COMPARATORS: [(&str, Comparator); 3] = [
    ("deb", deb::compare),
    ("rpm", rpm::compare),
    ("apk", apk::compare),
];

proptest! {
    #[test]
    fn compare_is_reflexive(version in any::<String>()) {
        for (name, compare) in COMPARATORS {
            prop_assert_eq!(compare(&version, &version), Ordering::Equal, "{}", name);
        }
    }

    #[test]
    fn compare_is_antisymmetric(a in any::<String>(), b in any::<String>()) {
        for (name, compare) in COMPARATORS {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse(), "{}", name);
        }
    }

    #[test]
    fn compare_is_antisymmetric_on_version_like_strings(
        a in "[0-9a-z~^._+:-]{0,10}",
        b in "[0-9a-z~^._+:-]{0,10}",
    ) {
        for (name, compare) in COMPARATORS {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse(), "{}", name);
        }
    }

    #[test]
    fn deb_compare_is_transitive(a in DEB_VERSION, b in DEB_VERSION, c in DEB_VERSION) {
        assert_transitive(deb::compare, &a, &b, &c)?;
    }

    #[test]
    fn rpm_compare_is_transitive(a in RPM_VERSION, b in RPM_VERSION, c in RPM_VERSION) {
        assert_transitive(rpm::compare, &a, &b, &c)?;
    }

    #[test]
    fn apk_compare_is_transitive(a in APK_VERSION, b in APK_VERSION, c in APK_VERSION) {
        assert_transitive(apk::compare, &a, &b, &c)?;
    }

    #[test]
    fn dispatch_uses_the_ecosystem_comparator(a in RPM_VERSION, b in RPM_VERSION) {
        use tidegate_protocol::version::compare;
        prop_assert_eq!(compare(Ecosystem::Deb, &a, &b), deb::compare(&a, &b));
        prop_assert_eq!(compare(Ecosystem::Rpm, &a, &b), rpm::compare(&a, &b));
        prop_assert_eq!(compare(Ecosystem::Apk, &a, &b), apk::compare(&a, &b));
    }
}

/// Checks transitivity on every ordering of `a`, `b` and `c`: `x <= y <= z` implies `x <= z`,
/// strictly if either step is strict.
fn assert_transitive(compare: Comparator, a: &str, b: &str, c: &str) -> Result<(), TestCaseError> {
    let permutations = [
        [a, b, c],
        [a, c, b],
        [b, a, c],
        [b, c, a],
        [c, a, b],
        [c, b, a],
    ];
    for [x, y, z] in permutations {
        let x_y = compare(x, y);
        let y_z = compare(y, z);
        if x_y == Ordering::Greater || y_z == Ordering::Greater {
            continue;
        }
        let expected = if x_y == Ordering::Equal && y_z == Ordering::Equal {
            Ordering::Equal
        } else {
            Ordering::Less
        };
        prop_assert_eq!(compare(x, z), expected, "{:?} <= {:?} <= {:?}", x, y, z);
    }
    Ok(())
}
