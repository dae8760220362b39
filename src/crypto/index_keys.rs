//! The one cache of tenants' blind-index keys: each key is asked of the key service once per
//! cache (a batch worker, a query session, a verify run) and zeroized when the cache goes.

use super::BLIND_INDEX_BYTES;
use super::kms::{IndexKey, Kms, KmsError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Tenants' blind-index keys, fetched on first use.
#[derive(Default)]
pub struct IndexKeyCache(Mutex<HashMap<String, Arc<IndexKey>>>);

impl std::fmt::Debug for IndexKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |m| m.len());
        write!(f, "IndexKeyCache({n} tenant(s))")
    }
}

impl IndexKeyCache {
    /// The tenant's index key, from the cache or the key service.
    pub async fn key(&self, kms: &dyn Kms, tenant: &str) -> Result<Arc<IndexKey>, KmsError> {
        if let Some(k) = self.0.lock().expect("index key cache").get(tenant) {
            return Ok(k.clone());
        }
        let k = Arc::new(kms.index_key(tenant).await?);
        let mut m = self.0.lock().expect("index key cache");
        Ok(m.entry(tenant.to_string()).or_insert(k).clone())
    }

    /// The blind index of one value for `tenant`.
    pub async fn blind_index(
        &self,
        kms: &dyn Kms,
        tenant: &str,
        value: &str,
    ) -> Result<[u8; BLIND_INDEX_BYTES], KmsError> {
        let key = self.key(kms, tenant).await?;
        Ok(super::blind_index(&key, value))
    }

    /// The blind indexes of a record's addresses, sorted and without duplicates (as stored);
    /// no key is fetched for a record without addresses.
    pub async fn blind_indexes(
        &self,
        kms: &dyn Kms,
        tenant: &str,
        addresses: &[String],
    ) -> Result<Vec<[u8; BLIND_INDEX_BYTES]>, KmsError> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key(kms, tenant).await?;
        let mut out: Vec<_> = addresses
            .iter()
            .map(|a| super::blind_index(&key, a))
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::kms::LocalKeyring;

    /// One key-service call per tenant, whatever the number of values; the indexes are the
    /// ones `blind_index` gives under that tenant's key.
    #[test]
    fn each_tenants_key_is_fetched_once() {
        let dir = tempfile::tempdir().unwrap();
        let ring =
            LocalKeyring::create(&dir.path().join("keyring.json"), "2026-01-01T00:00:00Z").unwrap();
        let cache = IndexKeyCache::default();
        let run = |t: &str, v: &str| futures::executor::block_on(cache.blind_index(&ring, t, v));
        let a = run("t1", "+15550001").unwrap();
        let b = run("t2", "+15550001").unwrap();
        assert_ne!(a, b, "tenants' indexes differ");
        assert_eq!(run("t1", "+15550001").unwrap(), a);
        assert_eq!(cache.0.lock().unwrap().len(), 2);
        let direct = futures::executor::block_on(ring.index_key("t1")).unwrap();
        assert_eq!(a, crate::crypto::blind_index(&direct, "+15550001"));
        let many = futures::executor::block_on(cache.blind_indexes(
            &ring,
            "t1",
            &["+15550001".into(), "+15550002".into(), "+15550001".into()],
        ))
        .unwrap();
        assert_eq!(many.len(), 2);
        assert!(many.windows(2).all(|w| w[0] < w[1]));
    }
}
