//! Per-partition manifests: versioned snapshots of the partition's committed data files,
//! each version naming the SHA-256 of its predecessor and written with a create-only put.
//! The latest version is the truth for queries, sweeps and verification: a data file that no
//! latest manifest lists is not committed (an orphan of a killed batch).
//!
//! Frozen on-disk types (`format.rs`): `ManifestFile::V1` never changes once released; a
//! later layout adds `V2` and a conversion into [`Manifest`].

use super::LakeError;
use super::layout::{self, Partition};
use crate::crypto::kms::WrappedKey;
use crate::storage::{Put, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub mod filter;
mod format;
pub use filter::InteractionFilter;
pub use format::FORMAT;

/// A manifest version as read (stored as [`format::ManifestFile`], which never changes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub partition: Partition,
    pub sequence: u64,
    /// The version this one replaces; `None` only for sequence 1.
    pub previous: Option<PreviousVersion>,
    pub committed_at: DateTime<Utc>,
    pub batch_id: String,
    /// Every committed data file of the partition, as of this version.
    pub files: Vec<DataFileEntry>,
    /// Files removed by retention sweeps, carried forward in every later version, so the
    /// history shows what was deleted, when and by which sweep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<RemovedFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedFile {
    pub path: String,
    pub sha256: String,
    pub record_count: u64,
    pub latest_expiry: DateTime<Utc>,
    pub removed_at: DateTime<Utc>,
    pub sweep_id: String,
    /// Rewritten: the file that took this one's surviving records (held or unexpired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_kept: Option<u64>,
    /// A rewritten file leaves the partition at once but stays stored while its storage lock
    /// runs; `deleted_at` is set by the sweep that deletes it. Ordinary removals delete the
    /// object at `removed_at` and leave both unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl RemovedFile {
    /// The object of the removed file (its path is checked to be a data file's).
    pub fn location(&self) -> Result<object_store::path::Path, LakeError> {
        layout::locate(&self.path)
    }

    /// Taken out of the partition by a rewrite, not yet deleted from storage.
    pub fn awaiting_deletion(&self) -> bool {
        self.replaced_by.is_some() && self.deleted_at.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousVersion {
    pub sequence: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFileEntry {
    /// Path from the store root.
    pub path: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub record_count: u64,
    pub min_occurred_at: DateTime<Utc>,
    pub max_occurred_at: DateTime<Utc>,
    /// The earliest and latest `expires_at` of the file's records.
    pub earliest_expiry: DateTime<Utc>,
    pub latest_expiry: DateTime<Utc>,
    pub tenant_ids: Vec<String>,
    pub policy_ids: Vec<String>,
    pub encryption: FileEncryption,
    pub batch_id: String,
    pub added_at: DateTime<Utc>,
    /// A filter of the file's interaction ids (manifest version 2; `None` for files an older
    /// holdfast wrote): a lookup by interaction id skips the files it rules out.
    #[serde(skip)]
    pub interactions: Option<InteractionFilter>,
    /// The object version the store gave the file (S3; manifest version 3): readers fetch
    /// exactly it, so a later version or a delete marker over the key neither changes nor
    /// hides the file. `None` on a local store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEncryption {
    /// `AES-256-GCM`, one sealed value per record: nonce (12) || ciphertext || tag (16).
    pub algorithm: String,
    /// Record plaintext is zstd-compressed before sealing.
    pub compression: String,
    /// AAD scheme: `holdfast.record.v1` = length-prefixed (scheme, tenant_id, event_id, interaction_id, dek_id).
    pub aad: String,
    pub dek_id: String,
    pub wrapped_dek: WrappedKey,
}

impl Manifest {
    /// The stored form; refuses (as corrupt) a file entry whose path is not a data file's.
    pub fn to_bytes(&self) -> Result<Vec<u8>, LakeError> {
        format::encode(self).map_err(|problem| LakeError::Corrupt {
            object: layout::ManifestPath::new(&self.partition, self.sequence)
                .to_path()
                .to_string(),
            problem,
        })
    }

    /// Reads a stored version; another format, an unknown version or a damaged file is
    /// [`LakeError::Corrupt`] naming `path`.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Self, LakeError> {
        format::decode(bytes).map_err(|e| LakeError::Corrupt {
            object: path.to_string(),
            problem: format!("not a manifest: {e}"),
        })
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(crate::crypto::sha256(bytes))
}

/// The sequence numbers of every manifest version, per partition, from one listing.
pub async fn list_versions(store: &Store) -> Result<BTreeMap<Partition, Vec<u64>>, LakeError> {
    let mut out: BTreeMap<Partition, Vec<u64>> = BTreeMap::new();
    for meta in store.list(layout::MANIFESTS).await? {
        if let Some((p, seq)) = layout::parse_manifest(&meta.location) {
            out.entry(p).or_default().push(seq);
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    Ok(out)
}

/// A manifest version as read, with the hash of its bytes.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub manifest: Manifest,
    pub sha256: String,
}

pub async fn load(store: &Store, p: &Partition, seq: u64) -> Result<Loaded, LakeError> {
    let bytes = store.get(&layout::manifest(p, seq)).await?;
    let loaded = decode_stored(&bytes, p, seq)?;
    pin(store, std::slice::from_ref(&loaded));
    Ok(loaded)
}

/// Pins the object version of every file the manifests list (S3): readers of the store then
/// fetch exactly the versions that were committed.
pub fn pin(store: &Store, loaded: &[Loaded]) {
    for l in loaded {
        for f in &l.manifest.files {
            if let (Some(v), Ok(path)) = (&f.object_version, f.location()) {
                store.pin(&path, v);
            }
        }
    }
}

/// Reads the stored bytes of version `seq` of `p` (from its object or a catalog).
pub(crate) fn decode_stored(bytes: &[u8], p: &Partition, seq: u64) -> Result<Loaded, LakeError> {
    let path = layout::manifest(p, seq);
    let manifest = Manifest::from_bytes(bytes, path.as_ref())?;
    if manifest.partition != *p || manifest.sequence != seq {
        return Err(LakeError::Corrupt {
            object: path.to_string(),
            problem: "partition or sequence differs from its path".into(),
        });
    }
    Ok(Loaded {
        manifest,
        sha256: sha256_hex(bytes),
    })
}

/// The latest manifest of every partition.
pub async fn load_latest_all(store: &Store) -> Result<Vec<Loaded>, LakeError> {
    let versions = list_versions(store).await?;
    let futs = versions
        .iter()
        .filter_map(|(p, seqs)| seqs.last().map(|s| load(store, p, *s)));
    futures::future::try_join_all(futs).await
}

/// A partition whose latest manifest version cannot be read (empty, truncated, altered).
#[derive(Debug, Clone)]
pub struct Damaged {
    pub partition: Partition,
    pub sequence: u64,
    pub problem: String,
}

/// The latest manifest of every partition that has a readable one, and the partitions whose
/// latest version is damaged, so that one bad partition does not stop the others. A store
/// failure (I/O) still fails the call.
pub async fn load_latest_each(store: &Store) -> Result<(Vec<Loaded>, Vec<Damaged>), LakeError> {
    let versions = list_versions(store).await?;
    let futs = versions.iter().filter_map(|(p, seqs)| {
        seqs.last()
            .map(|s| async move { (p, *s, load(store, p, *s).await) })
    });
    let (mut loaded, mut damaged) = (Vec::new(), Vec::new());
    for (p, sequence, r) in futures::future::join_all(futs).await {
        match r {
            Ok(l) => loaded.push(l),
            Err(LakeError::Corrupt { problem, .. }) => damaged.push(Damaged {
                partition: p.clone(),
                sequence,
                problem,
            }),
            Err(e) => return Err(e),
        }
    }
    Ok((loaded, damaged))
}

pub async fn load_latest(store: &Store, p: &Partition) -> Result<Option<Loaded>, LakeError> {
    let mut latest = None;
    for meta in store.list(layout::manifest_dir(p).as_ref()).await? {
        if let Some((q, seq)) = layout::parse_manifest(&meta.location)
            && q == *p
            && latest.is_none_or(|l| seq > l)
        {
            latest = Some(seq);
        }
    }
    match latest {
        Some(seq) => Ok(Some(load(store, p, seq).await?)),
        None => Ok(None),
    }
}

/// Commits the next version of `p` after `base`, changed by `edit` (sweeps and rewrites).
pub async fn commit_edit(
    store: &Store,
    p: &Partition,
    base: &Loaded,
    change_id: &str,
    now: DateTime<Utc>,
    edit: impl FnOnce(&mut Manifest),
) -> Result<Commit, LakeError> {
    let mut m = base.manifest.clone();
    m.sequence += 1;
    m.previous = Some(PreviousVersion {
        sequence: base.manifest.sequence,
        sha256: base.sha256.clone(),
    });
    m.committed_at = now;
    m.batch_id = change_id.to_string();
    edit(&mut m);
    m.files.sort_by(|a, b| a.path.cmp(&b.path));
    let bytes = m.to_bytes()?;
    let sha256 = sha256_hex(&bytes);
    match store
        .put_new(&layout::manifest(p, m.sequence), bytes)
        .await?
    {
        Put::Created => Ok(Commit::Committed(Box::new(Loaded {
            manifest: m,
            sha256,
        }))),
        Put::AlreadyExists => Ok(Commit::LostRace {
            sequence: m.sequence,
        }),
    }
}

impl DataFileEntry {
    /// The object of the data file (its path is checked to be a data file's: a manifest
    /// never makes holdfast read, pin or delete another object).
    pub fn location(&self) -> Result<object_store::path::Path, LakeError> {
        layout::locate(&self.path)
    }

    /// Its entry in the `removed` history.
    pub fn removed(self, sweep_id: &str, now: DateTime<Utc>) -> RemovedFile {
        RemovedFile {
            path: self.path,
            sha256: self.sha256,
            record_count: self.record_count,
            latest_expiry: self.latest_expiry,
            removed_at: now,
            sweep_id: sweep_id.to_string(),
            replaced_by: None,
            records_kept: None,
            deleted_at: None,
        }
    }
}

/// Commits a version of `p` without the files in `removing` (a retention sweep).
pub async fn commit_removal(
    store: &Store,
    p: &Partition,
    base: &Loaded,
    removing: &[String],
    sweep_id: &str,
    now: DateTime<Utc>,
) -> Result<Commit, LakeError> {
    commit_edit(store, p, base, sweep_id, now, |m| {
        let (gone, kept): (Vec<DataFileEntry>, Vec<DataFileEntry>) = std::mem::take(&mut m.files)
            .into_iter()
            .partition(|f| removing.contains(&f.path));
        m.files = kept;
        m.removed
            .extend(gone.into_iter().map(|f| f.removed(sweep_id, now)));
    })
    .await
}

/// Outcome of a commit attempt.
#[derive(Debug)]
pub enum Commit {
    Committed(Box<Loaded>),
    /// Another writer created this sequence first; nothing was written.
    LostRace {
        sequence: u64,
    },
}

/// Commits a new version of `p` = `base` + `added` files. `base` is the latest version the
/// caller read (None: the partition is new).
pub async fn commit(
    store: &Store,
    p: &Partition,
    base: Option<&Loaded>,
    added: Vec<DataFileEntry>,
    batch_id: &str,
    now: DateTime<Utc>,
) -> Result<Commit, LakeError> {
    let NextVersion { manifest, bytes } = next_version(p, base, added, batch_id, now)?;
    let sha256 = sha256_hex(&bytes);
    let path = layout::manifest(p, manifest.sequence);
    match store.put_new(&path, bytes).await? {
        Put::Created => Ok(Commit::Committed(Box::new(Loaded { manifest, sha256 }))),
        Put::AlreadyExists => Ok(Commit::LostRace {
            sequence: manifest.sequence,
        }),
    }
}

/// A version made by [`next_version`], not stored yet.
#[derive(Debug)]
pub struct NextVersion {
    manifest: Manifest,
    bytes: Vec<u8>,
}

impl NextVersion {
    /// Where it is committed.
    pub fn path(&self) -> object_store::path::Path {
        layout::manifest(&self.manifest.partition, self.manifest.sequence)
    }

    /// Its stored form.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The version after `base` (None: the partition is new) with `added` files, and its bytes.
pub fn next_version(
    p: &Partition,
    base: Option<&Loaded>,
    added: Vec<DataFileEntry>,
    batch_id: &str,
    now: DateTime<Utc>,
) -> Result<NextVersion, LakeError> {
    let (sequence, previous, mut files) = match base {
        Some(b) => (
            b.manifest.sequence + 1,
            Some(PreviousVersion {
                sequence: b.manifest.sequence,
                sha256: b.sha256.clone(),
            }),
            b.manifest.files.clone(),
        ),
        None => (1, None, Vec::new()),
    };
    files.extend(added);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let removed = base.map(|b| b.manifest.removed.clone()).unwrap_or_default();
    let manifest = Manifest {
        partition: p.clone(),
        sequence,
        previous,
        committed_at: now,
        batch_id: batch_id.into(),
        files,
        removed,
    };
    let bytes = manifest.to_bytes()?;
    Ok(NextVersion { manifest, bytes })
}

/// Commits a version whose bytes were staged ([`Store::stage_new`] at [`NextVersion::path`])
/// with a create-only link.
pub async fn commit_staged(
    store: &Store,
    next: NextVersion,
    staged: crate::storage::Staged,
) -> Result<Commit, LakeError> {
    debug_assert_eq!(staged.path(), &next.path());
    let NextVersion { manifest, bytes } = next;
    match store.put_staged(staged).await? {
        Put::Created => Ok(Commit::Committed(Box::new(Loaded {
            sha256: sha256_hex(&bytes),
            manifest,
        }))),
        Put::AlreadyExists => Ok(Commit::LostRace {
            sequence: manifest.sequence,
        }),
    }
}

/// A file entry for tests: three records of tenant `t1` on 2025-10-01 under the policy
/// `default`, a made-up wrapped DEK and no interaction filter; a test changes what it is about.
#[cfg(test)]
pub(crate) fn sample_entry(path: String) -> DataFileEntry {
    use crate::format::ts;
    DataFileEntry {
        path,
        sha256: "ab".repeat(32),
        size_bytes: 100,
        record_count: 3,
        min_occurred_at: ts("2025-10-01T00:00:00Z"),
        max_occurred_at: ts("2025-10-01T01:00:00Z"),
        earliest_expiry: ts("2031-10-01T00:00:00Z"),
        latest_expiry: ts("2031-10-01T01:00:00Z"),
        tenant_ids: vec!["t1".into()],
        policy_ids: vec!["default".into()],
        encryption: FileEncryption {
            algorithm: "AES-256-GCM".into(),
            compression: "zstd".into(),
            aad: "holdfast.record.v1".into(),
            dek_id: "dek-1".into(),
            wrapped_dek: WrappedKey {
                kek_id: "kek-1".into(),
                kek_version: 1,
                ciphertext: vec![7; 40],
            },
        },
        batch_id: "b1".into(),
        added_at: ts("2025-10-02T00:00:00Z"),
        interactions: None,
        object_version: None,
    }
}

#[cfg(test)]
mod tests;
