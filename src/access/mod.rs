//! Who may do what, decided from the store, never from the caller's word.
//!
//! - **Identity** ([`identity`]): the actor of a command is the operating-system user running
//!   it (the real uid, named by `getpwuid_r`). `--actor NAME` is accepted only where the
//!   policy lets that user act as NAME; a refusal is audited. Audit entries record both the
//!   OS user and the acting name, and every two-person rule compares OS users.
//! - **Policy** ([`policy`]): principals, aliases and roles (`admin`, `investigator`,
//!   `analyst`, `compliance`, `retention`), each role optionally scoped to tenants, stored in
//!   the store as create-only, hash-chained versions (`access/v<20 digits>.json`). `init`
//!   records the first one. Pipeline files carry no roles.
//! - **Changes** ([`admin`]): one administrator asks, a different one approves; the one change
//!   a sole administrator makes alone is adding the first second person (an administrator, so
//!   that later changes can be approved). Every step and refusal is audited.
//! - **The decryption gate** ([`gate`]): every command that decrypts goes through it: the
//!   role, the case, the tenants, and one audit entry per statement, failed ones included;
//!   errors over decrypted data never carry values.
//!
//! What this proves on a local store: that the kernel ran the command as that OS user. Root,
//! anyone who can write the store's files, or anyone who can run programs as that user gets
//! past it; `verify` then sees a broken chain, not a forged one. The HTTP server (later)
//! authenticates its callers with tokens instead of the OS user.

pub mod admin;
mod format;
pub mod gate;
pub mod identity;
pub mod policy;

use crate::audit::{Audit, AuditError, AuditEvent};
use crate::clock::Clock;
use crate::lake::LakeError;
use crate::storage::Store;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use identity::Identity;
pub use policy::{Change, Policy, Reach};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error(transparent)]
    Kms(#[from] crate::crypto::kms::KmsError),
    /// Refused, and the refusal is in the audit trail.
    #[error("refused (audited): {0}")]
    Refused(String),
    /// A statement over decrypted data failed. The message names the expression and the kind
    /// of failure, never a value (the underlying error text may quote decrypted data).
    #[error("{0}")]
    DecryptedQueryFailed(String),
    /// A request that cannot be carried out as given (nothing was changed).
    #[error("{0}")]
    Invalid(String),
    /// No pending request of that id (a runtime failure, not a usage error).
    #[error("{0}")]
    NotFound(String),
    /// The request no longer applies to the policy in force; asking again will not help.
    #[error("{0}; running the command again will not help")]
    Stale(String),
    #[error("the access policy changed meanwhile; running the command again may succeed")]
    Conflict,
}

pub type Result<T, E = AccessError> = std::result::Result<T, E>;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Changes the access policy (with a second administrator).
    Admin,
    /// Decrypts and computes blind indexes, for a case; shows and replays quarantine entries.
    Investigator,
    /// Index columns only (what every reader of the store sees anyway).
    Analyst,
    /// Places, releases and approves legal holds.
    Compliance,
    /// Runs retention sweeps; cannot decrypt.
    Retention,
}

impl Role {
    pub const ALL: &'static [Role] = &[
        Role::Admin,
        Role::Investigator,
        Role::Analyst,
        Role::Compliance,
        Role::Retention,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Investigator => "investigator",
            Role::Analyst => "analyst",
            Role::Compliance => "compliance",
            Role::Retention => "retention",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown role {s:?} (admin, investigator, analyst, compliance, retention)")
            })
    }
}

/// A command's view of the store's access: who runs it and the policy in force.
#[derive(Debug, Clone)]
pub struct Session {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// Records entries under this session's OS user.
    pub audit: Audit,
    pub identity: Identity,
    pub policy: Policy,
}

impl Session {
    /// Authenticates `os_user` (acting as `requested`, or as themselves) against the store's
    /// policy. A name the policy does not map to `os_user` is refused and audited.
    pub async fn open(
        store: &Store,
        clock: Arc<dyn Clock>,
        os_user: &str,
        requested: Option<&str>,
    ) -> Result<Session> {
        let policy = policy::load(store).await?;
        let audit = Audit::for_user(store.clone(), clock.clone(), os_user);
        let identity = match identity::resolve(&policy, os_user, requested) {
            Ok(i) => i,
            Err(reason) => {
                let requested = requested.unwrap_or_default();
                let event = AccessRefused {
                    what: "act as",
                    requested,
                    reason: &reason,
                };
                audit.record(os_user, None, &event).await?;
                return Err(AccessError::Refused(reason));
            }
        };
        Ok(Session {
            store: store.clone(),
            clock,
            audit,
            identity,
            policy,
        })
    }

    /// Whether this session's OS user holds `role` for `tenant` (`None`: every tenant).
    pub fn check(&self, role: Role, tenant: Option<&str>) -> std::result::Result<(), String> {
        self.policy.check(&self.identity.os_user, role, tenant)
    }

    /// Appends an audit entry under this session's identity.
    pub async fn record<E: AuditEvent>(&self, case: Option<&str>, event: &E) -> Result<()> {
        self.audit.record(&self.identity.actor, case, event).await?;
        Ok(())
    }
}

/// An identity or access-policy request was refused.
#[derive(Debug, Serialize)]
pub struct AccessRefused<'a> {
    pub what: &'a str,
    /// The name asked for (`--actor`), or the change asked for.
    pub requested: &'a str,
    pub reason: &'a str,
}
impl AuditEvent for AccessRefused<'_> {
    const ACTION: &'static str = "access.refused";
}

/// The access policy changed, or a change was asked for, approved or withdrawn.
#[derive(Debug, Serialize)]
pub struct PolicyChanged<'a> {
    /// `initial`, `requested`, `applied` (a sole administrator adding the first second
    /// person), `approved`, `cancelled`.
    pub step: &'a str,
    pub change: &'a str,
    pub request: Option<&'a str>,
    /// The OS user who asked, for an approval.
    pub requested_by: Option<&'a str>,
    /// The policy version committed.
    pub sequence: u64,
}
impl AuditEvent for PolicyChanged<'_> {
    const ACTION: &'static str = "access.policy";
}
