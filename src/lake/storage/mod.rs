//! Object storage. Everything holdfast keeps goes through [`Store`], a thin layer over the
//! local filesystem (S3 later changes this module only). Reads go through `object_store`'s
//! `LocalFileSystem`; writes through holdfast's own durable write path ([`local`]): staged
//! outside `lake/`, fsynced, linked into place create-only, directory fsynced.
//! Create-only puts are the commit primitive: [`Store::put_new`] reports `AlreadyExists`
//! as an outcome, not an error.
//!
//! Durability: a write or delete through a plain `Store` is on stable storage when it returns.
//! A [`Store::deferred`] handle leaves the directory syncs to the caller's [`Store::sync`]
//! barrier (one per commit phase), and a completed upload always does: callers sync before
//! anything that names the object (a manifest) is committed.
//!
//! File modes: objects are created 0600 and directories 0700, or 0640 and 0750 in a store
//! initialised `--group-readable` (the store marker records it).
//!
//! Object locks: a data file has a retain-until that can only be extended and a legal-hold
//! flag; [`Store::delete_checked`] refuses a locked object with `ObjectLocked`, whatever the
//! caller believes. The local backend keeps the lock state per object under `_locks/` (apart
//! from manifests and any hold registry, so wiping or rolling those back does not unlock
//! anything) and makes locked files read-only. Someone who can write to the directory can
//! still remove them: the local backend does not stop its owner, `verify` notices.

pub mod local;

use super::LakeError;
use bytes::Bytes;
use futures::TryStreamExt;
use local::{Linked, LocalFs, Modes, Sync};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;

/// Lock state of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lock {
    pub retain_until: Option<chrono::DateTime<chrono::Utc>>,
    pub legal_hold: bool,
}

fn lock_path(p: &Path) -> Path {
    super::layout::lock_record(p)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    AlreadyExists,
}

#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    local: Arc<LocalFs>,
    /// Local directory of the store (the embedded default backend).
    root: PathBuf,
    /// Directory syncs wait for [`Store::sync`].
    sync: Sync,
}

/// Whether the store marker at `root` says the store is shared with a group.
fn marker_says_group_readable(root: &std::path::Path) -> bool {
    std::fs::read(root.join(super::layout::STORE_MARKER))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("group_readable").and_then(|g| g.as_bool()))
        .unwrap_or(false)
}

fn io(context: impl std::fmt::Display, e: std::io::Error) -> LakeError {
    LakeError::io(context.to_string(), e)
}

impl Store {
    /// Opens (creating the directory if asked) a store on the local filesystem. Objects get
    /// the modes the store marker records (owner only unless the store is group-readable).
    pub fn open_local(root: &std::path::Path, create: bool) -> Result<Self, LakeError> {
        let group = marker_says_group_readable(root);
        Self::open_with(root, create, Modes::new(group))
    }

    /// Creates (or opens) a store directory for `init`, with owner-only modes or, when
    /// `group_readable`, modes that let the store's group read (the caller records the choice
    /// in the store marker). A directory it creates gets the directory mode; an existing one
    /// keeps its own.
    pub fn init_local(root: &std::path::Path, group_readable: bool) -> Result<Self, LakeError> {
        Self::open_with(root, true, Modes::new(group_readable))
    }

    fn open_with(root: &std::path::Path, create: bool, modes: Modes) -> Result<Self, LakeError> {
        if create && !root.is_dir() {
            LocalFs::new(PathBuf::new(), modes)
                .make_dirs(&std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()))
                .map_err(|e| {
                    io(
                        format_args!("creating store directory {}", root.display()),
                        e,
                    )
                })?;
        }
        let root = root
            .canonicalize()
            .map_err(|e| io(format_args!("store {}", root.display()), e))?;
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| LakeError::store("opening", &root.display().to_string(), e))?;
        Ok(Store {
            inner: Arc::new(fs),
            local: Arc::new(LocalFs::new(root.clone(), modes)),
            root,
            sync: Sync::Now,
        })
    }

    /// Whether objects are created group-readable (0640) rather than owner-only (0600).
    pub fn group_readable(&self) -> bool {
        self.local.modes() == Modes::new(true)
    }

    /// The same store, with directory syncs left to [`Store::sync`] (one barrier per commit
    /// phase). Shares the set of directories waiting with every handle of this store.
    pub fn deferred(&self) -> Store {
        Store {
            sync: Sync::Deferred,
            ..self.clone()
        }
    }

    /// The barrier: every directory a deferred write, delete or completed upload changed is
    /// on stable storage when this returns.
    pub async fn sync(&self) -> Result<(), LakeError> {
        let fs = self.local.clone();
        local::run(move || fs.sync())
            .await
            .map_err(|e| io("syncing the store", e))
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The read side, for Parquet readers and query sessions.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    /// Local path of an object (the filesystem backend only).
    pub fn local_path(&self, p: &Path) -> PathBuf {
        let mut out = self.root.clone();
        for part in p.parts() {
            out.push(part.as_ref());
        }
        out
    }

    pub async fn put_new(
        &self,
        path: &Path,
        bytes: impl Into<PutPayload>,
    ) -> Result<Put, LakeError> {
        let (fs, target, sync) = (self.local.clone(), self.local_path(path), self.sync);
        let bytes = local::owned(bytes.into());
        match local::run(move || fs.put_new(&target, &bytes, sync)).await {
            Ok(Linked::Created) => Ok(Put::Created),
            Ok(Linked::AlreadyExists) => Ok(Put::AlreadyExists),
            Err(e) => Err(io(format_args!("writing {path}"), e)),
        }
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes, LakeError> {
        let r = self
            .inner
            .get(path)
            .await
            .map_err(|e| LakeError::store("reading", path.as_ref(), e))?;
        r.bytes()
            .await
            .map_err(|e| LakeError::store("reading", path.as_ref(), e))
    }

    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>, LakeError> {
        match self.inner.get(path).await {
            Ok(r) => {
                Ok(Some(r.bytes().await.map_err(|e| {
                    LakeError::store("reading", path.as_ref(), e)
                })?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(LakeError::store("reading", path.as_ref(), e)),
        }
    }

    pub async fn head(&self, path: &Path) -> Result<Option<ObjectMeta>, LakeError> {
        match self.inner.head(path).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(LakeError::store("reading", path.as_ref(), e)),
        }
    }

    /// Every object under `prefix` (recursive), sorted by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, LakeError> {
        let p = Path::from(prefix);
        let mut v: Vec<ObjectMeta> = self
            .inner
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|e| LakeError::store("listing", prefix, e))?;
        v.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(v)
    }

    /// Deletes an object; a missing object is not an error (deletes are retried after crashes).
    pub async fn delete(&self, path: &Path) -> Result<(), LakeError> {
        let (fs, target, sync) = (self.local.clone(), self.local_path(path), self.sync);
        local::run(move || fs.delete(&target, sync))
            .await
            .map_err(|e| io(format_args!("deleting {path}"), e))
    }

    pub async fn lock(&self, path: &Path) -> Result<Lock, LakeError> {
        match self.get_opt(&lock_path(path)).await? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| LakeError::Corrupt {
                object: lock_path(path).to_string(),
                problem: e.to_string(),
            }),
            None => Ok(Lock::default()),
        }
    }

    async fn write_lock(&self, path: &Path, lock: &Lock) -> Result<(), LakeError> {
        let lp = lock_path(path);
        let (fs, target, sync) = (self.local.clone(), self.local_path(&lp), self.sync);
        let bytes = serde_json::to_vec(lock).expect("serializes");
        local::run(move || fs.put_replace(&target, &bytes, sync))
            .await
            .map_err(|e| io(format_args!("writing {lp}"), e))?;
        // defence in depth on the local filesystem: a locked file is read-only
        self.local.set_read_only(&self.local_path(path), true);
        Ok(())
    }
    /// Sets or extends an object's retain-until; shortening it is refused.
    pub async fn retain_until(
        &self,
        path: &Path,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), LakeError> {
        let mut lock = self.lock(path).await?;
        match lock.retain_until {
            Some(current) if until < current => {
                return Err(LakeError::ObjectLocked {
                    object: path.to_string(),
                    reason: format!("retain-until {current} can only be extended (asked {until})"),
                });
            }
            Some(current) if until == current => return Ok(()),
            _ => {}
        }
        lock.retain_until = Some(until);
        self.write_lock(path, &lock).await
    }

    /// Makes sure an object is retained at least until `until` (extends; never shortens).
    pub async fn ensure_retained(
        &self,
        path: &Path,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), LakeError> {
        match self.lock(path).await?.retain_until {
            Some(current) if current >= until => Ok(()),
            _ => self.retain_until(path, until).await,
        }
    }

    /// Sets or clears an object's legal-hold flag.
    pub async fn legal_hold(&self, path: &Path, on: bool) -> Result<(), LakeError> {
        let mut lock = self.lock(path).await?;
        if lock.legal_hold != on {
            lock.legal_hold = on;
            self.write_lock(path, &lock).await?;
        }
        Ok(())
    }

    /// Deletes an object unless its lock forbids it at `now` (then `ObjectLocked`).
    pub async fn delete_checked(
        &self,
        path: &Path,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), LakeError> {
        let lock = self.lock(path).await?;
        if lock.legal_hold {
            return Err(LakeError::ObjectLocked {
                object: path.to_string(),
                reason: "under legal hold".into(),
            });
        }
        if let Some(until) = lock.retain_until.filter(|u| *u > now) {
            return Err(LakeError::ObjectLocked {
                object: path.to_string(),
                reason: format!("retained until {until}"),
            });
        }
        self.delete(path).await?;
        self.delete(&lock_path(path)).await
    }

    /// Starts writing a new object. Objects are write-once: an existing one is never
    /// overwritten (`ObjectLocked` when its lock protects it, else a conflict).
    pub async fn start_upload(
        &self,
        path: &Path,
    ) -> Result<Box<dyn object_store::MultipartUpload>, LakeError> {
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
        let (fs, target) = (self.local.clone(), self.local_path(path));
        let upload = local::run(move || fs.start_upload(target))
            .await
            .map_err(|e| io(format_args!("writing {path}"), e))?;
        Ok(Box::new(upload))
    }

    /// Removes staging files a killed process left behind under `.staging/` (outside the
    /// lake). Call only while holding the batch lease. Returns how many were removed.
    pub fn remove_abandoned_staging(&self) -> usize {
        self.local.remove_abandoned_staging()
    }

    /// Directories waiting for the next [`Store::sync`].
    #[cfg(test)]
    fn pending_dirs(&self) -> usize {
        self.local.pending_dirs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use object_store::MultipartUpload;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn puts_are_create_only_and_take_the_store_modes() {
        for (group, file, dir) in [(false, 0o600, 0o700), (true, 0o640, 0o750)] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("store");
            let store = Store::init_local(&root, group).unwrap();
            assert_eq!(store.group_readable(), group);
            let p = Path::from("audit/v1.json");
            block(async {
                assert_eq!(
                    store.put_new(&p, b"one".to_vec()).await.unwrap(),
                    Put::Created
                );
                let again = store.put_new(&p, b"two".to_vec()).await.unwrap();
                assert_eq!(again, Put::AlreadyExists);
                assert_eq!(&store.get(&p).await.unwrap()[..], b"one");
            });
            assert_eq!(mode(&root.join("audit/v1.json")), file);
            assert_eq!(mode(&root.join("audit")), dir);
            assert_eq!(mode(&root), dir);
            // nothing left in staging
            assert_eq!(std::fs::read_dir(root.join(".staging")).unwrap().count(), 0);
        }
    }

    #[test]
    fn an_upload_appears_in_the_lake_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_local(dir.path(), true).unwrap();
        let p = Path::from("lake/year=2025/month=01/day=05/interaction_type=CALL/part-x.parquet");
        let target = store.local_path(&p);
        block(async {
            let mut up = store.start_upload(&p).await.unwrap();
            let a = up.put_part(b"hello ".to_vec().into());
            let b = up.put_part(b"world".to_vec().into());
            // awaited in any order, each part lands at its own offset
            b.await.unwrap();
            a.await.unwrap();
            assert!(
                !dir.path().join("lake").exists(),
                "nothing inside the lake yet"
            );
            assert_eq!(
                std::fs::read_dir(dir.path().join(".staging"))
                    .unwrap()
                    .count(),
                1
            );
            up.complete().await.unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), b"hello world");
            assert_eq!(
                std::fs::read_dir(dir.path().join(".staging"))
                    .unwrap()
                    .count(),
                0
            );
            assert!(
                store.pending_dirs() > 0,
                "the lake directories wait for the barrier"
            );
            store.sync().await.unwrap();
            assert_eq!(store.pending_dirs(), 0);
            // write-once, and an abandoned upload leaves nothing behind
            assert!(store.start_upload(&p).await.is_err());
            let q = Path::from("lake/other.parquet");
            let mut up = store.start_upload(&q).await.unwrap();
            up.put_part(b"x".to_vec().into()).await.unwrap();
            drop(up);
            assert_eq!(
                std::fs::read_dir(dir.path().join(".staging"))
                    .unwrap()
                    .count(),
                0
            );
            assert!(store.head(&q).await.unwrap().is_none());
        });
    }

    #[test]
    fn deferred_writes_and_deletes_wait_for_the_barrier() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_local(dir.path(), true).unwrap();
        let group = store.deferred();
        block(async {
            store
                .put_new(&Path::from("landing/a.seg"), b"a".to_vec())
                .await
                .unwrap();
            assert_eq!(
                store.pending_dirs(),
                0,
                "a plain put is durable when it returns"
            );
            group
                .put_new(&Path::from("manifests/p/v1.json"), b"m".to_vec())
                .await
                .unwrap();
            group.delete(&Path::from("landing/a.seg")).await.unwrap();
            assert!(store.pending_dirs() >= 2);
            store.sync().await.unwrap();
            assert_eq!(group.pending_dirs(), 0);
        });
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn locks_refuse_deletion_and_only_extend() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_local(dir.path(), true).unwrap();
        let p = Path::from("lake/x.parquet");
        let t0 = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        block(async {
            store.put_new(&p, b"data".to_vec()).await.unwrap();
            store.retain_until(&p, t0).await.unwrap();
            assert!(
                matches!(
                    store.retain_until(&p, t0 - Duration::days(1)).await,
                    Err(LakeError::ObjectLocked { .. })
                ),
                "cannot shorten"
            );
            store
                .retain_until(&p, t0 + Duration::days(1))
                .await
                .unwrap();
            assert!(
                matches!(
                    store.start_upload(&p).await,
                    Err(LakeError::ObjectLocked { .. })
                ),
                "no overwrite of a locked object"
            );
            let err = store.delete_checked(&p, t0).await.unwrap_err();
            assert!(err.to_string().starts_with("ObjectLocked"), "{err}");
            store.legal_hold(&p, true).await.unwrap();
            assert!(
                store
                    .delete_checked(&p, t0 + Duration::days(400))
                    .await
                    .is_err(),
                "a legal hold outlives retain-until"
            );
            store.legal_hold(&p, false).await.unwrap();
            // wiping everything but the lock layer unlocks nothing
            let _ = std::fs::remove_dir_all(dir.path().join("manifests"));
            assert!(store.delete_checked(&p, t0).await.is_err());
            store
                .delete_checked(&p, t0 + Duration::days(2))
                .await
                .unwrap();
            assert!(store.head(&p).await.unwrap().is_none());
            assert_eq!(store.lock(&p).await.unwrap(), Lock::default());
        });
    }
}
