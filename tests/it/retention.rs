//! Retention sweeps under a fake clock: expired whole files go (manifest first, audited),
//! nothing unexpired or locked goes, and verify stays green.

use crate::common::{self, Env};

fn store() -> (Env, usize) {
    let env = Env::new();
    let g = common::generate(70, 900, 0, 3); // 2025-10-01 .. 2025-10-03, FINRA 6 years
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    env.batch();
    (env, g.unique)
}

const NOW: &str = "2031-10-02T12:00:00Z";

#[test]
fn a_dry_run_plans_from_the_manifests_and_changes_nothing() {
    let (env, _) = store();
    let before = env.store_files();
    let plan: serde_json::Value = serde_json::from_str(&env.ok(&["sweep", "--dry-run", "--now", NOW])).unwrap();
    let day1 = env.count("SELECT count(*) FROM manifests WHERE day = 1");
    assert_eq!(plan["delete"].as_array().unwrap().len() as i64, day1, "{plan}");
    assert!(plan["delete"].as_array().unwrap().iter().all(|f| f["partition"].as_str().unwrap().contains("day=01")));
    assert!(plan["mixed"].as_array().unwrap().iter().all(|f| f["partition"].as_str().unwrap().contains("day=02")));
    assert_eq!(env.store_files(), before);
}

#[test]
fn expired_files_go_and_nothing_unexpired_does() {
    let (env, unique) = store();
    let day1 = env.count("SELECT count(*) FROM events WHERE day = 1");
    let files1 = env.count("SELECT count(*) FROM manifests WHERE day = 1");
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["sweep", "--now", NOW, "--format", "json"])).unwrap();
    assert_eq!(r["files_removed"].as_i64().unwrap(), files1, "{r}");
    assert_eq!(r["records_removed"].as_i64().unwrap(), day1);
    assert_eq!(env.count("SELECT count(*) FROM events"), unique as i64 - day1);
    assert_eq!(env.count("SELECT count(*) FROM events WHERE day = 1"), 0);
    // every survivor belongs to a file whose last record has not expired
    let now_sql = format!("SELECT count(*) FROM manifests WHERE latest_expiry <= TIMESTAMP '{NOW}'");
    assert_eq!(env.count(&now_sql), 0);
    let (ok, v) = env.verify();
    assert!(ok, "{v}");
    assert_eq!(v["orphans"].as_array().unwrap().len(), 0);
    let deletes = env.ok(&["audit", "list", "--action", "retention.delete", "--format", "ndjson"]).lines().count() as i64;
    assert_eq!(deletes, files1);
    // the manifest history says what was removed, when and by which sweep
    let dir = env.store.join("manifests/year=2025/month=10/day=01/interaction_type=CALL");
    let latest = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(latest).unwrap()).unwrap();
    assert_eq!(m["files"].as_array().unwrap().len(), 0);
    assert_eq!(m["removed"][0]["sweep_id"], r["sweep_id"]);
    // a second sweep at the same time has nothing to do
    let again: serde_json::Value = serde_json::from_str(&env.ok(&["sweep", "--now", NOW, "--format", "json"])).unwrap();
    assert_eq!(again["files_removed"], 0);
}

#[test]
fn a_locked_file_is_refused_audited_and_kept() {
    let (env, _) = store();
    let file = env.query("SELECT path FROM manifests WHERE day = 1 ORDER BY path LIMIT 1")[0]["path"].as_str().unwrap().to_string();
    let store = holdfast::lake::storage::Store::open_local(&env.store, false).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(store.legal_hold(&object_store::path::Path::from(file.as_str()), true)).unwrap();
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["sweep", "--now", NOW, "--format", "json"])).unwrap();
    assert_eq!(r["refused"], serde_json::json!([file.clone()]), "{r}");
    assert!(env.store.join(&file).exists());
    assert_eq!(env.count(&format!("SELECT count(*) FROM manifests WHERE path = '{file}'")), 1, "still committed and queryable");
    let refusals = env.ok(&["audit", "list", "--action", "retention.refused", "--format", "ndjson"]);
    assert!(refusals.contains(&file) && refusals.contains("legal hold"));
    assert!(env.verify().0);
}
