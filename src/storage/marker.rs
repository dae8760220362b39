//! The store marker `holdfast.json` as stored: format `holdfast.store`, version 1. It says
//! that a location is a holdfast store and records what is chosen once, at `init`: the KEK the
//! store is bound to, its retention floor and its file modes. Frozen: a change is a new
//! version with an upcast into [`Marker`]; a reader refuses an unknown format or version
//! ([`decode`]). Golden file: `fixtures/formats/store-marker-v1.json`.
//!
//! It lives in `storage` because the local backend reads the file modes from it when it opens
//! a directory; `crate::store` writes it at `init` and checks it on every open.

use crate::format::{self, FormatError};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "holdfast.store";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version")]
enum MarkerFile {
    #[serde(rename = "1")]
    V1(MarkerV1),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkerV1 {
    format: String,
    /// When `init` created the store (RFC 3339, UTC).
    created_at: String,
    kek_id: String,
    retention_floor_days: u32,
    /// Objects 0640 and directories 0750 instead of 0600/0700.
    group_readable: bool,
}

/// What the marker records (the runtime type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub created_at: String,
    /// The KEK the store is bound to: a keyring holding another one does not open it.
    pub kek_id: String,
    /// The store's minimum retention in days, set once at init and never changed.
    pub retention_floor_days: u32,
    /// Whether the store's group may read it (chosen once, at init; never from the
    /// environment).
    pub group_readable: bool,
}

/// The marker's bytes, in today's version.
pub fn encode(m: &Marker) -> Vec<u8> {
    format::encode(&MarkerFile::V1(MarkerV1 {
        format: FORMAT.into(),
        created_at: m.created_at.clone(),
        kek_id: m.kek_id.clone(),
        retention_floor_days: m.retention_floor_days,
        group_readable: m.group_readable,
    }))
}

/// Reads a marker of any version this holdfast knows.
pub fn decode(bytes: &[u8]) -> Result<Marker, FormatError> {
    let MarkerFile::V1(v1) = format::decode(bytes, FORMAT, &["1"])?;
    Ok(Marker {
        created_at: v1.created_at,
        kek_id: v1.kek_id,
        retention_floor_days: v1.retention_floor_days,
        group_readable: v1.group_readable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker() -> Marker {
        Marker {
            created_at: "2026-01-01T00:00:00Z".into(),
            kek_id: "kek-0123456789abcdef".into(),
            retention_floor_days: 2190,
            group_readable: false,
        }
    }

    #[test]
    fn version_1_is_frozen_and_reads_back() {
        let bytes = encode(&marker());
        format::golden("store-marker-v1.json", &bytes);
        assert_eq!(decode(&bytes).unwrap(), marker());
    }

    #[test]
    fn other_formats_versions_and_unversioned_markers_are_refused() {
        let text = String::from_utf8(encode(&marker())).unwrap();
        let newer = text.replace(r#""version": "1""#, r#""version": "2""#);
        assert!(matches!(
            decode(newer.as_bytes()),
            Err(FormatError::UnknownVersion { .. })
        ));
        let other = text.replace(FORMAT, "holdfast.manifest");
        assert!(matches!(
            decode(other.as_bytes()),
            Err(FormatError::WrongFormat { .. })
        ));
        // the marker as written before it was versioned (a number, no floor) is not read
        let old =
            br#"{"format": "holdfast.store", "version": 1, "created_at": "x", "kek_id": "k"}"#;
        assert!(matches!(
            decode(old),
            Err(FormatError::UnknownVersion { .. })
        ));
        let missing = text.replace(r#""retention_floor_days": 2190,"#, "");
        assert!(matches!(
            decode(missing.as_bytes()),
            Err(FormatError::Invalid { .. })
        ));
    }
}
