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
