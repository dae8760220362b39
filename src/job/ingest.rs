//! `ingest`: input -> landing segments, lines kept as they came (parsing happens in the batch).
//!
//! Bounded: input compressed with gzip or zstd (recognised by its magic bytes, not its name)
//! is decompressed as it streams; no line is ever held longer than the limit of one event
//! ([`MAX_LINE_BYTES`]). A longer line is not landed: it goes straight to quarantine
//! (`event.too_large`) as its length, SHA-256 and first [`PREFIX_BYTES`] bytes, under an entry id
//! derived from its content, so ingesting the same input again adds no second entry.

use super::{Context, JobError};
use crate::landing::quarantine::{self, Origin, TruncatedLine};
use crate::landing::{SEGMENT_BYTES, SegmentBuilder, segment_id};
use crate::schema::Reject;
use crate::sources::{MAX_LINE_BYTES, SourceKind};
use rand::RngCore;
use sha2::Digest;
use std::io::Read;

/// How much of a line over the limit quarantine keeps (sealed).
pub const PREFIX_BYTES: usize = 4096;

#[derive(Debug, Default, serde::Serialize)]
pub struct IngestReport {
    pub source: String,
    /// `gzip` or `zstd` when the input was compressed (decompressed as it was read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<&'static str>,
    pub segments: u64,
    pub lines: u64,
    /// Raw (decompressed) bytes read.
    pub input_bytes: u64,
    pub stored_bytes: u64,
    /// Lines over the limit of one event, quarantined at once (`event.too_large`).
    pub too_large: u64,
}

/// Wraps `input` in a decompressor when its first bytes are a gzip or zstd magic number.
fn decompressing<'a>(
    mut input: impl Read + 'a,
) -> std::io::Result<(Box<dyn Read + 'a>, Option<&'static str>)> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let whole = std::io::Cursor::new(head[..n].to_vec()).chain(input);
    Ok(match &head[..n] {
        [0x1f, 0x8b, ..] => (
            Box::new(flate2::read::MultiGzDecoder::new(whole)),
            Some("gzip"),
        ),
        [0x28, 0xb5, 0x2f, 0xfd] => (
            Box::new(zstd::stream::read::Decoder::new(whole)?),
            Some("zstd"),
        ),
        _ => (Box::new(whole), None),
    })
}

/// A line over the limit, streamed past: what is kept of it.
struct LongLine {
    line_no: u64,
    length: u64,
    prefix: Vec<u8>,
    hasher: sha2::Sha256,
}

impl LongLine {
    fn new(line_no: u64) -> Self {
        LongLine {
            line_no,
            length: 0,
            prefix: Vec::with_capacity(PREFIX_BYTES),
            hasher: sha2::Sha256::new(),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        let room = PREFIX_BYTES - self.prefix.len();
        self.prefix
            .extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.hasher.update(bytes);
        self.length += bytes.len() as u64;
    }
}

/// Cuts a byte stream into lines for the landing zone without holding more than
/// [`MAX_LINE_BYTES`] of any line: lines within the limit go to the segment builder in bulk
/// (each ending in `\n`); a longer one streams past and comes out as a [`LongLine`].
#[derive(Default)]
struct LineCutter {
    /// The unfinished line, while within the limit.
    carry: Vec<u8>,
    /// The unfinished line, once past the limit.
    long: Option<LongLine>,
    /// Lines begun so far: the number of the current line.
    lines: u64,
}

impl LineCutter {
    fn feed(&mut self, chunk: &[u8], builder: &mut SegmentBuilder, out: &mut Vec<LongLine>) {
        let mut pos = 0;
        if !self.carry.is_empty() || self.long.is_some() {
            match memchr::memchr(b'\n', chunk) {
                None => return self.extend(chunk),
                Some(i) => {
                    self.extend(&chunk[..i]);
                    self.end_line(builder, out);
                    pos = i + 1;
                }
            }
        }
        // whole lines in this chunk: pushed in runs, cut around any that is too long
        let (mut run, mut start) = (pos, pos);
        for end in memchr::memchr_iter(b'\n', &chunk[pos..]).map(|i| pos + i) {
            self.lines += 1;
            if end - start > MAX_LINE_BYTES {
                builder.push_lines(&chunk[run..start]);
                let mut long = LongLine::new(self.lines);
                long.update(&chunk[start..end]);
                out.push(long);
                run = end + 1;
            }
            start = end + 1;
        }
        builder.push_lines(&chunk[run..start]);
        self.extend(&chunk[start..]);
    }

    /// Adds bytes to the unfinished line.
    fn extend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.carry.is_empty() && self.long.is_none() {
            self.lines += 1;
        }
        if let Some(long) = &mut self.long {
            long.update(bytes);
        } else if self.carry.len() + bytes.len() > MAX_LINE_BYTES {
            let mut long = LongLine::new(self.lines);
            long.update(&self.carry);
            long.update(bytes);
            self.carry.clear();
            self.long = Some(long);
        } else {
            self.carry.extend_from_slice(bytes);
        }
    }

    /// Ends the unfinished line (at its newline, or at the end of the input).
    fn end_line(&mut self, builder: &mut SegmentBuilder, out: &mut Vec<LongLine>) {
        if let Some(long) = self.long.take() {
            out.push(long);
        } else if !self.carry.is_empty() {
            self.carry.push(b'\n');
            builder.push_lines(&self.carry);
            self.carry.clear();
        }
    }
}

/// Where the lines of one `ingest` call go.
struct Ingest<'a> {
    ctx: &'a Context,
    source: SourceKind,
    tenant: Option<&'a str>,
    input_name: &'a str,
    threads: usize,
    random: u32,
    /// Names this call in the quarantine entries it writes (their batch and segment).
    ingest_id: String,
    seq: u32,
    quarantine: Option<quarantine::Writer>,
    in_flight: Option<InFlight>,
    report: IngestReport,
}

/// Appends the lines of `input` to the landing zone as encrypted segments. Lines are stored
/// as they came; parsing and validation happen in the batch. Compressed input is
/// decompressed; lines over the limit of one event go to quarantine.
pub async fn ingest(
    ctx: &Context,
    source: SourceKind,
    tenant: Option<&str>,
    input_name: &str,
    input: impl Read,
    threads: usize,
) -> Result<IngestReport, JobError> {
    let io = |source| JobError::Input {
        input: input_name.to_string(),
        source,
    };
    let (mut input, compression) = decompressing(input).map_err(io)?;
    let random = rand::rng().next_u32();
    let mut job = Ingest {
        ctx,
        source,
        tenant,
        input_name,
        threads,
        random,
        ingest_id: format!("ingest-{}", segment_id(ctx.clock.now(), 0, random)),
        seq: 0,
        quarantine: None,
        in_flight: None,
        report: IngestReport {
            source: source.name().into(),
            compression,
            ..Default::default()
        },
    };
    let mut builder = SegmentBuilder::default();
    let mut cutter = LineCutter::default();
    let mut long = Vec::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        job.report.input_bytes += n as u64;
        cutter.feed(&buf[..n], &mut builder, &mut long);
        for l in long.drain(..) {
            job.quarantine_long(l).await?;
        }
        if builder.raw_bytes() as usize >= SEGMENT_BYTES {
            job.write_segment(std::mem::take(&mut builder)).await?;
        }
    }
    if !cutter.carry.is_empty() || cutter.long.is_some() {
        cutter.end_line(&mut builder, &mut long);
    }
    for l in long.drain(..) {
        job.quarantine_long(l).await?;
    }
    job.write_segment(builder).await?;
    job.finish_segment().await?;
    Ok(job.report)
}

/// A segment being compressed, sealed and written on a blocking thread while the next one is
/// read: at most one at a time, so segments become durable in order.
struct InFlight {
    task: tokio::task::JoinHandle<Result<u64, JobError>>,
    lines: u64,
}

impl Ingest<'_> {
    /// Waits for the segment before (it is durable when this returns), then starts writing
    /// `b` beside the reading of the input.
    async fn write_segment(&mut self, b: SegmentBuilder) -> Result<(), JobError> {
        self.finish_segment().await?;
        if b.lines() == 0 {
            return Ok(());
        }
        let now = self.ctx.clock.now();
        let id = segment_id(now, self.seq, self.random);
        self.seq += 1;
        let lines = b.lines();
        let store = self.ctx.store.clone();
        let (source, tenant) = (self.source.name(), self.tenant.map(str::to_string));
        // a tenant with a key of its own: its segment is sealed under that key, or not at all
        // (the input stays where it is, for the scheduler's next run)
        let own = tenant
            .as_deref()
            .and_then(|t| Some((t.to_string(), self.ctx.kms.tenant(t)?)));
        let kms = own
            .as_ref()
            .map_or_else(|| self.ctx.kms.clone(), |(_, k)| k.clone());
        let threads = self.threads;
        let rt = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let write = b.write(
                &store,
                kms.as_ref(),
                source,
                tenant.as_deref(),
                &id,
                now,
                threads,
            );
            rt.block_on(write).map_err(|e| match (e, own) {
                (crate::landing::LandingError::Kms(k), Some((t, _))) => {
                    JobError::Kms(crate::crypto::kms::KmsError::Tenant {
                        tenant: t,
                        source: Box::new(k),
                    })
                }
                (e, _) => e.into(),
            })
        });
        self.in_flight = Some(InFlight { task, lines });
        Ok(())
    }

    /// Waits for the segment being written, if any, and counts it.
    async fn finish_segment(&mut self) -> Result<(), JobError> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        let written = f
            .task
            .await
            .map_err(|e| JobError::Worker(e.to_string()))??;
        self.report.segments += 1;
        self.report.lines += f.lines;
        self.report.stored_bytes += written;
        self.ctx
            .fail(&format!("ingest.after_segment:{}", self.report.segments));
        Ok(())
    }

    /// Quarantines a line over the limit: its length, SHA-256 and first bytes (sealed).
    async fn quarantine_long(&mut self, l: LongLine) -> Result<(), JobError> {
        let now = self.ctx.clock.now();
        if self.quarantine.is_none() {
            let w = quarantine::Writer::new(self.ctx.kms.as_ref(), &self.ingest_id).await?;
            self.quarantine = Some(w);
        }
        let sha256: [u8; 32] = l.hasher.finalize().into();
        let sha256 = hex::encode(sha256);
        let source = self.source.name();
        // the same line from the same source and tenant is one entry, however often ingested
        let id = quarantine::entry_id(
            &format!(
                "too-large\n{source}\n{}\n{sha256}",
                self.tenant.unwrap_or("")
            ),
            l.length,
        );
        let reject = Reject::new(
            "event.too_large",
            "",
            format!(
                "line {} of {}: {} bytes, over the limit of {MAX_LINE_BYTES} bytes for one event; kept: its length, SHA-256 and first {} bytes",
                l.line_no,
                self.input_name,
                l.length,
                l.prefix.len()
            ),
        );
        let origin = Origin {
            source,
            tenant: self.tenant,
            entry_id: Some(&id),
            arrived_at: now,
            segment_id: &self.ingest_id,
            line_no: l.line_no,
        };
        let truncated = TruncatedLine {
            length: l.length,
            sha256,
        };
        let w = self.quarantine.as_ref().expect("created");
        let entry = w.seal_truncated(&origin, &reject, &l.prefix, truncated, now);
        quarantine::put(&self.ctx.store, &entry).await?;
        self.report.too_large += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(input: &[u8], chunk: usize) -> (Vec<u8>, u64, Vec<(u64, u64, usize)>) {
        let mut b = SegmentBuilder::default();
        let mut c = LineCutter::default();
        let mut long = Vec::new();
        for part in input.chunks(chunk) {
            c.feed(part, &mut b, &mut long);
        }
        if !c.carry.is_empty() || c.long.is_some() {
            c.end_line(&mut b, &mut long);
        }
        let longs = long
            .into_iter()
            .map(|l| (l.line_no, l.length, l.prefix.len()))
            .collect();
        (b.contents(), b.lines(), longs)
    }

    #[test]
    fn long_lines_stream_past_whatever_the_chunking() {
        let big = vec![b'x'; MAX_LINE_BYTES + 10];
        let mut input = b"one\n\ntwo\n".to_vec();
        input.extend_from_slice(&big);
        input.extend_from_slice(b"\nthree\n");
        input.extend_from_slice(&big);
        input.extend_from_slice(b"\nlast");
        for chunk in [1, 7, 4096, MAX_LINE_BYTES, input.len()] {
            let (landed, lines, longs) = cut(&input, chunk);
            assert_eq!(landed, b"one\n\ntwo\nthree\nlast\n", "chunk {chunk}");
            assert_eq!(lines, 5, "chunk {chunk}");
            let want = (MAX_LINE_BYTES + 10) as u64;
            assert_eq!(
                longs,
                vec![(4, want, PREFIX_BYTES), (6, want, PREFIX_BYTES)],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_line_at_the_limit_is_landed() {
        let mut input = vec![b'y'; MAX_LINE_BYTES];
        input.push(b'\n');
        let (landed, lines, longs) = cut(&input, 1000);
        assert_eq!(
            (landed.len(), lines, longs.len()),
            (MAX_LINE_BYTES + 1, 1, 0)
        );
    }

    #[test]
    fn compressed_input_is_recognised_by_its_bytes() {
        let text = b"{\"a\": 1}\n{\"b\": 2}\n".repeat(100);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut e, &text).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&text[..], 3).unwrap();
        for (bytes, kind) in [
            (gz, Some("gzip")),
            (zst, Some("zstd")),
            (text.clone(), None),
        ] {
            let (mut r, found) = decompressing(&bytes[..]).unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!((out, found), (text.clone(), kind));
        }
        let (mut r, found) = decompressing(&b"ab"[..]).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!((out.as_slice(), found), (&b"ab"[..], None), "short input");
    }
}
