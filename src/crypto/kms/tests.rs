#![allow(clippy::disallowed_methods)] // the tests look at the keyring file itself

use super::*;
use std::os::unix::fs::PermissionsExt;

use crate::test_support::block;

#[test]
fn local_keyring_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k/keyring.json");
    let ring = LocalKeyring::create(&path, "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    block(contract::round_trip(&ring));
    block(contract::rejects_altered_or_moved(&ring));
    let later = chrono::DateTime::parse_from_rfc3339("2027-02-01T00:00:00Z")
        .unwrap()
        .to_utc();
    block(contract::rotates_and_rewraps(&ring, later));
    let other = dir.path().join("retire.json");
    let retiring = LocalKeyring::create(&other, "2026-01-01T00:00:00Z").unwrap();
    block(contract::retires_old_versions(&retiring));
    let again = LocalKeyring::load(&other).unwrap();
    assert_eq!(block(again.info()).unwrap().min_decryption_version, 2);
    // the rotation is in the file: a reload wraps under v2 and knows when v2 was made
    let reloaded = LocalKeyring::load(&path).unwrap();
    let info = block(reloaded.info()).unwrap();
    assert_eq!((info.primary, info.versions.len()), (2, 2));
    assert_eq!(info.primary_created_at(), Some(later));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // a reloaded keyring unwraps what the first one wrapped
    let dek = DataKey::generate();
    let w = block(ring.wrap(&dek)).unwrap();
    let again = LocalKeyring::load(&path).unwrap();
    assert_eq!(
        block(again.unwrap_key(dek.id(), &w)).unwrap().expose(),
        dek.expose()
    );
    assert!(
        LocalKeyring::create(&path, "x").is_err(),
        "never overwrites a keyring"
    );
}

#[test]
fn refuses_world_readable_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    LocalKeyring::create(&path, "2026-01-01T00:00:00Z").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = LocalKeyring::load(&path).unwrap_err().to_string();
    assert!(err.contains("0600"), "{err}");
}

/// A version-1 keyring (no signing key) still unwraps; the first signature adds a key to
/// the file (mode 0600, version 2) and later loads sign with the same key.
#[test]
fn a_version_1_keyring_gains_a_signing_key_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let ring = LocalKeyring::create(&path, "2026-01-01T00:00:00Z").unwrap();
    let dek = DataKey::generate();
    let w = block(ring.wrap(&dek)).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["version"], "2");
    v.as_object_mut().unwrap().remove("signing_key");
    v["version"] = "1".into();
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let old = LocalKeyring::load(&path).unwrap();
    assert_eq!(
        block(old.signing_key()).unwrap(),
        None,
        "loading creates nothing"
    );
    assert_eq!(
        block(old.unwrap_key(dek.id(), &w)).unwrap().expose(),
        dek.expose()
    );
    let signed = block(old.sign(b"head")).unwrap();
    assert!(signed.public_key.verify(b"head", &signed.signature));
    assert!(!signed.public_key.verify(b"other", &signed.signature));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = LocalKeyring::load(&path).unwrap();
    assert_eq!(block(again.signing_key()).unwrap(), Some(signed.public_key));
    assert_eq!(
        block(again.sign(b"x")).unwrap().public_key,
        signed.public_key
    );
    assert_eq!(
        block(again.unwrap_key(dek.id(), &w)).unwrap().expose(),
        dek.expose(),
        "the KEKs are untouched"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"version\": \"2\""), "{text}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary left"
    );
}

#[test]
fn debug_and_errors_hold_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let ring = LocalKeyring::create(&path, "2026-01-01T00:00:00Z").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let material = file["keys"][0]["material"].as_str().unwrap().to_string();
    assert!(!format!("{ring:?}").contains(&material));
}

/// A keyring of a version this holdfast does not know, or a file of another kind, is refused
/// by name (and the keyring path is in the message).
#[test]
fn unknown_keyring_versions_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    LocalKeyring::create(&path, "2026-01-01T00:00:00Z").unwrap();
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, crate::format::altered(&good, "version", "4")).unwrap();
    let err = LocalKeyring::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("holdfast.keyring version 4 is not one this holdfast reads")
            && err.contains(&path.display().to_string()),
        "{err}"
    );
    std::fs::write(
        &path,
        crate::format::altered(&good, "format", "holdfast.head"),
    )
    .unwrap();
    let err = LocalKeyring::load(&path).unwrap_err().to_string();
    assert!(err.contains("\"holdfast.head\""), "{err}");
}
