//! The lake: Parquet data files under hive partitions and per-partition manifests, on top of
//! [`crate::storage`]. `crypto` seals records before they reach here.

pub mod catalog;
pub mod datafile;
pub mod layout;
pub mod manifest;
pub mod table;
pub mod verify;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {object}: {source}")]
    Store {
        op: &'static str,
        object: String,
        #[source]
        source: object_store::Error,
    },
    #[error("parquet {object}: {source}")]
    Parquet {
        object: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{object}: {problem}")]
    Corrupt { object: String, problem: String },
    #[error("{0}")]
    Conflict(String),
    /// The storage layer refuses to delete or shorten the protection of a locked object.
    #[error("ObjectLocked: {object}: {reason}")]
    ObjectLocked { object: String, reason: String },
}

impl LakeError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LakeError::Io {
            context: context.into(),
            source,
        }
    }
    pub fn store(op: &'static str, object: &str, source: object_store::Error) -> Self {
        LakeError::Store {
            op,
            object: object.to_string(),
            source,
        }
    }
    pub fn parquet(object: &str, source: parquet::errors::ParquetError) -> Self {
        LakeError::Parquet {
            object: object.to_string(),
            source,
        }
    }
}
