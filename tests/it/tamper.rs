//! `verify` catches changed, missing and re-linked objects; `--deep` catches ciphertext moved
//! between rows even when the attacker also rewrote the manifest to match.

use crate::common::{self, Env};
use std::path::PathBuf;

fn two_batches() -> Env {
    let env = Env::new();
    env.ingest(&env.write("a.ndjson", &common::generate(20, 300, 0, 1).ndjson));
    env.batch();
    env.ingest(&env.write("b.ndjson", &common::generate(21, 300, 0, 1).ndjson));
    env.batch();
    assert!(env.verify().0);
    env
}

fn first(env: &Env, ext: &str, within: &str) -> PathBuf {
    env.store_files()
        .into_iter()
        .find(|p| p.to_string_lossy().contains(within) && p.extension().is_some_and(|e| e == ext))
        .unwrap()
}

/// Attackers are not stopped by file modes; neither are these tests (nor root).
fn writable(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn problems(r: &serde_json::Value) -> String {
    r["problems"].to_string()
}

#[test]
fn flipped_byte_in_a_data_file_is_named() {
    let env = two_batches();
    let f = first(&env, "parquet", "/lake/");
    writable(&f);
    let mut b = std::fs::read(&f).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x20;
    std::fs::write(&f, b).unwrap();
    let (ok, r) = env.verify();
    assert!(!ok);
    let name = f.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        problems(&r).contains(&name) && problems(&r).contains("SHA-256"),
        "{r}"
    );
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISMATCH"));
}

#[test]
fn deleted_data_file_is_named() {
    let env = two_batches();
    let f = first(&env, "parquet", "/lake/");
    std::fs::remove_file(&f).unwrap();
    let (ok, r) = env.verify();
    assert!(!ok && problems(&r).contains("missing"), "{r}");
}

#[test]
fn removed_or_altered_manifest_versions_break_the_chain() {
    let env = two_batches();
    let dir = env
        .store
        .join("manifests/year=2025/month=10/day=01/interaction_type=CALL");
    let v1 = dir.join(format!("v{:020}.json", 1));
    // altered: still valid JSON, different bytes
    let text = std::fs::read_to_string(&v1).unwrap();
    std::fs::write(&v1, text.replacen("\"batch_id\"", " \"batch_id\"", 1)).unwrap();
    let (ok, r) = env.verify();
    assert!(!ok && problems(&r).contains("predecessor hash"), "{r}");
    // removed
    std::fs::remove_file(&v1).unwrap();
    let (ok, r) = env.verify();
    assert!(
        !ok && problems(&r).contains("missing from the chain"),
        "{r}"
    );
}

#[test]
fn extra_file_is_an_orphan_not_a_commit() {
    let env = two_batches();
    let f = first(&env, "parquet", "/lake/");
    let copy = f.with_file_name("part-20990101T000000Z-deadbeef.parquet");
    std::fs::copy(&f, &copy).unwrap();
    let (ok, r) = env.verify();
    assert!(ok, "an uncommitted file does not fail verify: {r}");
    assert_eq!(r["orphans"].as_array().unwrap().len(), 1);
    let before = env.count("SELECT count(*) FROM events");
    assert_eq!(before, 600, "uncommitted files are invisible to queries");
    let rep = env.batch();
    assert_eq!(rep["orphans_removed"], 1);
    assert!(!copy.exists());
}

/// Swap the payloads of two rows, then rewrite the file and its manifest so that hashes,
/// sizes and counts all match: only the AAD binding can tell.
#[test]
fn deep_verify_catches_swapped_ciphertexts() {
    use arrow::array::{Array, AsArray, BinaryArray, RecordBatch};
    use holdfast::lake::datafile;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let env = Env::new();
    env.ingest(&env.write("a.ndjson", &common::generate(22, 200, 0, 1).ndjson));
    env.batch();
    let f = first(&env, "parquet", "/lake/");
    let bytes = bytes::Bytes::from(std::fs::read(&f).unwrap());
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let pi = batch.schema().index_of("payload").unwrap();
    let payload = batch.column(pi).as_binary::<i32>();
    assert!(payload.len() >= 2);
    let mut values: Vec<&[u8]> = (0..payload.len()).map(|i| payload.value(i)).collect();
    values.swap(0, 1);
    let mut cols = batch.columns().to_vec();
    cols[pi] = std::sync::Arc::new(BinaryArray::from(values));
    let tampered = RecordBatch::try_new(batch.schema(), cols).unwrap();
    writable(&f);
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        &mut out,
        tampered.schema(),
        Some(datafile::writer_properties(kv)),
    )
    .unwrap();
    w.write(&tampered).unwrap();
    w.close().unwrap();
    std::fs::write(&f, &out).unwrap();
    // rewrite the (only) manifest version to match the new file
    let rel = f
        .strip_prefix(&env.store)
        .unwrap()
        .to_string_lossy()
        .to_string();
    let part = rel
        .trim_start_matches("lake/")
        .rsplit_once('/')
        .unwrap()
        .0
        .to_string();
    let m = env
        .store
        .join("manifests")
        .join(&part)
        .join(format!("v{:020}.json", 1));
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    for file in doc["files"].as_array_mut().unwrap() {
        if file["path"] == rel.as_str() {
            file["sha256"] = serde_json::json!(holdfast::lake::manifest::sha256_hex(&out));
            file["size_bytes"] = serde_json::json!(out.len());
        }
    }
    std::fs::write(&m, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let (ok, r) = env.verify();
    assert!(ok, "shallow verify cannot see it: {r}");
    let out = env.run(&["verify", "--deep", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        problems(&r).contains("2 record(s) fail authentication"),
        "{r}"
    );
}

/// The storage layer refuses to delete a committed data file before its records expire, even
/// when the manifests that describe it are gone.
#[test]
fn storage_refuses_deleting_a_locked_file_without_manifests() {
    let env = two_batches();
    let f = first(&env, "parquet", "/lake/");
    std::fs::remove_dir_all(env.store.join("manifests")).unwrap();
    let store = holdfast::lake::storage::Store::open_local(&env.store, false).unwrap();
    let rel = object_store::path::Path::from(f.strip_prefix(&env.store).unwrap().to_str().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lock = rt.block_on(store.lock(&rel)).unwrap();
    let until = lock.retain_until.expect("locked at commit");
    assert!(
        until.to_rfc3339().starts_with("2031-10-"),
        "six years after 2025-10: {until}"
    );
    let now = chrono::DateTime::parse_from_rfc3339("2031-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let err = rt.block_on(store.delete_checked(&rel, now)).unwrap_err();
    assert!(err.to_string().starts_with("ObjectLocked"), "{err}");
    assert!(f.exists());
    let later = until + chrono::Duration::seconds(1);
    rt.block_on(store.delete_checked(&rel, later)).unwrap();
    assert!(!f.exists());
}
