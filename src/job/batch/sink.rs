//! The batch's coordinator: landing order, dedupe (tenant + event id), quarantine, and the
//! sink that streams rows into one data file per partition and policy (see [`super`]).

use super::*;
use crate::crypto::{Dictionary, RecordCompressor, record_aad, seal_record};
use crate::job::{Context, JobError};
use crate::lake::datafile::{self, FileWriter, Row};
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{DataFileEntry, FileEncryption, Loaded};
use crate::landing::quarantine::{self, Origin};
use crate::storage::Store;
use arrow::array::AsArray;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Dedupe state of one partition: ids committed before this batch, ids taken by it.
struct Seen {
    committed: HashSet<[u8; 16]>,
    batch: HashSet<[u8; 16]>,
}

struct OpenFile {
    writer: FileWriter,
    /// When a row last went in (a counter), to flush the least recently used file first.
    last_used: u64,
    keys: Arc<PartKeys>,
    wrapped: crate::crypto::kms::WrappedKey,
    min_occ: i64,
    max_occ: i64,
    min_exp: i64,
    max_exp: i64,
    tenants: BTreeSet<String>,
    policies: BTreeSet<String>,
}

/// A row held back with its plaintext record until its partition's dictionary is learnt.
type Held = (Box<Row>, Vec<u8>);

/// The rows one file holds back while its dictionary is learnt, and the bytes they take.
#[derive(Default)]
struct Learning {
    rows: Vec<Held>,
    bytes: usize,
}

/// Where deduplicated rows go: the open data files, and the rows of partitions whose
/// dictionary is still being learnt.
struct Sink<'a> {
    rt: &'a tokio::runtime::Handle,
    ctx: &'a Context,
    batch_id: &'a str,
    keys: &'a KeyBook,
    /// The budget for open files and rows held back for learning, together.
    memory_bytes: usize,
    open: BTreeMap<FileKey, OpenFile>,
    learning: HashMap<FileKey, Learning>,
    /// Bytes of every row held back for learning.
    learning_bytes: usize,
    z: RecordCompressor,
    since_check: usize,
    rows_written: u64,
}

impl Sink<'_> {
    /// Takes a row whose payload may still be plaintext beside it.
    fn accept(
        &mut self,
        part: FileKey,
        mut row: Box<Row>,
        plain: Option<Vec<u8>>,
        report: &mut BatchReport,
    ) -> Result<(), JobError> {
        let Some(plain) = plain else {
            return self.write(part, row, report);
        };
        let pk = self.keys.part(&part);
        if let Some(dict) = pk.dict.get().cloned() {
            self.seal(&pk, dict.as_deref(), &mut row, plain);
            return self.write(part, row, report);
        }
        let held = row.heap_size() + plain.capacity();
        let l = self.learning.entry(part.clone()).or_default();
        l.rows.push((row, plain));
        l.bytes += held;
        self.learning_bytes += held;
        if l.rows.len() >= TRAIN_ROWS {
            self.learn(part, report)?;
        }
        // rows held back count against the memory budget: past half of it, the file holding
        // back the most learns its dictionary now, from fewer rows (plain zstd if too few)
        while self.learning_bytes > self.memory_bytes / 2 {
            let Some(biggest) = self
                .learning
                .iter()
                .max_by_key(|(_, l)| l.bytes)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.learn(biggest, report)?;
        }
        Ok(())
    }

    fn seal(
        &mut self,
        pk: &PartKeys,
        dict: Option<&Dictionary>,
        row: &mut Row,
        mut plain: Vec<u8>,
    ) {
        let aad = record_aad(
            &row.tenant_id,
            &row.event_id,
            &row.interaction_id,
            pk.cipher.dek_id(),
        );
        seal_record(
            &pk.cipher,
            &mut self.z,
            dict,
            &plain,
            &aad,
            &mut row.payload,
        );
        zeroize::Zeroize::zeroize(&mut plain);
    }

    /// Trains the partition's dictionary on the rows held back, publishes it to the workers,
    /// then seals and writes those rows. Too few rows to learn from: plain zstd.
    fn learn(&mut self, part: FileKey, report: &mut BatchReport) -> Result<(), JobError> {
        let Learning { rows, bytes } = self.learning.remove(&part).unwrap_or_default();
        self.learning_bytes -= bytes;
        let pk = self.keys.part(&part);
        let samples: Vec<&[u8]> = rows.iter().map(|(_, p)| p.as_slice()).collect();
        let dict = Dictionary::train(&samples).map(Arc::new);
        let _ = pk.dict.set(dict.clone());
        for (mut row, plain) in rows {
            self.seal(&pk, dict.as_deref(), &mut row, plain);
            self.write(part.clone(), row, report)?;
        }
        Ok(())
    }

    fn write(
        &mut self,
        part: FileKey,
        row: Box<Row>,
        report: &mut BatchReport,
    ) -> Result<(), JobError> {
        if !self.open.contains_key(&part) {
            let f = self
                .rt
                .block_on(open_file(self.ctx, self.batch_id, &part, self.keys))?;
            self.open.insert(part.clone(), f);
        }
        let f = self.open.get_mut(&part).expect("opened");
        self.since_check += 1;
        f.last_used = self.rows_written;
        self.rows_written += 1;
        f.min_occ = f.min_occ.min(row.occurred_at);
        f.max_occ = f.max_occ.max(row.occurred_at);
        f.min_exp = f.min_exp.min(row.expires_at);
        f.max_exp = f.max_exp.max(row.expires_at);
        if !f.tenants.contains(&row.tenant_id) {
            f.tenants.insert(row.tenant_id.clone());
        }
        if !f.policies.contains(row.policy_id.as_ref()) {
            f.policies.insert(row.policy_id.to_string());
        }
        *report
            .stored_by_type
            .entry(part.partition.interaction_type.clone())
            .or_default() += 1;
        *report
            .stored_by_policy
            .entry(row.policy_id.to_string())
            .or_default() += 1;
        report.stored += 1;
        f.writer.push(*row)?;
        let parts = f.writer.take_pending();
        if !parts.is_empty() {
            self.rt
                .block_on(futures::future::try_join_all(parts))
                .map_err(|e| {
                    crate::lake::LakeError::store("writing", f.writer.path().as_ref(), e)
                })?;
        }
        if self.since_check >= 1024 {
            self.since_check = 0;
            let budget = self.memory_bytes.saturating_sub(self.learning_bytes);
            relieve_memory(self.rt, &mut self.open, budget)?;
        }
        Ok(())
    }

    /// Writes what is held back, closes every file and returns their manifest entries.
    fn finish(mut self, report: &mut BatchReport) -> Result<Finished, JobError> {
        let waiting: Vec<FileKey> = self.learning.keys().cloned().collect();
        for p in waiting {
            self.learn(p, report)?;
        }
        let now = self.ctx.clock.now();
        let mut finished = Vec::new();
        for (part, mut f) in std::mem::take(&mut self.open) {
            let compression = match f.keys.dict.get().and_then(Option::as_ref) {
                Some(d) => {
                    f.writer.add_metadata(
                        "holdfast.dictionary",
                        base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            d.seal(&f.keys.cipher),
                        ),
                    );
                    "zstd+dictionary"
                }
                None => "zstd",
            };
            f.writer
                .add_metadata("holdfast.payload.compression", compression.to_string());
            let (file, mut upload, parts) = f.writer.close()?;
            let failed = |e| crate::lake::LakeError::store("writing", file.path.as_ref(), e);
            self.rt
                .block_on(futures::future::try_join_all(parts))
                .map_err(failed)?;
            self.ctx.fail("batch.before_file_complete");
            self.rt.block_on(upload.complete()).map_err(failed)?;
            report.files += 1;
            report.bytes_written += file.size_bytes;
            let ts = crate::clock::from_micros;
            finished.push((
                part.partition,
                DataFileEntry {
                    path: file.path.to_string(),
                    sha256: file.sha256,
                    size_bytes: file.size_bytes,
                    record_count: file.record_count,
                    min_occurred_at: ts(f.min_occ),
                    max_occurred_at: ts(f.max_occ),
                    earliest_expiry: ts(f.min_exp),
                    latest_expiry: ts(f.max_exp),
                    tenant_ids: f.tenants.into_iter().collect(),
                    policy_ids: f.policies.into_iter().collect(),
                    encryption: FileEncryption {
                        algorithm: crate::crypto::ALGORITHM.into(),
                        compression: compression.into(),
                        aad: "holdfast.record.v1".into(),
                        dek_id: f.keys.dek.id().to_string(),
                        wrapped_dek: f.wrapped,
                    },
                    batch_id: self.batch_id.to_string(),
                    added_at: now,
                },
            ));
        }
        report.partitions = finished
            .iter()
            .map(|(p, _)| p)
            .collect::<BTreeSet<_>>()
            .len() as u64;
        Ok(finished)
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn coordinate(
    rt: &tokio::runtime::Handle,
    ctx: &Context,
    opts: &BatchOptions,
    batch_id: &str,
    parts: Parts<'_>,
    keys: &KeyBook,
    rx: crossbeam_channel::Receiver<Result<Processed, JobError>>,
    report: &mut BatchReport,
) -> Result<Outcome, JobError> {
    let store = &ctx.store;
    let latest = parts.latest;
    let mut kept: BTreeSet<usize> = BTreeSet::new();
    let mut pending: BTreeMap<u64, Processed> = BTreeMap::new();
    let mut next = 0u64;
    let mut seen: HashMap<Partition, Seen> = HashMap::new();
    let mut sink = Sink {
        rt,
        ctx,
        batch_id,
        keys,
        memory_bytes: opts.memory_bytes,
        open: BTreeMap::new(),
        learning: HashMap::new(),
        learning_bytes: 0,
        z: RecordCompressor::default(),
        since_check: 0,
        rows_written: 0,
    };
    let mut qwriter: Option<quarantine::Writer> = None;
    let mut still_failing: HashSet<String> = HashSet::new();
    let mut expired_ids: Vec<String> = Vec::new();
    let mut replayed: Vec<(usize, String)> = Vec::new();
    // lines of earlier blocks, per segment index, to number lines within a segment
    let mut seg_lines: HashMap<usize, u64> = HashMap::new();

    for msg in rx {
        let p = msg?;
        pending.insert(p.seq, p);
        while let Some(p) = pending.remove(&next) {
            next += 1;
            let base = *seg_lines.get(&p.seg.index).unwrap_or(&0);
            seg_lines.insert(p.seg.index, base + p.lines);
            let replay_of = &p.seg.segment.header.replay_of;
            if !replay_of.is_empty() {
                replayed.extend(
                    replay_of
                        .iter()
                        .skip(base as usize)
                        .take(p.lines as usize)
                        .map(|id| (p.seg.index, id.clone())),
                );
            }
            report.lines += p.lines;
            report.blank_lines += p.blank;
            for item in p.items {
                match item {
                    Item::Row(file, _, _, _) if parts.damaged.contains(&file.partition) => {
                        // its latest manifest cannot be read: nothing is written there; the
                        // segment stays in landing until the partition is repaired
                        report.events_blocked += 1;
                        kept.insert(p.seg.index);
                    }
                    Item::Row(file, key, row, plain) => {
                        let part = &file.partition;
                        let s = match seen.get_mut(part) {
                            Some(s) => s,
                            None => {
                                let committed =
                                    rt.block_on(committed_ids(store, latest.get(part)))?;
                                seen.entry(part.clone()).or_insert(Seen {
                                    committed,
                                    batch: HashSet::new(),
                                })
                            }
                        };
                        if s.committed.contains(&key) {
                            report.already_stored += 1;
                        } else if !s.batch.insert(key) {
                            report.duplicates_in_batch += 1;
                        } else {
                            sink.accept(file, row, plain, report)?;
                        }
                    }
                    Item::Reject {
                        line,
                        reject,
                        original,
                        expired,
                    } => {
                        if let Some(id) = expired {
                            report.expired_on_arrival += 1;
                            expired_ids.push(id);
                        }
                        if qwriter.is_none() {
                            qwriter = Some(
                                rt.block_on(quarantine::Writer::new(ctx.kms.as_ref(), batch_id))?,
                            );
                        }
                        let h = &p.seg.segment.header;
                        let line_no = base + line + 1;
                        let entry_id = h.replay_of.get(line_no as usize - 1).map(String::as_str);
                        if let Some(id) = entry_id {
                            still_failing.insert(id.to_string());
                        }
                        let origin = Origin {
                            source: &h.source,
                            tenant: h.tenant.as_deref(),
                            entry_id,
                            arrived_at: h.arrived_at,
                            segment_id: &h.segment_id,
                            line_no,
                        };
                        let mut entry = qwriter.as_ref().expect("created").seal(
                            &origin,
                            &reject,
                            &original,
                            ctx.clock.now(),
                        );
                        match entry_id {
                            // a replayed line that fails again: the entry keeps its provenance and
                            // counts the attempt, with the new reason (its replay segment is still
                            // in landing until commit, so a crash here loses nothing)
                            Some(id) => rt.block_on(async {
                                if let Ok(old) = quarantine::get(store, id).await {
                                    entry.attempts = old.attempts + 1;
                                    entry.arrived_at = old.arrived_at;
                                    entry.segment_id = old.segment_id;
                                    entry.line_no = old.line_no;
                                    store.delete(&layout::quarantine_entry(id)).await?;
                                }
                                quarantine::put(store, &entry).await
                            })?,
                            None => rt.block_on(quarantine::put(store, &entry))?,
                        };
                        report.quarantined += 1;
                        *report.quarantined_by_code.entry(reject.code).or_default() += 1;
                        ctx.fail("batch.after_quarantine_write");
                    }
                }
            }
        }
    }
    if !pending.is_empty() {
        return Err(JobError::Worker(
            "a worker stopped before its work was done".into(),
        ));
    }
    let passed = replayed
        .into_iter()
        .filter(|(seg, id)| !still_failing.contains(id) && !kept.contains(seg))
        .map(|(_, id)| id)
        .collect();
    report.expired_ids = crate::audit::id_list(expired_ids);
    Ok(Outcome {
        files: sink.finish(report)?,
        passed,
        kept,
        failed: Vec::new(),
    })
}

async fn committed_ids(
    store: &Store,
    latest: Option<&Loaded>,
) -> Result<HashSet<[u8; 16]>, JobError> {
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
                    ids.insert(id_key(t, e));
                }
            }
        }
    }
    Ok(ids)
}

async fn open_file(
    ctx: &Context,
    batch_id: &str,
    file: &FileKey,
    keys: &KeyBook,
) -> Result<OpenFile, JobError> {
    let pk = keys.part(file);
    let wrapped = ctx.kms.wrap(&pk.dek).await?;
    let path = layout::data_file(&file.partition, &format!("{batch_id}-{}", file.policy));
    let upload = ctx.store.start_upload(&path).await?;
    let kv = datafile::file_metadata(batch_id, &file.partition.dir(), pk.dek.id(), &wrapped);
    let writer = FileWriter::new(path, upload, pk.dek.id(), kv)?;
    Ok(OpenFile {
        writer,
        last_used: 0,
        keys: pk,
        wrapped,
        min_occ: i64::MAX,
        max_occ: i64::MIN,
        min_exp: i64::MAX,
        max_exp: i64::MIN,
        tenants: BTreeSet::new(),
        policies: BTreeSet::new(),
    })
}

/// Keeps open files under the memory budget by ending row groups early, least recently
/// used file first: input arrives roughly in time order, so an idle partition is likely done.
fn relieve_memory(
    rt: &tokio::runtime::Handle,
    open: &mut BTreeMap<FileKey, OpenFile>,
    budget: usize,
) -> Result<(), JobError> {
    let mut total: usize = open.values().map(|f| f.writer.memory()).sum();
    while total > budget {
        let Some((_, f)) = open
            .iter_mut()
            .filter(|(_, f)| f.writer.memory() > 0)
            .min_by_key(|(_, f)| f.last_used)
        else {
            break;
        };
        let before = f.writer.memory();
        f.writer.flush_row_group()?;
        let parts = f.writer.take_pending();
        rt.block_on(futures::future::try_join_all(parts))
            .map_err(|e| crate::lake::LakeError::store("writing", f.writer.path().as_ref(), e))?;
        let after = f.writer.memory();
        if after >= before {
            break;
        }
        total = total - before + after;
    }
    Ok(())
}
