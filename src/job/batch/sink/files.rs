//! The sink's data files: opened with the DEK of their [`PartKeys`], closed with the sealed
//! dictionary in their footer, then completed (the last parts written, fsynced, linked into
//! place) on the runtime while the sink goes on, so that the fsyncs of many files overlap.

use super::super::keys::{FileKey, PartKeys};
use super::WrittenFile;
use crate::crypto::kms::WrappedKey;
use crate::job::{Context, JobError};
use crate::lake::datafile::{self, Closed, FileWriter};
use crate::lake::layout;
use crate::lake::layout::Partition;
use crate::lake::manifest::FileEncryption;
use crate::retention::hold::Coverage;

/// A data file being written.
pub(super) struct OpenFile {
    pub(super) writer: FileWriter,
    wrapped: WrappedKey,
    pub(super) coverage: Coverage,
}

/// The file's object: `part-<batch>-<policy>.parquet` for the first file of a partition and
/// policy in a batch, `part-<batch>-<policy>-<n>.parquet` for the n+1th (policy ids are
/// letters, digits and `_`, so the names never meet).
fn file_id(batch_id: &str, file: &FileKey, generation: u32) -> String {
    match generation {
        0 => format!("{batch_id}-{}", file.policy),
        n => format!("{batch_id}-{}-{n}", file.policy),
    }
}

/// Opens the file; `rows`, when known (a file written whole at its close), sizes its bloom
/// filters (0: unknown).
pub(super) async fn open(
    ctx: &Context,
    batch_id: &str,
    file: &FileKey,
    generation: u32,
    keys: &PartKeys,
    rows: usize,
) -> Result<OpenFile, JobError> {
    let wrapped = ctx.kms.wrap(&keys.dek).await?;
    let path = layout::data_file(&file.partition, &file_id(batch_id, file, generation));
    let upload = ctx.store.start_upload(&path).await?;
    let kv = datafile::file_metadata(batch_id, &file.partition.dir(), keys.dek.id(), &wrapped);
    let writer = match rows {
        0 => FileWriter::new(path, upload, keys.dek.id(), kv)?,
        n => FileWriter::with_rows(path, upload, keys.dek.id(), kv, n as u64)?,
    };
    Ok(OpenFile {
        writer,
        wrapped,
        coverage: Coverage::default(),
    })
}

/// A closed file whose upload is still to complete.
pub(super) struct Closing {
    closed: Closed,
    partition: Partition,
    encryption: FileEncryption,
    coverage: Coverage,
}

/// Seals the file's dictionary into its footer and writes the footer.
pub(super) fn close(
    partition: Partition,
    mut f: OpenFile,
    keys: &PartKeys,
) -> Result<Closing, JobError> {
    let compression = match keys.dict.learnt().and_then(Option::as_ref) {
        Some(d) => {
            f.writer.add_metadata(
                datafile::footer::DICTIONARY,
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    d.seal(&keys.cipher),
                ),
            );
            "zstd+dictionary"
        }
        None => "zstd",
    };
    f.writer
        .add_metadata(datafile::footer::COMPRESSION, compression.to_string());
    let closed = f.writer.close()?;
    let encryption = FileEncryption {
        algorithm: crate::crypto::ALGORITHM.into(),
        compression: compression.into(),
        aad: "holdfast.record.v1".into(),
        dek_id: keys.dek.id().to_string(),
        wrapped_dek: f.wrapped,
    };
    Ok(Closing {
        closed,
        partition,
        encryption,
        coverage: f.coverage,
    })
}

/// Completes the upload (its last parts, fsync, create-only link) and gives the file's
/// manifest entry. The directory entry is synced at the commit's first barrier.
pub(super) async fn complete(
    ctx: Context,
    batch_id: String,
    c: Closing,
) -> Result<WrittenFile, JobError> {
    let Closing {
        mut closed,
        partition,
        encryption,
        coverage,
    } = c;
    closed.flush().await?;
    ctx.fail("batch.before_file_complete");
    let file = closed.complete().await?;
    Ok(WrittenFile {
        partition,
        entry: file.entry(encryption, &batch_id, ctx.clock.now()),
        coverage,
    })
}
