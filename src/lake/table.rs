//! The committed set as an open table: a Delta Lake log (`_delta_log/` at the store's root,
//! which is the table's root) beside the manifests, so that Snowflake, BigQuery, Athena, Trino, Spark, DuckDB, polars and delta-rs
//! read exactly the files `holdfast query` reads, and never a file a sweep rewrote (kept on
//! disk while its lock runs) or a killed batch left behind.
//!
//! The log is derived, never the source of truth: version 0 describes the first signed head
//! (the protocol, the table's schema and partition columns, and that head's files); each
//! later head that changed the committed files is the next version, its `add` and `remove`
//! actions the difference between the two heads' manifests. Every byte comes from the heads
//! and the manifests (times included), so [`rebuild`] writes the same log again and
//! [`check`] regenerates it to compare. Versions are written create-only after each head is
//! signed ([`publish`], from [`crate::head::commit`]); a commit killed between its head and
//! its log version leaves the log behind, and the next commit publishes what is missing, in
//! order. Every [`checkpoint::EVERY`] versions a Parquet checkpoint holds the whole state, so
//! readers need not read every version since 0; `_last_checkpoint` (the one object readers
//! expect to be overwritten) is left out, so they find the newest checkpoint by listing.
//!
//! Files enter with their partition values (from the hive path) and statistics from the
//! manifest entry (`numRecords`, min/max of `occurred_at`, `expires_at` and `tenant_id`), so
//! engines prune without opening a file.

use super::LakeError;
use super::datafile::SCHEMA;
use super::layout::{self, Partition, TableLogPath};
use super::manifest::{self, DataFileEntry};
use crate::head::{Head, LoadedHead};
use crate::storage::{Put, Store};
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The hive keys, as the table's partition columns.
pub const PARTITION_COLUMNS: [&str; 4] = ["year", "month", "day", "interaction_type"];

/// A version of the log as the heads and manifests derive it.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub version: u64,
    /// The head it describes.
    pub head: u64,
    pub bytes: Vec<u8>,
    /// The table's state at this version, every [`checkpoint::EVERY`] versions.
    pub checkpoint: Option<Vec<u8>>,
}

fn spark_type(t: &DataType) -> Value {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 => json!("string"),
        DataType::Timestamp(_, Some(_)) => json!("timestamp"),
        DataType::Timestamp(_, None) => json!("timestamp_ntz"),
        DataType::Int32 => json!("integer"),
        DataType::Int64 => json!("long"),
        DataType::Boolean => json!("boolean"),
        DataType::List(f) => json!({
            "type": "array",
            "elementType": spark_type(f.data_type()),
            "containsNull": f.is_nullable(),
        }),
        _ => json!("binary"),
    }
}

/// The table's schema, as Delta records it: the data files' columns, then the hive keys.
pub fn schema_string() -> String {
    let field = |name: &str, t: Value, nullable: bool| json!({"name": name, "type": t, "nullable": nullable, "metadata": {}});
    let mut fields: Vec<Value> = SCHEMA
        .fields()
        .iter()
        .map(|f| field(f.name(), spark_type(f.data_type()), f.is_nullable()))
        .collect();
    for k in PARTITION_COLUMNS {
        let t = if k == "interaction_type" {
            "string"
        } else {
            "integer"
        };
        fields.push(field(k, json!(t), false));
    }
    json!({"type": "struct", "fields": fields}).to_string()
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A timestamp statistic in milliseconds (Delta's precision): a minimum rounded down, a
/// maximum rounded up, so that pruning on them never skips a matching row.
fn stat_time(t: DateTime<Utc>, up: bool) -> String {
    let us = crate::clock::micros(t);
    let ms = if up {
        us.div_euclid(1000) + i64::from(us.rem_euclid(1000) != 0)
    } else {
        us.div_euclid(1000)
    };
    crate::clock::from_micros(ms * 1000)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn partition_values(p: &Partition) -> Value {
    json!({
        "year": p.year.to_string(),
        "month": p.month.to_string(),
        "day": p.day.to_string(),
        "interaction_type": p.interaction_type,
    })
}

fn add(p: &Partition, f: &DataFileEntry) -> Value {
    let (first, last) = (f.tenant_ids.first(), f.tenant_ids.last());
    let stats = json!({
        "numRecords": f.record_count,
        "minValues": {
            "occurred_at": stat_time(f.min_occurred_at, false),
            "expires_at": stat_time(f.earliest_expiry, false),
            "tenant_id": first,
        },
        "maxValues": {
            "occurred_at": stat_time(f.max_occurred_at, true),
            "expires_at": stat_time(f.latest_expiry, true),
            "tenant_id": last,
        },
        "nullCount": {"occurred_at": 0, "expires_at": 0, "tenant_id": 0},
    });
    json!({"add": {
        "path": f.path,
        "partitionValues": partition_values(p),
        "size": f.size_bytes,
        "modificationTime": millis(f.added_at),
        "dataChange": true,
        "stats": stats.to_string(),
    }})
}

fn remove(p: &Partition, f: &DataFileEntry, at: DateTime<Utc>) -> Value {
    json!({"remove": {
        "path": f.path,
        "deletionTimestamp": millis(at),
        "dataChange": true,
        "extendedFileMetadata": true,
        "partitionValues": partition_values(p),
        "size": f.size_bytes,
    }})
}

/// A UUID-shaped id derived from the first head's hash (the same on every rebuild).
fn table_id(first: &LoadedHead) -> String {
    let h = &first.sha256;
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The table's `metaData` action (its object), from the first head.
fn metadata(first: &LoadedHead) -> Value {
    json!({
        "id": table_id(first),
        "name": "holdfast_events",
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema_string(),
        "partitionColumns": PARTITION_COLUMNS,
        "configuration": {},
        "createdTime": millis(first.head.committed_at),
    })
}

/// The checkpoint of the table at `head`: every file its manifests list.
async fn checkpoint_of(
    store: &Store,
    m: &Manifests,
    head: &Head,
    first: &LoadedHead,
) -> Result<Vec<u8>, LakeError> {
    use futures::{StreamExt, TryStreamExt};
    let files: Vec<(Partition, Vec<DataFileEntry>)> = futures::stream::iter(head.partitions.iter())
        .map(|(p, pos)| async move {
            Ok::<_, LakeError>((p.clone(), m.files(store, p, Some(pos)).await?))
        })
        .buffered(32)
        .try_collect()
        .await?;
    let mut adds: Vec<(String, Value)> = files
        .iter()
        .flat_map(|(p, fs)| {
            fs.iter()
                .map(move |f| (f.path.clone(), add(p, f)["add"].clone()))
        })
        .collect();
    adds.sort_by(|a, b| a.0.cmp(&b.0));
    let refs: Vec<&Value> = adds.iter().map(|(_, a)| a).collect();
    Ok(checkpoint::encode(&metadata(first), &refs))
}

/// What one head changed: files added and removed, by partition.
type Diff = (
    Vec<(Partition, DataFileEntry)>,
    Vec<(Partition, DataFileEntry)>,
);

/// Reads manifest versions, from the catalogs of the heads at hand when they hold them (one
/// object for every partition of a head) and from the manifests otherwise; a manifest taken
/// from a catalog must hash to the position the head records.
#[derive(Default)]
struct Manifests {
    catalogs: Vec<super::catalog::Catalog>,
}

impl Manifests {
    /// Keeps the catalogs of these heads (the others are dropped).
    async fn hold(&mut self, store: &Store, heads: &[u64]) {
        self.catalogs.retain(|c| heads.contains(&c.head));
        for &h in heads {
            if !self.catalogs.iter().any(|c| c.head == h)
                && let Ok(Some(c)) = super::catalog::load(store, h).await
            {
                self.catalogs.push(c);
            }
        }
    }

    /// The files of position `pos` of partition `p` (none for no position).
    async fn files(
        &self,
        store: &Store,
        p: &Partition,
        pos: Option<&crate::head::Position>,
    ) -> Result<Vec<DataFileEntry>, LakeError> {
        let Some(pos) = pos else {
            return Ok(Vec::new());
        };
        for c in &self.catalogs {
            if let Some(e) = c
                .entries
                .iter()
                .find(|e| &e.partition == p && e.position == *pos)
                && let Ok(l) = manifest::decode_stored(&c.bytes(e), p, pos.sequence)
                && l.sha256 == pos.sha256
            {
                return Ok(l.manifest.files);
            }
        }
        Ok(manifest::load(store, p, pos.sequence).await?.manifest.files)
    }
}

/// The files of each partition whose position differs between two heads.
async fn diff(
    store: &Store,
    m: &Manifests,
    before: Option<&Head>,
    after: &Head,
) -> Result<Diff, LakeError> {
    let empty = BTreeMap::new();
    let old = before.map_or(&empty, |h| &h.partitions);
    let changed: BTreeSet<&Partition> = after
        .partitions
        .iter()
        .filter(|(p, pos)| old.get(*p) != Some(*pos))
        .map(|(p, _)| p)
        .chain(old.keys().filter(|p| !after.partitions.contains_key(*p)))
        .collect();
    let (mut adds, mut removes) = (Vec::new(), Vec::new());
    for p in changed {
        let (was, now) = futures::try_join!(
            m.files(store, p, old.get(p)),
            m.files(store, p, after.partitions.get(p))
        )?;
        let was_paths: BTreeSet<&str> = was.iter().map(|f| f.path.as_str()).collect();
        let now_paths: BTreeSet<&str> = now.iter().map(|f| f.path.as_str()).collect();
        for f in &now {
            if !was_paths.contains(f.path.as_str()) {
                adds.push((p.clone(), f.clone()));
            }
        }
        for f in &was {
            if !now_paths.contains(f.path.as_str()) {
                removes.push((p.clone(), f.clone()));
            }
        }
    }
    Ok((adds, removes))
}

/// The bytes of one log version: its commit info, (version 0) the protocol and metadata,
/// then removes and adds, each sorted by path.
fn encode(version: u64, head: &LoadedHead, first: &LoadedHead, diff: &Diff) -> Vec<u8> {
    let at = head.head.committed_at;
    let (adds, removes) = diff;
    let operation = match (adds.is_empty(), removes.is_empty()) {
        (_, true) => "WRITE",
        (true, false) => "DELETE",
        (false, false) => "MERGE",
    };
    let mut lines = vec![json!({"commitInfo": {
        "timestamp": millis(at),
        "operation": operation,
        "operationParameters": {},
        "isBlindAppend": removes.is_empty(),
        "engineInfo": format!("holdfast/{}", env!("CARGO_PKG_VERSION")),
        "holdfast": {"head": head.head.sequence, "head_sha256": head.sha256, "change": head.head.change},
    }})];
    if version == 0 {
        lines.push(json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}));
        lines.push(json!({ "metaData": metadata(first) }));
    }
    let mut removes: Vec<&(Partition, DataFileEntry)> = removes.iter().collect();
    removes.sort_by(|a, b| a.1.path.cmp(&b.1.path));
    lines.extend(removes.iter().map(|(p, f)| remove(p, f, at)));
    let mut adds: Vec<&(Partition, DataFileEntry)> = adds.iter().collect();
    adds.sort_by(|a, b| a.1.path.cmp(&b.1.path));
    lines.extend(adds.iter().map(|(p, f)| add(p, f)));
    let mut out = Vec::new();
    for l in lines {
        out.extend(l.to_string().into_bytes());
        out.push(b'\n');
    }
    out
}

/// The stored log versions, in order.
pub async fn stored_versions(store: &Store) -> Result<Vec<u64>, LakeError> {
    store
        .versions(layout::TABLE_LOG, |p| {
            TableLogPath::parse(p).map(|p| p.version)
        })
        .await
}

/// The head a stored version describes (from its commit info).
async fn head_of(store: &Store, version: u64) -> Result<Option<u64>, LakeError> {
    let bytes = store.get(&TableLogPath::new(version).to_path()).await?;
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let v: Value = serde_json::from_slice(first).unwrap_or(Value::Null);
    Ok(v["commitInfo"]["holdfast"]["head"].as_u64())
}

/// Derives the versions for the heads after `after_head` (all of them for `None`), numbered
/// from `next_version`; a head that changed no file makes no version (except the first).
async fn derive(
    store: &Store,
    after_head: Option<u64>,
    next_version: u64,
) -> Result<Vec<Derived>, LakeError> {
    let sequences = crate::head::sequences(store).await?;
    let Some(&first_seq) = sequences.first() else {
        return Ok(Vec::new());
    };
    let first = crate::head::load(store, first_seq).await?;
    let mut previous: Option<LoadedHead> = match after_head {
        Some(h) => Some(crate::head::load(store, h).await?),
        None => None,
    };
    let mut out = Vec::new();
    let mut version = next_version;
    let mut m = Manifests::default();
    for &seq in sequences
        .iter()
        .filter(|s| after_head.is_none_or(|h| **s > h))
    {
        let head = crate::head::load(store, seq).await?;
        let held: Vec<u64> = previous
            .iter()
            .map(|p| p.head.sequence)
            .chain([seq])
            .collect();
        m.hold(store, &held).await;
        let d = diff(store, &m, previous.as_ref().map(|p| &p.head), &head.head).await?;
        if version == 0 || !d.0.is_empty() || !d.1.is_empty() {
            let checkpoint = match version > 0 && version.is_multiple_of(checkpoint::EVERY) {
                true => Some(checkpoint_of(store, &m, &head.head, &first).await?),
                false => None,
            };
            out.push(Derived {
                version,
                head: seq,
                bytes: encode(version, &head, &first, &d),
                checkpoint,
            });
            version += 1;
        }
        previous = Some(head);
    }
    Ok(out)
}

/// What [`publish`] wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    pub versions: Vec<u64>,
}

/// Writes the log versions for the heads not yet published, in order, create-only. A version
/// another writer stored first is taken as theirs (the same heads derive the same bytes).
pub async fn publish(store: &Store) -> Result<Published, LakeError> {
    let stored = stored_versions(store).await?;
    let (after, next) = match stored.last() {
        Some(&v) => (head_of(store, v).await?, v + 1),
        None => (None, 0),
    };
    if stored.last().is_some() && after.is_none() {
        return Err(LakeError::Corrupt {
            object: TableLogPath::new(next - 1).to_path().to_string(),
            problem:
                "the newest table log version names no holdfast head: run `holdfast table rebuild`"
                    .into(),
        });
    }
    let mut published = Published::default();
    for d in derive(store, after, next).await? {
        let at = TableLogPath::new(d.version);
        if store.put_new(&at.to_path(), d.bytes).await? == Put::Created {
            published.versions.push(d.version);
        }
        if let Some(c) = d.checkpoint {
            store.put_new(&at.checkpoint(), c).await?;
        }
    }
    Ok(published)
}

/// Every log version the heads and manifests derive.
pub async fn expected(store: &Store) -> Result<Vec<Derived>, LakeError> {
    derive(store, None, 0).await
}

/// Removes the stored log and writes it again from the heads and manifests; the number of
/// versions written.
pub async fn rebuild(store: &Store) -> Result<usize, LakeError> {
    let all = expected(store).await?;
    for meta in store.list(layout::TABLE_LOG).await? {
        store.delete(&meta.location).await?;
    }
    for d in &all {
        let at = TableLogPath::new(d.version);
        store.put_new(&at.to_path(), d.bytes.clone()).await?;
        if let Some(c) = &d.checkpoint {
            store.put_new(&at.checkpoint(), c.clone()).await?;
        }
    }
    Ok(all.len())
}

/// How the stored log compares with the derived one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Versions whose bytes differ, or that no head derives.
    pub differ: Vec<(u64, String)>,
    /// Derived versions not stored yet (the log is behind the newest head).
    pub missing: Vec<u64>,
}

/// Stored checkpoints against the derived ones (a missing one is not a difference: readers
/// then read the JSON versions).
async fn check_checkpoints(
    store: &Store,
    by_version: &BTreeMap<u64, &Derived>,
    c: &mut Comparison,
) -> Result<(), LakeError> {
    for meta in store.list(layout::TABLE_LOG).await? {
        let Some(at) = TableLogPath::parse_checkpoint(&meta.location) else {
            continue;
        };
        let want = by_version
            .get(&at.version)
            .and_then(|d| d.checkpoint.as_ref());
        let bytes = store.get(&meta.location).await?;
        if want.map(Vec::as_slice) != Some(bytes.as_ref()) {
            c.differ.push((
                at.version,
                format!("{} differs from the state its head derives", meta.location),
            ));
        }
    }
    Ok(())
}

/// Compares the stored log with what the heads and manifests derive.
pub async fn check(store: &Store) -> Result<Comparison, LakeError> {
    let want = expected(store).await?;
    let stored = stored_versions(store).await?;
    let mut c = Comparison::default();
    let by_version: BTreeMap<u64, &Derived> = want.iter().map(|d| (d.version, d)).collect();
    for &v in &stored {
        let path = TableLogPath::new(v).to_path();
        match by_version.get(&v) {
            None => c
                .differ
                .push((v, "no signed head derives this version".into())),
            Some(d) => {
                let bytes = store.get(&path).await?;
                if bytes.as_ref() != d.bytes.as_slice() {
                    c.differ.push((
                        v,
                        format!("differs from what head {} and its manifests derive", d.head),
                    ));
                }
            }
        }
    }
    check_checkpoints(store, &by_version, &mut c).await?;
    let have: BTreeSet<u64> = stored.into_iter().collect();
    c.missing = want
        .iter()
        .map(|d| d.version)
        .filter(|v| !have.contains(v))
        .collect();
    Ok(c)
}

pub mod checkpoint;
pub mod ddl;
#[cfg(test)]
mod tests;
