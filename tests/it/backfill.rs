//! Batches over more partitions than the memory budget keeps files open for (a backfill): the
//! least recently used files are closed as the batch goes, a partition that gets rows again
//! gets another file, and every event is still stored once, under its own file's keys, also
//! when the batch is killed and rerun.

use crate::common::{self, Env};
use std::time::Instant;

/// The smallest budget a pipeline may set: a few dozen files open at once.
const TIGHT: &[u8] = b"[batch]\nmemory_mb = 16\n";

fn tight_batch(env: &Env) -> Vec<String> {
    let p = env.write("tight.toml", TIGHT);
    vec![
        "batch".into(),
        "--pipeline".into(),
        p.to_str().unwrap().into(),
        "--format".into(),
        "json".into(),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Each unique event once, every record opening under its file's DEK (deep verify), no
/// orphan or leftover, landing empty.
fn assert_exactly_once(env: &Env, unique: usize) {
    assert_eq!(env.count("SELECT count(*) FROM events"), unique as i64);
    assert_eq!(
        env.count("SELECT count(DISTINCT event_id) FROM events"),
        unique as i64
    );
    let out = env.run(&["verify", "--deep", "--format", "json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{r}");
    assert_eq!(r["deep_records"], unique as u64, "{r}");
    assert_eq!(r["orphans"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["leftovers"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(env.landing_segments(), 0);
}

/// 1,500 events over 50 days (200 partitions) in no time order, under a 16 MB budget:
/// partitions get several files, each listed by its manifest; re-deliveries in a later batch
/// are recognised across all of them; no plaintext reaches the files.
#[test]
fn a_batch_over_more_partitions_than_its_budget_stores_every_event_once() {
    let env = Env::new();
    let g = common::generate(60, 1500, 50, 50);
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    let batch = tight_batch(&env);
    let r: serde_json::Value = serde_json::from_str(&env.ok(&args(&batch))).unwrap();
    assert_eq!(r["stored"], 1500, "{r}");
    assert_eq!(r["duplicates_in_batch"], 50, "{r}");
    assert_eq!(r["partitions"], 200, "{r}");
    let (files, partitions) = (r["files"].as_u64().unwrap(), 200);
    assert!(files > partitions, "partitions got more than one file: {r}");
    let listed = env.count("SELECT count(*) FROM manifests");
    assert_eq!(listed as u64, files, "every file is in its manifest");
    let deks = env.count("SELECT count(DISTINCT dek_id) FROM manifests");
    assert_eq!(deks as u64, files, "a DEK per file");
    assert_exactly_once(&env, 1500);
    // the same events again: all already stored, whichever file of its partition holds each
    env.ingest(&env.write("again.ndjson", &g.ndjson));
    let r: serde_json::Value = serde_json::from_str(&env.ok(&args(&batch))).unwrap();
    assert_eq!(
        (r["stored"].as_u64(), r["already_stored"].as_u64()),
        (Some(0), Some(1550)),
        "{r}"
    );
    assert_exactly_once(&env, 1500);
    for f in env.store_files() {
        let bytes = std::fs::read(&f).unwrap();
        for s in g.notes.iter().chain(&g.customer_addresses).step_by(7) {
            assert!(
                memchr::memmem::find(&bytes, s.as_bytes()).is_none(),
                "{s} in plaintext in {}",
                f.display()
            );
        }
    }
}

/// The tight batch killed at a failpoint while files complete mid-batch, and at random times,
/// then rerun: every event once.
#[test]
fn a_tight_batch_killed_at_any_time_stores_every_event_once() {
    let env = Env::new();
    let first = common::generate(61, 1000, 30, 40);
    env.ingest(&env.write("a.ndjson", &first.ndjson));
    let batch = tight_batch(&env);
    let out = env
        .cmd(&args(&batch))
        .env("HOLDFAST_FAILPOINT", "batch.before_file_complete")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failpoint batch.before_file_complete"),
        "the failpoint was not reached"
    );
    let t0 = Instant::now();
    env.ok_at(&common::after_lease_expiry(1), &args(&batch));
    let took = t0.elapsed();
    assert_exactly_once(&env, first.unique);
    let second = common::generate(62, 1000, 30, 40);
    env.ingest(&env.write("b.ndjson", &second.ndjson));
    let killed = common::kill_at_random(
        &env,
        &args(&batch),
        3,
        2,
        took * 4 / 5,
        0x9e37_79b9_7f4a_7c15,
    );
    assert!(killed > 0, "every batch finished before its kill time");
    env.ok_at(&common::after_lease_expiry(5), &args(&batch));
    assert_exactly_once(&env, first.unique + second.unique);
}
