//! The local backend's uploads: data files streamed in parts, staged unnamed in their
//! directory (or under `.staging/`), written direct where allowed, fsynced on completion and
//! linked into place create-only (see `fs` for the commit steps and `direct` for the writes).

use super::direct;
use super::fs::{Linked, LocalFs, UPLOAD_PREFIX, blocking};
use crate::storage::Durability;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

impl LocalFs {
    /// Starts a staged upload that [`MultipartUpload::complete`] links to `target`.
    pub(crate) fn start_upload(self: &Arc<Self>, target: PathBuf) -> std::io::Result<LocalUpload> {
        let (unnamed, created) = self.unnamed(&target, true)?;
        let (file, staged) = match unnamed {
            Some(f) => (f, None),
            None => {
                let (staged, f) = self.stage(UPLOAD_PREFIX)?;
                drop(f);
                (direct::Staged::open(&staged, true)?, Some(staged))
            }
        };
        Ok(LocalUpload {
            fs: self.clone(),
            target,
            staged,
            created,
            file: Arc::new(Mutex::new(file)),
            offset: 0,
            written: 0,
            carry: Vec::new(),
            done: false,
        })
    }
}

/// A data file being written: parts are appended to an unnamed file in the target's folder (a
/// staging file under `.staging/` where the filesystem has none) at the offsets they were
/// handed in (whole blocks, written direct where the filesystem allows: see [`direct`]),
/// fsynced on completion and linked into place create-only. The target directory is synced at
/// the next [`LocalFs::sync`]: callers put one barrier before the manifests that name the
/// files. Dropped unfinished, nothing of it stays.
#[derive(Debug)]
pub(crate) struct LocalUpload {
    fs: Arc<LocalFs>,
    target: PathBuf,
    /// The staging file's name; `None` for an unnamed file in the target's directory.
    staged: Option<PathBuf>,
    /// Directories made for the target.
    created: Vec<PathBuf>,
    file: Arc<Mutex<direct::Staged>>,
    /// Bytes handed in so far.
    offset: u64,
    /// Bytes handed to writes so far: whole blocks; the rest waits in `carry`.
    written: u64,
    carry: Vec<u8>,
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

#[async_trait::async_trait]
impl MultipartUpload for LocalUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        // the bytes not yet written and these, from an aligned address: whole blocks are
        // written now, the rest is carried to the next part (or padded on completion)
        let mut buf = direct::Aligned::with_capacity(self.carry.len() + data.content_length());
        buf.extend(&self.carry);
        for chunk in data.iter() {
            buf.extend(chunk);
        }
        self.offset += data.content_length() as u64;
        let whole = buf.len() / direct::ALIGN * direct::ALIGN;
        self.carry = buf.tail(whole).to_vec();
        let at = self.written;
        self.written += whole as u64;
        let (file, target) = (self.file.clone(), self.target.clone());
        Box::pin(async move {
            if whole == 0 {
                return Ok(());
            }
            blocking(move || {
                let mut f = file.lock().expect("staging file");
                f.write_at(buf.head(whole), at)
            })
            .await
            .map_err(|e| upload_error(&target, e))
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let (fs, file) = (self.fs.clone(), self.file.clone());
        let (staged, target) = (self.staged.clone(), self.target.clone());
        let created = std::mem::take(&mut self.created);
        let (carry, at, len) = (std::mem::take(&mut self.carry), self.written, self.offset);
        let linked = blocking(move || {
            let mut f = file.lock().expect("staging file");
            if !carry.is_empty() {
                let mut last = direct::Aligned::with_capacity(carry.len());
                last.extend(&carry);
                f.write_at(last.padded(), at)?;
            }
            // the padding of the last block goes
            f.file().set_len(len)?;
            f.file().sync_all()?;
            fs.log("fsync", &target);
            match staged {
                None => fs.link_unnamed(&f, &target, &created, Durability::Deferred),
                Some(staged) => {
                    drop(f);
                    fs.changed(&target, &created, Durability::Deferred)?;
                    fs.link_into_place(&staged, &target, Durability::Deferred)
                }
            }
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
        // an unnamed file goes with its last descriptor
        if let Some(staged) = self.staged.clone() {
            let _ = blocking(move || std::fs::remove_file(staged)).await;
        }
        Ok(())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if let (false, Some(staged)) = (self.done, &self.staged) {
            let _ = std::fs::remove_file(staged);
        }
    }
}
