//! The store head: one signed object (`head/v<20 digits>.json`) naming every partition's
//! latest manifest (sequence and SHA-256) and the position of each registry (`audit`,
//! `holds`, …), committed create-only with every batch, sweep and hold change, each version
//! naming its predecessor's hash. It is signed with a key that never enters the store
//! ([`Kms::sign`]), so `verify` checks it with the public key alone. Each head gets a catalog
//! ([`crate::lake::catalog`]): its manifests in one object, which query sessions read.
//!
//! A commit reloads the newest head, applies its own change (the partitions it committed;
//! the registries are read afresh) and retries on a lost race; it never lists the store,
//! except once to start a chain. Positions only move forward: a commit that finds a registry
//! behind the newest head refuses (someone truncated it), so holdfast never signs a rollback.

pub mod check;
pub mod intent;
pub mod verify;

use crate::audit::{Audit, AuditEvent};
use crate::crypto::kms::{Kms, PublicKey};
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::{self, Loaded};
use crate::lake::{LakeError, catalog};
use crate::storage::{Put, Store};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FORMAT: &str = "holdfast.head";
const VERSIONS: &[&str] = &["1"];
/// What a head signature covers: this context, then the head with an empty signature.
const SIGNING_CONTEXT: &[u8] = b"holdfast.head.v1\n";
/// Commits that may lose a race in a row before giving up.
const ATTEMPTS: u32 = 100;
/// Registry names in [`Head::registries`].
pub const AUDIT: &str = "audit";
pub const HOLDS: &str = "holds";
pub const ACCESS: &str = "access";

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Kms(#[from] crate::crypto::kms::KmsError),
    #[error("store head is busy: {0} commits lost the race in a row; run the command again")]
    Contended(u32),
    /// The store is behind its own head (truncated or rolled back): nothing is signed.
    #[error(
        "{0}; the store no longer matches its signed head: run `holdfast verify` (nothing was signed)"
    )]
    Behind(String),
}

/// Where a chain stands: a version and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub sequence: u64,
    pub sha256: String,
}

/// On-disk head, version 1 (frozen: a change is a new version). Stored as compact JSON (its
/// SHA-256 is the head's hash); golden file `fixtures/formats/head-v1.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum HeadFile {
    #[serde(rename = "1")]
    V1(HeadV1),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadV1 {
    format: String,
    sequence: u64,
    previous: Option<Position>,
    committed_at: DateTime<Utc>,
    change: String,
    /// Partition directory -> its latest manifest version.
    partitions: BTreeMap<String, Position>,
    registries: BTreeMap<String, Position>,
    /// Ed25519 public key, base64.
    public_key: String,
    /// Ed25519 signature, base64, over [`SIGNING_CONTEXT`] and this head with `signature: ""`.
    signature: String,
}

/// A store head as read (or about to be written).
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub sequence: u64,
    pub previous: Option<Position>,
    pub committed_at: DateTime<Utc>,
    /// What committed it: `batch <id>`, `sweep <id>`, `hold apply <id>`, …
    pub change: String,
    pub partitions: BTreeMap<Partition, Position>,
    pub registries: BTreeMap<String, Position>,
    pub public_key: PublicKey,
    pub signature: Vec<u8>,
}

impl Head {
    fn to_file(&self, signature: &[u8]) -> HeadFile {
        HeadFile::V1(HeadV1 {
            format: FORMAT.into(),
            sequence: self.sequence,
            previous: self.previous.clone(),
            committed_at: self.committed_at,
            change: self.change.clone(),
            partitions: self
                .partitions
                .iter()
                .map(|(p, pos)| (p.dir(), pos.clone()))
                .collect(),
            registries: self.registries.clone(),
            public_key: self.public_key.to_base64(),
            signature: B64.encode(signature),
        })
    }

    /// The bytes the signature covers.
    fn signed_message(&self) -> Vec<u8> {
        let mut m = SIGNING_CONTEXT.to_vec();
        m.extend(serde_json::to_vec(&self.to_file(&[])).expect("head serializes"));
        m
    }

    /// The stored form (compact JSON): its SHA-256 is the head's hash.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_file(&self.signature)).expect("head serializes")
    }

    pub fn from_bytes(bytes: &[u8], object: &str) -> Result<Self, LakeError> {
        let corrupt = |problem: String| LakeError::Corrupt {
            object: object.to_string(),
            problem,
        };
        let HeadFile::V1(f) = crate::format::decode(bytes, FORMAT, VERSIONS)
            .map_err(|e| corrupt(format!("not a store head: {e}")))?;
        let mut partitions = BTreeMap::new();
        for (dir, pos) in f.partitions {
            let p = Partition::parse_dir(&dir)
                .ok_or_else(|| corrupt(format!("{dir} is not a partition")))?;
            partitions.insert(p, pos);
        }
        Ok(Head {
            sequence: f.sequence,
            previous: f.previous,
            committed_at: f.committed_at,
            change: f.change,
            partitions,
            registries: f.registries,
            public_key: PublicKey::from_base64(&f.public_key)
                .ok_or_else(|| corrupt("public key is not 32 bytes of base64".into()))?,
            signature: B64
                .decode(&f.signature)
                .map_err(|_| corrupt("signature is not base64".into()))?,
        })
    }

    /// Signs the head with `kms` (its public key replaces the one recorded).
    pub async fn sign(&mut self, kms: &dyn Kms) -> Result<(), HeadError> {
        self.signature = Vec::new();
        let message = self.signed_message();
        // the key is part of what is signed: learn it first
        let first = kms.sign(&message).await?;
        if first.public_key == self.public_key {
            self.signature = first.signature;
            return Ok(());
        }
        self.public_key = first.public_key;
        let signed = kms.sign(&self.signed_message()).await?;
        self.public_key = signed.public_key;
        self.signature = signed.signature;
        Ok(())
    }

    /// Whether the recorded public key signed this head.
    pub fn signature_ok(&self) -> bool {
        self.public_key
            .verify(&self.signed_message(), &self.signature)
    }

    pub fn sha256(&self) -> String {
        manifest::sha256_hex(&self.to_bytes())
    }

    pub fn position(&self) -> Position {
        Position {
            sequence: self.sequence,
            sha256: self.sha256(),
        }
    }
}

/// A head as stored, with the SHA-256 of its bytes.
#[derive(Debug, Clone)]
pub struct LoadedHead {
    pub head: Head,
    pub sha256: String,
}

/// Every head version's sequence, in order.
pub async fn sequences(store: &Store) -> Result<Vec<u64>, LakeError> {
    store
        .versions(layout::HEADS, |p| {
            layout::HeadPath::parse(p).map(|h| h.sequence)
        })
        .await
}

pub async fn load(store: &Store, sequence: u64) -> Result<LoadedHead, LakeError> {
    let path = layout::HeadPath::new(sequence).to_path();
    let bytes = store.get(&path).await?;
    let head = Head::from_bytes(&bytes, path.as_ref())?;
    if head.sequence != sequence {
        return Err(LakeError::Corrupt {
            object: path.to_string(),
            problem: format!("says sequence {}", head.sequence),
        });
    }
    Ok(LoadedHead {
        head,
        sha256: manifest::sha256_hex(&bytes),
    })
}

/// The newest head, if the store has one.
pub async fn newest(store: &Store) -> Result<Option<LoadedHead>, LakeError> {
    match sequences(store).await?.last() {
        Some(&seq) => Ok(Some(load(store, seq).await?)),
        None => Ok(None),
    }
}

/// What one commit changed: the manifest versions it committed.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub id: String,
    pub partitions: BTreeMap<Partition, Position>,
}

impl Change {
    pub fn new(id: impl Into<String>) -> Self {
        Change {
            id: id.into(),
            partitions: BTreeMap::new(),
        }
    }

    /// Records a committed manifest version (a later one of the same partition wins).
    pub fn manifest(&mut self, l: &Loaded) {
        let pos = Position {
            sequence: l.manifest.sequence,
            sha256: l.sha256.clone(),
        };
        let e = self
            .partitions
            .entry(l.manifest.partition.clone())
            .or_insert_with(|| pos.clone());
        if pos.sequence > e.sequence {
            *e = pos;
        }
    }
}

/// A chain was started (the first head of a store, or of a store that lost its chain).
#[derive(Debug, Serialize)]
pub struct HeadStarted {
    pub public_key: String,
    pub partitions: usize,
}
impl AuditEvent for HeadStarted {
    const ACTION: &'static str = "head.started";
}

/// The registries' positions now; refuses one behind `newest` (truncated or rolled back).
async fn registries(
    store: &Store,
    audit: &Audit,
    newest: Option<&Head>,
) -> Result<BTreeMap<String, Position>, HeadError> {
    let mut out = BTreeMap::new();
    let a = audit.head().await?;
    if let Some(sha256) = a.sha256 {
        out.insert(
            AUDIT.to_string(),
            Position {
                sequence: a.sequence,
                sha256,
            },
        );
    }
    let (registry, sha) = crate::retention::hold::load(store).await?;
    if let Some(sha256) = sha {
        out.insert(
            HOLDS.to_string(),
            Position {
                sequence: registry.sequence,
                sha256,
            },
        );
    }
    let policy = crate::access::policy::head(store)
        .await
        .map_err(|e| LakeError::Corrupt {
            object: layout::ACCESS.to_string(),
            problem: e.to_string(),
        })?;
    if let Some((sequence, sha256)) = policy {
        out.insert(ACCESS.to_string(), Position { sequence, sha256 });
    }
    if let Some(n) = newest {
        for (name, was) in &n.registries {
            match out.get(name) {
                Some(now) if now.sequence > was.sequence => {}
                Some(now) if *now == *was => {}
                now => {
                    return Err(HeadError::Behind(format!(
                        "{name} is at {}, but head v{} records v{} ({})",
                        now.map_or("nothing".to_string(), |p| format!("v{}", p.sequence)),
                        n.sequence,
                        was.sequence,
                        was.sha256
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// Refuses to build on a store that no longer matches its newest head: a partition whose
/// latest manifest differs from the one the head records, or a registry behind it. Batches
/// and sweeps call it before they change anything, so holdfast never signs a rollback.
/// `damaged`: partitions whose latest manifest cannot be read; the caller leaves them alone
/// (and `verify` reports them), so they are not held against the rest of the store.
pub async fn check_current(
    store: &Store,
    audit: &Audit,
    latest: &BTreeMap<Partition, Loaded>,
    damaged: &std::collections::BTreeSet<Partition>,
) -> Result<(), HeadError> {
    let Some(n) = newest(store).await? else {
        return Ok(());
    };
    check::consistent(&n.head, latest, damaged).map_err(HeadError::Behind)?;
    registries(store, audit, Some(&n.head)).await?;
    Ok(())
}

/// What a commit writes and signs with.
#[derive(Debug, Clone, Copy)]
pub struct Committer<'a> {
    pub store: &'a Store,
    pub kms: &'a dyn Kms,
    pub audit: &'a Audit,
}

/// Commits the next head: the newest one with `change` applied and the registries read now.
/// A store without a head starts its chain (listing the manifests once, audited).
pub async fn commit(
    c: Committer<'_>,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<Head, HeadError> {
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let ms = 1 + rand::RngCore::next_u32(&mut rand::rng()) % (2 + attempt.min(50));
            tokio::time::sleep(std::time::Duration::from_millis(ms as u64)).await;
        }
        let newest = newest(c.store).await?;
        let mut partitions = match &newest {
            Some(n) => n.head.partitions.clone(),
            None => start_chain(c).await?,
        };
        for (p, pos) in &change.partitions {
            match partitions.get(p) {
                Some(cur) if cur.sequence > pos.sequence => {}
                Some(cur) if cur.sequence == pos.sequence && cur.sha256 != pos.sha256 => {
                    return Err(HeadError::Behind(format!(
                        "{p}: v{} hashes to {}, but the head records {}",
                        pos.sequence, pos.sha256, cur.sha256
                    )));
                }
                _ => {
                    partitions.insert(p.clone(), pos.clone());
                }
            }
        }
        let registries = registries(c.store, c.audit, newest.as_ref().map(|n| &n.head)).await?;
        let mut head = Head {
            sequence: newest.as_ref().map_or(1, |n| n.head.sequence + 1),
            previous: newest.as_ref().map(|n| Position {
                sequence: n.head.sequence,
                sha256: n.sha256.clone(),
            }),
            committed_at: now,
            change: change.id.clone(),
            partitions,
            registries,
            public_key: newest
                .as_ref()
                .map_or(PublicKey([0; 32]), |n| n.head.public_key),
            signature: Vec::new(),
        };
        if let Some(n) = &newest
            && n.head.partitions == head.partitions
            && n.head.registries == head.registries
        {
            catalog::write(c.store, n.head.sequence, &n.head.partitions, None).await?;
            // a log left behind by a commit killed after its head catches up here
            crate::lake::table::publish(c.store).await?;
            return Ok(n.head.clone());
        }
        head.sign(c.kms).await?;
        if c.store
            .put_new(&layout::head(head.sequence), head.to_bytes())
            .await?
            == Put::Created
        {
            let prev = newest.map(|n| n.head.sequence);
            catalog::write(c.store, head.sequence, &head.partitions, prev).await?;
            crate::lake::table::publish(c.store).await?;
            return Ok(head);
        }
    }
    Err(HeadError::Contended(ATTEMPTS))
}

/// The partitions of a store's first head: one listing of the manifests (audited).
async fn start_chain(c: Committer<'_>) -> Result<BTreeMap<Partition, Position>, HeadError> {
    let partitions: BTreeMap<Partition, Position> = manifest::load_latest_all(c.store)
        .await?
        .into_iter()
        .map(|l| {
            (
                l.manifest.partition.clone(),
                Position {
                    sequence: l.manifest.sequence,
                    sha256: l.sha256,
                },
            )
        })
        .collect();
    let signed = c.kms.sign(SIGNING_CONTEXT).await?;
    c.audit
        .record(
            "holdfast",
            None,
            &HeadStarted {
                public_key: signed.public_key.to_base64(),
                partitions: partitions.len(),
            },
        )
        .await?;
    Ok(partitions)
}

/// `holdfast anchor`: the newest head's sequence and SHA-256 and the signing key's
/// fingerprint, in one line to publish outside the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub sequence: u64,
    pub sha256: String,
    pub key_fingerprint: String,
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "holdfast-anchor v1 head={} sha256={} key={}",
            self.sequence, self.sha256, self.key_fingerprint
        )
    }
}

impl std::str::FromStr for Anchor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "not an anchor line (expected `{}`): {s:?}",
                "holdfast-anchor v1 head=<n> sha256=<hex> key=ed25519:<hex>"
            )
        };
        let mut it = s.split_whitespace();
        if it.next() != Some("holdfast-anchor") || it.next() != Some("v1") {
            return Err(bad());
        }
        let mut field = |name: &str| {
            it.next()
                .and_then(|f| f.strip_prefix(name))
                .and_then(|f| f.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(bad)
        };
        let sequence = field("head")?.parse().map_err(|_| bad())?;
        let sha256 = field("sha256")?;
        let key_fingerprint = field("key")?;
        let hex_ok = |h: &str, n: usize| h.len() == n && h.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok(&sha256, 64)
            || !key_fingerprint
                .strip_prefix("ed25519:")
                .is_some_and(|h| hex_ok(h, 32))
            || it.next().is_some()
        {
            return Err(bad());
        }
        Ok(Anchor {
            sequence,
            sha256,
            key_fingerprint,
        })
    }
}

impl LoadedHead {
    pub fn anchor(&self) -> Anchor {
        Anchor {
            sequence: self.head.sequence,
            sha256: self.sha256.clone(),
            key_fingerprint: self.head.public_key.fingerprint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::block;

    #[test]
    fn heads_round_trip_and_signatures_bind_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let ring =
            crate::crypto::kms::LocalKeyring::create(&dir.path().join("k.json"), "x").unwrap();
        let mut h = Head {
            sequence: 3,
            previous: Some(Position {
                sequence: 2,
                sha256: "ab".repeat(32),
            }),
            committed_at: DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
            change: "batch b".into(),
            partitions: [(
                Partition::new(2025, 1, 5, "CALL").unwrap(),
                Position {
                    sequence: 7,
                    sha256: "cd".repeat(32),
                },
            )]
            .into(),
            registries: [(
                AUDIT.to_string(),
                Position {
                    sequence: 9,
                    sha256: "ef".repeat(32),
                },
            )]
            .into(),
            public_key: PublicKey([0; 32]),
            signature: vec![],
        };
        block(h.sign(&ring)).unwrap();
        assert!(h.signature_ok());
        let back = Head::from_bytes(&h.to_bytes(), "x").unwrap();
        assert_eq!(back, h);
        assert!(back.signature_ok());
        let mut moved = back.clone();
        moved.partitions.values_mut().next().unwrap().sequence = 6;
        assert!(
            !moved.signature_ok(),
            "a rolled-back partition breaks the signature"
        );
        let mut other = back.clone();
        other.registries.clear();
        assert!(!other.signature_ok());
        let anchor = LoadedHead {
            sha256: h.sha256(),
            head: h,
        }
        .anchor();
        assert_eq!(anchor.to_string().parse::<Anchor>(), Ok(anchor.clone()));
        assert!("holdfast-anchor v1 head=1".parse::<Anchor>().is_err());
    }
}

#[cfg(test)]
mod format_tests;
