//! `verify` and `anchor` as library calls, on a temporary store.

use super::*;
use crate::clock::FakeClock;
use crate::crypto::kms::LocalKeyring;

use crate::test_support::block;

/// A new store, its keyring, the clock, and the directory holding them.
fn fresh() -> (tempfile::TempDir, Store, Arc<dyn Kms>, Arc<dyn Clock>) {
    let dir = tempfile::tempdir().unwrap();
    let t = chrono::DateTime::from_timestamp(1_760_000_000, 0).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(FakeClock::new(t));
    let (store, kms) = block(crate::store::initialised_for_tests(
        dir.path(),
        clock.clone(),
    ));
    (dir, store, kms, clock)
}

#[test]
fn a_new_store_verifies_and_anchors_and_a_foreign_keyring_is_named() {
    let (dir, store, kms, clock) = fresh();
    let with = Request {
        keyring: Some(kms.as_ref()),
        ..Request::default()
    };
    let r = block(verify(&store, clock.clone(), with)).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let r = block(verify(&store, clock.clone(), Request::default())).unwrap();
    assert!(r.problems.is_empty());
    assert!(r.notes.iter().any(|n| n.contains("no keyring at hand")));

    let Anchoring::Ready(a) = block(anchor(&store, Some(kms.as_ref()), clock.clone())).unwrap()
    else {
        panic!("the new store's head anchors")
    };
    assert_eq!(a.sequence, 1);
    // the anchor checks out against the chain
    let anchored = Request {
        anchor: Some(&a),
        ..Request::default()
    };
    assert!(
        block(verify(&store, clock.clone(), anchored))
            .unwrap()
            .problems
            .is_empty()
    );

    let other = LocalKeyring::create(&dir.path().join("other.json"), "x").unwrap();
    let got = block(anchor(&store, Some(&other), clock.clone())).unwrap();
    assert!(
        matches!(got, Anchoring::OtherKey { sequence: 1, .. }),
        "{got:?}"
    );
    let with_other = Request {
        keyring: Some(&other),
        ..Request::default()
    };
    let r = block(verify(&store, clock, with_other)).unwrap();
    assert!(
        !r.problems.is_empty(),
        "a head signed by another key is a problem"
    );
}

#[test]
fn a_removed_policy_version_is_a_problem() {
    let (_dir, store, kms, clock) = fresh();
    let versions = block(store.list("access")).unwrap();
    assert!(!versions.is_empty());
    for m in versions {
        block(store.delete(&m.location)).unwrap();
    }
    let with = Request {
        keyring: Some(kms.as_ref()),
        ..Request::default()
    };
    let r = block(verify(&store, clock, with)).unwrap();
    assert!(!r.problems.is_empty());
}
