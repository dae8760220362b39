//! Where things live in a store. The only place that formats or parses object paths: each
//! kind of object has a typed path (`DataFilePath`, `ManifestPath`, `AuditPath`, ...) with
//! `to_path()` and `parse(&Path)`; `clippy.toml` and a test keep path building out of the
//! other modules.
//!
//! ```text
//! holdfast.json                                             store marker (create-only)
//! landing/<segment-id>.seg                                  encrypted landing segments
//! landing/<segment-id>.segs                                 several, back to back (a server's group commit)
//! quarantine/<entry-id>.json                                encrypted quarantine entries
//! lake/year=YYYY/month=MM/day=DD/interaction_type=T/part-<batch-id>.parquet    data files
//! manifests/year=YYYY/month=MM/day=DD/interaction_type=T/v<20 digits>.json     manifest versions
//! failed/<segment-id>.seg[s]                               landing objects a batch could not read
//! _locks/<object>.lock.json                                 storage lock of an object
//! _leases/<name>/v<20 digits>.json                          lease versions (`batch`, `holds`)
//! .staging/                                                 writes being staged (never read)
//! access/v<20 digits>.json                                  access policy versions (create-only)
//! audit/v<20 digits>.json                                   audit trail entries (create-only chain)
//! holds/v<20 digits>.json                                   hold registry versions (create-only chain)
//! head/v<20 digits>.json                                    signed store heads (create-only chain)
//! batches/<job-id>.json                                     intent of a running batch or sweep
//! catalog/v<20 digits>.cat                                  the latest manifests as of head v<n> (create-only)
//! keys/index/v<20 digits>.json                              blind-index secret wrapped by the KMS (Transit stores)
//! keys/rewrapped/<dek-id>/v<20 digits>.json                 newer wrappings of DEKs in objects never rewritten
//! ```
//! The day is the UTC day of the event's `occurredAt`. The tenant is not in the path: each
//! data file holds the partition's records of one batch, every tenant's, under one DEK, and
//! `tenant_id` is an index column.

use chrono::{DateTime, Datelike, Utc};
use object_store::path::Path;

pub const STORE_MARKER: &str = "holdfast.json";
/// The lease a batch or a sweep holds (one at a time per store).
pub const LEASE: &str = "batch";
/// Held while a legal hold is placed or a sweep rewrites files.
pub const HOLDS_LEASE: &str = "holds";
pub const LEASES: &str = "_leases";
pub const LOCKS: &str = "_locks";
/// Landing segments moved aside because they fail authentication or do not parse.
pub const FAILED: &str = "failed";
pub const LAKE: &str = "lake";
/// The Delta Lake log of the committed set: the store's root is the table's root, and the
/// log names each data file by its path from there (`lake/…`), so `lake/` holds data files
/// alone.
pub const TABLE_LOG: &str = "_delta_log";
pub const MANIFESTS: &str = "manifests";
pub const LANDING: &str = "landing";
pub const QUARANTINE: &str = "quarantine";
/// The access policy: who may do what (`access/v<20 digits>.json`).
pub const ACCESS: &str = "access";
/// The signed store heads.
pub const HEADS: &str = "head";
/// Intent records of running batches and sweeps (removed when they finish).
pub const INTENTS: &str = "batches";
/// Catalogs: every partition's latest manifest, as of one head version, in one object.
pub const CATALOGS: &str = "catalog";
/// The audit trail (`audit/v<20 digits>.json`).
pub const AUDIT: &str = "audit";
/// The hold registry (`holds/v<20 digits>.json`).
pub const HOLDS: &str = "holds";

/// A hive partition: `year=YYYY/month=MM/day=DD/interaction_type=T` (zero-padded).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Partition {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub interaction_type: String,
}

/// Interaction types are upper-case tokens (`CALL`, `CHAT`, `SMS`, `EMAIL`, or a vendor's own).
pub fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 32
        && t.as_bytes()[0].is_ascii_uppercase()
        && t.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl Partition {
    pub fn new(year: i32, month: u32, day: u32, interaction_type: &str) -> Option<Self> {
        if !(1..=9999).contains(&year)
            || chrono::NaiveDate::from_ymd_opt(year, month, day).is_none()
            || !valid_type(interaction_type)
        {
            return None;
        }
        Some(Partition {
            year,
            month,
            day,
            interaction_type: interaction_type.to_string(),
        })
    }

    pub fn of(occurred_at: DateTime<Utc>, interaction_type: &str) -> Option<Self> {
        Self::new(
            occurred_at.year(),
            occurred_at.month(),
            occurred_at.day(),
            interaction_type,
        )
    }

    /// `year=2025/month=01/day=05/interaction_type=CALL`
    pub fn dir(&self) -> String {
        format!(
            "year={:04}/month={:02}/day={:02}/interaction_type={}",
            self.year, self.month, self.day, self.interaction_type
        )
    }

    /// Parses the four `key=value` segments at the start of `segments`.
    pub fn parse_segments<'a>(mut segments: impl Iterator<Item = &'a str>) -> Option<Self> {
        let mut kv = |key: &str| {
            segments
                .next()?
                .strip_prefix(key)?
                .strip_prefix('=')
                .map(str::to_string)
        };
        let year = kv("year")?;
        let month = kv("month")?;
        let day = kv("day")?;
        let t = kv("interaction_type")?;
        if year.len() != 4 || month.len() != 2 || day.len() != 2 {
            return None;
        }
        Self::new(
            year.parse().ok()?,
            month.parse().ok()?,
            day.parse().ok()?,
            &t,
        )
    }

    pub fn parse_dir(dir: &str) -> Option<Self> {
        let p = Self::parse_segments(dir.split('/'))?;
        (p.dir() == dir).then_some(p)
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.dir())
    }
}

/// Batch ids sort by start time: `20261126T140312Z-1a2b3c4d`.
pub fn batch_id(now: DateTime<Utc>, random: u32) -> String {
    format!("{}-{:08x}", now.format("%Y%m%dT%H%M%SZ"), random)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Builds an object path from text this module formatted (the one place that may).
#[allow(clippy::disallowed_methods)] // layout is the one place object paths are built
fn object(s: String) -> Path {
    Path::from(s)
}

/// `<prefix>/v<20 digits>.json`
fn chain_path(prefix: &str, sequence: u64) -> Path {
    object(format!("{prefix}/v{sequence:020}.json"))
}

fn parse_chain(prefix: &str, path: &Path) -> Option<u64> {
    let s = path
        .as_ref()
        .strip_prefix(prefix)?
        .strip_prefix("/v")?
        .strip_suffix(".json")?;
    (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `<prefix>/<id><suffix>`, the id checked.
fn parse_id<'a>(prefix: &str, suffix: &str, path: &'a Path) -> Option<&'a str> {
    let id = path
        .as_ref()
        .strip_prefix(prefix)?
        .strip_prefix('/')?
        .strip_suffix(suffix)?;
    valid_id(id).then_some(id)
}

macro_rules! chain {
    ($(#[$doc:meta])* $name:ident, $prefix:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            pub sequence: u64,
        }

        impl $name {
            pub fn new(sequence: u64) -> Self {
                $name { sequence }
            }
            pub fn to_path(&self) -> Path {
                chain_path($prefix, self.sequence)
            }
            pub fn parse(path: &Path) -> Option<Self> {
                parse_chain($prefix, path).map(Self::new)
            }
        }
    };
}

macro_rules! named {
    ($(#[$doc:meta])* $name:ident, $field:ident, $prefix:expr, $suffix:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            $field: String,
        }

        impl $name {
            /// `None` for an id that is empty, longer than 80 bytes or holds characters
            /// other than ASCII letters, digits, `-`, `_` and `.`.
            pub fn new(id: &str) -> Option<Self> {
                valid_id(id).then(|| $name { $field: id.to_string() })
            }
            pub fn $field(&self) -> &str {
                &self.$field
            }
            pub fn to_path(&self) -> Path {
                object(format!("{}/{}{}", $prefix, self.$field, $suffix))
            }
            pub fn parse(path: &Path) -> Option<Self> {
                parse_id($prefix, $suffix, path).and_then(Self::new)
            }
        }
    };
}

chain!(
    /// `audit/v<20 digits>.json`: one entry of the audit trail.
    AuditPath,
    AUDIT
);
chain!(
    /// `holds/v<20 digits>.json`: one version of the hold registry.
    HoldRegistryPath,
    HOLDS
);
chain!(
    /// `head/v<20 digits>.json`: one signed store head.
    HeadPath,
    HEADS
);
chain!(
    /// `access/v<20 digits>.json`: one version of the access policy.
    AccessPath,
    ACCESS
);
named!(
    /// `landing/<segment-id>.seg`: a landed segment.
    LandingPath,
    segment_id,
    LANDING,
    ".seg"
);
named!(
    /// `quarantine/<entry-id>.json`: a quarantine entry.
    QuarantinePath,
    entry_id,
    QUARANTINE,
    ".json"
);
named!(
    /// `batches/<job-id>.json`: the intent record of a running batch or sweep.
    IntentPath,
    job_id,
    INTENTS,
    ".json"
);

/// `lake/<partition>/part-<file-id>.parquet`: a data file. Manifests and the hold registry
/// record it as this text (serialized as the path string, checked when read).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataFilePath {
    pub partition: Partition,
    file_id: String,
}

impl DataFilePath {
    pub fn new(partition: &Partition, file_id: &str) -> Option<Self> {
        valid_id(file_id).then(|| DataFilePath {
            partition: partition.clone(),
            file_id: file_id.to_string(),
        })
    }
    /// `<batch-or-sweep-id>-<suffix>`
    pub fn file_id(&self) -> &str {
        &self.file_id
    }
    pub fn to_path(&self) -> Path {
        object(self.to_string())
    }
    pub fn parse(path: &Path) -> Option<Self> {
        Self::parse_str(path.as_ref())
    }
    /// From the text a manifest records.
    pub fn parse_str(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(LAKE)?.strip_prefix('/')?;
        let (dir, file) = rest.rsplit_once('/')?;
        let id = file.strip_prefix("part-")?.strip_suffix(".parquet")?;
        Self::new(&Partition::parse_dir(dir)?, id)
    }
    /// Whether job `job_id` wrote it (its file id is `<job-id>-<suffix>`).
    pub fn written_by(&self, job_id: &str) -> bool {
        self.file_id
            .strip_prefix(job_id)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('-'))
    }
}

impl std::fmt::Display for DataFilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{LAKE}/{}/part-{}.parquet",
            self.partition.dir(),
            self.file_id
        )
    }
}

impl serde::Serialize for DataFilePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DataFilePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_str(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a data file path")))
    }
}

/// The object of a data file as a manifest or the hold registry records it; a text that is
/// not a data file path is refused (a manifest must never make holdfast touch another object).
pub fn locate(data_file: &str) -> Result<Path, super::LakeError> {
    DataFilePath::parse_str(data_file)
        .map(|d| d.to_path())
        .ok_or_else(|| super::LakeError::Corrupt {
            object: data_file.to_string(),
            problem: "not a data file path".into(),
        })
}

/// `manifests/<partition>/v<20 digits>.json`: one manifest version of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManifestPath {
    pub partition: Partition,
    pub sequence: u64,
}

impl ManifestPath {
    pub fn new(partition: &Partition, sequence: u64) -> Self {
        ManifestPath {
            partition: partition.clone(),
            sequence,
        }
    }
    pub fn to_path(&self) -> Path {
        chain_path(
            &format!("{MANIFESTS}/{}", self.partition.dir()),
            self.sequence,
        )
    }
    pub fn parse(path: &Path) -> Option<Self> {
        let rest = path.as_ref().strip_prefix(MANIFESTS)?.strip_prefix('/')?;
        let (dir, _) = rest.rsplit_once('/')?;
        let partition = Partition::parse_dir(dir)?;
        let sequence = parse_chain(&format!("{MANIFESTS}/{dir}"), path)?;
        Some(ManifestPath {
            partition,
            sequence,
        })
    }
    /// The folder of a partition's versions (a listing prefix).
    pub fn dir(partition: &Partition) -> Path {
        object(format!("{MANIFESTS}/{}", partition.dir()))
    }
}

/// `holdfast.json`: the store marker.
pub fn store_marker() -> Path {
    object(STORE_MARKER.to_string())
}

pub fn data_file(p: &Partition, batch_id: &str) -> Path {
    debug_assert!(valid_id(batch_id));
    object(format!("{LAKE}/{}/part-{batch_id}.parquet", p.dir()))
}

/// Partition and batch id of a data file path.
pub fn parse_data_file(path: &Path) -> Option<(Partition, String)> {
    DataFilePath::parse(path).map(|d| (d.partition, d.file_id))
}

pub fn manifest_dir(p: &Partition) -> Path {
    ManifestPath::dir(p)
}

pub fn manifest(p: &Partition, sequence: u64) -> Path {
    ManifestPath::new(p, sequence).to_path()
}

pub fn parse_manifest(path: &Path) -> Option<(Partition, u64)> {
    ManifestPath::parse(path).map(|m| (m.partition, m.sequence))
}

pub fn quarantine_entry(id: &str) -> Path {
    debug_assert!(valid_id(id));
    object(format!("{QUARANTINE}/{id}.json"))
}

pub fn parse_quarantine_entry(path: &Path) -> Option<String> {
    QuarantinePath::parse(path).map(|q| q.entry_id)
}

/// The lock record of an object: `_locks/<object>.lock.json`.
pub fn lock_record(object_path: &Path) -> Path {
    object(format!("{LOCKS}/{}.lock.json", object_path.as_ref()))
}

/// The folder of a lease's versions: `_leases/<name>`.
pub fn lease_dir(name: &str) -> Path {
    debug_assert!(valid_id(name));
    object(format!("{LEASES}/{name}"))
}

/// One version of a lease; the version number is its fencing token.
pub fn lease_version(name: &str, token: u64) -> Path {
    debug_assert!(valid_id(name));
    chain_path(&format!("{LEASES}/{name}"), token)
}

/// Lease name and token of a lease version path.
pub fn parse_lease_version(path: &Path) -> Option<(String, u64)> {
    let rest = path.as_ref().strip_prefix(LEASES)?.strip_prefix('/')?;
    let (name, _) = rest.split_once('/')?;
    let token = parse_chain(&format!("{LEASES}/{name}"), path)?;
    valid_id(name).then(|| (name.to_string(), token))
}

/// `access/v<20 digits>.json`: one version of the access policy.
pub fn access_version(sequence: u64) -> Path {
    AccessPath::new(sequence).to_path()
}

pub fn parse_access_version(path: &Path) -> Option<u64> {
    AccessPath::parse(path).map(|a| a.sequence)
}

/// `head/v<20 digits>.json`
pub fn head(sequence: u64) -> Path {
    HeadPath::new(sequence).to_path()
}

pub fn parse_head(path: &Path) -> Option<u64> {
    HeadPath::parse(path).map(|h| h.sequence)
}

/// `catalog/v<20 digits>.cat`: the catalog of head version `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CatalogPath {
    pub sequence: u64,
}

impl CatalogPath {
    pub fn new(sequence: u64) -> Self {
        CatalogPath { sequence }
    }
    pub fn to_path(&self) -> Path {
        object(format!("{CATALOGS}/v{:020}.cat", self.sequence))
    }
    pub fn parse(path: &Path) -> Option<Self> {
        let s = path
            .as_ref()
            .strip_prefix(CATALOGS)?
            .strip_prefix("/v")?
            .strip_suffix(".cat")?;
        (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok().map(Self::new))
            .flatten()
    }
}

/// `batches/<job-id>.json`: written before a batch or sweep uploads its first data file.
pub fn intent(job_id: &str) -> Path {
    debug_assert!(valid_id(job_id));
    object(format!("{INTENTS}/{job_id}.json"))
}

pub fn parse_intent(path: &Path) -> Option<String> {
    IntentPath::parse(path).map(|i| i.job_id)
}

/// Whether a data file was written by job `job_id` (its file id is `<job-id>-<suffix>`).
pub fn written_by(path: &Path, job_id: &str) -> bool {
    DataFilePath::parse(path).is_some_and(|d| d.written_by(job_id))
}

mod keys;
pub use keys::{
    INDEX_SECRETS, IndexSecretPath, PLATFORM_KEYS, PlatformKeyPath, REWRAPPED, RewrappedKeyPath,
    TENANT_KEYS, TenantKeyPath, TenantObject, tenant_key_id_ok,
};

mod table_log;
pub use table_log::TableLogPath;
mod landing;
pub use landing::{
    FailedSegmentPath, failed_segment, holds_several, landing_segment, landing_segments,
    parse_landing_segment,
};

#[cfg(test)]
mod tests;
