//! The sink's data files: opened with the DEK of their [`PartKeys`], closed (in test builds'
//! formats 1 and 2, with the sealed dictionaries in their footer), then completed (the last parts written, fsynced, linked into
//! place) on the runtime while the sink goes on, so that the fsyncs of many files overlap.

use super::super::keys::{FileKey, Format, PartKeys};
use super::WrittenFile;
use crate::crypto::kms::WrappedKey;
use crate::job::{Context, JobError};
use crate::lake::datafile::{self, Closed, FileWriter, Sealing, footer};
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
    let (sealing, kv) = match keys.dict.format() {
        Format::Groups => (Sealing::Groups(Box::new(keys.cipher.clone())), kv),
        #[cfg(any(test, feature = "test-hooks"))]
        Format::Records { shared } => (
            Sealing::Records(keys.dek.id().into()),
            records::keys(kv, shared),
        ),
    };
    let writer = match rows {
        0 => FileWriter::new(path, upload, sealing, kv)?,
        n => FileWriter::with_rows(path, upload, sealing, kv, n as u64)?,
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

/// Writes the footer (formats 1 and 2: with the file's dictionaries, sealed).
pub(super) fn close(
    partition: Partition,
    #[allow(unused_mut)] mut f: OpenFile,
    keys: &PartKeys,
) -> Result<Closing, JobError> {
    let (compression, aad) = match keys.dict.format() {
        Format::Groups => (footer::GROUP_COMPRESSION, crate::crypto::group::GROUP_AAD),
        #[cfg(any(test, feature = "test-hooks"))]
        Format::Records { .. } => {
            let compression = records::dictionaries(&mut f.writer, keys);
            f.writer
                .add_metadata(footer::COMPRESSION, compression.to_string());
            (compression, "holdfast.record.v1")
        }
    };
    let closed = f.writer.close()?;
    let encryption = FileEncryption {
        algorithm: crate::crypto::ALGORITHM.into(),
        compression: compression.into(),
        aad: aad.into(),
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

/// Test builds only: files of data file formats 1 (one dictionary for every tenant) and 2
/// (one per tenant), each record sealed alone, as holdfast wrote them before format 3, so that
/// tests show every reader still reads them.
#[cfg(any(test, feature = "test-hooks"))]
mod records {
    use super::*;
    use crate::crypto::DictionaryScope;
    use parquet::file::metadata::KeyValue;

    fn base64(bytes: &[u8]) -> String {
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
    }

    /// The footer keys of format 1 or 2 (the compression is added at the close).
    pub(super) fn keys(kv: Vec<KeyValue>, shared: bool) -> Vec<KeyValue> {
        let version = if shared { "1" } else { "2" };
        kv.into_iter()
            .filter(|k| k.key != footer::COMPRESSION)
            .map(|mut k| {
                if k.key == footer::VERSION_KEY {
                    k.value = Some(version.into());
                }
                if k.key == footer::AAD {
                    k.value = Some("holdfast.record.v1".into());
                }
                k
            })
            .collect()
    }

    /// Writes the footer key of the dictionaries, each sealed under the file's DEK (and, in
    /// format 2, bound to its tenant); gives the file's compression.
    pub(super) fn dictionaries(w: &mut FileWriter, keys: &PartKeys) -> &'static str {
        let all = keys.dict.all();
        if keys.dict.format() == (Format::Records { shared: true }) {
            let Some((_, d)) = all.first() else {
                return "zstd";
            };
            let sealed = d.seal(&keys.cipher, DictionaryScope::File);
            w.add_metadata(footer::DICTIONARY, base64(&sealed));
            return "zstd+dictionary";
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
    ctx.store.confirm_upload(&file.path, &file.sha256)?;
    Ok(WrittenFile {
        partition,
        entry: file.entry(encryption, &batch_id, ctx.clock.now()),
        coverage,
    })
}
