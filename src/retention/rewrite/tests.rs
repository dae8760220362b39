//! Rewrites on an in-memory store, after a real ingest and batch: the survivors of a file
//! are sealed again into a new one that holds exactly the held records, and holds find them
//! there; a file of any format becomes format 3, its survivors unchanged.

use super::*;
use crate::clock::FakeClock;
use crate::job::{BatchOptions, Context};
use crate::retention::hold::{self, Scope, Status};
use crate::sources::SourceKind;
use arrow::array::AsArray;
use std::collections::BTreeSet;
use std::sync::Arc;

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
    lake_of(keys, 3).await
}

/// A lake whose data files are of format `version`.
async fn lake_of(keys: &std::path::Path, version: u8) -> Context {
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
    let opts = BatchOptions {
        data_file_version: version,
        ..BatchOptions::default()
    };
    let report = crate::job::batch(&ctx, &opts).await.unwrap();
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

/// Every record of a committed file opened (and checked against its `record_hash`): the
/// footer's version, and the records by event id with their tenant.
async fn open_all(
    ctx: &Context,
    f: &DataFileEntry,
) -> (String, BTreeMap<String, (String, Vec<u8>)>) {
    let path = f.location().unwrap();
    let md = datafile::footer(&ctx.store, &path, f.size_bytes)
        .await
        .unwrap();
    let md = md.file_metadata();
    let dek = ctx
        .kms
        .unwrap_key(&f.encryption.dek_id, &f.encryption.wrapped_dek)
        .await
        .unwrap();
    let mut opener = Records::from_footer(md, dek.cipher(), &f.path).unwrap();
    let version = footer::value(md, footer::VERSION_KEY).unwrap().to_string();
    let columns = [
        "tenant_id",
        "event_id",
        "interaction_id",
        "record_hash",
        "dek_id",
        "payload",
    ];
    let mut records = BTreeMap::new();
    for b in datafile::read_columns(&ctx.store, &path, f.size_bytes, &columns)
        .await
        .unwrap()
    {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (tn, ev, it) = (col("tenant_id"), col("event_id"), col("interaction_id"));
        let (hash, payload) = (col("record_hash"), col("payload"));
        for i in 0..b.num_rows() {
            // every row names its own file's DEK (a query finds the file by it)
            let dek_id = col("dek_id");
            assert_eq!(dek_id.as_string::<i32>().value(i), f.encryption.dek_id);
            let ids = RowIds {
                tenant_id: tn.as_string::<i32>().value(i),
                event_id: ev.as_string::<i32>().value(i),
                interaction_id: it.as_string::<i32>().value(i),
            };
            let plain = opener
                .open(ids, payload.as_binary::<i32>().value(i))
                .unwrap();
            assert_eq!(
                crate::crypto::sha256(&plain).as_slice(),
                hash.as_fixed_size_binary().value(i)
            );
            records.insert(
                ids.event_id.to_string(),
                (ids.tenant_id.to_string(), plain.to_vec()),
            );
        }
    }
    (version, records)
}

/// The file of 2025-10-01's calls (several tenants, most with a dictionary of their own), and
/// its rewrite at noon six years later, when the morning's records have expired.
async fn rewrite_calls(ctx: &Context) -> (DataFileEntry, Rewritten) {
    let p = Partition::new(2025, 10, 1, "CALL").unwrap();
    let latest = manifest::load_latest(&ctx.store, &p)
        .await
        .unwrap()
        .unwrap();
    let old = latest.manifest.files[0].clone();
    let now = t("2031-10-01T12:00:00Z");
    let out = rewrite_file(&ctx.store, ctx.kms.as_ref(), &p, &old, &[], now, "rw-9")
        .await
        .unwrap();
    let Outcome::Rewritten(r) = out else {
        panic!("a file mixing expired and unexpired records is rewritten")
    };
    (old, *r)
}

/// A file of any format is rewritten as format 3: every survivor opens as before, in groups
/// under the new DEK; the removed records are gone; and a rewrite of the rewrite keeps them.
#[test]
fn a_rewrite_of_any_format_writes_format_3() {
    for version in [1u8, 2, 3] {
        let keys = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let ctx = lake_of(keys.path(), version).await;
            let (old, r) = rewrite_calls(&ctx).await;
            let (v_old, before) = open_all(&ctx, &old).await;
            assert_eq!(v_old, version.to_string());
            let (v_new, after) = open_all(&ctx, &r.entry).await;
            assert_eq!(v_new, "3");
            assert_eq!(after.len() as u64, r.kept);
            assert!(r.kept > 0 && r.dropped > 0, "{} {}", r.kept, r.dropped);
            for (e, rec) in &after {
                assert_eq!(Some(rec), before.get(e), "event {e} (format {version})");
            }
            let surviving: BTreeSet<&String> = after.values().map(|(t, _)| t).collect();
            assert!(surviving.len() >= 2, "{surviving:?}");
            assert_eq!(r.entry.encryption.compression, "zstd-groups");
            assert_eq!(r.entry.encryption.aad, "holdfast.group.v1");
            // and again, later: fewer survivors, each still as it was
            let p = Partition::new(2025, 10, 1, "CALL").unwrap();
            let later = t("2031-10-01T18:00:00Z");
            let again = rewrite_file(
                &ctx.store,
                ctx.kms.as_ref(),
                &p,
                &r.entry,
                &[],
                later,
                "rw-10",
            )
            .await
            .unwrap();
            if let Outcome::Rewritten(again) = again {
                let (_, last) = open_all(&ctx, &again.entry).await;
                assert_eq!(last.len() as u64, again.kept);
                assert!(last.iter().all(|(e, rec)| after.get(e) == Some(rec)));
            }
        });
    }
}
