//! holdfast: contact-center interaction metadata kept for years, encrypted, provably
//! unaltered, findable in seconds.
//!
//! Data flow (dependencies point the same way):
//!
//! ```text
//! sources ──> schema ──> landing ──> job ──> lake (Parquet + manifests)
//!  (decode)   (validate,   (encrypted   (dedupe,    │  crypto: DEK per file, KEK in a Kms
//!              index)       segments,    partition,  │
//!                           quarantine)  encrypt)    └──> query (DataFusion over committed files)
//! ```
//! `retention` and `export` read the lake (an export writes Parquet for Snowflake, BigQuery
//! or counsel, with a custody record); `audit` is reachable from all.
//! `storage` sits under all of them (a `Store` from a URL: a directory or `memory://`).
//! `cli` sits on top and is the only module that reads the environment or prints, apart from
//! `server` (`holdfast serve`) beside it, which reuses the same library calls over HTTP and
//! writes its JSON log lines to stderr.

#![warn(clippy::too_many_lines, unreachable_pub)]

pub mod access;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod error;
pub mod export;
pub mod format;
pub mod head;
pub mod hooks;
pub mod job;
pub mod keys;
pub mod lake;
pub mod landing;
pub mod query;
pub mod retention;
pub mod schema;
pub mod server;
pub mod sources;
pub mod storage;
pub mod store;

pub use error::{Error, Result};

/// What unit tests across the crate share.
#[cfg(test)]
pub(crate) mod test_support {
    /// Runs `f` to completion on a fresh current-thread runtime.
    pub(crate) fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }
}
