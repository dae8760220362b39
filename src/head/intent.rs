//! Intent records: `batches/<job-id>.json`, written create-only by a batch or a sweep before
//! its first data file is uploaded and removed once its head is committed. A record left
//! behind names an interrupted job; only the data files such a job wrote (their names carry
//! its id) and that no manifest lists are its leftovers. [`recover`], at the start of the
//! next batch (under the batch lease), records in the head the manifest versions the
//! interrupted job committed, gives a committed batch its missing audit entry, removes its
//! leftovers (each removal audited) and drops the record. A file with a lock record is never
//! removed here (only the audited sweep deletes locked files); anything else no manifest
//! lists is left in place for `verify` to report.

use super::{Change, Committer, HeadError, LoadedHead};
use crate::audit::{AuditEvent, BatchCommitted};
use crate::lake::LakeError;
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{self, Loaded};
use crate::storage::{Lock, Store};
use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};

const FORMAT: &str = "holdfast.intent";

const VERSIONS: &[&str] = &["1"];

/// On-disk intent record, version 1 (frozen: a change is a new version). Golden file:
/// `fixtures/formats/intent-v1.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version")]
enum IntentFile {
    #[serde(rename = "1")]
    V1(IntentV1),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentV1 {
    format: String,
    job_id: String,
    kind: String,
    started_at: DateTime<Utc>,
}

/// An intent record as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub job_id: String,
    /// `batch` or `sweep`.
    pub kind: String,
    pub started_at: DateTime<Utc>,
}

fn encode(i: &Intent) -> Vec<u8> {
    crate::format::encode(&IntentFile::V1(IntentV1 {
        format: FORMAT.into(),
        job_id: i.job_id.clone(),
        kind: i.kind.clone(),
        started_at: i.started_at,
    }))
}

fn decode(bytes: &[u8]) -> Result<Intent, crate::format::FormatError> {
    let IntentFile::V1(v) = crate::format::decode(bytes, FORMAT, VERSIONS)?;
    Ok(Intent {
        job_id: v.job_id,
        kind: v.kind,
        started_at: v.started_at,
    })
}

/// Records that `job_id` is about to write data files (create-only; before the first upload).
pub async fn begin(
    store: &Store,
    job_id: &str,
    kind: &str,
    now: DateTime<Utc>,
) -> Result<(), LakeError> {
    let bytes = encode(&Intent {
        job_id: job_id.into(),
        kind: kind.into(),
        started_at: now,
    });
    store.put_new(&layout::intent(job_id), bytes).await?;
    Ok(())
}

/// The job finished: its head is committed, nothing of it is a leftover.
pub async fn end(store: &Store, job_id: &str) -> Result<(), LakeError> {
    store.delete(&layout::intent(job_id)).await
}

/// Intent records of jobs that have not ended (running, or interrupted).
pub async fn pending(store: &Store) -> Result<Vec<Intent>, LakeError> {
    let mut out = Vec::new();
    for meta in store.list(layout::INTENTS).await? {
        if layout::parse_intent(&meta.location).is_none() {
            continue;
        }
        let bytes = store.get(&meta.location).await?;
        let i = decode(&bytes).map_err(|e| LakeError::Corrupt {
            object: meta.location.to_string(),
            problem: format!("not an intent record: {e}"),
        })?;
        if layout::intent(&i.job_id) != meta.location {
            return Err(LakeError::Corrupt {
                object: meta.location.to_string(),
                problem: "job id differs from its path".into(),
            });
        }
        out.push(i);
    }
    Ok(out)
}

/// An interrupted job's uncommitted data file, removed by the next batch.
#[derive(Debug, Serialize)]
pub struct LeftoverRemoved<'a> {
    pub job_id: &'a str,
    pub path: &'a str,
    pub size_bytes: u64,
}
impl AuditEvent for LeftoverRemoved<'_> {
    const ACTION: &'static str = "batch.leftover_removed";
}

/// Manifest versions an interrupted job committed, recorded in the head by the next batch.
#[derive(Debug, Serialize)]
pub struct HeadRecovered<'a> {
    pub jobs: Vec<&'a str>,
    pub partitions: BTreeMap<String, u64>,
}
impl AuditEvent for HeadRecovered<'_> {
    const ACTION: &'static str = "head.recovered";
}

#[derive(Debug, Default, Serialize)]
pub struct Recovery {
    /// Interrupted jobs found (their records are gone afterwards).
    pub jobs: Vec<String>,
    pub leftovers_removed: u64,
    /// Leftovers kept because they have a lock record (only a sweep deletes those).
    pub leftovers_locked: u64,
    /// Partitions whose manifest an interrupted job committed after the last head.
    pub partitions_recorded: u64,
}

/// Finishes what interrupted jobs left (see the module doc). Call under the batch lease,
/// with the latest manifest of every partition, before this batch records its own intent.
/// `damaged`: partitions whose latest manifest cannot be read; nothing in them is removed
/// (which of their files are committed is unknown).
pub async fn recover(
    c: Committer<'_>,
    latest: &BTreeMap<Partition, Loaded>,
    damaged: &BTreeSet<Partition>,
    now: DateTime<Utc>,
) -> Result<Recovery, HeadError> {
    let jobs = pending(c.store).await?;
    let mut r = Recovery::default();
    if jobs.is_empty() {
        return Ok(r);
    }
    let newest = super::newest(c.store).await?;
    let ids = ids(&jobs);
    let mut change = Change::new(format!(
        "recovery of {}",
        ids.iter().copied().collect::<Vec<_>>().join(", ")
    ));
    let adopted = adopt(c.store, newest.as_ref(), latest, &ids).await?;
    if !adopted.is_empty() {
        let partitions = adopted
            .iter()
            .map(|l| (l.manifest.partition.dir(), l.manifest.sequence))
            .collect();
        let jobs: Vec<&str> = ids.iter().copied().collect();
        c.audit
            .record("holdfast-batch", None, &HeadRecovered { jobs, partitions })
            .await?;
    }
    for l in &adopted {
        change.manifest(l);
    }
    r.partitions_recorded = adopted.len() as u64;
    for job in jobs.iter().filter(|j| j.kind == "batch") {
        audit_committed_batch(c, latest, &job.job_id).await?;
    }
    remove_leftovers(c, latest, damaged, &jobs, now, &mut r).await?;
    super::commit(c, &change, now).await?;
    for job in &jobs {
        end(c.store, &job.job_id).await?;
        r.jobs.push(job.job_id.clone());
    }
    Ok(r)
}

/// The latest versions of partitions the head is behind on, when every version after the
/// head's was committed by one of the interrupted `jobs` and they chain to the version the
/// head records. Anything else stays unrecorded (the batch then refuses to run).
async fn adopt(
    store: &Store,
    newest: Option<&LoadedHead>,
    latest: &BTreeMap<Partition, Loaded>,
    jobs: &BTreeSet<&str>,
) -> Result<Vec<Loaded>, LakeError> {
    let mut out = Vec::new();
    for (p, l) in latest {
        let recorded = newest.and_then(|n| n.head.partitions.get(p));
        let from = recorded.map_or(0, |pos| pos.sequence);
        if l.manifest.sequence <= from {
            continue;
        }
        // walk back from the latest version to the one the head records
        let mut cur = l.clone();
        let ok = loop {
            if !jobs.contains(cur.manifest.batch_id.as_str()) {
                break false;
            }
            match (&cur.manifest.previous, recorded) {
                (None, None) => break true,
                (Some(prev), Some(pos)) if prev.sequence == pos.sequence => {
                    break prev.sha256 == pos.sha256;
                }
                (Some(prev), _) if prev.sequence > from => {
                    let before = manifest::load(store, p, prev.sequence).await?;
                    if before.sha256 != prev.sha256 {
                        break false;
                    }
                    cur = before;
                }
                _ => break false,
            }
        };
        if ok {
            out.push(l.clone());
        }
    }
    Ok(out)
}

/// A batch killed after committing manifests but before its audit entry: records the entry.
async fn audit_committed_batch(
    c: Committer<'_>,
    latest: &BTreeMap<Partition, Loaded>,
    job_id: &str,
) -> Result<(), HeadError> {
    let mut files = Vec::new();
    let mut partitions = BTreeMap::new();
    for l in latest.values() {
        for f in l.manifest.files.iter().filter(|f| f.batch_id == job_id) {
            files.push(f.path.clone());
            partitions.insert(l.manifest.partition.dir(), l.manifest.sequence);
        }
    }
    if files.is_empty() {
        return Ok(());
    }
    let audited = c.audit.entries().await?.iter().any(|(e, _)| {
        e.action == BatchCommitted::ACTION && e.details["batch_id"].as_str() == Some(job_id)
    });
    if audited {
        return Ok(());
    }
    let event = BatchCommitted {
        batch_id: job_id,
        segments: Vec::new(),
        deks_unwrapped: 0,
        stored: 0,
        quarantined: 0,
        files: files.len() as u64,
        committed_files: files,
        partitions,
        recovered: true,
        kms: None,
    };
    c.audit.record("holdfast-batch", None, &event).await?;
    Ok(())
}

async fn remove_leftovers(
    c: Committer<'_>,
    latest: &BTreeMap<Partition, Loaded>,
    damaged: &BTreeSet<Partition>,
    jobs: &[Intent],
    now: DateTime<Utc>,
    r: &mut Recovery,
) -> Result<(), HeadError> {
    let listed = listed_files(latest);
    for meta in c.store.list(layout::LAKE).await? {
        let path = &meta.location;
        if listed.contains(path.as_ref())
            || layout::parse_data_file(path).is_some_and(|(p, _)| damaged.contains(&p))
        {
            continue;
        }
        let Some(job) = jobs.iter().find(|j| layout::written_by(path, &j.job_id)) else {
            continue;
        };
        if c.store.lock(path).await? != Lock::default() {
            r.leftovers_locked += 1;
            continue;
        }
        c.store.delete_checked(path, now).await?;
        c.audit
            .record(
                "holdfast-batch",
                None,
                &LeftoverRemoved {
                    job_id: &job.job_id,
                    path: path.as_ref(),
                    size_bytes: meta.size,
                },
            )
            .await?;
        r.leftovers_removed += 1;
    }
    Ok(())
}

/// Every data file the latest manifests list, and the rewritten ones a sweep deletes once
/// their lock allows.
pub fn listed_files(latest: &BTreeMap<Partition, Loaded>) -> HashSet<String> {
    latest
        .values()
        .flat_map(|l| {
            l.manifest.files.iter().map(|f| f.path.clone()).chain(
                l.manifest
                    .removed
                    .iter()
                    .filter(|r| r.awaiting_deletion())
                    .map(|r| r.path.clone()),
            )
        })
        .collect()
}

/// Which interrupted job (if any) wrote `path`.
pub fn writer<'a>(path: &Path, jobs: &'a [Intent]) -> Option<&'a Intent> {
    jobs.iter().find(|j| layout::written_by(path, &j.job_id))
}

/// The ids of the jobs in `jobs`.
pub fn ids(jobs: &[Intent]) -> BTreeSet<&str> {
    jobs.iter().map(|j| j.job_id.as_str()).collect()
}

#[cfg(test)]
mod format_tests {
    use super::*;
    use crate::format::{FormatError, altered, golden, ts};

    fn sample() -> Intent {
        Intent {
            job_id: "20260102T030405Z-0a1b2c3d".into(),
            kind: "sweep".into(),
            started_at: ts("2026-01-02T03:04:05Z"),
        }
    }

    #[test]
    fn version_1_is_frozen_and_reads_back() {
        let bytes = encode(&sample());
        golden("intent-v1.json", &bytes);
        assert_eq!(decode(&bytes).unwrap(), sample());
        let e = decode(&altered(&bytes, "version", "2")).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
        let e = decode(&altered(&bytes, "format", "holdfast.head")).unwrap_err();
        assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
    }
}
