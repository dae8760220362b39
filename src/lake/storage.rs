//! Object storage. Everything holdfast keeps goes through [`Store`], a thin layer over an
//! `object_store` backend (the local filesystem now; S3 later changes this module only).
//! Create-only puts are the commit primitive: [`Store::put_new`] reports `AlreadyExists`
//! as an outcome, not an error.
//!
//! Object locks (S3 Object Lock semantics): a data file has a retain-until that can only be
//! extended and a legal-hold flag; [`Store::delete_checked`] refuses a locked object with
//! `ObjectLocked`, whatever the caller believes. The local backend keeps the lock state per
//! object under `_locks/` (apart from manifests and any hold registry, so wiping or rolling
//! those back does not unlock anything) and makes locked files read-only.

use super::LakeError;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;

/// Lock state of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lock {
    pub retain_until: Option<chrono::DateTime<chrono::Utc>>,
    pub legal_hold: bool,
}

fn lock_path(p: &Path) -> Path {
    Path::from(format!("_locks/{}.lock.json", p.as_ref()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    AlreadyExists,
}

#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Local directory of the store (the embedded default backend).
    root: PathBuf,
}

impl Store {
    /// Opens (creating the directory if asked) a store on the local filesystem.
    pub fn open_local(root: &std::path::Path, create: bool) -> Result<Self, LakeError> {
        if create {
            std::fs::create_dir_all(root).map_err(|e| {
                LakeError::io(format!("creating store directory {}", root.display()), e)
            })?;
        }
        let root = root
            .canonicalize()
            .map_err(|e| LakeError::io(format!("store {}", root.display()), e))?;
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| LakeError::store("opening", &root.display().to_string(), e))?;
        Ok(Store {
            inner: Arc::new(fs),
            root,
        })
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

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
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.inner.put_opts(path, bytes.into(), opts).await {
            Ok(_) => Ok(Put::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::AlreadyExists),
            Err(e) => Err(LakeError::store("writing", path.as_ref(), e)),
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
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(LakeError::store("deleting", path.as_ref(), e)),
        }
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
        self.inner
            .put(&lp, serde_json::to_vec(lock).expect("serializes").into())
            .await
            .map_err(|e| LakeError::store("writing", lp.as_ref(), e))?;
        // defence in depth on the local filesystem: a locked file is read-only
        let local = self.local_path(path);
        if let Ok(meta) = std::fs::metadata(&local) {
            let mut perm = meta.permissions();
            perm.set_readonly(true);
            let _ = std::fs::set_permissions(&local, perm);
        }
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
        let local = self.local_path(path);
        if let Ok(meta) = std::fs::metadata(&local) {
            let mut perm = meta.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            let _ = std::fs::set_permissions(&local, perm);
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
        self.inner
            .put_multipart(path)
            .await
            .map_err(|e| LakeError::store("writing", path.as_ref(), e))
    }

    /// Removes staging files a killed process left behind (`name#N`, invisible to listings).
    /// Call only while holding the batch lease. Returns how many were removed.
    pub fn remove_abandoned_staging(&self, under: &str) -> usize {
        fn walk(dir: &std::path::Path, n: &mut usize) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, n);
                } else if p.file_name().and_then(|f| f.to_str()).is_some_and(|f| {
                    f.rsplit_once('#')
                        .is_some_and(|(_, s)| s.bytes().all(|b| b.is_ascii_digit()))
                }) && std::fs::remove_file(&p).is_ok()
                {
                    *n += 1;
                }
            }
        }
        let mut n = 0;
        walk(&self.root.join(under), &mut n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

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
