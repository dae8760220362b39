//! The one data-file builder: [`FileWriter`] streams rows (a batch) or copied record batches
//! (a sweep rewrite) into a Parquet file, gathers the statistics its manifest entry states
//! ([`FileStats`]), and [`FinishedFile::entry`] turns the completed file into that entry.

use super::groups::{Grouper, ToSeal};
use super::{Row, SCHEMA, sized_writer_properties};
use crate::lake::LakeError;
use crate::lake::manifest::{DataFileEntry, FileEncryption};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, Utc};
use foldhash::{HashSet, HashSetExt};
use object_store::MultipartUpload;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use sha2::Digest;
use std::collections::BTreeSet;

/// What a data file's manifest entry says about its records: time and expiry ranges, tenants
/// and policies. Gathered as records go in, whoever writes them.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStats {
    min_occurred: i64,
    max_occurred: i64,
    min_expiry: i64,
    max_expiry: i64,
    tenants: BTreeSet<String>,
    policies: BTreeSet<String>,
    /// [`crate::lake::manifest::filter::hash`] of each distinct interaction id.
    interactions: HashSet<u64>,
}

impl Default for FileStats {
    fn default() -> Self {
        FileStats {
            min_occurred: i64::MAX,
            max_occurred: i64::MIN,
            min_expiry: i64::MAX,
            max_expiry: i64::MIN,
            tenants: BTreeSet::new(),
            policies: BTreeSet::new(),
            interactions: HashSet::new(),
        }
    }
}

impl FileStats {
    /// Counts one record (times in microseconds UTC).
    pub fn add(&mut self, r: IndexOf<'_>) {
        let IndexOf {
            tenant,
            policy,
            interaction,
            occurred_at,
            expires_at,
        } = r;
        self.interactions
            .insert(crate::lake::manifest::filter::hash(interaction));
        self.min_occurred = self.min_occurred.min(occurred_at);
        self.max_occurred = self.max_occurred.max(occurred_at);
        self.min_expiry = self.min_expiry.min(expires_at);
        self.max_expiry = self.max_expiry.max(expires_at);
        if !self.tenants.contains(tenant) {
            self.tenants.insert(tenant.to_string());
        }
        if !self.policies.contains(policy) {
            self.policies.insert(policy.to_string());
        }
    }

    /// Counts every record of a batch in [`SCHEMA`].
    pub fn add_batch(&mut self, b: &RecordBatch) {
        let col = |n: &str| b.column(SCHEMA.index_of(n).expect("column of the schema"));
        let (tenant, policy, interaction) = (
            col("tenant_id").as_string::<i32>(),
            col("policy_id").as_string::<i32>(),
            col("interaction_id").as_string::<i32>(),
        );
        let occurred = col("occurred_at").as_primitive::<TimestampMicrosecondType>();
        let expires = col("expires_at").as_primitive::<TimestampMicrosecondType>();
        for r in 0..b.num_rows() {
            self.add(IndexOf {
                tenant: tenant.value(r),
                policy: policy.value(r),
                interaction: interaction.value(r),
                occurred_at: occurred.value(r),
                expires_at: expires.value(r),
            });
        }
    }
}

/// What [`FileStats::add`] counts of one record (times in microseconds UTC).
#[derive(Debug, Clone, Copy)]
pub struct IndexOf<'a> {
    pub tenant: &'a str,
    pub policy: &'a str,
    pub interaction: &'a str,
    pub occurred_at: i64,
    pub expires_at: i64,
}

/// A completed data file: where it is, its bytes' digest and size, and its records' statistics.
#[derive(Debug, Clone)]
pub struct FinishedFile {
    pub path: Path,
    pub sha256: String,
    pub size_bytes: u64,
    pub record_count: u64,
    pub stats: FileStats,
    /// The object version the store gave it (S3), once complete.
    pub object_version: Option<String>,
}

impl FinishedFile {
    /// The file's manifest entry (not committed): `file_id` is the batch or rewrite that
    /// wrote it.
    pub fn entry(
        self,
        encryption: FileEncryption,
        file_id: &str,
        added_at: DateTime<Utc>,
    ) -> DataFileEntry {
        let ts = crate::clock::from_micros;
        let s = self.stats;
        DataFileEntry {
            path: self.path.to_string(),
            sha256: self.sha256,
            size_bytes: self.size_bytes,
            record_count: self.record_count,
            min_occurred_at: ts(s.min_occurred),
            max_occurred_at: ts(s.max_occurred),
            earliest_expiry: ts(s.min_expiry),
            latest_expiry: ts(s.max_expiry),
            tenant_ids: s.tenants.into_iter().collect(),
            policy_ids: s.policies.into_iter().collect(),
            encryption,
            batch_id: file_id.to_string(),
            added_at,
            interactions: Some(crate::lake::manifest::InteractionFilter::of_hashes(
                &s.interactions,
            )),
            object_version: self.object_version,
        }
    }
}

/// A closed file whose last parts may still be uploading: await them ([`Closed::flush`]),
/// then make the object appear under its name ([`Closed::complete`]).
pub struct Closed {
    file: FinishedFile,
    upload: Box<dyn MultipartUpload>,
    parts: Vec<object_store::UploadPart>,
}

impl Closed {
    /// Awaits the parts still in flight.
    pub async fn flush(&mut self) -> Result<(), LakeError> {
        let parts = std::mem::take(&mut self.parts);
        futures::future::try_join_all(parts)
            .await
            .map_err(|e| LakeError::store("writing", self.file.path.as_ref(), e))?;
        Ok(())
    }

    /// Completes the upload: the object appears whole under its final name.
    pub async fn complete(mut self) -> Result<FinishedFile, LakeError> {
        self.flush().await?;
        let done = self
            .upload
            .complete()
            .await
            .map_err(|e| LakeError::store("writing", self.file.path.as_ref(), e))?;
        self.file.object_version = done.version;
        Ok(self.file)
    }
}

/// How a file's records are sealed.
pub enum Sealing {
    /// Format 3: in groups, under this DEK, as rows are written.
    Groups(Box<crate::crypto::Cipher>),
    /// Formats 1 and 2: rows come with their record sealed alone under the DEK of this id
    /// (test builds write them, to show that every reader still reads them).
    #[cfg(any(test, feature = "test-hooks"))]
    Records(String),
}

/// Streams one data file to the store: rows are encoded into row groups and uploaded in
/// parts as they complete, so memory holds at most the open row group. The object appears
/// under its final name only on [`Closed::complete`]; it is committed only when a manifest
/// lists it.
pub struct FileWriter {
    path: Path,
    writer: ArrowWriter<Vec<u8>>,
    upload: Box<dyn MultipartUpload>,
    pending: Vec<object_store::UploadPart>,
    hasher: sha2::Sha256,
    uploaded: u64,
    rows: Vec<Row>,
    rows_bytes: usize,
    record_count: u64,
    stats: FileStats,
    dek_id: String,
    /// Format 3 (`None`: rows come sealed).
    grouper: Option<Grouper>,
}

const PART_BYTES: usize = 8 << 20;
/// Estimated memory of an open row group's column writers beyond their buffered pages: one
/// zstd context per compressed column, page buffers, bloom filters.
const COLUMN_WRITERS_OVERHEAD: usize = 4 << 20;
const ENCODE_ROWS: usize = 4096;

impl FileWriter {
    pub fn new(
        path: Path,
        upload: Box<dyn MultipartUpload>,
        sealing: Sealing,
        kv: Vec<KeyValue>,
    ) -> Result<Self, LakeError> {
        Self::with_properties(path, upload, sealing, sized_writer_properties(kv, None))
    }

    /// A file whose row count is known before the first row: its bloom filters are sized
    /// for that many values instead of the most a row group may hold (the same filters once
    /// folded to their false-positive rate, for far less work on a small file).
    pub fn with_rows(
        path: Path,
        upload: Box<dyn MultipartUpload>,
        sealing: Sealing,
        kv: Vec<KeyValue>,
        rows: u64,
    ) -> Result<Self, LakeError> {
        Self::with_properties(
            path,
            upload,
            sealing,
            sized_writer_properties(kv, Some(rows)),
        )
    }

    fn with_properties(
        path: Path,
        upload: Box<dyn MultipartUpload>,
        sealing: Sealing,
        props: parquet::file::properties::WriterProperties,
    ) -> Result<Self, LakeError> {
        let (dek_id, grouper) = match sealing {
            Sealing::Groups(cipher) => (cipher.dek_id().to_string(), Some(Grouper::new(*cipher))),
            #[cfg(any(test, feature = "test-hooks"))]
            Sealing::Records(dek_id) => (dek_id, None),
        };
        let writer = ArrowWriter::try_new(Vec::new(), SCHEMA.clone(), Some(props))
            .map_err(|e| LakeError::parquet(path.as_ref(), e))?;
        Ok(FileWriter {
            path,
            writer,
            upload,
            pending: Vec::new(),
            hasher: sha2::Sha256::new(),
            uploaded: 0,
            rows: Vec::new(),
            rows_bytes: 0,
            record_count: 0,
            stats: FileStats::default(),
            dek_id,
            grouper,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn push(&mut self, row: Row) -> Result<(), LakeError> {
        self.stats.add(IndexOf {
            tenant: &row.tenant_id,
            policy: &row.policy_id,
            interaction: &row.interaction_id,
            occurred_at: row.occurred_at,
            expires_at: row.expires_at,
        });
        self.rows_bytes += row.heap_size();
        self.rows.push(row);
        if self.rows.len() >= ENCODE_ROWS {
            self.encode()?;
        }
        Ok(())
    }

    /// Memory held: buffered rows, the encoded row group not yet flushed (plus the codec
    /// contexts its column writers keep, which `memory_size` does not count), and bytes not
    /// yet uploaded.
    pub fn memory(&self) -> usize {
        let open_row_group = if self.writer.in_progress_rows() > 0 {
            COLUMN_WRITERS_OVERHEAD
        } else {
            0
        };
        // the row buffer keeps its capacity between row groups
        let spare = (self.rows.capacity() - self.rows.len()) * std::mem::size_of::<Row>();
        self.rows_bytes
            + spare
            + self.writer.memory_size()
            + open_row_group
            + self.writer.inner().len()
    }

    fn encode(&mut self) -> Result<(), LakeError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let payload: arrow::array::ArrayRef = match &mut self.grouper {
            Some(g) => {
                let rows: Vec<ToSeal<'_>> = self.rows.iter().map(to_seal).collect();
                std::sync::Arc::new(g.payloads(&rows))
            }
            None => std::sync::Arc::new(arrow::array::BinaryArray::from_iter_values(
                self.rows.iter().map(|r| &r.payload),
            )),
        };
        let batch = super::to_record_batch(&self.rows, &self.dek_id, payload);
        self.record_count += self.rows.len() as u64;
        // the records' plaintext is zeroized as the rows go
        self.rows.clear();
        self.rows_bytes = 0;
        self.writer
            .write(&batch)
            .map_err(|e| LakeError::parquet(self.path.as_ref(), e))?;
        self.ship(false);
        Ok(())
    }

    /// Writes a batch already in [`SCHEMA`] whose `payload` and `dek_id` columns are still to
    /// be made: the records of its rows, in order, are sealed in groups under this file's DEK
    /// (a retention rewrite copies the index columns of the rows it keeps, with their records
    /// opened).
    pub fn write_opened(
        &mut self,
        batch: &RecordBatch,
        records: &[crate::crypto::Plaintext],
    ) -> Result<(), LakeError> {
        let g = self.grouper.as_mut().expect("a rewrite writes format 3");
        let col = |n: &str| batch.column_by_name(n).expect("column").as_string::<i32>();
        let (tenant, event, interaction) =
            (col("tenant_id"), col("event_id"), col("interaction_id"));
        let rows: Vec<ToSeal<'_>> = (0..batch.num_rows())
            .map(|i| ToSeal {
                tenant_id: tenant.value(i),
                event_id: event.value(i),
                interaction_id: interaction.value(i),
                record: &records[i],
            })
            .collect();
        let payload = std::sync::Arc::new(g.payloads(&rows));
        let dek_id = arrow::array::StringArray::from_iter_values(std::iter::repeat_n(
            g.dek_id(),
            batch.num_rows(),
        ));
        let mut columns = batch.columns().to_vec();
        columns[SCHEMA.index_of("payload").expect("column")] = payload;
        columns[SCHEMA.index_of("dek_id").expect("column")] = std::sync::Arc::new(dek_id);
        let sealed =
            RecordBatch::try_new(SCHEMA.clone(), columns).expect("the batch's own columns");
        self.write_batch(&sealed)
    }

    /// Writes a batch already in [`SCHEMA`], sealed.
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), LakeError> {
        self.encode()?;
        self.stats.add_batch(batch);
        self.record_count += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .map_err(|e| LakeError::parquet(self.path.as_ref(), e))?;
        self.ship(false);
        Ok(())
    }

    /// Adds a footer key/value (written on close).
    pub fn add_metadata(&mut self, key: &str, value: String) {
        self.writer
            .append_key_value_metadata(KeyValue::new(key.to_string(), value));
    }

    /// Ends the open row group now and uploads it (to release memory under pressure).
    pub fn flush_row_group(&mut self) -> Result<(), LakeError> {
        self.encode()?;
        self.rows = Vec::new();
        self.writer
            .flush()
            .map_err(|e| LakeError::parquet(self.path.as_ref(), e))?;
        self.ship(true);
        Ok(())
    }

    /// Uploads the encoded bytes as a part once there are `PART_BYTES` of them, or now if
    /// `force` (memory pressure, or the end of the file).
    fn ship(&mut self, force: bool) {
        let buf = self.writer.inner_mut();
        if buf.len() >= PART_BYTES || (force && !buf.is_empty()) {
            let bytes = std::mem::take(buf);
            self.hasher.update(&bytes);
            self.uploaded += bytes.len() as u64;
            self.pending.push(self.upload.put_part(bytes.into()));
        }
    }

    /// Part uploads started but not awaited yet; the caller awaits them (keeps this type sync).
    pub fn take_pending(&mut self) -> Vec<object_store::UploadPart> {
        std::mem::take(&mut self.pending)
    }

    /// Whether part uploads were started and not awaited yet.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Awaits the part uploads started so far.
    pub async fn upload_pending(&mut self) -> Result<(), LakeError> {
        let parts = self.take_pending();
        futures::future::try_join_all(parts)
            .await
            .map_err(|e| LakeError::store("writing", self.path.as_ref(), e))?;
        Ok(())
    }

    /// Writes the footer and ships the last part; then [`Closed::complete`] it.
    pub fn close(mut self) -> Result<Closed, LakeError> {
        self.encode()?;
        self.writer
            .finish()
            .map_err(|e| LakeError::parquet(self.path.as_ref(), e))?;
        self.ship(true);
        let sha256 = hex::encode(self.hasher.finalize());
        let file = FinishedFile {
            path: self.path,
            sha256,
            size_bytes: self.uploaded,
            record_count: self.record_count,
            stats: self.stats,
            object_version: None,
        };
        Ok(Closed {
            file,
            upload: self.upload,
            parts: self.pending,
        })
    }
}

fn to_seal(r: &Row) -> ToSeal<'_> {
    ToSeal {
        tenant_id: &r.tenant_id,
        event_id: &r.event_id,
        interaction_id: &r.interaction_id,
        record: &r.record,
    }
}
