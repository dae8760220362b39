//! Inputs in S3: event files another system delivers to a bucket (Amazon Connect contact
//! records through Kinesis Data Firehose), read by `ingest` and `run`, never written. The
//! bucket is anyone's: no Object Lock check. `s3://bucket/key` names one object,
//! `s3://bucket/prefix/` (ending in `/`) every object under the prefix, in key order.

use super::conn::{self, Overrides, Rt};
use crate::lake::LakeError;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// `(bucket, key or prefix)` of an `s3://` input, or `None` for anything else.
pub fn parse(input: &str) -> Option<(&str, &str)> {
    let rest = input.strip_prefix("s3://")?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

/// A connection to one bucket of inputs.
pub struct Inputs {
    _rt: Rt,
    s3: AmazonS3,
    bucket: String,
}

fn failed(what: String, e: object_store::Error) -> LakeError {
    LakeError::io(what, std::io::Error::other(e.to_string()))
}

impl Inputs {
    /// Connects with the AWS SDK's usual chain (as the S3 store does).
    pub fn connect(bucket: &str) -> Result<Self, LakeError> {
        let (rt, _, s3) = conn::connect(bucket, &Overrides::default())
            .map_err(|e| LakeError::io(format!("s3://{bucket}"), std::io::Error::other(e)))?;
        Ok(Inputs {
            _rt: rt,
            s3,
            bucket: bucket.to_string(),
        })
    }

    /// The keys `key_or_prefix` names: itself, or (ending in `/`, or empty) every object
    /// under it, sorted. A prefix with nothing under it is an error, as a missing file is.
    pub async fn keys(&self, key_or_prefix: &str) -> Result<Vec<String>, LakeError> {
        if !key_or_prefix.is_empty() && !key_or_prefix.ends_with('/') {
            return Ok(vec![key_or_prefix.to_string()]);
        }
        super::counted(1);
        #[allow(clippy::disallowed_methods)] // a prefix in someone else's bucket
        let prefix = Path::from(key_or_prefix.trim_end_matches('/'));
        let mut keys: Vec<String> = self
            .s3
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .map_err(|e| failed(format!("listing s3://{}/{key_or_prefix}", self.bucket), e))?;
        keys.sort();
        if keys.is_empty() {
            return Err(LakeError::io(
                format!("s3://{}/{key_or_prefix}", self.bucket),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no objects under it"),
            ));
        }
        Ok(keys)
    }

    /// One object's bytes (held in memory while it is ingested).
    pub async fn get(&self, key: &str) -> Result<Bytes, LakeError> {
        #[allow(clippy::disallowed_methods)] // a key in someone else's bucket
        let path = Path::from(key);
        let what = || format!("reading s3://{}/{key}", self.bucket);
        super::counted(1);
        self.s3
            .get(&path)
            .await
            .map_err(|e| failed(what(), e))?
            .bytes()
            .await
            .map_err(|e| failed(what(), e))
    }
}
