//! Manifests on an in-memory store: the hash chain, create-only commits, removals.

use super::*;

use crate::test_support::block;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn entry(name: &str) -> DataFileEntry {
    sample_entry(format!(
        "lake/year=2025/month=10/day=01/interaction_type=CALL/part-{name}.parquet"
    ))
}

fn committed(c: Commit) -> Loaded {
    match c {
        Commit::Committed(l) => *l,
        Commit::LostRace { sequence } => panic!("lost the race for v{sequence}"),
    }
}

#[test]
fn versions_chain_by_hash_and_two_writers_cannot_both_win() {
    let store = Store::memory_for_tests();
    let p = Partition::new(2025, 10, 1, "CALL").unwrap();
    let now = t("2025-10-02T00:00:00Z");
    block(async {
        let v1 = committed(
            commit(&store, &p, None, vec![entry("a")], "b1", now)
                .await
                .unwrap(),
        );
        let v2 = committed(
            commit(&store, &p, Some(&v1), vec![entry("b")], "b2", now)
                .await
                .unwrap(),
        );
        assert_eq!(v2.manifest.sequence, 2);
        let prev = v2.manifest.previous.as_ref().unwrap();
        assert_eq!(
            (prev.sequence, prev.sha256.as_str()),
            (1, v1.sha256.as_str())
        );
        assert_eq!(v2.manifest.files.len(), 2);
        // a second writer on the same base loses, and writes nothing
        let late = commit(&store, &p, Some(&v1), vec![entry("c")], "b3", now).await;
        assert!(matches!(late.unwrap(), Commit::LostRace { sequence: 2 }));
        let latest = load_latest(&store, &p).await.unwrap().unwrap();
        assert_eq!(latest.manifest, v2.manifest);
        assert_eq!(latest.sha256, v2.sha256);
        assert_eq!(list_versions(&store).await.unwrap()[&p], vec![1, 2]);
        // the hash is of the stored bytes
        let stored = store.get(&layout::manifest(&p, 1)).await.unwrap();
        assert_eq!(sha256_hex(&stored), v1.sha256);
    });
}

#[test]
fn a_removal_moves_files_to_the_history() {
    let store = Store::memory_for_tests();
    let p = Partition::new(2025, 10, 1, "CALL").unwrap();
    let now = t("2032-01-01T00:00:00Z");
    block(async {
        let v1 = committed(
            commit(&store, &p, None, vec![entry("a"), entry("b")], "b1", now)
                .await
                .unwrap(),
        );
        let gone = entry("a").path;
        let v2 = committed(
            commit_removal(&store, &p, &v1, std::slice::from_ref(&gone), "s1", now)
                .await
                .unwrap(),
        );
        assert_eq!(v2.manifest.files, vec![entry("b")]);
        assert_eq!(v2.manifest.removed.len(), 1);
        assert_eq!(v2.manifest.removed[0].path, gone);
        assert_eq!(v2.manifest.removed[0].sweep_id, "s1");
        // the history is carried into later versions
        let v3 = committed(
            commit(&store, &p, Some(&v2), vec![entry("c")], "b2", now)
                .await
                .unwrap(),
        );
        assert_eq!(v3.manifest.removed, v2.manifest.removed);
        let all = load_latest_all(&store).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].manifest.sequence, 3);
    });
}
