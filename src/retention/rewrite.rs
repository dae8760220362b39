//! Rewriting a data file without its expired, unheld records: the survivors (records still
//! unexpired, or covered by an active legal hold) are copied to a new file under a new DEK,
//! and the old file leaves the partition at once and storage once its lock allows.
//!
//! The new file is of format 3 whatever the old one's: each survivor's record is opened in
//! memory with the old DEK ([`Records`]) and sealed again with the other survivors of its
//! tenant, in groups, under the new DEK; no record is parsed, plaintext copies are zeroized,
//! and nothing is shown to the actor. A removed record leaves no trace in the new file's
//! groups. Every rewrite is audited (`retention.rewrite`).

use super::SweepError;
use super::hold::Hold;
use crate::crypto::kms::{Kms, WrappedKey};
use crate::crypto::{Cipher, DataKey};
use crate::lake::LakeError;
use crate::lake::datafile::{
    self, FileWriter, INDEX_COLUMNS, IndexColumns, Records, RowIds, SCHEMA, Sealing, footer,
};
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{self, DataFileEntry, FileEncryption};
use crate::storage::Store;
use arrow::array::{AsArray, BooleanArray};
use chrono::{DateTime, Utc};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use std::collections::BTreeMap;

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

/// Footer of the new file (format 3): its own DEK, and where it came from.
fn new_footer(
    old: &DataFileEntry,
    (p, file_id): (&Partition, &str),
    keys: &Rekey,
) -> Vec<KeyValue> {
    let mut kv = datafile::file_metadata(file_id, &p.dir(), keys.to.dek_id(), &keys.wrapped);
    kv.push(KeyValue::new(
        footer::REWRITTEN_FROM.into(),
        old.path.clone(),
    ));
    kv
}

/// Copies the rows `keep` marks from `bytes` into `w`: each survivor's record is opened with
/// the old DEK (in memory, zeroized after) and sealed again, in groups, under the new one.
async fn copy_survivors(
    builder: ParquetRecordBatchReaderBuilder<bytes::Bytes>,
    keep: &[bool],
    records: &mut Records,
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
        let payload = b
            .column_by_name("payload")
            .expect("column")
            .as_binary::<i32>()
            .clone();
        // a group is carried by its first row, kept or not
        (0..b.num_rows()).for_each(|r| records.carry(payload.value(r)));
        let kept = &keep[offset..offset + b.num_rows()];
        offset += b.num_rows();
        let col = |n: &str| {
            b.column_by_name(n)
                .expect("column")
                .as_string::<i32>()
                .clone()
        };
        let (tn, ev, it) = (col("tenant_id"), col("event_id"), col("interaction_id"));
        let mut opened = Vec::new();
        for r in (0..b.num_rows()).filter(|&r| kept[r]) {
            let ids = RowIds {
                tenant_id: tn.value(r),
                event_id: ev.value(r),
                interaction_id: it.value(r),
            };
            opened.push(records.open(ids, payload.value(r))?);
        }
        let mask = BooleanArray::from(kept.to_vec());
        let b = arrow::compute::filter_record_batch(&b, &mask).map_err(|e| corrupt(object, e))?;
        if b.num_rows() == 0 {
            continue;
        }
        w.write_opened(&b, &opened)?;
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
    let mut records = Records::from_footer(&md, keys.from.clone(), &old.path)?;
    let new_path = layout::data_file(p, file_id);
    let kv = new_footer(old, (p, file_id), &keys);
    let upload = store.start_upload(&new_path).await?;
    let mut w = FileWriter::new(
        new_path,
        upload,
        Sealing::Groups(Box::new(keys.to.clone())),
        kv,
    )?;
    copy_survivors(builder, &survivors.keep, &mut records, &old.path, &mut w).await?;
    let file = w.close()?.complete().await?;
    store.confirm_upload(&file.path, &file.sha256)?;
    let encryption = FileEncryption {
        dek_id: keys.to.dek_id().to_string(),
        wrapped_dek: keys.wrapped,
        compression: datafile::footer::GROUP_COMPRESSION.to_string(),
        aad: crate::crypto::group::GROUP_AAD.to_string(),
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
