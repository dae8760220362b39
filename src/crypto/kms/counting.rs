//! A [`Kms`] that counts the calls made through it, for the audit entry of the batch, query
//! or verification that made them (one entry per command, not one per key).

use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Calls a command made to its key service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KmsCalls {
    /// DEKs wrapped.
    pub wraps: u64,
    /// DEKs (and index secrets) unwrapped.
    pub unwraps: u64,
    /// DEKs rewrapped.
    pub rewraps: u64,
    /// Store heads signed.
    pub signatures: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn Kms>,
    wraps: AtomicU64,
    unwraps: AtomicU64,
    rewraps: AtomicU64,
    signatures: AtomicU64,
}

impl KmsCalls {
    /// The calls made since `before` was read.
    pub fn since(self, before: KmsCalls) -> KmsCalls {
        KmsCalls {
            wraps: self.wraps.saturating_sub(before.wraps),
            unwraps: self.unwraps.saturating_sub(before.unwraps),
            rewraps: self.rewraps.saturating_sub(before.rewraps),
            signatures: self.signatures.saturating_sub(before.signatures),
        }
    }
}

impl Counting {
    pub fn wrap(inner: Arc<dyn Kms>) -> Arc<dyn Kms> {
        Arc::new(Counting {
            inner,
            wraps: AtomicU64::new(0),
            unwraps: AtomicU64::new(0),
            rewraps: AtomicU64::new(0),
            signatures: AtomicU64::new(0),
        })
    }
}

impl Kms for Counting {
    super::forward!(inner; describe, kek_id, index_key, signing_key, info, rotate, retire);
    fn wrap<'a>(&'a self, dek: &'a DataKey) -> BoxFuture<'a, Result<WrappedKey, KmsError>> {
        self.wraps.fetch_add(1, Relaxed);
        self.inner.wrap(dek)
    }
    fn unwrap_key<'a>(
        &'a self,
        dek_id: &'a str,
        wrapped: &'a WrappedKey,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        self.unwraps.fetch_add(1, Relaxed);
        self.inner.unwrap_key(dek_id, wrapped)
    }
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Signed, KmsError>> {
        self.signatures.fetch_add(1, Relaxed);
        self.inner.sign(message)
    }
    fn rewrap<'a>(
        &'a self,
        keys: &'a [(&'a str, &'a WrappedKey)],
    ) -> BoxFuture<'a, Result<Vec<WrappedKey>, KmsError>> {
        self.rewraps.fetch_add(keys.len() as u64, Relaxed);
        self.inner.rewrap(keys)
    }
    fn calls(&self) -> KmsCalls {
        KmsCalls {
            wraps: self.wraps.load(Relaxed),
            unwraps: self.unwraps.load(Relaxed),
            rewraps: self.rewraps.load(Relaxed),
            signatures: self.signatures.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::block;

    #[test]
    fn counts_each_kind_of_call() {
        let dir = tempfile::tempdir().unwrap();
        let ring = LocalKeyring::create(&dir.path().join("k.json"), "2026-01-01T00:00:00Z");
        let kms = Counting::wrap(Arc::new(ring.unwrap()));
        let deks: Vec<DataKey> = (0..3).map(|_| DataKey::generate()).collect();
        let wrapped: Vec<WrappedKey> = deks.iter().map(|d| block(kms.wrap(d)).unwrap()).collect();
        block(kms.unwrap_key(deks[0].id(), &wrapped[0])).unwrap();
        let pairs: Vec<(&str, &WrappedKey)> = deks.iter().map(|d| d.id()).zip(&wrapped).collect();
        block(kms.rewrap(&pairs)).unwrap();
        block(kms.sign(b"head")).unwrap();
        let want = KmsCalls {
            wraps: 3,
            unwraps: 1,
            rewraps: 3,
            signatures: 1,
        };
        assert_eq!(kms.calls(), want);
    }
}
