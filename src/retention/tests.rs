use super::*;
use crate::lake::layout::Partition;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use std::collections::HashMap;

fn file() -> impl Strategy<Value = FileInfo> {
    (0i64..4_000, 0i64..4_000, 1i64..100_000).prop_map(|(a, b, n)| {
        let (lo, hi) = (a.min(b), a.max(b));
        let t = |d: i64| DateTime::<Utc>::from_timestamp(1_900_000_000 + d * 86_400, 0).unwrap();
        let partition = Partition::new(2030, 1, 1 + (lo % 28) as u32, "CALL").unwrap();
        let path = crate::lake::layout::DataFilePath::new(&partition, &format!("f{lo}-{hi}-{n}"))
            .unwrap()
            .to_path();
        FileInfo {
            partition,
            path,
            record_count: n,
            earliest_expiry: t(lo),
            latest_expiry: t(hi),
        }
    })
}

proptest! {
    /// Nothing with an unexpired or held record is ever planned for deletion, every fully
    /// expired unheld file is, rewrites happen only where they free something, and every
    /// file lands in exactly one bucket.
    #[test]
    fn the_plan_never_deletes_anything_unexpired_or_held(files in proptest::collection::vec(file(), 0..200), day in 0i64..4_000, held_every in 1usize..6, min_days in 0u32..30) {
        let now = DateTime::<Utc>::from_timestamp(1_900_000_000 + day * 86_400, 0).unwrap();
        let n = files.len() as u64;
        // every other held file is known to be covered whole
        let held: HashMap<String, u64> = files.iter().step_by(held_every).enumerate().map(|(i, f)| (f.path.to_string(), if i % 2 == 0 { f.record_count as u64 } else { 0 })).collect();
        let expired = files.iter().filter(|f| f.latest_expiry <= now && !held.contains_key(f.path.as_ref())).count();
        let p = plan(now, files, Vec::new(), &held, min_days);
        prop_assert!(p.delete.iter().all(|f| f.latest_expiry <= now && !held.contains_key(f.path.as_ref())));
        prop_assert!(p.held.iter().all(|f| f.earliest_expiry <= now && held[f.path.as_ref()] >= f.record_count as u64), "kept whole only when wholly covered");
        prop_assert_eq!(p.delete.len(), expired);
        for r in &p.rewrite {
            prop_assert!(r.file.earliest_expiry <= now, "a rewrite drops something expired");
            prop_assert!(r.file.latest_expiry <= now || r.file.latest_expiry - now >= chrono::Duration::days(min_days.into()));
            prop_assert!(r.file.latest_expiry > now || held.contains_key(r.file.path.as_ref()), "fully expired and unheld goes whole");
            prop_assert_eq!(r.reason == RewriteReason::Held, held.contains_key(r.file.path.as_ref()));
            prop_assert!(held.get(r.file.path.as_ref()).is_none_or(|n| *n < r.file.record_count as u64));
        }
        prop_assert!(p.mixed.iter().all(|f| f.earliest_expiry <= now && f.latest_expiry > now));
        prop_assert_eq!(p.delete.len() as u64 + p.rewrite.len() as u64 + p.mixed.len() as u64 + p.held.len() as u64 + p.unexpired_files, n);
    }
}

/// The typed plan prints as before: partitions as their directory, paths from the store root.
#[test]
fn the_plan_prints_partitions_and_paths_as_text() {
    let t = DateTime::<Utc>::from_timestamp(1_900_000_000, 0).unwrap();
    let p = Partition::new(2025, 3, 7, "CALL").unwrap();
    let f = FileInfo {
        partition: p.clone(),
        path: crate::lake::layout::data_file(&p, "b1"),
        record_count: 3,
        earliest_expiry: t,
        latest_expiry: t,
    };
    let v = serde_json::to_value(&f).unwrap();
    assert_eq!(v["partition"], p.dir());
    assert_eq!(v["path"], format!("lake/{}/part-b1.parquet", p.dir()));
    assert_eq!(
        Partition::parse_dir(v["partition"].as_str().unwrap()),
        Some(p)
    );
}
