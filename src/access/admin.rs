//! Changing the access policy: the first policy at `init`; afterwards, a change asked for by
//! one administrator and approved by a different one (compared by OS user). The one change a
//! sole administrator applies alone is adding the first second person, who must be an
//! administrator too, so that every later change can be approved. Every step is a new policy
//! version and an audit entry; refusals are audited.

use super::format::Commit;
use super::policy::{self, Change, Policy, Request};
use super::{AccessError, AccessRefused, PolicyChanged, Result, Role, Session};
use crate::audit::Audit;
use crate::clock::Clock;
use crate::storage::Store;
use std::sync::Arc;

/// Commits rounds lost to a concurrent writer before giving up.
const ATTEMPTS: usize = 5;

/// Records the store's first policy (`os_user` administers it alone, with every role) unless
/// it has one; audited. Returns it when it was recorded now.
pub async fn record_first(
    store: &Store,
    clock: Arc<dyn Clock>,
    os_user: &str,
) -> Result<Option<Policy>> {
    let base = policy::load(store).await?;
    if base.exists() {
        return Ok(None);
    }
    let first = Policy::first(os_user);
    let commit = Commit {
        at: clock.now(),
        by: os_user,
        reason: &first.reason,
    };
    let Some(p) = policy::commit(store, &base, first.principals, Vec::new(), &commit).await? else {
        return Ok(None); // another init recorded one first
    };
    let event = PolicyChanged {
        step: "initial",
        change: &p.reason,
        request: None,
        requested_by: None,
        sequence: p.sequence,
    };
    Audit::for_user(store.clone(), clock, os_user)
        .record(os_user, None, &event)
        .await?;
    Ok(Some(p))
}

/// What became of a change asked for.
#[derive(Debug)]
pub enum Outcome {
    /// Applied at once: a sole administrator added the first second person.
    Applied(Policy),
    /// Waiting for a different administrator's approval.
    Requested(Request),
}

async fn refuse<T>(s: &Session, what: &str, requested: &str, reason: String) -> Result<T> {
    let event = AccessRefused {
        what,
        requested,
        reason: &reason,
    };
    s.record(None, &event).await?;
    Err(AccessError::Refused(reason))
}

/// Whether `change` is the first second person a sole administrator adds.
fn first_second_person(p: &Policy, os_user: &str, change: &Change) -> Result<bool> {
    let sole = p.principals.len() == 1 && p.principals.contains_key(os_user);
    let Change::Grant { user, roles, .. } = change else {
        return Ok(false);
    };
    if !sole || p.principals.contains_key(user) {
        return Ok(false);
    }
    if !roles.contains(&Role::Admin) {
        return Err(AccessError::Invalid(format!(
            "{os_user} is this store's only person: the first person added must be an administrator too (add --role admin), so that later changes can be approved"
        )));
    }
    Ok(true)
}

/// Asks for `change` (an administrator only). Applied at once when it adds the first second
/// person to a sole administrator's policy; otherwise recorded as a request.
pub async fn request(s: &Session, change: Change) -> Result<Outcome> {
    let what = change.to_string();
    if let Err(reason) = s.check(Role::Admin, None) {
        return refuse(s, "access change", &what, reason).await;
    }
    let me = &s.identity.os_user;
    for _ in 0..ATTEMPTS {
        let base = policy::load(&s.store).await?;
        let next = base.apply(&change).map_err(AccessError::Invalid)?;
        let at = s.clock.now();
        let (outcome, committed) = if first_second_person(&base, me, &change)? {
            let reason =
                format!("{what} (the first second person, added by the sole administrator)");
            let c = Commit {
                at,
                by: me,
                reason: &reason,
            };
            let p = policy::commit(&s.store, &base, next, base.requests.clone(), &c).await?;
            (p.clone().map(Outcome::Applied), p)
        } else {
            let r = Request {
                id: format!("R{}", base.sequence + 1),
                change: change.clone(),
                requested_by: me.clone(),
                requested_as: s.identity.actor.clone(),
                requested_at: at,
            };
            let mut requests = base.requests.clone();
            requests.push(r.clone());
            let reason = format!("request {}: {what}", r.id);
            let c = Commit {
                at,
                by: me,
                reason: &reason,
            };
            let principals = base.principals.clone();
            let p = policy::commit(&s.store, &base, principals, requests, &c).await?;
            (p.clone().map(|_| Outcome::Requested(r)), p)
        };
        let (Some(outcome), Some(p)) = (outcome, committed) else {
            continue; // another writer committed that version: look again
        };
        let (step, id) = match &outcome {
            Outcome::Applied(_) => ("applied", None),
            Outcome::Requested(r) => ("requested", Some(r.id.as_str())),
        };
        let event = PolicyChanged {
            step,
            change: &what,
            request: id,
            requested_by: None,
            sequence: p.sequence,
        };
        s.record(None, &event).await?;
        return Ok(outcome);
    }
    Err(AccessError::Conflict)
}

/// Approves request `id` (an administrator other than the one who asked) and applies it.
pub async fn approve(s: &Session, id: &str) -> Result<(Request, Policy)> {
    if let Err(reason) = s.check(Role::Admin, None) {
        return refuse(s, "access approve", id, reason).await;
    }
    let me = &s.identity.os_user;
    for _ in 0..ATTEMPTS {
        let base = policy::load(&s.store).await?;
        let Some(r) = base.requests.iter().find(|r| r.id == id).cloned() else {
            return Err(AccessError::NotFound(format!(
                "no pending access request {id}"
            )));
        };
        if &r.requested_by == me {
            let reason = format!(
                "{me} asked for request {id}; a different administrator (another OS user) must approve it"
            );
            return refuse(s, "access approve", id, reason).await;
        }
        let next = base
            .apply(&r.change)
            .map_err(|e| AccessError::Stale(format!("request {id} no longer applies: {e}")))?;
        let requests = base
            .requests
            .iter()
            .filter(|x| x.id != id)
            .cloned()
            .collect();
        let what = r.change.to_string();
        let reason = format!("request {id} approved: {what}");
        let c = Commit {
            at: s.clock.now(),
            by: me,
            reason: &reason,
        };
        let Some(p) = policy::commit(&s.store, &base, next, requests, &c).await? else {
            continue;
        };
        let event = PolicyChanged {
            step: "approved",
            change: &what,
            request: Some(id),
            requested_by: Some(&r.requested_by),
            sequence: p.sequence,
        };
        s.record(None, &event).await?;
        return Ok((r, p));
    }
    Err(AccessError::Conflict)
}

/// Withdraws request `id` (any administrator); nothing else changes.
pub async fn cancel(s: &Session, id: &str) -> Result<Request> {
    if let Err(reason) = s.check(Role::Admin, None) {
        return refuse(s, "access cancel", id, reason).await;
    }
    for _ in 0..ATTEMPTS {
        let base = policy::load(&s.store).await?;
        let Some(r) = base.requests.iter().find(|r| r.id == id).cloned() else {
            return Err(AccessError::NotFound(format!(
                "no pending access request {id}"
            )));
        };
        let requests = base
            .requests
            .iter()
            .filter(|x| x.id != id)
            .cloned()
            .collect();
        let what = r.change.to_string();
        let reason = format!("request {id} withdrawn: {what}");
        let c = Commit {
            at: s.clock.now(),
            by: &s.identity.os_user,
            reason: &reason,
        };
        let principals = base.principals.clone();
        let Some(p) = policy::commit(&s.store, &base, principals, requests, &c).await? else {
            continue;
        };
        let event = PolicyChanged {
            step: "cancelled",
            change: &what,
            request: Some(id),
            requested_by: Some(&r.requested_by),
            sequence: p.sequence,
        };
        s.record(None, &event).await?;
        return Ok(r);
    }
    Err(AccessError::Conflict)
}
