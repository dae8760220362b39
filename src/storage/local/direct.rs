//! Large staged writes that bypass the page cache (`O_DIRECT`).
//!
//! Data files and landing segments are written once, fsynced at once and not read back by the
//! process that writes them. Through the page cache each of their pages is first allocated
//! and filled in memory, then written out by the fsync; with `O_DIRECT` the bytes go from the
//! process's buffer to the device, and the fsync that follows still makes them durable
//! (device cache flush, file size and metadata). Measured on this project's machine (a VM
//! whose freed guest memory goes back to the host): 336 MB written and fsynced took 2.5 s
//! (2.1 s of kernel CPU) through the page cache and 0.25 s direct (docs/performance.md).
//!
//! `O_DIRECT` wants the buffer address, the length and the file offset aligned to the
//! device's logical block size: bytes are copied into an [`Aligned`] buffer, whole blocks
//! written, the last block padded with zeros and the file then truncated to its real length.
//! A filesystem that refuses `O_DIRECT` (tmpfs, some network filesystems) gets the same bytes
//! written through the page cache instead: [`Staged::write_at`] falls back on the first
//! `EINVAL`.
//!
//! Where the filesystem has them, staging files are unnamed (`O_TMPFILE`) in the directory of
//! their object and named by `linkat` once durable: nothing of a killed write remains, and
//! creating thousands of objects does not make every writer wait on the one `.staging/`
//! directory (its lock, and the allocation of every inode in its block group).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Alignment of buffers, lengths and offsets: 4 KiB covers 512-byte and 4 KiB devices.
pub(crate) const ALIGN: usize = 4096;
/// Below this a put goes through the page cache: a manifest or a lock record gains nothing.
pub(crate) const MIN_DIRECT: usize = 256 << 10;

/// A byte buffer whose contents start at an address aligned to [`ALIGN`] (a `Vec` with
/// room to spare, its first `start` bytes unused).
pub(crate) struct Aligned {
    v: Vec<u8>,
    start: usize,
}

impl Aligned {
    /// An empty buffer with room for `capacity` bytes and padding to a whole block.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let mut v: Vec<u8> = Vec::with_capacity(capacity + 2 * ALIGN);
        let start = v.as_ptr().align_offset(ALIGN);
        v.resize(start, 0);
        Aligned { v, start }
    }

    pub(crate) fn len(&self) -> usize {
        self.v.len() - self.start
    }

    /// Appends bytes (within the capacity asked for, the contents do not move).
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.v.extend_from_slice(bytes);
    }

    /// The contents, zero-padded to a whole number of blocks.
    pub(crate) fn padded(&mut self) -> &[u8] {
        let len = self.len().next_multiple_of(ALIGN);
        self.v.resize(self.start + len, 0);
        &self.v[self.start..]
    }

    /// The first `n` bytes (`n` a multiple of [`ALIGN`]).
    pub(crate) fn head(&self, n: usize) -> &[u8] {
        debug_assert_eq!(n % ALIGN, 0);
        &self.v[self.start..self.start + n]
    }

    /// The bytes from `n` on.
    pub(crate) fn tail(&self, n: usize) -> &[u8] {
        &self.v[self.start + n..]
    }
}

/// A staging file opened for direct writes when the filesystem allows them: a named file
/// under `.staging/`, or an unnamed one (`O_TMPFILE`) in the directory its object goes in,
/// named by [`Staged::link`] once written and fsynced.
#[derive(Debug)]
pub(crate) struct Staged {
    file: File,
    direct: bool,
    /// The staging file's name; `None` for an unnamed file.
    path: Option<PathBuf>,
}

impl Staged {
    /// Opens `path` (created by the caller) for writing, direct if the filesystem allows it.
    pub(crate) fn open(path: &Path, want_direct: bool) -> std::io::Result<Self> {
        if want_direct {
            match open_flags(path, libc::O_DIRECT, None) {
                Ok(file) => {
                    let path = Some(path.to_path_buf());
                    return Ok(Staged {
                        file,
                        direct: true,
                        path,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        let file = open_flags(path, 0, None)?;
        let path = Some(path.to_path_buf());
        Ok(Staged {
            file,
            direct: false,
            path,
        })
    }

    /// An unnamed file in `dir` with mode `mode` (direct if asked and allowed), or `None`
    /// where the filesystem or the system has no unnamed files: the caller stages a named one.
    pub(crate) fn unnamed(
        dir: &Path,
        mode: u32,
        want_direct: bool,
    ) -> std::io::Result<Option<Self>> {
        if !proc_fds() {
            return Ok(None);
        }
        let unsupported = |e: &std::io::Error| {
            matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            )
        };
        if want_direct {
            match open_flags(dir, libc::O_TMPFILE | libc::O_DIRECT, Some(mode)) {
                Ok(file) => {
                    return Ok(Some(Staged {
                        file,
                        direct: true,
                        path: None,
                    }));
                }
                Err(e) if unsupported(&e) => {}
                Err(e) => return Err(e),
            }
        }
        match open_flags(dir, libc::O_TMPFILE, Some(mode)) {
            Ok(file) => Ok(Some(Staged {
                file,
                direct: false,
                path: None,
            })),
            Err(e) if unsupported(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Writes `bytes` at `offset`. Direct: `bytes` starts at an aligned address and, with
    /// `offset`, is a whole number of blocks; the caller truncates the padding away. A
    /// device that refuses the direct write (`EINVAL`) gets it through the page cache, and
    /// every later write too.
    pub(crate) fn write_at(&mut self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        if self.direct {
            match self.file.write_all_at(bytes, offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // the same file again, without O_DIRECT
                    let again = match &self.path {
                        Some(p) => p.clone(),
                        None => PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd())),
                    };
                    self.file = open_flags(&again, 0, None)?;
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(bytes, offset)
    }

    /// Writes `bytes` as the whole contents of the (empty) file, then fsyncs it.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.direct {
            let mut buf = Aligned::with_capacity(bytes.len());
            buf.extend(bytes);
            self.write_at(buf.padded(), 0)?;
            self.file.set_len(bytes.len() as u64)?;
        } else {
            self.file.write_all_at(bytes, 0)?;
        }
        self.file.sync_all()
    }

    /// Names an unnamed file `target`, create-only: `false` when `target` exists.
    pub(crate) fn link(&self, target: &Path) -> std::io::Result<bool> {
        debug_assert!(
            self.path.is_none(),
            "a named staging file is linked by name"
        );
        let from = std::ffi::CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .expect("no NUL in a number");
        let to = std::ffi::CString::new(target.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: both arguments are NUL-terminated strings that live across the call; linkat
        // reads them and keeps no pointer. AT_SYMLINK_FOLLOW resolves the /proc link to the
        // open file (linking an O_TMPFILE file by its descriptor needs no privilege this way).
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(false),
            _ => Err(e),
        }
    }
}

/// Opens `path` for writing with extra open flags (and a mode, for an unnamed file).
fn open_flags(path: &Path, flags: i32, mode: Option<u32>) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).custom_flags(flags);
    if let Some(m) = mode {
        o.mode(m);
    }
    let f = o.open(path)?;
    if let Some(m) = mode {
        // the umask may have narrowed the mode; set it exactly
        f.set_permissions(std::fs::Permissions::from_mode(m))?;
    }
    Ok(f)
}

/// Whether open files can be named through `/proc/self/fd` (Linux with /proc mounted).
fn proc_fds() -> bool {
    static PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// Writes `bytes` as the whole contents of the staging file at `path` (created, empty),
/// direct when it is large enough and the filesystem allows it, then fsyncs it.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    Staged::open(path, bytes.len() >= MIN_DIRECT)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_start_on_a_block() {
        for cap in [0, 1, 4095, 4096, 100_000] {
            let mut a = Aligned::with_capacity(cap);
            let data: Vec<u8> = (0..cap).map(|i| i as u8).collect();
            a.extend(&data);
            assert_eq!(a.len(), cap);
            let whole = cap / ALIGN * ALIGN;
            assert_eq!(a.head(whole).as_ptr() as usize % ALIGN, 0);
            assert_eq!(a.tail(whole), &data[whole..]);
            let padded = a.padded();
            assert_eq!(padded.len() % ALIGN, 0);
            assert_eq!(&padded[..cap], &data[..]);
            assert!(padded[cap..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn large_and_small_writes_keep_their_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            10,
            MIN_DIRECT - 1,
            MIN_DIRECT,
            MIN_DIRECT + 4097,
            3 << 20,
        ] {
            let path = dir.path().join(format!("f{len}"));
            File::create_new(&path).unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            write_new(&path, &data).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "length {len}");
        }
    }

    #[test]
    fn unnamed_files_are_named_once_written_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        for (len, name) in [(3, "small"), (MIN_DIRECT + 5, "large")] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut f = Staged::unnamed(dir.path(), 0o640, len >= MIN_DIRECT)
                .unwrap()
                .expect("the test's filesystem has unnamed files");
            f.write_all(&data).unwrap();
            let before = std::fs::read_dir(dir.path()).unwrap().count();
            let target = dir.path().join(name);
            assert!(f.link(&target).unwrap());
            assert!(!f.link(&target).unwrap(), "create-only");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before + 1);
            assert_eq!(std::fs::read(&target).unwrap(), data);
            let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o640);
        }
    }
}
