//! Object storage: everything holdfast keeps goes through a [`Store`], opened from a
//! [`StoreUrl`] (a plain path or `file:///abs/path`, `s3://bucket/prefix`, or
//! `memory://<name>`).
//!
//! A `Store` is a thin, backend-neutral layer over one [`Backend`]:
//! - [`local`]: a directory. Reads go through `object_store`'s `LocalFileSystem`; writes
//!   through a durable write path (staged outside `lake/`, fsynced, linked into place
//!   create-only, directory fsynced), with the store's file modes;
//! - [`s3`]: a versioned bucket with Object Lock; locks are the provider's (retention and
//!   legal holds on the object version), deletes remove versions;
//! - [`memory`]: `object_store`'s `InMemory`, for tests and embedding; nothing is durable and
//!   the local-only steps (modes, staging, directory syncs) do not exist there.
//!
//! Adding a backend is one file implementing [`Backend`] and [`lock::ObjectLock`],
//! plus one [`StoreUrl`] variant with its arms in [`StoreUrl::parse`], `Display` and
//! [`Store::open`]/[`Store::init`]. Nothing outside this module names a backend or a
//! filesystem path of the store: messages use [`Store::describe`].
//!
//! Create-only puts are the commit primitive: [`Store::put_new`] reports `AlreadyExists` as
//! an outcome, not an error; uploads ([`Store::start_upload`]) are create-only too.
//!
//! Durability: a write or delete through a plain `Store` is on stable storage when it returns.
//! A [`Store::deferred`] handle leaves the local directory syncs to the caller's
//! [`Store::sync`] barrier (one per commit phase), and a completed upload always does: callers
//! sync before anything that names the object (a manifest) is committed.
//!
//! Object locks ([`lock`]): an object has a retain-until that can only be extended and a
//! legal-hold flag; [`Store::delete_checked`] refuses a locked object by the one rule
//! [`Lock::refusal`], whatever the caller believes. Leases ([`lease`]) serialise jobs on any
//! backend with create-only puts, expiry and fencing tokens.

pub mod lease;
pub mod local;
pub mod lock;
pub mod marker;
pub mod memory;
pub mod s3;

#[cfg(test)]
mod contract;
#[cfg(test)]
mod tests;

use crate::lake::LakeError;
use bytes::Bytes;
use futures::TryStreamExt;
pub use lock::Lock;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a store lives, parsed from `--store` or a pipeline's `[store] path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A directory: a plain path (relative to the working directory) or `file:///abs/path`.
    Local(PathBuf),
    /// `memory://<name>`: an in-memory store, shared by every open of the same name in this
    /// process and gone when it ends.
    Memory(String),
    /// `s3://bucket/prefix`: a versioned bucket with Object Lock (the prefix may be empty).
    S3 { bucket: String, prefix: String },
}

impl StoreUrl {
    /// Reads a path or URL. Schemes other than `file://` and `memory://` are refused by name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = s.split_once("://").filter(|(scheme, _)| {
            scheme.len() > 1
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+')
        }) else {
            return match s {
                "" => Err("the store location is empty".into()),
                _ => Ok(StoreUrl::Local(PathBuf::from(s))),
            };
        };
        match scheme {
            "file" => url::Url::parse(s)
                .ok()
                .filter(|u| u.host_str().unwrap_or("").is_empty())
                .and_then(|u| u.to_file_path().ok())
                .map(StoreUrl::Local)
                .ok_or_else(|| format!("{s}: a file URL names an absolute path: file:///path")),
            "memory" if valid_memory_name(rest) => Ok(StoreUrl::Memory(rest.to_string())),
            "memory" => Err(format!(
                "{s}: a memory store is named memory://<name> (letters, digits, '-', '_', '.')"
            )),
            "s3" => parse_s3(rest).map_err(|e| format!("{s}: {e}")),
            other => Err(format!(
                "{s}: {other}:// stores are not supported (a path, file:///path, s3://bucket/prefix or memory://name)"
            )),
        }
    }

    /// A local directory store.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        StoreUrl::Local(dir.into())
    }

    /// The directory of a local store, as given (for checks on the caller's own paths, such
    /// as keeping a keyring outside the store); `None` for other backends.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match self {
            StoreUrl::Local(p) => Some(p),
            StoreUrl::Memory(_) | StoreUrl::S3 { .. } => None,
        }
    }

    /// Whether the store is reached over the network (opening it can fail for reasons other
    /// than its absence: credentials, the bucket's settings).
    pub fn is_remote(&self) -> bool {
        matches!(self, StoreUrl::S3 { .. })
    }
}

/// `bucket[/prefix]` of an `s3://` URL: a valid bucket name and a prefix of plain segments.
fn parse_s3(rest: &str) -> Result<StoreUrl, String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.'])
        && !bucket.contains("..");
    if !bucket_ok {
        return Err(format!(
            "'{bucket}' is not an S3 bucket name (3-63 lowercase letters, digits, '-', '.')"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    let bad = prefix.split('/').any(|seg| {
        seg.is_empty() || seg == "." || seg == ".." || seg.chars().any(|c| c.is_control())
    });
    if !prefix.is_empty() && bad {
        return Err(format!(
            "'{prefix}' is not a usable prefix (segments separated by single '/', no '.' or '..')"
        ));
    }
    Ok(StoreUrl::S3 {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    })
}

fn valid_memory_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl std::str::FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        StoreUrl::parse(s)
    }
}

impl TryFrom<String> for StoreUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        StoreUrl::parse(&s)
    }
}

impl<'de> serde::Deserialize<'de> for StoreUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StoreUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Local(p) => write!(f, "{}", p.display()),
            StoreUrl::Memory(n) => write!(f, "memory://{n}"),
            StoreUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Outcome of a create-only put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    AlreadyExists,
}

/// When the directory entries a write changed reach stable storage (local backend; the
/// others are durable, or not, when a call returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the call returns.
    Now,
    /// At the next [`Store::sync`] (the caller's commit-phase barrier).
    Deferred,
    /// The object's own directory entry at the caller's [`Store::sync_dir_of`] (directories
    /// the write made are synced before it returns): for a writer that puts many objects in
    /// one directory and shares no barrier with anyone.
    Caller,
}

/// What a storage backend does. Reads go through [`Backend::reader`] (an `object_store`);
/// writes are create-only puts, deletes and create-only uploads; the lock state comes from
/// the [`lock::ObjectLock`] half. The rules (create-only, lock checks) live in [`Store`].
#[async_trait::async_trait]
pub(crate) trait Backend: lock::ObjectLock + std::fmt::Debug + Send + Sync {
    /// The read side: gets, heads, listings, Parquet readers and query sessions.
    fn reader(&self) -> Arc<dyn ObjectStore>;
    /// Where the store is, for messages (a directory, `memory://name`).
    fn describe(&self) -> String;
    /// Writes `bytes` at `path` unless something is there already.
    async fn put_new(
        &self,
        path: &Path,
        bytes: PutPayload,
        d: Durability,
    ) -> Result<Put, LakeError>;
    /// Removes `path`; a missing object is not an error.
    async fn delete(&self, path: &Path, d: Durability) -> Result<(), LakeError>;
    /// An upload that appears at `path` only when complete, and never replaces an object
    /// (`object_store::Error::AlreadyExists` from `complete`).
    async fn start_upload(&self, path: &Path) -> Result<Box<dyn MultipartUpload>, LakeError>;
    /// The first half of a create-only put at `path`: the bytes made durable outside the
    /// object namespace. The default keeps them in memory (nothing to make durable).
    async fn stage_new(
        &self,
        path: &Path,
        bytes: PutPayload,
        _: Durability,
    ) -> Result<Staged, LakeError> {
        Ok(Staged {
            path: path.clone(),
            bytes: StagedBytes::Memory(bytes),
        })
    }
    /// The second half: the staged bytes appear at their path unless something is there.
    async fn put_staged(&self, staged: Staged, d: Durability) -> Result<Put, LakeError> {
        match staged.bytes {
            StagedBytes::Memory(bytes) => self.put_new(&staged.path, bytes, d).await,
            StagedBytes::Local(_) => Err(LakeError::io(
                format!("writing {}", staged.path),
                std::io::Error::other("staged by another backend"),
            )),
        }
    }
    /// The barrier for [`Durability::Deferred`] writes.
    async fn sync(&self) -> Result<(), LakeError> {
        Ok(())
    }
    /// Makes the directory holding `path` durable, for [`Durability::Caller`] writes.
    async fn sync_dir_of(&self, _path: &Path) -> Result<(), LakeError> {
        Ok(())
    }
    /// Reads of `path` fetch object version `version` from now on (S3; a no-op where objects
    /// have no versions).
    fn pin(&self, _path: &Path, _version: &str) {}
    /// The SHA-256 (hex) of the bytes this process's upload of `path` sent, where the
    /// provider checked them against a checksum on the way (S3); `None` elsewhere.
    fn upload_sha256(&self, _path: &Path) -> Option<String> {
        None
    }
    /// What hides or replaces the pinned version of `path` for anyone reading it by key (a
    /// delete marker, a newer version), with the command that undoes it; `None` when nothing
    /// does or the backend has no versions.
    async fn shadowed(&self, _path: &Path) -> Result<Option<String>, LakeError> {
        Ok(None)
    }
    /// Whether each request is a network round trip billed on its own (S3), so that one
    /// listing beats a stat per object.
    fn remote(&self) -> bool {
        false
    }
    /// The clock the provider judges retain-until by, where that is not holdfast's (S3);
    /// `None`: holdfast's own rule is the lock (local, memory).
    fn provider_now(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        None
    }
    /// Removes what killed writers left outside the object namespace; how many.
    fn remove_abandoned_staging(&self) -> usize {
        0
    }
    /// Whether the store's group may read it (local file modes).
    fn group_readable(&self) -> bool {
        false
    }
}

/// A create-only put staged ahead of its link ([`Store::stage_new`]): its bytes are durable
/// where the backend keeps them, under no name yet. Dropped unlinked, it leaves nothing.
#[derive(Debug)]
pub struct Staged {
    path: Path,
    bytes: StagedBytes,
}

#[derive(Debug)]
enum StagedBytes {
    Memory(PutPayload),
    Local(local::StagedFile),
}

impl Staged {
    /// Where it will appear.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A store, on whichever backend its URL names. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    durability: Durability,
}

impl Store {
    /// Opens the store at `url`, creating it (an empty directory, a new memory store) if
    /// asked. A local store's objects get the modes its store marker records.
    pub fn open(url: &StoreUrl, create: bool) -> Result<Self, LakeError> {
        let backend: Arc<dyn Backend> = match url {
            StoreUrl::Local(dir) => Arc::new(local::Local::open(dir, create)?),
            StoreUrl::Memory(name) => memory::Memory::open(name, create)?,
            StoreUrl::S3 { bucket, prefix } => Arc::new(s3::S3::open(bucket, prefix, false)?),
        };
        Ok(Self::with(backend))
    }

    /// Creates (or opens) a store for `init`; a local one with owner-only modes or, when
    /// `group_readable`, modes that let the store's group read (the caller records the choice
    /// in the store marker); an S3 one in its bucket, which `create_bucket` creates with
    /// Object Lock when it is missing.
    pub fn init(
        url: &StoreUrl,
        group_readable: bool,
        create_bucket: bool,
    ) -> Result<Self, LakeError> {
        let backend: Arc<dyn Backend> = match url {
            StoreUrl::Local(dir) => Arc::new(local::Local::init(dir, group_readable)?),
            StoreUrl::Memory(name) => memory::Memory::open(name, true)?,
            StoreUrl::S3 { bucket, prefix } => {
                Arc::new(s3::S3::open(bucket, prefix, create_bucket)?)
            }
        };
        Ok(Self::with(backend))
    }

    /// Test support: a fresh in-memory store under a name of its own.
    #[cfg(test)]
    pub(crate) fn memory_for_tests() -> Store {
        let name = format!("test-{:016x}", rand::random::<u64>());
        Store::open(&StoreUrl::Memory(name), true).expect("a new memory store")
    }

    fn with(backend: Arc<dyn Backend>) -> Self {
        Store {
            backend,
            durability: Durability::Now,
        }
    }

    /// Where the store is, for messages: its directory, or `memory://name`.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Reads of `path` through this store fetch object version `version` (S3), the one a
    /// manifest records: a later version or a delete marker over the key changes nothing
    /// they read. A no-op on backends without versions.
    pub fn pin(&self, path: &Path, version: &str) {
        self.backend.pin(path, version)
    }

    /// Checks that the bytes the upload of `path` sent, which the provider accepted against
    /// their checksums (S3), are the bytes `sha256` (the manifest's hash) describes; nothing
    /// to check on backends without upload checksums.
    pub fn confirm_upload(&self, path: &Path, sha256: &str) -> Result<(), LakeError> {
        match self.backend.upload_sha256(path) {
            Some(sent) if sent != sha256 => Err(LakeError::Corrupt {
                object: path.to_string(),
                problem: format!(
                    "the upload sent bytes with SHA-256 {sent}, the file written has {sha256}"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// What hides or replaces the committed (pinned) version of `path` for readers by key,
    /// and how to undo it (S3: a delete marker, a version written over it); `None` elsewhere.
    pub async fn shadowed(&self, path: &Path) -> Result<Option<String>, LakeError> {
        self.backend.shadowed(path).await
    }

    /// Whether each request is a network round trip (S3): callers then prefer one listing to
    /// a stat per object.
    pub fn remote(&self) -> bool {
        self.backend.remote()
    }

    /// Whether objects are created group-readable (0640) rather than owner-only (0600).
    pub fn group_readable(&self) -> bool {
        self.backend.group_readable()
    }

    /// The same store, with directory syncs left to [`Store::sync`] (one barrier per commit
    /// phase). Shares the set of directories waiting with every handle of this store.
    pub fn deferred(&self) -> Store {
        Store {
            durability: Durability::Deferred,
            ..self.clone()
        }
    }

    /// The same store, with each write's own directory entry left to
    /// [`Store::sync_dir_of`]: for many puts in one directory made durable by one sync that
    /// no other writer's barrier shares (a server's group commit).
    pub fn dir_synced_by_caller(&self) -> Store {
        Store {
            durability: Durability::Caller,
            ..self.clone()
        }
    }

    /// Makes the directory holding `path` durable: what [`Store::dir_synced_by_caller`] left.
    pub async fn sync_dir_of(&self, path: &Path) -> Result<(), LakeError> {
        self.backend.sync_dir_of(path).await
    }

    /// The barrier: every directory a deferred write, delete or completed upload changed is
    /// on stable storage when this returns.
    pub async fn sync(&self) -> Result<(), LakeError> {
        self.backend.sync().await
    }

    /// The read side, for Parquet readers and query sessions.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.backend.reader()
    }

    /// Create-only put: `AlreadyExists` (an outcome) when something is at `path`.
    pub async fn put_new(
        &self,
        path: &Path,
        bytes: impl Into<PutPayload>,
    ) -> Result<Put, LakeError> {
        self.backend
            .put_new(path, bytes.into(), self.durability)
            .await
    }

    /// A create-only put in two steps, for many objects committed one after the other: each
    /// is staged first (on a local store written and fsynced outside the namespace, so many
    /// stagings at once overlap their fsyncs; call only under the batch lease, which owns
    /// abandoned stagings), then [`Store::put_staged`] links it, in the caller's order.
    pub async fn stage_new(
        &self,
        path: &Path,
        bytes: impl Into<PutPayload>,
    ) -> Result<Staged, LakeError> {
        self.backend
            .stage_new(path, bytes.into(), self.durability)
            .await
    }

    /// Links a staged put at its path: `AlreadyExists` (an outcome) when something is there,
    /// as [`Store::put_new`].
    pub async fn put_staged(&self, staged: Staged) -> Result<Put, LakeError> {
        self.backend.put_staged(staged, self.durability).await
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes, LakeError> {
        let r = self
            .backend
            .reader()
            .get(path)
            .await
            .map_err(|e| LakeError::store("reading", path.as_ref(), e))?;
        r.bytes()
            .await
            .map_err(|e| LakeError::store("reading", path.as_ref(), e))
    }

    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>, LakeError> {
        match self.get(path).await {
            Ok(b) => Ok(Some(b)),
            Err(LakeError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn head(&self, path: &Path) -> Result<Option<ObjectMeta>, LakeError> {
        match self.backend.reader().head(path).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(LakeError::store("reading", path.as_ref(), e)),
        }
    }

    /// Every object under `prefix` (recursive), sorted by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, LakeError> {
        let p = Path::from(prefix);
        let mut v: Vec<ObjectMeta> = self
            .backend
            .reader()
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|e| LakeError::store("listing", prefix, e))?;
        v.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(v)
    }

    /// The numbers `parse` reads from the names under `prefix`, in order: a chain's versions
    /// (heads, audit entries, access policies, Delta log versions).
    pub async fn versions(
        &self,
        prefix: &str,
        parse: impl Fn(&Path) -> Option<u64>,
    ) -> Result<Vec<u64>, LakeError> {
        let mut v: Vec<u64> = self
            .list(prefix)
            .await?
            .iter()
            .filter_map(|m| parse(&m.location))
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Deletes an object whatever its lock says (uncommitted leftovers, landing segments,
    /// lease versions); a missing object is not an error (deletes are retried after crashes).
    /// Committed data goes through [`Store::delete_checked`].
    pub async fn delete(&self, path: &Path) -> Result<(), LakeError> {
        self.backend.delete(path, self.durability).await
    }

    /// Starts writing a new object. Objects are write-once: an existing one is never
    /// overwritten (`ObjectLocked` when its lock protects it, else a conflict).
    pub async fn start_upload(&self, path: &Path) -> Result<Box<dyn MultipartUpload>, LakeError> {
        if self.head(path).await?.is_some() {
            let lock = self.lock(path).await?;
            if lock.legal_hold || lock.retain_until.is_some() {
                return Err(LakeError::ObjectLocked {
                    object: path.to_string(),
                    reason: "locked objects cannot be overwritten".into(),
                });
            }
            return Err(LakeError::Conflict(format!(
                "{path} already exists; objects are written once"
            )));
        }
        self.backend.start_upload(path).await
    }

    /// Removes staging files a killed process left behind outside the object namespace (the
    /// local backend's `.staging/`). Call only while holding the batch lease. Returns how
    /// many were removed.
    pub fn remove_abandoned_staging(&self) -> usize {
        self.backend.remove_abandoned_staging()
    }
}
