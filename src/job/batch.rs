//! One micro-batch: landing segments -> validated, deduplicated, encrypted Parquet files, one
//! per partition, committed by per-partition manifests.
//!
//! Threads: a reader fetches segments; `threads` workers open blocks (decrypt, decompress),
//! decode, validate, hash, compress and seal records; the coordinator (this thread) puts
//! results back in landing order, dedupes, quarantines and streams rows into the data files.
//! This file holds the options, the report, the reader and the thread set-up; the workers are
//! in `batch/worker.rs`, the coordinator and its sink in `batch/sink.rs`, the recovery and the
//! commit in `commit.rs`.

use super::lease::Lease;
use super::{Context, JobError};
use crate::clock::micros;
use crate::config::{Policies, RetentionFloor};
use crate::crypto::{Cipher, DataKey, Dictionary, RecordCompressor, sha256};
use crate::lake::datafile::Row;
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{DataFileEntry, Loaded};
use crate::landing::Segment;
use crate::schema::{self, Reject};
use crate::sources::SourceKind;
use crate::storage::Store;
use rand::RngCore;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

mod sink;
mod worker;
use sink::coordinate;
use worker::{IndexKeys, Worker};

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
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct BatchReport {
    pub batch_id: String,
    pub segments: u64,
    pub segments_waiting: u64,
    pub lines: u64,
    pub blank_lines: u64,
    pub stored: u64,
    pub duplicates_in_batch: u64,
    pub already_stored: u64,
    pub quarantined: u64,
    /// Valid events whose retention had ended before they arrived: quarantined
    /// (`retention.expired_on_arrival`, also audited), for a person to decide.
    pub expired_on_arrival: u64,
    /// Quarantine entries replayed in this batch that are now stored (and left quarantine).
    pub replayed_out: u64,
    pub partitions: u64,
    pub files: u64,
    pub bytes_written: u64,
    /// Uncommitted data files of an interrupted batch or sweep (named by its intent record),
    /// removed and audited (`batch.leftover_removed`).
    pub leftovers_removed: u64,
    /// Such files kept because they have a lock record (only the audited sweep deletes those).
    pub leftovers_locked: u64,
    /// Committed files whose storage lock a killed batch had not set yet, set now.
    pub locks_repaired: u64,
    /// New files holding records an active legal hold covers (pinned at once).
    pub held_new_files: u64,
    pub staging_removed: u64,
    pub lease_taken_over: bool,
    /// Landing segments that do not parse or fail authentication: moved to `failed/` whole
    /// (audited), the rest of the landing zone went on.
    pub segments_isolated: u64,
    /// Where each went (`failed/<segment-id>.seg`).
    pub isolated: Vec<String>,
    /// Partitions whose latest manifest cannot be read (`verify` says why): nothing is written
    /// to them until repaired.
    pub damaged_partitions: Vec<String>,
    /// Events for those partitions, left in landing with their segments.
    pub events_blocked: u64,
    pub segments_kept: u64,
    pub stored_by_type: BTreeMap<String, u64>,
    pub stored_by_policy: BTreeMap<String, u64>,
    pub quarantined_by_code: BTreeMap<String, u64>,
    #[serde(skip)]
    pub expired_ids: serde_json::Value,
}

impl std::fmt::Display for BatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "batch {}: {} segment(s), {} line(s)",
            self.batch_id, self.segments, self.lines
        )?;
        writeln!(
            f,
            "  stored       {} event(s) in {} file(s), {} partition(s), {} bytes",
            self.stored, self.files, self.partitions, self.bytes_written
        )?;
        for (t, n) in &self.stored_by_type {
            writeln!(f, "                 {t}: {n}")?;
        }
        if self.expired_on_arrival > 0 {
            writeln!(
                f,
                "  expired      {} event(s) arrived after their retention ended: quarantined (retention.expired_on_arrival, audited)",
                self.expired_on_arrival
            )?;
        }
        writeln!(
            f,
            "  duplicates   {} ({} within this batch, {} already stored)",
            self.duplicates_in_batch + self.already_stored,
            self.duplicates_in_batch,
            self.already_stored
        )?;
        if self.replayed_out > 0 {
            writeln!(
                f,
                "  replayed     {} quarantine entr(ies) now stored and removed from quarantine",
                self.replayed_out
            )?;
        }
        write!(f, "  quarantined  {}", self.quarantined)?;
        if self.quarantined > 0 {
            let codes: Vec<String> = self
                .quarantined_by_code
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            write!(f, " ({}); see `holdfast quarantine list`", codes.join(", "))?;
        }
        if self.leftovers_removed + self.staging_removed > 0 || self.lease_taken_over {
            write!(
                f,
                "\n  recovered    {} leftover file(s) and {} staging file(s) of an interrupted batch removed",
                self.leftovers_removed, self.staging_removed
            )?;
        }
        if self.segments_isolated > 0 {
            write!(
                f,
                "\n  isolated     {} damaged landing segment(s) moved aside, nothing read from them: {} (audited)",
                self.segments_isolated,
                self.isolated.join(", ")
            )?;
        }
        if self.events_blocked > 0 {
            write!(
                f,
                "\n  blocked      {} event(s) for partition(s) whose latest manifest is damaged ({}); {} segment(s) stay in landing; run `holdfast verify`",
                self.events_blocked,
                self.damaged_partitions.join(", "),
                self.segments_kept
            )?;
        }
        if self.segments_waiting > 0 {
            write!(
                f,
                "\n  waiting      {} segment(s) left for the next batch (batch.max_input_mb)",
                self.segments_waiting
            )?;
        }
        Ok(())
    }
}

struct SegCtx {
    segment: Segment,
    cipher: Cipher,
    source: SourceKind,
    ingested_at: i64,
    index: usize,
}

struct Chunk {
    seq: u64,
    seg: Arc<SegCtx>,
    block: usize,
}

enum Item {
    /// A row; its payload is sealed, or empty with the plaintext record beside it while the
    /// partition's dictionary is still being learnt.
    Row(FileKey, [u8; 16], Box<Row>, Option<Vec<u8>>),
    Reject {
        line: u64,
        reject: Reject,
        original: Vec<u8>,
        /// The event id, when a valid event was refused because its retention had ended.
        expired: Option<String>,
    },
}

/// Why a line is not stored; for an event whose retention had already ended, its id too
/// (the audit entry lists them).
struct Rejected {
    reject: Reject,
    expired: Option<String>,
}

impl From<Reject> for Rejected {
    fn from(reject: Reject) -> Self {
        Rejected {
            reject,
            expired: None,
        }
    }
}

struct Processed {
    seq: u64,
    seg: Arc<SegCtx>,
    lines: u64,
    blank: u64,
    items: Vec<Item>,
}

/// What one data file of a batch holds: one partition's records under one retention policy,
/// so that a file's records expire together and its storage lock frees it whole (files that
/// mixed policies would have to be rewritten when the shorter one ends).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FileKey {
    partition: Partition,
    policy: Arc<str>,
}

/// Per-file keys of this batch: the file's DEK, and its dictionary once learnt
/// (`Some(None)`: learnt that there is too little to train on; plain zstd).
struct PartKeys {
    dek: DataKey,
    cipher: Cipher,
    dict: OnceLock<Option<Arc<Dictionary>>>,
}

/// Created by whichever thread meets the partition first.
#[derive(Default)]
struct KeyBook(Mutex<HashMap<FileKey, Arc<PartKeys>>>);

impl KeyBook {
    fn part(&self, p: &FileKey) -> Arc<PartKeys> {
        let mut m = self.0.lock().expect("key book lock");
        m.entry(p.clone())
            .or_insert_with(|| {
                let dek = DataKey::generate();
                let cipher = dek.cipher();
                Arc::new(PartKeys {
                    dek,
                    cipher,
                    dict: OnceLock::new(),
                })
            })
            .clone()
    }
}

/// Records a partition's dictionary is trained on.
const TRAIN_ROWS: usize = 256;

/// The dedupe key of an event: its tenant and id (two tenants may use the same id).
fn id_key(tenant_id: &str, event_id: &str) -> [u8; 16] {
    let key = crate::crypto::aad(&[tenant_id.as_bytes(), event_id.as_bytes()]);
    sha256(&key)[..16].try_into().expect("16 bytes")
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
    let (latest, damaged) = super::commit::recover(ctx, &mut report).await?;
    let picked = pick_segments(&ctx.store, opts, &mut report).await?;
    if picked.is_empty() {
        return Ok(report);
    }
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
        let (latest, damaged) = (latest.clone(), damaged.clone());
        tokio::task::spawn_blocking(move || {
            let parts = Parts {
                latest: &latest,
                damaged: &damaged,
            };
            process(&handle, &ctx, &opts, &batch_id, &picked, parts, report)
        })
        .await
        .map_err(|e| JobError::Worker(e.to_string()))??
    };
    report = rep;
    ctx.fail("batch.after_files_written");
    super::commit::commit(ctx, batch_id, lease, &picked, &latest, outcome, &mut report).await?;
    Ok(report)
}

/// Landing segments in arrival order, up to the input budget (always at least one).
async fn pick_segments(
    store: &Store,
    opts: &BatchOptions,
    report: &mut BatchReport,
) -> Result<Vec<object_store::path::Path>, JobError> {
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

pub(super) type Finished = Vec<(Partition, DataFileEntry)>;

/// What processing hands to the commit.
pub(super) struct Outcome {
    pub files: Finished,
    /// Quarantine entries replayed in this batch whose lines are now stored.
    pub passed: Vec<String>,
    /// Segments (index into the picked list) holding events for a partition whose latest
    /// manifest is damaged: they stay in landing until it is repaired.
    pub kept: BTreeSet<usize>,
    /// Segments that cannot be read (do not parse, fail authentication), with why.
    pub failed: Vec<(usize, String)>,
}

/// The partitions as the batch found them: latest manifests, and those it cannot read.
#[derive(Clone, Copy)]
struct Parts<'a> {
    latest: &'a BTreeMap<Partition, Loaded>,
    damaged: &'a BTreeSet<Partition>,
}

/// Whether a segment failed for what its bytes are (damaged or altered), rather than for a
/// store or key service failure (then the batch stops and a rerun tries again).
fn damaged_segment(e: &JobError) -> bool {
    use crate::landing::LandingError;
    matches!(
        e,
        JobError::Landing(
            LandingError::Corrupt { .. }
                | LandingError::Crypto(_)
                | LandingError::Kms(crate::crypto::kms::KmsError::InvalidCiphertext { .. })
        )
    )
}

/// Reads a segment, unwraps its key and opens every block once: a segment with a damaged
/// block is set aside whole before any of its lines is stored.
fn open_segment(
    rt: &tokio::runtime::Handle,
    ctx: &Context,
    path: &object_store::path::Path,
    index: usize,
) -> Result<SegCtx, JobError> {
    rt.block_on(async {
        let bytes = ctx.store.get(path).await?;
        let segment = Segment::parse(path.as_ref(), bytes)?;
        let cipher = segment.unwrap_key(ctx.kms.as_ref()).await?;
        let source = SourceKind::from_name(&segment.header.source).ok_or_else(|| {
            crate::landing::LandingError::Corrupt {
                object: path.to_string(),
                problem: format!("unknown source {}", segment.header.source),
            }
        })?;
        for block in 0..segment.block_count() {
            let mut lines = segment.open_block(&cipher, block)?;
            zeroize::Zeroize::zeroize(&mut lines);
        }
        let ingested_at = micros(segment.header.arrived_at);
        Ok::<_, JobError>(SegCtx {
            segment,
            cipher,
            source,
            ingested_at,
            index,
        })
    })
}

fn process(
    rt: &tokio::runtime::Handle,
    ctx: &Context,
    opts: &BatchOptions,
    batch_id: &str,
    picked: &[object_store::path::Path],
    parts: Parts<'_>,
    mut report: BatchReport,
) -> Result<(Outcome, BatchReport), JobError> {
    let threads = opts.threads.max(1);
    let keys = KeyBook::default();
    let started = ctx.clock.now();
    let failed = Mutex::new(Vec::new());
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<Chunk>(threads * 2);
    let (out_tx, out_rx) = crossbeam_channel::bounded::<Result<Processed, JobError>>(threads * 2);
    let outcome = std::thread::scope(|s| {
        // reader
        let reader_out = out_tx.clone();
        let failed = &failed;
        s.spawn(move || {
            let mut seq = 0u64;
            for (index, path) in picked.iter().enumerate() {
                let seg = match open_segment(rt, ctx, path, index) {
                    Ok(seg) => Arc::new(seg),
                    Err(e) if damaged_segment(&e) => {
                        failed
                            .lock()
                            .expect("failed list")
                            .push((index, e.to_string()));
                        continue;
                    }
                    Err(e) => {
                        let _ = reader_out.send(Err(e));
                        return;
                    }
                };
                for block in 0..seg.segment.block_count() {
                    let chunk = Chunk {
                        seq,
                        seg: seg.clone(),
                        block,
                    };
                    if chunk_tx.send(chunk).is_err() {
                        return;
                    }
                    seq += 1;
                }
            }
        });
        // workers
        for _ in 0..threads {
            let rx = chunk_rx.clone();
            let tx = out_tx.clone();
            let keys = &keys;
            let policies = &opts.policies;
            s.spawn(move || {
                let mut w = Worker {
                    keys,
                    policies,
                    floor: opts.floor,
                    max_future: opts.max_future,
                    now: started,
                    validator: schema::validator(),
                    parts: HashMap::new(),
                    index_keys: IndexKeys {
                        kms: ctx.kms.as_ref(),
                        keys: HashMap::new(),
                    },
                    z: RecordCompressor::default(),
                };
                for chunk in rx {
                    let r = w.work(&chunk);
                    if tx.send(r).is_err() {
                        return;
                    }
                }
            });
        }
        drop(out_tx);
        drop(chunk_rx);
        coordinate(rt, ctx, opts, batch_id, parts, &keys, out_rx, &mut report)
    })?;
    let failed = failed.into_inner().expect("failed list");
    Ok((Outcome { failed, ..outcome }, report))
}
