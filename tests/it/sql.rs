//! Golden tests of the named queries in sql/: each file's `-- test:` parameters run against a
//! store built by the local pipeline with a pinned clock; the CSV must match
//! `sql/tests/<name>.csv` (`HOLDFAST_BLESS=1` rewrites them). Each file is its own test case
//! (one `golden!` line each); a file without one fails `every_named_query_has_a_test_case`.

use crate::common;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

fn sql_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().unwrap() != "tests" {
            sql_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "sql") {
            out.push(p);
        }
    }
}

/// The store every golden query runs against (built once by the local pipeline at a pinned
/// clock); the lock runs the queries one at a time, as the audit trail records each.
struct Golden {
    _dir: tempfile::TempDir,
    store: PathBuf,
    keyring: PathBuf,
    lock: Mutex<()>,
}

impl Golden {
    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(common::bin())
            .args(args)
            .env("HOLDFAST_STORE", &self.store)
            .env("HOLDFAST_KEYRING", &self.keyring)
            .env("HOLDFAST_NOW", "2026-01-01T00:00:00Z")
            .current_dir(common::repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn golden_store() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let g = Golden {
            store: dir.path().join("store"),
            keyring: dir.path().join("keyring.json"),
            _dir: dir,
            lock: Mutex::new(()),
        };
        g.run(&["run", "pipelines/local.toml"]);
        g
    })
}

/// One test case per named query: `golden!(test_name, "dir/file.sql")`.
macro_rules! golden {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check(Path::new($file));
            }
        )*
        /// The files that have a test case, relative to sql/.
        const CASES: &[&str] = &[$($file),*];
    };
}

golden! {
    by_agent => "discovery/by_agent.sql",
    by_customer_address => "discovery/by_customer_address.sql",
    by_interaction_id => "discovery/by_interaction_id.sql",
    by_queue => "discovery/by_queue.sql",
    daily_volume => "reports/daily_volume.sql",
    files_due_for_expiry => "retention/files_due_for_expiry.sql",
    sweep_candidates => "retention/sweep_candidates.sql",
}

/// Every .sql file under sql/ has its test case, and every golden CSV its query.
#[test]
fn every_named_query_has_a_test_case() {
    let root = common::repo().join("sql");
    let mut files = Vec::new();
    sql_files(&root, &mut files);
    let mut found: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&root).unwrap().to_string_lossy().to_string())
        .collect();
    found.sort();
    let mut cases: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    cases.sort();
    assert_eq!(found, cases, "add a golden! line for each query in sql/");
    let mut csvs: Vec<String> = std::fs::read_dir(root.join("tests"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    csvs.sort();
    let mut names: Vec<String> = CASES
        .iter()
        .map(|c| {
            format!(
                "{}.csv",
                Path::new(c).file_stem().unwrap().to_string_lossy()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        csvs, names,
        "a golden CSV without its query, or a query without one"
    );
}

/// Runs `sql/<rel>` with its `-- test:` parameters and compares with its golden CSV.
fn check(rel: &Path) {
    let g = golden_store();
    let _one_at_a_time = g.lock.lock().unwrap_or_else(|e| e.into_inner());
    let root = common::repo().join("sql");
    let f = root.join(rel);
    let bless = std::env::var("HOLDFAST_BLESS").is_ok();
    let text = std::fs::read_to_string(&f).unwrap();
    let name = f.file_stem().unwrap().to_string_lossy().to_string();
    assert!(
        text.starts_with(&format!("-- name: {name}\n")),
        "{} must start with its header",
        f.display()
    );
    let test = text
        .lines()
        .find_map(|l| l.strip_prefix("-- test:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{} has no -- test: line", f.display()));
    let mut args = vec![
        "query".to_string(),
        "--format".into(),
        "csv".into(),
        "--file".into(),
        f.to_string_lossy().to_string(),
    ];
    if text.lines().any(|l| l == "-- requires: decrypt") {
        args.extend(["--decrypt", "--case", "GOLDEN-1"].map(String::from));
    }
    // name=value pairs; a value runs to the next " name=" (values may hold spaces)
    let mut pairs: Vec<String> = Vec::new();
    for tok in test.split(' ').filter(|t| !t.is_empty()) {
        match (tok.split_once('='), pairs.last_mut()) {
            (Some((k, _)), _)
                if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !k.is_empty() =>
            {
                pairs.push(tok.to_string())
            }
            (_, Some(last)) => {
                last.push(' ');
                last.push_str(tok);
            }
            _ => panic!("bad -- test: line in {}", f.display()),
        }
    }
    for kv in pairs {
        args.push("--param".into());
        args.push(kv);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    // batch ids in file names are random: normalise them
    let got: String = g
        .run(&refs)
        .split("part-")
        .enumerate()
        .map(|(i, piece)| {
            if i == 0 {
                piece.to_string()
            } else {
                format!(
                    "part-<batch>{}",
                    &piece[piece.find(".parquet").unwrap_or(0)..]
                )
            }
        })
        .collect();
    assert!(
        got.lines().count() > 1,
        "{name}: the test parameters select nothing"
    );
    let golden = root.join("tests").join(format!("{name}.csv"));
    if bless {
        std::fs::write(&golden, &got).unwrap();
    } else {
        assert_eq!(
            got,
            std::fs::read_to_string(&golden).unwrap_or_default(),
            "{name}"
        );
    }
}
