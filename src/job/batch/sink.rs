//! Stage 4, sink: streams deduplicated rows into one data file per partition and policy
//! ([`FileKey`]), holding a file's first rows back until its record dictionary is learnt,
//! within the memory budget; counts each row against the holds the batch started with; and
//! closes the files into [`WrittenFile`]s for the commit.

use super::Stages;
use super::keys::{FileKey, KeyBook, PartKeys, TRAIN_ROWS};
use super::report::BatchReport;
use crate::crypto::kms::WrappedKey;
use crate::crypto::{Dictionary, RecordCompressor, record_aad, seal_record};
use crate::job::{Context, JobError};
use crate::lake::datafile::{self, FileWriter, Row};
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{DataFileEntry, FileEncryption};
use crate::retention::hold::{Coverage, HoldSnapshot};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A data file the batch wrote (complete, not committed): its partition, its manifest entry,
/// and what its rows told the holds.
pub(in crate::job) struct WrittenFile {
    pub(in crate::job) partition: Partition,
    pub(in crate::job) entry: DataFileEntry,
    pub(in crate::job) coverage: Coverage,
}

struct OpenFile {
    writer: FileWriter,
    /// When a row last went in (a counter), to flush the least recently used file first.
    last_used: u64,
    keys: Arc<PartKeys>,
    wrapped: WrappedKey,
    coverage: Coverage,
}

/// A row held back with its plaintext record until its file's dictionary is learnt.
struct HeldRow {
    row: Box<Row>,
    plain: Vec<u8>,
}

/// The rows one file holds back while its dictionary is learnt, and the bytes they take.
#[derive(Default)]
struct Learning {
    rows: Vec<HeldRow>,
    bytes: usize,
}

/// Where deduplicated rows go: the open data files, and the rows of files whose dictionary
/// is still being learnt.
pub(super) struct Sink<'a> {
    rt: &'a tokio::runtime::Handle,
    ctx: &'a Context,
    batch_id: &'a str,
    keys: &'a KeyBook,
    holds: &'a HoldSnapshot,
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

impl<'a> Sink<'a> {
    pub(super) fn new(st: &Stages<'a>) -> Self {
        Sink {
            rt: st.rt,
            ctx: st.ctx,
            batch_id: st.batch_id,
            keys: st.keys,
            holds: st.holds,
            memory_bytes: st.opts.memory_bytes,
            open: BTreeMap::new(),
            learning: HashMap::new(),
            learning_bytes: 0,
            z: RecordCompressor::default(),
            since_check: 0,
            rows_written: 0,
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
        l.rows.push(HeldRow { row, plain });
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

    /// Trains the file's dictionary on the rows held back, publishes it to the workers,
    /// then seals and writes those rows. Too few rows to learn from: plain zstd.
    fn learn(&mut self, part: FileKey, report: &mut BatchReport) -> Result<(), JobError> {
        let Learning { rows, bytes } = self.learning.remove(&part).unwrap_or_default();
        self.learning_bytes -= bytes;
        let pk = self.keys.part(&part);
        let samples: Vec<&[u8]> = rows.iter().map(|h| h.plain.as_slice()).collect();
        let dict = Dictionary::train(&samples).map(Arc::new);
        let _ = pk.dict.set(dict.clone());
        for HeldRow { mut row, plain } in rows {
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
        // the holds are decided from the rows, never by reading the file back
        f.coverage.add(&row.index(), self.holds);
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
        if f.writer.has_pending() {
            self.rt.block_on(f.writer.upload_pending())?;
        }
        if self.since_check >= 1024 {
            self.since_check = 0;
            let budget = self.memory_bytes.saturating_sub(self.learning_bytes);
            relieve_memory(self.rt, &mut self.open, budget)?;
        }
        Ok(())
    }

    /// Writes what is held back, closes every file and returns them.
    pub(super) fn finish(mut self, report: &mut BatchReport) -> Result<Vec<WrittenFile>, JobError> {
        let waiting: Vec<FileKey> = self.learning.keys().cloned().collect();
        for p in waiting {
            self.learn(p, report)?;
        }
        let now = self.ctx.clock.now();
        let mut written = Vec::new();
        for (part, f) in std::mem::take(&mut self.open) {
            let w = self
                .rt
                .block_on(close_file(self.ctx, self.batch_id, now, part, f))?;
            report.files += 1;
            report.bytes_written += w.entry.size_bytes;
            written.push(w);
        }
        report.partitions = written
            .iter()
            .map(|w| &w.partition)
            .collect::<BTreeSet<_>>()
            .len() as u64;
        Ok(written)
    }
}

/// Seals the file's dictionary into its footer, completes the upload, and gives the file's
/// manifest entry.
async fn close_file(
    ctx: &Context,
    batch_id: &str,
    added_at: chrono::DateTime<chrono::Utc>,
    part: FileKey,
    mut f: OpenFile,
) -> Result<WrittenFile, JobError> {
    let compression = match f.keys.dict.get().and_then(Option::as_ref) {
        Some(d) => {
            f.writer.add_metadata(
                crate::lake::datafile::footer::DICTIONARY,
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    d.seal(&f.keys.cipher),
                ),
            );
            "zstd+dictionary"
        }
        None => "zstd",
    };
    f.writer.add_metadata(
        crate::lake::datafile::footer::COMPRESSION,
        compression.to_string(),
    );
    let mut closed = f.writer.close()?;
    closed.flush().await?;
    ctx.fail("batch.before_file_complete");
    let file = closed.complete().await?;
    let encryption = FileEncryption {
        algorithm: crate::crypto::ALGORITHM.into(),
        compression: compression.into(),
        aad: "holdfast.record.v1".into(),
        dek_id: f.keys.dek.id().to_string(),
        wrapped_dek: f.wrapped,
    };
    Ok(WrittenFile {
        partition: part.partition,
        entry: file.entry(encryption, batch_id, added_at),
        coverage: f.coverage,
    })
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
        coverage: Coverage::default(),
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
        rt.block_on(f.writer.upload_pending())?;
        let after = f.writer.memory();
        if after >= before {
            break;
        }
        total = total - before + after;
    }
    Ok(())
}
