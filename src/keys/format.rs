//! The persisted forms of the key objects of a store. Frozen: a change is a new version with a
//! conversion.
//!
//! A rewrapped key (`keys/rewrapped/<dek-id>/v<20 digits>.json`), format
//! `holdfast.rewrapped-key`, version 1: the DEK id, its wrapping under a newer KEK version,
//! when and by which rewrap. Written create-only beside an object holdfast never rewrites (a
//! landing or failed segment, a quarantine entry, the index secret); the highest sequence of a
//! DEK is its newest wrapping. Golden file: `fixtures/formats/rewrapped-key-v1.json`.
//!
//! A tenant key binding (`keys/tenants/<tenant>/binding/v<20 digits>.json`), format
//! `holdfast.tenant-key`, version 1: the tenant, the KEK id that protects its records from
//! then on (a Transit `transit:<mount>/<key>` or an AWS KMS key ARN), the request that asked
//! for it, who asked, who approved and when. Written create-only at the approval; the highest
//! sequence is in force. Golden file: `fixtures/formats/tenant-key-v1.json`.
//!
//! A platform key change (`keys/platform/v<20 digits>.json`), format `holdfast.platform-key`,
//! version 1: the KEK that wraps the store's new DEKs from then on, the one it replaces, the
//! request, who asked, who approved and when. Written create-only at the approval of `keys
//! migrate`; the highest sequence is in force (before any, the store marker's KEK). Golden
//! file: `fixtures/formats/platform-key-v1.json`.

use crate::crypto::kms::{WrappedKey, WrappedKeyV1};
use crate::format::FormatError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "holdfast.rewrapped-key";
pub const BINDING_FORMAT: &str = "holdfast.tenant-key";
pub const PLATFORM_FORMAT: &str = "holdfast.platform-key";

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

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum BindingFile {
    #[serde(rename = "1")]
    V1(BindingV1),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingV1 {
    format: String,
    tenant: String,
    kek_id: String,
    request: String,
    requested_by: String,
    approved_by: String,
    bound_at: DateTime<Utc>,
}

/// Which KEK protects a tenant's records (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    pub tenant: String,
    pub kek_id: String,
    pub request: String,
    pub requested_by: String,
    pub approved_by: String,
    pub bound_at: DateTime<Utc>,
}

impl Binding {
    pub fn encode(&self) -> Vec<u8> {
        crate::format::encode(&BindingFile::V1(BindingV1 {
            format: BINDING_FORMAT.into(),
            tenant: self.tenant.clone(),
            kek_id: self.kek_id.clone(),
            request: self.request.clone(),
            requested_by: self.requested_by.clone(),
            approved_by: self.approved_by.clone(),
            bound_at: self.bound_at,
        }))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let BindingFile::V1(v) = crate::format::decode(bytes, BINDING_FORMAT, &["1"])?;
        Ok(Binding {
            tenant: v.tenant,
            kek_id: v.kek_id,
            request: v.request,
            requested_by: v.requested_by,
            approved_by: v.approved_by,
            bound_at: v.bound_at,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum PlatformFile {
    #[serde(rename = "1")]
    V1(PlatformV1),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlatformV1 {
    format: String,
    kek_id: String,
    replaces: String,
    request: String,
    requested_by: String,
    approved_by: String,
    changed_at: DateTime<Utc>,
}

/// A change of the store's platform KEK (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformKey {
    pub kek_id: String,
    /// The KEK it replaces.
    pub replaces: String,
    pub request: String,
    pub requested_by: String,
    pub approved_by: String,
    pub changed_at: DateTime<Utc>,
}

impl PlatformKey {
    pub fn encode(&self) -> Vec<u8> {
        crate::format::encode(&PlatformFile::V1(PlatformV1 {
            format: PLATFORM_FORMAT.into(),
            kek_id: self.kek_id.clone(),
            replaces: self.replaces.clone(),
            request: self.request.clone(),
            requested_by: self.requested_by.clone(),
            approved_by: self.approved_by.clone(),
            changed_at: self.changed_at,
        }))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let PlatformFile::V1(v) = crate::format::decode(bytes, PLATFORM_FORMAT, &["1"])?;
        Ok(PlatformKey {
            kek_id: v.kek_id,
            replaces: v.replaces,
            request: v.request,
            requested_by: v.requested_by,
            approved_by: v.approved_by,
            changed_at: v.changed_at,
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

    #[test]
    fn a_tenant_key_binding_is_frozen_and_reads_back() {
        let b = Binding {
            tenant: "acme".into(),
            kek_id: "transit:transit/acme-kek".into(),
            request: "kb-0a1b2c3d".into(),
            requested_by: "alice".into(),
            approved_by: "bob".into(),
            bound_at: "2027-03-01T12:00:00Z".parse().unwrap(),
        };
        let bytes = b.encode();
        golden("tenant-key-v1.json", &bytes);
        assert_eq!(Binding::decode(&bytes).unwrap(), b);
        let e = Binding::decode(&altered(&bytes, "version", "2")).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
    }

    #[test]
    fn a_platform_key_change_is_frozen_and_reads_back() {
        let p = PlatformKey {
            kek_id: "arn:aws:kms:eu-west-1:111122223333:key/new".into(),
            replaces: "arn:aws:kms:eu-west-1:111122223333:key/old".into(),
            request: "km-0a1b2c3d".into(),
            requested_by: "alice".into(),
            approved_by: "bob".into(),
            changed_at: "2027-03-01T12:00:00Z".parse().unwrap(),
        };
        let bytes = p.encode();
        golden("platform-key-v1.json", &bytes);
        assert_eq!(PlatformKey::decode(&bytes).unwrap(), p);
        let e = PlatformKey::decode(&altered(&bytes, "version", "2")).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
    }
}
