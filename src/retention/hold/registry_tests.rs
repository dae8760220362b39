//! The hold registry on an in-memory store: versions chain by hash, a writer on a stale base
//! loses, and file listings are added under retries.

use super::*;

use crate::test_support::block;

fn hold(id: &str) -> Hold {
    Hold {
        hold_id: id.into(),
        tenant_id: Some("t1".into()),
        scope: Scope {
            interaction_ids: vec!["int-1".into()],
            ..Default::default()
        },
        retention_override: None,
        placed_by: "alice".into(),
        placed_at: DateTime::from_timestamp(1_760_000_000, 0).unwrap(),
        status: Status::Active,
        lapses_at: None,
        files: vec![],
        covered: Default::default(),
    }
}

#[test]
fn registry_versions_chain_and_a_stale_writer_loses() {
    let store = Store::memory_for_tests();
    block(async {
        let (empty, sha) = load(&store).await.unwrap();
        assert_eq!(
            (empty.sequence, empty.holds.len(), sha.clone()),
            (0, 0, None)
        );
        assert!(
            commit(&store, &empty, sha.clone(), vec![hold("H1")])
                .await
                .unwrap()
        );
        let (v1, sha1) = load(&store).await.unwrap();
        assert_eq!(v1.sequence, 1);
        assert_eq!(v1.holds, vec![hold("H1")]);
        // another writer that read the empty registry loses and changes nothing
        assert!(!commit(&store, &empty, sha, vec![hold("H2")]).await.unwrap());
        let (again, again_sha) = load(&store).await.unwrap();
        assert_eq!(
            (again.sequence, again.holds, again_sha),
            (1, v1.holds.clone(), sha1.clone())
        );
        assert!(
            commit(&store, &v1, sha1.clone(), vec![hold("H1"), hold("H2")])
                .await
                .unwrap()
        );
        let (v2, _) = load(&store).await.unwrap();
        assert_eq!((v2.sequence, v2.previous_sha256), (2, sha1));
    });
}

#[test]
fn files_are_added_to_an_active_hold_only() {
    let store = Store::memory_for_tests();
    block(async {
        let mut lapsed = hold("H2");
        lapsed.status = Status::Lapsed {
            at: DateTime::from_timestamp(1_760_000_100, 0).unwrap(),
        };
        let (empty, sha) = load(&store).await.unwrap();
        assert!(
            commit(&store, &empty, sha, vec![hold("H1"), lapsed])
                .await
                .unwrap()
        );
        let files = vec![(
            "lake/year=2025/month=10/day=01/interaction_type=CALL/part-a.parquet".to_string(),
            3,
        )];
        assert!(add_files(&store, "H1", &files).await.unwrap());
        assert!(add_files(&store, "H1", &files).await.unwrap(), "idempotent");
        assert!(
            !add_files(&store, "H2", &files).await.unwrap(),
            "no longer active"
        );
        assert!(!add_files(&store, "H9", &files).await.unwrap(), "unknown");
        let (r, _) = load(&store).await.unwrap();
        assert_eq!(
            r.holds[0].files,
            vec!["lake/year=2025/month=10/day=01/interaction_type=CALL/part-a.parquet".to_string()]
        );
        assert_eq!(
            r.holds[0].covered["lake/year=2025/month=10/day=01/interaction_type=CALL/part-a.parquet"],
            3
        );
        assert!(r.holds[1].files.is_empty());
    });
}
