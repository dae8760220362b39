//! `holdfast verify`: recomputes every committed data file's SHA-256, size and record count
//! against its manifest and walks every manifest chain, with no key. `deep` also opens every
//! record with the keyring and checks its AAD and `record_hash`.

use super::LakeError;
use super::datafile;
use super::layout;
use super::manifest::{self, Loaded};
use super::storage::Store;
use crate::crypto::kms::Kms;
use arrow::array::{Array, AsArray};
use std::collections::BTreeSet;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub partitions: usize,
    pub manifest_versions: usize,
    pub files: usize,
    pub records: u64,
    pub bytes: u64,
    pub deep_records: u64,
    pub problems: Vec<Problem>,
    /// Data files no manifest lists: left by a killed batch, invisible to queries, removed by
    /// the next batch. Reported, not a failure.
    pub orphans: Vec<String>,
    /// Files a retention rewrite took out of their partition, still stored until their
    /// storage lock runs out (the manifest history lists them). Reported, not a failure.
    pub awaiting_deletion: Vec<String>,
    /// Files retention sweeps removed, as the latest manifests' histories record them (the
    /// `removals` table in `holdfast query` has the details).
    pub removed_files: u64,
    pub removed_records: u64,
}

impl VerifyReport {
    fn problem(&mut self, object: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(Problem {
            object: object.into(),
            problem: problem.into(),
        });
    }
}

pub async fn verify(store: &Store, deep: Option<&dyn Kms>) -> Result<VerifyReport, LakeError> {
    let mut r = VerifyReport::default();
    let versions = manifest::list_versions(store).await?;
    let mut committed = BTreeSet::new();
    let mut awaiting = BTreeSet::new();
    for (p, seqs) in &versions {
        r.partitions += 1;
        let mut prev: Option<Loaded> = None;
        for (i, seq) in seqs.iter().enumerate() {
            r.manifest_versions += 1;
            let path = layout::manifest(p, *seq);
            if *seq != i as u64 + 1 {
                r.problem(
                    path.to_string(),
                    format!("version {} is missing from the chain", i + 1),
                );
            }
            let loaded = match manifest::load(store, p, *seq).await {
                Ok(l) => l,
                Err(e) => {
                    r.problem(path.to_string(), e.to_string());
                    prev = None;
                    continue;
                }
            };
            match (&prev, &loaded.manifest.previous) {
                (None, None) if *seq == 1 => {}
                (Some(pv), Some(link))
                    if link.sequence == pv.manifest.sequence && link.sha256 == pv.sha256 => {}
                (Some(pv), Some(link)) if link.sequence == pv.manifest.sequence => r.problem(
                    path.to_string(),
                    format!(
                        "names predecessor hash {} but v{} hashes to {}",
                        link.sha256, pv.manifest.sequence, pv.sha256
                    ),
                ),
                _ => r.problem(
                    path.to_string(),
                    "link to the previous version is broken".to_string(),
                ),
            }
            prev = Some(loaded);
        }
        let Some(latest) = prev else { continue };
        for gone in &latest.manifest.removed {
            r.removed_files += 1;
            r.removed_records += gone.record_count - gone.records_kept.unwrap_or(0);
            if gone.awaiting_deletion() {
                awaiting.insert(gone.path.clone());
            }
        }
        for f in &latest.manifest.files {
            committed.insert(f.path.clone());
            check_file(store, &latest, f, deep, &mut r).await;
        }
    }
    for meta in store.list(layout::LAKE).await? {
        let path = meta.location.as_ref();
        if awaiting.contains(path) {
            r.awaiting_deletion.push(path.to_string());
        } else if !committed.contains(path) {
            r.orphans.push(path.to_string());
        }
    }
    Ok(r)
}

async fn check_file(
    store: &Store,
    m: &Loaded,
    f: &manifest::DataFileEntry,
    deep: Option<&dyn Kms>,
    r: &mut VerifyReport,
) {
    r.files += 1;
    let path = object_store::path::Path::from(f.path.as_str());
    match layout::parse_data_file(&path) {
        Some((p, _)) if p == m.manifest.partition => {}
        _ => r.problem(
            &f.path,
            format!("path does not belong to partition {}", m.manifest.partition),
        ),
    }
    let bytes = match store.get_opt(&path).await {
        Ok(Some(b)) => b,
        Ok(None) => return r.problem(&f.path, "listed in the manifest but missing"),
        Err(e) => return r.problem(&f.path, e.to_string()),
    };
    r.bytes += bytes.len() as u64;
    if bytes.len() as u64 != f.size_bytes {
        r.problem(
            &f.path,
            format!(
                "size is {} bytes, manifest says {}",
                bytes.len(),
                f.size_bytes
            ),
        );
    }
    let sha = manifest::sha256_hex(&bytes);
    if sha != f.sha256 {
        r.problem(
            &f.path,
            format!("SHA-256 is {sha}, manifest says {}", f.sha256),
        );
        return;
    }
    let md = match parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&bytes) {
        Ok(md) => md,
        Err(e) => return r.problem(&f.path, format!("unreadable Parquet footer: {e}")),
    };
    let rows = md.file_metadata().num_rows() as u64;
    r.records += rows;
    if rows != f.record_count {
        r.problem(
            &f.path,
            format!("holds {rows} records, manifest says {}", f.record_count),
        );
    }
    let kv_dek = md
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == "holdfast.dek_id"))
        .and_then(|k| k.value.clone());
    if kv_dek.as_deref() != Some(f.encryption.dek_id.as_str()) {
        r.problem(
            &f.path,
            "DEK id in the file footer differs from the manifest",
        );
    }
    if let Some(kms) = deep
        && let Err(p) = deep_check(kms, f, bytes, r).await
    {
        r.problem(&f.path, p);
    }
}

async fn deep_check(
    kms: &dyn Kms,
    f: &manifest::DataFileEntry,
    bytes: bytes::Bytes,
    r: &mut VerifyReport,
) -> Result<(), String> {
    let dek = kms
        .unwrap_key(&f.encryption.dek_id, &f.encryption.wrapped_dek)
        .await
        .map_err(|e| e.to_string())?;
    let cipher = dek.cipher();
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| e.to_string())?;
    let dict = datafile::dictionary(builder.metadata().file_metadata(), &cipher)
        .map_err(|e| e.to_string())?;
    let reader = builder.build().map_err(|e| e.to_string())?;
    let mut bad = 0u64;
    let mut first_bad = None;
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let col = |n: &str| {
            batch
                .column(datafile::SCHEMA.index_of(n).expect("column"))
                .clone()
        };
        let (ev, it, tn) = (col("event_id"), col("interaction_id"), col("tenant_id"));
        let (ev, it, tn) = (
            ev.as_string::<i32>(),
            it.as_string::<i32>(),
            tn.as_string::<i32>(),
        );
        let hashes = col("record_hash");
        let hashes = hashes.as_fixed_size_binary();
        let payload = col("payload");
        let payload = payload.as_binary::<i32>();
        for i in 0..batch.num_rows() {
            let aad =
                crate::crypto::record_aad(tn.value(i), ev.value(i), it.value(i), cipher.dek_id());
            let ok = match crate::crypto::open_record(
                &cipher,
                dict.as_ref(),
                payload.value(i),
                &aad,
                &|| format!("event {}", ev.value(i)),
            ) {
                Ok(mut plain) => {
                    let same = crate::crypto::sha256(&plain).as_slice() == hashes.value(i);
                    zeroize::Zeroize::zeroize(&mut plain);
                    same
                }
                Err(_) => false,
            };
            r.deep_records += 1;
            if !ok {
                bad += 1;
                first_bad.get_or_insert_with(|| ev.value(i).to_string());
            }
        }
        let _ = payload.len();
    }
    if bad > 0 {
        return Err(format!(
            "{bad} record(s) fail authentication or record_hash (first: event {})",
            first_bad.unwrap_or_default()
        ));
    }
    Ok(())
}
