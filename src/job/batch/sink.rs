//! Stage 4, sink: streams deduplicated rows into data files, one open file per partition and
//! policy ([`FileKey`]) at a time; counts each row against the holds the batch started with;
//! and hands the closed files ([`WrittenFile`]) to the commit. In format 3 a file's first rows
//! ([`super::keys::OPEN_ROWS`]) are held back before the file is opened, so that a small file
//! is written whole, its size known; the writer seals each tenant's records in groups. In the
//! formats 1 and 2 that test builds still write, each tenant's first rows of a file are held
//! back until that tenant's record dictionary is learnt (a dictionary is trained on one
//! tenant's records only: shared by tenants, it would be a side channel between them).
//!
//! Memory stays within `batch.memory_mb` whatever the number of partitions: everything an
//! open file holds (rows held back with their records, buffered rows and row group, its
//! writer and any dictionary tables) counts against the budget, and past it the least recently
//! used file is closed (input arrives roughly in time order, so an idle partition is likely
//! done). A later row for a closed partition and policy goes to a new file with its own DEK;
//! the manifest lists every file. A closed file is finished on a blocking thread
//! ([`closing`]): several at once, beside the coordinator, so that their work and fsyncs
//! overlap.

use super::Stages;
use super::keys::{FileKey, Format, KeyBook, PartKeys};
use super::report::BatchReport;
use crate::crypto::{Dictionary, RecordCompressor, open_record, record_aad, seal_record};
use crate::job::{Context, JobError};
use crate::lake::datafile::Row;
use crate::lake::layout::Partition;
use crate::lake::manifest::DataFileEntry;
use crate::retention::hold::{Coverage, HoldSnapshot};
use foldhash::{HashMap, HashMapExt};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use tokio::task::JoinHandle;

mod closing;
mod files;

/// A data file the batch wrote (complete, not committed): its partition, its manifest entry,
/// and what its rows told the holds.
pub(in crate::job) struct WrittenFile {
    pub(in crate::job) partition: Partition,
    pub(in crate::job) entry: DataFileEntry,
    pub(in crate::job) coverage: Coverage,
}

/// What an open file costs besides its rows and row group: its writer's state, upload and
/// keys (measured at about 60 KB; counted generously).
const FILE_OVERHEAD: usize = 128 << 10;
/// What a learnt dictionary's compression tables cost while its file is open.
const DICT_TABLES: usize = 128 << 10;
/// Closed files being finished at once.
const CLOSING: usize = 16;
/// Rows between two checks of the memory budget (and at every new file).
const CHECK_EVERY: usize = 256;
/// A file that took no row in this many is idle: the first to close when over the budget.
const IDLE_ROWS: u64 = 1024;

/// A row held back with its plaintext record until its tenant's dictionary is learnt.
struct HeldRow {
    row: Box<Row>,
    plain: Vec<u8>,
}

/// The rows one tenant of a file holds back while its dictionary is learnt, and their bytes.
#[derive(Default)]
struct Learning {
    rows: Vec<HeldRow>,
    bytes: usize,
}

/// What a file holds back, by tenant (by [`super::keys::DictCell::scope`]), and the bytes.
#[derive(Default)]
struct Held {
    tenants: HashMap<String, Learning>,
    bytes: usize,
}

impl Held {
    fn take(&mut self, scope: &str) -> Vec<HeldRow> {
        let l = self.tenants.remove(scope).unwrap_or_default();
        self.bytes -= l.bytes;
        l.rows
    }

    /// Every tenant's rows, by tenant.
    fn into_sorted(self) -> Vec<(String, Vec<HeldRow>)> {
        let mut all: Vec<(String, Vec<HeldRow>)> =
            self.tenants.into_iter().map(|(t, l)| (t, l.rows)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// The file a partition and policy is written to now.
struct Slot {
    /// The file's DEK and dictionaries: for the first file of the batch, the key book's (the
    /// workers seal a tenant's records with them once its dictionary is learnt); for a later
    /// one, its own.
    keys: Arc<PartKeys>,
    /// Files of this partition and policy the batch closed before this one.
    generation: u32,
    held: Held,
    /// Opened with the first row sealed for it.
    file: Option<files::OpenFile>,
    last_used: u64,
}

impl Slot {
    fn memory(&self) -> usize {
        let tables = DICT_TABLES * self.keys.dict.count();
        let file = self.file.as_ref().map_or(0, |f| f.writer.memory());
        FILE_OVERHEAD + tables + self.held.bytes + file
    }
}

/// Where deduplicated rows go: the open files and the rows they hold back.
pub(super) struct Sink<'a> {
    rt: &'a tokio::runtime::Handle,
    ctx: &'a Context,
    batch_id: &'a str,
    keys: &'a KeyBook,
    holds: &'a Arc<HoldSnapshot>,
    /// The budget for everything the open files hold, and the files being closed.
    memory_bytes: usize,
    slots: HashMap<FileKey, Slot>,
    /// Files closed so far per partition and policy (numbers the next one).
    closed: HashMap<FileKey, u32>,
    /// Closed files being finished, oldest first, with the memory each took along.
    closing: VecDeque<(JoinHandle<Result<WrittenFile, JobError>>, usize)>,
    closing_bytes: usize,
    written: Vec<WrittenFile>,
    z: RecordCompressor,
    /// Rows taken so far: the clock of least recent use.
    tick: u64,
    since_check: usize,
}

impl<'a> Sink<'a> {
    pub(super) fn new(st: &Stages<'a>) -> Self {
        Sink {
            rt: st.rt,
            ctx: st.ctx,
            batch_id: st.batch_id,
            keys: st.keys,
            holds: st.holds,
            memory_bytes: st.opts.memory_bytes,
            slots: HashMap::new(),
            closed: HashMap::new(),
            closing: VecDeque::new(),
            closing_bytes: 0,
            written: Vec::new(),
            z: RecordCompressor::default(),
            tick: 0,
            since_check: 0,
        }
    }

    /// Takes a row whose payload may still be plaintext beside it.
    pub(super) fn accept(
        &mut self,
        part: FileKey,
        mut row: Box<Row>,
        plain: Option<Vec<u8>>,
        report: &mut BatchReport,
    ) -> Result<(), JobError> {
        self.tick += 1;
        self.since_check += 1;
        let plain = match plain {
            // sealed by a worker for the first file, which is open: as it is
            None if self.slots.get(&part).is_some_and(|s| s.generation == 0) => {
                self.count(&part, &row, report);
                self.write(&part, row)?;
                return self.check_memory(&part);
            }
            // sealed for the first file, closed meanwhile: opened again for the next one
            None => self.unseal(&part, &mut row)?,
            Some(plain) => plain,
        };
        let keys = self.slot(&part).keys.clone();
        self.count(&part, &row, report);
        if let Some(dict) = keys.dict.learnt(&row.tenant_id) {
            seal(&mut self.z, &keys, dict.as_deref(), &mut row, plain);
            self.write(&part, row)?;
        } else {
            let scope = keys.dict.scope(&row.tenant_id).to_string();
            let slot = self.slots.get_mut(&part).expect("a slot");
            let bytes = row.heap_size() + plain.capacity();
            let learning = slot.held.tenants.entry(scope.clone()).or_default();
            learning.rows.push(HeldRow { row, plain });
            learning.bytes += bytes;
            let ready = learning.rows.len() >= keys.dict.learn_rows();
            slot.held.bytes += bytes;
            slot.last_used = self.tick;
            if ready {
                self.learn(&part, &scope)?;
            }
        }
        self.check_memory(&part)
    }

    /// The slot of `part`, opened (not its file yet) if it has none.
    fn slot(&mut self, part: &FileKey) -> &mut Slot {
        if !self.slots.contains_key(part) {
            let generation = self.closed.get(part).copied().unwrap_or(0);
            let keys = match generation {
                0 => self.keys.part(part),
                _ => self.keys.later(),
            };
            let slot = Slot {
                keys,
                generation,
                held: Held::default(),
                file: None,
                last_used: self.tick,
            };
            self.slots.insert(part.clone(), slot);
            // a new file: check the budget at once
            self.since_check = CHECK_EVERY;
        }
        self.slots.get_mut(part).expect("inserted")
    }

    /// The plaintext of a row a worker sealed for the first file of `part` after that file
    /// was closed (the worker had taken its keys just before).
    fn unseal(&self, part: &FileKey, row: &mut Row) -> Result<Vec<u8>, JobError> {
        let first = self.keys.part(part);
        let dict = first
            .dict
            .learnt(&row.tenant_id)
            .flatten()
            .map(|d| d.decoder());
        let aad = record_aad(
            &row.tenant_id,
            &row.event_id,
            &row.interaction_id,
            first.cipher.dek_id(),
        );
        let what = || format!("event {} of a closed file", row.event_id);
        let plain = open_record(&first.cipher, dict.as_ref(), &row.payload, &aad, &what)
            .map_err(|e| JobError::Worker(e.to_string()))?;
        row.payload.clear();
        Ok(plain)
    }

    /// Trains a tenant's dictionary of the file on that tenant's rows held back (plain zstd
    /// if too few to learn from), publishes it (to the workers, for a first file), then seals
    /// and writes them.
    fn learn(&mut self, part: &FileKey, scope: &str) -> Result<(), JobError> {
        let slot = self.slots.get_mut(part).expect("a slot");
        let rows = slot.held.take(scope);
        let keys = slot.keys.clone();
        let samples: Vec<&[u8]> = rows.iter().map(|h| h.plain.as_slice()).collect();
        let dict = keys.dict.set(scope, keys.dict.train(&samples));
        for HeldRow { mut row, plain } in rows {
            seal(&mut self.z, &keys, dict.as_deref(), &mut row, plain);
            self.write(part, row)?;
        }
        Ok(())
    }

    /// Counts a row as stored (when it is taken: held back or written).
    fn count(&self, part: &FileKey, row: &Row, report: &mut BatchReport) {
        // looked up before inserting: no key is allocated per row
        let by_type = &mut report.stored_by_type;
        match by_type.get_mut(part.partition.interaction_type.as_str()) {
            Some(n) => *n += 1,
            None => _ = by_type.insert(part.partition.interaction_type.clone(), 1),
        }
        let by_policy = &mut report.stored_by_policy;
        match by_policy.get_mut(&*row.policy_id) {
            Some(n) => *n += 1,
            None => _ = by_policy.insert(row.policy_id.to_string(), 1),
        }
        report.stored += 1;
    }

    /// Writes a sealed row to the slot's file, opening it first if needed.
    fn write(&mut self, part: &FileKey, row: Box<Row>) -> Result<(), JobError> {
        let slot = self.slots.get_mut(part).expect("a slot");
        slot.last_used = self.tick;
        if slot.file.is_none() {
            let opened = files::open(
                self.ctx,
                self.batch_id,
                part,
                slot.generation,
                &slot.keys,
                0,
            );
            slot.file = Some(self.rt.block_on(opened)?);
        }
        let f = slot.file.as_mut().expect("opened");
        // the holds are decided from the rows, never by reading the file back
        f.coverage.add(&row.index(), self.holds);
        f.writer.push(*row)?;
        if f.writer.has_pending() {
            self.rt.block_on(f.writer.upload_pending())?;
        }
        Ok(())
    }

    /// Keeps the open files and the files being closed within the budget. Past it: closes
    /// the files idle for a while, least recently used first, and waits for closed files to
    /// be finished; then makes files learn now or end their row group early, least recently
    /// used first; then, too many files being written at once, closes the least recently
    /// used other than `current`'s.
    fn check_memory(&mut self, current: &FileKey) -> Result<(), JobError> {
        if self.since_check < CHECK_EVERY {
            return Ok(());
        }
        self.since_check = 0;
        let mut lru: Vec<(u64, FileKey)> = self
            .slots
            .iter()
            .map(|(k, s)| (s.last_used, k.clone()))
            .collect();
        lru.sort();
        let tick = self.tick;
        let idle = |used: u64| used + IDLE_ROWS < tick;
        for pass in 0..3 {
            for (used, k) in &lru {
                if self.total() <= self.memory_bytes {
                    return Ok(());
                }
                match pass {
                    0 if idle(*used) => self.close(k)?,
                    1 => self.shrink(k)?,
                    2 if k != current => self.close(k)?,
                    _ => {}
                }
            }
            while self.total() > self.memory_bytes && !self.closing.is_empty() {
                self.collect_one()?;
            }
        }
        Ok(())
    }

    /// Memory of the open files and of the files being closed.
    fn total(&self) -> usize {
        self.slots.values().map(Slot::memory).sum::<usize>() + self.closing_bytes
    }

    /// Frees what a file holds beyond its fixed cost: its tenants learn from the rows they
    /// hold back, or its row group ends early.
    fn shrink(&mut self, part: &FileKey) -> Result<(), JobError> {
        let Some(slot) = self.slots.get_mut(part) else {
            return Ok(());
        };
        let mut scopes: Vec<String> = slot.held.tenants.keys().cloned().collect();
        scopes.sort();
        for scope in scopes {
            self.learn(part, &scope)?;
        }
        let slot = self.slots.get_mut(part).expect("a slot");
        if let Some(f) = slot.file.as_mut().filter(|f| f.writer.memory() > 0) {
            f.writer.flush_row_group()?;
            self.rt.block_on(f.writer.upload_pending())?;
        }
        Ok(())
    }

    /// Closes the slot's file: the workers stop sealing with its keys at once, and the rest
    /// (its tenants learning from the rows held back, writing them, the footer, completing
    /// the upload)
    /// is finished on a blocking thread ([`closing::CloseJob`]).
    fn close(&mut self, part: &FileKey) -> Result<(), JobError> {
        let Some(slot) = self.slots.remove(part) else {
            return Ok(());
        };
        *self.closed.entry(part.clone()).or_default() += 1;
        // workers hand plaintext from now on; the dictionary's tables are freed
        slot.keys.dict.close();
        let bytes = slot.memory();
        let job = closing::CloseJob {
            rt: self.rt.clone(),
            ctx: self.ctx.clone(),
            batch_id: self.batch_id.to_string(),
            holds: self.holds.clone(),
            part: part.clone(),
            generation: slot.generation,
            keys: slot.keys,
            held: slot.held.into_sorted(),
            file: slot.file,
        };
        self.closing
            .push_back((self.rt.spawn_blocking(move || job.run()), bytes));
        self.closing_bytes += bytes;
        while self.closing.len() > CLOSING {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Waits for the oldest file being closed.
    fn collect_one(&mut self) -> Result<(), JobError> {
        if let Some((task, bytes)) = self.closing.pop_front() {
            self.closing_bytes -= bytes;
            let w = self
                .rt
                .block_on(task)
                .map_err(|e| JobError::Worker(e.to_string()))??;
            self.written.push(w);
        }
        Ok(())
    }

    /// Closes every file, waits for them and returns them.
    pub(super) fn finish(mut self, report: &mut BatchReport) -> Result<Vec<WrittenFile>, JobError> {
        let mut open: Vec<FileKey> = self.slots.keys().cloned().collect();
        open.sort();
        for p in open {
            self.close(&p)?;
        }
        while !self.closing.is_empty() {
            self.collect_one()?;
        }
        let mut written = std::mem::take(&mut self.written);
        written.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
        report.files += written.len() as u64;
        report.bytes_written += written.iter().map(|w| w.entry.size_bytes).sum::<u64>();
        report.partitions = written
            .iter()
            .map(|w| &w.partition)
            .collect::<BTreeSet<_>>()
            .len() as u64;
        Ok(written)
    }
}

/// Format 3: puts the record in its row, to be sealed with its group when the row is written.
/// Formats 1 and 2: compresses (with its tenant's dictionary) and seals the record under the
/// file's DEK, into the row's payload. The plaintext is zeroized either way.
fn seal(
    z: &mut RecordCompressor,
    pk: &PartKeys,
    dict: Option<&Dictionary>,
    row: &mut Row,
    mut plain: Vec<u8>,
) {
    if pk.dict.format() == Format::Groups {
        row.record = crate::crypto::Plaintext::new(plain);
        return;
    }
    let aad = record_aad(
        &row.tenant_id,
        &row.event_id,
        &row.interaction_id,
        pk.cipher.dek_id(),
    );
    seal_record(&pk.cipher, z, dict, &plain, &aad, &mut row.payload);
    zeroize::Zeroize::zeroize(&mut plain);
}

#[cfg(test)]
mod tests;
