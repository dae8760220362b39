//! Data file formats. A store whose data files are of format 1 (each record sealed alone, one
//! dictionary trained on every tenant's records of a file) or 2 (a dictionary per tenant), as
//! holdfast wrote them before format 3 (a test build still does, with
//! `HOLDFAST_TEST_DATAFILE_VERSION`), stays readable by every reader: `query --decrypt`,
//! `verify --deep`, and a sweep, whose rewrite of such a file writes format 3 (records sealed
//! in groups). New batches write format 3, and the formats are read side by side.

use crate::common::{self, Env};
use std::collections::BTreeMap;

/// Footer keys of every data file under the store, by path.
fn footers(env: &Env) -> BTreeMap<String, BTreeMap<String, String>> {
    use parquet::file::reader::FileReader;
    let mut out = BTreeMap::new();
    for p in env.store_files() {
        if p.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let r = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&p).unwrap())
            .unwrap();
        let kv = r.metadata().file_metadata().key_value_metadata().unwrap();
        let kv = kv
            .iter()
            .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
            .collect();
        out.insert(p.display().to_string(), kv);
    }
    out
}

/// Every record of `day` opened through `query --decrypt`: its notes are the generated ones.
fn decrypted_notes_match(env: &Env, g: &common::Gen, day: u32) -> usize {
    decrypted_where(env, g, &format!("day = {day}"))
}

/// Every record `filter` selects, opened through `query --decrypt`: its notes are the
/// generated ones.
fn decrypted_where(env: &Env, g: &common::Gen, filter: &str) -> usize {
    let sql = format!(
        "SELECT event_id, json_get(record, 'interaction', 'notes') AS notes FROM decrypted WHERE {filter}"
    );
    let out = env.ok(&[
        "query",
        "--decrypt",
        "--case",
        "C-1",
        "--format",
        "ndjson",
        &sql,
    ]);
    let mut n = 0;
    for line in out.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = row["event_id"].as_str().unwrap();
        let i: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        assert_eq!(row["notes"], g.notes[i].as_str(), "{id}");
        n += 1;
    }
    n
}

fn deep_verify(env: &Env) {
    let out = env.run(&["verify", "--deep", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{v}");
    assert!(v["deep_records"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn format_1_files_stay_readable_and_a_sweep_rewrites_them_as_format_3() {
    old_files_stay_readable(1);
}

#[test]
fn format_2_files_stay_readable_and_a_sweep_rewrites_them_as_format_3() {
    old_files_stay_readable(2);
}

fn old_files_stay_readable(version: u8) {
    let env = Env::new();
    let g = common::generate(71, 900, 0, 3); // 2025-10-01 .. 03, 3 tenants, FINRA 6 years
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    let out = env
        .cmd(&["batch", "--format", "json"])
        .env("HOLDFAST_TEST_DATAFILE_VERSION", version.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = footers(&env);
    let v = version.to_string();
    assert!(before.values().all(|kv| kv["holdfast.format_version"] == v));
    let dictionary = match version {
        1 => "holdfast.dictionary",
        _ => "holdfast.dictionaries",
    };
    assert!(before.values().any(|kv| kv.contains_key(dictionary)));

    deep_verify(&env);
    assert!(decrypted_notes_match(&env, &g, 2) > 100);

    // day 1 expired, day 2 half: day 2's files are rewritten
    let pipe = env.write("p.toml", b"[retention]\nrewrite_min_days = 0\n");
    let now = "2031-10-02T12:00:00Z";
    let sweep = [
        "sweep",
        "--pipeline",
        pipe.to_str().unwrap(),
        "--format",
        "json",
    ];
    let r: serde_json::Value = serde_json::from_str(&env.ok_at(now, &sweep)).unwrap();
    assert!(r["files_rewritten"].as_i64().unwrap() > 0, "{r}");
    let after = footers(&env);
    let new: Vec<&BTreeMap<String, String>> = after
        .iter()
        .filter(|(p, _)| !before.contains_key(*p))
        .map(|(_, kv)| kv)
        .collect();
    assert_eq!(new.len() as i64, r["files_rewritten"].as_i64().unwrap());
    for kv in &new {
        assert_eq!(kv["holdfast.format_version"], "3", "{kv:?}");
        assert_eq!(kv["holdfast.payload.compression"], "zstd-groups", "{kv:?}");
        assert!(!kv.contains_key("holdfast.dictionary"), "{kv:?}");
        assert!(!kv.contains_key("holdfast.dictionaries"), "{kv:?}");
        assert!(kv.contains_key("holdfast.rewritten_from"), "{kv:?}");
    }
    deep_verify(&env);
    assert!(decrypted_notes_match(&env, &g, 2) > 0);
    assert!(
        decrypted_notes_match(&env, &g, 3) > 100,
        "the old format beside format 3"
    );

    // a later batch writes format 3
    let g2 = common::generate(72, 300, 0, 3);
    env.ingest(&env.write("f.ndjson", &g2.ndjson));
    env.batch();
    let newest = footers(&env);
    let added: Vec<_> = newest
        .iter()
        .filter(|(p, _)| !after.contains_key(*p))
        .collect();
    assert!(!added.is_empty());
    assert!(
        added
            .iter()
            .all(|(_, kv)| kv["holdfast.format_version"] == "3")
    );
    deep_verify(&env);
}

/// In format 3 a group is carried by its first row: a query whose filter leaves that row out
/// still opens the rows it keeps (the carrier is read from the file), and only those.
#[test]
fn a_filtered_query_opens_records_whose_group_it_did_not_select() {
    let env = Env::new();
    let g = common::generate(73, 600, 0, 3);
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    env.batch();
    assert!(
        footers(&env)
            .values()
            .all(|kv| kv["holdfast.format_version"] == "3")
    );
    // every seventh event: most groups' first rows are not among them
    let all = decrypted_where(&env, &g, "day = 2");
    let some = decrypted_where(&env, &g, "day = 2 AND event_id LIKE '%7'");
    assert!(some > 5 && some < all / 5, "{some} of {all}");
    deep_verify(&env);
}
