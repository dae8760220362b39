//! Rewriting a data file without its expired, unheld records: the survivors (records still
//! unexpired, or covered by an active legal hold) are copied to a new file under a new DEK,
//! and the old file leaves the partition at once and storage once its lock allows.
//!
//! Survivors are moved ciphertext to ciphertext: each record's compressed frame is opened in
//! memory with the old DEK and sealed again under the new one (AAD rebound to the new DEK id);
//! no record is decompressed or parsed, and nothing is shown to the actor. The file's zstd
//! dictionary moves the same way. Every rewrite is audited (`retention.rewrite`).

use super::SweepError;
use super::hold::Hold;
use crate::crypto::kms::{Kms, WrappedKey};
use crate::crypto::{Cipher, DataKey, record_aad, reseal_dictionary, reseal_record};
use crate::lake::LakeError;
use crate::lake::datafile::{
    self, FileWriter, INDEX_COLUMNS, IndexColumns, SCHEMA, footer, footer_value,
};
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{self, DataFileEntry, FileEncryption};
use crate::storage::Store;
use arrow::array::{ArrayRef, AsArray, BinaryBuilder, BooleanArray, RecordBatch, StringArray};
use base64::Engine;
use chrono::{DateTime, Utc};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::{FileMetaData, KeyValue};
use std::collections::BTreeMap;
use std::sync::Arc;

const BATCH_ROWS: usize = 8192;

#[derive(Debug)]
pub enum Outcome {
    /// Every record survives (or, for a stale hold listing, none would): nothing to do.
    Unchanged,
    Rewritten(Box<Rewritten>),
}

#[derive(Debug)]
pub struct Rewritten {
    /// The new file's manifest entry (not committed yet).
    pub entry: DataFileEntry,
    pub kept: u64,
    pub dropped: u64,
    /// Active holds covering surviving records, with how many each covers.
    pub holds: BTreeMap<String, u64>,
}

/// Which rows survive at `now`, and how many each hold covers.
struct Survivors {
    keep: Vec<bool>,
    covering: BTreeMap<String, u64>,
}

impl Survivors {
    fn kept(&self) -> u64 {
        self.keep.iter().filter(|k| **k).count() as u64
    }
}

/// Which rows of `bytes` survive at `now` (index columns only, through the shared reader).
fn survivors(
    bytes: &bytes::Bytes,
    object: &str,
    holds: &[&Hold],
    now: DateTime<Utc>,
) -> Result<Survivors, LakeError> {
    let err = |e| LakeError::parquet(object, e);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(err)?;
    let indices: Vec<usize> = INDEX_COLUMNS
        .iter()
        .map(|n| SCHEMA.index_of(n).expect("column of the schema"))
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let now_us = now.timestamp_micros();
    let mut out = Survivors {
        keep: Vec::new(),
        covering: BTreeMap::new(),
    };
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(err)?;
    for b in reader {
        let b = b.map_err(|e| corrupt(object, e))?;
        let cols = IndexColumns::of(&b, object)?;
        for r in 0..cols.len() {
            let row = cols.row(r);
            let mut survives = row.expires_at > now_us;
            for h in holds.iter().filter(|h| h.covers_row(&row)) {
                survives = true;
                *out.covering.entry(h.hold_id.clone()).or_insert(0) += 1;
            }
            out.keep.push(survives);
        }
    }
    Ok(out)
}

fn corrupt(object: &str, e: impl std::fmt::Display) -> LakeError {
    LakeError::Corrupt {
        object: object.to_string(),
        problem: e.to_string(),
    }
}

/// The old file's DEK and the new one the survivors move to.
struct Rekey {
    from: Cipher,
    to: Cipher,
    wrapped: WrappedKey,
}

/// Footer of the new file: its own DEK, where it came from, and the old file's compression
/// and dictionary (moved to the new DEK).
fn new_footer(
    old: &DataFileEntry,
    md: &FileMetaData,
    p: &Partition,
    file_id: &str,
    keys: &Rekey,
) -> Result<Vec<KeyValue>, SweepError> {
    let mut kv = datafile::file_metadata(file_id, &p.dir(), keys.to.dek_id(), &keys.wrapped);
    kv.push(KeyValue::new(
        footer::REWRITTEN_FROM.into(),
        old.path.clone(),
    ));
    if let Some(c) = footer_value(md, footer::COMPRESSION) {
        kv.push(KeyValue::new(footer::COMPRESSION.into(), c.to_string()));
    }
    if let Some(d) = footer_value(md, footer::DICTIONARY) {
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(d)
            .map_err(|_| corrupt(&old.path, "footer dictionary is not base64"))?;
        let moved = reseal_dictionary(&keys.from, &keys.to, &sealed)?;
        kv.push(KeyValue::new(
            footer::DICTIONARY.into(),
            base64::engine::general_purpose::STANDARD.encode(moved),
        ));
    }
    Ok(kv)
}

/// The surviving rows of one batch, their payloads sealed under the new DEK.
fn reseal_batch(b: &RecordBatch, keys: &Rekey, object: &str) -> Result<RecordBatch, SweepError> {
    let col = |n: &str| b.column(SCHEMA.index_of(n).expect("column")).clone();
    let (ev, it, tn) = (col("event_id"), col("interaction_id"), col("tenant_id"));
    let (ev, it, tn) = (
        ev.as_string::<i32>(),
        it.as_string::<i32>(),
        tn.as_string::<i32>(),
    );
    let payload = col("payload");
    let payload = payload.as_binary::<i32>();
    let (from, to) = (&keys.from, &keys.to);
    let mut sealed = BinaryBuilder::with_capacity(b.num_rows(), payload.value_data().len());
    let mut buf = Vec::new();
    for r in 0..b.num_rows() {
        buf.clear();
        let from_aad = record_aad(tn.value(r), ev.value(r), it.value(r), from.dek_id());
        let to_aad = record_aad(tn.value(r), ev.value(r), it.value(r), to.dek_id());
        reseal_record(
            from,
            to,
            payload.value(r),
            &from_aad,
            &to_aad,
            &mut buf,
            &|| format!("event {} in {object}", ev.value(r)),
        )?;
        sealed.append_value(&buf);
    }
    let mut columns: Vec<ArrayRef> = b.columns().to_vec();
    columns[SCHEMA.index_of("dek_id").expect("column")] = Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(to.dek_id(), b.num_rows()),
    ));
    columns[SCHEMA.index_of("payload").expect("column")] = Arc::new(sealed.finish());
    Ok(RecordBatch::try_new(SCHEMA.clone(), columns).map_err(|e| corrupt(object, e))?)
}

/// Copies the rows `keep` marks from `bytes` into `w`, resealed.
async fn copy_survivors(
    builder: ParquetRecordBatchReaderBuilder<bytes::Bytes>,
    keep: &[bool],
    keys: &Rekey,
    object: &str,
    w: &mut FileWriter,
) -> Result<(), SweepError> {
    let mut offset = 0usize;
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| LakeError::parquet(object, e))?;
    for b in reader {
        let b = b.map_err(|e| corrupt(object, e))?;
        let mask = BooleanArray::from(keep[offset..offset + b.num_rows()].to_vec());
        offset += b.num_rows();
        let b = arrow::compute::filter_record_batch(&b, &mask).map_err(|e| corrupt(object, e))?;
        if b.num_rows() == 0 {
            continue;
        }
        w.write_batch(&reseal_batch(&b, keys, object)?)?;
        w.upload_pending().await?;
    }
    Ok(())
}

/// Writes the survivors of `old` (committed in partition `p`) to a new data file named by
/// `file_id`. Commits nothing and locks nothing: the caller swaps the manifest entry.
pub async fn rewrite_file(
    store: &Store,
    kms: &dyn Kms,
    p: &Partition,
    old: &DataFileEntry,
    holds: &[&Hold],
    now: DateTime<Utc>,
    file_id: &str,
) -> Result<Outcome, SweepError> {
    let old_path = old.location()?;
    let bytes = store.get(&old_path).await?;
    if manifest::sha256_hex(&bytes) != old.sha256 {
        return Err(corrupt(
            &old.path,
            "SHA-256 differs from the manifest; not rewritten (run holdfast verify)",
        )
        .into());
    }
    let survivors = survivors(&bytes, &old.path, holds, now)?;
    let kept = survivors.kept();
    if kept == 0 || kept == survivors.keep.len() as u64 {
        return Ok(Outcome::Unchanged);
    }
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| LakeError::parquet(&old.path, e))?;
    let md = builder.metadata().file_metadata().clone();
    datafile::footer::check(&md, &old.path)?;
    let dek = DataKey::generate();
    let keys = Rekey {
        from: kms
            .unwrap_key(&old.encryption.dek_id, &old.encryption.wrapped_dek)
            .await?
            .cipher(),
        wrapped: kms.wrap(&dek).await?,
        to: dek.cipher(),
    };
    let new_path = layout::data_file(p, file_id);
    let kv = new_footer(old, &md, p, file_id, &keys)?;
    let upload = store.start_upload(&new_path).await?;
    let mut w = FileWriter::new(new_path, upload, dek.id(), kv)?;
    copy_survivors(builder, &survivors.keep, &keys, &old.path, &mut w).await?;
    let file = w.close()?.complete().await?;
    let encryption = FileEncryption {
        dek_id: keys.to.dek_id().to_string(),
        wrapped_dek: keys.wrapped,
        ..old.encryption.clone()
    };
    Ok(Outcome::Rewritten(Box::new(Rewritten {
        entry: file.entry(encryption, file_id, now),
        kept,
        dropped: survivors.keep.len() as u64 - kept,
        holds: survivors.covering,
    })))
}
