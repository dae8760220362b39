//! The store marker `holdfast.json` as stored: format `holdfast.store`. It says that a
//! location is a holdfast store and records what is chosen once, at `init`: the KEK the store
//! is bound to, its retention floor and its file modes (version 1), and on S3 the Object Lock
//! mode data files are retained in (version 2: version 1 and `object_lock_mode`, written only
//! when a mode is chosen, so a local store's marker is version 1's bytes). Frozen: a change is
//! a new version with an upcast into [`Marker`]; a reader refuses an unknown format or version
//! ([`decode`]). Golden files: `fixtures/formats/store-marker-v1.json`, `store-marker-v2.json`.
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
    #[serde(rename = "2")]
    V2(MarkerV2),
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

/// Version 2: version 1 and the Object Lock mode of an S3 store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkerV2 {
    format: String,
    created_at: String,
    kek_id: String,
    retention_floor_days: u32,
    group_readable: bool,
    /// `COMPLIANCE` or `GOVERNANCE`.
    object_lock_mode: String,
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
    /// The Object Lock mode of an S3 store's data files (`COMPLIANCE`, `GOVERNANCE`), chosen
    /// once at init; `None`: COMPLIANCE where the backend has Object Lock.
    pub object_lock_mode: Option<String>,
}

/// The Object Lock modes a store may be initialised with.
pub const LOCK_MODES: [&str; 2] = ["COMPLIANCE", "GOVERNANCE"];

/// The marker's bytes, in today's version.
pub fn encode(m: &Marker) -> Vec<u8> {
    if let Some(mode) = &m.object_lock_mode {
        return format::encode(&MarkerFile::V2(MarkerV2 {
            format: FORMAT.into(),
            created_at: m.created_at.clone(),
            kek_id: m.kek_id.clone(),
            retention_floor_days: m.retention_floor_days,
            group_readable: m.group_readable,
            object_lock_mode: mode.clone(),
        }));
    }
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
    match format::decode(bytes, FORMAT, &["1", "2"])? {
        MarkerFile::V1(v1) => Ok(Marker {
            created_at: v1.created_at,
            kek_id: v1.kek_id,
            retention_floor_days: v1.retention_floor_days,
            group_readable: v1.group_readable,
            object_lock_mode: None,
        }),
        MarkerFile::V2(v2) if LOCK_MODES.contains(&v2.object_lock_mode.as_str()) => Ok(Marker {
            created_at: v2.created_at,
            kek_id: v2.kek_id,
            retention_floor_days: v2.retention_floor_days,
            group_readable: v2.group_readable,
            object_lock_mode: Some(v2.object_lock_mode),
        }),
        MarkerFile::V2(v2) => Err(FormatError::Invalid {
            format: FORMAT,
            version: "2".into(),
            detail: format!("{:?} is not an Object Lock mode", v2.object_lock_mode),
        }),
    }
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
            object_lock_mode: None,
        }
    }

    #[test]
    fn version_2_records_the_object_lock_mode_and_only_when_there_is_one() {
        let m = Marker {
            object_lock_mode: Some("GOVERNANCE".into()),
            ..marker()
        };
        let bytes = encode(&m);
        format::golden("store-marker-v2.json", &bytes);
        assert_eq!(decode(&bytes).unwrap(), m);
        let text = String::from_utf8(bytes).unwrap();
        let bad = text.replace("GOVERNANCE", "LENIENT");
        assert!(matches!(
            decode(bad.as_bytes()),
            Err(FormatError::Invalid { .. })
        ));
        assert!(
            String::from_utf8(encode(&marker()))
                .unwrap()
                .contains(r#""version": "1""#)
        );
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
        let newer = text.replace(r#""version": "1""#, r#""version": "3""#);
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
