//! Discovery: audited decryption gated by case and role, the interactions view, Parquet
//! output, and partition pruning.

use crate::common::{self, Env};

fn store() -> (Env, common::Gen) {
    let env = Env::new();
    let g = common::generate(60, 300, 0, 3);
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    env.batch();
    (env, g)
}

fn audit_rows(env: &Env) -> Vec<serde_json::Value> {
    env.ok(&["audit", "list", "--format", "ndjson"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn decryption_needs_a_case_and_is_audited() {
    let (env, g) = store();
    let sql = "SELECT event_id, json_get(record, 'interaction', 'notes') AS notes FROM decrypted WHERE event_id = 'evt-60-5'";
    let rows: Vec<serde_json::Value> = env
        .ok(&[
            "query",
            "--decrypt",
            "--case",
            "SEC-INV-2024-0892",
            "--actor",
            "jdoe",
            "--format",
            "ndjson",
            sql,
        ])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["notes"], g.notes[5].as_str());
    let a = audit_rows(&env);
    let last = a.last().unwrap();
    assert_eq!(
        (
            last["action"].as_str(),
            last["actor"].as_str(),
            last["case"].as_str()
        ),
        (Some("decrypt"), Some("jdoe"), Some("SEC-INV-2024-0892"))
    );
    let details: serde_json::Value =
        serde_json::from_str(last["details"].as_str().unwrap()).unwrap();
    assert_eq!(
        details["event_ids"],
        serde_json::json!(["evt-60-5"]),
        "only the selected row was decrypted"
    );
    assert_eq!(details["deks_unwrapped"].as_array().unwrap().len(), 1);
    assert!(details["query"].as_str().unwrap().contains("evt-60-5"));

    // no case: refused, and the refusal is audited
    let out = env.run(&["query", "--decrypt", "--actor", "jdoe", sql]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("case reference"));
    assert!(out.stdout.is_empty());
    assert_eq!(
        audit_rows(&env).last().unwrap()["action"],
        "decrypt.refused"
    );
    // without --decrypt there is no way to the plaintext
    let out = env.run(&[
        "query",
        "SELECT decrypt_payload(payload, tenant_id, event_id, interaction_id, dek_id) FROM events",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = env.run(&["query", "SELECT record FROM decrypted"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        env.ok(&["audit", "verify"]).contains("intact: 4"),
        "batch, decrypt, refusal"
    );
}

#[test]
fn configured_roles_are_enforced() {
    let (env, _) = store();
    let p = env.write("roles.toml", b"[access.roles]\njdoe = [\"investigator\"]\nann = [\"analyst\"]\nsweeper = [\"retention\"]\n");
    let sql = "SELECT count(record) FROM decrypted WHERE event_id = 'evt-60-1'";
    let pipe = p.to_str().unwrap();
    env.ok(&[
        "query",
        "--decrypt",
        "--case",
        "C-1",
        "--actor",
        "jdoe",
        "--pipeline",
        pipe,
        sql,
    ]);
    for actor in ["ann", "sweeper", "mallory"] {
        let out = env.run(&[
            "query",
            "--decrypt",
            "--case",
            "C-1",
            "--actor",
            actor,
            "--pipeline",
            pipe,
            sql,
        ]);
        assert_eq!(out.status.code(), Some(1), "{actor}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("investigator"));
    }
    let actions: Vec<String> = audit_rows(&env)
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["actor"].as_str().unwrap(),
                r["action"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "holdfast-batch:batch",
            "holdfast:head.started",
            "jdoe:decrypt",
            "ann:decrypt.refused",
            "sweeper:decrypt.refused",
            "mallory:decrypt.refused"
        ]
    );
}

#[test]
fn blind_index_finds_a_customer_without_decrypting_and_without_recording_the_address() {
    let (env, g) = store();
    let addr = &g.customer_addresses[7]; // "+1202xxxxxxx", written here with other spelling
    let spelled = format!("({}) {}-{}", &addr[2..5], &addr[5..8], &addr[8..]);
    let sql = format!(
        "SELECT event_id FROM events WHERE array_has(address_hmacs, blind_index(tenant_id, '{spelled}'))"
    );
    let rows = env.ok(&[
        "query",
        "--decrypt",
        "--case",
        "SUBPOENA-7",
        "--actor",
        "jdoe",
        "--format",
        "csv",
        &sql,
    ]);
    assert_eq!(
        rows.lines().skip(1).collect::<Vec<_>>(),
        ["evt-60-7"],
        "{rows}"
    );
    // without the gate there is no blind_index
    assert_eq!(env.run(&["query", &sql]).status.code(), Some(1));
    let last = audit_rows(&env).pop().unwrap();
    let details: serde_json::Value =
        serde_json::from_str(last["details"].as_str().unwrap()).unwrap();
    assert!(details["blind_indexes"].as_u64().unwrap() >= 1);
    assert_eq!(details["records"], 0, "nothing was decrypted");
    assert!(details["query"].as_str().unwrap().contains("'<redacted>'"));
    for f in env.store_files() {
        let bytes = std::fs::read(&f).unwrap();
        for needle in [addr.as_str(), spelled.as_str(), &addr[2..]] {
            assert!(
                memchr::memmem::find(&bytes, needle.as_bytes()).is_none(),
                "{needle} in {}",
                f.display()
            );
        }
    }
}

#[test]
fn interactions_has_one_row_per_interaction() {
    let (env, _) = store();
    assert_eq!(env.count("SELECT count(*) FROM interactions"), 100);
    assert_eq!(
        env.count("SELECT count(*) FROM interactions WHERE event_count <> 3"),
        0
    );
    assert_eq!(
        env.count("SELECT count(*) FROM interactions WHERE latest_at < first_at"),
        0
    );
}

#[test]
fn parquet_output_goes_to_a_file() {
    let (env, _) = store();
    let out = env.dir.path().join("out.parquet");
    env.ok(&[
        "query",
        "--format",
        "parquet",
        "-o",
        out.to_str().unwrap(),
        "SELECT event_id, occurred_at FROM events",
    ]);
    let f = std::fs::File::open(&out).unwrap();
    let r = parquet::file::reader::SerializedFileReader::new(f).unwrap();
    assert_eq!(
        parquet::file::reader::FileReader::metadata(&r)
            .file_metadata()
            .num_rows(),
        300
    );
}

#[test]
fn a_query_over_one_day_reads_one_day() {
    let (env, _) = store();
    let plan = env.ok(&["query", "--format", "csv", "EXPLAIN SELECT count(*) FROM events WHERE year = 2025 AND month = 10 AND day = 2 AND array_has(agent_ids, 'agent1@cc.example')"]);
    let files: Vec<&str> = plan
        .split(|c: char| c == '[' || c == ']' || c == ',' || c.is_whitespace())
        .filter(|t| t.ends_with(".parquet"))
        .collect();
    let all = env.count("SELECT count(*) FROM manifests");
    let that_day = env.count("SELECT count(*) FROM manifests WHERE day = 2");
    assert!(all > that_day && that_day > 0);
    assert_eq!(files.len() as i64, that_day, "{plan}");
    assert!(files.iter().all(|f| f.contains("day=02")), "{files:?}");
}

#[test]
fn the_sql_shell_runs_statements_and_survives_errors() {
    use std::io::Write;
    let (env, _) = store();
    let mut child = env
        .cmd(&["sql", "--format", "csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"SELECT count(*) AS n FROM events;\nSELECT nope FROM events;\nSELECT count(*) AS m\n  FROM interactions;\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("n\n300\n") && stdout.contains("m\n100\n"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("error"));
}
