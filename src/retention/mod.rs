//! Retention sweeps: a pure plan from the manifests (read with SQL over the `manifests`
//! table, plus their `removed` history) and the hold registry's file lists, with no data file
//! opened; and a separate execute step. Time comes from the caller.
//!
//! What happens to a file with expired records (see README, "Retention and legal holds"):
//! - every record expired, no hold lists it: deleted whole, manifest first (a new version
//!   lists it under `removed`), then the object through the storage layer, which refuses
//!   anything still locked;
//! - some records survive (an active hold covers them, or they have not expired): the
//!   survivors are rewritten to a new file under a new DEK ([`rewrite`]), the new file takes
//!   the old one's place in the manifest and the hold registry, and the old file is deleted as
//!   soon as its storage lock allows (at once when its retain-until has passed and only a
//!   hold kept it; at its last record's expiry otherwise);
//! - a file whose last record expires within `rewrite_min_days` of the sweep is not rewritten:
//!   it would gain little and store the survivors twice meanwhile; it goes whole then.
//!
//! Files: the use case, one entry point for any front end ([`sweep::run`]: access check,
//! leases, lapses, plan, execute); the plan and its inputs ([`plan()`], [`inputs`]); its
//! execution ([`execute()`]); rewrites ([`rewrite`]); holds ([`hold`]); `retention explain`
//! ([`explain`]).

mod execute;
pub mod explain;
pub mod hold;
mod plan;
pub mod rewrite;
pub mod sweep;
pub use execute::{SweepRun, execute};
pub use plan::{
    AwaitingInfo, FileInfo, RewriteInfo, RewriteReason, SweepInputs, SweepPlan, inputs, plan,
};

use crate::lake::LakeError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Kms(#[from] crate::crypto::kms::KmsError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error(transparent)]
    LeaseLost(#[from] crate::job::LeaseLost),
    #[error(transparent)]
    Head(#[from] crate::head::HeadError),
    #[error(
        "another writer changed {0} during the sweep; what was done is committed, run the sweep again to finish"
    )]
    Conflict(String),
    #[error(
        "the plan rewrites {0} file(s), which needs the keyring (the sweep moves survivors to a new DEK); none was rewritten"
    )]
    NoKeys(usize),
    /// The key service a sweep needs (rewrites, the signed head) could not be opened.
    #[error(transparent)]
    Keys(sweep::BoxError),
    #[error(transparent)]
    Job(Box<crate::job::JobError>),
    #[error(transparent)]
    Access(Box<crate::access::AccessError>),
    /// Refused for want of a role (audited).
    #[error("refused (audited): {0}")]
    Refused(String),
    /// A request the use case cannot mean.
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::storage::lease::LeaseError> for SweepError {
    fn from(e: crate::storage::lease::LeaseError) -> Self {
        SweepError::Job(Box::new(e.into()))
    }
}

impl From<crate::job::JobError> for SweepError {
    fn from(e: crate::job::JobError) -> Self {
        SweepError::Job(Box::new(e))
    }
}

impl From<crate::access::AccessError> for SweepError {
    fn from(e: crate::access::AccessError) -> Self {
        SweepError::Access(Box::new(e))
    }
}

#[derive(Debug, Default, Serialize)]
pub struct SweepReport {
    pub sweep_id: String,
    /// Objects deleted from storage (whole expired files, and rewritten files whose lock ran out).
    pub files_removed: u64,
    /// Records that left the lake (whole files, and those dropped by rewrites).
    pub records_removed: u64,
    pub files_rewritten: u64,
    /// Records moved to new files by rewrites.
    pub records_kept: u64,
    /// Listed by a hold but every record survives: nothing to drop.
    pub unchanged: Vec<String>,
    /// Rewritten files out of their partition, kept in storage until their lock runs out.
    pub awaiting_lock: Vec<String>,
    /// Refused by the storage layer (ObjectLocked): kept and committed again.
    pub refused: Vec<String>,
    pub mixed_kept: u64,
    /// Files to rewrite whose tenant's own key (BYOK) was unavailable: kept as they are, for
    /// a later sweep (`path: what the key service answered`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_waiting: Vec<String>,
}

impl std::fmt::Display for SweepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sweep {}: removed {} file(s), {} record(s); rewrote {} file(s) keeping {} record(s); {} awaiting their lock; {} refused by the storage lock; {} mixed file(s) kept",
            self.sweep_id,
            self.files_removed,
            self.records_removed,
            self.files_rewritten,
            self.records_kept,
            self.awaiting_lock.len(),
            self.refused.len(),
            self.mixed_kept
        )?;
        for w in &self.key_waiting {
            write!(f, "\n  key waiting  {w}; kept for a later sweep")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
