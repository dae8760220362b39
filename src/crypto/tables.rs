//! A record dictionary's sizes ([`dictionary_size`], [`frequency_bits`]) and its compression
//! tables (zstd's prepared `CDict`, about 0.1 MB: [`TABLE_LOG`]), kept apart from the
//! dictionary so that they can be freed once the data file they serve is closed: a batch over
//! thousands of partitions would otherwise hold one set per partition and tenant until it
//! ends. After [`Tables::release`], a record is still compressed with the same dictionary,
//! from its raw bytes (slower, the same frame format).
//!
//! The `CDict` is made through `zstd_sys` (zstd-safe makes one only with the level's default
//! tables) and used with a compression context of its own ([`Context`]).

use std::ptr::NonNull;
use std::sync::RwLock;
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

/// Hash and chain tables of a prepared dictionary have at most 2^13 entries. The level's
/// defaults (2^16 and 2^15 for a 16 KiB dictionary at level 3, 0.4 MB a dictionary) are sized
/// for inputs, not for a dictionary of 16K positions; with a dictionary per tenant, six times
/// as many are in use at once, and compressing a record then waited on cache misses: 7.0 us a
/// record instead of 4.5 with 2^13, which costs 0.7% more bytes (`benches/dictionary_training`).
pub(super) const TABLE_LOG: u32 = 13;

/// zstd's prepared dictionary (`ZSTD_CDict`), freed on drop.
struct Prepared(NonNull<zstd_sys::ZSTD_CDict>);

// SAFETY: a CDict is read-only once made; zstd lets several contexts, in several threads,
// compress with one CDict at once.
unsafe impl Send for Prepared {}
// SAFETY: as above: every use through `&Prepared` only reads it.
unsafe impl Sync for Prepared {}

impl Prepared {
    fn new(raw: &[u8], level: i32) -> Self {
        // SAFETY: pure functions of their arguments.
        let mut cp = unsafe { zstd_sys::ZSTD_getCParams(level, 0, raw.len()) };
        cp.hashLog = cp.hashLog.min(TABLE_LOG);
        cp.chainLog = cp.chainLog.min(TABLE_LOG);
        let mem = zstd_sys::ZSTD_customMem {
            customAlloc: None,
            customFree: None,
            opaque: std::ptr::null_mut(),
        };
        // SAFETY: `raw` is readable for its length and copied (`ZSTD_dlm_byCopy`); the
        // parameters come from zstd with two table sizes lowered within their bounds.
        let cdict = unsafe {
            zstd_sys::ZSTD_createCDict_advanced(
                raw.as_ptr().cast(),
                raw.len(),
                zstd_sys::ZSTD_dictLoadMethod_e::ZSTD_dlm_byCopy,
                zstd_sys::ZSTD_dictContentType_e::ZSTD_dct_auto,
                cp,
                mem,
            )
        };
        Prepared(NonNull::new(cdict).expect("zstd prepares a dictionary it trained"))
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: made by ZSTD_createCDict_advanced, freed once, not in use (we own it).
        unsafe { zstd_sys::ZSTD_freeCDict(self.0.as_ptr()) };
    }
}

/// A compression context for prepared dictionaries, freed on drop.
pub(super) struct Context(NonNull<zstd_sys::ZSTD_CCtx>);

// SAFETY: a context is used by one thread at a time (`&mut`); it may move between threads.
unsafe impl Send for Context {}

impl Default for Context {
    fn default() -> Self {
        // SAFETY: allocates a fresh context.
        let cctx = unsafe { zstd_sys::ZSTD_createCCtx() };
        Context(NonNull::new(cctx).expect("zstd allocates a context"))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: made by ZSTD_createCCtx, freed once.
        unsafe { zstd_sys::ZSTD_freeCCtx(self.0.as_ptr()) };
    }
}

impl Context {
    /// Compresses `src` with `cdict`, appending to `dst` (of enough spare capacity).
    fn compress(&mut self, dst: &mut Vec<u8>, src: &[u8], cdict: &Prepared) -> SafeResult {
        let start = dst.len();
        let room = dst.capacity() - start;
        // SAFETY: the destination is `dst`'s spare capacity, `room` bytes from its end; the
        // source is `src`; the context is ours alone (`&mut self`), the CDict is alive.
        let n = unsafe {
            zstd_sys::ZSTD_compress_usingCDict(
                self.0.as_ptr(),
                dst.as_mut_ptr().add(start).cast(),
                room,
                src.as_ptr().cast(),
                src.len(),
                cdict.0.as_ptr(),
            )
        };
        // SAFETY: only inspects the code.
        if unsafe { zstd_sys::ZSTD_isError(n) } != 0 {
            return Err(n);
        }
        // SAFETY: zstd wrote `n <= room` bytes after `start`.
        unsafe { dst.set_len(start + n) };
        Ok(n)
    }
}

pub(super) struct Tables(RwLock<Option<Prepared>>);

impl Tables {
    pub(super) fn new(raw: &[u8], level: i32) -> Self {
        Tables(RwLock::new(Some(Prepared::new(raw, level))))
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
        (ctx, cctx): (&mut Context, &mut CCtx<'static>),
        dst: &mut Vec<u8>,
        src: &[u8],
        (raw, level): (&[u8], i32),
    ) -> SafeResult {
        let tables = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match tables.as_ref() {
            Some(t) => ctx.compress(dst, src, t),
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
