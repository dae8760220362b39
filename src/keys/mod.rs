//! Key lifecycle over a store: which KEK versions wrap which DEKs ([`status`]), new KEK
//! versions ([`rotate`]) and moving every wrapped DEK to the newest version without touching
//! a data file ([`rewrap`]).
//!
//! Homes of wrapped DEKs ([`inventory`]): a data file's DEK lives in its partition's latest
//! manifest, and a rewrap writes a new manifest version (the data file, possibly under a
//! storage lock for years, is never rewritten; the copy in its footer is informational).
//! Landing and failed segments, quarantine entries and the index secret are never rewritten
//! either: their newer wrapping is stored beside them, create-only
//! (`keys/rewrapped/<dek-id>/v<n>.json`, [`format`]), and [`Overlaid`] unwraps under it.

pub mod bind;
pub mod format;
pub mod inventory;
pub mod overlay;
pub mod platform;
pub mod request;
pub mod retire;
pub mod rewrap;
pub mod status;
pub mod tenants;

pub use overlay::{Newer, Overlaid};
pub use rewrap::{RewrapReport, rewrap};
pub use status::{KeyStatus, cryptoperiod_warning, status};

use crate::access::{Role, Session};
use crate::audit::AuditEvent;
use crate::crypto::kms::Kms;
use crate::error::Result;
use serde::Serialize;

/// How long a KEK version is meant to be used when the pipeline says nothing: two years, the
/// upper end of NIST SP 800-57's cryptoperiod for a symmetric key-wrapping key.
pub const DEFAULT_CRYPTOPERIOD_DAYS: u32 = 730;

/// A key command was refused (audited).
#[derive(Debug, Serialize)]
pub struct KeysRefused<'a> {
    pub command: &'a str,
    pub reason: &'a str,
}
impl AuditEvent for KeysRefused<'_> {
    const ACTION: &'static str = "keys.refused";
}

/// A new KEK version was made.
#[derive(Debug, Serialize)]
pub struct KeyRotated<'a> {
    pub kek_id: &'a str,
    pub backend: &'a str,
    pub from_version: u32,
    pub to_version: u32,
}
impl AuditEvent for KeyRotated<'_> {
    const ACTION: &'static str = "keys.rotate";
}

/// Refuses (and audits) a key command the session's user may not run: key changes need the
/// admin role, for every tenant.
pub(crate) async fn check_admin(session: &Session, command: &str) -> Result<()> {
    if let Err(reason) = session.check(Role::Admin, None) {
        let reason = format!("{reason}; `keys {command}` needs the admin role");
        return request::refuse(session, command, reason).await;
    }
    Ok(())
}

/// Makes a new KEK version in the backend (audited); returns the new version.
pub async fn rotate(session: &Session, kms: &dyn Kms) -> Result<u32> {
    check_admin(session, "rotate").await?;
    let before = kms.info().await?;
    let to = kms.rotate(session.clock.now()).await?;
    let event = KeyRotated {
        kek_id: &before.kek_id,
        backend: &before.backend,
        from_version: before.primary,
        to_version: to,
    };
    session.record(None, &event).await?;
    Ok(to)
}
