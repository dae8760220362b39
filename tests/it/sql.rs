//! Golden tests of the named queries in sql/: each file's `-- test:` parameters run against a
//! store built by the local pipeline with a pinned clock; the CSV must match
//! `sql/tests/<name>.csv` (`HOLDFAST_BLESS=1` rewrites them).

use crate::common;
use std::path::{Path, PathBuf};

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

#[test]
fn every_named_query_matches_its_golden_output() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let keyring = dir.path().join("keyring.json");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .args(args)
            .env("HOLDFAST_STORE", &store)
            .env("HOLDFAST_KEYRING", &keyring)
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
    };
    run(&["run", "pipelines/local.toml"]);
    let root = common::repo().join("sql");
    let mut files = Vec::new();
    sql_files(&root, &mut files);
    files.sort();
    assert!(files.len() >= 5);
    let bless = std::env::var("HOLDFAST_BLESS").is_ok();
    for f in files {
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
                    if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !k.is_empty() =>
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
        let got: String = run(&refs)
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
}
