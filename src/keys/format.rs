//! The persisted form of a rewrapped DEK. Frozen: a change is a new version with a conversion.
//!
//! A rewrapped key (`keys/rewrapped/<dek-id>/v<20 digits>.json`), format
//! `holdfast.rewrapped-key`, version 1: the DEK id, its wrapping under a newer KEK version,
//! when and by which rewrap. Written create-only beside an object holdfast never rewrites (a
//! landing or failed segment, a quarantine entry, the index secret); the highest sequence of a
//! DEK is its newest wrapping. Golden file: `fixtures/formats/rewrapped-key-v1.json`.

use crate::crypto::kms::{WrappedKey, WrappedKeyV1};
use crate::format::FormatError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "holdfast.rewrapped-key";

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum RewrappedFile {
    #[serde(rename = "1")]
    V1(RewrappedV1),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RewrappedV1 {
    format: String,
    dek_id: String,
    wrapped: WrappedKeyV1,
    rewrapped_at: DateTime<Utc>,
    rewrap_id: String,
}

/// A DEK's newer wrapping (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrapped {
    pub dek_id: String,
    pub wrapped: WrappedKey,
    pub rewrapped_at: DateTime<Utc>,
    pub rewrap_id: String,
}

impl Rewrapped {
    pub fn encode(&self) -> Vec<u8> {
        crate::format::encode(&RewrappedFile::V1(RewrappedV1 {
            format: FORMAT.into(),
            dek_id: self.dek_id.clone(),
            wrapped: WrappedKeyV1::from(&self.wrapped),
            rewrapped_at: self.rewrapped_at,
            rewrap_id: self.rewrap_id.clone(),
        }))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let RewrappedFile::V1(v) = crate::format::decode(bytes, FORMAT, &["1"])?;
        Ok(Rewrapped {
            dek_id: v.dek_id,
            wrapped: v.wrapped.into(),
            rewrapped_at: v.rewrapped_at,
            rewrap_id: v.rewrap_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{altered, golden};

    #[test]
    fn a_rewrapped_key_is_frozen_and_reads_back() {
        let r = Rewrapped {
            dek_id: "dek-00112233445566778899aabbccddeeff".into(),
            wrapped: WrappedKey {
                kek_id: "transit:transit/holdfast-platform".into(),
                kek_version: 2,
                ciphertext: b"vault:v2:AAAA".to_vec(),
            },
            rewrapped_at: "2027-03-01T12:00:00Z".parse().unwrap(),
            rewrap_id: "rewrap-20270301T120000Z-0a1b2c3d".into(),
        };
        let bytes = r.encode();
        golden("rewrapped-key-v1.json", &bytes);
        assert_eq!(Rewrapped::decode(&bytes).unwrap(), r);
        let e = Rewrapped::decode(&altered(&bytes, "version", "2")).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
        let e = Rewrapped::decode(&altered(&bytes, "format", "holdfast.index-secret")).unwrap_err();
        assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
    }
}
