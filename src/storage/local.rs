//! The local backend: a store in a directory (the embedded default). Everything that knows
//! it is a filesystem lives here and in [`fs`]: reads through `object_store`'s
//! `LocalFileSystem`, the durable write path (staging under `.staging/`, fsync, create-only
//! link, directory syncs), file modes, staging-file cleanup, and locks as records under
//! `_locks/` plus read-only modes.
//!
//! File modes: objects are created 0600 and directories 0700, or 0640 and 0750 in a store
//! initialised `--group-readable` (the store marker records it, and [`Local::open`] reads it).
//!
//! Object locks: the lock record of an object is `_locks/<object>.lock.json`
//! ([`super::lock::LockFile`]) and a locked file is made read-only. Someone who can write to
//! the directory can still remove them: the local backend does not stop its owner; `verify`
//! notices.

// the one place (with the keyring) where holdfast touches the filesystem
#![allow(clippy::disallowed_methods)]

mod direct;
mod fs;
mod upload;

use super::lock::{Lock, LockFile, ObjectLock};
use super::{Backend, Durability, Put, Staged, StagedBytes};
use crate::lake::LakeError;
use crate::lake::layout;
use fs::{Linked, LocalFs, Modes};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;

/// A put staged (unnamed in its directory, or under `.staging/`), fsynced, waiting for its
/// link; gone if dropped unlinked.
#[derive(Debug)]
pub(crate) struct StagedFile {
    file: Option<fs::Staging>,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // an unnamed file goes with its descriptor
        if let Some(fs::Staging::Named(f)) = self.file.take() {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Local {
    reader: Arc<LocalFileSystem>,
    fs: Arc<LocalFs>,
    root: PathBuf,
}

/// Whether the store marker at `root` says the store is shared with a group.
fn marker_says_group_readable(root: &std::path::Path) -> bool {
    std::fs::read(root.join(layout::STORE_MARKER))
        .ok()
        .and_then(|b| super::marker::decode(&b).ok())
        .is_some_and(|m| m.group_readable)
}

fn io(context: impl std::fmt::Display, e: std::io::Error) -> LakeError {
    LakeError::io(context.to_string(), e)
}

impl Local {
    /// Opens (creating the directory if asked) a store directory. Objects get the modes the
    /// store marker records (owner only unless the store is group-readable).
    pub(crate) fn open(root: &std::path::Path, create: bool) -> Result<Self, LakeError> {
        let group = marker_says_group_readable(root);
        Self::open_with(root, create, Modes::new(group))
    }

    /// Creates (or opens) a store directory for `init`, with the modes `group_readable`
    /// chooses. A directory it creates gets the directory mode; an existing one keeps its own.
    pub(crate) fn init(root: &std::path::Path, group_readable: bool) -> Result<Self, LakeError> {
        Self::open_with(root, true, Modes::new(group_readable))
    }

    fn open_with(root: &std::path::Path, create: bool, modes: Modes) -> Result<Self, LakeError> {
        if !root.is_dir() {
            if !create {
                return Err(io(
                    format_args!("store {}", root.display()),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
                ));
            }
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
        let reader = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| LakeError::store("opening", &root.display().to_string(), e))?;
        Ok(Local {
            reader: Arc::new(reader),
            fs: Arc::new(LocalFs::new(root.clone(), modes)),
            root,
        })
    }

    /// The file of an object.
    fn file(&self, p: &Path) -> PathBuf {
        let mut out = self.root.clone();
        for part in p.parts() {
            out.push(part.as_ref());
        }
        out
    }

    /// Directories waiting for the next sync.
    #[cfg(test)]
    pub(crate) fn pending_dirs(&self) -> usize {
        self.fs.pending_dirs()
    }
}

#[async_trait::async_trait]
impl Backend for Local {
    fn reader(&self) -> Arc<dyn ObjectStore> {
        self.reader.clone()
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn put_new(
        &self,
        path: &Path,
        bytes: PutPayload,
        d: Durability,
    ) -> Result<Put, LakeError> {
        let (fs, target) = (self.fs.clone(), self.file(path));
        let bytes = fs::owned(bytes);
        match fs::run(move || fs.put_new(&target, &bytes, d)).await {
            Ok(Linked::Created) => Ok(Put::Created),
            Ok(Linked::AlreadyExists) => Ok(Put::AlreadyExists),
            Err(e) => Err(io(format_args!("writing {path}"), e)),
        }
    }

    async fn delete(&self, path: &Path, d: Durability) -> Result<(), LakeError> {
        let (fs, target) = (self.fs.clone(), self.file(path));
        fs::run(move || fs.delete(&target, d))
            .await
            .map_err(|e| io(format_args!("deleting {path}"), e))
    }

    async fn start_upload(&self, path: &Path) -> Result<Box<dyn MultipartUpload>, LakeError> {
        let (fs, target) = (self.fs.clone(), self.file(path));
        let upload = fs::run(move || fs.start_upload(target))
            .await
            .map_err(|e| io(format_args!("writing {path}"), e))?;
        Ok(Box::new(upload))
    }

    async fn stage_new(
        &self,
        path: &Path,
        bytes: PutPayload,
        d: Durability,
    ) -> Result<Staged, LakeError> {
        let (fs, target) = (self.fs.clone(), self.file(path));
        let bytes = fs::owned(bytes);
        let staged = fs::run(move || fs.stage_new(&target, &bytes, d))
            .await
            .map_err(|e| io(format_args!("writing {path}"), e))?;
        Ok(Staged {
            path: path.clone(),
            bytes: StagedBytes::Local(StagedFile { file: Some(staged) }),
        })
    }

    async fn put_staged(&self, staged: Staged, d: Durability) -> Result<Put, LakeError> {
        let Staged { path, bytes } = staged;
        let mut file = match bytes {
            StagedBytes::Local(f) => f,
            StagedBytes::Memory(b) => return self.put_new(&path, b, d).await,
        };
        let (fs, target) = (self.fs.clone(), self.file(&path));
        let staged = file.file.take().expect("staged once, linked once");
        match fs::run(move || fs.link_staged(&staged, &target, d)).await {
            Ok(Linked::Created) => Ok(Put::Created),
            Ok(Linked::AlreadyExists) => Ok(Put::AlreadyExists),
            Err(e) => Err(io(format_args!("writing {path}"), e)),
        }
    }

    async fn sync(&self) -> Result<(), LakeError> {
        let fs = self.fs.clone();
        fs::run(move || fs.sync())
            .await
            .map_err(|e| io("syncing the store", e))
    }

    async fn sync_dir_of(&self, path: &Path) -> Result<(), LakeError> {
        let (fs, target) = (self.fs.clone(), self.file(path));
        fs::run(move || fs.sync_dir_of(&target))
            .await
            .map_err(|e| io(format_args!("syncing the directory of {path}"), e))
    }

    fn remove_abandoned_staging(&self) -> usize {
        self.fs.remove_abandoned_staging()
    }

    fn group_readable(&self) -> bool {
        self.fs.modes() == Modes::new(true)
    }
}

#[async_trait::async_trait]
impl ObjectLock for Local {
    async fn get_lock(&self, path: &Path) -> Result<Lock, LakeError> {
        let record = layout::lock_record(path);
        match self.reader.get(&record).await {
            Ok(r) => {
                let bytes = r
                    .bytes()
                    .await
                    .map_err(|e| LakeError::store("reading", record.as_ref(), e))?;
                LockFile::decode(&record, &bytes)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Lock::default()),
            Err(e) => Err(LakeError::store("reading", record.as_ref(), e)),
        }
    }

    /// Lock records are the only objects ever replaced: staged, fsynced, renamed over the old
    /// one. The locked file is then made read-only (defence in depth).
    async fn put_lock(&self, path: &Path, lock: &Lock, d: Durability) -> Result<(), LakeError> {
        let record = layout::lock_record(path);
        let (fs, target) = (self.fs.clone(), self.file(&record));
        let bytes = LockFile::encode(lock);
        fs::run(move || fs.put_replace(&target, &bytes, d))
            .await
            .map_err(|e| io(format_args!("writing {record}"), e))?;
        self.fs.set_read_only(&self.file(path), true);
        Ok(())
    }

    async fn forget_lock(&self, path: &Path, d: Durability) -> Result<(), LakeError> {
        self.delete(&layout::lock_record(path), d).await
    }
}
