//! Jobs: `ingest` (input -> landing segments) and `batch` (landing -> lake).
//!
//! Exactly-once: a batch holds the store's lease, turns the landing segments it picks into one
//! data file per partition, commits each partition's manifest with a create-only put, and only
//! then deletes the segments. Dedupe is on event id, against the batch itself and against the
//! `event_id` column of the partition's committed files, so a rerun after a kill at any point
//! stores exactly the events the killed run did not commit. Quarantine entries have ids
//! derived from (segment, line) and are create-only too.

mod batch;
mod lease;
pub(crate) use lease::Lease;
mod validate;

pub(crate) use batch::repair_locks;
pub use batch::{BatchOptions, BatchReport, batch};
pub use validate::{ValidateReport, validate};

use crate::clock::Clock;
use crate::crypto::kms::Kms;
use crate::lake::LakeError;
use crate::lake::storage::Store;
use crate::landing::{LandingError, SEGMENT_BYTES, SegmentBuilder, segment_id};
use crate::sources::SourceKind;
use rand::RngCore;
use std::io::Read;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Landing(#[from] LandingError),
    #[error(transparent)]
    Kms(#[from] crate::crypto::kms::KmsError),
    #[error("reading {input}: {source}")]
    Input {
        input: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another job holds the lease on this store ({holder}); if none is running, remove {path}"
    )]
    Busy { holder: String, path: String },
    #[error(
        "another writer committed {partition} first; nothing of this batch is visible, rerun it"
    )]
    Conflict { partition: String },
    #[error("batch worker failed: {0}")]
    Worker(String),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Head(#[from] crate::head::HeadError),
    #[error("schema version {0} is not in the registry ({versions})", versions = crate::schema::upcast::VERSIONS.join(", "))]
    UnknownVersion(String),
}

/// What a job needs: the store, the key service and the clock.
#[derive(Debug, Clone)]
pub struct Context {
    pub store: Store,
    pub kms: Arc<dyn Kms>,
    pub clock: Arc<dyn Clock>,
    /// Crash points for tests (inert outside `test-hooks` builds).
    pub failpoints: crate::hooks::Failpoints,
}

impl Context {
    pub(crate) fn fail(&self, point: &str) {
        self.failpoints.hit(point);
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct IngestReport {
    pub source: String,
    pub segments: u64,
    pub lines: u64,
    pub input_bytes: u64,
    pub stored_bytes: u64,
}

/// Appends the lines of `input` to the landing zone as encrypted segments. Lines are stored
/// as they came; parsing and validation happen in the batch.
pub async fn ingest(
    ctx: &Context,
    source: SourceKind,
    tenant: Option<&str>,
    input_name: &str,
    mut input: impl Read,
    threads: usize,
) -> Result<IngestReport, JobError> {
    let mut report = IngestReport {
        source: source.name().into(),
        ..Default::default()
    };
    let random = rand::rng().next_u32();
    let mut builder = SegmentBuilder::default();
    let mut buf = vec![0u8; 4 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut seq = 0u32;
    let io = |source| JobError::Input {
        input: input_name.to_string(),
        source,
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        report.input_bytes += n as u64;
        let chunk = &buf[..n];
        match memchr::memrchr(b'\n', chunk) {
            Some(last) => {
                if carry.is_empty() {
                    builder.push_lines(&chunk[..=last]);
                } else {
                    carry.extend_from_slice(&chunk[..=last]);
                    builder.push_lines(&carry);
                    carry.clear();
                }
                carry.extend_from_slice(&chunk[last + 1..]);
            }
            None => carry.extend_from_slice(chunk),
        }
        if builder.raw_bytes() as usize >= SEGMENT_BYTES {
            let full = std::mem::take(&mut builder);
            write_segment(
                ctx,
                full,
                source,
                tenant,
                &mut seq,
                random,
                threads,
                &mut report,
            )
            .await?;
        }
    }
    if !carry.is_empty() {
        carry.push(b'\n');
        builder.push_lines(&carry);
    }
    write_segment(
        ctx,
        builder,
        source,
        tenant,
        &mut seq,
        random,
        threads,
        &mut report,
    )
    .await?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn write_segment(
    ctx: &Context,
    b: SegmentBuilder,
    source: SourceKind,
    tenant: Option<&str>,
    seq: &mut u32,
    random: u32,
    threads: usize,
    report: &mut IngestReport,
) -> Result<(), JobError> {
    if b.lines() == 0 {
        return Ok(());
    }
    let now = ctx.clock.now();
    let id = segment_id(now, *seq, random);
    let lines = b.lines();
    let written = b
        .write(
            &ctx.store,
            ctx.kms.as_ref(),
            source.name(),
            tenant,
            &id,
            now,
            threads,
        )
        .await?;
    *seq += 1;
    report.segments += 1;
    report.lines += lines;
    report.stored_bytes += written;
    ctx.fail(&format!("ingest.after_segment:{}", report.segments));
    Ok(())
}

/// Puts the selected quarantine entries back into the landing zone as replay segments (one
/// per source and tenant); the next batch stores what now passes, and removes those entries.
/// Returns how many entries were queued.
/// `tenant` applies to entries whose source had none (the usual fix for `source.tenant_missing`).
pub async fn queue_replay(
    ctx: &Context,
    entries: &[crate::landing::quarantine::Entry],
    tenant: Option<&str>,
) -> Result<u64, JobError> {
    let mut groups: std::collections::BTreeMap<(String, Option<String>), SegmentBuilder> =
        Default::default();
    for e in entries {
        let mut secret = crate::landing::quarantine::open(ctx.kms.as_ref(), e).await?;
        let t = e.tenant.clone().or_else(|| tenant.map(str::to_string));
        groups
            .entry((e.source.clone(), t))
            .or_default()
            .push_replay(&e.id, &secret.original);
        zeroize::Zeroize::zeroize(&mut secret.original);
    }
    let random = rand::rng().next_u32();
    for (seq, ((source, tenant), b)) in groups.into_iter().enumerate() {
        let now = ctx.clock.now();
        let id = segment_id(now, seq as u32, random);
        b.write(
            &ctx.store,
            ctx.kms.as_ref(),
            &source,
            tenant.as_deref(),
            &id,
            now,
            default_threads(),
        )
        .await?;
    }
    Ok(entries.len() as u64)
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
