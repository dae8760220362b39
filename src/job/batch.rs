//! One micro-batch: landing segments -> validated, deduplicated, encrypted Parquet files, one
//! per partition, committed by per-partition manifests.
//!
//! Threads: a reader fetches segments; `threads` workers open blocks (decrypt, decompress),
//! decode, validate, hash, compress and seal records; the coordinator (this thread) puts
//! results back in landing order, dedupes, quarantines and streams rows into the data files.

use super::lease::Lease;
use super::{Context, JobError};
use crate::clock::{fmt_ts, micros};
use crate::config::Policies;
use crate::crypto::{
    Cipher, DataKey, Dictionary, RecordCompressor, record_aad, seal_record, sha256,
};
use crate::lake::datafile::{self, FileWriter, Row};
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{self, Commit, DataFileEntry, FileEncryption, Loaded};
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
    pub max_input_bytes: u64,
    pub memory_bytes: usize,
    pub threads: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            policies: Policies::default(),
            max_input_bytes: 4096 << 20,
            memory_bytes: 64 << 20,
            threads: super::default_threads(),
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
    /// Valid events whose retention had ended before they arrived: not stored (audited).
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
                "  expired      {} event(s) arrived after their retention ended: not stored (audited)",
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
    },
    /// A valid event whose retention had already ended when it arrived: not stored.
    Expired(String),
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

fn id_key(event_id: &str) -> [u8; 16] {
    sha256(event_id.as_bytes())[..16]
        .try_into()
        .expect("16 bytes")
}

pub async fn batch(ctx: &Context, opts: &BatchOptions) -> Result<BatchReport, JobError> {
    let started = ctx.clock.now();
    let batch_id = layout::batch_id(started, rand::rng().next_u32());
    let (lease, took_over) =
        Lease::acquire(&ctx.store, &format!("batch {batch_id}"), &fmt_ts(started)).await?;
    let result = run(ctx, opts, &batch_id, took_over).await;
    // On error the lease is released too: nothing uncommitted is visible, and a rerun recovers.
    lease.release(&ctx.store).await?;
    result
}

async fn run(
    ctx: &Context,
    opts: &BatchOptions,
    batch_id: &str,
    took_over: bool,
) -> Result<BatchReport, JobError> {
    let store = &ctx.store;
    let mut report = BatchReport {
        batch_id: batch_id.to_string(),
        lease_taken_over: took_over,
        ..Default::default()
    };

    // Recovery: what interrupted batches and sweeps left (their intent records name them)
    report.staging_removed = store.remove_abandoned_staging(layout::LAKE) as u64;
    let latest: BTreeMap<Partition, Loaded> = manifest::load_latest_all(store)
        .await?
        .into_iter()
        .map(|l| (l.manifest.partition.clone(), l))
        .collect();
    let audit = crate::audit::Audit::new(store.clone(), ctx.clock.clone());
    let committer = crate::head::Committer {
        store,
        kms: ctx.kms.as_ref(),
        audit: &audit,
    };
    let recovery = crate::head::intent::recover(committer, &latest, ctx.clock.now()).await?;
    report.leftovers_removed = recovery.leftovers_removed;
    report.leftovers_locked = recovery.leftovers_locked;
    // never build on a store that no longer matches its signed head (rolled back, truncated)
    crate::head::check_current(store, &audit, &latest).await?;
    if took_over {
        report.locks_repaired = repair_locks(store, latest.values()).await?;
    }

    // Pick segments in arrival order, up to the input budget (always at least one).
    let mut picked = Vec::new();
    let mut budget = 0u64;
    for meta in store.list(layout::LANDING).await? {
        if layout::parse_landing_segment(&meta.location).is_none() {
            continue;
        }
        if !picked.is_empty() && budget + meta.size > opts.max_input_bytes {
            report.segments_waiting += 1;
            continue;
        }
        budget += meta.size;
        picked.push(meta.location);
    }
    report.segments = picked.len() as u64;
    if picked.is_empty() {
        return Ok(report);
    }
    // before the first upload: the files this batch writes are named by its id
    crate::head::intent::begin(store, batch_id, "batch", ctx.clock.now()).await?;

    let handle = tokio::runtime::Handle::current();
    let (files, passed, rep) = {
        let ctx = ctx.clone();
        let opts = opts.clone();
        let batch_id = batch_id.to_string();
        let picked = picked.clone();
        let latest = latest.clone();
        tokio::task::spawn_blocking(move || {
            process(&handle, &ctx, &opts, &batch_id, &picked, &latest, report)
        })
        .await
        .map_err(|e| JobError::Worker(e.to_string()))??
    };
    report = rep;
    ctx.fail("batch.after_files_written");

    // Commit: one create-only manifest version per partition (with one file per policy).
    let now = ctx.clock.now();
    let new_files: Vec<DataFileEntry> = files.iter().map(|(_, e)| e.clone()).collect();
    let mut by_partition: BTreeMap<Partition, Vec<DataFileEntry>> = BTreeMap::new();
    for (p, entry) in files {
        by_partition.entry(p).or_default().push(entry);
    }
    let mut change = crate::head::Change::new(format!("batch {batch_id}"));
    for (i, (p, entries)) in by_partition.into_iter().enumerate() {
        let locks: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    object_store::path::Path::from(e.path.as_str()),
                    e.latest_expiry,
                )
            })
            .collect();
        match manifest::commit(store, &p, latest.get(&p), entries, batch_id, now).await? {
            Commit::Committed(l) => change.manifest(&l),
            Commit::LostRace { .. } => return Err(JobError::Conflict { partition: p.dir() }),
        }
        ctx.fail(&format!("batch.after_manifest:{}", i + 1));
        // committed: the storage layer now refuses to delete them before their last record expires
        for (path, until) in locks {
            store.ensure_retained(&path, until).await?;
        }
    }
    // records that arrive for an active legal hold are held from the start
    report.held_new_files = crate::retention::hold::apply_to_new(store, &new_files, now).await?;
    // replayed lines that are stored now (or were already) leave quarantine
    for id in &passed {
        store.delete(&layout::quarantine_entry(id)).await?;
    }
    report.replayed_out = passed.len() as u64;
    // the landing DEKs this batch unwrapped, on the trail (before the segments go)
    let segments: Vec<String> = picked
        .iter()
        .filter_map(layout::parse_landing_segment)
        .collect();
    let event = crate::audit::BatchCommitted {
        batch_id,
        deks_unwrapped: segments.len() as u64,
        segments,
        stored: report.stored,
        quarantined: report.quarantined,
        files: report.files,
        committed_files: new_files.iter().map(|f| f.path.clone()).collect(),
        partitions: change
            .partitions
            .iter()
            .map(|(p, pos)| (p.dir(), pos.sequence))
            .collect(),
        recovered: false,
    };
    audit.record("holdfast-batch", None, &event).await?;
    if report.expired_on_arrival > 0 {
        let e = crate::audit::ExpiredOnArrival {
            batch_id,
            events: report.expired_on_arrival,
            event_ids: &report.expired_ids,
        };
        audit.record("holdfast-batch", None, &e).await?;
    }
    // the signed head records every manifest, the hold registry and the audit trail as of now
    crate::head::commit(committer, &change, ctx.clock.now()).await?;
    crate::head::intent::end(store, batch_id).await?;
    ctx.fail("batch.before_landing_delete");
    for (i, path) in picked.iter().enumerate() {
        store.delete(path).await?;
        ctx.fail(&format!("batch.after_landing_delete:{}", i + 1));
    }
    Ok(report)
}

/// After taking over a dead holder's lease: it may have committed manifests before locking
/// their files. Sets every committed file's retain-until to at least its latest expiry;
/// returns how many needed it.
pub(crate) async fn repair_locks<'a>(
    store: &Store,
    latest: impl Iterator<Item = &'a Loaded>,
) -> Result<u64, JobError> {
    let mut repaired = 0;
    for l in latest {
        for f in &l.manifest.files {
            let path = object_store::path::Path::from(f.path.as_str());
            if store
                .lock(&path)
                .await?
                .retain_until
                .is_none_or(|u| u < f.latest_expiry)
            {
                store.ensure_retained(&path, f.latest_expiry).await?;
                repaired += 1;
            }
        }
    }
    Ok(repaired)
}

type Finished = Vec<(Partition, DataFileEntry)>;
/// What processing hands to the commit: the files, the quarantine entries replayed out, the report.
type Processed3 = (Finished, Vec<String>, BatchReport);

fn process(
    rt: &tokio::runtime::Handle,
    ctx: &Context,
    opts: &BatchOptions,
    batch_id: &str,
    picked: &[object_store::path::Path],
    latest: &BTreeMap<Partition, Loaded>,
    mut report: BatchReport,
) -> Result<Processed3, JobError> {
    let threads = opts.threads.max(1);
    let keys = KeyBook::default();
    let started = ctx.clock.now();
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<Chunk>(threads * 2);
    let (out_tx, out_rx) = crossbeam_channel::bounded::<Result<Processed, JobError>>(threads * 2);
    std::thread::scope(|s| {
        // reader
        let reader_out = out_tx.clone();
        s.spawn(move || {
            let mut seq = 0u64;
            for (index, path) in picked.iter().enumerate() {
                let seg = rt.block_on(async {
                    let bytes = ctx.store.get(path).await?;
                    let segment = Segment::parse(path.as_ref(), bytes)?;
                    let cipher = segment.unwrap_key(ctx.kms.as_ref()).await?;
                    let source =
                        SourceKind::from_name(&segment.header.source).ok_or_else(|| {
                            crate::landing::LandingError::Corrupt {
                                object: path.to_string(),
                                problem: format!("unknown source {}", segment.header.source),
                            }
                        })?;
                    let ingested_at = micros(segment.header.arrived_at);
                    Ok::<_, JobError>(SegCtx {
                        segment,
                        cipher,
                        source,
                        ingested_at,
                        index,
                    })
                });
                match seg {
                    Ok(seg) => {
                        let seg = Arc::new(seg);
                        for block in 0..seg.segment.block_count() {
                            if chunk_tx
                                .send(Chunk {
                                    seq,
                                    seg: seg.clone(),
                                    block,
                                })
                                .is_err()
                            {
                                return;
                            }
                            seq += 1;
                        }
                    }
                    Err(e) => {
                        let _ = reader_out.send(Err(e));
                        return;
                    }
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
        let r = coordinate(rt, ctx, opts, batch_id, latest, &keys, out_rx, &mut report);
        r.map(|(files, passed)| (files, passed, report))
    })
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
                    Err(reject) => out.items.push(Item::Reject {
                        line: local,
                        reject,
                        original: line.to_vec(),
                    }),
                }
            }
        }
        zeroize::Zeroize::zeroize(&mut data);
        Ok(out)
    }

    fn decode_line(&mut self, seg: &SegCtx, line: &[u8]) -> Result<Vec<Item>, Reject> {
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
            if expires <= self.now {
                items.push(Item::Expired(f.event_id));
                continue;
            }
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
            let key = id_key(&f.event_id);
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

/// Where deduplicated rows go: the open data files, and the rows of partitions whose
/// dictionary is still being learnt.
struct Sink<'a> {
    rt: &'a tokio::runtime::Handle,
    ctx: &'a Context,
    batch_id: &'a str,
    keys: &'a KeyBook,
    memory_bytes: usize,
    open: BTreeMap<FileKey, OpenFile>,
    learning: HashMap<FileKey, Vec<Held>>,
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
        let rows = self.learning.entry(part.clone()).or_default();
        rows.push((row, plain));
        if rows.len() >= TRAIN_ROWS {
            self.learn(part, report)?;
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
        let rows = self.learning.remove(&part).unwrap_or_default();
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
            relieve_memory(self.rt, &mut self.open, self.memory_bytes)?;
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
            let (file, upload, parts) = f.writer.close()?;
            let complete = async {
                futures::future::try_join_all(parts).await?;
                let mut upload = upload;
                upload.complete().await
            };
            self.rt
                .block_on(complete)
                .map_err(|e| crate::lake::LakeError::store("writing", file.path.as_ref(), e))?;
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
    latest: &BTreeMap<Partition, Loaded>,
    keys: &KeyBook,
    rx: crossbeam_channel::Receiver<Result<Processed, JobError>>,
    report: &mut BatchReport,
) -> Result<(Finished, Vec<String>), JobError> {
    let store = &ctx.store;
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
        z: RecordCompressor::default(),
        since_check: 0,
        rows_written: 0,
    };
    let mut qwriter: Option<quarantine::Writer> = None;
    let mut still_failing: HashSet<String> = HashSet::new();
    let mut expired_ids: Vec<String> = Vec::new();
    let mut replayed: Vec<String> = Vec::new();
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
                        .cloned(),
                );
            }
            report.lines += p.lines;
            report.blank_lines += p.blank;
            for item in p.items {
                match item {
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
                    Item::Expired(id) => {
                        report.expired_on_arrival += 1;
                        expired_ids.push(id);
                    }
                    Item::Reject {
                        line,
                        reject,
                        original,
                    } => {
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
        .filter(|id| !still_failing.contains(id))
        .collect();
    report.expired_ids = crate::audit::id_list(expired_ids);
    Ok((sink.finish(report)?, passed))
}

async fn committed_ids(
    store: &Store,
    latest: Option<&Loaded>,
) -> Result<HashSet<[u8; 16]>, JobError> {
    let mut ids = HashSet::new();
    let Some(l) = latest else { return Ok(ids) };
    for f in &l.manifest.files {
        let path = object_store::path::Path::from(f.path.as_str());
        for b in datafile::read_columns(store, &path, f.size_bytes, &["event_id"]).await? {
            for id in b.column(0).as_string::<i32>().iter().flatten() {
                ids.insert(id_key(id));
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
