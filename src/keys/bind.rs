//! `keys bind` and `keys approve` for a tenant's own key (BYOK): one administrator asks that
//! tenant T's records be wrapped under a key of its own, a different one (another OS user)
//! approves within [`super::retire::REQUEST_DAYS`] days; both are audited
//! (`keys.bind.requested`, `keys.bind.approved`). The approval writes the tenant's blind-index
//! secret wrapped under its key, then the binding, each create-only ([`super::tenants`]).
//!
//! A tenant is bound before its first record is stored: a tenant whose records are already in
//! the lake under another key is refused (their blind indexes were made with the platform's
//! index key, and a later lookup by address would miss them), and so is a change of a bound
//! tenant's key (rotate it instead: `keys rotate --tenant T`).

use super::format::Binding;
use super::request::{approvable, new_id, refuse, text};
use super::{check_admin, tenants};
use crate::access::Session;
use crate::audit::AuditEvent;
use crate::crypto::kms::{IndexSecret, Kms};
use crate::error::{Error, Result};
use crate::lake::layout::{TenantKeyPath, TenantObject, tenant_key_id_ok};
use crate::storage::Put;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct BindRequested<'a> {
    pub request: &'a str,
    pub tenant: &'a str,
    pub kek_id: &'a str,
    pub requested_by: &'a str,
}
impl AuditEvent for BindRequested<'_> {
    const ACTION: &'static str = "keys.bind.requested";
}

#[derive(Debug, Serialize)]
pub struct BindApproved<'a> {
    pub request: &'a str,
    pub tenant: &'a str,
    pub kek_id: &'a str,
    pub requested_by: &'a str,
    pub approved_by: &'a str,
}
impl AuditEvent for BindApproved<'_> {
    const ACTION: &'static str = "keys.bind.approved";
}

/// Checks that `tenant` may be bound to `kek_id` now: a tenant id that can name objects, a key
/// other than the platform's, no binding yet, no record in the lake.
async fn bindable(
    session: &Session,
    platform: &dyn Kms,
    tenant: &str,
    kek_id: &str,
    command: &str,
) -> Result<()> {
    if !tenant_key_id_ok(tenant) {
        return Err(Error::Usage(format!(
            "tenant `{tenant}`: a tenant with its own key needs an id of at most 48 letters, digits, `-`, `_` and `.`"
        )));
    }
    if kek_id == platform.kek_id() {
        return Err(Error::Usage(format!(
            "{kek_id} is the store's platform key; a tenant's own key is another key"
        )));
    }
    if let Some((_, b)) = tenants::bindings(&session.store).await?.get(tenant) {
        let reason = format!(
            "tenant `{tenant}` is bound to {} already; changing a tenant's own key is not supported (rotate it: `holdfast keys rotate --tenant {tenant}`)",
            b.kek_id
        );
        return refuse(session, command, reason).await;
    }
    let inv = super::inventory::take(&session.store).await?;
    if inv.has_records_of(tenant) {
        let reason = format!(
            "tenant `{tenant}` has records in the lake already, wrapped under another key and indexed with the platform's index key; a tenant is bound to its own key before its first batch"
        );
        return refuse(session, command, reason).await;
    }
    Ok(())
}

/// Asks for `tenant`'s records to be wrapped under `own` (its key service, reachable now);
/// returns the request id.
pub async fn request(
    session: &Session,
    platform: &dyn Kms,
    tenant: &str,
    own: &dyn Kms,
) -> Result<String> {
    check_admin(session, "bind").await?;
    own.info().await?;
    bindable(session, platform, tenant, own.kek_id(), "bind").await?;
    let id = new_id("kb");
    let event = BindRequested {
        request: &id,
        tenant,
        kek_id: own.kek_id(),
        requested_by: &session.identity.os_user,
    };
    session.record(None, &event).await?;
    Ok(id)
}

/// The tenant a bind request names (for the caller to open that tenant's key service).
pub async fn requested_tenant(session: &Session, id: &str) -> Result<String> {
    super::request::field(session, id, BindRequested::ACTION, "tenant")
        .await?
        .ok_or_else(|| Error::NotFound(format!("no key bind request {id}")))
}

/// Approves bind request `id` (another administrator): writes the tenant's index secret under
/// `own` and the binding.
pub async fn approve(
    session: &Session,
    platform: &dyn Kms,
    own: &dyn Kms,
    id: &str,
) -> Result<Binding> {
    check_admin(session, "approve").await?;
    let actions = (BindRequested::ACTION, BindApproved::ACTION);
    let d = approvable(session, id, actions, "bind").await?;
    let (tenant, kek_id) = (text(&d, "tenant"), text(&d, "kek_id"));
    let requested_by = text(&d, "requested_by");
    let me = session.identity.os_user.clone();
    let now = session.clock.now();
    if own.kek_id() != kek_id {
        let reason = format!(
            "request {id} binds tenant `{tenant}` to {kek_id}, but the key given now is {}",
            own.kek_id()
        );
        return refuse(session, "approve", reason).await;
    }
    own.info().await?;
    bindable(session, platform, &tenant, &kek_id, "approve").await?;
    write_index_secret(session, own, &tenant).await?;
    let binding = Binding {
        tenant: tenant.clone(),
        kek_id: kek_id.clone(),
        request: id.to_string(),
        requested_by: requested_by.clone(),
        approved_by: me.clone(),
        bound_at: now,
    };
    let path = TenantKeyPath::new(&tenant, TenantObject::Binding, 1).expect("checked id");
    if session
        .store
        .put_new(&path.to_path(), binding.encode())
        .await?
        == Put::AlreadyExists
    {
        let what = format!("tenant `{tenant}` was bound meanwhile");
        return Err(Error::conflict(what, false));
    }
    let event = BindApproved {
        request: id,
        tenant: &tenant,
        kek_id: &kek_id,
        requested_by: &requested_by,
        approved_by: &me,
    };
    session.record(None, &event).await?;
    Ok(binding)
}

/// The tenant's blind-index secret, made now and wrapped under its own key (create-only: one
/// left by an approval that was interrupted is kept, if its key opens it).
async fn write_index_secret(session: &Session, own: &dyn Kms, tenant: &str) -> Result<()> {
    let secret_id = tenants::index_secret_id(tenant);
    if let Some(s) = tenants::index_secret(&session.store, tenant).await? {
        own.unwrap_key(&s.secret_id, &s.wrapped).await?;
        return Ok(());
    }
    let now = crate::clock::fmt_ts(session.clock.now());
    let record = IndexSecret::generate(own, &secret_id, now).await?;
    let path = TenantKeyPath::new(tenant, TenantObject::IndexSecret, 1).expect("checked id");
    session
        .store
        .put_new(&path.to_path(), record.encode())
        .await?;
    Ok(())
}
