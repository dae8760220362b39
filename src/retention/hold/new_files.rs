//! Holds on the files a batch has just written, decided from the rows the batch had in memory
//! (never by reading the files back): each row is counted against the holds that protected
//! when the batch started ([`HoldSnapshot`]), and each file keeps digests of the ids a hold
//! matches on, so that a hold placed while the batch ran is still judged without a read.
//!
//! Why this is enough: the batch reads the registry after its manifests commit; a hold placed
//! after that read looks at the committed files again once it is recorded (`hold apply`).

use super::{Hold, commit, load};
use crate::lake::LakeError;
use crate::lake::datafile::IndexRow;
use crate::lake::layout;
use crate::lake::manifest::DataFileEntry;
use crate::storage::Store;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

/// A hold's identity across versions of the registry: a released hold's id may be placed
/// again with another scope.
type Placement = (String, DateTime<Utc>);

fn placement(h: &Hold) -> Placement {
    (h.hold_id.clone(), h.placed_at)
}

/// The holds protecting when a batch started: every row is counted against them.
#[derive(Debug, Clone, Default)]
pub struct HoldSnapshot {
    holds: Vec<Hold>,
}

impl HoldSnapshot {
    /// The holds protecting at `now` in the latest registry.
    pub async fn load(store: &Store, now: DateTime<Utc>) -> Result<Self, LakeError> {
        let (registry, _) = load(store).await?;
        Ok(Self::of(&registry.holds, now))
    }

    /// The holds of `holds` protecting at `now`.
    pub fn of(holds: &[Hold], now: DateTime<Utc>) -> Self {
        HoldSnapshot {
            holds: holds
                .iter()
                .filter(|h| h.protecting(now))
                .cloned()
                .collect(),
        }
    }

    fn knows(&self, h: &Hold) -> bool {
        self.holds
            .iter()
            .any(|k| k.hold_id == h.hold_id && k.placed_at == h.placed_at)
    }
}

/// What one new file's rows tell the holds, gathered as the rows are written.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// Records each hold of the snapshot covers.
    counts: BTreeMap<Placement, u64>,
    /// Digests of the rows' interaction, queue and agent ids (a hold placed meanwhile).
    interactions: HashSet<u64>,
    queues: HashSet<u64>,
    agents: HashSet<u64>,
}

fn digest(id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

impl Coverage {
    /// Counts one row written to the file.
    pub fn add(&mut self, row: &IndexRow<'_>, snapshot: &HoldSnapshot) {
        for h in snapshot.holds.iter().filter(|h| h.covers_row(row)) {
            *self.counts.entry(placement(h)).or_default() += 1;
        }
        self.interactions.insert(digest(row.interaction));
        if let Some(q) = row.queue {
            self.queues.insert(digest(q));
        }
        for a in &row.agents {
            self.agents.insert(digest(a));
        }
    }

    /// For a hold the snapshot did not know: whether the file may hold a covered record (its
    /// tenants and time range from the entry, its ids from the digests; when in doubt, yes).
    fn may_be_covered(&self, h: &Hold, entry: &DataFileEntry) -> bool {
        let s = &h.scope;
        let any_list =
            !(s.interaction_ids.is_empty() && s.queue_ids.is_empty() && s.agent_ids.is_empty());
        let hit =
            |ids: &[String], seen: &HashSet<u64>| ids.iter().any(|i| seen.contains(&digest(i)));
        h.file_may_be_covered(entry)
            && (!any_list
                || hit(&s.interaction_ids, &self.interactions)
                || hit(&s.queue_ids, &self.queues)
                || hit(&s.agent_ids, &self.agents))
    }
}

/// A file a batch wrote and committed, with what its rows told the holds.
#[derive(Debug, Clone, Copy)]
pub struct NewFile<'a> {
    pub entry: &'a DataFileEntry,
    pub coverage: &'a Coverage,
}

/// A new file a hold must pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Index into the holds given to [`pins`].
    pub hold: usize,
    pub path: String,
    /// Records the hold covers in the file; `None` when not counted (a hold placed while the
    /// batch ran, judged from the file's ids).
    pub covered: Option<u64>,
}

/// Which of `holds` (the registry as read after the commit) pin which new files, at `now`.
/// Pure: no store, no clock, no data file.
pub fn pins(
    holds: &[Hold],
    snapshot: &HoldSnapshot,
    files: &[NewFile<'_>],
    now: DateTime<Utc>,
) -> Vec<Pin> {
    let mut out = Vec::new();
    for (i, h) in holds.iter().enumerate().filter(|(_, h)| h.protecting(now)) {
        let known = snapshot.knows(h);
        for f in files.iter().filter(|f| !h.files.contains(&f.entry.path)) {
            let covered = if known {
                match f.coverage.counts.get(&placement(h)) {
                    Some(&n) if n > 0 => Some(n),
                    _ => continue,
                }
            } else if f.coverage.may_be_covered(h, f.entry) {
                None
            } else {
                continue;
            };
            out.push(Pin {
                hold: i,
                path: f.entry.path.clone(),
                covered,
            });
        }
    }
    out
}

/// Applies every active hold to newly committed files: pins the covered ones at the storage
/// layer and records them in the registry. Returns how many (hold, file) pins were made.
pub async fn apply_to_new(
    store: &Store,
    snapshot: &HoldSnapshot,
    new: &[NewFile<'_>],
    now: DateTime<Utc>,
) -> Result<u64, LakeError> {
    let (registry, sha) = load(store).await?;
    if new.is_empty() || !registry.holds.iter().any(|h| h.protecting(now)) {
        return Ok(0);
    }
    let pins = pins(&registry.holds, snapshot, new, now);
    if pins.is_empty() {
        return Ok(0);
    }
    let mut holds = registry.holds.clone();
    for p in &pins {
        store.legal_hold(&layout::locate(&p.path)?, true).await?;
        let h = &mut holds[p.hold];
        h.files.push(p.path.clone());
        if let Some(n) = p.covered {
            h.covered.insert(p.path.clone(), n);
        }
    }
    if !commit(store, &registry, sha, holds).await? {
        return Err(LakeError::Conflict("the hold registry changed during the batch; the files are pinned at the storage layer, run the batch again to record them".into()));
    }
    Ok(pins.len() as u64)
}

#[cfg(test)]
mod tests;
