//! `keys status`, `keys rotate` and `keys rewrap` on a store with the local keyring: every
//! wrapped DEK (data files, a waiting landing segment, quarantine) moves to the new version,
//! no data file changes, and once the old version is gone from the keyring everything still
//! opens. A rewrap killed at any instant is finished by the next.

use crate::common::{self, Env};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// SHA-256 of every data file under `lake/`, by path.
fn data_files(env: &Env) -> BTreeMap<String, String> {
    env.store_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| {
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                std::fs::read(&p).unwrap(),
            ));
            (p.display().to_string(), sha)
        })
        .collect()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn status(env: &Env) -> Value {
    json(&env.ok(&["keys", "status", "--format", "json"]))
}

/// DEKs wrapped under `version` (all homes).
fn under(status: &Value, version: u64) -> u64 {
    status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == version)
        .map_or(0, |v| v["total"].as_u64().unwrap())
}

/// Takes KEK `version` out of the keyring file, as retiring it would.
fn drop_version(keyring: &Path, version: u64) {
    let mut ring: Value = json(&std::fs::read_to_string(keyring).unwrap());
    ring["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["version"] != version);
    std::fs::write(keyring, serde_json::to_vec_pretty(&ring).unwrap()).unwrap();
}

/// A store with committed data, quarantine entries, and a segment waiting in landing.
fn store_with_every_home() -> (Env, usize) {
    let env = Env::new();
    env.ingest(&env.write("a.ndjson", &common::generate(31, 80, 5, 3).ndjson));
    env.ingest(&env.write("bad.ndjson", &common::malformed().0));
    env.batch();
    env.ingest(&env.write("b.ndjson", &common::generate(32, 20, 0, 1).ndjson));
    let files = data_files(&env).len();
    (env, files)
}

#[test]
fn rewrap_moves_every_dek_and_rewrites_no_data_file() {
    let (env, files) = store_with_every_home();
    let before = data_files(&env);
    let s = status(&env);
    assert_eq!(
        (s["primary"].as_u64(), under(&s, 1)),
        (Some(1), files as u64 + 2),
        "{s}"
    );
    env.ok(&["keys", "rotate"]);
    let s = status(&env);
    assert_eq!(s["primary"], 2);
    let warnings = s["warnings"].to_string();
    assert!(warnings.contains("still wrapped under v1"), "{s}");

    let r = json(&env.ok(&["keys", "rewrap", "--format", "json"]));
    assert_eq!(r["data_files"], files as u64, "{r}");
    assert_eq!(
        (r["landing"].as_u64(), r["quarantine"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(r["to_version"], 2);
    assert_eq!(data_files(&env), before, "a data file changed");
    let s = status(&env);
    assert_eq!((under(&s, 1), under(&s, 2)), (0, files as u64 + 2), "{s}");
    assert_eq!(s["warnings"], serde_json::json!([]), "{s}");
    // idempotent: nothing left to move
    let again = json(&env.ok(&["keys", "rewrap", "--format", "json"]));
    assert_eq!(
        (again["data_files"].as_u64(), again["landing"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(again["current"], files as u64 + 2);

    // v1 gone: the data, the waiting segment and the quarantine still open
    drop_version(&env.keyring, 1);
    env.ok(&["verify", "--deep"]);
    let id = env
        .ok(&["quarantine", "list", "--format", "ndjson"])
        .lines()
        .map(|l| json(l)["id"].as_str().unwrap().to_string())
        .next()
        .unwrap();
    env.ok(&["quarantine", "show", &id, "--case", "KEYS-1"]);
    assert_eq!(env.batch()["stored"], 20);
    let n = env.ok(&[
        "query",
        "--decrypt",
        "--case",
        "KEYS-1",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM decrypted",
    ]);
    assert_eq!(n.lines().nth(1), Some("100"), "{n}");
    env.ok(&["verify", "--deep"]);
    let actions: Vec<String> = env
        .ok(&["audit", "list", "--format", "ndjson"])
        .lines()
        .map(|l| json(l)["action"].as_str().unwrap().to_string())
        .collect();
    assert!(actions.iter().any(|a| a == "keys.rotate"), "{actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "keys.rewrap").count(), 2);
}

#[test]
fn a_rewrap_killed_at_any_step_is_finished_by_the_next() {
    let (env, files) = store_with_every_home();
    let all = files as u64 + 2;
    let before = data_files(&env);
    let steps = [
        ("rewrap.before_manifest", 0),
        ("rewrap.after_manifests", files as u64),
        ("rewrap.after_rewrapped_key", files as u64 + 1),
        ("rewrap.before_head", all),
    ];
    for (round, (point, moved)) in steps.into_iter().enumerate() {
        let round = round as u32;
        let version = round as u64 + 2;
        let at = common::after_lease_expiry(2 * round);
        env.ok_at(&at, &["keys", "rotate"]);
        let out = env
            .cmd_at(&at, &["keys", "rewrap"])
            .env("HOLDFAST_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point} was not reached");
        let s = json(&env.ok_at(&at, &["keys", "status", "--format", "json"]));
        assert_eq!(under(&s, version), moved, "{point}: {s}");
        // the next run (after the killed one's lease expired) finishes
        let next = common::after_lease_expiry(2 * round + 1);
        env.ok_at(&next, &["keys", "rewrap"]);
        let s = json(&env.ok_at(&next, &["keys", "status", "--format", "json"]));
        assert_eq!(under(&s, version), all, "{point}: {s}");
        env.ok_at(&next, &["verify"]);
    }
    // and killed at random instants
    let at = common::after_lease_expiry(9);
    env.ok_at(&at, &["keys", "rotate"]);
    common::kill_at_random(
        &env,
        &["keys", "rewrap"],
        3,
        10,
        std::time::Duration::from_millis(150),
        7,
    );
    let now = common::after_lease_expiry(14);
    env.ok_at(&now, &["keys", "rewrap"]);
    let s: Value = json(&env.ok_at(&now, &["keys", "status", "--format", "json"]));
    assert_eq!(under(&s, 6), all, "{s}");
    assert_eq!(data_files(&env), before);
    for v in 1..6 {
        drop_version(&env.keyring, v);
    }
    env.ok_at(&now, &["verify", "--deep"]);
    assert_eq!(env.batch_at(&now)["stored"], 20);
}

#[test]
fn a_kek_past_its_cryptoperiod_is_reported_and_key_calls_are_audited() {
    let env = Env::new();
    env.ingest(&env.write("a.ndjson", &common::generate(33, 40, 0, 2).ndjson));
    env.ingest(&env.write("bad.ndjson", &common::malformed().0));
    // the keyring's first version was made at init, now; 800 days on it is past 730
    let later = (chrono::Utc::now() + chrono::Duration::days(800))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = env
        .cmd_at(&later, &["batch", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&String::from_utf8(out.stdout).unwrap());
    let warning = report["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("past its cryptoperiod of 730 days"),
        "{report}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("keys rotate"));
    // one wrap per data file and one for the batch's quarantine entries; one per segment unwrapped
    let files = report["files"].as_u64().unwrap();
    assert_eq!(report["kms"]["wraps"], files + 1, "{report}");
    assert_eq!(report["kms"]["unwraps"], 2, "{report}");
    let s = json(&env.ok_at(&later, &["keys", "status", "--format", "json"]));
    assert!(
        s["warnings"][0]
            .as_str()
            .unwrap()
            .contains("past its cryptoperiod"),
        "{s}"
    );
    env.ok_at(&later, &["keys", "rotate"]);
    let s = json(&env.ok_at(&later, &["keys", "status", "--format", "json"]));
    assert!(!s["warnings"].to_string().contains("cryptoperiod"), "{s}");

    env.ok(&[
        "query",
        "--decrypt",
        "--case",
        "KEYS-2",
        "SELECT count(record) AS n FROM decrypted",
    ]);
    let audit: Vec<Value> = env
        .ok(&["audit", "list", "--format", "ndjson"])
        .lines()
        .map(json)
        .collect();
    let details = |action: &str| {
        let e = audit.iter().find(|e| e["action"] == action).unwrap();
        json(e["details"].as_str().unwrap())
    };
    let batch = details("batch");
    assert_eq!(batch["kms"]["wraps"], files + 1, "{batch}");
    let decrypt = details("decrypt");
    assert_eq!(decrypt["kms"]["unwraps"], files, "{decrypt}");
}

/// The request id in `keys retire`'s output (`request kr-…: …`).
fn request_id(out: &str) -> String {
    out.split_whitespace()
        .nth(1)
        .map(|s| s.trim_end_matches(':').to_string())
        .filter(|s| s.starts_with("kr-"))
        .unwrap_or_else(|| panic!("no request id in {out:?}"))
}

#[test]
fn a_version_is_retired_only_when_nothing_needs_it_and_a_second_admin_approves() {
    let (env, files) = store_with_every_home();
    env.second_person("kim", &[]);
    env.ok(&["keys", "rotate"]);
    // DEKs still under v1: refused, audited
    let out = env.run(&["keys", "retire", "--version", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{} DEK(s)", files + 2)) && err.contains("keys rewrap"),
        "{err}"
    );
    // the primary version: a usage error
    assert_eq!(
        env.run(&["keys", "retire", "--version", "2"]).status.code(),
        Some(2)
    );
    env.ok(&["keys", "rewrap"]);
    let id = request_id(&env.ok(&["keys", "retire", "--version", "1"]));
    // the one who asked cannot approve; a non-admin cannot either
    assert_eq!(
        env.run(&["keys", "approve", "--request", &id])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        env.run_as("eve", &["keys", "approve", "--request", &id])
            .status
            .code(),
        Some(1)
    );
    let s = status(&env);
    assert_eq!(s["min_decryption_version"], 1, "nothing retired yet: {s}");
    let done = env.ok_as("kim", &["keys", "approve", "--request", &id]);
    assert!(done.contains("unwraps from v2 on"), "{done}");
    let again = env.run_as("kim", &["keys", "approve", "--request", &id]);
    assert_eq!(again.status.code(), Some(1), "approved twice");
    let s = status(&env);
    assert_eq!(s["min_decryption_version"], 2, "{s}");
    assert_eq!(s["versions"][0]["decrypts"], false, "{s}");
    let ring: Value = json(&std::fs::read_to_string(&env.keyring).unwrap());
    assert_eq!(
        (
            ring["version"].as_str(),
            ring["min_decryption_version"].as_u64()
        ),
        (Some("3"), Some(2))
    );
    // everything still opens through v2, and a v1 wrapping is refused by name
    env.ok(&["verify", "--deep"]);
    assert_eq!(env.batch()["stored"], 20);
    let actions: Vec<String> = env
        .ok(&["audit", "list", "--format", "ndjson"])
        .lines()
        .map(|l| json(l)["action"].as_str().unwrap().to_string())
        .collect();
    for a in [
        "keys.retire.requested",
        "keys.retire.approved",
        "keys.refused",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
}

#[test]
fn a_sql_session_asks_the_key_service_once_per_dek() {
    let env = Env::new();
    env.ingest(&env.write("a.ndjson", &common::generate(34, 30, 0, 2).ndjson));
    let files = env.batch()["files"].as_u64().unwrap();
    let mut child = env
        .cmd(&["sql", "--decrypt", "--case", "KEYS-3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let statement = "SELECT count(record) AS n FROM decrypted;\n";
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        statement.repeat(2).as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait_with_output().unwrap().status.success());
    let unwraps: Vec<u64> = env
        .ok(&["audit", "list", "--format", "ndjson"])
        .lines()
        .map(json)
        .filter(|e| e["action"] == "decrypt")
        .map(|e| {
            json(e["details"].as_str().unwrap())["kms"]["unwraps"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // the first statement unwraps every file's DEK; the second finds them in the session
    assert_eq!(unwraps, vec![files, 0]);
}
