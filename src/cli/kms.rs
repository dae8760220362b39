//! Which key service a command uses: the pipeline's `[kms]` when the command has a pipeline,
//! else what the store's marker names (a `transit:` KEK is reached through the environment,
//! as the `bao` and `vault` CLIs are). The token is read here, from `BAO_TOKEN` or
//! `VAULT_TOKEN` only, and handed down; it is never printed.

use super::*;
use crate::config::{KmsBackend, KmsConfig};
use crate::crypto::kms::transit::{Token, TransitConfig, parse_kek_id};
use crate::store::Keys;

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
    let token = env(&["BAO_TOKEN", "VAULT_TOKEN"]).ok_or_else(|| {
        Error::Usage(format!(
            "{why}: set BAO_TOKEN or VAULT_TOKEN (a token is read only from the environment)"
        ))
    })?;
    let mut cfg = TransitConfig::new(address, mount.into(), key.into(), Token::new(token));
    cfg.namespace = from_file
        .and_then(|k| k.namespace.clone())
        .or_else(|| env(&["BAO_NAMESPACE", "VAULT_NAMESPACE"]));
    cfg.ca_file = from_file
        .and_then(|k| k.ca_file.clone())
        .or_else(|| env(&["BAO_CACERT", "VAULT_CACERT"]).map(PathBuf::from));
    Ok(cfg)
}

/// The Transit configuration a pipeline's `[kms]` asks for (`None`: the local keyring).
pub(super) fn transit_of(kms: &KmsConfig) -> Result<Option<TransitConfig>> {
    match kms.backend {
        KmsBackend::Local => Ok(None),
        KmsBackend::Transit => {
            let key = kms.key.as_deref().unwrap_or_default();
            transit(&kms.mount, key, Some(kms), "[kms] backend = \"transit\"").map(Some)
        }
    }
}

/// Opens the store with the key service the pipeline's `[kms]` names or, without one, the
/// one the store's marker names.
pub(super) async fn open_for(
    s: &StoreArgs,
    kms: Option<&KmsConfig>,
) -> Result<(Store, Arc<dyn Kms>)> {
    let cfg = match kms {
        Some(k) => transit_of(k)?,
        None => {
            let store = crate::store::open_unkeyed(&s.store).await?;
            let marker = crate::store::read_marker(&store).await?;
            match parse_kek_id(&marker.kek_id) {
                Some((mount, key)) => {
                    let why = format!(
                        "store {} keeps its KEK in OpenBao/Vault Transit ({})",
                        store.describe(),
                        marker.kek_id
                    );
                    Some(transit(mount, key, None, &why)?)
                }
                None => None,
            }
        }
    };
    match &cfg {
        Some(t) => crate::store::open_keys(&s.store, Keys::Transit(t)).await,
        None => {
            let keyring = keyring_of(s)?;
            crate::store::open_keys(&s.store, Keys::Local(&keyring)).await
        }
    }
}
