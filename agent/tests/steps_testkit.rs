//! The step testkit as other test files use it: a dpkg root, a test package and a round trip of
//! a package upgrade through the public step functions.

use std::fs;

use tidegate_agent::steps::testkit::{self, DebFile, Harness};
use tidegate_protocol::trust::Step;

#[test]
fn testkit_upgrade_round_trip() {
    let mut harness = Harness::new();
    testkit::init_dpkg_root(harness.root());
    harness.skip_in_comparison("var/lib/dpkg");
    let scratch = harness.scratch();
    let file = |content: &'static [u8]| DebFile {
        path: "/usr/share/doc-test/readme",
        content,
        mode: 0o644,
        conffile: false,
    };
    let old = testkit::build_deb(&scratch, "doc-test", "2.1-1", &[file(b"one\n")]);
    let new = testkit::build_deb(&scratch, "doc-test", "2.1-2", &[file(b"two\n")]);
    testkit::dpkg_install(harness.root(), &old);
    harness.add_payload("doc-test.deb", &fs::read(new).unwrap());
    harness.also_compare("dpkg-query", testkit::dpkg_query_all);

    harness.round_trip(&Step::UpgradeDeb {
        package: "doc-test".into(),
        version: "2.1-2".into(),
        payload: "doc-test.deb".into(),
    });

    assert_eq!(
        testkit::dpkg_query(harness.root(), "doc-test").as_deref(),
        Some("2.1-1 all install ok installed")
    );
}
