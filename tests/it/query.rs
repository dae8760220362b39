//! Queries against the person at the keyboard (issue 9): sessions only read, search terms are
//! not written down (audit trail, shell history), named-query parameters bind once, blind
//! indexes are capped per statement; and honest outputs: empty results keep their columns,
//! the `sql` shell cuts statements with the tokenizer and fails when a statement failed.

use crate::common::{self, Env};
use std::path::PathBuf;

fn small_store() -> Env {
    let env = Env::new();
    let g = common::generate(61, 60, 0, 2);
    env.ingest(&env.write("e.ndjson", &g.ndjson));
    env.batch();
    env
}

/// Every file of the store with its bytes.
fn snapshot(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    env.store_files()
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn failed_with(out: &std::process::Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

#[test]
fn queries_cannot_write_and_cannot_read_outside_the_committed_tables() {
    let env = small_store();
    let before = snapshot(&env);
    let store = env.store.to_str().unwrap();
    let data = before
        .iter()
        .map(|(p, _)| p.to_str().unwrap().to_string())
        .find(|p| p.contains("/lake/") && p.ends_with(".parquet"))
        .unwrap();
    let partition = &data[..data.rfind('/').unwrap()];
    let lock = before
        .iter()
        .map(|(p, _)| p.to_str().unwrap().to_string())
        .find(|p| p.contains("/_locks/"))
        .expect("a lock record");
    let planted = format!("{partition}/planted.parquet");
    let attacks = [
        (
            format!("COPY (SELECT * FROM events LIMIT 1) TO '{planted}' STORED AS PARQUET"),
            "COPY",
        ),
        (
            format!("COPY (SELECT 'x' AS retain_until) TO '{lock}' STORED AS JSON"),
            "COPY",
        ),
        (
            "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'"
                .to_string(),
            "CREATE EXTERNAL TABLE",
        ),
        (
            format!("EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{store}/x.csv' STORED AS CSV"),
            "COPY",
        ),
        (
            "INSERT INTO events SELECT * FROM events".to_string(),
            "INSERT",
        ),
        ("DROP TABLE events".to_string(), "DROP"),
        (
            "SET datafusion.execution.time_zone = '+01:00'".to_string(),
            "SET",
        ),
        (
            "CREATE TABLE t AS SELECT 1 AS x".to_string(),
            "CREATE TABLE",
        ),
        ("SELECT 1 AS x INTO t".to_string(), "SELECT INTO"),
    ];
    for (sql, kind) in &attacks {
        let err = failed_with(&env.run(&["query", sql]), &format!("{kind} is refused"));
        assert!(err.contains("only read"), "{err}");
        // the decrypting session and the shell refuse the same
        failed_with(
            &env.run(&["query", "--decrypt", "--case", "C-1", sql]),
            "is refused",
        );
    }
    // a direct read of a path, by URL or by name, inside or outside the store
    for sql in [
        "SELECT * FROM 'file:///etc/passwd'".to_string(),
        "SELECT * FROM '/etc/passwd'".to_string(),
        format!("SELECT * FROM '{data}'"),
        format!("SELECT * FROM 'file://{data}'"),
        format!(
            "SELECT * FROM 'holdfast://store/{}'",
            &data[store.len() + 1..]
        ),
    ] {
        let out = env.run(&["query", &sql]);
        assert_eq!(out.status.code(), Some(1), "{sql}");
        assert!(out.stdout.is_empty());
    }
    let mut child = env
        .cmd(&["sql", "--format", "csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let script = format!("{};\nSELECT 1 AS one;\n", attacks[0].0);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("COPY is refused"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n1\n");

    assert!(!std::path::Path::new(&planted).exists());
    assert!(!env.store.join("x.csv").exists());
    let after = snapshot(&env);
    let names = |s: &[(PathBuf, Vec<u8>)]| s.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    // nothing changed (audit entries may be added for the decrypting attempts)
    let (b, a): (Vec<_>, Vec<_>) = (names(&before), names(&after));
    assert!(
        a.iter()
            .all(|p| b.contains(p) || p.to_string_lossy().contains("/audit/")),
        "{a:?}"
    );
    for (p, bytes) in &before {
        let now = after.iter().find(|(q, _)| q == p).map(|(_, b)| b);
        assert_eq!(now, Some(bytes), "{} changed", p.display());
    }
    assert!(env.verify().0);
}

fn audit_queries(env: &Env) -> Vec<String> {
    env.ok(&["audit", "list", "--format", "ndjson"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|r| {
            let d: serde_json::Value =
                serde_json::from_str(r["details"].as_str().unwrap()).unwrap();
            d["query"].as_str().map(str::to_string)
        })
        .collect()
}

/// The `<lit:…>` marks of a recorded statement, in order.
fn marks(recorded: &str) -> Vec<String> {
    recorded
        .split("'<lit:")
        .skip(1)
        .map(|s| s[..s.find(">'").unwrap()].to_string())
        .collect()
}

const SECRETS: [&str; 5] = [
    "15550198765",
    "15550198766",
    "jane.doe",
    "example.com",
    "old-secret",
];

fn assert_no_secrets(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap();
    for s in SECRETS {
        assert!(
            memchr::memmem::find(&bytes, s.as_bytes()).is_none(),
            "{s} in {}",
            path.display()
        );
    }
}

/// Runs `holdfast sql` on a pseudo-terminal (so it keeps a history) with `input` typed in.
fn interactive_sql(
    env: &Env,
    state: &std::path::Path,
    args: &[&str],
    input: &str,
) -> std::process::Output {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors into the integers we pass.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors were just opened and are owned by these files alone.
    let (mut master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    let mut all = vec!["sql"];
    all.extend_from_slice(args);
    let child = env
        .cmd(&all)
        .env("XDG_STATE_HOME", state)
        .env("TERM", "dumb")
        .stdin(std::process::Stdio::from(slave))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut echo = master.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(echo.read(&mut buf), Ok(n) if n > 0) {}
    });
    master.write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(master);
    let _ = drain.join();
    out
}

#[test]
fn search_terms_never_reach_the_audit_trail_or_the_history() {
    use std::os::unix::fs::PermissionsExt;
    let env = small_store();
    let gate = ["--decrypt", "--case", "SUBPOENA-9"];
    let q = |sql: &str| {
        let mut args = vec!["query", "--format", "csv"];
        args.extend_from_slice(&gate);
        args.push(sql);
        env.ok(&args)
    };
    // a number typed as a number (with and without its sign), an e-mail, a quote in a comment
    q(
        "SELECT count(*) AS n FROM events WHERE length(event_id) = +15550198765 OR length(event_id) = 15550198765",
    );
    q(
        "SELECT count(*) AS n FROM events WHERE array_has(address_hmacs, blind_index(tenant_id, 'jane.doe@example.com')) -- don't log\n OR event_id = '+15550198766'",
    );
    q("SELECT event_id FROM events WHERE event_id = 'jane.doe@example.com' /* it's 'x' */ LIMIT 1");
    for f in env.store_files() {
        assert_no_secrets(&f);
    }
    let recorded = audit_queries(&env);
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    let (m0, m1, m2) = (
        marks(&recorded[0]),
        marks(&recorded[1]),
        marks(&recorded[2]),
    );
    assert_eq!(m0.len(), 2, "{recorded:?}");
    assert_eq!(m0[0], m0[1], "the same number, the same hash: {recorded:?}");
    assert_eq!(m1[0], m2[0], "the same e-mail, the same hash: {recorded:?}");
    assert_ne!(m1[0], m1[1]);
    assert!(!recorded[1].contains("don't") && !recorded[2].contains("it's"));

    // an error on the terminal: with --decrypt its text is withheld (it may quote decrypted
    // values); without, the user sees their own statement as DataFusion quotes it
    let failing = "SELECT CAST('jane.doe@example.com' AS INT) AS n";
    let mut args = vec!["query"];
    args.extend_from_slice(&gate);
    args.push(failing);
    let err = failed_with(&env.run(&args), "withheld");
    assert!(!err.contains("jane.doe"), "{err}");
    failed_with(&env.run(&["query", failing]), "jane.doe@example.com");

    // the shell's history: the same form, the same hashes, owner-only; an old history loses
    // its literals at the next save
    let state = env.dir.path().join("state");
    let hist_dir = state.join("holdfast");
    std::fs::create_dir_all(&hist_dir).unwrap();
    std::fs::write(
        hist_dir.join("sql_history"),
        "#V2\nSELECT 'old-secret@example.com'\n",
    )
    .unwrap();
    std::fs::set_permissions(
        hist_dir.join("sql_history"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(&hist_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = vec!["--format", "csv"];
    args.extend_from_slice(&gate);
    let out = interactive_sql(
        &env,
        &state,
        &args,
        "SELECT count(*) AS n FROM events\n  WHERE event_id = 'jane.doe@example.com' -- isn't it;\n  ;\nSELECT 15550198765 AS x;\nSELECT 1 FROM events WHERE event_id = jane.doe@example.com;\n\\q\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("n\n0\n") && stdout.contains("x\n15550198765\n"),
        "{stdout}"
    );
    let hist = hist_dir.join("sql_history");
    assert_no_secrets(&hist);
    let text = std::fs::read_to_string(&hist).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("<lit")).collect();
    assert_eq!(lines.len(), 4, "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No field named"), "{stderr}");
    for secret in SECRETS {
        assert!(
            !stderr.contains(secret),
            "{secret} on the terminal with --decrypt: {stderr}"
        );
    }
    assert_eq!(marks(lines[1]), vec![m1[0].clone()], "{text}");
    assert_eq!(marks(lines[2]), vec![m0[0].clone()], "{text}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&hist), 0o600);
    assert_eq!(mode(&hist_dir), 0o700);
    for f in env.store_files() {
        assert_no_secrets(&f);
    }
}

#[test]
fn named_query_parameters_are_bound_once_as_literals() {
    let env = small_store();
    let file = env.write(
        "q.sql",
        b"-- name: q\nSELECT event_id FROM events WHERE event_id = {{a}} OR event_id = {{b}} ORDER BY event_id\n",
    );
    let f = file.to_str().unwrap();
    let run = |params: &[&str]| {
        let mut args = vec!["query", "--format", "csv", "--file", f];
        for p in params {
            args.extend_from_slice(&["--param", p]);
        }
        env.ok(&args)
    };
    // `a` brings in `{{b}}`: bound as text, never as the placeholder (which would open `b`'s
    // value as SQL: `'' OR event_id <> ''` matches every row)
    assert_eq!(run(&["a={{b}}", "b= OR event_id <> "]), "event_id\n");
    assert_eq!(run(&["a=o'brien", "b=x' OR '1'='1"]), "event_id\n");
    assert_eq!(run(&["a=evt-61-3", "b={{a}}"]), "event_id\nevt-61-3\n");
}

#[test]
fn a_statement_may_compute_only_so_many_blind_indexes() {
    let env = small_store();
    let sql = |n: u32| {
        format!(
            "SELECT count(DISTINCT blind_index('tenant-0', CAST(value AS VARCHAR))) AS n FROM generate_series(1, {n})"
        )
    };
    let gate = ["query", "--format", "csv", "--decrypt", "--case", "C-2"];
    let mut args = gate.to_vec();
    let s100 = sql(100);
    args.push(&s100);
    assert_eq!(env.ok(&args), "n\n100\n");
    let last = env.ok(&["audit", "list", "--format", "ndjson"]);
    let last: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    let details: serde_json::Value =
        serde_json::from_str(last["details"].as_str().unwrap()).unwrap();
    assert_eq!(details["blind_indexes"], 100);
    let mut args = gate.to_vec();
    let s101 = sql(101);
    args.push(&s101);
    failed_with(&env.run(&args), "more than 100 blind indexes");
    // the cap counts distinct addresses: one address over many rows and files is one
    let mut args = gate.to_vec();
    let one = "SELECT count(*) AS n FROM events WHERE array_has(address_hmacs, blind_index(tenant_id, 'nobody@example.net'))";
    args.push(one);
    assert_eq!(env.ok(&args), "n\n0\n");
}

#[test]
fn empty_results_keep_their_columns() {
    let env = small_store();
    let sql = "SELECT event_id, occurred_at FROM events WHERE event_id = 'none'";
    assert_eq!(
        env.ok(&["query", "--format", "csv", sql]),
        "event_id,occurred_at\n"
    );
    let table = env.ok(&["query", "--format", "table", sql]);
    assert!(
        table.contains("event_id") && table.contains("occurred_at"),
        "{table}"
    );
    assert!(
        table.trim_end().ends_with("0 rows") && !table.contains("++"),
        "{table}"
    );
    assert_eq!(env.ok(&["query", "--format", "json", sql]), "[]\n");
    let out = env.dir.path().join("empty.parquet");
    env.ok(&[
        "query",
        "--format",
        "parquet",
        "-o",
        out.to_str().unwrap(),
        sql,
    ]);
    let r = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&out).unwrap())
        .unwrap();
    let md = parquet::file::reader::FileReader::metadata(&r).file_metadata();
    assert_eq!(md.num_rows(), 0);
    let cols: Vec<&str> = md
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(cols, ["event_id", "occurred_at"]);
}

#[test]
fn the_sql_shell_cuts_statements_with_the_tokenizer_and_fails_when_one_failed() {
    use std::io::Write;
    let env = small_store();
    let run = |script: &str| {
        let mut child = env
            .cmd(&["sql", "--format", "csv"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(
        "SELECT 'a;b' AS x; -- a comment; with a semicolon\nSELECT \"event_id\" AS y FROM events WHERE event_id = 'evt-61-1' /* ; */;\nSELECT 2 AS z",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "x\na;b\ny\nevt-61-1\nz\n2\n");
    let out = run("SELECT 1 AS a;\nSELECT nope FROM events;\nSELECT 3 AS c;\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a\n1\nc\n3\n",
        "the others still ran"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 3 statement(s) failed"));
    let out = run("SELECT 1 AS a;\nSELECT 'unterminated;\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing runs from a script that cannot be cut"
    );
}
