//! Carrying out a sweep plan: whole deletions, rewrites, the registry moved to the new files,
//! the old files deleted once their lock allows. Works on the manifests the plan was made
//! from ([`super::SweepInputs::latest`]), kept current as it commits; nothing is reloaded.

use super::hold::{self, Hold};
use super::rewrite;
use super::{FileInfo, RewriteInfo, RewriteReason, SweepError, SweepPlan, SweepReport};
use crate::audit::{Audit, AuditEvent};
use crate::crypto::kms::Kms;
use crate::lake::LakeError;
use crate::lake::layout::Partition;
use crate::lake::manifest::{self, Commit, DataFileEntry, Loaded};
use crate::storage::Store;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};

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
    /// Which half of the sweep runs: a rewrite step deletes nothing, a delete step releases
    /// no legal hold.
    pub step: super::sweep::SweepStep,
}

impl SweepRun<'_> {
    async fn refused(&self, path: &str, reason: &str) -> Result<(), SweepError> {
        let e = DeleteRefused {
            sweep_id: self.sweep_id,
            path,
            reason,
        };
        self.audit.record(self.actor, None, &e).await?;
        Ok(())
    }
}

/// The latest manifest of every partition, as read for the plan and kept current by every
/// commit the sweep makes (the sweep holds the store's lease: nobody else commits).
struct Latest(BTreeMap<Partition, Loaded>);

impl Latest {
    fn get(&self, p: &Partition) -> Option<&Loaded> {
        self.0.get(p)
    }

    /// Takes a commit's outcome: the new version, or the conflict error.
    fn committed(&mut self, p: &Partition, c: Commit) -> Result<(), SweepError> {
        match c {
            Commit::Committed(l) => {
                self.0.insert(p.clone(), *l);
                Ok(())
            }
            Commit::LostRace { .. } => Err(SweepError::Conflict(p.dir())),
        }
    }
}

/// Why the storage layer would refuse to delete `path` at `now`, if it would.
async fn lock_refusal(
    store: &Store,
    path: &Path,
    now: DateTime<Utc>,
) -> Result<Option<String>, LakeError> {
    Ok(store.refusal(&store.lock(path).await?, now))
}

/// An old file taken out by a rewrite, and the file that took its survivors.
struct Replacement {
    partition: Partition,
    old: Path,
    new: Path,
    records: u64,
    latest_expiry: DateTime<Utc>,
    /// Holds covering survivors, with their counts (known when rewritten in this sweep).
    holds: BTreeMap<String, u64>,
}

/// Carries out a plan at `now` on the manifests it was made from (`latest`). Whole deletions
/// first; then rewrites (each: new file written, manifest swapped, new file locked and pinned
/// as the old one was); then one registry commit moving hold listings to the new files; then
/// the old files are unpinned and deleted where their lock allows. Each step is idempotent: a
/// sweep killed anywhere is finished by the next.
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
    latest: BTreeMap<Partition, Loaded>,
) -> Result<SweepReport, SweepError> {
    let c = crate::head::Committer {
        store: run.store,
        kms,
        audit: run.audit,
    };
    // what an interrupted batch or sweep left is finished first; then the store must match
    // its signed head, or nothing is changed
    // (a sweep stops on a partition whose manifest cannot be read: `load_latest_all` fails)
    let damaged = Default::default();
    crate::head::intent::recover(c, &latest, &damaged, run.now).await?;
    crate::head::check_current(run.store, run.audit, &latest, &damaged).await?;
    let mut latest = Latest(latest);
    let touches =
        !(plan.delete.is_empty() && plan.rewrite.is_empty() && plan.awaiting_deletion.is_empty());
    if touches {
        crate::head::intent::begin(run.store, run.sweep_id, "sweep", run.now).await?;
    }
    let report = execute_plan(run, kms, plan, &mut latest).await?;
    let mut change = crate::head::Change::new(format!("sweep {}", run.sweep_id));
    let parts: BTreeSet<&Partition> = plan
        .delete
        .iter()
        .map(|f| &f.partition)
        .chain(plan.rewrite.iter().map(|r| &r.file.partition))
        .chain(plan.awaiting_deletion.iter().map(|a| &a.partition))
        .collect();
    for l in parts.into_iter().filter_map(|p| latest.get(p)) {
        change.manifest(l);
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
    latest: &mut Latest,
) -> Result<SweepReport, SweepError> {
    let mut report = SweepReport {
        sweep_id: run.sweep_id.to_string(),
        mixed_kept: plan.mixed.len() as u64,
        ..Default::default()
    };
    delete_whole(run, plan, latest, &mut report).await?;
    let (registry, _) = hold::load(run.store).await?;
    let active: Vec<&Hold> = registry
        .holds
        .iter()
        .filter(|h| h.protecting(run.now))
        .collect();
    // earlier rewrites first: a file one of them made may be rewritten again below, and the
    // registry must move its listing along the chain in order
    let mut replacements: Vec<Replacement> = plan
        .awaiting_deletion
        .iter()
        .map(|a| Replacement {
            partition: a.partition.clone(),
            old: a.path.clone(),
            new: a.replaced_by.clone(),
            records: a.record_count,
            latest_expiry: a.latest_expiry,
            holds: BTreeMap::new(),
        })
        .collect();
    for (i, r) in plan.rewrite.iter().enumerate() {
        let file_id = format!("{}-{i}", run.sweep_id);
        let step = RewriteStep {
            kms,
            active: &active,
            file_id: &file_id,
        };
        if let Some(done) = rewrite_one(run, &step, r, latest, &mut report).await? {
            replacements.push(done);
        }
    }
    finish_replacements(run, &replacements, latest, &mut report).await?;
    Ok(report)
}

/// What one rewrite needs besides the sweep's own.
struct RewriteStep<'a> {
    kms: &'a dyn Kms,
    active: &'a [&'a Hold],
    file_id: &'a str,
}

/// Rewrites one planned file and swaps it in its manifest; `None` when the file is gone or
/// every record survives.
async fn rewrite_one(
    run: &SweepRun<'_>,
    step: &RewriteStep<'_>,
    r: &RewriteInfo,
    latest: &mut Latest,
    report: &mut SweepReport,
) -> Result<Option<Replacement>, SweepError> {
    let (store, now, sweep_id) = (run.store, run.now, run.sweep_id);
    let p = &r.file.partition;
    let Some(base) = latest.get(p) else {
        return Ok(None);
    };
    let Some(old) = find(base, &r.file.path).cloned() else {
        return Ok(None);
    };
    let outcome =
        match rewrite::rewrite_file(store, step.kms, p, &old, step.active, now, step.file_id).await
        {
            // a tenant's own key is unavailable: its file waits, the rest of the sweep goes on
            Err(SweepError::Kms(e)) if e.tenant().is_some() => {
                report.key_waiting.push(format!("{}: {e}", old.path));
                return Ok(None);
            }
            o => o?,
        };
    let done = match outcome {
        rewrite::Outcome::Unchanged => {
            report.unchanged.push(old.path.clone());
            return Ok(None);
        }
        rewrite::Outcome::Rewritten(done) => done,
    };
    run.failpoints.hit("sweep.after_rewrite_written");
    // the new file's directory entry is durable before the manifest names it
    store.sync().await?;
    run.fence.check().await?;
    let new = done.entry.clone();
    let commit = manifest::commit_edit(store, p, base, sweep_id, now, |m| {
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
    }
    latest.committed(p, commit)?;
    run.failpoints.hit("sweep.after_rewrite_commit");
    let event = Rewrote {
        sweep_id,
        path: &old.path,
        replaced_by: &new.path,
        reason: r.reason,
        records_kept: done.kept,
        records_dropped: done.dropped,
        holds: &done.holds.keys().cloned().collect::<Vec<_>>(),
        dek_unwrapped: &old.encryption.dek_id,
        dek_created: &new.encryption.dek_id,
    };
    run.audit.record(run.actor, None, &event).await?;
    report.files_rewritten += 1;
    report.records_kept += done.kept;
    report.records_removed += done.dropped;
    Ok(Some(Replacement {
        partition: p.clone(),
        old: old.location()?,
        new: new.location()?,
        records: old.record_count,
        latest_expiry: old.latest_expiry,
        holds: done.holds,
    }))
}

fn find<'a>(l: &'a Loaded, path: &Path) -> Option<&'a DataFileEntry> {
    l.manifest.files.iter().find(|f| f.path == path.as_ref())
}

/// Whole files whose every record expired: manifest first, then the object through the lock.
async fn delete_whole(
    run: &SweepRun<'_>,
    plan: &SweepPlan,
    latest: &mut Latest,
    report: &mut SweepReport,
) -> Result<(), SweepError> {
    let (store, now, sweep_id) = (run.store, run.now, run.sweep_id);
    let mut by_partition: BTreeMap<&Partition, Vec<&FileInfo>> = Default::default();
    for f in &plan.delete {
        by_partition.entry(&f.partition).or_default().push(f);
    }
    for (p, files) in by_partition {
        let Some(base) = latest.get(p) else {
            continue;
        };
        let mut removing = Vec::new();
        for f in files {
            match lock_refusal(store, &f.path, now).await? {
                Some(reason) => {
                    run.refused(f.path.as_ref(), &reason).await?;
                    report.refused.push(f.path.to_string());
                }
                None if find(base, &f.path).is_some() => removing.push(f),
                None => {}
            }
        }
        if removing.is_empty() {
            continue;
        }
        let paths: Vec<String> = removing.iter().map(|f| f.path.to_string()).collect();
        run.fence.check().await?;
        // the new version is durable (file and directory) when the put returns: only then go
        // the objects it removes
        let commit = manifest::commit_removal(store, p, base, &paths, sweep_id, now).await?;
        latest.committed(p, commit)?;
        for f in removing {
            store.delete_checked(&f.path, now).await?;
            let event = Deleted {
                sweep_id,
                path: f.path.as_ref(),
                records: f.record_count as u64,
                latest_expiry: f.latest_expiry,
                replaced_by: None,
            };
            run.audit.record(run.actor, None, &event).await?;
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
    latest: &mut Latest,
    report: &mut SweepReport,
) -> Result<(), SweepError> {
    if replacements.is_empty() {
        return Ok(());
    }
    protect_new_files(run.store, replacements, latest).await?;
    run.failpoints.hit("sweep.before_registry");
    run.fence.check().await?;
    let listed = move_listings(run.store, replacements).await?;
    run.failpoints.hit("sweep.after_registry");
    run.fence.check().await?;
    let deleted = delete_old_files(run, replacements, &listed, report).await?;
    run.failpoints.hit("sweep.after_old_deleted");
    // the history says when each old file left storage
    let (now, sweep_id) = (run.now, run.sweep_id);
    for (p, paths) in deleted {
        let Some(base) = latest.get(&p) else {
            continue;
        };
        run.fence.check().await?;
        let commit = manifest::commit_edit(run.store, &p, base, sweep_id, now, |m| {
            for r in m
                .removed
                .iter_mut()
                .filter(|r| r.awaiting_deletion() && paths.contains(&r.path.as_str()))
            {
                r.deleted_at = Some(now);
            }
        })
        .await?;
        latest.committed(&p, commit)?;
    }
    Ok(())
}

/// Step 1: the new file is protected before the old one stops being (its lock, and its
/// legal-hold flag when a hold covers survivors or the old file was pinned).
async fn protect_new_files(
    store: &Store,
    replacements: &[Replacement],
    latest: &Latest,
) -> Result<(), SweepError> {
    for r in replacements {
        if let Some(entry) = latest.get(&r.partition).and_then(|l| find(l, &r.new)) {
            store.ensure_retained(&r.new, entry.latest_expiry).await?;
        }
        if (!r.holds.is_empty() || store.lock(&r.old).await?.legal_hold)
            && store.head(&r.new).await?.is_some()
        {
            store.legal_hold(&r.new, true).await?;
        }
    }
    Ok(())
}

/// Step 2: one registry version, listings moved from the old files to the new ones. Returns
/// the files active holds list afterwards.
async fn move_listings(
    store: &Store,
    replacements: &[Replacement],
) -> Result<HashSet<String>, SweepError> {
    let (registry, sha) = hold::load(store).await?;
    let mut holds = registry.holds.clone();
    let mut changed = false;
    for h in holds.iter_mut().filter(|h| h.active()) {
        for r in replacements {
            changed |= move_listing(h, r);
        }
    }
    if changed && !hold::commit(store, &registry, sha, holds.clone()).await? {
        return Err(SweepError::Conflict("the hold registry".into()));
    }
    Ok(holds
        .iter()
        .filter(|h| h.active())
        .flat_map(|h| h.files.iter().cloned())
        .collect())
}

/// Moves one hold's listing of a replaced file to its replacement; whether it changed.
fn move_listing(h: &mut Hold, r: &Replacement) -> bool {
    let (old, new) = (r.old.to_string(), r.new.to_string());
    let mut changed = false;
    let listed_old = h.files.contains(&old);
    if listed_old {
        h.files.retain(|f| f != &old);
        changed = true;
    }
    if (listed_old || r.holds.contains_key(&h.hold_id)) && !h.files.contains(&new) {
        h.files.push(new.clone());
        changed = true;
    }
    if listed_old && h.covered.remove(&old).is_some() {
        changed = true;
    }
    if let Some(n) = r.holds.get(&h.hold_id).filter(|_| h.files.contains(&new)) {
        changed |= h.covered.insert(new, *n) != Some(*n);
    }
    changed
}

/// Step 3: the old files, unpinned when no hold lists them, deleted when the lock allows.
/// Returns the deleted ones per partition.
async fn delete_old_files<'r>(
    run: &SweepRun<'_>,
    replacements: &'r [Replacement],
    listed: &HashSet<String>,
    report: &mut SweepReport,
) -> Result<BTreeMap<Partition, Vec<&'r str>>, SweepError> {
    let (store, now) = (run.store, run.now);
    let mut deleted: BTreeMap<Partition, Vec<&str>> = BTreeMap::new();
    for r in replacements {
        let old = r.old.as_ref();
        let still_listed = listed.contains(old);
        let mut lock = store.lock(&r.old).await?;
        let unpins = run.step != super::sweep::SweepStep::Delete;
        if !still_listed && lock.legal_hold && unpins {
            store.legal_hold(&r.old, false).await?;
            lock.legal_hold = false;
        }
        match store.refusal(&lock, now) {
            Some(_) if still_listed => {
                let reason = "under legal hold (an active hold still lists the rewritten file)";
                run.refused(old, reason).await?;
                report.refused.push(old.to_string());
            }
            Some(_) => report.awaiting_lock.push(old.to_string()),
            // a rewrite step leaves the delete to the delete step's principal
            None if run.step == super::sweep::SweepStep::Rewrite => {
                report.awaiting_lock.push(old.to_string())
            }
            None => {
                store.delete_checked(&r.old, now).await?;
                let event = Deleted {
                    sweep_id: run.sweep_id,
                    path: old,
                    records: r.records,
                    latest_expiry: r.latest_expiry,
                    replaced_by: Some(r.new.as_ref()),
                };
                run.audit.record(run.actor, None, &event).await?;
                report.files_removed += 1;
                deleted.entry(r.partition.clone()).or_default().push(old);
            }
        }
    }
    Ok(deleted)
}
