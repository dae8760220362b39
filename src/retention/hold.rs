//! Legal holds: an append-only registry in the store (`holds/v<20 digits>.json`, each version
//! a full snapshot naming its predecessor's SHA-256, create-only), and their enforcement on the
//! storage locks: placing a hold sets the legal-hold flag of every file holding a covered
//! record before it returns; a release needs a second, different actor's approval and never
//! clears a flag that another active hold still needs.
//!
//! Scope (the seed's body): a record is covered when it belongs to the hold's tenant (if the
//! hold names one), falls inside `dateRange` (if given, inclusive, on `occurredAt`), and matches
//! any of `interactionIds`, `queueIds`, `agentIds` (OR across and within the lists); with no
//! id list at all, everything in the range is covered. When in doubt this covers more.
//!
//! Lifetime: `status` must be `ACTIVE` (or absent) to place a hold; release is its own two-step
//! command. `retentionOverride.expirationDate`: `null` (or absent) holds until released; a date
//! makes the hold lapse by itself then (the next sweep or `hold sync` records the lapse, audits
//! it and unpins what no other hold needs), and it can still be released earlier the usual way.
//! `retentionOverride.enabled: false` is refused: a hold that does not override retention would
//! protect nothing.

mod format;
pub mod lifecycle;
mod new_files;
mod upkeep;
pub use format::FORMAT;
pub use new_files::{Coverage, HoldSnapshot, NewFile, Pin, apply_to_new, pins};
pub use upkeep::{Lapse, SyncReport, lapse_due, record_lapses, sync};

use crate::lake::LakeError;
use crate::lake::datafile::{self, IndexColumns, IndexRow};
use crate::lake::layout::{self, HoldRegistryPath};
use crate::lake::manifest::{self, DataFileEntry};
use crate::storage::{Put, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a hold covers. Unknown keys are refused (a misspelt `interactionIDs` would otherwise
/// leave the hold covering the whole range).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub interaction_ids: Vec<String>,
    #[serde(default)]
    pub queue_ids: Vec<String>,
    #[serde(default)]
    pub agent_ids: Vec<String>,
    #[serde(default)]
    pub date_range: Option<DateRange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The request body (as `PATCH /api/v2/retention/holds` in the design), plus the tenant.
/// Unknown keys are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HoldRequest {
    pub hold_id: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    pub scope: Scope,
    #[serde(default)]
    pub retention_override: Option<serde_json::Value>,
}

/// `retentionOverride` of the request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetentionOverride {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    expiration_date: Option<DateTime<Utc>>,
}

fn yes() -> bool {
    true
}

impl HoldRequest {
    /// Reads a body: unknown keys anywhere in it and a `dateRange` that ends before it starts
    /// are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let req: HoldRequest = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(r) = req.scope.date_range.as_ref().filter(|r| r.start > r.end) {
            return Err(format!(
                "scope.dateRange: start {} is after end {}",
                r.start.to_rfc3339(),
                r.end.to_rfc3339()
            ));
        }
        Ok(req)
    }

    /// Checks the parts of the body that decide the hold's lifetime; returns when it lapses
    /// (`None`: when released).
    pub fn lapse_date(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
        if let Some(st) = self
            .status
            .as_deref()
            .filter(|st| !st.eq_ignore_ascii_case("ACTIVE"))
        {
            return Err(format!(
                "status {st:?}: only ACTIVE holds are placed; release one with `holdfast hold release` and `hold approve`"
            ));
        }
        let Some(v) = &self.retention_override else {
            return Ok(None);
        };
        let o: RetentionOverride =
            serde_json::from_value(v.clone()).map_err(|e| format!("retentionOverride: {e}"))?;
        if !o.enabled {
            return Err("retentionOverride.enabled is false: a hold that does not override retention would protect nothing; set it true or leave retentionOverride out".into());
        }
        match o.expiration_date {
            Some(d) if d <= now => Err(format!(
                "retentionOverride.expirationDate {d} has already passed"
            )),
            d => Ok(d),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    Active,
    ReleaseRequested {
        /// The name the requester acted under.
        by: String,
        /// The requester's OS user: the approver must be another one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by_os_user: Option<String>,
        at: DateTime<Utc>,
    },
    Released {
        requested_by: String,
        approved_by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested_by_os_user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approved_by_os_user: Option<String>,
        at: DateTime<Utc>,
    },
    /// Its `retentionOverride.expirationDate` passed.
    Lapsed {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub hold_id: String,
    pub tenant_id: Option<String>,
    pub scope: Scope,
    pub retention_override: Option<serde_json::Value>,
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    pub status: Status,
    /// When the hold lapses by itself (`retentionOverride.expirationDate`); `None`: when released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lapses_at: Option<DateTime<Utc>>,
    /// The data files holding covered records, pinned by the storage legal-hold flag; sweeps
    /// plan from this list (no data file is opened to decide).
    pub files: Vec<String>,
    /// Records the hold covers in each listed file, where known (lets a sweep keep a file
    /// the hold covers whole without opening it).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub covered: std::collections::BTreeMap<String, u64>,
}

impl Hold {
    /// Protecting (not yet released).
    pub fn active(&self) -> bool {
        !matches!(self.status, Status::Released { .. } | Status::Lapsed { .. })
    }

    /// Protecting at `now`: active, and its expiration date (if any) not reached. A hold past
    /// its date is still `active` until [`lapse_due`] records the lapse.
    pub fn protecting(&self, now: DateTime<Utc>) -> bool {
        self.active() && self.lapses_at.is_none_or(|d| now < d)
    }

    /// Whether a record with these index fields is covered.
    pub fn covers(
        &self,
        tenant: &str,
        interaction: &str,
        queue: Option<&str>,
        agents: &[&str],
        at: DateTime<Utc>,
    ) -> bool {
        self.record_covered(tenant, interaction, queue, agents, at)
    }

    /// Whether a record is covered, by its index fields (read from a file or from memory).
    pub fn covers_row(&self, r: &IndexRow<'_>) -> bool {
        self.record_covered(
            r.tenant,
            r.interaction,
            r.queue,
            &r.agents,
            crate::clock::from_micros(r.occurred_at),
        )
    }

    fn record_covered(
        &self,
        tenant: &str,
        interaction: &str,
        queue: Option<&str>,
        agents: &[&str],
        at: DateTime<Utc>,
    ) -> bool {
        let s = &self.scope;
        if self.tenant_id.as_deref().is_some_and(|t| t != tenant) {
            return false;
        }
        if s.date_range
            .as_ref()
            .is_some_and(|r| at < r.start || at > r.end)
        {
            return false;
        }
        let any_list =
            !(s.interaction_ids.is_empty() && s.queue_ids.is_empty() && s.agent_ids.is_empty());
        !any_list
            || s.interaction_ids.iter().any(|i| i == interaction)
            || queue.is_some_and(|q| s.queue_ids.iter().any(|x| x == q))
            || agents.iter().any(|a| s.agent_ids.iter().any(|x| x == a))
    }

    /// Whether a file may hold covered records (manifest only: tenants and time range).
    fn file_may_be_covered(&self, f: &DataFileEntry) -> bool {
        if self
            .tenant_id
            .as_ref()
            .is_some_and(|t| !f.tenant_ids.contains(t))
        {
            return false;
        }
        !self
            .scope
            .date_range
            .as_ref()
            .is_some_and(|r| f.max_occurred_at < r.start || f.min_occurred_at > r.end)
    }
}

/// The hold registry as read (stored as `format::RegistryFile`, which never changes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    pub sequence: u64,
    pub previous_sha256: Option<String>,
    pub holds: Vec<Hold>,
}

/// The latest registry version and the SHA-256 of its bytes.
pub async fn load(store: &Store) -> Result<(Registry, Option<String>), LakeError> {
    let latest = store
        .list(layout::HOLDS)
        .await?
        .iter()
        .filter_map(|m| HoldRegistryPath::parse(&m.location))
        .max();
    match latest {
        None => Ok((Registry::default(), None)),
        Some(at) => {
            let path = at.to_path();
            let bytes = store.get(&path).await?;
            let r = format::decode(&bytes).map_err(|e| LakeError::Corrupt {
                object: path.to_string(),
                problem: format!("not a hold registry: {e}"),
            })?;
            if r.sequence != at.sequence {
                return Err(LakeError::Corrupt {
                    object: path.to_string(),
                    problem: format!("says sequence {}", r.sequence),
                });
            }
            Ok((r, Some(manifest::sha256_hex(&bytes))))
        }
    }
}

/// Commits the next version; `false` when another writer got there first.
pub async fn commit(
    store: &Store,
    base: &Registry,
    base_sha: Option<String>,
    holds: Vec<Hold>,
) -> Result<bool, LakeError> {
    let next = Registry {
        sequence: base.sequence + 1,
        previous_sha256: base_sha,
        holds,
    };
    let path = HoldRegistryPath::new(next.sequence).to_path();
    let bytes = format::encode(&next).map_err(|problem| LakeError::Corrupt {
        object: path.to_string(),
        problem,
    })?;
    Ok(store.put_new(&path, bytes).await? == Put::Created)
}

/// Every committed data file holding a record the hold covers (reads the index columns of
/// the files the manifests cannot rule out).
pub async fn covered_files(store: &Store, hold: &Hold) -> Result<Vec<(String, u64)>, LakeError> {
    Ok(covered_counts(store, hold, &Default::default())
        .await?
        .0
        .into_iter()
        .map(|(_, path, n)| (path, n))
        .collect())
}

/// Like [`covered_files`], but only over committed files not in `seen`; also returns every
/// committed file it looked at (to look again later at only what is new).
pub async fn covered_files_since(
    store: &Store,
    hold: &Hold,
    seen: &std::collections::HashSet<String>,
) -> Result<(Vec<(String, u64)>, std::collections::HashSet<String>), LakeError> {
    let (hits, examined) = covered_counts(store, hold, seen).await?;
    Ok((
        hits.into_iter().map(|(_, path, n)| (path, n)).collect(),
        examined,
    ))
}

/// Files read at once when a hold's coverage is computed.
const READ_CONCURRENCY: usize = 16;

/// (partition dir, path, covered records) of every committed file not in `skip` with covered
/// records, in manifest order, and the paths looked at; files are read concurrently.
async fn covered_counts(
    store: &Store,
    hold: &Hold,
    skip: &std::collections::HashSet<String>,
) -> Result<
    (
        Vec<(String, String, u64)>,
        std::collections::HashSet<String>,
    ),
    LakeError,
> {
    use futures::StreamExt;
    let latest = manifest::load_latest_all(store).await?;
    let files: Vec<(String, &DataFileEntry)> = latest
        .iter()
        .flat_map(|l| {
            l.manifest
                .files
                .iter()
                .map(move |f| (l.manifest.partition.dir(), f))
        })
        .filter(|(_, f)| !skip.contains(&f.path))
        .collect();
    let examined = files.iter().map(|(_, f)| f.path.clone()).collect();
    let counted: Vec<Result<(String, String, u64), LakeError>> = futures::stream::iter(files)
        .map(|(dir, f)| async move {
            covered_records(store, hold, f)
                .await
                .map(|n| (dir, f.path.clone(), n))
        })
        .buffered(READ_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    for c in counted {
        let c = c?;
        if c.2 > 0 {
            out.push(c);
        }
    }
    Ok((out, examined))
}

/// How many records of a committed file the hold covers.
pub async fn covered_records(
    store: &Store,
    hold: &Hold,
    f: &DataFileEntry,
) -> Result<u64, LakeError> {
    if !hold.file_may_be_covered(f) {
        return Ok(0);
    }
    let path = f.location()?;
    let mut hit = 0;
    for b in datafile::read_index(store, &path, f.size_bytes).await? {
        let cols = IndexColumns::of(&b, &f.path)?;
        hit += (0..cols.len())
            .filter(|&r| hold.covers_row(&cols.row(r)))
            .count() as u64;
    }
    Ok(hit)
}

/// Adds files (with their covered counts) to an active hold's listing; retries when another
/// writer commits the registry first. Returns whether the hold was found active.
pub async fn add_files(
    store: &Store,
    hold_id: &str,
    files: &[(String, u64)],
) -> Result<bool, LakeError> {
    for _ in 0..20 {
        let (registry, sha) = load(store).await?;
        let mut holds = registry.holds.clone();
        let Some(h) = holds
            .iter_mut()
            .find(|h| h.hold_id == hold_id && h.active())
        else {
            return Ok(false);
        };
        for (f, n) in files {
            if !h.files.contains(f) {
                h.files.push(f.clone());
            }
            h.covered.insert(f.clone(), *n);
        }
        if commit(store, &registry, sha, holds).await? {
            return Ok(true);
        }
    }
    Err(LakeError::Conflict(
        "the hold registry kept changing; run hold sync".into(),
    ))
}

/// What a hold would cover: records per partition, and the files.
#[derive(Debug, Default, Serialize)]
pub struct Preview {
    pub records: u64,
    pub by_partition: std::collections::BTreeMap<String, u64>,
    pub files: Vec<String>,
}

pub async fn preview(store: &Store, hold: &Hold) -> Result<Preview, LakeError> {
    let mut p = Preview::default();
    for (dir, path, n) in covered_counts(store, hold, &Default::default()).await?.0 {
        p.records += n;
        *p.by_partition.entry(dir).or_default() += n;
        p.files.push(path);
    }
    Ok(p)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod registry_tests;
