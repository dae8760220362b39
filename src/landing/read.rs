//! Reading landing objects back: a segment's header alone (for budgets and key inventories)
//! or whole, its blocks authenticated and opened one at a time; an object of several segments
//! (`.segs`) read as each of them.

use super::format::{self, MAGIC};
use super::{LandingError, MAX_BLOCK_RAW, SegmentHeader, block_aad};
use crate::crypto::kms::Kms;
use crate::crypto::{Cipher, CryptoError};
use crate::lake::{LakeError, layout};
use crate::storage::Store;
use object_store::path::Path;

/// A landed segment read back: header plus sealed blocks, opened one at a time.
pub struct Segment {
    pub header: SegmentHeader,
    bytes: bytes::Bytes,
    blocks: Vec<std::ops::Range<usize>>,
}

impl Segment {
    /// A landing object of one segment.
    pub fn parse(object: &str, bytes: bytes::Bytes) -> Result<Self, LandingError> {
        let (segment, end) = Self::parse_at(object, &bytes, 0)?;
        if end != bytes.len() {
            return Err(LandingError::Corrupt {
                object: object.to_string(),
                problem: format!(
                    "holds more than the {} blocks its header says",
                    segment.header.block_count
                ),
            });
        }
        Ok(segment)
    }

    /// Every segment of the landing object at `path`: the one of a `.seg`, those back to
    /// back in a `.segs` (at least one).
    pub fn parse_object(path: &Path, bytes: bytes::Bytes) -> Result<Vec<Self>, LandingError> {
        if !layout::holds_several(path) {
            return Ok(vec![Self::parse(path.as_ref(), bytes)?]);
        }
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() || out.is_empty() {
            let (segment, end) = Self::parse_at(path.as_ref(), &bytes, pos)?;
            out.push(segment);
            pos = end;
        }
        Ok(out)
    }

    /// The segment that starts at `start` of `bytes`, and where it ends: its header, then
    /// exactly the blocks the header counts.
    fn parse_at(
        object: &str,
        bytes: &bytes::Bytes,
        start: usize,
    ) -> Result<(Self, usize), LandingError> {
        let corrupt = |p: &str| LandingError::Corrupt {
            object: object.to_string(),
            problem: p.to_string(),
        };
        let b = &bytes[start..];
        if b.len() < 12 || &b[..8] != MAGIC {
            return Err(corrupt("not a landing segment"));
        }
        let hlen = u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
        let header = format::decode_header(
            b.get(12..12 + hlen)
                .ok_or_else(|| corrupt("truncated header"))?,
        )
        .map_err(|e| corrupt(&format!("bad header: {e}")))?;
        let mut pos = start + 12 + hlen;
        let mut blocks = Vec::new();
        for _ in 0..header.block_count {
            let len = bytes
                .get(pos..pos + 4)
                .ok_or_else(|| corrupt("truncated block"))?;
            let end = pos + 4 + u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            if end > bytes.len() {
                return Err(corrupt("truncated block"));
            }
            blocks.push(pos + 4..end);
            pos = end;
        }
        let segment = Segment {
            header,
            bytes: bytes.clone(),
            blocks,
        };
        Ok((segment, pos))
    }

    pub async fn unwrap_key(&self, kms: &dyn Kms) -> Result<Cipher, LandingError> {
        Ok(kms
            .unwrap_key(&self.header.dek_id, &self.header.wrapped_dek)
            .await?
            .cipher())
    }

    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// Block `i` decrypted and authenticated (still compressed).
    fn decrypt_block(&self, cipher: &Cipher, i: usize) -> Result<Vec<u8>, LandingError> {
        let id = &self.header.segment_id;
        Ok(cipher.open(
            &self.bytes[self.blocks[i].clone()],
            &block_aad(&self.header, i as u32),
            &|| format!("landing segment {id} block {i}"),
        )?)
    }

    /// Checks block `i`'s authentication tag (decrypts it, keeps nothing): what the batch
    /// does to every block of a segment before storing any of its lines.
    pub fn authenticate_block(&self, cipher: &Cipher, i: usize) -> Result<(), LandingError> {
        zeroize::Zeroize::zeroize(&mut self.decrypt_block(cipher, i)?);
        Ok(())
    }

    /// The lines of block `i` (each ending in `\n`). Decompression stops at
    /// [`MAX_BLOCK_RAW`] (or the segment's raw size, if smaller): a block that would grow
    /// past it is an error for this segment, never an allocation of whatever it claims.
    pub fn open_block(&self, cipher: &Cipher, i: usize) -> Result<Vec<u8>, LandingError> {
        let id = &self.header.segment_id;
        let mut c = self.decrypt_block(cipher, i)?;
        let limit = MAX_BLOCK_RAW.min(usize::try_from(self.header.raw_bytes).unwrap_or(usize::MAX));
        let out = bounded_decompress(&c, limit);
        zeroize::Zeroize::zeroize(&mut c);
        match out {
            Ok(Some(out)) => Ok(out),
            Ok(None) => Err(LandingError::Corrupt {
                object: layout::landing_segment(id).to_string(),
                problem: format!("block {i} decompresses past {limit} bytes"),
            }),
            Err(_) => Err(CryptoError::Decompress {
                what: format!("landing segment {id} block {i}"),
            }
            .into()),
        }
    }
}

/// zstd-decompresses `data` into at most `limit` bytes; `None` when there is more. A frame
/// that names its size (every landing block does) is decompressed at once into a buffer of
/// that size; anything else is streamed.
fn bounded_decompress(data: &[u8], limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) if n > limit as u64 => return Ok(None),
        // one allocation, no copies as it grows; a frame that holds more than it names fails
        Ok(Some(n)) => return zstd::bulk::decompress(data, n as usize).map(Some),
        _ => {}
    }
    let mut out = Vec::new();
    let decoder = zstd::stream::read::Decoder::with_buffer(data)?;
    let read = decoder.take(limit as u64 + 1).read_to_end(&mut out);
    if read.is_err() || out.len() > limit {
        zeroize::Zeroize::zeroize(&mut out);
        return read.map(|_| None);
    }
    Ok(Some(out))
}

/// The raw (decompressed) size of a landing object, from its headers (two small reads for a
/// segment alone), for the batch's input budget.
pub async fn raw_size(store: &Store, path: &Path) -> Result<u64, LandingError> {
    Ok(read_headers(store, path)
        .await?
        .iter()
        .map(|h| h.raw_bytes)
        .sum())
}

/// The headers of a landing (or failed) object's segments: a `.seg`'s in two small reads, a
/// `.segs` (a server's group commit, small) read whole.
pub async fn read_headers(store: &Store, path: &Path) -> Result<Vec<SegmentHeader>, LandingError> {
    if !layout::holds_several(path) {
        return Ok(vec![read_header(store, path).await?]);
    }
    let bytes = store.get(path).await?;
    Ok(Segment::parse_object(path, bytes)?
        .into_iter()
        .map(|s| s.header)
        .collect())
}

/// A landed (or failed) segment's header alone, in two small reads.
async fn read_header(
    store: &Store,
    path: &object_store::path::Path,
) -> Result<SegmentHeader, LandingError> {
    let corrupt = |p: &str| LandingError::Corrupt {
        object: path.to_string(),
        problem: p.to_string(),
    };
    let os = store.object_store();
    let get = |r: std::ops::Range<u64>| {
        let os = os.clone();
        async move {
            let mut parts = os
                .get_ranges(path, std::slice::from_ref(&r))
                .await
                .map_err(|e| LakeError::store("reading", path.as_ref(), e))?;
            Ok::<_, LandingError>(parts.pop().unwrap_or_default())
        }
    };
    let head = get(0..12).await?;
    if head.len() < 12 || &head[..8] != MAGIC {
        return Err(corrupt("not a landing segment"));
    }
    let hlen = u32::from_be_bytes(head[8..12].try_into().expect("4 bytes")) as u64;
    if hlen > 1 << 20 {
        return Err(corrupt("header too large"));
    }
    format::decode_header(&get(12..12 + hlen).await?)
        .map_err(|e| corrupt(&format!("bad header: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DataKey;
    use crate::landing::{Labels, SegmentBuilder};

    /// Sealed segments, one per `(id, line)`, each under its own DEK wrapped by a keyring.
    fn sealed(parts: &[(&str, &str)]) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let kms = crate::crypto::kms::LocalKeyring::create(
            &dir.path().join("k.json"),
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
        parts
            .iter()
            .map(|(id, line)| {
                let dek = DataKey::generate();
                let wrapped = crate::test_support::block(kms.wrap(&dek)).unwrap();
                let mut b = SegmentBuilder::default();
                b.push_lines(format!("{line}\n").as_bytes());
                let labels = Labels {
                    source: "canonical",
                    tenant: Some("t"),
                    id,
                    arrived_at: at.to_utc(),
                };
                b.seal(&dek, wrapped, labels, 1).unwrap()
            })
            .collect()
    }

    /// Segments back to back read as each of them in a `.segs`, and are refused as one `.seg`;
    /// a cut or a tail that is not a segment is an error for the whole object.
    #[test]
    fn an_object_of_several_segments_reads_as_each_and_nothing_else() {
        let segs = sealed(&[("s-1", "{\"a\":1}"), ("s-2", "{\"b\":2}")]);
        let both = bytes::Bytes::from(segs.concat());
        let several = layout::landing_segments("s-1");
        let got = Segment::parse_object(&several, both.clone()).unwrap();
        let ids: Vec<_> = got.iter().map(|s| s.header.segment_id.as_str()).collect();
        assert_eq!(ids, ["s-1", "s-2"]);
        assert!(got.iter().all(|s| s.block_count() == 1));
        let one = layout::landing_segment("s-1");
        let err = Segment::parse_object(&one, both.clone()).err().unwrap();
        assert!(err.to_string().contains("more than the 1 blocks"), "{err}");
        assert_eq!(
            Segment::parse_object(&one, segs[0].clone().into())
                .unwrap()
                .len(),
            1
        );
        for bad in [
            both.slice(..both.len() - 1),
            bytes::Bytes::from([&both[..], b"tail"].concat()),
            bytes::Bytes::new(),
        ] {
            assert!(Segment::parse_object(&several, bad).is_err());
        }
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let bomb = zstd::encode_all(&vec![0u8; 64 << 20][..], 3).unwrap();
        assert!(bomb.len() < 1 << 20, "a small block that claims a lot");
        assert_eq!(bounded_decompress(&bomb, MAX_BLOCK_RAW).unwrap(), None);
        let fine = zstd::encode_all(&b"line\n"[..], 3).unwrap();
        assert_eq!(
            bounded_decompress(&fine, 5).unwrap().as_deref(),
            Some(&b"line\n"[..])
        );
        assert_eq!(bounded_decompress(&fine, 4).unwrap(), None);
        // frames that name their size (as landing blocks do) take the one-allocation path
        let sized = zstd::bulk::compress(&vec![7u8; 64 << 20], 1).unwrap();
        assert_eq!(bounded_decompress(&sized, MAX_BLOCK_RAW).unwrap(), None);
        let sized = zstd::bulk::compress(b"line\n", 1).unwrap();
        let back = bounded_decompress(&sized, 5).unwrap();
        assert_eq!(back.as_deref(), Some(&b"line\n"[..]));
        assert_eq!(bounded_decompress(&sized, 4).unwrap(), None);
        assert!(bounded_decompress(b"not zstd", 100).is_err());
    }
}
