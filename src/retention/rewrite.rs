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
use crate::crypto::kms::Kms;
use crate::crypto::{DataKey, record_aad, reseal_dictionary, reseal_record};
use crate::lake::LakeError;
use crate::lake::datafile::{self, FileWriter, SCHEMA};
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{self, DataFileEntry, FileEncryption};
use crate::storage::Store;
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, RecordBatch, StringArray,
};
use arrow::datatypes::TimestampMicrosecondType;
use base64::Engine;
use chrono::{DateTime, Utc};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use std::collections::{BTreeMap, BTreeSet};
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

/// Which rows of `bytes` survive at `now`, and how many each hold covers (index columns only).
fn survivors(
    bytes: &bytes::Bytes,
    object: &str,
    holds: &[&Hold],
    now: DateTime<Utc>,
) -> Result<(Vec<bool>, BTreeMap<String, u64>), LakeError> {
    let err = |e| LakeError::parquet(object, e);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(err)?;
    let names = [
        "tenant_id",
        "interaction_id",
        "queue_id",
        "agent_ids",
        "occurred_at",
        "expires_at",
    ];
    let indices: Vec<usize> = names
        .iter()
        .map(|n| SCHEMA.index_of(n).expect("column of the schema"))
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let now_us = now.timestamp_micros();
    let mut keep = Vec::new();
    let mut covering = BTreeMap::new();
    for b in builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(err)?
    {
        let b = b.map_err(|e| LakeError::Corrupt {
            object: object.to_string(),
            problem: e.to_string(),
        })?;
        let col = |n: &str| b.column_by_name(n).expect("projected column");
        let (t, i, q) = (
            col("tenant_id").as_string::<i32>(),
            col("interaction_id").as_string::<i32>(),
            col("queue_id").as_string::<i32>(),
        );
        let agents = col("agent_ids").as_list::<i32>();
        let occurred = col("occurred_at").as_primitive::<TimestampMicrosecondType>();
        let expires = col("expires_at").as_primitive::<TimestampMicrosecondType>();
        for r in 0..b.num_rows() {
            let mut survives = expires.value(r) > now_us;
            if !holds.is_empty() {
                let a = agents.value(r);
                let a = a.as_string::<i32>();
                let names: Vec<&str> = (0..a.len()).map(|k| a.value(k)).collect();
                let at = crate::clock::from_micros(occurred.value(r));
                for h in holds {
                    if h.covers(
                        t.value(r),
                        i.value(r),
                        (!q.is_null(r)).then(|| q.value(r)),
                        &names,
                        at,
                    ) {
                        survives = true;
                        *covering.entry(h.hold_id.clone()).or_insert(0) += 1;
                    }
                }
            }
            keep.push(survives);
        }
    }
    Ok((keep, covering))
}

fn footer_value<'a>(md: &'a parquet::file::metadata::FileMetaData, key: &str) -> Option<&'a str> {
    md.key_value_metadata()?
        .iter()
        .find(|k| k.key == key)?
        .value
        .as_deref()
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
        return Err(LakeError::Corrupt {
            object: old.path.clone(),
            problem: "SHA-256 differs from the manifest; not rewritten (run holdfast verify)"
                .into(),
        }
        .into());
    }
    let (keep, covering) = survivors(&bytes, &old.path, holds, now)?;
    let kept = keep.iter().filter(|k| **k).count() as u64;
    if kept == 0 || kept == keep.len() as u64 {
        return Ok(Outcome::Unchanged);
    }

    let err = |e| LakeError::parquet(&old.path, e);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(err)?;
    let md = builder.metadata().file_metadata().clone();
    datafile::footer::check(&md, &old.path)?;
    let from = kms
        .unwrap_key(&old.encryption.dek_id, &old.encryption.wrapped_dek)
        .await?
        .cipher();
    let dek = DataKey::generate();
    let wrapped = kms.wrap(&dek).await?;
    let to = dek.cipher();

    let new_path = layout::data_file(p, file_id);
    let mut kv = datafile::file_metadata(file_id, &p.dir(), dek.id(), &wrapped);
    kv.push(KeyValue::new(
        "holdfast.rewritten_from".into(),
        old.path.clone(),
    ));
    if let Some(c) = footer_value(&md, "holdfast.payload.compression") {
        kv.push(KeyValue::new(
            "holdfast.payload.compression".into(),
            c.to_string(),
        ));
    }
    if let Some(d) = footer_value(&md, "holdfast.dictionary") {
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(d)
            .map_err(|_| LakeError::Corrupt {
                object: old.path.clone(),
                problem: "footer dictionary is not base64".into(),
            })?;
        let moved = reseal_dictionary(&from, &to, &sealed)?;
        kv.push(KeyValue::new(
            "holdfast.dictionary".into(),
            base64::engine::general_purpose::STANDARD.encode(moved),
        ));
    }
    let upload = store.start_upload(&new_path).await?;
    let mut w = FileWriter::new(new_path.clone(), upload, dek.id(), kv)?;

    let (mut min_occ, mut max_occ, mut min_exp, mut max_exp) =
        (i64::MAX, i64::MIN, i64::MAX, i64::MIN);
    let (mut tenants, mut policies) = (BTreeSet::new(), BTreeSet::new());
    let mut offset = 0usize;
    for b in builder.with_batch_size(BATCH_ROWS).build().map_err(err)? {
        let b = b.map_err(|e| LakeError::Corrupt {
            object: old.path.clone(),
            problem: e.to_string(),
        })?;
        let mask = BooleanArray::from(keep[offset..offset + b.num_rows()].to_vec());
        offset += b.num_rows();
        let b = arrow::compute::filter_record_batch(&b, &mask).map_err(|e| LakeError::Corrupt {
            object: old.path.clone(),
            problem: e.to_string(),
        })?;
        if b.num_rows() == 0 {
            continue;
        }
        let col = |n: &str| b.column(SCHEMA.index_of(n).expect("column")).clone();
        let (ev, it, tn, pol) = (
            col("event_id"),
            col("interaction_id"),
            col("tenant_id"),
            col("policy_id"),
        );
        let (ev, it, tn, pol) = (
            ev.as_string::<i32>(),
            it.as_string::<i32>(),
            tn.as_string::<i32>(),
            pol.as_string::<i32>(),
        );
        let payload = col("payload");
        let payload = payload.as_binary::<i32>();
        let occ = col("occurred_at");
        let occ = occ.as_primitive::<TimestampMicrosecondType>();
        let exp = col("expires_at");
        let exp = exp.as_primitive::<TimestampMicrosecondType>();
        let mut sealed = BinaryBuilder::with_capacity(b.num_rows(), payload.value_data().len());
        let mut buf = Vec::new();
        for r in 0..b.num_rows() {
            buf.clear();
            let from_aad = record_aad(tn.value(r), ev.value(r), it.value(r), from.dek_id());
            let to_aad = record_aad(tn.value(r), ev.value(r), it.value(r), to.dek_id());
            reseal_record(
                &from,
                &to,
                payload.value(r),
                &from_aad,
                &to_aad,
                &mut buf,
                &|| format!("event {} in {}", ev.value(r), old.path),
            )?;
            sealed.append_value(&buf);
            min_occ = min_occ.min(occ.value(r));
            max_occ = max_occ.max(occ.value(r));
            min_exp = min_exp.min(exp.value(r));
            max_exp = max_exp.max(exp.value(r));
            if !tenants.contains(tn.value(r)) {
                tenants.insert(tn.value(r).to_string());
            }
            if !policies.contains(pol.value(r)) {
                policies.insert(pol.value(r).to_string());
            }
        }
        let mut columns: Vec<ArrayRef> = b.columns().to_vec();
        columns[SCHEMA.index_of("dek_id").expect("column")] = Arc::new(
            StringArray::from_iter_values(std::iter::repeat_n(to.dek_id(), b.num_rows())),
        );
        columns[SCHEMA.index_of("payload").expect("column")] = Arc::new(sealed.finish());
        let out =
            RecordBatch::try_new(SCHEMA.clone(), columns).map_err(|e| LakeError::Corrupt {
                object: old.path.clone(),
                problem: e.to_string(),
            })?;
        w.write_batch(&out)?;
        let parts = w.take_pending();
        futures::future::try_join_all(parts)
            .await
            .map_err(|e| LakeError::store("writing", new_path.as_ref(), e))?;
    }
    let (file, mut upload, parts) = w.close()?;
    futures::future::try_join_all(parts)
        .await
        .map_err(|e| LakeError::store("writing", new_path.as_ref(), e))?;
    upload
        .complete()
        .await
        .map_err(|e| LakeError::store("writing", new_path.as_ref(), e))?;

    let ts = crate::clock::from_micros;
    let entry = DataFileEntry {
        path: file.path.to_string(),
        sha256: file.sha256,
        size_bytes: file.size_bytes,
        record_count: file.record_count,
        min_occurred_at: ts(min_occ),
        max_occurred_at: ts(max_occ),
        earliest_expiry: ts(min_exp),
        latest_expiry: ts(max_exp),
        tenant_ids: tenants.into_iter().collect(),
        policy_ids: policies.into_iter().collect(),
        encryption: FileEncryption {
            algorithm: old.encryption.algorithm.clone(),
            compression: old.encryption.compression.clone(),
            aad: old.encryption.aad.clone(),
            dek_id: to.dek_id().to_string(),
            wrapped_dek: wrapped,
        },
        batch_id: file_id.to_string(),
        added_at: now,
    };
    Ok(Outcome::Rewritten(Box::new(Rewritten {
        entry,
        kept,
        dropped: keep.len() as u64 - kept,
        holds: covering,
    })))
}

#[cfg(test)]
mod tests;
