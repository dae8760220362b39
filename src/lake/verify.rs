//! The lake part of `holdfast verify`: recomputes every committed data file's SHA-256, size
//! and record count against its manifest, checks the manifest's metadata (tenants, time
//! ranges, expiries, policies) against the file's own index columns, and walks every manifest
//! chain, with no key. `deep` also opens every record with the keyring, checks its AAD and
//! `record_hash`, and recomputes every index column from the decrypted record. The store-level
//! checks (signed head, audit trail, holds, locks, uncommitted files) are in
//! [`crate::head::check`].

use super::LakeError;
use super::datafile;
use super::layout::{self, Partition};
use super::manifest::{self, DataFileEntry, Loaded};
use crate::crypto::kms::Kms;
use crate::storage::Store;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

/// The newest store head, as `verify` found it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeadSummary {
    pub sequence: u64,
    pub sha256: String,
    pub key_fingerprint: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub partitions: usize,
    pub manifest_versions: usize,
    pub files: usize,
    pub records: u64,
    pub bytes: u64,
    pub deep_records: u64,
    /// The newest signed store head (none: the store has no head yet).
    pub head: Option<HeadSummary>,
    pub head_versions: usize,
    pub audit_entries: u64,
    /// A published anchor the store was checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    pub problems: Vec<Problem>,
    /// Data files no manifest lists and no interrupted job wrote: each is also a problem.
    pub orphans: Vec<String>,
    /// Uncommitted files of an interrupted batch or sweep (its intent record names it); the
    /// next batch removes them, audited. Reported, not a failure.
    pub leftovers: Vec<String>,
    /// Files a retention rewrite took out of their partition, still stored until their
    /// storage lock runs out (the manifest history lists them). Reported, not a failure.
    pub awaiting_deletion: Vec<String>,
    /// Files retention sweeps removed, as the latest manifests' histories record them (the
    /// `removals` table in `holdfast query` has the details).
    pub removed_files: u64,
    pub removed_records: u64,
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn problem(&mut self, object: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(Problem {
            object: object.into(),
            problem: problem.into(),
        });
    }
}

/// What the lake holds, for the store-level checks.
#[derive(Debug, Default)]
pub struct LakeState {
    /// Every manifest version present, per partition.
    pub versions: BTreeMap<Partition, Vec<u64>>,
    /// The newest readable version of each partition whose newest version is readable.
    pub latest: BTreeMap<Partition, Loaded>,
}

pub async fn verify(
    store: &Store,
    deep: Option<&dyn Kms>,
    r: &mut VerifyReport,
) -> Result<LakeState, LakeError> {
    let mut state = LakeState {
        versions: manifest::list_versions(store).await?,
        ..Default::default()
    };
    let mut deep = deep.map(|kms| Deep {
        kms,
        index_keys: Default::default(),
    });
    for (p, seqs) in &state.versions {
        r.partitions += 1;
        let Some(latest) = walk_chain(store, p, seqs, r).await else {
            continue;
        };
        for gone in &latest.manifest.removed {
            r.removed_files += 1;
            r.removed_records += gone.record_count - gone.records_kept.unwrap_or(0);
            if gone.awaiting_deletion() {
                r.awaiting_deletion.push(gone.path.clone());
            }
        }
        for f in &latest.manifest.files {
            check_file(store, &latest, f, deep.as_mut(), r).await;
        }
        state.latest.insert(p.clone(), latest);
    }
    Ok(state)
}

/// Walks a partition's versions; returns the newest when it loads.
async fn walk_chain(
    store: &Store,
    p: &Partition,
    seqs: &[u64],
    r: &mut VerifyReport,
) -> Option<Loaded> {
    let mut prev: Option<Loaded> = None;
    for (i, seq) in seqs.iter().enumerate() {
        r.manifest_versions += 1;
        let path = layout::manifest(p, *seq);
        if *seq != i as u64 + 1 {
            r.problem(
                path.to_string(),
                format!("version {} is missing from the chain", i + 1),
            );
        }
        let loaded = match manifest::load(store, p, *seq).await {
            Ok(l) => l,
            Err(e) => {
                r.problem(path.to_string(), e.to_string());
                prev = None;
                continue;
            }
        };
        match (&prev, &loaded.manifest.previous) {
            (None, None) if *seq == 1 => {}
            (Some(pv), Some(link))
                if link.sequence == pv.manifest.sequence && link.sha256 == pv.sha256 => {}
            (Some(pv), Some(link)) if link.sequence == pv.manifest.sequence => r.problem(
                path.to_string(),
                format!(
                    "names predecessor hash {} but v{} hashes to {}",
                    link.sha256, pv.manifest.sequence, pv.sha256
                ),
            ),
            _ => r.problem(
                path.to_string(),
                "link to the previous version is broken".to_string(),
            ),
        }
        prev = Some(loaded);
    }
    prev
}

async fn check_file(
    store: &Store,
    m: &Loaded,
    f: &DataFileEntry,
    deep: Option<&mut Deep<'_>>,
    r: &mut VerifyReport,
) {
    r.files += 1;
    let path = match f.location() {
        Ok(path) => path,
        Err(e) => return r.problem(&f.path, e.to_string()),
    };
    match layout::parse_data_file(&path) {
        Some((p, _)) if p == m.manifest.partition => {}
        _ => r.problem(
            &f.path,
            format!("path does not belong to partition {}", m.manifest.partition),
        ),
    }
    match store.shadowed(&path).await {
        Ok(Some(p)) => r.problem(&f.path, p),
        Ok(None) => {}
        Err(e) => r.problem(&f.path, e.to_string()),
    }
    let bytes = match store.get_opt(&path).await {
        Ok(Some(b)) => b,
        Ok(None) => return r.problem(&f.path, "listed in the manifest but missing"),
        Err(e) => return r.problem(&f.path, e.to_string()),
    };
    r.bytes += bytes.len() as u64;
    if bytes.len() as u64 != f.size_bytes {
        r.problem(
            &f.path,
            format!(
                "size is {} bytes, manifest says {}",
                bytes.len(),
                f.size_bytes
            ),
        );
    }
    let sha = manifest::sha256_hex(&bytes);
    if sha != f.sha256 {
        r.problem(
            &f.path,
            format!("SHA-256 is {sha}, manifest says {}", f.sha256),
        );
        return;
    }
    let md = match parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&bytes) {
        Ok(md) => md,
        Err(e) => return r.problem(&f.path, format!("unreadable Parquet footer: {e}")),
    };
    if let Err(e) = datafile::footer::check(md.file_metadata(), &f.path) {
        return r.problem(&f.path, e.to_string());
    }
    let rows = md.file_metadata().num_rows() as u64;
    r.records += rows;
    let kv_dek = md
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == datafile::footer::DEK_ID))
        .and_then(|k| k.value.clone());
    if kv_dek.as_deref() != Some(f.encryption.dek_id.as_str()) {
        r.problem(
            &f.path,
            "DEK id in the file footer differs from the manifest",
        );
    }
    match read_summary(bytes.clone()) {
        Ok(s) => {
            for p in metadata_problems(f, &s) {
                r.problem(&f.path, p);
            }
        }
        Err(e) => r.problem(&f.path, format!("index columns unreadable: {e}")),
    }
    if let Some(deep) = deep
        && let Err(p) = deep.check(&m.manifest.partition, f, bytes, r).await
    {
        r.problem(&f.path, p);
    }
}

/// What a file's own index columns say about it, to hold against its manifest entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ColumnSummary {
    pub records: u64,
    pub tenant_ids: BTreeSet<String>,
    pub policy_ids: BTreeSet<String>,
    pub min_occurred_at: Option<DateTime<Utc>>,
    pub max_occurred_at: Option<DateTime<Utc>>,
    pub earliest_expiry: Option<DateTime<Utc>>,
    pub latest_expiry: Option<DateTime<Utc>>,
}

impl ColumnSummary {
    /// Adds one batch with (at least) `tenant_id`, `policy_id`, `occurred_at`, `expires_at`.
    pub fn add(&mut self, b: &RecordBatch) {
        let col = |n: &str| b.column_by_name(n).expect("projected column");
        let (t, p) = (
            col("tenant_id").as_string::<i32>(),
            col("policy_id").as_string::<i32>(),
        );
        let occ = col("occurred_at").as_primitive::<TimestampMicrosecondType>();
        let exp = col("expires_at").as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            self.records += 1;
            if !self.tenant_ids.contains(t.value(i)) {
                self.tenant_ids.insert(t.value(i).to_string());
            }
            if !self.policy_ids.contains(p.value(i)) {
                self.policy_ids.insert(p.value(i).to_string());
            }
            let (o, e) = (
                crate::clock::from_micros(occ.value(i)),
                crate::clock::from_micros(exp.value(i)),
            );
            let widen = |lo: &mut Option<DateTime<Utc>>, hi: &mut Option<DateTime<Utc>>, v| {
                *lo = Some(lo.map_or(v, |x: DateTime<Utc>| x.min(v)));
                *hi = Some(hi.map_or(v, |x: DateTime<Utc>| x.max(v)));
            };
            widen(&mut self.min_occurred_at, &mut self.max_occurred_at, o);
            widen(&mut self.earliest_expiry, &mut self.latest_expiry, e);
        }
    }
}

fn read_summary(bytes: bytes::Bytes) -> Result<ColumnSummary, parquet::errors::ParquetError> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let mask = ProjectionMask::columns(
        builder.parquet_schema(),
        ["tenant_id", "policy_id", "occurred_at", "expires_at"],
    );
    let mut s = ColumnSummary::default();
    for b in builder.with_projection(mask).build()? {
        s.add(&b?);
    }
    Ok(s)
}

/// Where a manifest entry's metadata disagrees with the file's columns (sweeps and holds
/// decide from the manifest alone, so a rewritten `tenant_ids` would hide records from a
/// tenant's hold).
pub fn metadata_problems(f: &DataFileEntry, s: &ColumnSummary) -> Vec<String> {
    let mut out = Vec::new();
    if s.records != f.record_count {
        out.push(format!(
            "holds {} records, manifest says {}",
            s.records, f.record_count
        ));
    }
    let listed: BTreeSet<String> = f.tenant_ids.iter().cloned().collect();
    if listed != s.tenant_ids {
        out.push(format!(
            "manifest tenant_ids {:?} differ from the file's tenants {:?}",
            listed, s.tenant_ids
        ));
    }
    let policies: BTreeSet<String> = f.policy_ids.iter().cloned().collect();
    if policies != s.policy_ids {
        out.push(format!(
            "manifest policy_ids {:?} differ from the file's {:?}",
            policies, s.policy_ids
        ));
    }
    let ts = |t: Option<DateTime<Utc>>| t.map(crate::clock::fmt_ts).unwrap_or_default();
    for (name, listed, found) in [
        ("min_occurred_at", f.min_occurred_at, s.min_occurred_at),
        ("max_occurred_at", f.max_occurred_at, s.max_occurred_at),
        ("earliest_expiry", f.earliest_expiry, s.earliest_expiry),
        ("latest_expiry", f.latest_expiry, s.latest_expiry),
    ] {
        if s.records > 0 && Some(listed) != found {
            out.push(format!(
                "manifest {name} {} differs from the file's {}",
                crate::clock::fmt_ts(listed),
                ts(found)
            ));
        }
    }
    out
}

/// Deep verification: the keyring, and the tenants' blind-index keys met so far.
struct Deep<'a> {
    kms: &'a dyn Kms,
    index_keys: crate::crypto::IndexKeyCache,
}

/// Index columns of one row as stored, or as recomputed from its record.
#[derive(Debug, PartialEq)]
struct IndexRow {
    event_id: String,
    interaction_id: String,
    tenant_id: String,
    source_platform: String,
    state: String,
    direction: Option<String>,
    occurred_at: i64,
    interaction_type: String,
    queue_id: Option<String>,
    agent_ids: Vec<String>,
    address_hmacs: Vec<Vec<u8>>,
    wrap_up_code: Option<String>,
    disposition: Option<String>,
    schema_version: String,
}

impl IndexRow {
    /// Names of the columns where `self` and `other` differ.
    fn differences(&self, other: &IndexRow) -> Vec<&'static str> {
        let mut d = Vec::new();
        let mut cmp = |name, same: bool| {
            if !same {
                d.push(name)
            }
        };
        cmp("event_id", self.event_id == other.event_id);
        cmp(
            "interaction_id",
            self.interaction_id == other.interaction_id,
        );
        cmp("tenant_id", self.tenant_id == other.tenant_id);
        cmp(
            "source_platform",
            self.source_platform == other.source_platform,
        );
        cmp("state", self.state == other.state);
        cmp("direction", self.direction == other.direction);
        cmp("occurred_at", self.occurred_at == other.occurred_at);
        cmp(
            "interaction_type",
            self.interaction_type == other.interaction_type,
        );
        cmp("queue_id", self.queue_id == other.queue_id);
        cmp("agent_ids", self.agent_ids == other.agent_ids);
        cmp("address_hmacs", self.address_hmacs == other.address_hmacs);
        cmp("wrap_up_code", self.wrap_up_code == other.wrap_up_code);
        cmp("disposition", self.disposition == other.disposition);
        cmp(
            "schema_version",
            self.schema_version == other.schema_version,
        );
        d
    }
}

fn stored_row(b: &RecordBatch, i: usize, interaction_type: &str) -> IndexRow {
    let col = |n: &str| b.column_by_name(n).expect("data file column");
    let s = |n: &str| col(n).as_string::<i32>().value(i).to_string();
    let o = |n: &str| {
        let c = col(n).as_string::<i32>();
        (!c.is_null(i)).then(|| c.value(i).to_string())
    };
    let agents = col("agent_ids").as_list::<i32>().value(i);
    let hmacs = col("address_hmacs").as_list::<i32>().value(i);
    let hmacs = hmacs.as_fixed_size_binary();
    IndexRow {
        event_id: s("event_id"),
        interaction_id: s("interaction_id"),
        tenant_id: s("tenant_id"),
        source_platform: s("source_platform"),
        state: s("state"),
        direction: o("direction"),
        occurred_at: col("occurred_at")
            .as_primitive::<TimestampMicrosecondType>()
            .value(i),
        interaction_type: interaction_type.to_string(),
        queue_id: o("queue_id"),
        agent_ids: agents
            .as_string::<i32>()
            .iter()
            .flatten()
            .map(str::to_string)
            .collect(),
        address_hmacs: (0..hmacs.len()).map(|k| hmacs.value(k).to_vec()).collect(),
        wrap_up_code: o("wrap_up_code"),
        disposition: o("disposition"),
        schema_version: s("schema_version"),
    }
}

impl Deep<'_> {
    /// Opens every record of a file; counts records that fail authentication, `record_hash`,
    /// or whose index columns differ from what the record says.
    async fn check(
        &mut self,
        p: &Partition,
        f: &DataFileEntry,
        bytes: bytes::Bytes,
        r: &mut VerifyReport,
    ) -> Result<(), String> {
        let dek = self
            .kms
            .unwrap_key(&f.encryption.dek_id, &f.encryption.wrapped_dek)
            .await
            .map_err(|e| e.to_string())?;
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| e.to_string())?;
        let md = builder.metadata().file_metadata();
        let mut records =
            datafile::Records::from_footer(md, dek.cipher(), &f.path).map_err(|e| e.to_string())?;
        let reader = builder.build().map_err(|e| e.to_string())?;
        let (mut bad, mut first_bad, mut first_error) = (0u64, None, None);
        let (mut differ, mut first_differ) = (0u64, None);
        for batch in reader {
            let batch = batch.map_err(|e| e.to_string())?;
            let hashes = batch.column_by_name("record_hash").expect("column");
            let hashes = hashes.as_fixed_size_binary();
            let payload = batch.column_by_name("payload").expect("column");
            let payload = payload.as_binary::<i32>();
            // a group is read from its carrier wherever it is (as a query does): what counts
            // is that every row opens its own record
            (0..batch.num_rows()).for_each(|i| records.carry(payload.value(i)));
            for i in 0..batch.num_rows() {
                r.deep_records += 1;
                let stored = stored_row(&batch, i, &p.interaction_type);
                let ids = datafile::RowIds {
                    tenant_id: &stored.tenant_id,
                    event_id: &stored.event_id,
                    interaction_id: &stored.interaction_id,
                };
                let plain = match records.open(ids, payload.value(i)) {
                    Ok(plain) => plain,
                    Err(e) => {
                        bad += 1;
                        first_bad.get_or_insert_with(|| stored.event_id.clone());
                        first_error.get_or_insert_with(|| e.to_string());
                        continue;
                    }
                };
                let same_hash = crate::crypto::sha256(&plain).as_slice() == hashes.value(i);
                let recomputed = self.recompute(&plain).await;
                drop(plain);
                if !same_hash {
                    bad += 1;
                    first_bad.get_or_insert_with(|| stored.event_id.clone());
                    continue;
                }
                let cols = match recomputed {
                    Some(row) => stored.differences(&row),
                    None => vec!["(record no longer validates)"],
                };
                if !cols.is_empty() {
                    differ += 1;
                    first_differ.get_or_insert_with(|| (stored.event_id.clone(), cols.join(", ")));
                }
            }
        }
        let mut problems = Vec::new();
        if bad > 0 {
            let why = first_error.map(|e| format!(": {e}")).unwrap_or_default();
            problems.push(format!(
                "{bad} record(s) fail authentication or record_hash (first: event {}{why})",
                first_bad.unwrap_or_default()
            ));
        }
        if let Some((event, cols)) = first_differ {
            problems.push(format!(
                "{differ} record(s) whose index columns differ from the decrypted record (first: event {event}, columns {cols})"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The index columns a record gives (as the batch computes them); `None` if it no longer
    /// validates. Values never leave this function except as the comparison.
    async fn recompute(&mut self, plain: &[u8]) -> Option<IndexRow> {
        let value: serde_json::Value = serde_json::from_slice(plain).ok()?;
        let f = crate::schema::validator().check(&value).ok()?.fields;
        let key = self.index_keys.key(self.kms, &f.tenant_id).await.ok()?;
        let mut hmacs: Vec<Vec<u8>> = f
            .addresses
            .iter()
            .map(|a| crate::crypto::blind_index(&key, a).to_vec())
            .collect();
        hmacs.sort_unstable();
        hmacs.dedup();
        Some(IndexRow {
            event_id: f.event_id,
            interaction_id: f.interaction_id,
            tenant_id: f.tenant_id,
            source_platform: f.source_platform,
            state: f.state,
            direction: f.direction,
            occurred_at: crate::clock::micros(f.occurred_at),
            interaction_type: f.interaction_type,
            queue_id: f.queue_id,
            agent_ids: f.agent_ids,
            address_hmacs: hmacs,
            wrap_up_code: f.wrap_up_code,
            disposition: f.disposition,
            schema_version: f.schema_version,
        })
    }
}

#[cfg(test)]
mod tests;
