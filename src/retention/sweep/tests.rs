use super::*;
use crate::storage::Store;
use std::sync::Mutex;

/// Records what it was told.
#[derive(Default)]
struct Told(Mutex<Vec<serde_json::Value>>);

impl Notify for Told {
    fn refusal(&self, report: &serde_json::Value) {
        self.0.lock().unwrap().push(report.clone());
    }
}

/// A key service that must not be opened.
struct NoKeys;

impl KeyService for NoKeys {
    fn open(&self) -> BoxFuture<'_, Result<Arc<dyn Kms>, BoxError>> {
        panic!("the key service was opened for a refused sweep")
    }
}

/// Someone without the retention role is refused before anything else happens, for a dry run
/// and a real one alike: the refusal is audited under its own action and notified, and the
/// key service is never opened.
#[tokio::test]
async fn a_sweep_without_the_role_is_refused_audited_and_notified() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&crate::storage::StoreUrl::local(dir.path()), true).unwrap();
    let t = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::FakeClock::new(t));
    let session = Session::open(&store, clock.clone(), "eve", None)
        .await
        .unwrap();
    let told = Told::default();
    let ctx = SweepContext {
        session: &session,
        keys: &NoKeys,
        failpoints: crate::hooks::Failpoints::none(),
        notify: &told,
    };
    for dry_run in [true, false] {
        let req = SweepRequest {
            dry_run,
            ..Default::default()
        };
        let err = run(&ctx, &req).await.unwrap_err();
        assert!(
            matches!(&err, SweepError::Refused(r) if r.contains("retention role")),
            "{err}"
        );
    }
    let told = told.0.into_inner().unwrap();
    assert_eq!(told.len(), 2);
    assert!(
        told.iter()
            .all(|t| t["refused"] == "access_denied" && t["os_user"] == "eve")
    );
    let entries = Audit::new(store, clock).entries().await.unwrap();
    let refused: Vec<_> = entries
        .iter()
        .filter(|(e, _)| e.action == "sweep.refused")
        .collect();
    assert_eq!(refused.len(), 2, "one audited refusal per attempt");
}

/// The files active holds list, each with the most records one hold is known to cover.
#[test]
fn held_files_take_the_largest_known_count() {
    let t = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let h = |id: &str, files: &[(&str, Option<u64>)], status: hold::Status| hold::Hold {
        hold_id: id.into(),
        tenant_id: None,
        scope: Default::default(),
        retention_override: None,
        placed_by: "a".into(),
        placed_at: t,
        status,
        lapses_at: None,
        files: files.iter().map(|(f, _)| f.to_string()).collect(),
        covered: files
            .iter()
            .filter_map(|(f, n)| n.map(|n| (f.to_string(), n)))
            .collect(),
    };
    let holds = [
        h("A", &[("f1", Some(3)), ("f2", None)], hold::Status::Active),
        h("B", &[("f1", Some(5))], hold::Status::Active),
        h("C", &[("f3", Some(9))], hold::Status::Lapsed { at: t }),
    ];
    let held = held_files(&holds, t);
    assert_eq!(held.len(), 2);
    assert_eq!(held["f1"], 5);
    assert_eq!(held["f2"], 0);
}
