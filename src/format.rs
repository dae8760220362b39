//! Versioned on-disk formats: the one way every JSON file holdfast writes is read back.
//!
//! Each persisted type has a disk type kept apart from its runtime type: an enum tagged by
//! `version` (`#[serde(tag = "version")]`, variants renamed `"1"`, `"2"`, ...) whose variants
//! carry a `format` name such as `holdfast.manifest`, and a `From`/upcast into the runtime
//! type. A disk type never changes once written: a new layout is a new variant.
//!
//! [`decode`] looks at `format` and `version` before it parses the rest, so a reader meets
//! a file of another kind, or a version it does not know, with a typed [`FormatError`]
//! instead of a serde message about a missing field. Golden files of every current version
//! live in `fixtures/formats/`; [`golden`] fails a test on any silent change.

use serde::de::DeserializeOwned;

/// Why a persisted file could not be read as the format its reader expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("format is {found:?}, expected {expected:?}")]
    WrongFormat {
        expected: &'static str,
        found: Option<String>,
    },
    #[error("{format} version {} is not one this holdfast reads (it reads {known})", found.as_deref().unwrap_or("(none)"))]
    UnknownVersion {
        format: &'static str,
        found: Option<String>,
        known: String,
    },
    #[error("{format} version {version}: {detail}")]
    Invalid {
        format: &'static str,
        version: String,
        detail: String,
    },
}

#[derive(serde::Deserialize)]
struct Peek {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

fn text(v: Option<serde_json::Value>) -> Option<String> {
    v.map(|v| match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// Reads `bytes` as the disk type `T` of `format`, whose known versions are `known`
/// (the variant names of `T`). Refuses another format or an unknown version by name.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    format: &'static str,
    known: &[&str],
) -> Result<T, FormatError> {
    let peek: Peek =
        serde_json::from_slice(bytes).map_err(|e| FormatError::NotJson(e.to_string()))?;
    let found_format = text(peek.format);
    if found_format.as_deref() != Some(format) {
        return Err(FormatError::WrongFormat {
            expected: format,
            found: found_format,
        });
    }
    let version = match peek.version {
        Some(serde_json::Value::String(s)) if known.contains(&s.as_str()) => s,
        other => {
            return Err(FormatError::UnknownVersion {
                format,
                found: text(other),
                known: known.join(", "),
            });
        }
    };
    serde_json::from_slice(bytes).map_err(|e| FormatError::Invalid {
        format,
        version,
        detail: e.to_string(),
    })
}

/// Pretty JSON with a trailing newline: the layout of every JSON file holdfast writes.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(value).expect("disk types serialize");
    v.push(b'\n');
    v
}

/// Test support: the golden file `fixtures/formats/<name>` must hold exactly `bytes` (what
/// today's writer produces for a fixed value). A missing file is written and the test fails,
/// so a new golden file is always looked at and committed on purpose.
#[cfg(test)]
#[allow(clippy::disallowed_methods)] // golden files live in the repository, not in a store
pub(crate) fn golden(name: &str, bytes: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/formats")
        .join(name);
    match std::fs::read(&path) {
        Ok(want) => assert!(
            want == bytes,
            "{} changed: a persisted format is frozen; add a new version instead.\n--- golden\n{}\n--- now\n{}",
            path.display(),
            String::from_utf8_lossy(&want),
            String::from_utf8_lossy(bytes)
        ),
        Err(_) => {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
            panic!(
                "wrote new golden file {}: check and commit it",
                path.display()
            );
        }
    }
}

/// Test support: `bytes` (a JSON object) with its top-level `key` set to `value`, to show a
/// reader another format or version.
#[cfg(test)]
pub(crate) fn altered(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).expect("a JSON object");
    v[key] = serde_json::Value::String(value.to_string());
    serde_json::to_vec(&v).expect("serializes")
}

/// Test support: a fixed time for golden values.
#[cfg(test)]
pub(crate) fn ts(rfc3339: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("RFC 3339")
        .to_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(tag = "version")]
    enum Thing {
        #[serde(rename = "1")]
        V1 { format: String, n: u32 },
    }

    #[test]
    fn reads_a_known_version() {
        let t: Thing = decode(
            br#"{"version":"1","format":"x.thing","n":3}"#,
            "x.thing",
            &["1"],
        )
        .unwrap();
        assert_eq!(
            t,
            Thing::V1 {
                format: "x.thing".into(),
                n: 3
            }
        );
    }

    #[test]
    fn refuses_other_formats_and_versions_by_name() {
        let e = decode::<Thing>(
            br#"{"version":"1","format":"x.other","n":3}"#,
            "x.thing",
            &["1"],
        )
        .unwrap_err();
        assert!(matches!(e, FormatError::WrongFormat { found: Some(ref f), .. } if f == "x.other"));
        let e = decode::<Thing>(
            br#"{"version":"7","format":"x.thing","n":3}"#,
            "x.thing",
            &["1"],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"x.thing version 7 is not one this holdfast reads (it reads 1)"#
        );
        let e =
            decode::<Thing>(br#"{"version":7,"format":"x.thing"}"#, "x.thing", &["1"]).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { found: Some(ref v), .. } if v == "7"));
        let e = decode::<Thing>(br#"{"format":"x.thing"}"#, "x.thing", &["1"]).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { found: None, .. }));
        let e = decode::<Thing>(b"[1]", "x.thing", &["1"]).unwrap_err();
        assert!(matches!(e, FormatError::NotJson(_)));
        let e = decode::<Thing>(br#"{"version":"1","format":"x.thing"}"#, "x.thing", &["1"])
            .unwrap_err();
        assert!(matches!(e, FormatError::Invalid { .. }), "{e}");
    }
}
