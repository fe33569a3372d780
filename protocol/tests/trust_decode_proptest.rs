//! Property tests for the trust decoders: arbitrary input never panics, damaged bundles are never
//! accepted, and valid manifests survive a round trip.

mod trust_support;

use std::sync::OnceLock;

use proptest::prelude::*;
use tidegate_protocol::trust::{
    inspect_bundle, verify_bundle, BundleFile, BundleId, BundleManifest, BundleVerdict, ClockTrust,
    PublicKey, Role, SignedTrustRoot, SigningKey, Step, StreamName, TargetSelector, TrustRoot,
    UnitAction,
};
use trust_support::*;

/// Returns one valid signed bundle file and the root that accepts it, built once and shared by
/// all cases because key generation is the slow part.
fn signed_fixture() -> &'static (Vec<u8>, TrustRoot) {
    static FIXTURE: OnceLock<(Vec<u8>, TrustRoot)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let security = key(Role::Security);
        let root = root(1, &[&key(Role::Root), &security, &key(Role::Ot)], 1);
        (bundle_bytes(&manifest(1), &[&security]), root)
    })
}

fn signed_root_fixture() -> &'static Vec<u8> {
    static FIXTURE: OnceLock<Vec<u8>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root_key = key(Role::Root);
        let document = root(1, &[&root_key, &key(Role::Security), &key(Role::Ot)], 1);
        sign_root(&document, &[&root_key]).encode().unwrap()
    })
}

fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,40}"
}

fn relative_path() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,12}(/[a-zA-Z0-9_.-]{0,10}[a-z0-9]){0,3}"
}

fn user() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_-]{0,31}"
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (relative_path(), "[A-Za-z]{1,10}", "[ -~]{0,30}").prop_map(|(path, prefix, rest)| {
            Step::EnsureConfigLine {
                line: format!("{prefix}{rest}"),
                match_prefix: prefix,
                path,
            }
        }),
        "[a-z0-9][a-z0-9+.-]{1,30}".prop_map(|package| Step::RemoveDeb { package }),
        ("[a-z0-9_]{1,10}(\\.[a-z0-9_]{1,10}){0,3}", "[!-~]{1,20}")
            .prop_map(|(key, value)| Step::Sysctl { key, value }),
        (
            "[a-z0-9][a-z0-9_-]{0,19}\\.(service|socket|timer)",
            0..7usize
        )
            .prop_map(|(unit, action)| {
                Step::SystemdUnit {
                    unit,
                    action: [
                        UnitAction::Enable,
                        UnitAction::Disable,
                        UnitAction::Start,
                        UnitAction::Stop,
                        UnitAction::Restart,
                        UnitAction::Mask,
                        UnitAction::Unmask,
                    ][action],
                }
            }),
        user().prop_map(|user| Step::LockAccount { user }),
        user().prop_map(|user| Step::UnlockAccount { user }),
        user().prop_map(|user| Step::ExpireAccount { user }),
        user().prop_map(|user| Step::RemoveAccount { user }),
        (user(), "[A-Za-z0-9+/]{43}").prop_map(|(user, digest)| Step::RemoveAuthorizedKey {
            user,
            key_fingerprint: format!("SHA256:{digest}"),
        }),
        (
            prop::collection::vec(text(), 1..4),
            prop::option::of(prop::collection::vec(text(), 1..4))
        )
            .prop_map(|(argv, revert_argv)| Step::RunCommand { argv, revert_argv }),
    ]
}

fn valid_manifest() -> impl Strategy<Value = BundleManifest> {
    (
        "[a-z0-9_-]{1,64}",
        "[a-z0-9_-]{1,64}",
        any::<u64>(),
        any::<i64>(),
        1..=i64::MAX,
        prop::collection::vec("[a-z0-9_-]{1,20}", 0..4),
        prop::collection::vec("[!-~]{1,20}", 0..4),
        prop::collection::vec(step(), 1..6),
    )
        .prop_map(
            |(bundle_id, stream, sequence, not_before, duration, tiers, tags, steps)| {
                BundleManifest {
                    bundle_id: BundleId::parse(&bundle_id).unwrap(),
                    stream: StreamName::parse(&stream).unwrap(),
                    sequence,
                    not_before_unix_s: not_before,
                    expires_unix_s: not_before.saturating_add(duration),
                    target: TargetSelector {
                        tiers,
                        os: vec![],
                        tags,
                    },
                    steps,
                    payloads: vec![],
                    execution: tidegate_protocol::trust::ExecutionPolicy {
                        runs_commands: true,
                        ..Default::default()
                    },
                }
            },
        )
        .prop_filter("expires must follow not_before", |m| {
            m.not_before_unix_s < m.expires_unix_s
        })
}

proptest! {
    #[test]
    fn bundle_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = BundleFile::decode(&bytes);
        let _ = inspect_bundle(&bytes);
        let _ = BundleManifest::decode(&bytes);
    }

    #[test]
    fn bundle_body_after_magic_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"TGBD\x01".to_vec();
        bytes.extend_from_slice(&body);
        let (_, root) = signed_fixture();

        let _ = inspect_bundle(&bytes);
        let verdict = verify_bundle(&bytes, root, "office", NOW, &ClockTrust::Trusted, &no_marks());

        let not_accepted = !matches!(verdict, BundleVerdict::Accepted { .. });
        prop_assert!(not_accepted);
    }

    #[test]
    fn root_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = SignedTrustRoot::decode(&bytes);
        let mut framed = b"TGRT\x01".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = SignedTrustRoot::decode(&framed);
    }

    #[test]
    fn key_parsers_never_panic(text in "(?s).{0,400}") {
        let _ = SigningKey::from_key_file(&text);
        let _ = SigningKey::from_key_file(&format!("-----BEGIN TIDEGATE SIGNING KEY-----\n{text}"));
        let _ = PublicKey::parse(&text);
    }

    #[test]
    fn replaced_bytes_in_bundle_are_never_accepted(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let (original, root) = signed_fixture();
        let mut damaged = original.clone();
        for (index, value) in &edits {
            let position = index.index(damaged.len());
            damaged[position] = *value;
        }
        prop_assume!(damaged != *original);

        let verdict = verify_bundle(&damaged, root, "office", NOW, &ClockTrust::Trusted, &no_marks());

        prop_assert!(verdict.rejection_rule().is_some(), "{:?}", verdict);
    }

    #[test]
    fn truncated_or_extended_bundle_is_rejected(cut in any::<prop::sample::Index>(), tail in prop::collection::vec(any::<u8>(), 1..16)) {
        let (original, root) = signed_fixture();
        let truncated = &original[..cut.index(original.len())];
        let mut extended = original.clone();
        extended.extend_from_slice(&tail);

        for damaged in [truncated, extended.as_slice()] {
            let verdict = verify_bundle(damaged, root, "office", NOW, &ClockTrust::Trusted, &no_marks());
            prop_assert!(verdict.rejection_rule().is_some(), "{:?}", verdict);
        }
    }

    #[test]
    fn replaced_bytes_in_root_never_verify(
        index in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let original = signed_root_fixture();
        let mut damaged = original.clone();
        let position = index.index(damaged.len());
        damaged[position] = value;
        prop_assume!(damaged != *original);

        if let Ok(signed) = SignedTrustRoot::decode(&damaged) {
            prop_assert!(tidegate_protocol::trust::verify_initial_root(&signed).is_err());
        }
    }

    #[test]
    fn valid_manifests_round_trip(manifest in valid_manifest()) {
        let bytes = manifest.encode().unwrap();

        prop_assert_eq!(BundleManifest::decode(&bytes), Ok(manifest));
    }
}
