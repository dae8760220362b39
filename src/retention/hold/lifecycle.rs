//! The hold lifecycle as library calls, for the command line and the server alike: place a
//! hold ([`apply`]), ask for its release ([`request_release`]), approve that release as a
//! second person ([`approve_release`]), see what a body would cover ([`preview_request`]),
//! reconcile the registry with the data and the storage flags ([`reconcile`]), and record
//! lapses ([`super::record_lapses`]).
//!
//! Every change needs the compliance role, for the hold's tenant, from the store's policy
//! (never from the caller's word); a refusal is audited (`legal_hold` / `refused`). Every
//! change is recorded in the signed store head, so the keyring comes with the change
//! ([`Changer`]). Calls return typed outcomes and print nothing.

use super::{Hold, HoldRequest, Preview, Status, SyncReport};
use crate::access::{Role, Session};
use crate::audit::{Audit, HoldChanged};
use crate::crypto::kms::Kms;
use crate::error::{Error, Result};
use crate::lake::layout;
use crate::storage::Store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashSet;

pub use crate::retention::sweep::HOLDS_LEASE_WAIT;

/// Who changes holds (an authenticated session: identity, policy, audit trail), and the
/// keyring that signs the store head after the change.
#[derive(Clone, Copy)]
pub struct Changer<'a> {
    pub session: &'a Session,
    pub kms: &'a dyn Kms,
}

/// A hold placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placed {
    pub hold_id: String,
    /// Files whose legal-hold flag was set (the hold covers a record in each).
    pub files_pinned: usize,
}

/// A release asked for; a second person approves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseRequested {
    pub hold_id: String,
}

/// A release approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    pub hold_id: String,
    /// Files whose legal-hold flag was cleared.
    pub unpinned: usize,
    /// Files of the hold another active hold still pins.
    pub still_held: usize,
}

/// What [`reconcile`] found and repaired, and whether the signed head could record it.
#[derive(Debug)]
pub struct Synced {
    pub report: SyncReport,
    /// The head commit after the repair: it fails when the store no longer matches its
    /// signed head (a wiped registry, say); the report still says what was found.
    pub head: Result<()>,
}

impl Changer<'_> {
    fn store(&self) -> &Store {
        &self.session.store
    }

    fn actor(&self) -> &str {
        &self.session.identity.actor
    }

    fn now(&self) -> DateTime<Utc> {
        self.session.clock.now()
    }

    /// Audits a refusal and returns it as the error.
    async fn refuse<T>(&self, hold_id: &str, reason: String) -> Result<T> {
        let event = HoldChanged {
            hold: hold_id,
            change: "refused",
            files: 0,
            detail: &reason,
        };
        self.session
            .audit
            .record(self.actor(), None, &event)
            .await?;
        Err(Error::Refused(reason))
    }

    /// Audits a change.
    async fn record(&self, hold_id: &str, change: &str, files: usize) -> Result<()> {
        let event = HoldChanged {
            hold: hold_id,
            change,
            files,
            detail: "",
        };
        self.session
            .audit
            .record(self.actor(), None, &event)
            .await?;
        Ok(())
    }

    /// The compliance role for `tenant` (`None`: a hold over every tenant).
    fn may_hold(&self, tenant: Option<&str>) -> std::result::Result<(), String> {
        self.session
            .check(Role::Compliance, tenant)
            .map_err(|r| format!("{r}; holds need the compliance role"))
    }

    /// Commits the signed store head after a change (the registry is read afresh).
    async fn sign(&self, what: String) -> Result<()> {
        commit_head(
            self.store(),
            &self.session.audit,
            self.kms,
            &what,
            self.now(),
        )
        .await
    }
}

/// Refuses (audited) a session whose OS user holds no compliance role at all, before
/// anything is read; `hold_id` names the hold in the refusal (empty when not yet known).
pub async fn authorize(c: Changer<'_>, hold_id: &str) -> Result<()> {
    let s = c.session;
    if s.policy
        .reach(&s.identity.os_user, Role::Compliance)
        .is_none()
        && let Err(reason) = c.may_hold(None)
    {
        return c.refuse(hold_id, reason).await;
    }
    Ok(())
}

/// Places a hold: pins every file holding a covered record at the storage layer before the
/// hold is recorded and before it returns. Refused (audited) without the compliance role for
/// the hold's tenant, when the body's lifetime is not one to place, when the hold is already
/// active, or when it covers no stored record and `allow_empty` is false. Never while a sweep
/// decides which records survive (it waits for the holds lease).
pub async fn apply(c: Changer<'_>, req: HoldRequest, allow_empty: bool) -> Result<Placed> {
    authorize(c, &req.hold_id).await?;
    if let Err(reason) = c.may_hold(req.tenant_id.as_deref()) {
        return c.refuse(&req.hold_id, reason).await;
    }
    let now = c.now();
    let lapses_at = match req.lapse_date(now) {
        Ok(d) => d,
        Err(reason) => {
            let reason = format!("hold {} not placed: {reason}", req.hold_id);
            return c.refuse(&req.hold_id, reason).await;
        }
    };
    let hold = Hold {
        hold_id: req.hold_id,
        tenant_id: req.tenant_id,
        scope: req.scope,
        retention_override: req.retention_override,
        placed_by: c.actor().to_string(),
        placed_at: now,
        status: Status::Active,
        lapses_at,
        files: Vec::new(),
        covered: Default::default(),
    };
    let store = c.store();
    let holder = format!("hold-apply-{}", std::process::id());
    let (lease, _) = crate::job::Lease::acquire_waiting(
        store,
        c.session.clock.clone(),
        layout::HOLDS_LEASE,
        &holder,
        HOLDS_LEASE_WAIT,
    )
    .await?;
    let result = place(c, &lease, hold, allow_empty).await;
    lease.release(store).await?;
    result
}

/// [`apply`] under the holds lease.
async fn place(
    c: Changer<'_>,
    lease: &crate::job::Lease,
    mut h: Hold,
    allow_empty: bool,
) -> Result<Placed> {
    let store = c.store();
    let (registry, sha) = super::load(store).await?;
    if registry
        .holds
        .iter()
        .any(|x| x.hold_id == h.hold_id && x.active())
    {
        let reason = format!("hold {} is already active", h.hold_id);
        return c.refuse(&h.hold_id, reason).await;
    }
    let (found, examined) = super::covered_files_since(store, &h, &Default::default()).await?;
    if found.is_empty() && !allow_empty {
        let reason = format!(
            "hold {} not placed: it covers no stored record (check tenantId and scope); pass --allow-empty to place it for records still to come",
            h.hold_id
        );
        return c.refuse(&h.hold_id, reason).await;
    }
    for (f, n) in found {
        h.covered.insert(f.clone(), n);
        h.files.push(f);
    }
    // pin at the storage layer before the hold is recorded and before we return
    pin(store, h.files.iter(), true).await?;
    let mut holds = registry.holds.clone();
    holds.push(h.clone());
    lease.check().await.map_err(crate::job::JobError::from)?;
    if !super::commit(store, &registry, sha, holds).await? {
        return Err(Error::conflict("the hold registry changed meanwhile", true));
    }
    // a batch that committed files after our scan but read the registry before our commit
    // did not pin them for this hold: look again now that it is recorded
    let late = super::covered_files_since(store, &h, &examined).await?.0;
    pin(store, late.iter().map(|(f, _)| f), true).await?;
    if !late.is_empty() {
        lease.check().await.map_err(crate::job::JobError::from)?;
        super::add_files(store, &h.hold_id, &late).await?;
    }
    let placed = Placed {
        files_pinned: h.files.len() + late.len(),
        hold_id: h.hold_id,
    };
    c.record(&placed.hold_id, "placed", placed.files_pinned)
        .await?;
    c.sign(format!("hold apply {}", placed.hold_id)).await?;
    Ok(placed)
}

/// Sets or clears the storage legal-hold flag of `files`.
async fn pin(store: &Store, files: impl Iterator<Item = &String>, on: bool) -> Result<()> {
    for f in files {
        store.legal_hold(&layout::locate(f)?, on).await?;
    }
    Ok(())
}

/// Asks for the release of an active hold; a second person must approve it.
pub async fn request_release(c: Changer<'_>, hold_id: &str) -> Result<ReleaseRequested> {
    authorize(c, hold_id).await?;
    let store = c.store();
    let (registry, sha) = super::load(store).await?;
    let mut holds = registry.holds.clone();
    let Some(h) = holds
        .iter_mut()
        .find(|h| h.hold_id == hold_id && h.status == Status::Active)
    else {
        return c.refuse(hold_id, format!("no active hold {hold_id}")).await;
    };
    if let Err(reason) = c.may_hold(h.tenant_id.as_deref()) {
        return c.refuse(hold_id, reason).await;
    }
    h.status = Status::ReleaseRequested {
        by: c.actor().to_string(),
        by_os_user: Some(c.session.identity.os_user.clone()),
        at: c.now(),
    };
    if !super::commit(store, &registry, sha, holds).await? {
        return Err(Error::conflict("the hold registry changed meanwhile", true));
    }
    c.record(hold_id, "release_requested", 0).await?;
    c.sign(format!("hold release {hold_id}")).await?;
    Ok(ReleaseRequested {
        hold_id: hold_id.to_string(),
    })
}

/// Approves a requested release: only a different person (another OS user) may; clears the
/// flag of the files no other active hold needs (after the registry records the release).
pub async fn approve_release(c: Changer<'_>, hold_id: &str) -> Result<Released> {
    authorize(c, hold_id).await?;
    let store = c.store();
    let (registry, sha) = super::load(store).await?;
    let mut holds = registry.holds.clone();
    let Some(i) = holds
        .iter()
        .position(|h| h.hold_id == hold_id && matches!(h.status, Status::ReleaseRequested { .. }))
    else {
        let reason = format!("hold {hold_id} has no release request");
        return c.refuse(hold_id, reason).await;
    };
    if let Err(reason) = c.may_hold(holds[i].tenant_id.as_deref()) {
        return c.refuse(hold_id, reason).await;
    }
    let Status::ReleaseRequested { by, by_os_user, .. } = holds[i].status.clone() else {
        unreachable!("found by its status")
    };
    // two people: compared by OS user (a name is only what someone acted under)
    let os_user = &c.session.identity.os_user;
    let same = match &by_os_user {
        Some(u) => u == os_user,
        None => by == c.actor(),
    };
    if same {
        let reason = format!(
            "{os_user} requested this release (as {by}); a different actor, logged in as another OS user, must approve it"
        );
        return c.refuse(hold_id, reason).await;
    }
    holds[i].status = Status::Released {
        requested_by: by,
        approved_by: c.actor().to_string(),
        requested_by_os_user: by_os_user,
        approved_by_os_user: Some(os_user.clone()),
        at: c.now(),
    };
    let still: HashSet<&String> = holds
        .iter()
        .filter(|h| h.active())
        .flat_map(|h| h.files.iter())
        .collect();
    let freed: Vec<String> = holds[i]
        .files
        .iter()
        .filter(|f| !still.contains(f))
        .cloned()
        .collect();
    let still_held = holds[i].files.len() - freed.len();
    if !super::commit(store, &registry, sha, holds).await? {
        return Err(Error::conflict("the hold registry changed meanwhile", true));
    }
    pin(store, freed.iter(), false).await?;
    c.record(hold_id, "released", freed.len()).await?;
    c.sign(format!("hold approve {hold_id}")).await?;
    Ok(Released {
        hold_id: hold_id.to_string(),
        unpinned: freed.len(),
        still_held,
    })
}

/// What a hold body would cover now: records per partition, and the files (changes nothing,
/// needs no role: it shows index values only).
pub async fn preview_request(
    store: &Store,
    req: HoldRequest,
    now: DateTime<Utc>,
) -> Result<Preview> {
    let h = Hold {
        hold_id: req.hold_id,
        tenant_id: req.tenant_id,
        scope: req.scope,
        retention_override: None,
        placed_by: String::new(),
        placed_at: now,
        status: Status::Active,
        lapses_at: None,
        files: Vec::new(),
        covered: Default::default(),
    };
    Ok(super::preview(store, &h).await?)
}

/// Every hold in the registry, released and lapsed ones too.
pub async fn list(store: &Store) -> Result<Vec<Hold>> {
    Ok(super::load(store).await?.0.holds)
}

/// Reconciles active holds with the data and the storage flags (adds and pins what they
/// cover, repairs lost flags, reports pins no hold lists, never unpins), records lapses under
/// `actor` in `audit`, then commits the signed head.
pub async fn reconcile(
    store: &Store,
    audit: &Audit,
    actor: &str,
    kms: &dyn Kms,
    now: DateTime<Utc>,
) -> Result<Synced> {
    let report = super::sync(store, now).await?;
    super::record_lapses(audit, actor, &report.lapsed).await?;
    let head = commit_head(store, audit, kms, "hold sync", now).await;
    Ok(Synced { report, head })
}

/// Commits the signed store head after a hold change (the registry is read afresh).
async fn commit_head(
    store: &Store,
    audit: &Audit,
    kms: &dyn Kms,
    what: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let c = crate::head::Committer { store, kms, audit };
    crate::head::commit(c, &crate::head::Change::new(what), now).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
