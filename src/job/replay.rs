//! Quarantined lines, through the decryption gate: one shown in full ([`show`]), or put back
//! through the pipeline once the cause is fixed ([`replay`]). Both are audited before any
//! plaintext is opened.

use super::{BatchOptions, BatchReport, Context};
use crate::access::gate::Opened;
use crate::crypto::kms::Kms;
use crate::error::{Error, Result};
use crate::landing::quarantine::{self, Entry, Secret};
use serde::Serialize;

/// Which quarantine entries to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// These ids; every one must exist.
    Ids(Vec<String>),
}

/// What a replay did: lines put back into the landing zone, and the batch that ran them.
#[derive(Debug, Serialize)]
pub struct Replayed {
    pub queued: u64,
    pub batch: BatchReport,
}

/// Replays the selected entries: audited (`quarantine.replay`, the entry ids) through the
/// open gate, queued into the landing zone (`tenant` for entries whose source had none), then
/// one batch with `opts`. Entries it stores leave quarantine.
pub async fn replay(
    gate: &Opened,
    ctx: &Context,
    which: &Selection,
    tenant: Option<&str>,
    opts: &BatchOptions,
) -> Result<Replayed> {
    let mut entries = quarantine::list(&ctx.store).await?;
    if let Selection::Ids(ids) = which {
        if let Some(id) = ids.iter().find(|id| !entries.iter().any(|e| &e.id == *id)) {
            return Err(Error::NotFound(format!("quarantine entry {id} not found")));
        }
        entries.retain(|e| ids.contains(&e.id));
    }
    let replayed = crate::audit::Replayed {
        entries: entries.iter().map(|e| e.id.clone()).collect(),
    };
    gate.record(&replayed).await?;
    let queued = super::queue_replay(ctx, &entries, tenant).await?;
    let batch = super::batch(ctx, opts).await?;
    Ok(Replayed { queued, batch })
}

/// One entry opened in full: its metadata and its decrypted message and original bytes (no
/// `Debug`: the plaintext must not reach a log).
pub struct Shown {
    pub entry: Entry,
    pub secret: Secret,
}

/// Opens entry `id` through the open gate; the opening is recorded (`quarantine.show`, the
/// entry and its key) before the plaintext is returned.
pub async fn show(gate: &Opened, kms: &dyn Kms, id: &str) -> Result<Shown> {
    let entry = quarantine::get(&gate.session().store, id).await?;
    let shown = crate::audit::QuarantineShown {
        entry: &entry.id,
        dek: &entry.dek_id,
    };
    gate.record(&shown).await?;
    let secret = quarantine::open(kms, &entry).await?;
    Ok(Shown { entry, secret })
}
