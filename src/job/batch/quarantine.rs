//! Stage 3b, quarantine: every line that is not stored goes to quarantine with its original
//! bytes and why (create-only entries, ids from segment and line). A replayed line that fails
//! again updates its entry (attempts, new reason); one that is stored now leaves quarantine at
//! the commit ([`Replays::passed`]).

use super::decode::{DecodedBlock, RejectedLine};
use super::read::OpenSegment;
use super::report::BatchReport;
use crate::job::{Context, JobError};
use crate::lake::layout;
use crate::landing::quarantine::{self, Origin};
use std::collections::{BTreeSet, HashSet};

/// Writes the batch's quarantine entries.
pub(super) struct Quarantine<'a> {
    rt: &'a tokio::runtime::Handle,
    ctx: &'a Context,
    batch_id: &'a str,
    writer: Option<quarantine::Writer>,
    /// Ids of events refused because their retention had ended (audited at the commit).
    pub(super) expired_ids: Vec<String>,
    replays: Replays,
}

/// Quarantine entries replayed in this batch, and those whose line failed again.
#[derive(Default)]
struct Replays {
    /// (segment index, entry id) of every replayed line seen.
    seen: Vec<(usize, String)>,
    still_failing: HashSet<String>,
}

impl<'a> Quarantine<'a> {
    pub(super) fn new(rt: &'a tokio::runtime::Handle, ctx: &'a Context, batch_id: &'a str) -> Self {
        Quarantine {
            rt,
            ctx,
            batch_id,
            writer: None,
            expired_ids: Vec::new(),
            replays: Replays::default(),
        }
    }

    /// Notes the replayed entries a block's lines stand for (`base`: lines of the segment's
    /// earlier blocks).
    pub(super) fn note_replays(&mut self, block: &DecodedBlock, base: u64) {
        let replay_of = &block.segment.segment.header.replay_of;
        self.replays.seen.extend(
            replay_of
                .iter()
                .skip(base as usize)
                .take(block.lines as usize)
                .map(|id| (block.segment.index, id.clone())),
        );
    }

    /// Puts one rejected line of `segment` in quarantine.
    pub(super) fn put(
        &mut self,
        segment: &OpenSegment,
        base: u64,
        l: RejectedLine,
        report: &mut BatchReport,
    ) -> Result<(), JobError> {
        let (rt, ctx) = (self.rt, self.ctx);
        if let Some(id) = l.expired {
            report.expired_on_arrival += 1;
            self.expired_ids.push(id);
        }
        if self.writer.is_none() {
            let w = rt.block_on(quarantine::Writer::new(ctx.kms.as_ref(), self.batch_id))?;
            self.writer = Some(w);
        }
        let h = &segment.segment.header;
        let line_no = base + l.line + 1;
        let entry_id = h.replay_of.get(line_no as usize - 1).map(String::as_str);
        if let Some(id) = entry_id {
            self.replays.still_failing.insert(id.to_string());
        }
        let origin = Origin {
            source: &h.source,
            tenant: h.tenant.as_deref(),
            entry_id,
            arrived_at: h.arrived_at,
            segment_id: &h.segment_id,
            line_no,
        };
        let writer = self.writer.as_ref().expect("created");
        let entry = writer.seal(&origin, &l.reject, &l.original, ctx.clock.now());
        rt.block_on(store_entry(ctx, entry_id, entry))?;
        report.quarantined += 1;
        *report.quarantined_by_code.entry(l.reject.code).or_default() += 1;
        ctx.fail("batch.after_quarantine_write");
        Ok(())
    }

    /// Replayed entries whose lines are stored now (not failing again, their segment not
    /// kept in landing): they leave quarantine at the commit.
    pub(super) fn passed(self, kept: &BTreeSet<usize>) -> Vec<String> {
        let Replays {
            seen,
            still_failing,
        } = self.replays;
        seen.into_iter()
            .filter(|(seg, id)| !still_failing.contains(id) && !kept.contains(seg))
            .map(|(_, id)| id)
            .collect()
    }
}

/// Writes an entry; a replayed line that fails again replaces its entry, which keeps its
/// provenance and counts the attempt, with the new reason (its replay segment is still in
/// landing until the commit, so a crash here loses nothing).
async fn store_entry(
    ctx: &Context,
    entry_id: Option<&str>,
    mut entry: quarantine::Entry,
) -> Result<(), JobError> {
    let store = &ctx.store;
    if let Some(id) = entry_id
        && let Ok(old) = quarantine::get(store, id).await
    {
        entry.attempts = old.attempts + 1;
        entry.arrived_at = old.arrived_at;
        entry.segment_id = old.segment_id;
        entry.line_no = old.line_no;
        store.delete(&layout::quarantine_entry(id)).await?;
    }
    quarantine::put(store, &entry).await?;
    Ok(())
}
