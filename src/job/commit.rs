//! A batch's recovery (at its start) and commit (at its end), in the order that keeps every
//! step on stable storage before anything depends on it.

use super::batch::{BatchReport, Outcome, UnreadableSegment};
use super::lease::Lease;
use super::{Context, JobError};
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{self, Commit, DataFileEntry, Loaded};
use crate::storage::{Put, Store};
use futures::StreamExt;
use object_store::path::Path;
use std::collections::{BTreeMap, BTreeSet};

const ACTOR: &str = "holdfast-batch";

/// At every batch start, under the lease: staging files of a killed writer removed; the
/// latest manifests read (a partition whose latest version is damaged is reported and left
/// alone); what interrupted batches and sweeps left finished (their intent records name their
/// files: recorded in the head, audited, their uncommitted unlocked files removed; nothing
/// else is ever removed here); the store checked against its signed head (a rolled-back or
/// truncated store is refused); missing storage locks of committed files set. Returns the
/// latest manifests and the damaged partitions.
pub(super) async fn recover(
    ctx: &Context,
    report: &mut BatchReport,
) -> Result<Recovered, JobError> {
    let store = &ctx.store;
    report.staging_removed = store.remove_abandoned_staging() as u64;
    let (loaded, damaged) = manifest::load_latest_each(store).await?;
    let latest: BTreeMap<Partition, Loaded> = loaded
        .into_iter()
        .map(|l| (l.manifest.partition.clone(), l))
        .collect();
    report.damaged_partitions = damaged
        .iter()
        .map(|d| format!("{} (v{}: {})", d.partition, d.sequence, d.problem))
        .collect();
    let damaged: BTreeSet<Partition> = damaged.into_iter().map(|d| d.partition).collect();
    let audit = crate::audit::Audit::new(store.clone(), ctx.clock.clone());
    let committer = crate::head::Committer {
        store,
        kms: ctx.kms.as_ref(),
        audit: &audit,
    };
    let recovery =
        crate::head::intent::recover(committer, &latest, &damaged, ctx.clock.now()).await?;
    report.leftovers_removed = recovery.leftovers_removed;
    report.leftovers_locked = recovery.leftovers_locked;
    // never build on a store that no longer matches its signed head (rolled back, truncated);
    // a partition whose manifest cannot be read is left alone instead (reported above)
    crate::head::check_current(store, &audit, &latest, &damaged).await?;
    report.locks_repaired = repair_locks(store, latest.values()).await?;
    Ok(Recovered { latest, damaged })
}

/// The partitions as a batch found them after recovery.
#[derive(Debug, Clone, Default)]
pub(super) struct Recovered {
    /// Each partition's latest manifest.
    pub(super) latest: BTreeMap<Partition, Loaded>,
    /// Partitions whose latest manifest cannot be read: nothing is written to them.
    pub(super) damaged: BTreeSet<Partition>,
}

/// What the commit of one batch works from, besides what processing produced.
pub(super) struct Committing<'a> {
    pub(super) batch_id: &'a str,
    pub(super) lease: &'a Lease,
    /// The landing segments the batch took, in order.
    pub(super) picked: &'a [Path],
    pub(super) latest: &'a BTreeMap<Partition, Loaded>,
    /// The holds protecting when the batch started, which its rows were counted against.
    pub(super) holds: &'a crate::retention::hold::HoldSnapshot,
}

/// A killed batch may have committed manifests before locking their files. Sets every
/// committed file's retain-until to at least its latest expiry; returns how many needed it.
/// Reads the lock records only (a few at a time), never a data file.
pub(crate) async fn repair_locks<'a>(
    store: &Store,
    latest: impl Iterator<Item = &'a Loaded>,
) -> Result<u64, JobError> {
    let files: Vec<&DataFileEntry> = latest.flat_map(|l| l.manifest.files.iter()).collect();
    let mut checks = futures::stream::iter(files)
        .map(|f| async move {
            let path = f.location()?;
            let lock = store.lock(&path).await?;
            if lock.retain_until.is_none_or(|u| u < f.latest_expiry) {
                store.ensure_retained(&path, f.latest_expiry).await?;
                return Ok::<_, JobError>(1);
            }
            Ok(0)
        })
        .buffer_unordered(32);
    let mut repaired = 0;
    while let Some(n) = checks.next().await {
        repaired += n?;
    }
    Ok(repaired)
}

/// The commit, in this order; the barriers make each step durable before the next depends
/// on it, and the lease is checked (fencing) before each step that commits:
/// 1. the data files, each fsynced as it was completed: one directory barrier for all of them
///    (and for the quarantine entries written meanwhile);
/// 2. per partition: the manifest version (create-only) and its files' storage locks; one
///    barrier for every partition's;
/// 3. holds on the new files (a registry commit), replayed entries out of quarantine, the
///    batch's audit entry;
/// 4. damaged segments moved to `failed/` (each copied, audited, then removed from landing);
/// 5. the consumed landing segments deleted; a last barrier.
pub(super) async fn commit(
    ctx: &Context,
    c: &Committing<'_>,
    outcome: Outcome,
    report: &mut BatchReport,
) -> Result<(), JobError> {
    let Committing {
        batch_id,
        lease,
        picked,
        ..
    } = *c;
    let store = &ctx.store;
    let group = store.deferred();
    // 1.
    store.sync().await?;
    // 2.
    let now = ctx.clock.now();
    let change = commit_manifests(ctx, c, &outcome, now).await?;
    // 3.
    lease.check().await?;
    ctx.fail("batch.before_holds");
    // records that arrive for an active legal hold are held from the start: decided from the
    // rows the batch wrote, never by reading the new files back
    let new_files: Vec<crate::retention::hold::NewFile<'_>> = outcome
        .files
        .iter()
        .map(|w| crate::retention::hold::NewFile {
            entry: &w.entry,
            coverage: &w.coverage,
        })
        .collect();
    report.held_new_files =
        crate::retention::hold::apply_to_new(store, c.holds, &new_files, now).await?;
    let new_files: Vec<DataFileEntry> = outcome.files.iter().map(|w| w.entry.clone()).collect();
    // replayed lines that are stored now (or were already) leave quarantine
    for id in &outcome.passed {
        group.delete(&layout::quarantine_entry(id)).await?;
    }
    report.replayed_out = outcome.passed.len() as u64;
    let failed: BTreeSet<usize> = outcome.unreadable.iter().map(|u| u.index).collect();
    let consumed: Vec<&Path> = picked
        .iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(i) && !outcome.kept.contains(i))
        .map(|(_, p)| p)
        .collect();
    report.segments_kept = outcome.kept.len() as u64;
    let audit = crate::audit::Audit::new(store.clone(), ctx.clock.clone());
    report.kms = ctx.kms.calls();
    // the segments of the objects consumed, each by its own id (an object may hold several)
    let consumed_ids: Vec<String> = outcome
        .segment_ids
        .iter()
        .filter(|(i, _)| !failed.contains(i) && !outcome.kept.contains(i))
        .map(|(_, id)| id.clone())
        .collect();
    record_batch(
        &audit,
        batch_id,
        outcome.segment_ids.len(),
        consumed_ids,
        &new_files,
        &change,
        report,
    )
    .await?;
    // the signed head records every manifest, the hold registry and the audit trail as of
    // now; then the batch's intent record goes (what it wrote is committed)
    lease.check().await?;
    let committer = crate::head::Committer {
        store,
        kms: ctx.kms.as_ref(),
        audit: &audit,
    };
    crate::head::commit(committer, &change, ctx.clock.now()).await?;
    crate::head::intent::end(store, batch_id).await?;
    // 4.
    for UnreadableSegment { index, reason } in &outcome.unreadable {
        lease.check().await?;
        isolate(ctx, &group, batch_id, &picked[*index], reason, report).await?;
    }
    // 5.
    ctx.fail("batch.before_landing_delete");
    lease.check().await?;
    for (i, path) in consumed.into_iter().enumerate() {
        group.delete(path).await?;
        ctx.fail(&format!("batch.after_landing_delete:{}", i + 1));
    }
    group.sync().await?;
    Ok(())
}

/// Step 2: per partition, the manifest version (create-only); then the files' storage locks;
/// one barrier for every partition's. The versions are staged (written and fsynced) a window
/// ahead, so that their fsyncs overlap, and linked one by one in partition order, each after a
/// lease check; the locks are set several at a time once every version is linked (a crash in
/// between leaves committed files without a lock, which the next batch sets first of all).
/// Returns the change the signed head records.
async fn commit_manifests(
    ctx: &Context,
    c: &Committing<'_>,
    outcome: &Outcome,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::head::Change, JobError> {
    let group = ctx.store.deferred();
    let mut by_partition: BTreeMap<&Partition, Vec<DataFileEntry>> = BTreeMap::new();
    for w in &outcome.files {
        by_partition
            .entry(&w.partition)
            .or_default()
            .push(w.entry.clone());
    }
    let (batch_id, lease, latest) = (c.batch_id, c.lease, c.latest);
    let mut change = crate::head::Change::new(format!("batch {batch_id}"));
    let group_ref = &group;
    let mut staged = futures::stream::iter(by_partition)
        .map(|(p, entries)| async move {
            let next = manifest::next_version(p, latest.get(p), entries, batch_id, now)?;
            let s = group_ref
                .stage_new(&next.path(), next.bytes().to_vec())
                .await?;
            Ok::<_, JobError>((p, next, s))
        })
        .buffered(AT_ONCE);
    let mut i = 0;
    while let Some(next) = staged.next().await {
        let (p, next, s) = next?;
        lease.check().await?;
        match manifest::commit_staged(&group, next, s).await? {
            Commit::Committed(l) => change.manifest(&l),
            Commit::LostRace { .. } => return Err(JobError::Conflict { partition: p.dir() }),
        }
        i += 1;
        ctx.fail(&format!("batch.after_manifest:{i}"));
    }
    drop(staged);
    // committed: the storage layer now refuses to delete them before their last record expires
    let locks: Vec<_> = outcome
        .files
        .iter()
        .map(|w| Ok((w.entry.location()?, w.entry.latest_expiry)))
        .collect::<Result<_, crate::lake::LakeError>>()?;
    let mut locking = futures::stream::iter(locks)
        .map(|(path, until)| async move { group_ref.ensure_retained(&path, until).await })
        .buffer_unordered(AT_ONCE);
    while let Some(done) = locking.next().await {
        done?;
    }
    group.sync().await?;
    Ok(change)
}

/// Manifest versions staged ahead, and lock records written, at once.
const AT_ONCE: usize = 32;

/// The batch's audit entries: the landing DEKs it unwrapped and the segments it consumed
/// (before they go), and the events that arrived expired.
async fn record_batch(
    audit: &crate::audit::Audit,
    batch_id: &str,
    opened: usize,
    segments: Vec<String>,
    committed: &[DataFileEntry],
    change: &crate::head::Change,
    report: &BatchReport,
) -> Result<(), JobError> {
    let event = crate::audit::BatchCommitted {
        batch_id,
        deks_unwrapped: opened as u64,
        segments,
        stored: report.stored,
        quarantined: report.quarantined,
        files: report.files,
        committed_files: committed.iter().map(|f| f.path.clone()).collect(),
        partitions: change
            .partitions
            .iter()
            .map(|(p, pos)| (p.dir(), pos.sequence))
            .collect(),
        recovered: false,
        kms: Some(report.kms),
    };
    audit.record(ACTOR, None, &event).await?;
    if report.expired_on_arrival > 0 {
        let e = crate::audit::ExpiredOnArrival {
            batch_id,
            events: report.expired_on_arrival,
            event_ids: &report.expired_ids,
        };
        audit.record(ACTOR, None, &e).await?;
    }
    Ok(())
}

/// Moves a damaged landing segment aside, whole: copied create-only to `failed/` (durable),
/// audited, then removed from landing (synced with the other landing deletes). A rerun after
/// a crash finds the copy already there and goes on.
async fn isolate(
    ctx: &Context,
    group: &Store,
    batch_id: &str,
    path: &Path,
    reason: &str,
    report: &mut BatchReport,
) -> Result<(), JobError> {
    let store = &ctx.store;
    let id = layout::parse_landing_segment(path).expect("picked segments have landing names");
    let bytes = store.get(path).await?;
    let several = layout::holds_several(path);
    let mut to = layout::failed_segment(&id, None, several);
    if store.put_new(&to, bytes.clone()).await? == Put::AlreadyExists
        && store.get(&to).await? != bytes
    {
        to = layout::failed_segment(&id, Some(batch_id), several);
        store.put_new(&to, bytes).await?;
    }
    let event = crate::audit::SegmentIsolated {
        batch_id,
        segment: &id,
        moved_to: to.as_ref(),
        reason,
    };
    crate::audit::Audit::new(store.clone(), ctx.clock.clone())
        .record(ACTOR, None, &event)
        .await?;
    group.delete(path).await?;
    report.segments_isolated += 1;
    report.isolated.push(to.to_string());
    Ok(())
}
