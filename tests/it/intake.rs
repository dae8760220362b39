//! Intake that loses nothing and survives poison input: tenant-aware dedupe, events outside
//! the time window and past their retention kept in quarantine, bounded policy arithmetic and
//! the store's retention floor, oversized lines and compressed input at ingest, pipeline files
//! with several mistakes, hold bodies, and what quarantine keeps in plaintext.

use crate::common::{self, Env};

/// One canonical event line.
fn event(id: &str, tenant: &str, occurred_at: &str) -> String {
    serde_json::json!({
        "eventId": id, "eventType": "INTERACTION", "state": "COMPLETED",
        "sourcePlatform": "GENESYS_CX", "tenantId": tenant, "occurredAt": occurred_at,
        "interaction": {
            "schemaVersion": "2.1.0", "interactionId": format!("i-{id}"), "interactionType": "CALL",
            "direction": "INBOUND",
            "routingMetadata": {"queueId": "q-1", "queueName": "Billing", "wrapUpCode": null, "disposition": null},
            "participants": [{"participantId": "p1", "type": "CUSTOMER", "address": "+12025550111", "joinedTimestamp": occurred_at}]
        }
    })
    .to_string()
}

fn lines(events: &[String]) -> Vec<u8> {
    let mut out = events.join("\n").into_bytes();
    out.push(b'\n');
    out
}

fn quarantine_rows(env: &Env) -> Vec<serde_json::Value> {
    env.ok(&["quarantine", "list", "--format", "ndjson"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Issue 9 item 7: the dedupe key is (tenant, event id).
#[test]
fn two_tenants_may_use_the_same_event_id() {
    let env = Env::new();
    let at = "2025-10-01T10:00:00.000Z";
    let a = event("same-1", "tenant-a", at);
    let b = event("same-1", "tenant-b", at);
    env.ingest(&env.write("ab.ndjson", &lines(&[a.clone(), b])));
    let r = env.batch();
    assert_eq!(
        (r["stored"].as_u64(), r["duplicates_in_batch"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    // tenant-a's true re-delivery, and tenant-b's event arriving again later: both dropped
    env.ingest(&env.write("a.ndjson", &lines(&[a])));
    let c = event("same-1", "tenant-c", at);
    env.ingest(&env.write("c.ndjson", &lines(&[c])));
    let r = env.batch();
    assert_eq!(
        (r["stored"].as_u64(), r["already_stored"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(
        env.count("SELECT count(DISTINCT tenant_id) FROM events WHERE event_id = 'same-1'"),
        3
    );
}

/// Issue 9 item 9: an event whose retention ended before it arrived is quarantined with its
/// own code and its original bytes, and stays there; it is also audited.
#[test]
fn an_event_from_1970_is_quarantined_not_dropped() {
    let env = Env::new();
    let old = event("from-1970", "tenant-a", "1970-01-01T00:00:00.000Z");
    let fine = event("fine-1", "tenant-a", "2025-10-01T00:00:00.000Z");
    env.ingest(&env.write("e.ndjson", &lines(&[old, fine])));
    let r = env.batch();
    assert_eq!(r["stored"], 1, "{r}");
    assert_eq!(r["expired_on_arrival"], 1, "{r}");
    assert_eq!(
        r["quarantined_by_code"]["retention.expired_on_arrival"], 1,
        "{r}"
    );
    env.batch();
    let rows = quarantine_rows(&env);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["error_code"], "retention.expired_on_arrival");
    let shown = env.ok(&[
        "quarantine",
        "show",
        "--case",
        "T-1",
        rows[0]["id"].as_str().unwrap(),
    ]);
    assert!(
        shown.contains("\"eventId\":\"from-1970\""),
        "original bytes kept: {shown}"
    );
    let audited = env.ok(&[
        "audit",
        "list",
        "--action",
        "retention.expired_on_arrival",
        "--format",
        "ndjson",
    ]);
    assert!(audited.contains("from-1970"), "{audited}");
}

/// Issue 9 item 9: `occurredAt` outside the window (later than a day after arrival, or
/// older than the store's floor allows) is quarantined, not partitioned; a future event can
/// be replayed once its time has come.
#[test]
fn events_outside_the_time_window_are_quarantined() {
    let env = Env::new();
    let future: Vec<String> = (0..30)
        .map(|i| {
            event(
                &format!("f-{i}"),
                "tenant-a",
                &format!("{}-06-01T00:00:00.000Z", 2030 + i * 250),
            )
        })
        .collect();
    env.ingest_at(
        "2026-06-01T00:00:00Z",
        &env.write("f.ndjson", &lines(&future)),
    );
    // older than the 6-year floor, though a 10-year policy would keep it
    let pipe = env.write(
        "p.toml",
        b"[retention]\ndefault_policy = \"KEEP_10Y\"\n[retention.policies.KEEP_10Y]\nyears = 10\n",
    );
    let past = event("p-1", "tenant-a", "2019-06-01T00:00:00.000Z");
    let edge = event("edge-1", "tenant-a", "2026-06-01T23:00:00.000Z");
    env.ingest_at(
        "2026-06-01T00:00:00Z",
        &env.write("p.ndjson", &lines(&[past, edge])),
    );
    let r: serde_json::Value = serde_json::from_str(&env.ok_at(
        "2026-06-01T00:10:00Z",
        &[
            "batch",
            "--pipeline",
            pipe.to_str().unwrap(),
            "--format",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(
        r["stored"], 1,
        "only the event within a day of its arrival: {r}"
    );
    assert_eq!(
        r["quarantined_by_code"]["event.occurred_at_future"], 30,
        "{r}"
    );
    assert_eq!(r["quarantined_by_code"]["event.occurred_at_past"], 1, "{r}");
    assert_eq!(r["partitions"], 1, "{r}");
    assert_eq!(env.count("SELECT count(*) FROM manifests"), 1);
    let years: Vec<_> = std::fs::read_dir(env.store.join("lake"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(years, vec![std::ffi::OsString::from("year=2026")]);
    // in 2030 the first one's time has come: replayed, it is stored
    let id = quarantine_rows(&env)
        .into_iter()
        .find(|r| r["error_code"] == "event.occurred_at_future" && r["line_no"] == 1)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.ok_at(
        "2030-06-01T00:00:00Z",
        &[
            "quarantine",
            "replay",
            "--case",
            "T-1",
            "--id",
            &id,
            "--format",
            "json",
        ],
    );
    // stdout is one JSON document
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["queued"], 1, "{doc}");
    let r = &doc["batch"];
    assert_eq!(
        (r["stored"].as_u64(), r["replayed_out"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(quarantine_rows(&env).len(), 30);
}

/// Issue 9 item 9: policy arithmetic is bounded and checked; the floor comes from the store.
#[test]
fn policies_are_bounded_and_never_below_the_stores_floor() {
    let env = Env::new();
    env.ingest(&env.write("e.ndjson", &common::generate(90, 100, 0, 1).ndjson));
    let wrap = env.write(
        "wrap.toml",
        b"[retention]\ndefault_policy = \"HUGE\"\n[retention.policies.HUGE]\nyears = 357913942\n",
    );
    let out = env.run(&["batch", "--pipeline", wrap.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("retention.policies.HUGE") && stderr(&out).contains("100 years"),
        "{}",
        stderr(&out)
    );
    let day = env.write(
        "day.toml",
        b"[retention]\ndefault_policy = \"ONE_DAY\"\n[retention.policies.ONE_DAY]\ndays = 1\n",
    );
    let out = env.run(&["batch", "--pipeline", day.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("ONE_DAY") && err.contains("2190 days"),
        "{err}"
    );
    assert_eq!(env.landing_segments(), 1, "nothing consumed");
    assert_eq!(
        env.batch()["stored"],
        100,
        "the default policy is within the floor"
    );
    // a store made with a smaller floor takes it; the floor is set once
    let small = Env::init_with(&["--retention-floor-days", "1"]);
    let now = "2025-10-01T12:00:00Z"; // the events' day: a one-day policy still keeps them
    small.ingest_at(
        now,
        &small.write("e.ndjson", &common::generate(91, 10, 0, 1).ndjson),
    );
    let args = [
        "batch",
        "--pipeline",
        day.to_str().unwrap(),
        "--format",
        "json",
    ];
    let r: serde_json::Value = serde_json::from_str(&small.ok_at(now, &args)).unwrap();
    assert_eq!(r["stored_by_policy"]["ONE_DAY"], 10, "{r}");
    // a conflict with a choice made once: a runtime failure, and no retry helps
    let out = small.run(&["init", "--retention-floor-days", "2190"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("never changed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("will not help"), "{}", stderr(&out));
    small.ok(&["init", "--retention-floor-days", "1"]);
}

/// Issue 9 item 10: a 20 MB line is quarantined at ingest as its length, SHA-256 and a
/// bounded prefix; the batch never sees it, and running everything again changes nothing.
#[test]
fn a_huge_single_line_is_quarantined_at_ingest() {
    use sha2::Digest;
    let env = Env::new();
    let mut big = br#"{"eventId": "poison", "pad": ""#.to_vec();
    big.resize(20 << 20, b'x');
    big.extend_from_slice(b"\"}");
    let mut input = lines(&[event("before", "t", "2025-10-01T00:00:00.000Z")]);
    input.extend_from_slice(&big);
    input.push(b'\n');
    input.extend_from_slice(&lines(&[event("after", "t", "2025-10-01T00:00:00.000Z")]));
    let f = env.write("big.ndjson", &input);
    let out = env.ok(&["ingest", f.to_str().unwrap()]);
    assert!(
        out.contains("1 line(s) over the 1 MiB limit quarantined"),
        "{out}"
    );
    let entries: Vec<_> = std::fs::read_dir(env.store.join("quarantine"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1);
    assert!(
        std::fs::metadata(&entries[0]).unwrap().len() < 16 << 10,
        "the entry holds a bounded prefix"
    );
    let e: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&entries[0]).unwrap()).unwrap();
    assert_eq!(e["error_code"], "event.too_large");
    assert_eq!(e["original_bytes"], big.len() as u64);
    assert_eq!(
        e["truncated"]["sha256"],
        hex::encode(sha2::Sha256::digest(&big))
    );
    let landed: u64 = std::fs::read_dir(env.store.join("landing"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(landed < 64 << 10, "the line is not landed: {landed} bytes");
    let r = env.batch();
    assert_eq!(
        (r["stored"].as_u64(), r["quarantined"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    // again: no second entry, nothing fails
    env.ok(&["ingest", f.to_str().unwrap()]);
    let r = env.batch();
    assert_eq!(r["already_stored"], 2, "{r}");
    assert_eq!(quarantine_rows(&env).len(), 1);
    let shown = env.ok(&[
        "quarantine",
        "show",
        "--case",
        "T-1",
        e["id"].as_str().unwrap(),
    ]);
    assert!(shown.contains("original (4096 bytes)"), "{shown}");
    // a prefix cannot be replayed: the entry stays as it is
    env.ok(&["quarantine", "replay", "--case", "T-1", "--all"]);
    assert_eq!(quarantine_rows(&env)[0]["attempts"], 1);
}

/// Issue 9 item 10: thread counts are bounded by validation.
#[test]
fn absurd_thread_counts_are_refused() {
    let env = Env::new();
    let p = env.write("p.toml", b"[batch]\nthreads = 5000000\n");
    let out = env.run(&["batch", "--pipeline", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("batch.threads: 5000000 is more than 256"),
        "{}",
        stderr(&out)
    );
}

/// Issue 9 item 10: `max_input_mb` counts raw bytes, not the (compressed) stored size.
#[test]
fn max_input_mb_counts_raw_bytes() {
    let env = Env::new();
    for (i, seed) in [92u64, 93].into_iter().enumerate() {
        let g = common::generate(seed, 1400, 0, 1);
        assert!(g.ndjson.len() > 600 << 10);
        env.ingest(&env.write(&format!("e{i}.ndjson"), &g.ndjson));
    }
    let stored: u64 = std::fs::read_dir(env.store.join("landing"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        stored < 1 << 20,
        "both segments fit in 1 MiB as stored ({stored})"
    );
    let p = env.write("p.toml", b"[batch]\nmax_input_mb = 1\n");
    let r: serde_json::Value = serde_json::from_str(&env.ok(&[
        "batch",
        "--pipeline",
        p.to_str().unwrap(),
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        (r["segments"].as_u64(), r["segments_waiting"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
}

/// Also found: `ingest a b c` checks every input before ingesting any.
#[test]
fn every_input_is_checked_before_any_is_ingested() {
    let env = Env::new();
    let a = env.write("a.ndjson", &common::generate(94, 5, 0, 1).ndjson);
    let missing = env.dir.path().join("missing.ndjson");
    let dir = env.dir.path().join("adir");
    std::fs::create_dir(&dir).unwrap();
    let out = env.run(&[
        "ingest",
        a.to_str().unwrap(),
        missing.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("missing.ndjson") && err.contains("adir: is a directory"),
        "{err}"
    );
    assert_eq!(env.landing_segments(), 0, "nothing ingested");
}

/// Also found: gzip and zstd input is recognised by content and decompressed.
#[test]
fn compressed_input_is_decompressed() {
    use std::io::Write;
    let env = Env::new();
    let g = common::generate(95, 200, 0, 1);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&g.ndjson).unwrap();
    // named .ndjson: the bytes decide, not the name
    let a = env.write("a.ndjson", &gz.finish().unwrap());
    let h = common::generate(96, 100, 0, 1);
    let b = env.write("b.zst", &zstd::encode_all(&h.ndjson[..], 3).unwrap());
    let out = env.ok(&["ingest", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(out.contains("(gzip,") && out.contains("(zstd,"), "{out}");
    let r = env.batch();
    assert_eq!(
        (r["stored"].as_u64(), r["quarantined"].as_u64()),
        (Some(300), Some(0)),
        "{r}"
    );
}

/// Also found: a pipeline file with several mistakes reports them all at once.
#[test]
fn a_pipeline_file_reports_every_mistake() {
    let env = Env::new();
    let p = env.write(
        "p.toml",
        b"[batch]\nmax_input = 3\n[retention.policies.SIX]\nyears = \"six\"\n[[sources]]\nname = \"a\"\nformat = \"canonical\"\npathz = [\"x\"]\n",
    );
    let out = env.run(&["batch", "--pipeline", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for want in [
        "batch.max_input: unknown key",
        "retention.policies.SIX.years: invalid type",
        "sources[0].pathz: unknown key",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// Issue 9 item 13: hold bodies with unknown keys or reversed ranges are refused; a hold that
/// covers nothing needs `--allow-empty`.
#[test]
fn hold_bodies_are_checked() {
    let env = Env::new();
    env.ingest(&env.write("e.ndjson", &common::generate(97, 30, 0, 1).ndjson));
    env.batch();
    let apply = |body: &str, extra: &[&str]| {
        let f = env.write("h.json", body.as_bytes());
        let mut args = vec!["hold", "apply", "--file", f.to_str().unwrap()];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    let out = apply(
        r#"{"holdId": "H1", "scope": {"interactionIDs": ["int-97-0"]}}"#,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown field `interactionIDs`"),
        "{}",
        stderr(&out)
    );
    let out = apply(
        r#"{"holdId": "H2", "scope": {"dateRange": {"start": "2025-12-31T00:00:00Z", "end": "2025-01-01T00:00:00Z"}}}"#,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is after end"), "{}", stderr(&out));
    let nothing = r#"{"holdId": "H3", "tenantId": "no-such-tenant", "scope": {}}"#;
    let out = apply(nothing, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("covers no stored record") && stderr(&out).contains("--allow-empty"),
        "{}",
        stderr(&out)
    );
    assert!(!env.ok(&["hold", "list"]).contains("H3"));
    let refused = env.ok(&[
        "audit",
        "list",
        "--action",
        "legal_hold",
        "--format",
        "ndjson",
    ]);
    assert!(
        refused.contains("H3") && refused.contains("refused"),
        "{refused}"
    );
    let out = apply(nothing, &["--allow-empty"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.ok(&["hold", "list"]).contains("H3"));
}

/// Issue 9 item 13: quarantine keeps a declared schema version in plaintext only when it
/// looks like one.
#[test]
fn quarantine_keeps_only_version_shaped_schema_versions() {
    let env = Env::new();
    let mut phone = event("v-1", "t", "2025-10-01T00:00:00.000Z");
    phone = phone.replace(
        "\"schemaVersion\":\"2.1.0\"",
        "\"schemaVersion\":\"+15557654321\"",
    );
    let mut next = event("v-2", "t", "2025-10-01T00:00:00.000Z");
    next = next.replace("\"schemaVersion\":\"2.1.0\"", "\"schemaVersion\":\"3.0\"");
    env.ingest(&env.write("v.ndjson", &lines(&[phone, next])));
    env.batch();
    let mut versions: Vec<String> = quarantine_rows(&env)
        .iter()
        .map(|r| r["schema_version"].as_str().unwrap().to_string())
        .collect();
    versions.sort();
    assert_eq!(versions, vec!["3.0", "invalid"]);
    for f in env.store_files() {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            memchr::memmem::find(&bytes, b"15557654321").is_none(),
            "in {}",
            f.display()
        );
    }
}

/// Issue 9 item 13: a vendor id of the wrong type is quarantined with its path, not coerced.
#[test]
fn vendor_ids_of_the_wrong_type_are_quarantined() {
    let env = Env::new();
    let line = br#"{"AWSAccountId":"123456789012","InstanceARN":"arn:aws:connect:us-east-1:123456789012:instance/i-1","ContactId":7002,"Channel":"VOICE","InitiationMethod":"INBOUND","InitiationTimestamp":"2025-10-01T12:10:00Z"}"#;
    let f = env.write("c.ndjson", &[&line[..], b"\n"].concat());
    env.ok(&["ingest", "--source", "connect-ctr", f.to_str().unwrap()]);
    let r = env.batch();
    assert_eq!(r["quarantined_by_code"]["source.wrong_type"], 1, "{r}");
    let rows = quarantine_rows(&env);
    assert_eq!(rows[0]["error_path"], "/ContactId");
}
