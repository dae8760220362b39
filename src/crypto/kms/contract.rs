//! The contract every [`Kms`] backend must pass.
use super::*;

pub(crate) async fn round_trip(kms: &dyn Kms) {
    let dek = DataKey::generate();
    let w = kms.wrap(&dek).await.unwrap();
    let back = kms.unwrap_key(dek.id(), &w).await.unwrap();
    assert_eq!(back.expose(), dek.expose());
    assert_eq!(back.id(), dek.id());
}

pub(crate) async fn rejects_altered_or_moved(kms: &dyn Kms) {
    let dek = DataKey::generate();
    let w = kms.wrap(&dek).await.unwrap();
    assert!(matches!(
        kms.unwrap_key("dek-other", &w).await,
        Err(KmsError::InvalidCiphertext { .. })
    ));
    let mut bad = w.clone();
    let n = bad.ciphertext.len();
    bad.ciphertext[n - 1] ^= 0x01;
    assert!(matches!(
        kms.unwrap_key(dek.id(), &bad).await,
        Err(KmsError::InvalidCiphertext { .. })
    ));
}

/// A rotation makes a new primary version; rewrap moves keys of the old one to it, in order,
/// and refuses (naming the DEK) a key altered or presented under another id.
pub(crate) async fn rotates_and_rewraps(kms: &dyn Kms, now: chrono::DateTime<chrono::Utc>) {
    let before = kms.info().await.unwrap();
    assert_eq!(before.kek_id, kms.kek_id());
    assert!(before.primary_created_at().is_some(), "{before:?}");
    let deks: Vec<DataKey> = (0..3).map(|_| DataKey::generate()).collect();
    let mut wrapped = Vec::new();
    for d in &deks {
        let w = kms.wrap(d).await.unwrap();
        assert_eq!(w.kek_version, before.primary);
        wrapped.push(w);
    }
    let v = kms.rotate(now).await.unwrap();
    assert_eq!(v, before.primary + 1);
    let after = kms.info().await.unwrap();
    assert_eq!(after.primary, v);
    let listed: Vec<u32> = after.versions.iter().map(|k| k.version).collect();
    assert!(
        listed.contains(&before.primary) && listed.contains(&v),
        "{after:?}"
    );
    assert_eq!(kms.wrap(&deks[0]).await.unwrap().kek_version, v);
    let pairs: Vec<(&str, &WrappedKey)> = deks.iter().map(|d| d.id()).zip(&wrapped).collect();
    let moved = kms.rewrap(&pairs).await.unwrap();
    assert_eq!(moved.len(), deks.len());
    for ((d, w), m) in deks.iter().zip(&wrapped).zip(&moved) {
        assert_eq!((m.kek_version, m.kek_id.as_str()), (v, kms.kek_id()));
        assert_ne!(m.ciphertext, w.ciphertext);
        assert_eq!(
            kms.unwrap_key(d.id(), m).await.unwrap().expose(),
            d.expose()
        );
        // the old wrapping still opens until its version is retired
        assert_eq!(
            kms.unwrap_key(d.id(), w).await.unwrap().expose(),
            d.expose()
        );
    }
    // one altered key among good ones: the error names it
    let mut bad = wrapped[1].clone();
    let n = bad.ciphertext.len();
    bad.ciphertext[n - 2] ^= 0x01;
    let mixed = [pairs[0], (deks[1].id(), &bad), pairs[2]];
    match kms.rewrap(&mixed).await {
        Err(KmsError::InvalidCiphertext { dek_id, .. }) => assert_eq!(dek_id, deks[1].id()),
        other => panic!("an altered key was rewrapped: {other:?}"),
    }
    let moved_id = [("dek-other", &wrapped[0])];
    assert!(matches!(
        kms.rewrap(&moved_id).await,
        Err(KmsError::InvalidCiphertext { .. })
    ));
}

/// After [`rotates_and_rewraps`]: retiring the old version stops unwraps under it (a clear
/// error), leaves the new one working, and the primary version cannot be retired.
pub(crate) async fn retires_old_versions(kms: &dyn Kms) {
    let info = kms.info().await.unwrap();
    let old_dek = DataKey::generate();
    let mut old = kms.wrap(&old_dek).await.unwrap();
    assert_eq!(old.kek_version, info.primary);
    let now = "2027-06-01T00:00:00Z".parse().expect("a time");
    let v = kms.rotate(now).await.unwrap();
    let pairs = [(old_dek.id(), &old)];
    let moved = kms.rewrap(&pairs).await.unwrap().remove(0);
    kms.retire(v - 1).await.unwrap();
    assert_eq!(kms.info().await.unwrap().min_decryption_version, v);
    match kms.unwrap_key(old_dek.id(), &old).await {
        Err(KmsError::Retired { version, min, .. }) => assert_eq!((version, min), (v - 1, v)),
        other => panic!("a retired version still unwraps: {other:?}"),
    }
    let back = kms.unwrap_key(old_dek.id(), &moved).await.unwrap();
    assert_eq!(back.expose(), old_dek.expose());
    assert!(
        kms.retire(v).await.is_err(),
        "the primary version was retired"
    );
    // retiring again, or an older version, changes nothing
    kms.retire(v - 1).await.unwrap();
    old.kek_version = 1;
    assert!(kms.unwrap_key(old_dek.id(), &old).await.is_err());
    assert_eq!(kms.info().await.unwrap().min_decryption_version, v);
}
