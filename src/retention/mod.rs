//! Retention sweeps: a pure plan from the manifests (read with SQL over the `manifests`
//! table; no data file is opened), and a separate execute step. Time comes from the caller.
//!
//! Built so far: whole files whose every record has expired are removed, manifest first (a
//! new version lists them under `removed`), then the object through the storage layer, which
//! refuses anything still locked. Files mixing expired and unexpired records are kept whole
//! until their last record expires (reported as `mixed`); rewriting their survivors and legal
//! holds are the next steps.

pub mod hold;

use crate::audit::{Audit, AuditEvent};
use crate::lake::layout::Partition;
use crate::lake::manifest::{self, Commit};
use crate::lake::storage::Store;
use crate::lake::LakeError;
use arrow::array::AsArray;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("another writer changed {0} during the sweep; nothing of it was removed, run the sweep again")]
    Conflict(String),
}

/// One committed file, as the plan sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileInfo {
    pub partition: String,
    pub path: String,
    pub record_count: i64,
    pub earliest_expiry: DateTime<Utc>,
    pub latest_expiry: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize)]
pub struct SweepPlan {
    pub now: Option<DateTime<Utc>>,
    /// Every record expired: remove the file.
    pub delete: Vec<FileInfo>,
    /// Some records expired, some not: kept whole until the last expires.
    pub mixed: Vec<FileInfo>,
    /// Expired, but pinned by an active legal hold (from the hold registry).
    pub held: Vec<FileInfo>,
    pub unexpired_files: u64,
}

/// Decides what may be deleted. No I/O, no clock.
pub fn plan(now: DateTime<Utc>, files: Vec<FileInfo>, held: &std::collections::HashSet<String>) -> SweepPlan {
    let mut p = SweepPlan { now: Some(now), ..Default::default() };
    for f in files {
        if f.earliest_expiry <= now && held.contains(&f.path) {
            p.held.push(f);
        } else if f.latest_expiry <= now {
            p.delete.push(f);
        } else if f.earliest_expiry <= now {
            p.mixed.push(f);
        } else {
            p.unexpired_files += 1;
        }
    }
    p
}

/// The planner's input, from the `manifests` table (`sql/retention/sweep_candidates.sql`).
pub async fn candidates(store: &Store) -> Result<Vec<FileInfo>, SweepError> {
    let ctx = crate::query::session(store).await?;
    let sql = include_str!("../../sql/retention/sweep_candidates.sql");
    let mut out = Vec::new();
    for b in crate::query::run_sql(&ctx, sql).await? {
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let (part, path) = (s(0), s(1));
        let n = b.column(2).as_primitive::<arrow::datatypes::Int64Type>().clone();
        let ts = |i: usize| b.column(i).as_primitive::<arrow::datatypes::TimestampMicrosecondType>().clone();
        let (e, l) = (ts(3), ts(4));
        for r in 0..b.num_rows() {
            out.push(FileInfo {
                partition: part.value(r).to_string(),
                path: path.value(r).to_string(),
                record_count: n.value(r),
                earliest_expiry: crate::clock::from_micros(e.value(r)),
                latest_expiry: crate::clock::from_micros(l.value(r)),
            });
        }
    }
    Ok(out)
}

#[derive(Debug, Default, Serialize)]
pub struct SweepReport {
    pub sweep_id: String,
    pub files_removed: u64,
    pub records_removed: u64,
    /// Refused by the storage layer (ObjectLocked): kept and committed again.
    pub refused: Vec<String>,
    pub mixed_kept: u64,
}

impl std::fmt::Display for SweepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sweep {}: removed {} file(s), {} record(s); {} refused by the storage lock; {} mixed file(s) kept", self.sweep_id, self.files_removed, self.records_removed, self.refused.len(), self.mixed_kept)
    }
}

#[derive(Serialize)]
struct Deleted<'a> {
    sweep_id: &'a str,
    path: &'a str,
    records: i64,
    latest_expiry: DateTime<Utc>,
}
impl AuditEvent for Deleted<'_> {
    const ACTION: &'static str = "retention.delete";
}

#[derive(Serialize)]
struct DeleteRefused<'a> {
    sweep_id: &'a str,
    path: &'a str,
    reason: &'a str,
}
impl AuditEvent for DeleteRefused<'_> {
    const ACTION: &'static str = "retention.refused";
}

/// Carries out a plan at `now`: per partition, checks each file's lock, commits a manifest
/// version without the deletable ones, then deletes them (a crash in between leaves orphans
/// that the next batch removes; the manifest never lists a missing file).
pub async fn execute(store: &Store, audit: &Audit, actor: &str, plan: &SweepPlan, now: DateTime<Utc>, sweep_id: &str) -> Result<SweepReport, SweepError> {
    let mut report = SweepReport { sweep_id: sweep_id.to_string(), mixed_kept: plan.mixed.len() as u64, ..Default::default() };
    let mut by_partition: std::collections::BTreeMap<&str, Vec<&FileInfo>> = Default::default();
    for f in &plan.delete {
        by_partition.entry(&f.partition).or_default().push(f);
    }
    for (part, files) in by_partition {
        let p = Partition::parse_dir(part).ok_or_else(|| LakeError::Corrupt { object: part.to_string(), problem: "not a partition".into() })?;
        let Some(base) = manifest::load_latest(store, &p).await? else { continue };
        let mut removing = Vec::new();
        for f in files {
            let path = object_store::path::Path::from(f.path.as_str());
            let lock = store.lock(&path).await?;
            let refusal = if lock.legal_hold {
                Some("under legal hold".to_string())
            } else {
                lock.retain_until.filter(|u| *u > now).map(|u| format!("retained until {u}"))
            };
            match refusal {
                Some(reason) => {
                    audit.record(actor, None, &DeleteRefused { sweep_id, path: &f.path, reason: &reason }).await?;
                    report.refused.push(f.path.clone());
                }
                None if base.manifest.files.iter().any(|m| m.path == f.path) => removing.push(f),
                None => {}
            }
        }
        if removing.is_empty() {
            continue;
        }
        let paths: Vec<String> = removing.iter().map(|f| f.path.clone()).collect();
        match manifest::commit_removal(store, &p, &base, &paths, sweep_id, now).await? {
            Commit::Committed(_) => {}
            Commit::LostRace { .. } => return Err(SweepError::Conflict(part.to_string())),
        }
        for f in removing {
            let path = object_store::path::Path::from(f.path.as_str());
            store.delete_checked(&path, now).await?;
            audit.record(actor, None, &Deleted { sweep_id, path: &f.path, records: f.record_count, latest_expiry: f.latest_expiry }).await?;
            report.files_removed += 1;
            report.records_removed += f.record_count as u64;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file() -> impl Strategy<Value = FileInfo> {
        (0i64..4_000, 0i64..4_000, 1i64..100_000).prop_map(|(a, b, n)| {
            let (lo, hi) = (a.min(b), a.max(b));
            let t = |d: i64| DateTime::<Utc>::from_timestamp(1_900_000_000 + d * 86_400, 0).unwrap();
            FileInfo { partition: format!("p{lo}"), path: format!("f{lo}-{hi}-{n}"), record_count: n, earliest_expiry: t(lo), latest_expiry: t(hi) }
        })
    }

    proptest! {
        /// Nothing with an unexpired record is ever planned for deletion, every fully expired
        /// file is, and every file lands in exactly one bucket.
        #[test]
        fn the_plan_never_deletes_anything_unexpired_or_held(files in proptest::collection::vec(file(), 0..200), day in 0i64..4_000, held_every in 1usize..6) {
            let now = DateTime::<Utc>::from_timestamp(1_900_000_000 + day * 86_400, 0).unwrap();
            let n = files.len() as u64;
            let held: std::collections::HashSet<String> = files.iter().step_by(held_every).map(|f| f.path.clone()).collect();
            let expired = files.iter().filter(|f| f.latest_expiry <= now && !held.contains(&f.path)).count();
            let p = plan(now, files, &held);
            prop_assert!(p.delete.iter().all(|f| f.latest_expiry <= now && !held.contains(&f.path)));
            prop_assert!(p.held.iter().all(|f| held.contains(&f.path)));
            prop_assert!(p.mixed.iter().all(|f| f.earliest_expiry <= now && f.latest_expiry > now));
            prop_assert_eq!(p.delete.len(), expired);
            prop_assert_eq!(p.delete.len() as u64 + p.mixed.len() as u64 + p.held.len() as u64 + p.unexpired_files, n);
        }
    }
}
