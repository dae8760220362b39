//! The sweep's plan: what may be deleted or rewritten, decided from the manifests and the hold
//! registry alone (pure: no I/O, no clock), and the inputs read for it.

use super::SweepError;
use crate::lake::LakeError;
use crate::lake::layout::Partition;
use crate::lake::manifest::Loaded;
use crate::storage::Store;
use arrow::array::AsArray;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};

/// A partition in the plan's output: its directory (`year=2025/month=01/...`).
fn as_dir<S: Serializer>(p: &Partition, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.dir())
}

/// An object path in the plan's output: from the store root.
fn as_str<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_ref())
}

/// One committed file, as the plan sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileInfo {
    #[serde(serialize_with = "as_dir")]
    pub partition: Partition,
    #[serde(serialize_with = "as_str")]
    pub path: Path,
    pub record_count: i64,
    pub earliest_expiry: DateTime<Utc>,
    pub latest_expiry: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RewriteReason {
    /// An active legal hold lists the file: its covered records survive.
    Held,
    /// Its unexpired records survive, and its last one expires long after now.
    Mixed,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RewriteInfo {
    #[serde(flatten)]
    pub file: FileInfo,
    pub reason: RewriteReason,
}

/// A file an earlier rewrite took out of its partition, still stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AwaitingInfo {
    #[serde(serialize_with = "as_dir")]
    pub partition: Partition,
    #[serde(serialize_with = "as_str")]
    pub path: Path,
    #[serde(serialize_with = "as_str")]
    pub replaced_by: Path,
    pub record_count: u64,
    /// When its storage lock runs out (its last record's expiry).
    pub latest_expiry: DateTime<Utc>,
    /// The lock has run out: delete it now.
    pub due: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct SweepPlan {
    pub now: Option<DateTime<Utc>>,
    /// Every record expired, no hold: remove the file.
    pub delete: Vec<FileInfo>,
    /// Expired records to drop, survivors to move to a new file.
    pub rewrite: Vec<RewriteInfo>,
    /// Some records expired, the last expires within `rewrite_min_days`: kept whole until then.
    pub mixed: Vec<FileInfo>,
    /// Some records expired, but a hold covers every record: kept whole.
    pub held: Vec<FileInfo>,
    /// Rewritten earlier and still stored: deleted once due (re-checks the new file's lock).
    pub awaiting_deletion: Vec<AwaitingInfo>,
    pub unexpired_files: u64,
}

/// Decides what may be deleted or rewritten. No I/O, no clock. `held`: the files active holds
/// list, each with the most records one hold is known to cover in it (0: not known).
pub fn plan(
    now: DateTime<Utc>,
    files: Vec<FileInfo>,
    awaiting: Vec<AwaitingInfo>,
    held: &HashMap<String, u64>,
    rewrite_min_days: u32,
) -> SweepPlan {
    let mut p = SweepPlan {
        now: Some(now),
        ..Default::default()
    };
    // a rewrite killed before the registry listed its new file: the new file is as held as
    // the old one (the execute step moves the listing)
    let mut held = held.clone();
    let replacements: Vec<String> = awaiting
        .iter()
        .filter(|a| held.contains_key(a.path.as_ref()))
        .map(|a| a.replaced_by.to_string())
        .collect();
    for r in replacements {
        held.entry(r).or_insert(0);
    }
    let held = &held;
    let min_gain = chrono::Duration::days(rewrite_min_days.into());
    for f in files {
        let covered = held.get(f.path.as_ref()).copied();
        let is_held = covered.is_some();
        if f.earliest_expiry > now {
            p.unexpired_files += 1;
        } else if covered.is_some_and(|n| n >= f.record_count as u64) {
            p.held.push(f);
        } else if f.latest_expiry <= now && !is_held {
            p.delete.push(f);
        } else if f.latest_expiry <= now || f.latest_expiry - now >= min_gain {
            let reason = if is_held {
                RewriteReason::Held
            } else {
                RewriteReason::Mixed
            };
            p.rewrite.push(RewriteInfo { file: f, reason });
        } else {
            p.mixed.push(f);
        }
    }
    p.awaiting_deletion = awaiting
        .into_iter()
        .map(|a| AwaitingInfo {
            due: a.latest_expiry <= now,
            ..a
        })
        .collect();
    p
}

/// What a sweep plans from and then works on: the latest manifest of every partition, read
/// once (execution keeps it current as it commits), and what the planner takes from them.
#[derive(Debug, Default)]
pub struct SweepInputs {
    pub files: Vec<FileInfo>,
    pub awaiting: Vec<AwaitingInfo>,
    pub latest: Latest,
}

/// The latest manifest of every partition.
pub(super) type Latest = BTreeMap<Partition, Loaded>;

fn partition_of(dir: &str) -> Result<Partition, LakeError> {
    Partition::parse_dir(dir).ok_or_else(|| LakeError::Corrupt {
        object: dir.to_string(),
        problem: "not a partition".into(),
    })
}

/// The planner's input, from one read of the latest manifests: the committed files (through
/// the `manifests` table and `sql/retention/sweep_candidates.sql`) and the rewritten files
/// still stored (their `removed` history).
pub async fn inputs(store: &Store) -> Result<SweepInputs, SweepError> {
    // the latest manifests from the signed catalog (on S3 a few requests, not one per
    // partition); a damaged one stops the sweep, as reading it would
    let (loaded, damaged) = crate::lake::catalog::load_latest_each(store).await?;
    if let Some(d) = damaged.first() {
        return Err(crate::lake::LakeError::Corrupt {
            object: crate::lake::layout::manifest(&d.partition, d.sequence).to_string(),
            problem: d.problem.clone(),
        }
        .into());
    }
    let mut awaiting = Vec::new();
    for l in &loaded {
        for r in l.manifest.removed.iter().filter(|r| r.awaiting_deletion()) {
            awaiting.push(AwaitingInfo {
                partition: l.manifest.partition.clone(),
                path: r.location()?,
                replaced_by: match &r.replaced_by {
                    Some(p) => crate::lake::layout::locate(p)?,
                    None => Path::default(),
                },
                record_count: r.record_count,
                latest_expiry: r.latest_expiry,
                due: false,
            });
        }
    }
    let latest = loaded
        .iter()
        .map(|l| (l.manifest.partition.clone(), l.clone()))
        .collect();
    let (ctx, _) = crate::query::session_on(store, loaded, None, false).await?;
    let sql = include_str!("../../sql/retention/sweep_candidates.sql");
    let mut files = Vec::new();
    for b in crate::query::run_sql(&ctx, sql).await? {
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let (part, path) = (s(0), s(1));
        let n = b
            .column(2)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        let ts = |i: usize| {
            b.column(i)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .clone()
        };
        let (e, l) = (ts(3), ts(4));
        for r in 0..b.num_rows() {
            files.push(FileInfo {
                partition: partition_of(part.value(r))?,
                path: crate::lake::layout::locate(path.value(r))?,
                record_count: n.value(r),
                earliest_expiry: crate::clock::from_micros(e.value(r)),
                latest_expiry: crate::clock::from_micros(l.value(r)),
            });
        }
    }
    Ok(SweepInputs {
        files,
        awaiting,
        latest,
    })
}
