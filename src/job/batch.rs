//! One micro-batch: landing segments -> validated, deduplicated, encrypted Parquet files, one
//! per partition and policy, committed by per-partition manifests.
//!
//! The batch runs as stages, each in its own file, handing typed values on:
//! 0. recover ([`super::commit::recover`]): what interrupted runs left, the latest manifests
//!    ([`Recovered`]); and the holds protecting now ([`HoldSnapshot`]);
//! 1. read ([`read`]): landing segments opened, their blocks in landing order ([`read::Block`]);
//! 2. decode and validate ([`decode`], `threads` workers): rows and rejected lines
//!    ([`decode::DecodedBlock`]);
//! 3. order and dedupe ([`order`], the coordinator), with quarantine ([`quarantine`]);
//! 4. sink ([`sink`]): one data file per partition and policy ([`sink::WrittenFile`]);
//! 5. commit ([`super::commit::commit`]): manifests, locks, holds pinned from the rows in
//!    memory, quarantine replays, audit, signed head, landing cleanup ([`Outcome`]).

use super::commit::Recovered;
use super::lease::Lease;
use super::{Context, JobError};
use crate::config::{Policies, RetentionFloor};
use crate::crypto::RecordCompressor;
use crate::lake::layout;
use crate::retention::hold::HoldSnapshot;
use crate::schema;
use crate::storage::Store;
use rand::RngCore;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

mod decode;
mod keys;
mod order;
mod quarantine;
mod read;
mod report;
mod sink;
pub(super) use read::UnreadableSegment;
pub use report::BatchReport;
pub(super) use sink::WrittenFile;

#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub policies: Policies,
    /// Raw (decompressed) landing bytes one batch takes at most; the rest waits.
    pub max_input_bytes: u64,
    pub memory_bytes: usize,
    /// Worker threads (at most [`crate::config::MAX_THREADS`]).
    pub threads: usize,
    /// How far after its arrival an event's `occurredAt` may lie.
    pub max_future: chrono::Duration,
    /// The store's retention floor: read from the store by [`batch`], whatever is set here.
    pub(crate) floor: RetentionFloor,
    /// Test builds only: write data files of format 1 (one dictionary for every tenant of a
    /// file) or 2 (one per tenant) instead of 3, from `HOLDFAST_TEST_DATAFILE_VERSION` by
    /// default.
    #[cfg(any(test, feature = "test-hooks"))]
    pub data_file_version: u8,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            policies: Policies::default(),
            max_input_bytes: 4096 << 20,
            memory_bytes: 64 << 20,
            threads: super::default_threads(),
            max_future: chrono::Duration::hours(24),
            floor: RetentionFloor::default(),
            #[cfg(any(test, feature = "test-hooks"))]
            data_file_version: crate::hooks::data_file_version(),
        }
    }
}

/// Reads the store's retention floor from its marker (the strictest for a store with no
/// marker, which the CLI never opens).
async fn store_floor(store: &Store) -> Result<RetentionFloor, JobError> {
    let marker = layout::store_marker();
    match store.get_opt(&marker).await? {
        Some(bytes) => match crate::storage::marker::decode(&bytes) {
            Ok(m) => Ok(RetentionFloor {
                days: m.retention_floor_days,
            }),
            Err(e) => Err(crate::lake::LakeError::Corrupt {
                object: marker.to_string(),
                problem: e.to_string(),
            }
            .into()),
        },
        None => Ok(RetentionFloor::default()),
    }
}

pub async fn batch(ctx: &Context, opts: &BatchOptions) -> Result<BatchReport, JobError> {
    // the floor is the store's, never the caller's
    let floor = store_floor(&ctx.store).await?;
    let below = opts.policies.below_floor(floor);
    if !below.is_empty() {
        return Err(JobError::BelowFloor(below.join("; ")));
    }
    let opts = &BatchOptions {
        floor,
        threads: opts.threads.clamp(1, crate::config::MAX_THREADS),
        ..opts.clone()
    };
    let started = ctx.clock.now();
    let batch_id = layout::batch_id(started, rand::rng().next_u32());
    let (lease, took_over) =
        Lease::acquire(&ctx.store, ctx.clock.clone(), &format!("batch {batch_id}")).await?;
    let result = run(ctx, opts, &batch_id, &lease, took_over).await;
    // On error the lease is released too: nothing uncommitted is visible, and a rerun recovers.
    lease.release(&ctx.store).await?;
    result
}

/// What every stage of one batch shares while its threads run.
pub(super) struct Stages<'a> {
    rt: &'a tokio::runtime::Handle,
    ctx: &'a Context,
    opts: &'a BatchOptions,
    batch_id: &'a str,
    keys: &'a keys::KeyBook,
    holds: &'a Arc<HoldSnapshot>,
    domains: &'a Domains,
}

/// The key domains of this batch: tenants the store binds to a key of their own, and those
/// of them whose key is unavailable now (their events wait in landing).
#[derive(Debug, Default)]
pub(super) struct Domains {
    pub(super) bound: HashMap<String, Arc<str>>,
    /// Tenant -> what its key service answered.
    pub(super) waiting: HashMap<String, String>,
}

impl Domains {
    /// Asks each bound tenant's key service whether its key is there (`info`: a Transit key
    /// deleted or an AWS key disabled says so; nothing is created) and opens its blind-index
    /// key (one unwrap): a tenant that fails either waits.
    async fn probe(kms: &dyn crate::crypto::kms::Kms) -> Domains {
        let mut d = Domains::default();
        for (tenant, k) in kms.tenants() {
            let check = async {
                k.info().await?;
                k.index_key(&tenant).await.map(drop)
            };
            if let Err(e) = check.await {
                d.waiting.insert(tenant.clone(), e.to_string());
            }
            d.bound.insert(tenant.clone(), Arc::from(tenant.as_str()));
        }
        d
    }
}

/// What processing hands to the commit.
pub(super) struct Outcome {
    pub files: Vec<WrittenFile>,
    /// Quarantine entries replayed in this batch whose lines are now stored.
    pub passed: Vec<String>,
    /// Segments (index into the picked list) holding events for a partition whose latest
    /// manifest is damaged: they stay in landing until it is repaired.
    pub kept: BTreeSet<usize>,
    /// Segments that cannot be read (do not parse, fail authentication).
    pub unreadable: Vec<UnreadableSegment>,
    /// The segments opened (an object may hold several): (index into the picked list, id).
    pub segment_ids: Vec<(usize, String)>,
}

async fn run(
    ctx: &Context,
    opts: &BatchOptions,
    batch_id: &str,
    lease: &Lease,
    took_over: bool,
) -> Result<BatchReport, JobError> {
    let mut report = BatchReport {
        batch_id: batch_id.to_string(),
        lease_taken_over: took_over,
        ..Default::default()
    };
    let found = Arc::new(super::commit::recover(ctx, &mut report).await?);
    let picked = read::pick_segments(&ctx.store, opts, &mut report).await?;
    if picked.is_empty() {
        return Ok(report);
    }
    // every row is counted against the holds protecting now (pinned at the commit)
    let holds = Arc::new(HoldSnapshot::load(&ctx.store, ctx.clock.now()).await?);
    let domains = Arc::new(Domains::probe(ctx.kms.as_ref()).await);
    // before the first upload: the files this batch writes are named by its id
    crate::head::intent::begin(&ctx.store, batch_id, "batch", ctx.clock.now()).await?;
    let handle = tokio::runtime::Handle::current();
    let (outcome, rep) = {
        // data files and quarantine entries: their directories are synced at the commit
        let ctx = Context {
            store: ctx.store.deferred(),
            ..ctx.clone()
        };
        let opts = opts.clone();
        let batch_id = batch_id.to_string();
        let picked = picked.clone();
        let (found, holds) = (found.clone(), holds.clone());
        let domains = domains.clone();
        tokio::task::spawn_blocking(move || {
            let keys = key_book(&opts);
            let st = Stages {
                rt: &handle,
                ctx: &ctx,
                opts: &opts,
                batch_id: &batch_id,
                keys: &keys,
                holds: &holds,
                domains: &domains,
            };
            process(&st, &picked, &found, report)
        })
        .await
        .map_err(|e| JobError::Worker(e.to_string()))??
    };
    report = rep;
    ctx.fail("batch.after_files_written");
    let committing = super::commit::Committing {
        batch_id,
        lease,
        picked: &picked,
        latest: &found.latest,
        holds: &holds,
    };
    super::commit::commit(ctx, &committing, outcome, &mut report).await?;
    report.kms = ctx.kms.calls();
    Ok(report)
}

/// The keys of the batch's files (of format 1 or 2 in test builds that ask for it).
fn key_book(opts: &BatchOptions) -> keys::KeyBook {
    #[cfg(any(test, feature = "test-hooks"))]
    match opts.data_file_version {
        1 => return keys::KeyBook::records(true),
        2 => return keys::KeyBook::records(false),
        _ => {}
    }
    let _ = opts;
    keys::KeyBook::default()
}

/// Stages 1 to 4 on their threads: the reader, the decoders, and this thread coordinating.
fn process(
    st: &Stages<'_>,
    picked: &[object_store::path::Path],
    found: &Recovered,
    mut report: BatchReport,
) -> Result<(Outcome, BatchReport), JobError> {
    let threads = st.opts.threads.max(1);
    let started = st.ctx.clock.now();
    let aside = read::SetAside::default();
    let (block_tx, block_rx) = crossbeam_channel::bounded::<read::Block>(threads * 2);
    let (out_tx, out_rx) = crossbeam_channel::bounded(threads * 2);
    let outcome = std::thread::scope(|s| {
        let errors = out_tx.clone();
        let aside = &aside;
        s.spawn(move || read::read(st.rt, st.ctx, picked, block_tx, errors, aside, st.domains));
        for _ in 0..threads {
            let (rx, tx) = (block_rx.clone(), out_tx.clone());
            s.spawn(move || {
                let mut w = decode::Worker {
                    keys: st.keys,
                    policies: &st.opts.policies,
                    floor: st.opts.floor,
                    max_future: st.opts.max_future,
                    now: started,
                    validator: schema::validator(),
                    parts: foldhash::HashMap::default(),
                    kms: st.ctx.kms.as_ref(),
                    index_keys: Default::default(),
                    z: RecordCompressor::default(),
                    domains: st.domains,
                    failure: None,
                };
                for block in rx {
                    if tx.send(w.work(&block)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(out_tx);
        drop(block_rx);
        order::coordinate(st, found, out_rx, &mut report)
    })?;
    let unreadable = aside.unreadable.into_inner().expect("unreadable list");
    let mut outcome = Outcome {
        unreadable,
        segment_ids: aside.segment_ids.into_inner().expect("segment ids"),
        ..outcome
    };
    for (index, tenant) in aside.waiting.into_inner().expect("waiting list") {
        let w = report.tenants_waiting.entry(tenant).or_default();
        w.segments.insert(index);
        outcome.kept.insert(index);
    }
    for (tenant, w) in &mut report.tenants_waiting {
        w.reason = match st.domains.waiting.get(tenant) {
            Some(r) => r.clone(),
            None => "its own key did not open a landing segment's key".into(),
        };
    }
    Ok((outcome, report))
}
