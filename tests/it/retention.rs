//! Retention sweeps under a fake clock: expired whole files go (manifest first, audited),
//! nothing unexpired or locked goes, and verify stays green.
//! The tests listed in `on_both_backends!` run on a local store and on S3, where moto's clock
//! for the bucket follows the fake one (`Env::cmd_at`), so that S3 enforces the same dates.
//! The two others pause a batch or plant a lease through local files.

use crate::common::{self, Backend, Env};

common::on_both_backends!(
    a_dry_run_plans_from_the_manifests_and_changes_nothing,
    expired_files_go_and_nothing_unexpired_does,
    a_locked_file_is_refused_audited_and_kept,
    holds_pin_files_and_need_two_people_to_release,
    records_arriving_for_an_active_hold_are_held_from_the_start,
    only_the_retention_role_sweeps,
    one_os_user_cannot_release_as_alice_and_approve_as_bob,
    holds_need_the_compliance_role_for_their_tenant,
    an_event_arriving_after_its_expiry_is_quarantined_not_stored,
    preview_counts_and_sync_repairs_drift,
    explain_says_which_policy_and_why,
    files_hold_one_policy_and_go_whole_when_it_ends,
    a_file_mixing_expired_and_unexpired_records_is_rewritten,
    a_killed_rewrite_whose_new_file_is_rewritten_again_converges,
    a_killed_rewrite_is_finished_by_the_next_sweep,
    over_years_of_random_sweeps_exactly_the_unexpired_or_held_records_remain,
    a_dated_hold_lapses_on_its_expiration_date,
    a_sweep_split_into_its_rewrite_and_delete_steps_ends_where_a_whole_one_does,
);

fn store(backend: Backend) -> (Env, usize) {
    let env = Env::on(backend);
    let g = common::generate(70, 900, 0, 3); // 2025-10-01 .. 2025-10-03, FINRA 6 years
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    env.batch();
    (env, g.unique)
}

const NOW: &str = "2031-10-02T12:00:00Z";

fn a_dry_run_plans_from_the_manifests_and_changes_nothing(backend: Backend) {
    let (env, _) = store(backend);
    let before = env.snapshot();
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["sweep", "--dry-run", "--now", NOW])).unwrap();
    let day1 = env.count("SELECT count(*) FROM manifests WHERE day = 1");
    assert_eq!(
        plan["delete"].as_array().unwrap().len() as i64,
        day1,
        "{plan}"
    );
    assert!(day1 > 0);
    assert!(
        plan["delete"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["partition"].as_str().unwrap().contains("day=01"))
    );
    let mixed = plan["mixed"].as_array().unwrap();
    assert!(!mixed.is_empty(), "{plan}");
    assert!(
        mixed
            .iter()
            .all(|f| f["partition"].as_str().unwrap().contains("day=02"))
    );
    assert_eq!(env.snapshot(), before);
}

fn expired_files_go_and_nothing_unexpired_does(backend: Backend) {
    let (env, unique) = store(backend);
    let day1 = env.count("SELECT count(*) FROM events WHERE day = 1");
    let files1 = env.count("SELECT count(*) FROM manifests WHERE day = 1");
    let r: serde_json::Value =
        serde_json::from_str(&env.ok_at(NOW, &["sweep", "--format", "json"])).unwrap();
    assert_eq!(r["files_removed"].as_i64().unwrap(), files1, "{r}");
    assert_eq!(r["records_removed"].as_i64().unwrap(), day1);
    assert_eq!(
        env.count("SELECT count(*) FROM events"),
        unique as i64 - day1
    );
    assert_eq!(env.count("SELECT count(*) FROM events WHERE day = 1"), 0);
    // every survivor belongs to a file whose last record has not expired
    let now_sql =
        format!("SELECT count(*) FROM manifests WHERE latest_expiry <= TIMESTAMP '{NOW}'");
    assert_eq!(env.count(&now_sql), 0);
    let (ok, v) = env.verify();
    assert!(ok, "{v}");
    assert_eq!(v["orphans"].as_array().unwrap().len(), 0);
    let deletes = env
        .ok(&[
            "audit",
            "list",
            "--action",
            "retention.delete",
            "--format",
            "ndjson",
        ])
        .lines()
        .count() as i64;
    assert_eq!(deletes, files1);
    // the manifest history says what was removed, when and by which sweep
    let latest = env
        .keys("manifests/year=2025/month=10/day=01/interaction_type=CALL/")
        .pop()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&env.read_file(&latest)).unwrap();
    assert_eq!(m["files"].as_array().unwrap().len(), 0);
    assert_eq!(m["removed"][0]["sweep_id"], r["sweep_id"]);
    // and so does the `removals` table
    let sweep_id = r["sweep_id"].as_str().unwrap();
    assert_eq!(env.count(&format!("SELECT count(*) FROM removals WHERE sweep_id = '{sweep_id}' AND deleted_at = removed_at AND NOT awaiting_deletion")), files1);
    assert_eq!(v["removed_files"].as_i64().unwrap(), files1, "{v}");
    // a second sweep at the same time has nothing to do
    let again: serde_json::Value =
        serde_json::from_str(&env.ok_at(NOW, &["sweep", "--format", "json"])).unwrap();
    assert_eq!(again["files_removed"], 0);
}

fn a_locked_file_is_refused_audited_and_kept(backend: Backend) {
    let (env, _) = store(backend);
    let file =
        env.query("SELECT path FROM manifests WHERE day = 1 ORDER BY path LIMIT 1")[0]["path"]
            .as_str()
            .unwrap()
            .to_string();
    env.set_storage_legal_hold(&file, true);
    // a refusal notifies (configured command, report on stdin) and fails the run
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
        NOW,
        &[
            "sweep",
            "--format",
            "json",
            "--pipeline",
            pipe.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["refused"], serde_json::json!([file.clone()]), "{r}");
    let note: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&notified).unwrap()).unwrap();
    assert_eq!(note["refused"], r["refused"]);
    assert!(env.exists(&file));
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM manifests WHERE path = '{file}'"
        )),
        1,
        "still committed and queryable"
    );
    let refusals = env.ok(&[
        "audit",
        "list",
        "--action",
        "retention.refused",
        "--format",
        "ndjson",
    ]);
    assert!(refusals.contains(&file) && refusals.contains("legal hold"));
    assert!(env.verify().0);
}

fn holds_pin_files_and_need_two_people_to_release(backend: Backend) {
    let (env, _) = store(backend);
    env.second_person("kim", &["compliance"]);
    let body = |id: &str, ids: &str| {
        format!(
            r#"{{"holdId": "{id}", "tenantId": "tenant-0", "status": "ACTIVE", "scope": {{"interactionIds": [{ids}]}}, "retentionOverride": {{"enabled": true, "expirationDate": null, "auditorTrail": {{"requestedBy": "co@firm.example", "requestTimestamp": "2024-05-14T14:30:00Z", "caseReference": "SEC-INV-2024-0892"}}}}}}"#
        )
    };
    let a = env.write("a.json", body("LIT-A", "\"int-70-0\"").as_bytes());
    let b = env.write(
        "b.json",
        body("LIT-B", "\"int-70-0\", \"int-70-3\"").as_bytes(),
    );
    let out = env.ok(&["hold", "apply", "--file", a.to_str().unwrap()]);
    assert!(out.contains("pinned"), "{out}");
    env.ok(&["hold", "apply", "--file", b.to_str().unwrap()]);
    // the held files: those the holds list, not every file of the store
    let held = held_files(&env);
    let all = env.query("SELECT DISTINCT path FROM manifests").len();
    assert!(!held.is_empty() && held.len() < all, "{held:?} of {all}");
    // far in the future everything has expired, but held files stay
    let far = "2040-01-01T00:00:00Z";
    let count_a = env.count("SELECT count(*) FROM events WHERE interaction_id = 'int-70-0'");
    assert_eq!(count_a, 3);
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["sweep", "--dry-run", "--now", far])).unwrap();
    let rewrites = plan["rewrite"].as_array().unwrap();
    assert!(
        !rewrites.is_empty() && rewrites.iter().all(|r| r["reason"] == "held"),
        "{plan}"
    );
    let rewritten: std::collections::BTreeSet<String> = rewrites
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        rewritten, held,
        "the held files, and only they, are rewritten"
    );
    // the held files' locks have run out: survivors move to new files, the rest goes now
    let r: serde_json::Value =
        serde_json::from_str(&env.ok_at(far, &["sweep", "--format", "json"])).unwrap();
    assert_eq!(
        r["files_rewritten"].as_u64().unwrap(),
        rewrites.len() as u64,
        "{r}"
    );
    assert_eq!(r["records_kept"], 6, "{r}");
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE interaction_id = 'int-70-0'"),
        3,
        "held records survive"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE interaction_id = 'int-70-3'"),
        3
    );
    assert_eq!(
        env.count("SELECT count(*) FROM events"),
        6,
        "the expired, unheld records are gone"
    );
    assert_holds_pin_what_they_list(&env);
    let deep = env.run(&["verify", "--deep", "--format", "json"]);
    assert!(
        deep.status.success(),
        "{}",
        String::from_utf8_lossy(&deep.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&deep.stdout).unwrap();
    assert_eq!(
        (
            v["deep_records"].as_u64(),
            v["orphans"].as_array().unwrap().len()
        ),
        (Some(6), 0),
        "{v}"
    );
    assert_eq!(
        v["awaiting_deletion"].as_array().unwrap().len(),
        0,
        "the old files' locks had run out: deleted at once"
    );
    let rewrites = env.ok(&[
        "audit",
        "list",
        "--action",
        "retention.rewrite",
        "--format",
        "ndjson",
    ]);
    assert_eq!(
        rewrites.lines().count() as u64,
        r["files_rewritten"].as_u64().unwrap()
    );
    // the rewritten files are found by discovery with the decrypt flag, under their new DEK
    let out = env.ok(&[
        "query",
        "--decrypt",
        "--case",
        "LIT-A",
        "--format",
        "ndjson",
        "SELECT json_get(record, 'eventId') AS e FROM decrypted WHERE interaction_id = 'int-70-0'",
    ]);
    assert_eq!(out.lines().count(), 3, "{out}");
    // the registry knows LIT-B covers every record of the new files: kept whole, not opened
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["sweep", "--dry-run", "--now", far])).unwrap();
    assert!(
        plan["rewrite"].as_array().unwrap().is_empty()
            && !plan["held"].as_array().unwrap().is_empty(),
        "{plan}"
    );
    // a second sweep finds nothing to drop in them
    let again: serde_json::Value =
        serde_json::from_str(&env.ok_at(far, &["sweep", "--format", "json"])).unwrap();
    assert_eq!(
        (
            again["files_rewritten"].as_u64(),
            again["files_removed"].as_u64()
        ),
        (Some(0), Some(0)),
        "{again}"
    );
    // one person cannot release alone
    env.ok(&["hold", "release", "--hold", "LIT-A"]);
    let out = env.run(&["hold", "approve", "--hold", "LIT-A"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("different actor"));
    let out = env.ok_as("kim", &["hold", "approve", "--hold", "LIT-A"]);
    assert!(out.contains("released"), "{out}");
    // LIT-B still needs the files of int-70-0
    env.ok_at(far, &["sweep"]);
    assert_holds_pin_what_they_list(&env);
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE interaction_id = 'int-70-0'"),
        3,
        "another active hold still pins them"
    );
    env.ok(&["hold", "release", "--hold", "LIT-B"]);
    env.ok_as("kim", &["hold", "approve", "--hold", "LIT-B"]);
    env.ok_at(far, &["sweep"]);
    assert_eq!(
        env.count("SELECT count(*) FROM events"),
        0,
        "all expired, nothing held"
    );
    assert!(env.verify().0);
    let changes: Vec<String> = env
        .ok(&[
            "audit",
            "list",
            "--action",
            "legal_hold",
            "--format",
            "ndjson",
        ])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["details"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(&d).unwrap()["change"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        changes,
        [
            "placed",
            "placed",
            "release_requested",
            "refused",
            "released",
            "release_requested",
            "released"
        ]
    );
    let list = env.ok(&["hold", "list", "--format", "ndjson"]);
    assert_eq!(list.matches("released").count(), 2, "{list}");
}

/// The batch decides which of its new files a hold pins from the rows it had in memory: its
/// files are made unreadable after they are committed and before the holds are applied, and
/// the batch still pins exactly the held day's files (a batch that read them back would fail).
#[test]
fn a_batch_pins_its_new_files_without_reading_them_back() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let body = r#"{"holdId": "LIT-MEM", "scope": {"queueIds": ["q-3"], "dateRange": {"start": "2025-10-01T00:00:00Z", "end": "2025-10-01T23:59:59Z"}}}"#;
    env.ok(&[
        "hold",
        "apply",
        "--file",
        env.write("h.json", body.as_bytes()).to_str().unwrap(),
        "--allow-empty",
    ]);
    env.ingest(&env.write("e.ndjson", &common::generate(71, 300, 0, 2).ndjson));
    let pause = env.dir.path().join("pause");
    std::fs::write(&pause, b"").unwrap();
    let batch = env
        .cmd(&["batch", "--format", "json"])
        .env(
            "HOLDFAST_PAUSE",
            format!("batch.before_holds:{}", pause.display()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reached = env.dir.path().join("pause.reached");
    let t0 = std::time::Instant::now();
    while !reached.exists() {
        assert!(t0.elapsed().as_secs() < 60, "the batch never got there");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let data: Vec<_> = env
        .store_files()
        .into_iter()
        .filter(|p| {
            p.starts_with(env.store.join("lake")) && p.extension().is_some_and(|e| e == "parquet")
        })
        .collect();
    assert!(!data.is_empty());
    for f in &data {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(f, b"not parquet any more").unwrap();
    }
    std::fs::remove_file(&pause).unwrap();
    let out = batch.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let day1_files = env.count("SELECT count(*) FROM manifests WHERE day = 1");
    assert!(day1_files > 0 && (day1_files as usize) < data.len());
    assert_eq!(r["held_new_files"].as_i64(), Some(day1_files), "{r}");
    let pinned = data
        .iter()
        .filter(|f| {
            let rel = f
                .strip_prefix(&env.store)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let lock = env.store.join("_locks").join(format!("{rel}.lock.json"));
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(lock).unwrap()).unwrap();
            v["legal_hold"] == true
        })
        .count();
    assert_eq!(pinned as i64, day1_files);
}

fn records_arriving_for_an_active_hold_are_held_from_the_start(backend: Backend) {
    let env = Env::on(backend);
    let body = r#"{"holdId": "LIT-NEW", "scope": {"queueIds": ["q-3"], "dateRange": {"start": "2025-10-01T00:00:00Z", "end": "2025-10-01T23:59:59Z"}}}"#;
    env.ok(&[
        "hold",
        "apply",
        "--file",
        env.write("h.json", body.as_bytes()).to_str().unwrap(),
        "--allow-empty",
    ]);
    env.ingest(&env.write("e.ndjson", &common::generate(71, 300, 0, 2).ndjson));
    let r = env.batch();
    // every file of the held day holds q-3 records: each is pinned as it is written
    let day1_files = env.count("SELECT count(*) FROM manifests WHERE day = 1");
    assert!(day1_files > 0);
    assert_eq!(r["held_new_files"].as_i64(), Some(day1_files), "{r}");
    let covered = env.count("SELECT count(*) FROM events WHERE queue_id = 'q-3' AND day = 1");
    assert!(covered > 0);
    env.ok_at("2040-01-01T00:00:00Z", &["sweep"]);
    let kept = env.count("SELECT count(*) FROM events WHERE queue_id = 'q-3' AND day = 1");
    assert_eq!(kept, covered, "the covered records survive the sweep");
    assert!(env.verify().0);
}

/// Sweeps need the retention role from the store's access policy, for every tenant.
fn only_the_retention_role_sweeps(backend: Backend) {
    let (env, _) = store(backend);
    let notified = env.dir.path().join("denied.json");
    let config = format!(
        "[retention]\nnotify_command = [\"sh\", \"-c\", \"cat > {}\"]\n",
        notified.display()
    );
    let p = env.write("notify.toml", config.as_bytes());
    env.second_person("kim", &["investigator"]);
    let out = env
        .cmd_at(NOW, &["sweep", "--pipeline", p.to_str().unwrap()])
        .env(common::OS_USER_VAR, "kim")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention role"));
    // an access refusal is audited and notified like a storage refusal
    let note: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&notified).unwrap()).unwrap();
    assert_eq!(
        (
            note["refused"].as_str(),
            note["actor"].as_str(),
            note["os_user"].as_str()
        ),
        (Some("access_denied"), Some("kim"), Some("kim")),
        "{note}"
    );
    // under its own action: a refused sweep is no refused decryption
    let refusals: Vec<String> = env
        .ok(&["audit", "list", "--format", "ndjson"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["os_user"] == "kim" && e["action"].as_str().unwrap().ends_with("refused"))
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refusals, ["sweep.refused"]);
    // a retention role for some tenants only does not cover a sweep, which sees them all
    env.change_policy(
        "kim",
        &[
            "access",
            "grant",
            "--user",
            "kim",
            "--role",
            "retention",
            "--tenant",
            "tenant-0",
        ],
    );
    let out = env
        .cmd_at(NOW, &["sweep"])
        .env(common::OS_USER_VAR, "kim")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("every tenant"));
    env.ok_at(NOW, &["sweep", "--pipeline", p.to_str().unwrap()]);
}

/// One OS user acting under two names is still one person: a release they asked for as
/// `alice` cannot be approved by them as `bob`; the hold stays and a sweep keeps its data.
fn one_os_user_cannot_release_as_alice_and_approve_as_bob(backend: Backend) {
    let (env, _) = store(backend);
    env.second_person("kim", &["compliance"]);
    env.change_policy(
        "kim",
        &[
            "access",
            "grant",
            "--user",
            common::OPERATOR,
            "--alias",
            "alice",
            "--alias",
            "bob",
        ],
    );
    let h = env.write(
        "h.json",
        br#"{"holdId": "LIT-AB", "tenantId": "tenant-0", "scope": {"interactionIds": ["int-70-0"]}}"#,
    );
    env.ok(&[
        "hold",
        "apply",
        "--actor",
        "alice",
        "--file",
        h.to_str().unwrap(),
    ]);
    env.ok(&["hold", "release", "--actor", "alice", "--hold", "LIT-AB"]);
    let out = env.run(&["hold", "approve", "--actor", "bob", "--hold", "LIT-AB"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another OS user"), "{err}");
    let refused = env.query(
        "SELECT actor, os_user, details FROM audit WHERE action = 'legal_hold' ORDER BY sequence DESC LIMIT 1",
    );
    assert_eq!(
        (refused[0]["actor"].as_str(), refused[0]["os_user"].as_str()),
        (Some("bob"), Some(common::OPERATOR))
    );
    assert!(refused[0]["details"].as_str().unwrap().contains("refused"));
    assert!(
        env.ok(&["hold", "list"])
            .contains("LIT-AB tenant-0 release_requested")
    );
    // the hold still protects: a sweep long after every expiry keeps the held records
    env.ok_at("2040-01-01T00:00:00Z", &["sweep"]);
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE interaction_id = 'int-70-0'"),
        3
    );
    assert_eq!(env.count("SELECT count(*) FROM events"), 3);
    // a second person releases it
    env.ok_as("kim", &["hold", "approve", "--hold", "LIT-AB"]);
    env.ok_at("2040-01-01T00:00:00Z", &["sweep"]);
    assert_eq!(env.count("SELECT count(*) FROM events"), 0);
}

/// Holds need the compliance role for the hold's tenant.
fn holds_need_the_compliance_role_for_their_tenant(backend: Backend) {
    let (env, _) = store(backend);
    env.second_person("kim", &[]);
    env.change_policy(
        "kim",
        &[
            "access",
            "grant",
            "--user",
            "lee",
            "--role",
            "compliance",
            "--tenant",
            "tenant-1",
        ],
    );
    let body = |tenant: &str| {
        env.write(
            "h.json",
            format!(r#"{{"holdId": "LIT-{tenant}", "tenantId": "{tenant}", "scope": {{}}}}"#)
                .as_bytes(),
        )
    };
    let out = env.run_as(
        "lee",
        &[
            "hold",
            "apply",
            "--file",
            body("tenant-0").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tenant-0"));
    env.ok_as(
        "lee",
        &[
            "hold",
            "apply",
            "--file",
            body("tenant-1").to_str().unwrap(),
        ],
    );
    let out = env.run_as("kim", &["hold", "release", "--hold", "LIT-tenant-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("compliance"));
    let refusals = env.ok(&[
        "audit",
        "list",
        "--action",
        "legal_hold",
        "--format",
        "ndjson",
    ]);
    assert_eq!(refusals.matches("refused").count(), 2, "{refusals}");
}

fn an_event_arriving_after_its_expiry_is_quarantined_not_stored(backend: Backend) {
    let env = Env::on(backend);
    let g = common::generate(72, 60, 0, 1); // 2025-10-01, FINRA: expires 2031-10-01
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    let out = env
        .cmd(&["batch", "--format", "json"])
        .env("HOLDFAST_NOW", "2033-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["stored"].as_u64(), r["expired_on_arrival"].as_u64()),
        (Some(0), Some(60)),
        "{r}"
    );
    // kept for a person to decide, with their original bytes
    assert_eq!(
        r["quarantined_by_code"]["retention.expired_on_arrival"], 60,
        "{r}"
    );
    let audited = env.ok(&[
        "audit",
        "list",
        "--action",
        "retention.expired_on_arrival",
        "--format",
        "ndjson",
    ]);
    assert!(audited.contains("evt-72-0"), "{audited}");
    assert_eq!(env.count("SELECT count(*) FROM events"), 0);
}

fn preview_counts_and_sync_repairs_drift(backend: Backend) {
    let (env, _) = store(backend);
    let body = env.write("h.json", br#"{"holdId": "LIT-P", "tenantId": "tenant-0", "scope": {"interactionIds": ["int-70-0", "int-70-3"]}}"#);
    let before = env.snapshot();
    let p: serde_json::Value =
        serde_json::from_str(&env.ok(&["hold", "preview", "--file", body.to_str().unwrap()]))
            .unwrap();
    assert_eq!(p["records"], 6, "{p}");
    assert_eq!(env.snapshot(), before, "preview changes nothing");
    env.ok(&["hold", "apply", "--file", body.to_str().unwrap()]);
    // drift: a flag lost at the storage layer
    let file = p["files"][0].as_str().unwrap().to_string();
    env.set_storage_legal_hold(&file, false);
    let r: serde_json::Value = serde_json::from_str(&env.ok(&["hold", "sync"])).unwrap();
    assert_eq!(
        r["flags_repaired"],
        serde_json::json!([file.clone()]),
        "{r}"
    );
    assert!(env.storage_lock(&file).legal_hold);
    // a wiped registry unpins nothing: sync only reports, and fails (the signed head still
    // records the registry, so nothing is signed over the wipe)
    env.tamper_remove("holds/");
    let out = env.run(&["hold", "sync"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("signed head"));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["pinned_without_hold"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == &serde_json::json!(file)),
        "{r}"
    );
    assert!(env.storage_lock(&file).legal_hold);
    let out = env.run_at("2040-01-01T00:00:00Z", &["sweep", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the storage layer still refuses"
    );
    assert!(env.exists(&file));
}

fn explain_says_which_policy_and_why(backend: Backend) {
    // MiFID II SMS rule: a store created with a five-year floor
    let env = Env::on_with(backend, &["--retention-floor-days", "1825"]);
    env.ingest(&common::repo().join("fixtures/canonical/legacy.ndjson"));
    env.ok(&["batch", "--pipeline", "pipelines/local.toml"]);
    let out = env.ok(&[
        "retention",
        "explain",
        "--event",
        "legacy-1.0-by-shape",
        "--pipeline",
        "pipelines/local.toml",
    ]);
    assert!(
        out.contains("stored with policy MIFID2_5Y")
            && out.contains("retention.rules[0] matches first"),
        "{out}"
    );
    let out = env.ok(&["retention", "explain", "--event", "legacy-1.0-declared"]);
    assert!(
        out.contains("FINRA_4511_6Y")
            && out.contains("default policy")
            && out.contains("legal holds: none"),
        "{out}"
    );
    let h = env.write(
        "h.json",
        br#"{"holdId": "LIT-X", "scope": {"interactionIds": ["legacy-int-1"]}}"#,
    );
    env.ok(&["hold", "apply", "--file", h.to_str().unwrap()]);
    assert!(
        env.ok(&["retention", "explain", "--event", "legacy-1.0-declared"])
            .contains("legal holds: LIT-X")
    );
    // a missing event is a runtime failure (1), not a usage error
    let out = env.run(&["retention", "explain", "--event", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("event nope is not stored"));
}

/// Every file an active hold lists is committed, stored and pinned by the storage layer.
/// The files the active holds of the registry list.
fn held_files(env: &Env) -> std::collections::BTreeSet<String> {
    env.hold_registry()
        .holds
        .iter()
        .filter(|h| h.active())
        .flat_map(|h| h.files.iter().cloned())
        .collect()
}

fn assert_holds_pin_what_they_list(env: &Env) {
    let registry = env.hold_registry();
    let committed: Vec<String> = env
        .query("SELECT path FROM manifests")
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    for h in registry.holds.iter().filter(|h| h.active()) {
        for f in &h.files {
            assert!(
                committed.contains(f),
                "{} lists {f}, which no manifest does",
                h.hold_id
            );
            assert!(env.storage_lock(f).legal_hold, "{f} is not pinned");
        }
    }
}

/// Each batch writes one file per partition and policy, so a policy's records leave whole
/// files when they expire: tenant-1 on MiFID II's 5 years goes a year before the rest.
fn files_hold_one_policy_and_go_whole_when_it_ends(backend: Backend) {
    // MiFID II: a store created with a five-year floor
    let env = Env::on_with(backend, &["--retention-floor-days", "1825"]);
    let pipe = env.write(
        "p.toml",
        b"[[retention.rules]]\ntenants = [\"tenant-1\"]\npolicy = \"MIFID2_5Y\"\n",
    );
    let pipe = pipe.to_str().unwrap();
    env.ingest(&env.write("e.ndjson", &common::generate(73, 600, 0, 3).ndjson));
    env.ok(&["batch", "--pipeline", pipe]);
    assert_eq!(
        env.count("SELECT count(*) FROM manifests WHERE cardinality(policy_ids) <> 1"),
        0
    );
    let t1_files =
        env.count("SELECT count(*) FROM manifests WHERE array_has(policy_ids, 'MIFID2_5Y')");
    let t1 = env.count("SELECT count(*) FROM events WHERE tenant_id = 'tenant-1'");
    let total = env.count("SELECT count(*) FROM events");
    let r: serde_json::Value = serde_json::from_str(&env.ok_at(
        "2030-10-05T00:00:00Z",
        &["sweep", "--pipeline", pipe, "--format", "json"],
    ))
    .unwrap();
    assert_eq!(
        (
            r["files_removed"].as_i64().unwrap(),
            r["records_removed"].as_i64().unwrap(),
            r["files_rewritten"].as_i64().unwrap()
        ),
        (t1_files, t1, 0),
        "{r}"
    );
    assert_eq!(env.count("SELECT count(*) FROM events"), total - t1);
}

/// A file caught part-expired is rewritten when its last record is far enough off: the
/// survivors move to a new file, the old one leaves the partition at once and storage when its
/// lock runs out. (`rewrite_min_days = 0` makes a part-expired day file qualify.)
fn a_file_mixing_expired_and_unexpired_records_is_rewritten(backend: Backend) {
    let (env, unique) = store(backend);
    let pipe = env.write("p.toml", b"[retention]\nrewrite_min_days = 0\n");
    let pipe = pipe.to_str().unwrap();
    let now = "2031-10-02T12:00:00Z"; // day 1 expired, day 2 half expired, day 3 not
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["sweep", "--dry-run", "--now", now])).unwrap();
    assert!(
        plan["rewrite"].as_array().unwrap().is_empty()
            && !plan["mixed"].as_array().unwrap().is_empty(),
        "default: a day-old lock is waited out: {plan}"
    );
    let day2_files = env.count("SELECT count(*) FROM manifests WHERE day = 2");
    let day2_gone = env.count(&format!(
        "SELECT count(*) FROM events WHERE day = 2 AND expires_at <= TIMESTAMP '{now}'"
    ));
    let day1 = env.count("SELECT count(*) FROM events WHERE day = 1");
    let r: serde_json::Value =
        serde_json::from_str(&env.ok_at(now, &["sweep", "--pipeline", pipe, "--format", "json"]))
            .unwrap();
    assert_eq!(r["files_rewritten"].as_i64().unwrap(), day2_files, "{r}");
    assert_eq!(
        r["records_removed"].as_i64().unwrap(),
        day1 + day2_gone,
        "{r}"
    );
    assert_eq!(
        r["awaiting_lock"].as_array().unwrap().len() as i64,
        day2_files,
        "the old files are locked until their last record expires: {r}"
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM events WHERE expires_at <= TIMESTAMP '{now}'"
        )),
        0,
        "out of discovery at once"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM events"),
        unique as i64 - day1 - day2_gone
    );
    let (ok, v) = env.verify();
    assert!(ok, "{v}");
    assert_eq!(
        (
            v["orphans"].as_array().unwrap().len() as i64,
            v["awaiting_deletion"].as_array().unwrap().len() as i64
        ),
        (0, day2_files),
        "{v}"
    );
    assert_eq!(env.count("SELECT count(*) FROM removals WHERE awaiting_deletion AND replaced_by IS NOT NULL AND deleted_at IS NULL"), day2_files);
    // the storage layer still refuses the old files, and a batch leaves them to the sweep
    let old = r["awaiting_lock"][0].as_str().unwrap().to_string();
    let at = chrono::DateTime::parse_from_rfc3339(now).unwrap().to_utc();
    assert!(env.storage_lock(&old).refusal(at).is_some());
    env.batch();
    assert!(env.exists(&old));
    // when the locks have run out, the old files go, and so do the (now expired) new ones
    // (S3's clock is taken two seconds behind its `Date`: a little after midnight)
    let later = "2031-10-03T00:00:10Z";
    let r: serde_json::Value =
        serde_json::from_str(&env.ok_at(later, &["sweep", "--pipeline", pipe, "--format", "json"]))
            .unwrap();
    assert_eq!(r["files_removed"].as_i64().unwrap(), 2 * day2_files, "{r}");
    assert_eq!(env.count("SELECT count(*) FROM events WHERE day = 2"), 0);
    assert!(env.keys(&old).is_empty());
    let (ok, v) = env.verify();
    assert!(
        ok && v["awaiting_deletion"].as_array().unwrap().is_empty(),
        "{v}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM removals WHERE awaiting_deletion OR deleted_at IS NULL"),
        0
    );
    // the history: each old file names its replacement and when it left storage
    let rel = std::path::Path::new(&old)
        .parent()
        .unwrap()
        .strip_prefix("lake")
        .unwrap();
    let latest = env
        .keys(&format!("manifests/{}/", rel.display()))
        .pop()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&env.read_file(&latest)).unwrap();
    let gone = m["removed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["path"] == old.as_str())
        .unwrap()
        .clone();
    assert!(
        gone["replaced_by"].is_string() && gone["deleted_at"].is_string(),
        "{gone}"
    );
}

/// A sweep killed after a rewrite's manifest commit, then rerun years later when the new file
/// is part-expired itself: the rerun rewrites it again and moves the hold along the chain.
fn a_killed_rewrite_whose_new_file_is_rewritten_again_converges(backend: Backend) {
    let (env, _) = store(backend);
    let pipe = env.write("p.toml", b"[retention]\nrewrite_min_days = 0\n");
    let pipe = pipe.to_str().unwrap();
    let h = env.write(
        "h.json",
        br#"{"holdId": "LIT-C", "tenantId": "tenant-0", "scope": {"queueIds": ["q-2"]}}"#,
    );
    env.ok(&["hold", "apply", "--file", h.to_str().unwrap()]);
    let held =
        env.count("SELECT count(*) FROM events WHERE tenant_id = 'tenant-0' AND queue_id = 'q-2'");
    let out = env
        .cmd_at("2031-10-01T12:00:00Z", &["sweep", "--pipeline", pipe])
        .env("HOLDFAST_FAILPOINT", "sweep.after_rewrite_commit")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failpoint"),
        "not reached"
    );
    let r: serde_json::Value = serde_json::from_str(&env.ok_at(
        "2040-01-01T00:00:00Z",
        &["sweep", "--pipeline", pipe, "--format", "json"],
    ))
    .unwrap();
    assert!(
        r["refused"].as_array().unwrap().is_empty()
            && r["awaiting_lock"].as_array().unwrap().is_empty(),
        "{r}"
    );
    env.batch();
    assert_eq!(env.count("SELECT count(*) FROM events"), held);
    assert_holds_pin_what_they_list(&env);
    let (ok, v) = env.verify();
    assert!(
        ok && v["orphans"].as_array().unwrap().is_empty()
            && v["awaiting_deletion"].as_array().unwrap().is_empty(),
        "{v}"
    );
    let lake_files = env
        .store_files()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count() as i64;
    assert_eq!(lake_files, env.count("SELECT count(*) FROM manifests"));
}

/// A sweep killed at any step of a rewrite and run again ends as if it had not been killed.
fn a_killed_rewrite_is_finished_by_the_next_sweep(backend: Backend) {
    let far = "2040-01-01T00:00:00Z";
    for point in [
        "sweep.after_rewrite_written",
        "sweep.after_rewrite_commit",
        "sweep.before_registry",
        "sweep.after_registry",
        "sweep.after_old_deleted",
    ] {
        let (env, _) = store(backend);
        let h = env.write(
            "h.json",
            br#"{"holdId": "LIT-K", "tenantId": "tenant-0", "scope": {"queueIds": ["q-2"]}}"#,
        );
        env.ok(&["hold", "apply", "--file", h.to_str().unwrap()]);
        let held = env
            .count("SELECT count(*) FROM events WHERE tenant_id = 'tenant-0' AND queue_id = 'q-2'");
        let out = env
            .cmd_at(far, &["sweep"])
            .env("HOLDFAST_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {point}")),
            "{point}: not reached"
        );
        // never less than the held records in between
        assert!(
            env.count(
                "SELECT count(*) FROM events WHERE tenant_id = 'tenant-0' AND queue_id = 'q-2'"
            ) >= held,
            "{point}"
        );
        // after the killed sweep's leases expired
        env.ok_at("2040-01-01T00:02:00Z", &["sweep"]);
        env.batch(); // removes a new file the kill left uncommitted
        assert_eq!(env.count("SELECT count(*) FROM events"), held, "{point}");
        assert_eq!(
            env.count("SELECT count(DISTINCT event_id) FROM events"),
            held,
            "{point}"
        );
        assert_holds_pin_what_they_list(&env);
        let (ok, v) = env.verify();
        assert!(ok, "{point}: {v}");
        assert_eq!(
            (
                v["orphans"].as_array().unwrap().len(),
                v["awaiting_deletion"].as_array().unwrap().len()
            ),
            (0, 0),
            "{point}: {v}"
        );
        let lake_files = env
            .store_files()
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count() as i64;
        assert_eq!(
            lake_files,
            env.count("SELECT count(*) FROM manifests"),
            "{point}: stored data files are exactly the committed ones"
        );
    }
}

/// Random policies, holds, releases and sweep times over years, with `rewrite_min_days = 0`
/// (every file with an expired record is acted on): after each sweep the lake holds exactly
/// the records that are unexpired or covered by an active hold.
fn over_years_of_random_sweeps_exactly_the_unexpired_or_held_records_remain(backend: Backend) {
    // one seed on moto, whose requests are slow; three on disk
    let seeds: &[u64] = match backend {
        Backend::Local => &[1, 2, 3],
        Backend::S3 => &[4],
    };
    for &seed in seeds {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        // random policies: tenant-1 and tenant-2 each on a custom period of 1 to 9 years and
        // 0 to 11 months; tenant-0 on the default (6 years)
        let periods: Vec<(u64, u64)> = (0..2).map(|_| (1 + next(9), next(12))).collect();
        let config = format!(
            "[retention]\nrewrite_min_days = 0\n[[retention.rules]]\ntenants = [\"tenant-1\"]\npolicy = \"P1\"\n[[retention.rules]]\ntenants = [\"tenant-2\"]\npolicy = \"P2\"\n[retention.policies.P1]\nyears = {}\nmonths = {}\n[retention.policies.P2]\nyears = {}\nmonths = {}\n",
            periods[0].0, periods[0].1, periods[1].0, periods[1].1
        );
        // periods from one year: a store created with a one-year floor
        let env = Env::on_with(backend, &["--retention-floor-days", "365"]);
        env.second_person("kim", &["compliance"]);
        let pipe = env.write("p.toml", config.as_bytes());
        let pipe = pipe.to_str().unwrap();
        // arriving as they happen (2025-10-01 .. 03): older ones would be past the floor
        let arrival = "2025-10-04T00:00:00Z";
        env.ingest_at(
            arrival,
            &env.write("e.ndjson", &common::generate(80 + seed, 450, 0, 3).ndjson),
        );
        env.ok_at(arrival, &["batch", "--pipeline", pipe]);
        // ground truth, read before anything is deleted: (event, tenant, queue, expires_at)
        let all: Vec<(String, String, String, chrono::DateTime<chrono::Utc>)> = env
            .query("SELECT event_id, tenant_id, queue_id, expires_at FROM events")
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap().to_string();
                (
                    s("event_id"),
                    s("tenant_id"),
                    s("queue_id"),
                    chrono::DateTime::parse_from_rfc3339(&s("expires_at"))
                        .unwrap()
                        .to_utc(),
                )
            })
            .collect();
        // sweep times inside the three expiry windows (so files are caught part-expired), in
        // order, then one past everything
        let mut windows: Vec<chrono::DateTime<chrono::Utc>> = {
            let mut starts: Vec<_> = ["tenant-0", "tenant-1", "tenant-2"]
                .iter()
                .filter_map(|t| all.iter().filter(|r| r.1 == *t).map(|r| r.3).min())
                .collect();
            starts.sort();
            starts
                .into_iter()
                .flat_map(|w| {
                    [
                        w + chrono::Duration::hours(next(36) as i64),
                        w + chrono::Duration::hours(36 + next(36) as i64),
                    ]
                })
                .collect()
        };
        windows.sort();
        windows.push(all.iter().map(|r| r.3).max().unwrap() + chrono::Duration::days(1));
        let mut active: Vec<(String, String, String)> = Vec::new(); // (hold, tenant, queue)
        // a hold placed later cannot bring back what an earlier sweep deleted
        let mut present: std::collections::HashSet<String> =
            all.iter().map(|r| r.0.clone()).collect();
        for (step, t) in windows.iter().copied().enumerate() {
            match next(3) {
                0 | 1 if active.len() < 3 => {
                    let (id, tenant, queue) = (
                        format!("LIT-{seed}-{step}"),
                        format!("tenant-{}", next(3)),
                        format!("q-{}", next(7)),
                    );
                    let body = format!(
                        r#"{{"holdId": "{id}", "tenantId": "{tenant}", "scope": {{"queueIds": ["{queue}"]}}}}"#
                    );
                    // (a hold placed after its records were swept covers nothing)
                    env.ok(&[
                        "hold",
                        "apply",
                        "--file",
                        env.write("h.json", body.as_bytes()).to_str().unwrap(),
                        "--allow-empty",
                    ]);
                    active.push((id, tenant, queue));
                }
                _ if !active.is_empty() => {
                    let (id, _, _) = active.remove(next(active.len() as u64) as usize);
                    env.ok(&["hold", "release", "--hold", &id]);
                    env.ok_as("kim", &["hold", "approve", "--hold", &id]);
                }
                _ => {}
            }
            let now = t.to_rfc3339();
            env.ok_at(&now, &["sweep", "--pipeline", pipe]);
            let mut expected: Vec<&str> = all
                .iter()
                .filter(|(e, tenant, queue, exp)| {
                    present.contains(e)
                        && (*exp > t
                            || active.iter().any(|(_, ht, hq)| ht == tenant && hq == queue))
                })
                .map(|(e, ..)| e.as_str())
                .collect();
            expected.sort_unstable();
            let mut actual: Vec<String> = env
                .query("SELECT event_id FROM events")
                .iter()
                .map(|r| r["event_id"].as_str().unwrap().to_string())
                .collect();
            actual.sort_unstable();
            let missing: Vec<_> = all
                .iter()
                .filter(|r| expected.contains(&r.0.as_str()) && !actual.contains(&r.0))
                .collect();
            let extra: Vec<&String> = actual
                .iter()
                .filter(|a| !expected.contains(&a.as_str()))
                .collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "seed {seed}, sweep at {now}, holds {active:?}: lost {missing:?}, kept {extra:?}"
            );
            present = actual.into_iter().collect();
            assert_holds_pin_what_they_list(&env);
            let (ok, v) = env.verify();
            assert!(
                ok && v["orphans"].as_array().unwrap().is_empty(),
                "seed {seed} at {now}: {v}"
            );
        }
        let rewrites = env
            .ok(&[
                "audit",
                "list",
                "--action",
                "retention.rewrite",
                "--format",
                "ndjson",
            ])
            .lines()
            .count();
        assert!(
            rewrites >= 12,
            "seed {seed}: the mixed files were rewritten ({rewrites} rewrites)"
        );
    }
}

/// `retentionOverride.expirationDate`: the hold protects until then and lapses by itself (the
/// sweep records the lapse, audited, and unpins); bodies that would protect nothing are refused.
fn a_dated_hold_lapses_on_its_expiration_date(backend: Backend) {
    let (env, _) = store(backend);
    let body = |extra: &str| {
        env.write("h.json", format!(r#"{{"holdId": "LIT-D", "tenantId": "tenant-0", "scope": {{"interactionIds": ["int-70-0"]}}{extra}}}"#).as_bytes())
    };
    for (extra, says) in [
        (r#", "status": "RELEASED""#, "only ACTIVE"),
        (
            r#", "retentionOverride": {"enabled": false}"#,
            "protect nothing",
        ),
        (
            r#", "retentionOverride": {"enabled": true, "expirationDate": "2020-01-01T00:00:00Z"}"#,
            "already passed",
        ),
    ] {
        let out = env.run(&["hold", "apply", "--file", body(extra).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{extra}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dated = r#", "retentionOverride": {"enabled": true, "expirationDate": "2035-01-01T00:00:00Z", "auditorTrail": {"requestedBy": "co@firm.example", "caseReference": "SEC-INV-1"}}"#;
    env.ok(&["hold", "apply", "--file", body(dated).to_str().unwrap()]);
    assert!(env.ok(&["hold", "list"]).contains("lapses=2035-01-01"));
    env.ok_at("2034-06-01T00:00:00Z", &["sweep"]);
    assert_eq!(
        env.count("SELECT count(*) FROM events"),
        3,
        "only the held interaction is left"
    );
    assert_holds_pin_what_they_list(&env);
    // the date passes: the next sweep records the lapse, unpins and deletes
    env.ok_at("2035-01-02T00:00:00Z", &["sweep"]);
    assert_eq!(env.count("SELECT count(*) FROM events"), 0);
    let list = env.ok(&["hold", "list", "--format", "ndjson"]);
    assert!(list.contains(r#""status":"lapsed""#), "{list}");
    let lapsed = env.ok(&[
        "audit",
        "list",
        "--action",
        "legal_hold",
        "--format",
        "ndjson",
    ]);
    assert!(
        lapsed.lines().last().unwrap().contains("lapsed") && lapsed.contains("2035-01-01"),
        "{lapsed}"
    );
    assert!(env.verify().0);
}

/// Placing a hold waits while a sweep holds the `holds` lease (the sweep decides which records
/// survive under it), then goes ahead.
#[test]
fn a_hold_waits_for_a_sweep_in_progress() {
    let (env, _) = store(Backend::Local);
    let host = common::hostname();
    env.plant_lease(
        "holds",
        1,
        &host,
        std::process::id(),
        "2100-01-01T00:00:00Z",
    );
    let h = env.write(
        "h.json",
        br#"{"holdId": "LIT-W", "scope": {"interactionIds": ["int-70-0"]}}"#,
    );
    let mut child = env
        .cmd(&["hold", "apply", "--file", h.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "hold apply went ahead during a sweep"
    );
    assert!(!env.ok(&["hold", "list"]).contains("LIT-W"));
    // the sweep ends: it releases the lease
    let mut v = env.lease("holds").unwrap();
    v["token"] = 2.into();
    v["released"] = true.into();
    std::fs::write(
        env.store.join("_leases/holds/v00000000000000000002.json"),
        v.to_string(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("LIT-W placed"));
    assert_eq!(env.lease("holds").unwrap()["released"], true, "released");
}

/// `--step rewrite` then `--step delete` (two principals) end where one whole sweep ends: the
/// rewrite step deletes nothing, the delete step rewrites nothing (and removes, once their
/// lock has run out, the files the rewrite step replaced).
fn a_sweep_split_into_its_rewrite_and_delete_steps_ends_where_a_whole_one_does(backend: Backend) {
    let (whole, _) = store(backend);
    let (split, _) = store(backend);
    let sweep = |env: &Env, now: &str, step: &str| -> serde_json::Value {
        let pipe = env.write("p.toml", b"[retention]\nrewrite_min_days = 0\n");
        let args = ["sweep", "--format", "json", "--step", step, "--pipeline"];
        let mut args = args.to_vec();
        args.push(pipe.to_str().unwrap());
        serde_json::from_str(&env.ok_at(now, &args)).unwrap()
    };
    let plan: serde_json::Value =
        serde_json::from_str(&split.ok(&["sweep", "--dry-run", "--now", NOW, "--step", "rewrite"]))
            .unwrap();
    assert_eq!(plan["delete"], serde_json::json!([]), "{plan}");
    let removed = |r: &serde_json::Value| r["files_removed"].as_u64().unwrap();
    let count = |env: &Env| env.count("SELECT count(*) FROM events");
    // day 1 expired, day 2 half: whole files go, mixed ones are rewritten
    let all = sweep(&whole, NOW, "all");
    assert!(
        removed(&all) > 0 && all["files_rewritten"].as_u64().unwrap() > 0,
        "{all}"
    );
    let rewrite = sweep(&split, NOW, "rewrite");
    assert_eq!(removed(&rewrite), 0, "{rewrite}");
    assert_eq!(
        rewrite["files_rewritten"], all["files_rewritten"],
        "{rewrite}"
    );
    let delete = sweep(&split, NOW, "delete");
    assert_eq!(delete["files_rewritten"], 0, "{delete}");
    assert_eq!(removed(&delete), removed(&all), "{delete}");
    assert_eq!(count(&split), count(&whole));
    // later, the replaced files' locks have run out: the delete step removes them
    let later = "2031-10-05T00:00:00Z";
    let all = sweep(&whole, later, "all");
    let delete = sweep(&split, later, "delete");
    assert_eq!(removed(&delete), removed(&all), "{delete} {all}");
    assert!(removed(&delete) > 0, "{delete}");
    assert_eq!(count(&split), count(&whole));
    assert!(split.verify().0 && whole.verify().0);
}
