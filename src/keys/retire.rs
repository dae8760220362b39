//! `keys retire` and `keys approve`: a KEK version stops unwrapping only when one
//! administrator asks and a different one (another OS user) approves, and only while no DEK
//! of the store is wrapped under it or an older version (data files, landing, failed,
//! quarantine, the index secret; footers are not homes). The request and the approval are
//! audit entries (`keys.retire.requested`, `keys.retire.approved`); the approval re-checks the
//! store and acts on the backend (Transit: `min_decryption_version`; the local keyring: the
//! same number in its file, which whoever holds the file could undo). A request lapses after
//! [`REQUEST_DAYS`].

use super::request::{approvable, new_id, refuse, text};
use super::{check_admin, inventory};
use crate::access::Session;
use crate::audit::AuditEvent;
use crate::crypto::kms::{KekInfo, Kms};
use crate::error::{Error, Result};
use serde::Serialize;

pub use super::request::REQUEST_DAYS;

#[derive(Debug, Serialize)]
pub struct RetireRequested<'a> {
    pub request: &'a str,
    /// The tenant whose own key it is (BYOK); absent for the platform key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<&'a str>,
    pub kek_id: &'a str,
    /// This version and every older one.
    pub version: u32,
    pub requested_by: &'a str,
}
impl AuditEvent for RetireRequested<'_> {
    const ACTION: &'static str = "keys.retire.requested";
}

#[derive(Debug, Serialize)]
pub struct RetireApproved<'a> {
    pub request: &'a str,
    pub kek_id: &'a str,
    pub version: u32,
    pub requested_by: &'a str,
    pub approved_by: &'a str,
}
impl AuditEvent for RetireApproved<'_> {
    const ACTION: &'static str = "keys.retire.approved";
}

/// What an approval did.
#[derive(Debug, Clone, Serialize)]
pub struct Retired {
    pub request: String,
    pub kek_id: String,
    pub version: u32,
    pub requested_by: String,
    pub approved_by: String,
    /// The oldest version the backend unwraps under now.
    pub min_decryption_version: u32,
}

/// DEKs of the store still wrapped under `version` or older.
async fn still_wrapped(session: &Session, info: &KekInfo, version: u32) -> Result<u64> {
    let inv = inventory::take(&session.store).await?;
    Ok(inv
        .keys
        .iter()
        .filter(|k| k.current.kek_id == info.kek_id && k.current.kek_version <= version)
        .count() as u64)
}

/// Checks that `version` may be retired now: below the primary, nothing wrapped under it.
async fn retirable(session: &Session, info: &KekInfo, version: u32, command: &str) -> Result<()> {
    if info.versions.len() == 1 && info.primary == 1 {
        return Err(Error::Usage(format!(
            "{} has one version, the one in use ({}): nothing older to retire",
            info.kek_id, info.backend
        )));
    }
    if version >= info.primary {
        return Err(Error::Usage(format!(
            "v{version} is the primary version of {} or newer (primary v{}): run `holdfast keys rotate` and `holdfast keys rewrap` first",
            info.kek_id, info.primary
        )));
    }
    let n = still_wrapped(session, info, version).await?;
    if n > 0 {
        let reason = format!(
            "{n} DEK(s) of the store are still wrapped under v{version} or older: run `holdfast keys rewrap` first"
        );
        return refuse(session, command, reason).await;
    }
    Ok(())
}

/// Asks for `version` (and every older one) of `kms`'s KEK (tenant `tenant`'s own, when
/// given) to be retired; returns the request id.
pub async fn request(
    session: &Session,
    kms: &dyn Kms,
    version: u32,
    tenant: Option<&str>,
) -> Result<String> {
    check_admin(session, "retire").await?;
    let info = kms.info().await?;
    retirable(session, &info, version, "retire").await?;
    let id = new_id("kr");
    let event = RetireRequested {
        request: &id,
        tenant,
        kek_id: &info.kek_id,
        version,
        requested_by: &session.identity.os_user,
    };
    session.record(None, &event).await?;
    Ok(id)
}

/// The tenant whose own key retire request `id` is for (`None`: the platform key, or no such
/// request: [`approve`] says so).
pub async fn requested_tenant(session: &Session, id: &str) -> Result<Option<String>> {
    super::request::field(session, id, RetireRequested::ACTION, "tenant").await
}

/// Approves request `id` (another administrator) and retires the version in the backend.
pub async fn approve(session: &Session, kms: &dyn Kms, id: &str) -> Result<Retired> {
    check_admin(session, "approve").await?;
    let actions = (RetireRequested::ACTION, RetireApproved::ACTION);
    let d = approvable(session, id, actions, "retire").await?;
    let requested_by = text(&d, "requested_by");
    let me = session.identity.os_user.clone();
    let info = kms.info().await?;
    let version = d["version"].as_u64().and_then(|v| u32::try_from(v).ok());
    let (Some(version), Some(info_kek)) = (version, d["kek_id"].as_str()) else {
        return Err(Error::Unusable(format!(
            "request {id} is not a retire request"
        )));
    };
    if info_kek != info.kek_id {
        let reason = format!(
            "request {id} is for KEK {info_kek}, not the store's {}",
            info.kek_id
        );
        return refuse(session, "approve", reason).await;
    }
    retirable(session, &info, version, "approve").await?;
    kms.retire(version).await?;
    let after = kms.info().await?;
    let event = RetireApproved {
        request: id,
        kek_id: &info.kek_id,
        version,
        requested_by: &requested_by,
        approved_by: &me,
    };
    session.record(None, &event).await?;
    Ok(Retired {
        request: id.to_string(),
        kek_id: info.kek_id,
        version,
        requested_by,
        approved_by: me,
        min_decryption_version: after.min_decryption_version,
    })
}
