//! Where things live in a store. The only place that formats or parses object paths.
//!
//! ```text
//! holdfast.json                                             store marker (create-only)
//! landing/<segment-id>.seg                                  encrypted landing segments
//! quarantine/<entry-id>.json                                encrypted quarantine entries
//! lake/year=YYYY/month=MM/day=DD/interaction_type=T/part-<batch-id>.parquet    data files
//! manifests/year=YYYY/month=MM/day=DD/interaction_type=T/v<20 digits>.json     manifest versions
//! failed/<segment-id>.seg                                   landing segments a batch could not read
//! _locks/<object>.lock.json                                 storage lock of an object
//! _leases/<name>/v<20 digits>.json                          lease versions (`batch`, `holds`)
//! .staging/                                                 writes being staged (never read)
//! access/v<20 digits>.json                                  access policy versions (create-only)
//! head/v<20 digits>.json                                    signed store heads (create-only chain)
//! batches/<job-id>.json                                     intent of a running batch or sweep
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
pub const MANIFESTS: &str = "manifests";
pub const LANDING: &str = "landing";
pub const QUARANTINE: &str = "quarantine";
/// The access policy: who may do what (`access/v<20 digits>.json`).
pub const ACCESS: &str = "access";
/// The signed store heads.
pub const HEADS: &str = "head";
/// Intent records of running batches and sweeps (removed when they finish).
pub const INTENTS: &str = "batches";

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

pub fn data_file(p: &Partition, batch_id: &str) -> Path {
    debug_assert!(valid_id(batch_id));
    Path::from(format!("{LAKE}/{}/part-{batch_id}.parquet", p.dir()))
}

/// Partition and batch id of a data file path.
pub fn parse_data_file(path: &Path) -> Option<(Partition, String)> {
    let s = path.as_ref();
    let rest = s.strip_prefix(LAKE)?.strip_prefix('/')?;
    let (dir, file) = rest.rsplit_once('/')?;
    let batch = file.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let p = Partition::parse_dir(dir)?;
    valid_id(batch).then(|| (p, batch.to_string()))
}

pub fn manifest_dir(p: &Partition) -> Path {
    Path::from(format!("{MANIFESTS}/{}", p.dir()))
}

pub fn manifest(p: &Partition, sequence: u64) -> Path {
    Path::from(format!("{MANIFESTS}/{}/v{sequence:020}.json", p.dir()))
}

pub fn parse_manifest(path: &Path) -> Option<(Partition, u64)> {
    let rest = path.as_ref().strip_prefix(MANIFESTS)?.strip_prefix('/')?;
    let (dir, file) = rest.rsplit_once('/')?;
    let seq = file.strip_prefix('v')?.strip_suffix(".json")?;
    if seq.len() != 20 {
        return None;
    }
    Some((Partition::parse_dir(dir)?, seq.parse().ok()?))
}

pub fn landing_segment(id: &str) -> Path {
    debug_assert!(valid_id(id));
    Path::from(format!("{LANDING}/{id}.seg"))
}

pub fn parse_landing_segment(path: &Path) -> Option<String> {
    let id = path
        .as_ref()
        .strip_prefix(LANDING)?
        .strip_prefix('/')?
        .strip_suffix(".seg")?;
    valid_id(id).then(|| id.to_string())
}

pub fn quarantine_entry(id: &str) -> Path {
    debug_assert!(valid_id(id));
    Path::from(format!("{QUARANTINE}/{id}.json"))
}

pub fn parse_quarantine_entry(path: &Path) -> Option<String> {
    let id = path
        .as_ref()
        .strip_prefix(QUARANTINE)?
        .strip_prefix('/')?
        .strip_suffix(".json")?;
    valid_id(id).then(|| id.to_string())
}

/// A failed landing segment, moved aside (`failed/<segment-id>.seg`); a second one of the
/// same id (bytes differing) gets the batch id too.
pub fn failed_segment(id: &str, batch_id: Option<&str>) -> Path {
    debug_assert!(valid_id(id));
    match batch_id {
        None => Path::from(format!("{FAILED}/{id}.seg")),
        Some(b) => Path::from(format!("{FAILED}/{id}.{b}.seg")),
    }
}

/// The lock record of an object: `_locks/<object>.lock.json`.
pub fn lock_record(object: &Path) -> Path {
    Path::from(format!("{LOCKS}/{}.lock.json", object.as_ref()))
}

/// The folder of a lease's versions: `_leases/<name>`.
pub fn lease_dir(name: &str) -> Path {
    debug_assert!(valid_id(name));
    Path::from(format!("{LEASES}/{name}"))
}

/// One version of a lease; the version number is its fencing token.
pub fn lease_version(name: &str, token: u64) -> Path {
    debug_assert!(valid_id(name));
    Path::from(format!("{LEASES}/{name}/v{token:020}.json"))
}

/// Lease name and token of a lease version path.
pub fn parse_lease_version(path: &Path) -> Option<(String, u64)> {
    let rest = path.as_ref().strip_prefix(LEASES)?.strip_prefix('/')?;
    let (name, file) = rest.split_once('/')?;
    let token = file.strip_prefix('v')?.strip_suffix(".json")?;
    (token.len() == 20 && valid_id(name)).then(|| Some((name.to_string(), token.parse().ok()?)))?
}

/// `access/v<20 digits>.json`: one version of the access policy.
pub fn access_version(sequence: u64) -> Path {
    Path::from(format!("{ACCESS}/v{sequence:020}.json"))
}

pub fn parse_access_version(path: &Path) -> Option<u64> {
    let s = path
        .as_ref()
        .strip_prefix(ACCESS)?
        .strip_prefix("/v")?
        .strip_suffix(".json")?;
    (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `head/v<20 digits>.json`
pub fn head(sequence: u64) -> Path {
    Path::from(format!("{HEADS}/v{sequence:020}.json"))
}

pub fn parse_head(path: &Path) -> Option<u64> {
    let seq = path
        .as_ref()
        .strip_prefix(HEADS)?
        .strip_prefix("/v")?
        .strip_suffix(".json")?;
    (seq.len() == 20).then(|| seq.parse().ok()).flatten()
}

/// `batches/<job-id>.json`: written before a batch or sweep uploads its first data file.
pub fn intent(job_id: &str) -> Path {
    debug_assert!(valid_id(job_id));
    Path::from(format!("{INTENTS}/{job_id}.json"))
}

pub fn parse_intent(path: &Path) -> Option<String> {
    let id = path
        .as_ref()
        .strip_prefix(INTENTS)?
        .strip_prefix('/')?
        .strip_suffix(".json")?;
    valid_id(id).then(|| id.to_string())
}

/// Whether a data file was written by job `job_id` (its file id is `<job-id>-<suffix>`).
pub fn written_by(path: &Path, job_id: &str) -> bool {
    parse_data_file(path).is_some_and(|(_, id)| {
        id.strip_prefix(job_id)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('-'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_partition() -> impl Strategy<Value = Partition> {
        (1i32..=9999, 1u32..=12, 1u32..=28, "[A-Z][A-Z0-9_]{0,31}")
            .prop_map(|(y, m, d, t)| Partition::new(y, m, d, &t).unwrap())
    }

    proptest! {
        #[test]
        fn data_file_path_round_trips(p in any_partition(), b in "[0-9A-Za-z]{1,20}-[0-9a-f]{8}") {
            prop_assert_eq!(parse_data_file(&data_file(&p, &b)), Some((p, b)));
        }
        #[test]
        fn manifest_path_round_trips(p in any_partition(), seq in 0u64..u64::MAX) {
            prop_assert_eq!(parse_manifest(&manifest(&p, seq)), Some((p, seq)));
        }
        #[test]
        fn lease_path_round_trips(name in "[a-z]{1,12}", token in 0u64..u64::MAX) {
            prop_assert_eq!(parse_lease_version(&lease_version(&name, token)), Some((name, token)));
        }
        #[test]
        fn access_version_path_round_trips(seq in 0u64..u64::MAX) {
            prop_assert_eq!(parse_access_version(&access_version(seq)), Some(seq));
        }
        #[test]
        fn head_and_intent_paths_round_trip(seq in 0u64..u64::MAX, id in "[0-9A-Za-z]{1,20}-[0-9a-f]{8}") {
            prop_assert_eq!(parse_head(&head(seq)), Some(seq));
            prop_assert_eq!(parse_intent(&intent(&id)), Some(id.clone()));
            let p = Partition::new(2025, 1, 5, "CALL").unwrap();
            let file_id = format!("{id}-FINRA_4511_6Y");
            prop_assert!(written_by(&data_file(&p, &file_id), &id));
            let other = format!("{}x", id);
            prop_assert!(!written_by(&data_file(&p, &file_id), &other));
        }
        #[test]
        fn dir_round_trips(p in any_partition()) {
            prop_assert_eq!(Partition::parse_dir(&p.dir()), Some(p));
        }
    }

    #[test]
    fn zero_padded_and_strict() {
        let p = Partition::new(2025, 1, 5, "CALL").unwrap();
        assert_eq!(p.dir(), "year=2025/month=01/day=05/interaction_type=CALL");
        assert!(Partition::parse_dir("year=2025/month=1/day=05/interaction_type=CALL").is_none());
        assert!(Partition::new(2025, 2, 30, "CALL").is_none());
        assert!(Partition::new(2025, 2, 3, "call").is_none());
        assert!(Partition::new(2025, 2, 3, "../x").is_none());
        assert!(
            parse_data_file(&Path::from(
                "lake/year=2025/month=01/day=05/interaction_type=CALL/x.parquet"
            ))
            .is_none()
        );
    }
}
