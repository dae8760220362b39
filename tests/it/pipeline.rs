//! The main job end to end: ingest, batch, query, verify, quarantine, interoperability.
//! The tests listed in `on_both_backends!` run on a local store and on S3 (moto); the others
//! are about the local backend: the embedded main job, a lease planted as a file, a landing
//! segment damaged on disk.

use crate::common::{self, Backend, Env};
use std::sync::OnceLock;

common::on_both_backends!(
    every_unique_event_is_stored_once_and_counted,
    partitions_follow_the_utc_day_of_occurred_at,
    retention_fields_come_from_the_default_policy,
    no_payload_plaintext_in_any_stored_file,
    verify_passes_shallow_and_deep,
    quarantine_lists_reasons_and_shows_original_bytes,
    query_formats,
    manifests_table_describes_files_without_opening_them,
    parquet_files_follow_the_interoperability_rules,
    ingesting_the_same_file_twice_changes_nothing_in_the_lake,
    later_batches_add_manifest_versions_that_name_their_predecessor,
    usage_errors_and_refusals,
    stdin_ingest_and_empty_batch,
    time_comes_from_the_injected_clock,
    legacy_versions_are_upcast_and_stored_as_current,
    vendor_payloads_go_through_ingest_and_batch,
    validate_is_a_dry_run,
    replay_after_a_fix_stores_what_passes_once,
);

const UNIQUE: usize = 3000;
const DUPS: usize = 150;

/// One store per backend shared by the read-only tests of this module.
fn shared(backend: Backend) -> &'static (Env, common::Gen) {
    static S: [OnceLock<(Env, common::Gen)>; 2] = [OnceLock::new(), OnceLock::new()];
    S[backend as usize].get_or_init(|| {
        let env = Env::on(backend);
        let g = common::generate(1, UNIQUE, DUPS, 5);
        let (bad, _) = common::malformed();
        let a = env.write("a.ndjson", &g.ndjson);
        let b = env.write("bad.ndjson", &bad);
        env.ingest(&a);
        env.ingest(&b);
        let r = env.batch();
        assert_eq!(r["stored"], UNIQUE as u64, "{r}");
        (env, g)
    })
}

fn every_unique_event_is_stored_once_and_counted(backend: Backend) {
    let (env, _) = shared(backend);
    assert_eq!(env.count("SELECT count(*) FROM events"), UNIQUE as i64);
    assert_eq!(
        env.count("SELECT count(DISTINCT event_id) FROM events"),
        UNIQUE as i64
    );
    assert_eq!(
        env.count("SELECT sum(record_count) FROM manifests"),
        UNIQUE as i64
    );
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE interaction_type = 'SMS'"),
        env.count("SELECT sum(record_count) FROM manifests WHERE interaction_type = 'SMS'")
    );
    assert_eq!(
        env.landing_segments(),
        0,
        "consumed segments are removed after commit"
    );
}

fn partitions_follow_the_utc_day_of_occurred_at(backend: Backend) {
    let (env, _) = shared(backend);
    let wrong = env.count(
        "SELECT count(*) FROM events WHERE year <> date_part('year', occurred_at) OR month <> date_part('month', occurred_at) OR day <> date_part('day', occurred_at)",
    );
    assert_eq!(wrong, 0);
    // a filter on numeric partition values finds the zero-padded directories
    let one_day =
        env.count("SELECT count(*) FROM events WHERE year = 2025 AND month = 10 AND day = 2");
    let by_date = env
        .count("SELECT count(*) FROM events WHERE CAST(occurred_at AS DATE) = DATE '2025-10-02'");
    assert!(by_date > 0);
    assert_eq!(one_day, by_date);
    let files: Vec<_> = env
        .store_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(!files.is_empty());
    assert!(
        files
            .iter()
            .all(|p| p.to_string_lossy().contains("/month=10/day=0")),
        "zero-padded: {files:?}"
    );
}

fn retention_fields_come_from_the_default_policy(backend: Backend) {
    let (env, _) = shared(backend);
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE policy_id <> 'FINRA_4511_6Y'"),
        0
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM events WHERE expires_at <> occurred_at + INTERVAL '6 years'"
        ),
        0
    );
}

fn no_payload_plaintext_in_any_stored_file(backend: Backend) {
    let (env, g) = shared(backend);
    let secrets: Vec<&str> = g
        .customer_addresses
        .iter()
        .chain(g.notes.iter())
        .map(String::as_str)
        .chain([
            "+19995550001",
            "+19995550002",
            "+19995550003",
            "+19995550004",
        ])
        .collect();
    let files = env.store_files();
    assert!(files.len() > 5);
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for s in &secrets {
            assert!(
                memchr::memmem::find(&bytes, s.as_bytes()).is_none(),
                "{s} in plaintext in {}",
                f.display()
            );
        }
    }
}

fn verify_passes_shallow_and_deep(backend: Backend) {
    let (env, _) = shared(backend);
    let (ok, r) = env.verify();
    assert!(ok, "{r}");
    assert_eq!(r["records"], UNIQUE as u64);
    let out = env.ok(&["verify", "--deep", "--format", "json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["deep_records"], UNIQUE as u64);
}

fn quarantine_lists_reasons_and_shows_original_bytes(backend: Backend) {
    let (env, _) = shared(backend);
    let rows: Vec<serde_json::Value> = env
        .ok(&["quarantine", "list", "--format", "ndjson"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codes: Vec<&str> = rows
        .iter()
        .map(|r| r["error_code"].as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 4, "{codes:?}");
    assert!(
        codes.contains(&"json.parse")
            && codes.contains(&"json.not_object")
            && codes.contains(&"schema.required"),
        "{codes:?}"
    );
    let listed = env.ok(&["quarantine", "list", "--format", "csv"]);
    assert!(!listed.contains("+1999555"), "list shows no payload");
    let id = rows
        .iter()
        .find(|r| r["error_code"] == "schema.required")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = env.ok(&["quarantine", "show", "--case", "INC-1", &id]);
    assert!(
        shown.contains("+19995550003") && shown.contains("schema.required"),
        "{shown}"
    );
    let bin = rows.iter().find(|r| r["line_no"] == 4).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.run(&["quarantine", "show", "--case", "INC-1", &bin]);
    assert!(
        out.stdout.windows(2).any(|w| w == b"\xff\xfe"),
        "original bytes are kept exactly"
    );
}

fn query_formats(backend: Backend) {
    let (env, _) = shared(backend);
    let sql = "SELECT interaction_type, count(*) AS n FROM events GROUP BY 1 ORDER BY 1";
    let csv = env.ok(&["query", "--format", "csv", sql]);
    assert!(csv.starts_with("interaction_type,n\nCALL,"), "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["query", "--format", "json", sql])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);
    let table = env.ok(&["query", "--format", "table", sql]);
    assert!(table.contains("| CALL"), "{table}");
    let bad = env.run(&["query", "SELECT nope FROM events"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(bad.stdout.is_empty() && !bad.stderr.is_empty());
}

fn manifests_table_describes_files_without_opening_them(backend: Backend) {
    let (env, _) = shared(backend);
    let rows = env.query(
        "SELECT path, sha256, record_count, kek_id, algorithm, manifest_sequence FROM manifests",
    );
    assert!(!rows.is_empty());
    for r in rows {
        assert_eq!(r["algorithm"], "AES-256-GCM");
        assert_eq!(r["sha256"].as_str().unwrap().len(), 64);
        assert!(r["kek_id"].as_str().unwrap().starts_with("kek-"));
        assert_eq!(r["manifest_sequence"], 1);
    }
}

fn parquet_files_follow_the_interoperability_rules(backend: Backend) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let (env, _) = shared(backend);
    let file = env
        .store_files()
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
    let md = reader.metadata();
    let schema = md.file_metadata().schema_descr();
    let names: Vec<String> = schema.columns().iter().map(|c| c.path().string()).collect();
    for hive in ["year", "month", "day", "interaction_type"] {
        assert!(
            !names.iter().any(|n| n == hive),
            "hive key {hive} must be in the path only"
        );
    }
    assert!(
        names.contains(&"agent_ids.list.element".to_string()),
        "{names:?}"
    );
    let col = |n: &str| {
        schema
            .columns()
            .iter()
            .position(|c| c.path().string() == n)
            .unwrap()
    };
    let occurred = schema.column(col("occurred_at"));
    assert_eq!(occurred.physical_type(), parquet::basic::Type::INT64);
    assert!(
        format!("{:?}", occurred.logical_type_ref()).contains("MICROS")
            && format!("{:?}", occurred.logical_type_ref()).contains("is_adjusted_to_u_t_c: true"),
        "{:?}",
        occurred.logical_type_ref()
    );
    let rg = md.row_group(0);
    assert!(rg.column(col("event_id")).bloom_filter_offset().is_some());
    assert!(
        rg.column(col("interaction_id"))
            .bloom_filter_offset()
            .is_some()
    );
    assert_eq!(
        rg.column(col("payload")).compression(),
        parquet::basic::Compression::UNCOMPRESSED
    );
    assert!(matches!(
        rg.column(col("event_id")).compression(),
        parquet::basic::Compression::ZSTD(_)
    ));
    let kv = md.file_metadata().key_value_metadata().unwrap();
    assert!(kv.iter().any(|k| k.key == "holdfast.wrapped_dek"));
}

#[test]
fn the_main_job_runs_the_local_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    let out = std::process::Command::new(common::bin())
        .args(["run", "pipelines/local.toml", "--format", "json", "--store"])
        .arg(&store)
        .env("HOLDFAST_KEYRING", dir.path().join("keyring.json"))
        .env_remove("HOLDFAST_STORE")
        .current_dir(common::repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // stdout is one JSON document: whether run initialised the store, each input, the batch
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["init"], true, "{doc}");
    let ingested = doc["ingest"].as_array().unwrap();
    assert!(!ingested.is_empty(), "{doc}");
    assert!(
        ingested.iter().all(|i| i["lines"].as_u64() > Some(0)),
        "{doc}"
    );
    let report = &doc["batch"];
    // fixtures/canonical/events.ndjson: 600 lines, 570 unique (gen_events.py --events 600 --dup-rate 0.05 --seed 7),
    // plus the four legacy (1.0 and 2.0) events of legacy.ndjson, plus 36 events from the 48
    // vendor fixture lines (fixtures/*/expected.ndjson: 12 lines rejected, four of them for a
    // field of the wrong type; one schema reject, one line holding two conversations)
    assert_eq!(report["stored"], 610, "{report}");
    assert_eq!(report["duplicates_in_batch"], 30);
    assert_eq!(report["quarantined"], 20);
    assert_eq!(report["quarantined_by_code"]["source.wrong_type"], 4);
    assert_eq!(report["blank_lines"], 2);
    // the pipeline's rule: SMS under MiFID II
    assert!(report["stored_by_policy"]["MIFID2_5Y"].as_u64().unwrap() > 0);
    assert_eq!(
        report["stored_by_policy"]["MIFID2_5Y"],
        report["stored_by_type"]["SMS"]
    );
}

fn ingesting_the_same_file_twice_changes_nothing_in_the_lake(backend: Backend) {
    let env = Env::on(backend);
    let g = common::generate(2, 600, 20, 2);
    let f = env.write("e.ndjson", &g.ndjson);
    env.ingest(&f);
    env.batch();
    let snapshot = |env: &Env| -> Vec<(String, Vec<u8>)> {
        env.snapshot()
            .into_iter()
            .filter(|(k, _)| k.starts_with("lake/") || k.starts_with("manifests/"))
            .collect()
    };
    let before = snapshot(&env);
    env.ingest(&f);
    let r = env.batch();
    assert_eq!(r["stored"], 0);
    assert_eq!(
        r["already_stored"], 620,
        "every line, re-deliveries included, is already stored"
    );
    assert_eq!(snapshot(&env), before);
    assert_eq!(env.count("SELECT count(*) FROM events"), 600);
}

fn later_batches_add_manifest_versions_that_name_their_predecessor(backend: Backend) {
    let env = Env::on(backend);
    env.ingest(&env.write("a.ndjson", &common::generate(3, 400, 0, 1).ndjson));
    env.batch();
    env.ingest(&env.write("b.ndjson", &common::generate(4, 400, 0, 1).ndjson));
    env.batch();
    assert_eq!(env.count("SELECT count(*) FROM events"), 800);
    assert_eq!(env.count("SELECT max(manifest_sequence) FROM manifests"), 2);
    assert_eq!(
        env.count("SELECT count(DISTINCT batch_id) FROM manifests"),
        2
    );
    let (ok, r) = env.verify();
    assert!(ok, "{r}");
    let versions = env.keys("manifests/year=2025/month=10/day=01/interaction_type=CALL/");
    assert_eq!(versions.len(), 2, "{versions:?}");
}

fn usage_errors_and_refusals(backend: Backend) {
    let env = Env::on(backend);
    assert_eq!(env.run(&["batch", "--bogus"]).status.code(), Some(2));
    assert_eq!(env.run(&[]).status.code(), Some(2));
    // a keyring inside the store is refused
    let out = std::process::Command::new(common::bin())
        .args(["init", "--store"])
        .arg(&env.store)
        .arg("--keyring")
        .arg(env.store.join("k.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the store"));
    // an uninitialised store says what to do
    let out = env
        .cmd(&["batch", "--store"])
        .arg(env.dir.path().join("nothing"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holdfast init"));
    // a keyring readable by others is refused
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&env.keyring, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&["batch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0600"));
}

fn stdin_ingest_and_empty_batch(backend: Backend) {
    use std::io::Write;
    let env = Env::on(backend);
    let r = env.batch();
    assert_eq!(r["segments"], 0);
    let g = common::generate(5, 50, 0, 1);
    let mut child = env
        .cmd(&["ingest", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&g.ndjson).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(env.batch()["stored"], 50);
}

fn time_comes_from_the_injected_clock(backend: Backend) {
    let env = Env::on(backend);
    let f = env.write("e.ndjson", &common::generate(6, 30, 0, 1).ndjson);
    let (bad, n_bad) = common::malformed();
    let b = env.write("bad.ndjson", &bad);
    let out = env
        .cmd(&["ingest", f.to_str().unwrap(), b.to_str().unwrap()])
        .env("HOLDFAST_NOW", "2030-01-02T03:04:05Z")
        .output()
        .unwrap();
    assert!(out.status.success());
    env.batch();
    let rows = env.query("SELECT DISTINCT CAST(ingested_at AS VARCHAR) AS t FROM events");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let t = rows[0]["t"].as_str().unwrap();
    assert!(t.starts_with("2030-01-02") && t.contains("03:04:05"), "{t}");
    // the quarantined lines arrived at the injected time too
    let q = quarantine_rows(&env);
    assert_eq!(q.len(), n_bad, "{q:?}");
    for e in &q {
        let at = e["arrived_at"].as_str().unwrap();
        assert!(at.starts_with("2030-01-02T03:04:05"), "{e}");
    }
}

#[test]
fn a_live_batch_holds_the_lease() {
    let env = Env::new();
    env.ingest(&env.write("e.ndjson", &common::generate(7, 20, 0, 1).ndjson));
    // an unexpired lease held by a live process on this host (this test) is respected
    let host = common::hostname();
    env.plant_lease(
        "batch",
        1,
        &host,
        std::process::id(),
        "2100-01-01T00:00:00Z",
    );
    let out = env.run(&["batch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another job holds the lease"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.landing_segments(), 1, "nothing consumed");
    // a sweep (which writes rewritten files) waits its turn too; its dry run does not
    let out = env.run_at("2040-01-01T00:00:00Z", &["sweep"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds the lease"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["sweep", "--dry-run", "--now", "2040-01-01T00:00:00Z"]);
    // released by its holder (a released version), the lease is free again
    env.plant_lease(
        "batch",
        2,
        &host,
        std::process::id(),
        "2100-01-01T00:00:00Z",
    );
    let mut v = env.lease("batch").unwrap();
    v["released"] = true.into();
    std::fs::write(
        env.store.join("_leases/batch/v00000000000000000002.json"),
        v.to_string(),
    )
    .unwrap();
    let r = env.batch();
    assert_eq!(r["stored"], 20);
    assert_eq!(
        r["lease_taken_over"], false,
        "a released lease is not taken over"
    );
    assert_eq!(
        env.lease("batch").unwrap()["released"],
        true,
        "the batch released it"
    );
    env.ok_at("2040-01-01T00:00:00Z", &["sweep"]);
    assert_eq!(
        env.lease("batch").unwrap()["released"],
        true,
        "the sweep released it"
    );
    assert_eq!(env.lease("holds").unwrap()["released"], true);
}

/// A segment that fails authentication no longer stops every later batch: it is moved aside
/// whole to `failed/` (audited), the rest of the landing zone is stored, and nothing is lost.
#[test]
fn a_damaged_landing_segment_is_isolated_and_the_rest_flows_on() {
    let env = Env::new();
    env.ingest(&env.write("e.ndjson", &common::generate(8, 200, 0, 1).ndjson));
    let seg = std::fs::read_dir(env.store.join("landing"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    env.ingest(&env.write("f.ndjson", &common::generate(9, 150, 0, 1).ndjson));
    let original = std::fs::read(&seg).unwrap();
    let mut b = original.clone();
    let n = b.len();
    b[n - 20] ^= 0x01;
    std::fs::write(&seg, &b).unwrap();
    let out = env.run(&["batch", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = seg.file_stem().unwrap().to_string_lossy().to_string();
    assert_eq!(r["stored"], 150, "the other segment flowed on: {r}");
    assert_eq!(r["segments_isolated"], 1, "{r}");
    let moved = env.store.join(format!("failed/{id}.seg"));
    assert_eq!(r["isolated"][0], format!("failed/{id}.seg"));
    assert_eq!(
        std::fs::read(&moved).unwrap(),
        b,
        "the bytes are kept as they were"
    );
    assert_eq!(
        env.landing_segments(),
        0,
        "it no longer blocks the landing zone"
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains(&id) && err.contains("failed/"), "{err}");
    let trail = env.ok(&[
        "audit",
        "list",
        "--action",
        "landing.isolated",
        "--format",
        "ndjson",
    ]);
    assert!(
        trail.contains(&id) && trail.contains("authentication failed"),
        "{trail}"
    );
    // later batches are not stopped by it
    assert_eq!(env.batch()["stored"], 0);
    // restored (say, from a replica) into landing, the same segment goes through
    std::fs::write(
        env.store.join("landing").join(format!("{id}.seg")),
        &original,
    )
    .unwrap();
    assert_eq!(env.batch()["stored"], 200);
    assert_eq!(env.count("SELECT count(*) FROM events"), 350);
    assert!(env.verify().0);
}

fn legacy_versions_are_upcast_and_stored_as_current(backend: Backend) {
    let env = Env::on(backend);
    env.ingest(&common::repo().join("fixtures/canonical/legacy.ndjson"));
    let r = env.batch();
    assert_eq!(r["stored"], 4, "{r}");
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE schema_version = '2.1.0'"),
        4
    );
    let rows =
        env.query("SELECT event_id, queue_id, agent_ids, direction FROM events ORDER BY event_id");
    let by = |id: &str| rows.iter().find(|r| r["event_id"] == id).unwrap().clone();
    assert_eq!(
        by("legacy-1.0-declared")["queue_id"],
        "q-legacy",
        "flat 1.0 routing fields move into routingMetadata"
    );
    assert_eq!(
        by("legacy-1.0-declared")["agent_ids"],
        serde_json::json!(["agent.legacy@cc.example"]),
        "role AGENT becomes type AGENT"
    );
    assert_eq!(by("legacy-1.0-by-shape")["queue_id"], "q-legacy");
    assert_eq!(
        by("legacy-2.0-declared")["agent_ids"],
        serde_json::json!(["agent.two@cc.example"])
    );
    assert!(
        by("legacy-2.0-by-shape")
            .get("direction")
            .is_none_or(|d| d.is_null())
    );
    let out = env.ok(&["verify", "--deep", "--format", "json"]);
    assert!(
        out.contains("\"deep_records\": 4"),
        "record_hash covers the upcast record: {out}"
    );
}

fn vendor_payloads_go_through_ingest_and_batch(backend: Backend) {
    let env = Env::on(backend);
    for shape in [
        "genesys-details",
        "genesys-eventbridge",
        "nice-contacts",
        "connect-ctr",
    ] {
        let input = common::repo()
            .join("fixtures")
            .join(shape)
            .join("input.ndjson");
        env.ok(&[
            "ingest",
            "--source",
            shape,
            "--tenant",
            "bank-a",
            input.to_str().unwrap(),
        ]);
    }
    let r = env.batch();
    assert_eq!(r["stored"], 36, "{r}");
    assert_eq!(r["quarantined"], 13, "{r}");
    let codes = &r["quarantined_by_code"];
    assert_eq!(codes["source.missing_field"], 5, "{r}");
    assert_eq!(codes["json.parse"], 3, "{r}");
    assert_eq!(codes["source.wrong_type"], 4, "{r}");
    let by_platform =
        env.query("SELECT source_platform, count(*) AS n FROM events GROUP BY 1 ORDER BY 1");
    assert_eq!(by_platform.len(), 3, "{by_platform:?}");
    // a transfer stays one interaction: NICE legs share the master contact, Connect the initial contact
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE interaction_id = '618204393822'"),
        2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE interaction_id = 'c-1001'"),
        2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE interaction_type = 'VIDEO'"),
        1,
        "other media keep their own type"
    );
    // exact re-sends are dropped, as for canonical events
    for shape in ["nice-contacts", "connect-ctr"] {
        let input = common::repo()
            .join("fixtures")
            .join(shape)
            .join("input.ndjson");
        env.ok(&[
            "ingest",
            "--source",
            "auto",
            "--tenant",
            "bank-a",
            input.to_str().unwrap(),
        ]);
    }
    let again = env.batch();
    assert_eq!(again["stored"], 0, "{again}");
    assert!(env.ok(&["verify", "--deep"]).contains("OK"));
    // vendor personal data and free text stay inside the encrypted payload
    for f in env.store_files() {
        let bytes = std::fs::read(&f).unwrap();
        for secret in [
            "+12025550143",
            "client.one@example.net",
            "Rate lock explained",
            "Client asked about rate lock",
            "+13125550177",
        ] {
            assert!(
                memchr::memmem::find(&bytes, secret.as_bytes()).is_none(),
                "{secret} in {}",
                f.display()
            );
        }
    }
}

fn quarantine_rows(env: &Env) -> Vec<serde_json::Value> {
    env.ok(&["quarantine", "list", "--format", "ndjson"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn validate_is_a_dry_run(backend: Backend) {
    let env = Env::on(backend);
    env.ingest(&env.write("bad.ndjson", &common::malformed().0));
    env.batch();
    env.ingest(&env.write("good.ndjson", &common::generate(40, 50, 5, 1).ndjson));
    env.ingest(&common::repo().join("fixtures/canonical/legacy.ndjson"));
    let before = env.snapshot();
    let r: serde_json::Value =
        serde_json::from_str(&env.ok(&["validate", "--case", "INC-1", "--format", "json"]))
            .unwrap();
    assert_eq!(r["landing"]["lines"], 59, "{r}");
    let stored: u64 = r["landing"]["would_store_by_type"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(stored, 54, "{r}");
    assert_eq!(r["landing"]["duplicate_event_ids"], 5);
    assert_eq!(r["quarantine_entries"], 4);
    assert_eq!(r["quarantine"]["would_quarantine"], 4, "{r}");
    let after = env.snapshot();
    // validate decrypts: it writes its audit entry, and nothing else
    let (new, old): (Vec<_>, Vec<_>) = after.iter().partition(|a| !before.contains(a));
    assert_eq!(old.len(), before.len(), "validate changes nothing");
    assert!(
        new.len() == 1 && new[0].0.starts_with("audit/"),
        "validate writes only its audit entry: {:?}",
        new.iter().map(|n| &n.0).collect::<Vec<_>>()
    );
    // probing a version: taken as 1.0, current events fail the 1.0 schema
    let r: serde_json::Value = serde_json::from_str(&env.ok(&[
        "validate",
        "--case",
        "INC-1",
        "--schema-version",
        "1.0",
        "--format",
        "json",
    ]))
    .unwrap();
    assert!(
        r["landing"]["would_quarantine"].as_u64().unwrap() >= 50,
        "{r}"
    );
}

fn replay_after_a_fix_stores_what_passes_once(backend: Backend) {
    let env = Env::on(backend);
    let details = common::repo().join("fixtures/genesys-details/input.ndjson");
    env.ok(&[
        "ingest",
        "--source",
        "genesys-details",
        details.to_str().unwrap(),
    ]);
    let r = env.batch();
    assert_eq!(r["stored"], 0);
    assert_eq!(r["quarantined_by_code"]["source.tenant_missing"], 9, "{r}");
    let first = quarantine_rows(&env);
    assert_eq!(first.len(), 12);
    // the fix: name the tenant the source lacked
    let out = env.ok(&[
        "quarantine",
        "replay",
        "--case",
        "INC-2",
        "--all",
        "--tenant",
        "bank-a",
        "--format",
        "json",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let r = &doc["batch"];
    assert_eq!(r["stored"], 9, "{r}");
    assert_eq!(r["replayed_out"], 8, "{r}");
    let left = quarantine_rows(&env);
    assert_eq!(left.len(), 4, "{left:?}");
    let retried = left
        .iter()
        .find(|e| e["error_code"] == "schema.pattern")
        .expect("the bad timestamp now fails for its own reason");
    assert_eq!(retried["attempts"], 2);
    assert!(
        first.iter().any(|e| e["id"] == retried["id"]),
        "the entry keeps its id"
    );
    // replaying twice stores nothing twice
    let out = env.ok(&[
        "quarantine",
        "replay",
        "--case",
        "INC-2",
        "--all",
        "--tenant",
        "bank-a",
        "--format",
        "json",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["queued"], 4, "{doc}");
    let r = &doc["batch"];
    assert_eq!(r["stored"], 0, "{r}");
    assert_eq!(quarantine_rows(&env).len(), 4);
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE tenant_id = 'bank-a'"),
        9
    );
    assert_eq!(
        env.run(&["quarantine", "replay", "--case", "INC-2", "--id", "q-nope"])
            .status
            .code(),
        Some(1),
        "a missing entry is a runtime failure, not a usage error"
    );
    assert!(env.verify().0);
}

/// A secret written into a pipeline's `[kms]` (or a tenant's section) is refused by name, is
/// never echoed, and nothing is created.
#[test]
fn secrets_in_a_pipeline_file_are_refused() {
    let cases = [
        (
            "[kms]\nbackend = \"transit\"\nkey = \"k\"\ntoken = \"s.abcdef\"\n",
            "kms.token",
            "s.abcdef",
        ),
        (
            "[kms]\nbackend = \"aws-kms\"\nkey = \"alias/k\"\nsecret_access_key = \"wJalrXUtnFEMI-secret\"\n",
            "kms.secret_access_key",
            "wJalrXUtnFEMI-secret",
        ),
        (
            "[kms.tenants.acme]\nbackend = \"transit\"\nkey = \"acme-kek\"\nsecret_id = \"acme-9f8e7d\"\n",
            "kms.tenants.acme.secret_id",
            "acme-9f8e7d",
        ),
    ];
    for (text, key, secret) in cases {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(&p, text).unwrap();
        let out = std::process::Command::new(common::bin())
            .args(["init", "--store"])
            .arg(dir.path().join("s"))
            .arg("--pipeline")
            .arg(&p)
            .env(common::OS_USER_VAR, common::OPERATOR)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        let said = format!("{key}: secrets never live in a pipeline file");
        assert!(err.contains(&said), "{err}");
        assert!(!err.contains(secret), "{err}");
        assert!(!dir.path().join("s").exists());
    }
}
