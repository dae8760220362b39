//! The per-head checks of the chain walk: who signed each head, and how it links to the one
//! before it.

use super::super::{Head, Position};
use super::Options;
use crate::crypto::kms::PublicKey;
use crate::lake::layout;
use crate::lake::verify::VerifyReport;

/// The keyring's signing key, when verify was given the keyring and it has one.
pub(super) async fn keyring_signing_key(
    o: Options<'_>,
    chain_started: bool,
    r: &mut VerifyReport,
) -> Option<PublicKey> {
    let kms = o.keyring?;
    match kms.signing_key().await {
        Ok(Some(k)) => Some(k),
        Ok(None) => {
            if chain_started {
                r.notes.push("the keyring has no signing key yet".into());
            }
            None
        }
        Err(e) => {
            r.problem(layout::HEADS, format!("keyring: {e}"));
            if chain_started {
                r.notes.push("the keyring has no signing key yet".into());
            }
            None
        }
    }
}

/// A head's signature verifies, with the key the chain started with and, when verify has
/// the keyring, with the keyring's key.
pub(super) fn check_signer(
    h: &Head,
    object: &str,
    chain_key: &mut Option<PublicKey>,
    keyring_key: Option<PublicKey>,
    r: &mut VerifyReport,
) {
    if !h.signature_ok() {
        r.problem(object, "signature does not verify with the key it names");
    }
    match *chain_key {
        None => *chain_key = Some(h.public_key),
        Some(k) if k != h.public_key => r.problem(
            object,
            format!(
                "signed by {}, but the chain is signed by {}",
                h.public_key.fingerprint(),
                k.fingerprint()
            ),
        ),
        Some(_) => {}
    }
    if let Some(k) = keyring_key.filter(|k| *k != h.public_key) {
        r.problem(
            object,
            format!(
                "signed by {}, but the keyring's signing key is {}",
                h.public_key.fingerprint(),
                k.fingerprint()
            ),
        );
    }
}

/// A head links to the one before it and goes back on no partition.
pub(super) fn check_link(
    h: &Head,
    seq: u64,
    object: &str,
    prev: Option<&(Head, String)>,
    r: &mut VerifyReport,
) {
    let expected = prev.map(|(p, sha)| Position {
        sequence: p.sequence,
        sha256: sha.clone(),
    });
    if h.previous != expected && !(seq == 1 && h.previous.is_none()) {
        r.problem(object, "link to the previous head is broken");
    }
    if let Some((p, _)) = prev {
        for (part, was) in &p.partitions {
            if h.partitions
                .get(part)
                .is_none_or(|now| now.sequence < was.sequence)
            {
                r.problem(object, format!("goes back on partition {part}"));
            }
        }
    }
}
