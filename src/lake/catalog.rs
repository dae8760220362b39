//! The catalog: every partition's latest manifest, as of one signed head, in one object
//! (`catalog/v<head sequence>.cat`), so that a query session reads one object instead of one
//! manifest per partition.
//!
//! Format `holdfast.catalog`, version 1 (frozen; golden file `fixtures/formats/catalog-v1.bin`):
//! `HFCAT001`, a u32 big-endian header length, a compact JSON header naming the head
//! sequence and, per partition in order, its manifest's sequence, SHA-256 and byte length,
//! then the manifests' stored bytes, verbatim, one after the other.
//!
//! Written create-only by the commit step that signs a head ([`write`], from
//! [`crate::head::commit`]); older catalogs are deleted (they are derived data). Trusted only
//! when the newest head is signed and records exactly the catalog's partitions, sequences and
//! hashes, and then only manifest by manifest: each one's bytes must hash to what the head
//! records, and be the latest version a listing of `manifests/` shows, with the same size
//! ([`load_latest_each`]). Anything else (no head, no catalog, an older or altered catalog,
//! a partition committed after the head, a damaged manifest) is read from the manifests
//! themselves, so a session sees what reading every manifest would show.

use super::LakeError;
use super::layout::{self, Partition};
use super::manifest::{self, Damaged, Loaded};
use crate::format::FormatError;
use crate::head::Position;
use crate::storage::{Put, Store};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;

pub const FORMAT: &str = "holdfast.catalog";
const VERSIONS: &[&str] = &["1"];
const MAGIC: &[u8; 8] = b"HFCAT001";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum HeaderFile {
    #[serde(rename = "1")]
    V1(HeaderV1),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderV1 {
    format: String,
    /// The head version this catalog describes.
    head: u64,
    partitions: Vec<EntryV1>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryV1 {
    partition: String,
    sequence: u64,
    sha256: String,
    length: u64,
}

/// One partition's latest manifest, as the catalog holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub partition: Partition,
    pub position: Position,
    range: Range<usize>,
}

/// A catalog as read: no manifest in it is trusted yet.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub head: u64,
    pub entries: Vec<Entry>,
    body: Bytes,
}

impl Catalog {
    /// The stored bytes of `e`'s manifest.
    pub fn bytes(&self, e: &Entry) -> Bytes {
        self.body.slice(e.range.clone())
    }

    /// The partitions and positions it records, as a head records them.
    pub fn positions(&self) -> BTreeMap<Partition, Position> {
        self.entries
            .iter()
            .map(|e| (e.partition.clone(), e.position.clone()))
            .collect()
    }
}

/// The stored form of a catalog of head `head`: each partition's position and manifest bytes.
pub fn encode(head: u64, manifests: &[(Partition, Position, Bytes)]) -> Vec<u8> {
    let header = HeaderFile::V1(HeaderV1 {
        format: FORMAT.into(),
        head,
        partitions: manifests
            .iter()
            .map(|(p, pos, b)| EntryV1 {
                partition: p.dir(),
                sequence: pos.sequence,
                sha256: pos.sha256.clone(),
                length: b.len() as u64,
            })
            .collect(),
    });
    let header = serde_json::to_vec(&header).expect("catalog header serializes");
    let body: usize = manifests.iter().map(|(_, _, b)| b.len()).sum();
    let mut out = Vec::with_capacity(12 + header.len() + body);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    for (_, _, b) in manifests {
        out.extend_from_slice(b);
    }
    out
}

fn invalid(detail: impl Into<String>) -> FormatError {
    FormatError::Invalid {
        format: FORMAT,
        version: "1".into(),
        detail: detail.into(),
    }
}

/// Reads a stored catalog; another format, an unknown version, or lengths that do not add
/// up to the body are refused.
pub fn decode(bytes: Bytes) -> Result<Catalog, FormatError> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(FormatError::NotJson(
            "not a catalog: no HFCAT001 magic".into(),
        ));
    }
    let n = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let header = bytes
        .get(12..12 + n)
        .ok_or_else(|| invalid("header longer than the object"))?;
    let HeaderFile::V1(h) = crate::format::decode(header, FORMAT, VERSIONS)?;
    let body = bytes.slice(12 + n..);
    let mut entries = Vec::with_capacity(h.partitions.len());
    let mut at = 0usize;
    for e in h.partitions {
        let partition = Partition::parse_dir(&e.partition)
            .ok_or_else(|| invalid(format!("{:?} is not a partition", e.partition)))?;
        let end = at
            .checked_add(e.length as usize)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| invalid("manifest lengths exceed the body"))?;
        entries.push(Entry {
            partition,
            position: Position {
                sequence: e.sequence,
                sha256: e.sha256,
            },
            range: at..end,
        });
        at = end;
    }
    if at != body.len() {
        return Err(invalid("bytes after the last manifest"));
    }
    Ok(Catalog {
        head: h.head,
        entries,
        body,
    })
}

/// The catalog of head `sequence`, if one is stored and readable.
pub async fn load(store: &Store, sequence: u64) -> Result<Option<Catalog>, LakeError> {
    let path = layout::CatalogPath::new(sequence).to_path();
    match store.get_opt(&path).await? {
        Some(bytes) => decode(bytes).map(Some).map_err(|e| LakeError::Corrupt {
            object: path.to_string(),
            problem: format!("not a catalog: {e}"),
        }),
        None => Ok(None),
    }
}

/// Writes the catalog of head `head` (its partitions' latest manifests): each manifest's
/// bytes from the catalog of head `previous` when that one records the same version, else
/// from the manifest itself. Writes nothing when a manifest the head records is missing or
/// hashes otherwise (`verify` reports that store). Then deletes catalogs older than
/// `previous`. Returns whether a catalog of `head` is stored. A commit that changes nothing
/// calls it for the newest head too, so a store from before catalogs gets one.
pub async fn write(
    store: &Store,
    head: u64,
    partitions: &BTreeMap<Partition, Position>,
    previous: Option<u64>,
) -> Result<bool, LakeError> {
    let path = layout::CatalogPath::new(head).to_path();
    if store.head(&path).await?.is_some() {
        return Ok(true);
    }
    let before = match previous {
        Some(seq) => load(store, seq).await.ok().flatten(),
        None => None,
    };
    let reuse: BTreeMap<&Partition, (&Entry, &Catalog)> = before
        .iter()
        .flat_map(|c| c.entries.iter().map(move |e| (&e.partition, (e, c))))
        .collect();
    let manifests: Vec<Option<(Partition, Position, Bytes)>> =
        futures::stream::iter(partitions.iter())
            .map(|(p, pos)| {
                let cached = reuse
                    .get(p)
                    .filter(|(e, _)| e.position == *pos)
                    .map(|(e, c)| c.bytes(e));
                async move {
                    let bytes = match cached {
                        Some(b) => b,
                        None => match store.get_opt(&layout::manifest(p, pos.sequence)).await? {
                            Some(b) if manifest::sha256_hex(&b) == pos.sha256 => b,
                            _ => return Ok::<_, LakeError>(None),
                        },
                    };
                    Ok(Some((p.clone(), pos.clone(), bytes)))
                }
            })
            .buffered(32)
            .try_collect()
            .await?;
    let Some(manifests) = manifests.into_iter().collect::<Option<Vec<_>>>() else {
        return Ok(false);
    };
    if store.put_new(&path, encode(head, &manifests)).await? == Put::AlreadyExists {
        return Ok(true);
    }
    for meta in store.list(layout::CATALOGS).await? {
        if let Some(old) = layout::CatalogPath::parse(&meta.location)
            && old.sequence < previous.unwrap_or(head).min(head)
        {
            store.delete(&meta.location).await?;
        }
    }
    Ok(true)
}

/// The catalog of the newest head, when that head is signed and records exactly the
/// catalog's partitions and versions.
async fn trusted(store: &Store) -> Result<Option<Catalog>, LakeError> {
    let Some(newest) = crate::head::newest(store).await.ok().flatten() else {
        return Ok(None);
    };
    if !newest.head.signature_ok() {
        return Ok(None);
    }
    let Ok(Some(catalog)) = load(store, newest.head.sequence).await else {
        return Ok(None);
    };
    if catalog.head != newest.head.sequence || catalog.positions() != newest.head.partitions {
        return Ok(None);
    }
    Ok(Some(catalog))
}

/// What [`manifest::load_latest_each`] returns (the latest manifest of every partition, and
/// the partitions whose latest version cannot be read), reading the manifests the trusted
/// catalog holds from it: a partition's manifest comes from the catalog only when the store
/// shows the catalog's version as the latest, with the same size, and its bytes hash to what
/// the signed head records; every other partition's is read from the store.
///
/// Which version is the latest: when no job is pending (no intent record: every batch and
/// sweep records one before it commits a manifest, and drops it once its head is signed), the
/// head records every latest version, and one stat per manifest checks that each is still
/// there with the catalog's size; otherwise, or when one is not, a listing of `manifests/`.
/// On a remote store (S3) always the listing: one request per 1,000 manifest versions
/// instead of one per partition.
pub async fn load_latest_each(store: &Store) -> Result<(Vec<Loaded>, Vec<Damaged>), LakeError> {
    let (loaded, damaged, _) = load_latest(store).await?;
    Ok((loaded, damaged))
}

/// [`load_latest_each`], and how many manifests came from the catalog.
async fn load_latest(store: &Store) -> Result<(Vec<Loaded>, Vec<Damaged>, usize), LakeError> {
    let (catalog, quiet) = futures::try_join!(trusted(store), no_job_pending(store))?;
    let stated = match (&catalog, quiet) {
        (Some(c), true) if !store.remote() => stated(store, c).await?,
        _ => None,
    };
    let listing = match stated {
        Some(s) => s,
        None => latest_listed(store).await?,
    };
    let cached: BTreeMap<&Partition, &Entry> = catalog
        .iter()
        .flat_map(|c| c.entries.iter().map(|e| (&e.partition, e)))
        .collect();
    let listed: Vec<(&Partition, u64, Option<&Entry>)> = listing
        .iter()
        .map(|(p, (seq, size))| {
            let hit = cached
                .get(p)
                .filter(|e| e.position.sequence == *seq && e.range.len() as u64 == *size);
            (p, *seq, hit.copied())
        })
        .collect();
    let decode = |part: &[(&Partition, u64, Option<&Entry>)]| -> Vec<Option<Loaded>> {
        part.iter()
            .map(|(p, seq, hit)| {
                let (e, c) = (hit.as_ref()?, catalog.as_ref()?);
                let l = manifest::decode_stored(&c.bytes(e), p, *seq).ok()?;
                (l.sha256 == e.position.sha256).then_some(l)
            })
            .collect()
    };
    // decoding thousands of manifests is CPU work: both halves at once
    let (first, second) = listed.split_at(listed.len() / 2);
    let decoded = std::thread::scope(|s| {
        let a = s.spawn(|| decode(first));
        let mut b = decode(second);
        let mut a = a.join().expect("decoding does not panic");
        a.append(&mut b);
        a
    });
    let mut loaded = Vec::with_capacity(listing.len());
    let mut missing = Vec::new();
    for ((p, seq, _), l) in listed.iter().zip(decoded) {
        match l {
            Some(l) => loaded.push(((*p).clone(), l)),
            None => missing.push(((*p).clone(), *seq)),
        }
    }
    let hits = loaded.len();
    let (read, damaged) = read_each(store, missing).await?;
    loaded.extend(read);
    loaded.sort_by(|a, b| a.0.cmp(&b.0));
    let loaded: Vec<Loaded> = loaded.into_iter().map(|(_, l)| l).collect();
    manifest::pin(store, &loaded);
    Ok((loaded, damaged, hits))
}

/// Whether no batch or sweep is running or was interrupted (no intent record).
async fn no_job_pending(store: &Store) -> Result<bool, LakeError> {
    let intents = store.list(layout::INTENTS).await?;
    Ok(intents
        .iter()
        .all(|m| layout::parse_intent(&m.location).is_none()))
}

/// The catalog's manifest versions with their sizes now (one stat each); `None` when one is
/// missing or holds another size (then a listing says which versions are the latest).
async fn stated(
    store: &Store,
    c: &Catalog,
) -> Result<Option<BTreeMap<Partition, (u64, u64)>>, LakeError> {
    let paths: Vec<Path> = c
        .entries
        .iter()
        .map(|e| layout::manifest(&e.partition, e.position.sequence))
        .collect();
    let sizes = sizes_off_runtime(store, paths).await?;
    let mut out = BTreeMap::new();
    for (e, size) in c.entries.iter().zip(sizes) {
        match size {
            Some(n) if n == e.range.len() as u64 => {
                out.insert(e.partition.clone(), (e.position.sequence, n));
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// The sizes of objects, from two plain threads: outside the async runtime the local file
/// system is called directly, not through one blocking task per object (thousands of thread
/// hand-offs for a stat each). Both backends (local, memory) stat without a runtime; a
/// remote backend would need one future per object here instead.
async fn sizes_off_runtime(store: &Store, paths: Vec<Path>) -> Result<Vec<Option<u64>>, LakeError> {
    let half = paths.len().div_ceil(2).max(1);
    let mut waiting = Vec::new();
    for chunk in paths.chunks(half) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (store, chunk) = (store.clone(), chunk.to_vec());
        std::thread::spawn(move || {
            let sizes = futures::executor::block_on(async {
                let mut v = Vec::with_capacity(chunk.len());
                for p in &chunk {
                    v.push(store.head(p).await?.map(|m| m.size));
                }
                Ok::<_, LakeError>(v)
            });
            let _ = tx.send(sizes);
        });
        waiting.push(rx);
    }
    let mut out = Vec::with_capacity(paths.len());
    for rx in waiting {
        let sizes = rx
            .await
            .map_err(|_| LakeError::Conflict("a stat thread stopped".into()))?;
        out.extend(sizes?);
    }
    Ok(out)
}

/// The latest manifest version of every partition and its size, from one listing.
async fn latest_listed(store: &Store) -> Result<BTreeMap<Partition, (u64, u64)>, LakeError> {
    let mut out: BTreeMap<Partition, (u64, u64)> = BTreeMap::new();
    for meta in store.list(layout::MANIFESTS).await? {
        if let Some((p, seq)) = layout::parse_manifest(&meta.location) {
            let e = out.entry(p).or_insert((seq, meta.size));
            if seq >= e.0 {
                *e = (seq, meta.size);
            }
        }
    }
    Ok(out)
}

/// Reads the given manifest versions; the unreadable ones are reported as damaged.
async fn read_each(
    store: &Store,
    wanted: Vec<(Partition, u64)>,
) -> Result<(Vec<(Partition, Loaded)>, Vec<Damaged>), LakeError> {
    let results: Vec<_> = futures::stream::iter(wanted)
        .map(|(p, seq)| async move {
            let r = manifest::load(store, &p, seq).await;
            (p, seq, r)
        })
        .buffered(32)
        .collect()
        .await;
    let (mut loaded, mut damaged) = (Vec::new(), Vec::new());
    for (p, sequence, r) in results {
        match r {
            Ok(l) => loaded.push((p, l)),
            Err(LakeError::Corrupt { problem, .. }) => damaged.push(Damaged {
                partition: p,
                sequence,
                problem,
            }),
            Err(e) => return Err(e),
        }
    }
    Ok((loaded, damaged))
}

/// `verify`: a catalog sessions would trust (the newest head's, recording exactly the head's
/// partitions and versions) must hold bytes that hash to what the head records; with the
/// head's own check of every latest manifest, it then holds exactly the latest manifests. One
/// that records other versions is never used, and is not reported (a head re-signed in place
/// leaves one).
pub async fn check(
    store: &Store,
    head: &crate::head::Head,
    r: &mut super::verify::VerifyReport,
) -> Result<(), LakeError> {
    let object = layout::CatalogPath::new(head.sequence)
        .to_path()
        .to_string();
    let catalog = match load(store, head.sequence).await {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(()),
        Err(LakeError::Corrupt { problem, .. }) => {
            r.problem(&object, problem);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if catalog.head != head.sequence || catalog.positions() != head.partitions {
        return Ok(());
    }
    for e in &catalog.entries {
        let sha = manifest::sha256_hex(&catalog.bytes(e));
        if sha != e.position.sha256 {
            r.problem(
                &object,
                format!(
                    "partition {}: its copy of manifest v{} hashes to {sha}, but the head records {}",
                    e.partition, e.position.sequence, e.position.sha256
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
