//! Jobs: `ingest` (input -> landing segments) and `batch` (landing -> lake).
//!
//! Exactly-once: a batch holds the store's lease, turns the landing segments it picks into one
//! data file per partition, commits each partition's manifest with a create-only put, and only
//! then deletes the segments. Dedupe is on event id, against the batch itself and against the
//! `event_id` column of the partition's committed files, so a rerun after a kill at any point
//! stores exactly the events the killed run did not commit. Quarantine entries have ids
//! derived from (segment, line) and are create-only too.

mod batch;
mod commit;
mod ingest;
mod options;
pub mod replay;
// leases live in storage (they work on every backend); `job` runs under them
use crate::storage::lease;
pub(crate) use lease::Lease;
pub use lease::{EXPIRY as LEASE_EXPIRY, Fence, LeaseLost};
mod validate;

pub use batch::{BatchOptions, BatchReport, batch};
pub(crate) use commit::repair_locks;
pub use ingest::{IngestReport, PREFIX_BYTES, ingest};
pub use options::batch_options;
pub use validate::{ValidateReport, validate, validate_opened};

use crate::clock::Clock;
use crate::crypto::kms::Kms;
use crate::lake::LakeError;
use crate::landing::{LandingError, SegmentBuilder, segment_id};
use crate::storage::Store;
use rand::RngCore;
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
        "another job holds the lease on this store ({holder}); a lease its holder stops renewing expires by itself ({path})"
    )]
    Busy { holder: String, path: String },
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
    #[error(
        "another writer committed {partition} first; nothing of this batch is visible, rerun it"
    )]
    Conflict { partition: String },
    #[error("batch worker failed: {0}")]
    Worker(String),
    /// A landing segment of a tenant whose own key is unavailable (it waits; never surfaced).
    #[error("tenant `{0}`'s own key is unavailable")]
    TenantKeyWaiting(String),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Head(#[from] crate::head::HeadError),
    #[error("schema version {0} is not in the registry ({versions})", versions = crate::schema::upcast::VERSIONS.join(", "))]
    UnknownVersion(String),
    /// A policy in use keeps records for less than the store's retention floor.
    #[error("{0}")]
    BelowFloor(String),
}

impl From<lease::LeaseError> for JobError {
    fn from(e: lease::LeaseError) -> Self {
        match e {
            lease::LeaseError::Busy { holder, path } => JobError::Busy { holder, path },
            lease::LeaseError::Store(e) => JobError::Lake(e),
        }
    }
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

/// Puts the selected quarantine entries back into the landing zone as replay segments (one
/// per source and tenant); the next batch stores what now passes, and removes those entries.
/// Returns how many entries were queued. Entries that keep only part of their line (over the
/// limit of one event) cannot be replayed: they stay, and are not counted.
/// `tenant` applies to entries whose source had none (the usual fix for `source.tenant_missing`).
pub async fn queue_replay(
    ctx: &Context,
    entries: &[crate::landing::quarantine::Entry],
    tenant: Option<&str>,
) -> Result<u64, JobError> {
    let mut groups: std::collections::BTreeMap<(String, Option<String>), SegmentBuilder> =
        Default::default();
    let entries: Vec<_> = entries.iter().filter(|e| e.replayable()).collect();
    for e in &entries {
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
