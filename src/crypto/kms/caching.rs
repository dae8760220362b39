//! A [`Kms`] that keeps the DEKs it unwrapped, bounded in count and age
//! ([`crate::crypto::cache::KeyCache`]), so a long-lived session (`holdfast sql`, a server)
//! asks the key service once per DEK, not once per statement. An entry is keyed by the DEK id
//! and the exact wrapped bytes that opened it: another wrapping, or an altered one, goes to
//! the backend. Evicted keys are dropped, and [`DataKey`] zeroizes itself on drop. A DEK under
//! a version retired meanwhile stays usable until its entry ages out (at most
//! [`crate::crypto::cache::DEFAULT_MAX_AGE`]).

use super::*;
use crate::crypto::cache::KeyCache;
use std::sync::{Arc, Mutex};

/// See the module docs.
pub struct Caching {
    inner: Arc<dyn Kms>,
    keys: Mutex<KeyCache<DataKey>>,
}

impl std::fmt::Debug for Caching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Caching({:?})", self.inner)
    }
}

impl Caching {
    pub fn wrap(inner: Arc<dyn Kms>) -> Arc<dyn Kms> {
        Arc::new(Caching {
            inner,
            keys: Mutex::new(KeyCache::default()),
        })
    }
}

/// The cache key of a wrapped DEK: its id, KEK and a hash of the wrapped bytes.
fn slot(dek_id: &str, w: &WrappedKey) -> String {
    let h = crate::crypto::sha256(&w.ciphertext);
    format!(
        "{dek_id}/{}/{}/{}",
        w.kek_id,
        w.kek_version,
        hex::encode(&h[..16])
    )
}

impl Kms for Caching {
    super::forward!(inner; describe, kek_id, wrap, index_key, sign, signing_key, info, rotate, rewrap, calls);
    fn unwrap_key<'a>(
        &'a self,
        dek_id: &'a str,
        wrapped: &'a WrappedKey,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        Box::pin(async move {
            let slot = slot(dek_id, wrapped);
            if let Some(k) = self.keys.lock().expect("key cache").get(&slot) {
                return Ok(k);
            }
            let k = self.inner.unwrap_key(dek_id, wrapped).await?;
            self.keys
                .lock()
                .expect("key cache")
                .insert(&slot, k.clone());
            Ok(k)
        })
    }
    fn retire(&self, through: u32) -> BoxFuture<'_, Result<(), KmsError>> {
        Box::pin(async move {
            // nothing of the retired versions is served from here any more
            *self.keys.lock().expect("key cache") = KeyCache::default();
            self.inner.retire(through).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::block;

    #[test]
    fn a_dek_is_unwrapped_once_and_only_for_the_same_wrapping() {
        let dir = tempfile::tempdir().unwrap();
        let ring = LocalKeyring::create(&dir.path().join("k.json"), "2026-01-01T00:00:00Z");
        let counted = Counting::wrap(Arc::new(ring.unwrap()));
        let kms = Caching::wrap(counted.clone());
        let dek = DataKey::generate();
        let w = block(kms.wrap(&dek)).unwrap();
        for _ in 0..3 {
            assert_eq!(
                block(kms.unwrap_key(dek.id(), &w)).unwrap().expose(),
                dek.expose()
            );
        }
        assert_eq!(counted.calls().unwraps, 1);
        // an altered wrapping is not served from the cache
        let mut bad = w.clone();
        bad.ciphertext[0] ^= 1;
        assert!(block(kms.unwrap_key(dek.id(), &bad)).is_err());
        assert!(block(kms.unwrap_key("dek-other", &w)).is_err());
        assert_eq!(counted.calls().unwraps, 3);
    }
}
