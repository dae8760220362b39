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
