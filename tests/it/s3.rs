//! The store on S3 with Object Lock (moto, started by tests/run.sh): the commands, the
//! provider's own refusal to delete, a sweep it refuses, two batch hosts racing. The crash,
//! pipeline, discovery and tamper tests run here too, through `on_both_backends!`.
//! Each test has a bucket of its own. Under `CI=true` a missing moto or Python fails the test.

use crate::common::{self, Env};

const FAR: &str = "2040-01-01T00:00:00Z";

fn events(env: &Env, seed: u64, n: usize) -> usize {
    let g = common::generate(seed, n, n / 20, 3); // 2025-10-01 .. 03, FINRA 6 years
    env.ingest(&env.write(&format!("e{seed}.ndjson"), &g.ndjson));
    g.unique
}

fn hold(env: &Env, id: &str, interaction: &str) {
    let body = format!(
        r#"{{"holdId": "{id}", "tenantId": "tenant-0", "status": "ACTIVE", "scope": {{"interactionIds": ["{interaction}"]}}, "retentionOverride": {{"enabled": true, "expirationDate": null, "auditorTrail": {{"requestedBy": "co@firm.example", "requestTimestamp": "2025-10-14T14:30:00Z", "caseReference": "SEC-INV-2025-0892"}}}}}}"#
    );
    let f = env.write(&format!("{id}.json"), body.as_bytes());
    let out = env.ok(&["hold", "apply", "--file", f.to_str().unwrap()]);
    assert!(out.contains("pinned"), "{out}");
}

#[test]
fn commands_run_on_s3_and_the_provider_refuses_deletes_once_holdfast_forgets() {
    let Some(env) = Env::s3("s3_commands") else {
        return;
    };
    let Some(python) = common::python("s3_commands") else {
        return;
    };
    let unique = events(&env, 80, 600);
    let r = env.batch();
    assert_eq!(r["stored"], unique as u64, "{r}");
    assert_eq!(env.count("SELECT count(*) FROM events"), unique as i64);
    let (ok, v) = env.verify();
    assert!(ok, "{v}");
    assert_eq!(
        env.landing_segments(),
        0,
        "landing segments go, every version"
    );
    let landing = env.s3_objects("landing/");
    assert_eq!(
        (landing["versions"].as_u64(), landing["markers"].as_u64()),
        (Some(0), Some(0)),
        "deleting means deleting versions: {landing}"
    );
    hold(&env, "LIT-S3", "int-80-0");

    let out = std::process::Command::new(python)
        .arg(common::repo().join("tests/s3/provider_refuses.py"))
        .arg(&env.vars[0].1)
        .arg(env.bucket())
        .arg("store")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["wiped"].as_u64().unwrap() > 5, "{r}");
    assert_eq!(r["non_data_left"], serde_json::json!([]), "{r}");
    assert_eq!(r["held"]["lock"]["hold"], "ON", "{r}");
    assert_eq!(r["held"]["result"], "AccessDenied", "{r}");
    assert_eq!(r["unexpired"]["lock"]["mode"], "COMPLIANCE", "{r}");
    assert_eq!(r["unexpired"]["result"], "AccessDenied", "{r}");
}

#[test]
fn a_sweep_whose_clock_is_past_s3s_retention_is_refused_reported_audited_and_notified() {
    let Some(env) = Env::s3("s3_sweep") else {
        return;
    };
    let unique = events(&env, 81, 300);
    env.batch();
    let files = env.count("SELECT count(DISTINCT path) FROM manifests");
    // in 2040 holdfast's clock says every record has expired; S3's clock says the files
    // are retained until 2031, and S3 decides: the sweep judges each delete by the earlier
    // clock, so it never commits a removal S3 would refuse
    let notified = env.dir.path().join("notified.json");
    let pipe = env.write(
        "p.toml",
        format!(
            "[retention]\nnotify_command = [\"sh\", \"-c\", \"cat > {}\"]\n",
            notified.display()
        )
        .as_bytes(),
    );
    let out = env.run_at(
        FAR,
        &[
            "sweep",
            "--format",
            "json",
            "--pipeline",
            pipe.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = r["refused"].as_array().unwrap();
    assert_eq!(refused.len() as i64, files, "{r}");
    assert_eq!(r["files_removed"], 0, "{r}");
    let note: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&notified).unwrap()).unwrap();
    assert_eq!(note["refused"], r["refused"]);
    let audit = env.ok(&[
        "audit",
        "list",
        "--action",
        "retention.refused",
        "--format",
        "ndjson",
    ]);
    assert!(
        audit.contains(refused[0].as_str().unwrap()) && audit.contains("retained until 2031"),
        "{audit}"
    );
    assert_eq!(env.count("SELECT count(*) FROM events"), unique as i64);
    assert!(env.verify().0);
}

#[test]
fn two_batch_hosts_racing_on_one_bucket_commit_each_event_once() {
    let Some(env) = Env::s3("s3_race") else {
        return;
    };
    let unique = events(&env, 82, 1500) + events(&env, 83, 1500);
    let spawn = || {
        env.cmd(&["batch", "--format", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert!(ok >= 1, "{}", String::from_utf8_lossy(&a.stderr));
    for o in [&a, &b].iter().filter(|o| !o.status.success()) {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("holds the lease"), "{e}");
    }
    env.batch(); // whatever the loser left
    assert_eq!(env.count("SELECT count(*) FROM events"), unique as i64);
    assert_eq!(
        env.count("SELECT count(DISTINCT event_id) FROM events"),
        unique as i64
    );
    assert!(env.verify().0);
}

#[test]
fn ingest_reads_objects_and_prefixes_from_a_plain_bucket() {
    let Some(endpoint) = common::moto("s3_inputs") else {
        return;
    };
    let Some(python) = common::python("s3_inputs") else {
        return;
    };
    // a local store; the inputs come from a bucket without Object Lock, as Firehose writes
    let mut env = Env::new();
    env.vars = common::moto_vars(&endpoint);
    let bucket = common::unique_bucket("holdfast-in");
    let ctr = common::repo().join("fixtures/connect-ctr/input.ndjson");
    let g = common::generate(88, 200, 0, 3);
    let gz = env.write("more.ndjson", &g.ndjson);
    let put = std::process::Command::new(python)
        .arg(common::repo().join("tests/s3/put.py"))
        .arg(&endpoint)
        .arg(&bucket)
        .arg(format!("firehose/2026/12/02/a={}", ctr.display()))
        .arg(format!("firehose/2026/12/02/b={}", ctr.display()))
        .arg(format!("canonical/events.ndjson={}", gz.display()))
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let out = env.ok(&[
        "ingest",
        "--source",
        "auto",
        &format!("s3://{bucket}/firehose/"),
    ]);
    assert_eq!(out.lines().count(), 2, "one line per object: {out}");
    assert!(
        out.contains(&format!("s3://{bucket}/firehose/2026/12/02/b")),
        "{out}"
    );
    env.ok(&["ingest", &format!("s3://{bucket}/canonical/events.ndjson")]);
    let r = env.batch();
    assert!(r["stored"].as_u64().unwrap() >= g.unique as u64, "{r}");
    // a missing object or an empty prefix: a clear error, nothing landed
    let out = env.run(&["ingest", &format!("s3://{bucket}/nothing/")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no objects under it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn readers_fetch_the_committed_version_and_verify_names_markers_and_overwrites() {
    let Some(env) = Env::s3("s3_pinned") else {
        return;
    };
    if common::python("s3_pinned").is_none() {
        return;
    }
    let unique = events(&env, 89, 400);
    env.batch();
    let files: Vec<String> = env
        .query("SELECT path FROM manifests ORDER BY path")
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert!(files.len() >= 2);
    let (a, b) = (format!("store/{}", files[0]), format!("store/{}", files[1]));
    let marker = env.s3_tamper(&["mark", &a]);
    let newer = env.s3_tamper(&["overwrite", &b]);
    // readers still read every committed file: a column of every record, from every file
    assert_eq!(
        env.count("SELECT count(DISTINCT event_id) FROM events"),
        unique as i64
    );
    let (ok, r) = env.verify();
    assert!(!ok, "{r}");
    let text = r.to_string();
    assert!(
        text.contains("delete marker") && text.contains(&format!("--version-id {marker}")),
        "{text}"
    );
    assert!(
        text.contains("written over") && text.contains(&format!("--version-id {newer}")),
        "{text}"
    );
    // the commands verify names undo both
    env.s3_tamper(&["remove", &a, &marker]);
    env.s3_tamper(&["remove", &b, &newer]);
    let (ok, r) = env.verify();
    assert!(ok, "{r}");
}

#[test]
fn json_reports_count_the_s3_requests_of_the_command() {
    let Some(env) = Env::s3("s3_requests") else {
        return;
    };
    events(&env, 90, 200);
    let r = env.batch();
    let n = r["s3_requests"].as_u64().unwrap_or(0);
    assert!(n > 10, "{r}");
    let (_, v) = env.verify();
    assert!(v["s3_requests"].as_u64().unwrap_or(0) > 0, "{v}");
    // a local store's reports have no such key
    let local = Env::new();
    local.ingest(&local.write("e.ndjson", &common::generate(91, 50, 0, 1).ndjson));
    assert!(local.batch().get("s3_requests").is_none());
}

#[test]
fn the_object_lock_mode_is_chosen_once_at_init_and_applied_to_every_data_file() {
    let Some(env) = Env::s3_with("s3_governance", &["--object-lock-mode", "governance"]) else {
        return;
    };
    if common::python("s3_governance").is_none() {
        return;
    }
    events(&env, 92, 300);
    env.batch();
    let lake = env.s3_objects_with("lake/", &["--modes"]);
    let files = lake["current"].as_array().unwrap().len() as u64;
    assert!(files > 0);
    assert_eq!(lake["modes"]["GOVERNANCE"].as_u64(), Some(files), "{lake}");
    // chosen once: asking for another mode later is refused; a local store has none
    let out = env.run(&["init", "--object-lock-mode", "compliance"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("chosen once"));
    let local = Env::new();
    let out = local.run(&["init", "--object-lock-mode", "governance"]);
    assert_eq!(out.status.code(), Some(2));
    // the default is COMPLIANCE
    let Some(default) = Env::s3("s3_compliance") else {
        return;
    };
    events(&default, 93, 100);
    default.batch();
    let lake = default.s3_objects_with("lake/", &["--modes"]);
    let n = lake["current"].as_array().unwrap().len() as u64;
    assert_eq!(lake["modes"]["COMPLIANCE"].as_u64(), Some(n), "{lake}");
}
