//! BYOK: which tenants have a key of their own, as the store records it. A binding
//! (`keys/tenants/<tenant>/binding/v<n>.json`, [`Binding`]) is written only when one
//! administrator asks (`keys bind`) and another approves (`keys approve`), both audited
//! (`keys.bind.requested`, `keys.bind.approved`); the highest sequence is in force. The
//! tenant's blind-index secret is made at the first approval and kept wrapped under its key
//! (`keys/tenants/<tenant>/index/v1.json`). Which key service wraps a tenant's new DEKs is
//! therefore the store's record, never a pipeline's: a pipeline only says how to reach it.

use super::format::Binding;
use crate::crypto::kms::IndexSecret;
use crate::error::{Error, Result};
use crate::lake::layout::{TENANT_KEYS, TenantKeyPath, TenantObject};
use crate::storage::Store;
use std::collections::BTreeMap;

/// The DEK id (Transit context, AWS EncryptionContext) of a tenant's blind-index secret.
pub fn index_secret_id(tenant: &str) -> String {
    format!("{}.{tenant}", crate::crypto::kms::transit::INDEX_SECRET_ID)
}

/// The binding in force for each tenant that has one, with its sequence.
pub async fn bindings(store: &Store) -> Result<BTreeMap<String, (u64, Binding)>> {
    let mut newest: BTreeMap<String, TenantKeyPath> = BTreeMap::new();
    for meta in store.list(TENANT_KEYS).await? {
        let Some(p) = TenantKeyPath::parse(&meta.location) else {
            continue;
        };
        if p.kind != TenantObject::Binding {
            continue;
        }
        match newest.get(p.tenant()) {
            Some(have) if have.sequence >= p.sequence => {}
            _ => {
                newest.insert(p.tenant().to_string(), p);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (tenant, p) in newest {
        let path = p.to_path();
        let b = Binding::decode(&store.get(&path).await?).map_err(|e| {
            Error::Unusable(format!(
                "{}: unreadable tenant key binding {path}: {e}",
                store.describe()
            ))
        })?;
        if b.tenant != tenant {
            return Err(Error::Unusable(format!(
                "{}: {path} binds tenant {}, not {tenant}",
                store.describe(),
                b.tenant
            )));
        }
        out.insert(tenant, (p.sequence, b));
    }
    Ok(out)
}

/// The tenant's wrapped blind-index secret (sequence 1, written create-only at its first
/// binding), if any.
pub async fn index_secret(store: &Store, tenant: &str) -> Result<Option<IndexSecret>> {
    let Some(p) = TenantKeyPath::new(tenant, TenantObject::IndexSecret, 1) else {
        return Ok(None);
    };
    let path = p.to_path();
    let Some(bytes) = store.get_opt(&path).await? else {
        return Ok(None);
    };
    let s = IndexSecret::decode(&bytes).map_err(|e| {
        Error::Unusable(format!(
            "{}: unreadable index secret {path}: {e}",
            store.describe()
        ))
    })?;
    if s.secret_id != index_secret_id(tenant) {
        return Err(Error::Unusable(format!(
            "{}: {path} holds the index secret {}, not tenant {tenant}'s",
            store.describe(),
            s.secret_id
        )));
    }
    Ok(Some(s))
}

/// Every tenant key binding the audit trail cannot account for: `(object, problem)` for a
/// binding whose request has no `keys.bind.approved` entry for that tenant and key (a binding
/// written into the store by hand would otherwise decide which key wraps a tenant's records).
pub async fn unapproved(
    store: &Store,
    audit: &crate::audit::Audit,
) -> Result<Vec<(String, String)>> {
    let bound = bindings(store).await?;
    if bound.is_empty() {
        return Ok(Vec::new());
    }
    let entries = audit.entries().await?;
    let approved = |b: &Binding| {
        entries.iter().map(|(e, _)| e).any(|e| {
            let d = &e.details;
            e.action == <super::bind::BindApproved as crate::audit::AuditEvent>::ACTION
                && d["request"].as_str() == Some(b.request.as_str())
                && d["tenant"].as_str() == Some(b.tenant.as_str())
                && d["kek_id"].as_str() == Some(b.kek_id.as_str())
        })
    };
    let mut out = Vec::new();
    for (tenant, (seq, b)) in &bound {
        if !approved(b) {
            let path = TenantKeyPath::new(tenant, TenantObject::Binding, *seq).expect("parsed");
            out.push((
                path.to_path().to_string(),
                format!(
                    "binds tenant {tenant} to {} under request {}, which no `keys.bind.approved` audit entry approves",
                    b.kek_id, b.request
                ),
            ));
        }
    }
    Ok(out)
}
