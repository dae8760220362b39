//! `--store` takes a path or a URL: `file:///abs/path` is the same store as its path,
//! `memory://name` runs a whole pipeline in memory, and other schemes are usage errors.

use crate::common::{self, Env};

#[test]
fn a_file_url_names_the_same_store_as_its_path() {
    let env = Env::new();
    env.ingest(&env.write("e.ndjson", &common::generate(60, 30, 0, 1).ndjson));
    let url = format!("file://{}", env.store.canonicalize().unwrap().display());
    let out = env
        .cmd(&["batch", "--format", "json"])
        .env("HOLDFAST_STORE", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["stored"], 30, "{r}");
    assert_eq!(
        env.count("SELECT count(*) FROM events"),
        30,
        "read back through the path"
    );
}

#[test]
fn a_pipeline_runs_on_a_memory_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bin())
        .args([
            "run",
            "pipelines/local.toml",
            "--format",
            "json",
            "--store",
            "memory://demo",
        ])
        .env("HOLDFAST_KEYRING", dir.path().join("keyring.json"))
        .env_remove("HOLDFAST_STORE")
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["init"], true, "{doc}");
    assert_eq!(
        doc["batch"]["stored"], 610,
        "the same as on a directory: {doc}"
    );
    assert!(!common::repo().join("demo").exists(), "nothing on disk");
}

#[test]
fn an_unknown_scheme_is_a_usage_error() {
    let env = Env::new();
    for url in ["gs://bucket/store", "ftp://host/x", "memory://"] {
        let out = env
            .cmd(&["verify"])
            .env("HOLDFAST_STORE", url)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(url), "{url}: {err}");
    }
    // an S3 store that cannot be reached says why (here: no region), and is no usage error
    let out = env
        .cmd(&["verify"])
        .env("HOLDFAST_STORE", "s3://holdfast-nowhere/store")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no AWS region") && err.contains("s3://holdfast-nowhere/store"),
        "{err}"
    );
    // a store that does not exist yet: usage error too, as for a missing directory
    let out = env
        .cmd(&["batch"])
        .env("HOLDFAST_STORE", "memory://nothing")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("memory://nothing is not a holdfast store")
    );
}
