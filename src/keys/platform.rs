//! `keys migrate`: moving a store to a new platform KEK, as AWS KMS means rotation to a new
//! key id (automatic rotation keeps the key id and needs nothing of holdfast). One
//! administrator asks, another approves (`keys.migrate.requested`, `keys.migrate.approved`);
//! the approval writes `keys/platform/v<n>.json` ([`PlatformKey`]), and from then on new DEKs
//! are wrapped under the new key while those under the earlier ones still unwrap through
//! them, until `keys rewrap` moves every one with `ReEncrypt` (the DEKs never leave KMS).
//!
//! Transit needs no migration (its keys rotate versions in place, and it cannot rewrap
//! across keys); the local keyring neither.

use super::check_admin;
use super::format::PlatformKey;
use super::request::{approvable, new_id, refuse, text};
use crate::access::Session;
use crate::audit::AuditEvent;
use crate::crypto::kms::Kms;
use crate::crypto::kms::aws::is_key_arn;
use crate::error::{Error, Result};
use crate::lake::layout::{PLATFORM_KEYS, PlatformKeyPath};
use crate::storage::{Put, Store};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct MigrateRequested<'a> {
    pub request: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub requested_by: &'a str,
}
impl AuditEvent for MigrateRequested<'_> {
    const ACTION: &'static str = "keys.migrate.requested";
}

#[derive(Debug, Serialize)]
pub struct MigrateApproved<'a> {
    pub request: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub requested_by: &'a str,
    pub approved_by: &'a str,
}
impl AuditEvent for MigrateApproved<'_> {
    const ACTION: &'static str = "keys.migrate.approved";
}

/// The store's platform KEKs.
#[derive(Debug, Clone)]
pub struct PlatformKeks {
    /// The KEK new DEKs are wrapped under.
    pub current: String,
    /// Earlier ones, oldest first (the marker's, then each replaced one).
    pub previous: Vec<String>,
    /// The changes, with their sequence.
    pub changes: Vec<(u64, PlatformKey)>,
}

/// The platform KEK in force and the earlier ones: the marker's, then each change in order
/// (a change that does not replace the KEK in force before it is damage).
pub async fn keks(store: &Store) -> Result<PlatformKeks> {
    let marker = crate::store::read_marker(store).await?;
    let mut found: Vec<PlatformKeyPath> = Vec::new();
    for meta in store.list(PLATFORM_KEYS).await? {
        if let Some(p) = PlatformKeyPath::parse(&meta.location) {
            found.push(p);
        }
    }
    found.sort();
    let mut k = PlatformKeks {
        current: marker.kek_id,
        previous: Vec::new(),
        changes: Vec::new(),
    };
    for p in found {
        let path = p.to_path();
        let change = PlatformKey::decode(&store.get(&path).await?).map_err(|e| {
            Error::Unusable(format!("{}: unreadable {path}: {e}", store.describe()))
        })?;
        if change.replaces != k.current {
            return Err(Error::Unusable(format!(
                "{}: {path} replaces {}, but the platform KEK before it is {}",
                store.describe(),
                change.replaces,
                k.current
            )));
        }
        let old = std::mem::replace(&mut k.current, change.kek_id.clone());
        k.previous.push(old);
        k.changes.push((p.sequence, change));
    }
    Ok(k)
}

/// Checks that the store may move from `current` to `new`: AWS KMS keys both, another key.
fn migratable(current: &str, new: &str) -> Result<()> {
    if !is_key_arn(current) || !is_key_arn(new) {
        return Err(Error::Usage(format!(
            "`keys migrate` moves a store between AWS KMS keys ({current} to {new}); a Transit key or the local keyring rotates in place: `holdfast keys rotate`"
        )));
    }
    if current == new {
        return Err(Error::Usage(format!(
            "{new} is the store's platform key already"
        )));
    }
    Ok(())
}

/// Asks to move the store from its platform KEK (`current`) to `new` (reachable and enabled
/// now); returns the request id.
pub async fn request(session: &Session, current: &dyn Kms, new: &dyn Kms) -> Result<String> {
    check_admin(session, "migrate").await?;
    migratable(current.kek_id(), new.kek_id())?;
    new.info().await?;
    let id = new_id("km");
    let event = MigrateRequested {
        request: &id,
        from: current.kek_id(),
        to: new.kek_id(),
        requested_by: &session.identity.os_user,
    };
    session.record(None, &event).await?;
    Ok(id)
}

/// Approves migrate request `id` (another administrator): the store's new DEKs are wrapped
/// under `new` from now on.
pub async fn approve(
    session: &Session,
    current: &dyn Kms,
    new: &dyn Kms,
    id: &str,
) -> Result<PlatformKey> {
    check_admin(session, "approve").await?;
    let actions = (MigrateRequested::ACTION, MigrateApproved::ACTION);
    let d = approvable(session, id, actions, "migrate").await?;
    let (from, to) = (text(&d, "from"), text(&d, "to"));
    let requested_by = text(&d, "requested_by");
    let me = session.identity.os_user.clone();
    let now = session.clock.now();
    let k = keks(&session.store).await?;
    if from != k.current || to != new.kek_id() || current.kek_id() != k.current {
        let reason = format!(
            "request {id} moves the store from {from} to {to}; the store's platform key is {} and the key given is {}",
            k.current,
            new.kek_id()
        );
        return refuse(session, "approve", reason).await;
    }
    new.info().await?;
    let change = PlatformKey {
        kek_id: to.clone(),
        replaces: from.clone(),
        request: id.to_string(),
        requested_by: requested_by.clone(),
        approved_by: me.clone(),
        changed_at: now,
    };
    let next = k.changes.last().map_or(1, |(s, _)| s + 1);
    let path = PlatformKeyPath::new(next).to_path();
    if session.store.put_new(&path, change.encode()).await? == Put::AlreadyExists {
        let what = "the platform key was changed meanwhile".to_string();
        return Err(Error::conflict(what, false));
    }
    let event = MigrateApproved {
        request: id,
        from: &from,
        to: &to,
        requested_by: &requested_by,
        approved_by: &me,
    };
    session.record(None, &event).await?;
    Ok(change)
}

/// Every platform key change the audit trail cannot account for (no `keys.migrate.approved`
/// entry for its request, from and to).
pub async fn unapproved(
    store: &Store,
    audit: &crate::audit::Audit,
) -> Result<Vec<(String, String)>> {
    let k = keks(store).await?;
    if k.changes.is_empty() {
        return Ok(Vec::new());
    }
    let entries = audit.entries().await?;
    let mut out = Vec::new();
    for (seq, c) in &k.changes {
        let approved = entries.iter().map(|(e, _)| e).any(|e| {
            let d = &e.details;
            e.action == MigrateApproved::ACTION
                && d["request"].as_str() == Some(c.request.as_str())
                && d["from"].as_str() == Some(c.replaces.as_str())
                && d["to"].as_str() == Some(c.kek_id.as_str())
        });
        if !approved {
            out.push((
                PlatformKeyPath::new(*seq).to_path().to_string(),
                format!(
                    "moves the platform key to {} under request {}, which no `keys.migrate.approved` audit entry approves",
                    c.kek_id, c.request
                ),
            ));
        }
    }
    Ok(out)
}
