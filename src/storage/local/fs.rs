//! The local backend's write path. `object_store`'s `LocalFileSystem` neither fsyncs nor
//! stages outside the target folder (its `name#N` staging files sit beside the object, where
//! pyarrow and polars trip over them), so every object holdfast commits is written here:
//!
//! 1. staged in `<store>/.staging/` (outside `lake/`), created with the store's file mode;
//! 2. the staged file is fsynced;
//! 3. linked into place with `link(2)`, which never replaces (`AlreadyExists` when the target
//!    exists), and the staging name unlinked; missing directories are created on the way;
//! 4. the directories whose entries changed (the target's, and the parent of each directory
//!    created) are fsynced, at once or, for a [`Durability::Deferred`] write, at the caller's next
//!    [`LocalFs::sync`] barrier, so a batch over thousands of partitions syncs each directory
//!    once per commit phase.
//!
//! Deletes unlink and sync the directory the same way. Lock records, the only objects ever
//! replaced, are staged and renamed over the old record. Reads stay with `LocalFileSystem`.
//!
//! Test builds (`test-hooks`) append each step to the file `HOLDFAST_TEST_IO_LOG` names
//! (`fsync <object>`, `link <object>`, `rename <object>`, `unlink <object>`, `mkdir <dir>`,
//! `dirsync <dir>`),
//! so a test can check the commit order.

use crate::storage::Durability;
use bytes::Bytes;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where objects are staged, from the store root.
pub(crate) const STAGING: &str = ".staging";
/// Staged single puts are named `put-…`, staged uploads `upload-…`, puts staged ahead of
/// their link ([`LocalFs::stage_new`], under the batch lease) `staged-…`.
const PUT_PREFIX: &str = "put-";
const UPLOAD_PREFIX: &str = "upload-";
const STAGED_PREFIX: &str = "staged-";
/// A staged put older than this is debris of a killed process (a put stages for milliseconds).
const STALE_PUT: std::time::Duration = std::time::Duration::from_secs(3600);
/// Threads a barrier syncs directories on, at most, and directories per thread at least.
const SYNC_THREADS: usize = 32;
const SYNCS_PER_THREAD: usize = 4;

/// File and directory modes of a store: owner only, or owner and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Modes {
    pub(crate) file: u32,
    pub(crate) dir: u32,
}

impl Modes {
    pub(crate) fn new(group_readable: bool) -> Self {
        if group_readable {
            Modes {
                file: 0o640,
                dir: 0o750,
            }
        } else {
            Modes {
                file: 0o600,
                dir: 0o700,
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct LocalFs {
    root: PathBuf,
    modes: Modes,
    /// Directories whose entries changed and are not synced yet.
    dirty: Mutex<BTreeSet<PathBuf>>,
    #[cfg(feature = "test-hooks")]
    log: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Linked {
    Created,
    AlreadyExists,
}

fn random_name(prefix: &str) -> String {
    format!(
        "{prefix}{}-{:016x}",
        std::process::id(),
        rand::RngCore::next_u64(&mut rand::rng())
    )
}

impl LocalFs {
    pub(crate) fn new(root: PathBuf, modes: Modes) -> Self {
        LocalFs {
            root,
            modes,
            dirty: Mutex::new(BTreeSet::new()),
            #[cfg(feature = "test-hooks")]
            #[allow(clippy::disallowed_methods)] // a test hook, in test builds only
            log: std::env::var_os("HOLDFAST_TEST_IO_LOG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    pub(crate) fn modes(&self) -> Modes {
        self.modes
    }

    /// Test builds: one line per step, for the commit-order test.
    fn log(&self, op: &str, path: &Path) {
        #[cfg(feature = "test-hooks")]
        if let Some(log) = &self.log {
            let rel = path.strip_prefix(&self.root).unwrap_or(path);
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
            {
                // one write per line: steps on several threads append whole lines
                let _ = f.write_all(format!("{op} {}\n", rel.display()).as_bytes());
            }
        }
        #[cfg(not(feature = "test-hooks"))]
        let _ = (op, path);
    }

    /// Creates `dir` and its missing ancestors with the store's directory mode; returns the
    /// directories created, outermost first.
    pub(crate) fn make_dirs(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut missing = Vec::new();
        let mut d = dir;
        while !d.is_dir() {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        let mut created = Vec::new();
        for d in missing.into_iter().rev() {
            match std::fs::DirBuilder::new().mode(self.modes.dir).create(&d) {
                Ok(()) => {
                    // the umask may have narrowed the mode; set it exactly
                    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(self.modes.dir))?;
                    self.log("mkdir", &d);
                    created.push(d);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }

    /// Records (or, with [`Durability::Now`], syncs) the directories whose entries changed when
    /// `target` appeared or went, `created` being the directories made for it.
    fn changed(&self, target: &Path, created: &[PathBuf], sync: Durability) -> std::io::Result<()> {
        let mut dirs: BTreeSet<PathBuf> = created
            .iter()
            .filter_map(|d| d.parent().map(Path::to_path_buf))
            .collect();
        if let Some(p) = target.parent() {
            dirs.insert(p.to_path_buf());
        }
        match sync {
            Durability::Deferred => {
                self.dirty.lock().expect("dirty set").extend(dirs);
                Ok(())
            }
            Durability::Now => {
                for d in dirs {
                    self.sync_dir(&d)?;
                }
                Ok(())
            }
        }
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::File::open(dir)?.sync_all()?;
        self.log("dirsync", dir);
        Ok(())
    }

    /// The barrier: every directory a deferred write or delete changed is synced. The syncs
    /// run on several threads at once: the filesystem commits concurrent syncs together (one
    /// journal commit for many), where one after the other each waits for its own.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let dirs: Vec<PathBuf> = std::mem::take(&mut *self.dirty.lock().expect("dirty set"))
            .into_iter()
            .collect();
        let failed = Mutex::new(None);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = dirs.len().div_ceil(SYNCS_PER_THREAD).min(SYNC_THREADS);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(d) = dirs.get(i) else { return };
                        match self.sync_dir(d) {
                            Ok(()) => {}
                            // a directory removed meanwhile has nothing left to make durable
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => *failed.lock().expect("failed sync") = Some((d.clone(), e)),
                        }
                    }
                });
            }
        });
        match failed.into_inner().expect("failed sync") {
            None => Ok(()),
            Some((d, e)) => {
                // keep them for the next barrier
                self.dirty.lock().expect("dirty set").extend(dirs);
                Err(std::io::Error::new(
                    e.kind(),
                    format!("syncing {}: {e}", d.display()),
                ))
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn pending_dirs(&self) -> usize {
        self.dirty.lock().expect("dirty set").len()
    }

    /// A new staging file, created with the store's file mode.
    fn stage(&self, prefix: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
        let dir = self.root.join(STAGING);
        let created = self.make_dirs(&dir)?;
        if !created.is_empty() {
            self.changed(&dir, &created, Durability::Now)?;
        }
        let path = dir.join(random_name(prefix));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.modes.file)
            .open(&path)?;
        f.set_permissions(std::fs::Permissions::from_mode(self.modes.file))?;
        Ok((path, f))
    }

    /// Links a fsynced staging file to `target` without replacing anything, then removes the
    /// staging name.
    fn link_into_place(
        &self,
        staged: &Path,
        target: &Path,
        sync: Durability,
    ) -> std::io::Result<Linked> {
        let created = match target.parent() {
            Some(p) => self.make_dirs(p)?,
            None => Vec::new(),
        };
        let linked = std::fs::hard_link(staged, target);
        let _ = std::fs::remove_file(staged);
        match linked {
            Ok(()) => {
                self.log("link", target);
                self.changed(target, &created, sync)?;
                Ok(Linked::Created)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // directories made for it still need to be durable
                self.changed(target, &created, sync)?;
                Ok(Linked::AlreadyExists)
            }
            Err(e) => Err(e),
        }
    }

    /// Create-only put: staged, fsynced, linked into place.
    pub(crate) fn put_new(
        &self,
        target: &Path,
        bytes: &[u8],
        sync: Durability,
    ) -> std::io::Result<Linked> {
        let (staged, mut f) = self.stage(PUT_PREFIX)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        self.log("fsync", target);
        drop(f);
        self.link_into_place(&staged, target, sync)
    }

    /// The first half of a create-only put: `bytes` staged and fsynced now, for
    /// [`LocalFs::link_staged`] to link to `target` later. Many can be staged at once, so that
    /// their fsyncs overlap; each is still on stable storage before its name appears.
    /// The target's missing directories are made now too (empty directories name nothing;
    /// their entries are synced at the next barrier), which leaves the link little to do.
    pub(crate) fn stage_new(
        &self,
        target: &Path,
        bytes: &[u8],
        sync: Durability,
    ) -> std::io::Result<PathBuf> {
        let (staged, mut f) = self.stage(STAGED_PREFIX)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        self.log("fsync", target);
        if let Some(dir) = target.parent() {
            let created = self.make_dirs(dir)?;
            if let Some(outermost) = created.first() {
                self.changed(outermost, &created, sync)?;
            }
        }
        Ok(staged)
    }

    /// The second half: links what [`LocalFs::stage_new`] staged to `target`, create-only.
    pub(crate) fn link_staged(
        &self,
        staged: &Path,
        target: &Path,
        sync: Durability,
    ) -> std::io::Result<Linked> {
        self.link_into_place(staged, target, sync)
    }

    /// Replaces `target` atomically (lock records only): staged, fsynced, renamed over it.
    pub(crate) fn put_replace(
        &self,
        target: &Path,
        bytes: &[u8],
        sync: Durability,
    ) -> std::io::Result<()> {
        let (staged, mut f) = self.stage(PUT_PREFIX)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        self.log("fsync", target);
        drop(f);
        let created = match target.parent() {
            Some(p) => self.make_dirs(p)?,
            None => Vec::new(),
        };
        if let Err(e) = std::fs::rename(&staged, target) {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        self.log("rename", target);
        self.changed(target, &created, sync)
    }

    /// Unlinks `target` (a missing one is not an error: deletes are retried after crashes).
    pub(crate) fn delete(&self, target: &Path, sync: Durability) -> std::io::Result<()> {
        match std::fs::remove_file(target) {
            Ok(()) => {
                self.log("unlink", target);
                self.changed(target, &[], sync)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets an object's mode bits (`read_only`: no write bit for anyone).
    pub(crate) fn set_read_only(&self, target: &Path, read_only: bool) {
        let mode = if read_only {
            self.modes.file & !0o222
        } else {
            self.modes.file
        };
        let _ = std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode));
    }

    /// Starts a staged upload that [`MultipartUpload::complete`] links to `target`.
    pub(crate) fn start_upload(self: &Arc<Self>, target: PathBuf) -> std::io::Result<LocalUpload> {
        let (staged, f) = self.stage(UPLOAD_PREFIX)?;
        Ok(LocalUpload {
            fs: self.clone(),
            target,
            staged,
            file: Arc::new(f),
            offset: 0,
            done: false,
        })
    }

    /// Removes staging files a killed process left: every upload and staged put (call only
    /// under the batch lease, which every writer of those holds), and puts older than an hour.
    pub(crate) fn remove_abandoned_staging(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(self.root.join(STAGING)) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let stale = name.starts_with(UPLOAD_PREFIX)
                || name.starts_with(STAGED_PREFIX)
                || (name.starts_with(PUT_PREFIX)
                    && e.metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_PUT));
            if stale && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        n
    }
}

/// A data file being written: parts are appended to a staging file under `.staging/` at the
/// offsets they were handed in, fsynced on completion and linked into place create-only. The
/// target directory is synced at the next [`LocalFs::sync`]: callers put one barrier before
/// the manifests that name the files. Dropped unfinished, the staging file is removed.
#[derive(Debug)]
pub(crate) struct LocalUpload {
    fs: Arc<LocalFs>,
    target: PathBuf,
    staged: PathBuf,
    file: Arc<std::fs::File>,
    offset: u64,
    done: bool,
}

fn upload_error(target: &Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "local",
        source: Box::new(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", target.display()),
        )),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

#[async_trait::async_trait]
impl MultipartUpload for LocalUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        use std::os::unix::fs::FileExt;
        let offset = self.offset;
        self.offset += data.content_length() as u64;
        let file = self.file.clone();
        let target = self.target.clone();
        Box::pin(async move {
            blocking(move || {
                let mut at = offset;
                for chunk in data.iter() {
                    file.write_all_at(chunk, at)?;
                    at += chunk.len() as u64;
                }
                Ok(())
            })
            .await
            .map_err(|e| upload_error(&target, e))
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let (fs, file) = (self.fs.clone(), self.file.clone());
        let (staged, target) = (self.staged.clone(), self.target.clone());
        let linked = blocking(move || {
            file.sync_all()?;
            fs.log("fsync", &target);
            fs.link_into_place(&staged, &target, Durability::Deferred)
        })
        .await
        .map_err(|e| upload_error(&self.target, e))?;
        self.done = true;
        match linked {
            Linked::Created => Ok(PutResult {
                e_tag: None,
                version: None,
            }),
            Linked::AlreadyExists => Err(object_store::Error::AlreadyExists {
                path: self.target.display().to_string(),
                source: "objects are written once".into(),
            }),
        }
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.done = true;
        let staged = self.staged.clone();
        let _ = blocking(move || std::fs::remove_file(staged)).await;
        Ok(())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.staged);
        }
    }
}

/// Runs a filesystem step off the async executor.
pub(crate) async fn run<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    blocking(f).await
}

/// Bytes for a blocking write.
pub(crate) fn owned(payload: PutPayload) -> Bytes {
    let mut v = Vec::with_capacity(payload.content_length());
    for c in payload.iter() {
        v.extend_from_slice(c);
    }
    Bytes::from(v)
}
