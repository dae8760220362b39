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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::gate::{Purpose, Request};
    use crate::clock::{Clock, FakeClock};
    use std::sync::Arc;

    use crate::test_support::block;

    #[test]
    fn show_and_replay_go_through_the_gate_and_are_audited_first() {
        let dir = tempfile::tempdir().unwrap();
        let t = chrono::DateTime::from_timestamp(1_760_000_000, 0).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::new(t));
        let (store, kms) = block(crate::store::initialised_for_tests(
            dir.path(),
            clock.clone(),
        ));
        let ctx = Context {
            store: store.clone(),
            kms: kms.clone(),
            clock: clock.clone(),
            failpoints: crate::hooks::Failpoints::none(),
        };
        let line = b"{\"eventId\": \"bad-1\", \"note\": \"secret-Zq7\"\n";
        let source = crate::sources::SourceKind::Canonical;
        block(super::super::ingest(&ctx, source, None, "t", &line[..], 1)).unwrap();
        let opts = super::super::batch_options(None, crate::config::Policies::default());
        assert_eq!(
            block(super::super::batch(&ctx, &opts)).unwrap().quarantined,
            1
        );
        let id = block(quarantine::list(&store)).unwrap()[0].id.clone();

        let session = block(crate::access::Session::open(&store, clock, "alice", None)).unwrap();
        let open = |purpose| {
            let req = Request {
                purpose,
                case: Some("CASE-1"),
                tenant: None,
                statement: "",
            };
            block(crate::access::gate::open(&session, &req)).unwrap()
        };
        let gate = open(Purpose::QuarantineShow);
        let shown = block(show(&gate, kms.as_ref(), &id)).unwrap();
        assert_eq!(shown.entry.id, id);
        assert!(String::from_utf8_lossy(&shown.secret.original).contains("secret-Zq7"));

        let gate = open(Purpose::QuarantineReplay);
        let missing = Selection::Ids(vec![id.clone(), "nope".into()]);
        let e = block(replay(&gate, &ctx, &missing, None, &opts))
            .err()
            .unwrap();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("nope")),
            "{e}"
        );
        // still malformed: queued again, quarantined again
        let r = block(replay(&gate, &ctx, &Selection::All, None, &opts)).unwrap();
        assert_eq!(r.queued, 1);
        assert_eq!(r.batch.stored, 0);

        let audit = crate::audit::Audit::for_user(store.clone(), ctx.clock.clone(), "x");
        let actions: Vec<(String, Option<String>)> = block(audit.entries())
            .unwrap()
            .into_iter()
            .map(|(e, _)| (e.action, e.case))
            .filter(|(a, _)| a.starts_with("quarantine"))
            .collect();
        let case = Some("CASE-1".to_string());
        assert_eq!(
            actions,
            vec![
                ("quarantine.show".to_string(), case.clone()),
                ("quarantine.replay".to_string(), case)
            ]
        );
    }
}
