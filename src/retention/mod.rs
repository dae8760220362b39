//! Retention sweeps: a pure plan from the manifests (read with SQL over the `manifests`
//! table, plus their `removed` history) and the hold registry's file lists, with no data file
//! opened; and a separate execute step. Time comes from the caller.
//!
//! What happens to a file with expired records (see README, "Retention and legal holds"):
//! - every record expired, no hold lists it: deleted whole, manifest first (a new version
//!   lists it under `removed`), then the object through the storage layer, which refuses
//!   anything still locked;
//! - some records survive (an active hold covers them, or they have not expired): the
//!   survivors are rewritten to a new file under a new DEK ([`rewrite`]), the new file takes
//!   the old one's place in the manifest and the hold registry, and the old file is deleted as
//!   soon as its storage lock allows (at once when its retain-until has passed and only a
//!   hold kept it; at its last record's expiry otherwise);
//! - a file whose last record expires within `rewrite_min_days` of the sweep is not rewritten:
//!   it would gain little and store the survivors twice meanwhile; it goes whole then.

pub mod hold;
mod plan;
pub mod rewrite;
pub use plan::{AwaitingInfo, FileInfo, RewriteInfo, RewriteReason, SweepPlan, inputs, plan};

use crate::audit::{Audit, AuditEvent};
use crate::crypto::kms::Kms;
use crate::lake::LakeError;
use crate::lake::layout::Partition;
use crate::lake::manifest::{self, Commit};
use crate::storage::Store;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Kms(#[from] crate::crypto::kms::KmsError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error(transparent)]
    LeaseLost(#[from] crate::job::LeaseLost),
    #[error(transparent)]
    Head(#[from] crate::head::HeadError),
    #[error(
        "another writer changed {0} during the sweep; what was done is committed, run the sweep again to finish"
    )]
    Conflict(String),
    #[error(
        "the plan rewrites {0} file(s), which needs the keyring (the sweep moves survivors to a new DEK); none was rewritten"
    )]
    NoKeys(usize),
}

#[derive(Debug, Default, Serialize)]
pub struct SweepReport {
    pub sweep_id: String,
    /// Objects deleted from storage (whole expired files, and rewritten files whose lock ran out).
    pub files_removed: u64,
    /// Records that left the lake (whole files, and those dropped by rewrites).
    pub records_removed: u64,
    pub files_rewritten: u64,
    /// Records moved to new files by rewrites.
    pub records_kept: u64,
    /// Listed by a hold but every record survives: nothing to drop.
    pub unchanged: Vec<String>,
    /// Rewritten files out of their partition, kept in storage until their lock runs out.
    pub awaiting_lock: Vec<String>,
    /// Refused by the storage layer (ObjectLocked): kept and committed again.
    pub refused: Vec<String>,
    pub mixed_kept: u64,
}

impl std::fmt::Display for SweepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sweep {}: removed {} file(s), {} record(s); rewrote {} file(s) keeping {} record(s); {} awaiting their lock; {} refused by the storage lock; {} mixed file(s) kept",
            self.sweep_id,
            self.files_removed,
            self.records_removed,
            self.files_rewritten,
            self.records_kept,
            self.awaiting_lock.len(),
            self.refused.len(),
            self.mixed_kept
        )
    }
}

#[derive(Serialize)]
struct Deleted<'a> {
    sweep_id: &'a str,
    path: &'a str,
    records: u64,
    latest_expiry: DateTime<Utc>,
    /// Set for a rewritten file: where its surviving records went.
    #[serde(skip_serializing_if = "Option::is_none")]
    replaced_by: Option<&'a str>,
}
impl AuditEvent for Deleted<'_> {
    const ACTION: &'static str = "retention.delete";
}

#[derive(Serialize)]
struct DeleteRefused<'a> {
    sweep_id: &'a str,
    path: &'a str,
    reason: &'a str,
}
impl AuditEvent for DeleteRefused<'_> {
    const ACTION: &'static str = "retention.refused";
}

#[derive(Serialize)]
struct Rewrote<'a> {
    sweep_id: &'a str,
    path: &'a str,
    replaced_by: &'a str,
    reason: RewriteReason,
    records_kept: u64,
    records_dropped: u64,
    holds: &'a [String],
    /// The old file's DEK was unwrapped to move the survivors; a new one sealed them.
    dek_unwrapped: &'a str,
    dek_created: &'a str,
}
impl AuditEvent for Rewrote<'_> {
    const ACTION: &'static str = "retention.rewrite";
}

/// What every step of one sweep shares: where, who, when, under which id, the leases it runs
/// under (checked before each commit step), and the crash points tests arm ([`crate::hooks`]).
#[derive(Debug, Clone, Copy)]
pub struct SweepRun<'a> {
    pub store: &'a Store,
    pub audit: &'a Audit,
    pub actor: &'a str,
    pub now: DateTime<Utc>,
    pub sweep_id: &'a str,
    pub failpoints: &'a crate::hooks::Failpoints,
    pub fence: &'a crate::job::Fence,
}

/// Why the storage layer would refuse to delete `path` at `now`, if it would.
async fn lock_refusal(
    store: &Store,
    path: &Path,
    now: DateTime<Utc>,
) -> Result<Option<String>, LakeError> {
    Ok(refusal(&store.lock(path).await?, now))
}

/// The storage layer's one rule ([`crate::storage::Lock::refusal`]).
fn refusal(lock: &crate::storage::Lock, now: DateTime<Utc>) -> Option<String> {
    lock.refusal(now)
}

fn partition_of(dir: &str) -> Result<Partition, LakeError> {
    Partition::parse_dir(dir).ok_or_else(|| LakeError::Corrupt {
        object: dir.to_string(),
        problem: "not a partition".into(),
    })
}

/// An old file taken out by a rewrite, and the file that took its survivors.
struct Replacement {
    partition: Partition,
    old: String,
    new: String,
    records: u64,
    latest_expiry: DateTime<Utc>,
    /// Holds covering survivors, with their counts (known when rewritten in this sweep).
    holds: BTreeMap<String, u64>,
}

/// Carries out a plan at `now`. Whole deletions first; then rewrites (each: new file written,
/// manifest swapped, new file locked and pinned as the old one was); then one registry commit
/// moving hold listings to the new files; then the old files are unpinned and deleted where
/// their lock allows. Each step is idempotent: a sweep killed anywhere is finished by the next.
///
/// The sweep records its intent before writing anything (its rewrites' files carry its id),
/// and commits the signed store head at the end (a sweep that changed nothing signs nothing
/// new; a lapse recorded before it is picked up from the registry).
///
/// Durability: a rewritten file is fsynced when completed and its directory synced
/// (`Store::sync`) before the manifest naming it commits; every manifest version is durable
/// (file and directory synced) before the object it removes is unlinked; the lease is checked
/// before each manifest commit, registry commit and group of deletions.
pub async fn execute(
    run: &SweepRun<'_>,
    kms: &dyn Kms,
    plan: &SweepPlan,
) -> Result<SweepReport, SweepError> {
    let c = crate::head::Committer {
        store: run.store,
        kms,
        audit: run.audit,
    };
    // what an interrupted batch or sweep left is finished first; then the store must match
    // its signed head, or nothing is changed
    let latest = manifest::load_latest_all(run.store)
        .await?
        .into_iter()
        .map(|l| (l.manifest.partition.clone(), l))
        .collect();
    // (a sweep stops on a partition whose manifest cannot be read: `load_latest_all` fails)
    let damaged = Default::default();
    crate::head::intent::recover(c, &latest, &damaged, run.now).await?;
    crate::head::check_current(run.store, run.audit, &latest, &damaged).await?;
    let touches =
        !(plan.delete.is_empty() && plan.rewrite.is_empty() && plan.awaiting_deletion.is_empty());
    if touches {
        crate::head::intent::begin(run.store, run.sweep_id, "sweep", run.now).await?;
    }
    let report = execute_plan(run, kms, plan).await?;
    let mut change = crate::head::Change::new(format!("sweep {}", run.sweep_id));
    let parts: std::collections::BTreeSet<&str> = plan
        .delete
        .iter()
        .map(|f| f.partition.as_str())
        .chain(plan.rewrite.iter().map(|r| r.file.partition.as_str()))
        .chain(plan.awaiting_deletion.iter().map(|a| a.partition.as_str()))
        .collect();
    for part in parts {
        if let Some(l) = manifest::load_latest(run.store, &partition_of(part)?).await? {
            change.manifest(&l);
        }
    }
    crate::head::commit(c, &change, run.now).await?;
    if touches {
        crate::head::intent::end(run.store, run.sweep_id).await?;
    }
    Ok(report)
}

async fn execute_plan(
    run: &SweepRun<'_>,
    kms: &dyn Kms,
    plan: &SweepPlan,
) -> Result<SweepReport, SweepError> {
    let SweepRun {
        store,
        audit,
        actor,
        now,
        sweep_id,
        failpoints,
        ..
    } = *run;
    let mut report = SweepReport {
        sweep_id: sweep_id.to_string(),
        mixed_kept: plan.mixed.len() as u64,
        ..Default::default()
    };
    delete_whole(run, plan, &mut report).await?;

    let (registry, _) = hold::load(store).await?;
    let active: Vec<&hold::Hold> = registry
        .holds
        .iter()
        .filter(|h| h.protecting(now))
        .collect();
    // earlier rewrites first: a file one of them made may be rewritten again below, and the
    // registry must move its listing along the chain in order
    let mut replacements = Vec::new();
    for a in &plan.awaiting_deletion {
        replacements.push(Replacement {
            partition: partition_of(&a.partition)?,
            old: a.path.clone(),
            new: a.replaced_by.clone(),
            records: a.record_count,
            latest_expiry: a.latest_expiry,
            holds: BTreeMap::new(),
        });
    }
    for (i, r) in plan.rewrite.iter().enumerate() {
        let p = partition_of(&r.file.partition)?;
        let Some(base) = manifest::load_latest(store, &p).await? else {
            continue;
        };
        let Some(old) = base
            .manifest
            .files
            .iter()
            .find(|m| m.path == r.file.path)
            .cloned()
        else {
            continue;
        };
        let file_id = format!("{sweep_id}-{i}");
        let done = match rewrite::rewrite_file(store, kms, &p, &old, &active, now, &file_id).await?
        {
            rewrite::Outcome::Unchanged => {
                report.unchanged.push(old.path.clone());
                continue;
            }
            rewrite::Outcome::Rewritten(done) => done,
        };
        failpoints.hit("sweep.after_rewrite_written");
        // the new file's directory entry is durable before the manifest names it
        store.sync().await?;
        run.fence.check().await?;
        let new = done.entry.clone();
        let commit = manifest::commit_edit(store, &p, &base, sweep_id, now, |m| {
            m.files.retain(|f| f.path != old.path);
            m.files.push(new.clone());
            let mut gone = old.clone().removed(sweep_id, now);
            gone.replaced_by = Some(new.path.clone());
            gone.records_kept = Some(done.kept);
            m.removed.push(gone);
        })
        .await?;
        if let Commit::LostRace { .. } = commit {
            store.delete(&new.location()?).await?;
            return Err(SweepError::Conflict(p.dir()));
        }
        failpoints.hit("sweep.after_rewrite_commit");
        let new_dek = new.encryption.dek_id.clone();
        audit
            .record(
                actor,
                None,
                &Rewrote {
                    sweep_id,
                    path: &old.path,
                    replaced_by: &new.path,
                    reason: r.reason,
                    records_kept: done.kept,
                    records_dropped: done.dropped,
                    holds: &done.holds.keys().cloned().collect::<Vec<_>>(),
                    dek_unwrapped: &old.encryption.dek_id,
                    dek_created: &new_dek,
                },
            )
            .await?;
        report.files_rewritten += 1;
        report.records_kept += done.kept;
        report.records_removed += done.dropped;
        replacements.push(Replacement {
            partition: p,
            old: old.path,
            new: new.path,
            records: old.record_count,
            latest_expiry: old.latest_expiry,
            holds: done.holds,
        });
    }
    finish_replacements(run, &replacements, &mut report).await?;
    Ok(report)
}

/// Whole files whose every record expired: manifest first, then the object through the lock.
async fn delete_whole(
    run: &SweepRun<'_>,
    plan: &SweepPlan,
    report: &mut SweepReport,
) -> Result<(), SweepError> {
    let SweepRun {
        store,
        audit,
        actor,
        now,
        sweep_id,
        ..
    } = *run;
    let mut by_partition: BTreeMap<&str, Vec<&FileInfo>> = Default::default();
    for f in &plan.delete {
        by_partition.entry(&f.partition).or_default().push(f);
    }
    for (part, files) in by_partition {
        let p = partition_of(part)?;
        let Some(base) = manifest::load_latest(store, &p).await? else {
            continue;
        };
        let mut removing = Vec::new();
        for f in files {
            match lock_refusal(store, &crate::lake::layout::locate(&f.path)?, now).await? {
                Some(reason) => {
                    audit
                        .record(
                            actor,
                            None,
                            &DeleteRefused {
                                sweep_id,
                                path: &f.path,
                                reason: &reason,
                            },
                        )
                        .await?;
                    report.refused.push(f.path.clone());
                }
                None if base.manifest.files.iter().any(|m| m.path == f.path) => removing.push(f),
                None => {}
            }
        }
        if removing.is_empty() {
            continue;
        }
        let paths: Vec<String> = removing.iter().map(|f| f.path.clone()).collect();
        run.fence.check().await?;
        // the new version is durable (file and directory) when the put returns: only then go
        // the objects it removes
        match manifest::commit_removal(store, &p, &base, &paths, sweep_id, now).await? {
            Commit::Committed(_) => {}
            Commit::LostRace { .. } => return Err(SweepError::Conflict(part.to_string())),
        }
        for f in removing {
            store
                .delete_checked(&crate::lake::layout::locate(&f.path)?, now)
                .await?;
            audit
                .record(
                    actor,
                    None,
                    &Deleted {
                        sweep_id,
                        path: &f.path,
                        records: f.record_count as u64,
                        latest_expiry: f.latest_expiry,
                        replaced_by: None,
                    },
                )
                .await?;
            report.files_removed += 1;
            report.records_removed += f.record_count as u64;
        }
    }
    Ok(())
}

/// Completes rewrites (this sweep's and earlier ones'): the new file carries the old one's
/// lock and legal-hold flag; active holds list the new file instead of the old; the old file
/// is unpinned once no active hold lists it, and deleted once its retain-until has passed.
async fn finish_replacements(
    run: &SweepRun<'_>,
    replacements: &[Replacement],
    report: &mut SweepReport,
) -> Result<(), SweepError> {
    let SweepRun {
        store,
        audit,
        actor,
        now,
        sweep_id,
        failpoints,
        ..
    } = *run;
    if replacements.is_empty() {
        return Ok(());
    }
    // 1. the new file is protected before the old one stops being
    let mut latest: BTreeMap<Partition, manifest::Loaded> = BTreeMap::new();
    for r in replacements {
        if !latest.contains_key(&r.partition)
            && let Some(l) = manifest::load_latest(store, &r.partition).await?
        {
            latest.insert(r.partition.clone(), l);
        }
        let new_path = crate::lake::layout::locate(&r.new)?;
        if let Some(entry) = latest
            .get(&r.partition)
            .and_then(|l| l.manifest.files.iter().find(|f| f.path == r.new))
        {
            store
                .ensure_retained(&new_path, entry.latest_expiry)
                .await?;
        }
        if (!r.holds.is_empty()
            || store
                .lock(&crate::lake::layout::locate(&r.old)?)
                .await?
                .legal_hold)
            && store.head(&new_path).await?.is_some()
        {
            store.legal_hold(&new_path, true).await?;
        }
    }
    failpoints.hit("sweep.before_registry");
    run.fence.check().await?;
    // 2. one registry version: listings move from the old files to the new ones
    let (registry, sha) = hold::load(store).await?;
    let mut holds = registry.holds.clone();
    let mut changed = false;
    for h in holds.iter_mut().filter(|h| h.active()) {
        for r in replacements {
            let listed_old = h.files.contains(&r.old);
            if listed_old {
                h.files.retain(|f| f != &r.old);
                changed = true;
            }
            if (listed_old || r.holds.contains_key(&h.hold_id)) && !h.files.contains(&r.new) {
                h.files.push(r.new.clone());
                changed = true;
            }
            if listed_old && h.covered.remove(&r.old).is_some() {
                changed = true;
            }
            if let Some(n) = r.holds.get(&h.hold_id).filter(|_| h.files.contains(&r.new)) {
                changed |= h.covered.insert(r.new.clone(), *n) != Some(*n);
            }
        }
    }
    if changed && !hold::commit(store, &registry, sha, holds.clone()).await? {
        return Err(SweepError::Conflict("the hold registry".into()));
    }
    let listed: HashSet<&String> = holds
        .iter()
        .filter(|h| h.active())
        .flat_map(|h| h.files.iter())
        .collect();
    failpoints.hit("sweep.after_registry");
    run.fence.check().await?;
    // 3. the old files: unpinned when no hold lists them, deleted when the lock allows
    let mut deleted: BTreeMap<Partition, Vec<&str>> = BTreeMap::new();
    for r in replacements {
        let old = crate::lake::layout::locate(&r.old)?;
        let mut lock = store.lock(&old).await?;
        if !listed.contains(&r.old) && lock.legal_hold {
            store.legal_hold(&old, false).await?;
            lock.legal_hold = false;
        }
        match refusal(&lock, now) {
            Some(_) if listed.contains(&r.old) => {
                let reason = "under legal hold (an active hold still lists the rewritten file)";
                audit
                    .record(
                        actor,
                        None,
                        &DeleteRefused {
                            sweep_id,
                            path: &r.old,
                            reason,
                        },
                    )
                    .await?;
                report.refused.push(r.old.clone());
            }
            Some(_) => report.awaiting_lock.push(r.old.clone()),
            None => {
                store.delete_checked(&old, now).await?;
                audit
                    .record(
                        actor,
                        None,
                        &Deleted {
                            sweep_id,
                            path: &r.old,
                            records: r.records,
                            latest_expiry: r.latest_expiry,
                            replaced_by: Some(&r.new),
                        },
                    )
                    .await?;
                report.files_removed += 1;
                deleted.entry(r.partition.clone()).or_default().push(&r.old);
            }
        }
    }
    failpoints.hit("sweep.after_old_deleted");
    // 4. the history says when each old file left storage
    for (p, paths) in deleted {
        let Some(base) = manifest::load_latest(store, &p).await? else {
            continue;
        };
        run.fence.check().await?;
        let commit = manifest::commit_edit(store, &p, &base, sweep_id, now, |m| {
            for r in m
                .removed
                .iter_mut()
                .filter(|r| r.awaiting_deletion() && paths.contains(&r.path.as_str()))
            {
                r.deleted_at = Some(now);
            }
        })
        .await?;
        if let Commit::LostRace { .. } = commit {
            return Err(SweepError::Conflict(p.dir()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
