//! Keeping holds true over time: `hold sync` (listings and storage flags repaired, never
//! unpinned) and the lapse of dated holds.

use super::*;
use crate::lake::LakeError;
use crate::lake::manifest::{self};
use crate::storage::Store;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Drift between the registry, the data and the storage flags, and what sync did about it.
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    /// Files an active hold covers that its registry entry did not list (added and pinned).
    pub files_added: Vec<String>,
    /// Listed files whose storage flag was missing (set again).
    pub flags_repaired: Vec<String>,
    /// Pinned at the storage layer though no active hold lists them: reported, never cleared
    /// (a wiped or rolled-back registry must not unpin anything).
    pub pinned_without_hold: Vec<String>,
    /// Holds whose expiration date had passed, recorded as lapsed now.
    pub lapsed: Vec<Lapse>,
}

/// Reconciles every active hold with the data and the storage flags.
pub async fn sync(store: &Store, now: DateTime<Utc>) -> Result<SyncReport, LakeError> {
    let lapsed = lapse_due(store, now).await?;
    let (registry, sha) = load(store).await?;
    let mut holds = registry.holds.clone();
    let mut report = SyncReport {
        lapsed,
        ..Default::default()
    };
    for h in holds.iter_mut().filter(|h| h.active()) {
        for (f, n) in covered_files(store, h).await? {
            if !h.files.contains(&f) {
                h.files.push(f.clone());
                h.covered.insert(f.clone(), n);
                report.files_added.push(f);
            }
        }
        for f in &h.files {
            let path = crate::lake::layout::locate(f)?;
            if store.head(&path).await?.is_some() && !store.lock(&path).await?.legal_hold {
                store.legal_hold(&path, true).await?;
                report.flags_repaired.push(f.clone());
            }
        }
    }
    let listed: std::collections::HashSet<&String> = holds
        .iter()
        .filter(|h| h.active())
        .flat_map(|h| h.files.iter())
        .collect();
    for l in manifest::load_latest_all(store).await? {
        for f in &l.manifest.files {
            if !listed.contains(&f.path) && store.lock(&f.location()?).await?.legal_hold {
                report.pinned_without_hold.push(f.path.clone());
            }
        }
    }
    if !report.files_added.is_empty() && !commit(store, &registry, sha, holds).await? {
        return Err(LakeError::Conflict(
            "the hold registry changed during sync; run it again".into(),
        ));
    }
    Ok(report)
}

/// A hold that lapsed on its expiration date.
#[derive(Debug, Clone, Serialize)]
pub struct Lapse {
    pub hold_id: String,
    pub at: DateTime<Utc>,
    /// Files whose legal-hold flag was cleared (no other active hold lists them).
    pub unpinned: Vec<String>,
}

/// Records the lapse of every active hold whose expiration date is at or before `now`, then
/// clears the legal-hold flag of the files no remaining active hold lists (registry first:
/// a crash in between leaves flags that `hold sync` reports, never a hold silently dropped).
pub async fn lapse_due(store: &Store, now: DateTime<Utc>) -> Result<Vec<Lapse>, LakeError> {
    let (registry, sha) = load(store).await?;
    let due: Vec<usize> = registry
        .holds
        .iter()
        .enumerate()
        .filter(|(_, h)| h.active() && h.lapses_at.is_some_and(|d| d <= now))
        .map(|(i, _)| i)
        .collect();
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let mut holds = registry.holds.clone();
    for &i in &due {
        holds[i].status = Status::Lapsed {
            at: holds[i].lapses_at.expect("dated"),
        };
    }
    if !commit(store, &registry, sha, holds.clone()).await? {
        return Err(LakeError::Conflict(
            "the hold registry changed while lapsing holds; run the command again".into(),
        ));
    }
    let still: std::collections::HashSet<&String> = holds
        .iter()
        .filter(|h| h.active())
        .flat_map(|h| h.files.iter())
        .collect();
    let mut out = Vec::new();
    for &i in &due {
        let h = &holds[i];
        let mut unpinned = Vec::new();
        for f in h.files.iter().filter(|f| !still.contains(f)) {
            let path = crate::lake::layout::locate(f)?;
            if store.head(&path).await?.is_some() {
                store.legal_hold(&path, false).await?;
            }
            unpinned.push(f.clone());
        }
        out.push(Lapse {
            hold_id: h.hold_id.clone(),
            at: h.lapses_at.expect("dated"),
            unpinned,
        });
    }
    Ok(out)
}

/// Audits lapses (`hold.changed`, change `lapsed`) under `actor`.
pub async fn record_lapses(
    audit: &crate::audit::Audit,
    actor: &str,
    lapsed: &[Lapse],
) -> Result<(), crate::audit::AuditError> {
    for l in lapsed {
        let detail = format!("expirationDate {} reached", crate::clock::fmt_ts(l.at));
        let event = crate::audit::HoldChanged {
            hold: &l.hold_id,
            change: "lapsed",
            files: l.unpinned.len(),
            detail: &detail,
        };
        audit.record(actor, None, &event).await?;
    }
    Ok(())
}
