//! A manifest version as stored: `manifests/<partition>/v<20 digits>.json`, format
//! `holdfast.manifest`. Version 2 is version 1 with an optional filter of interaction ids per
//! file entry (`interactions`, see [`super::filter`]); version 3 is version 2 with an optional
//! object version per file entry (`object_version`: the S3 version readers fetch). A store
//! writes version 3 when a file has an object version (S3), else version 2 (local: the same
//! bytes as before); versions 1 and 2 are still read. Frozen: the runtime [`Manifest`] may
//! gain fields, these layouts never do; a reader refuses another format or a version it does
//! not know. Golden files: `fixtures/formats/manifest-v1.json`, `manifest-v2.json`,
//! `manifest-v3.json`.

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
const VERSIONS: &[&str] = &["1", "2", "3"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub(crate) enum ManifestFile {
    #[serde(rename = "1")]
    V1(ManifestV1<FileV1>),
    #[serde(rename = "2")]
    V2(ManifestV1<FileV2>),
    #[serde(rename = "3")]
    V3(ManifestV1<FileV3>),
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

/// A file entry of version 3: version 2's fields and the object version readers fetch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileV3 {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object_version: Option<String>,
}

impl FileV3 {
    #[allow(clippy::too_many_lines)] // plain field mapping
    fn of(f: FileV2, object_version: Option<String>) -> Self {
        FileV3 {
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
            interactions: f.interactions,
            object_version,
        }
    }

    fn split(self) -> (FileV2, Option<String>) {
        let v2 = FileV2 {
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
            interactions: self.interactions,
        };
        (v2, self.object_version)
    }
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

/// The stored bytes (version 3 when a file has an object version, else 2); refuses an entry
/// whose path is not a data file's.
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
    if m.files.iter().all(|f| f.object_version.is_none()) {
        return Ok(crate::format::encode(&ManifestFile::V2(v2)));
    }
    let v3 = v2.map_files(|files| {
        Ok::<_, String>(
            files
                .into_iter()
                .zip(&m.files)
                .map(|(f, e)| FileV3::of(f, e.object_version.clone()))
                .collect(),
        )
    })?;
    Ok(crate::format::encode(&ManifestFile::V3(v3)))
}

/// Test support: the stored bytes of version 1 (no filters), as holdfast wrote them before.
#[cfg(test)]
pub(crate) fn encode_v1(m: &Manifest) -> Result<Vec<u8>, String> {
    Ok(crate::format::encode(&ManifestFile::V1(ManifestV1::of(m)?)))
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
    match crate::format::decode(bytes, FORMAT, VERSIONS)? {
        ManifestFile::V1(v) => v.into_manifest(),
        ManifestFile::V2(v) => decode_v2(v, "2"),
        ManifestFile::V3(v) => {
            let mut versions = Vec::with_capacity(v.files.len());
            let v2 = v.map_files(|files| {
                Ok::<_, FormatError>(
                    files
                        .into_iter()
                        .map(|f| {
                            let (f, version) = f.split();
                            versions.push(version);
                            f
                        })
                        .collect(),
                )
            })?;
            let mut m = decode_v2(v2, "3")?;
            for (e, version) in m.files.iter_mut().zip(versions) {
                e.object_version = version;
            }
            Ok(m)
        }
    }
}

/// A manifest of version 2 (or 3, less its object versions) as read.
fn decode_v2(v: ManifestV1<FileV2>, version: &str) -> Result<Manifest, FormatError> {
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
    let mut m = v1.into_manifest_as(version)?;
    for (e, filter) in m.files.iter_mut().zip(filters) {
        e.interactions = filter;
    }
    Ok(m)
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
            object_version: None,
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
mod tests;
