//! A record dictionary's sizes ([`dictionary_size`], [`frequency_bits`]) and its compression
//! tables (zstd's prepared `CDict`, about 0.4 MB at [`super::RECORD_LEVEL`]), kept apart from
//! the dictionary so that they can be freed once the data file they serve is closed: a batch
//! over thousands of partitions would otherwise hold one set per partition until it ends.
//! After [`Tables::release`], a record is still compressed with the same dictionary, from its
//! raw bytes (slower, the same frame format).

use std::sync::RwLock;
use zstd::dict::EncoderDictionary;
use zstd::zstd_safe::{CCtx, SafeResult};

/// The size of a dictionary trained on `total` bytes: a sixteenth of them, at most
/// [`super::DICTIONARY_BYTES`]. The dictionary sits in its file's footer, and for a small file
/// a larger one costs more than it saves (16 backfill partitions of 9 to 115 records: 12%
/// fewer bytes than with a quarter); from about 210 records on it is the full size either way.
pub(super) fn dictionary_size(total: usize) -> usize {
    super::DICTIONARY_BYTES.min((total / 16).max(1024))
}

/// The trainer's frequency table has 2^f counters: no more than the samples have positions,
/// and at most 2^15 (a file of 45 records was trained with 1 MB of counters; with a dictionary
/// per tenant, six trainings a file, 2^15 trained in half the time of up to 2^18 for 0.3% more
/// bytes a record: `benches/dictionary_training`).
pub(super) fn frequency_bits(total: usize) -> u32 {
    total.next_power_of_two().trailing_zeros().clamp(14, 15)
}

pub(super) struct Tables(RwLock<Option<EncoderDictionary<'static>>>);

impl Tables {
    pub(super) fn new(raw: &[u8], level: i32) -> Self {
        Tables(RwLock::new(Some(EncoderDictionary::copy(raw, level))))
    }

    /// Frees the tables; later compressions load the raw dictionary instead.
    pub(super) fn release(&self) {
        let freed = self.0.write().map(|mut t| t.take());
        drop(freed);
    }

    #[cfg(test)]
    pub(super) fn released(&self) -> bool {
        self.0.read().map_or(true, |t| t.is_none())
    }

    /// Compresses `src` into `dst` with the dictionary: through the tables while they are
    /// kept, else from `raw` at `level`.
    pub(super) fn compress(
        &self,
        cctx: &mut CCtx<'static>,
        dst: &mut Vec<u8>,
        src: &[u8],
        raw: &[u8],
        level: i32,
    ) -> SafeResult {
        let tables = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match tables.as_ref() {
            Some(t) => cctx.compress_using_cdict(dst, src, t.as_cdict()),
            None => cctx.compress_using_dict(dst, src, raw, level),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        DataKey, Dictionary, RecordCompressor, open_record, record_aad, seal_record,
    };

    #[test]
    fn records_compressed_after_the_tables_are_freed_open_with_the_same_dictionary() {
        let records: Vec<Vec<u8>> = (0..200)
            .map(|i| format!(r#"{{"eventId":"e-{i}","queue":"Billing - NA","notes":"the caller asked about invoice {i}, a refund and the loyalty discount"}}"#).into_bytes())
            .collect();
        let samples: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let dict = Dictionary::train(&samples).expect("enough samples");
        let k = DataKey::generate();
        let c = k.cipher();
        let mut z = RecordCompressor::default();
        let a = record_aad("t", "e", "i", k.id());
        let seal = |z: &mut RecordCompressor, r: &[u8]| {
            let mut out = Vec::new();
            seal_record(&c, z, Some(&dict), r, &a, &mut out);
            out
        };
        let before: Vec<Vec<u8>> = records.iter().map(|r| seal(&mut z, r)).collect();
        assert!(!dict.released());
        dict.release_tables();
        assert!(dict.released());
        let after: Vec<Vec<u8>> = records.iter().map(|r| seal(&mut z, r)).collect();
        let ddict = dict.decoder();
        for (r, (b, f)) in records.iter().zip(before.iter().zip(&after)) {
            for sealed in [b, f] {
                let opened = open_record(&c, Some(&ddict), sealed, &a, &|| "r".into()).unwrap();
                assert_eq!(&opened, r);
            }
        }
        // still compressed with the dictionary, not without it
        let plain: usize = records
            .iter()
            .map(|r| {
                let mut out = Vec::new();
                seal_record(&c, &mut z, None, r, &a, &mut out);
                out.len()
            })
            .sum();
        let (b, f) = (
            before.iter().map(Vec::len).sum::<usize>(),
            after.iter().map(Vec::len).sum::<usize>(),
        );
        assert!(
            f * 10 < b * 11 && f < plain,
            "{b} before, {f} after, {plain} without"
        );
    }
}
