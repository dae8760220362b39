//! The caller's own files and environment: input files, pipeline and hold files, query output,
//! the SQL history, and the variables that locate the keyring and the history. The one place
//! in `cli` that touches them directly; everything the store keeps goes through `Store`.

// clippy bans std::fs and std::env::var outside the storage backend, the keyring and this file
#![allow(clippy::disallowed_methods)]

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

/// An environment variable, as the operating system holds it.
pub(super) fn var_os(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

pub(super) fn read_to_string(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
}

pub(super) fn metadata(path: &Path) -> io::Result<Metadata> {
    std::fs::metadata(path)
}

pub(super) fn open(path: &Path) -> io::Result<File> {
    File::open(path)
}

pub(super) fn create(path: &Path) -> io::Result<File> {
    File::create(path)
}

/// Creates `dir` (and its parents) readable by its owner only, and makes it so if it exists.
pub(super) fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Makes `path` readable and writable by its owner only.
pub(super) fn owner_only(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Appends `bytes` to `path`, creating it readable and writable by its owner only, and
/// syncs it.
pub(super) fn append_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
