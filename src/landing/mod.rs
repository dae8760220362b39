//! The landing zone: raw lines, durable and encrypted, waiting for a batch; and the
//! quarantine, where lines that cannot be stored wait with their reason and original bytes.
//!
//! Segment layout (`landing/<id>.seg`, one create-only put):
//! `HFSEG001` | u32 BE header length | header JSON | blocks, each u32 BE length + sealed
//! bytes. A block is zstd(lines, each ending in `\n`) sealed with the segment's DEK under
//! AAD (scheme, segment id, source, arrival time, block index, block count), so blocks cannot
//! be reordered, dropped, moved to another segment or re-labelled. A server's group commit
//! writes the segments of its tenants back to back in one object (`landing/<id>.segs`, named
//! by the first); each keeps its own header, DEK and AAD.

mod format;
pub mod quarantine;
mod read;
pub use format::{QUARANTINE_FORMAT, SEGMENT_FORMAT};
pub use read::{Segment, raw_size, read_headers};

use crate::crypto::kms::{Kms, KmsError, WrappedKey};
use crate::crypto::{Cipher, CryptoError, DataKey, aad};
use crate::lake::{LakeError, layout};
use crate::storage::{Put, Store};
use chrono::{DateTime, Utc};
use object_store::path::Path;

/// Raw bytes per block before compression.
pub const BLOCK_BYTES: usize = 1 << 20;
/// Raw bytes per segment (one object).
pub const SEGMENT_BYTES: usize = 64 << 20;
/// Most raw bytes one block may hold: a block's worth of lines, or one line at the limit of
/// one event. A block that decompresses past it (or past its segment's raw size) is damaged.
pub const MAX_BLOCK_RAW: usize = BLOCK_BYTES + crate::sources::MAX_LINE_BYTES + 2;
/// zstd level of landing blocks: fast; segments live only until their batch commits.
const LANDING_LEVEL: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LandingError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{object}: {problem}")]
    Corrupt { object: String, problem: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("quarantine entry {0} not found")]
    NotFound(String),
}

/// A landing segment's header as read (stored as `format::HeaderFile`, which never changes).
#[derive(Debug, Clone)]
pub struct SegmentHeader {
    pub segment_id: String,
    pub source: String,
    /// The tenant configured for the source, for shapes whose payloads name none.
    pub tenant: Option<String>,
    pub arrived_at: DateTime<Utc>,
    pub line_count: u64,
    pub raw_bytes: u64,
    pub block_count: u32,
    pub algorithm: String,
    pub compression: String,
    pub dek_id: String,
    pub wrapped_dek: WrappedKey,
    /// For a replay segment: the quarantine entry each line came from, in line order.
    pub replay_of: Vec<String>,
}

fn block_aad(h: &SegmentHeader, index: u32) -> Vec<u8> {
    let at = crate::clock::fmt_ts(h.arrived_at);
    let mut parts: Vec<&[u8]> = vec![
        b"holdfast.landing.v1",
        h.segment_id.as_bytes(),
        h.source.as_bytes(),
        at.as_bytes(),
    ];
    let (index, count) = (index.to_be_bytes(), h.block_count.to_be_bytes());
    parts.extend([&index[..], &count[..]]);
    if let Some(t) = &h.tenant {
        parts.push(t.as_bytes());
    }
    aad(&parts)
}

/// What a segment's header says of where its lines came from.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub source: &'a str,
    pub tenant: Option<&'a str>,
    pub id: &'a str,
    pub arrived_at: DateTime<Utc>,
}

/// Makes room for `more` bytes in a block of raw lines: a block grows from small (a server's
/// segment holds a few events) to its full size, and the buffer it outgrows is wiped before
/// it is freed, as the block itself is once sealed.
fn reserve_wiping(block: &mut Vec<u8>, more: usize) {
    let need = block.len() + more;
    if need <= block.capacity() {
        return;
    }
    let cap = need.max((block.capacity() * 2).clamp(64 << 10, BLOCK_BYTES + 4096));
    let mut grown = Vec::with_capacity(cap);
    grown.extend_from_slice(block);
    zeroize::Zeroize::zeroize(block);
    *block = grown;
}

/// Raw lines of one segment being assembled.
pub struct SegmentBuilder {
    blocks: Vec<Vec<u8>>,
    lines: u64,
    raw: u64,
    replay_of: Vec<String>,
}

impl Default for SegmentBuilder {
    fn default() -> Self {
        SegmentBuilder {
            blocks: vec![Vec::new()],
            lines: 0,
            raw: 0,
            replay_of: Vec::new(),
        }
    }
}

impl SegmentBuilder {
    /// Appends complete lines (`data` ends with `\n` or is empty).
    pub fn push_lines(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let cur = self.blocks.last_mut().expect("one block");
            let room = BLOCK_BYTES.saturating_sub(cur.len());
            // cut at the last newline that fits, or take one whole line if none fits
            let cut = if data.len() <= room {
                data.len()
            } else {
                match memchr::memrchr(b'\n', &data[..room]) {
                    Some(i) => i + 1,
                    None if cur.is_empty() => {
                        memchr::memchr(b'\n', data).map_or(data.len(), |i| i + 1)
                    }
                    None => 0,
                }
            };
            if cut == 0 {
                self.blocks.push(Vec::new());
                continue;
            }
            let (head, tail) = data.split_at(cut);
            reserve_wiping(cur, head.len());
            cur.extend_from_slice(head);
            self.lines += memchr::memchr_iter(b'\n', head).count() as u64;
            self.raw += head.len() as u64;
            data = tail;
            if cur.len() >= BLOCK_BYTES {
                self.blocks.push(Vec::new());
            }
        }
    }

    /// Appends one quarantined line for replay (a line may not contain `\n`; it cannot, as
    /// it was cut at one).
    pub fn push_replay(&mut self, entry_id: &str, original: &[u8]) {
        let mut line = Vec::with_capacity(original.len() + 1);
        line.extend_from_slice(original);
        line.push(b'\n');
        self.push_lines(&line);
        self.replay_of.push(entry_id.to_string());
    }

    pub fn raw_bytes(&self) -> u64 {
        self.raw
    }
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Compresses and seals the blocks (on `threads` threads) under a new DEK and writes the
    /// segment.
    #[allow(clippy::too_many_arguments)]
    pub async fn write(
        self,
        store: &Store,
        kms: &dyn Kms,
        source: &str,
        tenant: Option<&str>,
        id: &str,
        arrived_at: DateTime<Utc>,
        threads: usize,
    ) -> Result<u64, LandingError> {
        if self.blocks.iter().all(Vec::is_empty) {
            return Ok(0);
        }
        let dek = DataKey::generate();
        let wrapped = kms.wrap(&dek).await?;
        let at = Labels {
            source,
            tenant,
            id,
            arrived_at,
        };
        let path = layout::landing_segment(id);
        match self.seal(&dek, wrapped, at, threads) {
            Some(bytes) => put_object(store, &path, bytes).await,
            None => Ok(0),
        }
    }

    /// The segment's bytes (`None` when it holds no line), sealed under a DEK the caller
    /// holds with its wrapping: a server shares one per tenant and minute between its
    /// segments, so that each write does not call the key service, and puts a group's
    /// segments into one object. The blocks' AAD names the segment, so a block still cannot
    /// be moved to another segment under the same key.
    pub fn seal(
        mut self,
        dek: &DataKey,
        wrapped_dek: WrappedKey,
        at: Labels<'_>,
        threads: usize,
    ) -> Option<Vec<u8>> {
        let Labels {
            source,
            tenant,
            id,
            arrived_at,
        } = at;
        self.blocks.retain(|b| !b.is_empty());
        if self.blocks.is_empty() {
            return None;
        }
        let header = SegmentHeader {
            segment_id: id.to_string(),
            source: source.to_string(),
            tenant: tenant.map(str::to_string),
            arrived_at,
            line_count: self.lines,
            raw_bytes: self.raw,
            block_count: self.blocks.len() as u32,
            algorithm: crate::crypto::ALGORITHM.into(),
            compression: "zstd".into(),
            dek_id: dek.id().to_string(),
            wrapped_dek,
            replay_of: std::mem::take(&mut self.replay_of),
        };
        let cipher = dek.cipher();
        let sealed = seal_blocks(&self.blocks, &header, &cipher, threads.max(1));
        for b in &mut self.blocks {
            zeroize::Zeroize::zeroize(b);
        }
        let mut out = format::encode_header(&header);
        out.reserve(sealed.iter().map(|s| s.len() + 4).sum::<usize>());
        for s in &sealed {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s);
        }
        Some(out)
    }
}

/// Writes a landing object (create-only): one segment's bytes, or several back to back under
/// `path` ([`layout::landing_segments`]); its size.
pub async fn put_object(store: &Store, path: &Path, bytes: Vec<u8>) -> Result<u64, LandingError> {
    let n = bytes.len() as u64;
    match store.put_new(path, bytes).await? {
        Put::Created => Ok(n),
        Put::AlreadyExists => Err(LandingError::Corrupt {
            object: path.to_string(),
            problem: "a segment with this id already exists".into(),
        }),
    }
}

fn seal_blocks(
    blocks: &[Vec<u8>],
    header: &SegmentHeader,
    cipher: &Cipher,
    threads: usize,
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); blocks.len()];
    let chunk = blocks.len().div_ceil(threads.max(1));
    if chunk >= blocks.len() {
        // one chunk: sealed on this thread (a small segment does not pay for a thread)
        seal_chunk(blocks, &mut out, 0, header, cipher);
        return out;
    }
    std::thread::scope(|s| {
        for (bi, (ins, outs)) in blocks.chunks(chunk).zip(out.chunks_mut(chunk)).enumerate() {
            s.spawn(move || seal_chunk(ins, outs, bi * chunk, header, cipher));
        }
    });
    out
}

/// Compresses and seals `ins` (blocks `first..` of the segment) into `outs`.
fn seal_chunk(
    ins: &[Vec<u8>],
    outs: &mut [Vec<u8>],
    first: usize,
    header: &SegmentHeader,
    cipher: &Cipher,
) {
    COMPRESSOR.with_borrow_mut(|z| {
        for (j, (b, o)) in ins.iter().zip(outs.iter_mut()).enumerate() {
            let idx = (first + j) as u32;
            let mut c = z.compress(b).expect("zstd of an in-memory buffer");
            *o = cipher.seal(&c, &block_aad(header, idx));
            zeroize::Zeroize::zeroize(&mut c);
        }
    });
}

thread_local! {
    /// A compressor per thread, kept: a server seals thousands of small segments a second,
    /// and making a zstd context costs more than compressing a few events.
    static COMPRESSOR: std::cell::RefCell<zstd::bulk::Compressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(LANDING_LEVEL).expect("valid zstd level"));
}

/// Segment ids sort by arrival: `<yyyymmddThhmmss.ffffffZ>-<seq>-<random>`.
pub fn segment_id(arrived_at: DateTime<Utc>, seq: u32, random: u32) -> String {
    format!(
        "{}-{seq:06}-{random:08x}",
        arrived_at.format("%Y%m%dT%H%M%S%.6fZ")
    )
}

#[cfg(test)]
impl SegmentBuilder {
    /// Every line pushed so far, in order.
    pub(crate) fn contents(&self) -> Vec<u8> {
        self.blocks.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_start_small_and_grow_to_their_size() {
        let mut b = SegmentBuilder::default();
        b.push_lines(b"{\"a\":1}\n");
        assert!(
            b.blocks[0].capacity() <= 64 << 10,
            "{}",
            b.blocks[0].capacity()
        );
        let line = [b"y".repeat(999), b"\n".to_vec()].concat();
        for _ in 0..3000 {
            b.push_lines(&line);
        }
        assert_eq!(b.blocks.len(), 3);
        assert!(b.blocks[0].capacity() <= BLOCK_BYTES + 4096);
        let total: usize = b.blocks.iter().map(Vec::len).sum();
        assert_eq!((total, b.lines), (8 + 3000 * 1000, 3001));
        assert!(b.blocks.iter().all(|k| k.ends_with(b"\n")));
    }

    #[test]
    fn builder_keeps_whole_lines_per_block() {
        let mut b = SegmentBuilder::default();
        let line = vec![b'x'; 1000];
        let mut data = Vec::new();
        for _ in 0..3000 {
            data.extend_from_slice(&line);
            data.push(b'\n');
        }
        b.push_lines(&data);
        assert_eq!(b.lines(), 3000);
        assert!(b.blocks.len() >= 3);
        for blk in &b.blocks {
            assert!(blk.is_empty() || blk.ends_with(b"\n"));
            assert!(blk.len() <= BLOCK_BYTES);
        }
        let total: usize = b.blocks.iter().map(Vec::len).sum();
        assert_eq!(total, data.len());
    }

    #[test]
    fn a_line_longer_than_a_block_stays_whole() {
        let mut b = SegmentBuilder::default();
        b.push_lines(b"short\n");
        let mut big = vec![b'y'; BLOCK_BYTES + 10];
        big.push(b'\n');
        b.push_lines(&big);
        assert_eq!(b.lines(), 2);
        assert!(b.blocks.iter().any(|blk| blk.len() == BLOCK_BYTES + 11));
    }
}
