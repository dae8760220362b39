//! One micro-batch: landing segments -> validated, deduplicated, encrypted Parquet files, one
//! per partition, committed by per-partition manifests.
//!
//! Threads: a reader fetches segments; `threads` workers open blocks (decrypt, decompress),
//! decode, validate, hash, compress and seal records; the coordinator (this thread) puts
//! results back in landing order, dedupes, quarantines and streams rows into the data files.

use super::lease::Lease;
use super::{Context, JobError};
use crate::clock::micros;
use crate::config::{Policies, RetentionFloor};
use crate::crypto::{
    Cipher, DataKey, Dictionary, RecordCompressor, record_aad, seal_record, sha256,
};
use crate::lake::datafile::{self, FileWriter, Row};
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{DataFileEntry, FileEncryption, Loaded};
use crate::lake::storage::Store;
use crate::landing::Segment;
use crate::landing::quarantine::{self, Origin};
use crate::schema::{self, Reject};
use crate::sources::SourceKind;
use arrow::array::AsArray;
use rand::RngCore;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

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

/// Reads the store's retention floor from its marker (the default for a marker that
/// predates floors; the strictest for a store with no marker, which the CLI never opens).
async fn store_floor(store: &Store) -> Result<RetentionFloor, JobError> {
    let marker = object_store::path::Path::from(layout::STORE_MARKER);
    match store.get_opt(&marker).await? {
        Some(bytes) => RetentionFloor::from_marker(&bytes).map_err(|problem| {
            crate::lake::LakeError::Corrupt {
                object: marker.to_string(),
                problem,
            }
            .into()
        }),
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

/// One worker's cache of tenants' blind-index keys.
struct IndexKeys<'a> {
    kms: &'a dyn crate::crypto::kms::Kms,
    keys: HashMap<String, crate::crypto::kms::IndexKey>,
}

impl IndexKeys<'_> {
    fn hmacs(
        &mut self,
        tenant: &str,
        addresses: &[String],
    ) -> Result<Vec<[u8; crate::crypto::BLIND_INDEX_BYTES]>, Reject> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        if !self.keys.contains_key(tenant) {
            let k = futures::executor::block_on(self.kms.index_key(tenant))
                .map_err(|e| Reject::new("kms.index_key", "/tenantId", e.to_string()))?;
            self.keys.insert(tenant.to_string(), k);
        }
        let key = &self.keys[tenant];
        let mut out: Vec<[u8; crate::crypto::BLIND_INDEX_BYTES]> = addresses
            .iter()
            .map(|a| crate::crypto::blind_index(key, a))
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// One worker thread: what it shares (key book, policies, the batch's time) and what it
/// keeps (cached partition keys and index keys, a zstd context).
struct Worker<'a> {
    keys: &'a KeyBook,
    policies: &'a Policies,
    floor: RetentionFloor,
    max_future: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
    validator: &'static schema::Validator,
    parts: HashMap<FileKey, Arc<PartKeys>>,
    index_keys: IndexKeys<'a>,
    z: RecordCompressor,
}

impl Worker<'_> {
    fn work(&mut self, chunk: &Chunk) -> Result<Processed, JobError> {
        let seg = &chunk.seg;
        let mut data = seg.segment.open_block(&seg.cipher, chunk.block)?;
        let mut out = Processed {
            seq: chunk.seq,
            seg: seg.clone(),
            lines: 0,
            blank: 0,
            items: Vec::new(),
        };
        if !data.is_empty() {
            let body = data.strip_suffix(b"\n").unwrap_or(&data);
            let mut start = 0;
            let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
            for end in ends {
                let line = &body[start..end];
                start = end + 1;
                let local = out.lines;
                out.lines += 1;
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    out.blank += 1;
                    continue;
                }
                match self.decode_line(seg, line) {
                    Ok(rows) => out.items.extend(rows),
                    Err(Rejected { reject, expired }) => out.items.push(Item::Reject {
                        line: local,
                        reject,
                        original: line.to_vec(),
                        expired,
                    }),
                }
            }
        }
        zeroize::Zeroize::zeroize(&mut data);
        Ok(out)
    }

    /// Whether an event's time is one the store keeps: not later than its arrival plus
    /// `max_future`, its retention not ended (`now`), and not older than the store's floor
    /// allows. Anything else waits in quarantine for a person to decide.
    fn check_time(
        &self,
        arrived_at: chrono::DateTime<chrono::Utc>,
        f: &schema::IndexFields,
        expires: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<chrono::DateTime<chrono::Utc>, Rejected> {
        let at = crate::clock::fmt_ts(f.occurred_at);
        let arrived = crate::clock::fmt_ts(arrived_at);
        if arrived_at
            .checked_add_signed(self.max_future)
            .is_some_and(|latest| f.occurred_at > latest)
        {
            return Err(Reject::new(
                "event.occurred_at_future",
                "/occurredAt",
                format!(
                    "occurredAt {at} is more than {} hour(s) after the event arrived ({arrived})",
                    self.max_future.num_hours()
                ),
            )
            .into());
        }
        let Some(expires) = expires else {
            return Err(Reject::new(
                "retention.expiry",
                "/occurredAt",
                format!("occurredAt {at} plus the retention period is past the end of time"),
            )
            .into());
        };
        if expires <= self.now {
            return Err(Rejected {
                reject: Reject::new(
                    "retention.expired_on_arrival",
                    "/occurredAt",
                    format!(
                        "occurredAt {at}: its retention ended at {} before the batch at {}",
                        crate::clock::fmt_ts(expires),
                        crate::clock::fmt_ts(self.now)
                    ),
                ),
                expired: Some(f.event_id.clone()),
            });
        }
        if self.floor.passed(f.occurred_at, arrived_at) {
            return Err(Reject::new(
                "event.occurred_at_past",
                "/occurredAt",
                format!(
                    "occurredAt {at} is more than the store's retention floor ({} days) before the event arrived ({arrived})",
                    self.floor.days
                ),
            )
            .into());
        }
        Ok(expires)
    }

    fn decode_line(&mut self, seg: &SegCtx, line: &[u8]) -> Result<Vec<Item>, Rejected> {
        let decoded = seg
            .source
            .decode(line, seg.segment.header.tenant.as_deref())?;
        let mut items = Vec::with_capacity(decoded.len());
        for d in decoded {
            let checked = self.validator.check(&d.event)?;
            let f = checked.fields;
            // an upcast event is stored as its current-version serialization
            let record: std::borrow::Cow<'_, [u8]> = match &checked.upcast {
                Some(up) => std::borrow::Cow::Owned(
                    serde_json::to_vec(up).expect("a JSON value serializes"),
                ),
                None => d.record,
            };
            let partition = Partition::of(f.occurred_at, &f.interaction_type).ok_or_else(|| {
                Reject::new(
                    "event.partition",
                    "/occurredAt",
                    "occurredAt or interactionType cannot name a partition",
                )
            })?;
            let (policy_id, expires) =
                self.policies
                    .apply(&f.tenant_id, &f.interaction_type, f.occurred_at);
            let expires = self.check_time(seg.segment.header.arrived_at, &f, expires)?;
            let file = FileKey {
                partition,
                policy: policy_id.clone(),
            };
            let pk = self
                .parts
                .entry(file.clone())
                .or_insert_with(|| self.keys.part(&file));
            let (payload, plain) = match pk.dict.get() {
                Some(dict) => {
                    let aad = record_aad(
                        &f.tenant_id,
                        &f.event_id,
                        &f.interaction_id,
                        pk.cipher.dek_id(),
                    );
                    let mut payload = Vec::with_capacity(record.len() / 3 + 64);
                    seal_record(
                        &pk.cipher,
                        &mut self.z,
                        dict.as_deref(),
                        &record,
                        &aad,
                        &mut payload,
                    );
                    (payload, None)
                }
                None => (Vec::new(), Some(record.clone().into_owned())),
            };
            let key = id_key(&f.tenant_id, &f.event_id);
            let address_hmacs = self.index_keys.hmacs(&f.tenant_id, &f.addresses)?;
            let row = Row {
                record_hash: sha256(&record),
                event_id: f.event_id,
                interaction_id: f.interaction_id,
                tenant_id: f.tenant_id,
                source_platform: f.source_platform,
                state: f.state,
                direction: f.direction,
                occurred_at: micros(f.occurred_at),
                ingested_at: seg.ingested_at,
                queue_id: f.queue_id,
                agent_ids: f.agent_ids,
                address_hmacs,
                wrap_up_code: f.wrap_up_code,
                disposition: f.disposition,
                schema_version: f.schema_version,
                policy_id,
                expires_at: micros(expires),
                payload,
            };
            items.push(Item::Row(file, key, Box::new(row), plain));
        }
        Ok(items)
    }
}

/// Dedupe state of one partition: ids committed before this batch, ids taken by it.
struct Seen {
    committed: HashSet<[u8; 16]>,
    batch: HashSet<[u8; 16]>,
}

struct OpenFile {
    writer: FileWriter,
    /// When a row last went in (a counter), to flush the least recently used file first.
    last_used: u64,
    keys: Arc<PartKeys>,
    wrapped: crate::crypto::kms::WrappedKey,
    min_occ: i64,
    max_occ: i64,
    min_exp: i64,
    max_exp: i64,
    tenants: BTreeSet<String>,
    policies: BTreeSet<String>,
}

/// A row held back with its plaintext record until its partition's dictionary is learnt.
type Held = (Box<Row>, Vec<u8>);

/// The rows one file holds back while its dictionary is learnt, and the bytes they take.
#[derive(Default)]
struct Learning {
    rows: Vec<Held>,
    bytes: usize,
}

/// Where deduplicated rows go: the open data files, and the rows of partitions whose
/// dictionary is still being learnt.
struct Sink<'a> {
    rt: &'a tokio::runtime::Handle,
    ctx: &'a Context,
    batch_id: &'a str,
    keys: &'a KeyBook,
    /// The budget for open files and rows held back for learning, together.
    memory_bytes: usize,
    open: BTreeMap<FileKey, OpenFile>,
    learning: HashMap<FileKey, Learning>,
    /// Bytes of every row held back for learning.
    learning_bytes: usize,
    z: RecordCompressor,
    since_check: usize,
    rows_written: u64,
}

impl Sink<'_> {
    /// Takes a row whose payload may still be plaintext beside it.
    fn accept(
        &mut self,
        part: FileKey,
        mut row: Box<Row>,
        plain: Option<Vec<u8>>,
        report: &mut BatchReport,
    ) -> Result<(), JobError> {
        let Some(plain) = plain else {
            return self.write(part, row, report);
        };
        let pk = self.keys.part(&part);
        if let Some(dict) = pk.dict.get().cloned() {
            self.seal(&pk, dict.as_deref(), &mut row, plain);
            return self.write(part, row, report);
        }
        let held = row.heap_size() + plain.capacity();
        let l = self.learning.entry(part.clone()).or_default();
        l.rows.push((row, plain));
        l.bytes += held;
        self.learning_bytes += held;
        if l.rows.len() >= TRAIN_ROWS {
            self.learn(part, report)?;
        }
        // rows held back count against the memory budget: past half of it, the file holding
        // back the most learns its dictionary now, from fewer rows (plain zstd if too few)
        while self.learning_bytes > self.memory_bytes / 2 {
            let Some(biggest) = self
                .learning
                .iter()
                .max_by_key(|(_, l)| l.bytes)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.learn(biggest, report)?;
        }
        Ok(())
    }

    fn seal(
        &mut self,
        pk: &PartKeys,
        dict: Option<&Dictionary>,
        row: &mut Row,
        mut plain: Vec<u8>,
    ) {
        let aad = record_aad(
            &row.tenant_id,
            &row.event_id,
            &row.interaction_id,
            pk.cipher.dek_id(),
        );
        seal_record(
            &pk.cipher,
            &mut self.z,
            dict,
            &plain,
            &aad,
            &mut row.payload,
        );
        zeroize::Zeroize::zeroize(&mut plain);
    }

    /// Trains the partition's dictionary on the rows held back, publishes it to the workers,
    /// then seals and writes those rows. Too few rows to learn from: plain zstd.
    fn learn(&mut self, part: FileKey, report: &mut BatchReport) -> Result<(), JobError> {
        let Learning { rows, bytes } = self.learning.remove(&part).unwrap_or_default();
        self.learning_bytes -= bytes;
        let pk = self.keys.part(&part);
        let samples: Vec<&[u8]> = rows.iter().map(|(_, p)| p.as_slice()).collect();
        let dict = Dictionary::train(&samples).map(Arc::new);
        let _ = pk.dict.set(dict.clone());
        for (mut row, plain) in rows {
            self.seal(&pk, dict.as_deref(), &mut row, plain);
            self.write(part.clone(), row, report)?;
        }
        Ok(())
    }

    fn write(
        &mut self,
        part: FileKey,
        row: Box<Row>,
        report: &mut BatchReport,
    ) -> Result<(), JobError> {
        if !self.open.contains_key(&part) {
            let f = self
                .rt
                .block_on(open_file(self.ctx, self.batch_id, &part, self.keys))?;
            self.open.insert(part.clone(), f);
        }
        let f = self.open.get_mut(&part).expect("opened");
        self.since_check += 1;
        f.last_used = self.rows_written;
        self.rows_written += 1;
        f.min_occ = f.min_occ.min(row.occurred_at);
        f.max_occ = f.max_occ.max(row.occurred_at);
        f.min_exp = f.min_exp.min(row.expires_at);
        f.max_exp = f.max_exp.max(row.expires_at);
        if !f.tenants.contains(&row.tenant_id) {
            f.tenants.insert(row.tenant_id.clone());
        }
        if !f.policies.contains(row.policy_id.as_ref()) {
            f.policies.insert(row.policy_id.to_string());
        }
        *report
            .stored_by_type
            .entry(part.partition.interaction_type.clone())
            .or_default() += 1;
        *report
            .stored_by_policy
            .entry(row.policy_id.to_string())
            .or_default() += 1;
        report.stored += 1;
        f.writer.push(*row)?;
        let parts = f.writer.take_pending();
        if !parts.is_empty() {
            self.rt
                .block_on(futures::future::try_join_all(parts))
                .map_err(|e| {
                    crate::lake::LakeError::store("writing", f.writer.path().as_ref(), e)
                })?;
        }
        if self.since_check >= 1024 {
            self.since_check = 0;
            let budget = self.memory_bytes.saturating_sub(self.learning_bytes);
            relieve_memory(self.rt, &mut self.open, budget)?;
        }
        Ok(())
    }

    /// Writes what is held back, closes every file and returns their manifest entries.
    fn finish(mut self, report: &mut BatchReport) -> Result<Finished, JobError> {
        let waiting: Vec<FileKey> = self.learning.keys().cloned().collect();
        for p in waiting {
            self.learn(p, report)?;
        }
        let now = self.ctx.clock.now();
        let mut finished = Vec::new();
        for (part, mut f) in std::mem::take(&mut self.open) {
            let compression = match f.keys.dict.get().and_then(Option::as_ref) {
                Some(d) => {
                    f.writer.add_metadata(
                        "holdfast.dictionary",
                        base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            d.seal(&f.keys.cipher),
                        ),
                    );
                    "zstd+dictionary"
                }
                None => "zstd",
            };
            f.writer
                .add_metadata("holdfast.payload.compression", compression.to_string());
            let (file, mut upload, parts) = f.writer.close()?;
            let failed = |e| crate::lake::LakeError::store("writing", file.path.as_ref(), e);
            self.rt
                .block_on(futures::future::try_join_all(parts))
                .map_err(failed)?;
            self.ctx.fail("batch.before_file_complete");
            self.rt.block_on(upload.complete()).map_err(failed)?;
            report.files += 1;
            report.bytes_written += file.size_bytes;
            let ts = crate::clock::from_micros;
            finished.push((
                part.partition,
                DataFileEntry {
                    path: file.path.to_string(),
                    sha256: file.sha256,
                    size_bytes: file.size_bytes,
                    record_count: file.record_count,
                    min_occurred_at: ts(f.min_occ),
                    max_occurred_at: ts(f.max_occ),
                    earliest_expiry: ts(f.min_exp),
                    latest_expiry: ts(f.max_exp),
                    tenant_ids: f.tenants.into_iter().collect(),
                    policy_ids: f.policies.into_iter().collect(),
                    encryption: FileEncryption {
                        algorithm: crate::crypto::ALGORITHM.into(),
                        compression: compression.into(),
                        aad: "holdfast.record.v1".into(),
                        dek_id: f.keys.dek.id().to_string(),
                        wrapped_dek: f.wrapped,
                    },
                    batch_id: self.batch_id.to_string(),
                    added_at: now,
                },
            ));
        }
        report.partitions = finished
            .iter()
            .map(|(p, _)| p)
            .collect::<BTreeSet<_>>()
            .len() as u64;
        Ok(finished)
    }
}

#[allow(clippy::too_many_arguments)]
fn coordinate(
    rt: &tokio::runtime::Handle,
    ctx: &Context,
    opts: &BatchOptions,
    batch_id: &str,
    parts: Parts<'_>,
    keys: &KeyBook,
    rx: crossbeam_channel::Receiver<Result<Processed, JobError>>,
    report: &mut BatchReport,
) -> Result<Outcome, JobError> {
    let store = &ctx.store;
    let latest = parts.latest;
    let mut kept: BTreeSet<usize> = BTreeSet::new();
    let mut pending: BTreeMap<u64, Processed> = BTreeMap::new();
    let mut next = 0u64;
    let mut seen: HashMap<Partition, Seen> = HashMap::new();
    let mut sink = Sink {
        rt,
        ctx,
        batch_id,
        keys,
        memory_bytes: opts.memory_bytes,
        open: BTreeMap::new(),
        learning: HashMap::new(),
        learning_bytes: 0,
        z: RecordCompressor::default(),
        since_check: 0,
        rows_written: 0,
    };
    let mut qwriter: Option<quarantine::Writer> = None;
    let mut still_failing: HashSet<String> = HashSet::new();
    let mut expired_ids: Vec<String> = Vec::new();
    let mut replayed: Vec<(usize, String)> = Vec::new();
    // lines of earlier blocks, per segment index, to number lines within a segment
    let mut seg_lines: HashMap<usize, u64> = HashMap::new();

    for msg in rx {
        let p = msg?;
        pending.insert(p.seq, p);
        while let Some(p) = pending.remove(&next) {
            next += 1;
            let base = *seg_lines.get(&p.seg.index).unwrap_or(&0);
            seg_lines.insert(p.seg.index, base + p.lines);
            let replay_of = &p.seg.segment.header.replay_of;
            if !replay_of.is_empty() {
                replayed.extend(
                    replay_of
                        .iter()
                        .skip(base as usize)
                        .take(p.lines as usize)
                        .map(|id| (p.seg.index, id.clone())),
                );
            }
            report.lines += p.lines;
            report.blank_lines += p.blank;
            for item in p.items {
                match item {
                    Item::Row(file, _, _, _) if parts.damaged.contains(&file.partition) => {
                        // its latest manifest cannot be read: nothing is written there; the
                        // segment stays in landing until the partition is repaired
                        report.events_blocked += 1;
                        kept.insert(p.seg.index);
                    }
                    Item::Row(file, key, row, plain) => {
                        let part = &file.partition;
                        let s = match seen.get_mut(part) {
                            Some(s) => s,
                            None => {
                                let committed =
                                    rt.block_on(committed_ids(store, latest.get(part)))?;
                                seen.entry(part.clone()).or_insert(Seen {
                                    committed,
                                    batch: HashSet::new(),
                                })
                            }
                        };
                        if s.committed.contains(&key) {
                            report.already_stored += 1;
                        } else if !s.batch.insert(key) {
                            report.duplicates_in_batch += 1;
                        } else {
                            sink.accept(file, row, plain, report)?;
                        }
                    }
                    Item::Reject {
                        line,
                        reject,
                        original,
                        expired,
                    } => {
                        if let Some(id) = expired {
                            report.expired_on_arrival += 1;
                            expired_ids.push(id);
                        }
                        if qwriter.is_none() {
                            qwriter = Some(
                                rt.block_on(quarantine::Writer::new(ctx.kms.as_ref(), batch_id))?,
                            );
                        }
                        let h = &p.seg.segment.header;
                        let line_no = base + line + 1;
                        let entry_id = h.replay_of.get(line_no as usize - 1).map(String::as_str);
                        if let Some(id) = entry_id {
                            still_failing.insert(id.to_string());
                        }
                        let origin = Origin {
                            source: &h.source,
                            tenant: h.tenant.as_deref(),
                            entry_id,
                            arrived_at: h.arrived_at,
                            segment_id: &h.segment_id,
                            line_no,
                        };
                        let mut entry = qwriter.as_ref().expect("created").seal(
                            &origin,
                            &reject,
                            &original,
                            ctx.clock.now(),
                        );
                        match entry_id {
                            // a replayed line that fails again: the entry keeps its provenance and
                            // counts the attempt, with the new reason (its replay segment is still
                            // in landing until commit, so a crash here loses nothing)
                            Some(id) => rt.block_on(async {
                                if let Ok(old) = quarantine::get(store, id).await {
                                    entry.attempts = old.attempts + 1;
                                    entry.arrived_at = old.arrived_at;
                                    entry.segment_id = old.segment_id;
                                    entry.line_no = old.line_no;
                                    store.delete(&layout::quarantine_entry(id)).await?;
                                }
                                quarantine::put(store, &entry).await
                            })?,
                            None => rt.block_on(quarantine::put(store, &entry))?,
                        };
                        report.quarantined += 1;
                        *report.quarantined_by_code.entry(reject.code).or_default() += 1;
                        ctx.fail("batch.after_quarantine_write");
                    }
                }
            }
        }
    }
    if !pending.is_empty() {
        return Err(JobError::Worker(
            "a worker stopped before its work was done".into(),
        ));
    }
    let passed = replayed
        .into_iter()
        .filter(|(seg, id)| !still_failing.contains(id) && !kept.contains(seg))
        .map(|(_, id)| id)
        .collect();
    report.expired_ids = crate::audit::id_list(expired_ids);
    Ok(Outcome {
        files: sink.finish(report)?,
        passed,
        kept,
        failed: Vec::new(),
    })
}

async fn committed_ids(
    store: &Store,
    latest: Option<&Loaded>,
) -> Result<HashSet<[u8; 16]>, JobError> {
    let mut ids = HashSet::new();
    let Some(l) = latest else { return Ok(ids) };
    for f in &l.manifest.files {
        let path = object_store::path::Path::from(f.path.as_str());
        let columns = ["tenant_id", "event_id"];
        for b in datafile::read_columns(store, &path, f.size_bytes, &columns).await? {
            // projected columns come in file order: look them up by name
            let column = |name: &str| {
                b.column_by_name(name)
                    .map(|c| c.as_string::<i32>().clone())
                    .ok_or_else(|| crate::lake::LakeError::Corrupt {
                        object: path.to_string(),
                        problem: format!("no column {name}"),
                    })
            };
            let (tenants, events) = (column("tenant_id")?, column("event_id")?);
            for (t, e) in tenants.iter().zip(events.iter()) {
                if let (Some(t), Some(e)) = (t, e) {
                    ids.insert(id_key(t, e));
                }
            }
        }
    }
    Ok(ids)
}

async fn open_file(
    ctx: &Context,
    batch_id: &str,
    file: &FileKey,
    keys: &KeyBook,
) -> Result<OpenFile, JobError> {
    let pk = keys.part(file);
    let wrapped = ctx.kms.wrap(&pk.dek).await?;
    let path = layout::data_file(&file.partition, &format!("{batch_id}-{}", file.policy));
    let upload = ctx.store.start_upload(&path).await?;
    let kv = datafile::file_metadata(batch_id, &file.partition.dir(), pk.dek.id(), &wrapped);
    let writer = FileWriter::new(path, upload, pk.dek.id(), kv)?;
    Ok(OpenFile {
        writer,
        last_used: 0,
        keys: pk,
        wrapped,
        min_occ: i64::MAX,
        max_occ: i64::MIN,
        min_exp: i64::MAX,
        max_exp: i64::MIN,
        tenants: BTreeSet::new(),
        policies: BTreeSet::new(),
    })
}

/// Keeps open files under the memory budget by ending row groups early, least recently
/// used file first: input arrives roughly in time order, so an idle partition is likely done.
fn relieve_memory(
    rt: &tokio::runtime::Handle,
    open: &mut BTreeMap<FileKey, OpenFile>,
    budget: usize,
) -> Result<(), JobError> {
    let mut total: usize = open.values().map(|f| f.writer.memory()).sum();
    while total > budget {
        let Some((_, f)) = open
            .iter_mut()
            .filter(|(_, f)| f.writer.memory() > 0)
            .min_by_key(|(_, f)| f.last_used)
        else {
            break;
        };
        let before = f.writer.memory();
        f.writer.flush_row_group()?;
        let parts = f.writer.take_pending();
        rt.block_on(futures::future::try_join_all(parts))
            .map_err(|e| crate::lake::LakeError::store("writing", f.writer.path().as_ref(), e))?;
        let after = f.writer.memory();
        if after >= before {
            break;
        }
        total = total - before + after;
    }
    Ok(())
}
