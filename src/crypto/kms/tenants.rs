//! BYOK: a store's key services by key domain. [`Tenanted`] is the platform key service plus
//! the own key service of each tenant the store binds to one (`holdfast keys bind`). New
//! DEKs are wrapped by the platform key unless a caller asks [`Kms::tenant`] for a tenant's;
//! a wrapped DEK is unwrapped (and rewrapped) by the service whose KEK wrapped it, whatever
//! asks, so every reader follows the binding without knowing of it; a tenant's blind-index
//! key comes from its own service. An error of a tenant's service names the tenant.

use super::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// See the module docs.
#[derive(Debug)]
pub struct Tenanted {
    platform: Arc<dyn Kms>,
    /// The store's earlier platform KEKs (`keys migrate`): they unwrap what they wrapped; a
    /// rewrap or a new wrap goes to the platform's.
    previous: Vec<Arc<dyn Kms>>,
    /// Bound tenants' key services, by tenant id.
    tenants: BTreeMap<String, Arc<dyn Kms>>,
}

impl Tenanted {
    /// `platform` itself when the store has no other key service.
    pub fn wrap(
        platform: Arc<dyn Kms>,
        previous: Vec<Arc<dyn Kms>>,
        tenants: BTreeMap<String, Arc<dyn Kms>>,
    ) -> Arc<dyn Kms> {
        if tenants.is_empty() && previous.is_empty() {
            platform
        } else {
            Arc::new(Tenanted {
                platform,
                previous,
                tenants,
            })
        }
    }

    /// The service holding KEK `kek_id`, and the tenant it belongs to (`None`: the platform),
    /// for wrapping and rewrapping: an earlier platform KEK's keys go to the platform's.
    fn by_kek(&self, kek_id: &str) -> (Option<&str>, &Arc<dyn Kms>) {
        self.tenants
            .iter()
            .find(|(_, k)| k.kek_id() == kek_id)
            .map_or((None, &self.platform), |(t, k)| (Some(t.as_str()), k))
    }

    /// The service that unwraps what KEK `kek_id` wrapped.
    fn unwrapper(&self, kek_id: &str) -> (Option<&str>, &Arc<dyn Kms>) {
        match self.previous.iter().find(|k| k.kek_id() == kek_id) {
            Some(k) => (None, k),
            None => self.by_kek(kek_id),
        }
    }
}

/// `e`, naming `tenant` when the call was to a tenant's own key service.
fn named(tenant: Option<&str>, e: KmsError) -> KmsError {
    match tenant {
        Some(t) => KmsError::Tenant {
            tenant: t.to_string(),
            source: Box::new(e),
        },
        None => e,
    }
}

impl Kms for Tenanted {
    super::forward!(platform; describe, kek_id, wrap, sign, signing_key, info, rotate, retire);
    fn unwrap_key<'a>(
        &'a self,
        dek_id: &'a str,
        wrapped: &'a WrappedKey,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        let (tenant, kms) = self.unwrapper(&wrapped.kek_id);
        Box::pin(async move {
            kms.unwrap_key(dek_id, wrapped)
                .await
                .map_err(|e| named(tenant, e))
        })
    }
    fn index_key<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<IndexKey, KmsError>> {
        Box::pin(async move {
            match self.tenants.get(tenant) {
                Some(k) => k
                    .index_key(tenant)
                    .await
                    .map_err(|e| named(Some(tenant), e)),
                None => self.platform.index_key(tenant).await,
            }
        })
    }
    /// Each key by the service that wrapped it (one batch per service), in order.
    fn rewrap<'a>(
        &'a self,
        keys: &'a [(&'a str, &'a WrappedKey)],
    ) -> BoxFuture<'a, Result<Vec<WrappedKey>, KmsError>> {
        Box::pin(async move {
            let mut out: Vec<Option<WrappedKey>> = vec![None; keys.len()];
            let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (i, (_, w)) in keys.iter().enumerate() {
                groups.entry(w.kek_id.as_str()).or_default().push(i);
            }
            for (kek, idx) in groups {
                let (tenant, kms) = self.by_kek(kek);
                let part: Vec<(&str, &WrappedKey)> = idx.iter().map(|i| keys[*i]).collect();
                let done = kms.rewrap(&part).await.map_err(|e| named(tenant, e))?;
                for (i, w) in idx.into_iter().zip(done) {
                    out[i] = Some(w);
                }
            }
            Ok(out
                .into_iter()
                .map(|w| w.expect("every key rewrapped"))
                .collect())
        })
    }
    fn calls(&self) -> KmsCalls {
        let all = std::iter::once(&self.platform)
            .chain(&self.previous)
            .chain(self.tenants.values());
        all.map(|k| k.calls())
            .fold(KmsCalls::default(), |a, c| KmsCalls {
                wraps: a.wraps + c.wraps,
                unwraps: a.unwraps + c.unwraps,
                rewraps: a.rewraps + c.rewraps,
                signatures: a.signatures + c.signatures,
            })
    }
    fn tenant(&self, tenant: &str) -> Option<Arc<dyn Kms>> {
        self.tenants.get(tenant).cloned()
    }
    fn wrap_under<'a>(
        &'a self,
        dek: &'a DataKey,
        kek_id: &'a str,
    ) -> BoxFuture<'a, Result<WrappedKey, KmsError>> {
        let (tenant, kms) = self.by_kek(kek_id);
        Box::pin(async move { kms.wrap(dek).await.map_err(|e| named(tenant, e)) })
    }
    fn tenants(&self) -> Vec<(String, Arc<dyn Kms>)> {
        let all = self.tenants.iter();
        all.map(|(t, k)| (t.clone(), k.clone())).collect()
    }
}

/// The platform's blind-index keys from the store's index secret unwrapped through `inner`
/// (whichever of its key services wrapped it): while a store moves to a new platform KEK
/// (`keys migrate`), its index secret stays under the earlier one until `keys rewrap`.
pub struct IndexFrom {
    inner: Arc<dyn Kms>,
    secret: IndexSecret,
    cell: tokio::sync::OnceCell<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for IndexFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IndexFrom({:?})", self.inner)
    }
}

impl IndexFrom {
    pub fn wrap(inner: Arc<dyn Kms>, secret: IndexSecret) -> Arc<dyn Kms> {
        Arc::new(IndexFrom {
            inner,
            secret,
            cell: tokio::sync::OnceCell::new(),
        })
    }
}

impl Kms for IndexFrom {
    super::forward!(inner; describe, kek_id, wrap, unwrap_key, sign, signing_key, info, rotate, retire, rewrap, calls, tenant, wrap_under, tenants);
    fn index_key<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<IndexKey, KmsError>> {
        Box::pin(async move {
            if self.inner.tenant(tenant).is_some() {
                return self.inner.index_key(tenant).await;
            }
            let secret = self
                .cell
                .get_or_try_init(|| async {
                    let s = &self.secret;
                    let dek = self.inner.unwrap_key(&s.secret_id, &s.wrapped).await?;
                    Ok::<_, KmsError>(Zeroizing::new(*dek.expose()))
                })
                .await?;
            Ok(derive_index_key(secret, tenant))
        })
    }
}

/// A tenant's key service that cannot be reached (no way to reach it given, or it refused to
/// open): every call fails with `reason`, so the tenant's records wait or fail to decrypt
/// with a message that says why, and nothing of it is wrapped under any other key.
#[derive(Debug)]
pub struct Unavailable {
    pub kek_id: String,
    pub backend: String,
    pub reason: String,
}

impl Unavailable {
    fn error(&self) -> KmsError {
        KmsError::Backend {
            backend: self.backend.clone(),
            key: self.kek_id.clone(),
            problem: self.reason.clone(),
        }
    }
    fn fail<'a, T: Send + 'a>(&'a self) -> BoxFuture<'a, Result<T, KmsError>> {
        let e = self.error();
        Box::pin(async move { Err(e) })
    }
}

impl Kms for Unavailable {
    fn describe(&self) -> String {
        self.backend.clone()
    }
    fn kek_id(&self) -> &str {
        &self.kek_id
    }
    fn wrap<'a>(&'a self, _dek: &'a DataKey) -> BoxFuture<'a, Result<WrappedKey, KmsError>> {
        self.fail()
    }
    fn unwrap_key<'a>(
        &'a self,
        _dek_id: &'a str,
        _wrapped: &'a WrappedKey,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        self.fail()
    }
    fn index_key<'a>(&'a self, _tenant: &'a str) -> BoxFuture<'a, Result<IndexKey, KmsError>> {
        self.fail()
    }
    fn sign<'a>(&'a self, _message: &'a [u8]) -> BoxFuture<'a, Result<Signed, KmsError>> {
        self.fail()
    }
    fn signing_key(&self) -> BoxFuture<'_, Result<Option<PublicKey>, KmsError>> {
        self.fail()
    }
    fn info(&self) -> BoxFuture<'_, Result<KekInfo, KmsError>> {
        self.fail()
    }
    fn rotate(&self, _now: chrono::DateTime<chrono::Utc>) -> BoxFuture<'_, Result<u32, KmsError>> {
        self.fail()
    }
    fn retire(&self, _through: u32) -> BoxFuture<'_, Result<(), KmsError>> {
        self.fail()
    }
    fn rewrap<'a>(
        &'a self,
        _keys: &'a [(&'a str, &'a WrappedKey)],
    ) -> BoxFuture<'a, Result<Vec<WrappedKey>, KmsError>> {
        self.fail()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::block;

    fn ring(dir: &Path, name: &str) -> Arc<dyn Kms> {
        let r = LocalKeyring::create(&dir.join(name), "2026-01-01T00:00:00Z").unwrap();
        Arc::new(r)
    }

    /// A key wrapped by a tenant's service opens through the router and only there; the
    /// platform's does not open it; the tenant's index key is its service's; an error of the
    /// tenant's service names the tenant.
    #[test]
    fn routes_by_the_kek_that_wrapped_and_names_the_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, acme) = (ring(dir.path(), "p.json"), ring(dir.path(), "a.json"));
        let tenants = BTreeMap::from([("acme".to_string(), acme.clone())]);
        let kms = Tenanted::wrap(platform.clone(), Vec::new(), tenants);
        let dek = DataKey::generate();
        let w = block(kms.tenant("acme").unwrap().wrap(&dek)).unwrap();
        assert_eq!(w.kek_id, acme.kek_id());
        let back = block(kms.unwrap_key(dek.id(), &w)).unwrap();
        assert_eq!(back.expose(), dek.expose());
        assert!(block(platform.unwrap_key(dek.id(), &w)).is_err());
        let pw = block(kms.wrap(&dek)).unwrap();
        assert_eq!(pw.kek_id, platform.kek_id());
        assert!(block(acme.unwrap_key(dek.id(), &pw)).is_err());
        let ik = block(kms.index_key("acme")).unwrap();
        assert_eq!(*ik, *block(acme.index_key("acme")).unwrap());
        assert_ne!(*ik, *block(platform.index_key("acme")).unwrap());
        let mut bad = w.clone();
        bad.ciphertext[0] ^= 1;
        let e = block(kms.unwrap_key(dek.id(), &bad))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tenant `acme`"), "{e}");
        let both = [(dek.id(), &pw), (dek.id(), &w)];
        let re = block(kms.rewrap(&both)).unwrap();
        assert_eq!(
            (re[0].kek_id.as_str(), re[1].kek_id.as_str()),
            (platform.kek_id(), acme.kek_id())
        );
    }
}
