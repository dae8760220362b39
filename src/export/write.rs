//! Parquet files of an export: zstd, row groups of up to [`ROW_GROUP_BYTES`] (BigQuery
//! advises at least 16 MiB), a new file once one reaches the target size. Every file is
//! hashed as it is written and synced when closed; each row's `record_hash` is spooled to a
//! file beside it (its 64 hex characters), so that memory stays bounded however many rows the
//! custody record lists.

use super::files::{self, HashingFile, Modes};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Encoded bytes a row group may reach before it is flushed.
pub(super) const ROW_GROUP_BYTES: usize = 128 << 20;
/// Where the row hashes are spooled, inside the export directory, until the custody record
/// is written (then removed).
pub(super) const SPOOL_DIR: &str = ".holdfast-export";

/// A finished data file.
#[derive(Debug, Clone)]
pub(super) struct DataFile {
    /// Relative to the export directory.
    pub(super) path: String,
    pub sha256: String,
    pub(super) bytes: u64,
    pub(super) rows: u64,
    /// The rows' `record_hash` values, 64 hex characters each, in row order.
    pub(super) hashes: PathBuf,
}

struct Open {
    writer: ArrowWriter<HashingFile>,
    rel: String,
    rows: u64,
    hashes: BufWriter<std::fs::File>,
    hashes_path: PathBuf,
}

/// Writes batches to `data/part-NNNNN.parquet`, starting a new file at the target size.
pub(super) struct Rolling {
    out: PathBuf,
    modes: Modes,
    schema: SchemaRef,
    target_bytes: u64,
    current: Option<Open>,
    pub(super) files: Vec<DataFile>,
}

fn properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(4 << 20))
        .build()
}

impl Rolling {
    pub(super) fn new(
        out: &Path,
        modes: Modes,
        schema: SchemaRef,
        target_bytes: u64,
    ) -> std::io::Result<Self> {
        files::subdir(&out.join("data"), modes)?;
        files::subdir(&out.join(SPOOL_DIR), modes)?;
        Ok(Rolling {
            out: out.to_path_buf(),
            modes,
            schema,
            target_bytes: target_bytes.max(1),
            current: None,
            files: Vec::new(),
        })
    }

    fn open(&mut self) -> Result<&mut Open, parquet::errors::ParquetError> {
        if self.current.is_none() {
            let n = self.files.len();
            let rel = format!("data/part-{n:05}.parquet");
            let file = HashingFile::create(self.out.join(&rel), self.modes)?;
            let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(properties()))?;
            let hashes_path = self.out.join(SPOOL_DIR).join(format!("part-{n:05}.hashes"));
            let hashes = BufWriter::new(files::create_new(&hashes_path, self.modes)?);
            self.current = Some(Open {
                writer,
                rel,
                rows: 0,
                hashes,
                hashes_path,
            });
        }
        Ok(self.current.as_mut().expect("opened"))
    }

    /// Appends a batch (of the export's schema); `hashes` are its rows' record hashes (hex).
    pub(super) fn write(
        &mut self,
        b: &RecordBatch,
        hashes: &arrow::array::StringArray,
    ) -> Result<(), parquet::errors::ParquetError> {
        if b.num_rows() == 0 {
            return Ok(());
        }
        let target = self.target_bytes;
        let open = self.open()?;
        open.writer.write(b)?;
        open.rows += b.num_rows() as u64;
        for h in hashes.iter() {
            let h = h.filter(|h| h.len() == 64).ok_or_else(|| {
                parquet::errors::ParquetError::General(
                    "a record_hash is not 64 hex characters".into(),
                )
            })?;
            open.hashes.write_all(h.as_bytes())?;
        }
        if open.writer.in_progress_size() >= ROW_GROUP_BYTES {
            open.writer.flush()?;
        }
        if open.writer.bytes_written() as u64 + open.writer.in_progress_size() as u64 >= target {
            self.close()?;
        }
        Ok(())
    }

    /// Closes the file being written, if any: synced, hashed.
    pub(super) fn close(&mut self) -> Result<(), parquet::errors::ParquetError> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        let file = open.writer.into_inner()?;
        let (sha256, bytes) = file.finish()?;
        let mut hashes = open.hashes;
        hashes.flush()?;
        hashes.get_ref().sync_all()?;
        self.files.push(DataFile {
            path: open.rel,
            sha256,
            bytes,
            rows: open.rows,
            hashes: open.hashes_path,
        });
        Ok(())
    }

    /// Closes the last file; with no row at all, writes one empty file (so that a loader
    /// finds the columns, and the custody record a file to vouch for). Syncs `data/`.
    pub(super) fn finish(mut self) -> Result<Vec<DataFile>, parquet::errors::ParquetError> {
        if self.files.is_empty() && self.current.is_none() {
            self.open()?;
        }
        self.close()?;
        files::sync_dir(&self.out.join("data"))?;
        Ok(self.files)
    }
}
