//! Which key service a command uses: the pipeline's `[kms]` when the command has a pipeline,
//! else what the store's marker names (a `transit:` KEK is reached through the environment,
//! as the `bao` and `vault` CLIs are; an AWS KMS key ARN through the AWS SDK's own chains).
//! The Transit token is read here, from `BAO_TOKEN` or `VAULT_TOKEN` only, and handed down;
//! it is never printed. AWS credentials are never read here: the SDK takes them from the AWS
//! credential chain, and its endpoint from `AWS_ENDPOINT_URL`.

use super::*;
use crate::config::{KmsBackend, KmsConfig};
use crate::crypto::kms::aws::{AwsKmsConfig, is_key_arn};
use crate::crypto::kms::transit::{AppRole, Token, TransitConfig, parse_kek_id};
use crate::store::{Keys, TenantKeys};
use std::collections::BTreeMap;

/// A key service other than the local keyring, as a pipeline or a store's marker names it.
#[derive(Debug, Clone)]
pub(super) enum Remote {
    Transit(TransitConfig),
    AwsKms(AwsKmsConfig),
}

impl Remote {
    pub(super) fn transit(&self) -> Option<&TransitConfig> {
        match self {
            Remote::Transit(t) => Some(t),
            Remote::AwsKms(_) => None,
        }
    }
    pub(super) fn aws_kms(&self) -> Option<&AwsKmsConfig> {
        match self {
            Remote::AwsKms(a) => Some(a),
            Remote::Transit(_) => None,
        }
    }
}

/// The first of `names` set (and not empty) in the environment.
fn env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        files::var_os(n)
            .and_then(|v| v.into_string().ok())
            .filter(|v| !v.is_empty())
    })
}

/// A Transit configuration for `mount`/`key`: the address, namespace and CA file from the
/// pipeline when it names them, else from the environment; the token from the environment.
fn transit(
    mount: &str,
    key: &str,
    from_file: Option<&KmsConfig>,
    why: &str,
) -> Result<TransitConfig> {
    let address = from_file
        .and_then(|k| k.address.clone())
        .or_else(|| env(&["BAO_ADDR", "VAULT_ADDR"]))
        .ok_or_else(|| {
            Error::Usage(format!(
                "{why}: set the Transit server's address ([kms] address, BAO_ADDR or VAULT_ADDR)"
            ))
        })?;
    let approle = match (
        env(&["BAO_ROLE_ID", "VAULT_ROLE_ID"]),
        env(&["BAO_SECRET_ID", "VAULT_SECRET_ID"]),
    ) {
        (Some(role_id), Some(secret_id)) => Some(AppRole {
            role_id,
            secret_id: Token::new(secret_id),
            mount: env(&["BAO_APPROLE_MOUNT", "VAULT_APPROLE_MOUNT"]).unwrap_or("approle".into()),
        }),
        _ => None,
    };
    let token = match (env(&["BAO_TOKEN", "VAULT_TOKEN"]), &approle) {
        (Some(t), _) => t,
        (None, Some(_)) => String::new(),
        (None, None) => {
            return Err(Error::Usage(format!(
                "{why}: set BAO_TOKEN or VAULT_TOKEN, or BAO_ROLE_ID and BAO_SECRET_ID for an AppRole login (credentials are read only from the environment)"
            )));
        }
    };
    let mut cfg = TransitConfig::new(address, mount.into(), key.into(), Token::new(token));
    // a token given wins over AppRole credentials
    cfg.approle = approle.filter(|_| cfg.token_is_empty());
    cfg.namespace = from_file
        .and_then(|k| k.namespace.clone())
        .or_else(|| env(&["BAO_NAMESPACE", "VAULT_NAMESPACE"]));
    cfg.ca_file = from_file
        .and_then(|k| k.ca_file.clone())
        .or_else(|| env(&["BAO_CACERT", "VAULT_CACERT"]).map(PathBuf::from));
    Ok(cfg)
}

/// The key service a pipeline's `[kms]` asks for (`None`: the local keyring).
pub(super) fn remote_of(kms: &KmsConfig) -> Result<Option<Remote>> {
    match kms.backend {
        KmsBackend::Local => Ok(None),
        KmsBackend::Transit => {
            let key = kms.key.as_deref().unwrap_or_default();
            transit(&kms.mount, key, Some(kms), "[kms] backend = \"transit\"")
                .map(|t| Some(Remote::Transit(t)))
        }
        KmsBackend::AwsKms => {
            let mut cfg = AwsKmsConfig::new(kms.key.clone().unwrap_or_default());
            cfg.region = kms.region.clone();
            Ok(Some(Remote::AwsKms(cfg)))
        }
    }
}

/// Opens the store with the key service the pipeline's `[kms]` names or, without one, the
/// one the store's marker names.
pub(super) async fn open_for(
    s: &StoreArgs,
    kms: Option<&KmsConfig>,
) -> Result<(Store, Arc<dyn Kms>)> {
    open_with(s, kms, None).await
}

async fn open_with(
    s: &StoreArgs,
    kms: Option<&KmsConfig>,
    skip: Option<&str>,
) -> Result<(Store, Arc<dyn Kms>)> {
    let remote = match kms {
        Some(k) => remote_of(k)?,
        None => {
            let store = crate::store::open_unkeyed(&s.store).await?;
            // the platform KEK in force (the marker's, or the newest `keys migrate`)
            let current = crate::keys::platform::keks(&store).await?.current;
            match parse_kek_id(&current) {
                Some((mount, key)) => {
                    let why = format!(
                        "store {} keeps its KEK in OpenBao/Vault Transit ({})",
                        store.describe(),
                        current
                    );
                    Some(Remote::Transit(transit(mount, key, None, &why)?))
                }
                // the ARN names the region; credentials and endpoint come from the SDK
                None if is_key_arn(&current) => Some(Remote::AwsKms(AwsKmsConfig::new(current))),
                None => None,
            }
        }
    };
    let keyring = keyring_of(s)?;
    let keys = match &remote {
        Some(Remote::Transit(t)) => Keys::Transit(t),
        Some(Remote::AwsKms(cfg)) => Keys::AwsKms {
            cfg,
            keyring: &keyring,
        },
        None => Keys::Local(&keyring),
    };
    let tenants = tenant_keys(s, kms, skip).await?;
    crate::store::open_keys(&s.store, keys, &tenants).await
}

/// Opens the store as [`open_for`] does, leaving tenant `tenant` out (the one a `keys bind`
/// names, which the store does not bind yet).
pub(super) async fn open_skipping(
    s: &StoreArgs,
    kms: Option<&KmsConfig>,
    tenant: &str,
) -> Result<(Store, Arc<dyn Kms>)> {
    open_with(s, kms, Some(tenant)).await
}

/// How to reach each tenant's own key service: the pipeline's `[kms.tenants.T]`, else the KEK
/// the store binds the tenant to (a Transit key through `BAO_ADDR`/`BAO_TOKEN`, an AWS KMS key
/// by its ARN); one that cannot be configured is unreachable, and its tenant's records wait.
/// `skip`: a tenant whose section is not checked against the store (the one being bound).
pub(super) async fn tenant_keys(
    s: &StoreArgs,
    kms: Option<&KmsConfig>,
    skip: Option<&str>,
) -> Result<BTreeMap<String, TenantKeys>> {
    let store = crate::store::open_unkeyed(&s.store).await?;
    let mut out = BTreeMap::new();
    for (t, section) in kms.iter().flat_map(|k| &k.tenants) {
        if skip == Some(t.as_str()) {
            continue;
        }
        out.insert(t.clone(), tenant_remote(section));
    }
    for (t, (_, b)) in crate::keys::tenants::bindings(&store).await? {
        if !out.contains_key(&t) && skip != Some(t.as_str()) {
            let how = tenant_from_kek(&b.kek_id, &t);
            out.insert(t, how);
        }
    }
    Ok(out)
}

/// A tenant's own key service as its `[kms.tenants.T]` section names it.
pub(super) fn tenant_remote(section: &KmsConfig) -> TenantKeys {
    match remote_of(section) {
        Ok(Some(Remote::Transit(c))) => TenantKeys::Transit(c),
        Ok(Some(Remote::AwsKms(c))) => TenantKeys::AwsKms(c),
        Ok(None) => TenantKeys::Unreachable("a tenant's own key is never the local keyring".into()),
        Err(e) => TenantKeys::Unreachable(e.to_string()),
    }
}

/// A tenant's own key service as the store's binding names it.
fn tenant_from_kek(kek_id: &str, tenant: &str) -> TenantKeys {
    match parse_kek_id(kek_id) {
        Some((mount, key)) => {
            let why = format!("tenant `{tenant}`'s own key is in OpenBao/Vault Transit ({kek_id})");
            match transit(mount, key, None, &why) {
                Ok(c) => TenantKeys::Transit(c),
                Err(e) => TenantKeys::Unreachable(e.to_string()),
            }
        }
        None if is_key_arn(kek_id) => TenantKeys::AwsKms(AwsKmsConfig::new(kek_id.to_string())),
        None => TenantKeys::Unreachable(format!("{kek_id} is not a KEK id holdfast knows")),
    }
}
