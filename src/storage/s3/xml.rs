//! The XML of the S3 control calls: what holdfast reads from the answers and the bodies it
//! sends (Object Lock retention and legal holds, multipart completion).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code")]
    code: String,
}

/// The `<Code>` of an S3 error answer.
pub(super) fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    quick_xml::de::from_str::<ErrorBody>(text)
        .ok()
        .map(|e| e.code)
}

/// One entry of `ListObjectVersions`: a version or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Version {
    #[serde(rename = "Key")]
    pub(crate) key: String,
    #[serde(rename = "VersionId")]
    pub(crate) version_id: String,
    #[serde(rename = "IsLatest")]
    pub(crate) is_latest: bool,
    #[serde(skip)]
    pub(crate) delete_marker: bool,
}

#[derive(Deserialize)]
struct ListVersions {
    #[serde(rename = "IsTruncated", default)]
    truncated: bool,
    #[serde(rename = "NextKeyMarker", default)]
    next_key: Option<String>,
    #[serde(rename = "NextVersionIdMarker", default)]
    next_version: Option<String>,
    #[serde(rename = "Version", default)]
    versions: Vec<Version>,
    #[serde(rename = "DeleteMarker", default)]
    markers: Vec<Version>,
}

/// A page of versions: the entries, and the markers of the next page if there is one.
pub(super) struct VersionPage {
    pub(super) entries: Vec<Version>,
    pub(super) next: Option<(String, String)>,
}

pub(super) fn versions(body: &[u8]) -> Result<VersionPage, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let l: ListVersions =
        quick_xml::de::from_str(text).map_err(|e| format!("unreadable version list: {e}"))?;
    let mut entries = l.versions;
    entries.extend(l.markers.into_iter().map(|mut m| {
        m.delete_marker = true;
        m
    }));
    let next = match (l.truncated, l.next_key, l.next_version) {
        (true, Some(k), v) => Some((k, v.unwrap_or_default())),
        _ => None,
    };
    Ok(VersionPage { entries, next })
}

#[derive(Deserialize)]
struct Versioning {
    #[serde(rename = "Status", default)]
    status: Option<String>,
}

/// The bucket's versioning status (`Enabled`, `Suspended`; `None`: never enabled).
pub(super) fn versioning(body: &[u8]) -> Result<Option<String>, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    quick_xml::de::from_str::<Versioning>(text)
        .map(|v| v.status)
        .map_err(|e| format!("unreadable versioning answer: {e}"))
}

#[derive(Deserialize)]
struct LockConfiguration {
    #[serde(rename = "ObjectLockEnabled", default)]
    enabled: Option<String>,
    #[serde(rename = "Rule", default)]
    rule: Option<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    #[serde(rename = "DefaultRetention")]
    default: DefaultRetention,
}

#[derive(Deserialize)]
struct DefaultRetention {
    #[serde(rename = "Mode")]
    mode: String,
    #[serde(rename = "Days", default)]
    days: Option<u32>,
    #[serde(rename = "Years", default)]
    years: Option<u32>,
}

/// The bucket's Object Lock settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BucketLock {
    pub(crate) enabled: bool,
    /// A default retention (mode, and its period as S3 states it), if the bucket has one.
    pub(crate) default: Option<(String, String)>,
}

pub(super) fn object_lock(body: &[u8]) -> Result<BucketLock, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let c: LockConfiguration = quick_xml::de::from_str(text)
        .map_err(|e| format!("unreadable Object Lock configuration: {e}"))?;
    let default = c.rule.map(|r| {
        let period = match (r.default.days, r.default.years) {
            (Some(d), _) => format!("{d} days"),
            (_, Some(y)) => format!("{y} years"),
            _ => "no period".to_string(),
        };
        (r.default.mode, period)
    });
    Ok(BucketLock {
        enabled: c.enabled.as_deref() == Some("Enabled"),
        default,
    })
}

/// The body of `PutObjectRetention`.
pub(super) fn retention(mode: &str, until: DateTime<Utc>) -> String {
    format!(
        "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{mode}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
        until.to_rfc3339_opts(SecondsFormat::Millis, true)
    )
}

/// The body of `PutObjectLegalHold`.
pub(super) fn legal_hold(on: bool) -> String {
    format!(
        "<LegalHold xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{}</Status></LegalHold>",
        if on { "ON" } else { "OFF" }
    )
}

/// The body of `CreateBucket` outside us-east-1.
pub(super) fn bucket_location(region: &str) -> String {
    format!(
        "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
    )
}

#[derive(Deserialize)]
struct Initiated {
    #[serde(rename = "UploadId")]
    upload_id: String,
}

pub(super) fn upload_id(body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    quick_xml::de::from_str::<Initiated>(text)
        .map(|i| i.upload_id)
        .map_err(|e| format!("unreadable multipart answer: {e}"))
}

/// A part uploaded: its number, ETag and SHA-256 (base64).
#[derive(Debug, Clone)]
pub(super) struct Part {
    pub(super) number: u32,
    pub(super) etag: String,
    pub(super) sha256: String,
}

/// The body of `CompleteMultipartUpload`.
pub(super) fn complete(parts: &[Part]) -> String {
    let mut s =
        String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for p in parts {
        s.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag><ChecksumSHA256>{}</ChecksumSHA256></Part>",
            p.number,
            escape(&p.etag),
            p.sha256
        ));
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lists_read_versions_and_markers_interleaved() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>a</Prefix><IsTruncated>true</IsTruncated>
  <NextKeyMarker>a2</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker>
  <Version><Key>a</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest><Size>3</Size></Version>
  <DeleteMarker><Key>a</Key><VersionId>m1</VersionId><IsLatest>true</IsLatest></DeleteMarker>
  <Version><Key>a1</Key><VersionId>v1</VersionId><IsLatest>true</IsLatest></Version>
</ListVersionsResult>"#;
        let page = versions(body).unwrap();
        assert_eq!(page.entries.len(), 3);
        assert!(
            page.entries
                .iter()
                .any(|v| v.delete_marker && v.version_id == "m1")
        );
        assert_eq!(page.next, Some(("a2".into(), "v9".into())));
        let empty = br#"<ListVersionsResult><IsTruncated>false</IsTruncated></ListVersionsResult>"#;
        let page = versions(empty).unwrap();
        assert!(page.entries.is_empty() && page.next.is_none());
    }

    #[test]
    fn bucket_settings_and_errors_are_read() {
        assert_eq!(
            versioning(
                b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"
            )
            .unwrap()
            .as_deref(),
            Some("Enabled")
        );
        assert_eq!(versioning(b"<VersioningConfiguration/>").unwrap(), None);
        let lock = object_lock(b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>30</Days></DefaultRetention></Rule></ObjectLockConfiguration>").unwrap();
        assert!(lock.enabled);
        assert_eq!(lock.default, Some(("GOVERNANCE".into(), "30 days".into())));
        assert_eq!(
            error_code(b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>").as_deref(),
            Some("AccessDenied")
        );
        assert_eq!(error_code(b"not xml"), None);
    }
}
