//! The memory backend (`memory://<name>`): `object_store`'s `InMemory` with create-only puts
//! and uploads, and locks kept in a map beside the objects (like S3, where a lock is part of
//! the object version, not an object of its own). Stores are shared by name within a process
//! and gone when it ends. Nothing here is durable, so the local backend's steps (file modes,
//! staging files, directory syncs) have no counterpart: they are the trait's no-op defaults.

use super::lock::{Lock, ObjectLock};
use super::{Backend, Durability, Put};
use crate::lake::LakeError;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutPayload, PutResult, UploadPart,
};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

#[derive(Debug)]
pub(crate) struct Memory {
    name: String,
    objects: Arc<InMemory>,
    locks: Mutex<HashMap<Path, Lock>>,
}

/// The memory stores of this process, by name.
static STORES: LazyLock<Mutex<HashMap<String, Arc<Memory>>>> = LazyLock::new(Default::default);

impl Memory {
    /// The memory store `name`, created if asked; a missing one is `NotFound` otherwise.
    pub(crate) fn open(name: &str, create: bool) -> Result<Arc<Memory>, LakeError> {
        let mut stores = STORES.lock().expect("memory stores");
        if let Some(m) = stores.get(name) {
            return Ok(m.clone());
        }
        if !create {
            return Err(LakeError::io(
                format!("store memory://{name}"),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such memory store"),
            ));
        }
        let m = Arc::new(Memory {
            name: name.to_string(),
            objects: Arc::new(InMemory::new()),
            locks: Mutex::new(HashMap::new()),
        });
        stores.insert(name.to_string(), m.clone());
        Ok(m)
    }
}

async fn create_only(
    objects: &InMemory,
    path: &Path,
    bytes: PutPayload,
) -> object_store::Result<Put> {
    match objects.put_opts(path, bytes, PutMode::Create.into()).await {
        Ok(_) => Ok(Put::Created),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::AlreadyExists),
        Err(e) => Err(e),
    }
}

#[async_trait::async_trait]
impl Backend for Memory {
    fn reader(&self) -> Arc<dyn ObjectStore> {
        self.objects.clone()
    }

    fn describe(&self) -> String {
        format!("memory://{}", self.name)
    }

    async fn put_new(
        &self,
        path: &Path,
        bytes: PutPayload,
        _: Durability,
    ) -> Result<Put, LakeError> {
        create_only(&self.objects, path, bytes)
            .await
            .map_err(|e| LakeError::store("writing", path.as_ref(), e))
    }

    async fn delete(&self, path: &Path, _: Durability) -> Result<(), LakeError> {
        match self.objects.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(LakeError::store("deleting", path.as_ref(), e)),
        }
    }

    async fn start_upload(&self, path: &Path) -> Result<Box<dyn MultipartUpload>, LakeError> {
        Ok(Box::new(MemoryUpload {
            objects: self.objects.clone(),
            path: path.clone(),
            parts: Vec::new(),
        }))
    }
}

#[async_trait::async_trait]
impl ObjectLock for Memory {
    async fn get_lock(&self, path: &Path) -> Result<Lock, LakeError> {
        let locks = self.locks.lock().expect("locks");
        Ok(locks.get(path).cloned().unwrap_or_default())
    }

    async fn put_lock(&self, path: &Path, lock: &Lock, _: Durability) -> Result<(), LakeError> {
        let mut locks = self.locks.lock().expect("locks");
        locks.insert(path.clone(), lock.clone());
        Ok(())
    }

    async fn forget_lock(&self, path: &Path, _: Durability) -> Result<(), LakeError> {
        self.locks.lock().expect("locks").remove(path);
        Ok(())
    }
}

/// An upload collected in memory (parts in the order they were handed in) and put
/// create-only on completion: nothing is visible before.
#[derive(Debug)]
struct MemoryUpload {
    objects: Arc<InMemory>,
    path: Path,
    parts: Vec<PutPayload>,
}

#[async_trait::async_trait]
impl MultipartUpload for MemoryUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.push(data);
        Box::pin(async { Ok(()) })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts = std::mem::take(&mut self.parts);
        let bytes: PutPayload = parts.iter().flat_map(|p| p.iter().cloned()).collect();
        match create_only(&self.objects, &self.path, bytes).await? {
            Put::Created => Ok(PutResult {
                e_tag: None,
                version: None,
            }),
            Put::AlreadyExists => Err(object_store::Error::AlreadyExists {
                path: self.path.to_string(),
                source: "objects are written once".into(),
            }),
        }
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.parts.clear();
        Ok(())
    }
}
