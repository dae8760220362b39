//! The key/value metadata holdfast writes into every data file's Parquet footer, so a file
//! describes itself without its manifest. Frozen: format `holdfast.datafile`, versions 1, 2
//! and 3 (the keys below); a change is a new version. Every reader of the footer checks both
//! keys first ([`check`]) and refuses another format or an unknown version. Golden files:
//! `fixtures/formats/datafile-footer-v1.json` (key set), `datafile-footer-v2.json`,
//! `datafile-footer-v3.json`.
//!
//! Versions 1 and 2 seal each record alone and differ only in the record dictionaries:
//! version 1 has at most one, for every record of the file ([`DICTIONARY`]); version 2 has one
//! per tenant, or none ([`DICTIONARIES`]), each naming the DEK that seals it. Version 3 seals
//! a tenant's records in groups ([`crate::crypto::group`], AAD `holdfast.group.v1`,
//! compression [`GROUP_COMPRESSION`]) and has no dictionaries; each row's `payload` names its
//! group, and the group's first row carries it. New files are version 3; versions 1 and 2 are
//! read by every reader, and a sweep's rewrite of any version writes version 3.

use crate::format::FormatError;
use crate::lake::LakeError;
use parquet::file::metadata::FileMetaData;

pub const FORMAT: &str = "holdfast.datafile";
const VERSIONS: &[&str] = &["1", "2", "3"];
/// The version holdfast writes.
pub const VERSION: &str = "3";
/// The compression of format 3 files ([`COMPRESSION`]): zstd over groups of records.
pub const GROUP_COMPRESSION: &str = "zstd-groups";

/// `holdfast.datafile`
pub const FORMAT_KEY: &str = "holdfast.format";
/// `1`, `2` or `3`
pub const VERSION_KEY: &str = "holdfast.format_version";
/// The batch (or sweep) that wrote the file.
pub const BATCH_ID: &str = "holdfast.batch_id";
/// `year=YYYY/month=MM/day=DD/interaction_type=T`
pub const PARTITION: &str = "holdfast.partition";
/// `AES-256-GCM`
pub const ALGORITHM: &str = "holdfast.payload.algorithm";
/// The AAD scheme of the records (`holdfast.record.v1`).
pub const AAD: &str = "holdfast.payload.aad";
pub const DEK_ID: &str = "holdfast.dek_id";
/// The wrapped DEK, as JSON ([`crate::crypto::kms::WrappedKeyV1`]).
pub const WRAPPED_DEK: &str = "holdfast.wrapped_dek";
/// Optional: how records are compressed before sealing: `zstd`, `zstd+dictionary` (version
/// 1: one dictionary) or `zstd+tenant-dictionaries` (version 2: some tenant has one).
pub const COMPRESSION: &str = "holdfast.payload.compression";
/// Version 1, optional: the file's zstd dictionary, sealed with its DEK, base64.
pub const DICTIONARY: &str = "holdfast.dictionary";
/// Version 2, optional: the tenants' zstd dictionaries, a JSON array of
/// [`TenantDictionaryV2`] sorted by tenant; a tenant not listed has plain zstd records.
pub const DICTIONARIES: &str = "holdfast.dictionaries";
/// Optional: a sweep's rewrite names the file it replaced.
pub const REWRITTEN_FROM: &str = "holdfast.rewritten_from";

/// One tenant's record dictionary in a version 2 footer: trained on that tenant's records of
/// the file only, sealed under the DEK `dek_id` with AAD (`holdfast.dictionary.v2`, tenant,
/// DEK id). Today that DEK is always the file's; naming it lets a tenant's dictionary be sealed
/// under a tenant's own DEK later without another footer version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDictionaryV2 {
    pub tenant_id: String,
    pub dek_id: String,
    /// The sealed dictionary (`nonce || ciphertext || tag`), base64.
    pub sealed: String,
}

/// The value of [`DICTIONARIES`]: entries sorted by tenant, compact JSON.
pub fn encode_dictionaries(mut entries: Vec<TenantDictionaryV2>) -> String {
    entries.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    serde_json::to_string(&entries).expect("serializes")
}

/// Reads a [`DICTIONARIES`] value: one entry per tenant at most.
pub fn decode_dictionaries(v: &str) -> Result<Vec<TenantDictionaryV2>, FormatError> {
    let invalid = |detail: String| FormatError::Invalid {
        format: FORMAT,
        version: "2".into(),
        detail,
    };
    let entries: Vec<TenantDictionaryV2> =
        serde_json::from_str(v).map_err(|e| invalid(format!("{DICTIONARIES}: {e}")))?;
    let mut tenants: Vec<&str> = entries.iter().map(|e| e.tenant_id.as_str()).collect();
    tenants.sort_unstable();
    if tenants.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(format!("{DICTIONARIES}: a tenant listed twice")));
    }
    Ok(entries)
}

/// The value of footer key `key`.
pub fn value<'a>(md: &'a FileMetaData, key: &str) -> Option<&'a str> {
    md.key_value_metadata()?
        .iter()
        .find(|k| k.key == key)?
        .value
        .as_deref()
}

/// Refuses a footer of another format or of a version this holdfast does not read.
pub fn check_format(md: &FileMetaData) -> Result<(), FormatError> {
    let found = value(md, FORMAT_KEY);
    if found != Some(FORMAT) {
        return Err(FormatError::WrongFormat {
            expected: FORMAT,
            found: found.map(str::to_string),
        });
    }
    match value(md, VERSION_KEY) {
        Some(v) if VERSIONS.contains(&v) => Ok(()),
        other => Err(FormatError::UnknownVersion {
            format: FORMAT,
            found: other.map(str::to_string),
            known: VERSIONS.join(", "),
        }),
    }
}

/// [`check_format`], as [`LakeError::Corrupt`] naming the object.
pub fn check(md: &FileMetaData, object: &str) -> Result<(), LakeError> {
    check_format(md).map_err(|e| LakeError::Corrupt {
        object: object.to_string(),
        problem: format!("data file footer: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::kms::WrappedKey;
    use crate::format::golden;
    use parquet::file::metadata::KeyValue;

    fn keys() -> Vec<KeyValue> {
        let w = WrappedKey {
            kek_id: "kek-0011223344556677".into(),
            kek_version: 1,
            ciphertext: vec![7; 8],
        };
        super::super::file_metadata(
            "20260102T030405Z-0a1b2c3d-FINRA_4511_6Y",
            "year=2026/month=01/day=02/interaction_type=CALL",
            "dek-0123",
            &w,
        )
    }

    fn md(kv: Vec<KeyValue>) -> FileMetaData {
        let schema = parquet::schema::types::Type::group_type_builder("schema")
            .build()
            .unwrap();
        let descr = std::sync::Arc::new(parquet::schema::types::SchemaDescriptor::new(
            std::sync::Arc::new(schema),
        ));
        FileMetaData::new(1, 0, None, Some(kv), descr, None)
    }

    fn pairs(kv: Vec<KeyValue>) -> Vec<(String, Option<String>)> {
        kv.into_iter().map(|k| (k.key, k.value)).collect()
    }

    #[test]
    fn version_3_key_set_is_frozen() {
        golden(
            "datafile-footer-v3.json",
            &crate::format::encode(&pairs(keys())),
        );
        check_format(&md(keys())).unwrap();
        assert_eq!(value(&md(keys()), VERSION_KEY), Some("3"));
        assert_eq!(value(&md(keys()), COMPRESSION), Some(GROUP_COMPRESSION));
        assert_eq!(value(&md(keys()), AAD), Some("holdfast.group.v1"));
    }

    /// A golden key set of an older version, as a footer.
    fn old(name: &str) -> (Vec<(String, Option<String>)>, FileMetaData) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/formats")
            .join(name);
        #[allow(clippy::disallowed_methods)] // golden files live in the repository
        let bytes = std::fs::read(path).unwrap();
        let pairs: Vec<(String, Option<String>)> = serde_json::from_slice(&bytes).unwrap();
        let kv = pairs
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone().unwrap()))
            .collect();
        (pairs, md(kv))
    }

    /// Versions 1 and 2 are no longer written (but by test builds); their golden key sets are
    /// still read. Version 1 is version 2's first keys but for the version; version 2 adds
    /// the compression and the tenants' dictionaries.
    #[test]
    fn versions_1_and_2_are_still_read() {
        let (v1, md1) = old("datafile-footer-v1.json");
        let (v2, md2) = old("datafile-footer-v2.json");
        check_format(&md1).unwrap();
        check_format(&md2).unwrap();
        let mut first = v2[..v1.len()].to_vec();
        first[1].1 = Some("1".into());
        assert_eq!(v1, first);
        let v = value(&md2, DICTIONARIES).unwrap().to_string();
        let entries = decode_dictionaries(&v).unwrap();
        let tenants: Vec<&str> = entries.iter().map(|e| e.tenant_id.as_str()).collect();
        assert_eq!(tenants, ["tenant-a", "tenant-b"], "sorted by tenant");
        let twice = v.replace("tenant-b", "tenant-a");
        assert!(decode_dictionaries(&twice).is_err());
        let unknown = v.replacen("\"sealed\"", "\"extra\":1,\"sealed\"", 1);
        assert!(decode_dictionaries(&unknown).is_err());
        // the encoder writes what version 2 holds
        assert_eq!(encode_dictionaries(entries), v);
    }

    #[test]
    fn other_formats_and_versions_are_refused() {
        let with = |key: &str, v: Option<&str>| {
            let mut kv: Vec<KeyValue> = keys().into_iter().filter(|k| k.key != key).collect();
            if let Some(v) = v {
                kv.push(KeyValue::new(key.to_string(), v.to_string()));
            }
            md(kv)
        };
        let e = check_format(&with(VERSION_KEY, Some("4"))).unwrap_err();
        assert!(
            matches!(e, FormatError::UnknownVersion { found: Some(ref v), .. } if v == "4"),
            "{e}"
        );
        let e = check_format(&with(VERSION_KEY, None)).unwrap_err();
        assert!(
            matches!(e, FormatError::UnknownVersion { found: None, .. }),
            "{e}"
        );
        let e = check_format(&with(FORMAT_KEY, Some("1"))).unwrap_err();
        assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
        let e = check(&with(FORMAT_KEY, None), "lake/x").unwrap_err();
        assert!(e.to_string().contains("lake/x"), "{e}");
    }
}
