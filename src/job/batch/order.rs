//! Stage 3, order and dedupe (the coordinator thread): puts decoded blocks back in landing
//! order, drops events already stored (the partition's committed `event_id` column) or seen
//! earlier in the batch, keeps events for a damaged partition in landing, and sends each row
//! to the sink and each rejected line to quarantine.

use super::decode::{Decoded, DecodedBlock, DecodedRow};
use super::keys::IdKey;
use super::quarantine::Quarantine;
use super::report::BatchReport;
use super::sink::Sink;
use super::{Outcome, Stages};
use crate::job::commit::Recovered;
use crate::job::{Context, JobError};
use crate::lake::datafile::{self};
use crate::lake::layout::Partition;
use crate::lake::manifest::Loaded;
use crate::storage::Store;
use arrow::array::AsArray;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::{BTreeMap, BTreeSet};

/// Decoded blocks in landing order, whatever order the workers finish them in.
struct Order {
    pending: BTreeMap<u64, DecodedBlock>,
    next: u64,
    /// Lines of earlier blocks, per segment index, to number lines within a segment.
    seg_lines: HashMap<usize, u64>,
}

impl Order {
    fn new() -> Self {
        Order {
            pending: BTreeMap::new(),
            next: 0,
            seg_lines: HashMap::new(),
        }
    }

    fn push(&mut self, b: DecodedBlock) {
        self.pending.insert(b.seq, b);
    }

    /// The next block in landing order, if it is here, with the lines of its segment's
    /// earlier blocks.
    fn next_block(&mut self) -> Option<(DecodedBlock, u64)> {
        let b = self.pending.remove(&self.next)?;
        self.next += 1;
        let base = *self.seg_lines.get(&b.segment.index).unwrap_or(&0);
        self.seg_lines.insert(b.segment.index, base + b.lines);
        Some((b, base))
    }
}

/// Dedupe state of one partition: ids committed before this batch, ids taken by it.
struct Seen {
    committed: HashSet<IdKey>,
    batch: HashSet<IdKey>,
}

/// Dedupe on tenant + event id, per partition.
struct Dedupe<'a> {
    rt: &'a tokio::runtime::Handle,
    store: &'a Store,
    latest: &'a BTreeMap<Partition, Loaded>,
    seen: HashMap<Partition, Seen>,
}

impl Dedupe<'_> {
    /// Whether the row is new (neither committed nor taken earlier in the batch).
    fn admit(&mut self, r: &DecodedRow, report: &mut BatchReport) -> Result<bool, JobError> {
        let part = &r.file.partition;
        if !self.seen.contains_key(part) {
            let committed = self
                .rt
                .block_on(committed_ids(self.store, self.latest.get(part)))?;
            let s = Seen {
                committed,
                batch: HashSet::new(),
            };
            self.seen.insert(part.clone(), s);
        }
        let s = self.seen.get_mut(part).expect("inserted");
        if s.committed.contains(&r.key) {
            report.already_stored += 1;
            Ok(false)
        } else if !s.batch.insert(r.key) {
            report.duplicates_in_batch += 1;
            Ok(false)
        } else {
            Ok(true)
        }
    }
}

/// The coordinator: receives decoded blocks until the workers are done, then closes the
/// sink's files.
pub(super) fn coordinate(
    st: &Stages<'_>,
    found: &Recovered,
    rx: crossbeam_channel::Receiver<Result<DecodedBlock, JobError>>,
    report: &mut BatchReport,
) -> Result<Outcome, JobError> {
    let ctx: &Context = st.ctx;
    let mut order = Order::new();
    let mut dedupe = Dedupe {
        rt: st.rt,
        store: &ctx.store,
        latest: &found.latest,
        seen: HashMap::new(),
    };
    let mut sink = Sink::new(st);
    let mut quarantine = Quarantine::new(st.rt, ctx, st.batch_id);
    let mut kept: BTreeSet<usize> = BTreeSet::new();
    for msg in rx {
        order.push(msg?);
        while let Some((block, base)) = order.next_block() {
            quarantine.note_replays(&block, base);
            report.lines += block.lines;
            report.blank_lines += block.blank;
            for item in block.items {
                match item {
                    Decoded::Row(r) if found.damaged.contains(&r.file.partition) => {
                        // its latest manifest cannot be read: nothing is written there; the
                        // segment stays in landing until the partition is repaired
                        report.events_blocked += 1;
                        kept.insert(block.segment.index);
                    }
                    Decoded::Row(r) => {
                        if dedupe.admit(&r, report)? {
                            sink.accept(r.file, r.row, r.plain, report)?;
                        }
                    }
                    Decoded::Rejected(l) => quarantine.put(&block.segment, base, l, report)?,
                    Decoded::Waiting(tenant) => {
                        // its tenant's own key is unavailable: the segment stays in landing
                        let w = report.tenants_waiting.entry(tenant).or_default();
                        w.events += 1;
                        w.segments.insert(block.segment.index);
                        kept.insert(block.segment.index);
                    }
                }
            }
        }
    }
    if !order.pending.is_empty() {
        return Err(JobError::Worker(
            "a worker stopped before its work was done".into(),
        ));
    }
    report.expired_ids = crate::audit::id_list(std::mem::take(&mut quarantine.expired_ids));
    let passed = quarantine.passed(&kept);
    Ok(Outcome {
        files: sink.finish(report)?,
        passed,
        kept,
        unreadable: Vec::new(),
        segment_ids: Vec::new(),
    })
}

/// The dedupe keys of a partition's committed events (its files' `tenant_id` and `event_id`
/// columns).
async fn committed_ids(store: &Store, latest: Option<&Loaded>) -> Result<HashSet<IdKey>, JobError> {
    let mut ids = HashSet::new();
    let Some(l) = latest else { return Ok(ids) };
    for f in &l.manifest.files {
        let path = f.location()?;
        let columns = ["tenant_id", "event_id"];
        for b in datafile::read_columns(store, &path, f.size_bytes, &columns).await? {
            // projected columns come in file order: look them up by name
            let column = |name: &str| {
                b.column_by_name(name)
                    .map(|c| c.as_string::<i32>().clone())
                    .ok_or_else(|| crate::lake::LakeError::Corrupt {
                        object: path.to_string(),
                        problem: format!("no column {name}"),
                    })
            };
            let (tenants, events) = (column("tenant_id")?, column("event_id")?);
            for (t, e) in tenants.iter().zip(events.iter()) {
                if let (Some(t), Some(e)) = (t, e) {
                    ids.insert(IdKey::of(t, e));
                }
            }
        }
    }
    Ok(ids)
}
