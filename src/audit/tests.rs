//! The audit chain on an in-memory store: appends chain by hash, concurrent writers never
//! fork it, and a changed, missing or backdated entry breaks it.

use super::*;
use crate::clock::FakeClock;

#[derive(Serialize)]
struct Noted {
    n: u32,
}
impl AuditEvent for Noted {
    const ACTION: &'static str = "test.noted";
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn clock() -> Arc<FakeClock> {
    Arc::new(FakeClock::new(
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc(),
    ))
}

async fn paths(store: &Store) -> Vec<object_store::path::Path> {
    let listed = store.list(PREFIX).await.unwrap();
    listed.into_iter().map(|m| m.location).collect()
}

const SKEW: chrono::Duration = chrono::Duration::seconds(300);

#[test]
fn entries_chain_by_hash_and_concurrent_appends_do_not_fork() {
    let store = Store::memory_for_tests();
    let audit = Audit::for_user(store.clone(), clock(), "alice");
    rt().block_on(async {
        let first = audit
            .record("alice", Some("CASE-1"), &Noted { n: 0 })
            .await
            .unwrap();
        assert_eq!((first.sequence, first.previous_sha256.clone()), (1, None));
        let tasks: Vec<_> = (1..9)
            .map(|n| {
                let a = audit.clone();
                tokio::spawn(async move { a.record("bob", None, &Noted { n }).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let entries = audit.entries().await.unwrap();
        assert_eq!(entries.len(), 9);
        for (k, w) in entries.windows(2).enumerate() {
            assert_eq!(w[1].0.sequence, k as u64 + 2);
            assert_eq!(w[1].0.previous_sha256.as_deref(), Some(w[0].1.as_str()));
        }
        assert_eq!(entries[0].0.os_user.as_deref(), Some("alice"));
        let report = audit.verify(SKEW).await.unwrap();
        assert!(report.broken.is_none(), "{report}");
        assert_eq!(report.entries, 9);
        let head = audit.head().await.unwrap();
        assert_eq!((head.sequence, head.sha256), (9, report.head));
    });
}

#[test]
fn a_changed_or_missing_entry_breaks_the_chain() {
    let store = Store::memory_for_tests();
    let audit = Audit::for_user(store.clone(), clock(), "alice");
    rt().block_on(async {
        for n in 0..4 {
            audit.record("alice", None, &Noted { n }).await.unwrap();
        }
        let all = paths(&store).await;
        // one entry rewritten with other details
        let bytes = store.get(&all[1]).await.unwrap();
        let forged = String::from_utf8(bytes.to_vec())
            .unwrap()
            .replace("\"n\": 1", "\"n\": 7");
        store.delete(&all[1]).await.unwrap();
        store.put_new(&all[1], forged.into_bytes()).await.unwrap();
        let r = audit.verify(SKEW).await.unwrap();
        let broken = r.broken.expect("a forged entry breaks the chain");
        assert_eq!(
            broken.object,
            all[2].to_string(),
            "the next link no longer matches"
        );
        assert_eq!(r.entries, 2);
        // one entry removed
        store.delete(&all[2]).await.unwrap();
        let r = audit.verify(SKEW).await.unwrap();
        assert!(r.broken.unwrap().problem.contains("sequence 3 is missing"));
    });
}

#[test]
fn an_entry_recorded_long_before_its_predecessor_breaks_the_chain() {
    let store = Store::memory_for_tests();
    let c = clock();
    let audit = Audit::for_user(store.clone(), c.clone(), "alice");
    rt().block_on(async {
        audit.record("alice", None, &Noted { n: 0 }).await.unwrap();
        c.advance(chrono::Duration::seconds(-3600)); // the clock was set back
        audit.record("alice", None, &Noted { n: 1 }).await.unwrap();
        let r = audit.verify(SKEW).await.unwrap();
        assert!(
            r.broken
                .unwrap()
                .problem
                .contains("before an earlier entry")
        );
        assert!(
            audit
                .verify(chrono::Duration::hours(2))
                .await
                .unwrap()
                .broken
                .is_none()
        );
    });
}
