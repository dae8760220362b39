//! Newer wrappings of DEKs whose home object is never rewritten, and the [`Kms`] that uses
//! them: [`Overlaid::unwrap_key`] opens a DEK under its newest wrapping when the store holds
//! one, so every reader of landing segments, quarantine entries and the index secret follows
//! a rewrap without knowing of it. A newer wrapping is bound to its DEK id like any other
//! (Transit context, keyring AAD): one copied under another DEK's name does not open.

use super::format::Rewrapped;
use crate::crypto::DataKey;
use crate::crypto::kms::{Kms, KmsError, WrappedKey};
use crate::error::{Error, Result};
use crate::lake::layout::{REWRAPPED, RewrappedKeyPath};
use crate::storage::Store;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;

/// The newest stored rewrapping of each DEK that has one.
#[derive(Debug, Clone, Default)]
pub struct Newer(pub HashMap<String, (u64, Rewrapped)>);

impl Newer {
    /// Reads every rewrapped key of the store (one listing, then the newest of each DEK).
    pub async fn load(store: &Store) -> Result<Self> {
        let mut newest: HashMap<String, RewrappedKeyPath> = HashMap::new();
        for meta in store.list(REWRAPPED).await? {
            let Some(p) = RewrappedKeyPath::parse(&meta.location) else {
                continue;
            };
            match newest.get(p.dek_id()) {
                Some(have) if have.sequence >= p.sequence => {}
                _ => {
                    newest.insert(p.dek_id().to_string(), p);
                }
            }
        }
        let reads = newest.into_values().map(|p| async move {
            let path = p.to_path();
            let bytes = store.get(&path).await?;
            let r = Rewrapped::decode(&bytes).map_err(|e| {
                Error::Unusable(format!(
                    "{}: unreadable rewrapped key {path}: {e}",
                    store.describe()
                ))
            })?;
            if r.dek_id != p.dek_id() {
                return Err(Error::Unusable(format!(
                    "{}: {path} holds the key of {}",
                    store.describe(),
                    r.dek_id
                )));
            }
            Ok::<_, Error>((r.dek_id.clone(), (p.sequence, r)))
        });
        let all = futures::future::try_join_all(reads).await?;
        Ok(Newer(all.into_iter().collect()))
    }

    /// The wrapping to use for `dek_id` stored as `stored`: the newer one when there is one.
    pub fn effective<'a>(&'a self, dek_id: &str, stored: &'a WrappedKey) -> &'a WrappedKey {
        match self.0.get(dek_id) {
            Some((_, r)) => &r.wrapped,
            None => stored,
        }
    }

    /// The sequence the next rewrapping of `dek_id` gets.
    pub fn next_sequence(&self, dek_id: &str) -> u64 {
        self.0.get(dek_id).map_or(1, |(s, _)| s + 1)
    }
}

/// A [`Kms`] that unwraps each DEK under its newest wrapping (see the module docs).
#[derive(Debug)]
pub struct Overlaid {
    inner: Arc<dyn Kms>,
    newer: Newer,
}

impl Overlaid {
    /// `inner` itself when the store holds no rewrapped key.
    pub fn wrap(inner: Arc<dyn Kms>, newer: Newer) -> Arc<dyn Kms> {
        if newer.0.is_empty() {
            inner
        } else {
            Arc::new(Overlaid { inner, newer })
        }
    }
}

impl Kms for Overlaid {
    crate::crypto::kms::forward!(inner; describe, kek_id, wrap, index_key, sign, signing_key, info, rotate, retire, rewrap, calls, tenant, wrap_under, tenants);
    fn unwrap_key<'a>(
        &'a self,
        dek_id: &'a str,
        wrapped: &'a WrappedKey,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        self.inner
            .unwrap_key(dek_id, self.newer.effective(dek_id, wrapped))
    }
}
