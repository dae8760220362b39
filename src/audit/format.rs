//! An audit entry as stored: `audit/v<20 digits>.json`, format `holdfast.audit`, version 1.
//! Frozen: a change is a new version with a conversion into the runtime [`Entry`]; a reader
//! refuses another format or a version it does not know (`fixtures/formats/audit-entry-v1.json`).

use super::Entry;
use crate::format::FormatError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "holdfast.audit";
const VERSIONS: &[&str] = &["1"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version")]
pub(crate) enum EntryFile {
    #[serde(rename = "1")]
    V1(EntryV1),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryV1 {
    format: String,
    sequence: u64,
    previous_sha256: Option<String>,
    at: DateTime<Utc>,
    actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    os_user: Option<String>,
    action: String,
    case: Option<String>,
    details: serde_json::Value,
}

pub(crate) fn encode(e: &Entry) -> Vec<u8> {
    crate::format::encode(&EntryFile::V1(EntryV1 {
        format: FORMAT.into(),
        sequence: e.sequence,
        previous_sha256: e.previous_sha256.clone(),
        at: e.at,
        actor: e.actor.clone(),
        os_user: e.os_user.clone(),
        action: e.action.clone(),
        case: e.case.clone(),
        details: e.details.clone(),
    }))
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Entry, FormatError> {
    let EntryFile::V1(v) = crate::format::decode(bytes, FORMAT, VERSIONS)?;
    Ok(Entry {
        sequence: v.sequence,
        previous_sha256: v.previous_sha256,
        at: v.at,
        actor: v.actor,
        os_user: v.os_user,
        action: v.action,
        case: v.case,
        details: v.details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{altered, golden, ts};

    fn sample() -> Entry {
        Entry {
            sequence: 7,
            previous_sha256: Some("ab".repeat(32)),
            at: ts("2026-01-02T03:04:05.123456Z"),
            actor: "jdoe".into(),
            os_user: Some("ann".into()),
            action: "quarantine.show".into(),
            case: Some("INC-7".into()),
            details: serde_json::json!({"entry": "q-0123", "dek": "dek-1"}),
        }
    }

    #[test]
    fn version_1_is_frozen_and_reads_back() {
        let bytes = encode(&sample());
        golden("audit-entry-v1.json", &bytes);
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn other_formats_and_versions_are_refused_by_name() {
        let bytes = encode(&sample());
        let e = decode(&altered(&bytes, "version", "2")).unwrap_err();
        assert!(
            matches!(e, FormatError::UnknownVersion { found: Some(ref v), .. } if v == "2"),
            "{e}"
        );
        let e = decode(&altered(&bytes, "format", "holdfast.head")).unwrap_err();
        assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
        let e = decode(&altered(&bytes, "surprise", "x")).unwrap_err();
        assert!(matches!(e, FormatError::Invalid { .. }), "{e}");
    }
}
