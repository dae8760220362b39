//! The catalog (`catalog/v<head>.cat`): query sessions read the latest manifests from it, and
//! answer exactly as when every manifest is read (no catalog, an altered one, or a partition
//! committed after the head); `verify` reports a catalog that does not match.

use crate::common::{self, Env};
use std::path::PathBuf;

fn store() -> Env {
    let env = Env::new();
    let g = common::generate(71, 400, 0, 4);
    env.ingest(&env.write("a.ndjson", &g.ndjson));
    env.batch();
    let h = common::generate(72, 200, 0, 6);
    env.ingest(&env.write("b.ndjson", &h.ndjson));
    env.batch();
    env
}

fn catalogs(env: &Env) -> Vec<PathBuf> {
    let dir = env.store.join("catalog");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// What a set of queries answers: counts, pruned lookups, and the manifest tables.
fn answers(env: &Env) -> Vec<String> {
    let id = env.query("SELECT interaction_id FROM events ORDER BY event_id LIMIT 1")[0]
        ["interaction_id"]
        .as_str()
        .unwrap()
        .to_string();
    let tenant =
        env.query("SELECT tenant_id FROM events ORDER BY event_id DESC LIMIT 1")[0]["tenant_id"]
            .as_str()
            .unwrap()
            .to_string();
    [
        "SELECT count(*) AS n FROM events".to_string(),
        "SELECT year, month, day, interaction_type, count(*) AS n FROM events GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4".into(),
        format!("SELECT count(*) AS n FROM events WHERE interaction_id = '{id}'"),
        format!("SELECT event_id, state, occurred_at, interaction_type FROM events WHERE interaction_id IN ('{id}', 'none') ORDER BY event_id"),
        format!("SELECT count(*) AS n FROM events WHERE tenant_id = '{tenant}'"),
        "SELECT count(*) AS n FROM events WHERE year = 2025 AND month = 10 AND day = 2".into(),
        "SELECT count(*) AS n FROM events WHERE day = 3 OR interaction_type = 'SMS'".into(),
        "SELECT event_id FROM events WHERE occurred_at >= TIMESTAMP '2025-10-02T06:00:00Z' AND occurred_at < TIMESTAMP '2025-10-02T18:00:00Z' ORDER BY event_id".into(),
        "SELECT count(*) AS n FROM events WHERE occurred_at > TIMESTAMP '2030-01-01T00:00:00Z'".into(),
        "SELECT * FROM manifests ORDER BY path".into(),
        "SELECT * FROM removals ORDER BY path".into(),
        "SELECT count(*) AS n, sum(event_count) AS e FROM interactions".into(),
    ]
    .iter()
    .map(|sql| env.ok(&["query", "--format", "csv", sql]))
    .collect()
}

#[test]
fn the_catalog_answers_as_the_manifests_do() {
    let env = store();
    let cats = catalogs(&env);
    assert_eq!(
        cats.len(),
        2,
        "the newest head's catalog and the one before: {cats:?}"
    );
    let with = answers(&env);
    assert!(with[0].starts_with("n\n600\n"), "{}", with[0]);
    assert!(with[2] != "n\n0\n", "the lookup finds its interaction");
    // no catalog: every manifest is read, the answers are the same
    for c in &cats {
        std::fs::remove_file(c).unwrap();
    }
    assert_eq!(answers(&env), with);
    let (ok, r) = env.verify();
    assert!(ok, "a store without a catalog verifies: {r}");
    // the next commit writes a catalog again
    let g = common::generate(74, 100, 0, 2);
    env.ingest(&env.write("c.ndjson", &g.ndjson));
    env.batch();
    assert_eq!(catalogs(&env).len(), 1);
    let with = answers(&env);
    assert!(
        with[0].starts_with(
            "n
700
"
        ),
        "{}",
        with[0]
    );
    assert!(env.verify().0);
    for c in catalogs(&env) {
        std::fs::remove_file(c).unwrap();
    }
    assert_eq!(answers(&env), with);
}

#[test]
fn an_altered_catalog_is_not_trusted_and_verify_reports_it() {
    let env = store();
    let with = answers(&env);
    let newest = catalogs(&env).pop().unwrap();
    let good = std::fs::read(&newest).unwrap();
    // a record count inside one manifest changed, same length: sessions read that manifest
    let text = String::from_utf8_lossy(&good).into_owned();
    let at = text.find("\"record_count\": ").unwrap() + "\"record_count\": ".len();
    let mut bad = good.clone();
    bad[at] = if bad[at] == b'9' { b'8' } else { b'9' };
    let mode = std::fs::metadata(&newest).unwrap().permissions();
    let mut writable = mode.clone();
    #[allow(clippy::permissions_set_readonly_false)] // the test alters the store on purpose
    writable.set_readonly(false);
    std::fs::set_permissions(&newest, writable).unwrap();
    std::fs::write(&newest, &bad).unwrap();
    assert_eq!(answers(&env), with);
    let (ok, r) = env.verify();
    assert!(!ok, "verify reports the altered catalog");
    assert!(r.to_string().contains("catalog/"), "{r}");
    std::fs::write(&newest, &good).unwrap();
    assert!(env.verify().0);
}

#[test]
fn a_partition_committed_after_the_head_is_read_from_its_manifest() {
    let env = store();
    let g = common::generate(73, 300, 0, 3);
    env.ingest(&env.write("c.ndjson", &g.ndjson));
    // the batch commits its manifests, then dies before signing its head
    let out = env.run_failing_at("batch.before_holds", &["batch"]);
    assert!(!out.status.success());
    let with = answers(&env);
    for c in catalogs(&env) {
        std::fs::remove_file(c).unwrap();
    }
    assert_eq!(
        answers(&env),
        with,
        "the catalog lags the manifests: they win"
    );
}
