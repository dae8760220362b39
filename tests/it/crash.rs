//! Crash safety: a batch killed at any instant and rerun stores every event exactly once.
//! Failpoints abort the real binary at named points; a second test kills it at random times.
//! Every test runs on a local store and on S3 (moto).

use crate::common::{self, Backend, Env};
use std::time::Instant;

common::on_both_backends!(
    crash_after_quarantine_write,
    crash_after_files_written,
    crash_after_first_manifest,
    crash_after_some_manifests,
    crash_before_landing_delete,
    crash_between_landing_deletes,
    kill_at_random_times,
    a_commit_whose_lock_was_not_set_is_repaired,
    a_killed_batch_leaves_recorded_leftovers_the_next_batch_removes,
);

fn prepared(backend: Backend, seed: u64, unique: usize) -> (Env, usize) {
    prepared_in(Env::on(backend), seed, unique)
}

/// `env` with two files of events and one of malformed lines ingested.
pub(crate) fn prepared_in(env: Env, seed: u64, unique: usize) -> (Env, usize) {
    let g = common::generate(seed, unique, unique / 20, 4);
    let half = g.ndjson.len() / 2;
    let cut = half + g.ndjson[half..].iter().position(|b| *b == b'\n').unwrap() + 1;
    env.ingest(&env.write("a.ndjson", &g.ndjson[..cut]));
    env.ingest(&env.write("b.ndjson", &g.ndjson[cut..]));
    env.ingest(&env.write("bad.ndjson", &common::malformed().0));
    (env, g.unique)
}

/// After recovery: each unique event once, every malformed line quarantined once, manifests
/// verify, no orphan, landing empty.
pub(crate) fn assert_exactly_once(env: &Env, unique: usize) {
    assert_eq!(env.count("SELECT count(*) FROM events"), unique as i64);
    assert_eq!(
        env.count("SELECT count(DISTINCT event_id) FROM events"),
        unique as i64
    );
    let q = env
        .ok(&["quarantine", "list", "--format", "ndjson"])
        .lines()
        .count();
    assert_eq!(q, common::malformed().1);
    let (ok, r) = env.verify();
    assert!(ok, "{r}");
    assert_eq!(r["orphans"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["leftovers"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(env.landing_segments(), 0);
}

fn crash_at(backend: Backend, point: &str) {
    crash_in(prepared(backend, 10, 1500), point);
}

/// A batch aborted at `point`, its lease held until it expires, then taken over: every
/// event once.
pub(crate) fn crash_in((env, unique): (Env, usize), point: &str) {
    let out = env.run_failing_at(point, &["batch"]);
    assert!(
        !out.status.success(),
        "{point}: the failpoint was not reached"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {point}")));
    // nothing uncommitted is visible in between
    let visible = env.count("SELECT count(*) FROM events");
    assert!(visible == 0 || visible as usize <= unique);
    // the killed batch's lease holds until it expires (nobody can tell a dead holder from a
    // slow one on another machine); a batch after that takes it over
    let out = env.run(&["batch"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{point}: the lease is still held"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds the lease"));
    let r = env.batch_at(&common::after_lease_expiry(1));
    assert!(
        r["lease_taken_over"].as_bool().unwrap(),
        "the killed batch's lease is taken over: {r}"
    );
    assert_exactly_once(&env, unique);
    // and a further batch has nothing to do
    assert_eq!(env.batch()["stored"], 0);
}

fn crash_after_quarantine_write(backend: Backend) {
    crash_at(backend, "batch.after_quarantine_write");
}
fn crash_after_files_written(backend: Backend) {
    crash_at(backend, "batch.after_files_written");
}
fn crash_after_first_manifest(backend: Backend) {
    crash_at(backend, "batch.after_manifest:1");
}
fn crash_after_some_manifests(backend: Backend) {
    crash_at(backend, "batch.after_manifest:5");
}
fn crash_before_landing_delete(backend: Backend) {
    crash_at(backend, "batch.before_landing_delete");
}
fn crash_between_landing_deletes(backend: Backend) {
    crash_at(backend, "batch.after_landing_delete:1");
}

/// kill -9 at random instants, several times in a row, then a clean rerun. The seed is
/// printed; `HOLDFAST_TEST_SEED=<seed>` replays the same kill times.
fn kill_at_random_times(backend: Backend) {
    // a smaller batch on moto, whose requests are slow
    let size = match backend {
        Backend::Local => 12_000,
        Backend::S3 => 3_000,
    };
    let (env, unique) = prepared(backend, 11, size);
    let t0 = Instant::now();
    env.ok(&["batch"]);
    let took = t0.elapsed(); // a clean batch of this size: kills land within that window
    // that batch completed; ingest fresh events to have work for the kills
    let g = common::generate(12, size, size / 40, 4);
    env.ingest(&env.write("c.ndjson", &g.ndjson));
    let seed = match std::env::var("HOLDFAST_TEST_SEED") {
        Ok(s) => s.parse().expect("HOLDFAST_TEST_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!(
        "kill_at_random_times seed {seed} (replay with HOLDFAST_TEST_SEED={seed}); a clean batch took {took:?}"
    );
    // kill times fall within 80% of a clean batch's run time, so that a kill lands mid-run
    let killed = common::kill_at_random(&env, &["batch"], 4, 1, took * 4 / 5, seed);
    assert!(
        killed > 0,
        "seed {seed}: every batch finished before its kill time; the test killed nothing"
    );
    env.batch_at(&common::after_lease_expiry(5));
    assert_exactly_once(&env, unique + g.unique);
}

/// Killed between a manifest commit and the storage lock of its file: the next batch (which
/// takes over the dead batch's lease) sets the missing locks.
fn a_commit_whose_lock_was_not_set_is_repaired(backend: Backend) {
    let (env, unique) = prepared(backend, 13, 600);
    let out = env.run_failing_at("batch.after_manifest:1", &["batch"]);
    assert!(!out.status.success());
    let r = env.batch_at(&common::after_lease_expiry(1));
    assert_eq!(r["locks_repaired"], 1, "{r}");
    assert_exactly_once(&env, unique);
}

/// A batch killed after writing its files leaves them uncommitted; its intent record names
/// them, so `verify` reports them as leftovers (not a failure) and the next batch removes
/// exactly those, each with an audit entry.
fn a_killed_batch_leaves_recorded_leftovers_the_next_batch_removes(backend: Backend) {
    let (env, unique) = prepared(backend, 14, 600);
    let out = env.run_failing_at("batch.after_files_written", &["batch"]);
    assert!(!out.status.success());
    let (ok, r) = env.verify();
    assert!(ok, "recorded leftovers are not a failure: {r}");
    let left = r["leftovers"].as_array().unwrap().clone();
    assert!(!left.is_empty(), "{r}");
    assert_eq!(r["orphans"].as_array().unwrap().len(), 0, "{r}");
    let rep = env.batch_at(&common::after_lease_expiry(1));
    assert_eq!(rep["leftovers_removed"], left.len(), "{rep}");
    let removed: Vec<String> = env
        .query("SELECT details FROM audit WHERE action = 'batch.leftover_removed'")
        .iter()
        .map(|row| row["details"].to_string())
        .collect();
    assert_eq!(removed.len(), left.len());
    for f in &left {
        let f = f.as_str().unwrap();
        assert!(
            removed.iter().any(|d| d.contains(f)),
            "{f} not audited: {removed:?}"
        );
        assert!(env.keys(f).is_empty(), "{f} is still in the store");
    }
    assert_exactly_once(&env, unique);
}
