//! Exit codes: 0 for success, 2 only for a command line that is wrong (clap's errors, a bad
//! flag value), 1 for every runtime failure; conflicts say whether running again helps.

use crate::common::{self, Env};

fn code(out: &std::process::Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_tell_usage_errors_from_runtime_failures() {
    let env = Env::new();
    env.ingest(&env.write("e.ndjson", &common::generate(61, 5, 0, 1).ndjson));
    let empty = env.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = env.dir.path().join("missing");
    let (empty, missing) = (empty.to_str().unwrap(), missing.to_str().unwrap());
    let table: &[(&[&str], i32)] = &[
        (&["batch"], 0),
        (&["batch", "--bogus"], 2),
        (&["verify", "--anchor", "holdfast-anchor v1 head=x"], 2),
        (&["sweep", "--now", "2100-01-01T00:00:00Z"], 2),
        (&["audit", "list", "--since", "yesterday"], 2),
        // a --store that names nothing is a usage error; a directory that is no store is not
        (&["batch", "--store", missing], 2),
        (&["batch", "--store", empty], 1),
        (&["retention", "explain", "--event", "no-such-event"], 1),
        (
            &["quarantine", "replay", "--case", "C-1", "--id", "q-nope"],
            1,
        ),
        (&["access", "approve", "--request", "R-nope"], 1),
    ];
    let mut wrong = Vec::new();
    for (args, want) in table {
        let (got, err) = code(&env.run(args));
        if got != Some(*want) {
            wrong.push(format!("{args:?}: exit {got:?}, want {want}: {err}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A store bound to another key: exit 1, and the message says a retry will not help.
#[test]
fn a_kek_mismatch_is_a_runtime_failure_no_retry_helps() {
    let a = Env::new();
    let b = Env::new();
    let out = a
        .cmd(&["batch"])
        .env("HOLDFAST_KEYRING", &b.keyring)
        .output()
        .unwrap();
    let (got, err) = code(&out);
    assert_eq!(got, Some(1), "{err}");
    assert!(err.contains("needs KEK"), "{err}");
    assert!(
        err.contains("running the command again will not help"),
        "{err}"
    );
    // init against the same store with the other keyring: the same answer
    let out = a
        .cmd(&["init"])
        .env("HOLDFAST_KEYRING", &b.keyring)
        .output()
        .unwrap();
    let (got, err) = code(&out);
    assert_eq!(got, Some(1), "{err}");
    assert!(err.contains("is bound to KEK"), "{err}");
}

/// `--format json` prints one JSON document on stdout and nothing else, for `run` too.
#[test]
fn run_format_json_prints_one_json_document() {
    let env = Env::new();
    let f = env.write("e.ndjson", &common::generate(62, 7, 0, 1).ndjson);
    let p = env.write(
        "p.toml",
        format!(
            "[[sources]]\nname = \"t\"\nformat = \"canonical\"\npaths = [{:?}]\n",
            f.to_str().unwrap()
        )
        .as_bytes(),
    );
    let store = env.store.to_str().unwrap();
    let out = env.ok(&[
        "run",
        p.to_str().unwrap(),
        "--store",
        store,
        "--format",
        "json",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["init"], false, "{doc}");
    assert_eq!(doc["ingest"].as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(doc["ingest"][0]["lines"], 7, "{doc}");
    assert_eq!(doc["batch"]["stored"], 7, "{doc}");
}
