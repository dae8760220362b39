//! Which files a scan of `events` keeps, from the manifests alone.

use super::*;
use crate::lake::layout::Partition;
use crate::lake::manifest::filter::hash;
use crate::lake::manifest::{DataFileEntry, Manifest};
use datafusion::prelude::{SessionContext, col, lit};

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    crate::format::ts(s)
}

fn entry(
    p: &Partition,
    name: &str,
    tenant: &str,
    ids: &[&str],
    from: &str,
    to: &str,
) -> DataFileEntry {
    DataFileEntry {
        record_count: ids.len() as u64,
        min_occurred_at: at(from),
        max_occurred_at: at(to),
        tenant_ids: vec![tenant.into()],
        added_at: at("2025-10-05T00:00:00Z"),
        interactions: (!ids.is_empty()).then(|| {
            InteractionFilter::of_hashes(
                &ids.iter()
                    .map(|i| hash(i))
                    .collect::<std::collections::HashSet<u64>>(),
            )
        }),
        ..crate::lake::manifest::sample_entry(format!("lake/{}/part-{name}.parquet", p.dir()))
    }
}

fn table() -> EventsTable {
    let day = |d| Partition::new(2025, 10, d, "CALL").unwrap();
    let sms = Partition::new(2025, 10, 2, "SMS").unwrap();
    let loaded = |p: &Partition, files: Vec<DataFileEntry>| Loaded {
        manifest: Manifest {
            partition: p.clone(),
            sequence: 1,
            previous: None,
            committed_at: at("2025-10-05T00:00:00Z"),
            batch_id: "b1".into(),
            files,
            removed: vec![],
        },
        sha256: "cd".repeat(32),
    };
    EventsTable::new(&[
        loaded(
            &day(1),
            vec![
                entry(
                    &day(1),
                    "a",
                    "t1",
                    &["i-1", "i-2"],
                    "2025-10-01T00:00:00Z",
                    "2025-10-01T11:00:00Z",
                ),
                entry(
                    &day(1),
                    "b",
                    "t2",
                    &["i-3"],
                    "2025-10-01T12:00:00Z",
                    "2025-10-01T23:00:00Z",
                ),
            ],
        ),
        loaded(
            &day(2),
            vec![entry(
                &day(2),
                "c",
                "t1",
                &["i-1"],
                "2025-10-02T00:00:00Z",
                "2025-10-02T23:00:00Z",
            )],
        ),
        // an entry of an older manifest: no filter of interaction ids
        loaded(
            &sms,
            vec![entry(
                &sms,
                "d",
                "t1",
                &[],
                "2025-10-02T00:00:00Z",
                "2025-10-02T23:00:00Z",
            )],
        ),
    ])
}

fn kept(filters: &[Expr]) -> Vec<String> {
    let t = table();
    let state = SessionContext::new().state();
    t.kept(&state, filters)
        .unwrap()
        .iter()
        .map(|f| {
            let p = f.meta.location.as_ref();
            p[p.rfind("part-").unwrap() + 5..p.len() - 8].to_string()
        })
        .collect()
}

fn ts(s: &str) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(at(s).timestamp_micros()),
        Some("UTC".into()),
    ))
}

#[test]
fn scans_keep_only_the_files_their_filters_may_match() {
    assert_eq!(kept(&[]), ["a", "b", "c", "d"]);
    // hive keys, exactly
    assert_eq!(kept(&[col("day").eq(lit(2))]), ["c", "d"]);
    assert_eq!(
        kept(&[col("day")
            .eq(lit(1))
            .or(col("interaction_type").eq(lit("SMS")))]),
        ["a", "b", "d"]
    );
    assert_eq!(kept(&[col("year").eq(lit(2024))]), Vec::<String>::new());
    // the time range a manifest entry states
    assert_eq!(
        kept(&[col("occurred_at")
            .gt_eq(ts("2025-10-01T12:30:00Z"))
            .and(col("occurred_at").lt(ts("2025-10-02T00:00:00Z")))]),
        ["b"]
    );
    // tenants
    assert_eq!(kept(&[col("tenant_id").eq(lit("t2"))]), ["b"]);
    // interaction ids: files whose filter rules the id out are skipped; a file without a
    // filter is always read
    assert_eq!(
        kept(&[col("interaction_id").eq(lit("i-1"))]),
        ["a", "c", "d"]
    );
    assert_eq!(
        kept(&[col("interaction_id").in_list(vec![lit("i-3"), lit("nope")], false)]),
        ["b", "d"]
    );
    assert_eq!(kept(&[col("interaction_id").eq(lit("nope"))]), ["d"]);
    // what the manifests cannot judge keeps every file
    assert_eq!(kept(&[col("queue_id").eq(lit("q"))]), ["a", "b", "c", "d"]);
}

#[test]
fn only_filters_on_hive_keys_are_exact() {
    let t = table();
    let day = col("day").eq(lit(2));
    let id = col("interaction_id").eq(lit("i-1"));
    let mixed = col("day")
        .eq(lit(2))
        .or(col("interaction_id").eq(lit("i-1")));
    assert_eq!(
        t.supports_filters_pushdown(&[&day, &id, &mixed]).unwrap(),
        [
            TableProviderFilterPushDown::Exact,
            TableProviderFilterPushDown::Inexact,
            TableProviderFilterPushDown::Inexact
        ]
    );
}
