//! Rewriting a format 1 file as format 2. Its one dictionary was trained on every tenant's
//! records, so its survivors cannot keep it: each tenant's dictionary is trained anew on that
//! tenant's first surviving records (decompressed in memory, zeroized after training), and
//! every survivor is decompressed and compressed again with its tenant's dictionary (or plain
//! zstd when the tenant has too few survivors to learn from).

use super::{Rekey, SweepError, corrupt};
use crate::crypto::{
    Cipher, CryptoError, Dictionary, DictionaryScope, RecordCompressor, TRAIN_RECORDS, open_record,
    record_aad, seal_record,
};
use crate::lake::LakeError;
use crate::lake::datafile::{Decoder, FileDictionaries, SCHEMA};
use arrow::array::AsArray;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::HashMap;
use zeroize::{Zeroize, Zeroizing};

/// The old file's dictionary and the tenants' new ones.
pub(super) struct Learnt {
    shared: Option<Decoder>,
    tenants: HashMap<String, Option<Dictionary>>,
}

/// Each surviving tenant's first [`TRAIN_RECORDS`] surviving records, decompressed.
type Samples = HashMap<String, Vec<Zeroizing<Vec<u8>>>>;

/// Reads the survivors `keep` marks in `bytes` (a format 1 file) and trains their tenants'
/// dictionaries.
pub(super) fn learn(
    bytes: &bytes::Bytes,
    keep: &[bool],
    dicts: &FileDictionaries,
    object: &str,
) -> Result<Learnt, SweepError> {
    let shared = dicts.for_tenant("")?;
    let samples = samples(bytes, keep, dicts.cipher(), shared.as_deref(), object)?;
    let tenants = samples
        .into_iter()
        .map(|(t, s)| {
            let refs: Vec<&[u8]> = s.iter().map(|r| r.as_slice()).collect();
            let d = Dictionary::train(&refs);
            (t, d)
        })
        .collect();
    Ok(Learnt { shared, tenants })
}

fn samples(
    bytes: &bytes::Bytes,
    keep: &[bool],
    cipher: &Cipher,
    shared: Option<&zstd::dict::DecoderDictionary<'static>>,
    object: &str,
) -> Result<Samples, SweepError> {
    let err = |e| LakeError::parquet(object, e);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(err)?;
    let columns = ["tenant_id", "event_id", "interaction_id", "payload"];
    let indices = columns.map(|c| SCHEMA.index_of(c).expect("column of the schema"));
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(super::BATCH_ROWS)
        .build()
        .map_err(err)?;
    let mut out = Samples::new();
    let mut offset = 0usize;
    for b in reader {
        let b = b.map_err(|e| corrupt(object, e))?;
        let col = |n: &str| b.column_by_name(n).expect("projected").clone();
        let (tn, ev, it, pl) = (
            col("tenant_id"),
            col("event_id"),
            col("interaction_id"),
            col("payload"),
        );
        let (tn, ev, it) = (
            tn.as_string::<i32>(),
            ev.as_string::<i32>(),
            it.as_string::<i32>(),
        );
        let pl = pl.as_binary::<i32>();
        for r in 0..b.num_rows() {
            let taken = out.get(tn.value(r)).map_or(0, Vec::len);
            if !keep[offset + r] || taken >= TRAIN_RECORDS {
                continue;
            }
            let aad = record_aad(tn.value(r), ev.value(r), it.value(r), cipher.dek_id());
            let what = || format!("event {} in {object}", ev.value(r));
            let plain = open_record(cipher, shared, pl.value(r), &aad, &what)?;
            out.entry(tn.value(r).to_string())
                .or_default()
                .push(Zeroizing::new(plain));
        }
        offset += b.num_rows();
    }
    Ok(out)
}

impl Learnt {
    /// The new dictionary of `tenant` sealed under `to` for the footer (`None`: plain zstd).
    pub(super) fn seal(&self, to: &Cipher, tenant: &str) -> Option<Vec<u8>> {
        let d = self.tenants.get(tenant)?.as_ref()?;
        Some(d.seal(to, DictionaryScope::Tenant(tenant)))
    }

    /// One record, opened with the old DEK and dictionary, compressed with its tenant's new
    /// dictionary and sealed under the new DEK into `out`; the plaintext is zeroized.
    pub(super) fn reseal(
        &self,
        keys: &Rekey,
        z: &mut RecordCompressor,
        (tenant, sealed): (&str, &[u8]),
        (from_aad, to_aad): (&[u8], &[u8]),
        out: &mut Vec<u8>,
        what: &dyn Fn() -> String,
    ) -> Result<(), CryptoError> {
        let mut plain = open_record(&keys.from, self.shared.as_deref(), sealed, from_aad, what)?;
        let dict = self.tenants.get(tenant).and_then(Option::as_ref);
        seal_record(&keys.to, z, dict, &plain, to_aad, out);
        plain.zeroize();
        Ok(())
    }
}
