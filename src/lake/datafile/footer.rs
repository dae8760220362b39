//! The key/value metadata holdfast writes into every data file's Parquet footer, so a file
//! describes itself without its manifest. Frozen: format `holdfast.datafile`, version 1 (the
//! keys below); a change is a new version. Every reader of the footer checks both keys first
//! ([`check`]) and refuses another format or an unknown version. Golden file of the key set:
//! `fixtures/formats/datafile-footer-v1.json`.

use crate::format::FormatError;
use crate::lake::LakeError;
use parquet::file::metadata::FileMetaData;

pub const FORMAT: &str = "holdfast.datafile";
const VERSIONS: &[&str] = &["1"];

/// `holdfast.datafile`
pub const FORMAT_KEY: &str = "holdfast.format";
/// `1`
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
/// Optional: how records are compressed before sealing (`zstd` or `zstd+dictionary`).
pub const COMPRESSION: &str = "holdfast.payload.compression";
/// Optional: the file's zstd dictionary, sealed with its DEK, base64.
pub const DICTIONARY: &str = "holdfast.dictionary";
/// Optional: a sweep's rewrite names the file it replaced.
pub const REWRITTEN_FROM: &str = "holdfast.rewritten_from";

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

    #[test]
    fn version_1_key_set_is_frozen() {
        let pairs: Vec<(String, Option<String>)> =
            keys().into_iter().map(|k| (k.key, k.value)).collect();
        golden("datafile-footer-v1.json", &crate::format::encode(&pairs));
        check_format(&md(keys())).unwrap();
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
        let e = check_format(&with(VERSION_KEY, Some("2"))).unwrap_err();
        assert!(
            matches!(e, FormatError::UnknownVersion { found: Some(ref v), .. } if v == "2"),
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
