//! Durable writes and leases: the commit order as the storage layer performs it (a test-build
//! I/O log), file modes, no staging file inside the lake, damaged partitions isolated, and
//! leases that expire, are taken over once, and fence a holder that lost them.

use crate::common::{self, Env};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One line of `HOLDFAST_TEST_IO_LOG`: (operation, path from the store root).
type Step = (String, String);

fn io_log(path: &Path) -> Vec<Step> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (op, p) = l.split_once(' ').unwrap();
            (op.to_string(), p.to_string())
        })
        .collect()
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

fn find(log: &[Step], from: usize, op: &str, path: &str) -> Option<usize> {
    (from..log.len()).find(|&i| log[i].0 == op && log[i].1 == path)
}

/// Runs `args` with the I/O log on; returns the steps.
fn logged(env: &Env, now: Option<&str>, args: &[&str]) -> Vec<Step> {
    let log = env.dir.path().join(format!("io-{}.log", args[0]));
    let _ = std::fs::remove_file(&log);
    let mut c = match now {
        Some(t) => env.cmd_at(t, args),
        None => env.cmd(args),
    };
    let out = c.env("HOLDFAST_TEST_IO_LOG", &log).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    io_log(&log)
}

/// Every object that appears (link) or is replaced (rename) was fsynced first, and every
/// directory created has its parent synced before `before(dir)`.
fn objects_fsynced_and_new_dirs_synced(log: &[Step], before: impl Fn(&str) -> usize) {
    for (i, (op, p)) in log.iter().enumerate() {
        if op == "link" || op == "rename" {
            let f = log[..i].iter().rposition(|(o, q)| o == "fsync" && q == p);
            assert!(f.is_some(), "{p} {op}ed before its bytes were fsynced");
        }
        let before = before(p);
        if op == "mkdir" && i < before {
            assert!(
                find(log, i, "dirsync", parent(p)).is_some_and(|s| s < before),
                "the entry of new directory {p} was not synced in time"
            );
        }
    }
}

/// A batch: every data file is fsynced and its directory synced before the first manifest is
/// linked; every manifest (and lock record, and the audit entry) is durable before the first
/// landing segment is unlinked; the unlinks are synced at the end.
#[test]
fn a_batch_makes_each_commit_step_durable_before_the_next() {
    let env = Env::new();
    let g = common::generate(40, 1200, 20, 3);
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    env.ingest(&env.write("bad.ndjson", &common::malformed().0));
    let log = logged(&env, None, &["batch"]);
    let first_manifest = log
        .iter()
        .position(|(o, p)| o == "link" && p.starts_with("manifests/"))
        .expect("a manifest was linked");
    let first_unlink = log
        .iter()
        .position(|(o, p)| o == "unlink" && p.starts_with("landing/"))
        .expect("a landing segment was unlinked");
    // directories of data files before the first manifest; the others before the unlinks
    objects_fsynced_and_new_dirs_synced(&log, |dir| {
        if dir.starts_with("lake") {
            first_manifest
        } else {
            first_unlink
        }
    });
    let linked = |prefix: &str| -> Vec<(usize, String)> {
        log.iter()
            .enumerate()
            .filter(|(_, (o, p))| o == "link" && p.starts_with(prefix))
            .map(|(i, (_, p))| (i, p.clone()))
            .collect()
    };
    let data = linked("lake/");
    assert!(data.len() >= 12, "{data:?}");
    for (i, d) in &data {
        let synced = find(&log, *i, "dirsync", parent(d));
        assert!(
            synced.is_some_and(|s| s < first_manifest),
            "data file {d}: directory not synced before the first manifest"
        );
    }
    let manifests = linked("manifests/");
    assert_eq!(manifests.len(), 12, "3 days x 4 types");
    let durable_before_unlink = |what: &[(usize, String)]| {
        for (i, m) in what {
            let synced = find(&log, *i, "dirsync", parent(m));
            assert!(
                synced.is_some_and(|s| s < first_unlink),
                "{m}: not synced before the first landing unlink"
            );
        }
    };
    durable_before_unlink(&manifests);
    durable_before_unlink(&linked("quarantine/"));
    durable_before_unlink(&linked("audit/"));
    let locks: Vec<(usize, String)> = log
        .iter()
        .enumerate()
        .filter(|(_, (o, p))| (o == "rename" || o == "link") && p.starts_with("_locks/"))
        .map(|(i, (_, p))| (i, p.clone()))
        .collect();
    assert_eq!(locks.len(), data.len(), "one lock record per data file");
    durable_before_unlink(&locks);
    let last_unlink = log
        .iter()
        .rposition(|(o, p)| o == "unlink" && p.starts_with("landing/"))
        .unwrap();
    assert!(
        find(&log, last_unlink, "dirsync", "landing").is_some(),
        "the landing deletes are synced"
    );
    assert!(
        !log.iter().any(|(_, p)| p.contains('#')),
        "no staging name in place"
    );
}

/// A sweep: each manifest version is durable (file and directory) before an object it
/// removes is unlinked; a rewritten file is durable before the manifest naming it.
#[test]
fn a_sweep_syncs_each_manifest_before_removing_what_it_removes() {
    let env = Env::new();
    let g = common::generate(41, 600, 0, 3);
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    env.batch();
    let log = logged(&env, Some("2031-10-02T12:00:00Z"), &["sweep"]);
    let removed: Vec<(usize, &str)> = log
        .iter()
        .enumerate()
        .filter(|(_, (o, p))| o == "unlink" && p.starts_with("lake/"))
        .map(|(i, (_, p))| (i, p.as_str()))
        .collect();
    assert_eq!(removed.len(), 4, "day one's files: {log:?}");
    objects_fsynced_and_new_dirs_synced(&log, |_| log.len());
    for (u, path) in removed {
        let part = parent(path).strip_prefix("lake/").unwrap();
        let mdir = format!("manifests/{part}");
        let m = log[..u]
            .iter()
            .rposition(|(o, p)| o == "link" && parent(p) == mdir)
            .unwrap_or_else(|| panic!("no manifest version before {path} went"));
        assert!(
            find(&log, m, "dirsync", &mdir).is_some_and(|s| s < u),
            "{path} unlinked before the manifest removing it was synced"
        );
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, bool, u32)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let meta = std::fs::metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        out.push((p.clone(), meta.is_dir(), mode));
        if meta.is_dir() {
            walk(&p, out);
        }
    }
}

fn assert_modes(env: &Env, file: u32, dir: u32) {
    let g = common::generate(42, 200, 0, 2);
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    env.ingest(&env.write("bad.ndjson", &common::malformed().0));
    env.batch();
    let root = std::fs::metadata(&env.store).unwrap().permissions().mode() & 0o777;
    assert_eq!(root, dir, "the store directory");
    let mut all = Vec::new();
    walk(&env.store, &mut all);
    let mut audit = 0;
    for (p, is_dir, mode) in &all {
        let rel = p
            .strip_prefix(&env.store)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if *is_dir {
            assert_eq!(*mode, dir, "{rel}: {mode:o}");
        } else if rel.starts_with("lake/") {
            // locked data files are read-only too
            assert_eq!(*mode, file & !0o222, "{rel}: {mode:o}");
        } else {
            assert_eq!(*mode, file, "{rel}: {mode:o}");
            audit += rel.starts_with("audit/") as usize;
        }
    }
    assert!(audit > 0 && all.len() > 20, "{all:?}");
}

#[test]
fn objects_are_owner_only_or_group_readable_as_init_recorded() {
    assert_modes(&Env::new(), 0o600, 0o700);
    let shared = Env::init_with(&["--group-readable"]);
    assert_modes(&shared, 0o640, 0o750);
    // chosen once: a second init cannot change it
    // (a conflict with the store, not a usage error: exit 1, and no retry helps)
    let out = shared.run(&["init"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("group-readable"), "{err}");
    assert!(err.contains("will not help"), "{err}");
}

fn lake_files(env: &Env) -> Vec<String> {
    let mut all = Vec::new();
    if env.store.join("lake").exists() {
        walk(&env.store.join("lake"), &mut all);
    }
    all.into_iter()
        .filter(|(_, d, _)| !d)
        .map(|(p, _, _)| p.to_string_lossy().to_string())
        .collect()
}

/// Uploads are staged under `.staging/`, outside the lake: a batch killed mid-upload or after
/// its files are written leaves only `.parquet` files in `lake/`, which pyarrow reads.
#[test]
fn a_killed_batch_leaves_only_parquet_files_in_the_lake() {
    let env = Env::new();
    let g = common::generate(43, 2000, 0, 3);
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    for (n, point) in [
        (0, "batch.before_file_complete"),
        (1, "batch.after_files_written"),
    ] {
        // the second run starts after the first one's lease expired
        let out = env
            .cmd_at(&common::after_lease_expiry(n), &["batch"])
            .env("HOLDFAST_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {point}")),
            "{point} was not reached"
        );
        let files = lake_files(&env);
        assert!(
            files.iter().all(|f| f.ends_with(".parquet")),
            "killed at {point}: {files:?}"
        );
    }
    assert!(!lake_files(&env).is_empty(), "the files were written");
    if let Some(python) = std::env::var_os("HOLDFAST_TEST_PYTHON") {
        let out = std::process::Command::new(python)
            .arg(common::repo().join("tests/readers/read_dir.py"))
            .arg(env.store.join("lake"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pyarrow cannot read the lake: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = env.batch_at(&common::after_lease_expiry(2));
    assert_eq!(r["stored"], 2000, "{r}");
    assert_eq!(env.count("SELECT count(*) FROM events"), 2000);
}

/// One partition's latest manifest emptied: queries serve the others with a warning, a batch
/// commits the others and leaves that partition's events in landing, verify reports it; once
/// the manifest is restored everything flows.
#[test]
fn a_damaged_manifest_stops_only_its_partition() {
    let env = Env::new();
    let g = common::generate(44, 400, 0, 2);
    env.ingest(&env.write("a.ndjson", &g.ndjson));
    env.batch();
    let bad = "year=2025/month=10/day=01/interaction_type=CALL";
    let in_bad =
        env.count("SELECT count(*) FROM events WHERE day = 1 AND interaction_type = 'CALL'");
    let mfile = env
        .store
        .join("manifests")
        .join(bad)
        .join(format!("v{:020}.json", 1));
    let good_bytes = std::fs::read(&mfile).unwrap();
    std::fs::write(&mfile, b"").unwrap();
    // queries: the other partitions, and a warning
    let out = env.run(&[
        "query",
        "--format",
        "ndjson",
        "SELECT count(*) AS n FROM events",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(bad));
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["n"].as_i64().unwrap(), 400 - in_bad);
    // a batch commits the other partitions
    let h = common::generate(45, 300, 0, 2);
    env.ingest(&env.write("b.ndjson", &h.ndjson));
    let out = env.run(&["batch", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let blocked = r["events_blocked"].as_i64().unwrap();
    assert!(blocked > 0, "{r}");
    assert_eq!(r["stored"].as_i64().unwrap(), 300 - blocked, "{r}");
    assert_eq!(r["segments_kept"], 1);
    assert!(r["damaged_partitions"][0].as_str().unwrap().contains(bad));
    assert_eq!(env.landing_segments(), 1, "kept for the damaged partition");
    assert!(!env.verify().0, "verify reports it");
    // restored: the rest goes in, once
    std::fs::write(&mfile, &good_bytes).unwrap();
    let r = env.batch();
    assert_eq!(r["stored"].as_i64().unwrap(), blocked, "{r}");
    assert_eq!(env.landing_segments(), 0);
    assert_eq!(env.count("SELECT count(*) FROM events"), 700);
    assert!(env.verify().0);
}

/// A lease left by a killed run on another host (a CronJob pod) is respected until it
/// expires, then taken over.
#[test]
fn another_hosts_lease_is_taken_over_once_expired() {
    let env = Env::new();
    env.ingest(&env.write("e.ndjson", &common::generate(46, 50, 0, 1).ndjson));
    env.plant_lease(
        "batch",
        7,
        "holdfast-cron-28911-x7k2p",
        1,
        "2026-03-01T00:01:00Z",
    );
    let out = env.run_at("2026-03-01T00:00:30Z", &["batch"]);
    assert_eq!(out.status.code(), Some(1), "unexpired: respected");
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds the lease"));
    assert_eq!(env.landing_segments(), 1);
    let r: serde_json::Value =
        serde_json::from_str(&env.ok_at("2026-03-01T00:05:00Z", &["batch", "--format", "json"]))
            .unwrap();
    assert_eq!(r["lease_taken_over"], true, "{r}");
    assert_eq!(r["stored"], 50);
    let lease = env.lease("batch").unwrap();
    assert!(
        lease["token"].as_u64().unwrap() > 7 && lease["released"] == true,
        "{lease}"
    );
}

/// Lock repair runs at every batch start, also after someone removed a dead lease by hand.
#[test]
fn lock_repair_runs_at_every_batch_start() {
    let env = Env::new();
    env.ingest(&env.write("e.ndjson", &common::generate(47, 600, 0, 4).ndjson));
    let out = env.run_failing_at("batch.after_manifest:1", &["batch"]);
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(env.store.join("_leases"));
    let _ = std::fs::remove_file(env.store.join("_batch.lease"));
    let r = env.batch();
    assert_eq!(r["lease_taken_over"], false);
    assert_eq!(r["locks_repaired"], 1, "{r}");
    assert_eq!(env.count("SELECT count(*) FROM events"), 600);
    assert!(env.verify().0);
}

/// A batch paused past its lease's expiry is taken over by another; when it resumes it
/// finds its lease gone and commits nothing (fencing); every event is stored once.
#[test]
fn a_batch_whose_lease_was_taken_over_commits_nothing() {
    let env = Env::new();
    env.ingest(&env.write("e.ndjson", &common::generate(48, 900, 0, 3).ndjson));
    let pause = env.dir.path().join("pause");
    std::fs::write(&pause, b"").unwrap();
    let paused = env
        .cmd_at("2026-03-01T00:00:00Z", &["batch"])
        .env(
            "HOLDFAST_PAUSE",
            format!("batch.after_files_written:{}", pause.display()),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reached = env.dir.path().join("pause.reached");
    let t0 = std::time::Instant::now();
    while !reached.exists() {
        assert!(
            t0.elapsed().as_secs() < 60,
            "the paused batch never got there"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // an hour later by the lease clock: expired, taken over
    let r: serde_json::Value =
        serde_json::from_str(&env.ok_at("2026-03-01T01:00:00Z", &["batch", "--format", "json"]))
            .unwrap();
    assert_eq!(r["lease_taken_over"], true, "{r}");
    assert_eq!(r["stored"], 900);
    std::fs::remove_file(&pause).unwrap();
    let out = paused.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lease was lost"), "{err}");
    assert_eq!(env.count("SELECT count(*) FROM events"), 900);
    assert_eq!(
        env.count("SELECT count(DISTINCT event_id) FROM events"),
        900
    );
    let (ok, v) = env.verify();
    assert!(ok, "{v}");
    assert_eq!(env.batch()["stored"], 0);
    assert_eq!(env.landing_segments(), 0);
}
