//! Rewriting a data file without its expired, unheld records: the survivors (records still
//! unexpired, or covered by an active legal hold) are copied to a new file under a new DEK,
//! and the old file leaves the partition at once and storage once its lock allows.
//!
//! Survivors of a format 2 file are moved ciphertext to ciphertext: each record's compressed
//! frame is opened in memory with the old DEK and sealed again under the new one (AAD rebound
//! to the new DEK id); no record is decompressed or parsed, and nothing is shown to the actor.
//! The dictionaries of the tenants with survivors move the same way (the others are dropped).
//! A format 1 file (one dictionary for every tenant) is rewritten as format 2: its survivors
//! are decompressed in memory and compressed again with dictionaries trained per tenant on
//! them ([`recompress`]). Every rewrite is audited (`retention.rewrite`).

use super::SweepError;
use super::hold::Hold;
use crate::crypto::kms::{Kms, WrappedKey};
use crate::crypto::{
    Cipher, DataKey, DictionaryScope, RecordCompressor, record_aad, reseal_dictionary,
    reseal_record,
};
use crate::lake::LakeError;
use crate::lake::datafile::{
    self, FileDictionaries, FileWriter, INDEX_COLUMNS, IndexColumns, SCHEMA, footer,
};
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{self, DataFileEntry, FileEncryption};
use crate::storage::Store;
use arrow::array::{ArrayRef, AsArray, BinaryBuilder, BooleanArray, RecordBatch, StringArray};
use base64::Engine;
use chrono::{DateTime, Utc};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

mod recompress;

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

/// Which rows survive at `now`, how many each hold covers, and the survivors' tenants.
struct Survivors {
    keep: Vec<bool>,
    covering: BTreeMap<String, u64>,
    tenants: BTreeSet<String>,
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
        tenants: BTreeSet::new(),
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
            if survives && !out.tenants.contains(row.tenant) {
                out.tenants.insert(row.tenant.to_string());
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

/// How survivors move to the new DEK.
enum Move {
    /// Format 2: ciphertext to ciphertext, with their tenants' dictionaries.
    Reseal,
    /// Format 1: decompressed and compressed again with their tenants' new dictionaries.
    Recompress(recompress::Learnt),
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Footer of the new file (format 2): its own DEK, where it came from, and the dictionaries of
/// the tenants with survivors, moved to the new DEK (or, from a format 1 file, learnt anew).
fn new_footer(
    old: &DataFileEntry,
    dicts: &FileDictionaries,
    how: &Move,
    tenants: &BTreeSet<String>,
    (p, file_id): (&Partition, &str),
    keys: &Rekey,
) -> Result<(Vec<KeyValue>, &'static str), SweepError> {
    let mut kv = datafile::file_metadata(file_id, &p.dir(), keys.to.dek_id(), &keys.wrapped);
    kv.push(KeyValue::new(
        footer::REWRITTEN_FROM.into(),
        old.path.clone(),
    ));
    let mut entries = Vec::new();
    for t in tenants {
        let sealed = match how {
            Move::Recompress(learnt) => learnt.seal(&keys.to, t),
            Move::Reseal => match dicts.sealed(t)? {
                Some(s) => {
                    let what = || format!("dictionary of tenant {t} in {}", old.path);
                    let scope = DictionaryScope::Tenant(t);
                    Some(reseal_dictionary(&keys.from, &keys.to, scope, s, &what)?)
                }
                None => None,
            },
        };
        entries.extend(sealed.map(|s| footer::TenantDictionaryV2 {
            tenant_id: t.clone(),
            dek_id: keys.to.dek_id().to_string(),
            sealed: base64(&s),
        }));
    }
    let compression = match entries.is_empty() {
        true => "zstd",
        false => "zstd+tenant-dictionaries",
    };
    kv.push(KeyValue::new(
        footer::COMPRESSION.into(),
        compression.to_string(),
    ));
    if !entries.is_empty() {
        kv.push(KeyValue::new(
            footer::DICTIONARIES.into(),
            footer::encode_dictionaries(entries),
        ));
    }
    Ok((kv, compression))
}

/// The surviving rows of one batch, their payloads sealed under the new DEK.
fn reseal_batch(
    b: &RecordBatch,
    keys: &Rekey,
    how: &mut (Move, RecordCompressor),
    object: &str,
) -> Result<RecordBatch, SweepError> {
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
        let what = || format!("event {} in {object}", ev.value(r));
        let (sealed_old, aads) = (payload.value(r), (&from_aad[..], &to_aad[..]));
        match &mut *how {
            (Move::Reseal, _) => {
                reseal_record(from, to, sealed_old, aads.0, aads.1, &mut buf, &what)?
            }
            (Move::Recompress(l), z) => {
                l.reseal(keys, z, (tn.value(r), sealed_old), aads, &mut buf, &what)?
            }
        }
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
    (keys, how): (&Rekey, Move),
    object: &str,
    w: &mut FileWriter,
) -> Result<(), SweepError> {
    let mut how = (how, RecordCompressor::default());
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
        w.write_batch(&reseal_batch(&b, keys, &mut how, object)?)?;
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
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .map_err(|e| LakeError::parquet(&old.path, e))?;
    let md = builder.metadata().file_metadata().clone();
    datafile::footer::check(&md, &old.path)?;
    let dek = DataKey::generate();
    let keys = Rekey {
        from: kms
            .unwrap_key(&old.encryption.dek_id, &old.encryption.wrapped_dek)
            .await?
            .cipher(),
        // under the key that wrapped the old file's DEK: a tenant's own stays its own
        wrapped: kms
            .wrap_under(&dek, &old.encryption.wrapped_dek.kek_id)
            .await?,
        to: dek.cipher(),
    };
    let dicts = FileDictionaries::from_footer(&md, keys.from.clone(), &old.path)?;
    let how = match dicts.shared() {
        true => Move::Recompress(recompress::learn(
            &bytes,
            &survivors.keep,
            &dicts,
            &old.path,
        )?),
        false => Move::Reseal,
    };
    let new_path = layout::data_file(p, file_id);
    let place = (p, file_id);
    let (kv, compression) = new_footer(old, &dicts, &how, &survivors.tenants, place, &keys)?;
    let upload = store.start_upload(&new_path).await?;
    let mut w = FileWriter::new(new_path, upload, dek.id(), kv)?;
    copy_survivors(builder, &survivors.keep, (&keys, how), &old.path, &mut w).await?;
    let file = w.close()?.complete().await?;
    let encryption = FileEncryption {
        dek_id: keys.to.dek_id().to_string(),
        wrapped_dek: keys.wrapped,
        compression: compression.to_string(),
        ..old.encryption.clone()
    };
    Ok(Outcome::Rewritten(Box::new(Rewritten {
        entry: file.entry(encryption, file_id, now),
        kept,
        dropped: survivors.keep.len() as u64 - kept,
        holds: survivors.covering,
    })))
}

#[cfg(test)]
mod tests;
