//! The export directory: the caller's own files, outside the store. Everything decrypted is
//! created 0600 in a 0700 directory; every file is synced before the custody record that
//! names it, and the custody record is renamed into place last.

// the export directory is the caller's, not the store's: it is written with std::fs here
#![allow(clippy::disallowed_methods)]

use sha2::Digest;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of the files and directories an export creates.
#[derive(Debug, Clone, Copy)]
pub(super) struct Modes {
    pub(super) file: u32,
    pub(super) dir: u32,
}

impl Modes {
    pub(super) fn for_export(decrypted: bool) -> Self {
        if decrypted {
            Modes {
                file: 0o600,
                dir: 0o700,
            }
        } else {
            Modes {
                file: 0o644,
                dir: 0o755,
            }
        }
    }
}

/// Creates the export directory; one that exists must be empty (an export never mixes with
/// other files, which `export verify` would report as added).
pub(super) fn prepare(out: &Path, modes: Modes) -> io::Result<()> {
    if out.exists() {
        if std::fs::read_dir(out)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not empty", out.display()),
            ));
        }
        std::fs::set_permissions(out, std::os::unix::fs::PermissionsExt::from_mode(modes.dir))?;
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(modes.dir)
        .create(out)
}

pub(super) fn subdir(dir: &Path, modes: Modes) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(modes.dir)
        .create(dir)
}

pub(super) fn create_new(path: &Path, modes: Modes) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(modes.file)
        .open(path)
}

/// Writes `bytes` to a new file and syncs it; returns its SHA-256 (hex).
pub(super) fn write_synced(path: &Path, bytes: &[u8], modes: Modes) -> io::Result<String> {
    let mut f = create_new(path, modes)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(hex::encode(sha2::Sha256::digest(bytes)))
}

/// Syncs a directory's entries.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(super) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)
}

pub(super) fn remove(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)
}

pub(super) fn remove_dir(path: &Path) -> io::Result<()> {
    std::fs::remove_dir(path)
}

pub(super) fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path)
}

pub(super) fn open(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Every file under `dir`, as paths relative to it with `/` separators, sorted.
pub(super) fn list(dir: &Path) -> io::Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// SHA-256 and size of a file, read in blocks.
pub(super) fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = io::Read::read(&mut f, &mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// A file being written: hashed and counted as it goes, synced when finished.
pub(super) struct HashingFile {
    inner: io::BufWriter<File>,
    hash: sha2::Sha256,
    bytes: u64,
}

impl HashingFile {
    pub(super) fn create(path: PathBuf, modes: Modes) -> io::Result<Self> {
        Ok(HashingFile {
            inner: io::BufWriter::with_capacity(1 << 20, create_new(&path, modes)?),
            hash: sha2::Sha256::new(),
            bytes: 0,
        })
    }

    /// Flushes and syncs the file; its SHA-256 (hex) and size.
    pub(super) fn finish(self) -> io::Result<(String, u64)> {
        let f = self.inner.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok((hex::encode(self.hash.finalize()), self.bytes))
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
