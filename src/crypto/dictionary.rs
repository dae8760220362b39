//! Record dictionaries: zstd dictionaries trained on records of one data file, stored sealed
//! in that file's footer, so that they die with the file and no record outlives its retention
//! inside a dictionary. A data file of format 2 has one per tenant, trained only on that
//! tenant's records and sealed with an AAD naming the tenant ([`DictionaryScope::Tenant`]): a
//! dictionary shared by tenants is a side channel (a guess of another tenant's number
//! compresses shorter when it is right). Format 1 files have one for the whole file
//! ([`DictionaryScope::File`]); they are still read.

use super::{Cipher, CryptoError, aad, tables};
use zeroize::Zeroize;

/// Compression level of record payloads.
pub const RECORD_LEVEL: i32 = 3;
/// Size of a trained dictionary.
pub const DICTIONARY_BYTES: usize = 16 * 1024;
/// Records a dictionary is trained on: a batch holds a tenant's first records of a file back
/// until it has this many (or the file closes).
pub const TRAIN_RECORDS: usize = 256;

/// Whose records a dictionary was trained on, which its AAD binds (with the DEK id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictionaryScope<'a> {
    /// Every record of the file (data file format 1, read only).
    File,
    /// One tenant's records of the file (data file format 2).
    Tenant(&'a str),
}

impl DictionaryScope<'_> {
    fn aad(self, dek_id: &str) -> Vec<u8> {
        match self {
            DictionaryScope::File => aad(&[b"holdfast.dictionary.v1", dek_id.as_bytes()]),
            DictionaryScope::Tenant(t) => {
                aad(&[b"holdfast.dictionary.v2", t.as_bytes(), dek_id.as_bytes()])
            }
        }
    }
}

/// A trained dictionary and its compression tables. `Debug` shows only its size.
pub struct Dictionary {
    raw: zeroize::Zeroizing<Vec<u8>>,
    tables: tables::Tables,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dictionary({} bytes)", self.raw.len())
    }
}

impl Dictionary {
    /// Trains on `samples`; `None` when there is too little to learn from.
    pub fn train(samples: &[&[u8]]) -> Option<Self> {
        let total: usize = samples.iter().map(|s| s.len()).sum();
        if samples.len() < 16 || total < 8 * 1024 {
            return None;
        }
        let mut data = zeroize::Zeroizing::new(Vec::with_capacity(total));
        samples.iter().for_each(|s| data.extend_from_slice(s));
        let sizes: Vec<usize> = samples.iter().map(|s| s.len()).collect();
        let mut raw = vec![0u8; tables::dictionary_size(total)];
        // fastCover with fixed parameters: the default trainer searches k and d and took
        // ~30 ms per partition here, for no better ratio on these records (measured ~11 ms);
        // `accel` 4 samples a quarter of the positions (256 records of a tenant: 1.6 ms
        // instead of 3.5 ms, for 0.3% more bytes a record).
        let f = tables::frequency_bits(total);
        let params = zstd_sys::ZDICT_fastCover_params_t {
            k: 1000,
            d: 8,
            f,
            steps: 0,
            nbThreads: 0,
            splitPoint: 1.0,
            accel: 4,
            shrinkDict: 0,
            shrinkDictMaxRegression: 0,
            zParams: zstd_sys::ZDICT_params_t {
                compressionLevel: RECORD_LEVEL,
                notificationLevel: 0,
                dictID: 0,
            },
        };
        // SAFETY: `raw` is writable for its length; `data` holds exactly the bytes `sizes`
        // describes; the call reads and writes only within those buffers.
        let n = unsafe {
            zstd_sys::ZDICT_trainFromBuffer_fastCover(
                raw.as_mut_ptr().cast(),
                raw.len(),
                data.as_ptr().cast(),
                sizes.as_ptr(),
                sizes.len() as u32,
                params,
            )
        };
        // SAFETY: ZDICT_isError only inspects the code.
        if unsafe { zstd_sys::ZDICT_isError(n) } != 0 {
            return None;
        }
        raw.truncate(n);
        Some(Self::from_raw(raw))
    }

    pub fn from_raw(raw: Vec<u8>) -> Self {
        let tables = tables::Tables::new(&raw, RECORD_LEVEL);
        Dictionary {
            raw: zeroize::Zeroizing::new(raw),
            tables,
        }
    }

    /// Frees the compression tables (once its file is closed); compressing with it still
    /// works, from the raw dictionary.
    pub fn release_tables(&self) {
        self.tables.release();
    }

    #[cfg(test)]
    pub(super) fn released(&self) -> bool {
        self.tables.released()
    }

    /// Compresses `src` into `dst` (of `compress_bound` capacity) with this dictionary.
    pub(super) fn compress(
        &self,
        contexts: (&mut tables::Context, &mut zstd::zstd_safe::CCtx<'static>),
        dst: &mut Vec<u8>,
        src: &[u8],
    ) -> zstd::zstd_safe::SafeResult {
        self.tables
            .compress(contexts, dst, src, (&self.raw, RECORD_LEVEL))
    }

    /// The dictionary prepared for decompression (records sealed with it, before sealing it).
    pub fn decoder(&self) -> zstd::dict::DecoderDictionary<'static> {
        zstd::dict::DecoderDictionary::copy(&self.raw)
    }

    /// The dictionary sealed under a DEK for a file footer, its AAD binding `scope` and the
    /// DEK id.
    pub fn seal(&self, cipher: &Cipher, scope: DictionaryScope<'_>) -> Vec<u8> {
        cipher.seal(&self.raw, &scope.aad(cipher.dek_id()))
    }

    /// Opens a sealed dictionary for decompression; fails authentication unless it was
    /// sealed under this DEK for this `scope`. `what` names it in errors.
    pub fn open(
        cipher: &Cipher,
        scope: DictionaryScope<'_>,
        sealed: &[u8],
        what: &dyn Fn() -> String,
    ) -> Result<zstd::dict::DecoderDictionary<'static>, CryptoError> {
        let mut raw = cipher.open(sealed, &scope.aad(cipher.dek_id()), what)?;
        let d = zstd::dict::DecoderDictionary::copy(&raw);
        raw.zeroize();
        Ok(d)
    }

    /// Opens a sealed dictionary to compress with (a rewrite that recompresses records).
    pub fn open_raw(
        cipher: &Cipher,
        scope: DictionaryScope<'_>,
        sealed: &[u8],
        what: &dyn Fn() -> String,
    ) -> Result<Self, CryptoError> {
        let raw = cipher.open(sealed, &scope.aad(cipher.dek_id()), what)?;
        Ok(Self::from_raw(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn records(n: usize, tenant: &str) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!(r#"{{"eventId":"e-{i}","tenantId":"{tenant}","state":"CREATED","interaction":{{"queue":"Billing - NA","notes":"customer asked about invoice {i} and the loyalty discount"}}}}"#).into_bytes())
            .collect()
    }

    fn train(records: &[Vec<u8>]) -> Dictionary {
        let samples: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        Dictionary::train(&samples).expect("enough samples")
    }

    #[test]
    fn dictionary_round_trip_and_gain() {
        let records = records(300, "t");
        let dict = train(&records);
        let k = DataKey::generate();
        let c = k.cipher();
        let scope = DictionaryScope::Tenant("t");
        let sealed_dict = dict.seal(&c, scope);
        let ddict = Dictionary::open(&c, scope, &sealed_dict, &|| "d".into()).unwrap();
        let mut z = RecordCompressor::default();
        let (mut with, mut without) = (0, 0);
        for r in &records {
            let a = record_aad("t", "e", "i", k.id());
            let mut out = Vec::new();
            seal_record(&c, &mut z, Some(&dict), r, &a, &mut out);
            with += out.len();
            assert_eq!(
                &open_record(&c, Some(&ddict), &out, &a, &|| "r".into()).unwrap(),
                r
            );
            let mut plain = Vec::new();
            seal_record(&c, &mut z, None, r, &a, &mut plain);
            without += plain.len();
        }
        assert!(with * 2 < without, "dictionary {with} vs plain {without}");
        let other = DataKey::generate().cipher();
        assert!(
            Dictionary::open(&other, scope, &sealed_dict, &|| "d".into()).is_err(),
            "sealed under the file DEK"
        );
        let samples: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        assert!(Dictionary::train(&samples[..3]).is_none());
    }

    /// A tenant's dictionary is bound to its tenant and DEK: sealed for tenant A, it does not
    /// open as tenant B's (nor as a format-1 file dictionary); and a record of A compressed
    /// with A's dictionary does not decompress with B's. Neither error shows plaintext.
    #[test]
    fn a_tenants_dictionary_opens_for_that_tenant_only() {
        let (ra, rb) = (records(100, "tenant-a"), records(100, "tenant-b"));
        let (da, db) = (train(&ra), train(&rb));
        let k = DataKey::generate();
        let c = k.cipher();
        let (a, b) = (
            DictionaryScope::Tenant("tenant-a"),
            DictionaryScope::Tenant("tenant-b"),
        );
        let sealed_a = da.seal(&c, a);
        let what = || "dictionary of tenant tenant-b in lake/x/part-1.parquet".to_string();
        for scope in [b, DictionaryScope::File] {
            let e = Dictionary::open(&c, scope, &sealed_a, &what)
                .err()
                .expect("refused");
            assert!(matches!(e, CryptoError::Authentication { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("tenant-b in lake/x/part-1.parquet"), "{msg}");
            assert!(!msg.contains("loyalty"), "{msg}");
        }
        let opened_b = Dictionary::open(&c, b, &db.seal(&c, b), &what).unwrap();
        let aad = record_aad("tenant-a", "e-1", "i", k.id());
        let mut sealed = Vec::new();
        let mut z = RecordCompressor::default();
        seal_record(&c, &mut z, Some(&da), &ra[1], &aad, &mut sealed);
        let e =
            open_record(&c, Some(&opened_b), &sealed, &aad, &|| "event e-1".into()).unwrap_err();
        assert!(matches!(e, CryptoError::Decompress { .. }), "{e}");
        assert!(e.to_string().contains("event e-1") && !e.to_string().contains("loyalty"));
        let opened_a = Dictionary::open(&c, a, &sealed_a, &what).unwrap();
        let plain = open_record(&c, Some(&opened_a), &sealed, &aad, &|| "r".into()).unwrap();
        assert_eq!(plain, ra[1]);
    }
}
