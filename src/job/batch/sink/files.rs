//! The sink's data files: opened with the DEK of their [`PartKeys`], closed with the sealed
//! dictionary of each tenant in their footer, then completed (the last parts written, fsynced, linked into
//! place) on the runtime while the sink goes on, so that the fsyncs of many files overlap.

use super::super::keys::{FileKey, PartKeys};
use super::WrittenFile;
use crate::crypto::DictionaryScope;
use crate::crypto::kms::WrappedKey;
use crate::job::{Context, JobError};
use crate::lake::datafile::{self, Closed, FileWriter, footer};
use crate::lake::layout;
use crate::lake::layout::Partition;
use crate::lake::manifest::FileEncryption;
use crate::retention::hold::Coverage;
#[cfg(any(test, feature = "test-hooks"))]
use parquet::file::metadata::KeyValue;

/// A data file being written.
pub(super) struct OpenFile {
    pub(super) writer: FileWriter,
    wrapped: WrappedKey,
    pub(super) coverage: Coverage,
}

/// The file's object: `part-<batch>-<policy>.parquet` for the first file of a partition and
/// policy in a batch, `part-<batch>-<policy>-<n>.parquet` for the n+1th; a tenant's own key
/// domain adds `-k<16 hex digits of its id's SHA-256>` after the policy (policy ids are
/// letters, digits and `_`, so the names never meet).
fn file_id(batch_id: &str, file: &FileKey, generation: u32) -> String {
    let domain = match &file.domain {
        Some(t) => format!(
            "-k{}",
            &hex::encode(crate::crypto::sha256(t.as_bytes()))[..16]
        ),
        None => String::new(),
    };
    match generation {
        0 => format!("{batch_id}-{}{domain}", file.policy),
        n => format!("{batch_id}-{}{domain}-{n}", file.policy),
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
    let wrapped = match &file.domain {
        Some(tenant) => {
            let kms = ctx.kms.tenant(tenant).ok_or_else(|| {
                JobError::Worker(format!("tenant `{tenant}` has no key service open"))
            })?;
            kms.wrap(&keys.dek)
                .await
                .map_err(|e| crate::crypto::kms::KmsError::Tenant {
                    tenant: tenant.to_string(),
                    source: Box::new(e),
                })?
        }
        None => ctx.kms.wrap(&keys.dek).await?,
    };
    let path = layout::data_file(&file.partition, &file_id(batch_id, file, generation));
    let upload = ctx.store.start_upload(&path).await?;
    let kv = datafile::file_metadata(batch_id, &file.partition.dir(), keys.dek.id(), &wrapped);
    #[cfg(any(test, feature = "test-hooks"))]
    let kv = match keys.dict.shared() {
        true => format_1::keys(kv),
        false => kv,
    };
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

/// Seals the file's dictionaries into its footer and writes the footer.
pub(super) fn close(
    partition: Partition,
    mut f: OpenFile,
    keys: &PartKeys,
) -> Result<Closing, JobError> {
    let compression = dictionaries(&mut f.writer, keys);
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

fn base64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

/// Writes the footer key of the tenants' dictionaries, each sealed under the file's DEK and
/// bound to its tenant; gives the file's compression.
fn dictionaries(w: &mut FileWriter, keys: &PartKeys) -> &'static str {
    let all = keys.dict.all();
    #[cfg(any(test, feature = "test-hooks"))]
    if keys.dict.shared() {
        return format_1::dictionary(w, keys, all.first().map(|(_, d)| d.as_ref()));
    }
    if all.is_empty() {
        return "zstd";
    }
    let entries = all
        .iter()
        .map(|(tenant, d)| footer::TenantDictionaryV2 {
            tenant_id: tenant.clone(),
            dek_id: keys.dek.id().to_string(),
            sealed: base64(&d.seal(&keys.cipher, DictionaryScope::Tenant(tenant))),
        })
        .collect();
    w.add_metadata(footer::DICTIONARIES, footer::encode_dictionaries(entries));
    "zstd+tenant-dictionaries"
}

/// Test builds only: files of data file format 1 (one dictionary for every tenant), as
/// holdfast wrote them before format 2, so that tests show every reader still reads them.
#[cfg(any(test, feature = "test-hooks"))]
mod format_1 {
    use super::*;

    pub(super) fn keys(mut kv: Vec<KeyValue>) -> Vec<KeyValue> {
        for k in kv.iter_mut().filter(|k| k.key == footer::VERSION_KEY) {
            k.value = Some("1".into());
        }
        kv
    }

    pub(super) fn dictionary(
        w: &mut FileWriter,
        keys: &PartKeys,
        dict: Option<&crate::crypto::Dictionary>,
    ) -> &'static str {
        let Some(d) = dict else {
            return "zstd";
        };
        let sealed = d.seal(&keys.cipher, DictionaryScope::File);
        w.add_metadata(footer::DICTIONARY, base64(&sealed));
        "zstd+dictionary"
    }
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
