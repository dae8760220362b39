//! A data file's filter of interaction ids: a Bloom filter its manifest entry carries, so a
//! lookup by interaction id opens only the files that may hold it. Interaction ids are
//! plaintext index columns of the file already (and in its Parquet bloom filters); the filter
//! holds bits of their hashes, nothing more.
//!
//! Scheme `fnv1a64-fmix64`: an id's UTF-8 bytes hashed with 64-bit FNV-1a, then mixed with
//! MurmurHash3's `fmix64`; probe `i` (of `probes`) sets bit `(lo + i * hi) mod bits`, where
//! `lo` and `hi` are the low and high 32 bits of the mixed hash and `bits` is a power of two.
//! The bits are stored little-endian in 64-bit words.

use std::collections::HashSet;

pub const SCHEME: &str = "fnv1a64-fmix64";
const PROBES: u32 = 7;
/// Bits per distinct id, before rounding up to a power of two (about 1% false positives).
const BITS_PER_ID: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InteractionFilter {
    pub probes: u32,
    pub words: Vec<u64>,
}

/// The hash of an id, as the filter uses it.
pub fn hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl InteractionFilter {
    /// A filter of the ids whose [`hash`]es are `hashes`.
    pub fn of_hashes<S>(hashes: &HashSet<u64, S>) -> Self {
        let bits = (hashes.len() * BITS_PER_ID).max(64).next_power_of_two();
        let mut f = InteractionFilter {
            probes: PROBES,
            words: vec![0; bits / 64],
        };
        for h in hashes {
            for bit in f.bits_of(*h) {
                f.words[bit / 64] |= 1 << (bit % 64);
            }
        }
        f
    }

    fn bits_of(&self, h: u64) -> impl Iterator<Item = usize> + use<> {
        let mask = (self.words.len() * 64).saturating_sub(1) as u64;
        let (lo, hi) = (h & 0xffff_ffff, h >> 32);
        (0..self.probes as u64).map(move |i| (lo.wrapping_add(i.wrapping_mul(hi)) & mask) as usize)
    }

    /// False when `id` is certainly not among the file's interaction ids.
    pub fn may_contain(&self, id: &str) -> bool {
        if self.words.is_empty() || !self.words.len().is_power_of_two() {
            return true;
        }
        self.bits_of(hash(id))
            .all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// The stored bytes of the bits (little-endian words).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Reads stored bits; `None` unless they are a power of two of 64-bit words.
    pub fn from_bytes(probes: u32, bytes: &[u8]) -> Option<Self> {
        let words: Vec<u64> = bytes
            .chunks(8)
            .map(|c| Some(u64::from_le_bytes(c.try_into().ok()?)))
            .collect::<Option<_>>()?;
        (words.len().is_power_of_two() && (1..=64).contains(&probes))
            .then_some(InteractionFilter { probes, words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_every_id_and_few_others() {
        let ids: Vec<String> = (0..2000).map(|i| format!("conv-{i:06}")).collect();
        let f =
            InteractionFilter::of_hashes(&ids.iter().map(|i| hash(i)).collect::<HashSet<u64>>());
        assert!(ids.iter().all(|i| f.may_contain(i)));
        let false_hits = (0..10_000)
            .filter(|i| f.may_contain(&format!("other-{i}")))
            .count();
        assert!(false_hits < 300, "{false_hits} of 10000");
        let back = InteractionFilter::from_bytes(f.probes, &f.to_bytes()).unwrap();
        assert_eq!(back, f);
        assert!(InteractionFilter::from_bytes(7, &[0; 24]).is_none());
        let one = InteractionFilter::of_hashes(&[hash("conv-1")].into());
        assert_eq!(one.words.len(), 1);
        assert_eq!(one.words[0].count_ones(), 7 - collisions(&one, "conv-1"));
    }

    fn collisions(f: &InteractionFilter, id: &str) -> u32 {
        let bits: Vec<usize> = f.bits_of(hash(id)).collect();
        let distinct: HashSet<usize> = bits.iter().copied().collect();
        (bits.len() - distinct.len()) as u32
    }
}
