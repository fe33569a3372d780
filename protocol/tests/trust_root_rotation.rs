//! Moving an agent from one trust root version to the next: both the old and the new root keys
//! must sign, versions are never skipped, and bundles follow the keys of the pinned root.
//!
//! The scenario: root v1 lists root keys K1, K2, K3 with threshold 2; root v2 lists K2, K4, K5
//! with threshold 2. Security key S1 is only in v1; S4 and S5 are only in v2.

mod trust_support;

use tidegate_protocol::trust::{
    verify_bundle, verify_initial_root, verify_root_update, BundleVerdict, ClockTrust, RejectRule,
    Role, RootError, SignOutcome, SignedTrustRoot, SigningKey, TrustRoot,
};
use trust_support::*;

struct Keys {
    k1: SigningKey,
    k2: SigningKey,
    k3: SigningKey,
    k4: SigningKey,
    k5: SigningKey,
    s1: SigningKey,
    s4: SigningKey,
    s5: SigningKey,
    ot: SigningKey,
}

impl Keys {
    fn new() -> Self {
        Self {
            k1: key(Role::Root),
            k2: key(Role::Root),
            k3: key(Role::Root),
            k4: key(Role::Root),
            k5: key(Role::Root),
            s1: key(Role::Security),
            s4: key(Role::Security),
            s5: key(Role::Security),
            ot: key(Role::Ot),
        }
    }

    fn v1(&self) -> TrustRoot {
        root(1, &[&self.k1, &self.k2, &self.k3, &self.s1, &self.ot], 2)
    }

    fn v2(&self) -> TrustRoot {
        root(
            2,
            &[&self.k2, &self.k4, &self.k5, &self.s4, &self.s5, &self.ot],
            2,
        )
    }

    fn v3(&self) -> TrustRoot {
        root(
            3,
            &[&self.k2, &self.k4, &self.k5, &self.s4, &self.s5, &self.ot],
            2,
        )
    }
}

#[test]
fn update_with_both_thresholds_is_accepted() {
    let keys = Keys::new();
    let v2 = sign_root(&keys.v2(), &[&keys.k1, &keys.k2, &keys.k4, &keys.k5]);

    let accepted = verify_root_update(&keys.v1(), &v2).expect("v2 follows v1");

    assert_eq!(accepted, keys.v2());
}

#[test]
fn update_without_old_threshold_is_rejected() {
    let keys = Keys::new();
    let v2 = sign_root(&keys.v2(), &[&keys.k4, &keys.k5]);

    let error = verify_root_update(&keys.v1(), &v2).unwrap_err();

    assert!(
        matches!(
            error,
            RootError::Threshold {
                offered: 2,
                signing_version: 1,
                valid: 0,
                required: 2,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn update_without_new_threshold_is_rejected() {
    let keys = Keys::new();
    // K2 is in both versions, so only one of v2's own root keys signed.
    let v2 = sign_root(&keys.v2(), &[&keys.k1, &keys.k2]);

    let error = verify_root_update(&keys.v1(), &v2).unwrap_err();

    assert!(
        matches!(
            error,
            RootError::Threshold {
                offered: 2,
                signing_version: 2,
                valid: 1,
                required: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(&keys.k2.key_id().to_string()));
}

#[test]
fn update_skipping_a_version_is_rejected() {
    let keys = Keys::new();
    let v3 = sign_root(&keys.v3(), &[&keys.k2, &keys.k4, &keys.k5]);

    let error = verify_root_update(&keys.v1(), &v3).unwrap_err();

    assert_eq!(
        error,
        RootError::VersionGap {
            current: 1,
            offered: 3
        }
    );
    assert_eq!(
        error.to_string(),
        "trust root v3 cannot follow the pinned v1: roots are applied one version at a time, so \
         v2 must come first"
    );
}

#[test]
fn agent_walks_v1_to_v2_to_v3() {
    let keys = Keys::new();
    let v2 = sign_root(&keys.v2(), &[&keys.k1, &keys.k2, &keys.k4]);
    let v3 = sign_root(&keys.v3(), &[&keys.k4, &keys.k5]);

    let pinned = verify_root_update(&keys.v1(), &v2).expect("v2 follows v1");
    let pinned = verify_root_update(&pinned, &v3).expect("v3 follows v2");

    assert_eq!(pinned.version, 3);
}

#[test]
fn same_or_older_version_is_not_an_update() {
    let keys = Keys::new();
    let v1 = sign_root(&keys.v1(), &[&keys.k1, &keys.k2]);
    let mut other_v1 = keys.v1();
    other_v1.thresholds.root = 3;
    let other_v1 = sign_root(&other_v1, &[&keys.k1, &keys.k2, &keys.k3]);
    let v1_pinned = keys.v1();
    let v2_pinned = keys.v2();

    assert_eq!(
        verify_root_update(&v1_pinned, &v1).unwrap_err(),
        RootError::AlreadyCurrent { version: 1 }
    );
    assert_eq!(
        verify_root_update(&v1_pinned, &other_v1).unwrap_err(),
        RootError::ConflictingVersion { version: 1 }
    );
    assert_eq!(
        verify_root_update(&v2_pinned, &v1).unwrap_err(),
        RootError::Older {
            current: 2,
            offered: 1
        }
    );
}

#[test]
fn version_zero_is_invalid() {
    let keys = Keys::new();
    let mut v0 = keys.v1();
    v0.version = 0;

    assert_eq!(
        SignedTrustRoot::new(&v0).unwrap_err(),
        RootError::InvalidVersion
    );
}

#[test]
fn update_signed_by_unknown_key_is_rejected() {
    let keys = Keys::new();
    let stranger = key(Role::Root);
    let v2 = sign_root(
        &keys.v2(),
        &[&keys.k1, &keys.k2, &keys.k4, &keys.k5, &stranger],
    );

    let error = verify_root_update(&keys.v1(), &v2).unwrap_err();

    assert_eq!(
        error,
        RootError::UnknownSigner {
            index: 4,
            key_id: stranger.key_id(),
            previous: Some(1),
            offered: 2
        }
    );
}

#[test]
fn update_with_damaged_signature_names_it() {
    let keys = Keys::new();
    let mut v2 = sign_root(&keys.v2(), &[&keys.k1, &keys.k2, &keys.k4, &keys.k5]);
    v2.signatures[1].bytes[10] ^= 0x01;

    let error = verify_root_update(&keys.v1(), &v2).unwrap_err();

    assert_eq!(
        error,
        RootError::BadSignature {
            index: 1,
            key_id: keys.k2.key_id(),
            offered: 2
        }
    );
}

#[test]
fn security_key_cannot_sign_a_root() {
    let keys = Keys::new();
    let mut v2 = SignedTrustRoot::new(&keys.v2()).unwrap();

    let error = v2.sign(&keys.s4).unwrap_err();

    assert_eq!(
        error,
        RootError::NotRootKey {
            key_id: keys.s4.key_id(),
            role: Role::Security
        }
    );
}

#[test]
fn root_signed_by_listed_security_key_is_rejected() {
    let keys = Keys::new();
    let mut v2 = sign_root(&keys.v2(), &[&keys.k1, &keys.k2, &keys.k4, &keys.k5]);
    // A hand-made file: the security key's signature in the root context, added directly.
    let document = v2.document_bytes.clone();
    v2.signatures.push(keys.s4.sign(
        tidegate_protocol::trust::SigningContext::TrustRoot,
        &document,
    ));

    let error = verify_root_update(&keys.v1(), &v2).unwrap_err();

    assert_eq!(
        error,
        RootError::SignerRole {
            index: 4,
            key_id: keys.s4.key_id(),
            role: Role::Security
        }
    );
}

#[test]
fn signers_at_two_desks_build_one_file() {
    let keys = Keys::new();
    let draft = SignedTrustRoot::new(&keys.v2()).unwrap().encode().unwrap();

    // Each desk decodes the file it received, adds its signatures and passes the file on.
    let mut at_first_desk = SignedTrustRoot::decode(&draft).unwrap();
    assert_eq!(at_first_desk.sign(&keys.k1), Ok(SignOutcome::Added));
    assert_eq!(at_first_desk.sign(&keys.k4), Ok(SignOutcome::Added));
    let passed_on = at_first_desk.encode().unwrap();

    let mut at_second_desk = SignedTrustRoot::decode(&passed_on).unwrap();
    assert_eq!(at_second_desk.sign(&keys.k2), Ok(SignOutcome::Added));
    assert_eq!(at_second_desk.sign(&keys.k5), Ok(SignOutcome::Added));
    assert_eq!(
        at_second_desk.sign(&keys.k2),
        Ok(SignOutcome::AlreadySigned)
    );
    let finished = SignedTrustRoot::decode(&at_second_desk.encode().unwrap()).unwrap();

    assert_eq!(finished.signatures.len(), 4);
    assert_eq!(
        finished.signers(),
        vec![
            keys.k1.key_id(),
            keys.k4.key_id(),
            keys.k2.key_id(),
            keys.k5.key_id()
        ]
    );
    assert!(verify_root_update(&keys.v1(), &finished).is_ok());
}

#[test]
fn damaged_signature_is_replaced_when_signing_again() {
    let keys = Keys::new();
    let mut v1 = sign_root(&keys.v1(), &[&keys.k1]);
    v1.signatures[0].bytes[0] ^= 0x80;

    assert_eq!(v1.sign(&keys.k1), Ok(SignOutcome::Replaced));
    assert_eq!(v1.signatures.len(), 1);
}

#[test]
fn enrollment_root_needs_its_own_threshold() {
    let keys = Keys::new();
    let fully_signed = sign_root(&keys.v1(), &[&keys.k1, &keys.k3]);
    let half_signed = sign_root(&keys.v1(), &[&keys.k1]);
    let foreign_signed = sign_root(&keys.v1(), &[&keys.k1, &keys.k4]);

    assert_eq!(verify_initial_root(&fully_signed), Ok(keys.v1()));
    assert!(matches!(
        verify_initial_root(&half_signed),
        Err(RootError::Threshold {
            offered: 1,
            signing_version: 1,
            valid: 1,
            required: 2,
            ..
        })
    ));
    // K4 is not listed, so its signature is set aside: it neither helps nor breaks the check.
    assert!(matches!(
        verify_initial_root(&foreign_signed),
        Err(RootError::Threshold {
            valid: 1,
            required: 2,
            ..
        })
    ));
}

#[test]
fn rotated_root_enrols_without_its_predecessor() {
    let keys = Keys::new();
    // v2 is signed by K1 (listed only in v1) as well as by K2 and K4 (listed in v2).
    let v2 = sign_root(&keys.v2(), &[&keys.k1, &keys.k2, &keys.k4]);

    assert_eq!(verify_initial_root(&v2), Ok(keys.v2()));
}

#[test]
fn bundle_from_new_security_keys_needs_new_root() {
    let keys = Keys::new();
    let v1 = keys.v1();
    let v2 = verify_root_update(
        &v1,
        &sign_root(&keys.v2(), &[&keys.k1, &keys.k2, &keys.k4, &keys.k5]),
    )
    .unwrap();
    let bundle = bundle_bytes(&manifest(1), &[&keys.s4, &keys.s5]);
    let verify_with = |root: &TrustRoot| {
        verify_bundle(
            &bundle,
            root,
            "office",
            NOW,
            &ClockTrust::Trusted,
            &no_marks(),
        )
    };

    let on_v1 = verify_with(&v1);
    let (rule, detail) = rejection(&on_v1);
    assert_eq!(rule, RejectRule::UnknownKey);
    assert_eq!(
        detail,
        format!(
            "signature 0: unknown key {}, not listed in trust root v1",
            keys.s4.key_id()
        )
    );

    let on_v2 = verify_with(&v2);
    assert!(matches!(on_v2, BundleVerdict::Accepted { .. }), "{on_v2:?}");
}

#[test]
fn bundle_from_removed_security_key_fails_after_rotation() {
    let keys = Keys::new();
    let v1 = keys.v1();
    let v2 = keys.v2();
    let bundle = bundle_bytes(&manifest(1), &[&keys.s1]);

    let on_v1 = verify_at(&bundle, &v1, NOW);
    let on_v2 = verify_at(&bundle, &v2, NOW);

    assert!(matches!(on_v1, BundleVerdict::Accepted { .. }), "{on_v1:?}");
    assert_eq!(on_v2.rejection_rule(), Some(RejectRule::UnknownKey));
}
