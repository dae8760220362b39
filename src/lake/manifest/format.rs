//! A manifest version as stored: `manifests/<partition>/v<20 digits>.json`, format
//! `holdfast.manifest`. Version 2 (written now) is version 1 with an optional filter of
//! interaction ids per file entry (`interactions`, see [`super::filter`]); version 1 is still
//! read (its entries have no filter). Frozen: the runtime [`Manifest`] may gain fields, these
//! layouts never do; a reader refuses another format or a version it does not know. Golden
//! files: `fixtures/formats/manifest-v1.json`, `fixtures/formats/manifest-v2.json`.

use super::filter::InteractionFilter;
use super::{DataFileEntry, FileEncryption, Manifest, PreviousVersion, RemovedFile};
use crate::crypto::kms::WrappedKeyV1;
use crate::format::FormatError;
use crate::lake::layout::{DataFilePath, Partition};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "holdfast.manifest";
const VERSIONS: &[&str] = &["1", "2"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub(crate) enum ManifestFile {
    #[serde(rename = "1")]
    V1(ManifestV1<FileV1>),
    #[serde(rename = "2")]
    V2(ManifestV1<FileV2>),
}

/// The manifest of version 1 (`F` = [`FileV1`]) and version 2 (`F` = [`FileV2`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestV1<F> {
    format: String,
    /// `year=YYYY/month=MM/day=DD/interaction_type=T`
    partition: String,
    sequence: u64,
    previous: Option<PreviousV1>,
    committed_at: DateTime<Utc>,
    batch_id: String,
    files: Vec<F>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removed: Vec<RemovedV1>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviousV1 {
    sequence: u64,
    sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileV1 {
    path: DataFilePath,
    sha256: String,
    size_bytes: u64,
    record_count: u64,
    min_occurred_at: DateTime<Utc>,
    max_occurred_at: DateTime<Utc>,
    earliest_expiry: DateTime<Utc>,
    latest_expiry: DateTime<Utc>,
    tenant_ids: Vec<String>,
    policy_ids: Vec<String>,
    encryption: EncryptionV1,
    batch_id: String,
    added_at: DateTime<Utc>,
}

/// A file entry of version 2: version 1's fields and the file's filter of interaction ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileV2 {
    path: DataFilePath,
    sha256: String,
    size_bytes: u64,
    record_count: u64,
    min_occurred_at: DateTime<Utc>,
    max_occurred_at: DateTime<Utc>,
    earliest_expiry: DateTime<Utc>,
    latest_expiry: DateTime<Utc>,
    tenant_ids: Vec<String>,
    policy_ids: Vec<String>,
    encryption: EncryptionV1,
    batch_id: String,
    added_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interactions: Option<FilterV2>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterV2 {
    /// [`super::filter::SCHEME`]
    scheme: String,
    probes: u32,
    /// The bits, base64 (little-endian 64-bit words; a power of two of them).
    bits: String,
}

impl FileV2 {
    fn of(f: FileV1, filter: Option<&InteractionFilter>) -> Self {
        FileV2 {
            path: f.path,
            sha256: f.sha256,
            size_bytes: f.size_bytes,
            record_count: f.record_count,
            min_occurred_at: f.min_occurred_at,
            max_occurred_at: f.max_occurred_at,
            earliest_expiry: f.earliest_expiry,
            latest_expiry: f.latest_expiry,
            tenant_ids: f.tenant_ids,
            policy_ids: f.policy_ids,
            encryption: f.encryption,
            batch_id: f.batch_id,
            added_at: f.added_at,
            interactions: filter.map(|i| FilterV2 {
                scheme: super::filter::SCHEME.into(),
                probes: i.probes,
                bits: B64.encode(i.to_bytes()),
            }),
        }
    }

    fn split(self) -> Result<(FileV1, Option<InteractionFilter>), FormatError> {
        let filter = match self.interactions {
            None => None,
            Some(f) => Some(
                B64.decode(&f.bits)
                    .ok()
                    .filter(|_| f.scheme == super::filter::SCHEME)
                    .and_then(|b| InteractionFilter::from_bytes(f.probes, &b))
                    .ok_or_else(|| FormatError::Invalid {
                        format: FORMAT,
                        version: "2".into(),
                        detail: format!("{}: not a {} filter", self.path, super::filter::SCHEME),
                    })?,
            ),
        };
        let v1 = FileV1 {
            path: self.path,
            sha256: self.sha256,
            size_bytes: self.size_bytes,
            record_count: self.record_count,
            min_occurred_at: self.min_occurred_at,
            max_occurred_at: self.max_occurred_at,
            earliest_expiry: self.earliest_expiry,
            latest_expiry: self.latest_expiry,
            tenant_ids: self.tenant_ids,
            policy_ids: self.policy_ids,
            encryption: self.encryption,
            batch_id: self.batch_id,
            added_at: self.added_at,
        };
        Ok((v1, filter))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionV1 {
    algorithm: String,
    compression: String,
    aad: String,
    dek_id: String,
    wrapped_dek: WrappedKeyV1,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovedV1 {
    path: DataFilePath,
    sha256: String,
    record_count: u64,
    latest_expiry: DateTime<Utc>,
    removed_at: DateTime<Utc>,
    sweep_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaced_by: Option<DataFilePath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    records_kept: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_at: Option<DateTime<Utc>>,
}

/// A runtime path that is not a data file's is not written.
fn data_path(s: &str) -> Result<DataFilePath, String> {
    DataFilePath::parse_str(s).ok_or_else(|| format!("{s:?} is not a data file path"))
}

/// The stored bytes (version 2); refuses an entry whose path is not a data file's.
pub(crate) fn encode(m: &Manifest) -> Result<Vec<u8>, String> {
    let v2 = ManifestV1::of(m)?.map_files(|files| {
        Ok::<_, String>(
            files
                .into_iter()
                .zip(&m.files)
                .map(|(f, e)| FileV2::of(f, e.interactions.as_ref()))
                .collect(),
        )
    })?;
    Ok(crate::format::encode(&ManifestFile::V2(v2)))
}

/// Test support: the stored bytes of version 1 (no filters), as holdfast wrote them before.
#[cfg(test)]
pub(crate) fn encode_v1(m: &Manifest) -> Result<Vec<u8>, String> {
    Ok(crate::format::encode(&ManifestFile::V1(ManifestV1::of(m)?)))
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
    match crate::format::decode(bytes, FORMAT, VERSIONS)? {
        ManifestFile::V1(v) => v.into_manifest(),
        ManifestFile::V2(v) => {
            let mut filters = Vec::with_capacity(v.files.len());
            let v1 = v.map_files(|files| {
                files
                    .into_iter()
                    .map(|f| {
                        let (f, filter) = f.split()?;
                        filters.push(filter);
                        Ok(f)
                    })
                    .collect::<Result<Vec<_>, FormatError>>()
            })?;
            let mut m = v1.into_manifest_as("2")?;
            for (e, filter) in m.files.iter_mut().zip(filters) {
                e.interactions = filter;
            }
            Ok(m)
        }
    }
}

impl<F> ManifestV1<F> {
    /// The same manifest with its file entries converted.
    fn map_files<G, E>(
        self,
        f: impl FnOnce(Vec<F>) -> Result<Vec<G>, E>,
    ) -> Result<ManifestV1<G>, E> {
        Ok(ManifestV1 {
            format: self.format,
            partition: self.partition,
            sequence: self.sequence,
            previous: self.previous,
            committed_at: self.committed_at,
            batch_id: self.batch_id,
            files: f(self.files)?,
            removed: self.removed,
        })
    }
}

impl ManifestV1<FileV1> {
    #[allow(clippy::too_many_lines)] // plain field mapping
    fn of(m: &Manifest) -> Result<Self, String> {
        let file = |f: &DataFileEntry| -> Result<FileV1, String> {
            Ok(FileV1 {
                path: data_path(&f.path)?,
                sha256: f.sha256.clone(),
                size_bytes: f.size_bytes,
                record_count: f.record_count,
                min_occurred_at: f.min_occurred_at,
                max_occurred_at: f.max_occurred_at,
                earliest_expiry: f.earliest_expiry,
                latest_expiry: f.latest_expiry,
                tenant_ids: f.tenant_ids.clone(),
                policy_ids: f.policy_ids.clone(),
                encryption: EncryptionV1 {
                    algorithm: f.encryption.algorithm.clone(),
                    compression: f.encryption.compression.clone(),
                    aad: f.encryption.aad.clone(),
                    dek_id: f.encryption.dek_id.clone(),
                    wrapped_dek: (&f.encryption.wrapped_dek).into(),
                },
                batch_id: f.batch_id.clone(),
                added_at: f.added_at,
            })
        };
        let removed = |r: &RemovedFile| -> Result<RemovedV1, String> {
            Ok(RemovedV1 {
                path: data_path(&r.path)?,
                sha256: r.sha256.clone(),
                record_count: r.record_count,
                latest_expiry: r.latest_expiry,
                removed_at: r.removed_at,
                sweep_id: r.sweep_id.clone(),
                replaced_by: r.replaced_by.as_deref().map(data_path).transpose()?,
                records_kept: r.records_kept,
                deleted_at: r.deleted_at,
            })
        };
        Ok(ManifestV1 {
            format: FORMAT.into(),
            partition: m.partition.dir(),
            sequence: m.sequence,
            previous: m.previous.as_ref().map(|p| PreviousV1 {
                sequence: p.sequence,
                sha256: p.sha256.clone(),
            }),
            committed_at: m.committed_at,
            batch_id: m.batch_id.clone(),
            files: m.files.iter().map(file).collect::<Result<_, _>>()?,
            removed: m.removed.iter().map(removed).collect::<Result<_, _>>()?,
        })
    }

    fn into_manifest(self) -> Result<Manifest, FormatError> {
        self.into_manifest_as("1")
    }

    #[allow(clippy::too_many_lines)] // plain field mapping
    fn into_manifest_as(self, version: &str) -> Result<Manifest, FormatError> {
        let partition =
            Partition::parse_dir(&self.partition).ok_or_else(|| FormatError::Invalid {
                format: FORMAT,
                version: version.into(),
                detail: format!("{:?} is not a partition", self.partition),
            })?;
        let file = |f: FileV1| DataFileEntry {
            path: f.path.to_string(),
            sha256: f.sha256,
            size_bytes: f.size_bytes,
            record_count: f.record_count,
            min_occurred_at: f.min_occurred_at,
            max_occurred_at: f.max_occurred_at,
            earliest_expiry: f.earliest_expiry,
            latest_expiry: f.latest_expiry,
            tenant_ids: f.tenant_ids,
            policy_ids: f.policy_ids,
            encryption: FileEncryption {
                algorithm: f.encryption.algorithm,
                compression: f.encryption.compression,
                aad: f.encryption.aad,
                dek_id: f.encryption.dek_id,
                wrapped_dek: f.encryption.wrapped_dek.into(),
            },
            batch_id: f.batch_id,
            added_at: f.added_at,
            interactions: None,
        };
        let removed = |r: RemovedV1| RemovedFile {
            path: r.path.to_string(),
            sha256: r.sha256,
            record_count: r.record_count,
            latest_expiry: r.latest_expiry,
            removed_at: r.removed_at,
            sweep_id: r.sweep_id,
            replaced_by: r.replaced_by.map(|p| p.to_string()),
            records_kept: r.records_kept,
            deleted_at: r.deleted_at,
        };
        Ok(Manifest {
            partition,
            sequence: self.sequence,
            previous: self.previous.map(|p| PreviousVersion {
                sequence: p.sequence,
                sha256: p.sha256,
            }),
            committed_at: self.committed_at,
            batch_id: self.batch_id,
            files: self.files.into_iter().map(file).collect(),
            removed: self.removed.into_iter().map(removed).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::kms::WrappedKey;
    use crate::format::{altered, golden, ts};
    use crate::lake::LakeError;

    const OLD: &str = "lake/year=2026/month=01/day=02/interaction_type=CALL/part-20260102T030405Z-0a1b2c3d-FINRA_4511_6Y.parquet";
    const NEW: &str = "lake/year=2026/month=01/day=02/interaction_type=CALL/part-20260301T000000Z-00000001-FINRA_4511_6Y.parquet";

    fn sample() -> Manifest {
        let file = DataFileEntry {
            path: NEW.into(),
            sha256: "01".repeat(32),
            size_bytes: 4096,
            record_count: 12,
            min_occurred_at: ts("2026-01-02T00:00:01Z"),
            max_occurred_at: ts("2026-01-02T23:59:59.999999Z"),
            earliest_expiry: ts("2032-01-02T00:00:01Z"),
            latest_expiry: ts("2032-01-03T00:00:00Z"),
            tenant_ids: vec!["tenant-1".into(), "tenant-2".into()],
            policy_ids: vec!["FINRA_4511_6Y".into()],
            encryption: FileEncryption {
                algorithm: "AES-256-GCM".into(),
                compression: "zstd".into(),
                aad: "holdfast.record.v1".into(),
                dek_id: "dek-0123".into(),
                wrapped_dek: WrappedKey {
                    kek_id: "kek-0011223344556677".into(),
                    kek_version: 1,
                    ciphertext: vec![9; 8],
                },
            },
            batch_id: "20260301T000000Z-00000001".into(),
            added_at: ts("2026-03-01T00:00:02Z"),
            interactions: None,
        };
        Manifest {
            partition: Partition::new(2026, 1, 2, "CALL").unwrap(),
            sequence: 3,
            previous: Some(PreviousVersion {
                sequence: 2,
                sha256: "02".repeat(32),
            }),
            committed_at: ts("2026-03-01T00:00:03Z"),
            batch_id: "20260301T000000Z-00000001".into(),
            files: vec![file],
            removed: vec![RemovedFile {
                path: OLD.into(),
                sha256: "03".repeat(32),
                record_count: 20,
                latest_expiry: ts("2032-01-03T00:00:00Z"),
                removed_at: ts("2026-03-01T00:00:02Z"),
                sweep_id: "20260301T000000Z-00000001".into(),
                replaced_by: Some(NEW.into()),
                records_kept: Some(12),
                deleted_at: None,
            }],
        }
    }

    #[test]
    fn version_1_is_frozen_and_still_reads() {
        let bytes = encode_v1(&sample()).unwrap();
        golden("manifest-v1.json", &bytes);
        assert_eq!(decode(&bytes).unwrap(), sample());
        assert_ne!(
            sample().to_bytes().unwrap(),
            bytes,
            "version 2 is written now"
        );
    }

    fn sample_v2() -> Manifest {
        let mut m = sample();
        let ids = ["conv-1", "conv-2"].map(super::super::filter::hash);
        m.files[0].interactions = Some(InteractionFilter::of_hashes(&ids.into()));
        m
    }

    #[test]
    fn version_2_is_frozen_and_reads_back() {
        let bytes = encode(&sample_v2()).unwrap();
        golden("manifest-v2.json", &bytes);
        assert_eq!(decode(&bytes).unwrap(), sample_v2());
        assert_eq!(sample_v2().to_bytes().unwrap(), bytes);
        let f = decode(&bytes).unwrap().files[0]
            .interactions
            .clone()
            .unwrap();
        assert!(f.may_contain("conv-1") && f.may_contain("conv-2"));
        // an entry without a filter stays without one
        assert_eq!(decode(&encode(&sample()).unwrap()).unwrap(), sample());
        // a filter of another scheme, or bits that are not a power of two of words, is refused
        let text = String::from_utf8(bytes.clone()).unwrap();
        let other = text.replace("fnv1a64-fmix64", "xxh64");
        assert!(matches!(
            decode(other.as_bytes()),
            Err(FormatError::Invalid { .. })
        ));
    }

    #[test]
    fn other_formats_versions_and_paths_are_refused() {
        let bytes = encode(&sample()).unwrap();
        let e = decode(&altered(&bytes, "version", "3")).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
        let e = decode(&altered(&bytes, "format", "holdfast.holds")).unwrap_err();
        assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
        let e = decode(&altered(&bytes, "partition", "year=2026/month=1")).unwrap_err();
        assert!(matches!(e, FormatError::Invalid { .. }), "{e}");
        // a file entry naming another kind of object is refused, on read and on write
        let text = String::from_utf8(bytes.clone())
            .unwrap()
            .replace(NEW, "head/v00000000000000000001.json");
        assert!(matches!(
            decode(text.as_bytes()),
            Err(FormatError::Invalid { .. })
        ));
        let mut m = sample();
        m.files[0].path = "_locks/x.lock.json".into();
        assert!(matches!(m.to_bytes(), Err(LakeError::Corrupt { .. })));
        // the typed error reaches the caller as Corrupt, naming the object
        let path =
            "manifests/year=2026/month=01/day=02/interaction_type=CALL/v00000000000000000003.json";
        let e = Manifest::from_bytes(&altered(&bytes, "version", "9"), path).unwrap_err();
        assert!(
            matches!(&e, LakeError::Corrupt { object, problem } if object == path
                && problem.contains("holdfast.manifest version 9 is not one this holdfast reads")),
            "{e}"
        );
    }
}
