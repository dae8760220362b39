//! The local backend's write path. `object_store`'s `LocalFileSystem` neither fsyncs nor
//! stages outside the target folder (its `name#N` staging files sit beside the object, where
//! pyarrow and polars trip over them), so every object holdfast commits is written here:
//!
//! 1. staged as an unnamed file (`O_TMPFILE`) in the target's directory, created with the
//!    store's file mode (missing directories are made first); where the filesystem has no
//!    unnamed files, as a named file in `<store>/.staging/` (outside `lake/`) instead;
//! 2. the staged file is written (large ones direct, bypassing the page cache: see `direct`)
//!    and fsynced;
//! 3. linked into place with `linkat(2)` (`link(2)` for a named staging file), which never
//!    replaces (`AlreadyExists` when the target exists); a named staging file is then unlinked;
//! 4. the directories whose entries changed (the target's, and the parent of each directory
//!    created) are fsynced, at once or, for a [`Durability::Deferred`] write, at the caller's next
//!    [`LocalFs::sync`] barrier, so a batch over thousands of partitions syncs each directory
//!    once per commit phase.
//!
//! An unnamed file has no name until its bytes are durable, so readers never see it and a
//! killed process leaves nothing of it behind.
//!
//! Deletes unlink and sync the directory the same way. Lock records, the only objects ever
//! replaced, are created like any object and replaced by a staged record renamed over the
//! old one. Reads stay with `LocalFileSystem`.
//!
//! Test builds (`test-hooks`) append each step to the file `HOLDFAST_TEST_IO_LOG` names
//! (`fsync <object>`, `link <object>`, `rename <object>`, `unlink <object>`, `mkdir <dir>`,
//! `dirsync <dir>`),
//! so a test can check the commit order.

use super::direct;
use crate::storage::Durability;
use bytes::Bytes;
use object_store::PutPayload;
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where objects are staged, from the store root.
pub(crate) const STAGING: &str = ".staging";
/// Staged single puts are named `put-…`, staged uploads `upload-…`, puts staged ahead of
/// their link ([`LocalFs::stage_new`], under the batch lease) `staged-…`.
const PUT_PREFIX: &str = "put-";
pub(super) const UPLOAD_PREFIX: &str = "upload-";
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
    /// Held for a whole barrier: a barrier that finds the set empty because a concurrent one
    /// took its directories returns only once that one has synced them.
    syncing: Mutex<()>,
    #[cfg(feature = "test-hooks")]
    log: Option<PathBuf>,
}

/// A put staged ahead of its link: an unnamed file in the target's directory, or a file
/// under `.staging/` where the filesystem has no unnamed files.
#[derive(Debug)]
pub(crate) enum Staging {
    Unnamed(direct::Staged),
    Named(PathBuf),
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
            syncing: Mutex::new(()),
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
    pub(super) fn log(&self, op: &str, path: &Path) {
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
    pub(super) fn changed(
        &self,
        target: &Path,
        created: &[PathBuf],
        sync: Durability,
    ) -> std::io::Result<()> {
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
            Durability::Caller => {
                // what this write made, now; the target's own entry is the caller's
                for d in dirs.iter().filter(|d| Some(d.as_path()) != target.parent()) {
                    self.sync_dir(d)?;
                }
                Ok(())
            }
        }
    }

    /// Syncs the directory holding `target` (what a [`Durability::Caller`] write left).
    pub(crate) fn sync_dir_of(&self, target: &Path) -> std::io::Result<()> {
        match target.parent() {
            Some(d) => self.sync_dir(d),
            None => Ok(()),
        }
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::File::open(dir)?.sync_all()?;
        self.log("dirsync", dir);
        Ok(())
    }

    /// The barrier: every directory a deferred write or delete changed is synced. The syncs
    /// run on several threads at once: the filesystem commits concurrent syncs together (one
    /// journal commit for many), where one after the other each waits for its own. Barriers
    /// of several writers (a server's group commits and a batch) share the set of directories,
    /// so they run one at a time.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let _one_at_a_time = self.syncing.lock().expect("barrier");
        let dirs: Vec<PathBuf> = std::mem::take(&mut *self.dirty.lock().expect("dirty set"))
            .into_iter()
            .collect();
        let failed = Mutex::new(None);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
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
        };
        let threads = dirs.len().div_ceil(SYNCS_PER_THREAD).min(SYNC_THREADS);
        if threads <= 1 {
            // a few directories: on this thread (a barrier after a few writes spawns nothing)
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(work);
                }
            });
        }
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
    pub(super) fn stage(&self, prefix: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
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
    pub(super) fn link_into_place(
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
        let (unnamed, created) = self.unnamed(target, bytes.len() >= direct::MIN_DIRECT)?;
        if let Some(mut f) = unnamed {
            f.write_all(bytes)?;
            self.log("fsync", target);
            return self.link_unnamed(&f, target, &created, sync);
        }
        let (staged, f) = self.stage(PUT_PREFIX)?;
        if let Err(e) = write_staged(&staged, f, bytes) {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        self.log("fsync", target);
        self.changed(target, &created, sync)?;
        self.link_into_place(&staged, target, sync)
    }

    /// An unnamed file in the directory `target` goes in (made now if missing, with the
    /// directories created), or `None` where the filesystem has no unnamed files.
    pub(super) fn unnamed(
        &self,
        target: &Path,
        direct: bool,
    ) -> std::io::Result<(Option<direct::Staged>, Vec<PathBuf>)> {
        let Some(dir) = target.parent() else {
            return Ok((None, Vec::new()));
        };
        let created = self.make_dirs(dir)?;
        let f = direct::Staged::unnamed(dir, self.modes.file, direct)?;
        Ok((f, created))
    }

    /// Names a written and fsynced unnamed file `target`, create-only, and records the
    /// directories that changed.
    pub(super) fn link_unnamed(
        &self,
        f: &direct::Staged,
        target: &Path,
        created: &[PathBuf],
        sync: Durability,
    ) -> std::io::Result<Linked> {
        let linked = f.link(target)?;
        if linked {
            self.log("link", target);
        }
        self.changed(target, created, sync)?;
        Ok(if linked {
            Linked::Created
        } else {
            Linked::AlreadyExists
        })
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
    ) -> std::io::Result<Staging> {
        let (unnamed, created) = self.unnamed(target, bytes.len() >= direct::MIN_DIRECT)?;
        if let Some(outermost) = created.first() {
            self.changed(outermost, &created, sync)?;
        }
        let staging = match unnamed {
            Some(mut f) => {
                f.write_all(bytes)?;
                Staging::Unnamed(f)
            }
            None => {
                let (staged, f) = self.stage(STAGED_PREFIX)?;
                if let Err(e) = write_staged(&staged, f, bytes) {
                    let _ = std::fs::remove_file(&staged);
                    return Err(e);
                }
                Staging::Named(staged)
            }
        };
        self.log("fsync", target);
        Ok(staging)
    }

    /// The second half: links what [`LocalFs::stage_new`] staged to `target`, create-only.
    pub(crate) fn link_staged(
        &self,
        staged: &Staging,
        target: &Path,
        sync: Durability,
    ) -> std::io::Result<Linked> {
        match staged {
            Staging::Named(p) => self.link_into_place(p, target, sync),
            Staging::Unnamed(f) => self.link_unnamed(f, target, &[], sync),
        }
    }

    /// Replaces `target` atomically (lock records only): staged, fsynced, renamed over it (a
    /// first record is linked create-only, as a new object is).
    pub(crate) fn put_replace(
        &self,
        target: &Path,
        bytes: &[u8],
        sync: Durability,
    ) -> std::io::Result<()> {
        // the first record of an object: named create-only, like any new object (a record
        // already there is replaced at once, not written twice)
        let (unnamed, created) = if target.exists() {
            (None, Vec::new())
        } else {
            self.unnamed(target, false)?
        };
        if let Some(mut f) = unnamed {
            f.write_all(bytes)?;
            self.log("fsync", target);
            if let Linked::Created = self.link_unnamed(&f, target, &created, sync)? {
                return Ok(());
            }
        }
        let (staged, mut f) = self.stage(PUT_PREFIX)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        self.log("fsync", target);
        drop(f);
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

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
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

/// Writes a put's bytes to its staging file and fsyncs them: direct when large enough.
fn write_staged(staged: &Path, mut f: std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.len() >= direct::MIN_DIRECT {
        drop(f);
        direct::write_new(staged, bytes)
    } else {
        f.write_all(bytes).and_then(|()| f.sync_all())
    }
}
