//! Rewrites on an in-memory store, after a real ingest and batch: the survivors of a file
//! are resealed into a new one that holds exactly the held records, and holds find them there.

use super::*;
use crate::clock::FakeClock;
use crate::job::{BatchOptions, Context};
use crate::retention::hold::{self, Scope, Status};
use crate::sources::SourceKind;

const EVENTS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/canonical/events.ndjson"
));
/// An interaction of the fixture with a few events, on 2025-10-01, among 21 e-mails that day.
const HELD: &str = "db6fdd5c-239b-45ee-863e-3ea1e0fbc5a9";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn held() -> Hold {
    Hold {
        hold_id: "LIT-1".into(),
        tenant_id: None,
        scope: Scope {
            interaction_ids: vec![HELD.into()],
            ..Default::default()
        },
        retention_override: None,
        placed_by: "alice".into(),
        placed_at: t("2026-01-01T00:00:00Z"),
        status: Status::Active,
        lapses_at: None,
        files: vec![],
        covered: Default::default(),
    }
}

/// A lake on a memory store: the fixture ingested and batched.
async fn lake(keys: &std::path::Path) -> Context {
    let ring =
        crate::crypto::kms::LocalKeyring::create(&keys.join("k.json"), "2025-10-05").unwrap();
    let ctx = Context {
        store: Store::memory_for_tests(),
        kms: Arc::new(ring),
        clock: Arc::new(FakeClock::new(t("2025-10-05T00:00:00Z"))),
        failpoints: crate::hooks::Failpoints::none(),
    };
    crate::job::ingest(&ctx, SourceKind::Canonical, None, "events", EVENTS, 2)
        .await
        .unwrap();
    let report = crate::job::batch(&ctx, &BatchOptions::default())
        .await
        .unwrap();
    assert!(report.stored > 0, "{report:?}");
    ctx
}

#[test]
fn a_rewrite_keeps_exactly_the_held_records_in_a_new_file() {
    let keys = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let ctx = lake(keys.path()).await;
        let store = &ctx.store;
        let hold = held();
        let covered = hold::covered_files(store, &hold).await.unwrap();
        assert_eq!(covered.len(), 1, "{covered:?}");
        let (path, n) = covered[0].clone();
        assert!(n > 0, "the held interaction's stored events");
        let p = Partition::new(2025, 10, 1, "EMAIL").unwrap();
        let latest = manifest::load_latest(store, &p).await.unwrap().unwrap();
        let old = latest
            .manifest
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap();
        assert!(old.record_count > n);

        // long after every record expired, only the held ones survive
        let now = t("2040-01-01T00:00:00Z");
        let out = rewrite_file(store, ctx.kms.as_ref(), &p, old, &[&hold], now, "rw-1")
            .await
            .unwrap();
        let Outcome::Rewritten(r) = out else {
            panic!("a file mixing held and expired records is rewritten")
        };
        assert_eq!((r.kept, r.dropped), (n, old.record_count - n));
        assert_eq!(r.entry.record_count, n);
        assert_ne!(
            r.entry.encryption.dek_id, old.encryption.dek_id,
            "a new DEK"
        );
        let bytes = store.get(&r.entry.location().unwrap()).await.unwrap();
        assert_eq!(manifest::sha256_hex(&bytes), r.entry.sha256);
        assert!(
            store
                .head(&old.location().unwrap())
                .await
                .unwrap()
                .is_some()
        );
        // the hold finds its records, all of them, in the new file
        assert_eq!(
            hold::covered_records(store, &hold, &r.entry).await.unwrap(),
            n
        );

        // nothing held, nothing expired: unchanged
        let early = t("2026-01-01T00:00:00Z");
        let same = rewrite_file(store, ctx.kms.as_ref(), &p, old, &[&hold], early, "rw-2")
            .await
            .unwrap();
        assert!(matches!(same, Outcome::Unchanged));
    });
}

#[test]
fn new_files_a_hold_covers_are_pinned_at_the_storage_layer() {
    let keys = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let ctx = lake(keys.path()).await;
        let store = &ctx.store;
        let (empty, sha) = hold::load(store).await.unwrap();
        assert!(
            hold::commit(store, &empty, sha, vec![held()])
                .await
                .unwrap()
        );
        let all: Vec<DataFileEntry> = manifest::load_latest_all(store)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|l| l.manifest.files)
            .collect();
        let pinned = hold::apply_to_new(store, &all, t("2026-01-01T00:00:00Z"))
            .await
            .unwrap();
        assert_eq!(pinned, 1);
        let (registry, _) = hold::load(store).await.unwrap();
        let listed = &registry.holds[0].files;
        assert_eq!(listed.len(), 1);
        let lock = store
            .lock(&layout::locate(&listed[0]).unwrap())
            .await
            .unwrap();
        assert!(lock.legal_hold);
        let refused = store
            .delete_checked(
                &layout::locate(&listed[0]).unwrap(),
                t("2040-01-01T00:00:00Z"),
            )
            .await;
        assert!(matches!(refused, Err(LakeError::ObjectLocked { .. })));
    });
}
