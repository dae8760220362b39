//! Creating and opening a store without the binary.

#![allow(clippy::disallowed_methods)] // tests make a directory that is not a store

use super::*;
use crate::clock::FakeClock;

use crate::test_support::block;

fn clock() -> Arc<dyn Clock> {
    let t = chrono::DateTime::from_timestamp(1_760_000_000, 0).unwrap();
    Arc::new(FakeClock::new(t))
}

fn request<'a>(store: &'a StoreUrl, keyring: &'a Path) -> InitRequest<'a> {
    InitRequest {
        store,
        keyring,
        transit: None,
        aws_kms: None,
        retention_floor_days: Some(2555),
        group_readable: false,
        create_bucket: false,
        object_lock_mode: None,
        admin: "alice",
    }
}

#[test]
fn init_creates_the_store_its_policy_and_head_once_and_checks_it_after() {
    let dir = tempfile::tempdir().unwrap();
    let (path, keyring) = (
        StoreUrl::local(dir.path().join("s")),
        dir.path().join("k.json"),
    );
    let first = block(init(&request(&path, &keyring), clock())).unwrap();
    assert!(first.created && first.new_keyring && first.policy_recorded);
    assert_eq!(first.retention_floor_days, 2555);
    let (store, kms) = block(open(&path, &keyring)).unwrap();
    let marker = block(read_marker(&store)).unwrap();
    assert_eq!(marker.kek_id, first.kek_id);
    assert_eq!(block(retention_floor(&store)).unwrap().days, 2555);
    let policy = block(crate::access::policy::load(&store)).unwrap();
    assert_eq!(policy.admins(), vec!["alice"]);
    let head = block(crate::head::newest(&store)).unwrap().unwrap();
    assert_eq!(head.head.change, "init");
    assert_eq!(
        block(kms.signing_key()).unwrap(),
        Some(head.head.public_key)
    );

    // again: nothing new, and what was chosen once stays
    let again = block(init(&request(&path, &keyring), clock())).unwrap();
    assert!(!again.created && !again.new_keyring && !again.policy_recorded);
    assert_eq!(again.kek_id, first.kek_id);
    let lower = InitRequest {
        retention_floor_days: Some(365),
        ..request(&path, &keyring)
    };
    let e = block(init(&lower, clock())).unwrap_err();
    assert!(
        matches!(&e, Error::Conflict { what, retry: false } if what.contains("2555 days")),
        "{e}"
    );
    let shared = InitRequest {
        group_readable: true,
        ..request(&path, &keyring)
    };
    let e = block(init(&shared, clock())).unwrap_err();
    assert!(matches!(e, Error::Conflict { retry: false, .. }), "{e}");
    // another keyring does not open this store
    let other = dir.path().join("other.json");
    let e = block(init(&request(&path, &other), clock())).unwrap_err();
    assert!(matches!(e, Error::Conflict { retry: false, .. }), "{e}");
    let e = block(open(&path, &other)).err().unwrap();
    assert!(
        matches!(&e, Error::Conflict { what, .. } if what.contains("needs KEK")),
        "{e}"
    );
}

#[test]
fn a_keyring_inside_the_store_a_bad_floor_and_a_missing_store_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("s");
    let path = StoreUrl::local(&sdir);
    let inside = sdir.join("keys").join("k.json");
    let e = block(init(&request(&path, &inside), clock())).unwrap_err();
    assert!(
        matches!(&e, Error::Usage(m) if m.contains("inside the store")),
        "{e}"
    );
    assert!(!inside.exists(), "no key written inside the store");
    let keyring = dir.path().join("k.json");
    let zero = InitRequest {
        retention_floor_days: Some(0),
        ..request(&path, &keyring)
    };
    assert!(matches!(block(init(&zero, clock())), Err(Error::Usage(_))));
    // nothing there: a usage error (2); a directory that is no store: a runtime failure (1)
    let e = block(open(&path, &keyring)).err().unwrap();
    assert_eq!(e.exit_code(), 2, "{e}");
    std::fs::create_dir(&sdir).unwrap();
    let e = block(open_unkeyed(&path)).unwrap_err();
    assert!(
        matches!(&e, Error::Unusable(m) if m.contains("not a holdfast store")),
        "{e}"
    );
}
