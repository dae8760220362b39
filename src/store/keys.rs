//! Which key service a store's KEK lives in, and what the store keeps for it: the local
//! keyring (the default), a Transit key in OpenBao/Vault or an AWS KMS key, for which the
//! store also keeps its blind-index secret wrapped under that key (`keys/index/v<n>.json`),
//! so that every backend needs only wrap and unwrap. An AWS KMS store's heads are signed
//! with the local keyring's Ed25519 key (see `AwsKms::with_head_signer`).

use crate::clock::Clock;
use crate::crypto::kms::aws::{AwsKms, AwsKmsConfig};
use crate::crypto::kms::transit::{INDEX_SECRET_ID, Transit, TransitConfig, parse_kek_id};
use crate::crypto::kms::{IndexSecret, Kms, LocalKeyring, Unavailable};
use crate::error::{Error, Result};
use crate::lake::layout::IndexSecretPath;
use crate::storage::{Put, Store, StoreUrl};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Where the KEK of a store being opened is.
#[derive(Debug, Clone, Copy)]
pub enum Keys<'a> {
    /// The local keyring file (never inside the store).
    Local(&'a Path),
    /// A derived Transit key in OpenBao/Vault.
    Transit(&'a TransitConfig),
    /// An AWS KMS key, and the local keyring whose Ed25519 key signs the store's heads.
    AwsKms {
        cfg: &'a AwsKmsConfig,
        keyring: &'a Path,
    },
}

/// The key service `init` binds a new store to (a keyring is created when missing; a Transit
/// key must exist and be derived; an AWS KMS key must be an enabled symmetric key, and the
/// keyring that signs the heads is created when missing); whether a keyring was created.
pub(super) async fn for_init(
    keyring: &Path,
    remote: Remote<'_>,
    store: &StoreUrl,
    clock: &Arc<dyn Clock>,
) -> Result<(Arc<dyn Kms>, bool)> {
    let aws = match remote {
        Remote::Transit(cfg) => {
            let t = Transit::new(cfg)?;
            t.check_key().await?;
            return Ok((Arc::new(t), false));
        }
        Remote::AwsKms(cfg) => Some(AwsKms::connect(cfg).await?),
        Remote::None => None,
    };
    super::keyring_apart(keyring, store)?;
    let now = crate::clock::fmt_ts(clock.now());
    let (ring, created) = if keyring.exists() {
        (LocalKeyring::load(keyring)?, false)
    } else {
        (LocalKeyring::create(keyring, &now)?, true)
    };
    Ok(match aws {
        Some(k) => (Arc::new(k.with_head_signer(Arc::new(ring))), created),
        None => (Arc::new(ring), created),
    })
}

/// The key service `init` is asked to bind a store to, besides the local keyring.
#[derive(Debug, Clone, Copy)]
pub(super) enum Remote<'a> {
    None,
    Transit(&'a TransitConfig),
    AwsKms(&'a AwsKmsConfig),
}

/// The store's wrapped index secret, if any: version 1, the one `init` writes create-only.
/// Only that version is read: a later version found by listing would be whatever a writer of
/// the store put there (nothing rotates the secret yet, and the signed head does not cover it).
pub(crate) async fn index_secret(store: &Store) -> Result<Option<IndexSecret>> {
    let path = IndexSecretPath::new(1).to_path();
    let Some(bytes) = store.get_opt(&path).await? else {
        return Ok(None);
    };
    IndexSecret::decode(&bytes).map(Some).map_err(|e| {
        Error::Unusable(format!(
            "{}: unreadable index secret {path}: {e}",
            store.describe()
        ))
    })
}

/// Writes a Transit or AWS KMS store's first wrapped index secret (create-only, so a rerun of `init` or
/// two at once leave one); nothing when the store has one.
pub(super) async fn ensure_index_secret(store: &Store, kms: &dyn Kms, now: String) -> Result<()> {
    if index_secret(store).await?.is_some() {
        return Ok(());
    }
    let record = IndexSecret::generate(kms, INDEX_SECRET_ID, now).await?;
    let path = IndexSecretPath::new(1).to_path();
    match store.put_new(&path, record.encode()).await? {
        Put::Created | Put::AlreadyExists => Ok(()),
    }
}

/// The store's KMS as `keys` says where it is, checked against the KEK the store's marker
/// names (and, for a keyring, that it is not inside the store).
pub(super) async fn open_kms(
    store: &Store,
    url: &StoreUrl,
    marker_kek: &str,
    keys: Keys<'_>,
    newer: &crate::keys::Newer,
) -> Result<Arc<dyn Kms>> {
    let mismatch = |holds: String| {
        Error::conflict(
            format!(
                "store {} needs KEK {marker_kek}, but {holds}",
                store.describe()
            ),
            false,
        )
    };
    match keys {
        Keys::Local(keyring) => {
            if let Some((mount, key)) = parse_kek_id(marker_kek) {
                return Err(mismatch(format!(
                    "no Transit key was configured: set BAO_ADDR (or VAULT_ADDR) and BAO_TOKEN (or VAULT_TOKEN), or pass a pipeline whose [kms] has backend = \"transit\", mount = \"{mount}\", key = \"{key}\""
                )));
            }
            if crate::crypto::kms::aws::is_key_arn(marker_kek) {
                return Err(mismatch(
                    "the local keyring was given: open it with the AWS KMS key (a pipeline whose [kms] has backend = \"aws-kms\")".into(),
                ));
            }
            super::keyring_apart(keyring, url)?;
            let ring = LocalKeyring::load(keyring)?;
            if ring.kek_id() != marker_kek {
                return Err(mismatch(format!(
                    "keyring {} holds {}",
                    keyring.display(),
                    ring.kek_id()
                )));
            }
            Ok(Arc::new(ring))
        }
        Keys::Transit(cfg) => {
            if cfg.kek_id() != marker_kek {
                return Err(mismatch(format!(
                    "the configuration names Transit key {}",
                    cfg.kek_id()
                )));
            }
            let mut t = Transit::new(cfg)?;
            if let Some(mut s) = index_secret(store).await? {
                // rewrapped (keys rewrap): the newest wrapping of the same secret
                s.wrapped = newer.effective(&s.secret_id, &s.wrapped).clone();
                t = t.with_index_secret(s);
            }
            Ok(Arc::new(t))
        }
        Keys::AwsKms { cfg, keyring } => {
            let mut k = AwsKms::connect(cfg).await?;
            if k.kek_id() != marker_kek {
                return Err(mismatch(format!(
                    "the configuration names AWS KMS key {} ({})",
                    cfg.key,
                    k.kek_id()
                )));
            }
            super::keyring_apart(keyring, url)?;
            let ring = LocalKeyring::load(keyring).map_err(|e| {
                Error::Unusable(format!(
                    "store {} signs its heads with the local keyring's Ed25519 key (its KEK is in AWS KMS), and that keyring does not open: {e}; pass the keyring init used (--keyring or HOLDFAST_KEYRING)",
                    store.describe()
                ))
            })?;
            if let Some(mut s) = index_secret(store).await? {
                s.wrapped = newer.effective(&s.secret_id, &s.wrapped).clone();
                k = k.with_index_secret(s);
            }
            Ok(Arc::new(k.with_head_signer(Arc::new(ring))))
        }
    }
}

/// How to reach a tenant's own key service: a pipeline's `[kms.tenants.T]`, else what the
/// store's binding names (reached as the store's own key is), or why it cannot be reached.
#[derive(Debug, Clone)]
pub enum TenantKeys {
    Transit(TransitConfig),
    AwsKms(AwsKmsConfig),
    Unreachable(String),
}

/// The key service of every tenant the store binds to a key of its own, as `given` says how to
/// reach each; one that cannot be reached stands as [`Unavailable`] (its records wait or fail
/// to decrypt, naming it). A way given that reaches another key than the binding's is refused,
/// and so is one given for a tenant the store does not bind.
pub(super) async fn open_tenants(
    store: &Store,
    given: &BTreeMap<String, TenantKeys>,
    newer: &crate::keys::Newer,
) -> Result<BTreeMap<String, Arc<dyn Kms>>> {
    let bound = crate::keys::tenants::bindings(store).await?;
    if let Some(t) = given.keys().find(|t| !bound.contains_key(*t)) {
        return Err(Error::conflict(
            format!(
                "the pipeline names a key for tenant `{t}`, but store {} does not bind `{t}` to a key of its own: run `holdfast keys bind --tenant {t}` and have a second administrator approve it",
                store.describe()
            ),
            false,
        ));
    }
    let mut out = BTreeMap::new();
    for (tenant, (_, b)) in bound {
        let secret = crate::keys::tenants::index_secret(store, &tenant)
            .await?
            .map(|mut s| {
                s.wrapped = newer.effective(&s.secret_id, &s.wrapped).clone();
                s
            });
        let unavailable = |reason: String| -> Arc<dyn Kms> {
            Arc::new(Unavailable {
                kek_id: b.kek_id.clone(),
                backend: format!("the key service of `{}`", b.kek_id),
                reason,
            })
        };
        let disagrees = |names: String| {
            Error::conflict(
                format!(
                    "store {} binds tenant `{tenant}` to KEK {}, but the pipeline names {names}; a change of a tenant's key is `holdfast keys bind`, approved by a second administrator",
                    store.describe(),
                    b.kek_id
                ),
                false,
            )
        };
        let kms: Arc<dyn Kms> = match given.get(&tenant) {
            None => unavailable(format!(
                "no way to reach it was given: pass the pipeline whose [kms.tenants.{tenant}] names it"
            )),
            Some(TenantKeys::Unreachable(why)) => unavailable(why.clone()),
            Some(TenantKeys::Transit(cfg)) => {
                if cfg.kek_id() != b.kek_id {
                    return Err(disagrees(cfg.kek_id()));
                }
                let mut t = Transit::new(cfg)?.for_tenant(&tenant);
                if let Some(s) = secret {
                    t = t.with_index_secret(s);
                }
                Arc::new(t)
            }
            Some(TenantKeys::AwsKms(cfg)) => match AwsKms::connect(cfg).await {
                Ok(k) if k.kek_id() != b.kek_id => {
                    return Err(disagrees(format!("{} ({})", cfg.key, k.kek_id())));
                }
                Ok(k) => {
                    let mut k = k.for_tenant(&tenant);
                    if let Some(s) = secret {
                        k = k.with_index_secret(s);
                    }
                    Arc::new(k)
                }
                Err(e) => unavailable(e.to_string()),
            },
        };
        let kms = crate::crypto::kms::Caching::wrap(crate::crypto::kms::Counting::wrap(kms));
        out.insert(tenant, kms);
    }
    Ok(out)
}

/// Tenant `tenant`'s own key service as `how` reaches it, without its index secret (for
/// `keys bind`, which makes it).
pub async fn open_tenant_key(tenant: &str, how: TenantKeys) -> Result<Arc<dyn Kms>> {
    Ok(match how {
        TenantKeys::Transit(cfg) => {
            let t = Transit::new(&cfg)?;
            t.check_key().await?;
            Arc::new(t.for_tenant(tenant))
        }
        TenantKeys::AwsKms(cfg) => Arc::new(AwsKms::connect(&cfg).await?.for_tenant(tenant)),
        TenantKeys::Unreachable(why) => {
            return Err(Error::Usage(format!(
                "tenant `{tenant}`'s own key cannot be reached: {why}"
            )));
        }
    })
}

/// The store's earlier platform KEKs (before `keys migrate`), each reached as the current one
/// is (AWS KMS: the same endpoint and credentials, the key by its ARN), so that DEKs not yet
/// rewrapped still unwrap; one that does not open stands as [`Unavailable`].
pub(super) async fn open_previous(keys: Keys<'_>, previous: &[String]) -> Vec<Arc<dyn Kms>> {
    let mut out = Vec::new();
    for kek in previous {
        let kms: Arc<dyn Kms> = match keys {
            Keys::AwsKms { cfg, .. } => {
                let cfg = AwsKmsConfig {
                    key: kek.clone(),
                    ..cfg.clone()
                };
                match AwsKms::connect(&cfg).await {
                    Ok(k) => Arc::new(k),
                    Err(e) => Arc::new(Unavailable {
                        kek_id: kek.clone(),
                        backend: "AWS KMS".into(),
                        reason: e.to_string(),
                    }),
                }
            }
            _ => Arc::new(Unavailable {
                kek_id: kek.clone(),
                backend: format!("the key service of `{kek}`"),
                reason: "an earlier platform key is reached only through AWS KMS".into(),
            }),
        };
        out.push(crate::crypto::kms::Caching::wrap(
            crate::crypto::kms::Counting::wrap(kms),
        ));
    }
    out
}
