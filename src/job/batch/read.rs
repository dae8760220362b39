//! Stage 1, read: picks landing objects up to the input budget, fetches each, unwraps its
//! segments' keys and checks every block's authentication tag (an object with a damaged block
//! is set aside whole before any of its lines is stored), then hands its blocks, numbered in
//! landing order, to the decoders.

use super::BatchOptions;
use super::report::BatchReport;
use crate::clock::micros;
use crate::crypto::Cipher;
use crate::job::{Context, JobError};
use crate::lake::layout;
use crate::landing::{LandingError, Segment};
use crate::sources::SourceKind;
use crate::storage::Store;
use object_store::path::Path;
use std::sync::{Arc, Mutex};

/// A landing segment opened for the batch.
pub(super) struct OpenSegment {
    pub(super) segment: Segment,
    pub(super) cipher: Cipher,
    pub(super) source: SourceKind,
    /// When its lines arrived (microseconds UTC).
    pub(super) ingested_at: i64,
    /// Its place in the picked list.
    pub(super) index: usize,
}

/// One block of a segment to decode; `seq` numbers blocks in landing order.
pub(super) struct Block {
    pub(super) seq: u64,
    pub(super) segment: Arc<OpenSegment>,
    pub(super) block: usize,
}

/// A segment that cannot be read (does not parse, fails authentication), and why.
#[derive(Debug, Clone)]
pub(in crate::job) struct UnreadableSegment {
    /// Index into the picked list.
    pub(in crate::job) index: usize,
    pub(in crate::job) reason: String,
}

/// Segments the reader does not hand on: those that cannot be read, and those of tenants
/// whose own key is unavailable (sealed under it, or naming such a tenant in their header).
#[derive(Default)]
pub(super) struct SetAside {
    pub(super) unreadable: Mutex<Vec<UnreadableSegment>>,
    /// (index into the picked list, tenant).
    pub(super) waiting: Mutex<Vec<(usize, String)>>,
    /// The segments opened, in landing order: (index into the picked list, segment id).
    pub(super) segment_ids: Mutex<Vec<(usize, String)>>,
}

/// Landing segments in arrival order, up to the input budget (always at least one).
pub(super) async fn pick_segments(
    store: &Store,
    opts: &BatchOptions,
    report: &mut BatchReport,
) -> Result<Vec<Path>, JobError> {
    let mut picked = Vec::new();
    let mut budget = 0u64;
    for meta in store.list(layout::LANDING).await? {
        if layout::parse_landing_segment(&meta.location).is_none() {
            continue;
        }
        // raw bytes, as ingested (the header says; the stored size if it cannot be read)
        let raw = crate::landing::raw_size(store, &meta.location)
            .await
            .unwrap_or(meta.size);
        if !picked.is_empty() && budget.saturating_add(raw) > opts.max_input_bytes {
            report.segments_waiting += 1;
            continue;
        }
        budget = budget.saturating_add(raw);
        picked.push(meta.location);
    }
    report.segments = picked.len() as u64;
    Ok(picked)
}

/// Whether a segment failed for what its bytes are (damaged or altered), rather than for a
/// store or key service failure (then the batch stops and a rerun tries again).
fn damaged_segment(e: &JobError) -> bool {
    match e {
        JobError::Landing(LandingError::Corrupt { .. } | LandingError::Crypto(_)) => true,
        JobError::Landing(LandingError::Kms(k)) => matches!(
            k.root(),
            crate::crypto::kms::KmsError::InvalidCiphertext { .. }
        ),
        _ => false,
    }
}

/// The tenant a segment was not opened for, its own key being unavailable.
fn waits_for(e: &JobError) -> Option<&str> {
    match e {
        JobError::TenantKeyWaiting(t) => Some(t),
        _ => None,
    }
}

/// The tenant whose own key failed to unwrap a segment's key, for a failure that is not the
/// segment's bytes.
fn tenant_key_failed(e: &JobError) -> Option<&str> {
    match e {
        JobError::Landing(LandingError::Kms(k)) => k.tenant(),
        _ => None,
    }
}

/// Reads a landing object, unwraps each of its segments' keys and checks every block's tag.
/// An object of several segments is one unit: it waits, or is set aside, whole.
fn open_segments(
    rt: &tokio::runtime::Handle,
    ctx: &Context,
    path: &Path,
    index: usize,
    domains: &super::Domains,
) -> Result<Vec<OpenSegment>, JobError> {
    rt.block_on(async {
        let bytes = ctx.store.get(path).await?;
        let segments = Segment::parse_object(path, bytes)?;
        if let Some(t) = segments
            .iter()
            .filter_map(|s| s.header.tenant.as_deref())
            .find(|t| domains.waiting.contains_key(*t))
        {
            return Err(JobError::TenantKeyWaiting(t.to_string()));
        }
        let mut opened = Vec::with_capacity(segments.len());
        for segment in segments {
            let cipher = segment.unwrap_key(ctx.kms.as_ref()).await?;
            let source = SourceKind::from_name(&segment.header.source).ok_or_else(|| {
                LandingError::Corrupt {
                    object: path.to_string(),
                    problem: format!("unknown source {}", segment.header.source),
                }
            })?;
            // every block authentic before any line is stored (the workers decompress them)
            for block in 0..segment.block_count() {
                segment.authenticate_block(&cipher, block)?;
            }
            let ingested_at = micros(segment.header.arrived_at);
            opened.push(OpenSegment {
                segment,
                cipher,
                source,
                ingested_at,
                index,
            });
        }
        Ok::<_, JobError>(opened)
    })
}

/// The reader thread: opens the picked segments in order and sends their blocks on `blocks`.
/// Unreadable segments go to `unreadable`; any other failure goes to `errors` and stops it.
pub(super) fn read(
    rt: &tokio::runtime::Handle,
    ctx: &Context,
    picked: &[Path],
    blocks: crossbeam_channel::Sender<Block>,
    errors: crossbeam_channel::Sender<Result<super::decode::DecodedBlock, JobError>>,
    aside: &SetAside,
    domains: &super::Domains,
) {
    let mut seq = 0u64;
    for (index, path) in picked.iter().enumerate() {
        let segments = match open_segments(rt, ctx, path, index, domains) {
            Ok(segments) => segments,
            Err(e) if damaged_segment(&e) => {
                aside
                    .unreadable
                    .lock()
                    .expect("unreadable list")
                    .push(UnreadableSegment {
                        index,
                        reason: e.to_string(),
                    });
                continue;
            }
            Err(e) => match tenant_key_failed(&e).or_else(|| waits_for(&e)) {
                Some(tenant) => {
                    let mut w = aside.waiting.lock().expect("waiting list");
                    w.push((index, tenant.to_string()));
                    continue;
                }
                None => {
                    let _ = errors.send(Err(e));
                    return;
                }
            },
        };
        for segment in segments.into_iter().map(Arc::new) {
            aside
                .segment_ids
                .lock()
                .expect("segment ids")
                .push((index, segment.segment.header.segment_id.clone()));
            for block in 0..segment.segment.block_count() {
                let b = Block {
                    seq,
                    segment: segment.clone(),
                    block,
                };
                if blocks.send(b).is_err() {
                    return;
                }
                seq += 1;
            }
        }
    }
}
