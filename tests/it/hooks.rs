//! Test hooks exist only in test builds: a plain build (the binary users get) ignores
//! `HOLDFAST_NOW`, `HOLDFAST_FAILPOINT` and `HOLDFAST_TEST_OS_USER`; a sweep that deletes uses
//! the real clock; the audit trail refuses time running backwards.

use crate::common::{self, Env};
use std::path::PathBuf;

/// The plain build `tests/run.sh` keeps aside (`HOLDFAST_PLAIN_BIN`).
fn plain_bin() -> Option<PathBuf> {
    match std::env::var_os("HOLDFAST_PLAIN_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but HOLDFAST_PLAIN_BIN is not set: run tests/run.sh"
            );
            eprintln!("SKIPPED: HOLDFAST_PLAIN_BIN not set (tests/run.sh sets it)");
            None
        }
    }
}

#[test]
fn a_plain_build_ignores_the_test_clock_and_failpoints() {
    let Some(plain) = plain_bin() else { return };
    let env = Env::new();
    let input = env.write("e.ndjson", &common::generate(71, 60, 0, 2).ndjson);
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut p = std::process::Command::new(&plain);
        p.args(args)
            .env("HOLDFAST_STORE", &env.store)
            .env("HOLDFAST_KEYRING", &env.keyring)
            .env_remove("HOLDFAST_ACTOR")
            .env_remove(common::OS_USER_VAR)
            .current_dir(common::repo());
        for (k, v) in envs {
            p.env(k, v);
        }
        p.output().unwrap()
    };
    let far = [("HOLDFAST_NOW", "2100-01-01T00:00:00Z")];
    let out = run(&["ingest", input.to_str().unwrap()], &far);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // an armed failpoint does nothing: the batch runs to the end
    let out = run(
        &["batch", "--format", "json"],
        &[far[0], ("HOLDFAST_FAILPOINT", "batch.after_files_written")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stored"], 60, "{report}");
    // the plain build is whoever the kernel says: HOLDFAST_TEST_OS_USER names nobody there
    let real = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert_ne!(real, common::OPERATOR);
    let posing = [(common::OS_USER_VAR, common::OPERATOR)];
    let out = run(&["access", "whoami"], &posing);
    let who = String::from_utf8_lossy(&out.stdout);
    assert!(who.starts_with(&format!("os user {real},")), "{who}");
    // so the operator's retention role is not theirs: the sweep is refused
    let out = run(&["sweep"], &posing);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention role"));
    env.second_person(&real, &["retention"]);
    // a sweep under a far-future HOLDFAST_NOW deletes nothing: the real clock decides
    let out = run(&["sweep", "--format", "json"], &far);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sweep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sweep["files_removed"], 0, "{sweep}");
    assert_eq!(env.count("SELECT count(*) FROM events"), 60);
    // and the trail carries real times, not 2100
    let now = chrono::Utc::now();
    for row in env.query("SELECT CAST(at AS VARCHAR) AS at FROM audit") {
        let at = row["at"].as_str().unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(&at.replace(' ', "T"))
            .map(|t| t.to_utc())
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S%.f")
                    .map(|t| t.and_utc())
            })
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(
            (now - at).num_minutes().abs() < 30,
            "audit entry at {at}, real time {now}"
        );
    }
}

#[test]
fn a_sweep_that_deletes_takes_no_time_from_the_caller() {
    let env = Env::new();
    let out = env.run(&["sweep", "--now", "2100-01-01T00:00:00Z"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--now without --dry-run is a usage error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--dry-run"), "{err}");
    env.ok(&["sweep", "--dry-run", "--now", "2100-01-01T00:00:00Z"]);
}

#[test]
fn the_audit_trail_refuses_time_running_backwards() {
    let env = Env::new();
    let input = env.write("e.ndjson", &common::generate(72, 10, 0, 1).ndjson);
    env.ingest(&input);
    let batch = |now: &str| {
        env.ok_at(now, &["ingest", input.to_str().unwrap()]);
        env.ok_at(now, &["batch"]);
    };
    // after `init`'s entry (the first access policy), which carries the real time
    let at = |minutes_back: i64| {
        (chrono::Utc::now() + chrono::Duration::days(1) - chrono::Duration::minutes(minutes_back))
            .to_rfc3339()
    };
    batch(&at(0));
    env.ok(&["audit", "verify"]);
    // a few seconds back is clock skew between writers: allowed
    batch(&at(1));
    env.ok(&["audit", "verify"]);
    // an hour back is not
    batch(&at(60));
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("skew"), "{text}");
    env.ok(&["audit", "verify", "--max-skew-seconds", "7200"]);
}
