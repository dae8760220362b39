//! The committed set as a Delta Lake table (`_delta_log` at the store's root): delta-rs and polars read
//! exactly the rows `holdfast query` reads, after a batch, a re-delivery, a killed batch (its
//! orphan on disk) and sweeps that delete and rewrite (the old files kept on disk while
//! locked); `table rebuild` writes the same log again, and `verify` names a log edited by hand.

use crate::common::{self, Backend, Env};

common::on_both_backends!(
    the_table_is_the_committed_set_through_batches_and_a_killed_one,
    sweeps_take_files_out_of_the_table_while_they_stay_on_disk,
);

/// The table's root as a reader names it.
fn root(env: &Env) -> String {
    match &env.url {
        Some(url) => url.clone(),
        None => env.store.to_str().unwrap().to_string(),
    }
}

/// What delta-rs and polars read of the table at `root` (`tests/readers/read_table.py`).
fn read_table(env: &Env, python: &std::ffi::OsStr, root: &str) -> serde_json::Value {
    let mut cmd = std::process::Command::new(python);
    cmd.arg(common::repo().join("tests/readers/read_table.py"))
        .arg(root);
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{root}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What delta-rs and polars read; asserts both agree with `query` over `events`.
fn assert_table_is_events(env: &Env, python: &std::ffi::OsStr, when: &str) -> u64 {
    let got = read_table(env, python, &root(env));
    let ids: Vec<String> = env
        .query("SELECT event_id FROM events ORDER BY event_id")
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    let sha = holdfast::lake::manifest::sha256_hex(ids.join("\n").as_bytes());
    for reader in ["deltalake", "polars"] {
        assert_eq!(got[reader]["rows"], ids.len(), "{when}: {reader}: {got}");
        assert_eq!(
            got[reader]["distinct"],
            ids.len(),
            "{when}: {reader}: {got}"
        );
        assert_eq!(got[reader]["ids_sha256"], sha.as_str(), "{when}: {reader}");
    }
    assert_eq!(got["polars_year_type"], "Int32", "{got}");
    got["version"].as_u64().unwrap()
}

fn the_table_is_the_committed_set_through_batches_and_a_killed_one(backend: Backend) {
    let Some(python) = common::python("the_table_is_the_committed_set") else {
        return;
    };
    let env = Env::on(backend);
    let g = common::generate(91, 300, 20, 3);
    let file = env.write("a.ndjson", &g.ndjson);
    env.ingest(&file);
    env.batch();
    let v1 = assert_table_is_events(&env, &python, "after a batch");
    // a re-delivery stores nothing twice
    env.ingest(&file);
    env.batch();
    assert_table_is_events(&env, &python, "after a re-delivery");
    // a batch killed after writing its files leaves them on disk, outside the table
    let more = common::generate(92, 120, 0, 2);
    env.ingest(&env.write("b.ndjson", &more.ndjson));
    let killed = env.run_failing_at("batch.after_files_written", &["batch"]);
    assert!(!killed.status.success());
    assert_eq!(
        assert_table_is_events(&env, &python, "after a killed batch"),
        v1,
        "the killed batch published nothing"
    );
    env.batch_at(&common::after_lease_expiry(1));
    let v = assert_table_is_events(&env, &python, "after the rerun");
    assert!(v > v1);
    // the log is derived: a rebuild writes the same bytes, a hand edit is reported
    let log = |env: &Env| -> Vec<(String, Vec<u8>)> {
        env.snapshot()
            .into_iter()
            .filter(|(k, _)| k.contains("_delta_log/"))
            .collect()
    };
    let before = log(&env);
    assert_eq!(before.len() as u64, v + 1);
    let later = common::after_lease_expiry(2);
    env.ok_at(&later, &["table", "rebuild"]);
    assert_eq!(log(&env), before, "a rebuild writes the same log");
    assert!(env.verify().0);
    let (name, bytes) = &before[1];
    // an action edited by hand
    let edited = String::from_utf8(bytes.clone()).unwrap().replacen(
        "\"dataChange\":true",
        "\"dataChange\":false",
        1,
    );
    assert_ne!(edited.as_bytes(), bytes.as_slice());
    env.tamper_write(name, edited.as_bytes());
    let (ok, v) = env.verify();
    assert!(!ok, "an edited log passed verify");
    assert!(
        v.to_string()
            .contains("_delta_log/00000000000000000001.json"),
        "{v}"
    );
    env.ok(&["table", "rebuild"]);
    assert!(env.verify().0);
}

fn sweeps_take_files_out_of_the_table_while_they_stay_on_disk(backend: Backend) {
    let Some(python) = common::python("sweeps_take_files_out_of_the_table") else {
        return;
    };
    let env = Env::on(backend);
    let g = common::generate(93, 600, 0, 3); // 2025-10-01 .. 03, FINRA 6 years
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    env.batch();
    assert_table_is_events(&env, &python, "before the sweep");
    let pipe = env.write("p.toml", b"[retention]\nrewrite_min_days = 0\n");
    // day 1 expired (deleted), day 2 half expired (rewritten: the old files stay, locked)
    let now = "2031-10-02T12:00:00Z";
    let r: serde_json::Value = serde_json::from_str(&env.ok_at(
        now,
        &[
            "sweep",
            "--pipeline",
            pipe.to_str().unwrap(),
            "--format",
            "json",
        ],
    ))
    .unwrap();
    assert!(r["files_rewritten"].as_i64().unwrap() > 0, "{r}");
    assert!(r["files_removed"].as_i64().unwrap() > 0, "{r}");
    let old = r["awaiting_lock"][0].as_str().unwrap().to_string();
    assert!(env.exists(&old), "the rewritten file is still stored");
    assert_table_is_events(&env, &python, "after a sweep that deletes and rewrites");
    assert!(env.verify().0);
}

/// Every `checkpoint::EVERY` versions a Parquet checkpoint holds the whole state: readers given
/// only it and the later versions read the same rows; a rebuild writes the same bytes; an
/// edited checkpoint fails verify.
#[test]
fn a_checkpoint_alone_gives_readers_the_whole_table() {
    let Some(python) = common::python("a_checkpoint_alone_gives_readers_the_whole_table") else {
        return;
    };
    let env = Env::new();
    let every = holdfast::lake::table::checkpoint::EVERY as usize;
    let g = common::generate(94, every + 1, 0, 2);
    let lines: Vec<&[u8]> = g
        .ndjson
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    // one version per batch (version 0 is the store's first head)
    for (i, line) in lines.iter().enumerate() {
        let mut one = line.to_vec();
        one.push(b'\n');
        env.ingest(&env.write(&format!("one-{i}.ndjson"), &one));
        env.batch();
    }
    let log = env.store.join("_delta_log");
    let checkpoint = log.join(format!("{every:020}.checkpoint.parquet"));
    assert!(checkpoint.exists(), "no checkpoint at version {every}");
    // a table holding only the checkpoint and what follows it
    let only = env.dir.path().join("only");
    std::fs::create_dir_all(only.join("_delta_log")).unwrap();
    std::os::unix::fs::symlink(env.store.join("lake"), only.join("lake")).unwrap();
    for e in std::fs::read_dir(&log).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let version: usize = name[..20].parse().unwrap();
        if version > every || name.ends_with(".checkpoint.parquet") {
            std::fs::copy(e.path(), only.join("_delta_log").join(&name)).unwrap();
        }
    }
    let got = read_table(&env, &python, only.to_str().unwrap());
    let rows = env.count("SELECT count(*) FROM events");
    assert_eq!(rows as usize, every + 1);
    assert_eq!(got["deltalake"]["rows"], rows, "{got}");
    assert_eq!(got["polars"]["rows"], rows, "{got}");
    // derived: rebuilt byte for byte; edited: named by verify
    let before = std::fs::read(&checkpoint).unwrap();
    env.ok(&["table", "rebuild"]);
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before);
    assert!(env.verify().0);
    let mut edited = before.clone();
    let at = edited.len() / 2;
    edited[at] ^= 0x20;
    env.tamper_write(
        &format!("_delta_log/{every:020}.checkpoint.parquet"),
        &edited,
    );
    let (ok, v) = env.verify();
    assert!(!ok && v.to_string().contains("checkpoint"), "{v}");
}
