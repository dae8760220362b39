//! The S3 calls `object_store` has no API for, signed with the same credentials: the lock of
//! an object version (HEAD, `PutObjectRetention`, `PutObjectLegalHold`), versions
//! (`ListObjectVersions`, delete by version id), the bucket's settings and creation, and
//! create-only multipart uploads (`CompleteMultipartUpload` with `If-None-Match: *`).

use super::conn::{Answer, Call, Conn, generic};
use super::xml::{self, BucketLock, Part, Version};
use crate::storage::Lock;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use reqwest::Method;
use sha2::Digest;

type Result<T> = std::result::Result<T, object_store::Error>;

/// What a HEAD of an object says about its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// S3's clock when it answered (its `Date` header), if it sent one.
    pub(crate) date: Option<DateTime<Utc>>,
    pub(crate) version_id: Option<String>,
    pub(crate) mode: Option<String>,
    pub(crate) lock: Lock,
}

/// A delete S3 refused, and S3's code for it.
#[derive(Debug)]
pub(crate) enum DeleteError {
    Refused(String),
    Other(object_store::Error),
}

fn failed(what: &str, key: &str, a: &Answer) -> object_store::Error {
    generic(format!("{what} {key}: {} (HTTP {})", a.code(), a.status))
}

pub(super) fn md5(body: &str) -> String {
    B64.encode(<md5::Md5 as md5::Digest>::digest(body.as_bytes()))
}

impl Conn {
    /// Version `version` of `key` (else the current one) and its lock; `None` when there is
    /// none (or the latest is a delete marker).
    pub(crate) async fn head(&self, key: &str, version: Option<&str>) -> Result<Option<Head>> {
        let mut call = Call::new(Method::HEAD, Some(key));
        let query = version.map(|v| [("versionId", v)]);
        if let Some(q) = &query {
            call.query = q;
        }
        let a = self.send(call).await?;
        match a.status {
            404 => return Ok(None),
            _ if !a.ok() => return Err(failed("HEAD", key, &a)),
            _ => {}
        }
        let retain_until = a
            .header("x-amz-object-lock-retain-until-date")
            .map(|d| {
                DateTime::parse_from_rfc3339(d)
                    .map(|d| d.to_utc())
                    .map_err(|e| generic(format!("HEAD {key}: unreadable retain-until {d}: {e}")))
            })
            .transpose()?;
        let date = a
            .header("date")
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.to_utc());
        Ok(Some(Head {
            date,
            version_id: a.header("x-amz-version-id").map(str::to_string),
            mode: a.header("x-amz-object-lock-mode").map(str::to_string),
            lock: Lock {
                retain_until,
                legal_hold: a.header("x-amz-object-lock-legal-hold") == Some("ON"),
            },
        }))
    }

    /// Sets the retention of one version (S3 refuses to shorten it in COMPLIANCE mode).
    pub(crate) async fn put_retention(
        &self,
        key: &str,
        version: &str,
        mode: &str,
        until: DateTime<Utc>,
    ) -> Result<()> {
        let body = xml::retention(mode, until);
        self.put_lock_part(key, version, "retention", body, "PutObjectRetention")
            .await
    }

    /// Sets or clears the legal hold of one version.
    pub(crate) async fn put_legal_hold(&self, key: &str, version: &str, on: bool) -> Result<()> {
        let body = xml::legal_hold(on);
        self.put_lock_part(key, version, "legal-hold", body, "PutObjectLegalHold")
            .await
    }

    /// `PUT ?<part>&versionId=` with an XML body and its Content-MD5.
    async fn put_lock_part(
        &self,
        key: &str,
        version: &str,
        part: &str,
        body: String,
        what: &str,
    ) -> Result<()> {
        let mut call = Call::new(Method::PUT, Some(key));
        let query = [(part, ""), ("versionId", version)];
        call.query = &query;
        call.headers.push(("content-md5", md5(&body)));
        call.body = body.into();
        let a = self.send(call).await?;
        if a.ok() {
            Ok(())
        } else {
            Err(failed(what, key, &a))
        }
    }

    /// Every version and delete marker of the keys starting with `prefix`.
    pub(crate) async fn versions(&self, prefix: &str) -> Result<Vec<Version>> {
        let mut out = Vec::new();
        let mut next: Option<(String, String)> = None;
        loop {
            let mut query = vec![("versions", ""), ("prefix", prefix)];
            if let Some((k, v)) = &next {
                query.push(("key-marker", k));
                if !v.is_empty() {
                    query.push(("version-id-marker", v));
                }
            }
            let mut call = Call::new(Method::GET, None);
            call.query = &query;
            let a = self.send(call).await?;
            if !a.ok() {
                return Err(failed("ListObjectVersions", prefix, &a));
            }
            let page = xml::versions(&a.body).map_err(generic)?;
            out.extend(page.entries);
            match page.next {
                Some(n) => next = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Deletes one version (or delete marker) for good.
    pub(crate) async fn delete_version(
        &self,
        key: &str,
        version: &str,
    ) -> std::result::Result<(), DeleteError> {
        let mut call = Call::new(Method::DELETE, Some(key));
        let query = [("versionId", version)];
        call.query = &query;
        let a = self.send(call).await.map_err(DeleteError::Other)?;
        match a.status {
            _ if a.ok() || a.status == 404 => Ok(()),
            403 => Err(DeleteError::Refused(a.code())),
            _ => Err(DeleteError::Other(failed("DeleteObject", key, &a))),
        }
    }

    /// The bucket's versioning status and Object Lock settings; `Ok(None)`: no such bucket.
    pub(crate) async fn bucket_settings(&self) -> Result<Option<(Option<String>, BucketLock)>> {
        let mut call = Call::new(Method::GET, None);
        call.query = &[("versioning", "")];
        let a = self.send(call).await?;
        if a.status == 404 {
            return Ok(None);
        }
        if !a.ok() {
            return Err(failed("GetBucketVersioning", &self.bucket, &a));
        }
        let versioning = xml::versioning(&a.body).map_err(generic)?;
        let mut call = Call::new(Method::GET, None);
        call.query = &[("object-lock", "")];
        let a = self.send(call).await?;
        let lock = match a.status {
            _ if a.ok() => xml::object_lock(&a.body).map_err(generic)?,
            404 => BucketLock {
                enabled: false,
                default: None,
            },
            _ => return Err(failed("GetObjectLockConfiguration", &self.bucket, &a)),
        };
        Ok(Some((versioning, lock)))
    }

    /// Creates the bucket with Object Lock (and so versioning) enabled.
    pub(crate) async fn create_bucket(&self) -> Result<()> {
        let mut call = Call::new(Method::PUT, None);
        call.headers
            .push(("x-amz-bucket-object-lock-enabled", "true".into()));
        if self.region != "us-east-1" {
            call.body = xml::bucket_location(&self.region).into();
        }
        let a = self.send(call).await?;
        match a.status {
            _ if a.ok() => Ok(()),
            409 if a.code() == "BucketAlreadyOwnedByYou" => Ok(()),
            _ => Err(failed("CreateBucket", &self.bucket, &a)),
        }
    }

    /// Starts a multipart upload whose parts carry SHA-256 checksums.
    pub(crate) async fn create_upload(&self, key: &str) -> Result<String> {
        let mut call = Call::new(Method::POST, Some(key));
        call.query = &[("uploads", "")];
        call.headers
            .push(("x-amz-checksum-algorithm", "SHA256".into()));
        let a = self.send(call).await?;
        if !a.ok() {
            return Err(failed("CreateMultipartUpload", key, &a));
        }
        xml::upload_id(&a.body).map_err(generic)
    }

    /// Uploads part `number` (from 1) with its SHA-256.
    pub(crate) async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        bytes: bytes::Bytes,
    ) -> Result<Part> {
        let sha256 = B64.encode(sha2::Sha256::digest(&bytes));
        let n = number.to_string();
        let query = [("partNumber", n.as_str()), ("uploadId", upload)];
        let mut call = Call::new(Method::PUT, Some(key));
        call.query = &query;
        call.headers.push(("x-amz-checksum-sha256", sha256.clone()));
        call.body = bytes;
        let a = self.send(call).await?;
        if !a.ok() {
            return Err(failed("UploadPart", key, &a));
        }
        let etag = a
            .header("etag")
            .ok_or_else(|| generic(format!("UploadPart {key}: no ETag")))?
            .to_string();
        Ok(Part {
            number,
            etag,
            sha256,
        })
    }

    /// Completes an upload create-only: `Ok(None)` when something is at `key` already
    /// (412), else the new version's id.
    pub(crate) async fn complete_upload(
        &self,
        key: &str,
        upload: &str,
        parts: &[Part],
    ) -> Result<Option<Option<String>>> {
        let query = [("uploadId", upload)];
        let mut call = Call::new(Method::POST, Some(key));
        call.query = &query;
        call.headers.push(("if-none-match", "*".into()));
        call.body = xml::complete(parts).into();
        let a = self.send(call).await?;
        match a.status {
            412 => Ok(None),
            // S3 can answer 200 with an error in the body
            _ if a.ok() && xml::error_code(&a.body).is_none() => {
                Ok(Some(a.header("x-amz-version-id").map(str::to_string)))
            }
            _ => Err(failed("CompleteMultipartUpload", key, &a)),
        }
    }

    /// Aborts an upload: its parts are discarded and it never becomes an object.
    pub(crate) async fn abort_upload(&self, key: &str, upload: &str) -> Result<()> {
        let query = [("uploadId", upload)];
        let mut call = Call::new(Method::DELETE, Some(key));
        call.query = &query;
        let a = self.send(call).await?;
        if a.ok() || a.status == 404 {
            Ok(())
        } else {
            Err(failed("AbortMultipartUpload", key, &a))
        }
    }
}
