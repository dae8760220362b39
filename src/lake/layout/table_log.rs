//! Paths of the Delta Lake log (`_delta_log/` at the store's root): its JSON versions and its
//! Parquet checkpoints.

use super::{TABLE_LOG, object};
use object_store::path::Path;

/// `_delta_log/<20 digits>.json`: one version of the Delta log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableLogPath {
    pub version: u64,
}

impl TableLogPath {
    pub fn new(version: u64) -> Self {
        TableLogPath { version }
    }
    pub fn to_path(&self) -> Path {
        object(format!("{TABLE_LOG}/{:020}.json", self.version))
    }
    pub fn parse(path: &Path) -> Option<Self> {
        Self::parse_with(path, ".json")
    }
    /// `_delta_log/<20 digits>.checkpoint.parquet`: the table's state at this version.
    pub fn checkpoint(&self) -> Path {
        object(format!(
            "{TABLE_LOG}/{:020}.checkpoint.parquet",
            self.version
        ))
    }
    pub fn parse_checkpoint(path: &Path) -> Option<Self> {
        Self::parse_with(path, ".checkpoint.parquet")
    }
    fn parse_with(path: &Path, suffix: &str) -> Option<Self> {
        let s = path
            .as_ref()
            .strip_prefix(TABLE_LOG)?
            .strip_prefix('/')?
            .strip_suffix(suffix)?;
        (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok().map(Self::new))
            .flatten()
    }
}
