//! Object storage. Everything holdfast keeps goes through [`Store`], a thin layer over an
//! `object_store` backend (the local filesystem now; S3 later changes this module only).
//! Create-only puts are the commit primitive: [`Store::put_new`] reports `AlreadyExists`
//! as an outcome, not an error.

use super::LakeError;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;

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
            std::fs::create_dir_all(root).map_err(|e| LakeError::io(format!("creating store directory {}", root.display()), e))?;
        }
        let root = root.canonicalize().map_err(|e| LakeError::io(format!("store {}", root.display()), e))?;
        let fs = LocalFileSystem::new_with_prefix(&root).map_err(|e| LakeError::store("opening", &root.display().to_string(), e))?;
        Ok(Store { inner: Arc::new(fs), root })
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

    pub async fn put_new(&self, path: &Path, bytes: impl Into<PutPayload>) -> Result<Put, LakeError> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.inner.put_opts(path, bytes.into(), opts).await {
            Ok(_) => Ok(Put::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::AlreadyExists),
            Err(e) => Err(LakeError::store("writing", path.as_ref(), e)),
        }
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes, LakeError> {
        let r = self.inner.get(path).await.map_err(|e| LakeError::store("reading", path.as_ref(), e))?;
        r.bytes().await.map_err(|e| LakeError::store("reading", path.as_ref(), e))
    }

    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>, LakeError> {
        match self.inner.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| LakeError::store("reading", path.as_ref(), e))?)),
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
        let mut v: Vec<ObjectMeta> = self.inner.list(Some(&p)).try_collect().await.map_err(|e| LakeError::store("listing", prefix, e))?;
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

    pub async fn start_upload(&self, path: &Path) -> Result<Box<dyn object_store::MultipartUpload>, LakeError> {
        self.inner.put_multipart(path).await.map_err(|e| LakeError::store("writing", path.as_ref(), e))
    }

    /// Removes staging files a killed process left behind (`name#N`, invisible to listings).
    /// Call only while holding the batch lease. Returns how many were removed.
    pub fn remove_abandoned_staging(&self, under: &str) -> usize {
        fn walk(dir: &std::path::Path, n: &mut usize) {
            let Ok(rd) = std::fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, n);
                } else if p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.rsplit_once('#').is_some_and(|(_, s)| s.bytes().all(|b| b.is_ascii_digit())))
                    && std::fs::remove_file(&p).is_ok()
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
