//! `holdfast verify` as one library call: the store-level checks ([`super::check`]), the
//! access policy's own chain, and, for a deep check, the audited pass through the decryption
//! gate. Returns the report; the caller decides what a problem means (the command exits 1).

use super::Anchor;
use crate::access::gate::Opened;
use crate::clock::Clock;
use crate::crypto::kms::Kms;
use crate::error::{Error, Result};
use crate::lake::verify::{Problem, VerifyReport};
use crate::storage::Store;
use std::sync::Arc;

/// What a verification may use besides the store.
#[derive(Clone, Copy, Default)]
pub struct Request<'a> {
    /// The store's keyring, when at hand: the heads must be signed with its key. Without
    /// it, head signatures are checked against the key the chain names (noted in the report).
    pub keyring: Option<&'a dyn Kms>,
    /// Decrypt every record too, through this open gate (purpose `DeepVerify`); the pass is
    /// audited (`verify.deep`). Needs the keyring.
    pub deep: Option<&'a Opened>,
    /// A line `holdfast anchor` printed earlier: its head must be in the chain, and the
    /// chain must extend it.
    pub anchor: Option<&'a Anchor>,
}

/// Verifies the store; the report lists every problem found (none: the store is intact).
pub async fn verify(
    store: &Store,
    clock: Arc<dyn Clock>,
    req: Request<'_>,
) -> Result<VerifyReport> {
    let audit = crate::audit::Audit::new(store.clone(), clock);
    let options = super::check::Options {
        audit: &audit,
        deep: req.keyring.filter(|_| req.deep.is_some()),
        keyring: req.keyring,
        anchor: req.anchor,
        // the chain's links and position; clock skew is `audit verify`'s check
        max_skew: chrono::Duration::days(365 * 1000),
    };
    let mut report = super::check::verify_store(store, options).await?;
    if req.keyring.is_none() {
        report.notes.push(
            "no keyring at hand: head signatures checked against the key the chain names".into(),
        );
    }
    // the access policy's versions form a chain too
    for (object, problem) in crate::access::policy::verify_chain(store).await? {
        report.problems.push(Problem { object, problem });
    }
    // which key protects a tenant was approved by two administrators, on the record
    for (object, problem) in crate::keys::tenants::unapproved(store, &audit).await? {
        report.problems.push(Problem { object, problem });
    }
    for (object, problem) in crate::keys::platform::unapproved(store, &audit).await? {
        report.problems.push(Problem { object, problem });
    }
    if let Some(gate) = req.deep {
        let event = crate::audit::DeepVerified {
            files: report.files,
            records: report.deep_records,
            problems: report.problems.len(),
            kms: req.keyring.map(|k| k.calls()).unwrap_or_default(),
        };
        gate.record(&event).await?;
    }
    Ok(report)
}

/// What [`anchor`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchoring {
    /// The newest head, to publish outside the store.
    Ready(Anchor),
    /// The newest head does not verify with the key it names.
    BadSignature { sequence: u64 },
    /// The newest head is signed by another key than the keyring's.
    OtherKey {
        sequence: u64,
        signed_by: String,
        keyring: String,
    },
}

/// The newest signed head as an anchor line. A store from before signed heads gets its
/// chain started now, which needs the keyring; with the keyring at hand the head must be
/// signed with its key.
pub async fn anchor(
    store: &Store,
    keyring: Option<&dyn Kms>,
    clock: Arc<dyn Clock>,
) -> Result<Anchoring> {
    let newest = match super::newest(store).await? {
        Some(n) => n,
        None => {
            let Some(kms) = keyring else {
                return Err(Error::Unusable(
                    "the store has no signed head yet; run this once with its keyring to start one"
                        .into(),
                ));
            };
            let audit = crate::audit::Audit::new(store.clone(), clock.clone());
            let c = super::Committer {
                store,
                kms,
                audit: &audit,
            };
            super::commit(c, &super::Change::new("anchor"), clock.now()).await?;
            super::newest(store)
                .await?
                .ok_or_else(|| Error::Unusable("no head after committing one".into()))?
        }
    };
    let sequence = newest.head.sequence;
    if !newest.head.signature_ok() {
        return Ok(Anchoring::BadSignature { sequence });
    }
    if let Some(kms) = keyring
        && let Some(k) = kms.signing_key().await?
        && k != newest.head.public_key
    {
        return Ok(Anchoring::OtherKey {
            sequence,
            signed_by: newest.head.public_key.fingerprint(),
            keyring: k.fingerprint(),
        });
    }
    Ok(Anchoring::Ready(newest.anchor()))
}

#[cfg(test)]
mod tests;
