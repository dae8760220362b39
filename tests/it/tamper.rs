//! `verify` catches changed, missing and re-linked objects, rollbacks and truncations against
//! the signed store head, missing lock records and planted files; `--deep` catches ciphertext
//! moved between rows and rewritten index columns even when whoever holds the keyring rewrote
//! the manifest and re-signed the head to match.
//! The tests listed in `on_both_backends!` make the same change on a local store and on S3
//! (there, a change to a data file is a new version or a delete marker: Object Lock keeps the
//! committed one, and verify names what was done). The others rewrite a locked data file in
//! place, re-sign the head in this process, or remove `_locks/` records: on S3 the first is
//! refused by the provider (tests/it/s3.rs) and the last do not exist.

use crate::common::{self, Backend, Env};
use std::path::PathBuf;

common::on_both_backends!(
    flipped_byte_in_a_data_file_is_named,
    deleted_data_file_is_named,
    removed_or_altered_manifest_versions_break_the_chain,
    a_planted_file_fails_verify_and_the_next_batch_leaves_it,
    deleting_the_newest_manifest_version_is_a_rollback,
    emptying_the_newest_manifest_version_fails,
    removing_every_manifest_fails,
    truncating_the_audit_trail_fails,
    replacing_the_hold_registry_fails,
    a_published_anchor_catches_a_rolled_back_head,
);

fn two_batches_on(backend: Backend) -> Env {
    let env = Env::on(backend);
    env.ingest(&env.write("a.ndjson", &common::generate(20, 300, 0, 1).ndjson));
    env.batch();
    env.ingest(&env.write("b.ndjson", &common::generate(21, 300, 0, 1).ndjson));
    env.batch();
    assert!(env.verify().0);
    env
}

fn two_batches() -> Env {
    two_batches_on(Backend::Local)
}

/// The store-relative path of the first file under `within` whose name ends in `ext`.
fn first_key(env: &Env, ext: &str, within: &str) -> String {
    env.keys(within)
        .into_iter()
        .find(|k| k.ends_with(&format!(".{ext}")))
        .unwrap()
}

/// The newest (last in name order) file under `within`.
fn newest_key(env: &Env, within: &str) -> String {
    env.keys(within).pop().unwrap()
}

const CALL_MANIFESTS: &str = "manifests/year=2025/month=10/day=01/interaction_type=CALL/";

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

/// On disk the changed bytes fail the manifest's hash; on S3 the change is a new version,
/// which readers ignore (they fetch the pinned one) and verify names.
fn flipped_byte_in_a_data_file_is_named(backend: Backend) {
    let env = two_batches_on(backend);
    let f = first_key(&env, "parquet", "lake/");
    let mut b = env.read_file(&f);
    let i = b.len() / 2;
    b[i] ^= 0x20;
    env.tamper_write(&f, &b);
    let (ok, r) = env.verify();
    assert!(!ok);
    let name = f.rsplit('/').next().unwrap();
    let why = match backend {
        Backend::Local => "SHA-256",
        Backend::S3 => "written over the committed version",
    };
    assert!(
        problems(&r).contains(name) && problems(&r).contains(why),
        "{r}"
    );
    assert_eq!(env.count("SELECT count(*) FROM events"), 600);
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISMATCH"));
}

/// On S3 Object Lock keeps the version and the removal leaves a delete marker over it, which
/// verify names.
fn deleted_data_file_is_named(backend: Backend) {
    let env = two_batches_on(backend);
    let f = first_key(&env, "parquet", "lake/");
    env.tamper_remove(&f);
    let (ok, r) = env.verify();
    let why = match backend {
        Backend::Local => "missing",
        Backend::S3 => "delete marker",
    };
    assert!(!ok && problems(&r).contains(why), "{r}");
    if backend == Backend::S3 {
        assert_eq!(env.count("SELECT count(*) FROM events"), 600);
    }
}

fn removed_or_altered_manifest_versions_break_the_chain(backend: Backend) {
    let env = two_batches_on(backend);
    let v1 = format!("{CALL_MANIFESTS}v{:020}.json", 1);
    // altered: still valid JSON, different bytes
    let text = String::from_utf8(env.read_file(&v1)).unwrap();
    env.tamper_write(
        &v1,
        text.replacen("\"batch_id\"", " \"batch_id\"", 1).as_bytes(),
    );
    let (ok, r) = env.verify();
    assert!(!ok && problems(&r).contains("predecessor hash"), "{r}");
    // removed
    env.tamper_remove(&v1);
    let (ok, r) = env.verify();
    assert!(
        !ok && problems(&r).contains("missing from the chain"),
        "{r}"
    );
}

/// A data file no manifest lists and no interrupted batch wrote is a problem, and no batch
/// deletes it (only an interrupted job's recorded leftovers are removed).
fn a_planted_file_fails_verify_and_the_next_batch_leaves_it(backend: Backend) {
    let env = two_batches_on(backend);
    let f = first_key(&env, "parquet", "lake/");
    let copy = format!(
        "{}/part-20990101T000000Z-deadbeef.parquet",
        f.rsplit_once('/').unwrap().0
    );
    env.tamper_write(&copy, &env.read_file(&f));
    let (ok, r) = env.verify();
    assert!(!ok, "an unlisted file fails verify: {r}");
    assert_eq!(r["orphans"].as_array().unwrap().len(), 1);
    assert!(
        problems(&r).contains("part-20990101T000000Z-deadbeef"),
        "{r}"
    );
    let before = env.count("SELECT count(*) FROM events");
    assert_eq!(before, 600, "uncommitted files are invisible to queries");
    let rep = env.batch();
    assert_eq!(rep["leftovers_removed"], 0);
    assert!(
        env.exists(&copy),
        "only recorded leftovers of an interrupted batch are removed"
    );
    assert!(!env.verify().0);
}

fn manifest_dir(env: &Env) -> PathBuf {
    env.store
        .join("manifests/year=2025/month=10/day=01/interaction_type=CALL")
}

fn newest_in(dir: &std::path::Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.pop().unwrap()
}

/// verify's exit code and its problems as text.
fn failed(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let mut a = vec!["verify", "--format", "json"];
    a.extend_from_slice(args);
    let out = env.run(&a);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn deleting_the_newest_manifest_version_is_a_rollback(backend: Backend) {
    let env = two_batches_on(backend);
    let v2 = newest_key(&env, CALL_MANIFESTS);
    assert!(v2.ends_with(&format!("v{:020}.json", 2)));
    env.tamper_remove(&v2);
    let (code, out) = failed(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("interaction_type=CALL") && out.contains("rolled back"),
        "{out}"
    );
    // and no batch builds on it
    env.ingest(&env.write("c.ndjson", &common::generate(23, 30, 0, 1).ndjson));
    let b = env.run(&["batch"]);
    assert_eq!(b.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&b.stderr).contains("signed head"));
    // nor a sweep
    let sw = env.run_at("2040-01-01T00:00:00Z", &["sweep"]);
    assert_eq!(sw.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&sw.stderr).contains("signed head"));
}

fn emptying_the_newest_manifest_version_fails(backend: Backend) {
    let env = two_batches_on(backend);
    let v2 = newest_key(&env, CALL_MANIFESTS);
    env.tamper_write(&v2, b"");
    let (code, out) = failed(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("interaction_type=CALL"), "{out}");
}

fn removing_every_manifest_fails(backend: Backend) {
    let env = two_batches_on(backend);
    env.tamper_remove("manifests/");
    let (code, out) = failed(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("has no manifests"), "{out}");
    let text = String::from_utf8_lossy(&env.run(&["verify"]).stdout).to_string();
    assert!(
        text.contains("verified 0 partition(s)") && text.contains("FAILED"),
        "{text}"
    );
}

fn truncating_the_audit_trail_fails(backend: Backend) {
    let env = two_batches_on(backend);
    let last = newest_key(&env, "audit/");
    env.tamper_remove(&last);
    let (code, out) = failed(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("truncated"), "{out}");
}

fn replacing_the_hold_registry_fails(backend: Backend) {
    let env = two_batches_on(backend);
    let body = r#"{"holdId": "H-1", "tenantId": "tenant-0", "scope": {"queueIds": ["q-1"]}}"#;
    let h = env.write("h.json", body.as_bytes());
    env.ok(&["hold", "apply", "--file", h.to_str().unwrap()]);
    assert!(env.verify().0);
    let newest = newest_key(&env, "holds/");
    let mut doc: serde_json::Value = serde_json::from_slice(&env.read_file(&newest)).unwrap();
    doc["holds"][0]["files"] = serde_json::json!([]);
    env.tamper_write(&newest, &serde_json::to_vec_pretty(&doc).unwrap());
    let (code, out) = failed(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("hold registry"), "{out}");
}

#[test]
fn deleting_a_lock_record_fails() {
    let env = two_batches();
    let lock = first(&env, "json", "/_locks/");
    std::fs::remove_file(&lock).unwrap();
    let (code, out) = failed(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("lock record is missing"), "{out}");
}

/// The anchor line names the newest head; a later chain extends it; a chain rolled back
/// below it (its newest head deleted) fails against it.
fn a_published_anchor_catches_a_rolled_back_head(backend: Backend) {
    let env = two_batches_on(backend);
    let line = env.ok(&["anchor"]).trim().to_string();
    assert!(
        line.starts_with("holdfast-anchor v1 head=") && line.contains(" key=ed25519:"),
        "{line}"
    );
    env.ok(&["verify", "--anchor", &line]);
    env.ingest(&env.write("c.ndjson", &common::generate(23, 30, 0, 1).ndjson));
    env.batch();
    env.ok(&["verify", "--anchor", &line]);
    let later = env.ok(&["anchor"]).trim().to_string();
    assert_ne!(later, line);
    env.tamper_remove(&newest_key(&env, "head/"));
    let (code, out) = failed(&env, &["--anchor", &later]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("published anchor"), "{out}");
    let bad = env.run(&["verify", "--anchor", "holdfast-anchor v1 head=x"]);
    assert_eq!(bad.status.code(), Some(2));
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Rewrites the newest head with `edit` and signs it with `kms`, as whoever holds a keyring
/// could, and writes the table log again to match (it is derived data anyone can rebuild).
fn resign_head(
    env: &Env,
    kms: &dyn holdfast::crypto::kms::Kms,
    edit: impl FnOnce(&mut holdfast::head::Head),
) {
    let store =
        holdfast::storage::Store::open(&holdfast::storage::StoreUrl::local(&env.store), false)
            .unwrap();
    let rt = rt();
    let mut newest = rt
        .block_on(holdfast::head::newest(&store))
        .unwrap()
        .unwrap()
        .head;
    edit(&mut newest);
    rt.block_on(newest.sign(kms)).unwrap();
    let path = env
        .store
        .join("head")
        .join(format!("v{:020}.json", newest.sequence));
    std::fs::write(path, newest.to_bytes()).unwrap();
    rt.block_on(holdfast::lake::table::rebuild(&store)).unwrap();
}

#[test]
fn a_head_signed_by_another_key_fails() {
    let env = two_batches();
    let other = holdfast::crypto::kms::LocalKeyring::create(
        &env.dir.path().join("other.json"),
        "2026-01-01T00:00:00Z",
    )
    .unwrap();
    resign_head(&env, &other, |_| {});
    let (code, out) = failed(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("keyring's signing key"), "{out}");
    // without the keyring, the chain's own key still tells
    let out = env
        .cmd(&["verify", "--format", "json"])
        .env("HOLDFAST_KEYRING", env.dir.path().join("absent.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("but the chain is signed by"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The keyring's holder rewrites a manifest's `tenant_ids` (hiding a tenant from its holds)
/// and re-signs the head to match: the metadata check still names the file.
#[test]
fn rewritten_tenant_ids_in_a_manifest_fail_verify() {
    let env = two_batches();
    let v2 = newest_in(&manifest_dir(&env));
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&v2).unwrap()).unwrap();
    let path = doc["files"][0]["path"].as_str().unwrap().to_string();
    doc["files"][0]["tenant_ids"] = serde_json::json!(["tenant-1"]);
    let bytes = serde_json::to_vec_pretty(&doc).unwrap();
    std::fs::write(&v2, &bytes).unwrap();
    let ring = holdfast::crypto::kms::LocalKeyring::load(&env.keyring).unwrap();
    let sha = holdfast::lake::manifest::sha256_hex(&bytes);
    resign_head(&env, &ring, |h| {
        for (p, pos) in h.partitions.iter_mut() {
            if p.interaction_type == "CALL" && pos.sequence == 2 {
                pos.sha256 = sha.clone();
            }
        }
    });
    let (code, out) = failed(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let probs = r["problems"].as_array().unwrap();
    assert!(
        !probs.is_empty() && probs.iter().all(|p| p["object"] == path.as_str()),
        "only the metadata check fails: {out}"
    );
    assert!(problems(&r).contains("tenant_ids"), "{out}");
}

/// Rewrites the first data file of a one-batch store with `edit` applied to its rows, then
/// its manifest (hash and size) and the signed head to match, as whoever holds the keyring
/// could; returns the file's path. Shallow verify sees nothing afterwards.
fn rewrite_first_file(
    seed: u64,
    edit: impl FnOnce(&arrow::array::RecordBatch) -> arrow::array::RecordBatch,
) -> (Env, String) {
    use arrow::array::RecordBatch;
    use holdfast::lake::datafile;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let env = Env::new();
    env.ingest(&env.write("a.ndjson", &common::generate(seed, 200, 0, 1).ndjson));
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
    let tampered = edit(&batch);
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
    let mbytes = serde_json::to_vec_pretty(&doc).unwrap();
    std::fs::write(&m, &mbytes).unwrap();
    let (ok, r) = env.verify();
    assert!(
        !ok && problems(&r).contains("head records"),
        "the signed head sees the rewritten manifest: {r}"
    );
    let ring = holdfast::crypto::kms::LocalKeyring::load(&env.keyring).unwrap();
    let sha = holdfast::lake::manifest::sha256_hex(&mbytes);
    resign_head(&env, &ring, |h| {
        for (p, pos) in h.partitions.iter_mut() {
            if p.dir() == part {
                pos.sha256 = sha.clone();
            }
        }
    });
    let (ok, r) = env.verify();
    assert!(ok, "shallow verify cannot see it: {r}");
    (env, rel)
}

/// Swap the payloads of two rows that carry a sealed group each (data file format 3: a
/// group's first row carries it, and every row names its group), then rewrite the file and its
/// manifest so that hashes, sizes and counts all match: only the binding of each record to
/// its row (the group's AAD and the member tags) can tell. Each of the two rows now names the
/// other's group, which has no member with its ids.
#[test]
fn deep_verify_catches_swapped_ciphertexts() {
    use arrow::array::{Array, AsArray, BinaryArray, RecordBatch};
    let (env, _) = rewrite_first_file(22, |batch| {
        let pi = batch.schema().index_of("payload").unwrap();
        let payload = batch.column(pi).as_binary::<i32>();
        let mut values: Vec<&[u8]> = (0..payload.len()).map(|i| payload.value(i)).collect();
        let carriers: Vec<usize> = (0..values.len()).filter(|&i| values[i].len() > 5).collect();
        assert!(carriers.len() >= 2, "{} groups", carriers.len());
        values.swap(carriers[0], carriers[1]);
        let mut cols = batch.columns().to_vec();
        cols[pi] = std::sync::Arc::new(BinaryArray::from(values));
        RecordBatch::try_new(batch.schema(), cols).unwrap()
    });
    let out = env.run(&["verify", "--deep", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        problems(&r).contains("2 record(s) fail authentication"),
        "{r}"
    );
}

/// Rewrite `agent_ids` of one row (a hold by agent would then miss it): the record still
/// authenticates, but `--deep` recomputes the index columns from it and names the file.
#[test]
fn deep_verify_recomputes_rewritten_agent_ids() {
    use arrow::array::{ListBuilder, RecordBatch, StringBuilder};
    let (env, path) = rewrite_first_file(24, |batch| {
        let ai = batch.schema().index_of("agent_ids").unwrap();
        let field = match batch.schema().field(ai).data_type() {
            arrow::datatypes::DataType::List(f) => f.clone(),
            _ => unreachable!(),
        };
        let old = batch.column(ai).clone();
        let old = arrow::array::AsArray::as_list::<i32>(&old);
        let mut b = ListBuilder::new(StringBuilder::new()).with_field(field);
        for i in 0..batch.num_rows() {
            if i == 0 {
                b.values().append_value("agent-nobody@cc.example");
            } else {
                let v = old.value(i);
                for a in arrow::array::AsArray::as_string::<i32>(&v).iter().flatten() {
                    b.values().append_value(a);
                }
            }
            b.append(true);
        }
        let mut cols = batch.columns().to_vec();
        cols[ai] = std::sync::Arc::new(b.finish());
        RecordBatch::try_new(batch.schema(), cols).unwrap()
    });
    let out = env.run(&["verify", "--deep", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probs = r["problems"].as_array().unwrap();
    assert!(
        probs.iter().any(|p| p["object"] == path.as_str()
            && p["problem"]
                .as_str()
                .unwrap()
                .contains("1 record(s) whose index columns differ")
            && p["problem"].as_str().unwrap().contains("agent_ids")),
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
    let store =
        holdfast::storage::Store::open(&holdfast::storage::StoreUrl::local(&env.store), false)
            .unwrap();
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
