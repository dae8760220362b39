//! The hold registry as stored: `holds/v<20 digits>.json`, format `holdfast.holds`, version 1,
//! each version a full snapshot naming its predecessor's SHA-256. Frozen: a change is a new
//! version with a conversion into the runtime [`Registry`]; a reader refuses another format or
//! a version it does not know. Golden file: `fixtures/formats/hold-registry-v1.json`.

use super::{DateRange, Hold, Registry, Scope, Status};
use crate::format::FormatError;
use crate::lake::layout::DataFilePath;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FORMAT: &str = "holdfast.holds";
const VERSIONS: &[&str] = &["1"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum RegistryFile {
    #[serde(rename = "1")]
    V1(RegistryV1),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryV1 {
    format: String,
    sequence: u64,
    previous_sha256: Option<String>,
    holds: Vec<HoldV1>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldV1 {
    hold_id: String,
    tenant_id: Option<String>,
    scope: ScopeV1,
    retention_override: Option<serde_json::Value>,
    placed_by: String,
    placed_at: DateTime<Utc>,
    status: StatusV1,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lapses_at: Option<DateTime<Utc>>,
    files: Vec<DataFilePath>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    covered: BTreeMap<DataFilePath, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScopeV1 {
    interaction_ids: Vec<String>,
    queue_ids: Vec<String>,
    agent_ids: Vec<String>,
    date_range: Option<DateRangeV1>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DateRangeV1 {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
enum StatusV1 {
    Active,
    ReleaseRequested {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by_os_user: Option<String>,
        at: DateTime<Utc>,
    },
    Released {
        requested_by: String,
        approved_by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested_by_os_user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approved_by_os_user: Option<String>,
        at: DateTime<Utc>,
    },
    Lapsed {
        at: DateTime<Utc>,
    },
}

/// The stored bytes of `r`; refuses a listed file that is not a data file path.
pub(super) fn encode(r: &Registry) -> Result<Vec<u8>, String> {
    let holds = r.holds.iter().map(HoldV1::of).collect::<Result<_, _>>()?;
    Ok(crate::format::encode(&RegistryFile::V1(RegistryV1 {
        format: FORMAT.into(),
        sequence: r.sequence,
        previous_sha256: r.previous_sha256.clone(),
        holds,
    })))
}

pub(super) fn decode(bytes: &[u8]) -> Result<Registry, FormatError> {
    let RegistryFile::V1(v) = crate::format::decode(bytes, FORMAT, VERSIONS)?;
    Ok(Registry {
        sequence: v.sequence,
        previous_sha256: v.previous_sha256,
        holds: v.holds.into_iter().map(HoldV1::into_hold).collect(),
    })
}

fn data_path(s: &str) -> Result<DataFilePath, String> {
    DataFilePath::parse_str(s).ok_or_else(|| format!("{s:?} is not a data file path"))
}

impl HoldV1 {
    #[allow(clippy::too_many_lines)] // plain field mapping
    fn of(h: &Hold) -> Result<Self, String> {
        let s = &h.scope;
        let status = match h.status.clone() {
            Status::Active => StatusV1::Active,
            Status::ReleaseRequested { by, by_os_user, at } => {
                StatusV1::ReleaseRequested { by, by_os_user, at }
            }
            Status::Released {
                requested_by,
                approved_by,
                requested_by_os_user,
                approved_by_os_user,
                at,
            } => StatusV1::Released {
                requested_by,
                approved_by,
                requested_by_os_user,
                approved_by_os_user,
                at,
            },
            Status::Lapsed { at } => StatusV1::Lapsed { at },
        };
        Ok(HoldV1 {
            hold_id: h.hold_id.clone(),
            tenant_id: h.tenant_id.clone(),
            scope: ScopeV1 {
                interaction_ids: s.interaction_ids.clone(),
                queue_ids: s.queue_ids.clone(),
                agent_ids: s.agent_ids.clone(),
                date_range: s.date_range.as_ref().map(|r| DateRangeV1 {
                    start: r.start,
                    end: r.end,
                }),
            },
            retention_override: h.retention_override.clone(),
            placed_by: h.placed_by.clone(),
            placed_at: h.placed_at,
            status,
            lapses_at: h.lapses_at,
            files: h
                .files
                .iter()
                .map(|f| data_path(f))
                .collect::<Result<_, _>>()?,
            covered: h
                .covered
                .iter()
                .map(|(f, n)| Ok((data_path(f)?, *n)))
                .collect::<Result<_, String>>()?,
        })
    }

    #[allow(clippy::too_many_lines)] // plain field mapping
    fn into_hold(self) -> Hold {
        let status = match self.status {
            StatusV1::Active => Status::Active,
            StatusV1::ReleaseRequested { by, by_os_user, at } => {
                Status::ReleaseRequested { by, by_os_user, at }
            }
            StatusV1::Released {
                requested_by,
                approved_by,
                requested_by_os_user,
                approved_by_os_user,
                at,
            } => Status::Released {
                requested_by,
                approved_by,
                requested_by_os_user,
                approved_by_os_user,
                at,
            },
            StatusV1::Lapsed { at } => Status::Lapsed { at },
        };
        Hold {
            hold_id: self.hold_id,
            tenant_id: self.tenant_id,
            scope: Scope {
                interaction_ids: self.scope.interaction_ids,
                queue_ids: self.scope.queue_ids,
                agent_ids: self.scope.agent_ids,
                date_range: self.scope.date_range.map(|r| DateRange {
                    start: r.start,
                    end: r.end,
                }),
            },
            retention_override: self.retention_override,
            placed_by: self.placed_by,
            placed_at: self.placed_at,
            status,
            lapses_at: self.lapses_at,
            files: self.files.iter().map(ToString::to_string).collect(),
            covered: self
                .covered
                .iter()
                .map(|(f, n)| (f.to_string(), *n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{altered, golden, ts};

    const FILE: &str = "lake/year=2026/month=01/day=02/interaction_type=CALL/part-20260102T030405Z-0a1b2c3d-FINRA_4511_6Y.parquet";

    fn sample() -> Registry {
        let hold = |id: &str, status: Status| Hold {
            hold_id: id.into(),
            tenant_id: Some("tenant-1".into()),
            scope: Scope {
                interaction_ids: vec!["i-1".into()],
                queue_ids: vec!["q-1".into()],
                agent_ids: vec![],
                date_range: Some(DateRange {
                    start: ts("2026-01-01T00:00:00Z"),
                    end: ts("2026-01-31T23:59:59Z"),
                }),
            },
            retention_override: Some(serde_json::json!({"enabled": true, "expirationDate": null})),
            placed_by: "ann".into(),
            placed_at: ts("2026-02-01T10:00:00Z"),
            status,
            lapses_at: None,
            files: vec![FILE.into()],
            covered: [(FILE.to_string(), 12)].into(),
        };
        let mut lapsing = hold(
            "H-3",
            Status::Lapsed {
                at: ts("2026-03-01T00:00:00Z"),
            },
        );
        lapsing.lapses_at = Some(ts("2026-03-01T00:00:00Z"));
        Registry {
            sequence: 4,
            previous_sha256: Some("cd".repeat(32)),
            holds: vec![
                hold("H-1", Status::Active),
                hold(
                    "H-2",
                    Status::Released {
                        requested_by: "ann".into(),
                        approved_by: "bob".into(),
                        requested_by_os_user: Some("ann".into()),
                        approved_by_os_user: Some("bob".into()),
                        at: ts("2026-02-10T00:00:00Z"),
                    },
                ),
                lapsing,
                hold(
                    "H-4",
                    Status::ReleaseRequested {
                        by: "ann".into(),
                        by_os_user: Some("ann".into()),
                        at: ts("2026-02-11T00:00:00Z"),
                    },
                ),
            ],
        }
    }

    #[test]
    fn version_1_is_frozen_and_reads_back() {
        let bytes = encode(&sample()).unwrap();
        golden("hold-registry-v1.json", &bytes);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.holds, sample().holds);
        assert_eq!(
            (back.sequence, back.previous_sha256),
            (4, sample().previous_sha256)
        );
    }

    #[test]
    fn other_formats_versions_and_paths_are_refused() {
        let bytes = encode(&sample()).unwrap();
        let e = decode(&altered(&bytes, "version", "2")).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
        let e = decode(&altered(&bytes, "format", "holdfast.audit")).unwrap_err();
        assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
        // a listed file that is not a data file path is refused, on read and on write
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace(FILE, "_locks/x.lock.json");
        assert!(matches!(
            decode(text.as_bytes()),
            Err(FormatError::Invalid { .. })
        ));
        let mut r = sample();
        r.holds[0]
            .files
            .push("head/v00000000000000000001.json".into());
        assert!(encode(&r).is_err());
    }
}
